"""Which delivered orders carry their ERP order number in the shop yet (``writeback.py``).

Columns of ``delivered_orders`` (migration 5): ``acknowledged_at`` is set once the shop took
the number, and never cleared, so an order is written back once; ``acknowledge_error`` keeps
the shop's words when it refused, ``acknowledge_attempts`` and ``acknowledge_tried_at`` how
often and when it was tried. A refused order stays waiting and is tried again on later runs,
after every order never tried (those come first, oldest delivery first).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from integration_project.ledger.db import Database, now_utc

#: What waits to be written back: delivered, with a number, not yet taken by the shop.
_WAITING = (
    "FROM delivered_orders WHERE route_id = ? AND status = 'delivered' "
    "AND acknowledged_at IS NULL AND erp_order_number IS NOT NULL"
)


@dataclass(frozen=True)
class WaitingAcknowledgement:
    shop_order_id: str
    order_number: str
    erp_order_number: int
    #: Tries so far (0: never tried); the last refusal's words, if any.
    attempts: int
    last_error: str | None


class Acknowledgements:
    def __init__(self, db: Database, route_id: str) -> None:
        self._db = db
        self._route_id = route_id

    def waiting(self, limit: int) -> list[WaitingAcknowledgement]:
        """Up to ``limit`` orders to write back: never tried first, then the least tried, each
        group oldest delivery first."""
        with self._db.connect() as con:
            rows = con.execute(
                "SELECT shop_order_id, order_number, erp_order_number, "
                "COALESCE(acknowledge_attempts, 0), acknowledge_error "
                + _WAITING
                + " ORDER BY COALESCE(acknowledge_attempts, 0), delivered_at, shop_order_id "
                "LIMIT ?",
                [self._route_id, limit],
            ).fetchall()
        return [WaitingAcknowledgement(*row) for row in rows]

    def count_waiting(self) -> int:
        with self._db.connect() as con:
            [(count,)] = con.execute("SELECT count(*) " + _WAITING, [self._route_id]).fetchall()
        return int(count)

    def acknowledged(self, shop_order_ids: Sequence[str], at: datetime | None = None) -> None:
        """The shop took the number for these orders: never written back again. One statement
        for many: a write the ledger missed (the process died first) is simply repeated."""
        if not shop_order_ids:
            return
        now = at or now_utc()
        self._update(
            shop_order_ids,
            "acknowledged_at = ?, acknowledge_error = NULL, acknowledge_tried_at = ?",
            [now, now],
        )

    def refused(self, shop_order_id: str, error: str, at: datetime | None = None) -> None:
        """The shop refused the write (its words in ``error``): tried again on a later run."""
        now = at or now_utc()
        self._update(
            [shop_order_id], "acknowledge_error = ?, acknowledge_tried_at = ?", [error, now]
        )

    def refusals(self, limit: int = 20) -> list[tuple[str, int, str]]:
        """(order number, attempts, the shop's last words) of orders the shop refused and that
        still wait, most tried first."""
        with self._db.connect() as con:
            rows = con.execute(
                "SELECT order_number, COALESCE(acknowledge_attempts, 0), acknowledge_error "
                + _WAITING
                + " AND acknowledge_error IS NOT NULL "
                "ORDER BY acknowledge_attempts DESC, order_number LIMIT ?",
                [self._route_id, limit],
            ).fetchall()
        return [(str(n), int(a), str(e)) for n, a, e in rows]

    def _update(
        self, shop_order_ids: Sequence[str], assignments: str, values: list[object]
    ) -> None:
        marks = ", ".join("?" * len(shop_order_ids))
        with self._db.connect() as con:
            con.execute(
                f"UPDATE delivered_orders SET {assignments}, "
                "acknowledge_attempts = COALESCE(acknowledge_attempts, 0) + 1 "
                f"WHERE route_id = ? AND shop_order_id IN ({marks}) AND status = 'delivered'",
                [*values, self._route_id, *shop_order_ids],
            )
