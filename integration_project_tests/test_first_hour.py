"""The first hour of a newcomer, as the README tells it: ``python3 dev.py up``, the README's
command-line examples against the same instance, Ctrl-C, ``dev.py up`` again.

What must hold: orders reach the sandbox ERP after each start (a restart is a fresh sandbox
world, not a ledger that calls the new world's orders delivered); the command-line runs are in
the UI's run list and say what they did; a stop cancels what is in flight (no failed run),
leaves no process and no temporary file; no ``YourRef`` reaches the ERP twice.

``dev.py up`` uses the sandbox's fixed ports (8801-8803), as a newcomer's does; the UI gets a
free port, and ``DEV_STATE_DIR`` puts ``.dagster_home/`` and ``data/`` in a temp folder.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from pathlib import Path

import duckdb
import pytest

from integration_project import settings
from integration_project_testkit.live_stack import MARKER, free_port, graphql, marked_pids
from integration_project_tests.skips import in_ci

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ERP_STATE = f"{settings.SANDBOX_ERP_URL}/sandbox/state"
SANDBOX_PORTS = (
    settings.SANDBOX_SHOP_PORT,
    settings.SANDBOX_ERP_PORT,
    settings.SANDBOX_SHOP2_PORT,
    settings.SANDBOX_SPRYKER_PORT,
)
#: The run id of a run's own log line: ``... - dagster - INFO - <job> - <run id> - ...``.
RUN_ID = re.compile(r" - dagster - [A-Z]+ - \S+ - ([0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12}) - ")
#: How often the waits below look again: each look is one local HTTP call, and a coarser
#: step only adds its half, on average, to every wait.
POLL_S = 0.5
RUNS = """query($ids: [String!]) { runsOrError(filter: {runIds: $ids}) {
    ... on Runs { results { runId status jobName tags { key value } } } } }"""


def _port_open(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.settimeout(0.3)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as answer:
        return json.load(answer)


def readme_cli_block() -> str:
    """The bash block of the README's "From the command line" section."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("### From the command line", 1)[1].split("\n## ", 1)[0]
    [block] = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    return block


class Newcomer:
    """``dev.py up`` started and stopped as a user does (Ctrl-C is SIGINT to ``dev.py``)."""

    def __init__(self, tmp: Path) -> None:
        self.state = tmp / "state"
        self.tmpdir = tmp / "tmp"  # dg dev's sockets and workspace file go here
        self.tmpdir.mkdir(parents=True)
        self.logs = tmp
        self.marker = uuid.uuid4().hex
        self.url = f"http://127.0.0.1:{free_port()}"
        self.starts = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.final_erp: list[dict] = []
        inherited = ("DAGSTER_", "SHOP", "ERP_", "INTEGRATION_", "SANDBOX_", "DEV_")
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(inherited)},
            MARKER: self.marker,
            "DEV_VENV": str(BIN.parent),
            "DEV_STATE_DIR": str(self.state),
            "DAGSTER_PORT": self.url.rsplit(":", 1)[1],
            "TMPDIR": str(self.tmpdir),
            # Ten minutes of history instead of two hours: fewer ERP accounts to create at the
            # sandbox ERP's 60 calls a minute, so the first orders arrive sooner.
            "SANDBOX_HISTORY_MINUTES": "10",
        }

    @property
    def log(self) -> Path:
        return self.logs / f"up-{self.starts}.log"

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def up(self) -> None:
        self.starts += 1
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, REPO / "dev.py", "up"],
                cwd=REPO,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.wait_for("[dev] command line against this instance", timeout=240)

    def wait_for(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output():
                return
            assert self.proc and self.proc.poll() is None, f"dev.py up exited:\n{self.output()}"
            time.sleep(POLL_S)
        raise AssertionError(f"no {text!r} after {timeout:.0f} s:\n{self.output()[-4000:]}")

    def stop(self) -> float:
        """Ctrl-C; how long the stop took. Kills what is left (and fails) past 90 s. The
        sandbox ERP's last state (``final_erp``) is read until it stops: ``dev.py`` stops
        Dagster first, so that state holds everything any run sent."""
        assert self.proc is not None
        started = time.monotonic()
        self.proc.send_signal(signal.SIGINT)
        while self.proc.poll() is None and time.monotonic() < started + 90:
            try:
                self.final_erp = erp_sales_orders()
            except (urllib.error.URLError, OSError):
                pass  # the sandbox has stopped
            time.sleep(0.2)
        try:
            code = self.proc.wait(timeout=1)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            raise AssertionError(f"dev.py up did not stop in 90 s:\n{self.output()}") from None
        assert code == 0, self.output()
        return time.monotonic() - started

    def ledger_refs(self) -> dict[str, set[str]]:
        """The ledger's YourRefs by status, read once everything has stopped."""
        path = self.state / "data" / "sandbox.duckdb"
        with duckdb.connect(str(path), read_only=True) as conn:
            rows = conn.execute("SELECT status, your_ref FROM delivered_orders").fetchall()
        refs: dict[str, set[str]] = {}
        for status, ref in rows:
            refs.setdefault(status, set()).add(ref)
        return refs

    def marked_pids(self) -> list[int]:
        return marked_pids(self.marker)

    def kill_all(self) -> None:
        for pid in self.marked_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def run_statuses(self) -> Counter[str]:
        """Every run's status in the quick start's instance, read after a stop (public API)."""
        script = (
            "import dagster as dg, json; i = dg.DagsterInstance.get(); "
            "print(json.dumps([r.status.value for r in i.get_runs()]))"
        )
        env = {**self.env, "DAGSTER_HOME": str(self.state / ".dagster_home")}
        done = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
        )
        return Counter(json.loads(done.stdout.strip().splitlines()[-1]))


