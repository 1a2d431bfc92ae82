"""The bench at tiny sizes, so it cannot rot: ``python -m bench`` runs every scenario that
exists against its sandbox process, exits 0, and its table names every scenario and every
contender. Nothing is timed: the figures of a shared CI machine mean nothing here.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bench.__main__ import SCENARIOS
from integration_project import settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[1]
#: Tiny: 14 windows of a few orders each, the smallest ledger, the fewest ERP calls that show
#: a steady pace (121: one more than two windows of 60, so a third window is reached; of 6 s,
#: so 60 calls of 50 ms still fit in one), one run of each tick kind, one timed evaluation of
#: each schedule and sensor (every one is still evaluated), a location of 12 routes.
TINY = [
    *("--orders", "300", "--days", "0.05", "--transform-orders", "150", "--growth-rows", "1000"),
    *("--pacing-calls", "121", "--pacing-window-s", "6", "--tick-runs", "1", "--skip-dlt"),
    *("--evaluations", "1", "--routes", "12"),
]
#: The contenders each scenario of this module's own runs (dlt is left out: --skip-dlt).
CONTENDERS = {"backfill": {"drain", "naive", "ours"}, "transform": {"naive", "ours"}}


def table_rows(stdout: str) -> set[tuple[str, str]]:
    """(scenario, contender) of every row of the figures table."""
    figures = stdout.split("## Figures", 1)[1].split("## Goals", 1)[0]
    rows = [line.split("|")[1:3] for line in figures.splitlines() if line.startswith("| ")]
    return {(scenario.strip(), contender.strip()) for scenario, contender in rows[1:]}


def run_bench(argv: list[str], timeout_s: float) -> subprocess.CompletedProcess[str]:
    """``python -m bench`` in a session of its own: on a timeout its whole process group
    goes (the sandbox, contenders, a Dagster daemon), not only the harness."""
    env = {**os.environ, settings.SANDBOX_MODE_ENV: "1", "DAGSTER_DISABLE_TELEMETRY": "1"}
    command = [sys.executable, "-m", "bench", *argv]
    with subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as child:
        try:
            stdout, stderr = child.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            stdout, stderr = child.communicate()
            pytest.fail(f"python -m bench did not finish in {timeout_s:.0f} s: {stderr[-4000:]}")
    return subprocess.CompletedProcess(command, child.returncode, stdout, stderr)


def test_the_bench_runs_every_scenario_at_tiny_sizes() -> None:
    done = run_bench(TINY, timeout_s=280)
    assert done.returncode == 0, done.stderr[-6000:]
    rows = table_rows(done.stdout)
    present = [s for s in SCENARIOS if importlib.util.find_spec(f"bench.scenarios.{s}")]
    assert {scenario for scenario, _ in rows} >= {*present, "sandbox"}, done.stdout
    for scenario, contenders in CONTENDERS.items():
        assert contenders <= {c for s, c in rows if s == scenario}, done.stdout
    assert "## Goals" in done.stdout
