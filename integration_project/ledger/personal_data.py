"""Personal data in the ledger (README "Personal data"): the retention run's blanking and the
erasure of one e-mail address.

An order *waits* (and keeps all its data) while it is staged but not mapped, mapped but not
delivered, or has a ``delivered_orders`` row in any status but ``delivered`` (sending, pending,
failed, conflict). Blanked orders are recorded in ``personal_data_blanked``; a re-fetch after
that brings the shop's data back, and the next retention run blanks it again.

Both backends run the same SQL but for two seams (:data:`_ROW_ID`, :data:`_LOCK_ROWS`). On
PostgreSQL a write to a route's orders holds the route's lock (:func:`~.db.route_lock`), as
mapping and delivery do, so an order cannot start or stop waiting while it is blanked.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

import duckdb

from integration_project.ledger.db import Database, now_utc, route_lock
from integration_project.redact import (
    blank_order,
    blank_sales_order,
    erase_email,
    exact_email_pattern,
    normalise_email,
    personal_values,
    scrub_text,
)

#: An order of ``erp_orders e`` (with ``delivered_orders d``) that no longer waits:
#: delivered, or never to be sent (skipped, quarantined) and never claimed.
_DONE = (
    "(d.status IS NOT DISTINCT FROM 'delivered' "
    "OR (d.shop_order_id IS NULL AND e.status <> 'mapped'))"
)
#: Tables the erasure's scan of every text column leaves alone: the token store and leases
#: hold no personal data and must never be rewritten; the staging area and the marker
#: table are handled on their own.
_SCAN_SKIP = frozenset({"erp_tokens", "leases", "staged_orders_incoming", "personal_data_blanked"})

#: FROM/WHERE of one customer's own orders (every route): its JSON-escaped address (a cheap
#: pre-filter on the JSON text) and its address.
_CUSTOMER_SQL = """
    FROM staged_orders s
    LEFT JOIN erp_orders e USING (route_id, shop_order_id)
    LEFT JOIN delivered_orders d USING (route_id, shop_order_id)
    WHERE strpos(lower(CAST(s.payload AS VARCHAR)), ?) > 0
      AND lower(trim(s.payload->'orderCustomer'->>'email')) = ?
"""
#: Whether an order of :data:`_CUSTOMER_SQL` no longer waits (``True``: blank it).
_CUSTOMER_DONE = f"coalesce(e.shop_order_id IS NOT NULL AND {_DONE}, false)"

#: How a statement names one row to update or delete. PostgreSQL has no ``rowid``: ``ctid``
#: names the row's current version, which stays put while this transaction holds the row's
#: lock (:data:`_LOCK_ROWS`); it changes when the row is updated, so each row is written once.
_ROW_ID = {"duckdb": "rowid", "postgres": "ctid"}
#: What a SELECT of rows about to be rewritten by :data:`_ROW_ID` ends with: PostgreSQL locks
#: them, so no other transaction moves them meanwhile. DuckDB has no row locks (nor the
#: syntax): its file lock keeps every other writer out.
_LOCK_ROWS = {"duckdb": "", "postgres": " FOR UPDATE"}
#: Column types the erasure scans (DuckDB's names, then PostgreSQL's), and whether they hold
#: JSON (whose text escapes the address: :attr:`_Erasure.json_needle`).
_TEXT_TYPES = {
    "VARCHAR": False,
    "JSON": True,
    "character varying": False,
    "text": False,
    "json": True,
    "jsonb": True,
}
#: This ledger's tables (not temporary ones, not views), on both backends.
_TABLES_SQL = """
    SELECT table_name FROM information_schema.tables
    WHERE table_catalog = current_database() AND table_schema = current_schema()
      AND table_type = 'BASE TABLE'
    ORDER BY table_name
"""
_COLUMNS_SQL = """
    SELECT column_name, data_type FROM information_schema.columns
    WHERE table_catalog = current_database() AND table_schema = current_schema()
      AND table_name = ?
    ORDER BY ordinal_position
