"""The real thing, started as an operator would: the sandbox CLI (``integration-sandbox``) and
``dg dev`` (webserver + daemon) on free ports, with a temp ``DAGSTER_HOME`` holding the
repo's ``deploy/dagster.yaml`` and a temp ledger. Used by ``test_smoke.py``,
``test_first_hour.py`` (its process markers) and ``scripts/screenshots.py``.

Every process it starts runs in a session of its own and carries a marker in its environment
(``INTEGRATION_LIVE_STACK``), so :meth:`LiveStack.stop` can stop exactly those process groups
and then prove that nothing carrying the marker is left.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from integration_project import settings

#: The checkout: the processes run in it, and the instance is its ``deploy/dagster.yaml``.
REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MARKER = "INTEGRATION_LIVE_STACK"
LOCATION = "integration_project"
HOST = "http://127.0.0.1"
log = logging.getLogger(__name__)


_LAUNCH = """mutation($params: ExecutionParams!) { launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on InvalidStepError { invalidStepKey }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on UnauthorizedError { message } } }"""
_RUN = """query($runId: ID!) { runOrError(runId: $runId) { __typename
    ... on Run { status tags { key value } assetMaterializations { assetKey { path } partition } }
} }"""


class StackUnavailable(RuntimeError):
    """``dagster dev`` or the sandbox cannot start here for a reason that is the machine's,
    not the project's: an executable missing, a port in use, no permission, a full disk. A
    start-up that hangs or crashes otherwise is a plain failure."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listened on a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def graphql(url: str, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    """POST ``query`` to the webserver at ``url``; the answer's ``data`` (errors raise)."""
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    request = urllib.request.Request(
        f"{url}/graphql", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as answer:
        result = json.load(answer)
    if result.get("errors"):
        raise AssertionError(f"GraphQL errors: {result['errors']}")
    return result["data"]


def marked_pids(marker: str) -> list[int]:
    """Processes (of this user) whose environment carries ``MARKER=marker``."""
    needle = f"{MARKER}={marker}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:  # gone, or not ours
            continue
    return found


def _get(url: str, timeout: float = 2.0) -> bytes:
    """The body of a GET of ``url`` (an HTTP error or no answer raises)."""
    with urllib.request.urlopen(url, timeout=timeout) as answer:
        return answer.read()


@dataclass
class LiveStack:
    """Handles on the running stack; :attr:`url` is the Dagster UI."""

    url: str
    env: dict[str, str]
    home: Path
    logs: Path
    marker: str
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        """POST ``/graphql``; the ``data`` of the answer (errors raise, with the messages)."""
        return graphql(self.url, query, variables)

    def run_window(self, job: str, partition: str, timeout_s: float = 150.0) -> dict[str, Any]:
        """Launch ``job`` for one partition through the run queue (GraphQL ``launchRun``, as
        the UI does) and wait until it ends: the run's ``runId``, ``status`` and
        ``assetMaterializations`` (asset key path, partition). A refused launch raises."""
        params = {
            "selector": {
                "repositoryLocationName": LOCATION,
                "repositoryName": "__repository__",
                "jobName": job,
            },
            "executionMetadata": {"tags": [{"key": "dagster/partition", "value": partition}]},
        }
        launched = self.graphql(_LAUNCH, {"params": params})["launchRun"]
        if launched["__typename"] != "LaunchRunSuccess":
            raise AssertionError(f"launching {job} for {partition} failed: {launched}")
        run_id = launched["run"]["runId"]
        deadline = time.monotonic() + timeout_s
        run: dict[str, Any] = {}
        while time.monotonic() < deadline:
            run = self.graphql(_RUN, {"runId": run_id})["runOrError"]
            if run.get("status") in ("SUCCESS", "FAILURE", "CANCELED"):
                break
            time.sleep(1)
        return {**run, "runId": run_id}

    def output(self, name: str, tail: int = 4000) -> str:
        """The end of a started process's combined output (``sandbox`` or ``dagster``)."""
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace")[-tail:] if path.exists() else ""

    def marked_pids(self) -> list[int]:
        """Processes (of this user) whose environment carries this stack's marker."""
        return marked_pids(self.marker)

    def stop(self, timeout: float = 8.0) -> list[int]:
        """SIGINT to each started process (``dg dev`` shuts its webserver, daemon and code
        servers down), then SIGKILL to whatever of their process groups is left. Returns the
        pids still carrying the marker afterwards (should be none). ``dg dev`` may take
        30 s to finish a graceful stop (its daemon threads); a test's temporary home does not
        need that, so the group is killed after ``timeout``."""
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        deadline = time.monotonic() + timeout
        for proc in reversed(self.procs):
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.info("pid %s did not stop within %s s; killing its group", proc.pid, timeout)
        for proc in self.procs:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # its session's group: children included
            except ProcessLookupError:
                pass
            proc.wait(timeout=10)
        deadline = time.monotonic() + 10
        while (left := self.marked_pids()) and time.monotonic() < deadline:
            time.sleep(0.2)
        return left


def _start(
    stack: LiveStack, name: str, argv: list[str | Path], env: dict[str, str]
) -> subprocess.Popen[bytes]:
    """Start ``argv`` as the stack's process ``name``: its own session, output to its log."""
    out = (stack.logs / f"{name}.log").open("wb")
    try:
        proc = subprocess.Popen(
            argv,
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # a process group of its own, children included
        )
    finally:
        out.close()
    stack.procs.append(proc)
    return proc


def _wait_until(
    stack: LiveStack, proc: subprocess.Popen[bytes], name: str, url: str, timeout: float
) -> None:
    """Until ``url`` answers; a process that exits first fails (:class:`StackUnavailable` when
    its output names a reason that is the machine's)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            output = stack.output(name)
            reason = f"{name} exited with {proc.returncode} before answering {url}:\n{output}"
            environmental = ("Address already in use", "Permission denied", "No space left")
            if any(word in output for word in environmental):
                raise StackUnavailable(reason)
            raise RuntimeError(reason)
        try:
            _get(url)
            return
        except (urllib.error.URLError, OSError):
            time.sleep(0.3)
    # A start-up that hangs is the project's failure (a change made it slow or stuck), not
    # the machine's: fail, never skip.
    raise RuntimeError(f"{name} did not answer {url} within {timeout:.0f} s:\n{stack.output(name)}")


def wait_for_location(stack: LiveStack, timeout: float = 60.0) -> None:
    """Until the code location has loaded; a load error fails with Dagster's message."""
    query = """{ workspaceOrError { __typename ... on Workspace { locationEntries {
        name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } } }"""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        entries = stack.graphql(query)["workspaceOrError"].get("locationEntries") or []
        for entry in entries:
            if entry["name"] != LOCATION or entry["loadStatus"] != "LOADED":
                continue
            loaded = entry["locationOrLoadError"] or {}
            if loaded.get("__typename") == "PythonError":
                raise AssertionError(f"code location failed to load: {loaded['message']}")
            return
        time.sleep(0.5)
    raise AssertionError(f"code location {LOCATION} not loaded after {timeout:.0f} s")


@dataclass(frozen=True)
class _Ports:
    """Free ports for the sandbox's shop, ERP, second shop and Spryker backend, and for the
    webserver."""

    shop: int
    erp: int
    shop2: int
    web: int
    spryker: int


def _stack_env(
    tmp: Path, home: Path, ports: _Ports, marker: str, world: datetime
) -> dict[str, str]:
    """The environment of every process of the stack: this one's, without its Dagster, shop,
    ERP and integration settings, plus the stack's own (as ``dev.py up`` sets them), for a
    sandbox world that starts at ``world``."""
    inherited = ("DAGSTER_", "SHOP", "ERP_", "INTEGRATION_", "SPRYKER_", "CSV_")
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(inherited)},
        MARKER: marker,
        "DAGSTER_HOME": str(home),
        "VIRTUAL_ENV": str(BIN.parent),  # `dg` checks the project's environment is the active one
        # The stack is the sandbox: sandbox mode on, as `dev.py up` sets it. Every URL below is
        # set anyway (free ports), so no side falls back to the sandbox's fixed ports.
        settings.SANDBOX_MODE_ENV: "1",
        settings.DUCKDB_PATH_ENV: str(tmp / "ledger" / "integration.duckdb"),
        settings.SANDBOX_START_ENV: world.strftime(settings.PARTITION_FORMAT),
        "SHOP_API_URL": f"{HOST}:{ports.shop}",
        "SHOP_CLIENT_ID": settings.SANDBOX_SHOP_CLIENT_ID,
        "SHOP_CLIENT_SECRET": settings.SANDBOX_SHOP_CLIENT_SECRET,
        "SHOP2_API_URL": f"{HOST}:{ports.shop2}",
        "SHOP2_CLIENT_ID": settings.SANDBOX_SHOP2_CLIENT_ID,
        "SHOP2_CLIENT_SECRET": settings.SANDBOX_SHOP2_CLIENT_SECRET,
        "ERP_API_URL": f"{HOST}:{ports.erp}",
        "ERP_DIVISION": settings.SANDBOX_ERP_DIVISION,
        "ERP_CLIENT_ID": settings.SANDBOX_ERP_CLIENT_ID,
        "ERP_CLIENT_SECRET": settings.SANDBOX_ERP_CLIENT_SECRET,
        "ERP_REFRESH_TOKEN": settings.SANDBOX_ERP_REFRESH_TOKEN,
        "SPRYKER_API_URL": f"{HOST}:{ports.spryker}",
        "SPRYKER_USERNAME": settings.SANDBOX_SPRYKER_USERNAME,
        "SPRYKER_PASSWORD": settings.SANDBOX_SPRYKER_PASSWORD,
        # The CSV route's folder, which the stack's sandbox fills.
        "CSV_ORDERS_FOLDER": str(tmp / "csv_orders"),
    }


