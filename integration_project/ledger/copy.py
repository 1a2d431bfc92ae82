"""Copy a DuckDB ledger into a PostgreSQL one, every row of every table, and prove it.

    python -m integration_project.ledger.copy \\
        --from ~/.local/share/integration_project/ledger.duckdb \\
        --to postgresql://user:password@db.internal:5432/ledger

``--to`` may be left out when ``INTEGRATION_LEDGER_URL`` holds the URL. The URL is never printed
(it holds the password): messages name ``host:port/database`` only.

What it does, in order:

1. The source file is opened **read-only** and never written. It must already be at this
   version's latest migration; if it is not, the copy stops and says which migrations it lacks:
   run the route once against it (or pass ``--migrate-source``, which migrates the file in
   place and says so, before the read-only copy).
2. The target is brought to the latest migration through :class:`~.db.Database`, as a run
   would, so both schemas are the same list of migrations. Tables and columns are read from
   both schemas (not from a list in this file); a table or column one side lacks stops the copy.
3. In ONE PostgreSQL transaction: every ledger table is locked (a route run against the
   target waits until the copy ends), a target that holds rows in any table is refused naming
   the tables (``--replace`` empties them first, and says so), each table is copied in Arrow
   batches by ``COPY FROM STDIN``, and then each table's row count and checksum are compared
   on both sides. Any difference rolls everything back and exits 1 naming the table.

The checksum is the sum over rows of a row's md5 (its first 60 bits), each row rendered the
same way by both databases: text and JSON as their md5, integers as digits, timestamps as
microseconds since the epoch (UTC), floats as their 64 IEEE bits, NULL as ``N``. A sum, not an
ordered hash, so no sort (and no collation) is involved; duplicate rows still count twice.

Exit status: 0 copied and verified, 1 a table differed or a statement failed (rolled back),
2 refused before any row was written (unreachable server, source not migrated or in use, schemas
that differ, rows in the target; the target may have been migrated by then).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import duckdb

from integration_project import settings
from integration_project.ledger import postgres
from integration_project.ledger.db import MEMORY_LIMIT, Database
from integration_project.ledger.migrations import MIGRATIONS

#: The migrations' own bookkeeping: each side keeps its own, written by its migrations.
SKIPPED_TABLES = frozenset({"schema_migrations"})
#: Rows per Arrow batch (one ``COPY`` each): order payloads are a few kB, so ~50 MB a batch.
BATCH_ROWS = 10_000
#: How long the copy waits for a route run to release the target's tables.
LOCK_TIMEOUT = "10s"

Print = Callable[[str], None]


class CopyRefused(Exception):
    """The copy did not start: no row was written to the target (exit status 2)."""


class CopyFailed(Exception):
    """A table did not arrive whole; the transaction was rolled back (exit status 1)."""


@dataclass(frozen=True)
class Column:
    name: str
    #: How both sides render it for the checksum: text, integer, timestamp, float, boolean.
    kind: str


@dataclass(frozen=True)
class TableCheck:
    """One table's row count and checksum on each side."""

    name: str
    source_rows: int
    target_rows: int
    source_sum: int
    target_sum: int

    @property
    def equal(self) -> bool:
        return (self.source_rows, self.source_sum) == (self.target_rows, self.target_sum)


