"""Mapped orders (``erp_orders``): what the transforms made of each staged order, one route's
rows. A ``mapped`` row holds the ERP sales order to send and its ``YourRef``, the ERP's
exactly-once look-up key."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import duckdb
import pyarrow as pa

from integration_project.ledger.db import Database, now_utc, route_lock


@dataclass(frozen=True)
class MappingRow:
    shop_order_id: str
    order_number: str | None
    created_at: datetime
    status: str  # mapped | skipped | quarantined
    country: str | None
    reason: str | None
    payload: dict[str, Any] | None


def payload_hash(payload: dict[str, Any]) -> str:
    """A short fingerprint of a sales order: a ``failed`` order is resent once it changes."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


#: The batch into ``erp_orders``; returns each order's fate (``{action}``: INSERT for an
#: order new to the ledger) and its ``mapped_at`` (this call's when new or changed).
_UPSERT = """
INSERT INTO erp_orders
SELECT route_id, shop_order_id, order_number, created_at, status, country,
       reason, payload::JSON, payload_hash, ?, ?, your_ref
FROM mapping_batch
ON CONFLICT (route_id, shop_order_id) DO UPDATE SET
    your_ref = excluded.your_ref,
    order_number = excluded.order_number,
    created_at = excluded.created_at,
    status = excluded.status,
    country = excluded.country,
    reason = excluded.reason,
    payload = excluded.payload,
    payload_hash = excluded.payload_hash,
    -- When the current payload first appeared: a look-back re-map of an
    -- unchanged order keeps it, so delivery latency is measured honestly.
    mapped_at = CASE
        WHEN erp_orders.payload_hash IS NOT DISTINCT FROM excluded.payload_hash
             AND erp_orders.status = excluded.status
        THEN erp_orders.mapped_at ELSE excluded.mapped_at END,
    run_id = excluded.run_id
RETURNING {action} AS action, shop_order_id, mapped_at
"""
#: How each dialect tells an inserted row from an updated one in ``RETURNING``: DuckDB
#: names the action; on PostgreSQL a row this statement inserted has no ``xmax`` yet.
_ACTION = {
    "duckdb": "merge_action",
    "postgres": "CASE WHEN erp_orders.xmax = 0 THEN 'INSERT' ELSE 'UPDATE' END",
}
#: The batch's orders ``waiting_orders`` holds take their new mapping.
_WAITING_REMAPPED = """
UPDATE waiting_orders w SET
    order_number = b.order_number, created_at = b.created_at, status = b.status,
    country = b.country, payload = b.payload::JSON, payload_hash = b.payload_hash,
    your_ref = b.your_ref, mapped_at = b.mapped_at
FROM (SELECT m.*, u.mapped_at FROM mapping_batch m JOIN mapping_upserted u
      USING (shop_order_id)) b
WHERE w.route_id = ? AND w.shop_order_id = b.shop_order_id
"""
#: Mapped orders of the batch that start to wait; ``{which}`` narrows them down.
_WAITING_NEW = """
INSERT INTO waiting_orders
    (route_id, shop_order_id, order_number, created_at, status, country, payload,
     payload_hash, your_ref, mapped_at)
SELECT m.route_id, m.shop_order_id, m.order_number, m.created_at, m.status, m.country,
       m.payload::JSON, m.payload_hash, m.your_ref, u.mapped_at
FROM mapping_batch m JOIN mapping_upserted u USING (shop_order_id)
WHERE m.status = 'mapped'
  AND NOT EXISTS (SELECT 1 FROM waiting_orders w
                  WHERE w.route_id = m.route_id AND w.shop_order_id = m.shop_order_id)
  AND {which}
"""
#: Orders new to the ledger: never claimed.
_NEW_TO_LEDGER = "u.action = 'INSERT'"
#: Orders the ledger held, whose mapping changed, and that were never claimed: an order
#: that was skipped and is now mapped (a claimed one is in waiting_orders, or settled).
_CHANGED_NEVER_CLAIMED = """u.action <> 'INSERT' AND u.mapped_at = ?
  AND NOT EXISTS (SELECT 1 FROM delivered_orders d
                  WHERE d.route_id = m.route_id AND d.shop_order_id = m.shop_order_id)"""


def _upserted_table(rows: list[tuple[Any, ...]]) -> pa.Table:
    """What the upsert returned (action, shop id, mapped_at), as a table to join."""
    action, shop_order_id, mapped_at = zip(*rows, strict=True) if rows else ((), (), ())
    return pa.table(
        {
            "action": pa.array(action, pa.string()),
            "shop_order_id": pa.array(shop_order_id, pa.string()),
            "mapped_at": pa.array(mapped_at, pa.timestamp("us", tz="UTC")),
        }
    )


