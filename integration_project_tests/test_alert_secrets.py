"""Secrets in alerts and token errors (issue "Fail closed": secrets at rest and in alerts).

* The run-failure alert, run for real (a failed run in the session instance, the sensor function
  called with its context) against a tiny local webhook: retries with backoff, never raises,
  logs a final failure by status or exception type and never by URL, redacts every credential
  variable a route names whatever its name, and links to the run in the UI.
* Token errors of both clients, against a tiny local token endpoint whose answers carry a marker
  in ``error_description``, in raw text and in headers: the error names the status and the OAuth
  code, never a word of the body.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import quote, quote_plus

import dagster as dg
import pytest
from dagster_duckdb import DuckDBResource

from integration_project.components.order_route import build_route_definitions
from integration_project.exact.client import ExactClient
from integration_project.http import ApiError, AuthError
from integration_project.ledger import DuckDBTokenStore
from integration_project.resources import open_ledger
from integration_project.sensors import (
    ALERT_MAX_RETRY_AFTER_S,
    ALERT_RETRIES,
    ALERT_WEBHOOK_ENV,
    _AlertRetry,
    _redact,
    build_run_failure_alert_sensor,
    route_secret_env_names,
)
from integration_project.shopware.client import ShopwareClient
from integration_project_testkit.log_lines import Lines
from integration_project_testkit.routes import shipped_route

pytestmark = pytest.mark.integration

#: A route variable whose name looks harmless (no SECRET, TOKEN, PASSWORD… in it).
HARMLESS_NAME = "ACME_KEYSTUFF"
HARMLESS_VALUE = "s3cr3t-value"
#: Another one, whose value changes when URL-encoded.
ENCODED_NAME = "MY_SHOP_KEY"
ENCODED_VALUE = "p@ss word/+&=K3y"
#: A secret in the webhook URL's path and query: neither may reach a log line or the alert.
HOOK_TOKEN = "T0KEN-in-the-hook-path"
HOOK_QUERY = "Q-key-in-the-hook-query"
ERROR_ENV = "ALERT_PROBE_ERROR"
RUN_URL_ENVS = ("DAGSTER_WEBSERVER_URL", "INTEGRATION_SANDBOX", "DAGSTER_PORT")


# --- the webhook ------------------------------------------------------------------------------


@dataclass
class Webhook:
    """A local webhook answering ``script`` in order (the last status from then on)."""

    base: str = ""
    script: list[int] = field(default_factory=lambda: [200])
    retry_after: dict[int, str] = field(default_factory=dict)  # nth answer (0-based) -> header
    posts: list[dict[str, Any]] = field(default_factory=list)
    raw: list[bytes] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"{self.base}/hooks/{HOOK_TOKEN}?key={HOOK_QUERY}"

    def answer(self, body: bytes) -> tuple[int, str | None]:
        with self.lock:
            n = len(self.raw)
            self.raw.append(body)
            self.posts.append(json.loads(body))
            status = self.script[min(n, len(self.script) - 1)]
            return status, self.retry_after.get(n)


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            status, retry_after = hook.answer(body)
            self.send_response(status)
            if retry_after is not None:
                self.send_header("Retry-After", retry_after)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    hook.base = f"http://127.0.0.1:{server.server_address[1]}"
    yield hook
    server.shutdown()
    server.server_close()


# --- a failed run and the sensor's context --------------------------------------------------------


@dg.asset(key=["acme_route", "alert_secrets_probe"])
def failing_probe() -> None:
    raise RuntimeError(os.environ[ERROR_ENV])


PROBE_JOB = dg.define_asset_job("acme_route__alert_probe_job", [failing_probe])
SENSOR = build_run_failure_alert_sensor([HARMLESS_NAME, ENCODED_NAME])


@dataclass
class Failure:
    context: Any
    lines: Lines

    @property
    def run_id(self) -> str:
        return self.context.dagster_run.run_id


@pytest.fixture
def fail_with(
    dagster_instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[str], Failure]]:
    """A failed run whose error is ``text``, and its run-failure sensor context."""
    for name in RUN_URL_ENVS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(HARMLESS_NAME, HARMLESS_VALUE)
    monkeypatch.setenv(ENCODED_NAME, ENCODED_VALUE)
    runs: list[str] = []

    def fail(text: str) -> Failure:
        monkeypatch.setenv(ERROR_ENV, text)
        job = dg.Definitions(assets=[failing_probe], jobs=[PROBE_JOB]).resolve_job_def(
            PROBE_JOB.name
        )
        result = job.execute_in_process(instance=dagster_instance, raise_on_error=False)
        assert not result.success
        runs.append(result.run_id)
        context = dg.build_run_status_sensor_context(
            sensor_name=SENSOR.name,
            dagster_instance=dagster_instance,
            dagster_run=result.dagster_run,
            dagster_event=result.get_run_failure_event(),
        ).for_run_failure()
        lines = Lines()
        context.log.addHandler(lines)
        return Failure(context, lines)

    yield fail
    for run_id in runs:
        dagster_instance.delete_run(run_id)


# --- retries ------------------------------------------------------------------------------


def test_a_webhook_answering_503_twice_gets_the_alert_on_the_third_post(
    webhook: Webhook, fail_with: Callable[[str], Failure], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Retries with backoff, honouring Retry-After: one alert delivered, three POSTs."""
    failure = fail_with("Exact Online answered 500")
    monkeypatch.setenv(ALERT_WEBHOOK_ENV, webhook.url)
    webhook.script = [503, 503, 200]
    webhook.retry_after = {0: "2"}  # then the backoff's 0.5 * 2 = 1 s
    started = time.monotonic()
    SENSOR(failure.context)
    elapsed = time.monotonic() - started

    assert len(webhook.posts) == 3
    assert all(raw == webhook.raw[0] for raw in webhook.raw)  # the same alert each time
    assert webhook.posts[0]["run_id"] == failure.run_id
    assert elapsed >= 2.9, f"Retry-After and backoff not honoured ({elapsed:.1f} s)"
    assert failure.lines.at(logging.WARNING) == []
    assert f"Alert for run {failure.run_id} posted to {ALERT_WEBHOOK_ENV}" in failure.lines.text


