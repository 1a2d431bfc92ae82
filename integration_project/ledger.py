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
* ``conflict``  the ERP holds a different order under this order's ``YourRef`` (found by the
  recovery step, or another route on the same division took the ``YourRef`` first): never
  sent, never counted as delivered; a blocking asset check shows it until a person decides.

Each route is bound to one shop and one ERP division (``route_endpoints``), and every staged
and delivered row records which: a ledger used against one ERP refuses to deliver to another.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import duckdb
import pyarrow as pa

from integration_project.exact.models import StoredTokens, VatCode
from integration_project.redact import (
    blank_order,
    blank_sales_order,
    erase_email,
    exact_email_pattern,
    normalise_email,
    personal_values,
    scrub_text,
)
from integration_project.shopware.models import order_json, order_number_text, usable_order_id

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
-- Which shop (host) and ERP (host + division) each route's rows belong to: bound on first use,
-- then a run pointed elsewhere is refused (its orders would be called delivered, or sent twice).
CREATE TABLE IF NOT EXISTS route_endpoints (
    route_id     VARCHAR PRIMARY KEY,
    shop_host    VARCHAR,
    erp_host     VARCHAR,
    erp_division VARCHAR,
    bound_at     TIMESTAMPTZ NOT NULL
);
-- The last ERP sample of a route's sampled asset check (erp_holds_delivered_orders): it
-- samples at most every half hour and shows this result in between.
CREATE TABLE IF NOT EXISTS check_samples (
    route_id   VARCHAR NOT NULL,
    check_name VARCHAR NOT NULL,
    sampled_at TIMESTAMPTZ NOT NULL,
    passed     BOOLEAN NOT NULL,
    metadata   JSON NOT NULL,
    PRIMARY KEY (route_id, check_name)
);
ALTER TABLE staged_orders ADD COLUMN IF NOT EXISTS shop_host VARCHAR;
ALTER TABLE delivered_orders ADD COLUMN IF NOT EXISTS erp_host VARCHAR;
ALTER TABLE delivered_orders ADD COLUMN IF NOT EXISTS erp_division VARCHAR;
-- Personal data (README "Personal data"): orders whose personal fields were blanked, by the
-- route's retention job (reason `retention`) or erase_customer_job (`erased`). A table of its
-- own, not columns: staging and mapping insert whole rows. A re-fetch after blanked_at brings
-- the shop's data back; the next retention run blanks it again.
CREATE TABLE IF NOT EXISTS personal_data_blanked (
    route_id      VARCHAR NOT NULL,
    shop_order_id VARCHAR NOT NULL,
    blanked_at    TIMESTAMPTZ NOT NULL,
    reason        VARCHAR NOT NULL,
    PRIMARY KEY (route_id, shop_order_id)
);
"""


def now_utc() -> datetime:
    return datetime.now(UTC)


class LedgerMismatch(Exception):
    """The route's ledger belongs to another shop or ERP division than this run points at."""


