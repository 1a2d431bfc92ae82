"""What every benchmark scenario hands back: figures, and the goals they are held against.

A scenario (``bench/scenarios/*.py``) is a function ``run(ctx: Context) -> list[Figure]``; the
harness (``python -m bench``) runs them in turn against one sandbox process and prints one
table. Goals (:class:`Goal`) are ratios between figures of the same run, so a slow machine
moves both sides alike.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Figure:
    """One measured number: ``value`` ``unit`` of ``metric`` for ``contender`` in ``scenario``.

    Examples: ``Figure("backfill", "ours", "end to end", 8123.0, "orders/s")``,
    ``Figure("backfill", "ours", "peak RSS", 612.0, "MiB")``,
    ``Figure("growth", "ours", "pending query @ 10,000,000", 12.5, "ms")``.
    """

    scenario: str
    contender: str
    metric: str
    value: float
    unit: str
    note: str = ""


class ScenarioFailed(RuntimeError):
    """A scenario that failed part-way, with the figures it did measure (the table shows them;
    the run still fails)."""

    def __init__(self, message: str, figures: list[Figure]) -> None:
        super().__init__(message)
        self.figures = figures


@dataclass(frozen=True)
class Goal:
    """A goal of the issue, held against this run's figures: ``met`` is None when a figure it
    needs was not measured (a scenario left out)."""

    text: str
    measured: str
    met: bool | None


@dataclass
class Context:
    """What a scenario gets: the sandbox it talks to, sizes, and a scratch folder.

    ``shop_url``/``erp_url`` point at the sandbox child process (sandbox mode is on in this
    process). ``sizes`` holds the command line's sizes by name (``orders``, ``days``,
    ``transform_orders``, ``growth_rows``, ``pacing_calls`` …). ``tmp`` is removed afterwards.
    ``ready`` is what the sandbox process announced (its tally of generated orders …).
    """

    shop_url: str
    erp_url: str
    tmp: Path
    sizes: dict[str, Any] = field(default_factory=dict)
    ready: dict[str, Any] = field(default_factory=dict)

    @property
    def start(self) -> datetime:
        """The first moment of the sandbox's bulk orders (midnight UTC, days ago)."""
        return datetime.fromisoformat(self.ready["start"])

    @property
    def end(self) -> datetime:
        """The end (excluded) of the sandbox's bulk orders: the backfill's whole range."""
        return datetime.fromisoformat(self.ready["end"])

    @property
    def tally(self) -> int:
        """How many orders the sandbox generated in ``[start, end)``."""
        return int(self.ready["tally"]["orders"])


# --- the table ------------------------------------------------------------------------------


def ratio_text(figure: Figure, figures: list[Figure], references: tuple[str, ...]) -> str:
    """``figure``'s value over each reference contender's value of the same scenario, metric
    and unit (``0.25x dlt, 0.05x drain``); empty when no reference measured it."""
    parts = []
    for reference in references:
        if reference == figure.contender:
            continue
        for other in figures:
            same = (other.scenario, other.metric, other.unit) == (
                figure.scenario,
                figure.metric,
                figure.unit,
            )
            if same and other.contender == reference and other.value:
                parts.append(f"{ratio_number(figure.value / other.value)}x {reference}")
    return ", ".join(parts)


def ratio_number(ratio: float) -> str:
    """A ratio with two significant digits at least (0.0031, 0.25, 12.0)."""
    return f"{ratio:.2g}" if ratio < 0.1 else f"{ratio:.2f}"


