"""Jobs and schedules: fetch and map every 5 minutes, deliver every minute."""

import dagster as dg

from integration_project.assets import (
    DELIVERY_TAG,
    erp_delivered_orders,
    erp_orders,
    order_windows,
    source_orders,
)

source_orders_job = dg.define_asset_job(
    "source_orders_job",
    selection=[source_orders, erp_orders],
    partitions_def=order_windows,
    description="Fetch one 5-minute window of shop orders, then filter and map it.",
)

erp_delivery_job = dg.define_asset_job(
    "erp_delivery_job",
    selection=[erp_delivered_orders],
    # The run queue allows one run with this tag at a time (dagster.yaml).
    tags={DELIVERY_TAG: "erp"},
    description="Send every mapped order the ledger does not hold as delivered.",
)

# Requests the window that just closed, every 5 minutes.
source_orders_schedule = dg.build_schedule_from_partitioned_job(
    source_orders_job,
    name="source_orders_schedule",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)

_ACTIVE = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


@dg.schedule(
    name="erp_delivery_schedule",
    cron_schedule="* * * * *",
    job=erp_delivery_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    execution_timezone="UTC",
)
def erp_delivery_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
    """Every minute, unless a delivery run is still queued or running (no pile-up)."""
    active = context.instance.get_run_ids(
        dg.RunsFilter(job_name=erp_delivery_job.name, statuses=_ACTIVE), limit=1
    )
    if active:
        return dg.SkipReason(f"delivery run {active[0]} is still in progress")
    return dg.RunRequest(tags={DELIVERY_TAG: "erp"})
