"""Delivery claims and outcomes (``delivered_orders``): the exactly-once protocol, one route's
rows (README, "Exactly once"), in terms of ``delivered_orders.status``:

* ``sending``   claimed and committed *before* the POST; outcome unknown until recorded.
* ``delivered`` the ERP answered 2xx (or a later look-up by ``YourRef`` found the order).
* ``failed``    the ERP refused it (4xx validation); re-sent only once its payload changes.
* ``pending``   claimed earlier but known not to have reached the ERP (429, refused connect).
* ``conflict``  the ERP holds a different order under this order's ``YourRef`` (found by the
  recovery step, or another route on the same division took the ``YourRef`` first): never
  sent, never counted as delivered; a blocking asset check shows it until a person decides.

Every claimed row records the ERP host and division it was claimed for (see
:mod:`~integration_project.ledger.endpoints`).

What waits is kept apart in ``waiting_orders`` (one row per order mapped and never claimed, or
claimed and ``pending``, ``sending`` or ``failed``, mirroring what delivery needs of its
``erp_orders`` and ``delivered_orders`` rows): a tick reads that, never the orders delivered
long ago, so its cost stays flat however large the ledger grows. Every write here changes
both tables in one transaction (:mod:`~integration_project.ledger.mapped` keeps the mapping's
side). A ``delivered_orders`` row is updated by its key *and* its ``claimed_at`` first: DuckDB
(2.0) does not use the primary key's index for an ``UPDATE``, but skips the row groups whose
``claimed_at`` range cannot hold it; the key alone is the fallback.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import duckdb

from integration_project.ledger.db import CONSTRAINT_ERRORS, Database, now_utc, route_lock
from integration_project.ledger.endpoints import Endpoints


@dataclass(frozen=True)
class PendingOrder:
    shop_order_id: str
    order_number: str
    payload: dict[str, Any]
    payload_hash: str
    your_ref: str


@dataclass(frozen=True)
class InFlight:
    shop_order_id: str
    order_number: str
    run_id: str | None
    attempts: int
    your_ref: str
    #: The mapped ERP sales order it was claimed for (None if its mapping row is gone).
    payload: dict[str, Any] | None = None


@dataclass(frozen=True)
class Outcome:
    """What became of a claimed order: ``delivered`` (with the ERP's ids), ``failed`` (the
    ERP refused it), ``sending`` (outcome unknown: looked up next run) or ``pending`` (it
    certainly did not reach the ERP)."""

    shop_order_id: str
    status: str
    error: str | None = None
    erp_order_id: str | None = None
    erp_order_number: int | None = None


class Deliveries:
    def __init__(self, db: Database, route_id: str, endpoints: Endpoints) -> None:
        self._db = db
        self._route_id = route_id
        self._endpoints = endpoints

    def _locks(self) -> tuple[str, ...]:
        """What a write here holds on PostgreSQL until it commits (DuckDB's file lock does it
        there): the route, as the mapping's writes do, so no two writes interleave on its
        ``waiting_orders`` rows; and the ERP division, so two routes cannot both claim one
        ``YourRef`` there."""
        erp = self._endpoints.erp
        return route_lock(self._route_id), *(() if erp is None else (f"erp {erp[0]} {erp[1]}",))

    # --- what waits ---------------------------------------------------------------------------

    def in_flight(self) -> list[InFlight]:
        """Rows left in ``sending``: their outcome is unknown until looked up in the ERP."""
        with self._db.connect() as con:
            rows = con.execute(
                "SELECT shop_order_id, d_order_number, d_run_id, d_attempts, "
                "coalesce(d_your_ref, d_order_number), payload FROM waiting_orders "
                "WHERE route_id = ? AND d_status = 'sending' ORDER BY d_claimed_at",
                [self._route_id],
            ).fetchall()
        return [InFlight(*r[:5], json.loads(r[5]) if r[5] else None) for r in rows]

    def pending(
        self, limit: int | None = None, countries: Iterable[str] | None = None
    ) -> list[PendingOrder]:
        """Mapped orders the ledger does not hold as delivered (or in flight).

        A ``failed`` order comes back only when its mapped payload changed since it failed:
        someone fixed the cause and re-materialised ``erp_orders``. ``countries``: only orders
        mapped with one of these countries (the route's allowed set), so a mapping that let an
        order through from elsewhere is held back here too, not only flagged by the check.
        """
        params: list[Any] = [self._route_id]
        sql = (
            "SELECT shop_order_id, order_number, payload, payload_hash, your_ref "
            + _waiting_sql(("pending",), countries, params)
            + " ORDER BY created_at, shop_order_id"
        )
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        with self._db.connect() as con:
            rows = con.execute(sql, params).fetchall()
        return [PendingOrder(r[0], r[1], json.loads(r[2]), r[3], r[4] or r[1]) for r in rows]

    def waiting(self, countries: Iterable[str] | None = None) -> tuple[int, float | None]:
        """Orders :meth:`pending` (with the same ``countries``) or in flight: how many, and
        seconds since the longest-waiting one was mapped (None when none wait)."""
        params: list[Any] = [self._route_id]
        sql = "SELECT count(*), min(mapped_at) " + _waiting_sql(
            ("pending", "sending"), countries, params
        )
        with self._db.connect() as con:
            count, oldest = con.execute(sql, params).fetchone()
        if oldest is None:
            return int(count), None
        return int(count), round(max(0.0, (now_utc() - oldest).total_seconds()), 1)

    def count_pending(self, countries: Iterable[str] | None = None) -> int:
        """How many orders :meth:`pending` (with the same ``countries``) or in flight."""
        return self.waiting(countries)[0]

    # --- claims and outcomes ------------------------------------------------------------------

    def record_outcomes(
        self, outcomes: Sequence[Outcome], run_id: str, *, claim: Sequence[PendingOrder]
    ) -> dict[str, str]:
        """Steps 3 and 5 for orders this run sent, then step 1 (committed as ``sending``
        before the POST) for the next ones, in one transaction. A non-delivered outcome only
        touches a row this run still holds (another run may have taken it over since).

        An order to claim whose ``YourRef`` another route already used on the same ERP
        division is not claimed: it is recorded as ``conflict``. Returns those (shop order id
        -> reason); the caller must not send them."""
        if not outcomes and not claim:
            return {}
        try:
            with self._db.transaction(lock=self._locks()) as con:
                self._write_outcomes(con, outcomes, run_id)
                return self._claim_all(con, claim, run_id, checked=False)
        except CONSTRAINT_ERRORS:
            # waiting_orders held an order as never claimed that delivered_orders holds (a
            # row written around this module): read both tables for these orders, then claim
            # only those that still wait.
            with self._db.transaction(lock=self._locks()) as con:
                resync_waiting(con, self._route_id, [o.shop_order_id for o in claim])
                self._write_outcomes(con, outcomes, run_id)
                return self._claim_all(con, claim, run_id, checked=True)

    def mark_delivered(
        self, shop_order_id: str, *, erp_order_id: str, erp_order_number: int | None, run_id: str
    ) -> None:
        """Step 3 (or step 4's "found"): the ERP holds it."""
        self.record_outcomes(
            [Outcome(shop_order_id, "delivered", None, erp_order_id, erp_order_number)],
            run_id,
            claim=[],
        )

    def mark_conflict(
        self, shop_order_id: str, reason: str, *, erp_order_id: str | None = None
    ) -> None:
        """The ERP holds a different order under this order's ``YourRef``: never resent, never
        counted as delivered, until a person decides (see ``Views.conflicts``)."""
        with self._db.transaction(lock=self._locks()) as con:
            claimed = _claimed_at(con, self._route_id, [shop_order_id])
            _update_delivered(
                con,
                self._route_id,
                "status = 'conflict', last_error = ?, erp_order_id = ?, updated_at = ?",
                [reason, erp_order_id, now_utc()],
                (shop_order_id, claimed.get(shop_order_id)),
            )
            _forget(con, self._route_id, [shop_order_id])

    def release_claim(self, shop_order_id: str, error: str) -> None:
        """The ERP certainly did not get it (429, refused connection): back to ``pending``."""
        with self._db.transaction(lock=self._locks()) as con:
            claimed = _claimed_at(con, self._route_id, [shop_order_id])
            _update_delivered(
                con,
                self._route_id,
                "status = 'pending', last_error = ?, updated_at = ?",
                [error, now_utc()],
                (shop_order_id, claimed.get(shop_order_id)),
            )
            con.execute(
                "UPDATE waiting_orders SET d_status = 'pending' "
                "WHERE route_id = ? AND shop_order_id = ?",
                [self._route_id, shop_order_id],
            )

    def requeue_failed(self, order_numbers: list[str] | None) -> int:
        """An operator fixed the cause: move ``failed`` rows back to ``pending`` so the normal
        protocol sends them. ``order_numbers`` match the shop order number or the ``YourRef``;
        None = every failed row of the route. Other statuses are never touched. Returns how
        many rows were requeued."""
        sql = (
            "UPDATE delivered_orders SET status = 'pending', updated_at = ?, "
            "last_error = 'requeued after failing: ' || coalesce(last_error, '') "
            "WHERE route_id = ? AND status = 'failed'"
        )
        params: list[Any] = [now_utc(), self._route_id]
        if order_numbers is not None:
            wanted = sorted({str(n).strip() for n in order_numbers if str(n).strip()})
            if not wanted:
                return 0
            sql += " AND (order_number = ANY(?) OR your_ref = ANY(?))"
            params += [wanted, wanted]
        with self._db.transaction(lock=self._locks()) as con:
            rows = con.execute(sql + " RETURNING shop_order_id", params).fetchall()
            con.execute(
                "UPDATE waiting_orders SET d_status = 'pending' "
                "WHERE route_id = ? AND shop_order_id = ANY(?)",
                [self._route_id, [r[0] for r in rows]],
            )
        return len(rows)

    # --- inside record_outcomes' transaction --------------------------------------------------

    def _write_outcomes(
        self, con: duckdb.DuckDBPyConnection, outcomes: Sequence[Outcome], run_id: str
    ) -> None:
        now = now_utc()
        claimed = _claimed_at(con, self._route_id, [o.shop_order_id for o in outcomes])
        delivered = [o for o in outcomes if o.status == "delivered"]
        for o in delivered:
            _update_delivered(
                con,
                self._route_id,
                "status = 'delivered', erp_order_id = ?, erp_order_number = ?, "
                "last_error = NULL, run_id = ?, delivered_at = ?, updated_at = ?",
                [o.erp_order_id, o.erp_order_number, run_id, now, now],
                (o.shop_order_id, claimed.get(o.shop_order_id)),
            )
        _forget(con, self._route_id, [o.shop_order_id for o in delivered])
        for o in outcomes:
            if o.status == "delivered":
                continue
            held = "AND run_id = ? AND status = 'sending'"
            _update_delivered(
                con,
                self._route_id,
                "status = ?, last_error = ?, updated_at = ?",
                [o.status, o.error, now],
                (o.shop_order_id, claimed.get(o.shop_order_id)),
                (held, [run_id]),
            )
            con.execute(
                "UPDATE waiting_orders SET d_status = ? WHERE route_id = ? "
                "AND shop_order_id = ? AND d_run_id = ? AND d_status = 'sending'",
                [o.status, self._route_id, o.shop_order_id, run_id],
            )

    def _claim_all(
        self,
        con: duckdb.DuckDBPyConnection,
        orders: Sequence[PendingOrder],
        run_id: str,
        *,
        checked: bool,
    ) -> dict[str, str]:
        """Claim ``orders``; those whose ``YourRef`` another route owns become ``conflict``.
        ``checked``: ``waiting_orders`` was just rebuilt for them, so one missing there no
        longer waits and is not claimed."""
        owners = _your_ref_owners(con, self._route_id, self._endpoints.erp, orders)
        known = _claim_states(con, self._route_id, orders)
        refused: dict[str, str] = {}
        now = now_utc()
        erp = self._endpoints.erp or (None, None)
        for order in orders:
            if checked and order.shop_order_id not in known:
                refused[order.shop_order_id] = _NO_LONGER_WAITS
                continue
            _claim(con, self._route_id, erp, order, run_id, now, known)
            if order.shop_order_id not in owners:
                continue
            route, number = owners[order.shop_order_id]
            refused[order.shop_order_id] = (
                f"YourRef {order.your_ref} is already used on this ERP division by "
                f"order {number} of route {route}; not sent (give the routes "
                "your_ref templates that cannot produce the same value)"
            )
            _update_delivered(
                con,
                self._route_id,
                "status = 'conflict', last_error = ?",
                [refused[order.shop_order_id]],
                (order.shop_order_id, now),
            )
            _forget(con, self._route_id, [order.shop_order_id])
        return refused


def _claim(
    con: duckdb.DuckDBPyConnection,
    route_id: str,
    erp: tuple[str | None, str | None],
    order: PendingOrder,
    run_id: str,
    now: datetime,
    known: dict[str, tuple[str | None, datetime | None]],
) -> None:
    """Step 1 of the protocol: the row is ``sending`` before the POST. An order never
    claimed gets a new row by a plain INSERT (a probe of the primary key's index; DuckDB 2.0
    plans ``ON CONFLICT`` as a MERGE that reads the whole table); one claimed before (pending,
    or failed with a changed payload) has its row updated. A row the INSERT finds there
    already raises ``ConstraintException`` (see :meth:`Deliveries.record_outcomes`)."""
    status, claimed_at = known.get(order.shop_order_id, (None, None))
    updated = status is not None and (
        _update_delivered(
            con,
            route_id,
            "status = 'sending', your_ref = ?, erp_host = ?, erp_division = ?, "
            "attempts = attempts + 1, run_id = ?, payload_hash = ?, claimed_at = ?, "
            "updated_at = ?",
            [order.your_ref, *erp, run_id, order.payload_hash, now, now],
            (order.shop_order_id, claimed_at),
        )
    )
    if not updated:
        con.execute(
            _CLAIM_NEW,
            [
                route_id,
                order.shop_order_id,
                order.order_number,
                run_id,
                order.payload_hash,
                now,
                now,
                order.your_ref,
                *erp,
            ],
        )
    if order.shop_order_id not in known:
        resync_waiting(con, route_id, [order.shop_order_id])
        return
    con.execute(
        _WAITING_CLAIMED,
        [
            order.order_number,
            order.your_ref,
            run_id,
            order.payload_hash,
            now,
            route_id,
            order.shop_order_id,
        ],
    )


def _update_delivered(
    con: duckdb.DuckDBPyConnection,
    route_id: str,
    assignments: str,
    values: list[Any],
    order: tuple[str, datetime | None],
    held: tuple[str, list[Any]] = ("", []),
) -> bool:
    """``UPDATE delivered_orders SET assignments`` on one order's row; whether it matched.
    Its ``claimed_at`` (from ``waiting_orders``) is tried first: DuckDB then reads only the
    row groups whose ``claimed_at`` range holds it, not the whole table."""
    shop_order_id, claimed_at = order
    sql = (
        f"UPDATE delivered_orders SET {assignments} "
        f"WHERE route_id = ? AND shop_order_id = ? {held[0]}"
    )
    params = [*values, route_id, shop_order_id, *held[1]]
    if claimed_at is not None:
        if con.execute(sql + " AND claimed_at = ? RETURNING 1", [*params, claimed_at]).fetchall():
            return True
    return bool(con.execute(sql + " RETURNING 1", params).fetchall())


def _your_ref_owners(
    con: duckdb.DuckDBPyConnection,
    route_id: str,
    erp: tuple[str, str] | None,
    orders: Sequence[PendingOrder],
) -> dict[str, tuple[str, str]]:
    """Orders whose ``YourRef`` another route already uses on this ERP division:
    shop order id -> (that route, its order number)."""
    if erp is None or not orders:
        return {}
    rows = con.execute(
        """
        SELECT your_ref, route_id, order_number FROM delivered_orders
        WHERE erp_host = ? AND erp_division = ? AND route_id <> ?
          AND your_ref = ANY(?)
        """,
        [*erp, route_id, [o.your_ref for o in orders]],
    ).fetchall()
    owners = {str(ref): (str(route), str(number)) for ref, route, number in rows}
    return {o.shop_order_id: owners[o.your_ref] for o in orders if o.your_ref in owners}


_NO_LONGER_WAITS = (
    "not sent: it no longer waits for delivery (the ledger holds it as delivered or as a "
    "conflict, or it is no longer mapped)"
)
_CLAIM_NEW = """
INSERT INTO delivered_orders
    (route_id, shop_order_id, order_number, status, attempts, run_id,
     payload_hash, claimed_at, updated_at, your_ref, erp_host, erp_division)
VALUES (?, ?, ?, 'sending', 1, ?, ?, ?, ?, ?, ?, ?)
"""
#: A claim as ``waiting_orders`` mirrors it (the ``delivered_orders`` row keeps an order
#: number it already had, and counts one more attempt).
_WAITING_CLAIMED = """
UPDATE waiting_orders SET d_status = 'sending', d_order_number = coalesce(d_order_number, ?),
    d_your_ref = ?, d_run_id = ?, d_attempts = coalesce(d_attempts, 0) + 1,
    d_payload_hash = ?, d_claimed_at = ?
WHERE route_id = ? AND shop_order_id = ?
"""


def _waiting_sql(
    statuses: Sequence[str], countries: Iterable[str] | None, params: list[Any]
) -> str:
    """FROM/WHERE of the mapped orders the ledger does not hold as delivered: never claimed, a
    claim in one of ``statuses``, or ``failed`` with a payload changed since. ``countries``
    (appended to ``params``, after the route id already there) limits them to those. Reads
    ``waiting_orders`` only: what waits, never the orders delivered long ago."""
    params.append(list(statuses))
    sql = """
        FROM waiting_orders
        WHERE route_id = ? AND status = 'mapped'
          AND (d_status IS NULL OR d_status = ANY(?)
               OR (d_status = 'failed' AND d_payload_hash IS DISTINCT FROM payload_hash))
    """
    if countries is not None:
        params.append(sorted(countries))
        sql += " AND country = ANY(?)"
    return sql


def _claimed_at(
    con: duckdb.DuckDBPyConnection, route_id: str, shop_order_ids: Sequence[str]
) -> dict[str, datetime | None]:
    """When each of these orders was last claimed, as ``waiting_orders`` mirrors it."""
    if not shop_order_ids:
        return {}
    rows = con.execute(
        "SELECT shop_order_id, d_claimed_at FROM waiting_orders "
        "WHERE route_id = ? AND shop_order_id = ANY(?)",
        [route_id, list(shop_order_ids)],
    ).fetchall()
    return {str(r[0]): r[1] for r in rows}


def _claim_states(
    con: duckdb.DuckDBPyConnection, route_id: str, orders: Sequence[PendingOrder]
) -> dict[str, tuple[str | None, datetime | None]]:
    """Each waiting order's claim: (``delivered_orders`` status or None if never claimed,
    ``claimed_at``). An order missing here no longer waits."""
    if not orders:
        return {}
    rows = con.execute(
        "SELECT shop_order_id, d_status, d_claimed_at FROM waiting_orders "
        "WHERE route_id = ? AND shop_order_id = ANY(?)",
        [route_id, [o.shop_order_id for o in orders]],
    ).fetchall()
    return {str(r[0]): (r[1], r[2]) for r in rows}


def _forget(con: duckdb.DuckDBPyConnection, route_id: str, shop_order_ids: list[str]) -> None:
    """These orders no longer wait (delivered, or a conflict a person decides)."""
    if shop_order_ids:
        con.execute(
            "DELETE FROM waiting_orders WHERE route_id = ? AND shop_order_id = ANY(?)",
            [route_id, shop_order_ids],
        )


def resync_waiting(
    con: duckdb.DuckDBPyConnection, route_id: str, shop_order_ids: Sequence[str]
) -> None:
    """Rebuild these orders' ``waiting_orders`` rows from ``erp_orders`` and
    ``delivered_orders`` (each read whole: the way back when a row was written around the
    stores, not the way a tick goes)."""
    if not shop_order_ids:
        return
    keys = [route_id, list(shop_order_ids)]
    con.execute("DELETE FROM waiting_orders WHERE route_id = ? AND shop_order_id = ANY(?)", keys)
    con.execute(
        """
        INSERT INTO waiting_orders
        SELECT coalesce(e.route_id, d.route_id), coalesce(e.shop_order_id, d.shop_order_id),
               e.order_number, e.created_at, e.status, e.country, e.payload, e.payload_hash,
               e.your_ref, e.mapped_at, d.status, d.order_number, d.your_ref, d.run_id,
               d.attempts, d.payload_hash, d.claimed_at
        FROM (SELECT * FROM erp_orders
              WHERE route_id = ? AND shop_order_id = ANY(?)) e
        FULL JOIN (SELECT * FROM delivered_orders
                   WHERE route_id = ? AND shop_order_id = ANY(?)) d
            ON d.route_id = e.route_id AND d.shop_order_id = e.shop_order_id
        WHERE (e.status = 'mapped' AND d.shop_order_id IS NULL)
           OR d.status IN ('pending', 'sending', 'failed')
        """,
        [*keys, *keys],
    )
