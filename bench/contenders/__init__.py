"""The contenders of the backfill and transform scenarios, each run in a process of its own.

Each module is a command (``python -m bench.contenders.<name> --help``) that prints ONE JSON
line on stdout: ``orders``, ``wall_s``, ``steps`` (seconds per step, where it has steps) and
``peak_rss_mib`` (:func:`peak_rss_mib`), plus what else it counted. The dlt
contender runs with the python of its own virtual environment (:mod:`bench.dlt_env`) and
imports nothing of the project. :func:`run_contender` starts one and reads its line.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def peak_rss_mib() -> float:
    """This process's peak resident set size in MiB: ``VmHWM``, which starts afresh when the
    process execs. ``getrusage``'s ``ru_maxrss`` does not: Linux carries the parent's over, so
    a contender started by a harness past 1 GiB reported the harness's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)  # kB
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # not Linux


def moment(text: str) -> datetime:
    """An ISO 8601 moment from the command line, as an aware UTC datetime."""
    value = datetime.fromisoformat(text)
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)


def pin_to_one_core() -> None:
    """Run this process (and the threads it starts) on CPU 0 only: a figure "on one core"."""
    os.sched_setaffinity(0, {0})


def emit(result: dict[str, Any]) -> None:
    """The contender's one line, with its peak RSS."""
    sys.stdout.write(json.dumps({**result, "peak_rss_mib": peak_rss_mib()}) + "\n")
    sys.stdout.flush()


def run_contender(name: str, argv: list[str], *, python: str | None = None) -> dict[str, Any]:
    """Run contender ``name`` (``bench.contenders.<name>``; with ``python``, the file itself,
    as the dlt contender runs in its own environment) and return its JSON line. Its stderr
    goes to ours, so its progress and errors show; a failure raises naming the command."""
    if python is None:
        command = [sys.executable, "-m", f"bench.contenders.{name}", *argv]
    else:
        command = [python, str(Path(__file__).with_name(f"{name}.py")), *argv]
    done = subprocess.run(command, cwd=ROOT, stdout=subprocess.PIPE, text=True, check=False)
    lines = done.stdout.strip().splitlines()
    if done.returncode or not lines:
        shown = " ".join(command)
        raise RuntimeError(
            f"contender {name} failed (exit code {done.returncode}): {shown}; its errors are "
            f"above; its last output: {lines[-1][:300] if lines else 'none'}"
        )
    try:
        return json.loads(lines[-1])
    except ValueError:
        raise RuntimeError(
            f"contender {name} did not end with its JSON line: {lines[-1][:300]!r}"
        ) from None
