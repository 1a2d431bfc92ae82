"""Copying a DuckDB ledger into PostgreSQL (``python -m integration_project.ledger.copy``): a
ledger the route really wrote, plus values that trip up CSV and JSON, arrives row for row; the
route carries on against the copy without sending anything twice; and a target that already
holds rows, a source at an older migration, or a value the target cannot hold stops the copy
with nothing written and the source file untouched."""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest

from integration_project.ledger import Database, copy, postgres
from integration_project.ledger.migrations import MIGRATIONS
from integration_project.sandbox import Sandbox
from integration_project_testkit.postgres import PostgresServer, fresh_database
from integration_project_testkit.resources import make_resources
from integration_project_testkit.windows import (
    WINDOW_END,
    WINDOW_KEY,
    WINDOW_START,
    deliver,
    erp_refs,
    fetch_and_map,
)

pytestmark = pytest.mark.integration

#: A window after WINDOW_KEY: mapped and never delivered, so the copy carries waiting orders.
LATER_KEY = "2026-11-20-10:05"
LATER_START = WINDOW_END

#: Text that a hand-rolled CSV or JSON step would mangle.
AWKWARD = "quote \" and 'single', comma, semicolon; tab\there\nnewline\r\nCRLF \\. üñíçødé 😀 \\"
#: A JSON document with strings that hold JSON's own syntax.
AWKWARD_JSON = (
    '{"note": "he said \\"hi\\", then {left}", "nested": {"list": ["a,b", "", null, "\\n"]}, '
    '"unicode": "\\u00fc \u00fc 😀", "empty": "", "number": 1.5e-7}'
)
T = datetime(2026, 11, 20, 10, 0, 0, 123456, tzinfo=UTC)


@pytest.fixture
def target(postgres_server: Any) -> Any:
    with fresh_database(postgres_server) as url:
        yield url


def _seed(sb: Sandbox) -> None:
    """Two windows of realistic orders: EU ones, one outside the EU, malformed ones."""
    for start in (WINDOW_START, LATER_START):
        sb.shop.add_orders(6, start=start, end=start + timedelta(minutes=5))
        sb.shop.add_order(start + timedelta(seconds=30), shipping_country="US")
        for kind in ("missing_email", "unknown_sku"):
            sb.shop.add_order(start + timedelta(minutes=1), malformed=kind)


def _add_awkward_rows(path: str) -> None:
    """Rows no run writes, with the values a copy most easily gets wrong: empty strings beside
    NULLs, quotes, newlines, the CSV end-of-data marker, unicode, nested JSON, a duplicate row
    in a table without a key, and floats and timestamps to the last digit."""
    with duckdb.connect(path) as con:
        con.execute(
            "INSERT INTO erp_orders VALUES ('odd-route', 'odd-1', '', ?, 'quarantined', NULL, ?, "
            "?, '', ?, NULL, '')",
            [T, AWKWARD, AWKWARD_JSON, T],
        )
        con.execute(
            "INSERT INTO check_samples VALUES ('odd-route', ?, ?, false, ?)",
            [AWKWARD, T, AWKWARD_JSON],
        )
        con.execute("INSERT INTO check_samples VALUES ('odd-route', '', ?, true, '[]')", [T])
        row = ["tok", "GET x", None, 1764662400.123456]
        con.executemany("INSERT INTO erp_client_errors VALUES (?, ?, ?, ?)", [row, row])
        con.execute(
            "INSERT INTO erp_vat_codes VALUES ('k', '0', '', 0.1, NULL, NULL, 'I', ?), "
            "('k', '1', ?, 5e-324, 'S', true, '', ?)",
            [T, AWKWARD, T],
        )
        con.execute("INSERT INTO erp_pauses VALUES ('k', NULL, ''), ('k2', -0.0, NULL)")


def _file_digest(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _normal(value: Any) -> Any:
    """A value as both drivers give it, comparable: instants in UTC."""
    if isinstance(value, datetime):
        assert value.tzinfo is not None, "a timestamp lost its time zone"
        return ("ts", value.astimezone(UTC).isoformat())
    return (type(value).__name__, value)


def _all_rows(source: str, url: str) -> dict[str, tuple[Counter[Any], Counter[Any]]]:
    """Every ledger table's rows on both sides (columns in the source's order), as multisets."""
    out: dict[str, tuple[Counter[Any], Counter[Any]]] = {}
    with duckdb.connect(source, read_only=True) as src, postgres.connect(url) as dst:
        tables = src.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' "
            "AND table_type = 'BASE TABLE' AND table_name <> 'schema_migrations' ORDER BY 1"
        ).fetchall()
        for (table,) in tables:
            names = [d[0] for d in src.execute(f'SELECT * FROM "{table}" LIMIT 0').description]
            columns = ", ".join(f'"{name}"' for name in names)
            select = f'SELECT {columns} FROM "{table}"'
            source_rows, target_rows = (
                Counter(tuple(map(_normal, row)) for row in con.execute(select).fetchall())
                for con in (src, dst)
            )
            out[table] = (source_rows, target_rows)
    return out


