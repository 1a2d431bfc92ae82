"""The route's asset checks, in process against the sandbox and a temp DuckDB: each passes on a
healthy route and fails on data made bad on purpose (rows written straight into the ledger only
to simulate corruption), with the severity and metadata an operator sees."""

from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
import pytest

from integration_project import checks as route_checks
from integration_project.checks import (
    COUNTRY_CHECK,
    FAILED_CHECK,
    RECONCILE_CHECK,
    STUCK_CHECK,
    YOUR_REF_CHECK,
    build_route_checks,
)
from integration_project.ledger import MappingRow, Outcome
from integration_project_testkit.ledger_reads import delivered_rows
from integration_project_testkit.routes import default_assets
from integration_project_testkit.windows import WINDOW_END, WINDOW_KEY, WINDOW_START

DEFAULT = default_assets()

pytestmark = pytest.mark.integration

CHECKS = {next(iter(c.check_keys)).name: c for c in build_route_checks(DEFAULT)}
MAPPING_CHECKS = [CHECKS[COUNTRY_CHECK], CHECKS[YOUR_REF_CHECK]]
DELIVERY_CHECKS = [CHECKS[STUCK_CHECK], CHECKS[FAILED_CHECK], CHECKS[RECONCILE_CHECK]]
#: Far outside the test window and its look-back: re-mapping the window never touches it.
OLD = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)


def evaluations(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def meta(evaluation: dg.AssetCheckEvaluation) -> dict[str, Any]:
    return {k: v.value for k, v in evaluation.metadata.items()}


def fetch_and_map(resources: dict[str, Any], **kwargs: Any) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [DEFAULT.source_orders, DEFAULT.erp_orders, *MAPPING_CHECKS],
        partition_key=WINDOW_KEY,
        resources=resources,
        **kwargs,
    )


def deliver(resources: dict[str, Any]) -> dg.ExecuteInProcessResult:
    return dg.materialize([DEFAULT.erp_delivered_orders, *DELIVERY_CHECKS], resources=resources)


def run_checks(
    resources: dict[str, Any], *names: str, instance: dg.DagsterInstance | None = None
) -> dict[str, dg.AssetCheckEvaluation]:
    """Only the named checks (the assets are not materialised), as "Execute checks" does."""
    selected = [CHECKS[name] for name in names]
    result = dg.materialize(
        [*DEFAULT.all, *selected],
        selection=dg.AssetSelection.checks(*selected),
        resources=resources,
        instance=instance,
    )
    return evaluations(result)


def bad_row(shop_id: str, number: str, *, country: str = "DE", your_ref: str | None = None):
    """A mapped row as a broken mapping would have written it."""
    payload = {"YourRef": your_ref or number, "OrderedBy": "x", "SalesOrderLines": []}
    return MappingRow(shop_id, number, OLD, "mapped", country, None, payload)


def test_every_check_passes_on_a_healthy_route(sandbox, resources, ledger):
    sandbox.shop.add_orders(4, start=WINDOW_START, end=WINDOW_END, shipping_country="DE")
    sandbox.shop.add_order(WINDOW_START + timedelta(seconds=20), shipping_country="US")

    mapped = evaluations(fetch_and_map(resources))
    assert mapped.keys() == {COUNTRY_CHECK, YOUR_REF_CHECK}
    assert all(e.passed for e in mapped.values())
    assert meta(mapped[COUNTRY_CHECK])["mapped"] == 4  # the US order was dropped, not mapped
    assert meta(mapped[COUNTRY_CHECK])["outside_allowed"] == 0
    assert mapped[COUNTRY_CHECK].blocking

    result = deliver(resources)
    delivered = evaluations(result)
    assert delivered.keys() == {STUCK_CHECK, FAILED_CHECK, RECONCILE_CHECK}
    assert all(e.passed for e in delivered.values()), delivered
    reconcile = meta(delivered[RECONCILE_CHECK])
    assert (reconcile["sampled"], reconcile["missing_in_erp"]) == (4, 0)
    assert reconcile["stopped_early"] == "no"
    assert meta(delivered[FAILED_CHECK])["failed"] == 0

    [event] = result.get_asset_materialization_events()
    latency = event.materialization.metadata["latency_seconds_max"].value
    # The longest wait from mapping to the ERP among this run's orders, as the ledger has it.
    with resources["duckdb"].get_connection() as con:
        waits = con.execute(
            "SELECT epoch(d.delivered_at) - epoch(e.mapped_at) FROM delivered_orders d "
            "JOIN erp_orders e USING (route_id, shop_order_id) WHERE d.status = 'delivered'"
        ).fetchall()
    assert len(waits) == 4
    assert latency == round(max(w for (w,) in waits), 3) > 0


