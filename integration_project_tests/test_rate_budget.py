"""Exact's budgets, end to end against the sandbox: 60 calls a minute, a daily budget, and a
block of the whole app after ten client errors (4xx) on one endpoint within an hour.

Delivery paces itself so that steady state never earns a 429, waits out a 429's reset, stops
(orders stay pending) when the day's budget is spent and resumes after its reset, and never
lets refused orders push an endpoint to the block threshold.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest

from integration_project.exact.client import MAX_CLIENT_ERRORS_PER_HOUR
from integration_project.ledger import DuckDBTokenStore
from integration_project.sandbox import FaultPlan
from integration_project_testkit.ledger_reads import delivered_rows
from integration_project_testkit.token_stores import SharedTokens
from integration_project_testkit.windows import (
    WINDOW_END,
    WINDOW_START,
    deliver,
    erp_refs,
    fetch_and_map,
    metadata,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def duckdb_path(ledger_location: str) -> str:
    """The ledger on both backends, for the tests whose runs share budget state through it
    (the daily pause, the client errors of the hour)."""
    return ledger_location


#: For tests whose budget state lives in the client or the sandbox, not in the ledger: the
#: PostgreSQL run would repeat the same calls against the same in-memory state.
duckdb_only = pytest.mark.parametrize("ledger_location", ["duckdb"], indirect=True)


POSTS = "salesorders_post"


@duckdb_only
def test_steady_state_delivery_paces_itself_and_never_earns_a_429(sandbox, resources):
    sandbox.shop.add_orders(10, start=WINDOW_START, end=WINDOW_END, shipping_country="DE")
    assert fetch_and_map(resources).success
    # Four calls per (one-second) minute: ten orders need three minute windows.
    sandbox.erp.set_rate_limit(per_minute=4, minute_window_s=1.0)
    meta = metadata(deliver(resources), "erp_delivered_orders")
    assert meta["sent"] == 10 and meta["pending_left"] == 0
    assert sandbox.erp.statuses[429] == 0
    # What the last answer announced, not the limit or a guess: the client reports the ERP.
    announced = sandbox.erp.last_announced
    assert announced is not None
    assert meta["erp_calls_left_minute"] == announced.minutely_remaining
    assert meta["erp_calls_left_day"] == announced.daily_remaining
    assert announced.minutely_remaining < 4  # this run used the minute it ended in


@duckdb_only
def test_two_clients_sharing_a_division_pace_without_a_429(sandbox, resources):
    """Two routes (or a mapping and a delivery run) call one division at once: each paces from
    headers that count both, keeping a few calls in reserve for the other. What they share is
    the ERP's headers and an in-memory token, never the ledger: one backend is enough."""
    sandbox.erp.set_rate_limit(per_minute=20, minute_window_s=1.0)  # one call in reserve
    # Every answer takes 30 ms after its call was counted: what one client last saw is a call
    # or two old when the other is calling too (as between processes).
    sandbox.erp.faults = FaultPlan({"slow": 1.0}, slow_seconds=0.03)
    store = SharedTokens()
    errors: list[BaseException] = []

    def hammer() -> None:
        try:
            with resources["erp"].get_client(store) as client:
                for _ in range(90):
                    client.find_item_id("SHIPPING")
        except BaseException as exc:
            errors.append(exc)

    with resources["erp"].get_client(store) as client:
        client.find_item_id("SHIPPING")  # the token, shared by both
    threads = [threading.Thread(target=hammer) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert sandbox.erp.calls["items_get"] >= 181  # nine one-second "minutes" at least
    assert sandbox.erp.statuses[429] == 0


@duckdb_only
def test_after_a_429_delivery_waits_for_the_reset_and_sends_each_order_once(sandbox, resources):
    sandbox.shop.add_orders(5, start=WINDOW_START, end=WINDOW_END, shipping_country="NL")
    assert fetch_and_map(resources).success
    sandbox.erp.set_rate_limit(minute_window_s=1.0)
    sandbox.erp.faults.add("429", path_contains="salesorder/SalesOrders", method="POST", times=2)
    meta = metadata(deliver(resources), "erp_delivered_orders")
    assert sandbox.erp.statuses[429] == 2
    assert meta["sent"] == 5 and meta["pending_left"] == 0
    assert max(erp_refs(sandbox).values()) == 1


def test_a_spent_daily_budget_stops_delivery_until_its_reset_then_it_resumes(
    sandbox, resources, ledger, dagster_instance
):
    sandbox.shop.add_orders(6, start=WINDOW_START, end=WINDOW_END, shipping_country="DE")
    assert fetch_and_map(resources).success
    # Three calls left today, and "today" ends in a few seconds.
    sandbox.erp.set_rate_limit(per_day=3, day_window_s=8.0)
    result = deliver(resources, instance=dagster_instance)
    first = metadata(result, "erp_delivered_orders")
    assert first["sent"] == 3 and first["pending_left"] == 3
    assert "daily call budget is spent" in first["stopped_early"]
    assert first["erp_calls_left_day"] == 0
    logs = [e.user_message for e in dagster_instance.all_logs(result.run_id)]
    assert any("Delivery stopped early: the Exact Online daily call budget" in m for m in logs)
    assert sandbox.erp.statuses[429] == 0  # it stopped from the headers, before a 429

    # Before the reset, the next run does not call the ERP at all.
    calls = sum(sandbox.erp.calls.values())
    second = metadata(deliver(resources), "erp_delivered_orders")
    assert second["sent"] == 0 and second["pending_left"] == 3
    assert second["oldest_pending_age_s"] > 0  # what the UI plots while orders wait
    assert "no calls to Exact Online until" in second["stopped_early"]
    assert sum(sandbox.erp.calls.values()) == calls

    paused = DuckDBTokenStore(ledger.db, resources["erp"].token_key).paused_until()
    assert paused is not None
    time.sleep(max(0.0, paused[0] - time.time()) + 0.2)
    sandbox.erp.set_rate_limit(per_day=5000)  # the new day's budget
    third = metadata(deliver(resources), "erp_delivered_orders")
    assert third["sent"] == 3 and third["pending_left"] == 0
    assert third["oldest_pending_age_s"] == 0
    assert len(sandbox.erp.sales_orders) == 6 and max(erp_refs(sandbox).values()) == 1


def test_refused_orders_never_push_an_endpoint_to_exacts_block(sandbox, resources, ledger):
    """Twelve orders the ERP refuses, then three good ones: the client stops calling the
    endpoint at eight client errors within the hour (Exact blocks the app at ten)."""
    bad = [
        sandbox.shop.add_order(WINDOW_START + timedelta(seconds=i), shipping_country="DE")
        for i in range(12)
    ]
    for order in bad:
        order["currency"]["isoCode"] = "XAU"  # the ERP refuses it: a 400 each
    sandbox.shop.add_orders(
        3, start=WINDOW_START + timedelta(minutes=1), end=WINDOW_END, shipping_country="DE"
    )
    assert fetch_and_map(resources).success

    first = metadata(deliver(resources), "erp_delivered_orders")
    assert first["failed"] == MAX_CLIENT_ERRORS_PER_HOUR
    assert "client errors within the hour" in first["stopped_early"]
    assert first["pending_left"] == 12 + 3 - MAX_CLIENT_ERRORS_PER_HOUR
    assert sandbox.erp.blocked_until is None and sandbox.erp.statuses[403] == 0

    # The next tick within the hour does not call the endpoint, so no error can add up.
    posts = sandbox.erp.calls[POSTS]
    second = metadata(deliver(resources), "erp_delivered_orders")
    assert second["sent"] == second["failed"] == 0
    assert sandbox.erp.calls[POSTS] == posts

    # An hour later (both clocks moved back by hand) the rest goes: four more refusals, the
    # three good orders delivered, still never blocked; refused ones are not sent again.
    with ledger.db.connect() as con:
        con.execute("UPDATE erp_client_errors SET seen_at = seen_at - 3660")
    sandbox.erp.client_errors.clear()
    third = metadata(deliver(resources), "erp_delivered_orders")
    assert (third["sent"], third["failed"], third["pending_left"]) == (3, 4, 0)
    assert sandbox.erp.blocked_until is None
    assert len(sandbox.erp.sales_orders) == 3
    assert sum(1 for r in delivered_rows(ledger) if r["status"] == "failed") == 12


@duckdb_only
def test_the_sandbox_blocks_an_app_after_ten_client_errors_in_an_hour(sandbox, resources):
    """The guard above is only worth something if the block is real."""
    import requests

    from integration_project.resources import erp_client, open_ledger

    ledger = open_ledger(resources["duckdb"], "block-test")
    client = erp_client(resources["erp"], ledger)
    token = client._tokens.access_token()
    url = f"{sandbox.erp_url}/api/v1/{sandbox.erp.division}/salesorder/SalesOrders"
    headers = {"Authorization": f"Bearer {token}"}
    answers = [
        requests.post(url, json={}, headers=headers, timeout=5).status_code for _ in range(11)
    ]
    assert answers[:10] == [400] * 10
    assert answers[10] == 403 and sandbox.erp.blocked_until is not None
    assert requests.get(url, headers=headers, timeout=5).status_code == 403
