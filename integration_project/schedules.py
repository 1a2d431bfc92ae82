"""A route's jobs and schedules: fetch and map every window, deliver what was mapped.

The delivery schedule ticks every minute (the route's outgoing cron) but launches a run only
when there is something to deliver, read from the instance's event log (never the ledger: the
code server must not hold the DuckDB file a run needs): see :class:`DeliveryWatch`. At least
once an hour it launches one anyway, as the safety net it is.
"""

import time
from dataclasses import dataclass
from datetime import timedelta
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
#: However quiet a route is, its delivery schedule launches a run when none was launched for
#: this long: the safety net for what the event log cannot show (orders mapped outside Dagster,
#: a ledger restored from a backup, an instance whose history was wiped).
DELIVERY_SAFETY_NET = timedelta(hours=1)
#: A tick this close to the safety net counts as reaching it: a 1-minute cron is not a tick late.
SAFETY_NET_SLACK = timedelta(seconds=30)
#: Most ``erp_orders`` materialisations one evaluation reads; more than that counts as new work.
MAX_MAPPED_EVENTS = 100
#: Delivery metadata that says the last delivery left orders behind (``would_send``: a dry run).
WORK_LEFT_KEYS = ("pending_left", "unknown_outcome", "failed", "would_send")
_ENDED_BADLY = {dg.DagsterRunStatus.FAILURE: "failed", dg.DagsterRunStatus.CANCELED: "was canceled"}


@dataclass(frozen=True)
class RouteSchedules:
    jobs: list[Any]  # unresolved asset jobs
    schedules: list[Any]  # schedule definitions (one partitioned)


def build_route_schedules(assets: RouteAssets) -> RouteSchedules:
    """``<route_id>__source_orders_schedule`` and ``<route_id>__erp_delivery_schedule``, their
    jobs, and ``<route_id>__resend_failed_job`` (launched by hand to re-send failed orders)."""
    source_job = _source_job(assets)
    delivery_job = _delivery_job(assets)
    status = schedule_status(assets.route)
    watch = DeliveryWatch.of(assets, delivery_job.name)
    schedules = [_delivery_schedule(assets.route, delivery_job, watch, status)]
    if isinstance(assets.partitions_def, dg.TimeWindowPartitionsDefinition):
        # Requests the window that just closed, on the route's incoming cron. (A route of
        # order files has no windows: its file sensor requests a run per new file.)
        source_schedule = dg.build_schedule_from_partitioned_job(
            source_job, name=f"{assets.route.id}__source_orders_schedule", default_status=status
        )
        schedules.insert(0, source_schedule)
    return RouteSchedules([source_job, delivery_job, _resend_job(assets)], schedules)


def active_run_id(instance: dg.DagsterInstance, job_name: str) -> str | None:
    """A run of ``job_name`` that is queued or running, if any: the route's delivery schedule
    and sensor skip rather than queue a second delivery run behind it."""
    active = instance.get_run_ids(
        dg.RunsFilter(job_name=job_name, statuses=list(ACTIVE_RUN_STATUSES)), limit=1
    )
    return active[0] if active else None


def mapped_count(record: dg.EventLogRecord) -> int | None:
    """The ``mapped`` figure of an ``erp_orders`` materialisation; None when it has none (one
    reported by hand): it may have mapped something."""
    materialization = record.asset_materialization
    value = materialization.metadata.get("mapped") if materialization else None
    number = getattr(value, "value", None)
    return int(number) if isinstance(number, int | float) else None


