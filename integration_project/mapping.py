"""Mapping: a window's staged orders, filtered and mapped to ERP sales orders, into the ledger.

Each staged order ends as exactly one row: ``mapped`` (with the sales order to send),
``skipped`` (outside the route's filter) or ``quarantined`` (with the reason a person reads),
whatever shape the shop sent and whatever the route's hooks do. The exceptions: an order whose
ERP look-ups hit a transient error keeps no row (the next run maps it again), and errors every
order would hit alike (auth, rate budget, the ledger, the disk) fail the run.
"""

from __future__ import annotations

import gc
import itertools
import json
import logging
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import duckdb

from integration_project.connectors.base import OrderTarget
from integration_project.exact.client import (
    BudgetExhausted,
    RateLimited,
    ValidationRejected,
)
from integration_project.fetching import PREVIEW_ROWS, Window
from integration_project.hooks import Hook, error_text, hook_name, kind_of, sales_order_problem
from integration_project.http import ApiError, AuthError
from integration_project.ledger import Ledger, MappingRow, parse_created_at
from integration_project.ledger.projection import Projection, Projector, StagedForMapping
from integration_project.resolver import AccountUnresolved, LookupUnresolved, Resolver
from integration_project.settings import ISO_COUNTRIES
from integration_project.shopware.models import order_number_text, storable_text, unreadable_reason
from integration_project.transforms import (
    LookupRule,
    MappedOrder,
    MappingRules,
    Quarantined,
    Skipped,
    UnknownItemError,
    UnknownVatCodeError,
    evaluate_order,
    fields_read,
    outside_reason,
    to_sales_order,
)

#: A mapping run fails after this many orders in a row hit a transient ERP error (it is down).
MAX_CONSECUTIVE_DEFERRED = 5
#: Older staged-but-never-mapped orders one run maps besides its window.
CATCH_UP_LIMIT = 2000
#: Mapped sales orders a run shows in full.
PAYLOAD_PREVIEW_ROWS = 3
#: Staged orders read, mapped and recorded at a time: cut to the fields the mapping reads
#: (~1 KB each, read from the ledger ~8 KB each as Arrow text), or whole (~8 KB, and ~10 times
#: that as Python dicts) for a route whose mapping hooks need the whole order.
BATCH_CUT = 8000
BATCH_WHOLE = 1000


@dataclass(frozen=True)
class RouteMapping:
    """What the route says about mapping: its rules, how orders find their ERP account
    (``email`` or ``customer_number``), and its mapping hooks."""

    rules: MappingRules
    account_match: str = "email"
    before_mapping: Hook | None = None
    after_mapping: Hook | None = None


@dataclass(frozen=True)
class MappingReport:
    window: Window
    #: Rows per status: ``mapped``, ``skipped`` (outside the filter), ``quarantined``.
    counts: Counter[str]
    #: Orders left for the next run after a transient ERP error on their look-ups.
    deferred: int
    #: Orders of earlier windows mapped now because their own run had failed.
    caught_up: int
    erp_lookups: int
    accounts_created: int
    allowed_countries: frozenset[str]
    quarantine_preview: list[list[Any]]  # order number, reason
    payload_preview: list[list[Any]]  # order number, the sales order as JSON
    #: Per look-up table (``shipping_method`` ...): orders ``matched``, ``defaulted`` (the
    #: route's default used) and ``quarantined``.
    lookups: dict[str, Counter[str]] = field(default_factory=dict)

    @property
    def staged(self) -> int:
        return sum(self.counts.values())

    def lookup_rows(self) -> list[list[Any]]:
        """One row per look-up table: name, matched, defaulted, quarantined."""
        return [
            [kind, c["matched"], c["defaulted"], c["quarantined"]]
            for kind, c in sorted(self.lookups.items())
        ]


