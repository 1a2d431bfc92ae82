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

import pyarrow as pa

from integration_project.ledger.db import Database, now_utc


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


class MappedOrders:
    def __init__(self, db: Database, route_id: str) -> None:
        self._db = db
        self._route_id = route_id

    def record(self, rows: Iterable[MappingRow], run_id: str) -> None:
        """Upsert the rows by shop id. ``mapped_at`` stays when an order's payload and status
        did not change, so delivery latency is measured from when it first looked so."""
        rows = list(rows)
        if not rows:
            return
        with self._db.connect() as con:
            con.register("mapping_batch", self._batch(rows))
            con.execute(
                """
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
                """,
                [now_utc(), run_id],
            )
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
            "WHERE route_id = ? AND status = 'mapped' "
            "AND (country IS NULL OR NOT list_contains(?, country))"
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
