"""Smoke test against the real webserver and daemon: ``integration-sandbox`` + ``dg dev``.

Asks the GraphQL API what an operator sees (each route's three assets and their lineage, the
schedules, sensors and asset checks — compared with the definitions loaded here), launches one
window of the default route's fetch and map through the run queue, waits for it to succeed,
and stops everything it started (nothing may be left running).
"""

from __future__ import annotations

import importlib
import time
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest

from integration_project import settings
from integration_project_testkit.live_stack import LOCATION, LiveStack, StackUnavailable, live_stack
from integration_project_tests.skips import in_ci

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

DEFAULT_ID = "eu_orders_shopware_to_exact"
ASSETS = ("source_orders", "erp_orders", "erp_delivered_orders")

REPOSITORY = """{ repositoriesOrError { ... on RepositoryConnection { nodes {
    name location { name }
    schedules { name cronSchedule }
    sensors { name }
    jobs { name }
    assetNodes {
        assetKey { path } groupName dependencyKeys { path } isPartitioned
        assetChecksOrError { __typename ... on AssetChecks { checks { name } } }
    } } } } }"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    tmp: Path = tmp_path_factory.mktemp("smoke")
    try:
        with live_stack(tmp) as running:
            yield running
    except StackUnavailable as exc:
        if in_ci():  # CI's machine is ours to fix: a smoke test that cannot run is a failure
            pytest.fail(f"dg dev cannot start in CI: {exc}")
        pytest.skip(f"dg dev cannot start on this machine: {exc}")


def expected() -> dg.Definitions:
    return importlib.import_module("integration_project.definitions").defs()


def last_closed_window(now: datetime) -> str:
    start = settings.window_start(now) - settings.WINDOW
    return start.strftime(settings.PARTITION_FORMAT)


def test_the_ui_shows_every_route_with_lineage_schedules_sensors_and_checks(stack: LiveStack):
    [repo] = stack.graphql(REPOSITORY)["repositoriesOrError"]["nodes"]
    assert repo["location"]["name"] == LOCATION
    defs = expected()

    nodes = {"/".join(n["assetKey"]["path"]): n for n in repo["assetNodes"]}
    routes = {key.split("/")[0] for key in nodes}
    assert DEFAULT_ID in routes and len(routes) >= 2
    for route in routes:
        source, mapped, delivered = (nodes[f"{route}/{name}"] for name in ASSETS)
        assert {n["groupName"] for n in (source, mapped, delivered)} == {route}
        assert source["isPartitioned"] and mapped["isPartitioned"]
        assert not delivered["isPartitioned"]
        assert source["dependencyKeys"] == []
        assert mapped["dependencyKeys"] == [{"path": [route, "source_orders"]}]
        assert delivered["dependencyKeys"] == [{"path": [route, "erp_orders"]}]

    schedules = {s["name"]: s["cronSchedule"] for s in repo["schedules"]}
    assert schedules == {
        s.name: defs.resolve_schedule_def(s.name).cron_schedule for s in defs.schedules or []
    }
    assert schedules[f"{DEFAULT_ID}__source_orders_schedule"] == "*/5 * * * *"
    jobs = {j["name"] for j in repo["jobs"]}
    assert {f"{route}__resend_failed_job" for route in routes} <= jobs

    sensors = {s["name"] for s in repo["sensors"]}
    assert sensors == {s.name for s in defs.sensors or []}
    assert any(name.startswith(DEFAULT_ID) for name in sensors)  # the delivery sensor

    checks = {
        f"{'/'.join(n['assetKey']['path'])}:{c['name']}"
        for n in repo["assetNodes"]
        if n["assetChecksOrError"]["__typename"] == "AssetChecks"
        for c in n["assetChecksOrError"]["checks"]
    }
    graph = defs.resolve_asset_graph()
    assert checks == {f"{k.asset_key.to_user_string()}:{k.name}" for k in graph.asset_check_keys}
    assert any(c.startswith(f"{DEFAULT_ID}/erp_orders:") for c in checks)


def test_one_window_is_fetched_and_mapped_through_the_run_queue(stack: LiveStack):
    window = last_closed_window(datetime.now(UTC))
    run = stack.run_window(f"{DEFAULT_ID}__source_orders_job", window)
    assert run.get("status") == "SUCCESS", f"{run}\n{stack.output('dagster')}"
    materialized = {
        ("/".join(m["assetKey"]["path"]), m["partition"]) for m in run["assetMaterializations"]
    }
    assert materialized == {
        (f"{DEFAULT_ID}/source_orders", window),
        (f"{DEFAULT_ID}/erp_orders", window),
    }


CSV_ID = "csv_orders_to_exact"
FILE_RUNS = """query FileRuns($job: String!) { runsOrError(filter: {pipelineName: $job}) {
    ... on Runs { results { runId status tags { key value }
        assetMaterializations { assetKey { path } partition } } } } }"""


def test_the_daemon_reads_the_order_files_the_sandbox_drops(stack: LiveStack):
    """The CSV route's sensor, evaluated by the real daemon, notices the files the sandbox
    dropped in the route's folder and each becomes a run that reads and maps it."""
    deadline = time.monotonic() + 150
    done: list[dict] = []
    while time.monotonic() < deadline and not done:
        runs = stack.graphql(FILE_RUNS, {"job": f"{CSV_ID}__source_orders_job"})
        results = runs["runsOrError"]["results"]
        assert all(r["status"] != "FAILURE" for r in results), stack.output("dagster")
        done = [r for r in results if r["status"] == "SUCCESS"]
        time.sleep(2)
    assert done, f"no order file was read through the daemon\n{stack.output('dagster')}"
    run = done[0]
    tags = {t["key"]: t["value"] for t in run["tags"]}
    assert tags["integration_project/file"].startswith("marketplace-orders-")
    partition = tags["dagster/partition"]
    assert len(partition) == 64  # the file's SHA-256
    assert {
        ("/".join(m["assetKey"]["path"]), m["partition"]) for m in run["assetMaterializations"]
    } == {
        (f"{CSV_ID}/source_orders", partition),
        (f"{CSV_ID}/erp_orders", partition),
    }