"""

#: (route id, shop id, staged payload, mapped payload, mapping reason, delivery error)
BlankRow = tuple[Any, ...]


class PersonalData:
    def __init__(self, db: Database, route_id: str, erp_key: str) -> None:
        self._db = db
        self._route_id = route_id
        self._erp_key = erp_key

    def blank(self, cutoff: datetime, *, chunk: int = 500) -> dict[str, Any]:
        """The retention run of this route: blank the personal data of orders delivered before
        ``cutoff`` (``delivered_at``) or skipped before it (``mapped_at``), and of erased orders
        re-fetched since; delete staging rows of aborted fetches fetched before it and this
        division's cached e-mail → account rows cached before it.

        Blanking: the staged order keeps only :data:`redact.ORDER_ALLOW_LIST`, the mapped
        sales order loses every text holding the customer's values (``YourRef``, ids and
        amounts stay; ``payload_hash`` stays the hash of what was sent), reasons and ERP errors
        lose them too. Orders that wait are never touched, nor are quarantined ones (a person
        may still fix them); they are counted under ``*_kept``. Returns rows touched per table,
        ``orders`` blanked, the ``oldest``/``newest`` touched order's ``created_at`` and the
        ``*_kept`` counts."""
        report: dict[str, Any] = {
            "staged_orders": 0,
            "erp_orders": 0,
            "delivered_orders": 0,
            "orders": 0,
        }
        created: list[datetime] = []
        after = ""
        while True:
            with self._db.transaction(lock=route_lock(self._route_id)) as con:
                rows = self._retention_chunk(con, after, cutoff, chunk)
                touched = _blank_orders(con, [r[:6] for r in rows], "retention", ())
            if not rows:
                break
            for table, n in touched.items():
                report[table] += n
            report["orders"] += len(rows)
            created += [r[6] for r in rows]
            after = rows[-1][1]
        with self._db.connect() as con:
            orphans = self._sweep(con, cutoff, report)
        created += orphans
        report["oldest"] = min(created) if created else None
        report["newest"] = max(created) if created else None
        return report

    def _retention_chunk(
        self, con: duckdb.DuckDBPyConnection, after: str, cutoff: datetime, chunk: int
    ) -> list[tuple[Any, ...]]:
        """The next ``chunk`` orders due for blanking (``BlankRow`` and ``created_at``)."""
        return con.execute(
            f"""
            SELECT e.route_id, e.shop_order_id, s.payload, e.payload, e.reason,
                   d.last_error, e.created_at
            FROM erp_orders e
            LEFT JOIN staged_orders s USING (route_id, shop_order_id)
            LEFT JOIN delivered_orders d USING (route_id, shop_order_id)
            LEFT JOIN personal_data_blanked b USING (route_id, shop_order_id)
            WHERE e.route_id = ? AND e.shop_order_id > ? AND {_DONE}
              AND (b.shop_order_id IS NULL OR s.fetched_at > b.blanked_at)
              AND ((d.status = 'delivered' AND d.delivered_at < ?)
                   OR (e.status = 'skipped' AND e.mapped_at < ?)
                   OR b.reason = 'erased')
            ORDER BY e.shop_order_id LIMIT ?
            """,
            [self._route_id, after, cutoff, cutoff, chunk],
        ).fetchall()

    def _sweep(
        self, con: duckdb.DuckDBPyConnection, cutoff: datetime, report: dict[str, Any]
    ) -> list[datetime]:
        """Delete aborted fetches' staging rows and cached accounts older than ``cutoff``, and
        count what is kept; adds to ``report``. Returns the deleted staging rows' created_at."""
        orphans = con.execute(
            "DELETE FROM staged_orders_incoming WHERE route_id = ? AND fetched_at < ? "
            "RETURNING created_at",
            [self._route_id, cutoff],
        ).fetchall()
        accounts = con.execute(
            "DELETE FROM erp_accounts WHERE erp_key = ? AND cached_at < ? RETURNING email",
            [self._erp_key, cutoff],
        ).fetchall()
        kept = con.execute(
            """
            SELECT
                count(*) FILTER (WHERE e.status = 'quarantined' AND d.shop_order_id IS NULL
                                 AND b.shop_order_id IS NULL AND e.mapped_at < ?),
                count(*) FILTER (WHERE (d.status IS DISTINCT FROM 'delivered')
                                 AND (e.status = 'mapped' OR d.shop_order_id IS NOT NULL)
                                 AND e.mapped_at < ?)
            FROM erp_orders e
            LEFT JOIN delivered_orders d USING (route_id, shop_order_id)
            LEFT JOIN personal_data_blanked b USING (route_id, shop_order_id)
            WHERE e.route_id = ?
            """,
            [cutoff, cutoff, self._route_id],
        ).fetchone()
        unmapped = con.execute(
            "SELECT count(*) FROM staged_orders s WHERE s.route_id = ? AND s.created_at < ? "
            "AND NOT EXISTS (SELECT 1 FROM erp_orders e "
            "WHERE e.route_id = s.route_id AND e.shop_order_id = s.shop_order_id)",
            [self._route_id, cutoff],
        ).fetchone()[0]
        report["staged_orders_incoming"] = len(orphans)
        report["erp_accounts"] = len(accounts)
        report["quarantined_kept"] = int(kept[0])
        report["waiting_kept"] = int(kept[1])
        report["unmapped_kept"] = int(unmapped)
        return [r[0] for r in orphans]

    def erase_email(
        self, email: str, *, orphan_age: timedelta = timedelta(hours=1), chunk: int = 500
    ) -> dict[str, Any]:
        """Erase one e-mail address and its customer's personal data from the whole ledger,
        **every route** (this store's route plays no part).

        Orders whose ``orderCustomer.email`` is the address (case-insensitive, exact) and that
        do not wait are blanked like the retention run blanks them (quarantined ones too: they
        can then never be mapped), and marked ``erased``; the cached ``erp_accounts`` rows of
        the address are deleted; staging rows of aborted fetches (fetched more than
        ``orphan_age`` ago) mentioning it are deleted; every other text column of every table
        has the address replaced by ``[erased]``. Orders that wait for delivery (and rows of a
        fetch under way) are left whole and listed: erasing them would send an ERP order
        without its customer's data, or lose the order. Returns ``tables`` (rows touched per
        table), ``erased`` (route, order number, status), ``waiting`` (route, order number,
        why it was left)."""
        erasure = _Erasure(self._db, email)
        erasure.customer_orders(chunk)
        erasure.cache_and_incoming(now_utc() - orphan_age)
        erasure.every_other_mention()
        return erasure.report()


