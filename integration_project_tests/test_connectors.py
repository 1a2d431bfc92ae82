"""The connector seams (``integration_project/connectors/base.py``) hold what the route needs:

* a Spryker route (``source: {type: spryker}``) runs through the real assets against the
  sandbox's Spryker backend and ERP over real HTTP: every EU order reaches the ERP once,
  invoiced at what its customer paid, the others are skipped;
* mapping and delivery use nothing of the ERP client beyond :class:`OrderTarget`: run with a
  client that hides everything else, the route still delivers every order exactly once, so a
  new target that implements the protocol is enough.
"""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from functools import partial
from typing import Any

import pytest

from integration_project import settings
from integration_project.assets import build_route_assets
from integration_project.connectors.base import OrderTarget
from integration_project.delivery import DeliveryRequest, DeliveryRun, RouteDelivery
from integration_project.fetching import Window, fetch_window
from integration_project.ledger import Ledger
from integration_project.mapping import RouteMapping, map_window
from integration_project.resources import SprykerResource, erp_client, open_ledger
from integration_project.routes.config import RouteConfig
from integration_project.sandbox import Sandbox
from integration_project_testkit.invoices import assert_invoiced_as_paid
from integration_project_testkit.resources import TEST_CLIENT, sandbox_resources
from integration_project_testkit.routes import shipped_route
from integration_project_testkit.windows import (
    WINDOW_END,
    WINDOW_KEY,
    WINDOW_START,
    deliver,
    erp_refs,
    failure_message,
    fetch_and_map,
    metadata,
)

pytestmark = pytest.mark.integration
LOG = logging.getLogger(__name__)

SPRYKER_ROUTE = RouteConfig.model_validate(
    {
        "name": "Spryker orders to Exact",
        "source": {"type": "spryker", "ids_per_request": 25},
        "mapping": {"your_ref": "SPR-{order_number}"},
        "late_orders": "0m",
    }
)


def staged_orders(ledger: Ledger) -> list[dict[str, Any]]:
    with ledger.db.connect() as con:
        rows = con.execute(
            "SELECT payload::VARCHAR FROM staged_orders WHERE route_id = ?", [ledger.route_id]
        ).fetchall()
    return [json.loads(text) for (text,) in rows]


def test_a_spryker_route_delivers_each_eu_order_once_invoiced_as_paid(sandbox: Sandbox, tmp_path):
    route = SPRYKER_ROUTE
    assets = build_route_assets(route)
    ledger_at = str(tmp_path / "ledger.duckdb")
    erp = sandbox_resources(sandbox.shop_url, sandbox.erp_url, ledger_at, erp=TEST_CLIENT)
    resources = {
        route.shop_key: SprykerResource(
            api_url=sandbox.spryker_url,
            username=settings.SANDBOX_SPRYKER_USERNAME,
            password=settings.SANDBOX_SPRYKER_PASSWORD,
            ids_per_request=route.source.ids_per_request,
            max_retries=1,
        ),
        route.erp_key: erp["erp"],
        "duckdb": erp["duckdb"],
    }
    # Orders before, in and after the window: only the window's are the run's.
    sandbox.spryker.add_orders(
        WINDOW_START - timedelta(minutes=30) + timedelta(minutes=n) for n in range(25)
    )
    ids = sandbox.spryker.add_orders(WINDOW_START + timedelta(seconds=12) * n for n in range(24))
    sandbox.spryker.add_orders(WINDOW_END + timedelta(minutes=n) for n in range(5))

    result = fetch_and_map(resources, WINDOW_KEY, assets)
    assert result.success, failure_message(result)
    fetched = metadata(result, "source_orders")
    assert fetched["dagster/row_count"] == len(ids)
    mapping = metadata(result, "erp_orders")
    records = [sandbox.spryker.orders[i] for i in ids]
    eu = {f"SPR-{r['order_reference']}" for r in records if _ships_to_eu(r)}
    assert eu and len(eu) < len(ids)  # the sandbox ships some outside the EU
    assert (mapping["mapped"], mapping["dropped_non_eu"]) == (len(eu), len(ids) - len(eu))

    delivered = deliver(resources, assets)
    assert delivered.success, failure_message(delivered)
    assert erp_refs(sandbox) == {ref: 1 for ref in eu}
    ledger = open_ledger(resources["duckdb"], route.id)
    orders = {f"SPR-{o['orderNumber']}": o for o in staged_orders(ledger)}
    assert assert_invoiced_as_paid(sandbox.erp, orders) == len(eu)


def _ships_to_eu(record: dict[str, Any]) -> bool:
    [address] = record["shippingAddress"]  # Spryker nests relations as lists
    [country] = address["country"]
    return country["iso2_code"] in settings.EU_27


class ProtocolOnly:
    """A target client that exposes only :class:`OrderTarget`'s members of the one it wraps:
    anything else the route reached for would raise."""

    MEMBERS = frozenset(name for name in dir(OrderTarget) if not name.startswith("_"))

    def __init__(self, target: Any) -> None:
        self._target = target

    def __getattr__(self, name: str) -> Any:
        if name not in self.MEMBERS:
            raise AttributeError(f"{name!r} is not part of OrderTarget")
        return getattr(self._target, name)

    def __enter__(self) -> ProtocolOnly:
        self._target.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._target.__exit__(*exc)


def test_mapping_and_delivery_need_nothing_of_the_erp_beyond_the_target_protocol(
    sandbox: Sandbox, resources: dict[str, Any], ledger: Ledger
):
    route = shipped_route()
    erp = resources["erp"]
    assert isinstance(erp_client(erp, ledger), OrderTarget)  # the Exact client is one
    sandbox.shop.add_orders(12, start=WINDOW_START, end=WINDOW_END)
    window = Window(WINDOW_START, WINDOW_END, timedelta(0))
    shop = resources["shop"]
    fetch_window(ledger, shop.get_client, window, page_size=50, run_id="fetch", log=LOG)

    ledger.endpoints.bind_erp(erp.api_url, erp.division)  # as the assets do

    def open_target(run: str) -> ProtocolOnly:
        return ProtocolOnly(erp_client(erp, ledger, holder=run))

    mapping = RouteMapping(route.rules(), route.mapping.account_match)
    report = map_window(ledger, partial(open_target, "map"), mapping, window, run_id="map", log=LOG)
    assert report.counts["mapped"] > 0
    delivery = RouteDelivery(route.id, mapping.rules.allowed_countries)
    run = DeliveryRun(
        ledger,
        delivery,
        DeliveryRequest(500, (), False),
        run_id="deliver",
        open_client=partial(open_target, "deliver"),
        log=LOG,
        observe=lambda progress: None,
        run_is_over=lambda run_id: False,
    )
    sent = run.run()
    assert sent.tally["sent"] == report.counts["mapped"]
    refs = erp_refs(sandbox)
    assert len(refs) == report.counts["mapped"] and set(refs.values()) == {1}


def test_an_unknown_member_is_refused_by_the_protocol_only_client(
    resources: dict[str, Any], ledger: Ledger
):
    """The wrapper above hides what is not in the protocol (so the test before it can fail)."""
    client = ProtocolOnly(erp_client(resources["erp"], ledger))
    with pytest.raises(AttributeError, match="not part of OrderTarget"):
        client.close  # noqa: B018  (ExactClient has it; the protocol does not)
