"""Transform: filter and map of already-staged orders on ONE core, ours against the naive loop.

The first windows of the sandbox's range holding about ``transform_orders`` orders are staged
by each contender first (ours: its own ``source_orders`` fetch; naive: its row-by-row
staging), untimed. Then each maps them in a process pinned to CPU 0
(``os.sched_setaffinity``): ours is the ``erp_orders`` step alone over the staged range (one
Dagster run, its step's seconds from the event log), naive is its per-order loop. Both must
have staged the same orders, or the scenario fails.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from bench.contenders import run_contender
from bench.figures import Context, Figure, Goal, ScenarioFailed, ratio_number, say
from integration_project.settings import WINDOW

SCENARIO = "transform"
REFERENCES = ("naive",)
METRIC = "filter+map, one core"


def staged_range(ctx: Context) -> tuple[datetime, datetime]:
    """The first whole windows holding about ``transform_orders`` of the evenly spread
    orders (all of them when it asks for more)."""
    windows = round((ctx.end - ctx.start) / WINDOW)
    wanted = int(ctx.sizes.get("transform_orders") or ctx.tally)
    per_window = ctx.tally / windows if windows else 1
    count = min(windows, max(1, math.ceil(wanted / per_window)))
    return ctx.start, ctx.start + count * WINDOW


def run(ctx: Context) -> list[Figure]:
    start, end = staged_range(ctx)
    lines: dict[str, dict[str, Any]] = {}
    failed: list[str] = []
    for name in ("naive", "ours"):
        try:
            lines[name] = stage_and_map(ctx, name, start, end)
        except RuntimeError as exc:
            say(f"transform: {name} FAILED: {exc}")
            failed.append(name)
    found = [figure for name, line in lines.items() for figure in figures_of(name, line)]
    if failed:
        raise ScenarioFailed(f"transform: {', '.join(failed)} failed (see above)", found)
    counts = {name: int(line["orders"]) for name, line in lines.items()}
    if len(set(counts.values())) != 1:
        raise ScenarioFailed(f"transform: the contenders mapped different counts: {counts}", found)
    return found


def stage_and_map(ctx: Context, name: str, start: datetime, end: datetime) -> dict[str, Any]:
    """Stage ``[start, end)`` (untimed), then map it in a process pinned to one core."""
    span = ["--start", start.isoformat(), "--end", end.isoformat()]
    urls = ["--shop-url", ctx.shop_url, "--erp-url", ctx.erp_url]
    db = ["--db", str(ctx.tmp / f"{SCENARIO}-{name}.duckdb")]
    say(f"transform: {name} stages [{start:%Y-%m-%d %H:%M}, {end:%Y-%m-%d %H:%M})")
    staged = run_contender(name, [*urls, *span, *db, "--steps", "fetch"])
    say(f"transform: {name} maps {staged['orders']:,} orders on one core")
    return run_contender(name, [*urls, *span, *db, "--steps", "map", "--one-core"])


def figures_of(name: str, line: dict[str, Any]) -> list[Figure]:
    orders, seconds = int(line["orders"]), float(line["steps"]["map"])
    counts = line.get("mapping", {})
    note = f"{orders:,} orders in {seconds:,.1f} s; mapped {counts.get('mapped', '?')}"
    in_asset = line.get("steps_in_asset", {}).get("map")
    if in_asset is not None:
        note += f"; {float(in_asset):,.1f} s in the asset, the rest Dagster's events"
    rate = orders / seconds if seconds > 0 else 0.0
    return [
        Figure(SCENARIO, name, METRIC, rate, "orders/s", note),
        Figure(SCENARIO, name, "peak RSS (map)", float(line["peak_rss_mib"]), "MiB"),
    ]


def goals(figures: list[Figure]) -> list[Goal]:
    """Transform at least 10x the naive loop."""
    text = "Transform at least 10x the naive loop"
    rate = {f.contender: f.value for f in figures if (f.scenario, f.metric) == (SCENARIO, METRIC)}
    if not rate.get("ours") or not rate.get("naive"):
        return [Goal(text, "not measured", None)]
    share = rate["ours"] / rate["naive"]
    return [Goal(text, f"{ratio_number(share)}x naive", share >= 10)]
