"""The ledger on PostgreSQL: connections that speak the part of DuckDB's Python API the stores use.

The stores are written once, against DuckDB's connection API and a SQL both databases run
(``= ANY(?)`` for lists, ``ON CONFLICT ... DO UPDATE``, ``NOT EXISTS``, ``DISTINCT ON``). A
:class:`PgConnection` gives them that API over psycopg2: ``?`` placeholders, ``execute(...)
.fetchall()``, ``sql(...).to_arrow_table()``, and ``register(name, arrow_table)`` as a temporary
table filled by ``COPY``. Where the dialects really differ, a store asks
:attr:`~integration_project.ledger.db.Database.dialect` (a handful of places, each commented).

Every statement runs in autocommit mode unless the store opened a transaction with ``BEGIN``, as
on DuckDB. Where DuckDB's file lock kept two processes apart, a transaction takes a
transaction-scoped advisory lock (:meth:`PgConnection.lock`) instead.

Connection failures name the host and database, never the password (:class:`LedgerUnreachable`).
psycopg2 is imported when the first connection is opened: it comes with the ``prod`` extra.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from decimal import Decimal
from typing import Any
from urllib.parse import unquote, urlsplit

import pyarrow as pa

#: URL schemes that select this backend.
SCHEMES = ("postgresql", "postgres")
#: Idle connections kept per URL and process: a run opens the ledger a few dozen times.
POOL_SIZE = 4
#: How long a connection attempt may take before the run fails naming the server.
CONNECT_TIMEOUT_S = 10


class LedgerUnreachable(ConnectionError):
    """The ledger's PostgreSQL server did not take the connection."""


class ConstraintViolation(Exception):
    """A row broke a key or constraint (psycopg2's ``IntegrityError``)."""


class TransactionConflict(Exception):
    """Two transactions collided (serialisation failure or deadlock): try again."""


def describe(url: str) -> str:
    """``host:port/database`` of a ledger URL: what messages may name (never the password)."""
    parts = urlsplit(url)
    return f"{parts.hostname or 'localhost'}:{parts.port or 5432}/{parts.path.lstrip('/')}"


def check_url(url: str) -> None:
    """Refuse a URL that cannot name a PostgreSQL ledger, naming what is wrong (not the URL:
    it holds the password)."""
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise ValueError(f"ledger URL scheme {parts.scheme!r} is not one of {', '.join(SCHEMES)}")
    if not parts.hostname or not parts.path.strip("/"):
        raise ValueError(
            f"ledger URL {describe(url)} needs a host and a database "
            "(postgresql://user:password@host:5432/database)"
        )


def _to_number(value: str | None, cursor: Any) -> int | float | None:
    """NUMERIC results (``sum()`` of integers) as int when whole, else float, as DuckDB gives."""
    if value is None:
        return None
    number = Decimal(value)
    return int(number) if number == number.to_integral_value() else float(number)


class _Pool:
    """A few idle connections per URL, each returned only when no transaction is open."""

    def __init__(self) -> None:
        self._idle: dict[str, list[Any]] = {}
        self._lock = threading.Lock()

    def take(self, url: str) -> Any:
        with self._lock:
            idle = self._idle.get(url, [])
            while idle:
                raw = idle.pop()
                if not raw.closed:
                    return raw
        return _open(url)

    def give_back(self, url: str, raw: Any) -> None:
        import psycopg2.extensions as ext

        if raw.closed or raw.get_transaction_status() != ext.TRANSACTION_STATUS_IDLE:
            raw.close()
            return
        with self._lock:
            idle = self._idle.setdefault(url, [])
            if len(idle) < POOL_SIZE:
                idle.append(raw)
                return
        raw.close()


_POOL = _Pool()


def _open(url: str) -> Any:
    import psycopg2
    import psycopg2.extensions as ext
    import psycopg2.extras

    parts = urlsplit(url)
    try:
        raw = psycopg2.connect(
            host=parts.hostname,
            port=parts.port or 5432,
            dbname=unquote(parts.path.lstrip("/")),
            user=unquote(parts.username or "") or None,
            password=unquote(parts.password or "") or None,
            connect_timeout=CONNECT_TIMEOUT_S,
            options="-c timezone=UTC",
            application_name="integration_project ledger",
        )
    except psycopg2.OperationalError as exc:
        # libpq's text names host, port and user, never the password; ours adds the database.
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise LedgerUnreachable(
            f"cannot reach the ledger's PostgreSQL server at {describe(url)}: {reason}"
        ) from None
    raw.autocommit = True
    # JSON columns come back as text, as on DuckDB; sums of integers as int.
    psycopg2.extras.register_default_json(raw, loads=lambda text: text)
    number = ext.new_type((1700,), "LEDGER_NUMERIC", _to_number)
    ext.register_type(number, raw)
    return raw


