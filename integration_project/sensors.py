"""Sensors: start delivery as soon as orders are mapped, and alert when a run fails.

* ``<route_id>__erp_delivery_sensor`` (one per route): when ``<route_id>/erp_orders`` has a new
  materialisation with something to deliver, it requests a delivery run within half a minute
  instead of waiting for the delivery schedule's next tick (the schedule stays as the safety
  net). It reads the instance's event log only, never the DuckDB ledger, which a run may hold.
* ``run_failure_alert_sensor`` (one for the code location, built by
  :func:`build_run_failure_alert_sensor`): POSTs a short JSON message about a failed run to the
  URL in ``ALERT_WEBHOOK_URL`` (Slack-style incoming webhooks and the like), with a link to the
  run and without the value of any route credential or secret-looking variable.
"""

import json
import logging
import os
import re
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import quote, quote_plus, urlsplit

import dagster as dg
import requests
from urllib3.util.retry import Retry

from integration_project import settings
from integration_project.assets import DELIVERY_TAG, RouteAssets, is_file_route
from integration_project.file_sensor import build_file_sensor
from integration_project.http import build_session, safe_url
from integration_project.resources import ErpResource, ShopResource, SprykerResource
from integration_project.schedules import (
    DeliveryWatch,
    active_run_id,
    mapped_count,
    sensor_status,
)

log = logging.getLogger(__name__)

#: How often the daemon evaluates a route's delivery sensor. Each evaluation costs the code
#: server ~50 ms of CPU (mostly building the instance from its ref): every 30 s, a quiet
#: route pays ~6 CPU s an hour for it (`python -m bench.scenarios.ticks`).
DELIVERY_SENSOR_INTERVAL_S = 30
#: Most new ``erp_orders`` materialisations read in one evaluation.
MAX_EVENTS_PER_TICK = 100
ALERT_WEBHOOK_ENV = "ALERT_WEBHOOK_URL"
#: The Dagster UI's address, for the link to a failed run (e.g. https://dagster.example.eu).
WEBSERVER_URL_ENV = "DAGSTER_WEBSERVER_URL"
DAGSTER_PORT_ENV = "DAGSTER_PORT"
#: (connect, read) seconds of one alert POST.
ALERT_TIMEOUT_S = (3.05, 5.0)
#: Retries of the alert POST (connection errors, 429, 5xx): at most 4 attempts in all.
ALERT_RETRIES = 3
ALERT_BACKOFF_FACTOR = 0.5  # 0, 1, 2 s between the attempts
ALERT_RETRY_STATUSES = (429, 500, 502, 503, 504)
#: Longest ``Retry-After`` honoured: the whole alert must fit in a sensor evaluation.
ALERT_MAX_RETRY_AFTER_S = 5.0
ALERT_ERROR_CHARS = 500
#: Shorter values are not redacted (they would match everywhere).
MIN_SECRET_CHARS = 4
#: Environment variables whose values must never leave in an alert, besides those named.
_SECRET_NAME = re.compile(r"(SECRET|TOKEN|PASSWORD|PASSWD|API_KEY|WEBHOOK)", re.IGNORECASE)


def build_route_sensors(
    assets: RouteAssets, delivery_job: Any, source_job: Any = None
) -> list[dg.SensorDefinition]:
    """``<route_id>__erp_delivery_sensor``, and for a route of order files its
    ``<route_id>__order_files_sensor`` (:mod:`.file_sensor`): running when the route's
    schedules are."""
    sensors = [_delivery_sensor(assets, delivery_job)]
    if is_file_route(assets.route):
        sensors.append(build_file_sensor(assets, source_job))
    return sensors


