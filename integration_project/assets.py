"""A route's three assets, built from its :class:`RouteConfig`.

Thin on purpose: each asset takes its resources, hands them to plain code that knows nothing
of Dagster (:mod:`.fetching`, :mod:`.mapping`, :mod:`.delivery`), and shows the report it gets
back (:mod:`.reports`). Every key is prefixed by the route id (``<route_id>/source_orders``),
every ledger row carries it, so routes never cross-talk.
"""

from dataclasses import dataclass
from datetime import timedelta
from functools import partial

import dagster as dg
from pydantic import Field

from integration_project import settings
from integration_project.connectors.csv_files import REJECTED_FOLDER, file_window, read_order_file
from integration_project.delivery import (
    DeliveryProgress,
    DeliveryRequest,
    DeliveryRun,
    RouteDelivery,
    preview,
)
from integration_project.fetching import Window, fetch_window
from integration_project.hooks import RouteHooks
from integration_project.ledger import Ledger
from integration_project.mapping import RouteMapping, map_window
from integration_project.reports import as_metadata, latest_delivered_table
from integration_project.resources import (
    CsvFolderResource,
    ErpResource,
    ShopResource,
    SprykerResource,
    erp_client,
    open_ledger,
)
from integration_project.routes.config import CsvFolderSource, RouteConfig
from integration_project.writeback import build_writeback_asset

DELIVERY_TAG = "integration_project/delivery"


#: The tag a CSV route's runs carry: the name of the file the run reads.
FILE_TAG = "integration_project/file"


@dataclass(frozen=True)
class RouteAssets:
    route: RouteConfig
    #: Time windows for a shop; one partition per order file (by content hash) for files.
    partitions_def: dg.TimeWindowPartitionsDefinition | dg.DynamicPartitionsDefinition
    source_orders: dg.AssetsDefinition
    erp_orders: dg.AssetsDefinition
    erp_delivered_orders: dg.AssetsDefinition
    #: ``<route_id>/shop_order_writeback`` when the route writes ERP numbers back to the shop.
    shop_order_writeback: dg.AssetsDefinition | None = None

    @property
    def all(self) -> list[dg.AssetsDefinition]:
        after = [self.shop_order_writeback] if self.shop_order_writeback is not None else []
        return [self.source_orders, self.erp_orders, self.erp_delivered_orders, *after]


class DeliveryConfig(dg.Config):
    max_orders: int = Field(
        default=500, ge=1, description="Most orders one run sends (the rest wait a tick)"
    )
    dry_run: bool = Field(
        default=False,
        description="Preview: show the ERP payloads that would be sent, send nothing",
    )
    resend_failed: list[str] = Field(
        default=[],
        description="Order numbers (or YourRefs) of failed orders to send again, once the cause "
        "is fixed: they go back to pending at the start of the run",
    )
    resend_all_failed: bool = Field(
        default=False,
        description="Send every failed order of the route again (after the cause is fixed)",
    )
    limit: int | None = Field(
        default=None,
        ge=1,
        description="Test mode: send at most this many orders in this run (the rest stay "
        "pending; stop the route's schedules and sensors while trying a new route)",
    )

    def request(self) -> DeliveryRequest:
        most = self.max_orders if self.limit is None else min(self.max_orders, self.limit)
        return DeliveryRequest(most, tuple(self.resend_failed), self.resend_all_failed)


class FetchConfig(dg.Config):
    limit: int | None = Field(
        default=None,
        ge=1,
        description="Test mode: stage at most this many of the window's orders (a run "
        "without it reads the window whole again)",
    )


class OrderFileConfig(dg.Config):
    file_name: str = Field(
        default="",
        description="The file's name when it was picked up (looked for first; any file in the "
        "folder with the partition's content is read otherwise)",
    )


def is_file_route(route: RouteConfig) -> bool:
    """Whether the route reads order files (one partition per file) instead of a shop."""
    return isinstance(route.source, CsvFolderSource)


def files_partitions(route: RouteConfig) -> dg.DynamicPartitionsDefinition:
    """A file route's partitions: one per file, keyed by its content's SHA-256."""
    return dg.DynamicPartitionsDefinition(name=f"{route.id}__files")


