"""The sandbox shop's ``autoIncrement`` (Shopware's ``AutoIncrementField``: a number per order in
the order the shop stored it), keyset paging on it, bulk orders derived from templates, and the
bulk index: answers from the index and from ready texts are byte for byte the general path's."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests

from integration_project import settings
from integration_project.sandbox import OrderFactory, Sandbox, SandboxData
from integration_project.settings import EU_27
from integration_project.shopware.models import (
    ORDER_ASSOCIATIONS,
    ORDER_SEARCH_PATH,
    TOKEN_PATH,
    ShopOrder,
    format_storage_datetime,
)

pytestmark = pytest.mark.integration

START = datetime(2026, 11, 21, 0, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
TIMEOUT = 30


class Shop:
    """A bare client of one sandbox shop: criteria in, the raw answer out."""

    def __init__(self, sb: Sandbox) -> None:
        self.sb = sb
        grant = {
            "grant_type": "client_credentials",
            "client_id": settings.SANDBOX_SHOP_CLIENT_ID,
            "client_secret": settings.SANDBOX_SHOP_CLIENT_SECRET,
        }
        token = requests.post(sb.shop_url + TOKEN_PATH, json=grant, timeout=TIMEOUT)
        self.headers = {"Authorization": f"Bearer {token.json()['access_token']}"}

    def raw(self, criteria: dict[str, Any]) -> requests.Response:
        url = self.sb.shop_url + ORDER_SEARCH_PATH
        return requests.post(url, json=criteria, headers=self.headers, timeout=TIMEOUT)

    def search(self, criteria: dict[str, Any]) -> dict[str, Any]:
        answer = self.raw(criteria)
        assert answer.status_code == 200, answer.text
        return answer.json()

    def both_paths(self, criteria: dict[str, Any]) -> bytes:
        """The answer from the index and ready texts, checked against the general path's."""
        self.sb.shop.fast_search = False
        slow = self.raw(criteria)
        self.sb.shop._matches._entries.clear()  # what the general path scanned
        self.sb.shop.fast_search = True
        fast = self.raw(criteria)
        assert slow.status_code == fast.status_code == 200, slow.text
        assert fast.content == slow.content, criteria
        return fast.content


def created_range(start: datetime, end: datetime) -> dict[str, Any]:
    bounds = {"gte": format_storage_datetime(start), "lt": format_storage_datetime(end)}
    return {"type": "range", "field": "createdAt", "parameters": bounds}


def after(auto: Any) -> dict[str, Any]:
    return {"type": "range", "field": "autoIncrement", "parameters": {"gt": auto}}


BY_AUTO = [{"field": "autoIncrement", "order": "ASC"}]
BY_CREATED = [{"field": "createdAt", "order": "ASC"}, {"field": "id", "order": "ASC"}]


def keyset(filters: list[dict[str, Any]], limit: int, **more: Any) -> dict[str, Any]:
    """The criteria of the route's keyset client (the cursor filter is the caller's)."""
    return {
        "page": 1,
        "limit": limit,
        "total-count-mode": "none",
        "filter": filters,
        "sort": BY_AUTO,
        "associations": ORDER_ASSOCIATIONS,
        **more,
    }