def _delivery_sensor(assets: RouteAssets, delivery_job: Any) -> dg.SensorDefinition:
    """Requests a delivery run for a new ``erp_orders`` materialisation with something to
    deliver, keyed by the materialisation so none triggers twice. Reads the event log only,
    never the ledger (see :class:`DeliveryWatch`)."""
    route = assets.route
    route_id = route.id
    erp_orders_key = assets.erp_orders.key
    watch = DeliveryWatch.of(assets, delivery_job.name)
    status = sensor_status(route)

    @dg.sensor(
        name=f"{route_id}__erp_delivery_sensor",
        job=delivery_job,
        minimum_interval_seconds=DELIVERY_SENSOR_INTERVAL_S,
        default_status=status,
        description=f"{route.name}: starts a delivery run within 30 s of {route_id}/erp_orders "
        "mapping something deliverable, or of a mapping run that follows a delivery which left "
        "orders behind (the delivery schedule stays as the safety net). Cursor: the last "
        "erp_orders materialisation seen, so none triggers twice.",
    )
    def erp_delivery_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        records = _new_materializations(context.instance, erp_orders_key, context.cursor)
        if not records:
            return dg.SensorResult(skip_reason="no new erp_orders materialisation")
        newest = max(record.storage_id for record in records)
        active = active_run_id(context.instance, delivery_job.name)
        if active:
            # Keep the cursor: once that run is done, the next evaluation looks again.
            return dg.SensorResult(
                skip_reason=f"delivery run {active} is still queued or in progress"
            )
        reason = _mapped_text(records) or watch.work_left(context.instance)
        cursor = str(newest)
        if not reason:
            return dg.SensorResult(
                skip_reason=f"{len(records)} new erp_orders materialisation(s), nothing to deliver",
                cursor=cursor,
            )
        context.log.info("erp_orders materialisation %s: %s; requesting delivery", newest, reason)
        return dg.SensorResult(
            run_requests=[
                dg.RunRequest(run_key=f"erp_orders:{newest}", tags={DELIVERY_TAG: route_id})
            ],
            cursor=cursor,
        )

    return erp_delivery_sensor


def _new_materializations(
    instance: dg.DagsterInstance, key: dg.AssetKey, cursor: str | None
) -> Sequence[dg.EventLogRecord]:
    """The materialisations of ``key`` after the cursor, oldest first. Without a cursor (the
    first evaluation) only the latest counts, not the whole history."""
    if not cursor:
        return instance.fetch_materializations(key, limit=1).records
    return instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, after_storage_id=int(cursor)),
        limit=MAX_EVENTS_PER_TICK,
        ascending=True,
    ).records


def _mapped_text(records: Sequence[dg.EventLogRecord]) -> str | None:
    """How many orders the materialisations mapped, when any did (or one does not say)."""
    counts = [mapped_count(record) for record in records]
    if not any(count is None or count > 0 for count in counts):
        return None
    return f"{sum(count or 0 for count in counts)} mapped"


# --- run-failure alerts -----------------------------------------------------------------------


def build_run_failure_alert_sensor(secret_env_names: Iterable[str]) -> dg.SensorDefinition:
    """``run_failure_alert_sensor``: POSTs a failed run's alert to ``ALERT_WEBHOOK_URL``.

    ``secret_env_names`` are the variables whose values must never leave in an alert, whatever
    their names look like: every route's shop and ERP credentials (see
    :func:`route_secret_env_names`). Variables whose names look secret (``*SECRET*``,
    ``*TOKEN*``, ``*PASSWORD*``, …) and ``ALERT_WEBHOOK_URL`` itself are redacted as well. Values
    are read when an alert is sent, so a rotated secret is redacted too.
    """
    names = frozenset(name for name in secret_env_names if name)

    @dg.run_failure_sensor(
        name="run_failure_alert_sensor",
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Posts {run_id, job, error, route, run_url, text} as JSON to the URL in "
        "ALERT_WEBHOOK_URL when a run of this code location fails (unset: the failure is only "
        "logged), retrying connection errors, 429 and 5xx a few times. The error is the first "
        "500 characters of the failure message with the value of every route credential and "
        "secret-looking variable removed; run_url links to the run in the UI "
        "(DAGSTER_WEBSERVER_URL).",
    )
    def run_failure_alert_sensor(context: dg.RunFailureSensorContext) -> None:
        """Alert on a failed run; never raises (a broken webhook must not break the sensor)."""
        try:
            _alert(context, names)
        except Exception as exc:  # the sensor must never fail on its alert
            context.log.warning(
                "The failure alert could not be sent: %s (%s)",
                type(exc).__name__,
                ALERT_WEBHOOK_ENV,
            )

    return run_failure_alert_sensor


