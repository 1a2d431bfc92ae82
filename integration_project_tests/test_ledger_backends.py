"""The ledger's backends on bad input: a PostgreSQL server that cannot be reached or refuses the
password is named (host and database) and the password never shown, in an exception or in a
Dagster run's events; a ledger URL of another scheme stops the code location from loading; a
migration that fails half-way leaves nothing behind on either backend; and processes that
migrate a new PostgreSQL database at the same moment apply each migration once."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pytest

from integration_project import settings
from integration_project.ledger import Database, postgres
from integration_project.ledger.migrations import MIGRATIONS, Migration
from integration_project.sandbox import Sandbox
from integration_project_testkit.live_stack import free_port
from integration_project_testkit.postgres import PostgresServer, fresh_database
from integration_project_testkit.resources import make_resources
from integration_project_testkit.routes import route_assets
from integration_project_testkit.windows import failure_message, fetch_and_map

pytestmark = pytest.mark.integration

PASSWORD = "not-this-Pa55word"
NEXT = MIGRATIONS[-1].version + 1


def _database(location: str, migrations: tuple[Migration, ...] = MIGRATIONS) -> Database:
    """A :class:`Database` over ``location``: a PostgreSQL URL or a DuckDB file's path."""
    if location.startswith("postgresql://"):
        return Database(lambda: postgres.connect(location), "postgres", migrations=migrations)
    Path(location).parent.mkdir(parents=True, exist_ok=True)
    connect: Callable[[], AbstractContextManager[Any]] = lambda: duckdb.connect(location)  # noqa: E731
    return Database(connect, migrations=migrations)


def _nobody_listening() -> str:
    return f"postgresql://ledger:{PASSWORD}@127.0.0.1:{free_port()}/ledgerdb"


def _wrong_password(server: PostgresServer) -> str:
    return f"postgresql://{server.user}:{PASSWORD}@{server.host}:{server.port}/{server.database}"


@pytest.mark.parametrize("where", ["nobody listening", "wrong password"])
def test_an_unreachable_server_is_named_without_the_password(
    where: str, postgres_server: PostgresServer
) -> None:
    url = _nobody_listening() if where == "nobody listening" else _wrong_password(postgres_server)
    with pytest.raises(postgres.LedgerUnreachable) as caught:
        with _database(url).connect():
            pass
    message = str(caught.value)
    assert postgres.describe(url) in message  # host:port/database
    assert PASSWORD not in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    if where == "wrong password":
        assert "password authentication failed" in message


def test_a_run_that_cannot_reach_the_ledger_fails_without_showing_the_password(
    sandbox: Sandbox, dagster_instance: dg.DagsterInstance
) -> None:
    url = _nobody_listening()
    resources = make_resources(sandbox, url)
    result = fetch_and_map(resources, raise_on_error=False, instance=dagster_instance)
    assert not result.success
    message = failure_message(result)
    assert postgres.describe(url) in message
    assert PASSWORD not in message
    # Nowhere in what the instance keeps of the run: events, logs, the error's stack.
    for entry in dagster_instance.all_logs(result.run_id):
        assert PASSWORD not in dg.serialize_value(entry)


def test_a_ledger_url_of_another_scheme_stops_the_code_location(tmp_path: Path) -> None:
    """Loaded as Python loads it (``defs()``, the traceback on stderr) and as Dagster's CLI
    does (which prints the load error on stdout): both fail, naming the scheme only."""
    env = {
        **os.environ,
        settings.LEDGER_URL_ENV: f"mysql://ledger:{PASSWORD}@db.example:3306/ledger",
        "XDG_DATA_HOME": str(tmp_path / "xdg"),
    }
    loader = "from integration_project.definitions import defs; defs()"
    cli = ["-m", "dagster", "definitions", "validate", "-m", "integration_project.definitions"]
    for args, stream in ((["-c", loader], "stderr"), (cli, "stdout")):
        done = subprocess.run(
            [sys.executable, *args], env=env, capture_output=True, text=True, timeout=180
        )
        assert done.returncode != 0, args
        said = getattr(done, stream)
        assert "ledger URL scheme 'mysql' is not one of postgresql, postgres" in said, said[-3000:]
        assert PASSWORD not in done.stdout + done.stderr


