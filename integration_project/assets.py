"""A route's three assets, built from its :class:`RouteConfig`.

Thin on purpose: clients fetch and send, transforms decide, the ledger remembers; the assets
wire them together and tell the UI what happened. Every key is prefixed by the route id
(``<route_id>/source_orders``), every ledger row carries it, so routes never cross-talk.
"""

import itertools
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import dagster as dg
import duckdb
from pydantic import Field

from integration_project import settings
from integration_project.exact.client import (
    BudgetExhausted,
    ExactClient,
    OutcomeUnknown,
    RateLimited,
    ValidationRejected,
)
from integration_project.exact.models import (
    ACCOUNT_CODE_WIDTH,
    AccountCreate,
    VatCode,
    account_code,
)
from integration_project.http import ApiError, AuthError
from integration_project.ledger import (
    InFlight,
    Ledger,
    MappingRow,
    Outcome,
    PendingOrder,
    endpoint_host,
    parse_created_at,
)
from integration_project.redact import mask_emails
from integration_project.resources import ErpResource, ShopResource, erp_client, open_ledger
from integration_project.routes.config import RouteConfig, load_hook
from integration_project.shopware.models import (
    json_problem,
    order_number_text,
    storable_text,
    unreadable_reason,
)
from integration_project.transforms import (
    MappedOrder,
    MappingRules,
    Quarantined,
    Skipped,
    UnknownItemError,
    UnknownVatCodeError,
    choose_vat_code,
    evaluate_order,
    to_sales_order,
)

DELIVERY_TAG = "integration_project/delivery"
#: A delivery run renews its lease before every order; a killed run's lease lapses after this.
LEASE_TTL = timedelta(minutes=3)
#: Stop a delivery run after this many unknown outcomes in a row: the ERP is in trouble.
MAX_CONSECUTIVE_UNKNOWN = 3
PREVIEW_ROWS = 10
#: erp_orders fails after this many orders in a row hit a transient ERP error (it is down).
MAX_CONSECUTIVE_DEFERRED = 5
#: Orders claimed per DuckDB write during delivery (at most this many are looked up after a
#: delivery process is killed).
CLAIM_BATCH = 10
#: A long delivery run reports its progress (an observation and a log line) every this many.
PROGRESS_EVERY = 5 * CLAIM_BATCH
#: Older staged-but-never-mapped orders one erp_orders run maps besides its window.
CATCH_UP_LIMIT = 2000
#: The division's VAT codes are fetched again after this long (or when a rate has no code).
VAT_CODES_TTL = timedelta(hours=24)

Hook = Callable[..., Any]


@dataclass(frozen=True)
class RouteAssets:
    route: RouteConfig
    partitions_def: dg.TimeWindowPartitionsDefinition
    source_orders: dg.AssetsDefinition
    erp_orders: dg.AssetsDefinition
    erp_delivered_orders: dg.AssetsDefinition

    @property
    def all(self) -> list[dg.AssetsDefinition]:
        return [self.source_orders, self.erp_orders, self.erp_delivered_orders]


def md_table(header: list[str], rows: list[list[Any]]) -> dg.MetadataValue:
    """A markdown table for the UI's metadata (previews), e-mail addresses masked."""

    def cell(value: Any) -> str:
        # Every preview cell: e-mail addresses masked (README, "Personal data").
        text = mask_emails(str(value if value is not None else ""))
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    if not rows:
        lines.append("| " + " | ".join("" for _ in header) + " |")
    return dg.MetadataValue.md("\n".join(lines))


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


def _hook(path: str | None) -> Hook | None:
    return load_hook(path) if path else None


