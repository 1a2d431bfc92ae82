"""Staging: the shop's orders as fetched (``staged_orders``), one route's rows.

A fetch writes its pages to ``staged_orders_incoming`` first and merges them in one transaction
when the whole range has been read, so a failed fetch leaves ``staged_orders`` unchanged.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import duckdb
import pyarrow as pa

from integration_project.ledger.db import Database, now_utc
from integration_project.ledger.endpoints import Endpoints
from integration_project.ledger.projection import Projector, StagedForMapping
from integration_project.shopware.models import (
    order_json,
    order_number_text,
    stored_order_key,
    usable_order_id,
)

#: Orders merged from the incoming area into ``staged_orders`` per statement (one transaction).
MERGE_CHUNK = 2000


@dataclass(frozen=True)
class StagedOrder:
    shop_order_id: str
    payload: dict[str, Any]


def parse_created_at(value: Any) -> datetime | None:
    """A shop ``createdAt`` as an aware UTC datetime; None when it is no usable date-time (not
    text, not ISO 8601, or outside what a timestamp holds, e.g. year 0 once in UTC)."""
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)
    except (ValueError, OverflowError):
        return None


def staging_key(order: Any) -> str:
    """The shop id, or a stable stand-in for an order that has no usable one (``null``, a
    number, an order without ``id`` or with one that is no key: see ``usable_order_id``):
    ``missing-id-`` and a hash of its JSON, the same at every re-fetch. It is quarantined."""
    order_id = usable_order_id(order.get("id")) if isinstance(order, dict) else None
    if order_id is not None:
        return order_id
    try:
        text = json.dumps(order, sort_keys=True, default=str)
    except (TypeError, ValueError, RecursionError):
        text = repr(type(order))  # only for values that order_json() would not stage as such
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    return f"missing-id-{digest[:16]}"


#: ``staged_orders``' columns as a fetch writes them, and the upsert by shop id.
_STAGED_COLUMNS = (
    "route_id, shop_order_id, order_number, created_at, payload, fetched_at, run_id, "
    "shop_host, auto_increment"
)
_UPSERT = """
ON CONFLICT (route_id, shop_order_id) DO UPDATE SET
    order_number = excluded.order_number,
    created_at = excluded.created_at,
    payload = excluded.payload,
    fetched_at = excluded.fetched_at,
    run_id = excluded.run_id,
    shop_host = excluded.shop_host,
    auto_increment = excluded.auto_increment
