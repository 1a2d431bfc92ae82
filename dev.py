#!/usr/bin/env python3
"""Set up and run the project with nothing but Python 3.11+.

    python3 dev.py up      # venv + install, sandbox shops and ERP, Dagster UI with schedules on
    python3 dev.py test    # venv + install, ruff, dg check, the test suite (what CI runs)
    python3 dev.py bench   # venv + install, the benchmarks and their table (python -m bench)
    python3 dev.py lock    # regenerate constraints.txt with uv, then install it

All but lock run in sandbox mode (INTEGRATION_SANDBOX=1): a route whose URL variable is unset talks
to the local sandbox. Every ``up`` starts a fresh sandbox world: shops with two hours of order
history, an empty ERP, a new ledger in data/sandbox.duckdb (whatever INTEGRATION_DUCKDB_PATH
says), partitions that start with that history, and one backfill that fetches it. The sandbox
also serves a Spryker backend (:8804, with the same history) and drops marketplace order files
(CSV) into $XDG_DATA_HOME/integration_project/sandbox_csv_orders, emptied of the last world's.
Dagster runs with `dg dev`, its instance in .dagster_home/ (kept across starts);
.dagster_home/quickstart.env holds the variables for command-line runs against it. Ctrl-C (or
SIGTERM) pauses schedules and sensors (reset on the next start), lets runs in progress finish
(15 s) or cancels them, and stops everything. With INTEGRATION_SANDBOX=0, ``up`` starts no
sandbox and every route variable must be set (real systems). ``test`` and ``bench`` always use
the sandbox.

DAGSTER_PORT (3000) sets the UI's port; SANDBOX_HISTORY_MINUTES (120) the sandbox's history;
DEV_STATE_DIR (the repository) where .dagster_home/ and data/ go.

The virtual environment lives in .venv/ (override with DEV_VENV=path). The project is installed
at the versions pinned in constraints.txt (pip install -c constraints.txt -e .[dev]), again
whenever pyproject.toml or constraints.txt changes. ``lock`` rewrites constraints.txt with uv
(installed into the venv): every pin that still fits pyproject.toml is kept; its arguments go to
`uv pip compile` (``--upgrade``, ``--upgrade-package NAME``). Only the standard library is used
here (and integration_project/settings.py, which is standard library only itself).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.request
import venv
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("DEV_VENV", ROOT / ".venv"))
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / "python"
#: The lock: one tested version of every package the project can pull in (``lock`` writes it).
LOCK = ROOT / "constraints.txt"
#: The installers, pinned like everything else: pip installs the lock, uv writes it.
PIP = "pip==26.3"
UV = "uv==0.13.9"
#: How uv writes the lock: every package ``-e .[dev]`` can pull in, on every platform and Python
#: that pyproject.toml's requires-python allows (a pin's marker says where it applies).
LOCK_COMMAND = [
    "uv",
    "pip",
    "compile",
    "pyproject.toml",
    "--extra",
    "dev",
    "--extra",
    "prod",
    "--universal",
]


def say(message: str) -> None:
    print(f"[dev] {message}", flush=True)  # noqa: T201


def create_venv() -> None:
    if sys.version_info < (3, 11):  # noqa: UP036 - this script may run on any python3
        sys.exit("Python 3.11 or newer is required")
    if not PY.exists():
        say(f"creating virtual environment in {VENV}")
        venv.EnvBuilder(with_pip=True).create(VENV)


def pip(*args: str | Path) -> None:
    subprocess.run([PY, "-m", "pip", *args], check=True, cwd=ROOT)


def ensure_venv() -> None:
    """The venv with the project installed at the lock's versions. Installs again whenever
    pyproject.toml, the lock or the pip pin changed since the last install (the venv's stamp
    holds their hash), so a pulled lock change reaches an existing venv on the next command."""
    create_venv()
    stamp = VENV / ".installed"
    inputs = [(ROOT / "pyproject.toml").read_bytes(), LOCK.read_bytes(), PIP.encode()]
    digest = hashlib.sha256(b"\0".join(inputs)).hexdigest()
    if stamp.exists() and stamp.read_text() == digest:
        return
    if missing := unlocked():
        sys.exit(f"{LOCK.name} pins no version of {', '.join(missing)}: run python3 dev.py lock")
    say(f"installing the project and its dev dependencies from {LOCK.name} (first run: minutes)")
    pip("install", "--quiet", PIP)
    pip("install", "--quiet", "--constraint", LOCK, "--editable", ".[dev]")
    stamp.write_text(digest)


def unlocked() -> list[str]:
    """pyproject.toml's requirements whose package the lock does not pin: added without
    ``dev.py lock``, they would install at whatever version is newest that day."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"], *project["optional-dependencies"]["dev"]]
    pinned = {_name(line) for line in LOCK.read_text().splitlines() if line[:1].isalnum()}
    return [requirement for requirement in wanted if _name(requirement) not in pinned]


