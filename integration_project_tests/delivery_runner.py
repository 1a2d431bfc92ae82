"""A delivery run in a process of its own, so that tests can kill it (SIGKILL) or start two.

``python -m integration_project_tests.delivery_runner`` reads a JSON spec from the environment
variable ``DELIVERY_RUNNER_SPEC`` (secrets stay out of ``ps``)::

    {"shop_url", "erp_url", "duckdb", "run_id", "tags", "run_config",
     "erp": {...ErpResource fields...}, "shop": {...ShopResource fields...},
     "job": "delivery" | "source", "partition_key": null}

and executes the default route's real job (``<route>__erp_delivery_job``, or the fetch job)
against those resources, on the Dagster instance in ``DAGSTER_HOME`` (shared with the parent,
so the parent sees the run and can report it failed after killing it, as run monitoring
would). It prints one JSON line: the run's success and the delivery metadata.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_duckdb import DuckDBResource

from integration_project.resources import ErpResource, ShopResource
from integration_project.schedules import build_route_schedules
from integration_project.settings import SANDBOX_MODE_ENV
from integration_project_tests.conftest import DEFAULT, route_assets

SPEC_ENV = "DELIVERY_RUNNER_SPEC"
#: Set for a runner started ahead of time: it imports everything, prints "ready" and waits for
#: its spec on stdin (the chaos test starts the next runner while the current one works).
WARM_ENV = "DELIVERY_RUNNER_WARM"
REPO = Path(__file__).resolve().parents[1]


#: The default route's jobs and schedules, as ``definitions.py`` builds them.
SCHEDULES = build_route_schedules(DEFAULT)
ROUTE_ID = DEFAULT.route.id
DELIVERY_JOB = f"{ROUTE_ID}__erp_delivery_job"
SOURCE_JOB = f"{ROUTE_ID}__source_orders_job"


def build_defs(spec: dict[str, Any]) -> dg.Definitions:
    """The default route (changed by ``spec["route"]``, if given) with the resources the spec
    names (``shop``, ``erp``, ``duckdb``)."""
    assets = route_assets(**spec.get("route", {}))
    schedules = build_route_schedules(assets) if assets is not DEFAULT else SCHEDULES
    return dg.Definitions(
        assets=assets.all,
        jobs=schedules.jobs,
        schedules=schedules.schedules,
        resources={
            "shop": ShopResource(**spec["shop"]),
            "erp": ErpResource(**spec["erp"]),
            "duckdb": DuckDBResource(database=spec["duckdb"]),
        },
    )


def main() -> int:
    if WARM_ENV in os.environ:
        # Started ahead of time (imports done): the spec comes on stdin when the run starts.
        instance = dg.DagsterInstance.get()
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        line = sys.stdin.readline()
        if not line.strip():
            return 0  # not needed after all
        spec = json.loads(line)
    else:
        spec = json.loads(os.environ[SPEC_ENV])
        instance = dg.DagsterInstance.get()
    defs = build_defs(spec)
    job = defs.resolve_job_def(DELIVERY_JOB if spec["job"] == "delivery" else SOURCE_JOB)
    result = job.execute_in_process(
        run_config=spec.get("run_config") or None,
        instance=instance,
        run_id=spec["run_id"],
        tags=spec.get("tags") or {},
        partition_key=spec.get("partition_key"),
        raise_on_error=False,
    )
    metadata: dict[str, Any] = {}
    for event in result.get_asset_materialization_events():
        for key, value in event.materialization.metadata.items():
            if isinstance(value.value, int | float | str | bool):
                metadata[key] = value.value
    sys.stdout.write(json.dumps({"success": result.success, "metadata": metadata}) + "\n")
    return 0 if result.success else 1


# --- the parent's side ------------------------------------------------------------------------


def resource_spec(resources: dict[str, Any]) -> dict[str, Any]:
    """The spec for the runner from a test's resources dict (``shop``, ``erp``, ``duckdb``)."""
    fields = ("api_url", "client_id", "client_secret", "connect_timeout_s", "read_timeout_s")
    shop, erp = resources["shop"], resources["erp"]
    return {
        "shop": {name: getattr(shop, name) for name in (*fields, "max_retries", "backoff_factor")},
        "erp": {
            name: getattr(erp, name)
            for name in (
                *fields,
                "division",
                "refresh_token",
                "max_retries",
                "backoff_factor",
                "max_rate_wait_s",
            )
        },
        "duckdb": resources["duckdb"].database,
    }


