"""No order booked to the wrong place: the ledger is bound to one shop and one ERP division,
the recovery step checks that the order it finds under a ``YourRef`` is this order, a
``YourRef`` another route already used on the division is never sent, and an order whose
e-mail several ERP accounts share is quarantined instead of booked to the first of them.

All against the sandbox over real HTTP and a real DuckDB file; assertions are on what reached
the ERP, what the ledger says and what the UI shows (metadata, asset checks)."""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any

import dagster as dg
import pytest

from integration_project.checks import CONFLICT_CHECK, build_route_checks
from integration_project.exact.models import ACCOUNT_CODE_WIDTH
from integration_project.ledger import PendingOrder
from integration_project.resources import ErpResource, erp_client, open_ledger
from integration_project.sandbox import Sandbox
from integration_project_testkit.ledger_reads import delivered_rows
from integration_project_testkit.resources import make_resources
from integration_project_testkit.routes import default_assets, route_assets
from integration_project_testkit.windows import (
    WINDOW_END,
    WINDOW_START,
    deliver,
    failure_message,
    fetch_and_map,
    metadata,
)

DEFAULT = default_assets()

pytestmark = pytest.mark.integration


def _window(sb: Sandbox, n: int = 4) -> list[dict[str, Any]]:
    return sb.shop.add_orders(n, start=WINDOW_START, end=WINDOW_END, countries="eu")


def _erp_rows(ledger) -> dict[str, dict[str, Any]]:
    return {row["order_number"]: row for row in delivered_rows(ledger)}


def _claim_without_sending(ledger, erp: ErpResource, order_number: str) -> PendingOrder:
    """What a delivery run killed right after its claim leaves behind: a ``sending`` row."""
    ledger.endpoints.bind_erp(erp.api_url, erp.division)
    [order] = [o for o in ledger.deliveries.pending() if o.order_number == order_number]
    ledger.deliveries.record_outcomes([], "killed-run", claim=[order])  # step 1, as a run does
    return order


def _post(resources: dict[str, Any], ledger, body: dict[str, Any]) -> None:
    """Put an order into the ERP through our client (sharing the route's token chain)."""
    with erp_client(resources["erp"], ledger) as client:
        client.create_sales_order(body)


# --- the ledger knows which shop and ERP its rows belong to ----------------------------------


def test_a_ledger_that_delivered_to_one_division_refuses_another_naming_both(
    sandbox, resources, ledger
):
    _window(sandbox)
    assert fetch_and_map(resources).success
    assert deliver(resources).success
    sent = len(sandbox.erp.sales_orders)
    assert sent > 0
    rows = delivered_rows(ledger)
    assert {(r["erp_host"], r["erp_division"]) for r in rows} == {
        (sandbox.erp_url.split("//")[1], resources["erp"].division)
    }
    assert ledger.endpoints.bound()["erp_division"] == resources["erp"].division

    other = make_resources(sandbox, resources["duckdb"].database)
    erp = resources["erp"]
    other["erp"] = ErpResource(
        api_url=erp.api_url,
        division="7654321",
        client_id=erp.client_id,
        client_secret=erp.client_secret,
        refresh_token=erp.refresh_token,
    )
    result = deliver(other, raise_on_error=False)
    assert not result.success
    message = failure_message(result)
    assert "division 1234567" in message and "division 7654321" in message
    assert "Refusing to deliver" in message
    assert len(sandbox.erp.sales_orders) == sent  # nothing reached either division


def test_a_ledger_filled_from_one_shop_refuses_to_stage_another(sandbox, resources, ledger):
    _window(sandbox)
    assert fetch_and_map(resources).success
    with Sandbox(seed=8) as elsewhere:
        other = make_resources(elsewhere, resources["duckdb"].database)
        other_host = elsewhere.shop_url.split("//")[1]
        result = fetch_and_map(other, raise_on_error=False)
        assert not elsewhere.shop.state()["calls"].get("search")  # refused before asking
    assert not result.success
    message = failure_message(result)
    shop_host = sandbox.shop_url.split("//")[1]
    assert shop_host in message and other_host in message
    assert ledger.endpoints.bound()["shop_host"] == shop_host


# --- recovery checks that the order it finds is this order -----------------------------------


def _conflict_check(resources: dict[str, Any]) -> dg.AssetCheckEvaluation:
    checks = [c for c in build_route_checks(DEFAULT) if CONFLICT_CHECK in str(c.check_keys)]
    result = dg.materialize(
        [DEFAULT.erp_delivered_orders, *checks],
        resources=resources,
        selection=dg.AssetSelection.checks(*checks),
        raise_on_error=False,
    )
    [evaluation] = result.get_asset_check_evaluations()
    return evaluation


