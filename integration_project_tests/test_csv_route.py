"""A route of CSV order files end to end, through its real sensor and assets: files dropped in a
folder are picked up once each (by content), validated, staged, mapped and delivered to the
sandbox ERP over real HTTP, recorded in a real ledger (both backends for the main path). What a
user would see: what reached the ERP, what the ledger says, the file's report in the UI's
metadata, and where a bad file went."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from integration_project.assets import files_partitions
from integration_project.connectors.csv_files import REASON_SUFFIX, REJECTED_FOLDER
from integration_project.file_sensor import build_file_sensor
from integration_project.ledger import Ledger
from integration_project.resources import CsvFolderResource, open_ledger
from integration_project.sandbox import Sandbox
from integration_project.schedules import build_route_schedules
from integration_project_testkit.invoices import assert_invoiced_as_paid
from integration_project_testkit.resources import TEST_CLIENT, ledger_resource, sandbox_resources
from integration_project_testkit.routes import shipped_route
from integration_project_testkit.windows import deliver, erp_refs, failure_message, metadata

pytestmark = pytest.mark.integration

FOLDER = "csv_orders_to_exact"
#: The shipped CSV route, reading files as soon as they are written (no settle time in tests).
ROUTE = shipped_route(FOLDER, source={**shipped_route(FOLDER).source.model_dump(), "settle_s": 0})
HEADER = (
    "Order;Ordered at;E-mail;First name;Last name;Company;Country;Street;Postcode;City;"
    "Currency;Shipping;Total;SKU;Product;Qty;Unit price;VAT %"
)


def row(number: str, country: str, sku: str, qty: str, price: str, rate: str, **extra: str) -> str:
    values = {
        "email": f"{number.lower()}@example.com",
        "shipping": "4,90",
        "total": "",
        "when": "2026-11-20 10:15",
    } | extra
    return (
        f"{number};{values['when']};{values['email']};Ada;Lovelace;;{country};Hauptstr. 1;"
        f"10115;Berlin;EUR;{values['shipping']};{values['total']};{sku};;{qty};{price};{rate}"
    )


#: Two good EU orders (one of two lines), one to the US, one with a bad row (quantity 0).
GOOD_FILE = "\n".join(
    [
        HEADER,
        row("M-1", "DE", "SW10001", "2", "18,90", "7", total="67,20"),
        row("M-1", "DE", "SW10002", "1", "24,50", "19"),
        row("M-2", "NL", "SW10004", "1", "49,95", "21"),
        row("M-3", "US", "SW10004", "1", "49,95", "0"),
        row("M-4", "FR", "SW10002", "0", "24,50", "20"),
    ]
)


@pytest.fixture
def route_assets() -> Any:
    from integration_project.assets import build_route_assets

    return build_route_assets(ROUTE)


@pytest.fixture
def instance(dagster_instance: dg.DagsterInstance) -> dg.DagsterInstance:
    """The session's test instance (it has a ref, as the daemon's sensor context has: the
    sensor's partitioned run requests are resolved with it), with the files' partitions
    emptied: every test starts with no file seen. (An instance per test would leave Dagster's
    process-wide instance pointer dangling for the tests after it.)"""
    name = files_partitions(ROUTE).name
    for key in dagster_instance.get_dynamic_partitions(name):
        dagster_instance.delete_dynamic_partition(name, key)
    return dagster_instance


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    path = tmp_path / "inbox"
    path.mkdir()
    return path


def resources_for(sandbox: Sandbox, folder: Path, ledger_at: str) -> dict[str, Any]:
    erp = sandbox_resources(sandbox.shop_url, sandbox.erp_url, ledger_at, erp=TEST_CLIENT)["erp"]
    return {
        ROUTE.shop_key: CsvFolderResource(folder=str(folder)),
        ROUTE.erp_key: erp,
        "duckdb": ledger_resource(ledger_at),
    }


def drop(folder: Path, name: str, text: str, *, encoding: str = "utf-8") -> Path:
    path = folder / name
    path.write_bytes(text.encode(encoding))
    return path


def tick(
    assets: Any, instance: dg.DagsterInstance, resources: dict[str, Any], cursor: str | None
) -> Any:
    """One evaluation of the route's file sensor as the daemon evaluates it (``evaluate_tick``:
    resources on the context), and what the daemon does with its answer: add the partitions
    it asks for."""
    job = _source_job(assets)
    sensor = build_file_sensor(assets, job)
    defs = dg.Definitions(assets=assets.all, jobs=[job], sensors=[sensor], resources=resources)
    context = dg.build_sensor_context(
        instance=instance,
        instance_ref=instance.get_ref(),
        resources=resources,
        cursor=cursor,
        repository_def=defs.get_repository_def(),
    )
    result = sensor.evaluate_tick(context)
    for request in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    return result


def _source_job(assets: Any) -> Any:
    """The route's own source job, as its definitions build it."""
    jobs = build_route_schedules(assets).jobs
    return next(job for job in jobs if job.name == f"{ROUTE.id}__source_orders_job")


