"""A one-day backfill of ~100,000 sandbox orders, as ONE run: time and peak memory.

    python -m bench.backfill                          # from the repo root, in the venv
    /usr/bin/time -v python -m bench.backfill         # the issue's memory figure
    python3 dev.py bench

The sandbox (shop and ERP) runs in a child process with a day of orders (``--per-minute`` 70:
100,800 orders, stored compactly by ``SandboxShop.add_bulk``), so the route's own figure is not
the sandbox's. This process materialises ``<route>/source_orders`` and ``<route>/erp_orders``
for the whole day in one run (single-run backfill over 288 windows) against a DuckDB file in a
temp folder, then prints one line: orders, wall seconds and orders/s for fetch and map, ERP
calls, and the peak RSS of this process and of the sandbox. ``/usr/bin/time -v`` reports the
larger of the two as "Maximum resident set size". It runs in sandbox mode
(``INTEGRATION_SANDBOX=1``, set by ``main``), like everything that talks to the sandbox.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from integration_project.settings import SANDBOX_MODE_ENV

DAY = datetime(2026, 11, 21, tzinfo=UTC)
SEED = 2026
ROUTE_FILE = (
    Path(__file__).resolve().parents[1]
    / "integration_project"
    / "defs"
    / "eu_orders_shopware_to_exact"
    / "defs.yaml"
)
log = logging.getLogger("bench.backfill")


def _peak_rss_mib(who: int = resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # Linux: KiB


def serve_sandbox(per_minute: float) -> int:
    """Child process: the sandbox with a day of orders; one JSON line when ready, one (with its
    peak RSS) when stdin closes."""
    from integration_project.sandbox import Sandbox, SandboxErp

    erp = SandboxErp(seed=SEED, minute_limit=1_000_000, day_limit=10_000_000)
    started = time.perf_counter()
    with Sandbox(seed=SEED, erp=erp) as sandbox:
        tally = sandbox.shop.add_bulk(
            round(24 * 60 * per_minute), start=DAY, end=DAY + timedelta(days=1)
        )
        ready = {
            "shop_url": sandbox.shop_url,
            "erp_url": sandbox.erp_url,
            "tally": dict(tally),
            "generate_s": round(time.perf_counter() - started, 1),
        }
        sys.stdout.write(json.dumps(ready) + "\n")
        sys.stdout.flush()
        sys.stdin.read()  # until the parent closes it
    sys.stdout.write(json.dumps({"peak_rss_mib": round(_peak_rss_mib(), 1)}) + "\n")
    sys.stdout.flush()
    return 0


def _step_seconds(instance: Any, run_id: str) -> dict[str, float]:
    """Wall seconds of each step of the run, from its event log."""
    starts: dict[str, float] = {}
    took: dict[str, float] = {}
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None or event.step_key is None:
            continue
        if event.event_type_value == "STEP_START":
            starts[event.step_key] = entry.timestamp
        elif event.event_type_value == "STEP_SUCCESS":
            took[event.step_key.rsplit("__", 1)[-1]] = entry.timestamp - starts[event.step_key]
    return took


def run_backfill(per_minute: float, page_size: int) -> int:
    import dagster as dg
    from dagster_duckdb import DuckDBResource

    from integration_project import settings
    from integration_project.assets import build_route_assets
    from integration_project.resources import ErpResource, ShopResource
    from integration_project.routes.config import RouteConfig

    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.backfill",
            "--serve-sandbox",
            "--per-minute",
            str(per_minute),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        ready = json.loads(child.stdout.readline() or "{}")
        if "shop_url" not in ready:
            raise SystemExit("the sandbox process did not start")
        log.info("sandbox ready: %s", ready)
        attributes = yaml.safe_load(ROUTE_FILE.read_text())["attributes"]
        route = RouteConfig.model_validate({**attributes, "page_size": page_size})
        assets = build_route_assets(route)
        with tempfile.TemporaryDirectory(prefix="bench-backfill-") as tmp:
            resources = {
                "shop": ShopResource(
                    api_url=ready["shop_url"],
                    client_id=settings.SANDBOX_SHOP_CLIENT_ID,
                    client_secret=settings.SANDBOX_SHOP_CLIENT_SECRET,
                    read_timeout_s=300.0,  # the first page of a day makes the sandbox scan it
                ),
                "erp": ErpResource(
                    api_url=ready["erp_url"],
                    division=settings.SANDBOX_ERP_DIVISION,
                    client_id=settings.SANDBOX_ERP_CLIENT_ID,
                    client_secret=settings.SANDBOX_ERP_CLIENT_SECRET,
                    refresh_token=settings.SANDBOX_ERP_REFRESH_TOKEN,
                ),
                "duckdb": DuckDBResource(database=str(Path(tmp) / "bench.duckdb")),
            }
            last = DAY + timedelta(days=1) - timedelta(minutes=5)
            tags = {
                "dagster/asset_partition_range_start": DAY.strftime("%Y-%m-%d-%H:%M"),
                "dagster/asset_partition_range_end": last.strftime("%Y-%m-%d-%H:%M"),
            }
            quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
            with dg.instance_for_test() as instance:
                started = time.perf_counter()
                result = dg.materialize(
                    [assets.source_orders, assets.erp_orders],
                    resources=resources,
                    instance=instance,
                    tags=tags,
                    run_config=quiet,
                )
                wall = time.perf_counter() - started
                steps = _step_seconds(instance, result.run_id)
                runs = len(instance.get_runs())
            meta: dict[str, dict[str, Any]] = {}
            for event in result.get_asset_materialization_events():
                name = event.asset_key.path[-1]
                meta[name] = {k: v.value for k, v in event.materialization.metadata.items()}
                partitions = meta.setdefault("_partitions", {})
                partitions[name] = partitions.get(name, 0) + 1
        with urllib.request.urlopen(f"{ready['erp_url']}/sandbox/state", timeout=60) as answer:
            erp_calls = sum(json.load(answer)["calls"].values())
    finally:
        child.stdin.close()
        tail = child.stdout.read()
        child.wait(timeout=60)
    sandbox_rss = json.loads(tail.strip().splitlines()[-1])["peak_rss_mib"] if tail.strip() else 0
    fetched = meta["source_orders"]
    mapped = meta["erp_orders"]
    fetch_s, map_s = steps.get("source_orders", 0.0), steps.get("erp_orders", 0.0)
    orders = int(fetched["fetched"])
    route_rss = _peak_rss_mib()
    line = (
        f"orders={orders} (sandbox made {ready['tally']['orders']}) runs={runs} "
        f"windows={meta['_partitions']['source_orders']} pages={fetched['pages']} "
        f"page_size={page_size} | wall={wall:.1f}s fetch={fetch_s:.1f}s "
        f"({orders / fetch_s if fetch_s else 0:.0f} orders/s) map={map_s:.1f}s "
        f"({orders / map_s if map_s else 0:.0f} orders/s; mapped={mapped['mapped']} "
        f"dropped_non_eu={mapped['dropped_non_eu']} quarantined={mapped['quarantined']}) | "
        f"erp_calls={erp_calls} | peak_rss: route={route_rss:.0f} MiB "
        f"sandbox={sandbox_rss:.0f} MiB sum={route_rss + sandbox_rss:.0f} MiB "
        f"| sandbox generated in {ready['generate_s']}s | success={result.success}"
    )
    print(line)  # noqa: T201
    return 0 if result.success and orders == ready["tally"]["orders"] else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.backfill", description=__doc__)
    parser.add_argument("--per-minute", type=float, default=70.0, help="orders a minute")
    parser.add_argument("--page-size", type=int, default=500, help="shop page size (max 500)")
    parser.add_argument("--serve-sandbox", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # A benchmark against the sandbox: sandbox mode on, here and in the sandbox's process.
    os.environ[SANDBOX_MODE_ENV] = "1"
    if args.serve_sandbox:
        return serve_sandbox(args.per_minute)
    os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
    return run_backfill(args.per_minute, args.page_size)


if __name__ == "__main__":
    raise SystemExit(main())
