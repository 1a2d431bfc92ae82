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
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from integration_project.settings import PARTITION_FORMAT, SANDBOX_MODE_ENV

DAY = datetime(2026, 11, 21, tzinfo=UTC)
SEED = 2026
log = logging.getLogger("bench.backfill")


def _peak_rss_mib(who: int = resource.RUSAGE_SELF) -> float:
    """The peak resident set size of this process (or of ``who``), in MiB."""
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


@dataclass(frozen=True)
class Backfill:
    """What the one backfill run did, as its figures need it."""

    success: bool
    wall_s: float
    #: Wall seconds of each step (``source_orders``, ``erp_orders``).
    steps: dict[str, float]
    #: Runs on the instance afterwards (a single-run backfill: one).
    runs: int
    #: Each asset's metadata (of its last window), and ``_partitions``: windows per asset.
    meta: dict[str, dict[str, Any]]


def _start_sandbox_process(per_minute: float) -> subprocess.Popen[str]:
    """This module with ``--serve-sandbox``: the sandbox and its day of orders, in a child."""
    argv = [sys.executable, "-m", "bench.backfill", "--serve-sandbox"]
    return subprocess.Popen(
        [*argv, "--per-minute", str(per_minute)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )


def _materialisations(result: Any) -> dict[str, dict[str, Any]]:
    """Each asset's metadata (its last materialisation's) and how many windows it wrote."""
    meta: dict[str, dict[str, Any]] = {}
    for event in result.get_asset_materialization_events():
        name = event.asset_key.path[-1]
        meta[name] = {k: v.value for k, v in event.materialization.metadata.items()}
        partitions = meta.setdefault("_partitions", {})
        partitions[name] = partitions.get(name, 0) + 1
    return meta


def _backfill(ready: dict[str, Any], page_size: int) -> Backfill:
    """``source_orders`` and ``erp_orders`` for the whole day in one run, against the sandbox
    ``ready`` names and a DuckDB file in a temp folder."""
    import dagster as dg

    from integration_project_testkit.resources import sandbox_resources
    from integration_project_testkit.routes import route_assets
    from integration_project_testkit.windows import fetch_and_map_range

    assets = route_assets(page_size=page_size)
    first, last = DAY, DAY + timedelta(days=1) - timedelta(minutes=5)
    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    with tempfile.TemporaryDirectory(prefix="bench-backfill-") as tmp:
        # A long read timeout: the first page of a day makes the sandbox scan it.
        resources = sandbox_resources(
            ready["shop_url"],
            ready["erp_url"],
            str(Path(tmp) / "bench.duckdb"),
            shop={"read_timeout_s": 300.0},
        )
        with dg.instance_for_test() as instance:
            started = time.perf_counter()
            result = fetch_and_map_range(
                resources,
                first.strftime(PARTITION_FORMAT),
                last.strftime(PARTITION_FORMAT),
                assets,
                instance=instance,
                run_config=quiet,
            )
            wall = time.perf_counter() - started
            steps = _step_seconds(instance, result.run_id)
            runs = len(instance.get_runs())
    return Backfill(result.success, wall, steps, runs, _materialisations(result))


def _erp_calls(erp_url: str) -> int:
    """Every call the sandbox ERP answered, from its state endpoint."""
    with urllib.request.urlopen(f"{erp_url}/sandbox/state", timeout=60) as answer:
        return sum(json.load(answer)["calls"].values())


def _figures(
    done: Backfill, ready: dict[str, Any], page_size: int, erp_calls: int, sandbox_rss: float
) -> str:
    """The one line the benchmark prints."""
    fetched, mapped = done.meta["source_orders"], done.meta["erp_orders"]
    fetch_s, map_s = done.steps.get("source_orders", 0.0), done.steps.get("erp_orders", 0.0)
    orders = int(fetched["fetched"])
    route_rss = _peak_rss_mib()
    return (
        f"orders={orders} (sandbox made {ready['tally']['orders']}) runs={done.runs} "
        f"windows={done.meta['_partitions']['source_orders']} pages={fetched['pages']} "
        f"page_size={page_size} | wall={done.wall_s:.1f}s fetch={fetch_s:.1f}s "
        f"({orders / fetch_s if fetch_s else 0:.0f} orders/s) map={map_s:.1f}s "
        f"({orders / map_s if map_s else 0:.0f} orders/s; mapped={mapped['mapped']} "
        f"dropped_non_eu={mapped['dropped_non_eu']} quarantined={mapped['quarantined']}) | "
        f"erp_calls={erp_calls} | peak_rss: route={route_rss:.0f} MiB "
        f"sandbox={sandbox_rss:.0f} MiB sum={route_rss + sandbox_rss:.0f} MiB "
        f"| sandbox generated in {ready['generate_s']}s | success={done.success}"
    )


def run_backfill(per_minute: float, page_size: int) -> int:
    """The benchmark: the sandbox in a child process, the backfill here, one line of figures.
    Exit code 0 when the run succeeded and fetched every order the sandbox made."""
    child = _start_sandbox_process(per_minute)
    if child.stdin is None or child.stdout is None:
        raise RuntimeError("the sandbox process has no pipes")
    try:
        ready = json.loads(child.stdout.readline() or "{}")
        if "shop_url" not in ready:
            raise SystemExit("the sandbox process did not start")
        log.info("sandbox ready: %s", ready)
        done = _backfill(ready, page_size)
        erp_calls = _erp_calls(ready["erp_url"])
    finally:
        child.stdin.close()
        tail = child.stdout.read()
        child.wait(timeout=60)
    sandbox_rss = json.loads(tail.strip().splitlines()[-1])["peak_rss_mib"] if tail.strip() else 0
    print(_figures(done, ready, page_size, erp_calls, sandbox_rss))  # noqa: T201
    orders = int(done.meta["source_orders"]["fetched"])
    return 0 if done.success and orders == ready["tally"]["orders"] else 1


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
