"""All SQL in one place: staging, mapped orders, look-up caches, the token store and the
``delivered_orders`` ledger with its claim protocol.

DuckDB allows one writing process at a time, and a second process cannot even open the file
while the first holds it. So every method opens a connection, does one short transaction and
closes it: connections are never held across an HTTP call. The DDL is idempotent and runs on
first use, never at import time.

The exactly-once protocol (README, "Exactly once") in terms of ``delivered_orders.status``:

* ``sending``   claimed and committed *before* the POST; outcome unknown until recorded.
* ``delivered`` the ERP answered 2xx (or a later look-up by ``YourRef`` found the order).
* ``failed``    the ERP refused it (4xx validation); re-sent only once its payload changes.
* ``pending``   claimed earlier but known not to have reached the ERP (429, refused connect).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import pyarrow as pa

from integration_project.exact.client import StoredTokens
from integration_project.exact.models import VatCode

Connect = Callable[[], AbstractContextManager[duckdb.DuckDBPyConnection]]

#: DuckDB's memory limit for every ledger connection (its buffer pool; larger work spills).
MEMORY_LIMIT = "256MB"
#: Orders merged from the incoming area into ``staged_orders`` per statement (one transaction).
MERGE_CHUNK = 2000

SCHEMA = """
CREATE TABLE IF NOT EXISTS staged_orders (
    route_id      VARCHAR NOT NULL,
    shop_order_id VARCHAR NOT NULL,
    order_number  VARCHAR,
    created_at    TIMESTAMPTZ NOT NULL,
    payload       JSON NOT NULL,
    fetched_at    TIMESTAMPTZ NOT NULL,
    run_id        VARCHAR,
    PRIMARY KEY (route_id, shop_order_id)
);
-- Pages of a fetch land here first and are merged into staged_orders in one transaction when
-- the whole range has been read, so a failed fetch leaves staged_orders unchanged.
CREATE TABLE IF NOT EXISTS staged_orders_incoming (
    route_id      VARCHAR NOT NULL,
    run_id        VARCHAR NOT NULL,
    shop_order_id VARCHAR NOT NULL,
    order_number  VARCHAR,
    created_at    TIMESTAMPTZ NOT NULL,
    payload       JSON NOT NULL,
    fetched_at    TIMESTAMPTZ NOT NULL
);
CREATE TABLE IF NOT EXISTS erp_orders (
    route_id      VARCHAR NOT NULL,
    shop_order_id VARCHAR NOT NULL,
    order_number  VARCHAR,
    created_at    TIMESTAMPTZ NOT NULL,
    status        VARCHAR NOT NULL,   -- mapped | skipped | quarantined
    country       VARCHAR,
    reason        VARCHAR,
    payload       JSON,               -- the ERP sales order, when mapped
    payload_hash  VARCHAR,
    mapped_at     TIMESTAMPTZ NOT NULL,
    run_id        VARCHAR,
    your_ref      VARCHAR,            -- the ERP's YourRef: the exactly-once look-up key
    PRIMARY KEY (route_id, shop_order_id)
);
CREATE TABLE IF NOT EXISTS delivered_orders (
    route_id         VARCHAR NOT NULL,
    shop_order_id    VARCHAR NOT NULL,
    order_number     VARCHAR NOT NULL,
    erp_order_id     VARCHAR,
    erp_order_number BIGINT,
    status           VARCHAR NOT NULL, -- sending | delivered | failed | pending
    attempts         INTEGER NOT NULL DEFAULT 0,
    last_error       VARCHAR,
    run_id           VARCHAR,
    payload_hash     VARCHAR,
    claimed_at       TIMESTAMPTZ,
    delivered_at     TIMESTAMPTZ,
    updated_at       TIMESTAMPTZ NOT NULL,
    your_ref         VARCHAR,
    PRIMARY KEY (route_id, shop_order_id)
);
-- Look-up caches belong to an ERP division (erp_key), shared by every route that targets it.
CREATE TABLE IF NOT EXISTS erp_accounts (
    erp_key    VARCHAR NOT NULL,
    email      VARCHAR NOT NULL,      -- lower-cased
    account_id VARCHAR NOT NULL,
    cached_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (erp_key, email)
);
CREATE TABLE IF NOT EXISTS erp_items (
    erp_key   VARCHAR NOT NULL,
    code      VARCHAR NOT NULL,
    item_id   VARCHAR,                -- NULL: the ERP had no such item when last asked
    cached_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (erp_key, code)
);
-- The division's VAT codes (vat/VATCodes), fetched whole and replaced whole.
CREATE TABLE IF NOT EXISTS erp_vat_codes (
    erp_key          VARCHAR NOT NULL,
    code             VARCHAR NOT NULL,
    description      VARCHAR,
    percentage       DOUBLE,              -- as Exact reports it: 0.21 for 21 %
    transaction_type VARCHAR,             -- S sales, P purchases, B both
    is_blocked       BOOLEAN,
    vat_type         VARCHAR,             -- B exclusive, I inclusive, N no VAT, E exempt
    cached_at        TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (erp_key, code)
);
-- One row per token chain: ERP URL, client id and the ERP_REFRESH_TOKEN's fingerprint (no
-- secret, no division: every division the authorisation reaches shares the chain). Rows of
-- older versions were keyed by ERP URL, division and client id; they are adopted on first use.
CREATE TABLE IF NOT EXISTS erp_tokens (
    token_key         VARCHAR PRIMARY KEY,
    refresh_token     VARCHAR,
    access_token      VARCHAR,
    access_expires_at DOUBLE,
    refreshed_at      DOUBLE,
    seed_fingerprint  VARCHAR,
    lock_holder       VARCHAR,
    lock_until        DOUBLE
);
-- When a token refresh was sent and its answer not yet stored (NULL once stored): after a
-- crash in between, the next process knows the chain may have moved on (see exact/client.py).
ALTER TABLE erp_tokens ADD COLUMN IF NOT EXISTS refresh_started_at DOUBLE;
-- Exact refused the chain's refresh token: no token call until ERP_REFRESH_TOKEN changes (its
-- fingerprint is no longer auth_needed_seed). Exact caps token calls per day.
ALTER TABLE erp_tokens ADD COLUMN IF NOT EXISTS auth_needed_seed VARCHAR;
ALTER TABLE erp_tokens ADD COLUMN IF NOT EXISTS auth_needed_reason VARCHAR;
-- Client errors (4xx, 401 included) per ERP endpoint, per division (ERP URL, division and
-- client id): Exact blocks an app after ten an hour on one endpoint, the token endpoint too.
CREATE TABLE IF NOT EXISTS erp_client_errors (
    token_key VARCHAR NOT NULL,
    endpoint  VARCHAR NOT NULL,   -- e.g. "POST salesorder/SalesOrders"
    status    INTEGER,
    seen_at   DOUBLE NOT NULL     -- epoch seconds
);
-- The ERP's daily call budget is spent until `until` (epoch seconds): no run calls before.
CREATE TABLE IF NOT EXISTS erp_pauses (
    token_key VARCHAR PRIMARY KEY,
    until_s   DOUBLE,
    reason    VARCHAR
);
CREATE TABLE IF NOT EXISTS leases (
    name       VARCHAR PRIMARY KEY,
    holder     VARCHAR,
    expires_at TIMESTAMPTZ
);
"""


def now_utc() -> datetime:
    return datetime.now(UTC)


def payload_hash(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def parse_created_at(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def staging_key(order: Any) -> str:
    """The shop id, or a stable stand-in for an order that lacks one (it is quarantined)."""
    if isinstance(order, dict) and isinstance(order.get("id"), str) and order["id"]:
        return order["id"]
    digest = hashlib.sha256(json.dumps(order, sort_keys=True, default=str).encode()).hexdigest()
    return f"missing-id-{digest[:16]}"


@dataclass(frozen=True)
class StagedOrder:
    shop_order_id: str
    payload: dict[str, Any]


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


@dataclass(frozen=True)
class MappingRow:
    shop_order_id: str
    order_number: str | None
    created_at: datetime
    status: str  # mapped | skipped | quarantined
    country: str | None
    reason: str | None
    payload: dict[str, Any] | None


class Ledger:
    """One route's view of the ledger: every route table is keyed by ``route_id`` too, so
    routes sharing the DuckDB file never see each other's orders."""

    def __init__(self, connect: Connect, route_id: str, erp_key: str = "") -> None:
        self._connect = connect
        self.route_id = route_id
        self.erp_key = erp_key
        self._schema_ready = False

    @contextmanager
    def _conn(self) -> Iterator[duckdb.DuckDBPyConnection]:
        with self._connect() as con:
            # DuckDB caches table blocks up to 80 % of RAM by default; a bounded buffer pool
            # (spilling to <db>.tmp) keeps a day-long backfill's memory flat.
            con.execute(f"SET memory_limit = '{MEMORY_LIMIT}'")
            yield con

    def ensure_schema(self) -> None:
        if self._schema_ready:
            return
        with self._conn() as con:
            con.execute(SCHEMA)
        self._schema_ready = True

    # --- staging -----------------------------------------------------------------------------

    def begin_fetch(self, run_id: str) -> None:
        self.ensure_schema()
        with self._conn() as con:
            con.execute(
                "DELETE FROM staged_orders_incoming WHERE route_id = ? AND run_id = ?",
                [self.route_id, run_id],
            )

    def stage_page(self, run_id: str, orders: Sequence[Any], fallback_created_at: datetime) -> int:
        """Write one page of raw orders to the run's incoming area."""
        if not orders:
            return 0
        fetched_at = now_utc()
        batch = pa.table(
            {
                "route_id": [self.route_id] * len(orders),
                "run_id": [run_id] * len(orders),
                "shop_order_id": [staging_key(o) for o in orders],
                "order_number": [
                    o.get("orderNumber") if isinstance(o, dict) else None for o in orders
                ],
                "created_at": pa.array(
                    [
                        (parse_created_at(o.get("createdAt")) if isinstance(o, dict) else None)
                        or fallback_created_at
                        for o in orders
                    ],
                    pa.timestamp("us", tz="UTC"),
                ),
                "payload": [json.dumps(o, ensure_ascii=False) for o in orders],
                "fetched_at": pa.array([fetched_at] * len(orders), pa.timestamp("us", tz="UTC")),
            }
        )
        with self._conn() as con:
            con.register("page_batch", batch)
            con.execute(
                "INSERT INTO staged_orders_incoming "
                "SELECT route_id, run_id, shop_order_id, CAST(order_number AS VARCHAR), "
                "created_at, payload::JSON, fetched_at FROM page_batch"
            )
            con.unregister("page_batch")
        return len(orders)

    def commit_fetch(self, run_id: str) -> tuple[int, int]:
        """Merge the run's pages into ``staged_orders`` (upsert by shop id) in one transaction.

        Returns (new, updated). Re-fetching a window is an upsert, never a duplicate.
        """
        with self._conn() as con:
            con.execute("BEGIN TRANSACTION")
            try:
                new = con.execute(
                    """
                    SELECT count(DISTINCT i.shop_order_id) FROM staged_orders_incoming i
                    LEFT JOIN staged_orders s USING (route_id, shop_order_id)
                    WHERE i.route_id = ? AND i.run_id = ? AND s.shop_order_id IS NULL
                    """,
                    [self.route_id, run_id],
                ).fetchone()[0]
                total = con.execute(
                    "SELECT count(DISTINCT shop_order_id) FROM staged_orders_incoming "
                    "WHERE route_id = ? AND run_id = ?",
                    [self.route_id, run_id],
                ).fetchone()[0]
                # In chunks of shop ids: one statement over a day of payloads would hold them
                # all in memory at once (the de-duplicating window cannot spill).
                after = ""
                while True:
                    upto = con.execute(
                        """
                        SELECT max(shop_order_id) FROM (
                            SELECT DISTINCT shop_order_id FROM staged_orders_incoming
                            WHERE route_id = ? AND run_id = ? AND shop_order_id > ?
                            ORDER BY shop_order_id LIMIT ?)
                        """,
                        [self.route_id, run_id, after, MERGE_CHUNK],
                    ).fetchone()[0]
                    if upto is None:
                        break
                    con.execute(
                        """
                        INSERT INTO staged_orders
                        SELECT route_id, shop_order_id, order_number, created_at, payload,
                               fetched_at, run_id
                        FROM staged_orders_incoming
                        WHERE route_id = ? AND run_id = ?
                          AND shop_order_id > ? AND shop_order_id <= ?
                        QUALIFY row_number() OVER (
                            PARTITION BY shop_order_id ORDER BY fetched_at DESC
                        ) = 1
                        ON CONFLICT (route_id, shop_order_id) DO UPDATE SET
                            order_number = excluded.order_number,
                            created_at = excluded.created_at,
                            payload = excluded.payload,
                            fetched_at = excluded.fetched_at,
                            run_id = excluded.run_id
                        """,
                        [self.route_id, run_id, after, upto],
                    )
                    after = upto
                con.execute(
                    "DELETE FROM staged_orders_incoming WHERE route_id = ? AND run_id = ?",
                    [self.route_id, run_id],
                )
                con.execute("COMMIT")
            except Exception:
                con.execute("ROLLBACK")
                raise
        return int(new), int(total) - int(new)

    def abort_fetch(self, run_id: str) -> None:
        with self._conn() as con:
            con.execute(
                "DELETE FROM staged_orders_incoming WHERE route_id = ? AND run_id = ?",
                [self.route_id, run_id],
            )

    def unmapped_before(self, before: datetime, limit: int) -> list[StagedOrder]:
        """Staged orders created before ``before`` that were never mapped (their window's
        ``erp_orders`` failed, e.g. the ERP was down longer than the look-back), oldest
        first, at most ``limit``."""
        self.ensure_schema()
        with self._conn() as con:
            rows = con.execute(
                """
                SELECT s.shop_order_id, s.payload FROM staged_orders s
                ANTI JOIN erp_orders e USING (route_id, shop_order_id)
                WHERE s.route_id = ? AND s.created_at < ?
                ORDER BY s.created_at, s.shop_order_id LIMIT ?
                """,
                [self.route_id, before, limit],
            ).fetchall()
        return [StagedOrder(r[0], json.loads(r[1])) for r in rows]

    def iter_staged(
        self, start: datetime, end: datetime, batch_size: int = 500
    ) -> Iterator[list[StagedOrder]]:
        """Staged orders created in ``[start, end)``, in batches, keyset-paged by shop id.

        The connection is closed between batches, so callers may do HTTP in between.
        """
        self.ensure_schema()
        after = ""
        while True:
            with self._conn() as con:
                # The batch's ids first (narrow columns), then only their payloads: ordering
                # the payloads themselves would read every payload of the range per batch.
                upto = con.execute(
                    """
                    SELECT max(shop_order_id) FROM (
                        SELECT shop_order_id FROM staged_orders
                        WHERE route_id = ? AND created_at >= ? AND created_at < ?
                          AND shop_order_id > ?
                        ORDER BY shop_order_id LIMIT ?)
                    """,
                    [self.route_id, start, end, after, batch_size],
                ).fetchone()[0]
                if upto is None:
                    return
                rows = con.execute(
                    """
                    SELECT shop_order_id, payload FROM staged_orders
                    WHERE route_id = ? AND created_at >= ? AND created_at < ?
                      AND shop_order_id > ? AND shop_order_id <= ?
                    ORDER BY shop_order_id
                    """,
                    [self.route_id, start, end, after, upto],
                ).fetchall()
            yield [StagedOrder(r[0], json.loads(r[1])) for r in rows]
            after = rows[-1][0]

    def count_staged(self, start: datetime, end: datetime) -> int:
        self.ensure_schema()
        with self._conn() as con:
            return con.execute(
                "SELECT count(*) FROM staged_orders "
                "WHERE route_id = ? AND created_at >= ? AND created_at < ?",
                [self.route_id, start, end],
            ).fetchone()[0]

    # --- mapped orders -------------------------------------------------------------------------

    def record_mapping(self, rows: Iterable[MappingRow], run_id: str) -> None:
        rows = list(rows)
        if not rows:
            return
        self.ensure_schema()
        mapped_at = now_utc()
        batch = pa.table(
            {
                "route_id": [self.route_id] * len(rows),
                "shop_order_id": [r.shop_order_id for r in rows],
                "order_number": [r.order_number for r in rows],
                "created_at": pa.array([r.created_at for r in rows], pa.timestamp("us", tz="UTC")),
                "status": [r.status for r in rows],
                "country": [r.country for r in rows],
                "reason": [r.reason for r in rows],
                "payload": [
                    json.dumps(r.payload, ensure_ascii=False) if r.payload is not None else None
                    for r in rows
                ],
                "payload_hash": [
                    payload_hash(r.payload) if r.payload is not None else None for r in rows
                ],
                "your_ref": [
                    str(r.payload.get("YourRef")) if r.payload is not None else None for r in rows
                ],
            }
        )
        with self._conn() as con:
            con.register("mapping_batch", batch)
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
                [mapped_at, run_id],
            )
            con.unregister("mapping_batch")

    def mapping_counts(self, start: datetime, end: datetime) -> dict[str, int]:
        self.ensure_schema()
        with self._conn() as con:
            rows = con.execute(
                "SELECT status, count(*) FROM erp_orders "
                "WHERE route_id = ? AND created_at >= ? AND created_at < ? GROUP BY status",
                [self.route_id, start, end],
            ).fetchall()
        return {status: int(n) for status, n in rows}

    # --- look-up caches ------------------------------------------------------------------------

    def cached_account(self, email: str) -> str | None:
        return self.cached_accounts([email]).get(email.lower())

    def cached_accounts(self, emails: Iterable[str]) -> dict[str, str]:
        """Cached account ids of many e-mails at once (keys lower-cased); misses are absent."""
        wanted = sorted({e.lower() for e in emails})
        if not wanted:
            return {}
        self.ensure_schema()
        with self._conn() as con:
            rows = con.execute(
                "SELECT email, account_id FROM erp_accounts "
                "WHERE erp_key = ? AND list_contains(?, email)",
                [self.erp_key, wanted],
            ).fetchall()
        return {str(r[0]): str(r[1]) for r in rows}

    def cache_account(self, email: str, account_id: str) -> None:
        with self._conn() as con:
            con.execute(
                "INSERT OR REPLACE INTO erp_accounts VALUES (?, ?, ?, ?)",
                [self.erp_key, email.lower(), account_id, now_utc()],
            )

    def cached_items(
        self, codes: Iterable[str], missing_ttl: timedelta = timedelta(minutes=15)
    ) -> dict[str, str | None]:
        """Cached item ids; ``None`` for a code the ERP did not know within ``missing_ttl``.

        Remembering misses keeps a look-back from asking the ERP about the same unknown product
        number every tick; the TTL lets an item created in the ERP be picked up soon after.
        """
        codes = sorted(set(codes))
        if not codes:
            return {}
        self.ensure_schema()
        with self._conn() as con:
            rows = con.execute(
                "SELECT code, item_id FROM erp_items WHERE erp_key = ? AND list_contains(?, code) "
                "AND (item_id IS NOT NULL OR cached_at > ?)",
                [self.erp_key, codes, now_utc() - missing_ttl],
            ).fetchall()
        return dict(rows)

    def cached_vat_codes(self) -> tuple[list[VatCode], datetime | None]:
        """The division's VAT codes as last fetched, and when (None: never)."""
        self.ensure_schema()
        with self._conn() as con:
            rows = con.execute(
                "SELECT code, description, percentage, transaction_type, is_blocked, vat_type, "
                "cached_at FROM erp_vat_codes WHERE erp_key = ? ORDER BY code",
                [self.erp_key],
            ).fetchall()
        codes = [
            VatCode(
                Code=r[0],
                Description=r[1],
                Percentage=r[2],
                VATTransactionType=r[3],
                IsBlocked=r[4],
                Type=r[5],
            )
            for r in rows
        ]
        return codes, (min(r[6] for r in rows) if rows else None)

    def cache_vat_codes(self, codes: Sequence[VatCode]) -> None:
        """Replace the division's cached VAT codes with ``codes`` (one transaction)."""
        self.ensure_schema()
        now = now_utc()
        with self._conn() as con:
            con.execute("BEGIN TRANSACTION")
            con.execute("DELETE FROM erp_vat_codes WHERE erp_key = ?", [self.erp_key])
            if codes:
                con.executemany(
                    "INSERT OR REPLACE INTO erp_vat_codes VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        [
                            self.erp_key,
                            c.Code,
                            c.Description,
                            c.Percentage,
                            c.VATTransactionType,
                            c.IsBlocked,
                            c.Type,
                            now,
                        ]
                        for c in codes
                    ],
                )
            con.execute("COMMIT")

    def cache_item(self, code: str, item_id: str | None) -> None:
        with self._conn() as con:
            con.execute(
                "INSERT OR REPLACE INTO erp_items VALUES (?, ?, ?, ?)",
                [self.erp_key, code, item_id, now_utc()],
            )

    # --- the delivery lease: one delivery run sends at a time ---------------------------------

    def acquire_lease(
        self, name: str, holder: str, ttl: timedelta, *, take_over_from: str | None = None
    ) -> str | None:
        """Take (or renew) the lease. Returns None on success, else the current holder.

        ``take_over_from``: the caller knows that this holder is dead (its run is over), so its
        unexpired lease may be taken; any other live holder still wins.
        """
        self.ensure_schema()
        now = now_utc()
        with self._conn() as con:
            con.execute("BEGIN TRANSACTION")
            row = con.execute(
                "SELECT holder, expires_at FROM leases WHERE name = ?", [name]
            ).fetchone()
            if (
                row
                and row[0] not in (None, holder, take_over_from)
                and row[1] is not None
                and row[1] > now
            ):
                con.execute("ROLLBACK")
                return str(row[0])
            con.execute("INSERT OR REPLACE INTO leases VALUES (?, ?, ?)", [name, holder, now + ttl])
            con.execute("COMMIT")
        return None

    def release_lease(self, name: str, holder: str) -> None:
        with self._conn() as con:
            con.execute(
                "UPDATE leases SET holder = NULL, expires_at = NULL WHERE name = ? AND holder = ?",
                [name, holder],
            )

    # --- delivery -----------------------------------------------------------------------------

    def in_flight(self) -> list[InFlight]:
        """Rows left in ``sending``: their outcome is unknown until looked up in the ERP."""
        self.ensure_schema()
        with self._conn() as con:
            rows = con.execute(
                "SELECT shop_order_id, order_number, run_id, attempts, "
                "coalesce(your_ref, order_number) FROM delivered_orders "
                "WHERE route_id = ? AND status = 'sending' ORDER BY claimed_at",
                [self.route_id],
            ).fetchall()
        return [InFlight(*r) for r in rows]

    def pending(
        self, limit: int | None = None, countries: Iterable[str] | None = None
    ) -> list[PendingOrder]:
        """Mapped orders the ledger does not hold as delivered (or in flight).

        A ``failed`` order comes back only when its mapped payload changed since it failed:
        someone fixed the cause and re-materialised ``erp_orders``. ``countries``: only orders
        mapped with one of these countries (the route's allowed set), so a mapping that let an
        order through from elsewhere is held back here too, not only flagged by the check.
        """
        self.ensure_schema()
        params: list[Any] = [self.route_id]
        sql = (
            "SELECT e.shop_order_id, e.order_number, e.payload, e.payload_hash, e.your_ref "
            + _waiting_sql(("pending",), countries, params)
            + " ORDER BY e.created_at, e.shop_order_id"
        )
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        with self._conn() as con:
            rows = con.execute(sql, params).fetchall()
        return [PendingOrder(r[0], r[1], json.loads(r[2]), r[3], r[4] or r[1]) for r in rows]

    def waiting(self, countries: Iterable[str] | None = None) -> tuple[int, float | None]:
        """Orders :meth:`pending` (with the same ``countries``) or in flight: how many, and
        seconds since the longest-waiting one was mapped (None when none wait)."""
        self.ensure_schema()
        params: list[Any] = [self.route_id]
        sql = "SELECT count(*), min(e.mapped_at) " + _waiting_sql(
            ("pending", "sending"), countries, params
        )
        with self._conn() as con:
            count, oldest = con.execute(sql, params).fetchone()
        if oldest is None:
            return int(count), None
        return int(count), round(max(0.0, (now_utc() - oldest).total_seconds()), 1)

    def count_pending(self, countries: Iterable[str] | None = None) -> int:
        """How many orders :meth:`pending` (with the same ``countries``) or in flight."""
        return self.waiting(countries)[0]

    def claim(self, order: PendingOrder, run_id: str) -> int:
        """Step 1 of the protocol: committed as ``sending`` before the POST. Returns attempts."""
        with self._conn() as con:
            return self._claim(con, order, run_id)

    def _claim(self, con: duckdb.DuckDBPyConnection, order: PendingOrder, run_id: str) -> int:
        now = now_utc()
        row = con.execute(
            """
            INSERT INTO delivered_orders
                (route_id, shop_order_id, order_number, status, attempts, run_id,
                 payload_hash, claimed_at, updated_at, your_ref)
            VALUES (?, ?, ?, 'sending', 1, ?, ?, ?, ?, ?)
            ON CONFLICT (route_id, shop_order_id) DO UPDATE SET
                status = 'sending',
                your_ref = excluded.your_ref,
                attempts = delivered_orders.attempts + 1,
                run_id = excluded.run_id,
                payload_hash = excluded.payload_hash,
                claimed_at = excluded.claimed_at,
                updated_at = excluded.updated_at
            RETURNING attempts
            """,
            [
                self.route_id,
                order.shop_order_id,
                order.order_number,
                run_id,
                order.payload_hash,
                now,
                now,
                order.your_ref,
            ],
        ).fetchone()
        return int(row[0])

    def reclaim(self, shop_order_id: str, run_id: str) -> int:
        """A ``sending`` row whose look-up found nothing: send again under this run."""
        now = now_utc()
        with self._conn() as con:
            row = con.execute(
                """
                UPDATE delivered_orders SET attempts = attempts + 1, run_id = ?,
                    claimed_at = ?, updated_at = ?
                WHERE route_id = ? AND shop_order_id = ? AND status = 'sending'
                RETURNING attempts
                """,
                [run_id, now, now, self.route_id, shop_order_id],
            ).fetchone()
        return int(row[0]) if row else 0

    def mark_delivered(
        self, shop_order_id: str, *, erp_order_id: str, erp_order_number: int | None, run_id: str
    ) -> None:
        """Step 3 (or step 4's "found"): the ERP holds it."""
        self.record_outcomes(
            [Outcome(shop_order_id, "delivered", None, erp_order_id, erp_order_number)],
            run_id,
            claim=[],
        )

    def record_outcomes(
        self, outcomes: Sequence[Outcome], run_id: str, *, claim: Sequence[PendingOrder]
    ) -> None:
        """Steps 3 and 5 for orders this run sent, then step 1 for the next ones, in one
        connection. A non-delivered outcome only touches a row this run still holds (another
        run may have taken it over since)."""
        if not outcomes and not claim:
            return
        now = now_utc()
        with self._conn() as con:
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
                        (o.erp_order_id, o.erp_order_number, run_id, now, now, *key)
                        for o in delivered
                        for key in [(self.route_id, o.shop_order_id)]
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
                    [
                        [o.status, o.error, now, self.route_id, o.shop_order_id, run_id]
                        for o in others
                    ],
                )
            for order in claim:
                self._claim(con, order, run_id)

    def mark_failed(self, shop_order_id: str, error: str) -> None:
        self._set_status(shop_order_id, "failed", error)

    def release_claim(self, shop_order_id: str, error: str) -> None:
        """The ERP certainly did not get it (429, refused connection): back to ``pending``."""
        self._set_status(shop_order_id, "pending", error)

    def requeue_failed(self, order_numbers: list[str] | None) -> int:
        """An operator fixed the cause: move ``failed`` rows back to ``pending`` so the normal
        protocol sends them. ``order_numbers`` match the shop order number or the ``YourRef``;
        None = every failed row of the route. Other statuses are never touched. Returns how
        many rows were requeued."""
        self.ensure_schema()
        sql = (
            "UPDATE delivered_orders SET status = 'pending', updated_at = ?, "
            "last_error = 'requeued after failing: ' || coalesce(last_error, '') "
            "WHERE route_id = ? AND status = 'failed'"
        )
        params: list[Any] = [now_utc(), self.route_id]
        if order_numbers is not None:
            wanted = sorted({str(n).strip() for n in order_numbers if str(n).strip()})
            if not wanted:
                return 0
            sql += " AND (list_contains(?, order_number) OR list_contains(?, your_ref))"
            params += [wanted, wanted]
        with self._conn() as con:
            rows = con.execute(sql + " RETURNING shop_order_id", params).fetchall()
        return len(rows)

    def _set_status(self, shop_order_id: str, status: str, error: str | None) -> None:
        with self._conn() as con:
            con.execute(
                "UPDATE delivered_orders SET status = ?, last_error = ?, updated_at = ? "
                "WHERE route_id = ? AND shop_order_id = ?",
                [status, error, now_utc(), self.route_id, shop_order_id],
            )

    def delivery_counts(self) -> dict[str, int]:
        self.ensure_schema()
        with self._conn() as con:
            rows = con.execute(
                "SELECT status, count(*) FROM delivered_orders WHERE route_id = ? GROUP BY status",
                [self.route_id],
            ).fetchall()
        return {status: int(n) for status, n in rows}

    def delivered_rows(self) -> list[dict[str, Any]]:
        self.ensure_schema()
        with self._conn() as con:
            cursor = con.execute(
                "SELECT * FROM delivered_orders WHERE route_id = ? ORDER BY shop_order_id",
                [self.route_id],
            )
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    # --- read-only views for asset checks, sensors and delivery metadata --------------------

    def mapped_outside_countries(
        self, allowed: Iterable[str], limit: int = 20
    ) -> tuple[int, list[tuple[str | None, str | None]]]:
        """Mapped orders whose country is not in ``allowed`` (or missing): (count, sample of
        (order number, country))."""
        self.ensure_schema()
        where = (
            "WHERE route_id = ? AND status = 'mapped' "
            "AND (country IS NULL OR NOT list_contains(?, country))"
        )
        params: list[Any] = [self.route_id, sorted(allowed)]
        with self._conn() as con:
            total = con.execute(f"SELECT count(*) FROM erp_orders {where}", params).fetchone()[0]
            rows = con.execute(
                f"SELECT order_number, country FROM erp_orders {where} "
                "ORDER BY order_number LIMIT ?",
                [*params, limit],
            ).fetchall()
        return int(total), [(r[0], r[1]) for r in rows]

    def duplicate_your_refs(self, limit: int = 20) -> tuple[int, list[tuple[str, int]]]:
        """``YourRef`` values held by more than one mapped order of the route: (how many
        values, sample of (YourRef, orders))."""
        self.ensure_schema()
        sql = (
            "SELECT your_ref, count(*) AS n FROM erp_orders "
            "WHERE route_id = ? AND status = 'mapped' AND your_ref IS NOT NULL "
            "GROUP BY your_ref HAVING count(*) > 1"
        )
        with self._conn() as con:
            total = con.execute(f"SELECT count(*) FROM ({sql})", [self.route_id]).fetchone()[0]
            rows = con.execute(
                f"{sql} ORDER BY n DESC, your_ref LIMIT ?", [self.route_id, limit]
            ).fetchall()
        return int(total), [(str(r[0]), int(r[1])) for r in rows]

    def count_mapped(self) -> int:
        self.ensure_schema()
        with self._conn() as con:
            return con.execute(
                "SELECT count(*) FROM erp_orders WHERE route_id = ? AND status = 'mapped'",
                [self.route_id],
            ).fetchone()[0]

    def stuck_sending(
        self, older_than: timedelta, limit: int = 20
    ) -> tuple[int, list[tuple[str, datetime | None]]]:
        """Rows in ``sending`` claimed longer than ``older_than`` ago: (count, sample of
        (order number, claimed at)), oldest first."""
        self.ensure_schema()
        where = "WHERE route_id = ? AND status = 'sending' AND coalesce(claimed_at, updated_at) < ?"
        params: list[Any] = [self.route_id, now_utc() - older_than]
        with self._conn() as con:
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
        self.ensure_schema()
        where = "WHERE route_id = ? AND status = 'failed'"
        with self._conn() as con:
            total = con.execute(
                f"SELECT count(*) FROM delivered_orders {where}", [self.route_id]
            ).fetchone()[0]
            rows = con.execute(
                f"SELECT order_number, last_error FROM delivered_orders {where} "
                "ORDER BY updated_at DESC, order_number LIMIT ?",
                [self.route_id, limit],
            ).fetchall()
        return int(total), [(str(r[0]), r[1]) for r in rows]

    def recent_delivered(self, limit: int = 10) -> list[tuple[str, str, str | None]]:
        """The most recently delivered rows: (order number, YourRef, ERP OrderID)."""
        self.ensure_schema()
        with self._conn() as con:
            rows = con.execute(
                "SELECT order_number, coalesce(your_ref, order_number), erp_order_id "
                "FROM delivered_orders WHERE route_id = ? AND status = 'delivered' "
                "ORDER BY delivered_at DESC NULLS LAST, shop_order_id LIMIT ?",
                [self.route_id, limit],
            ).fetchall()
        return [(str(r[0]), str(r[1]), r[2]) for r in rows]

    def latency_seconds_max(self, run_id: str) -> float | None:
        """Longest time from mapping (``erp_orders.mapped_at``) to delivery among the orders
        this run recorded as delivered; None if it delivered none."""
        self.ensure_schema()
        with self._conn() as con:
            row = con.execute(
                """
                SELECT max(greatest(0, epoch(d.delivered_at) - epoch(e.mapped_at)))
                FROM delivered_orders d JOIN erp_orders e USING (route_id, shop_order_id)
                WHERE d.route_id = ? AND d.run_id = ? AND d.status = 'delivered'
                  AND d.delivered_at IS NOT NULL
                """,
                [self.route_id, run_id],
            ).fetchone()
        return None if row is None or row[0] is None else round(float(row[0]), 3)


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


