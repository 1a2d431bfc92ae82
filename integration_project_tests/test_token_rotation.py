"""Exact's refresh token rotates on every use: a failed, slow or lost token call, or a process
killed in the middle of one, must neither lock the integration out nor burn the configured
``ERP_REFRESH_TOKEN``; two processes needing a token at once must refresh once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from integration_project import settings
from integration_project.exact.client import ExactClient
from integration_project.exact.models import MIN_REFRESH_INTERVAL_S
from integration_project.http import ApiError, AuthError
from integration_project.ledger import DuckDBTokenStore, Ledger
from integration_project.sandbox import Sandbox

pytestmark = pytest.mark.integration


@pytest.fixture
def duckdb_path(ledger_location: str) -> str:
    """Every test here runs on both ledger backends."""
    return ledger_location


def exact_client(sb: Sandbox, ledger: Ledger, **kwargs: object) -> ExactClient:
    return ExactClient(
        base_url=sb.erp_url,
        division=settings.SANDBOX_ERP_DIVISION,
        client_id=settings.SANDBOX_ERP_CLIENT_ID,
        client_secret=settings.SANDBOX_ERP_CLIENT_SECRET,
        refresh_token=settings.SANDBOX_ERP_REFRESH_TOKEN,
        token_store=DuckDBTokenStore(ledger.db, "rotation"),
        max_retries=1,
        backoff_factor=0.01,
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("kind", ["token_error", "503", "429"])
def test_a_transient_token_error_is_not_an_auth_error_and_burns_nothing(
    sandbox: Sandbox, ledger: Ledger, kind: str
) -> None:
    sandbox.erp.faults.add(kind, path_contains="oauth2/token")
    with exact_client(sandbox, ledger) as client:
        with pytest.raises(ApiError) as raised:
            client.find_item_id("SHIPPING")
    assert not isinstance(raised.value, AuthError)  # the run stops early, it is not "refused"
    assert "next run tries again" in str(raised.value)
    assert sandbox.erp.token_calls == 1  # one call: the token endpoint is never hammered
    # Nothing rotated: the next run refreshes with the same token and goes on.
    with exact_client(sandbox, ledger) as client:
        assert client.find_item_id("SHIPPING")
    assert sandbox.erp.token_refreshes == 1


def test_a_slow_token_answer_is_waited_for_not_abandoned(sandbox: Sandbox, ledger: Ledger) -> None:
    """The sandbox rotates, then answers late; a data-call read timeout would lose the chain."""
    sandbox.erp.faults.add("slow", path_contains="oauth2/token", seconds=1.0)
    with exact_client(sandbox, ledger, timeout=(2.0, 0.3)) as client:
        assert client.find_item_id("SHIPPING")
    stored = DuckDBTokenStore(ledger.db, "rotation").load()
    assert stored is not None and stored.refresh_token == sandbox.erp.refresh_token


def later(seconds: float = MIN_REFRESH_INTERVAL_S + 1):
    """The client's clock, ``seconds`` ahead: the 570 s since the lost refresh are over."""
    return lambda: time.time() + seconds


def store(ledger: Ledger) -> DuckDBTokenStore:
    return DuckDBTokenStore(ledger.db, "rotation")


def test_a_500_from_the_token_endpoint_may_have_rotated_so_the_next_run_waits(
    sandbox: Sandbox, ledger: Ledger
) -> None:
    """A 500 proves nothing: the next run does not refresh before the 570 s are over."""
    sandbox.erp.faults.add("500", path_contains="oauth2/token")
    with exact_client(sandbox, ledger) as client, pytest.raises(ApiError):
        client.find_item_id("SHIPPING")
    assert store(ledger).interrupted_refresh() is not None
    calls = sandbox.erp.token_calls
    with exact_client(sandbox, ledger) as client, pytest.raises(ApiError) as raised:
        client.find_item_id("SHIPPING")
    assert "accepts the next token refresh from" in str(raised.value)
    assert not isinstance(raised.value, AuthError)
    assert sandbox.erp.token_calls == calls  # it waited; it did not earn a 400
    with exact_client(sandbox, ledger, clock=later()) as client:
        assert client.find_item_id("SHIPPING")
    assert store(ledger).interrupted_refresh() is None