def endpoint_host(url: str) -> str:
    """``https://user:pw@Start.ExactOnline.nl:443/x`` -> ``start.exactonline.nl:443``: the
    host (and port) a URL points at, lower-cased, never its credentials or path."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    return f"{host}:{parts.port}" if parts.port else host


def payload_hash(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def parse_created_at(value: Any) -> datetime | None:
    """A shop ``createdAt`` as an aware UTC datetime; None when it is no usable date-time (not
    text, not ISO 8601, or outside what a timestamp holds, e.g. year 0 once in UTC)."""
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)
    except (ValueError, OverflowError):
        return None


def staging_key(order: Any) -> str:
    """The shop id, or a stable stand-in for an order that has no usable one (``null``, a
    number, an order without ``id`` or with one that is no key: see ``usable_order_id``):
    ``missing-id-`` and a hash of its JSON, the same at every re-fetch. It is quarantined."""
    order_id = usable_order_id(order.get("id")) if isinstance(order, dict) else None
    if order_id is not None:
        return order_id
    try:
        text = json.dumps(order, sort_keys=True, default=str)
    except (TypeError, ValueError, RecursionError):
        text = repr(type(order))  # only for values that order_json() would not stage as such
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
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
    #: The mapped ERP sales order it was claimed for (None if its mapping row is gone).
    payload: dict[str, Any] | None = None


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
        self._shop_host: str | None = None
        self._erp: tuple[str, str] | None = None  # (host, division), once bound

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
        """Write one page of raw orders to the run's incoming area.

        Every entry is staged, whatever its shape, so that none is lost and none fails the
        page: under its shop id, or under :func:`staging_key`'s stand-in key when it has no
        usable id. One that cannot be stored as JSON and read back (``NaN``, text that is not
        valid Unicode, nesting deeper than ``MAX_ORDER_DEPTH``) is staged as a stand-in that
        keeps its id and says why (``order_json``). The transforms quarantine all of these.
        An order without a usable ``createdAt`` is staged at ``fallback_created_at``.
        """
        if not orders:
            return 0
        fetched_at = now_utc()
        staged = [order_json(o) for o in orders]
        batch = pa.table(
            {
                "route_id": [self.route_id] * len(staged),
                "run_id": [run_id] * len(staged),
                "shop_order_id": pa.array([staging_key(o) for o, _ in staged], pa.string()),
                "order_number": pa.array([order_number_text(o) for o, _ in staged], pa.string()),
                "created_at": pa.array(
                    [
                        (parse_created_at(o.get("createdAt")) if isinstance(o, dict) else None)
                        or fallback_created_at
                        for o, _ in staged
                    ],
                    pa.timestamp("us", tz="UTC"),
                ),
                "payload": pa.array([text for _, text in staged], pa.string()),
                "fetched_at": pa.array([fetched_at] * len(staged), pa.timestamp("us", tz="UTC")),
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
        return len(staged)

    # --- which shop and ERP the route's rows belong to -------------------------------------

    def bind_shop(self, url: str) -> None:
        """Bind the route to this shop (first use), or refuse a shop other than the bound one:
        its order ids would mix with another shop's in staging."""
        self._bind(shop_host=endpoint_host(url))
        self._shop_host = endpoint_host(url)

    def bind_erp(self, url: str, division: str) -> None:
        """Bind the route to this ERP division (first use), or refuse another one: the rows
        the ledger calls delivered were delivered *there*, and would never reach this one."""
        host = endpoint_host(url)
        self._bind(erp=(host, str(division)))
        self._erp = (host, str(division))

    def _bind(self, *, shop_host: str | None = None, erp: tuple[str, str] | None = None) -> None:
        self.ensure_schema()
        with self._conn() as con:
            con.execute("BEGIN TRANSACTION")
            try:
                row = con.execute(
                    "SELECT shop_host, erp_host, erp_division FROM route_endpoints "
                    "WHERE route_id = ?",
                    [self.route_id],
                ).fetchone()
                bound_shop, bound_host, bound_division = row or (None, None, None)
                if shop_host is not None and bound_shop not in (None, shop_host):
                    raise LedgerMismatch(
                        f"route {self.route_id}: this ledger holds orders of the shop at "
                        f"{bound_shop}; this run points at the shop at {shop_host}. Use another "
                        "ledger (INTEGRATION_DUCKDB_PATH) or another route name for that shop"
                    )
                if (
                    erp is not None
                    and bound_host is not None
                    and (bound_host, bound_division) != erp
                ):
                    raise LedgerMismatch(
                        f"route {self.route_id}: this ledger delivered to the ERP at {bound_host} "
                        f"division {bound_division}; this run points at {erp[0]} division "
                        f"{erp[1]}. Refusing to deliver: orders it calls delivered are not in "
                        "that ERP. Use another ledger (INTEGRATION_DUCKDB_PATH) or another "
                        "route name for that division"
                    )
                if row is None:
                    con.execute(
                        "INSERT INTO route_endpoints VALUES (?, ?, ?, ?, ?)",
                        [self.route_id, shop_host, *(erp or (None, None)), now_utc()],
                    )
                if shop_host is not None and bound_shop is None:
                    con.execute(
                        "UPDATE route_endpoints SET shop_host = ? WHERE route_id = ?",
                        [shop_host, self.route_id],
                    )
                    # Rows staged before the ledger recorded hosts belong to this shop.
                    con.execute(
                        "UPDATE staged_orders SET shop_host = ? "
                        "WHERE route_id = ? AND shop_host IS NULL",
                        [shop_host, self.route_id],
                    )
                if erp is not None and bound_host is None:
                    con.execute(
                        "UPDATE route_endpoints SET erp_host = ?, erp_division = ? "
                        "WHERE route_id = ?",
                        [*erp, self.route_id],
                    )
                    con.execute(
                        "UPDATE delivered_orders SET erp_host = ?, erp_division = ? "
                        "WHERE route_id = ? AND erp_host IS NULL",
                        [*erp, self.route_id],
                    )
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise

    def endpoints(self) -> dict[str, str | None]:
        """The shop and ERP the route's rows belong to (None: not bound yet)."""
        self.ensure_schema()
        with self._conn() as con:
            row = con.execute(
                "SELECT shop_host, erp_host, erp_division FROM route_endpoints WHERE route_id = ?",
                [self.route_id],
            ).fetchone()
        keys = ("shop_host", "erp_host", "erp_division")
        return dict(zip(keys, row or (None, None, None), strict=True))

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
                        INSERT INTO staged_orders (route_id, shop_order_id, order_number,
                            created_at, payload, fetched_at, run_id, shop_host)
                        SELECT route_id, shop_order_id, order_number, created_at, payload,
                               fetched_at, run_id, ?
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
                            run_id = excluded.run_id,
                            shop_host = excluded.shop_host
                        """,
                        [self._shop_host, self.route_id, run_id, after, upto],
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
                "SELECT d.shop_order_id, d.order_number, d.run_id, d.attempts, "
                "coalesce(d.your_ref, d.order_number), e.payload FROM delivered_orders d "
                "LEFT JOIN erp_orders e USING (route_id, shop_order_id) "
                "WHERE d.route_id = ? AND d.status = 'sending' ORDER BY d.claimed_at",
                [self.route_id],
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
                *(self._erp or (None, None)),
            ],
        ).fetchone()
        return int(row[0])

    def _your_ref_owners(
        self, con: duckdb.DuckDBPyConnection, orders: Sequence[PendingOrder]
    ) -> dict[str, tuple[str, str]]:
        """Orders whose ``YourRef`` another route already uses on this ERP division:
        shop order id -> (that route, its order number)."""
        if self._erp is None or not orders:
            return {}
        rows = con.execute(
            """
            SELECT your_ref, route_id, order_number FROM delivered_orders
            WHERE erp_host = ? AND erp_division = ? AND route_id <> ?
              AND list_contains(?, your_ref)
            """,
            [*self._erp, self.route_id, [o.your_ref for o in orders]],
        ).fetchall()
        owners = {str(ref): (str(route), str(number)) for ref, route, number in rows}
        return {o.shop_order_id: owners[o.your_ref] for o in orders if o.your_ref in owners}

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
    ) -> dict[str, str]:
        """Steps 3 and 5 for orders this run sent, then step 1 for the next ones, in one
        connection. A non-delivered outcome only touches a row this run still holds (another
        run may have taken it over since).

        An order to claim whose ``YourRef`` another route already used on the same ERP
        division is not claimed: it is recorded as ``conflict``. Returns those (shop order id
        -> reason); the caller must not send them."""
        if not outcomes and not claim:
            return {}
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
            owners = self._your_ref_owners(con, claim)
            conflicts: dict[str, str] = {}
            for order in claim:
                if order.shop_order_id in owners:
                    route, number = owners[order.shop_order_id]
                    conflicts[order.shop_order_id] = (
                        f"YourRef {order.your_ref} is already used on this ERP division by "
                        f"order {number} of route {route}; not sent (give the routes "
                        "your_ref templates that cannot produce the same value)"
                    )
                    self._claim(con, order, run_id)
                    con.execute(
                        "UPDATE delivered_orders SET status = 'conflict', last_error = ? "
                        "WHERE route_id = ? AND shop_order_id = ?",
                        [conflicts[order.shop_order_id], self.route_id, order.shop_order_id],
                    )
                else:
                    self._claim(con, order, run_id)
        return conflicts

    def mark_conflict(
        self, shop_order_id: str, reason: str, *, erp_order_id: str | None = None
    ) -> None:
        """The ERP holds a different order under this order's ``YourRef``: never resent, never
        counted as delivered, until a person decides (see :meth:`conflicts`)."""
        with self._conn() as con:
            con.execute(
                "UPDATE delivered_orders SET status = 'conflict', last_error = ?, "
                "erp_order_id = ?, updated_at = ? WHERE route_id = ? AND shop_order_id = ?",
                [reason, erp_order_id, now_utc(), self.route_id, shop_order_id],
            )

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
        return self._rows_with_status("failed", limit)

    def conflicts(self, limit: int = 20) -> tuple[int, list[tuple[str, str | None]]]:
        """Rows in ``conflict``: (count, sample of (order number, why)), most recent first."""
        return self._rows_with_status("conflict", limit)

    def _rows_with_status(
        self, status: str, limit: int
    ) -> tuple[int, list[tuple[str, str | None]]]:
        self.ensure_schema()
        where = "WHERE route_id = ? AND status = ?"
        params = [self.route_id, status]
        with self._conn() as con:
            total = con.execute(
                f"SELECT count(*) FROM delivered_orders {where}", params
            ).fetchone()[0]
            rows = con.execute(
                f"SELECT order_number, last_error FROM delivered_orders {where} "
                "ORDER BY updated_at DESC, order_number LIMIT ?",
                [*params, limit],
            ).fetchall()
        return int(total), [(str(r[0]), r[1]) for r in rows]

    def last_sample(self, check_name: str) -> tuple[datetime, bool, dict[str, Any]] | None:
        """The route's last ERP sample for a sampled check: (when, passed, metadata)."""
        self.ensure_schema()
        with self._conn() as con:
            row = con.execute(
                "SELECT sampled_at, passed, metadata FROM check_samples "
                "WHERE route_id = ? AND check_name = ?",
                [self.route_id, check_name],
            ).fetchone()
        return None if row is None else (row[0], bool(row[1]), json.loads(row[2]))

    def record_sample(
        self, check_name: str, sampled_at: datetime, passed: bool, metadata: dict[str, Any]
    ) -> None:
        self.ensure_schema()
        with self._conn() as con:
            con.execute(
                "INSERT OR REPLACE INTO check_samples VALUES (?, ?, ?, ?, ?)",
                [self.route_id, check_name, sampled_at, passed, json.dumps(metadata)],
            )

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

    # --- personal data ------------------------------------------------------------------------
    # README "Personal data". An order *waits* (and keeps all its data) while it is staged but
    # not mapped, mapped but not delivered, or has a delivered_orders row in any status but
    # `delivered` (sending, pending, failed, conflict). Blanked orders are recorded in
    # personal_data_blanked; a re-fetch after that brings the shop's data back, and the next
    # retention run blanks it again.

    #: An order of ``erp_orders e`` (with ``delivered_orders d``) that no longer waits:
    #: delivered, or never to be sent (skipped, quarantined) and never claimed.
    _PD_DONE = (
        "(d.status IS NOT DISTINCT FROM 'delivered' "
        "OR (d.shop_order_id IS NULL AND e.status <> 'mapped'))"
    )
    #: Tables the erasure's scan of every text column leaves alone: the token store and leases
    #: hold no personal data and must never be rewritten; the staging area and the marker
    #: table are handled on their own.
    _PD_SCAN_SKIP = frozenset(
        {"erp_tokens", "leases", "staged_orders_incoming", "personal_data_blanked"}
    )

    def blank_personal_data(self, cutoff: datetime, *, chunk: int = 500) -> dict[str, Any]:
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
        self.ensure_schema()
        report: dict[str, Any] = {
            "staged_orders": 0,
            "erp_orders": 0,
            "delivered_orders": 0,
            "orders": 0,
        }
        created: list[datetime] = []
        after = ""
        while True:
            with self._conn() as con:
                con.execute("BEGIN TRANSACTION")
                try:
                    rows = con.execute(
                        f"""
                        SELECT e.route_id, e.shop_order_id, s.payload, e.payload, e.reason,
                               d.last_error, e.created_at
                        FROM erp_orders e
                        LEFT JOIN staged_orders s USING (route_id, shop_order_id)
                        LEFT JOIN delivered_orders d USING (route_id, shop_order_id)
                        LEFT JOIN personal_data_blanked b USING (route_id, shop_order_id)
                        WHERE e.route_id = ? AND e.shop_order_id > ? AND {self._PD_DONE}
                          AND (b.shop_order_id IS NULL OR s.fetched_at > b.blanked_at)
                          AND ((d.status = 'delivered' AND d.delivered_at < ?)
                               OR (e.status = 'skipped' AND e.mapped_at < ?)
                               OR b.reason = 'erased')
                        ORDER BY e.shop_order_id LIMIT ?
                        """,
                        [self.route_id, after, cutoff, cutoff, chunk],
                    ).fetchall()
                    touched = self._blank_orders(con, [r[:6] for r in rows], "retention", ())
                    con.execute("COMMIT")
                except BaseException:
                    con.execute("ROLLBACK")
                    raise
            if not rows:
                break
            for table, n in touched.items():
                report[table] += n
            report["orders"] += len(rows)
            created += [r[6] for r in rows]
            after = rows[-1][1]
        with self._conn() as con:
            orphans = con.execute(
                "DELETE FROM staged_orders_incoming WHERE route_id = ? AND fetched_at < ? "
                "RETURNING created_at",
                [self.route_id, cutoff],
            ).fetchall()
            accounts = con.execute(
                "DELETE FROM erp_accounts WHERE erp_key = ? AND cached_at < ? RETURNING email",
                [self.erp_key, cutoff],
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
                [cutoff, cutoff, self.route_id],
            ).fetchone()
            unmapped = con.execute(
                "SELECT count(*) FROM staged_orders s ANTI JOIN erp_orders e "
                "USING (route_id, shop_order_id) WHERE s.route_id = ? AND s.created_at < ?",
                [self.route_id, cutoff],
            ).fetchone()[0]
        created += [r[0] for r in orphans]
        report["staged_orders_incoming"] = len(orphans)
        report["erp_accounts"] = len(accounts)
        report["oldest"] = min(created) if created else None
        report["newest"] = max(created) if created else None
        report["quarantined_kept"] = int(kept[0])
        report["waiting_kept"] = int(kept[1])
        report["unmapped_kept"] = int(unmapped)
        return report

    def erase_email(
        self, email: str, *, orphan_age: timedelta = timedelta(hours=1), chunk: int = 500
    ) -> dict[str, Any]:
        """Erase one e-mail address and its customer's personal data from the whole ledger,
        **every route** (``self.route_id`` plays no part).

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
        needle = normalise_email(email)
        if "@" not in needle or len(needle) < 3:
            raise ValueError("expected an e-mail address like jane@example.com")
        pattern = exact_email_pattern(needle)
        json_needle = json.dumps(needle, ensure_ascii=False)[1:-1]
        self.ensure_schema()
        tables: dict[str, int] = {}
        erased: list[tuple[str, str, str]] = []
        waiting: dict[tuple[str, str], tuple[str, str, str]] = {}

        def add(table: str, n: int) -> None:
            if n:
                tables[table] = tables.get(table, 0) + n

        # 1. The customer's own orders: blank them whole, or list them when they wait.
        customer_sql = f"""
            FROM staged_orders s
            LEFT JOIN erp_orders e USING (route_id, shop_order_id)
            LEFT JOIN delivered_orders d USING (route_id, shop_order_id)
            WHERE contains(lower(CAST(s.payload AS VARCHAR)), ?)
              AND lower(trim(json_extract_string(s.payload, '$.orderCustomer.email'))) = ?
              AND coalesce(e.shop_order_id IS NOT NULL AND {self._PD_DONE}, false) = ?
        """
        with self._conn() as con:
            for route_id, shop_id, number, e_status, d_status in con.execute(
                "SELECT s.route_id, s.shop_order_id, coalesce(s.order_number, e.order_number), "
                "e.status, d.status " + customer_sql,
                [json_needle, needle, False],
            ).fetchall():
                why = (
                    f"delivery status {d_status}"
                    if d_status
                    else ("mapped, not delivered yet" if e_status else "staged, not mapped yet")
                )
                waiting[(route_id, shop_id)] = (route_id, str(number or shop_id), why)
        while True:
            with self._conn() as con:
                con.execute("BEGIN TRANSACTION")
                try:
                    rows = con.execute(
                        "SELECT s.route_id, s.shop_order_id, s.payload, e.payload, e.reason, "
                        "d.last_error, coalesce(s.order_number, e.order_number), e.status "
                        + customer_sql
                        + " ORDER BY s.route_id, s.shop_order_id LIMIT ?",
                        [json_needle, needle, True, chunk],
                    ).fetchall()
                    touched = self._blank_orders(con, [r[:6] for r in rows], "erased", [needle])
                    con.execute("COMMIT")
                except BaseException:
                    con.execute("ROLLBACK")
                    raise
            if not rows:
                break
            for table, n in touched.items():
                add(table, n)
            erased += [(r[0], str(r[6] or r[1]), str(r[7])) for r in rows]

        with self._conn() as con:
            con.execute("BEGIN TRANSACTION")
            try:
                # 2. The look-up cache: e-mail → ERP account id, every division.
                add(
                    "erp_accounts",
                    len(
                        con.execute(
                            "DELETE FROM erp_accounts WHERE lower(trim(email)) = ? RETURNING 1",
                            [needle],
                        ).fetchall()
                    ),
                )
                # 3. Staging rows of fetches: an aborted one's are deleted; a running one's
                #    are left (the fetch merges them; run the erasure again afterwards).
                stale = now_utc() - orphan_age
                for rowid, route_id, shop_id, number, fetched_at, text in con.execute(
                    "SELECT rowid, route_id, shop_order_id, order_number, fetched_at, "
                    "CAST(payload AS VARCHAR) FROM staged_orders_incoming "
                    "WHERE contains(lower(CAST(payload AS VARCHAR)), ?)",
                    [json_needle],
                ).fetchall():
                    if not pattern.search(text):
                        continue
                    if fetched_at < stale:
                        con.execute("DELETE FROM staged_orders_incoming WHERE rowid = ?", [rowid])
                        add("staged_orders_incoming", 1)
                    else:
                        waiting.setdefault(
                            (route_id, shop_id),
                            (route_id, str(number or shop_id), "being fetched right now"),
                        )
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise

        # 4. Every other mention, in every text column of every table (tables added later
        #    included): the address itself becomes "[erased]".
        with self._conn() as con:
            names = [
                r[0]
                for r in con.execute(
                    "SELECT table_name FROM duckdb_tables() WHERE database_name = "
                    "current_database() AND schema_name = 'main' ORDER BY table_name"
                ).fetchall()
                if r[0] not in self._PD_SCAN_SKIP
            ]
        for table in names:
            with self._conn() as con:
                con.execute("BEGIN TRANSACTION")
                try:
                    changed, left = self._erase_in_table(con, table, pattern, needle, json_needle)
                    con.execute("COMMIT")
                except BaseException:
                    con.execute("ROLLBACK")
                    raise
            add(table, changed)
            for key, number in left:
                waiting.setdefault(key, (key[0], number, "waits for delivery"))
        return {
            "tables": dict(sorted(tables.items())),
            "erased": sorted(erased),
            "waiting": sorted(waiting.values()),
        }

    def _erase_in_table(
        self,
        con: duckdb.DuckDBPyConnection,
        table: str,
        pattern: Any,
        needle: str,
        json_needle: str,
    ) -> tuple[int, list[tuple[tuple[str, str], str]]]:
        """Replace the address in ``table``'s text columns, except in rows of orders that wait.
        Returns (rows changed, [((route id, shop id), order number) left because they wait])."""
        columns = con.execute(
            "SELECT column_name, data_type FROM duckdb_columns() WHERE database_name = "
            "current_database() AND schema_name = 'main' AND table_name = ?",
            [table],
        ).fetchall()
        names = {c for c, _ in columns}
        texts = [(c, t) for c, t in columns if t in ("VARCHAR", "JSON")]
        keyed = {"route_id", "shop_order_id"} <= names
        waiting: set[tuple[str, str]] = set()
        if keyed:
            waiting = {
                (str(r[0]), str(r[1]))
                for r in con.execute(
                    f"""
                    SELECT route_id, shop_order_id FROM staged_orders
                    ANTI JOIN erp_orders USING (route_id, shop_order_id)
                    UNION
                    SELECT e.route_id, e.shop_order_id
                    FROM erp_orders e LEFT JOIN delivered_orders d USING (route_id, shop_order_id)
                    WHERE NOT {self._PD_DONE}
                    UNION
                    SELECT route_id, shop_order_id FROM delivered_orders
                    WHERE status <> 'delivered'
                    """
                ).fetchall()
            }
        number = "order_number" if "order_number" in names else "NULL"
        key_sql = f"route_id, shop_order_id, {number}" if keyed else "NULL, NULL, NULL"
        changed: set[int] = set()
        left: list[tuple[tuple[str, str], str]] = []
        for column, data_type in texts:
            rows = con.execute(
                f'SELECT rowid, CAST("{column}" AS VARCHAR), {key_sql} FROM "{table}" '
                f'WHERE contains(lower(CAST("{column}" AS VARCHAR)), ?)',
                [json_needle if data_type == "JSON" else needle],
            ).fetchall()
            for rowid, text, route_id, shop_id, order_number in rows:
                new, n = erase_email(text, pattern)
                if not n:
                    continue
                if keyed and (str(route_id), str(shop_id)) in waiting:
                    left.append(((str(route_id), str(shop_id)), str(order_number or shop_id)))
                    continue
                con.execute(
                    f'UPDATE "{table}" SET "{column}" = CAST(? AS {data_type}) WHERE rowid = ?',
                    [new, rowid],
                )
                changed.add(rowid)
        return len(changed), left

    def _blank_orders(
        self,
        con: duckdb.DuckDBPyConnection,
        rows: Sequence[tuple[Any, ...]],
        reason: str,
        extra_values: Iterable[str],
    ) -> dict[str, int]:
        """Blank orders inside the caller's transaction. ``rows``: (route id, shop id, staged
        payload, mapped payload, mapping reason, delivery error). Returns rows changed per
        table; every order gets a ``personal_data_blanked`` row (an ``erased`` mark stays)."""
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
        return {
            "staged_orders": len(staged),
            "erp_orders": len(mapped),
            "delivered_orders": len(delivered),
        }


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
