"""Tick overhead: real Dagster runs launched the way the daemon launches them, and what a
route costs an hour with nothing to do.

    python -m bench.scenarios.ticks [--runs 3]    # alone, against a sandbox of its own
    python3 dev.py bench                          # the harness calls run(ctx)

What it starts, in the scratch folder: a ``DAGSTER_HOME`` holding ``deploy/dagster.yaml``; a
code server for the code location ``workspace.yaml`` names (``dagster api grpc -m
integration_project.definitions``); ``dagster-daemon run`` against it. Every schedule and
sensor is stopped first (GraphQL, through the ``dagster-graphql`` command), so nothing but the
measured runs happens. Each run is submitted with GraphQL's ``launchRun`` into the run queue,
as a schedule's run request is; the daemon's queue launches it with the DefaultRunLauncher,
which asks the code server to start it in a process of its own (Dagster 1.13 spawns it with
``multiprocessing``, a child of the code server). That process is watched through ``/proc``
(Linux only): CPU is user + system time of the process and of children it waited for, read
every 20 ms until it exits (the last few milliseconds may be missed).

Measured, each ``tick_runs`` times (median):

* an empty delivery run: ``<route>__erp_delivery_job`` with nothing pending;
* a one-window fetch: ``<route>__source_orders_job`` for a 5-minute window in the middle of
  the sandbox's orders (the route's one-hour look-back included, as shipped);
* an idle fetch: the same job for the window that just closed, which the sandbox's orders do
  not reach (what the 5-minute fetch of a quiet shop costs);
* in a process of its own, as the code server does it: one evaluation of every shipped
  schedule and sensor against that instance, in its idle state (CPU, median of many).

"Idle CPU per route" is, for the reference route: ticks an hour x CPU per evaluation (with its
share of the location's alert sensor) + runs an hour x CPU per run: the idle fetch on every
incoming tick, the daily retention run and the delivery runs. The delivery schedule as it is
(a run only when one is due, at least hourly) against the same schedule launching a run on
every tick (as it did before). Not counted: the daemon's own work per tick and per launch.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from bench.figures import Context, Figure, Goal, find
from integration_project import settings

SCENARIO = "ticks"
#: The contender the table divides by: the delivery schedule as it was.
BEFORE = "every tick a run (before)"
REFERENCES = (BEFORE,)
ROUTE = "eu_orders_shopware_to_exact"
REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DEFAULT_RUNS = 3
#: Evaluations of each schedule and sensor whose CPU is measured.
EVALUATIONS = 20
RUN_TIMEOUT_S = 300.0
START_TIMEOUT_S = 180.0
POLL_S = 0.02
IDLE_GOAL_CPU_S_PER_HOUR = 60.0
#: The sensor daemon's interval for a sensor that names none.
DEFAULT_SENSOR_INTERVAL_S = 30
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
REPOSITORY = "__repository__"


def run(ctx: Context) -> list[Figure]:
    """The scenario against the harness's sandbox (see the module docstring)."""
    runs = int(ctx.sizes.get("tick_runs", DEFAULT_RUNS))
    repeat = int(ctx.sizes.get("evaluations") or EVALUATIONS)
    busy, idle = _windows(ctx)
    with Stack(ctx.tmp / "ticks", ctx.shop_url, ctx.erp_url, busy) as stack:
        delivery = [stack.measure(f"{ROUTE}__erp_delivery_job") for _ in range(runs)]
        evaluations = stack.evaluate(repeat)  # the idle state: deliveries only, nothing mapped
        # Quiet windows first: a fetch after the busy one may catch up on what came since.
        quiet = [stack.measure(f"{ROUTE}__source_orders_job", idle) for _ in range(runs)]
        fetch = [stack.measure(f"{ROUTE}__source_orders_job", busy) for _ in range(runs)]
    figures = _run_figures("empty delivery run", delivery)
    figures += _run_figures(f"one-window fetch run ({busy})", fetch)
    figures += _run_figures(f"idle fetch run ({idle})", quiet)
    figures += _evaluation_figures(evaluations)
    figures += _idle_figures(evaluations, delivery, quiet)
    return figures


