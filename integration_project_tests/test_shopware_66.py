"""Shopware 6.6 behaviour the client depends on, and the sandbox shop imitates.

* To-one associations such as ``stateMachineState`` are ``null`` unless the criteria ask for
  them (6.5 autoloaded the order state; 6.6 does not).
* Line items come back in no fixed order unless the association is sorted.
* Range bounds on dates go to the database as sent and are compared as text with the stored
  value, written in ``Defaults::STORAGE_DATE_TIME_FORMAT`` (``Y-m-d H:i:s.v``, UTC): a bound in
  ISO form with a ``T`` or an offset selects the wrong orders.

Everything goes over real HTTP: the client against the sandbox, and the sandbox with plain
``requests`` calls, so a bug on one side cannot hide one on the other.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import requests

from integration_project import settings
from integration_project.sandbox import ORDER_STATES, Sandbox, SandboxShop
from integration_project.sandbox.common import Request, Response
from integration_project.shopware.client import ShopwareClient
from integration_project.shopware.models import (
    ORDER_SEARCH_PATH,
    TOKEN_PATH,
    format_shop_datetime,
    format_storage_datetime,
)

pytestmark = pytest.mark.integration

START = datetime(2026, 11, 22, 6, 15, tzinfo=UTC)
END = START + timedelta(minutes=5)
MS = timedelta(milliseconds=1)
STORAGE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}$")
TIMEOUT = 10


class RecordingShop(SandboxShop):
    """The sandbox shop, keeping every order search body it was sent (as JSON)."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.search_bodies: list[dict[str, Any]] = []

    def handle(self, request: Request) -> Response:
        if (request.method, request.path) == ("POST", ORDER_SEARCH_PATH):
            self.search_bodies.append(json.loads(request.body.decode("utf-8")))
        return super().handle(request)


@pytest.fixture
def recorded() -> Iterator[Sandbox]:
    shop = RecordingShop(seed=7)
    with Sandbox(seed=7, shop=shop) as sb:
        yield sb


def client(sb: Sandbox, **kwargs: Any) -> ShopwareClient:
    return ShopwareClient(
        base_url=sb.shop_url,
        client_id=settings.SANDBOX_SHOP_CLIENT_ID,
        client_secret=settings.SANDBOX_SHOP_CLIENT_SECRET,
        max_retries=1,
        backoff_factor=0.01,
        **kwargs,
    )


def search(sb: Sandbox, criteria: dict[str, Any]) -> requests.Response:
    grant = {
        "grant_type": "client_credentials",
        "client_id": settings.SANDBOX_SHOP_CLIENT_ID,
        "client_secret": settings.SANDBOX_SHOP_CLIENT_SECRET,
    }
    token = requests.post(sb.shop_url + TOKEN_PATH, json=grant, timeout=TIMEOUT).json()
    headers = {"Authorization": f"Bearer {token['access_token']}", "Accept": "application/json"}
    return requests.post(
        sb.shop_url + ORDER_SEARCH_PATH, json=criteria, headers=headers, timeout=TIMEOUT
    )


def created_between(params: dict[str, str]) -> dict[str, Any]:
    return {
        "limit": 100,
        "filter": [{"type": "range", "field": "createdAt", "parameters": params}],
        "sort": [{"field": "createdAt", "order": "ASC"}, {"field": "id", "order": "ASC"}],
    }


def positions(order: dict[str, Any]) -> list[int]:
    return [line["position"] for line in order["lineItems"]]


# --- what the client sends -------------------------------------------------------------------


def test_storage_format_is_utc_without_t_or_offset() -> None:
    cet = datetime(2026, 11, 22, 8, 15, 0, 123456, tzinfo=timezone(timedelta(hours=1)))
    assert format_storage_datetime(START) == "2026-11-22 06:15:00.000"
    assert format_storage_datetime(cet) == "2026-11-22 07:15:00.123"  # UTC, ms truncated
    assert format_shop_datetime(START) == "2026-11-22T06:15:00.000+00:00"  # what Shopware sends
    with pytest.raises(ValueError, match="naive"):
        format_storage_datetime(START.replace(tzinfo=None))