def route_secret_env_names(defs: dg.Definitions) -> list[str]:
    """The variables holding secrets of every source and ERP resource in ``defs`` (what each
    route file names under ``*_env``: client ids, client secrets, refresh tokens, passwords)."""
    names: set[str] = set()
    for resource in (defs.resources or {}).values():
        if isinstance(resource, ShopResource | SprykerResource | ErpResource):
            names.update(getattr(resource, "secret_env_names", None) or ())
    return sorted(names)


def _alert(context: dg.RunFailureSensorContext, secret_names: frozenset[str]) -> None:
    run = context.dagster_run
    try:
        error = _failure_text(context)
    except Exception as exc:  # the event log could not be read: alert with what we know
        error = f"run failed (its error could not be read: {type(exc).__name__})"
    message = alert_message(
        run_id=run.run_id,
        job=run.job_name,
        error=error,
        tags=run.tags,
        secret_names=secret_names,
        run_url=run_url(run.run_id),
    )
    context.log.error("Run %s of %s failed: %s", run.run_id, run.job_name, message["error"])
    url = os.environ.get(ALERT_WEBHOOK_ENV, "").strip()
    if not url:
        context.log.info("%s is not set; the failure is only logged", ALERT_WEBHOOK_ENV)
        return
    with _alert_session() as session:
        try:
            response = session.post(
                url, json=message, timeout=ALERT_TIMEOUT_S, allow_redirects=False
            )
        except Exception as exc:
            # The exception text names the URL, which may hold a token: log its type only.
            context.log.warning(
                "Could not post the alert for run %s to %s (retried up to %s times): %s; "
                "the alert was not delivered",
                run.run_id,
                ALERT_WEBHOOK_ENV,
                ALERT_RETRIES,
                type(exc).__name__,
            )
            return
    if response.status_code >= 300:
        context.log.warning(
            "The alert webhook (%s) answered HTTP %s after %s attempt(s); the alert for run %s "
            "was not delivered",
            ALERT_WEBHOOK_ENV,
            response.status_code,
            _attempts(response),
            run.run_id,
        )
    else:
        context.log.info("Alert for run %s posted to %s", run.run_id, ALERT_WEBHOOK_ENV)


class _AlertRetry(Retry):
    """urllib3's retry, waiting at most ``ALERT_MAX_RETRY_AFTER_S`` for a ``Retry-After``: the
    sensor's evaluation has a deadline (60 s by default)."""

    def parse_retry_after(self, retry_after: str) -> float:
        return min(super().parse_retry_after(retry_after), ALERT_MAX_RETRY_AFTER_S)


def _alert_session() -> requests.Session:
    """A session retrying the alert POST on connection errors, read errors, 429 and 5xx, with
    backoff and ``Retry-After``. An alert may then arrive twice, but one hiccup never loses it."""
    return build_session(
        retry_methods={"POST"},
        retry_statuses=ALERT_RETRY_STATUSES,
        total=ALERT_RETRIES,
        read_retries=ALERT_RETRIES,
        backoff_factor=ALERT_BACKOFF_FACTOR,
        retry_class=_AlertRetry,
    )


def _attempts(response: requests.Response) -> int:
    retries = getattr(response.raw, "retries", None)
    history = getattr(retries, "history", None)
    return len(history) + 1 if isinstance(history, tuple) else 1


def _failure_text(context: dg.RunFailureSensorContext) -> str:
    """The run's failure message and the first failed step's error chain (no stack traces)."""
    parts = [context.failure_event.message or "run failed"]
    for event in context.get_step_failure_events()[:1]:
        error = event.step_failure_data.error if event.step_failure_data else None
        while error is not None:
            parts.append(error.message.strip())
            error = error.cause
    return " | ".join(part for part in parts if part)