def test_the_ui_names_the_ledger_the_route_writes_to(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each asset that writes the ledger shows its backend as a kind, and delivery's
    description names where ``delivered_orders`` is."""
    for url, kind, name in (
        ("", "duckdb", "DuckDB"),
        (f"postgresql://u:{PASSWORD}@h/d", "postgres", "PostgreSQL"),
    ):
        monkeypatch.setenv(settings.LEDGER_URL_ENV, url)
        assets = route_assets(page_size=500)  # built anew, not the shared default
        for asset in (assets.source_orders, assets.erp_orders, assets.erp_delivered_orders):
            spec = next(iter(asset.specs))
            assert kind in spec.kinds and {"duckdb", "postgres"} - {kind} - spec.kinds, spec.kinds
        description = next(iter(assets.erp_delivered_orders.specs)).description or ""
        assert f"{name} table delivered_orders" in description, description


def _tables(db: Database) -> set[str]:
    with db.connect() as con:
        rows = con.execute(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'"
        ).fetchall()
    return {name for (name,) in rows}


def _versions(db: Database) -> list[int]:
    with db.connect() as con:
        rows = con.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()
    return [version for (version,) in rows]


def test_a_migration_that_fails_half_way_leaves_nothing_behind(ledger_location: str) -> None:
    """Its first statement creates a table, its second fails: the table is gone with the
    version, the schema before it stays, and the fixed migration applies once next time."""
    broken = Migration(
        NEXT,
        "a table, then a mistake",
        "CREATE TABLE half_done (n INTEGER);\nINSERT INTO no_such_table VALUES (1);",
    )
    with pytest.raises(Exception, match="no_such_table"):
        with _database(ledger_location, (*MIGRATIONS, broken)).connect():
            pass

    shipped = _database(ledger_location)  # this version's own migrations, all applied
    assert "half_done" not in _tables(shipped)
    assert "waiting_orders" in _tables(shipped)
    assert _versions(shipped) == [m.version for m in MIGRATIONS]

    fixed = Migration(
        NEXT,
        "a table, then a row",
        "CREATE TABLE half_done (n INTEGER);\nINSERT INTO half_done VALUES (1);",
    )
    for _ in range(2):  # a second process (a new Database) finds it applied
        db = _database(ledger_location, (*MIGRATIONS, fixed))
        with db.connect() as con:
            assert con.execute("SELECT n FROM half_done").fetchall() == [(1,)]
    assert _versions(db) == [*(m.version for m in MIGRATIONS), NEXT]


#: One process of the race: wait for the start time, then open the ledger (which migrates it).
_MIGRATOR = textwrap.dedent(
    """
    import sys, time
    from integration_project.ledger import Database, postgres
    from integration_project.ledger.migrations import MIGRATIONS, Migration

    url, start = sys.argv[1], float(sys.argv[2])
    counted = Migration(
        len(MIGRATIONS) + 1,
        "counts its own runs, slowly",
        "CREATE TABLE IF NOT EXISTS migration_runs (pid INTEGER);\\n"
        "SELECT pg_sleep(0.5);\\n"
        "INSERT INTO migration_runs VALUES (pg_backend_pid());",
    )
    db = Database(lambda: postgres.connect(url), "postgres", migrations=(*MIGRATIONS, counted))
    time.sleep(max(0.0, start - time.time()))
    with db.connect():
        pass
    """
)


def test_processes_migrating_a_new_postgres_ledger_at_once_apply_each_migration_once(
    postgres_server: PostgresServer,
) -> None:
    """PostgreSQL only: a DuckDB file admits one writing process at a time."""
    with fresh_database(postgres_server) as url:
        _race_to_migrate(url)


def _race_to_migrate(url: str) -> None:
    start = time.time() + 4  # every racer has imported by then
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", _MIGRATOR, url, str(start)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    errors = [racer.communicate(timeout=120)[1] for racer in racers]
    assert [racer.returncode for racer in racers] == [0, 0, 0], [e[-2000:] for e in errors]

    db = _database(url)
    with db.connect() as con:
        assert con.execute("SELECT count(*) FROM migration_runs").fetchall() == [(1,)]
    assert _versions(db) == [*(m.version for m in MIGRATIONS), NEXT]