def copy_ledger(
    source: str | Path,
    target_url: str,
    *,
    replace: bool = False,
    migrate_source: bool = False,
    batch_rows: int = BATCH_ROWS,
    echo: Print | None = None,
) -> list[TableCheck]:
    """Copy the DuckDB ledger at ``source`` into the PostgreSQL ledger at ``target_url`` and
    verify it (see the module's docstring); the per-table checks, all equal. ``echo``
    receives each line of the report (default: standard output)."""
    echo = echo or _say
    try:
        postgres.check_url(target_url)
    except ValueError as exc:
        raise CopyRefused(str(exc)) from None
    path = Path(source).expanduser()
    echo(f"copying the DuckDB ledger {path} into PostgreSQL at {postgres.describe(target_url)}")
    migrated = _ready_source(path, migrate_source, echo)
    target = Database(lambda: postgres.connect(target_url), "postgres")
    with target.connect():
        pass  # the target's migrations, each in a transaction of its own, before the copy's
    with _read_only(path) as src, target.transaction() as dst:
        tables = _matching_tables(src, dst)
        _take_tables(dst, sorted(tables), replace, echo)
        started = time.monotonic()
        for name, columns in sorted(tables.items()):
            _copy_table(src, dst, name, columns, batch_rows)
        checks = [_check(src, dst, name, columns) for name, columns in sorted(tables.items())]
        echo(format_checks(checks))
        bad = [check.name for check in checks if not check.equal]
        if bad:
            raise CopyFailed(f"the copy differs from the source in {', '.join(bad)}: rolled back")
    rows = sum(check.target_rows for check in checks)
    echo(
        f"copied and verified {rows:,} rows in {len(checks)} tables in "
        f"{time.monotonic() - started:.1f} s; the source file was "
        + ("migrated, its rows untouched" if migrated else "not modified")
    )
    return checks


# --- the source -------------------------------------------------------------------------------


