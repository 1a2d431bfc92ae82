"""Spryker as an order source: the client against the sandbox backend over real HTTP (token,
refusals, paging by id batches, half-open windows), and the converter's orders as the mapping
reads them (every total equal to Spryker's grand total)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import requests

from integration_project.http import AuthError
from integration_project.sandbox.common import ManualClock
from integration_project.sandbox.server import Sandbox
from integration_project.sandbox.spryker import SandboxSpryker
from integration_project.settings import EU_27
from integration_project.shopware.models import ShopOrder
from integration_project.spryker.client import SprykerClient
from integration_project.spryker.convert import to_shop_order
from integration_project.spryker.models import NET_MODE
from integration_project.transforms import (
    MappedOrder,
    MappingRules,
    Quarantined,
    evaluate_order,
    to_sales_order,
)

T0 = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)
STEP = timedelta(minutes=7)
ORDERS = 120


@pytest.fixture
def backend() -> SandboxSpryker:
    app = SandboxSpryker(seed=7)
    app.add_orders(T0 + STEP * n for n in range(ORDERS))
    return app


@pytest.fixture
def server(backend: SandboxSpryker) -> Iterator[Sandbox]:
    with Sandbox(spryker=backend) as running:
        yield running


def client(server: Sandbox, **kwargs) -> SprykerClient:  # type: ignore[no-untyped-def]
    app = server.spryker
    kwargs.setdefault("username", app.username)
    kwargs.setdefault("password", app.password)
    return SprykerClient(server.spryker_url, max_retries=0, **kwargs)


def created(app: SandboxSpryker, order_id: int) -> datetime:
    text = app.orders[order_id]["created_at"]
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def ids_between(app: SandboxSpryker, start: datetime, end: datetime) -> list[int]:
    return sorted(i for i in app.orders if start <= created(app, i) < end)


def read_ids(c: SprykerClient, start: datetime, end: datetime, after_id: int = 0) -> list[int]:
    pages = c.orders_between(start, end, after_id=after_id)
    return [r["id_sales_order"] for page in pages for r in page]


# --- token -------------------------------------------------------------------------------------


def test_token_is_issued_once_and_cached(server: Sandbox) -> None:
    with client(server) as c:
        token = c.token()
        assert token and c.token() == token
        assert c.token_requests == 1


def test_wrong_password_names_the_variable_and_url_never_the_value(server: Sandbox) -> None:
    secret = "not-the-password-4711"
    with client(server, password=secret) as c, pytest.raises(AuthError) as raised:
        c.token()
    text = str(raised.value)
    assert "SPRYKER_PASSWORD" in text and "SPRYKER_USERNAME" in text
    assert f"{server.spryker_url}/token" in text and "invalid_grant" in text
    assert raised.value.status == 400
    assert secret not in text and secret not in repr(raised.value.__dict__)


def test_refusals_have_sprykers_shape(server: Sandbox) -> None:
    wrong = {"grant_type": "password", "username": server.spryker.username, "password": "x"}
    answer = requests.post(f"{server.spryker_url}/token", data=wrong, timeout=5)
    assert answer.status_code == 400
    assert answer.json() == {
        "errors": [
            {
                "code": "invalid_grant",
                "status": 400,
                "message": "The user credentials were incorrect.",
            }
        ]
    }
    missing = requests.get(f"{server.spryker_url}/dynamic-entity/sales-orders", timeout=5)
    assert missing.status_code == 403 and missing.json()["errors"][0]["code"] == "002"
    bad = requests.get(
        f"{server.spryker_url}/dynamic-entity/sales-orders",
        headers={"Authorization": "Bearer nope"},
        timeout=5,
    )
    assert bad.status_code == 401 and bad.json()["errors"][0]["code"] == "001"


def test_an_expired_token_is_renewed_once() -> None:
    clock = ManualClock(T0)
    app = SandboxSpryker(seed=7, clock=clock, token_lifetime_s=600)
    app.add_orders([T0, T0 + STEP])
    with Sandbox(spryker=app) as server, client(server) as c:
        assert read_ids(c, T0, T0 + STEP * 2) == sorted(app.orders)
        clock.advance(3600)  # the backend expires it; the client's own clock has not moved
        assert read_ids(c, T0, T0 + STEP * 2) == sorted(app.orders)
        assert c.token_requests == 2


# --- paging and windows ----------------------------------------------------------------------


def test_paging_returns_every_order_in_the_window_exactly_once(server: Sandbox) -> None:
    app = server.spryker
    start, end = T0 + STEP * 10, T0 + STEP * 95
    with client(server, page_size=9) as c:
        pages = list(c.orders_between(start, end))
    ids = [r["id_sales_order"] for page in pages for r in page]
    assert len(pages) > 5
    assert ids == ids_between(app, start, end) and len(ids) == 85
    assert max(app.orders) > len(app.orders)  # the walk crossed ids a rolled-back insert used


def test_windows_are_half_open() -> None:
    start, end = T0, T0 + timedelta(hours=1)
    moments = [
        start - timedelta(microseconds=1),
        start,
        start + timedelta(seconds=1),
        end - timedelta(milliseconds=1),
        end,
        end + timedelta(seconds=1),
    ]
    app = SandboxSpryker(seed=3, gap_share=0.0)
    ids = app.add_orders(moments)
    with Sandbox(spryker=app) as server, client(server, page_size=2) as c:
        assert read_ids(c, start, end) == ids[1:4]
        before, after = (
            read_ids(c, start - timedelta(hours=1), start),
            read_ids(c, end, end + timedelta(hours=1)),
        )
    assert before == ids[:1] and after == ids[4:]


def test_adjacent_windows_split_the_orders_without_overlap(server: Sandbox) -> None:
    bounds = [T0 + timedelta(hours=h) for h in range(0, 16, 3)]
    with client(server, page_size=25) as c:
        windows = [read_ids(c, a, b) for a, b in itertools.pairwise(bounds)]
        cursor = windows[0][-1]  # a later walk starts past what was read: the cursor
        resumed = read_ids(c, bounds[0], bounds[-1], after_id=cursor)
    flat = [i for w in windows for i in w]
    assert flat == sorted(set(flat)) == ids_between(server.spryker, bounds[0], bounds[-1])
    assert resumed == [i for i in flat if i > cursor]


def test_the_sandbox_is_deterministic_by_seed() -> None:
    one, two = SandboxSpryker(seed=5), SandboxSpryker(seed=5)
    one.add_orders(T0 + STEP * n for n in range(20))
    two.add_orders(T0 + STEP * n for n in range(20))
    assert one.orders == two.orders
    other = SandboxSpryker(seed=6)
    other.add_orders(T0 + STEP * n for n in range(20))
    assert other.orders != one.orders


# --- the converter and the mapping -----------------------------------------------------------


def read_all(server: Sandbox) -> list[dict]:
    with client(server, page_size=50) as c:
        return [r for page in c.orders_between(T0, T0 + STEP * ORDERS) for r in page]


def grand_total(record: dict) -> Decimal:
    return Decimal(record["salesOrderTotals"][-1]["grand_total"]) / 100


def test_converted_orders_are_shop_orders_whose_totals_are_sprykers(server: Sandbox) -> None:
    records = read_all(server)
    countries, modes = set(), set()
    for record in records:
        order = to_shop_order(record)
        parsed = ShopOrder.model_validate(order)
        assert parsed.id == str(record["id_sales_order"])
        assert parsed.orderNumber == record["order_reference"]
        assert Decimal(str(parsed.amountTotal)) == grand_total(record)
        lines = sum(Decimal(str(i.totalPrice)) for i in parsed.lineItems or [])
        goods = lines + Decimal(str(parsed.shippingTotal))
        taxes = Decimal(0)
        if parsed.taxStatus == "net":
            for price in [i.price for i in parsed.lineItems or []] + [parsed.shippingCosts]:
                taxes += sum(Decimal(str(t["tax"])) for t in price["calculatedTaxes"])
        assert goods + taxes == grand_total(record)
        countries.add(parsed.deliveries[0].shippingOrderAddress.country.iso)
        modes.add(record["price_mode"])
        assert len(parsed.lineItems or []) >= 2 and Decimal(str(parsed.shippingTotal)) > 0
    assert countries & EU_27 and countries - EU_27  # EU and export destinations
    assert NET_MODE in modes and "GROSS_MODE" in modes


def test_mapped_orders_invoice_what_the_customer_paid(server: Sandbox) -> None:
    mapped = skipped = 0
    for record in read_all(server):
        outcome = evaluate_order(to_shop_order(record), MappingRules())
        if isinstance(outcome, Quarantined):
            pytest.fail(f"order {record['id_sales_order']} quarantined: {outcome.reason}")
        if not isinstance(outcome, MappedOrder):
            skipped += 1  # ships outside the EU
            continue
        mapped += 1
        assert outcome.amount_total == grand_total(record)
        assert abs(outcome.invoice_total - grand_total(record)) <= Decimal("0.01") * len(
            outcome.lines
        )
        item_ids = {code: f"item-{code}" for code in outcome.item_codes}
        vat = {rate: f"V{rate}" for rate in outcome.vat_rates_to_look_up}
        body = to_sales_order(outcome, account_id="acct", item_ids=item_ids, vat_codes=vat)
        assert body["YourRef"] == record["order_reference"]
        assert len(body["SalesOrderLines"]) == len(outcome.lines)
    assert mapped > 20 and skipped > 5


def test_unreadable_records_and_unknown_expenses_are_quarantined(server: Sandbox) -> None:
    records = read_all(server)
    broken = {**records[0], "created_at": "yesterday"}
    outcome = evaluate_order(to_shop_order(broken))
    assert isinstance(outcome, Quarantined) and "created_at" in outcome.reason
    assert outcome.shop_order_id == str(records[0]["id_sales_order"])
    # A payment fee is no shipping cost: it must not be booked as one, nor vanish.
    record = next(r for r in records if r["shippingAddress"][0]["country"][0]["iso2_code"] == "DE")
    fee = {**record["salesExpenses"][0], "id_sales_expense": 999, "type": "PAYMENT_EXPENSE_TYPE"}
    with_fee = {**record, "salesExpenses": [*record["salesExpenses"], fee]}
    outcome = evaluate_order(to_shop_order(with_fee))
    assert isinstance(outcome, Quarantined) and "'custom'" in outcome.reason
