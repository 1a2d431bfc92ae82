"""The sandbox speaks each system's subset faithfully: auth, errors, paging, rate limits, faults.

Everything goes over real HTTP with ``requests`` (not the project's clients), so a client bug
cannot hide a sandbox bug. Time comes from a :class:`ManualClock`, so expiry and rate-limit
windows are tested without sleeping.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from jsonschema import Draft202012Validator

from integration_project import settings
from integration_project.exact.models import (
    ACCOUNTS,
    ITEMS,
    MIN_REFRESH_INTERVAL_S,
    RATE_LIMIT_HEADERS,
    SALES_ORDERS,
    RateLimit,
    SalesOrderRef,
    data_path,
    eq_filter,
    error_message,
    results,
    single,
)
from integration_project.exact.models import TokenResponse as ErpToken
from integration_project.sandbox import (
    MALFORMED_KINDS,
    ORDER_STATES,
    STATE_SHARES,
    FaultPlan,
    ManualClock,
    OrderFactory,
    Sandbox,
    SandboxData,
    SandboxErp,
    SandboxShop,
)
from integration_project.sandbox.data import stable_id
from integration_project.shopware.models import (
    ORDER_ASSOCIATIONS,
    ORDER_SEARCH_PATH,
    ShopErrorResponse,
    ShopOrder,
    created_at_window_criteria,
    format_shop_datetime,
)
from integration_project.shopware.models import TOKEN_PATH as SHOP_TOKEN_PATH
from integration_project.shopware.models import TokenResponse as ShopToken
from integration_project_testkit.erp_calls import Erp

pytestmark = pytest.mark.integration

OPENAPI = Path(__file__).resolve().parents[1] / "reference/shopware-admin-api-orders.openapi.json"
NOW = datetime(2026, 11, 22, 6, 0, tzinfo=UTC)
START = datetime(2026, 11, 22, 5, 0, tzinfo=UTC)
END = START + timedelta(minutes=5)
DIVISION = settings.SANDBOX_ERP_DIVISION
TIMEOUT = 10


# --- fixtures and helpers ------------------------------------------------------------------


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(NOW)


@pytest.fixture
def sb(clock: ManualClock) -> Iterator[Sandbox]:
    data = SandboxData.build(3)
    shop = SandboxShop(seed=3, data=data, clock=clock, token_rate_limit=5)
    erp = SandboxErp(seed=3, data=data, clock=clock, minute_limit=1000)
    with Sandbox(seed=3, clock=clock, shop=shop, erp=erp) as sandbox:
        yield sandbox


def shop_grant(second: bool = False) -> dict[str, str]:
    """The client-credentials body for the first shop, or the second (B2B) one."""
    return {
        "grant_type": "client_credentials",
        "client_id": settings.SANDBOX_SHOP2_CLIENT_ID
        if second
        else settings.SANDBOX_SHOP_CLIENT_ID,
        "client_secret": (
            settings.SANDBOX_SHOP2_CLIENT_SECRET if second else settings.SANDBOX_SHOP_CLIENT_SECRET
        ),
    }


def shop_token(sb: Sandbox, second: bool = False) -> str:
    url = sb.shop2_url if second else sb.shop_url
    response = requests.post(url + SHOP_TOKEN_PATH, json=shop_grant(second), timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    return ShopToken.model_validate(response.json()).access_token


def search(
    sb: Sandbox, criteria: Any, token: str | None = None, raw: bool = False, second: bool = False
):
    token = token or shop_token(sb, second)
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    kwargs: dict[str, Any] = {"data": criteria} if raw else {"json": criteria}
    url = (sb.shop2_url if second else sb.shop_url) + ORDER_SEARCH_PATH
    return requests.post(url, headers=headers, timeout=TIMEOUT, **kwargs)


def window(start: datetime = START, end: datetime = END, page: int = 1, limit: int = 100):
    return created_at_window_criteria(start=start, end=end, page=page, limit=limit).to_json()


def refresh(sb: Sandbox, refresh_token: str | None = None, **form: str) -> requests.Response:
    data = {
        "grant_type": "refresh_token",
        "refresh_token": refresh_token or sb.erp.refresh_token,
        "client_id": settings.SANDBOX_ERP_CLIENT_ID,
        "client_secret": settings.SANDBOX_ERP_CLIENT_SECRET,
        **form,
    }
    return requests.post(sb.erp_url + "/api/oauth2/token", data=data, timeout=TIMEOUT)


def erp_token(sb: Sandbox) -> str:
    response = refresh(sb)
    assert response.status_code == 200, response.text
    return ErpToken.model_validate(response.json()).access_token


@pytest.fixture
def erp(sb: Sandbox) -> Erp:
    return Erp(sb)


def assert_shop_error(response: requests.Response, status: int, *, detail: bool = True) -> str:
    """``detail=False``: league's ``invalid_client`` has no hint, so Shopware sends
    ``"detail": null`` (``ErrorResponseFactory``)."""
    assert response.status_code == status, response.text
    body = ShopErrorResponse.model_validate(response.json())
    assert body.errors and body.errors[0].status == str(status)
    assert body.errors[0].title and (body.errors[0].detail or not detail)
    return body.summary()


def assert_exact_error(response: requests.Response, status: int) -> str:
    assert response.status_code == status, response.text
    message = error_message(response.json())
    assert message, response.text
    return message


#: Collections Shopware's OpenAPI types as ``object`` while PHP sends them as JSON lists
#: (``CalculatedTaxCollection``, ``TaxRuleCollection``): validated as objects keyed by index.
PHP_LIST_COLLECTIONS = frozenset({"calculatedTaxes", "taxRules"})


def without_nulls(value: Any, key: str | None = None) -> Any:
    """Shopware sends ``null`` for unset fields; its schema means them as absent."""
    if isinstance(value, dict):
        return {k: without_nulls(v, k) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        items = [without_nulls(v) for v in value if v is not None]
        if key in PHP_LIST_COLLECTIONS:
            return {str(i): item for i, item in enumerate(items)}
        return items
    return value


@pytest.fixture(scope="module")
def order_schema() -> Draft202012Validator:
    components = json.loads(OPENAPI.read_text(encoding="utf-8"))["components"]
    schema = {"$ref": "#/components/schemas/Order", "components": components}
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


# --- shop: token ---------------------------------------------------------------------------


def test_shop_token_flow_and_wrong_credentials(sb: Sandbox) -> None:
    body = {"grant_type": "client_credentials", "client_id": "x", "client_secret": "y"}
    good = {**body, "client_id": sb.shop.client_id, "client_secret": sb.shop.client_secret}
    ok = requests.post(sb.shop_url + SHOP_TOKEN_PATH, json=good, timeout=TIMEOUT)
    assert ok.status_code == 200
    token = ShopToken.model_validate(ok.json())
    assert (token.token_type, token.expires_in) == ("Bearer", 600)
    assert isinstance(ok.json()["expires_in"], int)

    wrong = requests.post(sb.shop_url + SHOP_TOKEN_PATH, json=body, timeout=TIMEOUT)
    assert "Client authentication failed" in assert_shop_error(wrong, 401, detail=False)
    grant = requests.post(
        sb.shop_url + SHOP_TOKEN_PATH, json={**good, "grant_type": "password"}, timeout=TIMEOUT
    )
    assert_shop_error(grant, 400)
    assert sb.shop.token_calls == 3 and sb.shop.tokens_issued == 1


def test_shop_token_endpoint_is_rate_limited(sb: Sandbox, clock: ManualClock) -> None:
    for _ in range(5):
        shop_token(sb)
    body = {"grant_type": "client_credentials", "client_id": "a", "client_secret": "b"}
    limited = requests.post(sb.shop_url + SHOP_TOKEN_PATH, json=body, timeout=TIMEOUT)
    assert_shop_error(limited, 429)
    # The clock stands still: the five calls leave the window in exactly a minute.
    assert limited.headers["Retry-After"] == "60"
    clock.advance(59)
    still = requests.post(sb.shop_url + SHOP_TOKEN_PATH, json=body, timeout=TIMEOUT)
    assert_shop_error(still, 429)
    assert still.headers["Retry-After"] == "1"
    clock.advance(1)
    shop_token(sb)
    assert sb.shop.token_calls == 8 and sb.shop.tokens_issued == 6


def test_shop_search_needs_a_valid_unexpired_token(sb: Sandbox, clock: ManualClock) -> None:
    missing = requests.post(sb.shop_url + ORDER_SEARCH_PATH, json=window(), timeout=TIMEOUT)
    assert_shop_error(missing, 401)
    assert_shop_error(search(sb, window(), token="not-a-token"), 401)
    token = shop_token(sb)
    assert search(sb, window(), token=token).status_code == 200
    clock.advance(600)
    assert "expired" in assert_shop_error(search(sb, window(), token=token), 401)


def test_token_lifetime_is_configurable(clock: ManualClock) -> None:
    shop = SandboxShop(clock=clock, token_lifetime_s=2)
    with Sandbox(clock=clock, shop=shop) as sandbox:
        token = shop_token(sandbox)
        clock.advance(1)
        assert search(sandbox, window(), token=token).status_code == 200
        clock.advance(1)
        assert search(sandbox, window(), token=token).status_code == 401


# --- shop: search --------------------------------------------------------------------------


def test_search_pages_with_total(sb: Sandbox) -> None:
    added = sb.shop.add_orders(23, start=START, end=END)
    token = shop_token(sb)
    seen: list[str] = []
    for page, size in ((1, 10), (2, 10), (3, 3), (4, 0)):
        body = search(sb, window(page=page, limit=10), token=token).json()
        assert body["total"] == 23
        assert len(body["data"]) == size
        seen += [o["id"] for o in body["data"]]
    assert seen == [o["id"] for o in sorted(added, key=lambda o: (o["createdAt"], o["id"]))]

    for mode, total in ((1, 23), ("exact", 23), (0, 5), ("none", 5), ("next-pages", 23)):
        criteria = {**window(limit=5), "total-count-mode": mode}
        assert search(sb, criteria, token=token).json()["total"] == total, mode
    assert "total" in search(sb, {"limit": 1}, token=token).json()


def test_range_filter_is_half_open_and_compares_storage_format_text(sb: Sandbox) -> None:
    ms = timedelta(milliseconds=1)
    before = sb.shop.add_order(START - ms)
    first = sb.shop.add_order(START)
    last = sb.shop.add_order(END - ms)
    after = sb.shop.add_order(END)
    token = shop_token(sb)
    ids = [o["id"] for o in search(sb, window(), token=token).json()["data"]]
    assert ids == [first["id"], last["id"]]

    # gt / lte in Shopware's storage format (UTC, no T, no offset), compared as text.
    storage = {"gt": "2026-11-22 04:59:59.999", "lte": "2026-11-22 05:05:00.000"}
    criteria = {"filter": [{"type": "range", "field": "createdAt", "parameters": storage}]}
    ids = {o["id"] for o in search(sb, {**criteria, "limit": 10}, token=token).json()["data"]}
    assert ids == {first["id"], last["id"], after["id"]}
    assert before["id"] not in ids
    # The same instants in ISO form with an offset are text the stored dates never match.
    cet = {"gt": "2026-11-22T05:59:59.999+01:00", "lte": "2026-11-22T06:05:00.000+01:00"}
    criteria = {"filter": [{"type": "range", "field": "createdAt", "parameters": cet}]}
    assert search(sb, {**criteria, "limit": 10}, token=token).json()["data"] == []


def test_equals_filter_and_sort(sb: Sandbox) -> None:
    orders = sb.shop.add_orders(4, created_at=START)
    token = shop_token(sb)
    number = orders[2]["orderNumber"]
    criteria = {"filter": [{"type": "equals", "field": "orderNumber", "value": number}]}
    [found] = search(sb, criteria, token=token).json()["data"]
    assert found["id"] == orders[2]["id"]

    criteria = {"sort": [{"field": "createdAt", "order": "DESC"}, {"field": "id", "order": "DESC"}]}
    ids = [o["id"] for o in search(sb, criteria, token=token).json()["data"]]
    assert ids == sorted((o["id"] for o in orders), reverse=True)


def test_associations_are_loaded_only_when_asked_for(sb: Sandbox) -> None:
    sb.shop.add_order(START)
    token = shop_token(sb)
    [bare] = search(sb, {"limit": 5}, token=token).json()["data"]
    for name in ("lineItems", "currency", "billingAddress", "deliveries"):
        assert bare.get(name) is None, name
    assert bare["stateMachineState"] is None  # Shopware 6.6 no longer autoloads it
    assert bare["orderCustomer"]["email"]  # a one-to-one association: autoloaded

    shallow = {"associations": {"billingAddress": {}, "deliveries": {}}}
    [order] = search(sb, shallow, token=token).json()["data"]
    assert order["billingAddress"]["city"] and order["billingAddress"]["country"] is None
    assert order["deliveries"][0]["shippingOrderAddress"] is None
    assert order["lineItems"] is None

    dotted = {"associations": {"deliveries.shippingOrderAddress.country": {}}}
    [order] = search(sb, dotted, token=token).json()["data"]
    assert order["deliveries"][0]["shippingOrderAddress"]["country"]["iso"]

    [full] = search(sb, {"associations": ORDER_ASSOCIATIONS}, token=token).json()["data"]
    model = ShopOrder.model_validate(full)
    assert model.currency and model.orderCustomer and model.lineItems
    assert model.billingAddress and model.billingAddress.country
    assert model.deliveries and model.deliveries[0].shippingOrderAddress
    assert model.deliveries[0].shippingOrderAddress.country


@pytest.mark.parametrize(
    ("criteria", "detail"),
    [
        (b"{not json", "JSON"),
        ({"page": 0}, "page"),
        ({"limit": 501}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"filter": [{"type": "contains", "field": "orderNumber", "value": "1"}]}, "contains"),
        ({"filter": [{"type": "range", "field": "createdAt", "parameters": {"gte": "y"}}]}, "ISO"),
        ({"filter": [{"type": "range", "field": "createdAt", "parameters": {"from": 1}}]}, "range"),
        ({"sort": [{"field": "createdAt", "order": "sideways"}]}, "sort"),
        ({"total-count-mode": 7}, "total-count-mode"),
        ({"associations": {"lineItems": 1}}, "lineItems"),
    ],
)
def test_invalid_criteria_answer_400_in_shopware_format(
    sb: Sandbox, criteria: Any, detail: str
) -> None:
    response = search(sb, criteria, raw=isinstance(criteria, bytes))
    assert detail in assert_shop_error(response, 400)


@pytest.mark.parametrize(("seed", "second"), [(0, False), (1, False), (2, False), (0, True)])
def test_every_order_validates_against_shopwares_openapi(
    order_schema: Draft202012Validator, seed: int, second: bool
) -> None:
    clock = ManualClock(NOW)
    history = timedelta(hours=2)
    with Sandbox(seed=seed, clock=clock, history=history, second_shop=second) as sandbox:
        shop = sandbox.shop2 if second else sandbox.shop
        assert shop is not None
        token = shop_token(sandbox, second)
        orders: list[dict[str, Any]] = []
        page = 1
        while True:
            criteria = window(NOW - timedelta(hours=3), NOW, page=page, limit=100)
            body = search(sandbox, criteria, token=token, second=second).json()
            orders += body["data"]
            if len(body["data"]) < 100:
                break
            page += 1
        assert len(orders) == len(shop.orders) == body["total"] > 300
        truth = shop.truth
        states = Counter(o["stateMachineState"]["technicalName"] for o in orders)
        assert set(states) == (set(ORDER_STATES) if second else {"open"}), states
        for order in orders:
            errors = [e.message for e in order_schema.iter_errors(without_nulls(order))]
            if truth[order["id"]].schema_valid:
                assert errors == [], (order["orderNumber"], errors)
            else:  # a null e-mail breaks Shopware's own schema (OrderCustomer.email required)
                assert errors == ["'email' is a required property"], errors
            assert_order_is_consistent(order)


def assert_order_is_consistent(order: dict[str, Any]) -> None:
    stamp = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00$")
    assert stamp.match(order["createdAt"]) and order["orderDateTime"] == order["createdAt"]
    assert re.fullmatch(r"[0-9a-f]{32}", order["id"])
    lines = order["lineItems"]
    for line in lines:
        assert line["totalPrice"] == round(line["unitPrice"] * line["quantity"], 2)
        if line["type"] == "product":
            assert line["payload"]["productNumber"]
        else:
            assert line["type"] == "promotion" and line["totalPrice"] < 0
            assert "productNumber" not in line["payload"]
        taxes = line["price"]["calculatedTaxes"]  # a list; null only in malformed orders
        assert all(t.keys() == {"tax", "taxRate", "price"} for t in taxes or [])
    assert order["shippingTotal"] == order["deliveries"][0]["shippingCosts"]["totalPrice"]
    # Gross and tax-free: the customer pays the positions and shipping; net: plus the taxes
    # (test_vat_sandbox checks the taxes themselves).
    status = order["taxStatus"]
    assert status == order["price"]["taxStatus"] in ("gross", "net", "tax-free")
    charged = round(sum(line["totalPrice"] for line in lines) + order["shippingTotal"], 2)
    taxes = sum(t["tax"] for t in order["price"]["calculatedTaxes"])
    assert order["amountTotal"] == round(charged + (taxes if status == "net" else 0), 2)
    assert order["amountNet"] == round(charged - (taxes if status == "gross" else 0), 2)
    assert order["amountNet"] <= order["amountTotal"]


# --- second shop, order states -------------------------------------------------------------


def test_second_shop_serves_its_own_orders_with_its_own_credentials(clock: ManualClock) -> None:
    with Sandbox(seed=3, clock=clock, second_shop=True) as sb:
        assert sb.shop2 is not None and sb.shop2_url not in (sb.shop_url, sb.erp_url)
        first = sb.shop.add_orders(2, start=START, end=END)
        second = sb.shop2.add_orders(3, start=START, end=END)

        # Each shop accepts only its own client, and only its own tokens.
        wrong = requests.post(sb.shop2_url + SHOP_TOKEN_PATH, json=shop_grant(), timeout=TIMEOUT)
        assert "Client authentication failed" in assert_shop_error(wrong, 401, detail=False)
        wrong = requests.post(sb.shop_url + SHOP_TOKEN_PATH, json=shop_grant(True), timeout=TIMEOUT)
        assert_shop_error(wrong, 401, detail=False)
        token, token2 = shop_token(sb), shop_token(sb, second=True)
        assert_shop_error(search(sb, window(), token=token, second=True), 401)
        assert_shop_error(search(sb, window(), token=token2), 401)

        found = search(sb, window(), token=token).json()["data"]
        found2 = search(sb, window(), token=token2, second=True).json()["data"]
        assert [o["id"] for o in found] == [o["id"] for o in first]
        assert [o["id"] for o in found2] == [o["id"] for o in second]
        assert [o["orderNumber"] for o in found] == ["10001", "10002"]
        assert [o["orderNumber"] for o in found2] == ["50001", "50002", "50003"]
        assert [o["autoIncrement"] for o in found2] == [50001, 50002, 50003]

        b2b, storefront = (
            stable_id("sales_channel", "b2b"),
            stable_id("sales_channel", "storefront"),
        )
        assert {o["salesChannelId"] for o in found} == {storefront}
        assert {o["salesChannelId"] for o in found2} == {b2b}
        for channel, count in ((b2b, 3), (storefront, 0)):
            criteria = {"filter": [{"type": "equals", "field": "salesChannelId", "value": channel}]}
            assert len(search(sb, criteria, token=token2, second=True).json()["data"]) == count

        assert sb.env()["SHOP_API_URL"] == sb.shop_url  # env() is the first shop's
        assert sb.env()["SHOP_CLIENT_ID"] == settings.SANDBOX_SHOP_CLIENT_ID
        assert sb.shop.tokens_issued == sb.shop2.tokens_issued == 1
        urls = [sb.shop_url, sb.erp_url, sb.shop2_url]
    for url in urls:  # stopping stops all three servers
        with pytest.raises(requests.ConnectionError):
            requests.get(url + "/sandbox/state", timeout=2)


def test_second_shop_is_b2b_from_the_same_data_with_other_orders(clock: ManualClock) -> None:
    with pytest.raises(RuntimeError):
        _ = Sandbox().shop2_url
    history = timedelta(hours=2)
    with Sandbox(seed=4, clock=clock, history=history, second_shop=True) as sb:
        assert sb.shop2 is not None and sb.shop2.data is sb.shop.data is sb.data
        assert sb.shop.orders.keys().isdisjoint(sb.shop2.orders)
        created = {t.created_at for t in sb.shop.truth.values()}
        created2 = [t.created_at for t in sb.shop2.truth.values()]
        assert len(created2) > 300 and not created.issuperset(created2)  # own arrival times
        assert min(created2) >= NOW - history and max(created2) < NOW
        numbers = [int(t.order_number) for t in sb.shop2.truth.values()]
        assert numbers == list(range(50001, 50001 + len(numbers)))
        companies = [bool(o["orderCustomer"]["company"]) for o in sb.shop2.orders.values()]
        assert sum(companies) / len(companies) > 0.8  # mostly company customers
        everyone = [bool(o["orderCustomer"]["company"]) for o in sb.shop.orders.values()]
        assert sum(everyone) / len(everyone) < 0.5
        for truth in sb.shop2.truth.values():  # the shared ERP knows the items
            if truth.malformed is None:
                assert all(sb.erp.item_by_code(sku) for sku in truth.skus), truth


def test_order_state_option_and_equals_any_on_state(sb: Sandbox) -> None:
    orders = {state: sb.shop.add_order(START, state=state) for state in ORDER_STATES}
    default = sb.shop.add_order(START)
    for state, order in [*orders.items(), ("open", default)]:
        machine_state = order["stateMachineState"]
        assert machine_state["technicalName"] == state
        assert machine_state["name"] == ORDER_STATES[state]
        assert order["stateId"] == machine_state["id"] == stable_id("state", "order.state", state)
        assert sb.shop.truth[order["id"]].state == state
    assert orders["completed"]["stateMachineState"]["name"] == "Done"
    # The state does not change what the route should deliver (EU and well-formed).
    assert sb.shop.truth[orders["cancelled"]["id"]].expected_in_erp
    with pytest.raises(ValueError, match="state"):
        sb.shop.add_order(START, state="shipped")

    token = shop_token(sb)
    active = ["open", "in_progress"]
    for field in ("stateMachineState.technicalName", "order.stateMachineState.technicalName"):
        criteria = {"filter": [{"type": "equalsAny", "field": field, "value": active}]}
        ids = {o["id"] for o in search(sb, criteria, token=token).json()["data"]}
        assert ids == {orders["open"]["id"], orders["in_progress"]["id"], default["id"]}
    closed = "|".join(stable_id("state", "order.state", s) for s in ("cancelled", "completed"))
    pipe = {"filter": [{"type": "equalsAny", "field": "stateId", "value": closed}]}
    ids = {o["id"] for o in search(sb, pipe, token=token).json()["data"]}
    assert ids == {orders["cancelled"]["id"], orders["completed"]["id"]}
    criteria = {
        "filter": [
            {"type": "equals", "field": "stateMachineState.technicalName", "value": "cancelled"},
            *window()["filter"],
        ],
        "associations": {"lineItems": {}, "stateMachineState": {}},
    }
    [found] = search(sb, criteria, token=token).json()["data"]
    assert found["id"] == orders["cancelled"]["id"]
    assert found["stateMachineState"]["technicalName"] == "cancelled"


def test_mixed_states_roughly_as_configured(clock: ManualClock) -> None:
    factory = OrderFactory(SandboxData.build(5))
    start = datetime(2026, 11, 1, tzinfo=UTC)
    orders = [factory.make_order(start, malformed="random", state="random") for _ in range(4000)]
    shares = Counter(factory.truth[o["id"]].state for o in orders)
    for state, share in {**STATE_SHARES, "open": 1 - sum(STATE_SHARES.values())}.items():
        assert abs(shares[state] / len(orders) - share) < 0.02, (state, shares)
    assert all(
        o["stateMachineState"]["technicalName"] == factory.truth[o["id"]].state for o in orders
    )

    # Only a shop with states="mixed" draws states; the default keeps every order open.
    history = timedelta(hours=3)
    plain = SandboxShop(seed=5, clock=clock)
    mixed = SandboxShop(seed=5, clock=clock, states="mixed")
    assert {plain.truth[o["id"]].state for o in plain.add_history(history, 5)} == {"open"}
    drawn = Counter(mixed.truth[o["id"]].state for o in mixed.add_history(history, 5))
    assert set(drawn) == set(ORDER_STATES) and drawn["open"] / drawn.total() > 0.7
    assert mixed.add_order(START)["stateMachineState"]["technicalName"] == "open"
    assert SandboxShop.b2b().states == "mixed"
    with pytest.raises(ValueError):
        SandboxShop(states="closed")


# --- generator -----------------------------------------------------------------------------


def test_generated_orders_are_deterministic_and_mixed() -> None:
    def run(seed: int) -> tuple[list[dict[str, Any]], OrderFactory]:
        factory = OrderFactory(SandboxData.build(seed))
        start = datetime(2026, 11, 1, tzinfo=UTC)
        orders = [
            factory.make_order(start + timedelta(seconds=20 * i), malformed="random")
            for i in range(2000)
        ]
        return orders, factory

    orders, factory = run(5)
    assert run(5)[0] == orders
    assert run(6)[0] != orders
    truths = list(factory.truth.values())
    share = lambda pred: sum(map(pred, truths)) / len(truths)  # noqa: E731
    assert 0.62 < share(lambda t: t.eu) < 0.78
    assert 0.06 < share(lambda t: t.shipping_country != t.billing_country) < 0.14
    assert 0.15 < share(lambda t: t.has_promotion) < 0.25
    assert 0.015 < share(lambda t: t.malformed is not None) < 0.05
    assert {t.malformed for t in truths} == {None, *MALFORMED_KINDS}
    assert {t.currency for t in truths} == {"EUR", "GBP", "CHF", "SEK"}
    assert [o["orderNumber"] for o in orders[:3]] == ["10001", "10002", "10003"]
    assert {o["billingAddress"]["country"]["iso"] for o in orders} >= {"GB", "CH", "US", "NO"}


def test_each_malformed_kind_breaks_what_it_says() -> None:
    factory = OrderFactory(SandboxData.build(0))
    erp_skus = {p.sku for p in factory.data.products}
    kinds = {kind: factory.make_order(NOW, malformed=kind) for kind in MALFORMED_KINDS}
    assert kinds["missing_email"]["orderCustomer"]["email"] is None
    products = [li for li in kinds["unknown_sku"]["lineItems"] if li["type"] == "product"]
    assert any(li["payload"]["productNumber"] not in erp_skus for li in products)
    assert 0 in [li["quantity"] for li in kinds["zero_quantity"]["lineItems"]]
    assert kinds["no_line_items"]["lineItems"] == []
    unknown = kinds["unknown_country"]
    assert unknown["billingAddress"]["country"]["iso"] == "XX"
    assert unknown["deliveries"][0]["shippingOrderAddress"]["country"]["iso"] == "XX"
    assert kinds["null_currency"]["currency"] is None
    assert kinds["null_currency"]["currencyId"]
    assert all(not factory.truth[o["id"]].expected_in_erp for o in kinds.values())


def test_catalogue_and_customers_match_between_shop_and_erp() -> None:
    data = SandboxData.build(0)
    erp = SandboxErp(data=data)
    codes = {i["Code"] for i in erp.items.values()}
    assert codes == {p.sku for p in data.products} | {"SHIPPING", "DISCOUNT"}
    assert not codes & {p.sku for p in data.unknown_products}
    assert len(data.products) >= 25 and len(data.customers) == 40
    in_erp = [c for c in data.customers if c.in_erp]
    assert 12 <= len(in_erp) <= 28
    assert {a["Email"] for a in erp.accounts.values()} == {c.email for c in in_erp}
    names = {f"{c.first_name} {c.last_name}" for c in data.customers}
    assert {"Zoë Łukasiewicz", "José Núñez", "Søren Ærø"} <= names
    assert erp.account_by_email("o'brien@example.ie") is not None
    assert any("Ä" in p.name for p in data.products)


# --- ERP: tokens ---------------------------------------------------------------------------


def test_erp_refresh_token_rotates_and_early_refresh_is_refused(
    sb: Sandbox, clock: ManualClock
) -> None:
    first = refresh(sb)
    assert first.status_code == 200
    assert first.json()["expires_in"] == "600"
    token = ErpToken.model_validate(first.json())
    assert token.refresh_token != settings.SANDBOX_ERP_REFRESH_TOKEN

    # Using the new pair kills every older refresh token (Exact's rule).
    headers = {"Authorization": f"Bearer {token.access_token}"}
    assert requests.get(sb.erp_url + data_path(DIVISION, ITEMS), headers=headers, timeout=TIMEOUT)
    clock.advance(600)
    dead = refresh(sb, settings.SANDBOX_ERP_REFRESH_TOKEN)
    assert "invalid" in assert_exact_error(dead, 400)
    assert dead.json()["error"] == "invalid_grant"

    clock.set(NOW + timedelta(seconds=700))
    second = ErpToken.model_validate(refresh(sb, token.refresh_token).json())
    clock.advance(30)
    early = refresh(sb, second.refresh_token)
    assert "access_token not expired" in assert_exact_error(early, 400)
    assert early.headers["Reason"].startswith("TooEarlyToRefreshTokens")
    # The refusal leaves both the access token and the refresh token working.
    headers = {"Authorization": f"Bearer {second.access_token}"}
    url = sb.erp_url + data_path(DIVISION, ITEMS)
    assert requests.get(url, headers=headers, timeout=TIMEOUT).status_code == 200
    clock.advance(MIN_REFRESH_INTERVAL_S)
    assert refresh(sb, second.refresh_token).status_code == 200
    assert sb.erp.token_refreshes == 3 and sb.erp.token_calls == 5


def test_erp_previous_refresh_token_works_until_the_new_pair_is_used(
    sb: Sandbox, clock: ManualClock
) -> None:
    """Exact's grace: an answer lost on the way leaves the previous token usable; an app
    configured without it (``strict_rotation``) refuses it at once."""
    lost = ErpToken.model_validate(refresh(sb).json())  # as if this answer never arrived
    clock.advance(MIN_REFRESH_INTERVAL_S)
    again = refresh(sb, settings.SANDBOX_ERP_REFRESH_TOKEN)
    assert again.status_code == 200
    current = ErpToken.model_validate(again.json())
    # The lost pair died when the previous token was used again.
    clock.advance(MIN_REFRESH_INTERVAL_S)
    assert refresh(sb, lost.refresh_token).json()["error"] == "invalid_grant"
    headers = {"Authorization": f"Bearer {current.access_token}"}
    assert requests.get(sb.erp_url + data_path(DIVISION, ITEMS), headers=headers, timeout=TIMEOUT)
    assert refresh(sb, settings.SANDBOX_ERP_REFRESH_TOKEN).status_code == 400

    sb.erp.strict_rotation = True
    clock.advance(MIN_REFRESH_INTERVAL_S)
    newest = ErpToken.model_validate(refresh(sb, current.refresh_token).json())
    clock.advance(MIN_REFRESH_INTERVAL_S)
    assert refresh(sb, current.refresh_token).status_code == 400
    assert refresh(sb, newest.refresh_token).status_code == 200


def test_erp_token_endpoint_rejects_wrong_client_and_grant(sb: Sandbox) -> None:
    assert "client" in assert_exact_error(refresh(sb, client_secret="nope"), 401)
    assert_exact_error(refresh(sb, grant_type="client_credentials"), 400)
    assert refresh(sb).status_code == 200  # the failed calls did not use the token up


def test_erp_access_token_expires(clock: ManualClock) -> None:
    erp = SandboxErp(clock=clock, token_lifetime_s=2, min_refresh_interval_s=0)
    with Sandbox(clock=clock, erp=erp) as sandbox:
        caller = Erp(sandbox)
        assert caller.get(ITEMS).status_code == 200
        clock.advance(2)
        assert_exact_error(caller.get(ITEMS), 401)
        caller.token = erp_token(sandbox)  # no early-refresh refusal with interval 0
        assert caller.get(ITEMS).status_code == 200


def test_erp_data_calls_need_a_token_and_the_right_division(sb: Sandbox, erp: Erp) -> None:
    url = erp.url(ITEMS)
    no_token = requests.get(url, timeout=TIMEOUT)
    assert "Unauthorized" in assert_exact_error(no_token, 401)
    assert_exact_error(erp.get(ITEMS, token="forged"), 401)
    headers = {"Authorization": f"Bearer {erp.token}"}
    other = requests.get(erp.url(ITEMS, division="999"), headers=headers, timeout=TIMEOUT)
    assert "999" in assert_exact_error(other, 403)


# --- ERP: look-ups, creates, paging --------------------------------------------------------


def test_odata_eq_filter_with_quoted_email_and_select(sb: Sandbox, erp: Erp) -> None:
    response = erp.get(ACCOUNTS, **{"$filter": eq_filter("Email", "o'brien@example.ie")})
    [account] = results(response.json())
    assert account["Email"] == "o'brien@example.ie"
    selected = erp.get(
        ACCOUNTS, **{"$filter": "Email eq 'o''brien@example.ie'", "$select": "ID"}
    ).json()
    [only] = results(selected)
    assert set(only) <= {"ID", "__metadata"} and only["ID"] == account["ID"]

    nobody = erp.get(ACCOUNTS, **{"$filter": eq_filter("Email", "nobody@example.com")})
    assert nobody.status_code == 200 and results(nobody.json()) == []
    assert_exact_error(erp.get(ACCOUNTS, **{"$filter": "Email eq o'brien"}), 400)
    assert_exact_error(erp.get(ACCOUNTS, **{"$filter": "substringof('a', Email)"}), 400)
    assert_exact_error(erp.get(ACCOUNTS, **{"$filter": "Shoe eq 'x'"}), 400)
    assert_exact_error(erp.get(ACCOUNTS, **{"$select": "ID,Shoe"}), 400)


def test_item_lookup_by_code(sb: Sandbox, erp: Erp) -> None:
    for code in ("SW10001", "SHIPPING", "DISCOUNT"):
        [item] = results(erp.get(ITEMS, **{"$filter": eq_filter("Code", code)}).json())
        assert set(item) == {"__metadata", "ID", "Code", "Description", "Unit", "SalesVatCode"}
        assert item["Code"] == code
    unknown = erp.get(ITEMS, **{"$filter": eq_filter("Code", "SW99901"), "$select": "ID"})
    assert results(unknown.json()) == []


def test_create_account_and_sales_order_then_find_it_by_your_ref(sb: Sandbox, erp: Erp) -> None:
    new = {"Name": "Zoë Łukasiewicz", "Email": "zoe@example.pl", "Country": "PL", "Status": "C"}
    created = erp.post(ACCOUNTS, new)
    assert created.status_code == 201
    account_id = single(created.json())["ID"]
    assert sb.erp.account_by_email("ZOE@example.pl")["ID"] == account_id  # type: ignore[index]

    first = erp.post(SALES_ORDERS, erp.sales_order("10001", OrderedBy=account_id))
    assert first.status_code == 201
    ref = SalesOrderRef.model_validate(single(first.json()))
    assert ref.YourRef == "10001" and ref.OrderNumber == 1
    second = SalesOrderRef.model_validate(
        single(erp.post(SALES_ORDERS, erp.sales_order("10002")).json())
    )
    assert second.OrderNumber == 2

    found = erp.get(
        SALES_ORDERS,
        **{"$filter": eq_filter("YourRef", "10001"), "$select": "OrderID,OrderNumber,YourRef"},
    )
    [hit] = results(found.json())
    assert set(hit) == {"__metadata", "OrderID", "OrderNumber", "YourRef"}
    assert (hit["OrderID"], hit["OrderNumber"]) == (ref.OrderID, ref.OrderNumber)

    # No deduplication: the same YourRef twice makes two orders, which tests can detect.
    assert erp.post(SALES_ORDERS, erp.sales_order("10001")).status_code == 201
    assert len(sb.erp.orders_with_ref("10001")) == 2
    assert sb.erp.duplicate_refs() == {"10001": 2}
    stored = sb.erp.sales_orders[0]
    assert stored["SalesOrderLines"][0]["ItemCode"] == "SW10001"
    assert stored["OrderedBy"] == account_id
    assert sb.erp.calls["salesorders_post"] == 3 and sb.erp.calls["accounts_post"] == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"SalesOrderLines": []}, "SalesOrderLines"),
        ({"SalesOrderLines": None}, "SalesOrderLines"),
        ({"OrderedBy": "00000000-0000-4000-8000-000000000000"}, "OrderedBy"),
        ({"Currency": "XAU"}, "XAU"),
        # Exact requires only OrderedBy and SalesOrderLines (YourRef may be null; see
        # test_conformance_exact.py for the minimal order it accepts).
        ({"OrderedBy": None}, "OrderedBy"),
        ({"line": {"Quantity": 0}}, "Quantity"),
        ({"line": {"Item": "00000000-0000-4000-8000-000000000001"}}, "Item"),
        ({"line": {"NetPrice": "cheap"}}, "NetPrice"),
    ],
)
def test_sales_order_validation_errors_in_exact_format(
    sb: Sandbox, erp: Erp, change: dict[str, Any], message: str
) -> None:
    body = erp.sales_order("10009")
    if "line" in change:
        body["SalesOrderLines"][0].update(change.pop("line"))
    body.update(change)
    assert message in assert_exact_error(erp.post(SALES_ORDERS, body), 400)
    assert sb.erp.sales_orders == []


def test_account_validation_errors(sb: Sandbox, erp: Erp) -> None:
    base = {"Name": "Søren Ærø", "Email": "s@example.dk", "Country": "DK"}
    assert "Name" in assert_exact_error(erp.post(ACCOUNTS, {**base, "Name": ""}), 400)
    # Exact needs neither Email nor Country (ossobv's ExactCustomer sends neither).
    assert erp.post(ACCOUNTS, {"Name": "x"}).status_code == 201
    assert "XX" in assert_exact_error(erp.post(ACCOUNTS, {**base, "Country": "XX"}), 400)
    assert_exact_error(erp.post(ACCOUNTS, ["not", "an", "object"]), 400)


def test_sales_orders_page_by_60_with_next_links(sb: Sandbox, erp: Erp) -> None:
    for n in range(130):
        assert erp.post(SALES_ORDERS, erp.sales_order(str(20000 + n))).status_code == 201
    refs: list[str] = []
    url: str | None = erp.url(SALES_ORDERS) + "?$select=YourRef"
    pages = 0
    while url:
        body = requests.get(
            url, headers={"Authorization": f"Bearer {erp.token}"}, timeout=TIMEOUT
        ).json()
        refs += [row["YourRef"] for row in results(body)]
        url = body["d"].get("__next")
        pages += 1
    assert pages == 3
    assert refs == [str(20000 + n) for n in range(130)]
    top = erp.get(SALES_ORDERS, **{"$top": "1"}).json()
    assert len(results(top)) == 1 and "__next" not in top["d"]


# --- ERP: rate limits ----------------------------------------------------------------------


def test_rate_limit_headers_and_429_when_the_minute_budget_is_spent(
    sb: Sandbox, erp: Erp, clock: ManualClock
) -> None:
    sb.erp.set_rate_limit(per_minute=5, per_day=100, minute_window_s=60)
    remaining = []
    for _ in range(5):
        response = erp.get(ITEMS, **{"$top": "1"})
        assert response.status_code == 200
        assert set(RATE_LIMIT_HEADERS) <= set(response.headers)
        remaining.append(RateLimit.from_headers(response.headers).minutely_remaining)  # type: ignore[union-attr]
    assert remaining == [4, 3, 2, 1, 0]

    over = erp.get(ITEMS)
    assert "Too many requests" in assert_exact_error(over, 429)
    limit = RateLimit.from_headers(over.headers)
    assert limit is not None
    assert (limit.minutely_limit, limit.minutely_remaining) == (5, 0)
    assert limit.minutely_reset_ms == int((NOW + timedelta(seconds=60)).timestamp() * 1000)
    assert (limit.daily_limit, limit.daily_remaining) == (100, 95)
    assert limit.daily_reset_ms == int(datetime(2026, 11, 23, tzinfo=UTC).timestamp() * 1000)
    assert sb.erp.calls["items_get"] == 5  # the refused call did not reach the resource

    clock.advance(60)
    assert erp.get(ITEMS).status_code == 200


def test_daily_budget(sb: Sandbox, erp: Erp, clock: ManualClock) -> None:
    sb.erp.set_rate_limit(per_minute=100, per_day=3)
    for _ in range(3):
        assert erp.get(ITEMS).status_code == 200
    clock.advance(300)  # a new minute window, same day
    over = erp.get(ITEMS)
    assert_exact_error(over, 429)
    assert over.headers["X-RateLimit-Remaining"] == "0"


# --- faults --------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["504", "drop"])
def test_lost_after_commit_stores_the_order_but_the_client_sees_an_error(
    sb: Sandbox, erp: Erp, mode: str
) -> None:
    sb.erp.faults.add(
        "lost_after_commit", path_contains="salesorder/SalesOrders", method="POST", mode=mode
    )
    assert erp.get(SALES_ORDERS).status_code == 200  # a GET does not consume the fault
    if mode == "504":
        lost = erp.post(SALES_ORDERS, erp.sales_order("10001"))
        assert "Gateway Timeout" in assert_exact_error(lost, 504)
    else:
        with pytest.raises(requests.ConnectionError):
            erp.post(SALES_ORDERS, erp.sales_order("10001"))
    assert [o["YourRef"] for o in sb.erp.sales_orders] == ["10001"]
    assert sb.erp.faults.injected == Counter({"lost_after_commit": 1})
    assert sb.erp.faults.pending == []
    found = erp.get(SALES_ORDERS, **{"$filter": eq_filter("YourRef", "10001")})
    assert len(results(found.json())) == 1
    assert erp.post(SALES_ORDERS, erp.sales_order("10002")).status_code == 201


def test_erp_5xx_and_429_faults_happen_before_the_commit(sb: Sandbox, erp: Erp) -> None:
    sb.erp.faults.add("503", path_contains="SalesOrders", method="POST")
    sb.erp.faults.add("500", path_contains="SalesOrders", method="POST")
    sb.erp.faults.add("429", path_contains="SalesOrders", method="POST")
    assert_exact_error(erp.post(SALES_ORDERS, erp.sales_order("1")), 503)
    assert_exact_error(erp.post(SALES_ORDERS, erp.sales_order("1")), 500)
    limited = erp.post(SALES_ORDERS, erp.sales_order("1"))
    assert_exact_error(limited, 429)
    assert limited.headers["X-RateLimit-Minutely-Remaining"] == "0"
    assert sb.erp.sales_orders == []
    assert erp.post(SALES_ORDERS, erp.sales_order("1")).status_code == 201


def test_token_errors_and_slow_answers(sb: Sandbox) -> None:
    sb.erp.faults.add("token_error")
    assert_exact_error(refresh(sb), 503)
    assert refresh(sb).status_code == 200
    sb.shop.faults.add("token_error", path_contains="oauth")
    assert_shop_error(requests.post(sb.shop_url + SHOP_TOKEN_PATH, json={}, timeout=TIMEOUT), 503)
    token = shop_token(sb)
    sb.shop.faults.add("slow", seconds=0.3, path_contains="search")
    started = time.monotonic()
    assert search(sb, window(), token=token).status_code == 200
    assert time.monotonic() - started >= 0.3
    with pytest.raises(requests.Timeout):
        sb.shop.faults.add("slow", seconds=1.0)
        requests.post(
            sb.shop_url + ORDER_SEARCH_PATH,
            json=window(),
            headers={"Authorization": f"Bearer {token}"},
            timeout=0.2,
        )


def test_shop_faults_use_shopware_errors_and_malformed_json(sb: Sandbox) -> None:
    sb.shop.add_orders(3, start=START, end=END)
    token = shop_token(sb)
    sb.shop.faults.add("503", path_contains="/api/search/order")
    sb.shop.faults.add("429", path_contains="/api/search/order")
    sb.shop.faults.add("malformed_json", path_contains="/api/search/order")
    assert_shop_error(search(sb, window(), token=token), 503)
    limited = search(sb, window(), token=token)
    assert_shop_error(limited, 429)
    assert limited.headers["Retry-After"] == "1"
    broken = search(sb, window(), token=token)
    assert broken.status_code == 200
    with pytest.raises(ValueError):
        broken.json()
    assert len(search(sb, window(), token=token).json()["data"]) == 3
    assert sb.shop.faults.injected == Counter({"503": 1, "429": 1, "malformed_json": 1})


def test_random_faults_are_seeded_and_off_by_default() -> None:
    def draws(seed: int) -> list[str | None]:
        plan = FaultPlan({"500": 0.3, "slow": 0.1}, seed=seed, slow_seconds=0)
        hits = [plan.take("GET", "/x", {"500", "slow"}) for _ in range(200)]
        return [h.kind if h else None for h in hits]

    assert draws(1) == draws(1) != draws(2)
    assert 40 < draws(1).count("500") < 80
    idle = FaultPlan()
    assert all(idle.take("POST", "/x", {"500", "503"}) is None for _ in range(100))
    with pytest.raises(ValueError):
        FaultPlan({"teapot": 0.1})


# --- state, lifecycle, CLI -----------------------------------------------------------------


def test_sandbox_state_over_http(sb: Sandbox, erp: Erp) -> None:
    assert erp.post(SALES_ORDERS, erp.sales_order("10001")).status_code == 201
    state = requests.get(sb.erp_url + "/sandbox/state", timeout=TIMEOUT).json()
    [order] = state["sales_orders"]
    assert order["YourRef"] == "10001" and order["OrderID"]
    assert order["lines"][0]["ItemCode"] == "SW10001"
    assert state["accounts"] == len(sb.erp.accounts)
    assert state["calls"]["salesorders_post"] == 1 and state["calls"]["token"] == 1
    sb.shop.add_orders(2)
    shop_state = requests.get(sb.shop_url + "/sandbox/state", timeout=TIMEOUT).json()
    assert shop_state["orders"] == 2


def test_unknown_routes_answer_404_in_each_format(sb: Sandbox) -> None:
    assert_shop_error(requests.get(sb.shop_url + "/api/product", timeout=TIMEOUT), 404)
    assert_exact_error(requests.get(sb.erp_url + "/api/v2/x", timeout=TIMEOUT), 404)


def test_history_and_env(clock: ManualClock) -> None:
    with Sandbox(seed=9, clock=clock, history=timedelta(minutes=30)) as sandbox:
        created = [t.created_at for t in sandbox.shop.truth.values()]
        assert min(created) >= NOW - timedelta(minutes=30) and max(created) < NOW
        for minute in range(0, 30, 5):
            start = NOW - timedelta(minutes=30 - minute)
            assert sandbox.shop.truth_between(start, start + timedelta(minutes=5))
        spryker = sorted(o["created_at"] for o in sandbox.spryker.orders.values())
        assert len(spryker) > 30 and spryker[0] >= f"{NOW - timedelta(minutes=30):%Y-%m-%d %H:%M}"
        assert spryker[-1] < f"{NOW:%Y-%m-%d %H:%M:%S}"
        env = sandbox.env()
        assert env["SHOP_API_URL"] == sandbox.shop_url
        assert env["ERP_REFRESH_TOKEN"] == settings.SANDBOX_ERP_REFRESH_TOKEN
        assert env["SPRYKER_API_URL"] == sandbox.spryker_url != sandbox.shop_url
        assert env["SPRYKER_USERNAME"] == settings.SANDBOX_SPRYKER_USERNAME
        assert env["SPRYKER_PASSWORD"] == settings.SANDBOX_SPRYKER_PASSWORD
        url, spryker_url = sandbox.shop_url, sandbox.spryker_url
    for gone in (url + "/sandbox/state", spryker_url + "/token"):
        with pytest.raises(requests.ConnectionError):
            requests.get(gone, timeout=2)


def test_spryker_is_served_with_the_shops_data_and_clock(clock: ManualClock) -> None:
    with Sandbox(seed=2, clock=clock) as sandbox:
        assert sandbox.spryker.data is sandbox.data and sandbox.spryker.clock is clock
        (order_id,) = sandbox.spryker.add_orders([NOW])
        grant = {
            "grant_type": "password",
            "username": settings.SANDBOX_SPRYKER_USERNAME,
            "password": settings.SANDBOX_SPRYKER_PASSWORD,
        }
        token = requests.post(sandbox.spryker_url + "/token", data=grant, timeout=TIMEOUT)
        assert token.status_code == 200
        headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
        orders = requests.get(
            sandbox.spryker_url + "/dynamic-entity/sales-orders", headers=headers, timeout=TIMEOUT
        )
        assert [o["id_sales_order"] for o in orders.json()["data"]] == [order_id]
        skus = {i["sku"] for i in sandbox.spryker.orders[order_id]["salesOrderItems"]}
        assert skus <= {p.sku for p in sandbox.data.products}  # items the ERP knows


def test_arrivals_thread_adds_orders_now() -> None:
    with Sandbox(orders_per_minute=600, second_shop=True) as sandbox:  # one every ~0.1 s
        deadline = time.monotonic() + 5
        while min(len(shop.orders) for shop in sandbox.shops) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(sandbox.shops) == 2
        while len(sandbox.spryker.orders) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        for shop in sandbox.shops:
            assert len(shop.orders) >= 3
            newest = max(t.created_at for t in shop.truth.values())
            assert datetime.now(UTC) - newest < timedelta(seconds=5)
        assert len(sandbox.spryker.orders) >= 3
        assert min(int(t.order_number) for t in sandbox.shops[1].truth.values()) == 50001


def test_created_at_uses_shopware_format() -> None:
    order = OrderFactory(SandboxData.build(0)).make_order(
        datetime(2026, 11, 22, 6, 1, 2, 345678, tzinfo=UTC)
    )
    assert order["createdAt"] == "2026-11-22T06:01:02.345+00:00"
    assert order["createdAt"] == format_shop_datetime(datetime.fromisoformat(order["createdAt"]))
    with pytest.raises(ValueError):
        OrderFactory(SandboxData.build(0)).make_order(datetime(2026, 11, 22))  # noqa: DTZ001


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("second_shop", [True, False])
def test_console_entry_point_serves_until_sigterm(second_shop: bool, tmp_path: Path) -> None:
    shop_port, erp_port, shop2_port = _free_port(), _free_port(), _free_port()
    spryker_port, folder = _free_port(), tmp_path / "csv"
    command = [
        sys.executable, "-m", "integration_project.sandbox", "--shop-port", str(shop_port),
        "--erp-port", str(erp_port), "--shop2-port", str(shop2_port),
        "--spryker-port", str(spryker_port), "--csv-folder", str(folder),
        "--history-minutes", "10", "--orders-per-minute", "6",
    ]  # fmt: skip
    if not second_shop:
        command.append("--no-second-shop")
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ}, text=True
    )
    try:
        shop_url = f"http://127.0.0.1:{shop_port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                state = requests.get(shop_url + "/sandbox/state", timeout=1).json()
                break
            except requests.ConnectionError:
                assert process.poll() is None, process.stderr.read()  # type: ignore[union-attr]
                assert time.monotonic() < deadline
                time.sleep(0.2)
        assert state["orders"] > 0
        body = {
            "grant_type": "client_credentials",
            "client_id": settings.SANDBOX_SHOP_CLIENT_ID,
            "client_secret": settings.SANDBOX_SHOP_CLIENT_SECRET,
        }
        token = requests.post(shop_url + SHOP_TOKEN_PATH, json=body, timeout=TIMEOUT)
        assert token.status_code == 200 and token.json()["access_token"]
        shop2_url = f"http://127.0.0.1:{shop2_port}"
        if second_shop:  # all servers listen before any of them answers
            assert requests.get(shop2_url + "/sandbox/state", timeout=1).json()["orders"] > 0
            grant = requests.post(shop2_url + SHOP_TOKEN_PATH, json=shop_grant(True), timeout=1)
            assert grant.status_code == 200
        else:
            with pytest.raises(requests.ConnectionError):
                requests.get(shop2_url + "/sandbox/state", timeout=1)
        spryker_url = f"http://127.0.0.1:{spryker_port}"
        grant = {
            "grant_type": "password",
            "username": settings.SANDBOX_SPRYKER_USERNAME,
            "password": settings.SANDBOX_SPRYKER_PASSWORD,
        }
        assert requests.post(spryker_url + "/token", data=grant, timeout=1).status_code == 200
        assert any(name.endswith(".csv") for name in os.listdir(folder))  # history files
    finally:
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=10)
    assert process.returncode == 0
    assert shop_url in out and settings.SANDBOX_SHOP_CLIENT_SECRET in out
    assert spryker_url in out and str(folder) in out
    assert (shop2_url in out) is second_shop
    assert (settings.SANDBOX_SHOP2_CLIENT_SECRET in out) is second_shop
