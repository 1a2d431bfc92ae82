"""The delivery sensor (evaluated with ``build_sensor_context``) and the run-failure alert
sensor (a real failed run in the session instance, the alert received by the sandbox ERP)."""

import logging
from collections.abc import Iterator
from typing import Any

import dagster as dg
import pytest
import requests
from dagster_duckdb import DuckDBResource

from integration_project.assets import DELIVERY_TAG, build_route_assets
from integration_project.resources import route_resources
from integration_project.schedules import build_route_schedules
from integration_project.sensors import (
    ALERT_WEBHOOK_ENV,
    alert_message,
    build_route_sensors,
    build_run_failure_alert_sensor,
)
from integration_project_testkit.log_lines import Lines
from integration_project_testkit.routes import shipped_route

pytestmark = pytest.mark.integration

#: A route of its own, so that materialisations other tests record never reach its sensor.
ROUTE = shipped_route(name="Sensor test route")
ASSETS = build_route_assets(ROUTE)
DELIVERY_JOB = next(
    j for j in build_route_schedules(ASSETS).jobs if j.name.endswith("__erp_delivery_job")
)
[SENSOR] = build_route_sensors(ASSETS, DELIVERY_JOB)


@pytest.fixture
def duckdb(duckdb_path: str) -> DuckDBResource:
    return DuckDBResource(database=duckdb_path)


@pytest.fixture
def clean_runs(dagster_instance: dg.DagsterInstance) -> Iterator[list[str]]:
    """Run ids to delete from the session instance after the test."""
    created: list[str] = []
    yield created
    for run_id in created:
        dagster_instance.delete_run(run_id)


def mapped_event(instance: dg.DagsterInstance, mapped: int) -> int:
    """Record an erp_orders materialisation (as a fetch-and-map run does); its storage id."""
    instance.report_runless_asset_event(
        dg.AssetMaterialization(asset_key=ASSETS.erp_orders.key, metadata={"mapped": mapped})
    )
    [record] = instance.fetch_materializations(ASSETS.erp_orders.key, limit=1).records
    return record.storage_id


def tick(instance: dg.DagsterInstance, duckdb: DuckDBResource | None, cursor: str | None):
    resources = {"duckdb": duckdb} if duckdb is not None else None
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources)
    return SENSOR.evaluate_tick(context)


def test_delivery_sensor_requests_a_tagged_run_once_per_materialisation(
    dagster_instance, duckdb, clean_runs
):
    assert SENSOR.name == f"{ROUTE.id}__erp_delivery_sensor"
    assert SENSOR.job_name == DELIVERY_JOB.name
    assert SENSOR.minimum_interval_seconds == 30
    assert SENSOR.default_status == dg.DefaultSensorStatus.RUNNING

    # First run, nothing materialised yet.
    first = tick(dagster_instance, duckdb, None)
    assert not first.run_requests and "no new" in (first.skip_message or "")
    assert first.cursor is None

    # New mapped orders: a delivery run, tagged for the run queue's per-route limit.
    storage_id = mapped_event(dagster_instance, mapped=3)
    data = tick(dagster_instance, duckdb, None)
    [request] = data.run_requests
    assert request.tags[DELIVERY_TAG] == ROUTE.id
    assert request.run_key == f"erp_orders:{storage_id}"
    assert data.cursor == str(storage_id)

    # Nothing new since: the same materialisation never triggers twice.
    again = tick(dagster_instance, duckdb, data.cursor)
    assert not again.run_requests and again.cursor == data.cursor

    # A materialisation that mapped nothing, and an empty ledger: skip, but move on.
    empty_id = mapped_event(dagster_instance, mapped=0)
    empty = tick(dagster_instance, duckdb, data.cursor)
    assert not empty.run_requests and "nothing to deliver" in (empty.skip_message or "")
    assert empty.cursor == str(empty_id)

    # A delivery run of the route still queued or running: skip and keep the cursor, so the
    # next evaluation after that run requests delivery.
    job = dg.Definitions(
        assets=ASSETS.all,
        jobs=[DELIVERY_JOB],
        resources={**route_resources(ROUTE), "duckdb": duckdb},
    ).resolve_job_def(DELIVERY_JOB.name)
    run = dagster_instance.create_run_for_job(job, status=dg.DagsterRunStatus.STARTED)
    clean_runs.append(run.run_id)
    newest = mapped_event(dagster_instance, mapped=2)
    busy = tick(dagster_instance, duckdb, empty.cursor)
    assert not busy.run_requests and run.run_id in (busy.skip_message or "")
    assert busy.cursor in (None, empty.cursor)

    dagster_instance.delete_run(run.run_id)
    clean_runs.remove(run.run_id)
    later = tick(dagster_instance, duckdb, empty.cursor)
    [request] = later.run_requests
    assert later.cursor == str(newest)


