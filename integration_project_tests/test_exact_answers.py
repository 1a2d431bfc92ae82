"""What Exact answers, and what the client makes of it: POST representations, OAuth-form token
errors, 401s and token errors counted toward Exact's block, a refused refresh token pausing the
chain, one token chain for every division of an authorisation, and ``__next`` links kept to
ERP_API_URL's host. Against the sandbox over real HTTP."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from integration_project import settings
from integration_project.exact.client import (
    MAX_CLIENT_ERRORS_PER_HOUR,
    TOKEN_ENDPOINT,
    ErrorBudgetSpent,
    ExactClient,
    fingerprint,
)
from integration_project.exact.models import (
    ACCOUNTS,
    ITEMS,
    SALES_ORDERS,
    TOKEN_PATH,
    SalesOrderCreate,
    StoredTokens,
    data_path,
)
from integration_project.http import ApiError, AuthError
from integration_project.ledger import DuckDBTokenStore, Ledger
from integration_project.resources import ErpResource, erp_client, token_store
from integration_project.sandbox import Sandbox

pytestmark = pytest.mark.integration

TIMEOUT = 5


def erp_resource(sb: Sandbox, **overrides: Any) -> ErpResource:
    config: dict[str, Any] = {
        "api_url": sb.erp_url,
        "division": settings.SANDBOX_ERP_DIVISION,
        "client_id": settings.SANDBOX_ERP_CLIENT_ID,
        "client_secret": settings.SANDBOX_ERP_CLIENT_SECRET,
        "refresh_token": settings.SANDBOX_ERP_REFRESH_TOKEN,
        "max_retries": 1,
        "backoff_factor": 0.01,
        "read_timeout_s": 5.0,
        **overrides,
    }
    return ErpResource(**config)


def order_payload(client: ExactClient, ref: str) -> dict[str, Any]:
    account = client.find_account_id("o'brien@example.ie")
    item = client.find_item_id("SHIPPING")
    assert account and item
    return SalesOrderCreate(
        OrderedBy=account,
        YourRef=ref,
        OrderDate="2026-11-20T10:00:00Z",
        Description="test",
        Currency="EUR",
        SalesOrderLines=[{"Item": item, "Quantity": 1, "NetPrice": 4.9, "Description": "x"}],
    ).model_dump()


def sandbox_answers(sb: Sandbox) -> int:
    """Every answer the sandbox ERP gave (token and data, any status)."""
    return sum(sb.erp.statuses.values())


def token_call(sb: Sandbox, **form: str) -> requests.Response:
    data = {
        "grant_type": "refresh_token",
        "refresh_token": sb.erp.refresh_token,
        "client_id": settings.SANDBOX_ERP_CLIENT_ID,
        "client_secret": settings.SANDBOX_ERP_CLIENT_SECRET,
        **form,
    }
    return requests.post(sb.erp_url + TOKEN_PATH, data=data, timeout=TIMEOUT)


# --- POST answers --------------------------------------------------------------------------


def test_create_asks_for_the_representation_and_gets_the_order_number(
    sandbox: Sandbox, ledger: Ledger
) -> None:
    with erp_client(erp_resource(sandbox), ledger) as client:
        created = client.create_sales_order(order_payload(client, "P-1"))
    [stored] = sandbox.erp.orders_with_ref("P-1")
    assert created.order_number is not None
    assert (created.order_id, created.order_number) == (stored["OrderID"], stored["OrderNumber"])


def test_sandbox_leaves_server_made_fields_out_without_prefer(
    sandbox: Sandbox, ledger: Ledger
) -> None:
    with erp_client(erp_resource(sandbox), ledger) as client:
        payload = order_payload(client, "P-2")
        token = client._tokens.access_token()
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    url = sandbox.erp_url + data_path(settings.SANDBOX_ERP_DIVISION, SALES_ORDERS)

    bare = requests.post(url, json=payload, headers=headers, timeout=TIMEOUT)
    assert bare.status_code == 201
    entity = bare.json()["d"]
    assert set(entity) == {"__metadata", "OrderID", *payload}
    assert "OrderNumber" not in entity and "Status" not in entity and "AmountFC" not in entity
    [line] = entity["SalesOrderLines"]["results"]
    assert set(line) == set(payload["SalesOrderLines"][0])  # no ID, LineNumber, AmountFC …

    full = requests.post(
        url, json=payload, headers={**headers, "Prefer": "return=representation"}, timeout=TIMEOUT
    )
    assert full.status_code == 201
    assert full.json()["d"]["OrderNumber"] == sandbox.erp.sales_orders[-1]["OrderNumber"]
    assert "ID" in full.json()["d"]["SalesOrderLines"]["results"][0]

    account = {"Name": "N", "Email": "n@example.eu", "Country": "NL", "Status": "C"}
    accounts_url = sandbox.erp_url + data_path(settings.SANDBOX_ERP_DIVISION, ACCOUNTS)
    new = requests.post(accounts_url, json=account, headers=headers, timeout=TIMEOUT).json()["d"]
    assert set(new) == {"__metadata", "ID", *account}  # no Code


# --- token errors ----------------------------------------------------------------------------


def test_token_errors_come_in_oauth_form_and_the_client_shows_the_code_not_the_words(
    sandbox: Sandbox, ledger: Ledger
) -> None:
    refused = token_call(sandbox, refresh_token="not-a-refresh-token")
    assert refused.status_code == 400
    body = refused.json()
    assert set(body) == {"error", "error_description"} and body["error"] == "invalid_grant"

    wrong = "erp-secret-Kp4wQ9"
    with erp_client(erp_resource(sandbox, client_secret=wrong), ledger) as client:
        with pytest.raises(AuthError) as raised:
            client.find_item_id("SHIPPING")
    message = str(raised.value)
    # The OAuth code and the status, never the body's words: a token endpoint's
    # error_description may echo what was sent (see test_alert_secrets.py).
    assert "HTTP 401, OAuth error invalid_client" in message
    assert body["error_description"] not in message
    assert "Unknown client_id or wrong client_secret" not in message
    assert "ERP_CLIENT_SECRET" in message
    for secret in (wrong, settings.SANDBOX_ERP_REFRESH_TOKEN):
        assert secret not in message


# --- client errors toward Exact's block -------------------------------------------------------


def test_401s_count_in_the_client_guard_and_stop_it_at_the_threshold(
    sandbox: Sandbox, ledger: Ledger
) -> None:
    sandbox.erp.min_refresh_interval_s = 0
    erp = erp_resource(sandbox)
    store = token_store(erp, ledger)
    with erp_client(erp, ledger) as client:
        assert client.find_item_id("SHIPPING")
        sandbox.erp.revoke_access_tokens()
        assert client.find_item_id("SHIPPING")  # 401, one refresh, the call again
    assert len(store.recent_client_errors(0)["GET logistics/Items"]) == 1

    for _ in range(MAX_CLIENT_ERRORS_PER_HOUR - 2):
        store.record_client_error("GET logistics/Items", 401, time.time())
    sandbox.erp.revoke_access_tokens()
    refreshes = sandbox.erp.token_refreshes
    with erp_client(erp, ledger) as client, pytest.raises(ErrorBudgetSpent):
        client.find_item_id("SHIPPING")  # the eighth 401: no refresh, no retry
    assert sandbox.erp.token_refreshes == refreshes
    assert len(store.recent_client_errors(0)["GET logistics/Items"]) == MAX_CLIENT_ERRORS_PER_HOUR


def test_the_sandbox_blocks_after_ten_401s(sandbox: Sandbox, ledger: Ledger) -> None:
    with erp_client(erp_resource(sandbox), ledger) as client:
        token = client._tokens.access_token()
    url = sandbox.erp_url + data_path(settings.SANDBOX_ERP_DIVISION, ITEMS)
    forged = {"Authorization": "Bearer forged"}
    answers = [requests.get(url, headers=forged, timeout=TIMEOUT).status_code for _ in range(10)]
    assert answers == [401] * 10 and sandbox.erp.blocked_until is not None
    good = {"Authorization": f"Bearer {token}"}
    assert requests.get(url, headers=good, timeout=TIMEOUT).status_code == 403


def test_token_endpoint_4xx_count_in_the_sandbox_and_the_client(
    sandbox: Sandbox, ledger: Ledger
) -> None:
    # The client: each refused token call is a client error of POST oauth2/token; at the
    # threshold it stops before calling the token endpoint again.
    erp = erp_resource(sandbox, client_secret="wrong-secret")
    for _ in range(MAX_CLIENT_ERRORS_PER_HOUR):
        with erp_client(erp, ledger) as client, pytest.raises(AuthError):
            client.find_item_id("SHIPPING")
    assert sandbox.erp.token_calls == MAX_CLIENT_ERRORS_PER_HOUR
    errors = token_store(erp, ledger).recent_client_errors(0)
    assert len(errors[TOKEN_ENDPOINT]) == MAX_CLIENT_ERRORS_PER_HOUR
    with erp_client(erp, ledger) as client, pytest.raises(ErrorBudgetSpent):
        client.find_item_id("SHIPPING")
    assert sandbox.erp.token_calls == MAX_CLIENT_ERRORS_PER_HOUR
    assert sandbox.erp.blocked_until is None

    # The sandbox: the tenth token 4xx within the hour blocks the app, token endpoint included.
    assert len(sandbox.erp.client_errors["token_post"]) == MAX_CLIENT_ERRORS_PER_HOUR
    for _ in range(10 - MAX_CLIENT_ERRORS_PER_HOUR):
        assert token_call(sandbox, client_secret="wrong").status_code == 401
    assert sandbox.erp.blocked_until is not None
    blocked = token_call(sandbox)  # right credentials, but blocked
    assert blocked.status_code == 403 and blocked.json()["error"] == "access_denied"


# --- a refused refresh token ------------------------------------------------------------------


def test_a_refused_refresh_token_pauses_the_chain_until_erp_refresh_token_changes(
    sandbox: Sandbox, ledger: Ledger
) -> None:
    sandbox.erp.min_refresh_interval_s = 0
    erp = erp_resource(sandbox)
    with erp_client(erp, ledger) as client:
        assert client.find_item_id("SHIPPING")
    # Exact revokes the grant: every refresh token of the chain and the access token die.
    sandbox.erp.refresh_token = "issued-to-someone-else"
    sandbox.erp.previous_refresh_token = None
    sandbox.erp.revoke_access_tokens()
    with erp_client(erp, ledger) as client, pytest.raises(AuthError) as first:
        client.find_item_id("SHIPPING")
    # The OAuth code, not Exact's error_description (token answers' words stay out of errors).
    assert "OAuth error invalid_grant" in str(first.value)
    assert "invalid, expired or already used" not in str(first.value)
    assert "authorisation needed" in str(first.value)

    # Later runs stop before calling Exact at all.
    answers, token_calls = sandbox_answers(sandbox), sandbox.erp.token_calls
    for _ in range(2):
        with erp_client(erp, ledger) as client, pytest.raises(AuthError) as later:
            client.find_item_id("SHIPPING")
        assert client.calls == 0
    assert sandbox_answers(sandbox) == answers and sandbox.erp.token_calls == token_calls
    message = str(later.value)
    assert "authorisation needed" in message and "ERP_REFRESH_TOKEN" in message
    for secret in (settings.SANDBOX_ERP_REFRESH_TOKEN, settings.SANDBOX_ERP_CLIENT_SECRET):
        assert secret not in message

    # The operator authorises again and sets the new token: that lifts the pause.
    sandbox.erp.refresh_token = "freshly-authorised-token"
    renewed = erp_resource(sandbox, refresh_token="freshly-authorised-token")
    with erp_client(renewed, ledger) as client:
        assert client.find_item_id("SHIPPING")
    assert sandbox.erp.token_calls == token_calls + 1


def test_the_pause_is_lifted_by_a_new_seed_in_a_store_without_the_seed_in_its_key(
    sandbox: Sandbox, ledger: Ledger
) -> None:
    """Stores keyed without the fingerprint (one key for everything) honour it by seed too."""
    store = DuckDBTokenStore(ledger.db, "one-key")
    store.note_authorisation_needed(fingerprint("old-seed"), "refused (test)")

    def client(seed: str) -> ExactClient:
        return ExactClient(
            base_url=sandbox.erp_url,
            division=settings.SANDBOX_ERP_DIVISION,
            client_id=settings.SANDBOX_ERP_CLIENT_ID,
            client_secret=settings.SANDBOX_ERP_CLIENT_SECRET,
            refresh_token=seed,
            token_store=store,
            max_retries=1,
        )

    with client("old-seed") as old, pytest.raises(AuthError, match="refused \\(test\\)"):
        old.find_item_id("SHIPPING")
    assert sandbox_answers(sandbox) == 0
    with client(settings.SANDBOX_ERP_REFRESH_TOKEN) as new:
        assert new.find_item_id("SHIPPING")
    assert store.authorisation_needed() is None  # the new chain's save cleared it


# --- one chain, many divisions ----------------------------------------------------------------


def test_two_divisions_of_one_authorisation_share_one_token_chain(
    sandbox: Sandbox, ledger: Ledger
) -> None:
    sandbox.erp.other_divisions.add("7654321")
    first = erp_resource(sandbox)
    second = erp_resource(sandbox, division="7654321")
    assert first.chain_key == second.chain_key and first.token_key != second.token_key
    for erp in (first, second, first):
        with erp_client(erp, ledger) as client:
            assert client.find_item_id("SHIPPING")
    assert sandbox.erp.token_refreshes == 1 and sandbox.erp.token_calls == 1
    with ledger.db.connect() as con:
        rows = con.execute("SELECT token_key FROM erp_tokens").fetchall()
    assert rows == [(first.chain_key,)]
    for secret in (settings.SANDBOX_ERP_REFRESH_TOKEN, settings.SANDBOX_ERP_CLIENT_SECRET):
        assert secret not in first.chain_key

    # Budgets stay per division: errors and pauses of one are not the other's.
    one, other = token_store(first, ledger), token_store(second, ledger)
    one.record_client_error("POST salesorder/SalesOrders", 400, 1e12)
    one.pause(1e12, "daily budget spent (test)")
    assert other.recent_client_errors(0) == {} and other.paused_until() is None
    assert one.paused_until() is not None


def test_a_chain_stored_under_the_old_division_key_is_adopted(
    sandbox: Sandbox, ledger: Ledger
) -> None:
    sandbox.erp.min_refresh_interval_s = 0
    erp = erp_resource(sandbox)
    # What an older version did: the chain under ERP URL|division|client id.
    legacy = DuckDBTokenStore(ledger.db, erp.token_key)
    with erp.get_client(legacy, guard=legacy) as old:
        assert old.find_item_id("SHIPPING")  # rotated, and the new pair used: the seed is dead
    stored = legacy.load()
    assert stored is not None and sandbox.erp.token_refreshes == 1
    legacy.save(  # the access token is due: the upgraded client must refresh
        StoredTokens(
            refresh_token=stored.refresh_token,
            access_token=None,
            access_expires_at=None,
            refreshed_at=stored.refreshed_at,
            seed_fingerprint=stored.seed_fingerprint,
        )
    )
    with erp_client(erp, ledger) as client:
        assert client.find_item_id("SHIPPING")  # refreshed with the adopted rotated token
    assert sandbox.erp.token_refreshes == 2 and sandbox.erp.statuses[400] == 0
    assert legacy.load() is None  # one copy of the chain, under the new key
    adopted = token_store(erp, ledger).load()
    assert adopted is not None and adopted.refresh_token == sandbox.erp.refresh_token

    # A chain from another ERP_REFRESH_TOKEN is not adopted.
    other = DuckDBTokenStore(ledger.db, "legacy|other")
    other.save(StoredTokens("rt", None, None, None, fingerprint("another-seed")))
    fresh = DuckDBTokenStore(
        ledger.db,
        "legacy|other",
        chain_key="chain|other",
        adopt_from="legacy|other",
        seed_fingerprint=fingerprint("yet-another-seed"),
    )
    assert fresh.load() is None and other.load() is not None


# --- __next links ------------------------------------------------------------------------------


@pytest.fixture
def foreign_next() -> Iterator[tuple[str, list[str]]]:
    """A stand-in ERP whose page links point elsewhere (other host, other port)."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            seen.append(f"POST {self.path}")
            self._answer(
                {"access_token": "a", "expires_in": "600", "refresh_token": "r", "token_type": "x"}
            )

        def do_GET(self) -> None:
            seen.append(f"GET {self.path}")
            target = "other-host.invalid" if "Code" in self.path else "127.0.0.1:1"
            link = f"http://{target}/api/v1/1/logistics/Items?$skiptoken=guid'page-2-secret'"
            self._answer({"d": {"results": [{"ID": "x"}], "__next": link}})

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()


