"""Re-sending failed orders: ``<route>__resend_failed_job`` with ``resend_failed`` (order
numbers) or ``resend_all_failed`` in the delivery asset's config.

The ERP refuses an order (4xx) whose customer account it does not hold; the row becomes
``failed`` and is not re-sent on its own. An operator fixes the cause in the ERP (the account is
back) and launches the resend job: the named orders go back to ``pending`` and are sent once.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any

import dagster as dg
import pytest

from integration_project.sandbox import Sandbox
from integration_project.schedules import build_route_schedules
from integration_project_testkit.ledger_reads import delivered_rows
from integration_project_testkit.routes import default_assets
from integration_project_testkit.windows import WINDOW_KEY, WINDOW_START

DEFAULT = default_assets()

pytestmark = pytest.mark.integration


@pytest.fixture
def duckdb_path(ledger_location: str) -> str:
    """Every test here runs on both ledger backends."""
    return ledger_location


ROUTE_ID = DEFAULT.route.id
RESEND_JOB = f"{ROUTE_ID}__resend_failed_job"
DELIVERY_OP = f"{ROUTE_ID}__erp_delivered_orders"


def route_defs(resources: dict[str, Any]) -> dg.Definitions:
    schedules = build_route_schedules(DEFAULT)
    return dg.Definitions(
        assets=DEFAULT.all, jobs=schedules.jobs, schedules=schedules.schedules, resources=resources
    )


def run_job(
    defs: dg.Definitions, name: str, instance: dg.DagsterInstance, **config: Any
) -> dict[str, Any]:
    """Run a route job in process; the delivery asset's metadata."""
    run_config = {"ops": {DELIVERY_OP: {"config": config}}} if config else None
    result = defs.resolve_job_def(name).execute_in_process(run_config=run_config, instance=instance)
    assert result.success
    # The delivery job also writes ERP numbers back to the shop (the route's write-back).
    [event] = [
        e
        for e in result.get_asset_materialization_events()
        if e.asset_key.path[-1] == "erp_delivered_orders"
    ]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def erp_refs(sb: Sandbox) -> Counter[str]:
    return Counter(order["YourRef"] for order in sb.erp.sales_orders)


@pytest.fixture
def refused(sandbox: Sandbox, resources: dict[str, Any], dagster_instance):  # type: ignore[no-untyped-def]
    """Three orders the ERP refuses (their customer accounts vanished from the ERP after
    mapping) and one it takes. Returns (the three orders, the removed accounts)."""
    sandbox.shop.add_order(WINDOW_START)
    bad = [
        sandbox.shop.add_order(
            WINDOW_START + timedelta(minutes=1 + i), email=f"resend-{i}@example.eu"
        )
        for i in range(3)
    ]
    mapped = dg.materialize(
        [DEFAULT.source_orders, DEFAULT.erp_orders],
        partition_key=WINDOW_KEY,
        resources=resources,
        instance=dagster_instance,
    )
    assert mapped.success
    emails = {o["orderCustomer"]["email"] for o in bad}
    removed = {k: a for k, a in sandbox.erp.accounts.items() if a["Email"] in emails}
    assert len(removed) == 3
    for key in removed:
        del sandbox.erp.accounts[key]
    return bad, removed


def test_failed_orders_are_resent_only_when_asked(
    sandbox, resources, ledger, dagster_instance, refused
):
    bad, removed = refused
    numbers = [o["orderNumber"] for o in bad]
    defs = route_defs(resources)
    delivery_job = f"{ROUTE_ID}__erp_delivery_job"

    first = run_job(defs, delivery_job, dagster_instance)
    assert (first["sent"], first["failed"], first["requeued"]) == (1, 3, 0)
    failed = {r["order_number"]: r for r in delivered_rows(ledger) if r["status"] == "failed"}
    assert set(failed) == set(numbers)
    assert all("does not exist" in r["last_error"] for r in failed.values())

    # The cause is fixed in the ERP; the normal delivery still leaves failed orders alone.
    sandbox.erp.accounts.update(removed)
    again = run_job(defs, delivery_job, dagster_instance)
    assert (again["sent"], again["failed"], again["requeued"]) == (0, 0, 0)

    # The resend job with one order number: that order is sent once, the others stay failed.
    one = run_job(defs, RESEND_JOB, dagster_instance, resend_failed=[numbers[0]])
    assert (one["requeued"], one["sent"], one["failed"]) == (1, 1, 0)
    rows = {r["order_number"]: r for r in delivered_rows(ledger)}
    assert rows[numbers[0]]["status"] == "delivered"
    assert rows[numbers[0]]["attempts"] == 2
    assert [rows[n]["status"] for n in numbers[1:]] == ["failed", "failed"]
    assert [rows[n]["attempts"] for n in numbers[1:]] == [1, 1]
    assert erp_refs(sandbox)[numbers[0]] == 1
    assert not {numbers[1], numbers[2]} & set(erp_refs(sandbox))

    # Naming a delivered order, or one the ledger does not know, requeues nothing.
    none = run_job(defs, RESEND_JOB, dagster_instance, resend_failed=[numbers[0], "no-such"])
    assert (none["requeued"], none["sent"]) == (0, 0)

    # A dry run previews; it requeues nothing.
    dry = run_job(defs, RESEND_JOB, dagster_instance, resend_all_failed=True, dry_run=True)
    assert dry["would_send"] == 0
    assert ledger.views.delivery_counts()["failed"] == 2

    # "All" requeues every failed order of the route; each reaches the ERP exactly once.
    everything = run_job(defs, RESEND_JOB, dagster_instance, resend_all_failed=True)
    assert (everything["requeued"], everything["sent"], everything["failed"]) == (2, 2, 0)
    assert ledger.views.delivery_counts() == {"delivered": 4}
    refs = erp_refs(sandbox)
    assert all(refs[n] == 1 for n in numbers)
    assert len(refs) == 4 and set(refs.values()) == {1}


def test_a_resent_order_the_erp_still_refuses_fails_again(
    sandbox, resources, ledger, dagster_instance, refused
):
    bad, _removed = refused  # the accounts stay missing: the cause is not fixed
    defs = route_defs(resources)
    run_job(defs, f"{ROUTE_ID}__erp_delivery_job", dagster_instance)
    retry = run_job(defs, RESEND_JOB, dagster_instance, resend_failed=[bad[1]["orderNumber"]])
    assert (retry["requeued"], retry["sent"], retry["failed"]) == (1, 0, 1)
    row = next(r for r in delivered_rows(ledger) if r["order_number"] == bad[1]["orderNumber"])
    assert (row["status"], row["attempts"]) == ("failed", 2)
    assert "does not exist" in row["last_error"]
    assert not erp_refs(sandbox).keys() & {o["orderNumber"] for o in bad}


def test_the_resend_job_selects_delivery_and_shares_its_tag(resources):
    job = route_defs(resources).resolve_job_def(RESEND_JOB)
    assert job.tags["integration_project/delivery"] == ROUTE_ID
    assert "resend_failed" in (job.description or "")
    [key] = job.asset_layer.executable_asset_keys
    assert key == DEFAULT.erp_delivered_orders.key
