"""Look-up tables (``mapping.lookups``): the shop's shipping method, payment method and sales
channel become the ERP sales order's ``ShippingMethod``, ``PaymentCondition`` and
``SalesChannel`` / ``WarehouseID``, through the real assets against the sandbox, on both
ledger backends. A value no table covers takes the route's default or quarantines the order,
and the run's metadata counts both; a dynamic table finds the ERP row by the shop's name once,
then reads the ledger's cache; the ERP refuses a code it does not know."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest

from integration_project.exact.models import PAYMENT_CONDITIONS, SHIPPING_METHODS, WAREHOUSES
from integration_project.resources import open_ledger
from integration_project.routes.config import RouteConfig
from integration_project.sandbox import Sandbox
from integration_project.sandbox.order_json import payment_method_json
from integration_project.sandbox.world import stable_id
from integration_project_testkit.ledger_reads import delivered_rows
from integration_project_testkit.routes import route_assets, shipped_route
from integration_project_testkit.windows import (
    WINDOW_END,
    WINDOW_START,
    deliver,
    fetch_and_map,
    metadata,
)

pytestmark = pytest.mark.integration

#: The sandbox shop's methods' technical names (world.SHIPPING_METHODS, PAYMENT_METHODS).
STANDARD, EXPRESS = "shipping_standard", "shipping_express"
INVOICE, PREPAYMENT, CASH = "payment_invoicepayment", "payment_prepayment", "payment_cashpayment"
STOREFRONT = stable_id("sales_channel", "storefront")


@pytest.fixture
def duckdb_path(ledger_location: str) -> str:
    """Every test here runs on both ledger backends."""
    return ledger_location


def _orders(sb: Sandbox, countries: list[str], payments: list[str]) -> list[dict[str, Any]]:
    """One order per country (DE ships "Standard", the rest of the EU "Express"), each paid
    with the payment method of the same place in ``payments``."""
    span = (WINDOW_END - WINDOW_START) / len(countries)
    orders = []
    for n, (country, payment) in enumerate(zip(countries, payments, strict=True)):
        order = sb.shop.add_order(
            WINDOW_START + span * n, shipping_country=country, billing_country=country
        )
        [transaction] = order["transactions"]
        transaction["paymentMethod"] = payment_method_json(payment)
        transaction["paymentMethodId"] = transaction["paymentMethod"]["id"]
        orders.append(order)
    return orders


def _row(sb: Sandbox, resource: str, code: str) -> dict[str, Any]:
    row = sb.erp.lookup_row(resource, "Code", code)
    assert row is not None
    return row


def _booked(sb: Sandbox) -> dict[str, dict[str, Any]]:
    return {o["YourRef"]: o for o in sb.erp.sales_orders}


def test_orders_reach_the_erp_with_the_codes_their_methods_map_to(sandbox, resources):
    route = route_assets(
        name="Lookup tables",
        mapping={
            "lookups": {
                "shipping_method": {"table": {STANDARD: "STD", EXPRESS: "EXP"}},
                "payment_method": {"table": {INVOICE: "RE", PREPAYMENT: "VK", CASH: "14"}},
                "sales_channel": {"table": {STOREFRONT: "2"}, "field": "WarehouseID"},
            }
        },
    )
    orders = _orders(sandbox, ["DE", "NL", "FR"], [INVOICE, PREPAYMENT, CASH])
    mapped = fetch_and_map(resources, assets=route)
    assert mapped.success
    shown = metadata(mapped, "erp_orders")
    assert shown["mapped"] == 3
    lookups = shown["lookups"]
    assert "| shipping_method | 3 | 0 | 0 |" in lookups
    assert "| payment_method | 3 | 0 | 0 |" in lookups
    assert "| sales_channel | 3 | 0 | 0 |" in lookups
    assert deliver(resources, assets=route).success

    booked = _booked(sandbox)
    standard, express = (_row(sandbox, SHIPPING_METHODS, c)["ID"] for c in ("STD", "EXP"))
    warehouse = _row(sandbox, WAREHOUSES, "2")["ID"]
    expected = {
        orders[0]["orderNumber"]: (standard, "RE"),
        orders[1]["orderNumber"]: (express, "VK"),
        orders[2]["orderNumber"]: (express, "14"),
    }
    assert {ref: (o["ShippingMethod"], o["PaymentCondition"]) for ref, o in booked.items()} == (
        expected
    )
    assert {o["WarehouseID"] for o in booked.values()} == {warehouse}
    # A shipping method's code became its ID once: asked of the ERP once per code.
    assert sandbox.erp.calls["shippingmethods_get"] == 2
    assert sandbox.erp.calls["paymentconditions_get"] == 0  # sent by code, as Exact takes it


def test_unmatched_values_take_the_route_default_or_quarantine_the_order(sandbox, resources):
    route = route_assets(
        name="Lookup defaults",
        mapping={
            "lookups": {
                # Only DE's method is in the table: the rest quarantine, naming field and value.
                "shipping_method": {"table": {STANDARD: "STD"}},
                # Only invoices: the rest get the default payment condition.
                "payment_method": {
                    "table": {INVOICE: "RE"},
                    "unmatched": "default",
                    "default": "14",
                },
                # No channel in the table and no default: the field is left to the ERP.
                "sales_channel": {"table": {"0" * 32: "WEB"}, "unmatched": "default"},
            }
        },
    )
    orders = _orders(sandbox, ["DE", "DE", "NL"], [INVOICE, CASH, INVOICE])
    mapped = fetch_and_map(resources, assets=route)
    assert mapped.success
    shown = metadata(mapped, "erp_orders")
    assert (shown["mapped"], shown["quarantined"]) == (2, 1)
    assert "| shipping_method | 2 | 0 | 1 |" in shown["lookups"]
    assert "| payment_method | 2 | 1 | 0 |" in shown["lookups"]
    assert "| sales_channel | 0 | 3 | 0 |" in shown["lookups"]
    preview = shown["quarantined_preview"]
    assert "deliveries[0].shippingMethod.technicalName 'shipping_express'" in preview
    assert "mapping.lookups.shipping_method" in preview
    assert deliver(resources, assets=route).success

    booked = _booked(sandbox)
    assert set(booked) == {orders[0]["orderNumber"], orders[1]["orderNumber"]}
    assert booked[orders[0]["orderNumber"]]["PaymentCondition"] == "RE"
    assert booked[orders[1]["orderNumber"]]["PaymentCondition"] == "14"
    assert all(o["SalesChannel"] is None for o in booked.values())


def test_a_dynamic_lookup_asks_the_erp_once_per_name_then_reads_the_cache(sandbox, resources):
    route = route_assets(
        name="Dynamic lookups",
        mapping={
            "lookups": {
                "shipping_method": {"dynamic": True},
                # "Nachnahme" has no payment condition described so in the ERP: the default.
                "payment_method": {"dynamic": True, "unmatched": "default", "default": "14"},
            }
        },
    )
    first = _orders(sandbox, ["DE", "NL", "AT"], [INVOICE, PREPAYMENT, CASH])
    assert fetch_and_map(resources, assets=route).success
    # One question per shop name: Standard, Express; Rechnung, Vorkasse, Nachnahme.
    assert sandbox.erp.calls["shippingmethods_get"] == 2
    assert sandbox.erp.calls["paymentconditions_get"] == 3

    # The next window, the same names: a new run, answered by the ledger's cache.
    later = sandbox.shop.add_order(WINDOW_END, shipping_country="FR", billing_country="FR")
    later["transactions"][0]["paymentMethod"] = payment_method_json(CASH)
    second = fetch_and_map(resources, assets=route, partition_key="2026-11-20-10:05")
    assert second.success
    shown = metadata(second, "erp_orders")
    assert shown["mapped"] == 1
    assert "| payment_method | 0 | 1 | 0 |" in shown["lookups"]
    assert sandbox.erp.calls["shippingmethods_get"] == 2
    assert sandbox.erp.calls["paymentconditions_get"] == 3

    assert deliver(resources, assets=route).success
    booked = _booked(sandbox)
    standard, express = (_row(sandbox, SHIPPING_METHODS, c)["ID"] for c in ("STD", "EXP"))
    assert [booked[o["orderNumber"]]["ShippingMethod"] for o in [*first, later]] == [
        standard,
        express,
        express,
        express,
    ]
    assert [booked[o["orderNumber"]]["PaymentCondition"] for o in [*first, later]] == [
        "RE",
        "VK",
        "14",
        "14",
    ]


def test_two_erp_rows_with_the_shop_name_quarantine_the_order_naming_them(sandbox, resources):
    sandbox.erp.add_lookup_row(PAYMENT_CONDITIONS, "R2", "Rechnung")
    route = route_assets(
        name="Ambiguous lookups", mapping={"lookups": {"payment_method": {"dynamic": True}}}
    )
    _orders(sandbox, ["DE", "NL"], [INVOICE, INVOICE])
    mapped = fetch_and_map(resources, assets=route)
    assert mapped.success
    shown = metadata(mapped, "erp_orders")
    assert shown["quarantined"] == 2
    assert "2 rows of cashflow/PaymentConditions" in shown["quarantined_preview"]
    assert "'RE', 'R2'" in shown["quarantined_preview"]
    assert sandbox.erp.calls["paymentconditions_get"] == 1  # asked once, not per order


def test_the_erp_refuses_a_payment_condition_it_does_not_know(sandbox, resources):
    route = route_assets(
        name="Unknown codes",
        mapping={
            "lookups": {
                "payment_method": {"table": {INVOICE: "XX", PREPAYMENT: "XX", CASH: "XX"}},
            }
        },
    )
    [order] = _orders(sandbox, ["DE"], [INVOICE])
    assert fetch_and_map(resources, assets=route).success
    assert deliver(resources, assets=route).success
    assert not sandbox.erp.sales_orders
    ledger = open_ledger(resources["duckdb"], route.route.id, resources["erp"].token_key)
    [row] = delivered_rows(ledger)
    assert row["status"] == "failed"
    assert "PaymentCondition: payment condition XX does not exist" in row["last_error"]
    assert row["order_number"] == order["orderNumber"]


def test_the_sandbox_erp_refuses_unknown_references_as_exact_does(sandbox, resources):
    """An ID that names no row of the list is refused with Exact's 400, every problem named."""
    from integration_project.exact.client import ValidationRejected
    from integration_project.resources import erp_client

    ledger = open_ledger(resources["duckdb"], "refusals", resources["erp"].token_key)
    with erp_client(resources["erp"], ledger) as client:
        account = client.find_account_id("o'brien@example.ie")
        item = client.find_item_id("SHIPPING")
        body = {
            "OrderedBy": account,
            "YourRef": "L-1",
            "ShippingMethod": "00000000-0000-0000-0000-000000000001",
            "PaymentCondition": "ZZ",
            "SalesOrderLines": [{"Item": item, "Quantity": 1}],
        }
        with pytest.raises(ValidationRejected) as refused:
            client.create_sales_order(body)
        body["ShippingMethod"] = _row(sandbox, SHIPPING_METHODS, "DHL")["ID"].upper()
        body["PaymentCondition"] = "re"  # codes compare without case
        assert client.create_sales_order(body).order_id
    assert "ShippingMethod: shipping method" in refused.value.erp_message
    assert "PaymentCondition: payment condition ZZ does not exist" in refused.value.erp_message


