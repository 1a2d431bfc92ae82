"""Runs that bypass the run queue (the CLI, ``dg launch``) at the same moment: two delivery
processes never send one order twice, and a fetch process and a delivery process that both
write the ledger both succeed. Every test runs on both ledger backends (a DuckDB file, where
the file lock keeps processes apart, and PostgreSQL, where advisory locks do)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import dagster as dg
import pytest

from integration_project.resources import open_ledger
from integration_project.sandbox import Sandbox
from integration_project_testkit import delivery_runner
from integration_project_testkit.ledger_reads import delivered_rows
from integration_project_testkit.resources import make_resources
from integration_project_testkit.routes import default_assets
from integration_project_testkit.windows import WINDOW_END, WINDOW_KEY, WINDOW_START

DEFAULT = default_assets()

pytestmark = pytest.mark.integration


@pytest.fixture
def duckdb_path(ledger_location: str) -> str:
    return ledger_location


ORDERS = 150


@pytest.fixture
def busy_sandbox() -> Iterator[Sandbox]:
    with Sandbox(seed=11) as sb:
        sb.erp.set_rate_limit(per_minute=100_000, per_day=1_000_000)
        yield sb


@pytest.fixture
def dagster_home(tmp_path: Path) -> Path:
    return delivery_runner.prepare_home(tmp_path / "dagster_home")


def _map_window(resources: dict[str, object], key: str = WINDOW_KEY) -> None:
    result = dg.materialize(
        [DEFAULT.source_orders, DEFAULT.erp_orders], partition_key=key, resources=resources
    )
    assert result.success


def _mapped_orders(sb: Sandbox, duckdb_path: str, n: int) -> dict[str, object]:
    """``n`` orders in the test window, fetched and mapped; the resources they were mapped with."""
    sb.shop.add_orders(n, start=WINDOW_START, end=WINDOW_END)
    resources = make_resources(sb, duckdb_path)
    _map_window(resources)
    return resources


def _run_all(runners: list[delivery_runner.Runner]) -> list[dict[str, object]]:
    try:
        return [runner.wait(timeout=240) for runner in runners]
    finally:
        for runner in runners:
            runner.stop()


def test_two_delivery_processes_started_together_never_send_an_order_twice(
    busy_sandbox: Sandbox, duckdb_path: str, dagster_home: Path
) -> None:
    sb = busy_sandbox
    resources = _mapped_orders(sb, duckdb_path, ORDERS)
    spec = delivery_runner.resource_spec(resources)

    outputs = _run_all([delivery_runner.start(spec, dagster_home) for _ in range(2)])

    assert all(out.get("success") for out in outputs), outputs
    assert sb.erp.duplicate_refs() == {}
    sent = [int(out["metadata"].get("sent", 0)) for out in outputs]
    # Nothing twice, and the two runs together sent everything (one may have sent it all, or
    # the second found the lease free after the first finished and had nothing left).
    assert sum(sent) == len(sb.erp.sales_orders) == ORDERS
    ledger = open_ledger(resources["duckdb"], DEFAULT.route.id)
    assert ledger.views.delivery_counts() == {"delivered": ORDERS}


def test_two_delivery_processes_with_lost_answers_still_send_nothing_twice(
    busy_sandbox: Sandbox, duckdb_path: str, dagster_home: Path
) -> None:
    """Rows left in `sending` are looked up by one run only: the other cannot resend them."""
    sb = busy_sandbox
    resources = _mapped_orders(sb, duckdb_path, 60)
    sb.erp.faults.add("lost_after_commit", path_contains="SalesOrders", method="POST", times=2)
    spec = delivery_runner.resource_spec(resources)
    [lossy] = _run_all([delivery_runner.start(spec, dagster_home)])
    assert lossy.get("success"), lossy
    ledger = open_ledger(resources["duckdb"], DEFAULT.route.id)
    assert int(lossy["metadata"]["unknown_outcome"]) == 2
    assert ledger.views.delivery_counts() == {"delivered": 58, "sending": 2}
    assert len(sb.erp.sales_orders) == 60  # the ERP did store the two lost ones

    outputs = _run_all([delivery_runner.start(spec, dagster_home) for _ in range(2)])

    assert all(out.get("success") for out in outputs), outputs
    assert sb.erp.duplicate_refs() == {}
    assert len(sb.erp.sales_orders) == 60
    # The two were found by their YourRef, between the two runs, not sent again.
    assert sum(int(out["metadata"].get("found_in_erp", 0)) for out in outputs) == 2
    assert sum(int(out["metadata"].get("sent", 0)) for out in outputs) == 0
    assert ledger.views.delivery_counts() == {"delivered": 60}
    erp_ids = {o["YourRef"]: o["OrderID"] for o in sb.erp.sales_orders}
    assert {r["order_number"]: r["erp_order_id"] for r in delivered_rows(ledger)} == erp_ids


def test_fetch_and_delivery_processes_write_duckdb_at_the_same_time(
    busy_sandbox: Sandbox, duckdb_path: str, dagster_home: Path
) -> None:
    sb = busy_sandbox
    resources = _mapped_orders(sb, duckdb_path, ORDERS)
    # The next window's orders, fetched while the first window's are delivered.
    later = WINDOW_END + timedelta(minutes=5)
    sb.shop.add_orders(ORDERS, start=WINDOW_END, end=later)
    spec = delivery_runner.resource_spec(resources)
    next_key = WINDOW_END.strftime("%Y-%m-%d-%H:%M")

    delivery, fetch = _run_all(
        [
            delivery_runner.start(spec, dagster_home),
            delivery_runner.start(spec, dagster_home, job="source", partition_key=next_key),
        ]
    )

    assert delivery.get("success"), delivery
    assert fetch.get("success"), fetch
    ledger = open_ledger(resources["duckdb"], DEFAULT.route.id)
    assert ledger.staging.count(WINDOW_END, later) == ORDERS  # staged in full
    # The delivery sent the first window in full (and whatever of the next one the fetch had
    # mapped by then); what it reports, what reached the ERP and what the ledger holds agree.
    sent = int(delivery["metadata"]["sent"])
    first_window = {t.order_number for t in sb.shop.truth_between(WINDOW_START, WINDOW_END)}
    assert len(first_window) == ORDERS
    assert first_window <= {o["YourRef"] for o in sb.erp.sales_orders}
    assert len(sb.erp.sales_orders) == sent
    assert ledger.views.delivery_counts() == {"delivered": sent}
    assert sb.erp.duplicate_refs() == {}
    # The fetch process's mapping was kept too: the next delivery sends the rest, once each.
    rest = dg.materialize([DEFAULT.erp_delivered_orders], resources=resources)
    assert _sent(rest) == 2 * ORDERS - sent
    assert len(sb.erp.sales_orders) == 2 * ORDERS
    assert sb.erp.duplicate_refs() == {}
    assert ledger.views.delivery_counts() == {"delivered": 2 * ORDERS}


# --- the delivery lease after a crash ---------------------------------------------------------

LEASE = f"erp_delivery:{DEFAULT.route.id}"


def _deliver_in_process(resources: dict[str, object], instance: dg.DagsterInstance):
    return dg.materialize([DEFAULT.erp_delivered_orders], resources=resources, instance=instance)


def _sent(result: dg.ExecuteInProcessResult) -> object:
    [event] = result.get_asset_materialization_events()
    return event.materialization.metadata["sent"].value


def test_a_lease_held_by_a_run_that_is_over_is_taken_over(
    sandbox: Sandbox, resources, ledger, dagster_instance: dg.DagsterInstance
) -> None:
    """A SIGKILLed run keeps its lease until it lapses; once run monitoring marks the run
    failed, the next run takes it over instead of waiting minutes."""
    sandbox.shop.add_orders(3, start=WINDOW_START, end=WINDOW_END)
    _map_window(resources)
    job = dg.define_asset_job("killed_delivery", selection=[DEFAULT.erp_delivered_orders])
    defs = dg.Definitions(assets=DEFAULT.all, jobs=[job], resources=resources)
    dead = dagster_instance.create_run_for_job(
        defs.resolve_job_def("killed_delivery"), status=dg.DagsterRunStatus.FAILURE
    )
    try:
        assert ledger.lease.acquire(LEASE, dead.run_id, timedelta(minutes=3)) is None
        result = _deliver_in_process(resources, dagster_instance)
        assert _sent(result) == 3
    finally:
        dagster_instance.delete_run(dead.run_id)


def test_a_lease_held_by_a_run_this_instance_does_not_know_is_respected(
    sandbox: Sandbox, resources, ledger, dagster_instance: dg.DagsterInstance
) -> None:
    sandbox.shop.add_orders(3, start=WINDOW_START, end=WINDOW_END)
    _map_window(resources)
    assert ledger.lease.acquire(LEASE, "run-of-another-instance", timedelta(minutes=3)) is None
    result = _deliver_in_process(resources, dagster_instance)
    assert _sent(result) == 0
    assert not sandbox.erp.sales_orders
    # Taking over is only ever from the named holder.
    assert ledger.lease.acquire(LEASE, "me", timedelta(minutes=3), take_over_from="other") == (
        "run-of-another-instance"
    )
    assert (
        ledger.lease.acquire(
            LEASE, "me", timedelta(minutes=3), take_over_from="run-of-another-instance"
        )
        is None
    )
