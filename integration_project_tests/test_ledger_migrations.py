"""The ledger's versioned schema: a file written before migrations were numbered is upgraded in
place and keeps its rows; migrations run on first use, once per ``Database``, and connections of
one process opening a new file at once all get the schema."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import duckdb
from dagster_duckdb import DuckDBResource

from integration_project.exact.models import StoredTokens
from integration_project.ledger import Database, DuckDBTokenStore, Ledger
from integration_project.ledger.migrations import MIGRATIONS
from integration_project.resources import open_ledger

#: Tables as an early, unversioned ledger created them: no version table, and none of the
#: columns later versions added with ``ALTER TABLE ... ADD COLUMN IF NOT EXISTS``.
OLD_DDL = """
CREATE TABLE staged_orders (
    route_id VARCHAR NOT NULL, shop_order_id VARCHAR NOT NULL, order_number VARCHAR,
    created_at TIMESTAMPTZ NOT NULL, payload JSON NOT NULL, fetched_at TIMESTAMPTZ NOT NULL,
    run_id VARCHAR, PRIMARY KEY (route_id, shop_order_id)
);
CREATE TABLE erp_orders (
    route_id VARCHAR NOT NULL, shop_order_id VARCHAR NOT NULL, order_number VARCHAR,
    created_at TIMESTAMPTZ NOT NULL, status VARCHAR NOT NULL, country VARCHAR, reason VARCHAR,
    payload JSON, payload_hash VARCHAR, mapped_at TIMESTAMPTZ NOT NULL, run_id VARCHAR,
    your_ref VARCHAR, PRIMARY KEY (route_id, shop_order_id)
);
CREATE TABLE delivered_orders (
    route_id VARCHAR NOT NULL, shop_order_id VARCHAR NOT NULL, order_number VARCHAR NOT NULL,
    erp_order_id VARCHAR, erp_order_number BIGINT, status VARCHAR NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, last_error VARCHAR, run_id VARCHAR,
    payload_hash VARCHAR, claimed_at TIMESTAMPTZ, delivered_at TIMESTAMPTZ,
    updated_at TIMESTAMPTZ NOT NULL, your_ref VARCHAR, PRIMARY KEY (route_id, shop_order_id)
);
CREATE TABLE erp_tokens (
    token_key VARCHAR PRIMARY KEY, refresh_token VARCHAR, access_token VARCHAR,
    access_expires_at DOUBLE, refreshed_at DOUBLE, seed_fingerprint VARCHAR,
    lock_holder VARCHAR, lock_until DOUBLE
);
"""
T = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)


def _old_ledger(path: Path) -> None:
    with duckdb.connect(str(path)) as con:
        con.execute(OLD_DDL)
        con.execute(
            "INSERT INTO staged_orders VALUES ('route', 's-1', '10001', ?, '{\"id\": \"s-1\"}', ?, "
            "'old-run')",
            [T, T],
        )
        con.execute(
            "INSERT INTO erp_orders VALUES ('route', 's-1', '10001', ?, 'mapped', 'DE', NULL, "
            "'{\"YourRef\": \"10001\"}', 'h', ?, 'old-run', '10001')",
            [T, T],
        )
        con.execute(
            "INSERT INTO delivered_orders VALUES ('route', 's-1', '10001', 'erp-1', 1, "
            "'delivered', 1, NULL, 'old-run', 'h', ?, ?, ?, '10001')",
            [T, T, T],
        )
        con.execute("INSERT INTO erp_tokens VALUES ('k', 'rt', NULL, NULL, NULL, 'fp', NULL, NULL)")


def test_a_ledger_from_before_versioned_migrations_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "old.duckdb"
    _old_ledger(path)
    ledger = open_ledger(DuckDBResource(database=str(path)), "route", "k")

    # Its rows, read through the stores.
    assert ledger.staging.count(T, datetime(2027, 1, 1, tzinfo=UTC)) == 1
    assert ledger.mapped.count() == 1
    assert ledger.views.delivery_counts() == {"delivered": 1}
    assert ledger.views.recent_delivered() == [("10001", "10001", "erp-1")]
    assert DuckDBTokenStore(ledger.db, "k").load() == StoredTokens("rt", None, None, None, "fp")
    # The columns later versions added work on the old rows: binding stamps them.
    ledger.endpoints.bind_shop("https://Shop.example.com/api")
    ledger.endpoints.bind_erp("https://start.exactonline.nl", "123")
    with duckdb.connect(str(path)) as con:
        assert con.execute("SELECT version FROM schema_migrations").fetchall() == [
            (m.version,) for m in MIGRATIONS
        ]
        assert con.execute("SELECT shop_host FROM staged_orders").fetchall() == [
            ("shop.example.com",)
        ]
        assert con.execute("SELECT erp_host, erp_division FROM delivered_orders").fetchall() == [
            ("start.exactonline.nl", "123")
        ]

    # Opened again, nothing is applied twice and nothing is lost.
    again = open_ledger(DuckDBResource(database=str(path)), "route", "k")
    assert again.views.delivery_counts() == {"delivered": 1}
    with duckdb.connect(str(path)) as con:
        assert con.execute("SELECT count(*) FROM schema_migrations").fetchone() == (
            len(MIGRATIONS),
        )


def test_migrations_run_on_first_use_once_per_database(tmp_path: Path) -> None:
    resource = DuckDBResource(database=str(tmp_path / "ledger.duckdb"))
    statements: list[str] = []

    class Recording:
        def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
            self._con = con

        def execute(self, sql: str, *args: object) -> duckdb.DuckDBPyConnection:
            statements.append(sql)
            return self._con.execute(sql, *args)

    @contextmanager
    def connect() -> Iterator[duckdb.DuckDBPyConnection]:
        with resource.get_connection() as con:
            yield Recording(con)  # type: ignore[misc]

    ledger = Ledger(connect, "route")
    assert statements == []  # building a ledger touches nothing
    ledger.views.delivery_counts()
    ledger.views.delivery_counts()
    assert sum("CREATE TABLE IF NOT EXISTS staged_orders" in s for s in statements) == 1
    # Every connection gets the memory limit.
    assert sum(s.startswith("SET memory_limit") for s in statements) == 2


def test_connections_opening_a_new_file_at_once_all_get_the_schema(tmp_path: Path) -> None:
    resource = DuckDBResource(database=str(tmp_path / "ledger.duckdb"))
    ready = threading.Barrier(6)
    errors: list[BaseException] = []

    def first_use() -> None:
        database = Database(resource.get_connection)
        ready.wait()
        try:
            with database.connect() as con:
                con.execute("SELECT count(*) FROM delivered_orders").fetchone()
        except BaseException as exc:  # collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=first_use) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with resource.get_connection() as con:
        versions = con.execute("SELECT version FROM schema_migrations ORDER BY 1").fetchall()
        assert versions == [(m.version,) for m in MIGRATIONS]