def run_file(
    assets: Any,
    instance: dg.DagsterInstance,
    resources: dict[str, Any],
    request: dg.RunRequest,
    **kwargs: Any,
) -> dg.ExecuteInProcessResult:
    """The run the sensor asked for: read the file and map its orders."""
    return dg.materialize(
        [assets.source_orders, assets.erp_orders],
        partition_key=request.partition_key,
        run_config=request.run_config,
        tags=request.tags,
        instance=instance,
        resources=resources,
        **kwargs,
    )


def route_ledger(resources: dict[str, Any]) -> Ledger:
    return open_ledger(resources["duckdb"], ROUTE.id)


def statuses(ledger: Ledger) -> dict[str, tuple[str, str | None]]:
    with ledger.db.connect() as con:
        rows = con.execute(
            "SELECT order_number, status, reason FROM erp_orders WHERE route_id = ? "
            "ORDER BY order_number",
            [ROUTE.id],
        ).fetchall()
    return {number: (status, reason) for number, status, reason in rows}


def test_a_dropped_file_reaches_the_erp_once_with_bad_rows_quarantined(
    sandbox, folder, ledger_location, route_assets, instance
):
    resources = resources_for(sandbox, folder, ledger_location)
    drop(folder, "orders-1.csv", GOOD_FILE)

    picked = tick(route_assets, instance, resources, None)
    [request] = picked.run_requests
    assert request.tags["integration_project/file"] == "orders-1.csv"
    result = run_file(route_assets, instance, resources, request)
    assert result.success, failure_message(result)

    report = metadata(result, "source_orders")
    assert report["file"] == "orders-1.csv"
    assert report["sha256"] == request.partition_key
    assert (report["delimiter"], report["encoding"]) == ("semicolon", "utf-8")
    assert (report["rows"], report["orders"], report["quarantined"]) == (5, 3, 1)
    assert report["quarantine_reasons"] == {"bad_quantity": 1}
    assert report["amount_total"] == {"EUR": "176.90"}  # M-1 67.20 + M-2 54.85 + M-3 54.85
    assert "line 6" in report["quarantined_preview"]
    mapping = metadata(result, "erp_orders")
    assert (mapping["mapped"], mapping["dropped_non_eu"], mapping["quarantined"]) == (2, 1, 1)

    delivered = deliver(resources, route_assets, instance=instance)
    assert delivered.success, failure_message(delivered)
    assert erp_refs(sandbox) == {"CSV-M-1": 1, "CSV-M-2": 1}
    # What the ERP will invoice is what the file says the customer paid.
    staged = _staged_orders(route_ledger(resources))
    assert_invoiced_as_paid(
        sandbox.erp, {f"CSV-{o['orderNumber']}": o for o in staged if o.get("amountTotal")}
    )
    assert next(o for o in staged if o.get("orderNumber") == "M-1")["amountTotal"] == 67.2
    seen = statuses(route_ledger(resources))
    assert seen["M-4"][0] == "quarantined"
    assert "orders-1.csv" in seen["M-4"][1] and "line 6" in seen["M-4"][1]
    assert "quantity" in seen["M-4"][1]