def _name(requirement: str) -> str:
    """The package a requirement or pin names, normalised as PyPI does (``A_b`` = ``a-b``)."""
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
    return re.sub(r"[-_.]+", "-", match.group() if match else requirement).lower()


def lock(args: list[str]) -> int:
    """Rewrite the lock with uv (installed into the venv from PyPI), then install it. Every pin
    that still fits pyproject.toml is kept (uv reads the old lock), unless ``args``, which go
    to `uv pip compile`, say otherwise: ``--upgrade``, ``--upgrade-package NAME``."""
    create_venv()
    pip("install", "--quiet", UV)
    argv = [BIN / "uv", *LOCK_COMMAND[1:], "--python", PY, "--output-file", LOCK.name]
    compiled = subprocess.run([*argv, "--no-header", "--quiet", *args], cwd=ROOT)
    if compiled.returncode:
        return compiled.returncode
    LOCK.write_text(lock_header() + LOCK.read_text())
    say(f"wrote {LOCK.name}")
    ensure_venv()
    return 0


def lock_header() -> str:
    """The lock's first lines: what it is, how it was made, how to change it."""
    command = shlex.join([*LOCK_COMMAND, "--output-file", LOCK.name])
    return f"""\
# The lock: every package `pip install -e .[dev]` can pull in, at the one version tested, for
# every platform and Python >= 3.11 (a marker after `;` says where a pin applies). A pip
# constraints file: `python3 dev.py up/test/bench` and CI install the project with
#   pip install --constraint {LOCK.name} --editable '.[dev]'
# Written by `python3 dev.py lock` ({UV}), which runs
#   {command}
# Do not edit by hand. After changing dependencies in pyproject.toml: python3 dev.py lock
# (keeps every pin that still fits). Newer versions: python3 dev.py lock --upgrade-package NAME
# (one package and what it needs) or python3 dev.py lock --upgrade (all).
"""


def port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            sock.settimeout(0.5)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    sys.exit(f"nothing is listening on port {port} after {timeout:.0f} s")


