"""The benchmark: every scenario against one sandbox process, one table of figures and goals.

    python -m bench                                  # the defaults: under 10 min on 2 cores
    python -m bench --only backfill,transform --skip-dlt
    python -m bench --write BENCHMARKS.md            # also write the results file
    python3 dev.py bench [same options]              # installs first, then this

The issue's full sizes (1,000,000 orders over 30 days, a 10,000,000-row ledger; hours on 2
cores, most of it the naive loop and dlt):

    python -m bench --orders 1000000 --days 30 --transform-orders 1000000 \\
        --growth-rows 10000,1000000,10000000 --write BENCHMARKS.md

The sandbox (shop with ``--orders`` bulk orders spread over ``--days`` days, an ERP without
practical limits) runs in a process of its own (``bench/sandbox_process.py``); each scenario
(``bench/scenarios/``) gets a :class:`~bench.figures.Context` and starts its contenders in
processes of their own. A scenario whose module does not exist yet is skipped with a line
saying so; one that fails is reported and the exit code is 1, the others still run. Then ONE
table of every figure with ratios to each scenario's reference contenders, and a table of the
issue's goals (met / MISSED / not measured). Figures are wall-clock figures of a shared
machine: compare ratios within one run, not runs with each other.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import os
import platform
import shlex
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

from bench.figures import FALLBACK_GOALS, Context, Figure, Goal, ScenarioFailed, render, say
from bench.sandbox_process import SandboxProcess, bench_start
from integration_project.settings import SANDBOX_MODE_ENV

#: Every scenario, in the order they run (each a module of ``bench.scenarios``).
SCENARIOS = ("backfill", "transform", "growth", "pacing", "ticks", "routes")


def sizes(text: str) -> list[int]:
    """``10000,1000000`` (or ``10_000``) as a list of numbers."""
    try:
        return [int(part.replace("_", "")) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not comma-separated numbers: {text!r}") from None


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--orders", type=int, default=30_000, help="bulk orders in the sandbox (%(default)s)")
    add("--days", type=float, default=1, help="days the orders spread over (%(default)s)")
    add("--transform-orders", type=int, default=10_000, help="orders mapped (%(default)s)")
    add("--growth-rows", type=sizes, default=[10_000, 1_000_000],
        help="ledger sizes for growth (10000,1000000; 10000000 takes minutes)")  # fmt: skip
    add("--pacing-calls", type=int, default=300, help="ERP calls paced (%(default)s)")
    add("--pacing-window-s", type=float, default=12.0,
        help="seconds the ERP's minute is scaled to for pacing (%(default)s)")  # fmt: skip
    add("--tick-runs", type=int, default=2, help="runs of each kind timed (%(default)s)")
    add("--evaluations", type=int, default=None,
        help="timed evaluations of each schedule and sensor (ticks 20, routes 3)")  # fmt: skip
    add("--routes", type=int, default=1000,
        help="route files in the many-routes code location (%(default)s)")  # fmt: skip
    add("--only", type=lambda text: text.split(","), default=list(SCENARIOS),
        help=f"scenarios to run, comma-separated ({','.join(SCENARIOS)})")  # fmt: skip
    add("--skip-dlt", action="store_true", help="leave the dlt contender out (no venv made)")
    add("--write", metavar="FILE", help="also write the results as markdown (BENCHMARKS.md)")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.only) - set(SCENARIOS))
    if unknown:
        parser.error(f"unknown scenario {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    return args


@dataclass
class Outcome:
    """What the run gathered: figures, goals, the scenarios skipped or failed."""

    figures: list[Figure] = field(default_factory=list)
    goals: list[Goal] = field(default_factory=list)
    references: dict[str, tuple[str, ...]] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def load(name: str) -> ModuleType | None:
    """``bench.scenarios.<name>``, or None when that module does not exist (yet)."""
    module = f"bench.scenarios.{name}"
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name != module:
            raise  # the scenario exists but something it imports does not
        return None


def run_scenario(name: str, ctx: Context, outcome: Outcome) -> None:
    """One scenario: its figures and goals into ``outcome``; a failure is noted, not raised."""
    try:
        module = load(name)
    except Exception:  # the module exists but does not import: a failure, not a crash
        traceback.print_exc()
        say(f"{name}: FAILED to import (the traceback is above)")
        outcome.failed.append(name)
        return
    if module is None:
        say(f"{name}: skipped, bench/scenarios/{name}.py does not exist")
        outcome.skipped.append(name)
        return
    say(f"{name}: running")
    began = time.perf_counter()
    try:
        found = list(module.run(ctx))
    except Exception as exc:
        traceback.print_exc()
        found = list(exc.figures) if isinstance(exc, ScenarioFailed) else []
        say(f"{name}: FAILED after {time.perf_counter() - began:.0f} s (the traceback is above)")
        outcome.failed.append(name)
    else:
        say(f"{name}: done in {time.perf_counter() - began:.0f} s")
    outcome.figures += found
    outcome.references[name] = tuple(getattr(module, "REFERENCES", ()))
    scenario_goals = getattr(module, "goals", None) or FALLBACK_GOALS.get(name)
    if scenario_goals is not None:
        outcome.goals += scenario_goals(found)


def run_all(args: argparse.Namespace) -> Outcome:
    """The sandbox process, then each scenario asked for, in :data:`SCENARIOS` order."""
    outcome = Outcome()
    start = bench_start(args.days)
    say(f"sandbox: {args.orders:,} orders over {args.days:g} days from {start:%Y-%m-%d}")
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        sandbox = SandboxProcess(args.orders, start, args.days)
        with sandbox as ready:
            ctx = Context(ready["shop_url"], ready["erp_url"], Path(tmp), vars(args), ready)
            say(f"sandbox: ready after {ready['generate_s']} s, tally {ready['tally']}")
            for name in SCENARIOS:
                if name in args.only:
                    run_scenario(name, ctx, outcome)
    outcome.figures += [
        Figure("sandbox", "sandbox", f"generate {args.orders:,} orders", ready["generate_s"], "s"),
        Figure("sandbox", "sandbox", "peak RSS", sandbox.peak_rss_mib, "MiB"),
    ]
    return outcome


def machine() -> list[str]:
    """What the figures were measured on: CPU, cores, RAM, Python, duckdb, dagster, dlt."""
    cpu = "?"
    ram = "?"
    try:
        info = Path("/proc/cpuinfo").read_text()
        cpu = next(
            line.split(":", 1)[1].strip() for line in info.splitlines() if "model name" in line
        )
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        ram = f"{kib / 1024 / 1024:.1f} GiB"
    except (OSError, StopIteration, ValueError, IndexError):
        pass
    from bench.dlt_env import dlt_version

    versions = ", ".join(
        f"{name} {importlib.metadata.version(name)}" for name in ("duckdb", "dagster")
    )
    return [
        f"- CPU: {cpu}, {os.cpu_count()} cores; RAM {ram}",
        f"- Python {platform.python_version()} ({platform.system()}); {versions}; "
        f"dlt {dlt_version()} (bench/requirements-dlt.txt, its own venv)",
    ]


def write_results(path: Path, command: str, tables: str, when: datetime) -> None:
    """BENCHMARKS.md: how the figures were made (machine, date, command), then the tables."""
    lines = [
        "# Benchmarks",
        "",
        "Written by `python -m bench --write BENCHMARKS.md` (`python3 dev.py bench`); see",
        "`python -m bench --help` and the README's Benchmarks section. Wall-clock figures on a",
        "shared machine: compare the ratios within one run, not runs with each other.",
        "",
        f"- Date: {when:%Y-%m-%d %H:%M} UTC",
        *machine(),
        f"- Command: `{command}`",
        "- The issue's full sizes: `python -m bench --orders 1000000 --days 30 "
        "--transform-orders 1000000 --growth-rows 10000,1000000,10000000 --write "
        "BENCHMARKS.md` (hours on 2 cores)",
        "",
        tables,
        "",
    ]
    path.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    command = shlex.join(["python", "-m", "bench", *(sys.argv[1:] if argv is None else argv)])
    # Sandbox mode here and in every process started from here (they inherit it).
    os.environ[SANDBOX_MODE_ENV] = "1"
    os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
    outcome = run_all(args)
    text = render(outcome.figures, outcome.goals, outcome.references)
    sys.stdout.write(text + "\n")
    if args.write:
        write_results(Path(args.write), command, text, datetime.now(UTC))
        say(f"wrote {args.write}")
    for name in outcome.skipped:
        say(f"{name}: not run (no module yet)")
    if outcome.failed:
        say(f"FAILED: {', '.join(outcome.failed)}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
