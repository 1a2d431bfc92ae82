"""The warehouse export: a route's delivered orders as daily Parquet files, through the real
assets against the sandbox, read back the way a warehouse would (DuckDB over the Hive folders).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from integration_project import settings
from integration_project.export import (
    ExportFolderError,
    build_export_asset,
    build_export_schedule,
    export_dir,
)
from integration_project.ledger import Ledger
from integration_project.ledger.exports import LINES_SCHEMA, ORDERS_SCHEMA
from integration_project.routes.config import RouteConfig
from integration_project.sandbox import Sandbox
from integration_project_testkit.resources import make_resources, resources_ledger
from integration_project_testkit.routes import default_assets, shipped_route
from integration_project_testkit.windows import (
    WINDOW_END,
    WINDOW_START,
    deliver,
    fetch_and_map,
    metadata,
)

CENT = Decimal("0.01")
ROUTE = "eu_orders_shopware_to_exact"
#: Two UTC days: the delivered orders are spread over both, right at the midnight between.
DAY_1, DAY_2 = date(2026, 11, 20), date(2026, 11, 21)
LAST_MOMENT_OF_DAY_1 = datetime(2026, 11, 20, 23, 59, 59, 999999, tzinfo=UTC)
MIDNIGHT = datetime(2026, 11, 21, tzinfo=UTC)


@pytest.fixture
def export_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "export"
    monkeypatch.setenv(settings.EXPORT_DIR_ENV, str(root))
    return root


@pytest.fixture
def export_asset(export_root: Path) -> dg.AssetsDefinition:
    asset = build_export_asset(shipped_route(), default_assets().erp_delivered_orders)
    assert asset is not None, "the shipped reference route exports"
    return asset


def _deliver_over_two_days(
    sandbox: Sandbox, resources: dict[str, Any]
) -> tuple[Ledger, dict[str, date]]:
    """Fetch, map and deliver a window of eight orders; then date the deliveries on both sides
    of midnight (the sandbox delivers now: the ledger is what says when). Returns the day of
    each order."""
    sandbox.shop.add_orders(8, start=WINDOW_START, end=WINDOW_END)
    fetch_and_map(resources)
    deliver(resources)
    ledger = resources_ledger(resources, ROUTE)
    with ledger.db.connect() as con:
        ids = [
            r[0]
            for r in con.execute(
                "SELECT shop_order_id FROM delivered_orders WHERE route_id = ? "
                "AND status = 'delivered' ORDER BY shop_order_id",
                [ROUTE],
            ).fetchall()
        ]
        assert len(ids) == 8
        days = {i: (DAY_1 if n % 2 else DAY_2) for n, i in enumerate(ids)}
        for shop_order_id, day in days.items():
            con.execute(
                "UPDATE delivered_orders SET delivered_at = ? WHERE route_id = ? "
                "AND shop_order_id = ?",
                [LAST_MOMENT_OF_DAY_1 if day == DAY_1 else MIDNIGHT, ROUTE, shop_order_id],
            )
    return ledger, days


def _export(asset: dg.AssetsDefinition, resources: dict[str, Any], day: date) -> dict[str, Any]:
    result = dg.materialize([asset], partition_key=day.isoformat(), resources=resources)
    assert result.success
    return metadata(result, "delivered_orders_parquet")


def _read(root: Path, name: str) -> list[dict[str, Any]]:
    """Every day's rows of one file, as a warehouse reads the folders (Hive partitions)."""
    pattern = str(root / ROUTE / "*" / name)
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        rel = con.sql(f"SELECT * FROM read_parquet('{pattern}', hive_partitioning = true)")
        columns = rel.columns
        return [dict(zip(columns, row, strict=True)) for row in rel.fetchall()]


def test_every_delivered_order_is_exported_once_with_its_erp_number_and_lines(
    sandbox: Sandbox, ledger_location: str, export_asset: dg.AssetsDefinition, export_root: Path
) -> None:
    resources = make_resources(sandbox, ledger_location)
    _, days = _deliver_over_two_days(sandbox, resources)

    first, second = _export(export_asset, resources, DAY_1), _export(export_asset, resources, DAY_2)

    assert first["orders"] == sum(d == DAY_1 for d in days.values())
    assert second["orders"] == sum(d == DAY_2 for d in days.values())
    assert first["dagster/row_count"] == first["orders"] and first["day"] == "2026-11-20"
    assert first["bytes"] > 0 and first["orders_path"].endswith(
        f"{ROUTE}/delivered_date=2026-11-20/orders.parquet"
    )
    orders, lines = _read(export_root, "orders.parquet"), _read(export_root, "lines.parquet")
    # Each delivered order once, in the folder of its UTC day.
    assert sorted(o["shop_order_id"] for o in orders) == sorted(days)
    assert {o["shop_order_id"]: o["delivered_date"] for o in orders} == days

    erp = {o["YourRef"]: o for o in sandbox.erp.sales_orders}
    shop = {o["orderNumber"]: o for o in sandbox.shop.orders.values()}
    for order in orders:
        sales_order = erp[order["your_ref"]]
        assert order["erp_order_id"] == sales_order["OrderID"]
        assert order["erp_order_number"] == sales_order["OrderNumber"]
        assert order["erp_account_id"] == sales_order["OrderedBy"]
        assert order["currency"] == sales_order["Currency"]
        paid = shop[order["order_number"]]
        assert order["amount_total"] == Decimal(str(paid["amountTotal"])).quantize(CENT)
        own = sorted(
            (li for li in lines if li["shop_order_id"] == order["shop_order_id"]),
            key=lambda li: li["line_number"],
        )
        erp_lines = sales_order["SalesOrderLines"]
        assert [li["line_number"] for li in own] == list(range(1, len(erp_lines) + 1))
        for line, erp_line in zip(own, erp_lines, strict=True):
            assert line["erp_item_id"] == erp_line["Item"] and line["item_code"]
            assert line["vat_code"].strip() == erp_line["VATCode"].strip()
            assert line["amount"] == Decimal(str(erp_line["AmountFC"])).quantize(CENT)
            assert line["vat_amount"] == Decimal(str(erp_line["VATAmount"])).quantize(CENT)
        # What the lines come to with their VAT is what the customer paid.
        invoiced = sum((li["amount"] + li["vat_amount"] for li in own), Decimal(0))
        assert abs(invoiced - order["amount_total"]) <= CENT * len(own)

    # No personal data: no e-mail address, no customer's name in any text.
    names = {
        str((o.get("orderCustomer") or {}).get(k) or "")
        for o in shop.values()
        for k in ("firstName", "lastName", "email")
    } - {""}
    texts = [v for row in orders + lines for v in row.values() if isinstance(v, str)]
    assert not [t for t in texts if "@" in t or t in names]