"""


def page_table(run_id: str, orders: Sequence[Any], fallback_created_at: datetime) -> pa.Table:
    """Staging rows of raw orders, whatever their shape, so that none is lost and none fails
    the page: under its shop id, or under :func:`staging_key`'s stand-in key when it has no
    usable id. One that cannot be stored as JSON and read back (``NaN``, text that is not
    valid Unicode, nesting deeper than ``MAX_ORDER_DEPTH``) becomes a stand-in that keeps its
    id and says why (``order_json``). The transforms quarantine all of these. An order without
    a usable ``createdAt`` is staged at ``fallback_created_at``."""
    staged = [order_json(o) for o in orders]
    created = [
        (parse_created_at(o.get("createdAt")) if isinstance(o, dict) else None)
        or fallback_created_at
        for o, _ in staged
    ]
    utc = pa.timestamp("us", tz="UTC")
    return pa.table(
        {
            "run_id": [run_id] * len(staged),
            "shop_order_id": pa.array([staging_key(o) for o, _ in staged], pa.string()),
            "order_number": pa.array([order_number_text(o) for o, _ in staged], pa.string()),
            "created_at": pa.array(created, utc),
            "payload": pa.array([text for _, text in staged], pa.string()),
            "fetched_at": pa.array([now_utc()] * len(staged), utc),
            "auto_increment": pa.array([stored_order_key(o) for o, _ in staged], pa.int64()),
        }
    )


class Staging:
    def __init__(self, db: Database, route_id: str, endpoints: Endpoints) -> None:
        self._db = db
        self._route_id = route_id
        self._endpoints = endpoints

    def begin_fetch(self, run_id: str) -> None:
        """Start the run's fetch with an empty incoming area (a retried run's pages go)."""
        self.abort_fetch(run_id)

    def stage_page(self, run_id: str, orders: Sequence[Any], fallback_created_at: datetime) -> int:
        """Write one page of raw orders to the run's incoming area (see :func:`page_table`)."""
        if not orders:
            return 0
        return self.stage_rows(page_table(run_id, orders, fallback_created_at))

    def stage_rows(self, rows: pa.Table) -> int:
        """Write rows of :func:`page_table`'s columns (or
        :meth:`~integration_project.page_rows.PageRows.take`'s) to the incoming area, in one
        connection."""
        if not rows.num_rows:
            return 0
        with self._db.connect() as con:
            con.register("page_batch", rows)
            con.execute(
                "INSERT INTO staged_orders_incoming (route_id, run_id, shop_order_id, "
                "order_number, created_at, payload, fetched_at, auto_increment) "
                "SELECT ?, run_id, shop_order_id, CAST(order_number AS VARCHAR), "
                "created_at, payload::JSON, fetched_at, auto_increment FROM page_batch",
                [self._route_id],
            )
            con.unregister("page_batch")
        return rows.num_rows

    def commit_fetch(self, run_id: str) -> tuple[int, int]:
        """Merge the run's pages into ``staged_orders`` (upsert by shop id) in one transaction.

        Returns (new, updated). Re-fetching a window is an upsert, never a duplicate.
        """
        params = [self._route_id, run_id]
        with self._db.transaction(lock=f"staging {self._route_id}") as con:
            new = con.execute(
                """
                SELECT count(DISTINCT i.shop_order_id) FROM staged_orders_incoming i
                LEFT JOIN staged_orders s USING (route_id, shop_order_id)
                WHERE i.route_id = ? AND i.run_id = ? AND s.shop_order_id IS NULL
                """,
                params,
            ).fetchall()[0][0]
            total = con.execute(
                "SELECT count(DISTINCT shop_order_id) FROM staged_orders_incoming "
                "WHERE route_id = ? AND run_id = ?",
                params,
            ).fetchall()[0][0]
            self._merge(con, run_id)
            con.execute(
                "DELETE FROM staged_orders_incoming WHERE route_id = ? AND run_id = ?", params
            )
        return int(new), int(total) - int(new)

    def _merge(self, con: duckdb.DuckDBPyConnection, run_id: str) -> None:
        """Upsert the run's incoming rows into ``staged_orders``, :data:`MERGE_CHUNK` rows per
        statement (one statement over a day of payloads would need them all in memory at
        once): by row number when every id came once (keyset paging reads each order once),
        else the latest fetch of each id, in chunks of shop ids."""
        if self._db.dialect == "postgres":
            self._merge_latest(con, run_id)  # no row numbers there; ids are as good
            return
        params = [self._route_id, run_id]
        twice, first, last = con.execute(
            "SELECT count(*) - count(DISTINCT shop_order_id), min(rowid), max(rowid) "
            "FROM staged_orders_incoming WHERE route_id = ? AND run_id = ?",
            params,
        ).fetchall()[0]
        if twice:
            self._merge_latest(con, run_id)
            return
        if first is None:
            return  # nothing came
        for start in range(first, last + 1, MERGE_CHUNK):
            con.execute(
                f"""
                INSERT INTO staged_orders ({_STAGED_COLUMNS})
                SELECT route_id, shop_order_id, order_number, created_at, payload,
                       fetched_at, run_id, ?, auto_increment
                FROM staged_orders_incoming
                WHERE route_id = ? AND run_id = ? AND rowid >= ? AND rowid < ?
                {_UPSERT}
                """,
                [self._endpoints.shop_host, *params, start, start + MERGE_CHUNK],
            ).fetchall()

    def _merge_latest(self, con: duckdb.DuckDBPyConnection, run_id: str) -> None:
        """:meth:`_merge` for a fetch that read some order more than once (the latest of
        each), and on PostgreSQL."""
        after = ""
        while True:
            upto = con.execute(
                """
                SELECT max(shop_order_id) FROM (
                    SELECT DISTINCT shop_order_id FROM staged_orders_incoming
                    WHERE route_id = ? AND run_id = ? AND shop_order_id > ?
                    ORDER BY shop_order_id LIMIT ?) AS chunk
                """,
                [self._route_id, run_id, after, MERGE_CHUNK],
            ).fetchall()[0][0]
            if upto is None:
                return
            con.execute(
                f"""
                INSERT INTO staged_orders ({_STAGED_COLUMNS})
                SELECT DISTINCT ON (shop_order_id) route_id, shop_order_id, order_number,
                       created_at, payload, fetched_at, run_id, ?, auto_increment
                FROM staged_orders_incoming
                WHERE route_id = ? AND run_id = ?
                  AND shop_order_id > ? AND shop_order_id <= ?
                ORDER BY shop_order_id, fetched_at DESC
                {_UPSERT}
                """,
                [self._endpoints.shop_host, self._route_id, run_id, after, upto],
            ).fetchall()
            after = upto

    def incoming_before(self, run_id: str, before: datetime) -> int:
        """How many orders the run has read (not yet committed) that were created before
        ``before``."""
        with self._db.connect() as con:
            return con.execute(
                "SELECT count(DISTINCT shop_order_id) FROM staged_orders_incoming "
                "WHERE route_id = ? AND run_id = ? AND created_at < ?",
                [self._route_id, run_id, before],
            ).fetchall()[0][0]

    def stored_up_to(self) -> int | None:
        """The highest ``autoIncrement`` of the orders staged for this route: every order the
        shop stored up to it and created before the windows fetched so far has been read.
        None before the first fetch (or for a shop that numbers no orders)."""
        with self._db.connect() as con:
            return con.execute(
                "SELECT max(auto_increment) FROM staged_orders WHERE route_id = ?",
                [self._route_id],
            ).fetchall()[0][0]

    def abort_fetch(self, run_id: str) -> None:
        """Drop the run's incoming pages: ``staged_orders`` stays as it was."""
        with self._db.connect() as con:
            con.execute(
                "DELETE FROM staged_orders_incoming WHERE route_id = ? AND run_id = ?",
                [self._route_id, run_id],
            )

    def unmapped_before(
        self, before: datetime, limit: int, projector: Projector | None = None
    ) -> list[StagedForMapping]:
        """Staged orders created before ``before`` that were never mapped (their window's
        ``erp_orders`` failed, e.g. the ERP was down longer than the look-back), oldest
        first, at most ``limit``; read by ``projector`` (whole, without one)."""
        with self._db.connect() as con:
            batch = con.sql(
                """
                SELECT s.shop_order_id, s.payload::VARCHAR AS payload FROM staged_orders s
                WHERE s.route_id = ? AND s.created_at < ?
                  AND NOT EXISTS (SELECT 1 FROM erp_orders e
                                  WHERE e.route_id = s.route_id
                                    AND e.shop_order_id = s.shop_order_id)
                ORDER BY s.created_at, s.shop_order_id LIMIT ?
                """,
                params=[self._route_id, before, limit],
            ).to_arrow_table()
        return (projector or Projector(None)).read(batch)

    def batches(
        self,
        start: datetime,
        end: datetime,
        batch_size: int = 500,
        projector: Projector | None = None,
    ) -> Iterator[list[StagedForMapping]]:
        """Staged orders created in ``[start, end)``, in batches of ``batch_size`` by shop id,
        read by ``projector`` (whole, without one; or cut to what the mapping reads, the ones
        shipping outside the route's countries found in SQL: see :mod:`.projection`).

        The batches' bounds are found in one pass first (keyset ranges: no query reads the
        orders before its own). The connection is closed between batches, so callers may do
        HTTP in between, and while the projector reads a batch.
        """
        window = [self._route_id, start, end]
        where = "route_id = ? AND created_at >= ? AND created_at < ?"
        with self._db.connect() as con:
            bounds = [
                r[0]
                for r in con.execute(
                    f"""
                    SELECT shop_order_id FROM (
                        SELECT shop_order_id, row_number() OVER (ORDER BY shop_order_id) AS n
                        FROM staged_orders WHERE {where}) AS numbered
                    WHERE n % ? = 0 ORDER BY shop_order_id
                    """,
                    [*window, batch_size],
                ).fetchall()
            ]
        for after, upto in zip(["", *bounds], [*bounds, None], strict=True):  # (after, upto]
            with self._db.connect() as con:
                # Unsorted: sorting the payloads costs more than reading them (the projector
                # hands them over by shop id).
                batch = con.sql(
                    f"SELECT shop_order_id, payload::VARCHAR AS payload FROM staged_orders "
                    f"WHERE {where} AND shop_order_id > ? AND (? IS NULL OR shop_order_id <= ?)",
                    params=[*window, after, upto, upto],
                ).to_arrow_table()
            if batch.num_rows:
                yield (projector or Projector(None)).read(batch, by_id=True)  # file let go

    def numbers_taken(self, numbers: Sequence[str], own_ids: Sequence[str]) -> set[str]:
        """Which of ``numbers`` the route already holds as an order that still counts: staged
        under an id other than ``own_ids`` (an order file read again keeps its own ids) and not
        quarantined (a corrected file may bring a quarantined order again)."""
        if not numbers:
            return set()
        with self._db.connect() as con:
            rows = con.execute(
                """
                SELECT DISTINCT s.order_number FROM staged_orders s
                WHERE s.route_id = ? AND s.order_number = ANY(?)
                  AND NOT (s.shop_order_id = ANY(?))
                  AND NOT EXISTS (SELECT 1 FROM erp_orders e
                                  WHERE e.route_id = s.route_id
                                    AND e.shop_order_id = s.shop_order_id
                                    AND e.status = 'quarantined')
                """,
                [self._route_id, list(numbers), list(own_ids)],
            ).fetchall()
        return {row[0] for row in rows}

    def count(self, start: datetime, end: datetime) -> int:
        """How many orders created in ``[start, end)`` are staged."""
        with self._db.connect() as con:
            return con.execute(
                "SELECT count(*) FROM staged_orders "
                "WHERE route_id = ? AND created_at >= ? AND created_at < ?",
                [self._route_id, start, end],
            ).fetchone()[0]
