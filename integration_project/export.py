"""A second destination: a route's delivered orders as daily Parquet files for a data warehouse.

Each UTC day of ``delivered_at`` becomes one Hive-style folder,
``<export dir>/<route_id>/delivered_date=YYYY-MM-DD/``, holding ``orders.parquet`` (one row per
delivered order, with its ERP numbers and what the customer paid) and ``lines.parquet`` (the
sales order's lines as the ERP got them). DuckDB, Spark and BigQuery external tables read the
folder name as a ``delivered_date`` column.

A day is written to hidden temporary files and renamed into place, so a reader never sees half
a file, and exporting a day again replaces its files (each rename is atomic; a reader between
the two renames may pair new orders with the old lines for that moment). A day without
deliveries still gets both files, empty with their schema: the warehouse can tell "exported,
nothing delivered" from "not exported".

The plain part (:func:`export_dir`, :func:`export_day`) knows nothing of Dagster; the asset and
its daily schedule are built at the bottom.
"""

import os
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow.parquet as pq

from integration_project import settings
from integration_project.ledger import Ledger
from integration_project.ledger.exports import LINES_SCHEMA, ORDERS_SCHEMA, ExportShaper
from integration_project.resources import ErpResource, open_ledger
from integration_project.routes.config import RouteConfig
from integration_project.schedules import schedule_status

ORDERS_FILE = "orders.parquet"
LINES_FILE = "lines.parquet"
#: The Hive partition column the day's folder is named by.
PARTITION_COLUMN = "delivered_date"
#: When the daily schedule exports yesterday: half an hour after midnight UTC, so a delivery
#: run that was recording orders at midnight has committed them.
SCHEDULE_MINUTE = 30


class ExportFolderError(ValueError):
    """The export folder is not set, or not usable; the message names the variable."""


def export_dir(environ: Mapping[str, str] | None = None, *, sandbox: bool | None = None) -> Path:
    """The export folder: ``INTEGRATION_EXPORT_DIR`` (an absolute path); unset, in sandbox mode
    only, ``$XDG_DATA_HOME/integration_project/sandbox_export``. Outside sandbox mode an unset
    variable raises :class:`ExportFolderError` naming it: there is no local default."""
    env = os.environ if environ is None else environ
    on = settings.sandbox_mode(env) if sandbox is None else sandbox
    value = env.get(settings.EXPORT_DIR_ENV, "").strip()
    if not value:
        if on:
            return settings.sandbox_export_dir(env)
        raise ExportFolderError(
            f"export.parquet is on, but {settings.EXPORT_DIR_ENV} is not set: set it to the "
            "absolute path of the folder the warehouse reads the daily Parquet files from"
        )
    path = Path(value).expanduser()
    if not path.is_absolute():
        raise ExportFolderError(
            f"{settings.EXPORT_DIR_ENV} must be an absolute path, got a relative one"
        )
    return path


def day_folder(root: Path, route_id: str, day: date) -> Path:
    """``<root>/<route_id>/delivered_date=YYYY-MM-DD``."""
    return root / route_id / f"{PARTITION_COLUMN}={day.isoformat()}"


def vat_percents(route: RouteConfig) -> dict[str, Decimal]:
    """The VAT codes the route file pins, with their rates in percent: the rate of a code the
    division's cache does not hold (a route that pins every rate never fills it)."""
    known = {pin.code: pin.rate for pin in route.mapping.vat_codes}
    if route.mapping.tax_free_vat_code is not None:
        known.setdefault(route.mapping.tax_free_vat_code, Decimal(0))
    return known


@dataclass(frozen=True)
class ExportReport:
    day: date
    orders: int
    lines: int
    orders_path: Path
    lines_path: Path
    bytes: int
    seconds: float


class _StagedFile:
    """A Parquet file written under a temporary name beside ``path``, renamed over it by
    :meth:`commit` (removed if never committed). The name starts with a dot and does not end in
    ``.parquet``: Hadoop-style listings (Spark, Hive) skip names starting with ``.`` or ``_``,
    and ``*.parquet`` globs (DuckDB, BigQuery URIs) do not match it."""

    def __init__(self, path: Path, schema: Any) -> None:
        self.path = path
        self.temp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        self.writer = pq.ParquetWriter(self.temp, schema)
        self.rows = 0

    def write(self, table: Any) -> None:
        if table.num_rows:
            self.writer.write_table(table)
            self.rows += table.num_rows

    def close(self) -> None:
        self.writer.close()
        with open(self.temp, "rb") as handle:  # on disk before the rename makes it visible
            os.fsync(handle.fileno())

    def commit(self) -> int:
        os.replace(self.temp, self.path)
        return self.path.stat().st_size

    def discard(self) -> None:
        self.writer.close()
        self.temp.unlink(missing_ok=True)


