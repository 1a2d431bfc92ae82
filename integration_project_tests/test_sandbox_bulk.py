"""``SandboxShop.add_bulk``: many orders stored compactly for benchmarks, served by the order
search like any other (paging, range filter, sort), with stored orders mixed in. Derived
orders, ``autoIncrement`` and the bulk index are in ``test_sandbox_keyset.py``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from integration_project import settings
from integration_project.sandbox import Sandbox
from integration_project.settings import EU_27
from integration_project.shopware.client import ShopwareClient

pytestmark = pytest.mark.integration

START = datetime(2026, 11, 21, 0, 0, tzinfo=UTC)
END = START + timedelta(hours=1)


def page_all(sb: Sandbox, start: datetime, end: datetime, page_size: int) -> list[dict]:
    client = ShopwareClient(
        base_url=sb.shop_url,
        client_id=settings.SANDBOX_SHOP_CLIENT_ID,
        client_secret=settings.SANDBOX_SHOP_CLIENT_SECRET,
        max_retries=0,
    )
    with client:
        return [
            o for p in client.iter_order_pages(start=start, end=end, page_size=page_size)
            for o in p.orders
        ]  # fmt: skip


def test_bulk_orders_are_paged_like_stored_ones():
    with Sandbox(seed=3) as sb:
        tally = sb.shop.add_bulk(300, start=START, end=END)
        assert tally["orders"] == 300
        assert 0 < tally["expected_in_erp"] <= tally["eu"] < 300
        stored = sb.shop.add_order(START + timedelta(minutes=30, seconds=1))
        sb.shop.add_order(END)  # outside the half-open range
        assert sb.shop.state()["orders"] == 302
        assert not sb.shop.truth.keys() - {stored["id"], *list(sb.shop.orders)}

        orders = page_all(sb, START, END, page_size=45)
        assert len(orders) == 301
        assert len({o["id"] for o in orders}) == 301
        assert stored["id"] in {o["id"] for o in orders}
        # In the order the client pages (createdAt, or autoIncrement: the stored order was
        # stored after the bulk ones); the bulk orders rise in both.
        bulk = [o for o in orders if o["id"] != stored["id"]]
        created = [datetime.fromisoformat(o["createdAt"]) for o in bulk]
        assert created == sorted(created)
        assert START <= created[0] and created[-1] < END
        assert [o["autoIncrement"] for o in bulk] == list(range(10001, 10301))
        # Associations come back as for stored orders: loaded because the client asks. Only a
        # malformed order (no line items, null currency) may lack them.
        complete = sum(1 for o in bulk if o["lineItems"] and o["currency"])
        assert 300 - tally["malformed"] <= complete < 300, (complete, tally)
        # And they are the orders the tally counts: as many shipped inside the EU.
        ship = [o["deliveries"][0]["shippingOrderAddress"]["country"]["iso"] for o in bulk]
        assert sum(iso in EU_27 for iso in ship) == tally["eu"], tally

        # A narrower window, and an order added between two passes, are seen.
        middle = page_all(sb, START + timedelta(minutes=10), START + timedelta(minutes=20), 7)
        assert len(middle) == 50
        sb.shop.add_order(START + timedelta(minutes=15))
        assert (
            len(page_all(sb, START + timedelta(minutes=10), START + timedelta(minutes=20), 7)) == 51
        )


def test_bulk_storage_is_compact():
    with Sandbox(seed=3) as sb:
        tally = sb.shop.add_bulk(2000, start=START, end=END, templates=50)
        assert not sb.shop.orders and not sb.shop.truth
        assert tally["orders"] == sb.shop.bulk_count == sb.shop.state()["orders"] == 2000
        # Fifty orders made; the rest derived from them on demand, nothing stored per order.
        [segment] = sb.shop._bulk
        assert len(segment.templates) == 50
        assert not [v for v in vars(segment).values() if isinstance(v, list) and len(v) > 50]
