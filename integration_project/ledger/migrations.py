"""The ledger's schema as numbered migrations, applied in order by :class:`~.db.Database`.

Migration 1 is the schema of every version before migrations were numbered: idempotent DDL
(``CREATE TABLE IF NOT EXISTS``, ``ADD COLUMN IF NOT EXISTS``), so a ledger file those versions
created upgrades in place and keeps its rows. A later change to the schema is a new migration
appended to :data:`MIGRATIONS`, never an edit of an applied one.

Both backends run the same list, with the same versions. A migration whose SQL only DuckDB
speaks carries its PostgreSQL text beside it (``postgres``); the rest run as written, with
PostgreSQL's name for DuckDB's ``DOUBLE`` (``DOUBLE PRECISION``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    sql: str
    #: The same change in PostgreSQL's SQL, where DuckDB's text would not run there.
    postgres: str | None = None

    def sql_for(self, dialect: str) -> str:
        if dialect == "duckdb":
            return self.sql
        return self.postgres or re.sub(r"\bDOUBLE\b", "DOUBLE PRECISION", self.sql)


_BASELINE = """
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

# Staged orders keep the shop's autoIncrement (the order in which it stored them): the fetch's
# late-order cursor is its highest value. Rows staged before keep theirs from the payload.
_STORED_ORDER_KEY = """
ALTER TABLE staged_orders ADD COLUMN IF NOT EXISTS auto_increment BIGINT;
ALTER TABLE staged_orders_incoming ADD COLUMN IF NOT EXISTS auto_increment BIGINT;
UPDATE staged_orders
SET auto_increment = TRY_CAST(json_extract_string(payload, '$.autoIncrement') AS BIGINT)
WHERE auto_increment IS NULL
  AND json_type(payload, '$.autoIncrement') IN ('BIGINT', 'UBIGINT');
"""

# PostgreSQL ledgers begin after this column existed: only rows copied from an older DuckDB
# ledger could lack it, and the copy brings the column along.
_STORED_ORDER_KEY_POSTGRES = """
ALTER TABLE staged_orders ADD COLUMN IF NOT EXISTS auto_increment BIGINT;
ALTER TABLE staged_orders_incoming ADD COLUMN IF NOT EXISTS auto_increment BIGINT;
UPDATE staged_orders
SET auto_increment = (payload->>'autoIncrement')::BIGINT
WHERE auto_increment IS NULL AND json_typeof(payload->'autoIncrement') = 'number'
  AND payload->>'autoIncrement' ~ '^-?[0-9]{1,18}$';
"""

# What waits for delivery, one row per order, so a delivery tick reads only that and not every
# order the ledger ever held: an order mapped and never claimed, or claimed and not settled
# (pending, sending, failed). Each row mirrors what delivery needs of the order's erp_orders
# row (NULL when there is none) and its delivered_orders row (d_*, NULL: never claimed). Kept
# in the same transaction as the changes it mirrors (ledger/mapped.py, ledger/deliveries.py).
_WAITING = """
CREATE TABLE IF NOT EXISTS waiting_orders (
    route_id       VARCHAR NOT NULL,
    shop_order_id  VARCHAR NOT NULL,
    order_number   VARCHAR,
    created_at     TIMESTAMPTZ,
    status         VARCHAR,
    country        VARCHAR,
    payload        JSON,
    payload_hash   VARCHAR,
    your_ref       VARCHAR,
    mapped_at      TIMESTAMPTZ,
    d_status       VARCHAR,
    d_order_number VARCHAR,
    d_your_ref     VARCHAR,
    d_run_id       VARCHAR,
    d_attempts     INTEGER,
    d_payload_hash VARCHAR,
    d_claimed_at   TIMESTAMPTZ,
    PRIMARY KEY (route_id, shop_order_id)
);
INSERT INTO waiting_orders
SELECT d.route_id, d.shop_order_id, e.order_number, e.created_at, e.status, e.country,
       e.payload, e.payload_hash, e.your_ref, e.mapped_at, d.status, d.order_number,
       d.your_ref, d.run_id, d.attempts, d.payload_hash, d.claimed_at
FROM delivered_orders d
LEFT JOIN erp_orders e ON e.route_id = d.route_id AND e.shop_order_id = d.shop_order_id
WHERE d.status IN ('pending', 'sending', 'failed');
INSERT INTO waiting_orders
    (route_id, shop_order_id, order_number, created_at, status, country, payload,
     payload_hash, your_ref, mapped_at)
SELECT e.route_id, e.shop_order_id, e.order_number, e.created_at, e.status, e.country,
       e.payload, e.payload_hash, e.your_ref, e.mapped_at
FROM erp_orders e
ANTI JOIN delivered_orders d ON d.route_id = e.route_id AND d.shop_order_id = e.shop_order_id
WHERE e.status = 'mapped';
"""