def test_a_mapped_order_outside_the_allowed_countries_blocks_delivery(sandbox, resources, ledger):
    sandbox.shop.add_orders(2, start=WINDOW_START, end=WINDOW_END, shipping_country="NL")
    ledger.mapped.record([bad_row("bad-us", "90001", country="US")], "broken-mapping")

    result = dg.materialize(
        [*DEFAULT.all, *MAPPING_CHECKS, *DELIVERY_CHECKS],
        partition_key=WINDOW_KEY,
        resources=resources,
        raise_on_error=False,
    )
    assert not result.success
    country = evaluations(result)[COUNTRY_CHECK]
    assert not country.passed and country.severity == dg.AssetCheckSeverity.ERROR
    info = meta(country)
    assert info["outside_allowed"] == 1
    assert info["offending_orders"] == [{"order_number": "90001", "country": "US"}]
    # Blocking: the delivery asset downstream did not run, so nothing reached the ERP.
    keys = {e.asset_key.path[-1] for e in result.get_asset_materialization_events()}
    assert "erp_delivered_orders" not in keys
    assert not sandbox.erp.sales_orders


def test_a_separate_delivery_run_holds_back_an_order_outside_the_allowed_countries(
    sandbox, resources, ledger
):
    """The blocking check stops the run it belongs to; the minute schedule's delivery runs are
    separate runs, so delivery itself must never send an order mapped outside the set."""
    sandbox.shop.add_orders(2, start=WINDOW_START, end=WINDOW_END, shipping_country="NL")
    fetch_and_map(resources)
    ledger.mapped.record([bad_row("bad-us", "90001", country="US")], "broken-mapping")

    result = deliver(resources)
    [event] = result.get_asset_materialization_events()
    info = {k: v.value for k, v in event.materialization.metadata.items()}
    assert (info["sent"], info["held_back_outside_countries"], info["pending_left"]) == (2, 1, 0)
    assert sorted(o["YourRef"] for o in sandbox.erp.sales_orders) == sorted(
        r["your_ref"] for r in delivered_rows(ledger)
    )
    assert "90001" not in {o["YourRef"] for o in sandbox.erp.sales_orders}
    assert not ledger.deliveries.pending(countries=DEFAULT.route.rules().allowed_countries)


def test_a_your_ref_used_twice_fails(resources, ledger):
    ledger.mapped.record(
        [
            bad_row("dup-a", "90010", your_ref="DUP-1"),
            bad_row("dup-b", "90011", your_ref="DUP-1"),
            bad_row("ok-c", "90012"),
        ],
        "broken-mapping",
    )
    result = run_checks(resources, YOUR_REF_CHECK, COUNTRY_CHECK)
    assert result[COUNTRY_CHECK].passed
    duplicate = result[YOUR_REF_CHECK]
    assert not duplicate.passed and duplicate.severity == dg.AssetCheckSeverity.ERROR
    assert meta(duplicate)["duplicated_your_refs"] == 1
    assert meta(duplicate)["duplicates"] == [{"your_ref": "DUP-1", "orders": 2}]


def test_an_order_stuck_in_sending_fails(resources, ledger):
    ledger.mapped.record([bad_row("s-old", "90020"), bad_row("s-new", "90021")], "run-1")
    old, new = ledger.deliveries.pending()
    ledger.deliveries.record_outcomes([], "dead-run", claim=[old])
    # Claimed just now: a run is sending it, not stuck.
    ledger.deliveries.record_outcomes([], "live-run", claim=[new])
    with resources["duckdb"].get_connection() as con:  # simulate: claimed 11 minutes ago
        con.execute(
            "UPDATE delivered_orders SET claimed_at = ? WHERE shop_order_id = 's-old'",
            [datetime.now(UTC) - route_checks.STUCK_SENDING_AFTER - timedelta(minutes=1)],
        )
    stuck = run_checks(resources, STUCK_CHECK)[STUCK_CHECK]
    assert not stuck.passed and stuck.severity == dg.AssetCheckSeverity.ERROR
    info = meta(stuck)
    assert info["stuck_sending"] == 1
    assert [row["order_number"] for row in info["stuck_orders"]] == ["90020"]
    assert info["threshold_minutes"] == 10


def test_failed_orders_are_a_warning_naming_them(resources, ledger):
    ledger.mapped.record([bad_row("f-1", "90030")], "run-1")
    [order] = ledger.deliveries.pending()
    refused = Outcome(order.shop_order_id, "failed", "Currency: 'XAU' is not a known currency")
    ledger.deliveries.record_outcomes([], "run-2", claim=[order])
    ledger.deliveries.record_outcomes([refused], "run-2", claim=[])
    failed = run_checks(resources, FAILED_CHECK)[FAILED_CHECK]
    assert not failed.passed and failed.severity == dg.AssetCheckSeverity.WARN
    assert meta(failed)["failed"] == 1
    assert meta(failed)["failed_orders"] == [
        {"order_number": "90030", "erp_message": "Currency: 'XAU' is not a known currency"}
    ]