@dataclass(frozen=True)
class DeliveryWatch:
    """Whether a route's delivery run has anything to do, read from the instance's event log.

    A few indexed queries, no ledger: the code server that evaluates schedules and sensors must
    never open the DuckDB file, which a run may be holding (or about to need) for writing. The
    runs of the delivery job and the resend job (both tagged with :data:`DELIVERY_TAG`) are the
    route's delivery runs; the latest ``erp_delivered_orders`` materialisation, whoever made it,
    says what the ledger held after it.
    """

    route_id: str
    job_name: str
    erp_orders: dg.AssetKey
    delivered: dg.AssetKey

    @classmethod
    def of(cls, assets: RouteAssets, job_name: str) -> "DeliveryWatch":
        return cls(
            assets.route.id, job_name, assets.erp_orders.key, assets.erp_delivered_orders.key
        )

    def work_left(self, instance: dg.DagsterInstance) -> str | None:
        """Why the last delivery left work behind (its run failed or was canceled; it left
        orders pending, failed or with an unknown outcome), or None."""
        run = self._last_run(instance)
        return _ended_badly(run) or _left_behind(self._last_delivery(instance))

    def due(self, instance: dg.DagsterInstance, now: float) -> str | None:
        """Why a delivery run is due at ``now`` (epoch seconds), or None when there is nothing
        to deliver: what :meth:`work_left` finds, orders mapped since the last delivery run
        began, no delivery run yet, or none for :data:`DELIVERY_SAFETY_NET`."""
        run = self._last_run(instance)
        if run is None:
            return "no delivery run of this route yet"
        delivery = self._last_delivery(instance)
        reason = _ended_badly(run) or _left_behind(delivery)
        if reason:
            return reason
        since = _began(instance, delivery, run) if delivery else _run_began(run)
        reason = self._mapped_since(instance, since)
        if reason:
            return reason
        last = max(run.create_timestamp.timestamp(), delivery.timestamp if delivery else 0.0)
        idle = now - last
        if idle + SAFETY_NET_SLACK.total_seconds() >= DELIVERY_SAFETY_NET.total_seconds():
            return f"no delivery run for {idle / 60:.0f} minutes (the hourly safety net)"
        return None

    def _last_run(self, instance: dg.DagsterInstance) -> dg.RunRecord | None:
        records = instance.get_run_records(
            dg.RunsFilter(tags={DELIVERY_TAG: self.route_id}), limit=1
        )
        return records[0] if records else None

    def _last_delivery(self, instance: dg.DagsterInstance) -> dg.EventLogRecord | None:
        records = instance.fetch_materializations(self.delivered, limit=1).records
        return records[0] if records else None

    def _mapped_since(self, instance: dg.DagsterInstance, since: float) -> str | None:
        """Orders mapped after ``since``, the start of the last delivery run. A mapping run
        commits its orders before it records its materialisation, and a delivery run reads
        what is pending after it started, so an order that run missed is always mapped
        after ``since``. (Between hosts whose clocks differ, the sensor still sees the
        materialisation and requests a delivery once the running one is done.)"""
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=self.erp_orders, after_timestamp=since),
            limit=MAX_MAPPED_EVENTS,
        ).records
        counts = [mapped_count(record) for record in records]
        if any(count is None or count > 0 for count in counts):
            mapped = sum(count or 0 for count in counts)
            return (
                f"{mapped} order(s) mapped in {len(records)} erp_orders materialisation(s) "
                "since the last delivery run began"
            )
        if len(records) >= MAX_MAPPED_EVENTS:
            return f"{MAX_MAPPED_EVENTS}+ erp_orders materialisations since the last delivery"
        return None


def _ended_badly(run: dg.RunRecord | None) -> str | None:
    """A failed or canceled delivery run: orders it was sending wait for the next one."""
    if run is None or run.dagster_run.status not in _ENDED_BADLY:
        return None
    return f"the last delivery run {run.dagster_run.run_id} {_ENDED_BADLY[run.dagster_run.status]}"


def _left_behind(record: dg.EventLogRecord | None) -> str | None:
    """The first of :data:`WORK_LEFT_KEYS` above zero in a delivery materialisation."""
    materialization = record.asset_materialization if record else None
    if materialization is None:
        return None
    for key in WORK_LEFT_KEYS:
        number = getattr(materialization.metadata.get(key), "value", None)
        if isinstance(number, int | float) and number > 0:
            return f"the last delivery left {key} = {number:g} (run {record.run_id or 'none'})"
    return None


