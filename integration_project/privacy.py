"""Personal data jobs (README, "Personal data").

* Per route, ``<route_id>__personal_data_retention_job`` on
  ``<route_id>__personal_data_retention_schedule`` (daily, 03:17 in the shop's time zone):
  blanks the personal data of orders delivered or skipped longer than the route's
  ``personal_data_retention`` ago (default 30 days), deletes staging rows left by aborted
  fetches and cached e-mail → account rows older than that. Orders that wait for delivery and
  quarantined orders keep everything.
* For the whole code location, ``erase_customer_job`` (run config ``email``): removes one
  customer's e-mail address and personal data from every table of every route; orders that
  still wait for delivery are left whole and listed by order number.

Both are op jobs, not assets: they change rows the route's assets own and produce nothing
of their own. What they did is the op's output metadata (run page → the step's *Output*
event) and its log. Both take a short DuckDB transaction per chunk of orders, like everything
else in the ledger. The e-mail address of ``erase_customer_job`` is only ever shown masked
(``j***@example.com``), but Dagster keeps the run's config: delete the run when done.
"""

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import dagster as dg
from pydantic import Field

from integration_project.redact import mask_emails, normalise_email
from integration_project.reports import md_table
from integration_project.resources import ErpResource, open_ledger
from integration_project.routes.config import RouteConfig

#: Daily at 03:17 in the shop's time zone: few orders, and off the 5-minute fetch ticks.
RETENTION_CRON = "17 3 * * *"
ERASE_JOB = "erase_customer_job"
ERASE_OP = "erase_customer"
#: How many orders a metadata table lists (the log lists them all).
LIST_ROWS = 50


class RetentionConfig(dg.Config):
    now: str | None = Field(
        default=None,
        description="Reference time, ISO 8601 (UTC when it has no offset), e.g. "
        "'2026-12-24T03:00:00+00:00': personal data of orders delivered or skipped before "
        "this minus the route's personal_data_retention is blanked. Default: when the run "
        "starts. For tests and for catching up; never set it in the future in production.",
    )


class EraseCustomerConfig(dg.Config):
    email: str = Field(
        description="The customer's e-mail address; matched case-insensitively and exactly "
        "(jane@example.com does not match mary.jane@example.com)"
    )


@dataclass(frozen=True)
class RouteRetention:
    job: dg.JobDefinition
    schedule: dg.ScheduleDefinition


