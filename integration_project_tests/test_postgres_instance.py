"""The production instance, ``deploy/dagster.postgres.yaml``: Dagster's runs, event log and
schedule state in a real PostgreSQL server (``integration_project_testkit.postgres``), with
the same run queue, run monitoring and retries as the SQLite one. One window of the default
route is fetched and mapped through the webserver and the daemon's run queue on it, and the
run is read back from PostgreSQL itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import psycopg2
import pytest
import yaml

from integration_project import settings
from integration_project_testkit.live_stack import (
    REPO,
    LiveStack,
    StackUnavailable,
    live_stack,
)
from integration_project_testkit.postgres import (
    PostgresServer,
    PostgresUnavailable,
    server_for_tests,
)
from integration_project_tests.skips import in_ci

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

SQLITE_YAML = REPO / "deploy" / "dagster.yaml"
POSTGRES_YAML = REPO / "deploy" / "dagster.postgres.yaml"
ROUTE = "eu_orders_shopware_to_exact"


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    try:
        with server_for_tests() as server:
            yield server
    except PostgresUnavailable as exc:
        if in_ci():
            pytest.fail(f"no PostgreSQL server in CI: {exc}")
        pytest.skip(f"no PostgreSQL server on this machine: {exc}")


def test_production_settings_are_the_sqlite_ones_plus_postgres_storage() -> None:
    sqlite = yaml.safe_load(SQLITE_YAML.read_text())
    production = yaml.safe_load(POSTGRES_YAML.read_text())
    storage = production.pop("storage")
    assert production == sqlite  # queue, run monitoring, retries, telemetry, logs: the same
    database = storage["postgres"]["postgres_db"]
    assert database.pop("scheme") == "postgresql+psycopg2"  # the driver dagster-postgres brings
    # Every connection setting comes from the environment: no password in the file.
    assert all(set(value) == {"env"} for value in database.values()), database
    assert database["password"] == {"env": "DAGSTER_PG_PASSWORD"}


def test_the_production_instance_loads_and_keeps_runs_in_postgres(
    postgres: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(POSTGRES_YAML.read_text())
    for name, value in postgres.dagster_env().items():
        monkeypatch.setenv(name, value)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"
        assert instance.get_concurrency_config().run_queue_config.max_concurrent_runs == 4
        assert instance.run_monitoring_enabled and instance.run_retries_enabled


@pytest.fixture(scope="module")
def stack(postgres: PostgresServer, tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("postgres-stack")
    try:
        with live_stack(tmp, instance_yaml=POSTGRES_YAML, env=postgres.dagster_env()) as running:
            yield running
    except StackUnavailable as exc:
        if in_ci():
            pytest.fail(f"dg dev cannot start in CI: {exc}")
        pytest.skip(f"dg dev cannot start on this machine: {exc}")


def test_one_window_is_fetched_and_mapped_through_the_queue_on_postgres(
    stack: LiveStack, postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    window = settings.window_start(datetime.now(UTC)) - settings.WINDOW
    partition = window.strftime(settings.PARTITION_FORMAT)
    run = stack.run_window(f"{ROUTE}__source_orders_job", partition)
    run_id = run["runId"]
    assert run["status"] == "SUCCESS", f"{run}\n{stack.output('dagster')}"
    assert {
        ("/".join(m["assetKey"]["path"]), m["partition"]) for m in run["assetMaterializations"]
    } == {
        (f"{ROUTE}/source_orders", partition),
        (f"{ROUTE}/erp_orders", partition),
    }
    # What the UI showed came from PostgreSQL: the run and its events are rows there.
    status, events = _stored_run(postgres, run_id)
    assert status == "SUCCESS"
    assert events["ASSET_MATERIALIZATION"] == 2
    # Through the daemon's queue, as schedules launch (read back by Dagster from PostgreSQL).
    for name, value in postgres.dagster_env().items():
        monkeypatch.setenv(name, value)
    with dg.DagsterInstance.from_config(str(stack.home)) as instance:
        queued = instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_ENQUEUED)
        assert len(queued) == 1


def _stored_run(server: PostgresServer, run_id: str) -> tuple[str, dict[str, int]]:
    """The run's status and its events by type, as Dagster's tables in PostgreSQL hold them."""
    with psycopg2.connect(server.url) as con, con.cursor() as cur:
        cur.execute("SELECT status FROM runs WHERE run_id = %s", [run_id])
        [(status,)] = cur.fetchall()
        cur.execute(
            "SELECT dagster_event_type, count(*) FROM event_logs WHERE run_id = %s "
            "GROUP BY dagster_event_type",
            [run_id],
        )
        events = {str(kind): int(n) for kind, n in cur.fetchall()}
    return str(status), events
