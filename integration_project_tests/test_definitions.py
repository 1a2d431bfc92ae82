"""The Dagster objects users and operators rely on: names, schedules, loadability."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from datetime import UTC, datetime

import dagster as dg
import pytest

from integration_project import settings
from integration_project.assets import DELIVERY_TAG
from integration_project.components.order_route import (
    ERP_HOST_KEY,
    SANDBOX_MODE_KEY,
    SHOP_HOST_KEY,
)

DEFAULT_ID = "eu_orders_shopware_to_exact"
B2B_ID = "b2b_orders_shopware_to_exact"
CSV_ID = "csv_orders_to_exact"


@pytest.fixture(scope="module")
def defs() -> dg.Definitions:
    return importlib.import_module("integration_project.definitions").defs()


def test_defs_load_the_three_routes_with_the_contract_names(defs: dg.Definitions) -> None:
    dg.Definitions.validate_loadable(defs)
    keys = {key.to_user_string() for key in defs.resolve_all_asset_keys()}
    assert keys == {
        f"{route}/{asset}"
        for route in (DEFAULT_ID, B2B_ID, CSV_ID)
        for asset in ("source_orders", "erp_orders", "erp_delivered_orders")
    } | {  # the reference route's flow steps: the Parquet export, the write-back to the shop
        f"{DEFAULT_ID}/delivered_orders_parquet",
        f"{DEFAULT_ID}/shop_order_writeback",
    }
    # The write-back runs in the delivery job, right after the delivery it follows.
    delivery_job = defs.resolve_job_def(f"{DEFAULT_ID}__erp_delivery_job")
    assert {k.to_user_string() for k in delivery_job.asset_layer.executable_asset_keys} == {
        f"{DEFAULT_ID}/erp_delivered_orders",
        f"{DEFAULT_ID}/shop_order_writeback",
    }
    default = defs.resolve_schedule_def(f"{DEFAULT_ID}__source_orders_schedule")
    assert default.cron_schedule == "*/5 * * * *"
    delivery = defs.resolve_schedule_def(f"{DEFAULT_ID}__erp_delivery_schedule")
    assert delivery.cron_schedule == "* * * * *"
    b2b = defs.resolve_schedule_def(f"{B2B_ID}__erp_delivery_schedule")
    assert b2b.cron_schedule == "*/2 * * * *"
    # The CSV route has no source schedule: its file sensor requests a run per new file.
    assert f"{CSV_ID}__source_orders_schedule" not in {s.name for s in defs.schedules or []}
    sensor = defs.resolve_sensor_def(f"{CSV_ID}__order_files_sensor")
    assert sensor.job_name == f"{CSV_ID}__source_orders_job"
    graph = defs.resolve_asset_graph()
    for route in (DEFAULT_ID, B2B_ID, CSV_ID):
        source, mapped, delivered = (
            dg.AssetKey([route, name])
            for name in ("source_orders", "erp_orders", "erp_delivered_orders")
        )
        assert graph.get(mapped).parent_keys == {source}
        assert graph.get(delivered).parent_keys == {mapped}
        assert graph.get(source).group_name == route
    # The default route keeps the contract's resource keys.
    assert {"shop", "erp", "duckdb"} <= set(defs.resources or {})


def test_schedules_start_running_so_the_quick_start_needs_no_clicks(
    defs: dg.Definitions,
) -> None:
    names = {schedule.name for schedule in defs.schedules or []}
    assert names >= {
        f"{route}__{schedule}"
        for route in (DEFAULT_ID, B2B_ID)
        for schedule in ("source_orders_schedule", "erp_delivery_schedule")
    }
    for schedule in defs.schedules or []:
        assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING


def test_every_asset_shows_sandbox_mode_and_where_its_route_points(defs: dg.Definitions) -> None:
    """The tests run in sandbox mode (conftest): the UI says so on every asset of every route,
    with the sandbox hosts (or the sandbox's folder) each route talks to."""
    assert settings.sandbox_mode()
    shops = {
        DEFAULT_ID: settings.SANDBOX_SHOP_URL,
        B2B_ID: settings.SANDBOX_SHOP2_URL,
        CSV_ID: settings.sandbox_csv_folder().as_uri(),
    }
    seen = 0
    for assets_def in defs.assets or []:
        assert isinstance(assets_def, dg.AssetsDefinition)
        for spec in assets_def.specs:
            route = spec.key.path[0]
            assert spec.metadata[SANDBOX_MODE_KEY] is True
            assert spec.metadata[SHOP_HOST_KEY] == shops[route].removeprefix("http://")
            assert spec.metadata[ERP_HOST_KEY] == settings.SANDBOX_ERP_URL.removeprefix("http://")
            seen += 1
    assert seen == 11  # three routes' three assets, the reference route's export and write-back
    # The asset checks stayed on their assets.
    check_keys = {key.asset_key for key in defs.resolve_asset_graph().asset_check_keys}
    assert dg.AssetKey([DEFAULT_ID, "erp_orders"]) in check_keys


def test_source_schedule_requests_the_window_that_just_closed(
    defs: dg.Definitions, dagster_instance: dg.DagsterInstance
) -> None:
    schedule = defs.resolve_schedule_def(f"{DEFAULT_ID}__source_orders_schedule")
    context = dg.build_schedule_context(
        instance=dagster_instance,
        scheduled_execution_time=datetime(2026, 11, 22, 6, 10, tzinfo=UTC),
        repository_def=defs.get_repository_def(),
    )
    [request] = list(schedule.evaluate_tick(context).run_requests or [])
    assert request.partition_key == "2026-11-22-06:05"
    assert schedule.job_name == f"{DEFAULT_ID}__source_orders_job"
    job = defs.resolve_job_def(f"{DEFAULT_ID}__source_orders_job")
    assert {key.to_user_string() for key in job.asset_layer.executable_asset_keys} == {
        f"{DEFAULT_ID}/source_orders",
        f"{DEFAULT_ID}/erp_orders",
    }


def test_delivery_schedule_requests_a_tagged_run_unless_one_is_in_flight(
    defs: dg.Definitions, dagster_instance: dg.DagsterInstance
) -> None:
    schedule = defs.resolve_schedule_def(f"{DEFAULT_ID}__erp_delivery_schedule")
    assert schedule.job_name == f"{DEFAULT_ID}__erp_delivery_job"
    context = dg.build_schedule_context(
        instance=dagster_instance,
        scheduled_execution_time=datetime(2026, 11, 22, 6, 1, tzinfo=UTC),
    )
    [request] = list(schedule.evaluate_tick(context).run_requests or [])
    assert request.tags[DELIVERY_TAG] == DEFAULT_ID

    # A delivery run still in progress: the tick skips instead of piling runs up.
    job = defs.resolve_job_def(f"{DEFAULT_ID}__erp_delivery_job")
    run = dagster_instance.create_run_for_job(job, status=dg.DagsterRunStatus.STARTED)
    try:
        data = schedule.evaluate_tick(context)
        assert not data.run_requests
        assert run.run_id in (data.skip_message or "")
    finally:
        dagster_instance.delete_run(run.run_id)


def test_loading_definitions_has_no_side_effects(tmp_path) -> None:
    """No network, no files: importing in a fresh interpreter from an empty folder writes
    nothing there (the DuckDB file and its folder appear on first use only)."""
    code = (
        "import socket\n"
        "def refuse(*a, **k):\n"
        "    raise AssertionError('network at import time')\n"
        "socket.socket.connect = refuse\n"
        "import integration_project.definitions\n"
    )
    env = {**os.environ, "INTEGRATION_DUCKDB_PATH": str(tmp_path / "ledger" / "x.duckdb")}
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True, env=env)
    assert list(tmp_path.iterdir()) == []
