"""Pages read by DuckDB from the shop's bytes give the rows the Python path gives, and every
page the fast path cannot vouch for goes the Python way (``integration_project.page_rows``)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from integration_project import settings
from integration_project.http import ApiError
from integration_project.ledger.staging import page_table
from integration_project.page_rows import PageRows
from integration_project.sandbox import Sandbox
from integration_project.shopware.client import OrderPage, ShopwareClient

pytestmark = pytest.mark.integration

START = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
END = START + timedelta(minutes=5)
FALLBACK = START


def real_page(sb: Sandbox, n: int = 8) -> OrderPage:
    """A page of the sandbox shop's order search, as the route's client receives it."""
    sb.shop.add_orders(n, start=START, end=END)
    client = ShopwareClient(
        base_url=sb.shop_url,
        client_id=settings.SANDBOX_SHOP_CLIENT_ID,
        client_secret=settings.SANDBOX_SHOP_CLIENT_SECRET,
        max_retries=0,
    )
    with client:
        return client.search_orders_page(start=START, end=END, page=1, limit=50)


def rows_of(table: Any) -> list[tuple[Any, ...]]:
    """Rows as the ledger would compare them: everything but when they were read."""
    return sorted(
        (
            r["shop_order_id"],
            r["order_number"],
            r["created_at"],
            json.loads(r["payload"]),
        ).__repr__()
        for r in table.to_pylist()
    )


def read(page: OrderPage) -> tuple[PageRows, Any]:
    with PageRows("run-1", FALLBACK, preview=3) as rows:
        facts = rows.read(page)
        assert facts.entries == rows.buffered
        return rows, rows.take()


def with_body(page: OrderPage, body: bytes) -> OrderPage:
    return OrderPage(page=1, body=body, status=200, url=page.url, content_type="application/json")


def test_a_shop_page_is_read_by_duckdb_into_the_rows_python_would_stage(sandbox: Sandbox) -> None:
    page = real_page(sandbox)
    rows, table = read(page)
    assert (rows.fast_pages, rows.python_pages) == (1, 0)
    assert table.num_rows == 8
    assert rows_of(table) == rows_of(page_table("run-1", page.orders, FALLBACK))
    assert rows.preview_orders == page.orders[:3]


def _sub(page: OrderPage, member: str, value: bytes) -> bytes:
    """The page's bytes with ``value`` put before the first ``member``'s value (whatever the
    spacing the shop used); fails if the page has no such member."""
    pattern = re.compile(rb'"' + member.encode() + rb'":\s*')
    body, n = pattern.subn(lambda m: m.group(0) + value, page.body, count=1)
    assert n == 1, f"no {member} in the page"
    return body


def _edit_first(page: OrderPage, edit: Any) -> bytes:
    answer = json.loads(page.body)
    edit(answer["data"][0])
    return json.dumps(answer).encode()


def _nested(depth: int) -> Any:
    value: Any = "deep"
    for _ in range(depth):
        value = [value]
    return value


#: Bodies (made from a real page) the fast path must leave to Python, by what is unusual.
UNUSUAL: dict[str, Any] = {
    "NaN": lambda p: _sub(p, "amountTotal", b'NaN, "x": '),
    "Infinity": lambda p: _sub(p, "amountTotal", b'-Infinity, "x": '),
    "1e400": lambda p: _sub(p, "amountTotal", b'1e400, "x": '),
    "20 digits": lambda p: _sub(p, "amountTotal", b'12345678901234567890, "x": '),
    "escaped surrogate": lambda p: _sub(p, "orderNumber", b'"\\ud800", "x": '),
    "not UTF-8": lambda p: _sub(p, "orderNumber", b'"\xff", "x": '),
    "null entry": lambda p: re.sub(rb'"data":\s*\[', b'"data": [null, ', p.body, count=1),
    "id with a space": lambda p: _edit_first(p, lambda o: o.update(id="an id")),
    "id of 65 characters": lambda p: _edit_first(p, lambda o: o.update(id="a" * 65)),
    "numeric id": lambda p: _edit_first(p, lambda o: o.update(id=12345)),
    "createdAt with an offset": lambda p: _edit_first(
        p, lambda o: o.update(createdAt="2026-11-21T11:01:00.000+01:00")
    ),
    "createdAt missing": lambda p: _edit_first(p, lambda o: o.pop("createdAt")),
    "orderNumber a float": lambda p: _edit_first(p, lambda o: o.update(orderNumber=10001.5)),
    "orderNumber of 300 characters": lambda p: _edit_first(
        p, lambda o: o.update(orderNumber="9" * 300)
    ),
    "nested 150 deep": lambda p: _edit_first(p, lambda o: o.update(customFields=_nested(150))),
    "id named twice": lambda p: _sub(p, "orderNumber", b'"x", "id": "other", "y": '),
}


@pytest.mark.parametrize("unusual", sorted(UNUSUAL))
def test_a_page_with_something_unusual_goes_the_python_way(sandbox: Sandbox, unusual: str) -> None:
    page = real_page(sandbox, n=3)
    odd = with_body(page, UNUSUAL[unusual](page))
    rows, table = read(odd)
    assert (rows.fast_pages, rows.python_pages) == (0, 1)
    assert table.num_rows == len(odd.orders)
    expected = page_table("run-1", odd.orders, FALLBACK)
    assert [r["shop_order_id"] for r in table.to_pylist()] == expected.column(
        "shop_order_id"
    ).to_pylist()
    assert [r["payload"] for r in table.to_pylist()] == expected.column("payload").to_pylist()


def test_deep_but_allowed_nesting_stays_on_the_fast_path(sandbox: Sandbox) -> None:
    page = real_page(sandbox, n=3)
    ok = with_body(page, _edit_first(page, lambda o: o.update(customFields=_nested(90))))
    rows, table = read(ok)
    assert (rows.fast_pages, rows.python_pages) == (1, 0)
    assert rows_of(table) == rows_of(page_table("run-1", ok.orders, FALLBACK))


@pytest.mark.parametrize(
    "body",
    [b'{"total": 1, "data": [{"id": "0f', b"<html>busy</html>", b'{"total": 1, "data": {}}'],
)
def test_an_answer_that_is_no_page_fails_naming_the_page(sandbox: Sandbox, body: bytes) -> None:
    page = with_body(real_page(sandbox, n=1), body)
    with PageRows("run-1", FALLBACK) as rows, pytest.raises(ApiError) as failed:
        rows.read(page)
    assert "page 1 of the order search" in str(failed.value)
    assert rows.buffered == 0


def test_a_fetch_that_reads_an_order_twice_stages_its_latest_copy(sandbox: Sandbox, ledger) -> None:
    """Keyset paging reads each order once and the merge is one statement; a shop that sends
    an order twice in one fetch (it changed while paged) still leaves one row, the latest."""
    first, second = real_page(sandbox, n=2).orders
    ledger.staging.begin_fetch("run-1")
    ledger.staging.stage_page("run-1", [first, second], FALLBACK)
    assert ledger.staging.commit_fetch("run-1") == (2, 0)

    changed = {**first, "customerComment": "changed while paged"}
    ledger.staging.begin_fetch("run-2")
    ledger.staging.stage_page("run-2", [first], FALLBACK)
    ledger.staging.stage_page("run-2", [changed], FALLBACK)
    assert ledger.staging.commit_fetch("run-2") == (0, 1)
    [staged] = [
        b
        for batch in ledger.staging.batches(START, END)
        for b in batch
        if b.shop_order_id == first["id"]
    ]
    assert staged.payload["customerComment"] == "changed while paged"
    assert ledger.staging.count(START, END) == 2
    assert ledger.staging.stored_up_to() == max(first["autoIncrement"], second["autoIncrement"])