def test_recovery_records_an_identical_order_it_finds_as_delivered(sandbox, resources, ledger):
    _window(sandbox, 2)
    assert fetch_and_map(resources).success
    first = min(ledger.deliveries.pending(), key=lambda o: o.order_number)
    _claim_without_sending(ledger, resources["erp"], first.order_number)
    _post(resources, ledger, first.payload)  # the POST did reach the ERP before the kill

    result = deliver(resources)
    shown = metadata(result, "erp_delivered_orders")
    assert (shown["found_in_erp"], shown["conflicts"], shown["sent"]) == (1, 0, 1)
    assert _erp_rows(ledger)[first.order_number]["status"] == "delivered"
    assert len(sandbox.erp.orders_with_ref(first.your_ref)) == 1
    assert len(sandbox.erp.sales_orders) == 2  # the found one and the other order, once each


@pytest.mark.parametrize("difference", ["another account", "other lines"])
def test_recovery_marks_a_different_order_under_the_your_ref_as_a_conflict(
    sandbox, resources, ledger, difference
):
    _window(sandbox, 3)
    assert fetch_and_map(resources).success
    victim = min(ledger.deliveries.pending(), key=lambda o: o.order_number)
    _claim_without_sending(ledger, resources["erp"], victim.order_number)
    foreign = dict(victim.payload)
    if difference == "another account":
        account = sandbox.erp.add_account("Somebody Else", "else@example.org")
        foreign["OrderedBy"] = account["ID"]
    else:
        foreign["SalesOrderLines"] = [
            {**line, "Quantity": line["Quantity"] + 1} for line in victim.payload["SalesOrderLines"]
        ]
    _post(resources, ledger, foreign)  # a person (or another system) booked this YourRef

    result = deliver(resources)
    assert result.success
    shown = metadata(result, "erp_delivered_orders")
    assert shown["conflicts"] == 1 and shown["found_in_erp"] == 0
    assert shown["ledger_conflict"] == 1
    row = _erp_rows(ledger)[victim.order_number]
    assert row["status"] == "conflict"
    assert difference in row["last_error"] and victim.your_ref in row["last_error"]
    # Never resent, never counted: the ERP holds only the foreign order, the rest went through.
    assert len(sandbox.erp.orders_with_ref(victim.your_ref)) == 1
    assert shown["ledger_delivered"] == 2 == shown["dagster/row_count"]
    again = deliver(resources)
    assert metadata(again, "erp_delivered_orders")["sent"] == 0
    assert len(sandbox.erp.orders_with_ref(victim.your_ref)) == 1

    evaluation = _conflict_check(resources)
    assert not evaluation.passed
    assert evaluation.severity == dg.AssetCheckSeverity.ERROR
    assert evaluation.metadata["conflicts"].value == 1
    spec = next(
        s for c in build_route_checks(DEFAULT) for s in c.check_specs if s.name == CONFLICT_CHECK
    )
    assert spec.blocking


def test_the_conflict_check_passes_when_no_order_is_in_conflict(sandbox, resources):
    _window(sandbox, 2)
    assert fetch_and_map(resources).success
    assert deliver(resources).success
    evaluation = _conflict_check(resources)
    assert evaluation.passed and evaluation.metadata["conflicts"].value == 0


# --- YourRef is unique per ERP division, across routes ---------------------------------------


def test_a_your_ref_another_route_used_on_the_division_is_never_sent(sandbox, resources):
    """Two routes reading the same shop numbering with the same template (the load-time check
    refuses such route files; this is the ledger's own guard behind it)."""
    _window(sandbox, 3)
    assert fetch_and_map(resources).success
    assert deliver(resources).success
    before = list(sandbox.erp.sales_orders)
    assert len(before) == 3

    twin = route_assets(name="Twin route same numbering")
    twin_resources = {**resources}
    assert fetch_and_map(twin_resources, assets=twin).success
    result = dg.materialize([twin.erp_delivered_orders], resources=twin_resources)
    shown = metadata(result, "erp_delivered_orders")
    assert shown["sent"] == 0 and shown["conflicts"] == 3
    assert sandbox.erp.duplicate_refs() == {}
    assert len(sandbox.erp.sales_orders) == 3
    twin_ledger = open_ledger(resources["duckdb"], twin.route.id, resources["erp"].token_key)
    reasons = [r["last_error"] for r in delivered_rows(twin_ledger)]
    assert all(DEFAULT.route.id in reason for reason in reasons)
    assert {r["status"] for r in delivered_rows(twin_ledger)} == {"conflict"}


# --- the customer's account --------------------------------------------------------------------


def test_an_e_mail_several_erp_accounts_share_is_quarantined_naming_them(sandbox, resources):
    orders = _window(sandbox, 4)
    shared = next(o for o in orders if "@" in (o["orderCustomer"].get("email") or ""))
    email = shared["orderCustomer"]["email"]
    shared_accounts = [
        sandbox.erp.add_account("Anna Example GmbH", email, code="4711"),
        sandbox.erp.add_account("Anna Example (private)", email.upper(), code="4712"),
    ]

    mapped = fetch_and_map(resources)
    assert mapped.success
    ledger = open_ledger(resources["duckdb"], DEFAULT.route.id, resources["erp"].token_key)
    rows = {r.order_number: r for r in ledger.deliveries.pending()}
    # Exactly the shared address's order is held back; the rest of the window went through.
    assert set(rows) == {o["orderNumber"] for o in orders} - {shared["orderNumber"]}
    shown = metadata(mapped, "erp_orders")
    assert (shown["quarantined"], shown["mapped"]) == (1, len(orders) - 1)
    preview = shown["quarantined_preview"]
    assert "4711" in preview and "4712" in preview and "ERP accounts have" in preview
    assert email not in preview
    assert deliver(resources).success
    assert {o["YourRef"] for o in sandbox.erp.sales_orders} == set(rows)
    assert all(
        o["OrderedBy"] not in {a["ID"] for a in shared_accounts} for o in sandbox.erp.sales_orders
    )