def test_next_links_to_another_host_are_refused(
    foreign_next: tuple[str, list[str]], ledger: Ledger, sandbox: Sandbox
) -> None:
    url, seen = foreign_next
    with erp_client(erp_resource(sandbox, api_url=url), ledger) as client:
        with pytest.raises(ApiError) as other_host:
            client.find_item_id("SHIPPING")  # its link: another host
        with pytest.raises(ApiError) as other_port:
            client.find_account_id("a@example.eu")  # its link: this host, another port
    assert "other-host.invalid" in str(other_host.value)
    assert "127.0.0.1" in str(other_port.value)
    for raised in (other_host.value, other_port.value):
        assert "skiptoken" not in str(raised) and "page-2-secret" not in str(raised)
        assert "not followed" in str(raised)
    assert [s.split("?")[0] for s in seen] == [
        "POST /api/oauth2/token",
        "GET /api/v1/1234567/logistics/Items",
        "GET /api/v1/1234567/crm/Accounts",
    ]


def test_next_links_to_erp_api_url_are_followed(sandbox: Sandbox, ledger: Ledger) -> None:
    sandbox.erp.page_size = 2
    with erp_client(erp_resource(sandbox), ledger) as client:
        rows = client._query(ITEMS, None, "ID,Code")
    assert len(rows) == len(sandbox.erp.items) > 2
    assert sandbox.erp.calls["items_get"] == -(-len(rows) // 2)