def export_day(
    ledger: Ledger,
    root: Path,
    day: date,
    pinned_vat: Mapping[str, Decimal] | None = None,
    log: Callable[[str], None] | None = None,
) -> ExportReport:
    """Write the orders ``ledger``'s route delivered on ``day`` (UTC) and their lines to the
    day's folder under ``root``, replacing what an earlier export of the day wrote."""
    began = time.monotonic()
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    folder = day_folder(root, ledger.route_id, day)
    folder.mkdir(parents=True, exist_ok=True)
    vat = {**dict(pinned_vat or {}), **ledger.exports.vat_percents()}  # the ERP's word first
    orders = _StagedFile(folder / ORDERS_FILE, ORDERS_SCHEMA)
    lines = _StagedFile(folder / LINES_FILE, LINES_SCHEMA)
    try:
        with ExportShaper(ledger.route_id, ledger.exports.item_codes(), vat) as shaper:
            for batch in ledger.exports.delivered_batches(start, start + timedelta(days=1)):
                batch_orders, batch_lines = shaper.shape(batch)
                orders.write(batch_orders)
                lines.write(batch_lines)
                if log is not None:
                    log(f"Exported {orders.rows} orders of {day.isoformat()} so far")
        orders.close()
        lines.close()
    except BaseException:
        orders.discard()
        lines.discard()
        raise
    size = orders.commit() + lines.commit()
    _sync_folder(folder)
    return ExportReport(
        day, orders.rows, lines.rows, orders.path, lines.path, size, time.monotonic() - began
    )


def _sync_folder(folder: Path) -> None:
    """Make the renames durable (a crash right after must not bring the old files back)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- Dagster: the asset and its daily schedule -----------------------------------------------


def export_partitions(route: RouteConfig) -> dg.DailyPartitionsDefinition:
    """One partition per UTC day of ``delivered_at``, from the day the route's windows start."""
    first_window = route.partitions_start or settings.default_partitions_start()
    return dg.DailyPartitionsDefinition(start_date=first_window[:10], timezone="UTC")


def build_export_asset(
    route: RouteConfig, erp_delivered_orders: dg.AssetsDefinition, *, sandbox: bool | None = None
) -> dg.AssetsDefinition | None:
    """``<route_id>/delivered_orders_parquet``, or None when the route file leaves
    ``export.parquet`` off. Raises :class:`ExportFolderError` (naming the variable) when the
    export folder is unset outside sandbox mode: the route then fails to load. ``sandbox``
    defaults to sandbox mode (``INTEGRATION_SANDBOX``), read now."""
    if not route.export.parquet:
        return None
    root = export_dir(sandbox=sandbox)
    pinned = vat_percents(route)

    @dg.asset(
        key=[route.id, "delivered_orders_parquet"],
        partitions_def=export_partitions(route),
        deps=[erp_delivered_orders],
        group_name=route.id,
        kinds={"parquet", settings.ledger_kind()},
        required_resource_keys={route.erp_key, "duckdb"},
        description="Orders delivered to the ERP on each UTC day, with their ERP numbers and "
        f"lines, as Parquet files under {settings.EXPORT_DIR_ENV}/{route.id}/"
        f"{PARTITION_COLUMN}=YYYY-MM-DD/ (orders.parquet, lines.parquet) for the warehouse. "
        "No personal data: the ERP account id stands for the customer.",
    )
    def delivered_orders_parquet(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        erp: ErpResource = getattr(context.resources, route.erp_key)
        ledger = open_ledger(context.resources.duckdb, route.id, erp.token_key)
        day = context.partition_time_window.start.date()
        report = export_day(ledger, root, day, pinned, log=context.log.debug)
        context.log.info(
            f"Exported {report.orders} orders ({report.lines} lines) delivered on "
            f"{day.isoformat()} to {report.orders_path.parent} in {report.seconds:.1f} s"
        )
        return dg.MaterializeResult(metadata=export_metadata(report))

    return delivered_orders_parquet


def export_metadata(report: ExportReport) -> dict[str, Any]:
    return {
        "day": report.day.isoformat(),
        "orders": report.orders,
        "lines": report.lines,
        "orders_path": dg.MetadataValue.path(str(report.orders_path)),
        "lines_path": dg.MetadataValue.path(str(report.lines_path)),
        "bytes": report.bytes,
        "seconds": round(report.seconds, 3),
        "dagster/row_count": report.orders,
    }


def build_export_schedule(route: RouteConfig, export_asset: dg.AssetsDefinition) -> tuple[Any, Any]:
    """``<route_id>__parquet_export_job`` (the export asset alone) and
    ``<route_id>__parquet_export_schedule``, which exports yesterday (UTC) at 00:30 UTC,
    running whenever the route's schedules do."""
    job = dg.define_asset_job(
        f"{route.id}__parquet_export_job",
        selection=[export_asset],
        description=f"{route.name}: write one UTC day of delivered orders as Parquet files.",
    )
    schedule = dg.build_schedule_from_partitioned_job(
        job,
        name=f"{route.id}__parquet_export_schedule",
        minute_of_hour=SCHEDULE_MINUTE,
        hour_of_day=0,
        default_status=schedule_status(route),
    )
    return job, schedule