def map_window(
    ledger: Ledger,
    open_client: Callable[[], OrderTarget],
    mapping: RouteMapping,
    window: Window,
    *,
    run_id: str,
    log: logging.Logger,
) -> MappingReport:
    """Map the orders staged for ``[window.read_from, window.end)``, then older ones that were
    staged but never mapped (a window whose mapping failed for longer than the look-back)."""
    with open_client() as client:
        resolver = Resolver(ledger, client, log, mapping.account_match)
        mapper = _Mapper(mapping, resolver, window.start, log)
        with Projector(_projection(mapping)) as projector:
            caught_up = _map_all(ledger, mapper, projector, window, run_id, log)
    report = MappingReport(
        window,
        mapper.counts,
        mapper.deferred,
        caught_up,
        resolver.erp_lookups + resolver.tables.erp_lookups,
        resolver.accounts_created,
        mapping.rules.allowed_countries,
        mapper.quarantine_preview,
        mapper.payload_preview,
        {kind: Counter(c) for kind, c in resolver.tables.counts.items()},
    )
    _log_summary(log, report)
    return report


def _map_all(
    ledger: Ledger,
    mapper: _Mapper,
    projector: Projector,
    window: Window,
    run_id: str,
    log: logging.Logger,
) -> int:
    """Map and record the window's staged orders batch by batch, then the older ones never
    mapped (at most ``CATCH_UP_LIMIT``, read first); how many of those there were."""
    older = ledger.staging.unmapped_before(window.read_from, CATCH_UP_LIMIT, projector)
    if older:
        log.warning(
            "Also mapping %s staged orders from before the look-back that were never "
            "mapped (their window's erp_orders run failed)",
            len(older),
        )
    whole = projector.projection is None or projector.projection.fields is None
    batches = itertools.chain(
        ledger.staging.batches(
            window.read_from, window.end, BATCH_WHOLE if whole else BATCH_CUT, projector
        ),
        [older] if older else [],
    )
    while True:
        with _cycle_collector_paused():  # read, map and record one batch
            batch = next(batches, None)
            if batch is None:
                return len(older)
            ledger.mapped.record(mapper.map_batch(batch), run_id)


