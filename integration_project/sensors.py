"""Sensors: start delivery as soon as orders are mapped, and alert when a run fails.

* ``<route_id>__erp_delivery_sensor`` (one per route): when ``<route_id>/erp_orders`` has a new
  materialisation with something to deliver, it requests a delivery run within seconds instead
  of waiting for the delivery schedule's next tick (the schedule stays as the safety net).
* ``run_failure_alert_sensor`` (one for the code location): POSTs a short JSON message about a
  failed run to the URL in ``ALERT_WEBHOOK_URL`` (Slack-style incoming webhooks and the like).
"""

import logging
import os
import re
from typing import Any

import dagster as dg
import requests

from integration_project.assets import DELIVERY_TAG, RouteAssets
from integration_project.resources import open_ledger
from integration_project.schedules import ACTIVE_RUN_STATUSES

log = logging.getLogger(__name__)

#: How often the daemon evaluates a route's delivery sensor.
DELIVERY_SENSOR_INTERVAL_S = 15
#: Most new ``erp_orders`` materialisations read in one evaluation.
MAX_EVENTS_PER_TICK = 100
ALERT_WEBHOOK_ENV = "ALERT_WEBHOOK_URL"
ALERT_TIMEOUT_S = 5.0
ALERT_ERROR_CHARS = 500
#: Environment variables whose values must never leave in an alert.
_SECRET_NAME = re.compile(r"(SECRET|TOKEN|PASSWORD|PASSWD|API_KEY|WEBHOOK)", re.IGNORECASE)


def build_route_sensors(assets: RouteAssets, delivery_job: Any) -> list[dg.SensorDefinition]:
    """``<route_id>__erp_delivery_sensor``: running when the route's schedules are."""
    route = assets.route
    route_id = route.id
    erp_orders_key = assets.erp_orders.key
    allowed = route.rules().allowed_countries
    status = (
        dg.DefaultSensorStatus.RUNNING if route.schedule.running else dg.DefaultSensorStatus.STOPPED
    )

    @dg.sensor(
        name=f"{route_id}__erp_delivery_sensor",
        job=delivery_job,
        minimum_interval_seconds=DELIVERY_SENSOR_INTERVAL_S,
        default_status=status,
        required_resource_keys={"duckdb"},
        description=f"{route.name}: starts a delivery run within seconds of {route_id}/erp_orders "
        "mapping something deliverable (the delivery schedule stays as the safety net). "
        "Cursor: the last erp_orders materialisation seen, so none triggers twice.",
    )
    def erp_delivery_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        instance = context.instance
        last_seen = int(context.cursor) if context.cursor else None
        if last_seen is None:
            # First evaluation: only the latest materialisation counts, not the whole history.
            records = instance.fetch_materializations(erp_orders_key, limit=1).records
        else:
            records = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=erp_orders_key, after_storage_id=last_seen),
                limit=MAX_EVENTS_PER_TICK,
                ascending=True,
            ).records
        if not records:
            return dg.SensorResult(skip_reason="no new erp_orders materialisation")
        newest = max(record.storage_id for record in records)
        active = instance.get_run_ids(
            dg.RunsFilter(job_name=delivery_job.name, statuses=ACTIVE_RUN_STATUSES), limit=1
        )
        if active:
            # Keep the cursor: once that run is done, the next evaluation looks again.
            return dg.SensorResult(
                skip_reason=f"delivery run {active[0]} is still queued or in progress"
            )
        mapped = sum(_mapped(record) for record in records)
        pending = 0 if mapped else _pending(context, route_id, allowed)
        cursor = str(newest)
        if not mapped and not pending:
            return dg.SensorResult(
                skip_reason=f"{len(records)} new erp_orders materialisation(s), nothing to deliver",
                cursor=cursor,
            )
        context.log.info(
            "erp_orders materialisation %s: %s mapped, %s pending; requesting delivery",
            newest,
            mapped,
            pending,
        )
        return dg.SensorResult(
            run_requests=[
                dg.RunRequest(run_key=f"erp_orders:{newest}", tags={DELIVERY_TAG: route_id})
            ],
            cursor=cursor,
        )

    return [erp_delivery_sensor]