def delivered_event(instance: dg.DagsterInstance, **metadata: int) -> None:
    """Record an erp_delivered_orders materialisation (as a delivery run does)."""
    instance.report_runless_asset_event(
        dg.AssetMaterialization(asset_key=ASSETS.erp_delivered_orders.key, metadata=metadata)
    )


def test_delivery_sensor_falls_back_on_what_the_last_delivery_left(dagster_instance):
    """A materialisation that mapped nothing still starts a delivery when the last delivery
    left orders behind. The sensor reads that from the event log, never from the ledger: it
    has no resource to open the DuckDB file with, which a run may be holding."""
    assert not SENSOR.required_resource_keys
    storage_id = mapped_event(dagster_instance, mapped=0)
    cursor = str(storage_id - 1)
    assert not tick(dagster_instance, None, cursor).run_requests

    # The last delivery stopped early: an order still pending, as its metadata says.
    delivered_event(dagster_instance, sent=3, pending_left=1, failed=0, unknown_outcome=0)
    [request] = tick(dagster_instance, None, cursor).run_requests
    assert request.tags[DELIVERY_TAG] == ROUTE.id

    # The next delivery left nothing behind: the same materialisation is skipped again.
    delivered_event(dagster_instance, sent=1, pending_left=0, failed=0, unknown_outcome=0)
    skipped = tick(dagster_instance, None, cursor)
    assert not skipped.run_requests and "nothing to deliver" in (skipped.skip_message or "")


def test_route_sensors_stay_stopped_when_the_route_says_so():
    stopped = shipped_route(name="Stopped route", schedule={"running": False})
    assets = build_route_assets(stopped)
    job = build_route_schedules(assets).jobs[1]
    [sensor] = build_route_sensors(assets, job)
    assert sensor.default_status == dg.DefaultSensorStatus.STOPPED


# --- run-failure alerts -----------------------------------------------------------------------

SECRET = "s3cr3t-value-that-must-not-leak"
#: The code location's alert sensor, as definitions.py builds it (route variables: see
#: test_alert_secrets.py); ERP_CLIENT_SECRET is redacted by its secret-looking name.
ALERT_SENSOR = build_run_failure_alert_sensor([])


@dg.asset(key=["eu_orders_shopware_to_exact", "alert_probe"])
def failing_asset() -> None:
    raise RuntimeError(f"ERP refused the token {SECRET} " + "x" * 1000)


@pytest.fixture
def failure_context(dagster_instance, monkeypatch) -> Iterator[Any]:
    monkeypatch.setenv("ERP_CLIENT_SECRET", SECRET)
    job = dg.define_asset_job("eu_orders_shopware_to_exact__alert_probe_job", [failing_asset])
    resolved = dg.Definitions(assets=[failing_asset], jobs=[job]).resolve_job_def(job.name)
    result = resolved.execute_in_process(instance=dagster_instance, raise_on_error=False)
    assert not result.success
    context = dg.build_run_status_sensor_context(
        sensor_name=ALERT_SENSOR.name,
        dagster_instance=dagster_instance,
        dagster_run=result.dagster_run,
        dagster_event=result.get_run_failure_event(),
    ).for_run_failure()
    yield context
    dagster_instance.delete_run(result.run_id)