def _began(instance: dg.DagsterInstance, record: dg.EventLogRecord, last: dg.RunRecord) -> float:
    """When the run behind a delivery materialisation began (it read what was pending after
    that; usually ``last``, the latest delivery run); the materialisation's own time when the
    run is unknown (reported by hand)."""
    if record.run_id == last.dagster_run.run_id:
        return _run_began(last)
    run = instance.get_run_record_by_id(record.run_id) if record.run_id else None
    return _run_began(run) if run else record.timestamp


def _run_began(run: dg.RunRecord) -> float:
    return run.start_time or run.create_timestamp.timestamp()


def schedule_status(route: RouteConfig) -> dg.DefaultScheduleStatus:
    """A route's schedules start running only when its file says so (``schedule.running``)."""
    if route.schedule.running:
        return dg.DefaultScheduleStatus.RUNNING
    return dg.DefaultScheduleStatus.STOPPED


def sensor_status(route: RouteConfig) -> dg.DefaultSensorStatus:
    """A route's sensors run when its schedules do (``schedule.running``)."""
    if route.schedule.running:
        return dg.DefaultSensorStatus.RUNNING
    return dg.DefaultSensorStatus.STOPPED


def _source_job(assets: RouteAssets) -> Any:
    route = assets.route
    return dg.define_asset_job(
        f"{route.id}__source_orders_job",
        selection=[assets.source_orders, assets.erp_orders],
        description=f"{route.name}: fetch one window of shop orders (or read one order "
        "file), then filter and map it.",
    )


def _delivery_job(assets: RouteAssets) -> Any:
    route = assets.route
    # The shop learns each order's ERP number right after the run that delivered it.
    after = [assets.shop_order_writeback] if assets.shop_order_writeback is not None else []
    return dg.define_asset_job(
        f"{route.id}__erp_delivery_job",
        selection=[assets.erp_delivered_orders, *after],
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
    route: RouteConfig,
    delivery_job: Any,
    watch: DeliveryWatch,
    status: dg.DefaultScheduleStatus,
) -> dg.ScheduleDefinition:
    """``<route_id>__erp_delivery_schedule``: the safety net behind the delivery sensor. Each
    tick costs a few event-log queries; a run (a process of its own) only when one is due."""

    @dg.schedule(
        name=f"{route.id}__erp_delivery_schedule",
        cron_schedule=route.schedule.outgoing,
        job=delivery_job,
        default_status=status,
        execution_timezone="UTC",
        description=f"{route.name}: delivers what the delivery sensor left, and at least once "
        "an hour; skips a tick with nothing to deliver (read from the event log) or while a "
        "delivery run is queued or running.",
    )
    def erp_delivery_schedule(
        context: dg.ScheduleEvaluationContext,
    ) -> dg.RunRequest | dg.SkipReason:
        """Deliver when something is due (:meth:`DeliveryWatch.due`), unless a delivery run is
        still queued or running."""
        active = active_run_id(context.instance, delivery_job.name)
        if active:
            return dg.SkipReason(f"delivery run {active} is still in progress")
        reason = watch.due(context.instance, _tick_time(context))
        if reason is None:
            return dg.SkipReason(
                "nothing to deliver: no orders mapped since the last delivery run, which left "
                "none pending (the hourly safety net launches one anyway)"
            )
        context.log.info("Requesting delivery: %s", reason)
        return dg.RunRequest(tags={DELIVERY_TAG: route.id})

    return erp_delivery_schedule


def _tick_time(context: dg.ScheduleEvaluationContext) -> float:
    """The tick's scheduled time (epoch seconds); now when evaluated outside the daemon."""
    scheduled = context.scheduled_execution_time
    return scheduled.timestamp() if scheduled else time.time()
