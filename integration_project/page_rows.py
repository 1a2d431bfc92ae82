"""A fetch's pages as staging rows, read from the bytes the shop sent.

The fast path hands a page's bytes to DuckDB, whose JSON reader parses it and cuts it into
rows (id, order number, ``createdAt``, the order's JSON) in C: no Python object per order.
It runs in an in-memory database of the fetch's own, so the ledger's file is not held while
the next page is on the wire; :meth:`PageRows.take` hands the rows over for staging.

Orders that need the care of the Python path (``ledger.staging.page_table``: ``order_json``,
``staging_key``, ``parse_created_at`` per order) send their whole page there, so both paths
stage the same rows. A page goes the Python way when anything in it is unusual:

* bytes that are not UTF-8, an escaped surrogate (``\\ud800``), ``NaN`` or ``Infinity``, a
  number a double cannot hold exactly (16 digits or more, an exponent of 3 digits);
* an entry that is not an object, or whose ``id`` is not a plain key (letters, digits, ``-``
  and ``_``, at most 64), whose ``createdAt`` is not ISO 8601 in UTC
  (``2026-11-21T10:00:00.000+00:00`` or ``…Z``), whose ``orderNumber`` is not text of at most
  255 characters, an integer or null, or which names a member twice;
* an entry nested deeper than ``MAX_ORDER_DEPTH`` levels;
* an answer DuckDB cannot read, or that is not an object with a ``data`` list (the Python
  path then raises the error that names the page).

Scanning for the unusual costs about a third of what parsing a page in Python would.
"""

from __future__ import annotations

import json
import tempfile
from datetime import datetime
from typing import Any

import duckdb
import pyarrow as pa

from integration_project.ledger.db import MEMORY_LIMIT, now_utc
from integration_project.ledger.staging import page_table
from integration_project.shopware.client import OrderPage, PageFacts
from integration_project.shopware.models import MAX_ORDER_DEPTH, nested_deeper_than

#: Text a page's fast path does not take: where a value starts, NaN, Infinity, 16 digits or
#: more, a 3-digit exponent; anywhere, an escaped surrogate (RE2 syntax, run by DuckDB).
UNUSUAL = r"[:\[,]\s*-?(NaN|Infinity|\d{16}|\d[\d.]*[eE][+-]?\d{3})|\\u[dD][89a-fA-F]"
#: A shop id the fast path takes as it is (Shopware's are 32 hex digits).
PLAIN_ID = r"[0-9A-Za-z_-]{1,64}"
#: A ``createdAt`` the fast path takes as it is: ISO 8601 in UTC, as Shopware writes it.
PLAIN_CREATED_AT = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?(Z|\+00:00)"

#: The page's columns, as ``staged_orders_incoming`` has them (without ``route_id``).
ROW_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("shop_order_id", pa.string()),
        ("order_number", pa.string()),
        ("created_at", pa.timestamp("us", tz="UTC")),
        ("payload", pa.string()),
        ("fetched_at", pa.timestamp("us", tz="UTC")),
        ("auto_increment", pa.int64()),
    ]
)
# Each json_* call parses its argument again, so each is asked for as much as it can give at
# once: the page is parsed twice (its shape; its entries, cut out as minified text), and each
# entry twice (the four members; its member names, to find one named twice).
#: The page's bytes as text, once (``decode`` refuses bytes that are not UTF-8).
_DOC = "CREATE OR REPLACE TEMP TABLE page_doc AS SELECT decode(?) AS t"
_HEAD = """
SELECT regexp_matches(t, ?), json_type(t, ['$', '$.data', '$.total']),
       json_extract_string(t, '$.total')
FROM page_doc
"""
_ENTRIES = """
CREATE OR REPLACE TEMP TABLE page_entries AS
SELECT text, left(text, 1) = '{' AS is_object, json_keys(text) AS keys,
       f[1] AS id, f[2] AS created_at, f[3] AS number,
       CASE WHEN json_type(f[4]) IN ('BIGINT', 'UBIGINT') THEN TRY_CAST(f[4] ->> '$' AS BIGINT)
       END AS auto_increment
FROM (SELECT text,
             json_extract(text, ['$.id', '$.createdAt', '$.orderNumber', '$.autoIncrement']) AS f
      FROM (SELECT CAST(unnest(json_extract(t, '$.data[*]')) AS VARCHAR) AS text FROM page_doc))
"""
# Only the entries' small member values are looked at here (the text is minified: an object
# starts with "{").
_CHECK = f"""
SELECT count(*) FILTER (WHERE NOT coalesce(
           is_object
           AND json_type(id) = 'VARCHAR'
           AND regexp_full_match(id ->> '$', '{PLAIN_ID}')
           AND json_type(created_at) = 'VARCHAR'
           AND regexp_full_match(created_at ->> '$', '{PLAIN_CREATED_AT}')
           AND (number IS NULL
                OR json_type(number) IN ('NULL', 'BIGINT', 'UBIGINT')
                OR (json_type(number) = 'VARCHAR' AND length(number ->> '$') <= 255))
           AND len(keys) = len(list_distinct(keys)),
           false)),
       list(text) FILTER (
           WHERE 2 * strlen(text) - strlen(replace(text, '[', '')) - strlen(replace(text, '{{', ''))
               > {MAX_ORDER_DEPTH}),
       count(*), max(auto_increment)
FROM page_entries
"""
_ROWS = """
SELECT CAST(? AS VARCHAR) AS run_id, id ->> '$' AS shop_order_id,
       CASE json_type(number)
           WHEN 'VARCHAR' THEN nullif(number ->> '$', '')
           WHEN 'BIGINT' THEN number ->> '$'
           WHEN 'UBIGINT' THEN number ->> '$'
       END AS order_number,
       CAST(created_at ->> '$' AS TIMESTAMPTZ) AS created_at, text AS payload,
       CAST(? AS TIMESTAMPTZ) AS fetched_at, auto_increment
FROM page_entries
"""