def _stop(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # run the cleanup below on SIGTERM too, not only on Ctrl-C


def sandbox_env(env: dict[str, str], *, force: bool = False) -> bool:
    """Sandbox mode for a command: on (``INTEGRATION_SANDBOX=1`` set in ``env``) unless the
    user turned it off (``force``: always on). Exits on a value that is neither on nor off."""
    from integration_project import settings  # standard library only; after the version check

    if force:
        env[settings.SANDBOX_MODE_ENV] = "1"
    env.setdefault(settings.SANDBOX_MODE_ENV, "1")
    try:
        return settings.sandbox_mode(env)
    except ValueError as exc:
        sys.exit(str(exc))


#: How much order history each sandbox shop starts with (and how far back the partitions go).
#: Whole windows (5 minutes), at least one.
HISTORY = timedelta(
    minutes=max(5, 5 * round(float(os.environ.get("SANDBOX_HISTORY_MINUTES") or 120) / 5))
)
#: The sandbox's ports: shop, ERP, second shop, Spryker (settings.SANDBOX_*_PORT).
SANDBOX_PORTS = [8801, 8802, 8803, 8804]
#: Where the CSV route moves files it cannot read (connectors/csv_files.py's REJECTED_FOLDER;
#: named here because this script runs before the project's dependencies are installed).
CSV_REJECTED_FOLDER = "rejected"
ACTIVE_RUN_STATUSES = ["QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING"]


def state_dir() -> Path:
    """Where ``up`` keeps ``.dagster_home/`` and ``data/``: the repository, or ``DEV_STATE_DIR``
    (the tests use a temp folder)."""
    return Path(os.environ.get("DEV_STATE_DIR") or ROOT).resolve()


def fresh_sandbox_world(env: dict[str, str], data: Path, now: datetime) -> datetime:
    """Every ``up`` in sandbox mode is a new world: the sandbox shops regenerate their history
    and the sandbox ERP starts empty, so the ledger starts empty too (the last one is kept as
    ``sandbox.previous.duckdb``). The world starts ``HISTORY`` before the current window; that
    is the routes' first partition (``INTEGRATION_SANDBOX_START``)."""
    from integration_project import settings

    data.mkdir(parents=True, exist_ok=True)
    ledger = data / "sandbox.duckdb"
    previous = data / "sandbox.previous.duckdb"
    for suffix in ("", ".wal"):
        old = Path(f"{ledger}{suffix}")
        if old.exists():
            old.replace(f"{previous}{suffix}")
        elif Path(f"{previous}{suffix}").exists():
            Path(f"{previous}{suffix}").unlink()
    start = settings.window_start(now) - HISTORY
    if env.pop(settings.LEDGER_URL_ENV, None):
        # A PostgreSQL ledger would keep the last world's rows beside the new world's orders.
        say(f"{settings.LEDGER_URL_ENV} is ignored in sandbox mode: the sandbox world's ledger")
        say("is a new file each time")
    env[settings.DUCKDB_PATH_ENV] = str(ledger)
    env[settings.SANDBOX_START_ENV] = start.strftime(settings.PARTITION_FORMAT)
    return start


def write_env_file(path: Path, env: dict[str, str], names: list[str]) -> None:
    """The variables a shell needs to reach this instance and ledger (``source`` it): the
    README's command-line examples then run against what the UI shows."""
    lines = ["# Written by `python3 dev.py up`: `source` it to run dagster/dg commands against the"]
    lines.append("# quick start's instance, ledger and sandbox world. Rewritten on every start.")
    lines += [f"export {name}={shlex.quote(env[name])}" for name in names if name in env]
    path.write_text("\n".join(lines) + "\n")


def graphql(url: str, query: str, variables: dict | None = None, timeout: float = 30) -> dict:
    """POST a query to the Dagster webserver; its ``data`` (GraphQL errors raise)."""
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    request = urllib.request.Request(
        f"{url}/graphql", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as answer:
        result = json.load(answer)
    if result.get("errors"):
        raise RuntimeError(f"GraphQL errors: {result['errors']}")
    return result["data"]


def wait_for_location(url: str, proc: subprocess.Popen[bytes], timeout: float = 120) -> bool:
    """Until the code location has loaded (True) or failed to load (False, with the reason)."""
    query = """{ workspaceOrError { __typename ... on Workspace { locationEntries {
        name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } } }"""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            entries = graphql(url, query)["workspaceOrError"].get("locationEntries") or []
        except (OSError, RuntimeError):
            entries = []
        loaded = [e for e in entries if e["loadStatus"] == "LOADED"]
        if entries and len(loaded) == len(entries):
            failed = [
                e
                for e in loaded
                if (e["locationOrLoadError"] or {}).get("__typename") == "PythonError"
            ]
            for entry in failed:
                say(f"code location {entry['name']} failed to load (see the UI):")
                print(entry["locationOrLoadError"]["message"][:2000], flush=True)  # noqa: T201
            return not failed
        time.sleep(0.5)
    return False


def launch_history_backfill(url: str, start: datetime) -> None:
    """One backfill of every time-partitioned asset over the world's history (single-run
    backfill policy: one run per route), so the catalog is filled and orders reach the ERP within
    minutes instead of waiting for the first 5-minute tick."""
    query = "{ assetNodes { assetKey { path } partitionDefinition { type } } }"
    nodes = graphql(url, query)["assetNodes"]
    # The routes' windows only: a CSV route's partitions are its files, which its sensor
    # reads; a Parquet export's are days, which its schedule writes once they are over.
    keys = [
        {"path": n["assetKey"]["path"]}
        for n in nodes
        if (n.get("partitionDefinition") or {}).get("type") == "TIME_WINDOW"
        and n["assetKey"]["path"][-1] in ("source_orders", "erp_orders")
    ]
    if not keys:
        return
    mutation = """mutation($params: LaunchBackfillParams!) {
        launchPartitionBackfill(backfillParams: $params) { __typename
            ... on LaunchBackfillSuccess { backfillId }
            ... on PythonError { message } } }"""
    params = {
        "assetSelection": keys,
        "allPartitions": True,
        "title": "sandbox history",
        "description": f"The sandbox shops' order history since {start:%H:%M} UTC (dev.py up)",
    }
    result = graphql(url, mutation, {"params": params})["launchPartitionBackfill"]
    if result["__typename"] == "LaunchBackfillSuccess":
        say(
            f"backfilling the sandbox's history since {start:%H:%M} UTC: "
            f"{url}/runs/b/{result['backfillId']}"
        )
    else:
        say(f"could not launch the history backfill: {result.get('message', result)}")


AUTOMATION = """{ repositoriesOrError { ... on RepositoryConnection { nodes {
    name location { name }
    schedules { name scheduleState { id status } }
    sensors { name sensorState { id status } } } } } }"""


def pause_automation(url: str, record: Path) -> None:
    """Stop every running schedule and sensor, so that nothing launches a run while the runs in
    flight are cancelled; their names go to ``record`` and the next ``up`` resets them to what
    the code says (:func:`resume_automation`). A schedule someone stopped is left alone."""
    paused = []
    for repo in graphql(url, AUTOMATION)["repositoriesOrError"].get("nodes", []):
        where = {"repositoryName": repo["name"], "repositoryLocationName": repo["location"]["name"]}
        for kind, state_key in (("schedule", "scheduleState"), ("sensor", "sensorState")):
            for item in repo[f"{kind}s"]:
                state = item[state_key]
                if state["status"] != "RUNNING":
                    continue
                mutation = (
                    "mutation($id: String) { stopRunningSchedule(id: $id) { __typename } }"
                    if kind == "schedule"
                    else "mutation($id: String) { stopSensor(id: $id) { __typename } }"
                )
                graphql(url, mutation, {"id": state["id"]})
                paused.append({"kind": kind, "name": item["name"], **where})
    record.write_text(json.dumps(paused))


def resume_automation(url: str, record: Path) -> None:
    """Reset the schedules and sensors the last stop paused to their status in code."""
    if not record.exists():
        return
    for item in json.loads(record.read_text() or "[]"):
        where = {k: item[k] for k in ("repositoryName", "repositoryLocationName")}
        if item["kind"] == "schedule":
            query = """mutation($s: ScheduleSelector!) {
                resetSchedule(scheduleSelector: $s) { __typename } }"""
            selector = {**where, "scheduleName": item["name"]}
        else:
            query = (
                "mutation($s: SensorSelector!) { resetSensor(sensorSelector: $s) { __typename } }"
            )
            selector = {**where, "sensorName": item["name"]}
        graphql(url, query, {"s": selector})
    record.unlink()


def cancel_in_flight(url: str, grace: float = 15, timeout: float = 45) -> None:
    """Cancel backfills and queued runs through the webserver, give runs in progress ``grace``
    seconds to finish (a delivery run takes seconds), cancel what still runs, and wait until
    every run has ended: a run cut off by the shutdown would be recorded as failed. A cancelled
    run is safe (the ledger finishes or looks up what a cancelled delivery was sending)."""
    backfills = graphql(
        url,
        """{ partitionBackfillsOrError(status: REQUESTED) {
            ... on PartitionBackfills { results { id } } } }""",
    )["partitionBackfillsOrError"].get("results", [])
    for backfill in backfills:
        graphql(
            url,
            "mutation($id: String!) { cancelPartitionBackfill(backfillId: $id) { __typename } }",
            {"id": backfill["id"]},
        )
    runs_query = """query($statuses: [RunStatus!]) { runsOrError(filter: {statuses: $statuses}) {
        ... on Runs { results { runId status } } } }"""
    started = time.monotonic()
    asked: set[str] = set()
    said = False
    while time.monotonic() < started + timeout:
        runs = graphql(url, runs_query, {"statuses": ACTIVE_RUN_STATUSES})["runsOrError"]
        active = runs.get("results", [])
        if not active:
            return
        running = [r for r in active if r["status"] in ("STARTING", "STARTED")]
        if running and not said:
            say(f"waiting up to {grace:.0f} s for {len(running)} run(s) in progress to finish")
            said = True
        late = time.monotonic() > started + grace
        cancel = [
            r["runId"]
            for r in active
            if r["runId"] not in asked
            and r["status"] != "CANCELING"
            and (late or r["status"] in ("QUEUED", "NOT_STARTED"))
        ]
        if cancel:
            say(f"cancelling {len(cancel)} run(s)")
            graphql(
                url,
                """mutation($ids: [String!]!) { terminateRuns(runIds: $ids,
                    terminatePolicy: SAFE_TERMINATE) { __typename } }""",
                {"ids": cancel},
            )
            asked.update(cancel)
        time.sleep(0.5)
    say(f"runs still in progress after {timeout:.0f} s; stopping anyway")


def up(args: list[str]) -> int:
    ensure_venv()
    # Ctrl-C and SIGTERM stop everything, even when the shell that started us in the background
    # left SIGINT ignored (children inherit an ignored SIGINT, a handler resets on exec).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _stop)
    state = state_dir()
    home = state / ".dagster_home"
    env, sandbox, start = up_environment(state, home)
    env_file = home / "quickstart.env"
    paused = home / "paused-by-dev.json"  # schedules and sensors the last stop paused
    port = os.environ.get("DAGSTER_PORT", "3000")
    url = f"http://127.0.0.1:{port}"
    busy = [p for p in (SANDBOX_PORTS if sandbox else []) + [int(port)] if port_in_use(p)]
    if busy:
        sys.exit(f"port {busy[0]} is in use (another `dev.py up`?): stop it first")
    procs: list[subprocess.Popen[bytes]] = []
    dagster: subprocess.Popen[bytes] | None = None
    try:
        if sandbox and start is not None:
            procs.append(start_sandbox(env, start))
            for sandbox_port in SANDBOX_PORTS:
                wait_for_port(sandbox_port)
        say(f"starting Dagster (dg dev): open {url} (Ctrl-C stops everything)")
        dagster = start_dagster(env, port, args)
        procs.append(dagster)
        if wait_for_location(url, dagster):
            resume_automation(url, paused)
            if sandbox and start is not None:
                launch_history_backfill(url, start)
            say(f"command line against this instance: source {_shown(env_file)} (README)")
        while all(p.poll() is None for p in procs):
            time.sleep(1)
        return next(p.returncode for p in procs if p.returncode is not None) or 0
    except KeyboardInterrupt:
        return 0
    finally:
        stop_all(url, paused, procs, dagster)


def up_environment(state: Path, home: Path) -> tuple[dict[str, str], bool, datetime | None]:
    """The environment of ``up``'s processes, whether sandbox mode is on and, if it is, the
    start of the fresh sandbox world (in ``state/data``). Sets up the Dagster instance in
    ``home`` (settings from deploy/) and writes ``quickstart.env`` there."""
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "deploy" / "dagster.yaml", home / "dagster.yaml")
    # `dg` checks that the project's virtual environment is the active one.
    env = {**os.environ, "DAGSTER_HOME": str(home), "VIRTUAL_ENV": str(VENV)}
    sandbox = sandbox_env(env)
    from integration_project import settings

    start = None
    if sandbox:
        start = fresh_sandbox_world(env, state / "data", datetime.now(UTC))
        say(
            f"sandbox mode: a fresh sandbox world with history since {start:%H:%M} UTC, an empty "
            f"ERP and a new ledger in {_shown(Path(env[settings.DUCKDB_PATH_ENV]))}"
        )
    else:
        say("sandbox mode is off (INTEGRATION_SANDBOX): every route variable must be set")
    names = ["DAGSTER_HOME", "VIRTUAL_ENV", settings.SANDBOX_MODE_ENV, settings.DUCKDB_PATH_ENV]
    write_env_file(home / "quickstart.env", env, [*names, settings.SANDBOX_START_ENV])
    return env, sandbox, start


def start_sandbox(env: dict[str, str], start: datetime) -> subprocess.Popen[bytes]:
    """The sandbox shops, Spryker backend and ERP, their history reaching back to ``start``,
    and marketplace order files in the CSV route's sandbox folder (emptied first)."""
    from integration_project import settings

    folder = fresh_csv_folder(settings.sandbox_csv_folder(env))
    say("starting the sandbox shops (:8801, :8803), Spryker (:8804) and ERP (:8802)")
    say(f"marketplace order files (CSV) go to {_shown(folder)}")
    minutes = (datetime.now(UTC) - start).total_seconds() / 60
    argv = [BIN / "integration-sandbox", "--history-minutes", f"{minutes:.2f}"]
    argv += ["--spryker-port", str(settings.SANDBOX_SPRYKER_PORT), "--csv-folder", str(folder)]
    return subprocess.Popen(argv, cwd=ROOT, env=env, start_new_session=True)


def fresh_csv_folder(folder: Path) -> Path:
    """The sandbox's order-file folder without the last world's files: the ledger is new on
    every ``up``, so old files would be read again as new ones. Only what the sandbox and the
    route put there goes (``*.csv``, half-written ``.part`` files, ``rejected/``)."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in [*folder.glob("*.csv"), *folder.glob("*.csv.part")]:
        if old.is_file():
            old.unlink()
    shutil.rmtree(folder / CSV_REJECTED_FOLDER, ignore_errors=True)
    return folder


def start_dagster(env: dict[str, str], port: str, args: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        # Its services log warnings and errors (not every sensor tick); runs log at INFO
        # what they did (deploy/dagster.yaml, python_logs).
        [BIN / "dg", "dev", "-h", "127.0.0.1", "-p", port, "--log-level", "warning", *args],
        cwd=ROOT,
        env=env,
        # Its own process group: the code server and run workers it starts are in it, so
        # the stop below can wait for them and clear up what is left.
        start_new_session=True,
    )


def stop_all(
    url: str,
    paused: Path,
    procs: list[subprocess.Popen[bytes]],
    dagster: subprocess.Popen[bytes] | None,
) -> None:
    """Pause the schedules and sensors (names to ``paused``), let runs in flight finish or
    cancel them while the webserver is up, then stop every process group, last started first."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the stop short
    say("stopping")
    if dagster is not None and dagster.poll() is None:
        try:
            pause_automation(url, paused)
            cancel_in_flight(url)
        except (OSError, RuntimeError) as exc:
            say(f"could not ask the webserver to cancel runs: {exc}")
    for proc in reversed(procs):
        _stop_group(proc)
    say("stopped")


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _stop_group(proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """SIGINT to the process (``dg dev`` shuts its webserver and daemon down; the sandbox
    exits), then the same to what is left of its group (code servers, which would otherwise
    linger until their heartbeat times out, keeping their sockets), then SIGKILL."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        say(f"pid {proc.pid} did not stop within {timeout:.0f} s; killing it")
    for sig, wait in ((signal.SIGINT, 15.0), (signal.SIGKILL, 5.0)):
        if not _signal_group(proc, sig):
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and _group_alive(proc):
            time.sleep(0.2)
        if not _group_alive(proc):
            return


def _group_alive(proc: subprocess.Popen[bytes]) -> bool:
    proc.poll()  # reap the leader if it exited
    try:
        os.killpg(proc.pid, 0)
    except ProcessLookupError:
        return False
    return True


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> bool:
    """Signal the process and everything it started; False when nothing of it is left."""
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        return False
    return True


def test(args: list[str]) -> int:
    ensure_venv()
    say("ruff check")
    lint = subprocess.run([BIN / "ruff", "check", "."], cwd=ROOT)
    if lint.returncode:
        return lint.returncode
    from integration_project import settings

    env = {**os.environ}
    sandbox_env(env, force=True)  # the tests run against the sandbox (conftest sets it too)
    # Each test picks its own ledger (a file, or a new PostgreSQL database): never the user's.
    env.pop(settings.LEDGER_URL_ENV, None)
    checked = check_definitions(env)
    if checked:
        return checked
    say("pytest")
    # Workers (pytest-xdist) take one test file at a time, the longest first (the conftest
    # orders them; xdist's own reordering is off), so the chaos test (~3.5 min) runs beside
    # the rest instead of after it. The tests wait on HTTP and rate windows more than they
    # compute: three workers keep two cores busy. TEST_WORKERS=0 runs all in this process.
    workers = os.environ.get("TEST_WORKERS", "3")
    parallel = ["-n", workers, "--dist", "loadfile", "--no-loadscope-reorder"]
    parallel = [] if workers == "0" or "-n" in args else parallel
    with test_postgres(env):
        return subprocess.run([PY, "-m", "pytest", *parallel, *args], cwd=ROOT, env=env).returncode


@contextmanager
def test_postgres(env: dict[str, str]) -> Iterator[None]:
    """A throwaway PostgreSQL server for the whole test run (the production instance's tests
    use it), its URL in ``env``; stopped and removed after. Without PostgreSQL binaries here
    the tests that need one skip (CI fails on that: see integration_project_tests/skips.py)."""
    from integration_project_testkit.postgres import URL_ENV

    if env.get(URL_ENV):
        yield  # a server of the caller's
        return
    server = subprocess.Popen(
        [PY, "-m", "integration_project_testkit.postgres"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    url = server.stdout.readline().strip() if server.stdout else ""
    if url:
        env[URL_ENV] = url
        say("PostgreSQL started for the tests")
    else:
        say("no PostgreSQL server for the tests (see the error above); its tests skip")
    try:
        yield
    finally:
        if server.poll() is None:
            server.terminate()
        server.wait(timeout=60)


def check_definitions(env: dict[str, str]) -> int:
    """`dg check yaml` (the route files against their components' schemas) and `dg check defs`
    (the code location loads), as a deployment would see them; the first non-zero exit code.
    Sandbox mode (``env``) needs no credentials; a throwaway instance with the shipped
    settings (telemetry off) keeps them off the user's instance and off the network."""
    with tempfile.TemporaryDirectory() as home:
        shutil.copy(ROOT / "deploy" / "dagster.yaml", Path(home) / "dagster.yaml")
        # `dg` checks that the project's virtual environment is the active one.
        env = {**env, "DAGSTER_HOME": home, "VIRTUAL_ENV": str(VENV)}
        for check in (["yaml"], ["defs", "--no-check-yaml"]):
            say(f"dg check {check[0]}")
            done = subprocess.run([BIN / "dg", "check", *check], cwd=ROOT, env=env)
            if done.returncode:
                return done.returncode
    return 0


def bench(args: list[str]) -> int:
    """The benchmarks against the sandbox, one table of figures and goals (``python -m bench``;
    ``--help`` for sizes and options, ``--write BENCHMARKS.md`` to keep the results)."""
    ensure_venv()
    from integration_project import settings

    env = {**os.environ}
    sandbox_env(env, force=True)
    env.pop(settings.LEDGER_URL_ENV, None)  # the bench makes its own ledgers
    return subprocess.run([PY, "-m", "bench", *args], cwd=ROOT, env=env).returncode


COMMANDS = {"up": up, "test": test, "bench": bench, "lock": lock}

if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] in ("-h", "--help", "help"):
        print(__doc__)  # noqa: T201
        sys.exit(0)
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        print(__doc__, file=sys.stderr)  # noqa: T201
        sys.exit(2)
    sys.exit(COMMANDS[sys.argv[1]](sys.argv[2:]))