def _keep_waiting(con: duckdb.DuckDBPyConnection, route_id: str, now: datetime) -> None:
    """Bring ``waiting_orders`` in line with the batch just upserted (``mapping_batch`` and
    what the upsert returned, ``mapping_upserted``): orders it holds take their new mapping;
    those no longer mapped and never claimed leave it; mapped orders new to the ledger join
    it. ``delivered_orders`` is read only for orders the ledger held whose mapping changed
    and that it does not hold as waiting (rare: e.g. a skipped order that is now mapped), so
    a tick's mapping does not read every order ever delivered."""
    # fetchall: an unfinished result would keep the caller from unregistering its tables.
    con.execute(_WAITING_REMAPPED, [route_id]).fetchall()
    con.execute(
        "DELETE FROM waiting_orders WHERE route_id = ? AND status IS DISTINCT FROM 'mapped' "
        "AND d_status IS NULL",
        [route_id],
    ).fetchall()
    con.execute(_WAITING_NEW.format(which=_NEW_TO_LEDGER)).fetchall()
    changed = con.execute(
        "SELECT count(*) FROM mapping_batch m JOIN mapping_upserted u USING (shop_order_id) "
        "WHERE m.status = 'mapped' AND u.action <> 'INSERT' AND u.mapped_at = ? "
        "AND NOT EXISTS (SELECT 1 FROM waiting_orders w "
        "                WHERE w.route_id = m.route_id AND w.shop_order_id = m.shop_order_id)",
        [now],
    ).fetchall()[0][0]
    if changed:
        con.execute(_WAITING_NEW.format(which=_CHANGED_NEVER_CLAIMED), [now]).fetchall()


class MappedOrders:
    def __init__(self, db: Database, route_id: str) -> None:
        self._db = db
        self._route_id = route_id

    def record(self, rows: Iterable[MappingRow], run_id: str) -> None:
        """Upsert the rows by shop id. ``mapped_at`` stays when an order's payload and status
        did not change, so delivery latency is measured from when it first looked so.
        ``waiting_orders`` follows in the same transaction (see :func:`_keep_waiting`)."""
        rows = list(rows)
        if not rows:
            return
        now = now_utc()
        with self._db.transaction(lock=route_lock(self._route_id)) as con:
            con.register("mapping_batch", self._batch(rows))
            upserted = con.execute(
                _UPSERT.format(action=_ACTION[self._db.dialect]), [now, run_id]
            ).fetchall()
            con.register("mapping_upserted", _upserted_table(upserted))
            _keep_waiting(con, self._route_id, now)
            con.unregister("mapping_upserted")
            con.unregister("mapping_batch")

    def _batch(self, rows: list[MappingRow]) -> pa.Table:
        payloads = [r.payload for r in rows]
        return pa.table(
            {
                "route_id": [self._route_id] * len(rows),
                "shop_order_id": [r.shop_order_id for r in rows],
                "order_number": [r.order_number for r in rows],
                "created_at": pa.array([r.created_at for r in rows], pa.timestamp("us", tz="UTC")),
                "status": [r.status for r in rows],
                "country": [r.country for r in rows],
                "reason": [r.reason for r in rows],
                "payload": [
                    json.dumps(p, ensure_ascii=False) if p is not None else None for p in payloads
                ],
                "payload_hash": [payload_hash(p) if p is not None else None for p in payloads],
                "your_ref": [str(p.get("YourRef")) if p is not None else None for p in payloads],
            }
        )

    def count(self) -> int:
        """How many of the route's orders are mapped (to be sent or sent)."""
        with self._db.connect() as con:
            return con.execute(
                "SELECT count(*) FROM erp_orders WHERE route_id = ? AND status = 'mapped'",
                [self._route_id],
            ).fetchone()[0]

    def outside_countries(
        self, allowed: Iterable[str], limit: int = 20
    ) -> tuple[int, list[tuple[str | None, str | None]]]:
        """Mapped orders whose country is not in ``allowed`` (or missing): (count, sample of
        (order number, country))."""
        where = (
            "WHERE route_id = ? AND status = 'mapped' AND (country IS NULL OR NOT country = ANY(?))"
        )
        params: list[Any] = [self._route_id, sorted(allowed)]
        with self._db.connect() as con:
            total = con.execute(f"SELECT count(*) FROM erp_orders {where}", params).fetchone()[0]
            rows = con.execute(
                f"SELECT order_number, country FROM erp_orders {where} "
                "ORDER BY order_number LIMIT ?",
                [*params, limit],
            ).fetchall()
        return int(total), [(r[0], r[1]) for r in rows]
