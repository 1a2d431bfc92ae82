"""Many routes in one code location: what 1,000 route files cost to load, hold and tick.

    python -m bench.scenarios.routes [--routes 1000]   # alone (no sandbox process needed)
    python3 dev.py bench                               # the harness calls run(ctx)

A company with many shops runs every route in one deployment. This scenario writes a project
of its own in the scratch folder (never into ``integration_project/defs/``): a
``pyproject.toml`` whose ``[tool.dg.project]`` names the package ``many_routes_location``, that
package's ``definitions.py`` (the routes plus what ours shares: the DuckDB ledger, the
run-failure alert, the erase job, the in-process executor) and ``defs/<route>/defs.yaml``
files. The routes are spread over 50 shops and 10 ERP divisions as a real deployment's would
be: per-shop variable names, a ``division_env`` per division and a ``YourRef`` template of
their own. Sandbox mode is on and no URL variable is set, so every side points at the local
sandbox; in sandbox mode the division is then the sandbox ERP's own, whatever
``division_env`` says, so all routes count as one division to the ``YourRef`` check: every
template must differ from every other (the hardest case for that check). Nothing is fetched:
loading and idle ticks need no network.

Measured, each in a fresh process with the project on ``PYTHONPATH``:

* the code location's load at 10, 100, 200 and ``--routes`` routes: wall and CPU seconds from
  the interpreter's start until ``defs()`` returned, peak RSS, and what was loaded (assets,
  checks, jobs, schedules, sensors); up to ``--resolve-max`` routes (200) also until Dagster
  resolved the repository (every job, asset graph and resource binding), as a code server
  does before it answers: that step grows with the square of the routes (about 2.5 minutes
  at 1,000 on 2 cores), too long for the default run;
* at ``--routes``: where the load's CPU goes (interpreter and imports, reading the route
  files, the route-set check, building the routes, the shared part); at ``--resolve-max``
  routes, a code server (``dagster api grpc -m``) from its start until its port accepts a
  connection (it loads first), confirmed by ``dagster api grpc-health-check``, and its RSS;
* the schedules and sensors of 10 routes of the ``--routes`` (spread over shops, countries and
  schedules), each evaluated a few times as the code server does (context from the
  instance's ref, a throwaway instance in ``DAGSTER_HOME``), in a location of those 10 route
  files: an evaluation reads the instance, not the other routes, and a 1,000-route
  repository would take minutes to resolve. CPU per evaluation, summed per route over its
  instigators (one tick of each), and CPU seconds an hour at their tick rates; the
  location-wide alert sensor's cost is shared by ``--routes`` routes.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bench.contenders import peak_rss_mib
from bench.figures import Context, Figure, Goal, ScenarioFailed, find, say
from bench.scenarios.ticks import evaluate_schedule, evaluate_sensor
from integration_project import settings

SCENARIO = "routes"
REFERENCES: tuple[str, ...] = ()
PACKAGE = "many_routes_location"
MODULE = f"{PACKAGE}.definitions"
DEFAULT_ROUTES = 1000
SHOPS = 50
DIVISIONS = 10
#: Routes whose schedules and sensors are evaluated, and evaluations of each instigator.
SAMPLE_ROUTES = 10
EVALUATIONS = 3
LOAD_GOAL_S = 10.0
TICK_GOAL_MS = 50.0
#: The largest location whose repository is resolved (and served): Dagster's resolution grows
#: with the square of the routes, about 2.5 minutes of CPU at 1,000 on this 2-core machine.
RESOLVE_MAX = 200
CHILD_TIMEOUT_S = 600.0
SERVER_TIMEOUT_S = 300.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
REPO = Path(__file__).resolve().parents[2]


def run(ctx: Context) -> list[Figure]:
    """The scenario (see the module docstring); the sandbox process is not used. A step that
    fails (e.g. a code server that does not answer in time) fails the scenario with the
    figures measured before it."""
    figures: list[Figure] = []
    try:
        _measure(ctx, figures)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        raise ScenarioFailed(str(exc), figures) from exc
    return figures


def _measure(ctx: Context, figures: list[Figure]) -> None:
    total = int(ctx.sizes.get("routes") or DEFAULT_ROUTES)
    limit = int(ctx.sizes.get("routes_resolve_max") or RESOLVE_MAX)
    folder = ctx.tmp / "routes"
    for size in load_sizes(total, limit):
        project = write_project(folder / f"project_{size}", range(size))
        say(f"routes: loading {size:,} routes")
        figures += load_figures(size, child(project, folder, "--load", size <= limit))
    biggest = folder / f"project_{total}"
    say(f"routes: where the load of {total:,} routes goes")
    figures += phase_figures(total, child(biggest, folder, "--phases", total <= limit))
    sample = sample_routes(total)
    say(f"routes: evaluating the ticks of {len(sample)} of {total:,} routes")
    repeat = ["--evaluations", str(int(ctx.sizes.get("evaluations") or EVALUATIONS))]
    project = write_project(folder / "sample", sample)
    evaluated = child(project, folder, "--evaluate", True, repeat)
    figures += tick_figures(total, evaluated)
    served = min(total, limit)
    say(f"routes: a code server for {served:,} routes")
    figures += server_figures(served, serve(folder / f"project_{served}", folder))


def goals(figures: list[Figure]) -> list[Goal]:
    """Definitions load under 10 s, and tick evaluation under 50 ms per route, both at 1,000
    routes (a smaller run measures, but does not decide)."""
    found = []
    loads = find(figures, SCENARIO, "load to defs()", unit="s")
    ticks = find(figures, SCENARIO, "CPU per route tick", unit="CPU ms")
    for text, matching, limit in (
        (f"Definitions load under {LOAD_GOAL_S:g} s at 1,000 routes", loads, LOAD_GOAL_S),
        (f"Tick evaluation under {TICK_GOAL_MS:g} ms per route at 1,000 routes", ticks,
         TICK_GOAL_MS),
    ):  # fmt: skip
        if not matching:
            found.append(Goal(text, "not measured", None))
            continue
        largest = max(matching, key=_routes_of)
        measured = f"{largest.value:.2f} {largest.unit} @ {_routes_of(largest):,} routes"
        met = largest.value < limit if _routes_of(largest) >= 1000 else None
        found.append(Goal(text, measured + ("" if met is not None else " (too few)"), met))
    return found


def load_sizes(total: int, limit: int) -> list[int]:
    """10, 100, the largest size resolved (``limit``) and ``total``: how the load grows."""
    return sorted({size for size in (10, 100, limit) if size < total} | {total})


def sample_routes(total: int) -> list[int]:
    """``SAMPLE_ROUTES`` route numbers spread evenly over ``total`` (every kind of schedule)."""
    step = max(1, total // SAMPLE_ROUTES)
    return sorted({min(total - 1, i * step + i) for i in range(min(SAMPLE_ROUTES, total))})


def _routes_of(figure: Figure) -> int:
    digits = "".join(ch for ch in figure.metric.rsplit("@", 1)[-1] if ch.isdigit())
    return int(digits) if digits else 0


# --- the project ------------------------------------------------------------------------------

PYPROJECT = f"""\
[project]
name = "{PACKAGE}"
version = "0.0.0"