def test_client_asks_for_the_state_sorted_line_items_and_storage_format_bounds(
    recorded: Sandbox,
) -> None:
    shop = recorded.shop
    assert isinstance(shop, RecordingShop)
    skus = [p.sku for p in shop.data.products[:4]]
    states = [*ORDER_STATES, *ORDER_STATES][:7]
    added = [
        shop.add_order(START + timedelta(seconds=40 * i), skus=skus, state=state)
        for i, state in enumerate(states)
    ]
    with client(recorded) as c:
        pages = list(c.iter_order_pages(start=START, end=END, page_size=3))

    # The wire: what Shopware receives, not what a model meant to send. Paged by key: each
    # page asks for what the shop stored after the last page's highest autoIncrement.
    assert [body["page"] for body in shop.search_bodies] == [1, 1, 1]
    keys = [o["autoIncrement"] for o in added]
    for body, after in zip(shop.search_bodies, [None, keys[2], keys[5]], strict=True):
        window, *stored = body["filter"]
        assert window == {
            "type": "range",
            "field": "createdAt",
            "parameters": {"gte": "2026-11-22 06:15:00.000", "lt": "2026-11-22 06:20:00.000"},
        }
        assert all(STORAGE.match(bound) for bound in window["parameters"].values())
        if after is None:
            assert stored == []
        else:
            assert stored == [
                {"type": "range", "field": "autoIncrement", "parameters": {"gt": after}}
            ]
        assert body["sort"] == [{"field": "autoIncrement", "order": "ASC"}]
        assert body["total-count-mode"] == "none"
        associations = body["associations"]
        assert associations["stateMachineState"] == {}
        assert associations["lineItems"]["sort"] == [{"field": "position", "order": "ASC"}]

    # And what it gets back: every order's state, its line items in position order.
    orders = [o for page in pages for o in page.orders]
    assert [o["id"] for o in orders] == [o["id"] for o in added]
    for order in orders:
        assert order["stateMachineState"]["technicalName"] == shop.truth[order["id"]].state
        assert positions(order) == sorted(positions(order)) and len(positions(order)) >= 4
    assert {o["stateMachineState"]["technicalName"] for o in orders} == set(ORDER_STATES)


# --- what the sandbox answers ------------------------------------------------------------------


def test_state_is_null_unless_the_association_is_asked_for(sandbox: Sandbox) -> None:
    order = sandbox.shop.add_order(START, state="in_progress")
    [bare] = search(sandbox, {"associations": {"lineItems": {}}}).json()["data"]
    assert bare["id"] == order["id"] and bare["stateMachineState"] is None
    assert bare["stateId"] == order["stateId"]  # the foreign key is a plain field
    # Filters still see the state, loaded or not (it is a join in the database).
    on_state = {"type": "equals", "field": "stateMachineState.technicalName", "value": "open"}
    assert search(sandbox, {"filter": [on_state]}).json()["data"] == []

    [loaded] = search(sandbox, {"associations": {"stateMachineState": {}}}).json()["data"]
    assert loaded["stateMachineState"]["technicalName"] == "in_progress"
    assert loaded["stateMachineState"]["id"] == order["stateId"]


def test_line_items_come_shuffled_unless_the_association_is_sorted(sandbox: Sandbox) -> None:
    products = sandbox.shop.data.products
    for n in (2, 3, 4, 4, 4):
        sandbox.shop.add_order(START, skus=[p.sku for p in products[:n]])
    for order in sandbox.shop.orders.values():  # the sandbox stores a position on every line
        assert all(isinstance(line["position"], int) for line in order["lineItems"])
        assert positions(order) == sorted(positions(order))

    unsorted = {"associations": {"lineItems": {}}, "sort": [{"field": "id"}]}
    first = search(sandbox, unsorted).json()["data"]
    again = search(sandbox, unsorted).json()["data"]
    assert first == again  # shuffled, but the same every time
    for order in first:
        stored = sandbox.shop.orders[order["id"]]["lineItems"]
        assert sorted(positions(order)) == [line["position"] for line in stored]
        assert positions(order) != sorted(positions(order))  # never the stored order

    for direction in ("ASC", "DESC"):
        by_position = [{"field": "position", "order": direction}]
        criteria = {**unsorted, "associations": {"lineItems": {"sort": by_position}}}
        for order in search(sandbox, criteria).json()["data"]:
            assert positions(order) == sorted(positions(order), reverse=direction == "DESC")

    nested = {"associations": {"lineItems": {"sort": [{"field": "position"}]}}}
    assert all(positions(o) == sorted(positions(o)) for o in search(sandbox, nested).json()["data"])
    bad = {"associations": {"lineItems": {"sort": [{"field": "position", "order": "up"}]}}}
    response = search(sandbox, bad)
    assert response.status_code == 400
    assert response.json()["errors"][0]["code"] == "FRAMEWORK__INVALID_SORT_QUERY"