def erp_sales_orders() -> list[dict]:
    return _get_json(ERP_STATE)["sales_orders"]


def wait_for_erp_orders(newcomer: Newcomer, timeout: float = 300) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            orders = erp_sales_orders()
        except (urllib.error.URLError, OSError):
            orders = []
        if orders:
            return orders
        time.sleep(POLL_S)
    raise AssertionError(f"no sales order in the ERP after {timeout:.0f} s:\n{newcomer.output()}")


def assert_stopped_cleanly(newcomer: Newcomer, took: float) -> None:
    deadline = time.monotonic() + 15
    while newcomer.marked_pids() and time.monotonic() < deadline:
        time.sleep(0.3)
    assert not newcomer.marked_pids(), "processes left running after the stop"
    assert list(newcomer.tmpdir.iterdir()) == [], "files left in the temp folder"
    assert not any(_port_open(port) for port in SANDBOX_PORTS)
    statuses = newcomer.run_statuses()
    assert statuses["FAILURE"] == 0, statuses
    # Every run has ended: none left queued or "started" for run monitoring to fail later.
    assert set(statuses) <= {"SUCCESS", "CANCELED"}, statuses
    assert took < 60, f"the stop took {took:.0f} s"
    # This world's ledger and ERP agree: every order the ledger calls delivered is in the ERP,
    # and the ERP holds nothing the ledger does not know (a delivery cancelled mid-send may
    # leave an order `sending`; the next run looks it up). A ledger that outlived an earlier
    # world would call orders delivered that this ERP never got.
    erp = Counter(o["YourRef"] for o in newcomer.final_erp)
    assert erp and max(erp.values()) == 1
    ledger = newcomer.ledger_refs()
    assert ledger.get("delivered", set()) <= set(erp), ledger.get("delivered", set()) - set(erp)
    assert set(erp) <= ledger.get("delivered", set()) | ledger.get("sending", set())


