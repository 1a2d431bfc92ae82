"""Read-only queries of one route's rows for asset checks, sensors and delivery metadata.
Nothing here writes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import duckdb

from integration_project.ledger.db import Database, now_utc


class Views:
    def __init__(self, db: Database, route_id: str) -> None:
        self._db = db
        self._route_id = route_id

    def delivery_counts(self) -> dict[str, int]:
        """The route's ``delivered_orders`` rows per status."""
        with self._db.connect() as con:
            rows = con.execute(
                "SELECT status, count(*) FROM delivered_orders WHERE route_id = ? GROUP BY status",
                [self._route_id],
            ).fetchall()
        return {status: int(n) for status, n in rows}

    def duplicate_your_refs(self, limit: int = 20) -> tuple[int, list[tuple[str, int]]]:
        """``YourRef`` values held by more than one mapped order of the route: (how many
        values, sample of (YourRef, orders))."""
        sql = (
            "SELECT your_ref, count(*) AS n FROM erp_orders "
            "WHERE route_id = ? AND status = 'mapped' AND your_ref IS NOT NULL "
            "GROUP BY your_ref HAVING count(*) > 1"
        )
        with self._db.connect() as con:
            total = con.execute(
                f"SELECT count(*) FROM ({sql}) AS duplicated", [self._route_id]
            ).fetchone()[0]
            rows = con.execute(
                f"{sql} ORDER BY n DESC, your_ref LIMIT ?", [self._route_id, limit]
            ).fetchall()
        return int(total), [(str(r[0]), int(r[1])) for r in rows]

    def stuck_sending(
        self, older_than: timedelta, limit: int = 20
    ) -> tuple[int, list[tuple[str, datetime | None]]]:
        """Rows in ``sending`` claimed longer than ``older_than`` ago: (count, sample of
        (order number, claimed at)), oldest first."""
        where = "WHERE route_id = ? AND status = 'sending' AND coalesce(claimed_at, updated_at) < ?"
        params: list[Any] = [self._route_id, now_utc() - older_than]
        with self._db.connect() as con:
            total = con.execute(
                f"SELECT count(*) FROM delivered_orders {where}", params
            ).fetchone()[0]
            rows = con.execute(
                f"SELECT order_number, coalesce(claimed_at, updated_at) FROM delivered_orders "
                f"{where} ORDER BY 2 LIMIT ?",
                [*params, limit],
            ).fetchall()
        return int(total), [(str(r[0]), r[1]) for r in rows]

    def failed_orders(self, limit: int = 20) -> tuple[int, list[tuple[str, str | None]]]:
        """Rows the ERP refused: (count, sample of (order number, the ERP's message)),
        most recent first."""
        return self._rows_with_status("failed", limit)

    def conflicts(self, limit: int = 20) -> tuple[int, list[tuple[str, str | None]]]:
        """Rows in ``conflict``: (count, sample of (order number, why)), most recent first."""
        return self._rows_with_status("conflict", limit)

    def _rows_with_status(
        self, status: str, limit: int
    ) -> tuple[int, list[tuple[str, str | None]]]:
        where = "WHERE route_id = ? AND status = ?"
        params = [self._route_id, status]
        with self._db.connect() as con:
            total = con.execute(
                f"SELECT count(*) FROM delivered_orders {where}", params
            ).fetchone()[0]
            rows = con.execute(
                f"SELECT order_number, last_error FROM delivered_orders {where} "
                "ORDER BY updated_at DESC, order_number LIMIT ?",
                [*params, limit],
            ).fetchall()
        return int(total), [(str(r[0]), r[1]) for r in rows]

    def recent_delivered(self, limit: int = 10) -> list[tuple[str, str, str | None]]:
        """The most recently delivered rows: (order number, YourRef, ERP OrderID)."""
        with self._db.connect() as con:
            rows = con.execute(
                "SELECT order_number, coalesce(your_ref, order_number), erp_order_id "
                "FROM delivered_orders WHERE route_id = ? AND status = 'delivered' "
                "ORDER BY delivered_at DESC NULLS LAST, shop_order_id LIMIT ?",
                [self._route_id, limit],
            ).fetchall()
        return [(str(r[0]), str(r[1]), r[2]) for r in rows]

    @contextmanager
    def latest_delivered(self, limit: int = 10) -> Iterator[duckdb.DuckDBPyConnection]:
        """The most recently delivered orders as a DuckDB result to read inside the block (its
        connection closes after it): order number, YourRef, ERP order number and delivery
        time, in UTC whatever the machine's time zone."""
        with self._db.connect() as con:
            con.execute("SET TimeZone = 'UTC'")  # this connection only
            yield con.execute(
                "SELECT order_number, coalesce(your_ref, order_number) AS your_ref, "
                "erp_order_number, delivered_at FROM delivered_orders "
                "WHERE route_id = ? AND status = 'delivered' "
                "ORDER BY delivered_at DESC NULLS LAST, shop_order_id LIMIT ?",
                [self._route_id, limit],
            )

    def latency_seconds_max(self, run_id: str) -> float | None:
        """Longest time from mapping (``erp_orders.mapped_at``) to delivery among the orders
        this run recorded as delivered; None if it delivered none."""
        with self._db.connect() as con:
            row = con.execute(
                """
                SELECT max(greatest(0, date_part('epoch', d.delivered_at)
                                  - date_part('epoch', e.mapped_at)))
                FROM delivered_orders d JOIN erp_orders e USING (route_id, shop_order_id)
                WHERE d.route_id = ? AND d.run_id = ? AND d.status = 'delivered'
                  AND d.delivered_at IS NOT NULL
                """,
                [self._route_id, run_id],
            ).fetchone()
        return None if row is None or row[0] is None else round(float(row[0]), 3)