class PageRows:
    """The rows of a fetch's pages, read as they come (:meth:`read`, a
    :data:`~integration_project.shopware.client.PageReader`), until :meth:`take` hands them
    over. ``fallback_created_at``: where an order without a usable ``createdAt`` is staged."""

    def __init__(self, run_id: str, fallback_created_at: datetime, *, preview: int = 0) -> None:
        self._run_id = run_id
        self._fallback = fallback_created_at
        # Its own folder for anything it spills (DuckDB's default is ./.tmp, in whatever folder
        # the run happens to start in), removed with the connection.
        self._spill = tempfile.TemporaryDirectory(prefix="page-rows-")
        self._con = duckdb.connect(
            ":memory:",
            config={"memory_limit": MEMORY_LIMIT, "temp_directory": self._spill.name},
        )
        self._run("SET TimeZone = 'UTC'")
        self._pages: list[pa.Table] = []  # read, not yet taken
        self._preview_wanted = preview
        #: The first orders read (as parsed from JSON), for a preview.
        self.preview_orders: list[Any] = []
        #: Rows read and not yet taken.
        self.buffered = 0
        #: Pages read by DuckDB, and by Python.
        self.fast_pages = 0
        self.python_pages = 0

    def close(self) -> None:
        self._con.close()
        self._spill.cleanup()

    def __enter__(self) -> PageRows:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read(self, page: OrderPage) -> PageFacts:
        """Add the page's rows; what paging needs to know of it."""
        facts = self._read_fast(page)
        if facts is None:
            facts = self._read_python(page)
        self.buffered += facts.entries
        return facts

    def take(self) -> pa.Table:
        """The rows read since the last call (columns as ``staged_orders_incoming`` without
        ``route_id``; ``payload`` as text), and forget them."""
        table = pa.concat_tables(self._pages) if self._pages else ROW_SCHEMA.empty_table()
        self._pages = []
        self.buffered = 0
        return table

    def _run(self, sql: str, params: list[Any] | None = None) -> None:
        """A statement whose result is read to the end (DuckDB refuses the next one before)."""
        self._con.execute(sql, params).fetchall()

    def _read_fast(self, page: OrderPage) -> PageFacts | None:
        try:
            self._run(_DOC, [page.body])
            unusual, kinds, total = self._con.execute(_HEAD, [UNUSUAL]).fetchall()[0]
            kind, data, total_kind = kinds
            if unusual or kind != "OBJECT" or data != "ARRAY":
                return None
            self._run(_ENTRIES)
            odd, bracketed, entries, last_key = self._con.execute(_CHECK).fetchall()[0]
        except duckdb.Error:
            return None
        if odd or any(nested_deeper_than(entry) for entry in bracketed or ()):
            return None
        rows = self._con.sql(_ROWS, params=[self._run_id, now_utc()]).to_arrow_table()
        self._pages.append(rows.cast(ROW_SCHEMA))
        self._keep_preview_fast()
        self.fast_pages += 1
        known = int(total) if total_kind in ("BIGINT", "UBIGINT") else None
        return PageFacts(entries, known, last_key)

    def _keep_preview_fast(self) -> None:
        wanted = self._preview_wanted - len(self.preview_orders)
        if wanted > 0:
            rows = self._con.execute("SELECT text FROM page_entries LIMIT ?", [wanted]).fetchall()
            self.preview_orders.extend(json.loads(r[0]) for r in rows)

    def _read_python(self, page: OrderPage) -> PageFacts:
        orders = page.orders  # raises the error that names the page
        table = page_table(self._run_id, orders, self._fallback)
        self._pages.append(table.cast(ROW_SCHEMA))
        wanted = self._preview_wanted - len(self.preview_orders)
        self.preview_orders.extend(orders[: max(0, wanted)])
        self.python_pages += 1
        return page.facts
