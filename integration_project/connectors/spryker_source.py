"""Spryker orders as an order source (:class:`~integration_project.connectors.base.OrderSource`):
Shopware-shaped pages of the orders a Spryker backend holds, for the route's fetch step.

Spryker's Data Exchange API cannot filter by ``created_at`` (equality and ``IN`` only), but its
orders carry an auto-increment key (``id_sales_order``) in the order Spryker stored them, and
``created_at`` set when they were stored: the two rise together, give or take the clocks of the
processes that placed the orders (:data:`SKEW`). So the source reads consecutive id ranges
(:meth:`SprykerClient.orders_by_id`) and keeps the orders created in the range asked for:

* from the first id that can hold an order created at or after ``start - SKEW``, found by a
  binary search over the ids with light probes (ids and dates, no relations): about
  ``2 log2(orders)`` small requests, not a walk over every order ever placed;
  ``stored_after`` (the late-order cursor) starts the walk right after it instead;
* up to ``stored_up_to`` (the cursor the fetch had when it started), or, without one, until a
  whole batch was created at or after ``end + SKEW``, or the newest order is passed
  (:attr:`SprykerClient.empty_batches_to_stop` empty batches in a row).

Each order becomes a Shopware order (:func:`~integration_project.spryker.convert.to_shop_order`,
``autoIncrement`` = ``id_sales_order``, so the fetch's late-order cursor works unchanged). An
order without a usable ``created_at`` is not dropped: it is staged as the stand-in the
converter makes of it, and the mapping quarantines it with the reason.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

from integration_project.http import safe_url
from integration_project.shopware.client import OrderPage, PageReader
from integration_project.spryker.client import SprykerClient, record_id
from integration_project.spryker.convert import to_shop_order

#: How far ``created_at`` may run against the id order: an order stored after another may
#: carry a creation time up to this much earlier (its process's clock, a slow transaction).
SKEW = timedelta(minutes=10)
#: Ids per probe of the binary search (it reads ids and dates only).
PROBE_IDS = 20


class SprykerSource:
    """A :class:`SprykerClient` read as an order source; opened and closed with it.
    ``page_size`` of :meth:`iter_order_pages` is ignored: the client's ids per batch rule."""

    def __init__(self, client: SprykerClient, *, skew: timedelta = SKEW) -> None:
        self._client = client
        self._skew = skew
        #: Requests the last :meth:`iter_order_pages` spent finding where to start.
        self.probes = 0

    def __enter__(self) -> SprykerSource:
        self._client.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._client.__exit__(*exc)

    def iter_order_pages(
        self,
        *,
        start: datetime | None,
        end: datetime,
        page_size: int = 0,
        read: PageReader | None = None,
        stored_after: int | None = None,
        stored_up_to: int | None = None,
    ) -> Iterator[OrderPage]:
        self.probes = 0
        if stored_after is not None:
            first = stored_after + 1
        elif start is None:
            first = 1
        else:
            first = self._first_id_from(start - self._skew)
        url = safe_url(self._client.orders_url)
        for number, batch in enumerate(self._batches(first, stored_up_to, end), start=1):
            orders = [to_shop_order(r) for r in batch if self._wanted(r, start, end)]
            if not orders:
                continue
            body = json.dumps({"total": None, "data": orders}, separators=(",", ":"))
            page = OrderPage(number, body.encode(), 200, url, "application/json")
            if read is not None:
                read(page)
            yield page

    def _wanted(self, record: Any, start: datetime | None, end: datetime) -> bool:
        created = self._client.created_at(record)
        if created is None:
            return True  # staged as a stand-in, quarantined by the mapping
        return (start is None or created >= start) and created < end

    def _batches(self, first: int, last: int | None, end: datetime) -> Iterator[list[Any]]:
        """Consecutive id batches from ``first`` (see the module's docstring for the end)."""
        size = self._client.page_size
        stop_at = end + self._skew
        empty, next_id = 0, first
        while last is None or next_id <= last:
            upto = next_id + size if last is None else min(next_id + size, last + 1)
            batch = self._client.orders_by_id(range(next_id, upto))
            next_id = upto
            if not batch:
                empty += 1
                if last is None and empty >= self._client.empty_batches_to_stop:
                    return
                continue
            empty = 0
            yield batch
            dated = [c for c in map(self._client.created_at, batch) if c is not None]
            if dated and min(dated) >= stop_at:
                return

    def _first_id_from(self, moment: datetime) -> int:
        """The lowest id from which on every order was created at or after ``moment`` (ids
        and dates rising together): a binary search between 1 and past the newest order."""
        low, high = 1, self._past_newest()
        while low < high:
            middle = (low + high) // 2
            found = self._first_dated(middle, high)
            if found is None or found[1] >= moment:
                high = middle
            else:
                low = found[0] + 1
        return low

    def _first_dated(self, first: int, stop: int) -> tuple[int, datetime] | None:
        """(id, created_at) of the first dated order with an id in ``[first, stop)``."""
        while first < stop:
            upto = min(first + PROBE_IDS, stop)
            self.probes += 1
            for record in self._client.orders_by_id(range(first, upto), relations=False):
                created = self._client.created_at(record)
                key = record_id(record)
                if created is not None and key is not None:
                    return key, created
            first = upto
        return None

    def _past_newest(self) -> int:
        """An id above every order: doubled until a stretch of empty probes follows it."""
        step = PROBE_IDS * self._client.empty_batches_to_stop
        high = PROBE_IDS
        while self._any_in(high, high + step):
            high *= 2
        return high + step

    def _any_in(self, first: int, stop: int) -> bool:
        for start in range(first, stop, PROBE_IDS):
            self.probes += 1
            ids = range(start, min(start + PROBE_IDS, stop))
            if self._client.orders_by_id(ids, relations=False):
                return True
        return False
