"""Exactly once under fire: the default route's real schedules, tick by tick, over two thousand
orders, with faults on both systems and the delivery process killed (SIGKILL) mid-run.

Runnable alone with ``pytest -m chaos -s`` (the figure line is printed and recorded in the test
report). The fetch runs in this process; every delivery run is a process of its own
(:mod:`integration_project_testkit.delivery_runner`) so that it can be killed at a random point.
This process then plays Dagster's run monitoring: it reports the killed run as failed.

It runs on both ledger backends: full size on DuckDB, a third of the windows on PostgreSQL
(the same faults and kills per tick, fewer ticks), which keeps the suite within its time.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from integration_project.ledger import Ledger
from integration_project.resources import open_ledger
from integration_project.sandbox import FaultPlan, Sandbox
from integration_project_testkit import delivery_runner, invoices
from integration_project_testkit.ledger_reads import delivered_rows
from integration_project_testkit.resources import make_resources
from integration_project_testkit.routes import shipped_route

pytestmark = [pytest.mark.chaos, pytest.mark.integration, pytest.mark.timeout(900)]

SEED = 20261120
ROUTE_ID = shipped_route().id
T0 = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
#: Faults at realistic rates (per eligible request), on the shop and on the ERP.
RATES = {"500": 0.05, "503": 0.05, "429": 0.05, "lost_after_commit": 0.03, "slow": 0.02}
SHOP_RATES = {"500": 0.05, "503": 0.05, "429": 0.05, "slow": 0.02}
READ_TIMEOUT_S = 0.5
SLOW_S = 1.0  # beyond the read timeout
BACKOFF_S = 0.05
#: The shipped route re-reads an hour per tick; two windows keep this test's ticks short and
#: still cover two failed fetches in a row (a failed mapping is caught up whatever its age).
LOOKBACK = "10m"


@dataclass(frozen=True)
class Size:
    #: 5-minute windows of orders, and how many orders a minute they hold.
    windows: int
    orders_per_minute: float
    #: Delivery processes killed during the windows, and at least this many in all.
    kills: int
    min_kills: int
    #: What the run must at least have seen for its figures to mean something.
    min_orders: int
    min_faults: int

    @property
    def max_ticks(self) -> int:
        return self.windows + 14

    @property
    def end(self) -> datetime:
        return T0 + timedelta(minutes=5 * self.windows)


#: Full size on DuckDB: over 2,000 orders in eight windows of ~260 (every tick is a Dagster run
#: or two, so fewer, fuller windows cost less than more, emptier ones for the same orders,
#: faults and kills). A third of the orders on PostgreSQL.
SIZES = {"duckdb": Size(8, 52.0, 6, 5, 2000, 100), "postgres": Size(4, 34.5, 3, 3, 650, 30)}


def _ticks(start: datetime, n: int) -> Iterator[datetime]:
    for i in range(1, n + 1):
        yield start + timedelta(minutes=5 * i)


@pytest.fixture
def duckdb_path(ledger_location: str) -> str:
    return ledger_location


@pytest.fixture
def size(ledger_location: str) -> Size:
    return SIZES["postgres" if "://" in ledger_location else "duckdb"]


@pytest.fixture
def chaos_sandbox(size: Size) -> Iterator[Sandbox]:
    with Sandbox(seed=SEED) as sb:
        sb.shop.add_history(
            timedelta(minutes=5 * size.windows), size.orders_per_minute, until=size.end
        )
        # Pacing is tested on its own (test_rate_budget.py): here the budget is wide and the
        # minute window short, so that an injected 429's announced reset is a blink away.
        sb.erp.set_rate_limit(per_minute=100_000, per_day=10_000_000, minute_window_s=0.1)
        sb.erp.faults = FaultPlan(RATES, seed=SEED, slow_seconds=SLOW_S, lost_mode="drop")
        sb.shop.faults = FaultPlan(SHOP_RATES, seed=SEED + 1, slow_seconds=SLOW_S)
        yield sb


@pytest.fixture
def dagster_home(tmp_path: Path) -> Iterator[Path]:
    yield delivery_runner.prepare_home(tmp_path / "dagster_home")


def _erp_orders_rows(ledger: Ledger) -> dict[str, tuple[str, str | None]]:
    with ledger.db.connect() as con:
        rows = con.execute(
            "SELECT order_number, status, reason FROM erp_orders WHERE route_id = ?", [ROUTE_ID]
        ).fetchall()
    return {r[0]: (r[1], r[2]) for r in rows}


def test_every_valid_eu_order_reaches_the_erp_exactly_once_under_fire(
    chaos_sandbox: Sandbox, duckdb_path: str, size: Size, dagster_home: Path, record_property
) -> None:
    sb = chaos_sandbox
    rng = random.Random(SEED)
    # Retries as in production, with short back-offs: the sandbox answers in milliseconds.
    resources = make_resources(
        sb,
        duckdb_path,
        shop={"max_retries": 4, "read_timeout_s": READ_TIMEOUT_S, "backoff_factor": BACKOFF_S},
        erp={"max_retries": 3, "read_timeout_s": READ_TIMEOUT_S, "backoff_factor": BACKOFF_S},
    )
    ledger = open_ledger(resources["duckdb"], ROUTE_ID, resources["erp"].token_key)
    spec = {**delivery_runner.resource_spec(resources), "route": {"lookback": LOOKBACK}}
    defs = delivery_runner.build_defs(spec)
    source_schedule = defs.resolve_schedule_def(f"{ROUTE_ID}__source_orders_schedule")
    delivery_schedule = defs.resolve_schedule_def(f"{ROUTE_ID}__erp_delivery_schedule")
    truth = list(sb.shop.truth.values())
    expected = {t.order_number for t in truth if t.expected_in_erp}
    assert len(truth) >= size.min_orders

    kill_ticks = set(rng.sample(range(size.windows), size.kills))
    runners: list[delivery_runner.Runner] = []
    kills = fetch_failures = delivery_runs = 0
    instance = dg.DagsterInstance.local_temp(tempdir=str(dagster_home))
    warm = delivery_runner.WarmRunners(dagster_home)

    def delivered() -> set[str]:
        return {o["YourRef"] for o in sb.erp.sales_orders}

    def deliver(at: datetime, kill_after_posts: int | None) -> None:
        nonlocal kills, delivery_runs
        context = dg.build_schedule_context(instance=instance, scheduled_execution_time=at)
        requests = delivery_schedule.evaluate_tick(context).run_requests or []
        for request in requests:
            delivery_runs += 1
            posts_before = sb.erp.calls["salesorders_post"]
            runner = delivery_runner.start(spec, dagster_home, tags=dict(request.tags), warm=warm)
            runners.append(runner)
            if kill_after_posts is None:
                runner.wait()
                continue
            # A random point: after k sales-order POSTs reached the ERP (or at a random time).
            deadline = time.monotonic() + 60
            while (
                runner.process.poll() is None
                and sb.erp.calls["salesorders_post"] - posts_before < kill_after_posts
                and time.monotonic() < deadline
            ):
                time.sleep(0.005)
            runner.kill()
            kills += runner.killed
            # What run monitoring does for a run whose worker died.
            run = instance.get_run_by_id(runner.run_id)
            if run is not None and not run.is_finished:
                instance.report_run_failed(run)

    started = time.monotonic()
    try:
        for tick, at in enumerate(_ticks(T0, size.max_ticks)):
            if tick == size.windows + 2:
                # Keep faults on for most of it, then let the route settle.
                sb.erp.faults.clear()
                sb.shop.faults.clear()
            context = dg.build_schedule_context(
                instance=instance,
                scheduled_execution_time=at,
                repository_def=defs.get_repository_def(),
            )
            for request in source_schedule.evaluate_tick(context).run_requests or []:
                job = defs.resolve_job_def(source_schedule.job_name)
                result = job.execute_in_process(
                    partition_key=request.partition_key,
                    tags=dict(request.tags),
                    instance=instance,
                    raise_on_error=False,
                )
                fetch_failures += not result.success
            kill = tick in kill_ticks or (tick >= size.windows and kills < size.min_kills)
            # Killed after 1 to 60 of the ~120 POSTs a tick's run makes (or when it is done).
            deliver(at, rng.randint(1, 60) if kill else None)
            if kill:
                deliver(at + timedelta(minutes=1), None)  # the next minute's tick
            pending = ledger.deliveries.count_pending()
            print(  # noqa: T201
                f"chaos tick {tick}: fetch_failures={fetch_failures} delivered="
                f"{len(delivered() & expected)}/{len(expected)} pending={pending} kills={kills}"
                f" at={time.monotonic() - started:.0f}s",
                flush=True,
            )
            done = expected <= delivered() and pending == 0
            if tick >= size.windows + 2 and done and kills >= size.min_kills:
                break
    finally:
        warm.stop()
        for runner in runners:
            runner.stop()
        instance.dispose()

    refs = Counter(o["YourRef"] for o in sb.erp.sales_orders)
    duplicates = sb.erp.duplicate_refs()
    lost = expected - set(refs)
    mapping = _erp_orders_rows(ledger)
    non_eu = {t.order_number for t in truth if not t.eu}
    malformed_eu = {t.order_number for t in truth if t.eu and t.malformed}
    quarantined = {n for n, (status, reason) in mapping.items() if status == "quarantined"}
    faults = sum(sb.erp.faults.injected.values()) + sum(sb.shop.faults.injected.values())
    invoiced, unpaid = invoices.invoice_mismatches(sb.erp, invoices.by_ref(sb.shop.orders.values()))
    backend = "postgres" if "://" in duckdb_path else "duckdb"
    line = (
        f"chaos ({backend}): orders={len(truth)} eu_valid={len(expected)}"
        f" delivered={len(set(refs) & expected)}"
        f" duplicates={len(duplicates)} lost={len(lost)} non_eu_sent={len(non_eu & set(refs))}"
        f" quarantined={len(quarantined)} faults={faults} kills={kills}"
        f" delivery_runs={delivery_runs} fetch_failures={fetch_failures}"
        f" invoiced_as_paid={invoiced - len(unpaid)}/{invoiced}"
    )
    print(line)  # noqa: T201
    record_property("chaos", line)

    assert kills >= size.min_kills, line
    assert faults > size.min_faults, line
    assert not duplicates, line
    assert not lost, f"{line}; lost e.g. {sorted(lost)[:5]}"
    assert set(refs) == expected, line
    # Money adds up: every order in the ERP is invoiced at what its customer paid.
    assert invoiced == len(set(refs)) and not unpaid, "\n".join([line, *unpaid[:10]])
    # Every malformed order that passes the filter is quarantined with a reason a person can use.
    assert malformed_eu, "the generator made no malformed EU orders"
    for number in malformed_eu:
        status, reason = mapping[number]
        assert status == "quarantined" and reason, (number, status, reason)
    # And nothing well-formed is quarantined (a malformed non-EU order may be: validation
    # can refuse it before the filter sees its country).
    malformed = {t.order_number for t in truth if t.malformed}
    assert malformed_eu <= quarantined <= malformed, sorted(quarantined - malformed)[:5]
    # The ledger matches the ERP one to one.
    rows = delivered_rows(ledger)
    assert {r["status"] for r in rows} == {"delivered"}
    by_ref = {o["YourRef"]: o["OrderID"] for o in sb.erp.sales_orders}
    assert {r["order_number"]: r["erp_order_id"] for r in rows} == by_ref
    assert ledger.deliveries.count_pending() == 0