def goals(figures: list[Figure]) -> list[Goal]:
    """Idle cost of a route under 60 CPU seconds an hour (ours, not the before figure)."""
    text = "Idle cost of a route under 60 CPU seconds an hour"
    idle = [f for f in find(figures, SCENARIO, "idle CPU per route") if f.contender == "ours"]
    if not idle:
        return [Goal(text, "not measured", None)]
    value = idle[0].value
    return [Goal(text, f"{value:.1f} CPU s/h", value < IDLE_GOAL_CPU_S_PER_HOUR)]


def _windows(ctx: Context) -> tuple[str, str]:
    """Partition keys: a window in the middle of the sandbox's orders (or ``tick_window``),
    and the window that just closed (or ``tick_idle_window``)."""
    step = settings.WINDOW
    closed = settings.window_start(datetime.now(UTC)) - step
    busy = closed
    if "start" in ctx.ready and "end" in ctx.ready:
        start = datetime.fromisoformat(ctx.ready["start"])
        end = datetime.fromisoformat(ctx.ready["end"])
        busy = settings.window_start(start + (end - start) / 2)
    fmt = settings.PARTITION_FORMAT
    return (
        str(ctx.sizes.get("tick_window") or busy.strftime(fmt)),
        str(ctx.sizes.get("tick_idle_window") or closed.strftime(fmt)),
    )


# --- one run, watched through /proc -----------------------------------------------------------


@dataclass
class RunCost:
    """What one run cost: its status, wall seconds from submission (queued) and of its process,
    the process's CPU seconds and peak RSS, and its asset metadata (numbers only)."""

    run_id: str
    status: str
    queued_to_end_s: float
    process_wall_s: float
    cpu_s: float
    peak_rss_mib: float
    metadata: dict[str, float] = field(default_factory=dict)
    error: str = ""


@dataclass
class _Sample:
    first_seen: float
    last_seen: float
    cpu_s: float = 0.0
    hwm_kib: int = 0


class ProcessWatch:
    """The run processes a code server starts (``multiprocessing`` children running
    ``spawn_main``), their CPU and peak RSS as last read from ``/proc``."""

    def __init__(self, parent: int) -> None:
        self.parent = parent
        self.known = set(self._children())  # e.g. multiprocessing's resource tracker
        self.samples: dict[int, _Sample] = {}

    def _children(self) -> list[int]:
        pids: list[int] = []
        for task in Path(f"/proc/{self.parent}/task").glob("*"):
            try:
                pids += [int(p) for p in (task / "children").read_text().split()]
            except OSError:
                continue  # the thread ended
        return pids

    def poll(self) -> None:
        """Read every new child's CPU (user + system, its waited-for children included)."""
        now = time.monotonic()
        for pid in self._children():
            if pid in self.known:
                continue
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue  # gone between the listing and the read
            if b"spawn_main" not in cmdline:
                continue  # not a run process, or forked and not yet exec'd: look again
            sample = self.samples.setdefault(pid, _Sample(now, now))
            sample.last_seen = now
            # Fields after "(comm)": state is [0]; utime, stime, cutime, cstime are [11:15].
            sample.cpu_s = sum(int(x) for x in fields[11:15]) / CLOCK_TICKS
            sample.hwm_kib = max(sample.hwm_kib, _kib(status, "VmHWM:"))

    def alive(self, pid: int) -> bool:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return False
        return state != "Z"


def _kib(status: str, key: str) -> int:
    for line in status.splitlines():
        if line.startswith(key):
            return int(line.split()[1])
    return 0


# --- the Dagster stack ------------------------------------------------------------------------