def test_a_lookup_option_the_schema_does_not_know_fails_naming_it():
    for bad, named in [
        ({"shipping_method": {"tabel": {STANDARD: "STD"}}}, "tabel"),
        ({"payment_method": {"dynamic": True, "by": "id"}}, "by: name"),
        ({"sales_channel": {"dynamic": True}}, "sales channel by id"),
        ({"shipping_method": {"table": {}, "default": "STD"}}, "unmatched: default"),
        ({"carrier": {"table": {"x": "y"}}}, "carrier"),
    ]:
        with pytest.raises(pydantic.ValidationError) as raised:
            shipped_route(mapping={"lookups": bad})
        assert named in str(raised.value)
    assert isinstance(shipped_route(mapping={"lookups": {}}), RouteConfig)


def test_only_a_route_with_method_lookups_loads_the_methods(sandbox, resources):
    """The shipping and payment methods make every order's answer about a quarter bigger: a
    route asks the shop for them only when its look-ups read them."""
    import json

    sandbox.shop.add_orders(2, start=WINDOW_START, end=WINDOW_END, shipping_country="DE")
    plain = route_assets(name="No lookups")
    with_lookups = route_assets(
        name="With lookups",
        mapping={"lookups": {"payment_method": {"dynamic": True, "unmatched": "default"}}},
    )
    for assets, loaded in ((plain, False), (with_lookups, True)):
        assert fetch_and_map(resources, assets=assets).success
        ledger = open_ledger(resources["duckdb"], assets.route.id)
        with ledger.db.connect() as con:
            payloads = con.execute(
                "SELECT payload::VARCHAR FROM staged_orders WHERE route_id = ?",
                [assets.route.id],
            ).fetchall()
        orders = [json.loads(text) for (text,) in payloads]
        assert len(orders) == 2
        for order in orders:
            assert (order["transactions"] is not None) is loaded, assets.route.id
            assert (order["deliveries"][0]["shippingMethod"] is not None) is loaded
