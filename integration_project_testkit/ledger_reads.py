"""Reads of the ledger's tables that only tests need: the rows themselves, to assert on what the
protocol left behind. Production code reads them through the ledger's stores."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from integration_project.ledger import Ledger


def delivered_rows(ledger: Ledger) -> list[dict[str, Any]]:
    """Every ``delivered_orders`` row of the ledger's route, by shop id, as column -> value."""
    with ledger.db.connect() as con:
        cursor = con.execute(
            "SELECT * FROM delivered_orders WHERE route_id = ? ORDER BY shop_order_id",
            [ledger.route_id],
        )
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def mapping_counts(ledger: Ledger, start: datetime, end: datetime) -> dict[str, int]:
    """The route's ``erp_orders`` rows created in ``[start, end)``, per status."""
    with ledger.db.connect() as con:
        rows = con.execute(
            "SELECT status, count(*) FROM erp_orders "
            "WHERE route_id = ? AND created_at >= ? AND created_at < ? GROUP BY status",
            [ledger.route_id, start, end],
        ).fetchall()
    return {status: int(n) for status, n in rows}


def every_table_rows(ledger: Ledger) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table of the ledger (its own schema: no temporary tables or views),
    by table name; on either backend, for asserting that some value is gone everywhere."""
    with ledger.db.connect() as con:
        tables = con.execute(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_catalog = current_database() AND table_schema = current_schema() "
            "AND table_type = 'BASE TABLE' ORDER BY table_name"
        ).fetchall()
        return {t: con.execute(f'SELECT * FROM "{t}"').fetchall() for (t,) in tables}
