"""The delivery schedule when a route has nothing to do: it skips (a run is a process of its
own, seconds of CPU), deciding from the instance's event log alone, and still launches a run
when orders were mapped, when the last delivery left orders pending or failed, and at least
once an hour.

Real runs of the route's jobs (in process, against the sandbox) on the session instance, and
the real schedule evaluated with ``build_schedule_context``. Each test builds a route of its
own, so the runs of one never reach another's schedule.
"""

import itertools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
import pytest

from integration_project.assets import DELIVERY_TAG, RouteAssets, build_route_assets
from integration_project.sandbox import Sandbox
from integration_project.schedules import DELIVERY_SAFETY_NET, build_route_schedules
from integration_project_testkit.log_lines import Lines
from integration_project_testkit.routes import shipped_route
from integration_project_testkit.windows import WINDOW_END, WINDOW_KEY, WINDOW_START

pytestmark = pytest.mark.integration

#: Numbers the test routes, one per test: their runs never reach another test's schedule.
ROUTE_NUMBERS = itertools.count(1)


@dataclass
class Route:
    """One test route's assets, delivery schedule and jobs, with the resources and instance
    its runs use."""

    assets: RouteAssets
    defs: dg.Definitions
    instance: dg.DagsterInstance

    @property
    def id(self) -> str:
        return self.assets.route.id

    @property
    def schedule(self) -> dg.ScheduleDefinition:
        return self.defs.resolve_schedule_def(f"{self.id}__erp_delivery_schedule")

    def tick(self, at: datetime | None = None) -> Any:
        """One evaluation of the delivery schedule, as the daemon does at ``at`` (now); what
        it logged (why it requests a run) is in the result's ``lines``."""
        context = dg.build_schedule_context(
            instance=self.instance, scheduled_execution_time=at or datetime.now(UTC)
        )
        lines = Lines()
        context.log.addHandler(lines)
        data = self.schedule.evaluate_tick(context)
        data.lines = lines.text  # type: ignore[attr-defined]
        return data

    def deliver(self) -> dict[str, Any]:
        """A run of the route's delivery job; the metadata of its materialisation."""
        job = self.defs.resolve_job_def(f"{self.id}__erp_delivery_job")
        result = job.execute_in_process(instance=self.instance)
        assert result.dagster_run.tags[DELIVERY_TAG] == self.id
        # The job also writes ERP numbers back to the shop (the route's write-back).
        [event] = [
            e
            for e in result.get_asset_materialization_events()
            if e.asset_key == self.assets.erp_delivered_orders.key
        ]
        return {k: v.value for k, v in event.materialization.metadata.items()}

    def fetch_and_map(self) -> int:
        """A run of the route's fetch-and-map job for the test window; how many it mapped."""
        job = self.defs.resolve_job_def(f"{self.id}__source_orders_job")
        result = job.execute_in_process(instance=self.instance, partition_key=WINDOW_KEY)
        [mapped] = [
            e.materialization.metadata["mapped"].value
            for e in result.get_asset_materialization_events()
            if e.asset_key == self.assets.erp_orders.key
        ]
        return int(mapped)


@pytest.fixture
def route(
    sandbox: Sandbox,
    resources: dict[str, Any],
    dagster_instance: dg.DagsterInstance,
) -> Route:
    """A route of its own, three EU orders in the sandbox shop's test window."""
    sandbox.shop.add_orders(3, start=WINDOW_START, end=WINDOW_END)
    assets = build_route_assets(shipped_route(name=f"Idle ticks {next(ROUTE_NUMBERS)}"))
    schedules = build_route_schedules(assets)
    defs = dg.Definitions(
        assets=assets.all, jobs=schedules.jobs, schedules=schedules.schedules, resources=resources
    )
    return Route(assets, defs, dagster_instance)


def requested(data: Any) -> bool:
    return bool(data.run_requests)


def test_idle_ticks_skip_without_a_run_or_the_ledger(route: Route) -> None:
    # The schedule has no resources: it cannot open the ledger, which a run may be holding.
    assert not route.schedule.required_resource_keys
    first = route.tick()
    [request] = first.run_requests  # no delivery run yet: the first tick delivers
    assert request.tags[DELIVERY_TAG] == route.id

    assert route.deliver()["sent"] == 0  # nothing mapped yet
    idle = route.tick()
    assert not requested(idle)
    assert "nothing to deliver" in (idle.skip_message or "")
    assert not requested(route.tick())  # and again a minute later


def test_a_tick_delivers_what_was_mapped_since_the_last_delivery_run(route: Route) -> None:
    route.deliver()
    assert not requested(route.tick())

    assert route.fetch_and_map() == 3
    data = route.tick()
    [request] = data.run_requests
    assert request.tags[DELIVERY_TAG] == route.id
    assert "3 order(s) mapped" in data.lines

    assert route.deliver()["sent"] == 3
    assert not requested(route.tick())  # delivered: idle again
    assert route.fetch_and_map() == 3  # the same window again maps nothing new to send...
    assert requested(route.tick())  # ...but the schedule cannot tell without the ledger
    assert route.deliver()["sent"] == 0
    assert not requested(route.tick())


def test_a_tick_delivers_while_the_last_delivery_left_orders_pending(
    route: Route, sandbox: Sandbox
) -> None:
    route.deliver()
    route.fetch_and_map()
    # One ERP call left today: the run sends one order and stops; the next waits for the reset.
    sandbox.erp.set_rate_limit(per_day=1, day_window_s=600)
    left = route.deliver()
    assert left["sent"] == 1 and left["pending_left"] == 2
    data = route.tick()
    assert requested(data) and "the last delivery left pending_left = 2" in data.lines

    waiting = route.deliver()  # makes no call before the reset; the orders still wait
    assert waiting["sent"] == 0 and waiting["pending_left"] == 2
    assert requested(route.tick())


@pytest.mark.parametrize(
    ("status", "said"),
    [(dg.DagsterRunStatus.FAILURE, "failed"), (dg.DagsterRunStatus.CANCELED, "was canceled")],
)
def test_a_tick_delivers_after_a_failed_or_canceled_delivery_run(
    route: Route, status: dg.DagsterRunStatus, said: str
) -> None:
    route.deliver()
    assert not requested(route.tick())
    # A delivery run that died (run monitoring marks it failed) or that was canceled.
    job = route.defs.resolve_job_def(f"{route.id}__erp_delivery_job")
    dead = route.instance.create_run_for_job(job, status=status, tags={DELIVERY_TAG: route.id})
    try:
        data = route.tick()
        [request] = data.run_requests
        assert request.tags[DELIVERY_TAG] == route.id
        assert f"the last delivery run {dead.run_id} {said}" in data.lines
    finally:
        route.instance.delete_run(dead.run_id)


def test_a_quiet_route_still_delivers_once_an_hour(route: Route) -> None:
    route.deliver()
    now = datetime.now(UTC)
    assert not requested(route.tick(now + timedelta(minutes=30)))
    assert not requested(route.tick(now + DELIVERY_SAFETY_NET - timedelta(minutes=2)))
    data = route.tick(now + DELIVERY_SAFETY_NET)
    [request] = data.run_requests
    assert request.tags[DELIVERY_TAG] == route.id
    assert "(the hourly safety net)" in data.lines
