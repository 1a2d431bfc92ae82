"""Ours: the route's real single-run backfill of ``source_orders`` + ``erp_orders``.

    python -m bench.contenders.ours --shop-url URL --erp-url URL --start ISO --end ISO \
        --db ledger.duckdb [--steps fetch,map|fetch|map] [--one-core]

Every window of ``[start, end)`` in ONE Dagster run (the tags of a single-run backfill), the
shipped default route's assets against the sandbox, a DuckDB ledger at ``--db`` and a
throwaway Dagster instance: what ``dagster asset materialize --partition-range`` does.
``--steps map`` maps what an earlier ``--steps fetch`` staged in the same ledger (the
transform scenario), ``--one-core`` pins the process to CPU 0 first. Prints one JSON line:
orders (fetched; staged ones for ``map``), wall seconds of the run, seconds per step from the
run's event log (``fetch``, ``map``) and of their asset functions alone (``steps_in_asset``),
what the mapping counted, peak RSS.
"""

from __future__ import annotations

import argparse
import os
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.contenders import emit, moment, pin_to_one_core
from integration_project.settings import PARTITION_FORMAT, SANDBOX_MODE_ENV, WINDOW

#: The asset behind each step's name.
STEP_ASSETS = {"fetch": "source_orders", "map": "erp_orders"}
#: What the mapping's metadata counts, as the figures show it.
MAP_COUNTS = ("staged", "mapped", "dropped_non_eu", "quarantined", "deferred", "erp_lookups")


def step_seconds(instance: Any, run_id: str) -> tuple[dict[str, float], dict[str, float]]:
    """Wall seconds of each step of the run (``fetch``, ``map``) from its event log, and of
    each step's asset function alone (start to its output): the difference is Dagster's
    bookkeeping, e.g. one materialisation event per window."""
    names = {asset: step for step, asset in STEP_ASSETS.items()}
    starts: dict[str, float] = {}
    took: dict[str, float] = {}
    computed: dict[str, float] = {}
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None or event.step_key is None:
            continue
        asset = event.step_key.rsplit("__", 1)[-1]
        step = names.get(asset, asset)
        kind = event.event_type_value
        if kind == "STEP_START":
            starts[event.step_key] = entry.timestamp
        elif kind == "STEP_OUTPUT":
            computed[step] = round(entry.timestamp - starts[event.step_key], 3)
        elif kind == "STEP_SUCCESS":
            took[step] = round(entry.timestamp - starts[event.step_key], 3)
    return took, computed


def asset_metadata(result: Any) -> dict[str, dict[str, Any]]:
    """Each asset's metadata in the run (its one materialisation), as plain values."""
    meta: dict[str, dict[str, Any]] = {}
    for event in result.get_asset_materialization_events():
        values = event.materialization.metadata.items()
        meta[event.asset_key.path[-1]] = {k: v.value for k, v in values}
    return meta


def backfill(args: argparse.Namespace, start: datetime, end: datetime) -> dict[str, Any]:
    """The one run over every window of ``[start, end)``, and its figures."""
    import dagster as dg

    from integration_project_testkit.resources import sandbox_resources
    from integration_project_testkit.routes import route_assets
    from integration_project_testkit.run_tags import range_tags

    first, last = start.strftime(PARTITION_FORMAT), (end - WINDOW).strftime(PARTITION_FORMAT)
    assets = route_assets(page_size=args.page_size, partitions_start=first)
    # A long read timeout: the first page of a long range makes the sandbox scan it.
    resources = sandbox_resources(
        args.shop_url, args.erp_url, args.db, shop={"read_timeout_s": 600.0}
    )
    wanted = [getattr(assets, STEP_ASSETS[step]).key for step in args.steps.split(",")]
    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    with dg.instance_for_test() as instance:
        began = time.perf_counter()
        result = dg.materialize(
            [assets.source_orders, assets.erp_orders],
            resources=resources,
            tags=range_tags(first, last),
            selection=wanted,
            instance=instance,
            run_config=quiet,
        )
        wall = time.perf_counter() - began
        steps, computed = step_seconds(instance, result.run_id)
    return {**figures(args.steps, result, wall, steps), "steps_in_asset": computed}


def figures(wanted: str, result: Any, wall: float, steps: dict[str, float]) -> dict[str, Any]:
    """The contender's line: orders (fetched, else staged for mapping), counts, seconds."""
    meta = asset_metadata(result)
    fetched, mapped = meta.get("source_orders", {}), meta.get("erp_orders", {})
    if "fetch" in wanted:
        orders = int(fetched["fetched"])
    else:
        orders = int(mapped["staged"])
    counts = {key: int(mapped[key]) for key in MAP_COUNTS if key in mapped}
    return {
        "contender": "ours",
        "orders": orders,
        "pages": int(fetched.get("pages", 0)),
        "wall_s": round(wall, 3),
        "steps": steps,
        "mapping": counts,
        "success": bool(result.success),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.contenders.ours", description=__doc__)
    parser.add_argument("--shop-url", required=True)
    parser.add_argument("--erp-url", required=True)
    parser.add_argument("--start", required=True, help="first window's start, ISO 8601")
    parser.add_argument("--end", required=True, help="last window's end, ISO 8601")
    parser.add_argument("--db", required=True, help="the ledger's DuckDB file")
    parser.add_argument("--steps", default="fetch,map", choices=["fetch,map", "fetch", "map"])
    parser.add_argument("--page-size", type=int, default=500, help="shop page size (max 500)")
    parser.add_argument("--one-core", action="store_true", help="pin this process to CPU 0")
    args = parser.parse_args(argv)
    if args.one_core:
        pin_to_one_core()
    os.environ[SANDBOX_MODE_ENV] = "1"
    os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
    Path(args.db).parent.mkdir(parents=True, exist_ok=True)
    emit(backfill(args, moment(args.start), moment(args.end)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
