#!/usr/bin/env python3
"""Set up and run the project with nothing but Python 3.11+.

    python3 dev.py up      # venv + install, sandbox shop and ERP, Dagster UI with schedules on
    python3 dev.py test    # venv + install, ruff, the test suite (what CI runs)
    python3 dev.py bench   # venv + install, the one-day backfill benchmark (bench/backfill.py)

All three run in sandbox mode (INTEGRATION_SANDBOX=1): a route whose URL variable is unset talks
to the local sandbox. ``up`` starts the sandbox and keeps its ledger in data/sandbox.duckdb
(whatever INTEGRATION_DUCKDB_PATH says); with INTEGRATION_SANDBOX=0 it starts no sandbox
and every route variable must be set (real systems). ``test`` and ``bench`` always use the
sandbox.

The virtual environment lives in .venv/ (override with DEV_VENV=path) and is (re)installed
when pyproject.toml changes. Only the standard library is used here (and
integration_project/settings.py, which is standard library only itself).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("DEV_VENV", ROOT / ".venv"))
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / "python"


def say(message: str) -> None:
    print(f"[dev] {message}", flush=True)  # noqa: T201


def ensure_venv() -> None:
    if sys.version_info < (3, 11):  # noqa: UP036 - this script may run on any python3
        sys.exit("Python 3.11 or newer is required")
    if not PY.exists():
        say(f"creating virtual environment in {VENV}")
        venv.EnvBuilder(with_pip=True).create(VENV)
    stamp = VENV / ".installed"
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == digest:
        return
    say("installing the project and its dev dependencies (first run takes a minute)")
    subprocess.run(
        [PY, "-m", "pip", "install", "--quiet", "--upgrade", "pip"], check=True, cwd=ROOT
    )
    subprocess.run([PY, "-m", "pip", "install", "--quiet", "-e", ".[dev]"], check=True, cwd=ROOT)
    stamp.write_text(digest)


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


def up(args: list[str]) -> int:
    ensure_venv()
    signal.signal(signal.SIGTERM, _stop)
    home = ROOT / ".dagster_home"
    home.mkdir(exist_ok=True)
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    sandbox = sandbox_env(env)
    if sandbox:
        # The sandbox's ledger in the repo (``data/`` is git-ignored), never a real route's.
        ledger = ROOT / "data" / "sandbox.duckdb"
        env["INTEGRATION_DUCKDB_PATH"] = str(ledger)
        say(f"sandbox mode: ledger in {ledger.relative_to(ROOT)}")
    else:
        say("sandbox mode is off (INTEGRATION_SANDBOX): every route variable must be set")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        if sandbox:
            say("starting the sandbox shops (:8801, :8803) and ERP (:8802)")
            procs.append(
                subprocess.Popen(
                    [BIN / "integration-sandbox"], cwd=ROOT, env=env, start_new_session=True
                )
            )
            wait_for_port(8801)
            wait_for_port(8802)
            wait_for_port(8803)
        port = os.environ.get("DAGSTER_PORT", "3000")
        say(f"starting Dagster: open http://127.0.0.1:{port} (Ctrl-C stops everything)")
        procs.append(
            subprocess.Popen(
                [BIN / "dagster", "dev", "-h", "127.0.0.1", "-p", port, *args],
                cwd=ROOT,
                env=env,
                # Its own process group, so stopping it stops the webserver and daemon too.
                start_new_session=True,
            )
        )
        while all(p.poll() is None for p in procs):
            time.sleep(1)
        return next(p.returncode for p in procs if p.returncode is not None) or 0
    except KeyboardInterrupt:
        return 0
    finally:
        for proc in reversed(procs):
            _signal_group(proc, signal.SIGINT)
        for proc in reversed(procs):
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)  # the process and everything it started
    except ProcessLookupError:
        pass


def test(args: list[str]) -> int:
    ensure_venv()
    say("ruff check")
    lint = subprocess.run([BIN / "ruff", "check", "."], cwd=ROOT)
    if lint.returncode:
        return lint.returncode
    say("pytest")
    # Two workers (pytest-xdist), one test file each at a time: the chaos test (~4 min) runs
    # beside the rest instead of after it. TEST_WORKERS=0 runs everything in this process.
    workers = os.environ.get("TEST_WORKERS", "2")
    parallel = [] if workers == "0" or "-n" in args else ["-n", workers, "--dist", "loadfile"]
    env = {**os.environ}
    sandbox_env(env, force=True)  # the tests run against the sandbox (conftest sets it too)
    return subprocess.run([PY, "-m", "pytest", *parallel, *args], cwd=ROOT, env=env).returncode


def bench(args: list[str]) -> int:
    """The one-day backfill benchmark (``python -m bench.backfill``; ``--help`` for options)."""
    ensure_venv()
    env = {**os.environ}
    sandbox_env(env, force=True)
    return subprocess.run([PY, "-m", "bench.backfill", *args], cwd=ROOT, env=env).returncode


COMMANDS = {"up": up, "test": test, "bench": bench}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.exit(__doc__)
    sys.exit(COMMANDS[sys.argv[1]](sys.argv[2:]))