def test_reconciliation_fails_when_the_erp_lost_a_delivered_order(
    sandbox, resources, ledger, monkeypatch
):
    sandbox.shop.add_orders(3, start=WINDOW_START, end=WINDOW_END, shipping_country="FR")
    assert fetch_and_map(resources).success
    assert deliver(resources).success  # its checks sampled the ERP: all there
    lost = sandbox.erp.sales_orders.pop(1)  # deleted in the ERP behind the ledger's back
    monkeypatch.setattr(route_checks, "RECONCILE_EVERY", timedelta(0))  # the next sample is due

    reconcile = run_checks(resources, RECONCILE_CHECK)[RECONCILE_CHECK]
    assert not reconcile.passed and reconcile.severity == dg.AssetCheckSeverity.ERROR
    info = meta(reconcile)
    assert (info["sampled"], info["missing_in_erp"]) == (3, 1)
    assert info["missing_orders"] == [lost["YourRef"]]


def test_reconciliation_samples_at_most_every_interval_and_keeps_a_failure_visible(
    sandbox, resources, ledger, monkeypatch
):
    sandbox.shop.add_orders(2, start=WINDOW_START, end=WINDOW_END, shipping_country="AT")
    assert fetch_and_map(resources).success
    # The delivery run's checks sample the ERP; the ledger keeps that sample (check_samples),
    # so a later run, in any process or Dagster instance, carries it forward until it is due.
    first = evaluations(deliver(resources))[RECONCILE_CHECK]
    assert first.passed and "carried_forward" not in first.metadata
    assert meta(first)["sampled"] == 2
    sandbox.erp.sales_orders.pop()
    asked = sandbox.erp.calls["salesorders_get"]
    instance = dg.DagsterInstance.ephemeral()  # another instance: the sample is the ledger's

    again = run_checks(resources, RECONCILE_CHECK, instance=instance)[RECONCILE_CHECK]
    assert again.passed and meta(again)["carried_forward"] is True  # not due: no ERP call
    assert sandbox.erp.calls["salesorders_get"] == asked

    monkeypatch.setattr(route_checks, "RECONCILE_EVERY", timedelta(0))  # now due
    due = run_checks(resources, RECONCILE_CHECK, instance=instance)[RECONCILE_CHECK]
    assert not due.passed and meta(due)["missing_in_erp"] == 1
    monkeypatch.setattr(route_checks, "RECONCILE_EVERY", timedelta(minutes=30))
    kept = run_checks(resources, RECONCILE_CHECK, instance=instance)[RECONCILE_CHECK]
    assert not kept.passed and meta(kept)["carried_forward"] is True  # the failure stays


def test_reconciliation_stops_when_the_erp_budget_runs_low(sandbox, resources, ledger, monkeypatch):
    sandbox.shop.add_orders(5, start=WINDOW_START, end=WINDOW_END, shipping_country="BE")
    assert fetch_and_map(resources).success
    assert deliver(resources).success
    monkeypatch.setattr(route_checks, "RECONCILE_EVERY", timedelta(0))  # the next sample is due
    sandbox.erp.set_rate_limit(per_minute=route_checks.RECONCILE_RESERVE_MINUTE + 1)
    asked = sandbox.erp.calls["salesorders_get"]

    reconcile = run_checks(resources, RECONCILE_CHECK)[RECONCILE_CHECK]
    info = meta(reconcile)
    assert reconcile.passed
    assert info["sampled"] == 2 and info["sample_size"] == 5
    assert "minute budget" in info["stopped_early"]
    assert sandbox.erp.calls["salesorders_get"] - asked == 2


def test_a_reconciliation_with_nothing_delivered_is_not_carried_forward(sandbox, resources):
    """Comparing nothing is no sample: the first delivery is looked up at once, not after
    half an hour of a green check that never looked."""
    empty = run_checks(resources, RECONCILE_CHECK)[RECONCILE_CHECK]
    assert meta(empty)["sample_size"] == 0
    sandbox.shop.add_orders(2, start=WINDOW_START, end=WINDOW_END, shipping_country="NL")
    assert fetch_and_map(resources).success
    sampled = evaluations(deliver(resources))[RECONCILE_CHECK]
    assert "carried_forward" not in sampled.metadata
    assert (meta(sampled)["sampled"], meta(sampled)["sample_size"]) == (2, 2)


def test_check_metadata_masks_e_mail_addresses_in_the_erps_messages(resources, ledger):
    ledger.mapped.record([bad_row("f-2", "90031")], "run-1")
    [order] = ledger.deliveries.pending()
    refused = Outcome(order.shop_order_id, "failed", "Email: 'anna.berg@example.org' is not valid")
    ledger.deliveries.record_outcomes([], "run-2", claim=[order])
    ledger.deliveries.record_outcomes([refused], "run-2", claim=[])
    failed = run_checks(resources, FAILED_CHECK)[FAILED_CHECK]
    [shown] = meta(failed)["failed_orders"]
    # Masked, still telling which address; the rest of the ERP's message as it was.
    assert shown["erp_message"] == "Email: 'a***@example.org' is not valid"