def test_a_webhook_that_never_answers_2xx_is_logged_by_status_never_by_url(
    webhook: Webhook, fail_with: Callable[[str], Failure], monkeypatch: pytest.MonkeyPatch
) -> None:
    failure = fail_with(f"refused; the hook was {webhook.url}")
    monkeypatch.setenv(ALERT_WEBHOOK_ENV, webhook.url)
    webhook.script = [503]
    SENSOR(failure.context)  # logged, not raised

    assert len(webhook.posts) == ALERT_RETRIES + 1
    [warning] = failure.lines.at(logging.WARNING)
    assert warning == (
        f"The alert webhook ({ALERT_WEBHOOK_ENV}) answered HTTP 503 after 4 attempt(s); "
        f"the alert for run {failure.run_id} was not delivered"
    )
    for leak in (webhook.base, "127.0.0.1", HOOK_TOKEN, HOOK_QUERY):
        assert leak not in failure.lines.text
        assert leak not in webhook.raw[-1].decode()  # ALERT_WEBHOOK_URL is redacted too
    assert f"<{ALERT_WEBHOOK_ENV}>" in webhook.posts[-1]["error"]


def test_an_unreachable_webhook_is_logged_by_exception_type(
    fail_with: Callable[[str], Failure], monkeypatch: pytest.MonkeyPatch
) -> None:
    failure = fail_with("boom")
    url = f"http://127.0.0.1:9/hooks/{HOOK_TOKEN}?key={HOOK_QUERY}"  # nothing listens on 9
    monkeypatch.setenv(ALERT_WEBHOOK_ENV, url)
    SENSOR(failure.context)  # logged, not raised

    [warning] = failure.lines.at(logging.WARNING)
    assert warning == (
        f"Could not post the alert for run {failure.run_id} to {ALERT_WEBHOOK_ENV} "
        f"(retried up to {ALERT_RETRIES} times): ConnectionError; the alert was not delivered"
    )
    for leak in ("127.0.0.1", HOOK_TOKEN, HOOK_QUERY, ":9/"):
        assert leak not in failure.lines.text


def test_retry_after_is_capped_so_the_alert_fits_in_a_sensor_evaluation() -> None:
    retry = _AlertRetry(total=3)
    assert retry.parse_retry_after("3600") == ALERT_MAX_RETRY_AFTER_S
    assert retry.parse_retry_after("1") == 1
    assert type(retry.new()) is _AlertRetry  # kept across retries


# --- redaction ------------------------------------------------------------------------------