def _staged_orders(ledger: Ledger) -> list[dict[str, Any]]:
    import json

    with ledger.db.connect() as con:
        rows = con.execute(
            "SELECT payload::VARCHAR FROM staged_orders WHERE route_id = ?", [ROUTE.id]
        ).fetchall()
    return [json.loads(text) for (text,) in rows]


def test_the_same_content_renamed_or_touched_is_never_read_twice(
    sandbox, folder, duckdb_path, route_assets, instance
):
    resources = resources_for(sandbox, folder, duckdb_path)
    path = drop(folder, "orders-a.csv", GOOD_FILE)
    first = tick(route_assets, instance, resources, None)
    [request] = first.run_requests
    assert run_file(route_assets, instance, resources, request).success
    assert deliver(resources, route_assets, instance=instance).success

    path.rename(folder / "orders-a-copy.csv")
    os.utime(folder / "orders-a-copy.csv")  # touched, renamed: the same bytes
    again = tick(route_assets, instance, resources, first.cursor)
    assert not again.run_requests
    # The run re-executed from the UI (same partition) stages nothing new, sends nothing twice.
    rerun = run_file(route_assets, instance, resources, request)
    assert rerun.success, failure_message(rerun)
    assert metadata(rerun, "source_orders")["new"] == 0
    assert metadata(rerun, "source_orders")["file"] == "orders-a-copy.csv"
    assert deliver(resources, route_assets, instance=instance).success
    assert erp_refs(sandbox) == {"CSV-M-1": 1, "CSV-M-2": 1}


def test_a_known_order_number_is_quarantined_and_a_corrected_order_goes_through(
    sandbox, folder, duckdb_path, route_assets, instance
):
    resources = resources_for(sandbox, folder, duckdb_path)
    drop(folder, "day-1.csv", GOOD_FILE)
    cursor = None
    for _ in range(2):
        result = tick(route_assets, instance, resources, cursor)
        cursor = result.cursor
        for request in result.run_requests:
            assert run_file(route_assets, instance, resources, request).success
        assert deliver(resources, route_assets, instance=instance).success
        # The second file repeats M-2 (delivered) and brings M-4 corrected (quantity 1).
        drop(
            folder,
            "day-2.csv",
            "\n".join(
                [
                    HEADER,
                    row("M-2", "NL", "SW10004", "1", "49,95", "21"),
                    row("M-4", "FR", "SW10002", "1", "24,50", "20"),
                ]
            ),
        )
    assert erp_refs(sandbox) == {"CSV-M-1": 1, "CSV-M-2": 1, "CSV-M-4": 1}
    with route_ledger(resources).db.connect() as con:
        reasons = [
            r[0]
            for r in con.execute(
                "SELECT reason FROM erp_orders WHERE route_id = ? AND order_number = 'M-2' "
                "AND status = 'quarantined'",
                [ROUTE.id],
            ).fetchall()
        ]
    assert len(reasons) == 1 and "day-2.csv" in reasons[0] and "already known" in reasons[0]


def test_a_file_that_is_not_csv_fails_its_run_and_moves_to_rejected(
    sandbox, folder, duckdb_path, route_assets, instance
):
    resources = resources_for(sandbox, folder, duckdb_path)
    drop(folder, "export.csv", "%PDF-1.7\n\x00\x01\x02 binary stream\x00\x00")
    result = tick(route_assets, instance, resources, None)
    [request] = result.run_requests
    run = run_file(route_assets, instance, resources, request, raise_on_error=False)
    assert not run.success
    message = failure_message(run)
    assert "export.csv" in message and REJECTED_FOLDER in message
    moved = folder / REJECTED_FOLDER / "export.csv"
    assert moved.exists() and not (folder / "export.csv").exists()
    reason = (folder / REJECTED_FOLDER / f"export.csv{REASON_SUFFIX}").read_text()
    assert "export.csv" in reason
    # Nothing of it was staged; the sensor does not look into rejected/.
    assert not _staged_orders(route_ledger(resources))
    assert not tick(route_assets, instance, resources, result.cursor).run_requests


