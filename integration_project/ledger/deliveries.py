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
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import duckdb

from integration_project.ledger.db import Database, now_utc
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

    # --- what waits ---------------------------------------------------------------------------

    def in_flight(self) -> list[InFlight]:
        """Rows left in ``sending``: their outcome is unknown until looked up in the ERP."""
        with self._db.connect() as con:
            rows = con.execute(
                "SELECT d.shop_order_id, d.order_number, d.run_id, d.attempts, "
                "coalesce(d.your_ref, d.order_number), e.payload FROM delivered_orders d "
                "LEFT JOIN erp_orders e USING (route_id, shop_order_id) "
                "WHERE d.route_id = ? AND d.status = 'sending' ORDER BY d.claimed_at",
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
            "SELECT e.shop_order_id, e.order_number, e.payload, e.payload_hash, e.your_ref "
            + _waiting_sql(("pending",), countries, params)
            + " ORDER BY e.created_at, e.shop_order_id"
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
        sql = "SELECT count(*), min(e.mapped_at) " + _waiting_sql(
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
        before the POST) for the next ones, in one connection. A non-delivered outcome only
        touches a row this run still holds (another run may have taken it over since).

        An order to claim whose ``YourRef`` another route already used on the same ERP
        division is not claimed: it is recorded as ``conflict``. Returns those (shop order id
        -> reason); the caller must not send them."""
        if not outcomes and not claim:
            return {}
        with self._db.connect() as con:
            self._write_outcomes(con, outcomes, run_id)
            return self._claim_all(con, claim, run_id)

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
        with self._db.connect() as con:
            con.execute(
                "UPDATE delivered_orders SET status = 'conflict', last_error = ?, "
                "erp_order_id = ?, updated_at = ? WHERE route_id = ? AND shop_order_id = ?",
                [reason, erp_order_id, now_utc(), self._route_id, shop_order_id],
            )

    def release_claim(self, shop_order_id: str, error: str) -> None:
        """The ERP certainly did not get it (429, refused connection): back to ``pending``."""
        with self._db.connect() as con:
            con.execute(
                "UPDATE delivered_orders SET status = 'pending', last_error = ?, updated_at = ? "
                "WHERE route_id = ? AND shop_order_id = ?",
                [error, now_utc(), self._route_id, shop_order_id],
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
            sql += " AND (list_contains(?, order_number) OR list_contains(?, your_ref))"
            params += [wanted, wanted]
        with self._db.connect() as con:
            rows = con.execute(sql + " RETURNING shop_order_id", params).fetchall()
        return len(rows)

    # --- inside record_outcomes' connection -----------------------------------------------------

    def _write_outcomes(
        self, con: duckdb.DuckDBPyConnection, outcomes: Sequence[Outcome], run_id: str
    ) -> None:
        now = now_utc()
        delivered = [o for o in outcomes if o.status == "delivered"]
        if delivered:
            con.executemany(
                """
                UPDATE delivered_orders SET status = 'delivered', erp_order_id = ?,
                    erp_order_number = ?, last_error = NULL, run_id = ?, delivered_at = ?,
                    updated_at = ?
                WHERE route_id = ? AND shop_order_id = ?
                """,
                [
                    (
                        o.erp_order_id,
                        o.erp_order_number,
                        run_id,
                        now,
                        now,
                        self._route_id,
                        o.shop_order_id,
                    )
                    for o in delivered
                ],
            )
        others = [o for o in outcomes if o.status != "delivered"]
        if others:
            con.executemany(
                """
                UPDATE delivered_orders SET status = ?, last_error = ?, updated_at = ?
                WHERE route_id = ? AND shop_order_id = ? AND run_id = ?
                  AND status = 'sending'
                """,
                [[o.status, o.error, now, self._route_id, o.shop_order_id, run_id] for o in others],
            )

    def _claim_all(
        self, con: duckdb.DuckDBPyConnection, orders: Sequence[PendingOrder], run_id: str
    ) -> dict[str, str]:
        """Claim ``orders``; those whose ``YourRef`` another route owns become ``conflict``."""
        owners = self._your_ref_owners(con, orders)
        conflicts: dict[str, str] = {}
        for order in orders:
            self._claim(con, order, run_id)
            if order.shop_order_id not in owners:
                continue
            route, number = owners[order.shop_order_id]
            conflicts[order.shop_order_id] = (
                f"YourRef {order.your_ref} is already used on this ERP division by "
                f"order {number} of route {route}; not sent (give the routes "
                "your_ref templates that cannot produce the same value)"
            )
            con.execute(
                "UPDATE delivered_orders SET status = 'conflict', last_error = ? "
                "WHERE route_id = ? AND shop_order_id = ?",
                [conflicts[order.shop_order_id], self._route_id, order.shop_order_id],
            )
        return conflicts

    def _claim(self, con: duckdb.DuckDBPyConnection, order: PendingOrder, run_id: str) -> None:
        """Step 1 of the protocol: the row is ``sending`` before the POST."""
        now = now_utc()
        con.execute(
            """
            INSERT INTO delivered_orders
                (route_id, shop_order_id, order_number, status, attempts, run_id,
                 payload_hash, claimed_at, updated_at, your_ref, erp_host, erp_division)
            VALUES (?, ?, ?, 'sending', 1, ?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT (route_id, shop_order_id) DO UPDATE SET
                status = 'sending',
                your_ref = excluded.your_ref,
                erp_host = excluded.erp_host,
                erp_division = excluded.erp_division,
                attempts = delivered_orders.attempts + 1,
                run_id = excluded.run_id,
                payload_hash = excluded.payload_hash,
                claimed_at = excluded.claimed_at,
                updated_at = excluded.updated_at
            """,
            [
                self._route_id,
                order.shop_order_id,
                order.order_number,
                run_id,
                order.payload_hash,
                now,
                now,
                order.your_ref,
                *(self._endpoints.erp or (None, None)),
            ],
        )

    def _your_ref_owners(
        self, con: duckdb.DuckDBPyConnection, orders: Sequence[PendingOrder]
    ) -> dict[str, tuple[str, str]]:
        """Orders whose ``YourRef`` another route already uses on this ERP division:
        shop order id -> (that route, its order number)."""
        erp = self._endpoints.erp
        if erp is None or not orders:
            return {}
        rows = con.execute(
            """
            SELECT your_ref, route_id, order_number FROM delivered_orders
            WHERE erp_host = ? AND erp_division = ? AND route_id <> ?
              AND list_contains(?, your_ref)
            """,
            [*erp, self._route_id, [o.your_ref for o in orders]],
        ).fetchall()
        owners = {str(ref): (str(route), str(number)) for ref, route, number in rows}
        return {o.shop_order_id: owners[o.your_ref] for o in orders if o.your_ref in owners}


def _waiting_sql(
    statuses: Sequence[str], countries: Iterable[str] | None, params: list[Any]
) -> str:
    """FROM/WHERE of the mapped orders the ledger does not hold as delivered: no row yet, a
    row in one of ``statuses``, or ``failed`` with a payload changed since. ``countries``
    (appended to ``params``, after the route id already there) limits them to those."""
    params.append(list(statuses))
    sql = """
        FROM erp_orders e LEFT JOIN delivered_orders d USING (route_id, shop_order_id)
        WHERE e.route_id = ? AND e.status = 'mapped'
          AND (d.shop_order_id IS NULL OR list_contains(?, d.status)
               OR (d.status = 'failed' AND d.payload_hash IS DISTINCT FROM e.payload_hash))
    """
    if countries is not None:
        params.append(sorted(countries))
        sql += " AND list_contains(?, e.country)"
    return sql
