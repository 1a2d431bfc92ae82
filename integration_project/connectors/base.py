"""What the route needs of an order source and of an order target, whatever the systems behind
them: the two seams a new connector plugs into (``docs/connectors.md``).

Sources
-------

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
from typing import Any, Protocol, runtime_checkable

from integration_project.exact.client import CreatedSalesOrder
from integration_project.exact.models import (
    AccountCreate,
    AccountRef,
    LookupRow,
    RateLimit,
    SalesOrderLineRef,
    SalesOrderRef,
    VatCode,
)
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


@runtime_checkable
class OrderTarget(Protocol):
    """A target's client, opened for one mapping or delivery run (``with target: ...``): the
    look-ups the mapping needs, and create / find-by-reference for delivery. The
    exactly-once protocol is NOT here: :mod:`integration_project.delivery` claims each
    ``YourRef`` in the ledger before it creates, and after a create whose outcome is unknown
    it finds the order by that reference before anything is sent again. A target only has to
    say what happened, with these errors (``integration_project.exact.errors``,
    ``integration_project.http``):

    * ``ValidationRejected``: the target refused the order; a person must fix the cause
      (the order is marked failed, never retried blindly);
    * ``OutcomeUnknown``: the request may have created it (a timeout after sending, a 5xx
      on a create): the next run looks it up by reference first;
    * ``RateLimited`` / ``BudgetExhausted``: wait (the run stops and leaves the rest pending);
    * ``AuthError`` / ``ApiError``: the target cannot be used now; nothing was created.

    Exact Online's :class:`~integration_project.exact.client.ExactClient` is the first
    implementation.
    """

    def __enter__(self) -> OrderTarget: ...

    def __exit__(self, *exc: object) -> None: ...

    @property
    def rate_limit(self) -> RateLimit | None:
        """The call budget the target announced last (None: it does not say)."""
        ...

    @property
    def calls(self) -> int:
        """Requests this client sent (for the run's metadata)."""
        ...

    def find_accounts(self, email: str) -> list[AccountRef]: ...

    def find_accounts_by_code(self, code: str) -> list[AccountRef]: ...

    def create_account(self, account: AccountCreate) -> str: ...

    def find_item_id(self, code: str) -> str | None: ...

    def find_lookup_rows(self, resource: str, field: str, value: str) -> list[LookupRow]:
        """Rows of a look-up list (shipping methods, payment conditions, ...) whose ``field``
        (``Code`` or ``Description``) is ``value``: for a route's ``mapping.lookups``."""
        ...

    def list_vat_codes(self) -> list[VatCode]: ...

    def find_sales_orders(self, your_ref: str) -> list[SalesOrderRef]:
        """Every order the target holds under this reference (the exactly-once key)."""
        ...

    def sales_order_lines(self, order_id: str) -> list[SalesOrderLineRef]:
        """An order's lines, to tell a found order from a different one under the same
        reference."""
        ...

    def create_sales_order(self, payload: dict[str, Any]) -> CreatedSalesOrder: ...