def test_a_failed_run_is_posted_to_the_webhook_without_secrets(
    sandbox, failure_context, monkeypatch
):
    monkeypatch.setenv(ALERT_WEBHOOK_ENV, f"{sandbox.erp_url}/sandbox/webhook")
    ALERT_SENSOR(failure_context)

    [alert] = sandbox.erp.webhooks
    assert alert["run_id"] == failure_context.dagster_run.run_id
    assert alert["job"] == "eu_orders_shopware_to_exact__alert_probe_job"
    assert alert["route"] == "eu_orders_shopware_to_exact"
    # The failure's first 500 characters, the exception itself among them, its secret replaced.
    assert len(alert["error"]) == 500
    assert "RuntimeError: ERP refused the token <ERP_CLIENT_SECRET> xxx" in alert["error"]
    assert SECRET not in str(alert) and "<ERP_CLIENT_SECRET>" in alert["error"]
    state = requests.get(f"{sandbox.erp_url}/sandbox/state", timeout=5).json()
    assert state["webhooks"] == 1


def test_without_a_webhook_url_the_failure_is_only_logged(sandbox, failure_context, monkeypatch):
    monkeypatch.delenv(ALERT_WEBHOOK_ENV, raising=False)
    lines = Lines()
    failure_context.log.addHandler(lines)
    ALERT_SENSOR(failure_context)
    run_id = failure_context.dagster_run.run_id
    # What an operator sees in the sensor's tick log: the failure itself, then why no alert.
    [error] = lines.at(logging.ERROR)
    assert error.startswith(f"Run {run_id} of eu_orders_shopware_to_exact__alert_probe_job failed")
    assert "ERP refused the token" in error and SECRET not in error
    assert lines.at(logging.INFO) == [f"{ALERT_WEBHOOK_ENV} is not set; the failure is only logged"]
    assert sandbox.erp.webhooks == []


def test_a_webhook_that_fails_never_breaks_the_sensor(sandbox, failure_context, monkeypatch):
    lines = Lines()
    failure_context.log.addHandler(lines)
    run_id = failure_context.dagster_run.run_id
    monkeypatch.setenv(ALERT_WEBHOOK_ENV, "http://127.0.0.1:9/unreachable")
    ALERT_SENSOR(failure_context)  # retried, then logged, not raised
    hook = f"{sandbox.erp_url}/sandbox/no-such-path"
    monkeypatch.setenv(ALERT_WEBHOOK_ENV, hook)
    ALERT_SENSOR(failure_context)  # a 404 answer (not retried): logged, not raised
    unreachable, refused = lines.at(logging.WARNING)
    assert unreachable.startswith(
        f"Could not post the alert for run {run_id} to {ALERT_WEBHOOK_ENV}"
    )
    assert "ConnectionError" in unreachable
    assert refused == (
        f"The alert webhook ({ALERT_WEBHOOK_ENV}) answered HTTP 404 after 1 attempt(s); "
        f"the alert for run {run_id} was not delivered"
    )
    for leak in ("127.0.0.1", "unreachable", "no-such-path", hook):
        assert leak not in lines.text  # the status, never the URL (it may hold a token)
    assert sandbox.erp.webhooks == []


def test_alert_message_shape() -> None:
    message = alert_message(
        run_id="r1",
        job="b2b_orders_shopware_to_exact__erp_delivery_job",
        error="boom",
        tags={DELIVERY_TAG: "b2b_orders_shopware_to_exact"},
    )
    assert message["route"] == "b2b_orders_shopware_to_exact"
    assert {"run_id", "job", "error", "text"} <= message.keys()
    assert "run_url" not in message and message["text"] == (
        "Dagster run r1 of b2b_orders_shopware_to_exact__erp_delivery_job failed: boom"
    )
    assert "route" not in alert_message(run_id="r2", job="__ASSET_JOB", error="x" * 900)
    assert len(alert_message(run_id="r3", job="j", error="x" * 900)["error"]) == 500
    linked = alert_message(run_id="r4", job="j", error="boom", run_url="https://d.example/runs/r4")
    assert linked["run_url"] == "https://d.example/runs/r4"
    assert linked["text"].endswith("\nhttps://d.example/runs/r4")
