"""The ERP order number written back to each delivered Shopware order, once, through the real
assets against the sandbox over HTTP (``integration_project/writeback.py``)."""

from __future__ import annotations

from typing import Any

import dagster as dg
import pytest
from pydantic import ValidationError

from integration_project.assets import RouteAssets
from integration_project.routes.config import RouteConfig
from integration_project.sandbox import Sandbox
from integration_project.writeback import build_writeback_asset, tag_id
from integration_project_testkit.resources import make_resources, resources_ledger
from integration_project_testkit.routes import route_assets
from integration_project_testkit.windows import (
    WINDOW_END,
    WINDOW_START,
    deliver,
    fetch_and_map,
    metadata,
)

ON = {"enabled": True, "pause_s": 0}


def _write_back(resources: dict[str, Any], assets: RouteAssets) -> dict[str, Any]:
    """The route's own write-back asset (built with its other assets when enabled)."""
    asset = assets.shop_order_writeback
    assert asset is not None
    result = dg.materialize([asset], resources=resources)
    assert result.success
    return metadata(result, "shop_order_writeback")


def _delivered(sandbox: Sandbox, resources: dict[str, Any], assets: RouteAssets, n: int) -> dict:
    orders = sandbox.shop.add_orders(n, start=WINDOW_START, end=WINDOW_END, shipping_country="DE")
    assert fetch_and_map(resources, assets=assets).success
    assert deliver(resources, assets=assets).success
    numbers = {
        o["YourRef"]: o["OrderNumber"] for o in sandbox.erp.sales_orders
    }  # YourRef = the shop's order number
    return {o["id"]: numbers[o["orderNumber"]] for o in orders}


def test_every_delivered_order_gets_its_erp_number_once(
    sandbox: Sandbox, ledger_location: str
) -> None:
    resources = make_resources(sandbox, ledger_location)
    assets = route_assets(writeback=ON)
    expected = _delivered(sandbox, resources, assets, 4)

    first = _write_back(resources, assets)
    assert (first["acknowledged"], first["refused"], first["pending_left"]) == (4, 0, 0)
    for order_id, number in expected.items():
        assert sandbox.shop.orders[order_id]["customFields"] == {"erp_order_number": number}
        assert sandbox.shop.writes.count(order_id) == 1

    with resources["shop"].get_client() as client:  # a later search shows them
        page = client.search_orders_page(start=WINDOW_START, end=WINDOW_END, page=1, limit=10)
    assert {o["id"]: o["customFields"]["erp_order_number"] for o in page.orders} == expected

    second = _write_back(resources, assets)  # nothing left: no second PATCH
    assert (second["acknowledged"], second["pending_left"]) == (0, 0)
    assert sandbox.shop.calls["order_write"] == 4


def test_tags_are_assigned_once_under_a_fixed_id(sandbox: Sandbox, duckdb_path: str) -> None:
    resources = make_resources(sandbox, duckdb_path)
    assets = route_assets(writeback={**ON, "mode": "tag"})
    expected = _delivered(sandbox, resources, assets, 2)
    assert _write_back(resources, assets)["acknowledged"] == 2
    for order_id, number in expected.items():
        name = f"ERP {number}"
        assert sandbox.shop.orders[order_id]["tags"] == [{"id": tag_id(name), "name": name}]
    # A write repeated (its answer lost, say) assigns the same tag, never a second one.
    order_id, number = next(iter(expected.items()))
    name = f"ERP {number}"
    with resources["shop"].get_client() as client:
        client.update_order(order_id, {"tags": [{"id": tag_id(name), "name": name}]})
    assert sandbox.shop.orders[order_id]["tags"] == [{"id": tag_id(name), "name": name}]