class _Erasure:
    """One run of :meth:`PersonalData.erase_email`: its address and what it did so far."""

    def __init__(self, db: Database, email: str) -> None:
        needle = normalise_email(email)
        if "@" not in needle or len(needle) < 3:
            raise ValueError("expected an e-mail address like jane@example.com")
        self._db = db
        self.needle = needle
        self.pattern = exact_email_pattern(needle)
        #: The address as it appears inside JSON text (escaped), for a cheap pre-filter.
        self.json_needle = json.dumps(needle, ensure_ascii=False)[1:-1]
        self.tables: dict[str, int] = {}
        self.erased: list[tuple[str, str, str]] = []
        self.waiting: dict[tuple[str, str], tuple[str, str, str]] = {}

    def report(self) -> dict[str, Any]:
        return {
            "tables": dict(sorted(self.tables.items())),
            "erased": sorted(self.erased),
            "waiting": sorted(self.waiting.values()),
        }

    def _add(self, table: str, n: int) -> None:
        if n:
            self.tables[table] = self.tables.get(table, 0) + n

    def customer_orders(self, chunk: int) -> None:
        """Step 1: blank the customer's own orders whole, or list them when they wait."""
        with self._db.connect() as con:
            found = con.execute(
                "SELECT s.route_id, s.shop_order_id, coalesce(s.order_number, e.order_number), "
                f"e.status, d.status, {_CUSTOMER_DONE} " + _CUSTOMER_SQL,
                [self.json_needle, self.needle],
            ).fetchall()
        done: dict[str, dict[str, str]] = {}  # route id -> shop id -> order number
        for route_id, shop_id, number, e_status, d_status, is_done in found:
            if is_done:
                done.setdefault(route_id, {})[shop_id] = str(number or shop_id)
                continue
            why = (
                f"delivery status {d_status}"
                if d_status
                else ("mapped, not delivered yet" if e_status else "staged, not mapped yet")
            )
            self.waiting[(route_id, shop_id)] = (route_id, str(number or shop_id), why)
        for route_id, numbers in sorted(done.items()):
            shop_ids = sorted(numbers)
            for start in range(0, len(shop_ids), chunk):
                part = {i: numbers[i] for i in shop_ids[start : start + chunk]}
                self._blank_customer_orders(route_id, part)

    def _blank_customer_orders(self, route_id: str, numbers: dict[str, str]) -> None:
        """Blank some of the customer's orders of one route, under the route's lock; an order
        that started to wait since it was found (re-mapped meanwhile) is listed instead."""
        with self._db.transaction(lock=route_lock(route_id)) as con:
            rows = con.execute(
                "SELECT s.route_id, s.shop_order_id, s.payload, e.payload, e.reason, "
                "d.last_error, coalesce(s.order_number, e.order_number), e.status "
                + _CUSTOMER_SQL
                + f" AND s.route_id = ? AND s.shop_order_id = ANY(?) AND {_CUSTOMER_DONE}"
                " ORDER BY s.shop_order_id",
                [self.json_needle, self.needle, route_id, list(numbers)],
            ).fetchall()
            touched = _blank_orders(con, [r[:6] for r in rows], "erased", [self.needle])
        for table, n in touched.items():
            self._add(table, n)
        self.erased += [(r[0], str(r[6] or r[1]), str(r[7])) for r in rows]
        for shop_id in set(numbers) - {r[1] for r in rows}:
            self.waiting.setdefault(
                (route_id, shop_id),
                (route_id, numbers[shop_id], "started to wait during the erasure"),
            )

    def cache_and_incoming(self, stale: datetime) -> None:
        """Steps 2 and 3: the look-up cache (e-mail → ERP account id, every division), and the
        staging rows of fetches: an aborted one's (fetched before ``stale``) are deleted; a
        running one's are left (the fetch merges them; run the erasure again afterwards)."""
        row_id = _ROW_ID[self._db.dialect]
        with self._db.transaction() as con:
            deleted = con.execute(
                "DELETE FROM erp_accounts WHERE lower(trim(email)) = ? RETURNING 1",
                [self.needle],
            ).fetchall()
            self._add("erp_accounts", len(deleted))
            for ref, route_id, shop_id, number, fetched_at, text in con.execute(
                f"SELECT {row_id}, route_id, shop_order_id, order_number, fetched_at, "
                "CAST(payload AS VARCHAR) FROM staged_orders_incoming "
                "WHERE strpos(lower(CAST(payload AS VARCHAR)), ?) > 0"
                + _LOCK_ROWS[self._db.dialect],
                [self.json_needle],
            ).fetchall():
                if not self.pattern.search(text):
                    continue
                if fetched_at < stale:
                    con.execute(f"DELETE FROM staged_orders_incoming WHERE {row_id} = ?", [ref])
                    self._add("staged_orders_incoming", 1)
                else:
                    self.waiting.setdefault(
                        (route_id, shop_id),
                        (route_id, str(number or shop_id), "being fetched right now"),
                    )

    def every_other_mention(self) -> None:
        """Step 4: every other mention, in every text column of every table (tables added
        later included): the address itself becomes "[erased]"."""
        with self._db.connect() as con:
            tables = {
                table: con.execute(_COLUMNS_SQL, [table]).fetchall()
                for (table,) in con.execute(_TABLES_SQL).fetchall()
                if table not in _SCAN_SKIP
            }
        for table, columns in tables.items():
            scan = _Scan(table, columns, self.needle, self.json_needle, self._db.dialect)
            if not scan.texts:
                continue
            with self._db.transaction(lock=self._route_locks(scan)) as con:
                changed, left = scan.erase(con, self.pattern)
            self._add(table, changed)
            for key, number in left:
                self.waiting.setdefault(key, (key[0], number, "waits for delivery"))

    def _route_locks(self, scan: _Scan) -> list[str]:
        """On PostgreSQL, the locks of the routes whose rows of ``scan``'s table mention the
        address (in one order everywhere: sorted). DuckDB's file lock already keeps every
        other writer out, so it is spared this extra read."""
        if self._db.dialect != "postgres" or "route_id" not in scan.columns:
            return []
        with self._db.connect() as con:
            routes = con.execute(
                f'SELECT DISTINCT route_id FROM "{scan.table}" WHERE {scan.where}', scan.params
            ).fetchall()
        return [route_lock(r[0]) for r in sorted(routes, key=lambda r: str(r[0]))]


