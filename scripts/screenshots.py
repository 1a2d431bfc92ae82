"""Screenshots of the Dagster UI for the README (run by hand, not in CI).

    /tmp/venv/bin/python scripts/screenshots.py [--out docs]

Starts the sandbox CLI and ``dagster dev`` on free ports (as ``test_smoke.py`` does, with a
temp ``DAGSTER_HOME`` and ledger), fetches and maps one window of the default route through the
run queue, then points headless Chromium (Debian package ``chromium``) at the asset graph and
at that run's page and saves ``docs/asset-graph.png`` and ``docs/run.png``. Stops everything
it started on the way out.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from integration_project_tests.live_stack import LOCATION, LiveStack, live_stack  # noqa: E402

ROUTE = "eu_orders_shopware_to_exact"
log = logging.getLogger("screenshots")

LAUNCH = """mutation($params: ExecutionParams!) { launchRun(executionParams: $params) {
    __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } } }"""
STATUS = """query($runId: ID!) { runOrError(runId: $runId) { ... on Run { status } } }"""


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    raise SystemExit("no Chromium found: apt-get install -y chromium")


def launch_window(stack: LiveStack) -> str:
    """Fetch and map the last closed window of the default route; its run id once it ends."""
    now = datetime.now(UTC)
    start = now.replace(second=0, microsecond=0) - timedelta(minutes=now.minute % 5 + 5)
    params = {
        "selector": {
            "repositoryLocationName": LOCATION,
            "repositoryName": "__repository__",
            "jobName": f"{ROUTE}__source_orders_job",
        },
        "executionMetadata": {
            "tags": [{"key": "dagster/partition", "value": start.strftime("%Y-%m-%d-%H:%M")}]
        },
    }
    answer = stack.graphql(LAUNCH, {"params": params})["launchRun"]
    if answer["__typename"] != "LaunchRunSuccess":
        raise SystemExit(f"could not launch a run: {answer}")
    run_id = answer["run"]["runId"]
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        status = stack.graphql(STATUS, {"runId": run_id})["runOrError"]["status"]
        if status in ("SUCCESS", "FAILURE", "CANCELED"):
            log.info("run %s: %s", run_id, status)
            return run_id
        time.sleep(1)
    raise SystemExit(f"run {run_id} did not finish in time")


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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs", help="folder for the PNGs")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    browser = chromium()
    args.out.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory(prefix="screenshots-") as tmp,
        live_stack(Path(tmp), nux=False) as stack,
    ):
        run_id = launch_window(stack)
        profile = Path(tmp) / "chromium"
        group = f"{stack.url}/locations/{LOCATION}/asset-groups/{ROUTE}"
        screenshot(browser, group, args.out / "asset-graph.png", profile)
        screenshot(browser, f"{stack.url}/runs/{run_id}", args.out / "run.png", profile)
    print(f"screenshots in {args.out}")  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
