"""A route's asset checks: what an operator wants to know is still true of the ledger and the ERP.

On ``<route>/erp_orders`` (they run with every fetch-and-map run):

* ``mapped_country_allowed`` (blocking) — every mapped order ships to a country in the route's
  filter; a mapping that lets others through stops the run before anything downstream of it.
* ``your_ref_unique`` — no ``YourRef`` twice among the route's mapped orders: ``YourRef`` is the
  key the exactly-once recovery looks orders up by.

On ``<route>/erp_delivered_orders`` (they run with every delivery run):

* ``no_order_stuck_sending`` — no ledger row left in ``sending`` for longer than
  :data:`STUCK_SENDING_AFTER` (a run died or the ERP keeps answering "unknown").
* ``no_failed_orders`` — the number of orders the ERP refused (a warning: a person must act).
* ``no_conflicting_orders`` (blocking) — no order in ``conflict``: the ERP holds a different
  order under its ``YourRef`` (the recovery step found another account or other lines), or
  another route on the same division used the ``YourRef`` first. Such an order is never sent
  and never counted as delivered; a person decides.
* ``erp_holds_delivered_orders`` — a sampled reconciliation: the ERP holds (by ``YourRef``) each of
  the :data:`RECONCILE_SAMPLE` most recently delivered orders. It costs one ERP call per order, so
  it samples at most every :data:`RECONCILE_EVERY` and carries the last result forward in between,
  and stops early when the ERP's announced budget runs low.

Checks read the ledger through its read-only methods; no SQL here.
"""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg

from integration_project.assets import RouteAssets
from integration_project.exact.client import BudgetExhausted, ExactClient, RateLimited
from integration_project.exact.models import RateLimit
from integration_project.http import ApiError
from integration_project.ledger import Ledger
from integration_project.redact import mask_emails
from integration_project.resources import ErpResource, erp_client, open_ledger
from integration_project.routes.config import RouteConfig

#: A row in ``sending`` older than this is reported: a delivery run resolves its own in seconds.
STUCK_SENDING_AFTER = timedelta(minutes=10)
#: How many of the most recently delivered orders the reconciliation looks up in the ERP.
RECONCILE_SAMPLE = 10
#: The reconciliation samples the ERP at most this often (delivery runs every minute; ten calls
#: a minute would spend three times Exact's default day budget of 5,000 calls).
RECONCILE_EVERY = timedelta(minutes=30)
#: Stop sampling when the ERP announces fewer calls left than this (delivery comes first).
RECONCILE_RESERVE_MINUTE = 20
RECONCILE_RESERVE_DAY = 500
#: Most order numbers listed in a check's metadata.
SAMPLE_ROWS = 20

COUNTRY_CHECK = "mapped_country_allowed"
YOUR_REF_CHECK = "your_ref_unique"
STUCK_CHECK = "no_order_stuck_sending"
FAILED_CHECK = "no_failed_orders"
CONFLICT_CHECK = "no_conflicting_orders"
RECONCILE_CHECK = "erp_holds_delivered_orders"


def build_route_checks(assets: RouteAssets) -> list[dg.AssetChecksDefinition]:
    """The route's six asset checks (names above), on its ``erp_orders`` and
    ``erp_delivered_orders`` assets, using the route's ERP resource and ``duckdb``."""
    return [
        _country_check(assets),
        _your_ref_check(assets),
        _stuck_check(assets),
        _failed_check(assets),
        _conflict_check(assets),
        _reconcile_check(assets),
    ]


def _resource_keys(route: RouteConfig) -> set[str]:
    return {route.erp_key, "duckdb"}


def _erp(context: dg.AssetCheckExecutionContext, route: RouteConfig) -> ErpResource:
    return getattr(context.resources, route.erp_key)


def _ledger_for(context: dg.AssetCheckExecutionContext, route: RouteConfig) -> Ledger:
    """The route's ledger, opened like its assets open it (the ERP's token key included)."""
    return open_ledger(context.resources.duckdb, route.id, _erp(context, route).token_key)


