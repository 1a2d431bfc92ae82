"""Backfill: every order the sandbox holds, fetched (and, where a contender can, mapped) by
each contender in a process of its own, one after the other, on the same data and range.

- ``drain``: the search pages with ``requests`` + ``json``, discarded: the fetch limit, and
  the sandbox's own drain rate;
- ``dlt``: dlt loading the same pages into DuckDB via parquet files (its own venv; left out
  with ``--skip-dlt``);
- ``naive``: a per-order loop with row-by-row INSERTs, staging then filter + map;
- ``ours``: the route's single-run backfill of ``source_orders`` + ``erp_orders``.

Figures: orders/s end to end (wall of the contender's work, not its imports), per step where
it has steps, and peak RSS. Every contender must see the sandbox's tally of orders, or the
scenario fails naming it.
"""

from __future__ import annotations

import json
from typing import Any

from bench.contenders import run_contender
from bench.figures import Context, Figure, Goal, ScenarioFailed, ratio_number, say
from integration_project.settings import SANDBOX_SHOP_CLIENT_ID, SANDBOX_SHOP_CLIENT_SECRET
from integration_project.shopware.models import created_at_window_criteria

SCENARIO = "backfill"
#: The ratio column divides by these: the fetch limit, and the loader to beat.
REFERENCES = ("drain", "dlt")
#: The contenders in the order they run.
CONTENDERS = ("drain", "dlt", "naive", "ours")


def run(ctx: Context) -> list[Figure]:
    """Each contender in turn; one that fails (or misses orders) fails the scenario after the
    others have run, and the figures measured so far still reach the table."""
    found: list[Figure] = []
    failed: list[str] = []
    for name in CONTENDERS:
        if name == "dlt" and ctx.sizes.get("skip_dlt"):
            continue
        say(f"backfill: {name} ({ctx.tally:,} orders)")
        try:
            line = contender_line(ctx, name)
            check_tally(ctx, name, line)
        except RuntimeError as exc:
            say(f"backfill: {name} FAILED: {exc}")
            failed.append(name)
            continue
        found += figures_of(name, line)
    if failed:
        raise ScenarioFailed(f"backfill: {', '.join(failed)} failed (see above)", found)
    return found


def contender_line(ctx: Context, name: str) -> dict[str, Any]:
    """Run one contender over the whole range; its JSON line."""
    span = ["--start", ctx.start.isoformat(), "--end", ctx.end.isoformat()]
    if name == "drain":
        return run_contender("drain", ["--shop-url", ctx.shop_url, *span])
    if name == "dlt":
        return run_dlt(ctx)
    db = str(ctx.tmp / f"{SCENARIO}-{name}.duckdb")
    urls = ["--shop-url", ctx.shop_url, "--erp-url", ctx.erp_url]
    return run_contender(name, [*urls, *span, "--db", db])


def run_dlt(ctx: Context) -> dict[str, Any]:
    """The dlt contender with its own environment's python and the route's criteria."""
    from bench.dlt_env import dlt_python

    criteria = created_at_window_criteria(start=ctx.start, end=ctx.end, page=1, limit=500)
    criteria_file = ctx.tmp / "dlt-criteria.json"
    criteria_file.write_text(json.dumps(criteria.to_json()))
    work = ctx.tmp / "dlt"
    work.mkdir(exist_ok=True)
    argv = [
        *("--shop-url", ctx.shop_url, "--criteria", str(criteria_file)),
        *("--client-id", SANDBOX_SHOP_CLIENT_ID, "--client-secret", SANDBOX_SHOP_CLIENT_SECRET),
        *("--db", str(work / "dlt.duckdb"), "--work", str(work)),
    ]
    return run_contender("dlt_load", argv, python=str(dlt_python()))


def check_tally(ctx: Context, name: str, line: dict[str, Any]) -> None:
    """Fail loudly when a contender saw another number of orders than the sandbox made."""
    if int(line.get("orders", -1)) != ctx.tally:
        raise RuntimeError(
            f"backfill: contender {name} saw {line.get('orders')} orders, but the sandbox "
            f"made {ctx.tally} in [{ctx.start.isoformat()}, {ctx.end.isoformat()})"
        )


def figures_of(name: str, line: dict[str, Any]) -> list[Figure]:
    """A contender's figures: orders/s end to end and per step, peak RSS."""
    orders, wall = int(line["orders"]), float(line["wall_s"])
    note = f"{orders:,} orders in {wall:,.1f} s"
    if name == "dlt" and line.get("steps"):
        note += "; " + ", ".join(f"{k} {float(v):.1f} s" for k, v in line["steps"].items())
    found = [Figure(SCENARIO, name, "end to end", per_second(orders, wall), "orders/s", note)]
    for step in ("fetch", "map"):
        if step in line.get("steps", {}):
            found.append(step_figure(name, step, orders, line))
    found.append(Figure(SCENARIO, name, "peak RSS", float(line["peak_rss_mib"]), "MiB"))
    return found


def step_figure(name: str, step: str, orders: int, line: dict[str, Any]) -> Figure:
    """One step's orders/s; for ours, how much of the step its asset function took."""
    seconds = float(line["steps"][step])
    note = f"{seconds:,.1f} s"
    in_asset = line.get("steps_in_asset", {}).get(step)
    if in_asset is not None:
        note += f" ({float(in_asset):,.1f} s in the asset, the rest Dagster's events)"
    return Figure(SCENARIO, name, f"step {step}", per_second(orders, seconds), "orders/s", note)


def per_second(orders: int, seconds: float) -> float:
    return orders / seconds if seconds > 0 else 0.0


def goals(figures: list[Figure]) -> list[Goal]:
    """The issue's backfill goals: 3x dlt, 75 % of the drain, peak RSS under 1 GiB."""
    rate = {
        f.contender: f.value for f in figures if (f.scenario, f.metric) == (SCENARIO, "end to end")
    }
    rss = [
        f for f in figures if (f.scenario, f.contender, f.metric) == (SCENARIO, "ours", "peak RSS")
    ]
    ours = rate.get("ours")
    found = []
    for reference, needed, text in (
        ("dlt", 3.0, "Backfill (fetch + stage + filter + map) at least 3x dlt-parquet"),
        ("drain", 0.75, "Backfill at least 75 % of the bare drain"),
    ):
        if ours is None or not rate.get(reference):
            found.append(Goal(text, "not measured", None))
            continue
        share = ours / rate[reference]
        found.append(Goal(text, f"{ratio_number(share)}x {reference}", share >= needed))
    text = "Peak RSS under 1 GiB at 1,000,000 orders"
    if rss:
        notes = [
            f.note
            for f in figures
            if (f.scenario, f.contender, f.metric) == (SCENARIO, "ours", "end to end")
        ]
        at = notes[0].split(" in ")[0] if notes else "?"
        found.append(Goal(text, f"{rss[0].value:,.0f} MiB at {at}", rss[0].value < 1024))
    else:
        found.append(Goal(text, "not measured", None))
    return found