def test_accounts_found_by_customer_number_are_created_with_it_as_their_code(sandbox, resources):
    route = route_assets(
        name="By customer number",
        mapping={"account_match": "customer_number"},
    )
    orders = sandbox.shop.add_orders(3, start=WINDOW_START, end=WINDOW_END, countries="eu")
    numbers = {o["orderCustomer"]["customerNumber"] for o in orders}
    # One customer the bookkeeper already entered by hand, under its customer number.
    known = sorted(numbers)[0]
    by_hand = sandbox.erp.add_account("Entered by hand", "other-address@example.org", code=known)

    assert fetch_and_map(resources, assets=route).success
    assert dg.materialize([route.erp_delivered_orders], resources=resources).success
    booked = {o["YourRef"]: o["OrderedBy"] for o in sandbox.erp.sales_orders}
    by_number = {o["orderNumber"]: o["orderCustomer"]["customerNumber"] for o in orders}
    assert booked.keys() == by_number.keys()  # every order booked, none left out
    for ref, account_id in booked.items():
        account = sandbox.erp.accounts[account_id]
        assert account["Code"] == by_number[ref].rjust(ACCOUNT_CODE_WIDTH)
    [known_order] = [n for n, number in by_number.items() if number == known]
    assert booked[known_order] == by_hand["ID"]  # found by its code, not created twice
    codes = [a["Code"] for a in sandbox.erp.accounts.values()]
    assert len(codes) == len(set(codes))


def test_windows_after_the_first_reuse_the_cached_account_by_customer_number(sandbox, resources):
    route = route_assets(name="By customer number", mapping={"account_match": "customer_number"})
    [order] = sandbox.shop.add_orders(1, start=WINDOW_START, end=WINDOW_END, countries="eu")
    # The same customer orders again in the next window.
    again = copy.deepcopy(order)
    again.update(id="f" * 32, orderNumber="99001")
    del again["autoIncrement"]  # the shop numbers it when it stores it
    for field in ("createdAt", "orderDateTime"):
        again[field] = (WINDOW_END + timedelta(seconds=10)).strftime("%Y-%m-%dT%H:%M:%S.000+00:00")
    sandbox.shop.add_raw_order(again)
    assert fetch_and_map(resources, assets=route).success
    created = len(sandbox.erp.accounts)
    second = fetch_and_map(resources, assets=route, partition_key="2026-11-20-10:05")
    shown = metadata(second, "erp_orders")
    assert shown["mapped"] == 1 and shown["erp_accounts_created"] == 0
    # Found in the ledger's cache: not looked up in the ERP again, let alone created.
    assert shown["erp_lookups"] == 0
    assert len(sandbox.erp.accounts) == created


def test_the_sandbox_erp_keeps_account_codes_right_aligned_as_exact_does(sandbox, resources):
    account = sandbox.erp.add_account("Hand Made", "hand@example.org")
    assert len(account["Code"]) == ACCOUNT_CODE_WIDTH and account["Code"].strip().isdigit()
    ledger = open_ledger(resources["duckdb"], DEFAULT.route.id, resources["erp"].token_key)
    with erp_client(resources["erp"], ledger) as client:
        [found] = client.find_accounts_by_code(account["Code"].strip())
        assert found.ID == account["ID"]
        assert client.find_accounts("HAND@example.org")[0].ID == account["ID"]


@pytest.mark.parametrize("order_number_format", ["digits", "any"])
def test_an_order_number_with_letters_is_quarantined_when_the_route_promises_digits(
    sandbox, resources, order_number_format
):
    """The load-time YourRef check tells routes apart on the promise that order numbers are
    digits; an order that breaks it must not reach the ERP under a YourRef another route may
    produce."""
    route = route_assets(
        source={"resource_key": "shop", "order_number_format": order_number_format}
    )
    [order] = _window(sandbox, 1)
    lettered = copy.deepcopy(order)
    lettered.update(id="e" * 32, orderNumber="B2B-10001")
    sandbox.shop.add_raw_order(lettered)

    mapped = fetch_and_map(resources, assets=route)
    ledger = open_ledger(resources["duckdb"], route.route.id, resources["erp"].token_key)
    waiting = {o.order_number for o in ledger.deliveries.pending()}
    shown = metadata(mapped, "erp_orders")
    if order_number_format == "digits":
        assert waiting == {order["orderNumber"]}
        assert "B2B-10001" in shown["quarantined_preview"]
        assert "not all digits" in shown["quarantined_preview"]
    else:
        assert waiting == {order["orderNumber"], "B2B-10001"}
        assert shown["quarantined"] == 0