def assert_calm_catalog(newcomer: Newcomer, timeout: float = 180) -> None:
    """The catalog shows the sandbox world's few windows, filled by the history backfill (the
    window that just closed may still be on its way), not weeks of missing partitions. The
    backfill is one run for both routes: one route's orders can reach the ERP while the
    other's windows are still being mapped, so this waits for the backfill's run to end."""
    query = """query($key: AssetKeyInput!) { assetNodeOrError(assetKey: $key) {
        ... on AssetNode { partitionStats { numMaterialized numPartitions numFailed } } } }"""
    deadline = time.monotonic() + timeout
    while True:
        stats = {}
        for route in ("eu_orders_shopware_to_exact", "b2b_orders_shopware_to_exact"):
            key = {"path": [route, "erp_orders"]}
            answer = graphql(newcomer.url, query, {"key": key})["assetNodeOrError"]
            stats[route] = answer["partitionStats"]
        filled = all(s["numMaterialized"] >= s["numPartitions"] - 1 for s in stats.values())
        if filled or time.monotonic() > deadline:
            break
        time.sleep(POLL_S)
    for route, counts in stats.items():
        # Ten minutes of history and the minutes since: a handful of 5-minute windows.
        assert 2 <= counts["numPartitions"] <= 6, (route, counts)
        assert counts["numFailed"] == 0, (route, counts)
        assert counts["numMaterialized"] >= counts["numPartitions"] - 1, (route, counts)


def test_a_newcomer_starts_uses_the_cli_stops_and_starts_again(tmp_path: Path) -> None:
    busy = [port for port in SANDBOX_PORTS if _port_open(port)]
    if busy:
        reason = f"port {busy[0]} is in use (a `dev.py up` running on this machine?)"
        if in_ci():
            pytest.fail(reason)
        pytest.skip(reason)
    newcomer = Newcomer(tmp_path)
    try:
        newcomer.up()
        first_world = wait_for_erp_orders(newcomer)
        assert "backfilling the sandbox's history since" in newcomer.output()
        assert_calm_catalog(newcomer)

        # The README's command-line examples, as written, against the same instance.
        block = readme_cli_block()
        assert "source .dagster_home/quickstart.env" in block and ".venv/bin/" in block
        script = block.replace(".dagster_home/", f"{newcomer.state}/.dagster_home/").replace(
            ".venv/bin/", f"{BIN}/"
        )
        cli = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=REPO,
            env=newcomer.env,
            capture_output=True,
            text=True,
            timeout=240,
        )
        said = cli.stdout + cli.stderr
        assert cli.returncode == 0, said
        # It says what it did, at INFO, without DEBUG step events.
        assert re.search(r"Fetched \d+ orders in \d+ pages", said), said
        assert re.search(r"Mapped \d+ of \d+ orders", said), said
        assert re.search(r"Sent \d+ orders to the ERP|holds the lease", said), said
        assert " - DEBUG - " not in said
        # Both runs are in the UI's run list, succeeded, one of them for the window.
        run_ids = sorted(set(RUN_ID.findall(said)))
        assert len(run_ids) == 2, said
        runs = graphql(newcomer.url, RUNS, {"ids": run_ids})["runsOrError"]["results"]
        assert sorted(r["runId"] for r in runs) == run_ids
        assert {r["status"] for r in runs} == {"SUCCESS"}
        partitions = [
            t["value"] for r in runs for t in r["tags"] if t["key"] == "dagster/partition"
        ]
        assert len(partitions) == 1 and re.fullmatch(r"\d{4}-\d\d-\d\d-\d\d:\d\d", partitions[0])

        refs = Counter(o["YourRef"] for o in erp_sales_orders())
        assert len(refs) >= len(first_world) and max(refs.values()) == 1
        took = newcomer.stop()
        assert_stopped_cleanly(newcomer, took)

        # Again: a fresh world, and orders reach its (empty) ERP again.
        newcomer.up()
        assert (newcomer.state / "data" / "sandbox.previous.duckdb").exists()
        second_world = wait_for_erp_orders(newcomer)
        refs = Counter(o["YourRef"] for o in second_world)
        assert max(refs.values()) == 1
        took = newcomer.stop()
        assert_stopped_cleanly(newcomer, took)
    finally:
        newcomer.kill_all()
