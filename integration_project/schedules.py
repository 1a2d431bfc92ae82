"""A route's jobs and schedules: fetch and map every window, deliver every minute."""

from dataclasses import dataclass
from typing import Any

import dagster as dg

from integration_project.assets import DELIVERY_TAG, RouteAssets

ACTIVE_RUN_STATUSES = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


@dataclass(frozen=True)
class RouteSchedules:
    jobs: list[Any]  # unresolved asset jobs
    schedules: list[Any]  # schedule definitions (one partitioned)


def build_route_schedules(assets: RouteAssets) -> RouteSchedules:
    """``<route_id>__source_orders_schedule`` and ``<route_id>__erp_delivery_schedule``, their
    jobs, and ``<route_id>__resend_failed_job`` (launched by hand to re-send failed orders)."""
    route = assets.route
    prefix = route.id
    status = (
        dg.DefaultScheduleStatus.RUNNING
        if route.schedule.running
        else dg.DefaultScheduleStatus.STOPPED
    )
    source_job = dg.define_asset_job(
        f"{prefix}__source_orders_job",
        selection=[assets.source_orders, assets.erp_orders],
        description=f"{route.name}: fetch one window of shop orders, then filter and map it.",
    )
    delivery_job = dg.define_asset_job(
        f"{prefix}__erp_delivery_job",
        selection=[assets.erp_delivered_orders],
        # The run queue allows one delivery run per route at a time (dagster.yaml).
        tags={DELIVERY_TAG: prefix},
        description=f"{route.name}: send every mapped order the ledger does not hold as delivered.",
    )
    # Launched by hand after the cause of failed orders was fixed; shares the delivery tag, so
    # it never runs beside the route's delivery run.
    resend_job = dg.define_asset_job(
        f"{prefix}__resend_failed_job",
        selection=[assets.erp_delivered_orders],
        tags={DELIVERY_TAG: prefix},
        description=(
            f"{route.name}: send orders the ERP refused (status failed) again, after their "
            "cause was fixed. Launchpad config, under ops → the delivery asset → config: "
            '`resend_failed: ["10042", ...]` (order numbers) or `resend_all_failed: true`. '
            "They go back to pending and this run sends them with everything else that waits."
        ),
    )
    # Requests the window that just closed, on the route's incoming cron.
    source_schedule = dg.build_schedule_from_partitioned_job(
        source_job, name=f"{prefix}__source_orders_schedule", default_status=status
    )

    @dg.schedule(
        name=f"{prefix}__erp_delivery_schedule",
        cron_schedule=route.schedule.outgoing,
        job=delivery_job,
        default_status=status,
        execution_timezone="UTC",
    )
    def erp_delivery_schedule(
        context: dg.ScheduleEvaluationContext,
    ) -> dg.RunRequest | dg.SkipReason:
        """Deliver on the outgoing cron, unless a delivery run is still queued or running."""
        active = context.instance.get_run_ids(
            dg.RunsFilter(job_name=delivery_job.name, statuses=ACTIVE_RUN_STATUSES), limit=1
        )
        if active:
            return dg.SkipReason(f"delivery run {active[0]} is still in progress")
        return dg.RunRequest(tags={DELIVERY_TAG: prefix})

    return RouteSchedules(
        [source_job, delivery_job, resend_job], [source_schedule, erp_delivery_schedule]
    )