def test_a_route_variable_with_a_harmless_name_is_redacted_in_the_posted_alert(
    webhook: Webhook, fail_with: Callable[[str], Failure], monkeypatch: pytest.MonkeyPatch
) -> None:
    encoded = quote(ENCODED_VALUE, safe="")
    text = (
        f"Shopware refused key {HARMLESS_VALUE}; "
        f"GET https://shop.example.eu/?key={encoded}&alt={quote_plus(ENCODED_VALUE)} "
        f"lower {encoded.lower()} raw {ENCODED_VALUE} repr {ENCODED_VALUE!r}"
    )
    assert _redact(text) == text  # neither name looks secret: only the names given count
    failure = fail_with(text)
    monkeypatch.setenv(ALERT_WEBHOOK_ENV, webhook.url)
    SENSOR(failure.context)

    [alert] = webhook.posts
    posted = webhook.raw[0].decode()
    for secret in (HARMLESS_VALUE, ENCODED_VALUE, encoded, encoded.lower(), "p@ss", "p%40ss"):
        assert secret not in posted, f"{secret!r} leaked into the alert"
        assert secret not in failure.lines.text, f"{secret!r} leaked into the sensor's log"
    assert f"<{HARMLESS_NAME}>" in alert["error"] and f"<{ENCODED_NAME}>" in alert["error"]
    assert f"<{HARMLESS_NAME}>" in alert["text"]


def test_route_files_name_the_variables_the_alert_redacts() -> None:
    route = shipped_route(
        name="Acme route",
        source={"client_id_env": "ACME_SHOP_ID", "client_secret_env": HARMLESS_NAME},
        target={"client_secret_env": "ACME_PASS", "refresh_token_env": "ACME_GRANT"},
    )
    names = route_secret_env_names(build_route_definitions(route))
    assert {"ACME_SHOP_ID", HARMLESS_NAME, "ERP_CLIENT_ID", "ACME_PASS", "ACME_GRANT"} <= set(names)
    assert "SHOP_API_URL" not in names and "ERP_DIVISION" not in names  # not secrets