def _pg(url: str, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    with postgres.connect(url) as con:
        return con.execute(sql, params).fetchall()


def _migrated_target(url: str) -> None:
    with Database(lambda: postgres.connect(url), "postgres").connect():
        pass


def _small_ledger(tmp_path: Path) -> str:
    """A DuckDB ledger at the latest migration holding the awkward rows only."""
    path = str(tmp_path / "small.duckdb")
    with Database(lambda: duckdb.connect(path)).connect():
        pass
    _add_awkward_rows(path)
    return path


def test_a_route_ledger_arrives_row_for_row_and_the_route_carries_on(
    sandbox: Sandbox, tmp_path: Path, target: str, capsys: Any
) -> None:
    # A DuckDB file of its own, whatever backend the shared fixtures are pointed at.
    duckdb_path = str(tmp_path / "ledger" / "integration.duckdb")
    resources = make_resources(sandbox, duckdb_path)
    _seed(sandbox)
    assert fetch_and_map(resources, WINDOW_KEY).success
    assert deliver(resources).success
    assert fetch_and_map(resources, LATER_KEY).success  # mapped, left waiting
    _add_awkward_rows(duckdb_path)
    sent_before = erp_refs(sandbox)
    digest = _file_digest(duckdb_path)
    capsys.readouterr()

    assert copy.main(["--from", duckdb_path, "--to", target]) == 0
    out = capsys.readouterr()
    assert postgres.describe(target) in out.out
    assert PostgresServer.from_url(target).password not in out.out + out.err
    assert _file_digest(duckdb_path) == digest, "the source file changed"

    rows = _all_rows(duckdb_path, target)
    assert set(rows) >= set(_ROUTE_TABLES)
    for table, (source_rows, target_rows) in rows.items():
        assert target_rows == source_rows, f"{table} differs"
        assert re.search(rf"^{table}\s+[\d,]+\s+[\d,]+\s+equal$", out.out, re.MULTILINE), table
    empty = [table for table in _ROUTE_TABLES if not rows[table][0]]
    assert not empty, f"the route left no rows in {empty}: not a realistic ledger"

    # On PostgreSQL's own terms: JSON is json, '' is not NULL, timestamps are the same instants.
    [(kind,)] = _pg(
        target,
        "SELECT data_type FROM information_schema.columns "
        "WHERE table_name = 'erp_orders' AND column_name = 'payload'",
    )
    assert kind == "json"
    [odd] = _pg(
        target,
        "SELECT payload->>'note', payload->'nested'->'list'->>1, payload->>'unicode', "
        "order_number, country, reason, mapped_at FROM erp_orders WHERE route_id = 'odd-route'",
    )
    assert odd == ('he said "hi", then {left}', "", "\u00fc \u00fc 😀", "", None, AWKWARD, T)

    # The route carries on against the copy: the waiting orders go out once, nothing else.
    waiting = {ref for (ref,) in _pg(target, "SELECT your_ref FROM waiting_orders")}
    assert waiting
    on_postgres = make_resources(sandbox, target)
    assert deliver(on_postgres).success
    sent = erp_refs(sandbox)
    assert set(sent) - set(sent_before) == waiting
    assert all(n == 1 for n in sent.values()), "an order was sent twice"
    assert deliver(on_postgres).success
    assert erp_refs(sandbox) == sent, "a second delivery against the copy sent orders"


#: Tables a route's fetch, mapping and delivery write to (with the waiting window).
_ROUTE_TABLES = (
    "staged_orders",
    "erp_orders",
    "delivered_orders",
    "waiting_orders",
    "erp_tokens",
    "route_endpoints",
    "erp_accounts",
    "erp_items",
)


def test_a_target_with_rows_is_refused_naming_the_table(
    tmp_path: Path, target: str, capsys: Any
) -> None:
    source = _small_ledger(tmp_path)
    _migrated_target(target)
    _pg(target, "INSERT INTO leases VALUES ('someone', 'run-1', NULL)")
    capsys.readouterr()

    assert copy.main(["--from", source, "--to", target]) == 2
    out = capsys.readouterr()
    assert "already holds rows in leases" in out.err
    assert PostgresServer.from_url(target).password not in out.out + out.err
    assert _pg(target, "SELECT count(*) FROM check_samples") == [(0,)]
    assert _pg(target, "SELECT name FROM leases") == [("someone",)]

    assert copy.main(["--from", source, "--to", target, "--replace"]) == 0
    assert "--replace: emptied the target's leases" in capsys.readouterr().out
    assert _pg(target, "SELECT count(*) FROM leases") == [(0,)]
    assert _pg(target, "SELECT count(*) FROM check_samples") == [(2,)]


def test_a_source_behind_the_latest_migration_is_not_touched_unless_asked(
    tmp_path: Path, target: str, capsys: Any
) -> None:
    source = _small_ledger(tmp_path)
    # A file from before migration 3 (waiting_orders) and every later one: its migrations
    # create what they need if it is missing, so applying them again brings it up to date.
    behind = [m.version for m in MIGRATIONS if m.version >= 3]
    latest = ", ".join(map(str, behind))
    with duckdb.connect(source) as con:
        con.execute("DROP TABLE waiting_orders")
        con.execute("DELETE FROM schema_migrations WHERE version >= 3")
    digest = _file_digest(source)

    assert copy.main(["--from", source, "--to", target]) == 2
    assert f"lacks migrations {latest}: run the route once" in capsys.readouterr().err
    assert _file_digest(source) == digest
    # Refused before the target was touched: not even migrated.
    assert _pg(target, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == [(0,)]

    assert copy.main(["--from", source, "--to", target, "--migrate-source"]) == 0
    out = capsys.readouterr().out
    assert f"--migrate-source: applying migrations {latest} to {source} in place" in out
    assert "the source file was migrated, its rows untouched" in out
    assert _pg(target, "SELECT count(*) FROM check_samples") == [(2,)]


def test_a_value_the_target_cannot_hold_rolls_the_whole_copy_back(
    tmp_path: Path, target: str, capsys: Any
) -> None:
    source = _small_ledger(tmp_path)
    with duckdb.connect(source) as con:  # PostgreSQL text cannot hold a NUL character
        con.execute("INSERT INTO erp_pauses VALUES ('nul', 1, ?)", ["a\x00b"])

    assert copy.main(["--from", source, "--to", target]) == 1
    assert "copying erp_pauses failed, rolled back" in capsys.readouterr().err
    # Tables copied before it are rolled back too.
    assert _pg(target, "SELECT count(*) FROM check_samples") == [(0,)]
    assert _pg(target, "SELECT count(*) FROM erp_client_errors") == [(0,)]


@pytest.mark.parametrize(
    ("table", "change"),
    [
        ("erp_pauses", "NEW.reason := NULLIF(NEW.reason, '')"),
        ("check_samples", "NEW.sampled_at := NEW.sampled_at + interval '1 microsecond'"),
        ("erp_client_errors", "NEW.seen_at := NEW.seen_at + 3e-7"),  # about one ulp
        ("erp_orders", "NEW.payload := (NEW.payload::text || ' ')::json"),
        ("erp_vat_codes", "NEW.description := NEW.description || ''"),
    ],
    ids=["empty-to-null", "one-microsecond", "one-ulp", "json-whitespace", "unchanged"],
)
def test_the_check_catches_a_row_the_target_changed(
    tmp_path: Path, target: str, capsys: Any, table: str, change: str
) -> None:
    """A trigger on the target alters each row as it arrives: the smallest changes (an empty
    string made NULL, a microsecond, the last bit of a float, a space in JSON) fail the check,
    naming the table, and nothing is kept; a trigger that changes nothing passes."""
    source = _small_ledger(tmp_path)
    _migrated_target(target)
    _pg(
        target,
        f"CREATE FUNCTION mangle() RETURNS trigger LANGUAGE plpgsql AS "
        f"$$ BEGIN {change}; RETURN NEW; END $$",
    )
    _pg(
        target,
        f"CREATE TRIGGER mangle BEFORE INSERT ON {table} FOR EACH ROW EXECUTE FUNCTION mangle()",
    )

    status = copy.main(["--from", source, "--to", target])
    out = capsys.readouterr()
    if table == "erp_vat_codes":
        assert status == 0
        return
    assert status == 1
    assert re.search(rf"^{table}\s+[\d,]+\s+[\d,]+\s+DIFFERS$", out.out, re.MULTILINE)
    assert f"the copy differs from the source in {table}: rolled back" in out.err
    assert _pg(target, f"SELECT count(*) FROM {table}") == [(0,)]