def test_runs_are_paced_by_max_per_run(sandbox: Sandbox, duckdb_path: str) -> None:
    resources = make_resources(sandbox, duckdb_path)
    assets = route_assets(writeback={**ON, "max_per_run": 2})
    _delivered(sandbox, resources, assets, 3)
    first = _write_back(resources, assets)
    assert (first["acknowledged"], first["pending_left"]) == (2, 1)
    assert _write_back(resources, assets)["acknowledged"] == 1
    assert sandbox.shop.calls["order_write"] == 3


def test_shop_down_loses_nothing_and_the_next_run_does_it(
    sandbox: Sandbox, duckdb_path: str
) -> None:
    resources = make_resources(sandbox, duckdb_path)
    assets = route_assets(writeback=ON)
    expected = _delivered(sandbox, resources, assets, 3)
    sandbox.shop.faults.add("503", path_contains="/api/order/", method="PATCH", times=1)

    down = _write_back(resources, assets)
    assert (down["acknowledged"], down["refused"], down["pending_left"]) == (0, 0, 3)
    assert "503" in down["stopped_early"]

    again = _write_back(resources, assets)
    assert (again["acknowledged"], again["pending_left"]) == (3, 0)
    assert all(sandbox.shop.writes.count(order_id) == 1 for order_id in expected)


def test_a_refusal_is_recorded_with_the_shops_words_and_retried(
    sandbox: Sandbox, duckdb_path: str
) -> None:
    resources = make_resources(sandbox, duckdb_path)
    assets = route_assets(writeback=ON)
    _delivered(sandbox, resources, assets, 2)
    sandbox.shop.writes.refuse("Custom field erp_order_number is locked.")

    refused = _write_back(resources, assets)
    assert (refused["acknowledged"], refused["refused"], refused["pending_left"]) == (0, 2, 2)
    assert "Custom field erp_order_number is locked." in refused["refused_preview"]
    ledger = resources_ledger(resources, assets.route.id)
    [(_, attempts, words), _] = ledger.acknowledgements.refusals()
    assert attempts == 1 and "400" in words and "locked" in words
    assert resources["shop"].client_secret not in words

    sandbox.shop.writes.refuse(None)
    retried = _write_back(resources, assets)
    assert (retried["acknowledged"], retried["refused"], retried["pending_left"]) == (2, 0, 0)
    assert ledger.acknowledgements.refusals() == []


def test_switched_off_writes_nothing(sandbox: Sandbox, duckdb_path: str) -> None:
    resources = make_resources(sandbox, duckdb_path)
    assets = route_assets(writeback={"enabled": False})
    # Off: the route has no write-back asset, so its delivery job writes nothing back.
    assert assets.shop_order_writeback is None
    assert [a.key.path[-1] for a in assets.all][-1] == "erp_delivered_orders"
    _delivered(sandbox, resources, assets, 2)
    assert sandbox.shop.calls["order_write"] == 0
    # The plain code, asked anyway, says it is off and does nothing.
    off = dg.materialize(
        [build_writeback_asset(assets.route, assets.erp_delivered_orders)], resources=resources
    )
    assert metadata(off, "shop_order_writeback")["enabled"] is False
    assert sandbox.shop.calls["order_write"] == 0


def test_an_unknown_order_is_refused_as_shopware_refuses_it(sandbox: Sandbox) -> None:
    client = make_resources(sandbox, "unused.duckdb")["shop"].get_client()
    with client, pytest.raises(Exception, match=r"400.*UpdateCommand"):
        client.update_order("0" * 32, {"customFields": {"erp_order_number": 1}})


CSV_COLUMNS = {
    "order_number": "Order",
    "created_at": "Ordered at",
    "customer_email": "E-mail",
    "shipping_country": "Country",
    "product_number": "SKU",
    "quantity": "Qty",
    "unit_price": "Unit price",
    "tax_rate": "VAT %",
}


@pytest.mark.parametrize("source", [{"type": "spryker"}, {"type": "csv", "columns": CSV_COLUMNS}])
def test_write_back_is_refused_at_load_for_other_sources(source: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match=r"writeback\.enabled"):
        RouteConfig.model_validate({"name": "x", "source": source, "writeback": ON})