#: Every migration, oldest first; versions are 1, 2, 3, ... without gaps.
_SOURCE_FILES = """
-- Each order file a route read (CSV sources), by content: a file read again (renamed, copied
-- back, its run re-executed) is the same row, and its orders the same staged orders.
CREATE TABLE IF NOT EXISTS source_files (
    route_id         VARCHAR NOT NULL,
    sha256           VARCHAR NOT NULL,
    file_name        VARCHAR NOT NULL,
    orders           BIGINT NOT NULL,
    quarantined      BIGINT NOT NULL,
    first_created_at TIMESTAMPTZ,
    end_created_at   TIMESTAMPTZ,
    read_at          TIMESTAMPTZ NOT NULL,
    run_id           VARCHAR NOT NULL,
    PRIMARY KEY (route_id, sha256)
);
"""

# Writing the ERP's order number back to the shop order (writeback.py): when the shop took it
# (acknowledged_at), or its words when it refused (acknowledge_error, retried on later runs).
_WRITEBACK = """
ALTER TABLE delivered_orders ADD COLUMN IF NOT EXISTS acknowledged_at TIMESTAMPTZ;
ALTER TABLE delivered_orders ADD COLUMN IF NOT EXISTS acknowledge_error VARCHAR;
ALTER TABLE delivered_orders ADD COLUMN IF NOT EXISTS acknowledge_attempts INTEGER;
ALTER TABLE delivered_orders ADD COLUMN IF NOT EXISTS acknowledge_tried_at TIMESTAMPTZ;
"""

# Look-up values of a division's lists that sales orders refer to (sales/ShippingMethods,
# cashflow/PaymentConditions, ...): by Code or by Description (lower-cased: Exact compares
# text without case) -> the value the sales order carries (an ID, or a payment condition's
# Code); NULL: the ERP had no such row when last asked.
_LOOKUP_VALUES = """
CREATE TABLE IF NOT EXISTS erp_lookup_values (
    erp_key    VARCHAR NOT NULL,
    resource   VARCHAR NOT NULL,
    by_field   VARCHAR NOT NULL,
    lookup_key VARCHAR NOT NULL,
    erp_value  VARCHAR,
    cached_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (erp_key, resource, by_field, lookup_key)
);
"""

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "baseline: the schema of the unversioned ledger", _BASELINE),
    Migration(
        2,
        "staged orders keep the shop's autoIncrement",
        _STORED_ORDER_KEY,
        _STORED_ORDER_KEY_POSTGRES,
    ),
    Migration(
        3,
        "waiting_orders: what waits for delivery, apart from what was delivered",
        _WAITING,
        _WAITING.replace(
            "ANTI JOIN delivered_orders d ON d.route_id = e.route_id "
            "AND d.shop_order_id = e.shop_order_id\nWHERE e.status = 'mapped';",
            "WHERE e.status = 'mapped' AND NOT EXISTS (SELECT 1 FROM delivered_orders d "
            "WHERE d.route_id = e.route_id AND d.shop_order_id = e.shop_order_id);",
        ),
    ),
    Migration(4, "source_files: order files a route read, by content hash", _SOURCE_FILES),
    Migration(5, "delivered_orders: the ERP order number written back to the shop", _WRITEBACK),
    Migration(6, "erp_lookup_values: ERP look-up lists by code or name", _LOOKUP_VALUES),
)