def run_url(run_id: str) -> str | None:
    """The run's page in the Dagster UI: ``$DAGSTER_WEBSERVER_URL/runs/<run_id>``. Unset, only
    in sandbox mode (``INTEGRATION_SANDBOX`` = 1/true/yes) the local UI that ``dev.py up``
    starts (``http://127.0.0.1:$DAGSTER_PORT``, port 3000 by default); otherwise None: a local
    address in a production alert would point nowhere."""
    base = os.environ.get(WEBSERVER_URL_ENV, "").strip()
    if base:
        try:
            parts = urlsplit(base)
            _ = parts.port  # a port that is not a number raises here
        except ValueError:
            return None  # not a URL: no link, but the alert still goes
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return None
        base = safe_url(base)  # no user info, query or fragment in an alert
    elif _sandbox_mode():
        port = os.environ.get(DAGSTER_PORT_ENV, "").strip()
        base = f"http://127.0.0.1:{port if port.isdigit() else '3000'}"
    else:
        return None
    return f"{base.rstrip('/')}/runs/{quote(run_id, safe='')}"


def _sandbox_mode() -> bool:
    try:
        return settings.sandbox_mode()
    except ValueError:  # a value that is not understood: no local link (the run says why)
        return False


def alert_message(
    *,
    run_id: str,
    job: str,
    error: str,
    tags: dict[str, str] | None = None,
    secret_names: Iterable[str] = (),
    run_url: str | None = None,
) -> dict[str, Any]:
    """The JSON body of an alert: run id, job, the error's first 500 characters (secret values
    removed, see :func:`_redact`), the route when known, the run's page in the UI when known,
    and a ``text`` line for Slack-style webhooks (with the link)."""
    text = _redact(error, secret_names)[:ALERT_ERROR_CHARS]
    message: dict[str, Any] = {"run_id": run_id, "job": job, "error": text}
    route = (tags or {}).get(DELIVERY_TAG) or (job.split("__", 1)[0] if "__" in job else None)
    if route:
        message["route"] = route
    if run_url:
        message["run_url"] = run_url
    line = f"Dagster run {run_id} of {job} failed: {text}"
    message["text"] = f"{line}\n{run_url}" if run_url else line
    return message


def _redact(text: str, secret_names: Iterable[str] = ()) -> str:
    """``text`` with the value of every secret variable replaced by ``<NAME>``.

    Secret: the variables named (route credentials), ``ALERT_WEBHOOK_URL``, and every variable
    whose name looks secret. Values of fewer than 4 characters are left (they would match
    everywhere). Each value is also replaced URL-encoded (any case) and escaped as in JSON or a
    Python repr, as it may appear in a URL or an exception's text. One pass, longest first, so
    a placeholder is never redacted again.
    """
    names = {*secret_names, ALERT_WEBHOOK_ENV}
    names.update(name for name in os.environ if _SECRET_NAME.search(name))
    exact: dict[str, str] = {}
    encoded: dict[str, str] = {}  # lower-cased percent-encoded form -> name
    for name in sorted(names):
        value = os.environ.get(name, "").strip()
        if len(value) < MIN_SECRET_CHARS:
            continue
        for form in (value, json.dumps(value)[1:-1], repr(value)[1:-1]):
            exact.setdefault(form, name)
        for form in (quote(value, safe=""), quote(value), quote_plus(value)):
            if form != value:
                encoded.setdefault(form.lower(), name)
    if not exact:
        return text
    forms = [(form, re.escape(form)) for form in exact]
    forms += [(form, f"(?i:{re.escape(form)})") for form in encoded]
    forms.sort(key=lambda pair: len(pair[0]), reverse=True)
    pattern = "|".join(regex for _, regex in forms)

    def placeholder(match: re.Match[str]) -> str:
        found = match.group(0)
        return f"<{exact.get(found) or encoded.get(found.lower(), 'secret')}>"

    return re.sub(pattern, placeholder, text)


__all__ = [
    "alert_message",
    "build_route_sensors",
    "build_run_failure_alert_sensor",
    "route_secret_env_names",
    "run_url",
]