def build_route_assets(route: RouteConfig) -> RouteAssets:
    """The route's assets: keys ``<route_id>/...``, group ``<route_id>``."""
    hooks = RouteHooks.load(route.hooks)
    mapping = RouteMapping(
        route.rules(), route.mapping.account_match, hooks.before_mapping, hooks.after_mapping
    )
    delivery = RouteDelivery(route.id, mapping.rules.allowed_countries, hooks.before_send)
    windows: dg.TimeWindowPartitionsDefinition | dg.DynamicPartitionsDefinition
    if is_file_route(route):
        windows = files_partitions(route)
        source_orders = _file_source_orders(route, windows)
    else:
        windows = dg.TimeWindowPartitionsDefinition(
            cron_schedule=route.schedule.incoming,
            start=route.partitions_start or settings.default_partitions_start(),
            fmt=settings.PARTITION_FORMAT,
            timezone="UTC",
        )
        source_orders = _source_orders(route, windows)
    erp_orders = _erp_orders(route, windows, source_orders, mapping)
    erp_delivered_orders = _erp_delivered_orders(route, erp_orders, delivery)
    writeback = (
        build_writeback_asset(route, erp_delivered_orders) if route.writeback.enabled else None
    )
    return RouteAssets(route, windows, source_orders, erp_orders, erp_delivered_orders, writeback)


#: The ledger's backend as a reader knows it, for asset descriptions.
_LEDGER_NAMES = {"duckdb": "DuckDB", "postgres": "PostgreSQL"}


def _source_orders(
    route: RouteConfig, windows: dg.TimeWindowPartitionsDefinition
) -> dg.AssetsDefinition:
    @dg.asset(
        key=[route.id, "source_orders"],
        partitions_def=windows,
        backfill_policy=dg.BackfillPolicy.single_run(),
        group_name=route.id,
        kinds={route.source.type, settings.ledger_kind()},
        required_resource_keys={route.shop_key, route.erp_key, "duckdb"},
        # A route whose fetches stall turns this asset red in the UI.
        freshness_policy=dg.FreshnessPolicy.time_window(
            fail_window=timedelta(minutes=30), warn_window=timedelta(minutes=15)
        ),
        description="Shop orders created in each window (UTC, half-open), staged in the "
        f"ledger ({_LEDGER_NAMES[settings.ledger_kind()]}). "
        f"Route: {route.name}.",
    )
    def source_orders(
        context: dg.AssetExecutionContext, config: FetchConfig
    ) -> dg.MaterializeResult:
        shop: ShopResource | SprykerResource = getattr(context.resources, route.shop_key)
        ledger = _ledger(context, route)
        # Refuses a shop other than the one its rows came from.
        ledger.endpoints.bind_shop(shop.api_url)
        open_client = shop.get_client
        if isinstance(shop, ShopResource) and _reads_methods(route):
            open_client = partial(shop.get_client, with_methods=True)
        report = fetch_window(
            ledger,
            open_client,
            _window(context, route, ledger),
            page_size=route.page_size,
            run_id=context.run.run_id,
            log=context.log,
            late_orders=route.late_orders,
            limit=config.limit,
        )
        return dg.MaterializeResult(metadata=as_metadata(report))

    return source_orders


def _file_source_orders(
    route: RouteConfig, files: dg.DynamicPartitionsDefinition
) -> dg.AssetsDefinition:
    @dg.asset(
        key=[route.id, "source_orders"],
        partitions_def=files,
        group_name=route.id,
        kinds={route.source.type, settings.ledger_kind()},
        required_resource_keys={route.shop_key, route.erp_key, "duckdb"},
        description="Orders of each CSV file dropped in the route's folder (one partition per "
        "file, keyed by its content's SHA-256), validated and staged in the ledger "
        f"({_LEDGER_NAMES[settings.ledger_kind()]}); a file that is not the route's CSV is "
        f"moved to {REJECTED_FOLDER}/. Route: {route.name}.",
    )
    def source_orders(
        context: dg.AssetExecutionContext, config: OrderFileConfig
    ) -> dg.MaterializeResult:
        folder: CsvFolderResource = getattr(context.resources, route.shop_key)
        assert isinstance(route.source, CsvFolderSource)
        report = read_order_file(
            _ledger(context, route),
            folder.path(),
            context.partition_key,
            route.source,
            file_name=config.file_name,
            run_id=context.run.run_id,
            log=context.log,
        )
        return dg.MaterializeResult(metadata=as_metadata(report))

    return source_orders