@pytest.mark.parametrize("mode", ["drop", "504"])
def test_a_lost_token_answer_is_recovered_with_the_previous_refresh_token(
    sandbox: Sandbox, ledger: Ledger, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Exact rotated, the answer never arrived: the new pair is unknown to us. Exact honours the
    previous refresh token until the new pair is used, so after 570 s the route goes on."""
    sandbox.erp.faults.add("token_lost", path_contains="oauth2/token", seconds=0, mode=mode)
    with exact_client(sandbox, ledger) as client, pytest.raises(ApiError):
        client.find_item_id("SHIPPING")
    assert sandbox.erp.token_refreshes == 1  # it did rotate
    assert store(ledger).load() is None and store(ledger).interrupted_refresh() is not None

    # Too early for Exact: the next run stops early without a call, orders stay pending.
    with exact_client(sandbox, ledger) as client, pytest.raises(ApiError):
        client.find_item_id("SHIPPING")
    assert sandbox.erp.token_calls == 1

    sandbox.erp.min_refresh_interval_s = 0  # the sandbox's clock is not moved with the client's
    with exact_client(sandbox, ledger, clock=later()) as client:
        assert client.find_item_id("SHIPPING")
    assert "never had its answer stored" in caplog.text
    stored = store(ledger).load()
    assert stored is not None and stored.refresh_token == sandbox.erp.refresh_token
    assert store(ledger).interrupted_refresh() is None
    # And the chain goes on as usual: the new pair is in use, the previous token is dead.
    assert sandbox.erp.previous_refresh_token is None


def test_an_exact_app_without_the_previous_token_grace_fails_naming_erp_refresh_token(
    sandbox: Sandbox, ledger: Ledger
) -> None:
    sandbox.erp.strict_rotation = True
    sandbox.erp.min_refresh_interval_s = 0
    sandbox.erp.faults.add("token_lost", path_contains="oauth2/token", seconds=0, mode="drop")
    with exact_client(sandbox, ledger) as client, pytest.raises(ApiError):
        client.find_item_id("SHIPPING")
    with exact_client(sandbox, ledger, clock=later()) as client, pytest.raises(AuthError) as raised:
        client.find_item_id("SHIPPING")
    message = str(raised.value)
    assert "lost its answer" in message and "set ERP_REFRESH_TOKEN" in message
    for secret in (settings.SANDBOX_ERP_REFRESH_TOKEN, settings.SANDBOX_ERP_CLIENT_SECRET):
        assert secret not in message


# --- in processes of their own ---------------------------------------------------------------

#: A process that needs an access token: prints "ok" or the error, then exits.
TOKEN_CHILD = textwrap.dedent(
    """
    import json, os, sys
    from integration_project import settings
    from integration_project.exact import auth as exact_auth
    from integration_project.exact.client import ExactClient
    from integration_project.ledger import DuckDBTokenStore
    from integration_project.resources import open_ledger
    from integration_project_testkit.resources import ledger_resource

    spec = json.loads(os.environ["TOKEN_CHILD_SPEC"])
    # A killed process holds the refresh lock until it expires (60 s); shorter for the test.
    exact_auth.REFRESH_LOCK_TTL_S = spec["lock_ttl_s"]
    ledger = open_ledger(ledger_resource(spec["duckdb"]), "route", "rotation")
    client = ExactClient(
        base_url=spec["erp_url"],
        division=settings.SANDBOX_ERP_DIVISION,
        client_id=settings.SANDBOX_ERP_CLIENT_ID,
        client_secret=settings.SANDBOX_ERP_CLIENT_SECRET,
        refresh_token=settings.SANDBOX_ERP_REFRESH_TOKEN,
        token_store=DuckDBTokenStore(ledger.db, "rotation"),
        max_retries=1,
    )
    print("ready", flush=True)
    sys.stdin.readline()  # go
    with client:
        try:
            client.find_item_id("SHIPPING")
            print("ok", flush=True)
        except Exception as exc:
            print(f"{type(exc).__name__}: {exc}", flush=True)
    """
)


def start_token_child(sandbox: Sandbox, duckdb_path: str) -> subprocess.Popen[str]:
    spec = {"erp_url": sandbox.erp_url, "duckdb": duckdb_path, "lock_ttl_s": 3.0}
    child = subprocess.Popen(
        [sys.executable, "-c", TOKEN_CHILD],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "TOKEN_CHILD_SPEC": json.dumps(spec)},
        cwd=Path(__file__).resolve().parents[1],
    )
    assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    return child


def go(child: subprocess.Popen[str]) -> None:
    assert child.stdin is not None
    child.stdin.write("go\n")
    child.stdin.flush()


def test_a_process_killed_between_exacts_token_answer_and_storing_it_does_not_lock_us_out(
    sandbox: Sandbox, ledger: Ledger, duckdb_path: str
) -> None:
    with ledger.db.connect():
        pass  # the schema exists before the children start
    # Exact rotates at once and answers after 5 s: the child is killed while it waits.
    sandbox.erp.faults.add("token_lost", path_contains="oauth2/token", seconds=5, mode="drop")
    child = start_token_child(sandbox, duckdb_path)
    go(child)
    deadline = time.monotonic() + 20
    while sandbox.erp.token_refreshes == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sandbox.erp.token_refreshes == 1
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=10)

    assert store(ledger).load() is None  # the new refresh token died with the process
    assert store(ledger).interrupted_refresh() is not None  # but its intent did not
    sandbox.erp.min_refresh_interval_s = 0
    with exact_client(sandbox, ledger, clock=later()) as client:
        assert client.find_item_id("SHIPPING")
    assert sandbox.erp.token_refreshes == 2


def test_two_processes_needing_a_token_at_once_refresh_once(
    sandbox: Sandbox, ledger: Ledger, duckdb_path: str
) -> None:
    with ledger.db.connect():
        pass  # the schema exists before the children start
    # A slow answer keeps the first refresh open while the second process asks.
    sandbox.erp.faults.add("slow", path_contains="oauth2/token", seconds=1.5, times=2)
    children = [start_token_child(sandbox, duckdb_path) for _ in range(2)]
    for child in children:
        go(child)
    outputs = [child.communicate(timeout=90)[0].strip() for child in children]
    assert outputs == ["ok", "ok"]
    assert sandbox.erp.token_refreshes == 1  # one rotation, shared through the store
    assert sandbox.erp.token_calls == 1
    stored = store(ledger).load()
    assert stored is not None and stored.refresh_token == sandbox.erp.refresh_token
