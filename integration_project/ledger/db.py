"""The ledger's DuckDB file: short connections, and the schema brought up to date on first use.

DuckDB allows one writing process at a time, and a second process cannot even open the file
while the first holds it. So every store opens a connection, does one short transaction and
closes it: connections are never held across an HTTP call. Migrations run on a
:class:`Database`'s first connection, never at import time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from datetime import UTC, datetime

import duckdb

from integration_project.ledger.migrations import MIGRATIONS, Migration

Connect = Callable[[], AbstractContextManager[duckdb.DuckDBPyConnection]]

#: DuckDB's memory limit for every ledger connection (its buffer pool; larger work spills).
MEMORY_LIMIT = "256MB"
#: How DuckDB compresses text when it writes the file. Its default (dictionary + FSST) costs
#: three times the CPU of zstd on order JSON and leaves a file seven times the size
#: (20,000 sandbox orders: 10.6 s and 131 MB against 3.1 s and 18 MB).
COMPRESSION = "zstd"
#: Tries at the migrations while another connection of this process applies them.
_MIGRATE_ATTEMPTS = 10

_VERSIONS_DDL = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER PRIMARY KEY,
    applied_at TIMESTAMPTZ NOT NULL
)
"""


def now_utc() -> datetime:
    return datetime.now(UTC)


class Database:
    """One ledger file, reached through a callable that opens a connection to it (e.g.
    ``DuckDBResource.get_connection``).

    Every store of a :class:`~integration_project.ledger.Ledger` shares one instance, so the
    migrations are checked once for all of them.
    """

    def __init__(self, connect: Connect) -> None:
        self._connect = connect
        self._migrated = False

    @contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A short-lived connection to an up-to-date schema: the first one of this instance
        applies the migrations the file has not had yet."""
        with self._open() as con:
            if not self._migrated:
                _migrate(con)
                self._migrated = True
            yield con

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection inside one transaction: committed when the block ends, rolled back if
        it raises (a ``KeyboardInterrupt`` too)."""
        with self.connect() as con:
            con.execute("BEGIN TRANSACTION")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")

    @contextmanager
    def _open(self) -> Iterator[duckdb.DuckDBPyConnection]:
        with self._connect() as con:
            # DuckDB caches table blocks up to 80 % of RAM by default; a bounded buffer pool
            # (spilling to <db>.tmp) keeps a day-long backfill's memory flat.
            con.execute(f"SET memory_limit = '{MEMORY_LIMIT}'")
            con.execute(f"SET force_compression = '{COMPRESSION}'")
            yield con


def _migrate(con: duckdb.DuckDBPyConnection) -> None:
    """Apply every migration the file has not had, oldest first. Another connection of this
    process may be applying them at the same moment (DuckDB then refuses one of the two
    transactions, or the second to record a version finds it recorded): wait for it and look
    again, so a migration is applied and recorded once."""
    for attempt in range(1, _MIGRATE_ATTEMPTS + 1):
        try:
            con.execute(_VERSIONS_DDL)
            for migration in MIGRATIONS:
                _apply(con, migration)
            return
        except (duckdb.TransactionException, duckdb.ConstraintException):
            if attempt == _MIGRATE_ATTEMPTS:
                raise
            time.sleep(0.05 * attempt)


def _applied(con: duckdb.DuckDBPyConnection, version: int) -> bool:
    # fetchall: an unfinished result would keep the caller from registering tables on ``con``.
    rows = con.execute("SELECT 1 FROM schema_migrations WHERE version = ?", [version]).fetchall()
    return bool(rows)


def _apply(con: duckdb.DuckDBPyConnection, migration: Migration) -> None:
    """Run one migration and record it, in one transaction."""
    if _applied(con, migration.version):
        return
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(migration.sql)
        con.execute("INSERT INTO schema_migrations VALUES (?, ?)", [migration.version, now_utc()])
        con.execute("COMMIT")
    except BaseException:
        with suppress(duckdb.TransactionException):
            con.execute("ROLLBACK")  # a failed COMMIT has rolled back already
        raise
