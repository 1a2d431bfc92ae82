"""Screenshots of the Dagster UI for the README (run by hand, not in CI).

    .venv/bin/python scripts/screenshots.py [--out docs]      # from the repo root

Starts the sandbox CLI and ``dg dev`` on free ports (as ``test_smoke.py`` does, with a
temp ``DAGSTER_HOME`` and ledger), backfills the sandbox world's half hour of history for the
default route (one run) and waits for the delivery the sensor starts, then points headless
Chromium (Debian package ``chromium``) at the asset graph and at the backfill's run page and
saves ``docs/asset-graph.png`` and ``docs/run.png``. Stops everything it started on the way out.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from integration_project_testkit.live_stack import LOCATION, LiveStack, live_stack
from integration_project_testkit.run_tags import BACKFILL_TAG

REPO = Path(__file__).resolve().parents[1]

ROUTE = "eu_orders_shopware_to_exact"
log = logging.getLogger("screenshots")

LAUNCH = """mutation($params: ExecutionParams!) { launchRun(executionParams: $params) {
    __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } } }"""
STATUS = """query($runId: ID!) { runOrError(runId: $runId) { ... on Run { status } } }"""


def chromium() -> str:
    """The headless browser's executable (Chromium, or Chrome)."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    raise SystemExit("no Chromium found: apt-get install -y chromium")


BACKFILL = """mutation($params: LaunchBackfillParams!) {
    launchPartitionBackfill(backfillParams: $params) { __typename
        ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message } } }"""
RUNS = """query($filter: RunsFilter) { runsOrError(filter: $filter) {
    ... on Runs { results { runId status } } } }"""
DONE = ("SUCCESS", "FAILURE", "CANCELED")


def backfill_history(stack: LiveStack) -> str:
    """Backfill every window of the sandbox world for the default route (as ``dev.py up``
    does), then wait for the delivery the sensor starts; the backfill's run id."""
    keys = [{"path": [ROUTE, name]} for name in ("source_orders", "erp_orders")]
    params = {"assetSelection": keys, "allPartitions": True, "title": "sandbox history"}
    answer = stack.graphql(BACKFILL, {"params": params})["launchPartitionBackfill"]
    if answer["__typename"] != "LaunchBackfillSuccess":
        raise SystemExit(f"could not launch the backfill: {answer}")
    tags = [{"key": BACKFILL_TAG, "value": answer["backfillId"]}]
    run_id = wait_for_run(stack, {"tags": tags})
    wait_for_run(stack, {"pipelineName": f"{ROUTE}__erp_delivery_job"})
    wait_until_idle(stack)
    return run_id


def wait_until_idle(stack: LiveStack, timeout: float = 90) -> None:
    """Until no run is queued or in progress (a delivery starts every minute and takes
    seconds), so the graph shows settled checks rather than "Materializing…"."""
    active = ["QUEUED", "NOT_STARTED", "STARTING", "STARTED"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = stack.graphql(RUNS, {"filter": {"statuses": active}})["runsOrError"]["results"]
        if not runs:
            time.sleep(3)  # the UI's live data polls every 2 s
            return
        time.sleep(0.5)
    log.warning("runs still in progress after %s s; taking the screenshot anyway", timeout)


def wait_for_run(stack: LiveStack, run_filter: dict, timeout: float = 300) -> str:
    """The first run matching ``run_filter`` once it has ended successfully."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = stack.graphql(RUNS, {"filter": run_filter})["runsOrError"]["results"]
        ended = [r for r in runs if r["status"] in DONE]
        if ended:
            run = ended[-1]
            if run["status"] != "SUCCESS":
                raise SystemExit(f"run {run['runId']}: {run['status']}")
            log.info("run %s: %s", run["runId"], run["status"])
            return run["runId"]
        time.sleep(1)
    raise SystemExit(f"no run matching {run_filter} ended in {timeout:.0f} s")


def screenshot(browser: str, url: str, target: Path, profile: Path) -> None:
    """One PNG of ``url`` after the page's scripts had time to render (virtual time budget)."""
    argv = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=20000",
        f"--screenshot={target}",
        "--window-size=1600,1000",
        url,
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode or not target.exists():
        raise SystemExit(f"chromium failed ({done.returncode}): {done.stderr[-2000:]}")
    log.info("saved %s (%s bytes)", target, target.stat().st_size)


def main(argv: list[str] | None = None) -> int:
    """Start the stack, backfill its history, save the two screenshots, stop the stack."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs", help="folder for the PNGs")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    browser = chromium()
    args.out.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory(prefix="screenshots-") as tmp,
        live_stack(Path(tmp)) as stack,
    ):
        run_id = backfill_history(stack)
        profile = Path(tmp) / "chromium"
        group = f"{stack.url}/locations/{LOCATION}/asset-groups/{ROUTE}"
        screenshot(browser, group, args.out / "asset-graph.png", profile)
        screenshot(browser, f"{stack.url}/runs/{run_id}", args.out / "run.png", profile)
    print(f"screenshots in {args.out}")  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