def test_an_iso_bound_with_an_offset_selects_other_orders_than_the_storage_bound(
    sandbox: Sandbox,
) -> None:
    """The pitfall: the same instants as ISO 8601 compare as text against the stored
    ``2026-11-22 06:15:00.000``, and ``'T'`` sorts after ``' '``."""
    inside = sandbox.shop.add_orders(3, start=START, end=END)
    day_before = sandbox.shop.add_order(START - timedelta(days=1))
    day_after = sandbox.shop.add_order(START + timedelta(days=1))
    ids = lambda response: [o["id"] for o in response.json()["data"]]  # noqa: E731

    storage = {"gte": format_storage_datetime(START), "lt": format_storage_datetime(END)}
    iso = {"gte": format_shop_datetime(START), "lt": format_shop_datetime(END)}
    assert ids(search(sandbox, created_between(storage))) == [o["id"] for o in inside]
    assert ids(search(sandbox, created_between(iso))) == []

    # Open-ended, the ISO lower bound skips the whole day and lands on the next one.
    assert ids(search(sandbox, created_between({"gte": storage["gte"]}))) == [
        *(o["id"] for o in inside),
        day_after["id"],
    ]
    assert ids(search(sandbox, created_between({"gte": iso["gte"]}))) == [day_after["id"]]
    # And an ISO upper bound lets the whole day through, past the instant it names.
    assert ids(search(sandbox, created_between({"lt": iso["gte"]}))) == [
        day_before["id"],
        *(o["id"] for o in inside),
    ]
    assert ids(search(sandbox, created_between({"lt": storage["gte"]}))) == [day_before["id"]]

    # A bound that is no date at all is refused, as before.
    response = search(sandbox, created_between({"gte": "yesterday"}))
    assert response.status_code == 400 and "storage format" in response.text


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (START, END),
        # A window that crosses midnight: its end is on the next day.
        (datetime(2026, 11, 22, 23, 55, tzinfo=UTC), datetime(2026, 11, 23, tzinfo=UTC)),
    ],
    ids=["morning", "midnight"],
)
def test_window_fetch_returns_exactly_the_orders_created_in_start_end(
    sandbox: Sandbox, start: datetime, end: datetime
) -> None:
    shop = sandbox.shop
    wanted = [
        shop.add_order(start),  # exactly at the start bound: in
        *shop.add_orders(5, created_at=start + timedelta(minutes=2)),  # ties, split over pages
        shop.add_order(end - MS),  # the last millisecond: in
    ]
    for outside in (
        start - MS,
        end,  # exactly at the end bound: out (the next window's)
        end + MS,
        start - timedelta(days=1),  # same time of day, other days: text must not match them
        start + timedelta(days=1),
        end + timedelta(days=1) - MS,
    ):
        shop.add_order(outside)

    with client(sandbox) as c:
        pages = list(c.iter_order_pages(start=start, end=end, page_size=3))
    got = [o["id"] for page in pages for o in page.orders]
    assert got == [o["id"] for o in wanted]  # in the order the shop stored them
    assert [len(page.orders) for page in pages] == [3, 3, 1]
    for order in (o for page in pages for o in page.orders):
        created = datetime.fromisoformat(order["createdAt"])
        assert start <= created < end