@contextmanager
def _read_only(path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """The source file, read-only; another process writing it (a run, a code server holding a
    connection) is named as the reason it cannot be opened."""
    if not path.is_file():
        raise CopyRefused(f"there is no DuckDB ledger at {path}")
    try:
        con = duckdb.connect(str(path), read_only=True)
    except duckdb.IOException as exc:
        raise CopyRefused(
            f"cannot open {path} read-only ({str(exc).splitlines()[0]}): stop the runs, "
            "schedules and sensors that use it, then copy"
        ) from None
    try:
        con.execute(f"SET memory_limit = '{MEMORY_LIMIT}'")
        yield con
    finally:
        con.close()


def _ready_source(path: Path, migrate: bool, echo: Print) -> bool:
    """Refuse a source whose schema is not this version's (or, with ``migrate``, bring it up
    to date in place, saying so): only then are both sides' schemas the same. True when it
    migrated the file."""
    with _read_only(path) as con:
        known = {row[0] for row in con.execute(_TABLES_SQL).fetchall()}
        versions = set()
        if "schema_migrations" in known:
            versions = {
                v for (v,) in con.execute("SELECT version FROM schema_migrations").fetchall()
            }
    latest = {migration.version for migration in MIGRATIONS}
    if versions - latest:
        raise CopyRefused(
            f"{path} has migrations this version does not know "
            f"({', '.join(map(str, sorted(versions - latest)))}): copy with the version that "
            "wrote it"
        )
    missing = sorted(latest - versions)
    if not missing:
        return False
    if not migrate:
        raise CopyRefused(
            f"{path} lacks migrations {', '.join(map(str, missing))}: run the route once against "
            "it (or pass --migrate-source to migrate the file in place), then copy"
        )
    echo(f"--migrate-source: applying migrations {', '.join(map(str, missing))} to {path} in place")
    try:
        with Database(lambda: duckdb.connect(str(path))).connect():
            pass
    except duckdb.IOException as exc:
        raise CopyRefused(f"cannot migrate {path}: {str(exc).splitlines()[0]}") from None
    return True


_TABLES_SQL = """
SELECT table_name FROM duckdb_tables()
WHERE database_name = current_database() AND schema_name = 'main' AND NOT temporary
"""
_COLUMNS_SQL = """
SELECT table_name, column_name, data_type FROM duckdb_columns()
WHERE database_name = current_database() AND schema_name = 'main' 
ORDER BY table_name, column_index
"""
_PG_COLUMNS_SQL = """
SELECT c.table_name, c.column_name
FROM information_schema.columns c
JOIN information_schema.tables t USING (table_schema, table_name)
WHERE c.table_schema = current_schema() AND t.table_type = 'BASE TABLE'
"""

#: DuckDB column types by how the checksum renders them; any other type is rendered as text
#: on both sides (a difference then fails the check: it never passes unnoticed).
_KINDS = {
    "BIGINT": "integer",
    "INTEGER": "integer",
    "SMALLINT": "integer",
    "TIMESTAMP WITH TIME ZONE": "timestamp",
    "TIMESTAMP": "timestamp",
    "DOUBLE": "float",
    "BOOLEAN": "boolean",
}


def _matching_tables(
    src: duckdb.DuckDBPyConnection, dst: postgres.PgConnection
) -> dict[str, list[Column]]:
    """Every ledger table and its columns, read from the source's schema; the target must have
    the same tables with the same column names (both are at the same migration)."""
    tables: dict[str, list[Column]] = {}
    for table, column, data_type in src.execute(_COLUMNS_SQL).fetchall():
        if table not in SKIPPED_TABLES:
            tables.setdefault(table, []).append(Column(column, _KINDS.get(data_type, "text")))
    theirs: dict[str, set[str]] = {}
    for table, column in dst.execute(_PG_COLUMNS_SQL).fetchall():
        if table not in SKIPPED_TABLES:
            theirs.setdefault(table, set()).add(column)
    differ = sorted(
        name
        for name in tables.keys() | theirs.keys()
        if {c.name for c in tables.get(name, [])} != theirs.get(name, set())
    )
    if differ:
        raise CopyRefused(
            f"the schemas differ in {', '.join(differ)}: source and target must be at the same "
            "migration"
        )
    return tables


# --- the target -------------------------------------------------------------------------------


def _take_tables(dst: postgres.PgConnection, tables: list[str], replace: bool, echo: Print) -> None:
    """Lock every ledger table for the copy's transaction, and refuse (or with ``replace``
    empty) a target that already holds rows."""
    import psycopg2.errors

    quoted = ", ".join(f'"{name}"' for name in tables)
    dst.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
    try:
        dst.execute(f"LOCK TABLE {quoted} IN ACCESS EXCLUSIVE MODE")
    except psycopg2.errors.LockNotAvailable:
        raise CopyRefused(
            f"the target's tables stayed in use for {LOCK_TIMEOUT}: stop the runs that use it"
        ) from None
    held = [name for name in tables if dst.execute(f'SELECT 1 FROM "{name}" LIMIT 1').fetchall()]
    if not held:
        return
    if not replace:
        raise CopyRefused(
            f"the target already holds rows in {', '.join(held)}: nothing was copied "
            "(--replace empties every ledger table of the target first)"
        )
    dst.execute(f"TRUNCATE {quoted}")
    echo(f"--replace: emptied the target's {', '.join(held)} (rolled back if the copy fails)")


def _copy_table(
    src: duckdb.DuckDBPyConnection,
    dst: postgres.PgConnection,
    name: str,
    columns: Sequence[Column],
    batch_rows: int,
) -> None:
    """``name``'s rows from the source into the target, one ``COPY`` per Arrow batch."""
    import psycopg2

    # JSON is read as its text: the target's json column stores that text as it is.
    select = ", ".join(
        f'CAST("{c.name}" AS VARCHAR) AS "{c.name}"' if c.kind == "text" else f'"{c.name}"'
        for c in columns
    )
    reader = src.sql(f'SELECT {select} FROM "{name}"').to_arrow_reader(batch_rows)
    try:
        for batch in reader:
            if batch.num_rows:
                dst.copy_in(name, batch)
    except psycopg2.Error as exc:
        reason = str(exc).strip().splitlines()[0]
        raise CopyFailed(f"copying {name} failed, rolled back: {reason}") from None


# --- the check --------------------------------------------------------------------------------


def _render(column: Column, dialect: str) -> str:
    """SQL that renders ``column`` as the same text in both databases (NULL stays NULL)."""
    name, duck = f'"{column.name}"', dialect == "duckdb"
    if column.kind == "integer":
        return f"CAST({name} AS {'VARCHAR' if duck else 'text'})"
    if column.kind == "timestamp":
        if duck:
            return f"CAST(epoch_us({name}) AS VARCHAR)"
        return f"CAST(CAST(extract(epoch FROM {name}) * 1000000 AS bigint) AS text)"
    if column.kind == "float":
        if duck:
            return f"CAST(CAST({name} AS BIT) AS VARCHAR)"
        return f"CAST(CAST('x' || encode(float8send({name}), 'hex') AS bit(64)) AS text)"
    if column.kind == "boolean":
        return f"CASE WHEN {name} THEN 't' WHEN NOT {name} THEN 'f' END"
    return f"md5(CAST({name} AS {'VARCHAR' if duck else 'text'}))"


def checksum_sql(table: str, columns: Sequence[Column], dialect: str) -> str:
    """``SELECT count, checksum`` of ``table`` in ``dialect`` (``duckdb`` or ``postgres``)."""
    row = " || '|' || ".join(f"coalesce({_render(c, dialect)}, 'N')" for c in columns)
    head = f"substr(md5({row}), 1, 15)"
    if dialect == "duckdb":
        value = f"CAST('0x' || {head} AS BIGINT)"
    else:
        value = f"CAST(CAST('x' || {head} AS bit(60)) AS bigint)"
    return f'SELECT count(*), coalesce(sum({value}), 0) FROM "{table}"'


def _check(
    src: duckdb.DuckDBPyConnection, dst: postgres.PgConnection, name: str, columns: Sequence[Column]
) -> TableCheck:
    [(source_rows, source_sum)] = src.execute(checksum_sql(name, columns, "duckdb")).fetchall()
    [(target_rows, target_sum)] = dst.execute(checksum_sql(name, columns, "postgres")).fetchall()
    return TableCheck(name, source_rows, target_rows, int(source_sum), int(target_sum))


def format_checks(checks: Sequence[TableCheck]) -> str:
    """The per-table counts as a plain-text table, a mismatch marked."""
    width = max([len("table"), *(len(check.name) for check in checks)])
    lines = [f"{'table':<{width}}  {'source rows':>12}  {'target rows':>12}  checksum"]
    for check in checks:
        verdict = "equal" if check.equal else "DIFFERS"
        lines.append(
            f"{check.name:<{width}}  {check.source_rows:>12,}  {check.target_rows:>12,}  {verdict}"
        )
    return "\n".join(lines)


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


# --- the command ------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m integration_project.ledger.copy",
        description="Copy a DuckDB ledger into an empty PostgreSQL ledger, verified per table.",
    )
    parser.add_argument("--from", dest="source", required=True, help="the DuckDB ledger file")
    parser.add_argument(
        "--to",
        dest="target",
        help=f"postgresql://user:password@host:port/database (default: ${settings.LEDGER_URL_ENV})",
    )
    parser.add_argument(
        "--replace", action="store_true", help="empty the target's ledger tables first"
    )
    parser.add_argument(
        "--migrate-source",
        action="store_true",
        help="bring an older source file to the latest migration in place first",
    )
    parser.add_argument("--batch-rows", type=int, default=BATCH_ROWS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    target = args.target or os.environ.get(settings.LEDGER_URL_ENV, "").strip()
    if not target:
        parser.error(f"--to or {settings.LEDGER_URL_ENV} must name the PostgreSQL ledger")
    try:
        copy_ledger(
            args.source,
            target,
            replace=args.replace,
            migrate_source=args.migrate_source,
            batch_rows=args.batch_rows,
        )
    except (CopyRefused, postgres.LedgerUnreachable) as exc:
        sys.stderr.write(f"refused: {exc}\n")
        return 2
    except CopyFailed as exc:
        sys.stderr.write(f"failed: {exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
