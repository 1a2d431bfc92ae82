"""Delivered orders as the warehouse export reads them: one UTC day of a route's deliveries, in
batches, as Arrow tables of orders and of their lines.

Two steps, so the ledger is held only while a batch's plain columns are read:

* :meth:`Exports.delivered_batches` reads a day's ``delivered`` rows in keyset batches by shop
  id, each with its ERP sales order (``erp_orders.payload`` as text), its destination country
  and what the customer paid (the staged order's ``amountTotal``). The SQL runs on DuckDB and
  PostgreSQL; only reading one JSON field differs (:data:`_AMOUNT_TOTAL`).
* :class:`ExportShaper` turns a batch into the two tables in a private in-memory DuckDB (as
  :mod:`.projection` does): the sales order's lines unnested, amounts as decimals, the ERP
  item's code from the division's item cache and each VAT code's rate.

No personal data leaves through here: the ERP account id (``OrderedBy``) stands for the
customer, never an e-mail address, a name or the shop's customer number (README "Personal
data": those stay in the ledger, where retention blanks them).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime
from decimal import Decimal

import duckdb
import pyarrow as pa

from integration_project.ledger.db import Database

#: Orders per batch: the memory an export needs does not grow with the day's orders.
BATCH_SIZE = 5_000

#: What the customer paid, read from the staged order's JSON, per dialect.
_AMOUNT_TOTAL = {
    "duckdb": "json_extract_string(s.payload, '$.amountTotal')",
    "postgres": "s.payload->>'amountTotal'",
}

_WHERE = "d.route_id = ? AND d.status = 'delivered' AND d.delivered_at >= ? AND d.delivered_at < ?"

_BATCH = f"""
SELECT d.shop_order_id, d.order_number,
       coalesce(d.your_ref, e.your_ref, d.order_number) AS your_ref,
       d.erp_order_id, d.erp_order_number, d.delivered_at, e.country AS shipping_country,
       e.payload::VARCHAR AS erp_payload, {{amount_total}} AS amount_total
FROM delivered_orders d
LEFT JOIN erp_orders e ON e.route_id = d.route_id AND e.shop_order_id = d.shop_order_id
LEFT JOIN staged_orders s ON s.route_id = d.route_id AND s.shop_order_id = d.shop_order_id
WHERE {_WHERE} AND d.shop_order_id > ? AND (? IS NULL OR d.shop_order_id <= ?)
"""

ORDERS_SCHEMA = pa.schema(
    [
        ("route_id", pa.string()),
        ("shop_order_id", pa.string()),
        ("order_number", pa.string()),
        ("your_ref", pa.string()),
        ("erp_order_id", pa.string()),
        ("erp_order_number", pa.int64()),
        ("delivered_at", pa.timestamp("us", tz="UTC")),
        ("currency", pa.string()),
        ("amount_total", pa.decimal128(18, 2)),
        ("shipping_country", pa.string()),
        ("erp_account_id", pa.string()),
    ]
)

LINES_SCHEMA = pa.schema(
    [
        ("route_id", pa.string()),
        ("shop_order_id", pa.string()),
        ("line_number", pa.int32()),
        ("item_code", pa.string()),
        ("erp_item_id", pa.string()),
        ("description", pa.string()),
        ("quantity", pa.decimal128(18, 4)),
        ("unit_price", pa.decimal128(18, 4)),
        ("vat_code", pa.string()),
        ("vat_percent", pa.decimal128(7, 3)),
        ("amount", pa.decimal128(18, 2)),
        ("vat_amount", pa.decimal128(18, 2)),
    ]
)

_ORDERS = """
SELECT ? AS route_id, shop_order_id, order_number, your_ref, erp_order_id, erp_order_number,
       delivered_at, json_extract_string(erp_payload, '$.Currency') AS currency,
       TRY_CAST(amount_total AS DECIMAL(18, 2)) AS amount_total, shipping_country,
       json_extract_string(erp_payload, '$.OrderedBy') AS erp_account_id
FROM export_batch ORDER BY delivered_at, shop_order_id
"""

# Amounts as Exact computes them for a code that excludes VAT (the only kind the route picks):
# the line is quantity x net price in cents, its VAT that times the code's rate, each rounded
# half away from zero.
_LINES = """
WITH unnested AS (
    SELECT shop_order_id,
           unnest(json_extract(erp_payload, '$.SalesOrderLines[*]')) AS line,
           unnest(range(1, CAST(coalesce(json_array_length(erp_payload,
                                                           '$.SalesOrderLines'), 0)
                                AS BIGINT) + 1)) AS line_number
    FROM export_batch WHERE erp_payload IS NOT NULL
), typed AS (
    SELECT shop_order_id, line_number,
           json_extract_string(line, '$.Item') AS erp_item_id,
           json_extract_string(line, '$.Description') AS description,
           CAST(json_extract_string(line, '$.Quantity') AS DECIMAL(18, 4)) AS quantity,
           CAST(json_extract_string(line, '$.NetPrice') AS DECIMAL(18, 4)) AS unit_price,
           json_extract_string(line, '$.VATCode') AS vat_code
    FROM unnested
)
SELECT ? AS route_id, t.shop_order_id, CAST(t.line_number AS INTEGER) AS line_number,
       i.code AS item_code, t.erp_item_id, t.description, t.quantity, t.unit_price,
       t.vat_code, v.percent AS vat_percent,
       round(t.quantity * t.unit_price, 2)::DECIMAL(18, 2) AS amount,
       round(round(t.quantity * t.unit_price, 2) * v.percent / 100, 2)::DECIMAL(18, 2)
           AS vat_amount
