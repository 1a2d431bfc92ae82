"""The dlt contender's own virtual environment: ``.bench-venv/`` (gitignored), made on first use.

dlt is a contender, not a dependency of the project: it never enters the project's venv or
its lock. :func:`dlt_python` creates ``.bench-venv/`` with the python running the bench and
installs ``bench/requirements-dlt.txt`` (exact pins) into it, again whenever that file changes
(the venv keeps its hash in ``.installed``). ``BENCH_DLT_VENV`` puts it elsewhere.

    python -m bench.dlt_env        # make it now; prints the python to run the contender with
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REQUIREMENTS = Path(__file__).with_name("requirements-dlt.txt")
VENV_ENV = "BENCH_DLT_VENV"


def venv_dir() -> Path:
    """Where the dlt environment lives (``BENCH_DLT_VENV``, else ``.bench-venv/``)."""
    return Path(os.environ.get(VENV_ENV) or ROOT / ".bench-venv")


def dlt_version() -> str:
    """The dlt version the requirements pin (what the contender runs)."""
    found = re.search(r"^dlt(?:\[[^\]]*\])?==(\S+)", REQUIREMENTS.read_text(), re.MULTILINE)
    return found.group(1) if found else "?"


def dlt_python() -> Path:
    """The python of the dlt environment, created and installed when missing or stale."""
    home = venv_dir()
    python = home / ("Scripts" if os.name == "nt" else "bin") / "python"
    stamp = home / ".installed"
    digest = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    if python.exists() and stamp.exists() and stamp.read_text() == digest:
        return python
    if not python.exists():
        print(f"[bench] creating the dlt environment in {home}", file=sys.stderr, flush=True)  # noqa: T201
        venv.EnvBuilder(with_pip=True).create(home)
    print(f"[bench] installing {REQUIREMENTS.name} into {home}", file=sys.stderr, flush=True)  # noqa: T201
    install = [str(python), "-m", "pip", "install", "--quiet", "--requirement", str(REQUIREMENTS)]
    done = subprocess.run(install, cwd=ROOT, check=False)
    if done.returncode:
        raise RuntimeError(
            f"installing {REQUIREMENTS} into {home} failed (exit code {done.returncode}); "
            "pass --skip-dlt to run the bench without the dlt contender"
        )
    stamp.write_text(digest)
    return python


if __name__ == "__main__":
    print(dlt_python())  # noqa: T201