class Stack:
    """A ``DAGSTER_HOME``, a code server and a daemon, in ``folder``; every schedule and
    sensor stopped. ``with Stack(...) as stack:`` starts it and stops it again."""

    def __init__(self, folder: Path, shop_url: str, erp_url: str, first_window: str) -> None:
        self.folder = folder
        self.home = folder / "dagster_home"
        self.port = _free_port()
        self.module, self.location = _project_location()
        self.env = _stack_env(self.home, folder, shop_url, erp_url, first_window)
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.instance: Any = None

    def __enter__(self) -> Stack:
        self.home.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / "deploy" / "dagster.yaml", self.home / "dagster.yaml")
        workspace = {"load_from": [{"grpc_server": self._server()}]}
        (self.folder / "workspace.yaml").write_text(yaml.safe_dump(workspace))
        try:
            self._start_code_server()
            self._stop_automation()
            self._start("daemon", [str(BIN / "dagster-daemon"), "run", "-w", self._workspace()])
            import dagster as dg

            self.instance = dg.DagsterInstance.from_config(str(self.home))
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for name in ("daemon", "code server"):
            process = self.processes.pop(name, None)
            if process is None or process.poll() is not None:
                continue
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self.instance is not None:
            self.instance.dispose()
            self.instance = None

    def _server(self) -> dict[str, Any]:
        return {"host": "127.0.0.1", "port": self.port, "location_name": self.location}

    def _workspace(self) -> str:
        return str(self.folder / "workspace.yaml")

    def _start(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = (self.folder / f"{name.replace(' ', '_')}.log").open("wb")
        process = subprocess.Popen(
            argv, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        self.processes[name] = process
        return process

    def log_tail(self, name: str, chars: int = 2000) -> str:
        path = self.folder / f"{name.replace(' ', '_')}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def _start_code_server(self) -> None:
        """``dagster api grpc`` for the project's module; ready when it says it started."""
        argv = [str(BIN / "dagster"), "api", "grpc", "-m", self.module, "-h", "127.0.0.1"]
        argv += ["-p", str(self.port), "--location-name", self.location]
        process = self._start("code server", argv)
        deadline = time.monotonic() + START_TIMEOUT_S
        while "Started Dagster code server" not in self.log_tail("code server", 100_000):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"the code server for {self.module} did not start:\n"
                    + self.log_tail("code server")
                )
            time.sleep(0.2)

    def graphql(self, document: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        """One GraphQL document against this instance and code location (``dagster-graphql``)."""
        argv = [str(BIN / "dagster-graphql"), "-w", self._workspace(), "-t", document]
        if variables:
            argv += ["-v", json.dumps(variables)]
        done = subprocess.run(argv, cwd=REPO, env=self.env, capture_output=True, text=True)
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if done.returncode or not lines:
            raise RuntimeError(f"dagster-graphql failed ({done.returncode}): {done.stderr[-2000:]}")
        answer = json.loads(lines[-1])
        if answer.get("errors"):
            raise RuntimeError(f"GraphQL errors: {answer['errors']}")
        return answer["data"]

    def _stop_automation(self) -> None:
        """Stop every schedule and sensor (they default to running), so that only the
        measured runs happen."""
        found = self.graphql(_AUTOMATION)["repositoriesOrError"].get("nodes", [])
        stops = []
        for repository in found:
            for item in repository["schedules"]:
                if item["scheduleState"]["status"] == "RUNNING":
                    stops.append(f'stopRunningSchedule(id: "{item["scheduleState"]["id"]}")')
            for item in repository["sensors"]:
                if item["sensorState"]["status"] == "RUNNING":
                    stops.append(f'stopSensor(id: "{item["sensorState"]["id"]}")')
        if stops:
            fields = " ".join(f"s{i}: {stop} {{ __typename }}" for i, stop in enumerate(stops))
            self.graphql(f"mutation {{ {fields} }}")

    def launch(self, job: str, partition: str | None = None) -> str:
        """Submit a run of ``job`` into the run queue, as a schedule tick does; its id."""
        tags = [{"key": "dagster/partition", "value": partition}] if partition else []
        params = {
            "selector": {
                "repositoryLocationName": self.location,
                "repositoryName": REPOSITORY,
                "jobName": job,
            },
            "runConfigData": {},
            "executionMetadata": {"tags": tags},
        }
        answer = self.graphql(_LAUNCH, {"p": params})["launchRun"]
        if answer["__typename"] != "LaunchRunSuccess":
            raise RuntimeError(f"launchRun of {job}: {answer}")
        return answer["run"]["runId"]

    def measure(self, job: str, partition: str | None = None) -> RunCost:
        """Launch one run and watch its process until it exits; what it cost."""
        watch = ProcessWatch(self.processes["code server"].pid)
        run_id = self.launch(job, partition)
        record = self._watch_until_done(watch, run_id)
        if not watch.samples:
            events = [e.message for e in self.instance.all_logs(run_id) if e.message][-5:]
            raise RuntimeError(
                f"no process of run {run_id} ({job}, {record.dagster_run.status.value}) seen "
                f"under the code server; its last events: {events}"
            )
        sample = list(watch.samples.values())[-1]
        run = record.dagster_run
        return RunCost(
            run_id,
            run.status.value,
            round((record.end_time or time.time()) - record.create_timestamp.timestamp(), 2),
            round(sample.last_seen - sample.first_seen, 2),
            sample.cpu_s,
            round(sample.hwm_kib / 1024, 1),
            _run_metadata(self.instance, run_id),
            _failure_text(self.instance, run_id) if run.status.value != "SUCCESS" else "",
        )

    def _watch_until_done(self, watch: ProcessWatch, run_id: str) -> Any:
        """Poll ``/proc`` every 20 ms until the run is finished and its process is gone."""
        deadline = time.monotonic() + RUN_TIMEOUT_S
        record, polls = None, 0
        while time.monotonic() < deadline:
            watch.poll()
            if polls % 10 == 0:
                record = self.instance.get_run_record_by_id(run_id)
            polls += 1
            finished = record is not None and record.dagster_run.is_finished
            if finished and not any(watch.alive(pid) for pid in watch.samples):
                return record
            time.sleep(POLL_S)
        raise RuntimeError(f"run {run_id} did not finish in {RUN_TIMEOUT_S:.0f} s")

    def evaluate(self, repeat: int = EVALUATIONS) -> dict[str, Any]:
        """Every schedule and sensor evaluated ``repeat`` times in a process of its own
        (:func:`_evaluate`)."""
        argv = [sys.executable, "-m", "bench.scenarios.ticks", "--evaluate"]
        argv += ["--evaluations", str(repeat)]
        done = subprocess.run(argv, cwd=REPO, env=self.env, capture_output=True, text=True)
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if done.returncode or not lines:
            raise RuntimeError(f"evaluating the schedules failed: {done.stderr[-3000:]}")
        return json.loads(lines[-1])


_AUTOMATION = """{ repositoriesOrError { ... on RepositoryConnection { nodes {
    schedules { scheduleState { id status } } sensors { sensorState { id status } } } } } }"""
_LAUNCH = """mutation($p: ExecutionParams!) { launchRun(executionParams: $p) { __typename
    ... on LaunchRunSuccess { run { runId } } ... on Error { message } } }"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _project_location() -> tuple[str, str]:
    """The module and location name of the project's ``workspace.yaml`` (its first entry)."""
    workspace = yaml.safe_load((REPO / "workspace.yaml").read_text())
    entry = workspace["load_from"][0]["python_module"]
    return entry["module_name"], entry.get("location_name", entry["module_name"])


def _stack_env(
    home: Path, folder: Path, shop_url: str, erp_url: str, window: str
) -> dict[str, str]:
    """Sandbox mode, this instance and ledger, the reference route pointed at the sandbox;
    partitions from the day before ``window`` (the first window it fetches)."""
    first = settings.parse_window_start(window) - timedelta(days=1)
    return {
        **os.environ,
        "DAGSTER_HOME": str(home),
        settings.SANDBOX_MODE_ENV: "1",
        settings.DUCKDB_PATH_ENV: str(folder / "ledger.duckdb"),
        settings.SANDBOX_START_ENV: first.strftime(settings.PARTITION_FORMAT),
        "SHOP_API_URL": shop_url,
        "SHOP_CLIENT_ID": settings.SANDBOX_SHOP_CLIENT_ID,
        "SHOP_CLIENT_SECRET": settings.SANDBOX_SHOP_CLIENT_SECRET,
        "ERP_API_URL": erp_url,
        "ERP_DIVISION": settings.SANDBOX_ERP_DIVISION,
        "ERP_CLIENT_ID": settings.SANDBOX_ERP_CLIENT_ID,
        "ERP_CLIENT_SECRET": settings.SANDBOX_ERP_CLIENT_SECRET,
        "ERP_REFRESH_TOKEN": settings.SANDBOX_ERP_REFRESH_TOKEN,
        # The CSV route's folder (empty: its sensor finds nothing to read, as on a quiet day).
        "CSV_ORDERS_FOLDER": str(_made(folder / "csv_orders")),
    }


def _made(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _failure_text(instance: Any, run_id: str) -> str:
    """The first step failure's error of a run that did not succeed (for the figure's note)."""
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is not None and event.event_type_value == "STEP_FAILURE":
            error = event.step_failure_data.error if event.step_failure_data else None
            while error is not None and error.cause is not None:
                error = error.cause  # the user code's own error, not Dagster's wrapper
            return (error.message if error else entry.message or "").strip()[:200]
    return ""


def _run_metadata(instance: Any, run_id: str) -> dict[str, float]:
    """The numbers among the metadata of the run's materialisations (by asset, flattened)."""
    import dagster as dg

    found: dict[str, float] = {}
    for key in instance.get_asset_keys(prefix=[ROUTE]):
        records = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key), limit=1)
        for record in records.records:
            if record.run_id != run_id or record.asset_materialization is None:
                continue
            for name, value in record.asset_materialization.metadata.items():
                if isinstance(getattr(value, "value", None), int | float):
                    found[f"{key.path[-1]}.{name}"] = float(value.value)
    return found


# --- schedules and sensors, evaluated as the code server does ---------------------------------


def _evaluate(repeat: int) -> dict[str, Any]:
    """In the child process: load the code location, then evaluate every schedule and sensor
    ``repeat`` times against the instance in ``DAGSTER_HOME``; CPU per evaluation (ms)."""
    import warnings

    import dagster as dg

    from integration_project.schedules import DELIVERY_SAFETY_NET

    warnings.filterwarnings("ignore")
    module, _ = _project_location()
    defs = importlib.import_module(module).defs()
    load_cpu_s = time.process_time()  # from this interpreter's start: what every run pays
    instance = dg.DagsterInstance.get()
    try:
        found = [
            evaluate_schedule(instance, defs.resolve_schedule_def(s.name), repeat)
            for s in defs.schedules or []
        ]
        found += [
            evaluate_sensor(
                instance,
                sensor,
                repeat,
                definitions=defs,
                # As the daemon binds them: the resources a sensor requires (a CSV route's
                # folder); none for the others.
                resources={k: defs.resources[k] for k in sensor.required_resource_keys},
            )
            for sensor in (defs.resolve_sensor_def(s.name) for s in defs.sensors or [])
        ]
    finally:
        instance.dispose()
    routes = sorted({key.path[0] for key in defs.resolve_all_asset_keys()})
    return {
        "load_cpu_s": round(load_cpu_s, 3),
        "instigators": found,
        "routes": routes,
        "safety_net_s": DELIVERY_SAFETY_NET.total_seconds(),
    }


def evaluate_schedule(instance: Any, schedule: Any, repeat: int, **context: Any) -> dict[str, Any]:
    """CPU of building the tick's context and evaluating it, and what the last tick did. The
    context gets the instance's ref, as in the code server: the instance is built anew from
    it on first use in every evaluation (with SQLite storage, schema checks included).
    ``context``: more of ``build_schedule_context``'s arguments (``repository_def``)."""
    import dagster as dg

    tick = settings.window_start(datetime.now(UTC))  # on the minute and the 5-minute cron
    cpu, data = [], None
    for _ in range(repeat):
        began = time.process_time()
        built = dg.build_schedule_context(
            instance_ref=instance.get_ref(), scheduled_execution_time=tick, **context
        )
        data = schedule.evaluate_tick(built)
        cpu.append(time.process_time() - began)
    return {
        "name": schedule.name,
        "kind": "schedule",
        "ticks_per_hour": ticks_per_hour(schedule.cron_schedule),
        "cpu_ms": round(statistics.median(cpu) * 1000, 2),
        "runs": len(data.run_requests or []) if data else 0,
        "skip": (data.skip_message or "") if data else "",
    }


def evaluate_sensor(instance: Any, sensor: Any, repeat: int, **context: Any) -> dict[str, Any]:
    """As :func:`evaluate_schedule`; the first evaluation (which sets the cursor) is not
    counted, the others carry the cursor on as the daemon does. ``context``: the sensor's
    ``definitions`` or ``repository_def`` for ``build_sensor_context``."""
    import dagster as dg

    cursor, cpu, data = None, [], None
    for number in range(repeat + 1):
        began = time.process_time()
        built = dg.build_sensor_context(
            instance_ref=instance.get_ref(), cursor=cursor, sensor_name=sensor.name, **context
        )
        data = sensor.evaluate_tick(built)
        if number:
            cpu.append(time.process_time() - began)
        cursor = data.cursor or cursor
    interval = sensor.minimum_interval_seconds or DEFAULT_SENSOR_INTERVAL_S
    return {
        "name": sensor.name,
        "kind": "sensor",
        "ticks_per_hour": 3600 / interval,
        "cpu_ms": round(statistics.median(cpu) * 1000, 2),
        "runs": len(data.run_requests or []) if data else 0,
        "skip": (data.skip_message or "") if data else "",
    }


def ticks_per_hour(cron: str) -> float:
    """Ticks of ``cron`` an hour over a week (Dagster's own reading of the cron: the starts of
    a partitions definition's windows; a day more, so the week's last tick has its window)."""
    import dagster as dg

    start = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday
    windows = dg.TimeWindowPartitionsDefinition(
        cron_schedule=cron,
        start=start,
        end=start + timedelta(days=8),
        fmt=settings.PARTITION_FORMAT,
        timezone="UTC",
    )
    week_end = start + timedelta(days=7)
    ticks = [
        key for key in windows.get_partition_keys() if settings.parse_window_start(key) < week_end
    ]
    return round(len(ticks) / (7 * 24), 4)


# --- figures ----------------------------------------------------------------------------------


def _median(costs: list[RunCost], attribute: str) -> float:
    return round(statistics.median(getattr(cost, attribute) for cost in costs), 2)


def _run_figures(label: str, costs: list[RunCost]) -> list[Figure]:
    """Wall (queued → done, and the process's life) and CPU of one kind of run."""
    cpu = [cost.cpu_s for cost in costs]
    statuses = sorted({cost.status for cost in costs})
    shown = ("source_orders.fetched", "erp_orders.mapped", "erp_delivered_orders.sent")
    last = costs[-1].metadata
    what = ", ".join(f"{k.split('.')[1]} {last[k]:g}" for k in shown if k in last)
    errors = sorted({cost.error for cost in costs if cost.error})
    if errors:
        what += f"; FAILED: {errors[0]}"
    return [
        Figure(
            SCENARIO,
            "ours",
            f"{label}: wall, queued to done",
            _median(costs, "queued_to_end_s"),
            "s",
            f"median of {len(costs)}, {'/'.join(statuses)}; the run process lived "
            f"{_median(costs, 'process_wall_s')} s (the rest: queue and launch)",
        ),
        Figure(
            SCENARIO,
            "ours",
            f"{label}: CPU of the run process",
            _median(costs, "cpu_s"),
            "CPU s",
            f"{min(cpu):.2f}-{max(cpu):.2f}; peak RSS {_median(costs, 'peak_rss_mib')} MiB"
            + (f"; {what}" if what else ""),
        ),
    ]


def _evaluation_figures(evaluations: dict[str, Any]) -> list[Figure]:
    figures = [
        Figure(
            SCENARIO,
            "ours",
            "code location load (python start to defs())",
            evaluations["load_cpu_s"],
            "CPU s",
            "the floor of every run process",
        )
    ]
    for item in evaluations["instigators"]:
        decision = f"{item['runs']} run(s)" if item["runs"] else f"skip: {item['skip'][:60]}"
        figures.append(
            Figure(
                SCENARIO,
                "ours",
                f"evaluation CPU, {item['kind']} {item['name']}",
                item["cpu_ms"],
                "CPU ms",
                f"{item['ticks_per_hour']:g} ticks/h; idle tick: {decision}",
            )
        )
    return figures


def _idle_figures(
    evaluations: dict[str, Any], delivery: list[RunCost], quiet: list[RunCost]
) -> list[Figure]:
    """CPU seconds an hour the reference route costs with nothing to do: ours, and the
    delivery schedule launching a run on every tick (before)."""
    items = {item["name"]: item for item in evaluations["instigators"]}
    routes = evaluations["routes"]
    shared = [i for i in items.values() if not any(i["name"].startswith(r) for r in routes)]
    own = [i for i in items.values() if i["name"].startswith(f"{ROUTE}__")]
    per_hour = sum(i["ticks_per_hour"] * i["cpu_ms"] / 1000 for i in own)
    per_hour += sum(i["ticks_per_hour"] * i["cpu_ms"] / 1000 for i in shared) / len(routes)
    delivery_cpu, fetch_cpu = _median(delivery, "cpu_s"), _median(quiet, "cpu_s")
    schedule = items[f"{ROUTE}__erp_delivery_schedule"]
    fetches = items[f"{ROUTE}__source_orders_schedule"]["ticks_per_hour"]
    retention = items.get(f"{ROUTE}__personal_data_retention_schedule", {})
    other_runs = fetches * fetch_cpu + retention.get("ticks_per_hour", 0.0) * delivery_cpu
    ours = schedule["ticks_per_hour"] if schedule["runs"] else 3600 / evaluations["safety_net_s"]
    figures = []
    for contender, runs in (("ours", ours), (BEFORE, schedule["ticks_per_hour"])):
        total = per_hour + runs * delivery_cpu + other_runs
        note = (
            f"evaluations {per_hour:.1f} + {runs:g} delivery runs x {delivery_cpu:.2f} + "
            f"{fetches:g} idle fetches x {fetch_cpu:.2f} + daily retention run; "
            f"goal < {IDLE_GOAL_CPU_S_PER_HOUR:g}"
        )
        figures.append(
            Figure(SCENARIO, contender, "idle CPU per route", round(total, 1), "CPU s/h", note)
        )
    return figures


# --- alone ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Run the scenario alone, against a sandbox process of its own with a day of orders
    that ended at midnight (so the window that just closed is empty)."""
    parser = argparse.ArgumentParser(prog="python -m bench.scenarios.ticks")
    parser.add_argument("--runs", type=int, default=DEFAULT_RUNS, help="runs of each kind")
    parser.add_argument("--orders", type=int, default=4320, help="sandbox orders (one day)")
    parser.add_argument("--tmp", default=None, help="scratch folder (default: a new temp one)")
    parser.add_argument("--evaluations", type=int, default=EVALUATIONS,
                        help="evaluations of each schedule and sensor (%(default)s)")  # fmt: skip
    parser.add_argument("--evaluate", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.evaluate:  # the child of Stack.evaluate
        sys.stdout.write(json.dumps(_evaluate(args.evaluations)) + "\n")
        return 0
    from bench.figures import render
    from bench.sandbox_process import SandboxProcess, bench_start

    os.environ[settings.SANDBOX_MODE_ENV] = "1"
    with (
        tempfile.TemporaryDirectory(dir=args.tmp) as tmp,
        SandboxProcess(args.orders, bench_start(1), 1) as ready,
    ):
        ctx = Context(
            ready["shop_url"],
            ready["erp_url"],
            Path(tmp),
            {"tick_runs": args.runs, "evaluations": args.evaluations},
            ready,
        )
        figures = run(ctx)
    sys.stdout.write(render(figures, goals(figures), {SCENARIO: REFERENCES}) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