def _country_check(assets: RouteAssets) -> dg.AssetChecksDefinition:
    """``mapped_country_allowed``: blocking, so a mapping that lets other countries through
    never reaches delivery."""
    route = assets.route
    allowed = route.filter.country_set()

    @dg.asset_check(
        asset=assets.erp_orders,
        name=COUNTRY_CHECK,
        blocking=True,
        required_resource_keys=_resource_keys(route),
        description="Every mapped order of the route ships to a country in its filter "
        f"({_countries_text(allowed)}). Blocking: a mapping that lets others through stops "
        "the run before anything downstream.",
    )
    def mapped_country_allowed(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        ledger = _ledger_for(context, route)
        outside, sample = ledger.mapped.outside_countries(allowed, limit=SAMPLE_ROWS)
        if outside:
            context.log.error(
                "%s mapped orders ship outside the route's countries, e.g. %s",
                outside,
                ", ".join(f"{number} ({country})" for number, country in sample[:5]),
            )
        return dg.AssetCheckResult(
            passed=outside == 0,
            metadata={
                "mapped": ledger.mapped.count(),
                "outside_allowed": outside,
                "offending_orders": [
                    {"order_number": number, "country": country} for number, country in sample
                ],
                "allowed_countries": ", ".join(sorted(allowed)),
            },
        )

    return mapped_country_allowed


def _your_ref_check(assets: RouteAssets) -> dg.AssetChecksDefinition:
    """``your_ref_unique``: the exactly-once recovery finds an order by its ``YourRef``, so a
    duplicate would make it find the wrong one."""
    route = assets.route

    @dg.asset_check(
        asset=assets.erp_orders,
        name=YOUR_REF_CHECK,
        required_resource_keys=_resource_keys(route),
        description="No YourRef twice among the route's mapped orders: YourRef is the key the "
        "exactly-once recovery looks an order up by in the ERP.",
    )
    def your_ref_unique(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        duplicated, sample = _ledger_for(context, route).views.duplicate_your_refs(
            limit=SAMPLE_ROWS
        )
        if duplicated:
            context.log.error(
                "%s YourRef values are used by more than one mapped order, e.g. %s",
                duplicated,
                ", ".join(ref for ref, _ in sample[:5]),
            )
        return dg.AssetCheckResult(
            passed=duplicated == 0,
            metadata={
                "duplicated_your_refs": duplicated,
                "duplicates": [{"your_ref": ref, "orders": n} for ref, n in sample],
            },
        )

    return your_ref_unique


def _stuck_check(assets: RouteAssets) -> dg.AssetChecksDefinition:
    """``no_order_stuck_sending``: a row left in ``sending`` means a run died mid-send or the
    ERP keeps answering "unknown"; the order is neither delivered nor retried."""
    route = assets.route

    @dg.asset_check(
        asset=assets.erp_delivered_orders,
        name=STUCK_CHECK,
        required_resource_keys=_resource_keys(route),
        description="No ledger row left in 'sending' (outcome unknown) for more than "
        f"{_minutes(STUCK_SENDING_AFTER)} minutes: a delivery run resolves its own in seconds.",
    )
    def no_order_stuck_sending(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        stuck, sample = _ledger_for(context, route).views.stuck_sending(
            STUCK_SENDING_AFTER, limit=SAMPLE_ROWS
        )
        if stuck:
            context.log.error(
                "%s orders have been 'sending' for more than %s minutes, e.g. %s",
                stuck,
                _minutes(STUCK_SENDING_AFTER),
                ", ".join(number for number, _ in sample[:5]),
            )
        return dg.AssetCheckResult(
            passed=stuck == 0,
            metadata={
                "stuck_sending": stuck,
                "threshold_minutes": _minutes(STUCK_SENDING_AFTER),
                "stuck_orders": [
                    {"order_number": number, "claimed_at": claimed.isoformat() if claimed else None}
                    for number, claimed in sample
                ],
            },
        )

    return no_order_stuck_sending


def _conflict_check(assets: RouteAssets) -> dg.AssetChecksDefinition:
    """``no_conflicting_orders``: blocking, because an order in conflict needs a person's
    decision before anything downstream treats the route's delivery as complete."""
    route = assets.route

    @dg.asset_check(
        asset=assets.erp_delivered_orders,
        name=CONFLICT_CHECK,
        blocking=True,
        required_resource_keys=_resource_keys(route),
        description="No order of the route in conflict: the ERP holds a different order under "
        "its YourRef (another account or other lines), or another route on the division used "
        "the YourRef first. Such orders are never sent nor counted as delivered; a person "
        "decides (book it by hand, or change the route's your_ref template).",
    )
    def no_conflicting_orders(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        total, sample = _ledger_for(context, route).views.conflicts(limit=SAMPLE_ROWS)
        if total:
            context.log.error(
                "%s orders are in conflict with what the ERP holds, e.g. %s",
                total,
                "; ".join(f"{number}: {mask_emails(why or '')}" for number, why in sample[:3]),
            )
        return dg.AssetCheckResult(
            passed=total == 0,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={
                "conflicts": total,
                "orders": [
                    {"order_number": n, "reason": mask_emails(why or "")} for n, why in sample
                ],
            },
        )

    return no_conflicting_orders


def _failed_check(assets: RouteAssets) -> dg.AssetChecksDefinition:
    """``no_failed_orders``: a warning, not an error: the orders wait safely in the ledger until
    a person fixes the cause and re-sends them."""
    route = assets.route

    @dg.asset_check(
        asset=assets.erp_delivered_orders,
        name=FAILED_CHECK,
        required_resource_keys=_resource_keys(route),
        description="Orders the ERP refused (status 'failed'); a warning while there are any. "
        "Fix the cause, then re-send them (see README, 'Failed orders').",
    )
    def no_failed_orders(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        failed, sample = _ledger_for(context, route).views.failed_orders(limit=SAMPLE_ROWS)
        if failed:
            context.log.warning("%s orders were refused by the ERP and wait for a fix", failed)
        return dg.AssetCheckResult(
            passed=failed == 0,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                "failed": failed,
                "failed_orders": [
                    {"order_number": number, "erp_message": mask_emails(error or "")[:200]}
                    for number, error in sample
                ],
            },
        )

    return no_failed_orders


def _reconcile_check(assets: RouteAssets) -> dg.AssetChecksDefinition:
    """``erp_holds_delivered_orders``: the only check that asks the ERP rather than the ledger,
    so it samples rarely (:func:`_carry_forward`) and within the ERP's budget."""
    route = assets.route

    @dg.asset_check(
        asset=assets.erp_delivered_orders,
        name=RECONCILE_CHECK,
        required_resource_keys=_resource_keys(route),
        description=f"Sampled reconciliation: the ERP holds (looked up by YourRef) each of the "
        f"{RECONCILE_SAMPLE} most recently delivered orders. Samples at most every "
        f"{_minutes(RECONCILE_EVERY)} minutes and within the ERP's rate budget; in between, "
        "the last result is carried forward.",
    )
    def erp_holds_delivered_orders(
        context: dg.AssetCheckExecutionContext,
    ) -> dg.AssetCheckResult:
        now = datetime.now(UTC)
        ledger = _ledger_for(context, route)
        carried = _carry_forward(ledger, now)
        if carried is not None:
            return carried
        sample = ledger.views.recent_delivered(RECONCILE_SAMPLE)
        with erp_client(_erp(context, route), ledger, holder=context.run.run_id) as client:
            lookup = _look_up(client, sample)
        return _reconciliation_result(context.log, ledger, now, len(sample), lookup)

    return erp_holds_delivered_orders


@dataclass(frozen=True)
class _Lookup:
    """What one sampling of the ERP found: how many orders were looked up, the order numbers
    the ERP does not hold, and why it stopped before the end of the sample ("" if it did not)."""

    checked: int
    missing: list[str]
    stopped: str


def _look_up(client: ExactClient, sample: list[tuple[str, str, str | None]]) -> _Lookup:
    """Look each sampled order up by ``YourRef``, stopping (not failing) when the ERP's budget
    runs low or a look-up fails: delivery needs the budget more than the reconciliation."""
    missing: list[str] = []
    checked = 0
    for order_number, your_ref, _ in sample:
        low = _budget_low(client.rate_limit)
        if low:
            return _Lookup(checked, missing, low)
        try:
            found = client.find_sales_orders(your_ref)
        except (RateLimited, BudgetExhausted, ApiError) as exc:
            return _Lookup(checked, missing, f"ERP look-up failed: {exc}"[:300])
        checked += 1
        if not found:
            missing.append(order_number)
    return _Lookup(checked, missing, "")


def _reconciliation_result(
    log: dg.DagsterLogManager, ledger: Ledger, now: datetime, sample_size: int, lookup: _Lookup
) -> dg.AssetCheckResult:
    """The check's result for a fresh sample, recorded in the ledger for :func:`_carry_forward`
    when it is a verdict (something was delivered and looked up)."""
    checked, missing, stopped = lookup.checked, lookup.missing, lookup.stopped
    metadata: dict[str, Any] = {
        "sampled": checked,
        "sample_size": sample_size,
        "missing_in_erp": len(missing),
        "missing_orders": missing,
        "stopped_early": stopped or "no",
    }
    if missing:
        log.error(
            "%s of %s sampled delivered orders are not in the ERP: %s",
            len(missing),
            checked,
            ", ".join(missing),
        )
    elif stopped and checked == 0 and sample_size:
        # Nothing could be looked up: not a verdict. Warn, and sample again next run.
        log.warning("Reconciliation could not sample the ERP: %s", stopped)
        return dg.AssetCheckResult(
            passed=False,
            severity=dg.AssetCheckSeverity.WARN,
            metadata=metadata,
            description="Could not look anything up in the ERP; tried again next run.",
        )
    metadata["sampled_at"] = now.timestamp()
    if not sample_size:  # nothing delivered yet is no sample: look again next run
        return dg.AssetCheckResult(
            passed=True,
            metadata=metadata,
            description="The ledger holds no delivered order yet: nothing to compare.",
        )
    ledger.samples.record(RECONCILE_CHECK, now, not missing, metadata)
    description = (
        f"{len(missing)} of {checked} delivered orders sampled are missing in the ERP."
        if missing
        else f"All {checked} delivered orders sampled are in the ERP."
    )
    return dg.AssetCheckResult(passed=not missing, metadata=metadata, description=description)


def _carry_forward(ledger: Ledger, now: datetime) -> dg.AssetCheckResult | None:
    """The last reconciliation's result again if it sampled the ERP less than
    :data:`RECONCILE_EVERY` ago (so a failure stays visible), else None: time to sample. The
    sample is the ledger's (``check_samples``), not Dagster's event history."""
    last = ledger.samples.last(RECONCILE_CHECK)
    if last is None:
        return None
    sampled_at, passed, metadata = last
    if now - sampled_at >= RECONCILE_EVERY:
        return None
    return dg.AssetCheckResult(
        passed=passed,
        metadata={**metadata, "carried_forward": True},
        description=f"Last sampled at {sampled_at.isoformat(timespec='seconds')}; samples again "
        f"after {(sampled_at + RECONCILE_EVERY).isoformat(timespec='seconds')}.",
    )


def _budget_low(rate: RateLimit | None) -> str:
    """Why the reconciliation should stop now ("" while the ERP's announced budget allows it)."""
    if rate is None:
        return ""
    if rate.minutely_remaining is not None and rate.minutely_remaining < RECONCILE_RESERVE_MINUTE:
        return f"ERP minute budget low ({rate.minutely_remaining} calls left)"
    if rate.daily_remaining is not None and rate.daily_remaining < RECONCILE_RESERVE_DAY:
        return f"ERP day budget low ({rate.daily_remaining} calls left)"
    return ""


def _minutes(delta: timedelta) -> int:
    return int(delta.total_seconds() // 60)


def _countries_text(countries: frozenset[str]) -> str:
    return f"{len(countries)} countries" if len(countries) > 8 else ", ".join(sorted(countries))


__all__ = [
    "COUNTRY_CHECK",
    "FAILED_CHECK",
    "RECONCILE_CHECK",
    "RECONCILE_EVERY",
    "STUCK_CHECK",
    "STUCK_SENDING_AFTER",
    "YOUR_REF_CHECK",
    "build_route_checks",
]