def drain(shop: Shop, window: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    """Every order a keyset client sees: autoIncrement above the last one seen."""
    seen: list[dict[str, Any]] = []
    last = 0
    while True:
        data = shop.search(keyset([*window, after(last)], limit))["data"]
        seen.extend(data)
        if len(data) < limit:
            return seen
        last = data[-1]["autoIncrement"]


# --- autoIncrement ---------------------------------------------------------------------------


def test_auto_increment_follows_storage_not_created_at():
    with Sandbox(seed=5) as sb:
        shop = sb.shop
        first = shop.add_order(START + HOUR)
        late = shop.add_order(START - 2 * HOUR)  # committed now, created two hours ago
        assert (first["autoIncrement"], late["autoIncrement"]) == (10001, 10002)
        raw = shop.add_raw_order({"id": "a" * 32, "createdAt": "2026-11-21T00:00:00.000+00:00"})
        assert raw["autoIncrement"] == 10003  # given the next one, as MySQL would
        kept = shop.add_raw_order({"id": "b" * 32, "autoIncrement": 20000})
        assert kept["autoIncrement"] == 20000  # a test's own number is kept ...
        assert shop.add_order(START)["autoIncrement"] == 20001  # ... and the counter moves on
        shop.add_verbatim(START, "null")  # a verbatim entry is stored like an order
        tally = shop.add_bulk(5, start=START, end=START + HOUR)
        assert tally["orders"] == 5
        assert shop.add_order(START)["autoIncrement"] == 20008  # after 20002 and 5 bulk orders

        client = Shop(sb)
        found = client.search({"filter": [after(10001)], "sort": BY_AUTO, "limit": 50})["data"]
        autos = [o and o["autoIncrement"] for o in found]
        assert autos == [10002, 10003, 20000, 20001, None, *range(20003, 20009)]
        assert found[4] is None  # the verbatim entry, in its place

        bounds = {"gte": "20003", "lte": 20004.5}  # digits and numbers compare as numbers
        criteria = {"filter": [{"type": "range", "field": "autoIncrement", "parameters": bounds}]}
        assert [o["autoIncrement"] for o in client.search(criteria)["data"]] == [20003, 20004]
        down = client.search({"sort": [{"field": "autoIncrement", "order": "DESC"}], "limit": 3})
        assert [o["autoIncrement"] for o in down["data"]] == [20008, 20007, 20006]
        bad = client.raw({"filter": [after("the last one")]})
        assert bad.status_code == 400 and "autoIncrement" in bad.text


def test_keyset_paging_sees_every_order_once_and_a_late_one():
    with Sandbox(seed=6) as sb:
        sb.shop.add_bulk(40, start=START, end=START + HOUR, templates=6)
        stored = sb.shop.add_order(START + 30 * timedelta(minutes=1))
        client = Shop(sb)
        window = [created_range(START, START + HOUR)]
        first = client.search(keyset([*window, after(0)], 25))["data"]
        # An order created before the cursor's orders, committed while we page.
        late = sb.shop.add_order(START + timedelta(minutes=5))
        rest = drain_from(client, window, first[-1]["autoIncrement"], 7)
        seen = [o["id"] for o in first + rest]
        assert len(seen) == len(set(seen)) == 42
        assert {stored["id"], late["id"]} <= set(seen) and seen[-1] == late["id"]
        autos = [o["autoIncrement"] for o in first + rest]
        assert autos == sorted(autos)
        # Without the window: everything stored since a number.
        assert [o["id"] for o in drain(client, [], 9)] == seen


def drain_from(shop: Shop, window: list[dict[str, Any]], last: int, limit: int) -> list[Any]:
    seen: list[dict[str, Any]] = []
    while True:
        data = shop.search(keyset([*window, after(last)], limit))["data"]
        seen.extend(data)
        if len(data) < limit:
            return seen
        last = data[-1]["autoIncrement"]


# --- derived bulk orders ---------------------------------------------------------------------


def own_ids(order: dict[str, Any]) -> set[str]:
    """The ids an order owns: its own, deepLinkCode, every entity's with orderId = its id."""
    found = {order["id"], order["deepLinkCode"]}
    stack: list[Any] = [order]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            if value.get("orderId") == order["id"]:
                found.add(value["id"])
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return found


def same_but_ids(made: Any, derived: Any, ids: set[str], mapping: dict[str, str]) -> bool:
    """``derived`` is ``made`` with each of ``ids`` replaced, consistently, by another id that
    keeps its last 16 hex digits."""
    if isinstance(made, dict):
        return (
            isinstance(derived, dict)
            and list(made) == list(derived)
            and all(same_but_ids(made[k], derived[k], ids, mapping) for k in made)
        )
    if isinstance(made, list):
        return (
            isinstance(derived, list)
            and len(made) == len(derived)
            and all(same_but_ids(a, b, ids, mapping) for a, b in zip(made, derived, strict=True))
        )
    if isinstance(made, str) and made in ids:
        return mapping.setdefault(made, derived) == derived and derived[16:] == made[16:]
    return made == derived


def test_derived_bulk_orders_are_their_template_made_at_their_own_time():
    n, k = 30, 7
    with Sandbox(seed=8) as sb:
        tally = sb.shop.add_bulk(n, start=START, end=START + HOUR, templates=k)
        [segment] = sb.shop._bulk
        orders = [segment.order(i) for i in range(n)]
        for i in (0, 6, 7, 13, 29):
            # A fresh factory makes template i % k as the (i % k + 1)-th order, at order i's time.
            factory = OrderFactory(SandboxData.build(8))
            for _ in range(i % k):
                factory.make_order(START, malformed="random", countries="mix")
            created = START + HOUR * i / n
            made = factory.make_order(created, malformed="random", countries="mix")
            made.update(orderNumber=str(10001 + i), autoIncrement=10001 + i)
            if i < k:
                assert orders[i] == made  # the templates are the orders made one by one
            else:
                mapping: dict[str, str] = {}
                assert same_but_ids(made, orders[i], own_ids(made), mapping), i
                assert all(new != old for old, new in mapping.items())
            # The answer to the route's search: the order, with the associations a route asks
            # for only when it has look-ups (shipping and payment methods) left null, as
            # Shopware leaves an association nobody asked for.
            expected = copy.deepcopy(orders[i])
            expected["transactions"] = None
            for delivery in expected["deliveries"]:
                delivery["shippingMethod"] = None
            assert json.loads(segment.answer(i)) == expected
            ShopOrder.model_validate(orders[i])

        ids = [x for o in orders for x in own_ids(o)]
        assert len(ids) == len(set(ids)), "own ids are unique across bulk orders"
        assert [o["orderNumber"] for o in orders] == [str(10001 + i) for i in range(n)]
        assert all(line["orderId"] == o["id"] for o in orders for line in o["lineItems"])
        for o in orders:
            [delivery] = o["deliveries"]
            assert delivery["orderId"] == o["billingAddress"]["orderId"] == o["id"]
            assert delivery["shippingOrderAddressId"] == delivery["shippingOrderAddress"]["id"]
            assert o["billingAddressId"] == o["billingAddress"]["id"]
        # The tally is true for the derived orders too.
        ship = [o["deliveries"][0]["shippingOrderAddress"]["country"]["iso"] for o in orders]
        assert sum(iso in EU_27 for iso in ship) == tally["eu"]
        assert tally["orders"] == n and sb.shop.factory.next_order_number == 10001 + n


# --- the bulk index and ready texts ----------------------------------------------------------


def a_mixed_shop(sb: Sandbox) -> None:
    """Two bulk segments one after the other in time, stored orders before, between and
    after them (one created inside the first segment's hour), a raw order whose
    autoIncrement ties a bulk one, and verbatim entries."""
    shop = sb.shop
    shop.add_order(START + 10 * timedelta(minutes=1))
    shop.add_bulk(120, start=START, end=START + HOUR, templates=9)
    shop.add_order(START + timedelta(minutes=20, seconds=1))
    shop.add_verbatim(START + timedelta(minutes=40), '{"id": 1}')
    shop.add_bulk(80, start=START + HOUR, end=START + 2 * HOUR, templates=9)
    tie = shop.add_order(START + 90 * timedelta(minutes=1))
    twin = dict(tie, id="c" * 32, autoIncrement=10050)  # ties bulk order 10050
    shop.add_raw_order(twin)
    shop.add_verbatim(START + timedelta(minutes=100), "null")
    shop.add_order(START + 3 * HOUR)


INDEXED = [
    # page numbers over a window, sorted createdAt + id: first, middle, last, past the end
    *(
        {"page": page, "limit": 45, "filter": [created_range(START, START + 2 * HOUR)]}
        | {"sort": BY_CREATED, "associations": ORDER_ASSOCIATIONS}
        for page in (1, 3, 5, 6)
    ),
    # keyset, with and without a window, in the middle of a segment and across both
    keyset([created_range(START, START + HOUR), after(10030)], 25),
    keyset([created_range(START + HOUR, START + 2 * HOUR), after(0)], 500),
    keyset([after(10049)], 10),
    keyset([after(10100)], 50, **{"total-count-mode": "exact"}),
    keyset([after(10100.5), created_range(START, START + 3 * HOUR)], 7),
    keyset([{"type": "range", "field": "autoIncrement", "parameters": {"lte": "10060"}}], 20)
    | {"page": 3, "total-count-mode": "next-pages"},
    keyset([], 30) | {"page": 4, "total-count-mode": 1},
    # from the index, but other associations: each order projected as the general path does
    keyset([after(10030)], 25) | {"associations": {"lineItems": {}}},
    keyset([after(10030)], 25) | {"associations": {}},
]
GENERAL = [
    keyset([after(10030)], 25) | {"sort": [{"field": "autoIncrement", "order": "DESC"}]},
    keyset([after(10030), {"type": "equals", "field": "orderNumber", "value": "10031"}], 5),
    {"filter": [created_range(START, START + HOUR)], "sort": BY_CREATED[:1], "limit": 30},
]


@pytest.mark.parametrize("criteria", INDEXED + GENERAL)
def test_index_and_ready_texts_answer_byte_for_byte_as_the_general_path(criteria):
    with Sandbox(seed=9) as sb:
        a_mixed_shop(sb)
        shop = Shop(sb)
        answer = json.loads(shop.both_paths(criteria))
        assert answer["data"] or criteria.get("page") == 6, "every case but one finds orders"
        # Index-shaped criteria never scan the bulk orders (the scan fills the match cache).
        assert bool(sb.shop._matches._entries) == (criteria in GENERAL)


def test_segments_that_overlap_in_time_fall_back_to_the_general_path():
    with Sandbox(seed=10) as sb:
        sb.shop.add_bulk(30, start=START, end=START + HOUR, templates=4)
        sb.shop.add_bulk(30, start=START + HOUR / 2, end=START + 2 * HOUR, templates=4)
        shop = Shop(sb)
        criteria = {"filter": [created_range(START, START + 2 * HOUR)], "sort": BY_CREATED}
        answer = shop.both_paths(criteria | {"limit": 100, "associations": ORDER_ASSOCIATIONS})
        created = [o["createdAt"] for o in json.loads(answer)["data"]]
        assert len(created) == 60 and created == sorted(created)
        # Still indexed by autoIncrement: the second segment's numbers follow the first's.
        shop.both_paths(keyset([after(10020)], 20))
        assert not sb.shop._matches._entries


def test_a_segment_with_orders_in_the_same_millisecond_is_sorted_by_id():
    with Sandbox(seed=11) as sb:
        sb.shop.add_bulk(50, start=START, end=START + timedelta(milliseconds=10), templates=5)
        shop = Shop(sb)
        criteria = {"filter": [created_range(START, START + HOUR)], "sort": BY_CREATED}
        answer = shop.both_paths(criteria | {"limit": 50, "associations": ORDER_ASSOCIATIONS})
        keys = [(o["createdAt"], o["id"]) for o in json.loads(answer)["data"]]
        assert len(keys) == 50 and keys == sorted(keys)