class _Scan:
    """The erasure's rewrite of one table: its text columns, and the rows that mention the
    address in any of them."""

    def __init__(
        self,
        table: str,
        columns: Sequence[tuple[str, str]],
        needle: str,
        json_needle: str,
        dialect: str,
    ) -> None:
        self.table = table
        self.columns = {name for name, _ in columns}
        #: (column, type) of every text or JSON column.
        self.texts = [(c, t) for c, t in columns if t in _TEXT_TYPES]
        self.where = " OR ".join(
            f'strpos(lower(CAST("{c}" AS VARCHAR)), ?) > 0' for c, _ in self.texts
        )
        self.params = [json_needle if _TEXT_TYPES[t] else needle for _, t in self.texts]
        self._dialect = dialect

    def erase(
        self, con: duckdb.DuckDBPyConnection, pattern: re.Pattern[str]
    ) -> tuple[int, list[tuple[tuple[str, str], str]]]:
        """Replace the address in the table's text columns, except in rows of orders that
        wait; each row is rewritten once, all its columns together. Returns (rows changed,
        [((route id, shop id), order number) left because they wait])."""
        keyed = {"route_id", "shop_order_id"} <= self.columns
        waiting = _waiting_orders(con) if keyed else set()
        number = "order_number" if "order_number" in self.columns else "NULL"
        key_sql = f"route_id, shop_order_id, {number}" if keyed else "NULL, NULL, NULL"
        texts = ", ".join(f'CAST("{c}" AS VARCHAR)' for c, _ in self.texts)
        row_id = _ROW_ID[self._dialect]
        rows = con.execute(
            f'SELECT {row_id}, {key_sql}, {texts} FROM "{self.table}" WHERE {self.where}'
            + _LOCK_ROWS[self._dialect],
            self.params,
        ).fetchall()
        changed = 0
        left: list[tuple[tuple[str, str], str]] = []
        for ref, route_id, shop_id, order_number, *values in rows:
            new = {}
            for (column, data_type), text in zip(self.texts, values, strict=True):
                erased, n = erase_email(text, pattern) if text is not None else (text, 0)
                if n:
                    new[column] = (erased, data_type)
            if not new:
                continue
            if keyed and (str(route_id), str(shop_id)) in waiting:
                left.append(((str(route_id), str(shop_id)), str(order_number or shop_id)))
                continue
            assignments = ", ".join(f'"{c}" = CAST(? AS {t})' for c, (_, t) in new.items())
            con.execute(
                f'UPDATE "{self.table}" SET {assignments} WHERE {row_id} = ?',
                [*(text for text, _ in new.values()), ref],
            )
            changed += 1
        return changed, left


