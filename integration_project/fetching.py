"""Fetching: a window's shop orders, with its look-back, paged into the ledger's staging.

One paging pass over the whole range (a backfill of many windows is one run). Each page's bytes
are read into rows by DuckDB (:mod:`integration_project.page_rows`) and written to the ledger a
few thousand at a time, so memory stays flat, and committed as one fetch: a run that fails leaves
``staged_orders`` as it was. Staging is an upsert, so the look-back re-reads late arrivals
without staging anything twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pyarrow as pa

from integration_project.connectors.base import OrderSource
from integration_project.hooks import kind_of
from integration_project.ledger import Ledger
from integration_project.ledger.staging import Staging
from integration_project.page_rows import PageRows
from integration_project.shopware.models import storable_text

#: Rows of each preview a run shows (orders fetched, quarantined, sent, would be sent).
PREVIEW_ROWS = 10
#: Orders read ahead before they are written to the ledger in one connection (~40 MB of
#: Shopware JSON): few connections, and the ledger's file is free while pages are read.
STAGE_EVERY_ROWS = 5000


@dataclass(frozen=True)
class Window:
    """A partition's half-open window ``[start, end)`` in UTC, and the look-back before it
    that each run reads again (orders the shop shows late)."""

    start: datetime
    end: datetime
    lookback: timedelta

    @property
    def read_from(self) -> datetime:
        return self.start - self.lookback


@dataclass(frozen=True)
class FetchReport:
    window: Window
    fetched: int
    new: int
    refetched: int
    pages: int
    #: Orders created before the window (and its look-back) that the shop stored since the
    #: route's last fetch: late arrivals, staged under their own windows.
    late: int
    #: Staged orders created in the window itself (the look-back's belong to earlier ones).
    staged_in_window: int
    #: The first orders fetched, as preview rows (number, created, ships to, total, currency).
    preview: list[list[Any]]
    #: Test mode: the most orders this run staged (None: the whole window was read).
    limit: int | None = None


def fetch_window(
    ledger: Ledger,
    open_client: Callable[[], OrderSource],
    window: Window,
    *,
    page_size: int,
    run_id: str,
    log: logging.Logger,
    late_orders: timedelta = timedelta(days=1),
    limit: int | None = None,
) -> FetchReport:
    """Fetch ``[window.read_from, window.end)`` from the shop into staging, as run ``run_id``.
    ``open_client`` opens the source: the Shopware client, or any other
    :class:`~integration_project.connectors.base.OrderSource`.

    With ``late_orders`` (a duration; zero: off), also what the shop stored since the route's
    last fetch (``autoIncrement`` above
    :meth:`~integration_project.ledger.staging.Staging.stored_up_to`) that was created up to
    ``late_orders`` before the window's end: an order that shows up after its own window was
    fetched, however late, is staged now, and the mapping catches it up. Each order is read
    once, where re-reading an hour of windows read every order twelve times.

    ``limit`` (test mode): stop once that many orders were read, and stage only those; the
    late-order pass is left out, and the window is read whole again by a run without one.
    """
    ledger.staging.begin_fetch(run_id)
    cursor = ledger.staging.stored_up_to() if late_orders > timedelta(0) else None
    # The window's orders the shop had stored by the last fetch, then everything it stored
    # since that was created before the window's end: the two never overlap, and an order
    # stored while the second is read is in it, or above the cursor the next run reads from.
    passes: list[dict[str, Any]] = [
        {"start": window.read_from, "end": window.end, "stored_up_to": cursor}
    ]
    if cursor is not None and limit is None:
        since = min(window.end - late_orders, window.read_from)
        passes.append({"start": since, "end": window.end, "stored_after": cursor})
    try:
        fetched, pages, python_pages, preview = _stage_pages(
            ledger, open_client, passes, window, page_size=page_size, run_id=run_id, limit=limit
        )
        late = ledger.staging.incoming_before(run_id, window.read_from)
        new, updated = ledger.staging.commit_fetch(run_id)
    except BaseException:
        ledger.staging.abort_fetch(run_id)  # staged_orders stays as it was
        raise
    _log_fetch(log, window, fetched, pages, python_pages, (new, updated, late), limit)
    staged = ledger.staging.count(window.start, window.end)
    return FetchReport(window, fetched, new, updated, pages, late, staged, preview, limit)


def _log_fetch(
    log: logging.Logger,
    window: Window,
    fetched: int,
    pages: int,
    python_pages: int,
    counts: tuple[int, int, int],
    limit: int | None,
) -> None:
    new, updated, late = counts
    if python_pages:
        log.info("%s of %s pages had orders that needed reading one by one", python_pages, pages)
    log.info(
        "Fetched %s orders in %s pages for [%s, %s): %s new, %s re-fetched, %s late",
        fetched,
        pages,
        window.read_from.isoformat(),
        window.end.isoformat(),
        new,
        updated,
        late,
    )
    if limit is not None:
        log.warning(
            "Test mode: staged at most %s orders of the window; run it again without a limit "
            "to read it whole",
            limit,
        )


def _stage_pages(
    ledger: Ledger,
    open_client: Callable[[], OrderSource],
    passes: list[dict[str, Any]],
    window: Window,
    *,
    page_size: int,
    run_id: str,
    limit: int | None = None,
) -> tuple[int, int, int, list[list[Any]]]:
    """Every page of each search pass (up to ``limit`` orders), read into rows and written to
    the run's incoming area a batch at a time: orders staged, pages, pages read by Python,
    preview rows."""
    pages, left = 0, limit
    with (
        open_client() as client,
        PageRows(run_id, window.start, preview=PREVIEW_ROWS) as rows,
        BackgroundStaging(ledger.staging) as staging,
    ):
        for search in passes:
            for _ in client.iter_order_pages(page_size=page_size, read=rows.read, **search):
                pages += 1
                if left is not None and rows.buffered >= left:
                    break  # test mode: enough orders read
                if rows.buffered >= STAGE_EVERY_ROWS:
                    left = None if left is None else left - rows.buffered
                    staging.put(rows.take())
        taken = rows.take()
        staging.put(taken if left is None else taken.slice(0, left))
        fetched = staging.finish()
        shown = rows.preview_orders if limit is None else rows.preview_orders[:limit]
        preview = [order_preview(order) for order in shown]
        return fetched, pages, rows.python_pages, preview


class BackgroundStaging:
    """Writes batches of rows to the ledger's incoming area on a thread of its own, one batch
    at a time, while the next pages are read (DuckDB lets go of the GIL while it works): at
    most one batch waits, so memory stays flat. :meth:`finish` waits for the last one and
    says how many rows were staged; a batch that failed raises there or at the next
    :meth:`put`. Leaving the block waits for a batch still being written, so nothing writes
    to the incoming area after the fetch is over (or aborted)."""

    def __init__(self, staging: Staging) -> None:
        self._staging = staging
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="staging")
        self._pending: Future[int] | None = None
        self._staged = 0

    def put(self, rows: pa.Table) -> None:
        self._wait()
        if rows.num_rows:
            self._pending = self._pool.submit(self._staging.stage_rows, rows)

    def finish(self) -> int:
        self._wait()
        return self._staged

    def _wait(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            self._staged += pending.result()

    def __enter__(self) -> BackgroundStaging:
        return self

    def __exit__(self, *exc: object) -> None:
        self._pool.shutdown(wait=True)


def order_preview(order: Any) -> list[Any]:
    """A preview row of a raw order, whatever its shape: short text cells, never a crash."""
    if not isinstance(order, dict):
        return [f"? ({kind_of(order)})", "", "", "", ""]
    deliveries = order.get("deliveries")
    first = deliveries[0] if isinstance(deliveries, list) and deliveries else None
    address = first.get("shippingOrderAddress") if isinstance(first, dict) else None
    if not isinstance(address, dict):
        address = order.get("billingAddress")
    country = address.get("country") if isinstance(address, dict) else None
    currency = order.get("currency")
    return [
        _cell(order.get("orderNumber")),
        _cell(order.get("createdAt")),
        _cell(country.get("iso") if isinstance(country, dict) else None),
        _cell(order.get("amountTotal")),
        _cell(currency.get("isoCode") if isinstance(currency, dict) else None),
    ]


def _cell(value: Any) -> str | int | float | None:
    """A scalar as it is (text cut to 40 characters); anything else as its kind."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int) and value.bit_length() > 64:
        return "<a long number>"
    if isinstance(value, int | float):
        return value
    if isinstance(value, str):
        return storable_text(value, 40)
    return f"<{type(value).__name__}>"