def _erp_orders(
    route: RouteConfig,
    windows: dg.TimeWindowPartitionsDefinition | dg.DynamicPartitionsDefinition,
    source_orders: dg.AssetsDefinition,
    mapping: RouteMapping,
) -> dg.AssetsDefinition:
    @dg.asset(
        key=[route.id, "erp_orders"],
        partitions_def=windows,
        # A file's mapping reads that file's orders: one run per file, as its reading.
        backfill_policy=None if is_file_route(route) else dg.BackfillPolicy.single_run(),
        deps=[source_orders],
        group_name=route.id,
        kinds={"python", settings.ledger_kind()},
        required_resource_keys={route.erp_key, "duckdb"},
        description=f"Staged orders that pass the route's filter ({_filter_text(route)}), "
        "mapped to ERP sales orders; unmappable ones quarantined with a reason.",
    )
    def erp_orders(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        erp: ErpResource = getattr(context.resources, route.erp_key)
        ledger = _ledger(context, route)
        ledger.endpoints.bind_erp(erp.api_url, erp.division)  # account ids belong to one division
        run_id = context.run.run_id
        report = map_window(
            ledger,
            partial(erp_client, erp, ledger, holder=run_id),
            mapping,
            _window(context, route, ledger),
            run_id=run_id,
            log=context.log,
        )
        return dg.MaterializeResult(metadata=as_metadata(report))

    return erp_orders


def _erp_delivered_orders(
    route: RouteConfig, erp_orders: dg.AssetsDefinition, delivery: RouteDelivery
) -> dg.AssetsDefinition:
    @dg.asset(
        key=[route.id, "erp_delivered_orders"],
        deps=[erp_orders],
        group_name=route.id,
        kinds={"exactonline", settings.ledger_kind()},
        op_tags={DELIVERY_TAG: route.id},
        required_resource_keys={route.erp_key, "duckdb"},
        freshness_policy=dg.FreshnessPolicy.time_window(
            fail_window=timedelta(minutes=20), warn_window=timedelta(minutes=10)
        ),
        description="Mapped orders sent to the ERP exactly once, recorded in the "
        f"{_LEDGER_NAMES[settings.ledger_kind()]} table delivered_orders.",
    )
    def erp_delivered_orders(
        context: dg.AssetExecutionContext, config: DeliveryConfig
    ) -> dg.MaterializeResult:
        erp: ErpResource = getattr(context.resources, route.erp_key)
        ledger = _ledger(context, route)
        # Refuses an ERP other than the one the ledger's rows were delivered to, naming both.
        ledger.endpoints.bind_erp(erp.api_url, erp.division)
        if config.dry_run:
            shown = preview(ledger, delivery, config.request().max_orders, context.log)
            return dg.MaterializeResult(metadata=as_metadata(shown))
        run_id = context.run.run_id
        report = DeliveryRun(
            ledger,
            delivery,
            config.request(),
            run_id=run_id,
            open_client=partial(erp_client, erp, ledger, holder=run_id),
            log=context.log,
            observe=partial(_observe, context),
            run_is_over=partial(_run_is_over, context.instance),
        ).run()
        metadata = as_metadata(report)
        metadata["latest_delivered"] = latest_delivered_table(ledger.views)
        return dg.MaterializeResult(metadata=metadata)

    return erp_delivered_orders


def _ledger(context: dg.AssetExecutionContext, route: RouteConfig) -> Ledger:
    erp: ErpResource = getattr(context.resources, route.erp_key)
    return open_ledger(context.resources.duckdb, route.id, erp.token_key)


def _reads_methods(route: RouteConfig) -> bool:
    """Whether the route's look-ups read the orders' shipping or payment method (the order
    search then loads them too)."""
    lookups = route.mapping.lookups
    return lookups.shipping_method is not None or lookups.payment_method is not None


def _window(context: dg.AssetExecutionContext, route: RouteConfig, ledger: Ledger) -> Window:
    """The partition's window; for a file, the span of its orders, read from ``ledger``."""
    if is_file_route(route):
        return file_window(ledger, context.partition_key)
    window = context.partition_time_window
    return Window(window.start, window.end, route.lookback)


def _observe(context: dg.AssetExecutionContext, progress: DeliveryProgress) -> None:
    """An observation of the delivery asset mid-run: what the run sent so far."""
    context.log_event(
        dg.AssetObservation(asset_key=context.asset_key, metadata=as_metadata(progress))
    )


def _run_is_over(instance: dg.DagsterInstance, run_id: str) -> bool:
    """True only when this instance knows the run and it finished (success, failure, canceled):
    a run it does not know (another instance, the CLI) may still be alive."""
    run = instance.get_run_by_id(run_id)
    return run is not None and run.is_finished


def _filter_text(route: RouteConfig) -> str:
    countries = route.filter.countries
    text = "EU-27" if countries == "EU" else ", ".join(countries)
    if route.filter.order_states:
        text += "; states " + ", ".join(route.filter.order_states)
    return text


__all__ = [
    "DELIVERY_TAG",
    "FILE_TAG",
    "DeliveryConfig",
    "FetchConfig",
    "OrderFileConfig",
    "RouteAssets",
    "build_route_assets",
    "files_partitions",
    "is_file_route",
]