def build_route_assets(route: RouteConfig) -> RouteAssets:
    """The route's assets: keys ``<route_id>/...``, group ``<route_id>``."""
    route_id = route.id
    shop_key, erp_key = route.shop_key, route.erp_key
    rules = route.rules()
    allowed = rules.allowed_countries
    lookback = route.lookback
    before_mapping = _hook(route.hooks.before_mapping)
    after_mapping = _hook(route.hooks.after_mapping)
    before_send = _hook(route.hooks.before_send)
    windows = dg.TimeWindowPartitionsDefinition(
        cron_schedule=route.schedule.incoming,
        start=route.partitions_start or settings.default_partitions_start(),
        fmt=settings.PARTITION_FORMAT,
        timezone="UTC",
    )

    def ledger_for(context: dg.AssetExecutionContext) -> Ledger:
        erp: ErpResource = getattr(context.resources, erp_key)
        return open_ledger(context.resources.duckdb, route_id, erp.token_key)

    @dg.asset(
        key=[route_id, "source_orders"],
        partitions_def=windows,
        backfill_policy=dg.BackfillPolicy.single_run(),
        group_name=route_id,
        kinds={"shopware", "duckdb"},
        required_resource_keys={shop_key, erp_key, "duckdb"},
        # A route whose fetches stall turns this asset red in the UI.
        freshness_policy=dg.FreshnessPolicy.time_window(
            fail_window=timedelta(minutes=30), warn_window=timedelta(minutes=15)
        ),
        description=f"Shop orders created in each window (UTC, half-open), staged in DuckDB. "
        f"Route: {route.name}.",
    )
    def source_orders(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        shop: ShopResource = getattr(context.resources, shop_key)
        window = context.partition_time_window
        start = window.start - lookback  # re-read late arrivals; staging is an upsert
        ledger = ledger_for(context)
        # Refuses a shop other than the one its rows came from.
        ledger.endpoints.bind_shop(shop.api_url)
        ledger.staging.begin_fetch(context.run_id)
        fetched = pages = 0
        preview: list[list[Any]] = []
        try:
            with shop.get_client() as client:
                # One paging pass over the whole range (a backfill is one run), page by page.
                for page in client.iter_order_pages(
                    start=start, end=window.end, page_size=route.page_size
                ):
                    pages += 1
                    fetched += ledger.staging.stage_page(context.run_id, page.orders, window.start)
                    for order in page.orders[: max(0, PREVIEW_ROWS - len(preview))]:
                        preview.append(_order_preview(order))
            new, updated = ledger.staging.commit_fetch(context.run_id)
        except BaseException:
            ledger.staging.abort_fetch(context.run_id)  # staged_orders stays as it was
            raise
        context.log.info(
            "Fetched %s orders in %s pages for [%s, %s): %s new, %s re-fetched",
            fetched,
            pages,
            start.isoformat(),
            window.end.isoformat(),
            new,
            updated,
        )
        return dg.MaterializeResult(
            metadata={
                "fetched": fetched,
                "new": new,
                "refetched": updated,
                "pages": pages,
                "window_start": window.start.isoformat(),
                "window_end": window.end.isoformat(),
                "lookback_minutes": lookback.total_seconds() / 60,
                "dagster/row_count": ledger.staging.count(window.start, window.end),
                "preview": md_table(
                    ["orderNumber", "createdAt", "ships to", "amountTotal", "currency"], preview
                ),
            }
        )

    @dg.asset(
        key=[route_id, "erp_orders"],
        partitions_def=windows,
        backfill_policy=dg.BackfillPolicy.single_run(),
        deps=[source_orders],
        group_name=route_id,
        kinds={"python", "duckdb"},
        required_resource_keys={erp_key, "duckdb"},
        description=f"Staged orders that pass the route's filter ({_filter_text(route)}), "
        "mapped to ERP sales orders; unmappable ones quarantined with a reason.",
    )
    def erp_orders(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        erp: ErpResource = getattr(context.resources, erp_key)
        window = context.partition_time_window
        ledger = ledger_for(context)
        ledger.endpoints.bind_erp(erp.api_url, erp.division)  # account ids belong to one division
        counts: Counter[str] = Counter()
        quarantine_preview: list[list[Any]] = []
        payload_preview: list[list[Any]] = []
        with erp_client(erp, ledger, holder=context.run_id) as client:
            resolver = _Resolver(ledger, client, context, route.mapping.account_match)
            # The window and its look-back, then older orders that were staged but never
            # mapped (a window whose mapping failed for longer than the look-back).
            older = ledger.staging.unmapped_before(window.start - lookback, CATCH_UP_LIMIT)
            if older:
                context.log.warning(
                    "Also mapping %s staged orders from before the look-back that were never "
                    "mapped (their window's erp_orders run failed)",
                    len(older),
                )
            batches = itertools.chain(
                ledger.staging.batches(window.start - lookback, window.end),
                [older] if older else [],
            )
            deferred = consecutive_deferred = 0
            for batch in batches:
                resolver.prefetch([staged.payload for staged in batch])
                rows: list[MappingRow] = []
                for staged in batch:
                    # Any shape may arrive here (null, a number, a stand-in for an order that
                    # could not be staged as it came): each one ends as a row, never a crash.
                    number = order_number_text(staged.payload)
                    created_at = (
                        parse_created_at(
                            staged.payload.get("createdAt")
                            if isinstance(staged.payload, dict)
                            else None
                        )
                        or window.start
                    )
                    try:
                        row = _map_one(
                            staged.payload,
                            staged.shop_order_id,
                            created_at,
                            rules,
                            resolver,
                            before_mapping,
                            after_mapping,
                        )
                    except (AuthError, RateLimited, BudgetExhausted):
                        raise  # nothing later in the run would fare better
                    except ApiError as exc:
                        # A transient ERP error on this order's look-ups: it keeps no row, so
                        # the next run maps it (look-back, or catch-up when older).
                        deferred += 1
                        consecutive_deferred += 1
                        context.log.warning(
                            "Order %s not mapped this run (%s); the next run tries again",
                            number or staged.shop_order_id,
                            exc,
                        )
                        if consecutive_deferred >= MAX_CONSECUTIVE_DEFERRED:
                            raise
                        continue
                    except (duckdb.Error, OSError):
                        raise  # the ledger or the disk: every order would fail alike
                    except Exception as exc:
                        # A shape nothing foresaw (or a bug) fails this order, not the window:
                        # quarantined with what went wrong; the look-back maps it again.
                        reason = f"mapping failed unexpectedly: {_error_text(exc)}"
                        context.log.error(
                            "Order %s quarantined: %s", number or staged.shop_order_id, reason
                        )
                        row = MappingRow(
                            staged.shop_order_id,
                            number,
                            created_at,
                            "quarantined",
                            None,
                            reason,
                            None,
                        )
                    consecutive_deferred = 0
                    rows.append(row)
                    counts[row.status] += 1
                    if row.status == "quarantined" and len(quarantine_preview) < PREVIEW_ROWS:
                        quarantine_preview.append([row.order_number, row.reason])
                    if row.status == "mapped" and len(payload_preview) < 3:
                        payload_preview.append(
                            [row.order_number, json.dumps(row.payload, ensure_ascii=False)]
                        )
                ledger.mapped.record(rows, context.run_id)
        staged_total = sum(counts.values())
        context.log.info(
            "Mapped %s of %s orders for [%s, %s): %s outside the route's countries, %s "
            "quarantined, %s deferred; %s ERP look-ups, %s ERP accounts created",
            counts["mapped"],
            staged_total,
            (window.start - lookback).isoformat(),
            window.end.isoformat(),
            counts["skipped"],
            counts["quarantined"],
            deferred,
            resolver.erp_lookups,
            resolver.accounts_created,
        )
        if counts["quarantined"]:
            context.log.warning(
                "%s of %s orders quarantined; see the 'quarantined_preview' metadata",
                counts["quarantined"],
                staged_total,
            )
        return dg.MaterializeResult(
            metadata={
                "staged": staged_total,
                # Orders that pass the filter (the quarantined ones among them too).
                "eu": staged_total - counts["skipped"],
                "mapped": counts["mapped"],
                "dropped_non_eu": counts["skipped"],
                "quarantined": counts["quarantined"],
                # Orders of earlier windows mapped now because their own run had failed.
                "caught_up": len(older),
                # Orders left for the next run after a transient ERP error on their look-ups.
                "deferred": deferred,
                "erp_lookups": resolver.erp_lookups,
                "erp_accounts_created": resolver.accounts_created,
                "allowed_countries": ", ".join(sorted(rules.allowed_countries)),
                "dagster/row_count": counts["mapped"],
                "quarantined_preview": md_table(["orderNumber", "reason"], quarantine_preview),
                "payload_preview": md_table(["orderNumber", "ERP sales order"], payload_preview),
            }
        )

    @dg.asset(
        key=[route_id, "erp_delivered_orders"],
        deps=[erp_orders],
        group_name=route_id,
        kinds={"exactonline", "duckdb"},
        op_tags={DELIVERY_TAG: route_id},
        required_resource_keys={erp_key, "duckdb"},
        freshness_policy=dg.FreshnessPolicy.time_window(
            fail_window=timedelta(minutes=20), warn_window=timedelta(minutes=10)
        ),
        description="Mapped orders sent to the ERP exactly once, recorded in the DuckDB table "
        "delivered_orders.",
    )
    def erp_delivered_orders(
        context: dg.AssetExecutionContext, config: DeliveryConfig
    ) -> dg.MaterializeResult:
        erp: ErpResource = getattr(context.resources, erp_key)
        ledger = ledger_for(context)
        # Refuses an ERP other than the one the ledger's rows were delivered to, naming both.
        ledger.endpoints.bind_erp(erp.api_url, erp.division)
        if config.dry_run:
            return _preview(context, ledger, config.max_orders, before_send, allowed)
        run_id = context.run_id
        lease = f"erp_delivery:{route_id}"
        holder = ledger.lease.acquire(lease, run_id, LEASE_TTL)
        if holder is not None and _run_is_over(context.instance, holder):
            # Its worker died (SIGKILL, OOM) and run monitoring marked the run over: its rows in
            # `sending` are looked up below, so taking over cannot send anything twice.
            context.log.warning("Delivery run %s is over but held the lease; taking it", holder)
            holder = ledger.lease.acquire(lease, run_id, LEASE_TTL, take_over_from=holder)
        if holder is not None:
            # The run queue keeps delivery runs apart; this covers runs that bypass it (the CLI).
            context.log.warning("Delivery run %s holds the lease; this run sends nothing", holder)
            counts = ledger.views.delivery_counts()
            pending_left, _ = ledger.deliveries.waiting(allowed)
            # The ledger's totals, so this materialisation does not hide what the sending run
            # is doing behind "sent 0" and an empty row count.
            return dg.MaterializeResult(
                metadata={
                    "skipped": f"delivery run {holder} was already sending",
                    "sent": 0,
                    "sending_run": holder,
                    "pending_left": pending_left,
                    "ledger_delivered": counts.get("delivered", 0),
                    "ledger_sending": counts.get("sending", 0),
                    "dagster/row_count": counts.get("delivered", 0),
                }
            )
        tally: Counter[str] = Counter()
        sent_preview: list[list[Any]] = []
        client: ExactClient | None = None
        try:
            requeued = _requeue_failed(context, ledger, config)
            with erp_client(erp, ledger, holder=run_id) as client:
                stopped = _deliver(
                    context,
                    ledger,
                    client,
                    lease,
                    config.max_orders,
                    allowed,
                    before_send,
                    tally,
                    sent_preview,
                )
        finally:
            ledger.lease.release(lease, run_id)
        counts = ledger.views.delivery_counts()
        pending_left, oldest_pending_age_s = ledger.deliveries.waiting(allowed)
        held_back, held_sample = ledger.mapped.outside_countries(allowed, limit=5)
        if held_back:
            # The blocking country check fails on these too; they wait for a fixed mapping.
            context.log.error(
                "%s mapped orders have a country outside the route's set and were not sent "
                "(e.g. %s): fix the mapping or the filter and re-materialise erp_orders",
                held_back,
                ", ".join(f"{number} ({country})" for number, country in held_sample),
            )
        context.log.info(
            "Sent %s orders to the ERP (%s already there, %s conflicts, %s failed, %s unknown); "
            "%s wait; the ledger holds %s delivered; %s ERP calls",
            tally["sent"],
            tally["found_in_erp"],
            tally["conflict"],
            tally["failed"],
            tally["unknown"],
            pending_left,
            counts.get("delivered", 0),
            client.calls if client else 0,
        )
        if stopped:
            context.log.warning("Delivery stopped early: %s; %s orders wait", stopped, pending_left)
        rate = client.rate_limit if client else None
        metadata: dict[str, Any] = {
            "sent": tally["sent"],
            "found_in_erp": tally["found_in_erp"],
            # The ERP holds a different order under the YourRef (see the conflict check).
            "conflicts": tally["conflict"],
            "failed": tally["failed"],
            "unknown_outcome": tally["unknown"],
            "pending_left": pending_left,
            "held_back_outside_countries": held_back,
            # How long the longest-waiting order has waited since it was mapped (0: none wait).
            "oldest_pending_age_s": oldest_pending_age_s or 0.0,
            "erp_calls": client.calls if client else 0,
            "ledger_delivered": counts.get("delivered", 0),
            "ledger_failed": counts.get("failed", 0),
            "ledger_sending": counts.get("sending", 0),
            "ledger_conflict": counts.get("conflict", 0),
            "erp_host": endpoint_host(erp.api_url),
            "erp_division": str(erp.division),
            "dagster/row_count": counts.get("delivered", 0),
            "stopped_early": stopped or "no",
            # Longest wait from mapping to the ERP among the orders this run delivered.
            "latency_seconds_max": ledger.views.latency_seconds_max(run_id),
            "sent_preview": md_table(
                ["orderNumber", "ERP OrderNumber", "ERP OrderID"], sent_preview
            ),
        }
        metadata["requeued"] = requeued  # failed orders an operator asked to send again
        if rate is not None:
            if rate.minutely_remaining is not None:
                metadata["erp_calls_left_minute"] = rate.minutely_remaining
            if rate.daily_remaining is not None:
                metadata["erp_calls_left_day"] = rate.daily_remaining
        return dg.MaterializeResult(metadata=metadata)

    return RouteAssets(route, windows, source_orders, erp_orders, erp_delivered_orders)


def _filter_text(route: RouteConfig) -> str:
    countries = route.filter.countries
    text = "EU-27" if countries == "EU" else ", ".join(countries)
    if route.filter.order_states:
        text += "; states " + ", ".join(route.filter.order_states)
    return text


def _order_preview(order: Any) -> list[Any]:
    """A preview row of a raw order, whatever its shape: short text cells, never a crash."""
    if not isinstance(order, dict):
        return [f"? ({_kind(order)})", "", "", "", ""]
    deliveries = order.get("deliveries")
    first = deliveries[0] if isinstance(deliveries, list) and deliveries else None
    address = first.get("shippingOrderAddress") if isinstance(first, dict) else None
    if not isinstance(address, dict):
        address = order.get("billingAddress")
    country = address.get("country") if isinstance(address, dict) else None
    currency = order.get("currency")
    return [
        _cell(order.get("orderNumber")),
        _cell(order.get("createdAt")),
        _cell(country.get("iso") if isinstance(country, dict) else None),
        _cell(order.get("amountTotal")),
        _cell(currency.get("isoCode") if isinstance(currency, dict) else None),
    ]


def _cell(value: Any) -> str | int | float | None:
    """A scalar as it is (text cut to 40 characters); anything else as its kind."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int) and value.bit_length() > 64:
        return "<a long number>"
    if isinstance(value, int | float):
        return value
    if isinstance(value, str):
        return storable_text(value, 40)
    return f"<{type(value).__name__}>"


# --- mapping ---------------------------------------------------------------------------------


class AccountUnresolved(Exception):
    """The route's rule does not name exactly one ERP account for the order (quarantined)."""


class _Resolver:
    """Customer e-mail → ERP account id, product number → ERP item id; DuckDB-cached so that a
    steady-state order costs the ERP nothing here, and remembered for the run so that a large
    backfill does not open a DuckDB connection per order (each open costs tens of ms)."""

    def __init__(
        self,
        ledger: Ledger,
        client: ExactClient,
        context: dg.AssetExecutionContext,
        match: str = "email",
    ):
        self._ledger = ledger
        self._match = match  # "email" or "customer_number": how orders find their account
        self._client = client
        self._log = context.log
        self.erp_lookups = 0
        self.accounts_created = 0
        #: lower-cased e-mail (or ``customer-number:<n>``) → account id, this run
        self._accounts: dict[str, str] = {}
        self._items: dict[str, str | None] = {}  # item code → id (None: unknown), this run
        self._not_cached: set[str] = set()  # e-mails prefetched and not in the DuckDB cache
        self._vat_codes: list[VatCode] | None = None  # the division's, this run
        self._vat_codes_fetched = False  # asked the ERP this run

    def prefetch(self, payloads: list[Any]) -> None:
        """Load the DuckDB cache for a batch of raw orders in two queries, instead of one per
        order: a look-back re-maps an hour of orders every tick."""
        emails: set[str] = set()
        codes: set[str] = set()
        for payload in payloads:
            if not isinstance(payload, dict):
                continue
            customer = payload.get("orderCustomer")
            if self._match == "customer_number":
                number = customer.get("customerNumber") if isinstance(customer, dict) else None
                if isinstance(number, str | int) and str(number).strip():
                    emails.add(f"customer-number:{str(number).strip()}".lower())
            else:
                email = customer.get("email") if isinstance(customer, dict) else None
                if isinstance(email, str) and email.strip():
                    emails.add(email.strip().lower())
            lines = payload.get("lineItems")
            for line in lines if isinstance(lines, list) else []:
                extra = line.get("payload") if isinstance(line, dict) else None
                code = extra.get("productNumber") if isinstance(extra, dict) else None
                if isinstance(code, str) and code:
                    codes.add(code)
        unseen_emails = emails - self._accounts.keys() - self._not_cached
        if unseen_emails:
            found = self._ledger.lookups.cached_accounts(unseen_emails)
            self._accounts.update(found)
            self._not_cached |= unseen_emails - found.keys()
        unseen_codes = codes - self._items.keys()
        if unseen_codes:
            self._items.update(self._ledger.lookups.cached_items(unseen_codes))

    def account_for(self, order: MappedOrder) -> str:
        """The ERP account the order is booked to, found (or created) by the route's rule:
        the customer's e-mail (the default), or the customer number kept in the account's
        ``Code``. :class:`AccountUnresolved` when the rule cannot name exactly one account."""
        if self._match == "customer_number":
            number = order.customer_number.strip()
            if not number:
                raise AccountUnresolved(
                    "the order has no customer number (orderCustomer.customerNumber), and the "
                    "route finds ERP accounts by it (mapping.account_match: customer_number)"
                )
            if len(number) > ACCOUNT_CODE_WIDTH:
                raise AccountUnresolved(
                    f"customer number {number!r} is longer than an ERP account code "
                    f"({ACCOUNT_CODE_WIDTH} characters)"
                )
            key = f"customer-number:{number}".lower()
        else:
            key = order.customer_email.lower()
        if key in self._accounts:
            return self._accounts[key]
        cached = None if key in self._not_cached else self._ledger.lookups.cached_account(key)
        if cached:
            self._accounts[key] = cached
            return cached
        account_id = self._find_account(order)
        if account_id is None:
            account = AccountCreate(
                Name=order.customer_name,
                Email=order.customer_email,
                Country=order.customer_country,
                Code=account_code(order.customer_number)
                if self._match == "customer_number"
                else None,
            )
            try:
                account_id = self._client.create_account(account)
            except OutcomeUnknown:
                # Not retried blindly: the answer was lost, so look the account up again.
                # Found: the ERP did create it. Not found: it did not; the order is deferred
                # to the next run.
                account_id = self._find_account(order)
                if account_id is None:
                    raise
                self._log.info(
                    "Account for order %s was created; its answer was lost", order.order_number
                )
            self.accounts_created += 1
            self._log.debug("Created ERP account for order %s", order.order_number)
        self._ledger.lookups.cache_account(key, account_id)
        self._accounts[key] = account_id
        return account_id

    def _find_account(self, order: MappedOrder) -> str | None:
        """The one account the rule names, None when there is none. Several accounts are an
        :class:`AccountUnresolved` naming them: the shop does not verify e-mail addresses, so
        taking the first could book the order to somebody else."""
        self.erp_lookups += 1
        if self._match == "customer_number":
            found = self._client.find_accounts_by_code(order.customer_number)
            what = f"the customer number {order.customer_number.strip()!r} as their code"
        else:
            found = self._client.find_accounts(order.customer_email)
            what = "the customer's e-mail address"
        if len(found) > 1:
            names = ", ".join(
                f"{(a.Code or '').strip() or '?'} ({a.Name or 'no name'})" for a in found[:5]
            )
            more = f" and {len(found) - 5} more" if len(found) > 5 else ""
            raise AccountUnresolved(
                f"{len(found)} ERP accounts have {what}: codes {names}{more}. Merge them in "
                "the ERP, or find accounts by customer number (mapping.account_match: "
                "customer_number)"
            )
        return found[0].ID if found else None

    def vat_codes_for(self, rates: frozenset[Decimal]) -> dict[Decimal, str]:
        """The division's VAT code for each rate (percent), from ``vat/VATCodes``.

        The list is cached in DuckDB for :data:`VAT_CODES_TTL` (one call a day per division),
        and fetched again, once per run, when a rate has no code: an accountant may just have
        created it. :class:`UnknownVatCodeError` when a rate has no code or several.
        """
        found: dict[Decimal, str] = {}
        for rate in sorted(rates):
            try:
                found[rate] = choose_vat_code(rate, self._division_vat_codes())
            except UnknownVatCodeError:
                if self._vat_codes_fetched:
                    raise
                found[rate] = choose_vat_code(rate, self._division_vat_codes(refresh=True))
        return found

    def _division_vat_codes(self, *, refresh: bool = False) -> list[VatCode]:
        if self._vat_codes is None and not refresh:
            codes, cached_at = self._ledger.lookups.cached_vat_codes()
            if cached_at is not None and cached_at > datetime.now(UTC) - VAT_CODES_TTL:
                self._vat_codes = codes
        if self._vat_codes is None or refresh:
            self.erp_lookups += 1
            self._vat_codes = self._client.list_vat_codes()
            self._vat_codes_fetched = True
            self._ledger.lookups.cache_vat_codes(self._vat_codes)
            self._log.info(
                "Fetched the ERP division's %s VAT codes (vat/VATCodes)", len(self._vat_codes)
            )
        return self._vat_codes

    def items_for(self, codes: frozenset[str]) -> dict[str, str]:
        unseen = codes - self._items.keys()
        if unseen:
            cached = self._ledger.lookups.cached_items(unseen)
            for code in sorted(unseen - cached.keys()):
                self.erp_lookups += 1
                cached[code] = self._client.find_item_id(code)
                # A miss is remembered for a while.
                self._ledger.lookups.cache_item(code, cached[code])
            self._items.update(cached)
        return {code: self._items[code] for code in codes if self._items[code] is not None}


def _map_one(
    payload: Any,
    shop_order_id: str,
    created_at: Any,
    rules: MappingRules,
    resolver: _Resolver,
    before_mapping: Hook | None,
    after_mapping: Hook | None,
) -> MappingRow:
    # Text for the ledger whatever the shop sent: 10001 and "10001" alike.
    number = order_number_text(payload)

    def row(status: str, country: str | None, reason: str | None, body: Any = None) -> MappingRow:
        text = storable_text(reason, 1000) if reason is not None else None
        return MappingRow(shop_order_id, number, created_at, status, country, text, body)

    unreadable = unreadable_reason(payload)
    if unreadable is not None:  # staging's stand-in for an order it could not keep: no hook
        return row("quarantined", None, unreadable)
    if before_mapping is not None:
        name = _hook_name("before_mapping", before_mapping)
        try:
            payload = before_mapping(payload)
        except Exception as exc:
            return row("quarantined", None, f"{name} raised {_error_text(exc)}")
        if payload is None:
            return row("skipped", None, "dropped by the before_mapping hook")
        if not isinstance(payload, dict):
            return row(
                "quarantined",
                None,
                f"{name} returned {_kind(payload)}, not the order (a dict) or None to skip it",
            )
    outcome = evaluate_order(payload, rules)
    if isinstance(outcome, Skipped):
        return row("skipped", outcome.country, outcome.reason)
    if isinstance(outcome, Quarantined):
        return row("quarantined", None, outcome.reason)
    assert isinstance(outcome, MappedOrder)
    try:
        # VAT codes first: an order that cannot be taxed creates no ERP account.
        vat_codes = resolver.vat_codes_for(outcome.vat_rates_to_look_up)
        account_id = resolver.account_for(outcome)
        body = to_sales_order(
            outcome,
            account_id=account_id,
            item_ids=resolver.items_for(outcome.item_codes),
            vat_codes=vat_codes,
        )
    except (UnknownItemError, AccountUnresolved) as exc:
        return row("quarantined", outcome.shipping_country, str(exc))
    except UnknownVatCodeError as exc:
        lines = [line.description for line in outcome.lines if line.vat_rate == exc.rate]
        where = f" (lines: {'; '.join(lines)})"[:300] if lines else ""
        return row("quarantined", outcome.shipping_country, f"{exc}{where}")
    except ValidationRejected as exc:
        reason = f"the ERP refused the customer account: {exc.erp_message}"
        return row("quarantined", outcome.shipping_country, reason)
    if after_mapping is not None:
        name = _hook_name("after_mapping", after_mapping)
        try:
            body = after_mapping(body, payload)
        except Exception as exc:
            return row("quarantined", outcome.shipping_country, f"{name} raised {_error_text(exc)}")
        problem = _sales_order_problem(body)
        if problem is not None:
            return row("quarantined", outcome.shipping_country, f"{name} returned {problem}")
    problem = _sales_order_problem(body)
    if problem is not None:  # e.g. a hook upstream slipped text that is not Unicode in
        return row("quarantined", outcome.shipping_country, f"the mapping produced {problem}")
    return row("mapped", outcome.shipping_country, None, body)


def _hook_name(kind: str, hook: Hook) -> str:
    """``after_mapping hook my_package.hooks.fix``: the dotted path it was configured by."""
    module = getattr(hook, "__module__", None)
    name = getattr(hook, "__qualname__", None) or type(hook).__name__
    return f"{kind} hook {module}.{name}" if module else f"{kind} hook {name}"


def _kind(value: Any) -> str:
    return "None" if value is None else f"a {type(value).__name__}"


def _error_text(exc: BaseException) -> str:
    """``ValueError: what it said``, short, whatever the exception holds."""
    try:
        text = str(exc)
    except Exception:  # e.g. a message nested too deeply to print
        text = ""
    return storable_text(f"{type(exc).__name__}: {text}" if text else type(exc).__name__, 400)


def _sales_order_problem(body: Any) -> str | None:
    """Why ``body`` cannot be stored and sent as the ERP sales order (None when it can): it
    must be a dict, plain JSON (no datetime, NaN, text that is not Unicode, deep nesting),
    with a ``YourRef``, the key that keeps an order from being sent twice."""
    if not isinstance(body, dict):
        return f"{_kind(body)}, not the ERP sales order (a dict)"
    problem = json_problem(body)
    if problem is not None:
        return f"a sales order that is not plain JSON: {problem}"
    your_ref = body.get("YourRef")
    if not isinstance(your_ref, str) or not your_ref.strip():
        what = "blank" if isinstance(your_ref, str) else _kind(your_ref)
        return (
            f"a sales order whose YourRef is {what}: it is the key that keeps the order from "
            "being sent twice"
        )
    return None


def _checked_before_send(
    before_send: Hook | None, payload: dict[str, Any]
) -> tuple[Any, str | None]:
    """The body to send for a mapped ``payload`` after the route's before_send hook, or
    (None, why) when the hook raised or returned what cannot be sent: not a dict, not plain
    JSON, or a ``YourRef`` other than the mapped one (the exactly-once look-up key)."""
    if before_send is None:
        return payload, None
    name = _hook_name("before_send", before_send)
    try:
        body = before_send(dict(payload))
    except Exception as exc:
        return None, f"{name} raised {_error_text(exc)}"
    problem = _sales_order_problem(body)
    if problem is None and body.get("YourRef") != payload.get("YourRef"):
        problem = (
            f"a sales order with YourRef {body.get('YourRef')!r} instead of "
            f"{payload.get('YourRef')!r}: it is the key that keeps the order from being "
            "sent twice"
        )
    if problem is not None:
        return None, storable_text(f"{name} returned {problem}", 500)
    return body, None


# --- delivery --------------------------------------------------------------------------------


def _preview(
    context: dg.AssetExecutionContext,
    ledger: Ledger,
    limit: int,
    before_send: Hook | None,
    allowed: frozenset[str],
) -> dg.MaterializeResult:
    """Dry run: what the next delivery would send, with the payloads; nothing is sent."""
    pending = ledger.deliveries.pending(limit=limit, countries=allowed)
    rows = []
    for order in pending[:PREVIEW_ROWS]:
        body, error = _checked_before_send(before_send, order.payload)
        shown = f"would fail: {error}" if error else json.dumps(body, ensure_ascii=False)
        rows.append([order.order_number, shown])
    context.log.info("Dry run: %s orders would be sent; nothing was sent", len(pending))
    return dg.MaterializeResult(
        metadata={
            "dry_run": True,
            "would_send": len(pending),
            "sent": 0,
            "payload_preview": md_table(["YourRef order", "ERP sales order"], rows),
        }
    )


def _requeue_failed(
    context: dg.AssetExecutionContext, ledger: Ledger, config: DeliveryConfig
) -> int:
    """Move the ``failed`` orders the run config names back to ``pending`` (under the lease),
    so this run sends them under the normal protocol. Returns how many were requeued."""
    if not (config.resend_all_failed or config.resend_failed):
        return 0
    wanted = None if config.resend_all_failed else config.resend_failed
    requeued = ledger.deliveries.requeue_failed(wanted)
    if wanted is None:
        context.log.info("Requeued all %s failed orders to be sent again", requeued)
    else:
        context.log.info(
            "Requeued %s of %s named failed orders to be sent again", requeued, len(set(wanted))
        )
        if requeued < len(set(wanted)):
            context.log.warning(
                "Some named orders were not requeued: they are not in the ledger as failed "
                "(delivered, pending, unknown number?): %s",
                ", ".join(sorted(set(wanted))),
            )
    return requeued


class LeaseLost(Exception):
    """Another run holds the delivery lease now: this run must not send another order."""


#: Renew the lease at most this often (each renewal is a DuckDB write transaction, ~50 ms):
#: an order's send never starts with less than ``LEASE_TTL`` minus this left on the lease.
LEASE_RENEW_EVERY_S = 10.0
_lease_renewed: dict[tuple[str, str], float] = {}


def _renew_lease(ledger: Ledger, lease: str, run_id: str) -> None:
    """Renew before an ERP call of the protocol; stop at once if another run took it over
    (this run's lease lapsed, e.g. it hung longer than ``LEASE_TTL``)."""
    now = time.monotonic()
    if now - _lease_renewed.get((lease, run_id), -LEASE_RENEW_EVERY_S) < LEASE_RENEW_EVERY_S:
        return
    holder = ledger.lease.acquire(lease, run_id, LEASE_TTL)
    if holder is not None:
        raise LeaseLost(f"delivery run {holder} took the lease over; this run stopped sending")
    _lease_renewed[(lease, run_id)] = now


def _run_is_over(instance: dg.DagsterInstance, run_id: str) -> bool:
    """True only when this instance knows the run and it finished (success, failure, canceled):
    a run it does not know (another instance, the CLI) may still be alive."""
    run = instance.get_run_by_id(run_id)
    return run is not None and run.is_finished


def _matching_erp_order(
    client: ExactClient, row: InFlight, found: list[Any], before_send: Hook | None
) -> tuple[Any | None, str]:
    """The ERP sales order among ``found`` (same ``YourRef``) that is this order: ordered by
    the same account, with the same items in the same quantities as the payload it was claimed
    for. (None, why) when none is."""
    expected = row.payload
    if expected is not None:
        # What was sent is what the hook made of it; a hook that fails now: what was mapped.
        expected = _checked_before_send(before_send, expected)[0] or expected
    if not isinstance(expected, dict):
        return None, (
            f"the ERP holds an order with YourRef {row.your_ref} but the mapped order it was "
            "claimed for is gone, so it cannot be told apart from another order"
        )
    want_account = str(expected.get("OrderedBy") or "").lower()
    want_lines = _line_signature(expected.get("SalesOrderLines"))
    reasons = []
    for order in found:
        account = str(order.OrderedBy or "").lower()
        if account != want_account:
            reasons.append(f"ERP order {order.OrderNumber} is ordered by another account")
            continue
        lines = _line_signature(
            [line.model_dump() for line in client.sales_order_lines(order.OrderID)]
        )
        if lines != want_lines:
            reasons.append(f"ERP order {order.OrderNumber} has other lines")
            continue
        return order, ""
    return None, (
        f"the ERP holds a different order under YourRef {row.your_ref} ("
        + "; ".join(reasons)
        + "): not sent again and not counted as delivered; a person must decide"
    )


def _line_signature(lines: Any) -> list[tuple[str, float]]:
    """(item id, quantity) of each line, sorted: what makes two ERP orders the same order."""
    if not isinstance(lines, list):
        return []
    out = []
    for line in lines:
        if isinstance(line, dict):
            quantity = line.get("Quantity")
            number = float(quantity) if isinstance(quantity, int | float) else float("nan")
            out.append((str(line.get("Item") or "").lower(), round(number, 4)))
    return sorted(out)


def _observe_progress(
    context: dg.AssetExecutionContext, tally: Counter[str], done: int, total: int
) -> None:
    """An observation of the delivery asset mid-run: what this run sent so far, so the asset's
    page does not show only the last run's figures while a long run is sending."""
    context.log.info(
        "Delivery in progress: %s of %s orders handled, %s sent", done, total, tally["sent"]
    )
    context.log_event(
        dg.AssetObservation(
            asset_key=context.asset_key,
            metadata={
                "in_progress_run": context.run_id,
                "handled": done,
                "of": total,
                "sent_so_far": tally["sent"],
                "failed_so_far": tally["failed"],
            },
        )
    )


def _deliver(
    context: dg.AssetExecutionContext,
    ledger: Ledger,
    client: ExactClient,
    lease: str,
    max_orders: int,
    allowed: frozenset[str],
    before_send: Hook | None,
    tally: Counter[str],
    sent_preview: list[list[Any]],
) -> str:
    """The exactly-once protocol. Returns why it stopped early, or "" if it finished."""
    run_id = context.run_id
    log = context.log
    try:
        # Step 4 first: rows left in `sending` by a run that died or lost a response.
        for row in ledger.deliveries.in_flight():
            _renew_lease(ledger, lease, run_id)
            found = client.find_sales_orders(row.your_ref)
            if not found:
                ledger.deliveries.release_claim(
                    row.shop_order_id, "outcome was unknown; not in the ERP, so sent again"
                )
                continue
            if len(found) > 1:
                log.error(
                    "Order %s: the ERP holds %s sales orders with YourRef %s",
                    row.order_number,
                    len(found),
                    row.your_ref,
                )
            # Only this order counts: same customer account, same items and quantities. A
            # YourRef another route or a person used for something else is a conflict.
            match, why = _matching_erp_order(client, row, found, before_send)
            if match is None:
                ledger.deliveries.mark_conflict(
                    row.shop_order_id, why, erp_order_id=found[0].OrderID
                )
                tally["conflict"] += 1
                log.error("Order %s not recorded as delivered: %s", row.order_number, why)
                continue
            ledger.deliveries.mark_delivered(
                row.shop_order_id,
                erp_order_id=match.OrderID,
                erp_order_number=match.OrderNumber,
                run_id=run_id,
            )
            tally["found_in_erp"] += 1
            log.info("Order %s was already in the ERP; recorded", row.order_number)
        consecutive_unknown = 0
        orders = ledger.deliveries.pending(limit=max_orders, countries=allowed)
        # Claims go CLAIM_BATCH at a time, in the same DuckDB connection as the outcomes of the
        # batch before (each open costs ~30 ms). A row is still committed as `sending` before
        # its POST; one whose outcome was not written yet (a killed run) is looked up by
        # `YourRef` at the next run's step 4, like any other `sending` row.
        outcomes: list[Outcome] = []
        unsent: list[PendingOrder] = []  # claimed by this run, not POSTed
        try:
            for first in range(0, len(orders), CLAIM_BATCH):
                chunk = orders[first : first + CLAIM_BATCH]
                _renew_lease(ledger, lease, run_id)
                # Step 3/5 + step 1; a YourRef another route already used here is a conflict.
                conflicts = ledger.deliveries.record_outcomes(outcomes, run_id, claim=chunk)
                if first and first % PROGRESS_EVERY == 0:  # while a long run sends
                    _observe_progress(context, tally, first, len(orders))
                for order in chunk:
                    if order.shop_order_id in conflicts:
                        tally["conflict"] += 1
                        log.error(
                            "Order %s not sent: %s",
                            order.order_number,
                            conflicts[order.shop_order_id],
                        )
                chunk = [o for o in chunk if o.shop_order_id not in conflicts]
                outcomes, unsent = [], list(chunk)
                for order in chunk:
                    _renew_lease(ledger, lease, run_id)
                    unsent.remove(order)
                    body, error = _checked_before_send(before_send, order.payload)
                    if error is not None:  # nothing is sent; a person fixes the hook
                        outcomes.append(Outcome(order.shop_order_id, "failed", error))
                        tally["failed"] += 1
                        log.warning("Order %s not sent: %s", order.order_number, error)
                        continue
                    try:
                        created = client.create_sales_order(body)  # Step 2
                    except ValidationRejected as exc:  # Step 5: a person must fix the cause
                        outcomes.append(Outcome(order.shop_order_id, "failed", exc.erp_message))
                        tally["failed"] += 1
                        log.warning(
                            "The ERP refused order %s: %s", order.order_number, exc.erp_message
                        )
                        continue
                    except OutcomeUnknown as exc:
                        outcomes.append(Outcome(order.shop_order_id, "sending", str(exc)))
                        tally["unknown"] += 1
                        consecutive_unknown += 1
                        log.warning(
                            "Outcome of order %s unknown (%s); checked next run",
                            order.order_number,
                            exc,
                        )
                        if consecutive_unknown >= MAX_CONSECUTIVE_UNKNOWN:
                            return f"{consecutive_unknown} unknown outcomes in a row"
                        continue
                    except (RateLimited, BudgetExhausted, AuthError, ApiError) as exc:
                        # Refused before processing or never connected: the ERP did not get it.
                        outcomes.append(Outcome(order.shop_order_id, "pending", str(exc)))
                        raise
                    consecutive_unknown = 0
                    outcomes.append(
                        Outcome(
                            order.shop_order_id,
                            "delivered",
                            erp_order_id=created.order_id,
                            erp_order_number=created.order_number,
                        )
                    )
                    tally["sent"] += 1
                    if len(sent_preview) < PREVIEW_ROWS:
                        sent_preview.append(
                            [order.order_number, created.order_number, created.order_id]
                        )
        finally:
            # What this run knows, and its claims it never sent back to `pending`.
            left = [Outcome(o.shop_order_id, "pending", "claimed, not sent") for o in unsent]
            ledger.deliveries.record_outcomes([*outcomes, *left], run_id, claim=[])
    except (RateLimited, BudgetExhausted, LeaseLost) as exc:
        return str(exc)
    except AuthError:
        raise
    except ApiError as exc:
        return f"ERP unavailable: {exc}"
    return ""


__all__ = ["DELIVERY_TAG", "DeliveryConfig", "RouteAssets", "build_route_assets", "md_table"]