def test_a_file_still_being_written_waits_for_a_later_tick(sandbox, folder, duckdb_path, instance):
    from integration_project.assets import build_route_assets

    settled = shipped_route(
        FOLDER, source={**shipped_route(FOLDER).source.model_dump(), "settle_s": 60}
    )
    assets = build_route_assets(settled)
    resources = resources_for(sandbox, folder, duckdb_path)
    drop(folder, "partial.csv.part", GOOD_FILE)  # a copy tool's temporary name: never read
    fresh = drop(folder, "fresh.csv", GOOD_FILE)
    assert not tick(assets, instance, resources, None).run_requests
    an_hour_ago = time.time() - 3600
    os.utime(fresh, (an_hour_ago, an_hour_ago))
    [request] = tick(assets, instance, resources, None).run_requests
    assert request.tags["integration_project/file"] == "fresh.csv"


def test_a_missing_folder_fails_the_sensor_tick_naming_it(
    sandbox, tmp_path, duckdb_path, route_assets, instance
):
    resources = resources_for(sandbox, tmp_path / "not-mounted", duckdb_path)
    with pytest.raises(Exception, match=r"not-mounted.*does not exist"):
        tick(route_assets, instance, resources, None)


def test_outside_sandbox_mode_a_file_route_needs_its_folder_variable_and_an_absolute_path():
    problems = ROUTE.env_problems(sandbox=False, environ={**REAL_ERP})
    assert problems[0] == "source.folder_env: environment variable CSV_ORDERS_FOLDER is not set"
    relative = {**REAL_ERP, "CSV_ORDERS_FOLDER": "orders/in"}
    [problem] = ROUTE.env_problems(sandbox=False, environ=relative)
    assert problem.startswith("source.folder_env: CSV_ORDERS_FOLDER is not an absolute folder")
    assert ROUTE.env_problems(sandbox=False, environ={**REAL_ERP, "CSV_ORDERS_FOLDER": "/in"}) == []
    # In sandbox mode, unset, it is the sandbox's folder; set, it is always that folder.
    assert ROUTE.env_problems(sandbox=True, environ={}) == []


def test_a_spryker_route_never_sends_its_login_to_a_default_or_plain_http_address():
    from integration_project.routes.config import RouteConfig

    route = RouteConfig.model_validate({"name": "S", "source": {"type": "spryker"}})
    login = {**REAL_ERP, "SPRYKER_USERNAME": "bo@example.com", "SPRYKER_PASSWORD": "pw-secret"}
    problems = route.env_problems(sandbox=False, environ=login)
    assert problems[:1] == [
        "source.api_url_env: SPRYKER_USERNAME, SPRYKER_PASSWORD are set but SPRYKER_API_URL is "
        "not; set SPRYKER_API_URL to the system they belong to"
    ]
    plain = {**login, "SPRYKER_API_URL": "http://glue.example.com"}
    [problem] = route.env_problems(sandbox=False, environ=plain)
    assert "plain http to glue.example.com" in problem and "pw-secret" not in problem


#: The ERP side's variables, set, so the source side's problems are the only ones.
REAL_ERP = {
    "ERP_API_URL": "https://start.exactonline.nl",
    "ERP_DIVISION": "7654321",
    "ERP_CLIENT_ID": "erp-id",
    "ERP_CLIENT_SECRET": "erp-secret",
    "ERP_REFRESH_TOKEN": "erp-refresh",
}