@contextmanager
def _cycle_collector_paused() -> Iterator[None]:
    """Python's cycle collector off for one batch, as it was after. A batch holds thousands of
    orders as dicts, and the collector would walk them all again and again while the next
    ones are read (it doubled the time ``json.loads`` takes); reference counting still frees
    all that is not a cycle, and the collector runs again between batches."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _projection(mapping: RouteMapping) -> Projection:
    """What the mapping asks of the staged orders: cut to the fields it reads unless a mapping
    hook wants the whole order, and the orders outside the route's countries found in SQL
    unless a before_mapping hook may change or drop them first."""
    hooked = mapping.before_mapping is not None or mapping.after_mapping is not None
    return Projection(
        fields=None if hooked else fields_read(mapping.rules),
        allowed=None if mapping.before_mapping is not None else mapping.rules.allowed_countries,
        known=ISO_COUNTRIES,
    )


def _log_summary(log: logging.Logger, report: MappingReport) -> None:
    counts = report.counts
    log.info(
        "Mapped %s of %s orders for [%s, %s): %s outside the route's countries, %s "
        "quarantined, %s deferred; %s ERP look-ups, %s ERP accounts created",
        counts["mapped"],
        report.staged,
        report.window.read_from.isoformat(),
        report.window.end.isoformat(),
        counts["skipped"],
        counts["quarantined"],
        report.deferred,
        report.erp_lookups,
        report.accounts_created,
    )
    if counts["quarantined"]:
        log.warning(
            "%s of %s orders quarantined; see the 'quarantined_preview' metadata",
            counts["quarantined"],
            report.staged,
        )


class _Mapper:
    """One run's mapping of staged orders to rows, with its counts and previews."""

    def __init__(
        self,
        mapping: RouteMapping,
        resolver: Resolver,
        fallback_created_at: datetime,
        log: logging.Logger,
    ) -> None:
        self._mapping = mapping
        self._resolver = resolver
        self._fallback_created_at = fallback_created_at  # an order without a readable date
        self._log = log
        self.counts: Counter[str] = Counter()
        self.deferred = 0
        self._consecutive_deferred = 0
        self.quarantine_preview: list[list[Any]] = []
        self.payload_preview: list[list[Any]] = []

    def map_batch(self, batch: list[StagedForMapping]) -> list[MappingRow]:
        """The rows of a batch of staged orders (a deferred order has none)."""
        self._resolver.prefetch([s.payload for s in batch if s.outside is None])
        rows = []
        try:
            for staged in batch:
                row = self._map_staged(staged)
                if row is not None:
                    rows.append(row)
                    self._count(row)
        except BaseException:
            # What the ERP told us is kept also when the run stops here (unless the ledger is
            # what failed): the accounts it created are then found without asking it again.
            with suppress(duckdb.Error, OSError):
                self._resolver.flush()
            raise
        self._resolver.flush()
        return rows

    def _map_staged(self, staged: StagedForMapping) -> MappingRow | None:
        # Any shape may arrive here (null, a number, a stand-in for an order that could not
        # be staged as it came): each one ends as a row, never a crash.
        number = order_number_text(staged.payload)
        payload = staged.payload
        created_at = (
            parse_created_at(payload.get("createdAt") if isinstance(payload, dict) else None)
            or self._fallback_created_at
        )
        if staged.outside is not None:  # found in SQL (see ledger/projection.py)
            reason = storable_text(outside_reason(staged.outside), 1000)
            self._consecutive_deferred = 0
            return MappingRow(
                staged.shop_order_id, number, created_at, "skipped", staged.outside, reason, None
            )
        try:
            row = map_order(
                payload, staged.shop_order_id, created_at, self._mapping, self._resolver
            )
        except (AuthError, RateLimited, BudgetExhausted):
            raise  # nothing later in the run would fare better
        except ApiError as exc:
            # A transient ERP error on this order's look-ups: it keeps no row, so the next run
            # maps it (look-back, or catch-up when older).
            self.deferred += 1
            self._consecutive_deferred += 1
            self._log.warning(
                "Order %s not mapped this run (%s); the next run tries again",
                number or staged.shop_order_id,
                exc,
            )
            if self._consecutive_deferred >= MAX_CONSECUTIVE_DEFERRED:
                raise
            return None
        except (duckdb.Error, OSError):
            raise  # the ledger or the disk: every order would fail alike
        except Exception as exc:
            # A shape nothing foresaw (or a bug) fails this order, not the window: quarantined
            # with what went wrong; the look-back maps it again.
            reason = f"mapping failed unexpectedly: {error_text(exc)}"
            self._log.error("Order %s quarantined: %s", number or staged.shop_order_id, reason)
            row = MappingRow(
                staged.shop_order_id, number, created_at, "quarantined", None, reason, None
            )
        self._consecutive_deferred = 0
        return row

    def _count(self, row: MappingRow) -> None:
        self.counts[row.status] += 1
        if row.status == "quarantined" and len(self.quarantine_preview) < PREVIEW_ROWS:
            self.quarantine_preview.append([row.order_number, row.reason])
        if row.status == "mapped" and len(self.payload_preview) < PAYLOAD_PREVIEW_ROWS:
            body = json.dumps(row.payload, ensure_ascii=False)
            self.payload_preview.append([row.order_number, body])


@dataclass(frozen=True)
class _Verdict:
    """An order that is not mapped: ``skipped`` or ``quarantined``, and why."""

    status: str
    reason: str
    country: str | None = None