def test_exporting_a_day_again_replaces_its_files_and_an_empty_day_has_the_schema(
    sandbox: Sandbox, duckdb_path: str, export_asset: dg.AssetsDefinition, export_root: Path
) -> None:
    resources = make_resources(sandbox, duckdb_path)
    ledger, days = _deliver_over_two_days(sandbox, resources)
    first = _export(export_asset, resources, DAY_1)
    moved = next(i for i, d in days.items() if d == DAY_1)
    with ledger.db.connect() as con:  # the order turns out to be delivered a day later
        con.execute(
            "UPDATE delivered_orders SET delivered_at = ? WHERE route_id = ? AND shop_order_id = ?",
            [MIDNIGHT, ROUTE, moved],
        )

    again = _export(export_asset, resources, DAY_1)

    assert again["orders"] == first["orders"] - 1
    folder = export_root / ROUTE / "delivered_date=2026-11-20"
    assert sorted(p.name for p in folder.iterdir()) == ["lines.parquet", "orders.parquet"]
    exported = pq.read_table(folder / "orders.parquet").column("shop_order_id").to_pylist()
    assert moved not in exported and len(exported) == again["orders"]

    empty = _export(export_asset, resources, date(2026, 11, 5))
    assert (empty["orders"], empty["lines"]) == (0, 0)
    quiet = export_root / ROUTE / "delivered_date=2026-11-05"
    assert pq.read_schema(quiet / "orders.parquet").equals(ORDERS_SCHEMA, check_metadata=False)
    assert pq.read_schema(quiet / "lines.parquet").equals(LINES_SCHEMA, check_metadata=False)
    assert pq.read_table(quiet / "orders.parquet").num_rows == 0


def test_the_export_folder_is_required_outside_sandbox_mode() -> None:
    with pytest.raises(ExportFolderError, match=settings.EXPORT_DIR_ENV):
        export_dir({}, sandbox=False)
    with pytest.raises(ExportFolderError, match="absolute"):
        export_dir({settings.EXPORT_DIR_ENV: "relative/export"}, sandbox=False)
    assert export_dir({settings.EXPORT_DIR_ENV: "/srv/export"}, sandbox=False) == Path(
        "/srv/export"
    )
    assert export_dir({"XDG_DATA_HOME": "/data"}, sandbox=True) == Path(
        "/data/integration_project/sandbox_export"
    )


def test_export_is_off_unless_the_route_file_turns_it_on() -> None:
    assets = default_assets()
    assert build_export_asset(shipped_route(export={}), assets.erp_delivered_orders) is None
    with pytest.raises(ValidationError, match=r"export\.csv"):
        RouteConfig.model_validate({"name": "x", "export": {"csv": True}})


def test_the_schedule_exports_yesterday(
    export_asset: dg.AssetsDefinition, dagster_instance: dg.DagsterInstance
) -> None:
    job, schedule = build_export_schedule(shipped_route(), export_asset)
    unused = dg.ResourceDefinition.none_resource()  # a tick launches nothing here
    defs = dg.Definitions(
        assets=[export_asset],
        jobs=[job],
        schedules=[schedule],
        resources={"duckdb": unused, "erp": unused},
    )
    resolved = defs.resolve_schedule_def(f"{ROUTE}__parquet_export_schedule")
    assert resolved.cron_schedule == "30 0 * * *"
    # The session's instance: one per test would leave Dagster's process-wide instance
    # pointer dangling for the tests after it.
    context = dg.build_schedule_context(
        instance=dagster_instance,
        scheduled_execution_time=datetime(2026, 12, 3, 0, 30, tzinfo=UTC),
        repository_def=defs.get_repository_def(),
    )
    requests = resolved.evaluate_tick(context).run_requests or []
    assert [r.partition_key for r in requests] == ["2026-12-02"]


@pytest.fixture(autouse=True)
def _no_leftovers(export_root: Path) -> Iterator[None]:
    """No hidden temporary file is left behind by any export."""
    yield
    if export_root.exists():
        assert not [p for p in export_root.rglob(".*") if p.is_file()]