def _mapped(record: dg.EventLogRecord) -> int:
    materialization = record.asset_materialization
    value = materialization.metadata.get("mapped") if materialization else None
    number = getattr(value, "value", None)
    return int(number) if isinstance(number, int | float) else 0


def _pending(context: dg.SensorEvaluationContext, route_id: str, allowed: frozenset[str]) -> int:
    """Orders the ledger would still send; 0 if the ledger cannot be read right now (a run
    holds the DuckDB file): the delivery schedule covers it."""
    try:
        return open_ledger(context.resources.duckdb, route_id).count_pending(allowed)
    except Exception as exc:
        context.log.warning("Could not read the ledger (%s); skipping", type(exc).__name__)
        return 0


# --- run-failure alerts -----------------------------------------------------------------------


@dg.run_failure_sensor(
    name="run_failure_alert_sensor",
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Posts {run_id, job, error, route} as JSON to the URL in ALERT_WEBHOOK_URL when "
    "a run of this code location fails (unset: the failure is only logged). The error is the "
    "first 500 characters of the failure message, with secret values removed.",
)
def run_failure_alert_sensor(context: dg.RunFailureSensorContext) -> None:
    """Alert on a failed run; never raises (a broken webhook must not break the sensor)."""
    run = context.dagster_run
    message = alert_message(
        run_id=run.run_id,
        job=run.job_name,
        error=_failure_text(context),
        tags=run.tags,
    )
    context.log.error("Run %s of %s failed: %s", run.run_id, run.job_name, message["error"])
    url = os.environ.get(ALERT_WEBHOOK_ENV, "").strip()
    if not url:
        context.log.info("%s is not set; the failure is only logged", ALERT_WEBHOOK_ENV)
        return
    try:
        response = requests.post(url, json=message, timeout=ALERT_TIMEOUT_S)
    except requests.RequestException as exc:
        # The exception text names the URL, which may hold a token: log its type only.
        context.log.warning(
            "Could not post the alert to %s: %s", ALERT_WEBHOOK_ENV, type(exc).__name__
        )
        return
    if response.status_code >= 300:
        context.log.warning(
            "The alert webhook (%s) answered HTTP %s", ALERT_WEBHOOK_ENV, response.status_code
        )
    else:
        context.log.info("Alert for run %s posted to %s", run.run_id, ALERT_WEBHOOK_ENV)


def _failure_text(context: dg.RunFailureSensorContext) -> str:
    """The run's failure message and the first failed step's error chain (no stack traces)."""
    parts = [context.failure_event.message or "run failed"]
    for event in context.get_step_failure_events()[:1]:
        error = event.step_failure_data.error if event.step_failure_data else None
        while error is not None:
            parts.append(error.message.strip())
            error = error.cause
    return " | ".join(part for part in parts if part)


def alert_message(
    *, run_id: str, job: str, error: str, tags: dict[str, str] | None = None
) -> dict[str, Any]:
    """The JSON body of an alert: run id, job, the error's first 500 characters (secret values
    removed), the route when known, and a ``text`` line for Slack-style webhooks."""
    text = _redact(error)[:ALERT_ERROR_CHARS]
    message: dict[str, Any] = {"run_id": run_id, "job": job, "error": text}
    route = (tags or {}).get(DELIVERY_TAG) or (job.split("__", 1)[0] if "__" in job else None)
    if route:
        message["route"] = route
    message["text"] = f"Dagster run {run_id} of {job} failed: {text}"
    return message


def _redact(text: str) -> str:
    """Remove the values of secret-looking environment variables from ``text``."""
    for name, value in os.environ.items():
        if len(value) >= 6 and _SECRET_NAME.search(name) and value in text:
            text = text.replace(value, f"<{name}>")
    return text


__all__ = ["alert_message", "build_route_sensors", "run_failure_alert_sensor"]