def map_order(
    payload: Any,
    shop_order_id: str,
    created_at: datetime,
    mapping: RouteMapping,
    resolver: Resolver,
) -> MappingRow:
    """The mapping row of one staged order: the route's hooks, filter and mapping, and the
    ERP's ids for its account, items and VAT codes."""
    # Text for the ledger whatever the shop sent: 10001 and "10001" alike.
    number = order_number_text(payload)

    def row(status: str, country: str | None, reason: str | None, body: Any = None) -> MappingRow:
        text = storable_text(reason, 1000) if reason is not None else None
        return MappingRow(shop_order_id, number, created_at, status, country, text, body)

    unreadable = unreadable_reason(payload)
    if unreadable is not None:  # staging's stand-in for an order it could not keep: no hook
        return row("quarantined", None, unreadable)
    payload = _before_mapping(mapping.before_mapping, payload)
    if isinstance(payload, _Verdict):
        return row(payload.status, None, payload.reason)
    outcome = evaluate_order(payload, mapping.rules)
    if isinstance(outcome, Skipped):
        return row("skipped", outcome.country, outcome.reason)
    if isinstance(outcome, Quarantined):
        return row("quarantined", None, outcome.reason)
    assert isinstance(outcome, MappedOrder)
    body = _sales_order(outcome, resolver, mapping.rules.lookups)
    if not isinstance(body, _Verdict):
        body = _after_mapping(mapping.after_mapping, body, payload)
    if isinstance(body, _Verdict):
        return row(body.status, outcome.shipping_country, body.reason)
    return row("mapped", outcome.shipping_country, None, body)


def _before_mapping(hook: Hook | None, payload: Any) -> Any:
    """The order as the before_mapping hook leaves it, or the verdict on it."""
    if hook is None:
        return payload
    name = hook_name("before_mapping", hook)
    try:
        payload = hook(payload)
    except Exception as exc:
        return _Verdict("quarantined", f"{name} raised {error_text(exc)}")
    if payload is None:
        return _Verdict("skipped", "dropped by the before_mapping hook")
    if not isinstance(payload, dict):
        return _Verdict(
            "quarantined",
            f"{name} returned {kind_of(payload)}, not the order (a dict) or None to skip it",
        )
    return payload


def _sales_order(
    order: MappedOrder, resolver: Resolver, lookups: tuple[LookupRule, ...] = ()
) -> dict[str, Any] | _Verdict:
    """The ERP sales order for ``order``, with the ERP's ids, or why it is quarantined."""
    try:
        # Look-up tables and VAT codes first: an order that cannot be booked or taxed
        # creates no ERP account.
        fields = resolver.tables.fields_for(order, lookups) if lookups else {}
        vat_codes = resolver.vat_codes_for(order.vat_rates_to_look_up)
        account_id = resolver.account_for(order)
        return to_sales_order(
            order,
            account_id=account_id,
            item_ids=resolver.items_for(order.item_codes),
            vat_codes=vat_codes,
            lookups=fields,
        )
    except (UnknownItemError, AccountUnresolved, LookupUnresolved) as exc:
        return _Verdict("quarantined", str(exc))
    except UnknownVatCodeError as exc:
        lines = [line.description for line in order.lines if line.vat_rate == exc.rate]
        where = f" (lines: {'; '.join(lines)})"[:300] if lines else ""
        return _Verdict("quarantined", f"{exc}{where}")
    except ValidationRejected as exc:
        return _Verdict("quarantined", f"the ERP refused the customer account: {exc.erp_message}")


def _after_mapping(hook: Hook | None, body: Any, payload: dict[str, Any]) -> Any:
    """The sales order as the after_mapping hook leaves it, or why it cannot be sent."""
    if hook is not None:
        name = hook_name("after_mapping", hook)
        try:
            body = hook(body, payload)
        except Exception as exc:
            return _Verdict("quarantined", f"{name} raised {error_text(exc)}")
        problem = sales_order_problem(body)
        if problem is not None:
            return _Verdict("quarantined", f"{name} returned {problem}")
    problem = sales_order_problem(body)
    if problem is not None:  # e.g. a hook upstream slipped text that is not Unicode in
        return _Verdict("quarantined", f"the mapping produced {problem}")
    return body