class DuckDBTokenStore:
    """The ERP token store and call guard: survives processes, so every run shares one access
    token and one tally of Exact's budgets.

    ``token_key`` scopes the call guard (``erp_client_errors``, ``erp_pauses``): Exact counts
    client errors and calls per division. ``chain_key`` scopes the token chain
    (``erp_tokens``): it belongs to the app and the authorising user, so every division the
    authorisation reaches shares one refresh and one access token. It defaults to
    ``token_key`` (one division, one chain). ``adopt_from`` is the key an older version kept
    the chain under: on first use its row moves to ``chain_key`` when its seed fingerprint is
    ``seed_fingerprint``, so an upgrade does not burn the rotated refresh token.
    """

    def __init__(
        self,
        ledger: Ledger,
        token_key: str,
        *,
        chain_key: str | None = None,
        adopt_from: str | None = None,
        seed_fingerprint: str | None = None,
    ) -> None:
        self._ledger = ledger
        self._key = token_key
        self._chain = chain_key or token_key
        self._adopt_from = (
            adopt_from if adopt_from and adopt_from != self._chain and seed_fingerprint else None
        )
        self._seed = seed_fingerprint

    @property
    def chain_key(self) -> str:
        return self._chain

    def _ready(self) -> None:
        self._ledger.ensure_schema()
        if self._adopt_from is not None:
            self._adopt_legacy_chain(self._adopt_from)
            self._adopt_from = None  # once per store

    def _adopt_legacy_chain(self, legacy_key: str) -> None:
        with self._ledger._conn() as con:
            con.execute("BEGIN TRANSACTION")
            try:
                own = con.execute(
                    "SELECT refresh_token, refresh_started_at FROM erp_tokens WHERE token_key = ?",
                    [self._chain],
                ).fetchone()
                old = con.execute(
                    "SELECT refresh_token, access_token, access_expires_at, refreshed_at, "
                    "seed_fingerprint, refresh_started_at FROM erp_tokens "
                    "WHERE token_key = ? AND seed_fingerprint = ?",
                    [legacy_key, self._seed],
                ).fetchone()
                if (own is None or own == (None, None)) and old is not None and old[0]:
                    con.execute(
                        """
                        INSERT INTO erp_tokens (token_key, refresh_token, access_token,
                            access_expires_at, refreshed_at, seed_fingerprint, refresh_started_at)
                        VALUES (?, ?, ?, ?, ?, ?, ?)
                        ON CONFLICT (token_key) DO UPDATE SET
                            refresh_token = excluded.refresh_token,
                            access_token = excluded.access_token,
                            access_expires_at = excluded.access_expires_at,
                            refreshed_at = excluded.refreshed_at,
                            seed_fingerprint = excluded.seed_fingerprint,
                            refresh_started_at = excluded.refresh_started_at
                        """,
                        [self._chain, *old],
                    )
                    # One copy of a refresh token, under the key every division now uses.
                    con.execute("DELETE FROM erp_tokens WHERE token_key = ?", [legacy_key])
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise

    def load(self) -> StoredTokens | None:
        self._ready()
        with self._ledger._conn() as con:
            row = con.execute(
                "SELECT refresh_token, access_token, access_expires_at, refreshed_at, "
                "seed_fingerprint FROM erp_tokens WHERE token_key = ?",
                [self._chain],
            ).fetchone()
        if not row or not row[0]:
            return None
        return StoredTokens(*row)

    def save(self, tokens: StoredTokens) -> None:
        self._ready()
        with self._ledger._conn() as con:
            con.execute(
                """
                INSERT INTO erp_tokens (token_key, refresh_token, access_token, access_expires_at,
                                        refreshed_at, seed_fingerprint)
                VALUES (?, ?, ?, ?, ?, ?)
                ON CONFLICT (token_key) DO UPDATE SET
                    refresh_token = excluded.refresh_token,
                    access_token = excluded.access_token,
                    access_expires_at = excluded.access_expires_at,
                    refreshed_at = excluded.refreshed_at,
                    seed_fingerprint = excluded.seed_fingerprint,
                    refresh_started_at = NULL,
                    auth_needed_seed = NULL,
                    auth_needed_reason = NULL
                """,
                [
                    self._chain,
                    tokens.refresh_token,
                    tokens.access_token,
                    tokens.access_expires_at,
                    tokens.refreshed_at,
                    tokens.seed_fingerprint,
                ],
            )

    def note_refresh_started(self, at: float | None) -> None:
        self._ready()
        with self._ledger._conn() as con:
            con.execute(
                """
                INSERT INTO erp_tokens (token_key, refresh_started_at) VALUES (?, ?)
                ON CONFLICT (token_key) DO UPDATE
                SET refresh_started_at = excluded.refresh_started_at
                """,
                [self._chain, at],
            )

    def interrupted_refresh(self) -> float | None:
        self._ready()
        with self._ledger._conn() as con:
            row = con.execute(
                "SELECT refresh_started_at FROM erp_tokens WHERE token_key = ?", [self._chain]
            ).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def authorisation_needed(self) -> tuple[str, str] | None:
        self._ready()
        with self._ledger._conn() as con:
            row = con.execute(
                "SELECT auth_needed_seed, auth_needed_reason FROM erp_tokens WHERE token_key = ?",
                [self._chain],
            ).fetchone()
        return None if row is None or row[0] is None else (str(row[0]), str(row[1] or ""))

    def note_authorisation_needed(self, seed_fingerprint: str, reason: str) -> None:
        self._ready()
        with self._ledger._conn() as con:
            con.execute(
                """
                INSERT INTO erp_tokens (token_key, auth_needed_seed, auth_needed_reason)
                VALUES (?, ?, ?)
                ON CONFLICT (token_key) DO UPDATE SET
                    auth_needed_seed = excluded.auth_needed_seed,
                    auth_needed_reason = excluded.auth_needed_reason
                """,
                [self._chain, seed_fingerprint, reason],
            )

    # --- the call guard: Exact's error threshold and daily budget, shared by every run -------

    def recent_client_errors(self, since: float) -> dict[str, list[float]]:
        self._ledger.ensure_schema()
        with self._ledger._conn() as con:
            rows = con.execute(
                "SELECT endpoint, seen_at FROM erp_client_errors "
                "WHERE token_key = ? AND seen_at >= ? ORDER BY seen_at",
                [self._key, since],
            ).fetchall()
        out: dict[str, list[float]] = {}
        for endpoint, at in rows:
            out.setdefault(endpoint, []).append(float(at))
        return out

    def record_client_error(self, endpoint: str, status: int, at: float) -> None:
        self._ledger.ensure_schema()
        with self._ledger._conn() as con:
            con.execute(
                "DELETE FROM erp_client_errors WHERE token_key = ? AND seen_at < ?",
                [self._key, at - 86_400],
            )
            con.execute(
                "INSERT INTO erp_client_errors VALUES (?, ?, ?, ?)",
                [self._key, endpoint, status, at],
            )

    def paused_until(self) -> tuple[float, str] | None:
        self._ledger.ensure_schema()
        with self._ledger._conn() as con:
            row = con.execute(
                "SELECT until_s, reason FROM erp_pauses WHERE token_key = ?", [self._key]
            ).fetchone()
        return None if row is None or row[0] is None else (float(row[0]), str(row[1]))

    def pause(self, until: float | None, reason: str = "") -> None:
        self._ledger.ensure_schema()
        with self._ledger._conn() as con:
            con.execute(
                "INSERT OR REPLACE INTO erp_pauses VALUES (?, ?, ?)", [self._key, until, reason]
            )

    def acquire_refresh_lock(self, holder: str, ttl_s: float) -> bool:
        self._ready()
        now = now_utc().timestamp()
        with self._ledger._conn() as con:
            con.execute("BEGIN TRANSACTION")
            row = con.execute(
                "SELECT lock_holder, lock_until FROM erp_tokens WHERE token_key = ?", [self._chain]
            ).fetchone()
            if row and row[0] not in (None, holder) and row[1] is not None and row[1] > now:
                con.execute("ROLLBACK")
                return False
            con.execute(
                """
                INSERT INTO erp_tokens (token_key, lock_holder, lock_until) VALUES (?, ?, ?)
                ON CONFLICT (token_key) DO UPDATE SET
                    lock_holder = excluded.lock_holder, lock_until = excluded.lock_until
                """,
                [self._chain, holder, now + ttl_s],
            )
            con.execute("COMMIT")
        return True

    def release_refresh_lock(self, holder: str) -> None:
        with self._ledger._conn() as con:
            con.execute(
                "UPDATE erp_tokens SET lock_holder = NULL, lock_until = NULL "
                "WHERE token_key = ? AND lock_holder = ?",
                [self._chain, holder],
            )