class _Result:
    """A statement's rows, as DuckDB's connection gives them after ``execute``."""

    def __init__(self, cursor: Any) -> None:
        self._cursor = cursor

    @property
    def description(self) -> Any:
        return self._cursor.description

    def fetchall(self) -> list[tuple[Any, ...]]:
        if self._cursor.description is None:
            return []
        return self._cursor.fetchall()

    def fetchone(self) -> tuple[Any, ...] | None:
        if self._cursor.description is None:
            return None
        return self._cursor.fetchone()

    def to_arrow_table(self) -> pa.Table:
        """The rows as Arrow, each column typed by its PostgreSQL type (as DuckDB's would be),
        so an empty or all-NULL column keeps its type."""
        columns = self._cursor.description
        rows = self.fetchall()
        return pa.table(
            {
                column.name: pa.array([row[i] for row in rows], _ARROW_TYPES.get(column.type_code))
                for i, column in enumerate(columns)
            }
        )

    def df(self) -> Any:
        """The rows as a pandas DataFrame (what :mod:`integration_project.tables` reads)."""
        return self.to_arrow_table().to_pandas()


class _Relation:
    """A query not run yet (DuckDB's relation): read as rows, or straight into Arrow.

    A result of text columns only (the mapping's batches of order payloads, 8,000 at a time)
    comes over by ``COPY (query) TO STDOUT`` and pyarrow's CSV reader: no Python object per
    value, and one parser thread (parallel blocks held several copies of a batch at once).
    Read through the cursor instead, the map step of 30,000 orders peaked at 986 MiB; this
    way at 602 MiB, as on DuckDB (617 MiB)."""

    def __init__(self, con: PgConnection, sql: str, params: Sequence[Any] | None) -> None:
        self._con = con
        self._sql = sql
        self._params = params

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self._con.execute(self._sql, self._params).fetchall()

    def df(self) -> Any:
        return self._con.execute(self._sql, self._params).df()

    def to_arrow_table(self) -> pa.Table:
        import pyarrow.csv as csv

        query = self._con.bound(self._sql, self._params)
        columns = self._con.execute(f"SELECT * FROM ({query}) AS q LIMIT 0").description
        if any(column.type_code not in _TEXT_OIDS for column in columns):
            return self._con.execute(self._sql, self._params).to_arrow_table()
        names = [column.name for column in columns]
        buffer = self._con.copy_out(query)
        if not buffer.getbuffer().nbytes:
            return pa.table({name: pa.array([], pa.string()) for name in names})
        return csv.read_csv(
            buffer,
            read_options=csv.ReadOptions(column_names=names, use_threads=False),
            parse_options=csv.ParseOptions(newlines_in_values=True),
            convert_options=csv.ConvertOptions(
                column_types=dict.fromkeys(names, pa.string()),
                strings_can_be_null=True,  # NULL is an unquoted empty field ...
                quoted_strings_can_be_null=False,  # ... and "" an empty text
            ),
        )


#: varchar, text and json: what COPY's CSV hands over as text unchanged.
_TEXT_OIDS = frozenset({25, 114, 1043})

#: PostgreSQL type oids as Arrow types (others are inferred from the values).
_ARROW_TYPES = {
    16: pa.bool_(),
    20: pa.int64(),
    21: pa.int16(),
    23: pa.int32(),
    25: pa.string(),
    114: pa.string(),  # json, read as text
    700: pa.float32(),
    701: pa.float64(),
    1043: pa.string(),
    1114: pa.timestamp("us"),
    1184: pa.timestamp("us", tz="UTC"),
}

#: Arrow types of registered tables, as PostgreSQL column types.
_PG_TYPES = {
    pa.string(): "TEXT",
    pa.large_string(): "TEXT",
    pa.int64(): "BIGINT",
    pa.int32(): "INTEGER",
    pa.float64(): "DOUBLE PRECISION",
    pa.bool_(): "BOOLEAN",
    pa.null(): "TEXT",  # a column of None only (e.g. no order had a reason)
}


def _pg_type(arrow_type: pa.DataType) -> str:
    if pa.types.is_timestamp(arrow_type):
        return "TIMESTAMPTZ" if arrow_type.tz else "TIMESTAMP"
    if arrow_type in _PG_TYPES:
        return _PG_TYPES[arrow_type]
    raise TypeError(f"no PostgreSQL column type for Arrow type {arrow_type}")


def placeholders(sql: str) -> str:
    """DuckDB's ``?`` placeholders as psycopg2's ``%s`` (a literal ``%`` doubled)."""
    return sql.replace("%", "%%").replace("?", "%s")