def reference_time(now: str | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    try:
        parsed = datetime.fromisoformat(now.strip())
    except ValueError:
        raise dg.Failure(
            f"now: expected an ISO 8601 time like 2026-12-24T03:00:00+00:00, got {now!r}"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _when(value: datetime | None) -> Any:
    return dg.MetadataValue.timestamp(value) if value is not None else "none"


def build_route_retention(route: RouteConfig) -> RouteRetention:
    """The route's retention job and its daily schedule (running when the route's are)."""
    job = _retention_job(route, _retention_op(route))
    return RouteRetention(job, _retention_schedule(route, job))


def _retention_days(route: RouteConfig) -> float:
    return route.personal_data_retention.total_seconds() / 86_400


def _retention_op(route: RouteConfig) -> dg.OpDefinition:
    """``<route_id>__personal_data_retention``: one op per route, as each route has its own
    retention and its own ERP resource (whose token key opens the route's ledger)."""
    route_id, erp_key = route.id, route.erp_key
    retention = route.personal_data_retention
    days = _retention_days(route)

    @dg.op(
        name=f"{route_id}__personal_data_retention",
        required_resource_keys={"duckdb", erp_key},
        out=dg.Out(dg.Nothing),
        description=f"Blank the personal data of {route.name}'s orders delivered or skipped "
        f"more than {days:g} days ago; orders waiting for delivery and quarantined ones keep it.",
    )
    def personal_data_retention(context: dg.OpExecutionContext, config: RetentionConfig) -> None:
        erp: ErpResource = getattr(context.resources, erp_key)
        ledger = open_ledger(context.resources.duckdb, route_id, erp.token_key)
        now = reference_time(config.now)
        cutoff = now - retention
        report = ledger.personal_data.blank(cutoff)
        _log_retention(context.log, route_id, cutoff, report)
        context.add_output_metadata(_retention_metadata(now, cutoff, days, report))

    return personal_data_retention


def _blanked_tables(report: dict[str, Any]) -> dict[str, int]:
    """Rows blanked or deleted per table, in the order the log and the table list them."""
    return {
        "staged_orders": report["staged_orders"],
        "erp_orders": report["erp_orders"],
        "delivered_orders": report["delivered_orders"],
        "staged_orders_incoming": report["staged_orders_incoming"],
        "erp_accounts": report["erp_accounts"],
    }


def _log_retention(
    log: dg.DagsterLogManager, route_id: str, cutoff: datetime, report: dict[str, Any]
) -> None:
    """What the retention run blanked, and a warning for old orders it had to keep (a person
    may want to act on those)."""
    tables = _blanked_tables(report)
    log.info(
        "Blanked the personal data of %s orders of %s (before %s): %s",
        report["orders"],
        route_id,
        cutoff.isoformat(),
        ", ".join(f"{table} {n}" for table, n in tables.items()),
    )
    kept = report["waiting_kept"] + report["quarantined_kept"] + report["unmapped_kept"]
    if kept:
        log.warning(
            "Kept the personal data of orders older than the retention: %s waiting for "
            "delivery, %s quarantined (a person may still fix them), %s staged but never "
            "mapped; see README 'Personal data'",
            report["waiting_kept"],
            report["quarantined_kept"],
            report["unmapped_kept"],
        )


def _retention_metadata(
    now: datetime, cutoff: datetime, days: float, report: dict[str, Any]
) -> dict[str, Any]:
    """The retention op's output metadata: what an operator reads on the run page."""
    tables = _blanked_tables(report)
    return {
        "reference_time": dg.MetadataValue.timestamp(now),
        "cutoff": dg.MetadataValue.timestamp(cutoff),
        "retention_days": days,
        "orders_blanked": report["orders"],
        "staged_orders_blanked": report["staged_orders"],
        "erp_orders_blanked": report["erp_orders"],
        "delivered_orders_blanked": report["delivered_orders"],
        "staged_orders_incoming_deleted": report["staged_orders_incoming"],
        "erp_accounts_deleted": report["erp_accounts"],
        "oldest_order_touched": _when(report["oldest"]),
        "newest_order_touched": _when(report["newest"]),
        "waiting_kept": report["waiting_kept"],
        "quarantined_kept": report["quarantined_kept"],
        "unmapped_kept": report["unmapped_kept"],
        "tables": md_table(
            ["table", "rows blanked or deleted"], [[t, n] for t, n in tables.items()]
        ),
    }


def _retention_job(route: RouteConfig, op: dg.OpDefinition) -> dg.JobDefinition:
    """``<route_id>__personal_data_retention_job``: the route's retention op alone."""

    @dg.job(
        name=f"{route.id}__personal_data_retention_job",
        description=f"{route.name}: blank personal data older than the route's "
        f"personal_data_retention ({_retention_days(route):g} days). Launchpad config "
        f"(optional): ops → {op.name} → config → now (ISO 8601 reference time).",
    )
    def job() -> None:
        op()

    return job


def _retention_schedule(route: RouteConfig, job: dg.JobDefinition) -> dg.ScheduleDefinition:
    """``<route_id>__personal_data_retention_schedule``: daily in the shop's time zone, running
    when the route's other schedules are."""
    status = (
        dg.DefaultScheduleStatus.RUNNING
        if route.schedule.running
        else dg.DefaultScheduleStatus.STOPPED
    )
    return dg.ScheduleDefinition(
        name=f"{route.id}__personal_data_retention_schedule",
        cron_schedule=RETENTION_CRON,
        job=job,
        execution_timezone=route.source.timezone,
        default_status=status,
        description=f"{route.name}: the daily personal data retention run.",
    )


@dg.op(
    name=ERASE_OP,
    required_resource_keys={"duckdb"},
    out=dg.Out(dg.Nothing),
    description="Erase one customer's e-mail address and personal data from every table of "
    "every route; orders still waiting for delivery are left whole and listed.",
)
def erase_customer(context: dg.OpExecutionContext, config: EraseCustomerConfig) -> None:
    masked = mask_emails(normalise_email(config.email))
    ledger = open_ledger(context.resources.duckdb, "*")
    try:
        report = ledger.personal_data.erase_email(config.email)
    except ValueError as exc:
        raise dg.Failure(f"email: {exc} (got {masked!r})") from None
    tables: dict[str, int] = report["tables"]
    erased, waiting = report["erased"], report["waiting"]
    context.log.info(
        "Erased %s: %s orders blanked; rows per table: %s",
        masked,
        len(erased),
        ", ".join(f"{t} {n}" for t, n in tables.items()) or "none",
    )
    if waiting:
        context.log.warning(
            "Not erased, because they still wait for delivery (erasing them would send an "
            "ERP order without its customer): %s. Run erase_customer_job again once they are "
            "delivered (or cancel them in the shop and fix or skip them here).",
            "; ".join(f"{route} {number} ({why})" for route, number, why in waiting),
        )
    context.add_output_metadata(
        {
            "email": masked,
            "orders_erased": len(erased),
            "rows_touched": sum(tables.values()),
            **{f"rows_{table}": n for table, n in tables.items()},
            "waiting_left": len(waiting),
            "complete": not waiting,
            "tables": md_table(["table", "rows erased"], [[t, n] for t, n in tables.items()]),
            "erased_orders": md_table(
                ["route", "orderNumber", "status"], [list(r) for r in erased[:LIST_ROWS]]
            ),
            "waiting_orders": md_table(
                ["route", "orderNumber", "why it was left"],
                [list(r) for r in waiting[:LIST_ROWS]],
            ),
        }
    )


@dg.job(
    name=ERASE_JOB,
    description="Erase one customer's e-mail address and personal data from the ledger, every "
    f"route. Launchpad config: ops → {ERASE_OP} → config → email. Orders still waiting for "
    "delivery are left whole and listed (run again once delivered). Dagster keeps this run's "
    "config: delete the run afterwards.",
)
def erase_customer_job() -> None:
    erase_customer()


__all__ = [
    "ERASE_JOB",
    "RETENTION_CRON",
    "EraseCustomerConfig",
    "RetentionConfig",
    "RouteRetention",
    "build_route_retention",
    "erase_customer_job",
    "reference_time",
]