def number_text(value: float) -> str:
    """A figure as people read it: thousands separated, decimals only where they matter."""
    if value == int(value) and abs(value) >= 100:
        return f"{int(value):,}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:,.2f}" if abs(value) < 10 else f"{value:,.1f}"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub table, columns padded so it also reads as plain text in a terminal."""
    cells = [header, *rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]

    def line(row: list[str]) -> str:
        return (
            "| "
            + " | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
            + " |"
        )

    rule = "|" + "|".join("-" * (width + 2) for width in widths) + "|"
    return "\n".join([line(header), rule, *(line(row) for row in rows)])


def figures_table(figures: list[Figure], references: dict[str, tuple[str, ...]]) -> str:
    """The one table: scenario, contender, metric, value, unit, ratio to the scenario's
    reference contenders (``references``: scenario → contenders), note."""
    rows = [
        [
            f.scenario,
            f.contender,
            f.metric,
            number_text(f.value),
            f.unit,
            ratio_text(f, figures, references.get(f.scenario, ())),
            f.note,
        ]
        for f in figures
    ]
    header = ["scenario", "contender", "metric", "value", "unit", "ratio", "note"]
    return markdown_table(header, rows)


def goals_table(goals: list[Goal]) -> str:
    """The goals of the issue against this run: goal, measured, met / missed / not measured."""
    verdict = {True: "met", False: "MISSED", None: "not measured"}
    rows = [[g.text, g.measured, verdict[g.met]] for g in goals]
    return markdown_table(["goal", "measured", "verdict"], rows)


# --- goals of scenarios that name none themselves ---------------------------------------------


def find(figures: list[Figure], scenario: str, *words: str, unit: str = "") -> list[Figure]:
    """The scenario's figures whose metric has every word in ``words`` (any case) and whose
    unit starts with ``unit``."""
    return [
        f
        for f in figures
        if f.scenario == scenario
        and all(word.lower() in f.metric.lower() for word in words)
        and f.unit.startswith(unit)
    ]


def _rows_of(figure: Figure) -> int:
    """The ledger size a growth figure names (``... @ 10,000,000``), 0 when none."""
    digits = "".join(ch for ch in figure.metric.rsplit("@", 1)[-1] if ch.isdigit())
    return int(digits) if digits else 0


def growth_goals(figures: list[Figure]) -> list[Goal]:
    """Pending query under 50 ms at 10,000,000 ledger rows, and flat (at most 2x its time
    at the smallest ledger)."""
    text = "Pending query under 50 ms at 10,000,000 ledger rows, and flat from 10,000"
    pending = [
        f for f in find(figures, "growth", unit="ms") if f.metric.startswith("pending query @")
    ]
    pending.sort(key=_rows_of)
    if not pending:
        return [Goal(text, "not measured", None)]
    small, large = pending[0], pending[-1]
    flat = large.value <= 2 * max(small.value, 1.0)
    measured = (
        f"{large.value:.1f} ms @ {_rows_of(large):,} rows; {small.value:.1f} ms @ "
        f"{_rows_of(small):,}"
    )
    if _rows_of(large) < 10_000_000:
        return [Goal(text, measured + " (10,000,000 not run)", None)]
    return [Goal(text, measured, large.value < 50 and flat)]


def pacing_goals(figures: list[Figure]) -> list[Goal]:
    """Delivery at 95 % or more of the allowed rate with zero 429s in steady state (the share
    as a ratio or in %)."""
    text = "Delivery at 95 % or more of the allowed rate with zero 429s in steady state"
    share = [f for f in find(figures, "pacing", "allowed") if f.unit in ("ratio", "%")]
    refused = find(figures, "pacing", "429", "steady")
    if not share or not refused:
        return [Goal(text, "not measured", None)]
    percent = share[0].value * (100 if share[0].unit == "ratio" else 1)
    measured = f"{percent:.1f} % of allowed, {refused[0].value:.0f} x 429"
    return [Goal(text, measured, percent >= 95 and refused[0].value == 0)]


def ticks_goals(figures: list[Figure]) -> list[Goal]:
    """Idle cost of a route under 60 CPU seconds an hour."""
    text = "Idle cost of a route under 60 CPU seconds an hour"
    idle = [f for f in find(figures, "ticks", "idle cpu") if f.contender == "ours"]
    if not idle:
        return [Goal(text, "not measured", None)]
    return [Goal(text, f"{idle[0].value:.1f} {idle[0].unit}", idle[0].value < 60)]


#: Goals for scenarios whose module has no ``goals(figures)`` of its own.
FALLBACK_GOALS = {"growth": growth_goals, "pacing": pacing_goals, "ticks": ticks_goals}


def say(text: str) -> None:
    """A progress line of the bench, on stderr (stdout holds the tables)."""
    print(f"[bench] {text}", file=sys.stderr, flush=True)  # noqa: T201


def render(figures: list[Figure], goals: list[Goal], references: dict[str, tuple[str, ...]]) -> str:
    """Both tables, as the terminal and BENCHMARKS.md show them."""
    parts = ["## Figures", "", figures_table(figures, references), ""]
    parts += ["## Goals (ratios from the same run)", "", goals_table(goals)]
    return "\n".join(parts)