class PgConnection:
    """One psycopg2 connection behind the subset of DuckDB's connection API the ledger uses."""

    dialect = "postgres"

    def __init__(self, raw: Any) -> None:
        self._raw = raw

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> _Result:
        cursor = self._raw.cursor()
        with _as_ledger_errors():
            if params is None:
                cursor.execute(sql)
            else:
                cursor.execute(placeholders(sql), [_param(p) for p in params])
        return _Result(cursor)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        import psycopg2.extras

        with self._raw.cursor() as cursor, _as_ledger_errors():
            psycopg2.extras.execute_batch(
                cursor, placeholders(sql), [[_param(p) for p in row] for row in rows]
            )

    def sql(self, sql: str, params: Sequence[Any] | None = None) -> _Relation:
        """A query to read later, as DuckDB's ``con.sql`` gives it."""
        return _Relation(self, sql, params)

    def lock(self, key: str) -> None:
        """Hold a lock on ``key`` until the transaction ends: what DuckDB's file lock gave
        for free (one writer at a time), here per route, lease or token chain."""
        self.execute("SELECT pg_advisory_xact_lock(hashtextextended(?, 0))", [key]).fetchall()

    def register(self, name: str, table: pa.Table) -> None:
        """``table`` as a temporary table ``name`` of this connection, filled by ``COPY``."""
        columns = ", ".join(f'"{f.name}" {_pg_type(f.type)}' for f in table.schema)
        with self._raw.cursor() as cursor:
            cursor.execute(f'DROP TABLE IF EXISTS pg_temp."{name}"')
            cursor.execute(f'CREATE TEMPORARY TABLE "{name}" ({columns})')
        self.copy_in(name, table)

    def copy_in(self, name: str, rows: pa.Table | pa.RecordBatch) -> None:
        """Append ``rows`` to table ``name`` by one ``COPY FROM STDIN``, columns matched by
        name (the table may have more, left to their defaults).

        The rows travel as CSV, which keeps what the ledger's values need: NULL is an unquoted
        empty field and an empty string a quoted one (pyarrow quotes every string), quotes,
        commas and newlines inside quotes, text as UTF-8 whatever the session's encoding,
        timestamps with their UTC offset, floats in their shortest exact form."""
        import pyarrow.csv as csv

        columns = ", ".join(f'"{f.name}"' for f in rows.schema)
        buffer = io.BytesIO()
        csv.write_csv(rows, buffer, csv.WriteOptions(include_header=False))
        buffer.seek(0)
        with self._raw.cursor() as cursor:
            cursor.copy_expert(
                f"COPY \"{name}\" ({columns}) FROM STDIN WITH (FORMAT csv, ENCODING 'UTF8')",
                buffer,
            )

    def bound(self, sql: str, params: Sequence[Any] | None) -> str:
        """``sql`` with its parameters in it, as psycopg2 would send it."""
        if params is None:
            return sql
        with self._raw.cursor() as cursor:
            text = cursor.mogrify(placeholders(sql), [_param(p) for p in params])
        return text.decode() if isinstance(text, bytes) else text

    def copy_out(self, query: str) -> io.BytesIO:
        """The rows of ``query`` as CSV (NULL an unquoted empty field, "" an empty text)."""
        buffer = io.BytesIO()
        with self._raw.cursor() as cursor, _as_ledger_errors():
            cursor.copy_expert(
                f"COPY ({query}) TO STDOUT WITH (FORMAT csv, ENCODING 'UTF8')", buffer
            )
        buffer.seek(0)
        return buffer

    def unregister(self, name: str) -> None:
        with self._raw.cursor() as cursor:
            cursor.execute(f'DROP TABLE IF EXISTS pg_temp."{name}"')


@contextmanager
def _as_ledger_errors() -> Iterator[None]:
    """psycopg2's errors that the stores handle, as the backend-neutral ones they catch."""
    import psycopg2
    import psycopg2.errors

    try:
        yield
    except psycopg2.IntegrityError as exc:
        raise ConstraintViolation(str(exc).strip()) from exc
    except (psycopg2.errors.SerializationFailure, psycopg2.errors.DeadlockDetected) as exc:
        raise TransactionConflict(str(exc).strip()) from exc


def _param(value: Any) -> Any:
    """Parameters as psycopg2 adapts them: a tuple (DuckDB's list) as a list, i.e. an array."""
    return list(value) if isinstance(value, tuple) else value


@contextmanager
def connect(url: str) -> Iterator[PgConnection]:
    """A pooled connection to the ledger at ``url``; a transaction left open is rolled back
    and the connection closed, never handed on."""
    raw = _POOL.take(url)
    try:
        yield PgConnection(raw)
    except BaseException:
        raw.close()
        raise
    _POOL.give_back(url, raw)