def prepare_home(home: Path) -> Path:
    """A Dagster home for runners: storage created once, here, so that two runners starting
    at the same moment do not race to create its SQLite tables."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    dg.DagsterInstance.local_temp(tempdir=str(home)).dispose()
    return home


@dataclass
class Runner:
    """One runner process; ``stop()`` is idempotent and always leaves no process behind."""

    process: subprocess.Popen[bytes]
    run_id: str
    log_path: Path
    killed: bool = False
    output: dict[str, Any] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.process.pid

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind runs in the child."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.killed = True
        self.process.wait(timeout=30)

    def wait(self, timeout: float = 180) -> dict[str, Any]:
        try:
            out, _ = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        lines = [line for line in out.decode().splitlines() if line.startswith("{")]
        self.output = json.loads(lines[-1]) if lines else {}
        return self.output

    def stop(self) -> None:
        if self.process.poll() is None:
            self.kill()
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""


def start(
    spec: dict[str, Any],
    dagster_home: str | Path,
    *,
    job: str = "delivery",
    tags: dict[str, str] | None = None,
    run_config: dict[str, Any] | None = None,
    partition_key: str | None = None,
    run_id: str | None = None,
    prewarm: bool = False,
) -> Runner:
    """Start a runner for ``spec``. ``prewarm``: use the runner started ahead of time for this
    home, if any, and start the next one (it imports Dagster while this one works)."""
    run_id = run_id or str(uuid.uuid4())
    full = {
        **spec,
        "job": job,
        "run_id": run_id,
        "tags": tags or {},
        "run_config": run_config,
        "partition_key": partition_key,
    }
    log_path = Path(dagster_home) / f"runner-{run_id}.log"
    warm = _WARM.pop(str(dagster_home), None) if prewarm else None
    if warm is not None and warm[0].poll() is None:
        process, warm_log = warm
        assert process.stdin is not None
        process.stdin.write(json.dumps(full).encode() + b"\n")
        process.stdin.close()
        process.stdin = None  # so that communicate() does not flush it again
        log_path = warm_log
    else:
        process = _spawn(dagster_home, log_path, {SPEC_ENV: json.dumps(full)})
    if prewarm:
        _WARM[str(dagster_home)] = _start_warm(dagster_home)
    return Runner(process, run_id, log_path)


#: DAGSTER_HOME -> a runner started ahead of time, waiting for its spec.
_WARM: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}


def _start_warm(dagster_home: str | Path) -> tuple[subprocess.Popen[bytes], Path]:
    log_path = Path(dagster_home) / f"runner-warm-{uuid.uuid4()}.log"
    return _spawn(dagster_home, log_path, {WARM_ENV: "1"}, stdin=subprocess.PIPE), log_path


def _spawn(
    dagster_home: str | Path, log_path: Path, env: dict[str, str], stdin: int | None = None
) -> subprocess.Popen[bytes]:
    """A runner process on ``dagster_home``; its stderr (Dagster's logs) goes to ``log_path``."""
    full_env = {k: v for k, v in os.environ.items() if k not in (SPEC_ENV, WARM_ENV)}
    # Runners talk to the test's sandbox: sandbox mode on, whatever the parent inherited.
    full_env |= {"DAGSTER_HOME": str(dagster_home), SANDBOX_MODE_ENV: "1", **env}
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "integration_project_tests.delivery_runner"],
            cwd=REPO,
            env=full_env,
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=log,
        )


def stop_warm() -> None:
    """Stop the runners started ahead of time and not used."""
    while _WARM:
        _, (process, _) = _WARM.popitem()
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                stream.close()


if __name__ == "__main__":
    raise SystemExit(main())