def _waiting_orders(con: duckdb.DuckDBPyConnection) -> set[tuple[str, str]]:
    """(route id, shop id) of every order that waits, every route."""
    return {
        (str(r[0]), str(r[1]))
        for r in con.execute(
            f"""
            SELECT s.route_id, s.shop_order_id FROM staged_orders s
            WHERE NOT EXISTS (SELECT 1 FROM erp_orders x
                              WHERE x.route_id = s.route_id
                                AND x.shop_order_id = s.shop_order_id)
            UNION
            SELECT e.route_id, e.shop_order_id
            FROM erp_orders e LEFT JOIN delivered_orders d USING (route_id, shop_order_id)
            WHERE NOT {_DONE}
            UNION
            SELECT route_id, shop_order_id FROM delivered_orders
            WHERE status <> 'delivered'
            """
        ).fetchall()
    }


def _blank_orders(
    con: duckdb.DuckDBPyConnection,
    rows: Sequence[BlankRow],
    reason: str,
    extra_values: Iterable[str],
) -> dict[str, int]:
    """Blank orders inside the caller's transaction. Returns rows changed per table; every
    order gets a ``personal_data_blanked`` row (an ``erased`` mark stays)."""
    staged: list[list[Any]] = []
    mapped: list[list[Any]] = []
    delivered: list[list[Any]] = []
    for route_id, shop_id, staged_json, mapped_json, mapping_reason, error in rows:
        order = json.loads(staged_json) if staged_json is not None else None
        values = [*personal_values(order), *extra_values]
        if staged_json is not None:
            blanked = blank_order(order)
            if blanked != order:
                staged.append([json.dumps(blanked, ensure_ascii=False), route_id, shop_id])
        body = json.loads(mapped_json) if mapped_json is not None else None
        new_body = blank_sales_order(body, values) if body is not None else None
        new_reason = scrub_text(mapping_reason, values)
        if new_body != body or new_reason != mapping_reason:
            new_json = None if new_body is None else json.dumps(new_body, ensure_ascii=False)
            mapped.append([new_json, new_reason, route_id, shop_id])
        new_error = scrub_text(error, values)
        if new_error != error:
            delivered.append([new_error, route_id, shop_id])
    key = "WHERE route_id = ? AND shop_order_id = ?"
    if staged:
        con.executemany(f"UPDATE staged_orders SET payload = CAST(? AS JSON) {key}", staged)
    if mapped:
        con.executemany(
            f"UPDATE erp_orders SET payload = CAST(? AS JSON), reason = ? {key}", mapped
        )
    if delivered:
        con.executemany(f"UPDATE delivered_orders SET last_error = ? {key}", delivered)
    if rows:
        _mark_blanked(con, rows, reason)
    return {
        "staged_orders": len(staged),
        "erp_orders": len(mapped),
        "delivered_orders": len(delivered),
    }


def _mark_blanked(con: duckdb.DuckDBPyConnection, rows: Sequence[BlankRow], reason: str) -> None:
    now = now_utc()
    con.executemany(
        """
        INSERT INTO personal_data_blanked VALUES (?, ?, ?, ?)
        ON CONFLICT (route_id, shop_order_id) DO UPDATE SET
            blanked_at = excluded.blanked_at,
            reason = CASE WHEN personal_data_blanked.reason = 'erased' THEN 'erased'
                          ELSE excluded.reason END
        """,
        [[r[0], r[1], now, reason] for r in rows],
    )