def _start_sandbox(stack: LiveStack, ports: _Ports, history_minutes: float) -> None:
    """The sandbox CLI with ``history_minutes`` of orders, started and answering."""
    argv: list[str | Path] = [BIN / "integration-sandbox"]
    argv += ["--shop-port", str(ports.shop), "--erp-port", str(ports.erp)]
    argv += ["--shop2-port", str(ports.shop2), "--history-minutes", f"{history_minutes:.2f}"]
    argv += ["--spryker-port", str(ports.spryker), "--csv-folder", stack.env["CSV_ORDERS_FOLDER"]]
    # A generous ERP minute budget: mapping a fresh ERP's customers must not wait a minute.
    argv += ["--erp-minute-limit", "100000"]
    proc = _start(stack, "sandbox", argv, stack.env)
    _wait_until(stack, proc, "sandbox", f"{HOST}:{ports.shop}/sandbox/state", 30)


@contextmanager
def live_stack(
    tmp: Path,
    *,
    timeout: float = 90.0,
    instance_yaml: Path = REPO / "deploy" / "dagster.yaml",
    env: dict[str, str] | None = None,
) -> Iterator[LiveStack]:
    """Start the sandbox CLI and ``dg dev`` (as ``dev.py up`` does); yield when the code location
    has loaded; stop both (and prove it) on the way out. :class:`StackUnavailable` if they
    cannot start here. ``instance_yaml`` becomes the instance's ``dagster.yaml`` (e.g. the
    production one, with ``env`` holding what it reads)."""
    for exe in (BIN / "dg", BIN / "integration-sandbox"):
        if not exe.exists():
            raise StackUnavailable(f"{exe} is not installed")
    ports = _Ports(*(free_port() for _ in range(5)))
    home = tmp / "dagster_home"
    home.mkdir(parents=True)
    shutil.copy(instance_yaml, home / "dagster.yaml")
    logs = tmp / "logs"
    logs.mkdir()
    marker = uuid.uuid4().hex
    # A sandbox world as `dev.py up` makes one: half an hour of history, the routes' partitions
    # starting with it (not weeks of empty windows).
    now = datetime.now(UTC)
    world = settings.window_start(now) - timedelta(minutes=30)
    stack_env = {**_stack_env(tmp, home, ports, marker, world), **(env or {})}
    stack = LiveStack(url=f"{HOST}:{ports.web}", env=stack_env, home=home, logs=logs, marker=marker)
    try:
        _start_sandbox(stack, ports, (now - world).total_seconds() / 60)
        dev = [BIN / "dg", "dev", "-h", "127.0.0.1", "-p", str(ports.web), "--log-level", "warning"]
        proc = _start(stack, "dagster", dev, stack_env)
        _wait_until(stack, proc, "dagster", f"{stack.url}/server_info", timeout)
        wait_for_location(stack)
        yield stack
    finally:
        left = stack.stop()
        if left:
            raise AssertionError(f"processes left running after stop: {left}")
