"""A delivery run in a process of its own, so that tests can kill it (SIGKILL) or start two.

``python -m integration_project_testkit.delivery_runner`` reads a JSON spec from the environment
variable ``DELIVERY_RUNNER_SPEC`` (secrets stay out of ``ps``)::

    {"shop_url", "erp_url", "duckdb" (a file or a PostgreSQL URL), "run_id", "tags", "run_config",
     "erp": {...ErpResource fields...}, "shop": {...ShopResource fields...},
     "job": "delivery" | "source", "partition_key": null, "route": {...changes...}}

and executes the default route's real job (``<route>__erp_delivery_job``, or the fetch job)
against those resources, on the Dagster instance in ``DAGSTER_HOME`` (shared with the parent,
so the parent sees the run and can report it failed after killing it, as run monitoring
would). It prints one JSON line: the run's success and the delivery metadata; its exit code is
0 when the run succeeded, 1 when it did not.
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

from integration_project.resources import ErpResource, ShopResource
from integration_project.schedules import build_route_schedules
from integration_project.settings import SANDBOX_MODE_ENV
from integration_project_testkit.resources import ledger_resource, location_of
from integration_project_testkit.routes import route_assets, shipped_route

SPEC_ENV = "DELIVERY_RUNNER_SPEC"
#: Set for a runner started ahead of time: it imports everything, prints "ready" and waits for
#: its spec on stdin (the chaos test starts the next runner while the current one works).
WARM_ENV = "DELIVERY_RUNNER_WARM"
#: The checkout the runners start in.
REPO = Path(__file__).resolve().parents[1]
#: The spec's ``job`` -> the suffix of the route's job of that name (``<route>__<suffix>``).
JOBS = {"delivery": "erp_delivery_job", "source": "source_orders_job"}


def build_defs(spec: dict[str, Any]) -> dg.Definitions:
    """The default route (changed by ``spec["route"]``, if given) with its jobs and schedules,
    as ``definitions.py`` builds them, and the resources the spec names (``shop``, ``erp``,
    ``duckdb``)."""
    assets = route_assets(**spec.get("route", {}))
    schedules = build_route_schedules(assets)
    return dg.Definitions(
        assets=assets.all,
        jobs=schedules.jobs,
        schedules=schedules.schedules,
        resources={
            "shop": ShopResource(**spec["shop"]),
            "erp": ErpResource(**spec["erp"]),
            "duckdb": ledger_resource(spec["duckdb"]),
        },
    )


def job_name(spec: dict[str, Any]) -> str:
    """The name of the route's job the spec asks for."""
    route_id = shipped_route(**spec.get("route", {})).id
    return f"{route_id}__{JOBS[spec['job']]}"


def main() -> int:
    """Run the spec's job once; print its success and metadata as one JSON line."""
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
    job = build_defs(spec).resolve_job_def(job_name(spec))
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
        "duckdb": location_of(resources["duckdb"]),
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
        """The runner's process id."""
        return self.process.pid

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind runs in the child."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.killed = True
        self.process.wait(timeout=30)

    def wait(self, timeout: float = 180) -> dict[str, Any]:
        """The runner's JSON line (``{}`` if it printed none) once it has ended; killed, and
        ``subprocess.TimeoutExpired`` raised, if it has not after ``timeout`` seconds."""
        try:
            out, _ = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        lines = [line for line in out.decode().splitlines() if line.startswith("{")]
        self.output = json.loads(lines[-1]) if lines else {}
        return self.output

    def stop(self) -> None:
        """Kill the runner if it still runs, and close its pipes."""
        if self.process.poll() is None:
            self.kill()
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()

    def log(self) -> str:
        """The end of the runner's stderr (Dagster's log of the run)."""
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""


class WarmRunners:
    """At most one runner started ahead of time for ``dagster_home``, waiting for its spec:
    it imports Dagster and the route while the current run works, so the next run starts at
    once. :meth:`stop` ends the one not used."""

    def __init__(self, dagster_home: str | Path) -> None:
        self.dagster_home = Path(dagster_home)
        self._next: tuple[subprocess.Popen[bytes], Path] | None = None

    def take(self) -> tuple[subprocess.Popen[bytes], Path] | None:
        """The waiting runner and its log, if there is one and it is still alive."""
        waiting, self._next = self._next, None
        if waiting is not None and waiting[0].poll() is not None:
            _close(waiting[0])
            return None
        return waiting

    def refill(self) -> None:
        """Start the next runner ahead of time (after the current run has started)."""
        self.stop()
        log_path = self.dagster_home / f"runner-warm-{uuid.uuid4()}.log"
        process = _spawn(self.dagster_home, log_path, {WARM_ENV: "1"}, stdin=subprocess.PIPE)
        self._next = (process, log_path)

    def stop(self) -> None:
        """Stop the runner started ahead of time and not used, if any."""
        if self._next is not None:
            _close(self._next[0])
            self._next = None


def _close(process: subprocess.Popen[bytes]) -> None:
    """Kill a waiting runner (if it still runs) and close its pipes."""
    if process.poll() is None:
        process.kill()
    process.wait(timeout=30)
    for stream in (process.stdin, process.stdout):
        if stream is not None:
            stream.close()


def start(
    spec: dict[str, Any],
    dagster_home: str | Path,
    *,
    job: str = "delivery",
    tags: dict[str, str] | None = None,
    run_config: dict[str, Any] | None = None,
    partition_key: str | None = None,
    run_id: str | None = None,
    warm: WarmRunners | None = None,
) -> Runner:
    """Start a runner for ``spec``. ``warm`` (for the same ``dagster_home``): use its runner
    started ahead of time, if any, then have it start the next one."""
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
    waiting = warm.take() if warm is not None else None
    if waiting is None:
        process = _spawn(dagster_home, log_path, {SPEC_ENV: json.dumps(full)})
    else:
        process, log_path = waiting
        _hand_over(process, full)
    if warm is not None:
        warm.refill()
    return Runner(process, run_id, log_path)


def _hand_over(process: subprocess.Popen[bytes], spec: dict[str, Any]) -> None:
    """Give a runner started ahead of time its spec (one line on its stdin, then EOF)."""
    if process.stdin is None:
        raise RuntimeError("a runner started ahead of time has no stdin")
    process.stdin.write(json.dumps(spec).encode() + b"\n")
    process.stdin.close()
    process.stdin = None  # so that communicate() does not flush it again


def _spawn(
    dagster_home: str | Path, log_path: Path, env: dict[str, str], stdin: int | None = None
) -> subprocess.Popen[bytes]:
    """A runner process on ``dagster_home``; its stderr (Dagster's logs) goes to ``log_path``."""
    full_env = {k: v for k, v in os.environ.items() if k not in (SPEC_ENV, WARM_ENV)}
    # Runners talk to the test's sandbox: sandbox mode on, whatever the parent inherited.
    full_env |= {"DAGSTER_HOME": str(dagster_home), SANDBOX_MODE_ENV: "1", **env}
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "integration_project_testkit.delivery_runner"],
            cwd=REPO,
            env=full_env,
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=log,
        )


if __name__ == "__main__":
    raise SystemExit(main())
