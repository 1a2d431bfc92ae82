"""The ledger's database: short connections, and the schema brought up to date on first use.

Two backends: a DuckDB file (the default) or PostgreSQL (:mod:`.postgres`, for runs on several
hosts). DuckDB allows one writing process at a time, and a second process cannot even open the
file while the first holds it. So every store opens a connection, does one short transaction and
closes it: connections are never held across an HTTP call. On PostgreSQL the same short
transactions take an advisory lock where that file lock kept writers apart
(:meth:`Database.transaction`). Migrations run on a :class:`Database`'s first connection, never
at import time, the same list on both backends.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from datetime import UTC, datetime

import duckdb

from integration_project.ledger import postgres
from integration_project.ledger.migrations import MIGRATIONS, Migration

Connect = Callable[[], AbstractContextManager[duckdb.DuckDBPyConnection]]

#: What a key or constraint violation raises, on either backend.
CONSTRAINT_ERRORS: tuple[type[Exception], ...] = (
    duckdb.ConstraintException,
    postgres.ConstraintViolation,
)
#: What two colliding transactions raise, on either backend: the loser may try again.
CONFLICT_ERRORS: tuple[type[Exception], ...] = (
    duckdb.TransactionException,
    postgres.TransactionConflict,
)

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


def route_lock(route_id: str) -> str:
    """The lock name of a route's writes to what waits for delivery (see
    :meth:`Database.transaction`)."""
    return f"route {route_id}"


class Database:
    """One ledger, reached through a callable that opens a connection to it (e.g.
    ``DuckDBResource.get_connection``, or :func:`.postgres.connect` for ``dialect``
    ``"postgres"``).

    Every store of a :class:`~integration_project.ledger.Ledger` shares one instance, so the
    migrations are checked once for all of them.
    """

    def __init__(
        self,
        connect: Connect,
        dialect: str = "duckdb",
        *,
        migrations: Sequence[Migration] = MIGRATIONS,
    ) -> None:
        if dialect not in ("duckdb", "postgres"):
            raise ValueError(f"unknown ledger dialect {dialect!r}")
        self._connect = connect
        self._migrated = False
        #: The schema's migrations, oldest first: the project's own; a test may append one
        #: (a migration that fails half-way, say) without touching the shipped list.
        self.migrations = tuple(migrations)
        #: ``duckdb`` or ``postgres``: the few statements that differ ask this.
        self.dialect = dialect

    @contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A short-lived connection to an up-to-date schema: the first one of this instance
        applies the migrations the file has not had yet."""
        with self._open() as con:
            if not self._migrated:
                if self.dialect == "postgres":
                    _migrate_postgres(con, self.migrations)
                else:
                    _migrate(con, self.migrations)
                self._migrated = True
            yield con

    @contextmanager
    def transaction(self, lock: str | Sequence[str] = ()) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection inside one transaction: committed when the block ends, rolled back if
        it raises (a ``KeyboardInterrupt`` too).

        ``lock``: names (a route, a lease, a token chain) that no other transaction holds while
        this one runs, taken in the order given (keep one order everywhere). On DuckDB the
        file lock already keeps other processes out; on PostgreSQL each is an advisory lock,
        released when the transaction ends."""
        with self.connect() as con:
            con.execute("BEGIN TRANSACTION")
            try:
                if self.dialect == "postgres":
                    for name in (lock,) if isinstance(lock, str) else lock:
                        con.lock(name)
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")

    @contextmanager
    def _open(self) -> Iterator[duckdb.DuckDBPyConnection]:
        with self._connect() as con:
            if self.dialect == "postgres":
                yield con
                return
            # DuckDB caches table blocks up to 80 % of RAM by default; a bounded buffer pool
            # (spilling to <db>.tmp) keeps a day-long backfill's memory flat.
            con.execute(f"SET memory_limit = '{MEMORY_LIMIT}'")
            con.execute(f"SET force_compression = '{COMPRESSION}'")
            yield con


def _migrate(con: duckdb.DuckDBPyConnection, migrations: Sequence[Migration]) -> None:
    """Apply every migration the file has not had, oldest first. Another connection of this
    process may be applying them at the same moment (DuckDB then refuses one of the two
    transactions, or the second to record a version finds it recorded): wait for it and look
    again, so a migration is applied and recorded once."""
    for attempt in range(1, _MIGRATE_ATTEMPTS + 1):
        try:
            con.execute(_VERSIONS_DDL)
            for migration in migrations:
                _apply(con, migration)
            return
        except (duckdb.TransactionException, duckdb.ConstraintException):
            if attempt == _MIGRATE_ATTEMPTS:
                raise
            time.sleep(0.05 * attempt)


def _migrate_postgres(con: postgres.PgConnection, migrations: Sequence[Migration]) -> None:
    """:func:`_migrate` on PostgreSQL: each migration in a transaction that holds the
    migrations' advisory lock, so processes starting together apply each one once; DDL is
    transactional there, so a migration that fails leaves nothing behind."""
    for migration in migrations:
        con.execute("BEGIN TRANSACTION")
        try:
            con.lock("ledger schema migrations")
            con.execute(_VERSIONS_DDL)
            if not _applied(con, migration.version):
                con.execute(migration.sql_for("postgres"))
                con.execute(
                    "INSERT INTO schema_migrations VALUES (?, ?)", [migration.version, now_utc()]
                )
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise


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
        con.execute(migration.sql_for("duckdb"))
        con.execute("INSERT INTO schema_migrations VALUES (?, ?)", [migration.version, now_utc()])
        con.execute("COMMIT")
    except BaseException:
        with suppress(duckdb.TransactionException):
            con.execute("ROLLBACK")  # a failed COMMIT has rolled back already
        raise
