"""Test mode (Celigo's "test" export): a new route is tried with a handful of real orders.
Run config ``limit: N`` on the fetch stages at most N of the window's orders; on the delivery,
sends at most N. Nothing is lost: a run without a limit reads the window whole and sends the
rest, each order once."""

from __future__ import annotations

import pytest

from integration_project_testkit.routes import default_assets
from integration_project_testkit.windows import (
    WINDOW_END,
    WINDOW_START,
    deliver,
    erp_refs,
    failure_message,
    fetch_and_map,
    metadata,
)

pytestmark = pytest.mark.integration

ASSETS = default_assets()


def limited(asset, limit: int) -> dict:
    return {"ops": {asset.op.name: {"config": {"limit": limit}}}}


def test_a_limited_fetch_and_delivery_try_a_handful_then_a_full_run_sends_the_rest_once(
    sandbox, resources
):
    sandbox.shop.add_orders(8, start=WINDOW_START, end=WINDOW_END, shipping_country="DE")

    tried = fetch_and_map(resources, run_config=limited(ASSETS.source_orders, 3))
    assert tried.success, failure_message(tried)
    fetched = metadata(tried, "source_orders")
    assert (fetched["fetched"], fetched["test_mode_limit"]) == (3, 3)
    assert metadata(tried, "erp_orders")["mapped"] == 3

    sent = deliver(resources, run_config=limited(ASSETS.erp_delivered_orders, 2))
    assert sent.success, failure_message(sent)
    shown = metadata(sent, "erp_delivered_orders")
    assert (shown["sent"], shown["pending_left"]) == (2, 1)
    assert len(erp_refs(sandbox)) == 2

    # Going live: the window read whole, everything sent, nothing twice.
    full = fetch_and_map(resources)
    assert full.success, failure_message(full)
    assert metadata(full, "source_orders")["test_mode_limit"] == 0
    assert metadata(full, "source_orders")["dagster/row_count"] == 8
    assert deliver(resources).success
    refs = erp_refs(sandbox)
    expected = {t.order_number for t in sandbox.shop.truth.values() if t.expected_in_erp}
    assert set(refs) == expected and len(expected) == 8
    assert set(refs.values()) == {1}


def test_a_limit_below_one_is_refused_naming_the_field(resources):
    with pytest.raises(Exception, match="limit"):
        fetch_and_map(resources, run_config=limited(ASSETS.source_orders, 0))