[tool.dagster]
module_name = "{MODULE}"
code_location_name = "{PACKAGE}"

[tool.dg]
directory_type = "project"

[tool.dg.project]
root_module = "{PACKAGE}"
code_location_name = "{PACKAGE}"
registry_modules = ["integration_project.components"]
"""

DEFINITIONS = '''\
"""Many routes in one code location, assembled as integration_project's own is."""

from pathlib import Path

import dagster as dg

from integration_project.location import build_location


@dg.definitions
def defs() -> dg.Definitions:
    return build_location(Path(__file__))
'''


def route_yaml(number: int) -> tuple[str, str]:
    """Route ``number``'s folder and file: shop ``number % 50`` (every shop in one of the ten
    divisions), its own variables and ``YourRef`` prefix; countries and schedules vary."""
    shop = number % SHOPS
    division = shop % DIVISIONS
    name = f"Shop {shop:02d} route {number:04d}"
    shop_vars, erp_vars = f"SHOP{shop:02d}", f"ERP_DIV{division:02d}"
    countries = ("EU", "[NL, BE, LU]", "[DE, AT, CH]", "[FR, ES, IT, PT]")[number % 4]
    text = f"""\
type: integration_project.components.OrderRoute
attributes:
  name: {name}
  description: Orders of shop {shop:02d} to ERP division {division:02d}.
  source:
    api_url_env: {shop_vars}_API_URL
    client_id_env: {shop_vars}_CLIENT_ID
    client_secret_env: {shop_vars}_CLIENT_SECRET
    sandbox: {"shop" if shop % 2 == 0 else "shop2"}
  target:
    api_url_env: {erp_vars}_API_URL
    division_env: {erp_vars}_DIVISION
    client_id_env: {erp_vars}_CLIENT_ID
    client_secret_env: {erp_vars}_CLIENT_SECRET
    refresh_token_env: {erp_vars}_REFRESH_TOKEN
  filter:
    countries: {countries}
  mapping:
    your_ref: "S{shop:02d}R{number:04d}-{{order_number}}"
  schedule:
    incoming: "{("*/5 * * * *", "*/15 * * * *")[number % 2]}"
    outgoing: "{("* * * * *", "*/2 * * * *")[number % 3 == 0]}"
  late_orders: 1d
"""
    return name.lower().replace(" ", "_"), text


def write_project(folder: Path, numbers: Iterable[int]) -> Path:
    """The project folder (put it on ``PYTHONPATH``) with routes ``numbers``' files."""
    package = folder / PACKAGE
    (package / "defs").mkdir(parents=True, exist_ok=True)
    (folder / "pyproject.toml").write_text(PYPROJECT)
    (package / "__init__.py").write_text("")
    (package / "defs" / "__init__.py").write_text("")
    (package / "definitions.py").write_text(DEFINITIONS)
    for number in numbers:
        route, text = route_yaml(number)
        (package / "defs" / route).mkdir(exist_ok=True)
        (package / "defs" / route / "defs.yaml").write_text(text)
    return folder


def child_env(project: Path, folder: Path) -> dict[str, str]:
    """Sandbox mode, a throwaway instance and ledger, the project importable; no shop or ERP
    variable set, so every side uses the sandbox (a credential set without its URL would make
    the route refuse to load)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("SHOP", "ERP_"))}
    home = folder / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    path = [str(project), env.get("PYTHONPATH", "")]
    env.update(
        {
            settings.SANDBOX_MODE_ENV: "1",
            settings.DUCKDB_PATH_ENV: str(folder / "ledger.duckdb"),
            "DAGSTER_HOME": str(home),
            "DAGSTER_DISABLE_TELEMETRY": "1",
            "PYTHONPATH": os.pathsep.join(part for part in path if part),
        }
    )
    return env


def child(
    project: Path, folder: Path, mode: str, resolve: bool, more: Iterable[str] = ()
) -> dict[str, Any]:
    """``python -m bench.scenarios.routes <mode>`` in a fresh process: its JSON line.
    ``resolve``: also resolve the repository as a code server does (minutes at 1,000);
    ``more``: further arguments of the child."""
    argv = [sys.executable, "-m", "bench.scenarios.routes", mode]
    argv += ["--resolve"] if resolve else []
    argv += list(more)
    done = subprocess.run(
        argv,
        cwd=REPO,
        env=child_env(project, folder),
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_S,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        raise RuntimeError(f"{mode} of {project} failed: {done.stderr[-3000:]}")
    return json.loads(lines[-1])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _proc(pid: int) -> tuple[float, float, float]:
    """CPU seconds (user + system), RSS and peak RSS (MiB) of a process, from ``/proc``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    status = Path(f"/proc/{pid}/status").read_text()

    def kib(key: str) -> float:
        line = next((line for line in status.splitlines() if line.startswith(key)), "x 0")
        return int(line.split()[1]) / 1024

    return sum(int(x) for x in fields[11:13]) / CLOCK_TICKS, kib("VmRSS:"), kib("VmHWM:")


def serve(project: Path, folder: Path) -> dict[str, Any]:
    """``dagster api grpc -m`` for the location, from its start until its port accepts a
    connection (it loads the location first), then confirmed by ``dagster api
    grpc-health-check``: wall to the open port, its CPU and RSS then."""
    port = _free_port()
    env = child_env(project, folder)
    dagster = str(Path(sys.executable).parent / "dagster")
    address = ["--host", "127.0.0.1", "--port", str(port)]
    began = time.monotonic()
    server = subprocess.Popen(
        [dagster, "api", "grpc", "-m", MODULE, *address],
        cwd=project,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while time.monotonic() - began < SERVER_TIMEOUT_S:
            if server.poll() is not None:
                raise RuntimeError(f"the code server exited with {server.returncode}")
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        else:
            raise RuntimeError(f"the code server did not listen in {SERVER_TIMEOUT_S:.0f} s")
        wall = time.monotonic() - began
        cpu, rss, peak = _proc(server.pid)
        check = [dagster, "api", "grpc-health-check", *address]
        if subprocess.run(check, env=env, capture_output=True, timeout=120).returncode:
            raise RuntimeError("the code server listens but grpc-health-check failed")
        return {"wall_s": round(wall, 2), "cpu_s": cpu, "rss_mib": rss, "peak_mib": peak}
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


# --- figures ----------------------------------------------------------------------------------


def load_figures(size: int, found: dict[str, Any]) -> list[Figure]:
    """Wall, CPU and peak RSS to ``defs()`` (and to the resolved repository), and counts."""
    at = f"@ {size:,} routes"
    what = ", ".join(
        f"{found[key]:,} {key}" for key in ("assets", "checks", "jobs", "schedules", "sensors")
    )
    figures = [
        Figure(SCENARIO, "ours", f"load to defs() {at}", found["defs_wall_s"], "s",
               f"CPU {found['defs_cpu_s']:.2f} s (import {found['import_cpu_s']:.2f}); "
               f"{what}"),
        Figure(SCENARIO, "ours", f"peak RSS at defs() {at}", found["defs_rss_mib"], "MiB"),
    ]  # fmt: skip
    if "resolved_wall_s" in found:
        figures += [
            Figure(SCENARIO, "ours", f"load to repository resolved {at}",
                   found["resolved_wall_s"], "s",
                   f"CPU {found['resolved_cpu_s']:.2f} s; what a code server does first"),
            Figure(SCENARIO, "ours", f"peak RSS, repository resolved {at}",
                   found["resolved_rss_mib"], "MiB"),
        ]  # fmt: skip
    return figures


def phase_figures(size: int, found: dict[str, Any]) -> list[Figure]:
    return [
        Figure(SCENARIO, "ours", f"load CPU: {step} @ {size:,} routes", value, "CPU s")
        for step, value in found["cpu_s"].items()
    ]


def server_figures(size: int, found: dict[str, Any]) -> list[Figure]:
    at = f"@ {size:,} routes"
    return [
        Figure(SCENARIO, "ours", f"code server start to healthy {at}", found["wall_s"], "s",
               f"CPU {found['cpu_s']:.2f} s; dagster api grpc -m until it listens, then "
               "grpc-health-check answered"),
        Figure(SCENARIO, "ours", f"code server RSS {at}", round(found["rss_mib"], 1), "MiB",
               f"peak {found['peak_mib']:.1f} MiB"),
    ]  # fmt: skip


def tick_figures(size: int, found: dict[str, Any]) -> list[Figure]:
    """CPU per evaluation of each kind of instigator (median over the sampled routes), and per
    route: one tick of each of its instigators, and CPU seconds an hour (its share of the
    location's own sensors included: over ``size`` routes)."""
    items = found["instigators"]
    shared = [item for item in items if not item["route"]]
    shared_ms = sum(item["cpu_ms"] for item in shared) / size
    shared_h = sum(item["cpu_ms"] * item["ticks_per_hour"] for item in shared) / 1000 / size
    figures = []
    for kind in sorted({item["name"].split("__", 1)[-1] for item in items if item["route"]}):
        same = [i for i in items if i["route"] and i["name"].endswith(f"__{kind}")]
        figures.append(
            Figure(SCENARIO, "ours", f"evaluation CPU, {kind}",
                   round(statistics.median(i["cpu_ms"] for i in same), 2), "CPU ms",
                   f"median of {len(same)} routes; "
                   f"{'/'.join(f'{r:g}' for r in sorted({i['ticks_per_hour'] for i in same}))}"
                   " ticks/h")
        )  # fmt: skip
    per_tick, per_hour = [], []
    for route in found["routes"]:
        own = [item for item in items if item["route"] == route]
        per_tick.append(sum(item["cpu_ms"] for item in own) + shared_ms)
        per_hour.append(sum(i["cpu_ms"] * i["ticks_per_hour"] for i in own) / 1000 + shared_h)
    at = f"@ {size:,} routes"
    note = f"median of {len(per_tick)} routes, max {max(per_tick):.1f}; one tick of each"
    return [
        *figures,
        Figure(SCENARIO, "ours", f"CPU per route tick {at}",
               round(statistics.median(per_tick), 2), "CPU ms", note),
        Figure(SCENARIO, "ours", f"tick CPU per route an hour {at}",
               round(statistics.median(per_hour), 2), "CPU s/h",
               f"x {size:,} routes: {statistics.median(per_hour) * size / 3600:.2f} cores"),
    ]  # fmt: skip


# --- in the child process ---------------------------------------------------------------------


def _age_s() -> float:
    """Wall seconds since this interpreter started (``/proc``: uptime less the start time)."""
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    started = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
    return uptime - started / CLOCK_TICKS


def _load(resolve: bool) -> dict[str, Any]:
    """Import the location's module and call ``defs()`` (then, with ``resolve``, resolve the
    repository as a code server does); wall and CPU from the interpreter's start to each, peak
    RSS, and what was loaded."""
    import importlib

    module = importlib.import_module(MODULE)
    found: dict[str, Any] = {"import_wall_s": _age_s(), "import_cpu_s": time.process_time()}
    defs = module.defs()
    found |= {"defs_wall_s": _age_s(), "defs_cpu_s": time.process_time()}
    found["defs_rss_mib"] = peak_rss_mib()
    if resolve:
        defs.get_repository_def()
        found |= {"resolved_wall_s": _age_s(), "resolved_cpu_s": time.process_time()}
        found["resolved_rss_mib"] = peak_rss_mib()
    found = {key: round(value, 3) for key, value in found.items()}
    return found | _counts(defs)


def _counts(defs: Any) -> dict[str, int]:
    """What the location holds, read off the definitions (no resolution needed)."""
    import dagster as dg

    assets = [a for a in defs.assets or [] if isinstance(a, dg.AssetsDefinition)]
    keys = {key for a in assets for key in a.keys}
    checks = sum(len(a.check_keys) for a in assets)
    checks += sum(len(c.check_keys) for c in defs.asset_checks or [])
    return {
        "routes": len({key.path[0] for key in keys}),
        "assets": len(keys),
        "checks": checks,
        "jobs": len(defs.jobs or []),
        "schedules": len(defs.schedules or []),
        "sensors": len(defs.sensors or []),
    }


def _phases(resolve: bool) -> dict[str, Any]:
    """The load's CPU step by step, as ``load_routes`` and the location's ``defs()`` do it:
    import, reading and validating the route files, the route-set check, building the routes,
    adding the shared definitions (and, with ``resolve``, resolving the repository)."""
    import importlib

    import dagster as dg

    from integration_project.components.order_route import OrderRoute, check_route_set
    from integration_project.location import with_shared

    cpu = [("python start and imports", time.process_time())]
    module = importlib.import_module(MODULE)
    tree = dg.ComponentTree.for_project(Path(module.__file__))
    routes = tree.get_all_components(of_type=OrderRoute)
    cpu.append(("read route files", time.process_time()))
    check_route_set(routes, sandbox=settings.sandbox_mode())
    cpu.append(("route-set check", time.process_time()))
    defs = tree.build_defs()
    cpu.append(("build routes", time.process_time()))
    defs = with_shared(defs)
    cpu.append(("add shared", time.process_time()))
    if resolve:
        defs.get_repository_def()
        cpu.append(("resolve repository", time.process_time()))
    steps = {cpu[0][0]: round(cpu[0][1], 3)}
    steps |= {name: round(now - cpu[i][1], 3) for i, (name, now) in enumerate(cpu[1:])}
    return {"cpu_s": steps, "routes": len(routes)}


def _evaluate(resolve: bool = True, repeat: int = EVALUATIONS) -> dict[str, Any]:
    """Every schedule and sensor of the location (the sampled routes and the location's own),
    each evaluated ``repeat`` times against the instance in ``DAGSTER_HOME``."""
    import importlib

    import dagster as dg

    defs = importlib.import_module(MODULE).defs()
    repository = defs.get_repository_def()  # as the code server holds it
    routes = sorted({key.path[0] for key in defs.resolve_all_asset_keys()})
    owner = {
        item.name: next((r for r in routes if item.name.startswith(f"{r}__")), "")
        for item in [*repository.schedule_defs, *repository.sensor_defs]
    }
    instance = dg.DagsterInstance.get()
    try:
        found = [
            {
                **evaluate_schedule(instance, schedule, repeat, repository_def=repository),
                "route": owner[schedule.name],
            }
            for schedule in repository.schedule_defs
        ]
        found += [
            {
                **evaluate_sensor(instance, sensor, repeat, repository_def=repository),
                "route": owner[sensor.name],
            }
            for sensor in repository.sensor_defs
        ]
    finally:
        instance.dispose()
    return {"routes": routes, "instigators": found}


# --- alone ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Run the scenario alone (it needs no sandbox process), or be one of its children."""
    parser = argparse.ArgumentParser(prog="python -m bench.scenarios.routes")
    parser.add_argument("--routes", type=int, default=DEFAULT_ROUTES, help="routes (%(default)s)")
    parser.add_argument("--resolve-max", type=int, default=RESOLVE_MAX,
                        help="largest location resolved and served (%(default)s)")  # fmt: skip
    parser.add_argument("--tmp", default=None, help="scratch folder (default: a new temp one)")
    parser.add_argument("--evaluations", type=int, default=EVALUATIONS,
                        help="evaluations of each schedule and sensor (%(default)s)")  # fmt: skip
    for mode in ("--load", "--phases", "--evaluate", "--resolve"):
        parser.add_argument(mode, action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.evaluate:  # a child of run()
        sys.stdout.write(json.dumps(_evaluate(args.resolve, args.evaluations)) + "\n")
        return 0
    for mode, work in (("load", _load), ("phases", _phases)):
        if getattr(args, mode):  # a child of run()
            sys.stdout.write(json.dumps(work(args.resolve)) + "\n")
            return 0
    from bench.figures import render

    os.environ[settings.SANDBOX_MODE_ENV] = "1"
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        ctx = Context(settings.SANDBOX_SHOP_URL, settings.SANDBOX_ERP_URL, Path(tmp),
                      {"routes": args.routes, "routes_resolve_max": args.resolve_max,
                       "evaluations": args.evaluations})  # fmt: skip
        try:
            figures, failed = run(ctx), ""
        except ScenarioFailed as exc:
            figures, failed = exc.figures, str(exc)
    sys.stdout.write(render(figures, goals(figures), {SCENARIO: REFERENCES}) + "\n")
    if failed:
        say(f"routes: FAILED: {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