FROM typed t
LEFT JOIN export_items i ON i.item_id = t.erp_item_id
LEFT JOIN export_vat v ON v.code = trim(t.vat_code)
ORDER BY t.shop_order_id, t.line_number
"""


class Exports:
    """One route's delivered orders, read for the export."""

    def __init__(self, db: Database, route_id: str, erp_key: str) -> None:
        self._db = db
        self._route_id = route_id
        self._erp_key = erp_key

    def delivered_batches(
        self, start: datetime, end: datetime, batch_size: int = BATCH_SIZE
    ) -> Iterator[pa.Table]:
        """Orders delivered in ``[start, end)``, in batches of at most ``batch_size`` by shop
        id. The batches' bounds are found in one pass first; the connection is closed between
        batches, so a delivery run is never kept waiting for the writing of a file."""
        window = [self._route_id, start, end]
        with self._db.connect() as con:
            bounds = [
                r[0]
                for r in con.execute(
                    f"""
                    SELECT shop_order_id FROM (
                        SELECT d.shop_order_id,
                               row_number() OVER (ORDER BY d.shop_order_id) AS n
                        FROM delivered_orders d WHERE {_WHERE}) AS numbered
                    WHERE n % ? = 0 ORDER BY shop_order_id
                    """,
                    [*window, batch_size],
                ).fetchall()
            ]
        sql = _BATCH.format(amount_total=_AMOUNT_TOTAL[self._db.dialect])
        for after, upto in zip(["", *bounds], [*bounds, None], strict=True):  # (after, upto]
            with self._db.connect() as con:
                batch = con.sql(sql, params=[*window, after, upto, upto]).to_arrow_table()
            if batch.num_rows:
                yield batch

    def item_codes(self) -> pa.Table:
        """The division's cached items (``item_id``, ``code``): a sales order names its items
        by ERP id only. Should two codes share an item, the first code is taken."""
        with self._db.connect() as con:
            rows = con.execute(
                "SELECT item_id, min(code) FROM erp_items WHERE erp_key = ? "
                "AND item_id IS NOT NULL GROUP BY item_id",
                [self._erp_key],
            ).fetchall()
        return pa.table(
            {
                "item_id": pa.array([r[0] for r in rows], pa.string()),
                "code": pa.array([r[1] for r in rows], pa.string()),
            }
        )

    def vat_percents(self) -> dict[str, Decimal]:
        """The division's cached VAT codes and their rates in percent (Exact reports 0.21)."""
        with self._db.connect() as con:
            rows = con.execute(
                "SELECT code, percentage FROM erp_vat_codes "
                "WHERE erp_key = ? AND percentage IS NOT NULL",
                [self._erp_key],
            ).fetchall()
        return {str(code): Decimal(str(share)) * 100 for code, share in rows}


class ExportShaper:
    """Turns :meth:`Exports.delivered_batches` into order and line tables of the export's
    schemas, in a private in-memory DuckDB (one thread, bounded memory). Close it when done
    (or use it in a ``with``)."""

    def __init__(self, route_id: str, items: pa.Table, vat_percents: Mapping[str, Decimal]) -> None:
        self._route_id = route_id
        self._con = duckdb.connect(":memory:", config={"threads": 1, "memory_limit": "256MB"})
        self._con.execute("SET TimeZone = 'UTC'")
        # Exact pads VAT codes to three characters ('19 ', reference/exact-online.md):
        # compared trimmed.
        percents = {code.strip(): rate for code, rate in vat_percents.items()}
        vat = pa.table(
            {
                "code": pa.array(list(percents), pa.string()),
                "percent": pa.array(list(percents.values()), pa.decimal128(7, 3)),
            }
        )
        # Materialised once: the batches join them many times.
        self._con.register("items_in", items)
        self._con.execute("CREATE TABLE export_items AS SELECT * FROM items_in")
        self._con.register("vat_in", vat)
        self._con.execute("CREATE TABLE export_vat AS SELECT * FROM vat_in")
        self._con.unregister("items_in")
        self._con.unregister("vat_in")

    def __enter__(self) -> ExportShaper:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._con.close()

    def shape(self, batch: pa.Table) -> tuple[pa.Table, pa.Table]:
        """(orders, lines) of one batch, typed as :data:`ORDERS_SCHEMA` and
        :data:`LINES_SCHEMA`."""
        self._con.register("export_batch", batch)
        try:
            orders = self._con.sql(_ORDERS, params=[self._route_id]).to_arrow_table()
            lines = self._con.sql(_LINES, params=[self._route_id]).to_arrow_table()
        finally:
            self._con.unregister("export_batch")
        return orders.cast(ORDERS_SCHEMA), lines.cast(LINES_SCHEMA)