def test_the_code_locations_alert_redacts_what_the_shipped_routes_name(
    webhook: Webhook, fail_with: Callable[[str], Failure], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The wiring in definitions.py: the B2B route names SHOP2_CLIENT_ID, which looks harmless."""
    monkeypatch.setenv("INTEGRATION_SANDBOX", "1")  # the shipped routes on the sandbox
    defs = importlib.import_module("integration_project.definitions").defs()
    sensor = defs.resolve_sensor_def("run_failure_alert_sensor")
    monkeypatch.setenv("SHOP2_CLIENT_ID", "b2b-client-id-Zr41")
    failure = fail_with("refused client b2b-client-id-Zr41")
    monkeypatch.setenv(ALERT_WEBHOOK_ENV, webhook.url)
    sensor(failure.context)
    [alert] = webhook.posts
    assert "b2b-client-id-Zr41" not in webhook.raw[0].decode()
    assert "<SHOP2_CLIENT_ID>" in alert["error"]


# --- the link to the run ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"INTEGRATION_SANDBOX": "true", "DAGSTER_PORT": "3123"}, "http://127.0.0.1:3123"),
        ({"INTEGRATION_SANDBOX": "1"}, "http://127.0.0.1:3000"),
        (
            {
                "DAGSTER_WEBSERVER_URL": "https://ops:pw@dagster.example.eu/",
                "INTEGRATION_SANDBOX": "yes",
            },
            "https://dagster.example.eu",
        ),
        (
            {"DAGSTER_WEBSERVER_URL": "https://dagster.example.eu/prod"},
            "https://dagster.example.eu/prod",
        ),
        ({}, None),
        ({"INTEGRATION_SANDBOX": "0", "DAGSTER_PORT": "3123"}, None),
        # Not understood: no link, but the alert still goes.
        ({"INTEGRATION_SANDBOX": "maybe"}, None),
        ({"DAGSTER_WEBSERVER_URL": "https://dagster.example.eu:port"}, None),
    ],
)
def test_the_alert_links_to_the_run_in_sandbox_mode_or_with_dagster_webserver_url(
    webhook: Webhook,
    fail_with: Callable[[str], Failure],
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    expected: str | None,
) -> None:
    failure = fail_with("boom")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv(ALERT_WEBHOOK_ENV, webhook.url)
    SENSOR(failure.context)
    [alert] = webhook.posts
    if expected is None:
        assert "run_url" not in alert  # never a local address outside sandbox mode
        assert "http" not in alert["text"]
    else:
        assert alert["run_url"] == f"{expected}/runs/{failure.run_id}"
        assert alert["text"].endswith(alert["run_url"])
        assert "pw" not in alert["run_url"]


# --- token errors -------------------------------------------------------------------------------

MARKER = "BODY-MARKER-123"


@dataclass
class TokenAnswer:
    status: int
    body: bytes
    content_type: str
    headers: dict[str, str] = field(default_factory=dict)


@pytest.fixture
def token_endpoint() -> Iterator[tuple[str, list[TokenAnswer]]]:
    """Answers every POST (either client's token path) with ``answers[0]``."""
    answers: list[TokenAnswer] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            answer = answers[0]
            self.send_response(answer.status)
            self.send_header("Content-Type", answer.content_type)
            self.send_header("Content-Length", str(len(answer.body)))
            for name, value in answer.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(answer.body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", answers
    server.shutdown()
    server.server_close()


def oauth_body(code: str) -> bytes:
    return json.dumps(
        {"error": code, "error_description": f"{MARKER}: the client secret sent was …"}
    ).encode()


#: (status, body, content type, the OAuth code that may be shown)
TOKEN_ANSWERS = [
    (400, oauth_body("invalid_grant"), "application/json", "invalid_grant"),
    (401, oauth_body("invalid_client"), "application/json", "invalid_client"),
    (500, oauth_body("server_error"), "application/json", "server_error"),
    (400, f"<html>{MARKER} bad request</html>".encode(), "text/html", None),
    (401, f"{MARKER} unauthorised".encode(), "text/plain", None),
    (500, f"{MARKER} Internal Server Error".encode(), "text/plain", None),
    (400, oauth_body(f"{MARKER} not a code"), "application/json", None),
    (200, f"{MARKER} not json".encode(), "text/plain", None),
]


def raised_text(raised: pytest.ExceptionInfo[ApiError]) -> str:
    """The error as a run's failure shows it: message, repr and traceback with its causes."""
    return "\n".join([repr(raised.value), *traceback.format_exception(raised.value)])


@pytest.mark.parametrize(("status", "body", "content_type", "code"), TOKEN_ANSWERS)
def test_exact_token_errors_carry_the_status_and_oauth_code_never_the_body(
    token_endpoint: tuple[str, list[TokenAnswer]],
    duckdb_path: str,
    status: int,
    body: bytes,
    content_type: str,
    code: str | None,
) -> None:
    url, answers = token_endpoint
    # Exact's Reason header: its leading code may be shown, never what follows it.
    reason = f"TooEarlyToRefreshTokens: {MARKER} refresh after 2026-11-20T10:00:00Z"
    answers.append(TokenAnswer(status, body, content_type, {"Reason": reason}))
    ledger = open_ledger(DuckDBResource(database=duckdb_path), "acme_route", "k")
    store = DuckDBTokenStore(ledger.db, "k")
    client = ExactClient(
        base_url=url,
        division="1",
        client_id="acme-client",
        client_secret="acme-secret-Wq2",
        refresh_token="acme-refresh-Lp9",
        token_store=store,
        guard=store,
        max_retries=0,
    )
    with client, pytest.raises(ApiError) as raised:
        client.find_item_id("SHIPPING")
    text = raised_text(raised)
    assert MARKER not in text
    assert str(status) in str(raised.value)
    if status != 200:
        assert f"HTTP {status}" in str(raised.value)
        assert "Reason TooEarlyToRefreshTokens" in str(raised.value)
    if code:
        assert f"OAuth error {code}" in str(raised.value)
    if status == 400 and code == "invalid_grant":
        # The pause stored for later runs says no more than the error did.
        assert isinstance(raised.value, AuthError)
        needed = store.authorisation_needed()
        assert needed is not None and MARKER not in needed[1]
        assert "invalid_grant" in needed[1] and "ERP_REFRESH_TOKEN" in needed[1]
    for secret in ("acme-secret-Wq2", "acme-refresh-Lp9"):
        assert secret not in text


@pytest.mark.parametrize(("status", "body", "content_type", "code"), TOKEN_ANSWERS)
def test_shopware_token_errors_carry_the_status_and_oauth_code_never_the_body(
    token_endpoint: tuple[str, list[TokenAnswer]],
    status: int,
    body: bytes,
    content_type: str,
    code: str | None,
) -> None:
    url, answers = token_endpoint
    answers.append(TokenAnswer(status, body, content_type))
    client = ShopwareClient(
        base_url=url,
        client_id="acme-shop-id",
        client_secret="acme-shop-secret-Hn5",
        max_retries=0,
        credential_names=("ACME_SHOP_ID", HARMLESS_NAME),
    )
    start = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
    end = datetime(2026, 11, 20, 10, 5, tzinfo=UTC)
    with client, pytest.raises(ApiError) as raised:
        client.search_orders_page(start=start, end=end, page=1, limit=5)
    text = raised_text(raised)
    assert MARKER not in text and "acme-shop-secret-Hn5" not in text
    assert str(status) in str(raised.value) and "/api/oauth/token" in str(raised.value)
    if status != 200:
        assert f"HTTP {status}" in str(raised.value)
    if code:
        assert f"OAuth error {code}" in str(raised.value)
    if status in (400, 401):
        assert isinstance(raised.value, AuthError)
        assert f"check ACME_SHOP_ID and {HARMLESS_NAME}" in str(raised.value)
    elif status == 500:
        assert "the next run tries again" in str(raised.value)
