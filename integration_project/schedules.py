"""A route's jobs and schedules: fetch and map every window, deliver every minute."""

from dataclasses import dataclass
from typing import Any

import dagster as dg

from integration_project.assets import DELIVERY_TAG, RouteAssets
from integration_project.routes.config import RouteConfig

#: A run in any of these is still to finish: a second delivery run beside it would only wait.
ACTIVE_RUN_STATUSES = (
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
)


@dataclass(frozen=True)
class RouteSchedules:
    jobs: list[Any]  # unresolved asset jobs
    schedules: list[Any]  # schedule definitions (one partitioned)


def build_route_schedules(assets: RouteAssets) -> RouteSchedules:
    """``<route_id>__source_orders_schedule`` and ``<route_id>__erp_delivery_schedule``, their
    jobs, and ``<route_id>__resend_failed_job`` (launched by hand to re-send failed orders)."""
    source_job = _source_job(assets)
    delivery_job = _delivery_job(assets)
    status = _schedule_status(assets.route)
    # Requests the window that just closed, on the route's incoming cron.
    source_schedule = dg.build_schedule_from_partitioned_job(
        source_job, name=f"{assets.route.id}__source_orders_schedule", default_status=status
    )
    return RouteSchedules(
        [source_job, delivery_job, _resend_job(assets)],
        [source_schedule, _delivery_schedule(assets.route, delivery_job, status)],
    )


def active_run_id(instance: dg.DagsterInstance, job_name: str) -> str | None:
    """A run of ``job_name`` that is queued or running, if any: the route's delivery schedule
    and sensor skip rather than queue a second delivery run behind it."""
    active = instance.get_run_ids(
        dg.RunsFilter(job_name=job_name, statuses=list(ACTIVE_RUN_STATUSES)), limit=1
    )
    return active[0] if active else None


def _schedule_status(route: RouteConfig) -> dg.DefaultScheduleStatus:
    """A route's schedules start running only when its file says so (``schedule.running``)."""
    if route.schedule.running:
        return dg.DefaultScheduleStatus.RUNNING
    return dg.DefaultScheduleStatus.STOPPED


def _source_job(assets: RouteAssets) -> Any:
    route = assets.route
    return dg.define_asset_job(
        f"{route.id}__source_orders_job",
        selection=[assets.source_orders, assets.erp_orders],
        description=f"{route.name}: fetch one window of shop orders, then filter and map it.",
    )


def _delivery_job(assets: RouteAssets) -> Any:
    route = assets.route
    return dg.define_asset_job(
        f"{route.id}__erp_delivery_job",
        selection=[assets.erp_delivered_orders],
        # The run queue allows one delivery run per route at a time (dagster.yaml).
        tags={DELIVERY_TAG: route.id},
        description=f"{route.name}: send every mapped order the ledger does not hold as delivered.",
    )


def _resend_job(assets: RouteAssets) -> Any:
    """Launched by hand after the cause of failed orders was fixed; shares the delivery tag, so
    it never runs beside the route's delivery run."""
    route = assets.route
    return dg.define_asset_job(
        f"{route.id}__resend_failed_job",
        selection=[assets.erp_delivered_orders],
        tags={DELIVERY_TAG: route.id},
        description=(
            f"{route.name}: send orders the ERP refused (status failed) again, after their "
            "cause was fixed. Launchpad config, under ops → the delivery asset → config: "
            '`resend_failed: ["10042", ...]` (order numbers) or `resend_all_failed: true`. '
            "They go back to pending and this run sends them with everything else that waits."
        ),
    )


def _delivery_schedule(
    route: RouteConfig, delivery_job: Any, status: dg.DefaultScheduleStatus
) -> dg.ScheduleDefinition:
    """``<route_id>__erp_delivery_schedule``: the safety net behind the delivery sensor."""

    @dg.schedule(
        name=f"{route.id}__erp_delivery_schedule",
        cron_schedule=route.schedule.outgoing,
        job=delivery_job,
        default_status=status,
        execution_timezone="UTC",
    )
    def erp_delivery_schedule(
        context: dg.ScheduleEvaluationContext,
    ) -> dg.RunRequest | dg.SkipReason:
        """Deliver on the outgoing cron, unless a delivery run is still queued or running."""
        active = active_run_id(context.instance, delivery_job.name)
        if active:
            return dg.SkipReason(f"delivery run {active} is still in progress")
        return dg.RunRequest(tags={DELIVERY_TAG: route.id})

    return erp_delivery_schedule
