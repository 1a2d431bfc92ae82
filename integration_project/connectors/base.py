"""What the fetch step needs of an order source, whatever the system behind it.

:func:`~integration_project.fetching.fetch_window` opens a source, asks it for the orders of a
time range a page at a time, and stages each page. A page is an
:class:`~integration_project.shopware.client.OrderPage`: the bytes of a Shopware order search
answer (``{"total": n, "data": [order, ...]}``) whose orders are in Shopware's wire shape
(``integration_project/shopware/models.py``), the shape the mapping reads. Shopware's own
client is the first source; another system's source converts its orders into that shape
(e.g. :mod:`integration_project.connectors.spryker_source`), so staging, mapping and delivery
do not change.

Each order carries a stable ``id`` and a ``createdAt`` (UTC); where the system numbers orders
in the order it stored them, ``autoIncrement`` too, which is what the late-order cursor pages
by (``stored_after`` / ``stored_up_to``).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Protocol

from integration_project.shopware.client import OrderPage, PageReader


class OrderSource(Protocol):
    """A source's client, opened for one fetch (``with source: ...``)."""

    def __enter__(self) -> OrderSource: ...

    def __exit__(self, *exc: object) -> None: ...

    def iter_order_pages(
        self,
        *,
        start: datetime | None,
        end: datetime,
        page_size: int,
        read: PageReader | None = None,
        stored_after: int | None = None,
        stored_up_to: int | None = None,
    ) -> Iterator[OrderPage]:
        """Every order created in ``[start, end)`` (no lower bound when ``start`` is None),
        stored after ``autoIncrement`` ``stored_after`` and up to ``stored_up_to`` (None:
        unbounded), a page at a time. ``read`` reads each page before the next is asked for
        and returns what paging needs (:class:`~integration_project.shopware.client.PageFacts`)."""
        ...
