"""The sandbox shop checked by a client we did not write: ``lib_shopware6_api_base`` 6.1.2, a
Shopware 6 Admin API client written by others against real Shopware.

It is configured as a new user would configure it (its ``ConfShopware6ApiBase``, or its
environment variables) and pointed at the sandbox over real HTTP. What it does that our own
client does not (HTTP Basic client authentication, its ``Criteria`` DSL, paging until an empty
page) must work against the sandbox because it works against Shopware. Where the two disagree,
the sandbox is changed, never this suite; a library claim judged wrong about real Shopware
would be marked ``xfail(strict=True)`` with the evidence (none so far).

The token rules are league/oauth2-server 8.5's (``AbstractGrant::getClientCredentials``: each
of id and secret from the body, else from HTTP Basic) with Shopware's ``ClientRepository`` and
``ErrorResponseFactory`` on top; ``reference/shopware.md`` section 8 lists each with its source.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx2
import pytest
import requests
from lib_shopware6_api_base import (
    MAX_RETRY_ATTEMPTS,
    AscFieldSorting,
    ConfShopware6ApiBase,
    Criteria,
    EqualsFilter,
    GrantType,
    RangeFilter,
    Shopware6AdminAPIClientBase,
    ShopwareAPIError,
    require_config_from_env,
)
from lib_shopware6_api_base.config import get_config

from integration_project.http import AuthError
from integration_project.sandbox import ORDER_STATES, Sandbox
from integration_project.shopware.client import ShopwareClient
from integration_project.shopware.models import TOKEN_PATH, format_storage_datetime
from integration_project_testkit.windows import WINDOW_END, WINDOW_START

pytestmark = pytest.mark.integration

MS = timedelta(milliseconds=1)
TIMEOUT = 10
#: The library's variable prefix (``lib_layered_config``: ``<SLUG>___<SECTION>__<KEY>``).
ENV_PREFIX = "LIB_SHOPWARE6_API_BASE___SHOPWARE__"
#: league's messages and hints (``OAuthServerException`` 8.5), as Shopware sends them.
INVALID_CLIENT = {
    "code": "4",
    "status": "401",
    "title": "Client authentication failed",
    "detail": None,
}
UNSUPPORTED_GRANT = {
    "code": "2",
    "status": "400",
    "title": "The authorization grant type is not supported by the authorization server.",
    "detail": "Check that all required parameters have been provided",
}
INVALID_REQUEST_TITLE = (
    "The request is missing a required parameter, includes an invalid parameter value, "
    "includes a parameter more than once, or is otherwise malformed."
)
#: The associations a route needs, written with the library's nested ``Criteria``.
NESTED = {
    "stateMachineState": Criteria(),
    "lineItems": Criteria(sort=[AscFieldSorting(field="position")]),
    "billingAddress": Criteria(associations={"country": Criteria()}),
    "deliveries": Criteria(
        associations={"shippingOrderAddress": Criteria(associations={"country": Criteria()})}
    ),
}


# --- helpers -------------------------------------------------------------------------------


def lib_config(sb: Sandbox, **changes: Any) -> ConfShopware6ApiBase:
    """The library's configuration for the sandbox shop, as its README has a user write it:
    the Admin API URL ends in ``/api``; ``RESOURCE_OWNER`` is its name for an integration's
    client-credentials grant."""
    options: dict[str, Any] = {
        "shopware_admin_api_url": f"{sb.shop_url}/api",
        "client_id": sb.shop.client_id,
        "client_secret": sb.shop.client_secret,
        "grant_type": GrantType.RESOURCE_OWNER,
        **changes,
    }
    return ConfShopware6ApiBase(**options)


def window_filter(start: datetime = WINDOW_START, end: datetime = WINDOW_END) -> RangeFilter:
    """``createdAt`` in ``[start, end)``, bounds in Shopware's storage format."""
    bounds = {"gte": format_storage_datetime(start), "lt": format_storage_datetime(end)}
    return RangeFilter(field="createdAt", parameters=bounds)


def by_time_then_id() -> list[AscFieldSorting]:
    return [AscFieldSorting(field="createdAt"), AscFieldSorting(field="id")]


def stored_in_window(sb: Sandbox) -> list[dict[str, Any]]:
    """What the sandbox holds in the window, oldest first (ties by id): the expected answer."""
    held = [
        o
        for o in sb.shop.orders.values()
        if WINDOW_START <= datetime.fromisoformat(o["createdAt"]) < WINDOW_END
    ]
    return sorted(held, key=lambda o: (datetime.fromisoformat(o["createdAt"]), o["id"]))


def add_window_orders(sb: Sandbox, n: int) -> list[dict[str, Any]]:
    """``n`` orders spread over the window, 20 of them in one millisecond (only the id orders
    those), and one just outside each edge, which no window search may return."""
    inside = sb.shop.add_orders(n - 20, start=WINDOW_START, end=WINDOW_END)
    inside += sb.shop.add_orders(20, created_at=WINDOW_START + timedelta(minutes=2))
    sb.shop.add_order(WINDOW_START - MS)
    sb.shop.add_order(WINDOW_END)
    return inside


def token_call(
    sb: Sandbox,
    body: dict[str, Any] | None = None,
    *,
    basic: tuple[str, str] | None = None,
    form: bool = False,
    headers: dict[str, str] | None = None,
) -> requests.Response:
    """``POST /api/oauth/token`` with ``body`` as JSON (or a form) and optional Basic auth."""
    url = sb.shop_url + TOKEN_PATH
    body = {"grant_type": "client_credentials", **(body or {})}
    sent = {"data": body} if form else {"json": body}
    return requests.post(url, auth=basic, headers=headers, timeout=TIMEOUT, **sent)


def basic_header(text: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(text.encode()).decode()}


@pytest.fixture
def lib_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """An empty home and working folder for the library's layered configuration (it reads
    user config files and a ``.env`` in the working folder or above), and its cache cleared
    before and after: nothing of the user's or of another test leaks in or out."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / ".config"))
    monkeypatch.chdir(tmp_path)
    get_config.cache_clear()
    yield
    get_config.cache_clear()


# --- token ---------------------------------------------------------------------------------


def test_library_configured_from_the_environment_authenticates_by_basic_auth(
    sandbox: Sandbox, lib_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = {
        "ADMIN_API_URL": f"{sandbox.shop_url}/api",
        "CLIENT_ID": sandbox.shop.client_id,
        "CLIENT_SECRET": sandbox.shop.client_secret,
        "GRANT_TYPE": "RESOURCE_OWNER",
    }
    for key, value in settings.items():
        monkeypatch.setenv(ENV_PREFIX + key, value)
    config = require_config_from_env()
    assert config.shopware_admin_api_url == f"{sandbox.shop_url}/api"
    assert config.grant_type is GrantType.RESOURCE_OWNER
    sent: list[httpx2.Request] = []
    with Shopware6AdminAPIClientBase(config) as client:
        client.session.event_hooks["request"] = [sent.append]
        answer = client.request_post("search/order", Criteria(limit=1))
        # What the library sent for its token: id and secret as HTTP Basic, only the grant
        # type in the body (lib_shopware6_admin_client.py, _get_access_token_by_resource_owner).
        token_request = sent[0]
        assert token_request.url.path == TOKEN_PATH
        expected = f"{sandbox.shop.client_id}:{sandbox.shop.client_secret}".encode()
        assert (
            token_request.headers["Authorization"]
            == basic_header(expected.decode())["Authorization"]
        )
        assert token_request.read() == b'{"grant_type":"client_credentials"}'
        assert client.token["token_type"] == "Bearer"
        assert client.token["expires_in"] == sandbox.shop.token_lifetime_s
    assert answer.data == [] and answer.total == 0  # the shop holds no orders yet
    assert (sandbox.shop.token_calls, sandbox.shop.tokens_issued) == (1, 1)
    assert sandbox.shop.calls["search"] == 1


def _ok(sb: Sandbox) -> dict[str, str]:
    return {"client_id": sb.shop.client_id, "client_secret": sb.shop.client_secret}


#: (name, body credentials, Basic credentials, form body): all must get a token. The body
#: wins per parameter; a parameter the body lacks comes from Basic auth.
ACCEPTED = [
    ("basic only", lambda sb: {}, lambda sb: (sb.shop.client_id, sb.shop.client_secret), False),
    ("json body only", _ok, lambda sb: None, False),
    ("form body only", _ok, lambda sb: None, True),
    (
        "form body, basic",
        lambda sb: {},
        lambda sb: (sb.shop.client_id, sb.shop.client_secret),
        True,
    ),
    ("body wins over a wrong basic", _ok, lambda sb: (sb.shop.client_id, "wrong"), False),
    (
        "id in body, secret from basic",
        lambda sb: {"client_id": sb.shop.client_id},
        lambda sb: ("ignored-id", sb.shop.client_secret),
        False,
    ),
    (
        "null in body falls back to basic",
        lambda sb: {"client_id": None, "client_secret": None},
        lambda sb: (sb.shop.client_id, sb.shop.client_secret),
        False,
    ),
]


@pytest.mark.parametrize(
    ("body", "basic", "form"), [c[1:] for c in ACCEPTED], ids=[c[0] for c in ACCEPTED]
)
def test_token_credentials_from_body_or_basic_auth(sandbox: Sandbox, body, basic, form) -> None:
    answer = token_call(sandbox, body(sandbox), basic=basic(sandbox), form=form)
    assert answer.status_code == 200, answer.text
    token = answer.json()
    assert token["token_type"] == "Bearer" and token["expires_in"] == 600
    assert sandbox.shop.tokens_issued == 1
    # The token it gave works for a search.
    headers = {"Authorization": f"Bearer {token['access_token']}"}
    search = requests.post(
        sandbox.shop_url + "/api/search/order", json={}, headers=headers, timeout=TIMEOUT
    )
    assert search.status_code == 200, search.text


WRONG_SECRET = "wrong-secret-Zq81"

#: (name, body, Basic, extra headers, status, first error, WWW-Authenticate): refused.
REFUSED: list[tuple[str, Any, Any, dict[str, str], int, dict[str, Any], str | None]] = [
    (
        "wrong secret by basic",
        lambda sb: {},
        lambda sb: (sb.shop.client_id, WRONG_SECRET),
        {},
        401,
        INVALID_CLIENT,
        'Basic realm="OAuth"',
    ),
    (
        "wrong secret in body",
        lambda sb: {"client_id": sb.shop.client_id, "client_secret": WRONG_SECRET},
        lambda sb: None,
        {},
        401,
        INVALID_CLIENT,
        None,
    ),
    (
        "wrong body secret beats a right basic",
        lambda sb: {"client_secret": WRONG_SECRET},
        lambda sb: (sb.shop.client_id, sb.shop.client_secret),
        {},
        401,
        INVALID_CLIENT,
        'Basic realm="OAuth"',
    ),
    (
        "unknown client id",
        lambda sb: {"client_id": "SWIAUNKNOWNCLIENT", "client_secret": WRONG_SECRET},
        lambda sb: None,
        {},
        401,
        INVALID_CLIENT,
        None,
    ),
    (
        "client id not a string",
        lambda sb: {"client_id": 12345, "client_secret": WRONG_SECRET},
        lambda sb: None,
        {},
        401,
        INVALID_CLIENT,
        None,
    ),
    (
        "neither body nor basic",
        lambda sb: {},
        lambda sb: None,
        {},
        400,
        {
            "code": "3",
            "status": "400",
            "title": INVALID_REQUEST_TITLE,
            "detail": "Check the `client_id` parameter",
        },
        None,
    ),
    (
        "basic without a colon is no basic",
        lambda sb: {},
        lambda sb: None,
        basic_header("SWIASANDBOXSHOPCLIENT"),
        400,
        {
            "code": "3",
            "status": "400",
            "title": INVALID_REQUEST_TITLE,
            "detail": "Check the `client_id` parameter",
        },
        None,
    ),
    (
        "secret not a string",
        lambda sb: {"client_id": sb.shop.client_id, "client_secret": 12345},
        lambda sb: None,
        {},
        400,
        {
            "code": "3",
            "status": "400",
            "title": INVALID_REQUEST_TITLE,
            "detail": "Check the `client_secret` parameter",
        },
        None,
    ),
    (
        "id without any secret",
        lambda sb: {"client_id": sb.shop.client_id},
        lambda sb: None,
        {},
        400,
        UNSUPPORTED_GRANT,
        None,
    ),
    (
        "another grant type",
        lambda sb: {**_ok(sb), "grant_type": "password"},
        lambda sb: None,
        {},
        400,
        UNSUPPORTED_GRANT,
        None,
    ),
]


@pytest.mark.parametrize(
    ("body", "basic", "headers", "status", "error", "challenge"),
    [c[1:] for c in REFUSED],
    ids=[c[0] for c in REFUSED],
)
def test_token_refusals_are_league_errors_in_shopware_envelope(
    sandbox: Sandbox, body, basic, headers, status, error, challenge
) -> None:
    answer = token_call(sandbox, body(sandbox), basic=basic(sandbox), headers=headers)
    assert answer.status_code == status, answer.text
    assert answer.json() == {"errors": [error]}
    assert answer.headers.get("WWW-Authenticate") == challenge
    for secret in (WRONG_SECRET, sandbox.shop.client_secret):
        assert secret not in answer.text and secret not in str(answer.headers)
    assert (sandbox.shop.token_calls, sandbox.shop.tokens_issued) == (1, 0)


def test_json_body_without_json_content_type_carries_no_parameters(sandbox: Sandbox) -> None:
    """Shopware decodes a JSON body only when it is sent as ``application/json``
    (``JsonRequestTransformerListener``); otherwise there is no ``grant_type`` at all."""
    grant = {"grant_type": "client_credentials", **_ok(sandbox)}
    answer = requests.post(
        sandbox.shop_url + TOKEN_PATH,
        data=json.dumps(grant),
        headers={"Content-Type": "text/plain"},
        timeout=TIMEOUT,
    )
    assert answer.status_code == 400
    assert answer.json() == {"errors": [UNSUPPORTED_GRANT]}
    malformed = requests.post(
        sandbox.shop_url + TOKEN_PATH,
        data=b'{"grant_type": "client_credentials",',
        headers={"Content-Type": "application/json"},
        timeout=TIMEOUT,
    )
    assert malformed.status_code == 400
    assert malformed.json()["errors"][0]["detail"] == "The JSON payload is malformed."


def test_library_with_a_wrong_secret_fails_without_the_secret_in_its_error(
    sandbox: Sandbox,
) -> None:
    with Shopware6AdminAPIClientBase(lib_config(sandbox, client_secret=WRONG_SECRET)) as client:
        with pytest.raises(ShopwareAPIError) as raised:
            client.request_post("search/order", Criteria(limit=1))
    message = str(raised.value)
    assert "401" in message and "Client authentication failed" in message
    assert WRONG_SECRET not in message and sandbox.shop.client_secret not in message
    # The library drops its token and tries again once on any error (_make_request).
    assert sandbox.shop.token_calls == MAX_RETRY_ATTEMPTS
    assert sandbox.shop.tokens_issued == 0 and sandbox.shop.calls["search"] == 0


def test_our_client_names_the_league_error_of_a_refusal(sandbox: Sandbox) -> None:
    """Our own client against the same refusal: league's number ``4`` read as
    ``invalid_client``, the variables named, the secret never."""
    client = ShopwareClient(
        base_url=sandbox.shop_url,
        client_id=sandbox.shop.client_id,
        client_secret=WRONG_SECRET,
        max_retries=0,
    )
    with client, pytest.raises(AuthError) as raised:
        client.search_orders_page(start=WINDOW_START, end=WINDOW_END, page=1, limit=5)
    message = str(raised.value)
    assert "HTTP 401, OAuth error invalid_client" in message
    assert "SHOP_CLIENT_SECRET" in message and WRONG_SECRET not in message


# --- search --------------------------------------------------------------------------------


def test_range_filter_selects_exactly_the_window(sandbox: Sandbox) -> None:
    add_window_orders(sandbox, 40)
    expected = stored_in_window(sandbox)
    criteria = Criteria(
        limit=500, filter=[window_filter()], sort=by_time_then_id(), total_count_mode=1
    )
    with Shopware6AdminAPIClientBase(lib_config(sandbox)) as client:
        answer = client.request_post("search/order", criteria)
    assert [o["id"] for o in answer.data] == [o["id"] for o in expected]
    assert answer.total == len(expected) == 40  # total-count-mode 1 (exact), the legacy integer
    assert [o["orderNumber"] for o in answer.data] == [o["orderNumber"] for o in expected]


def test_nested_associations_load_the_state_and_addresses(sandbox: Sandbox) -> None:
    states = list(ORDER_STATES) * 3
    placed = [
        sandbox.shop.add_order(WINDOW_START + i * timedelta(seconds=7), state=state)
        for i, state in enumerate(states)
    ]
    criteria = Criteria(limit=100, filter=[window_filter()], associations=NESTED)
    with Shopware6AdminAPIClientBase(lib_config(sandbox)) as client:
        answer = client.request_post("search/order", criteria)
        cancelled = client.request_post(
            "search/order",
            Criteria(
                filter=[
                    window_filter(),
                    EqualsFilter(field="stateMachineState.technicalName", value="cancelled"),
                ]
            ),
        )
    got = {o["id"]: o for o in answer.data}
    assert set(got) == {o["id"] for o in placed} and len(answer.data) == len(placed)
    for order in placed:
        back = got[order["id"]]
        assert (
            back["stateMachineState"]["technicalName"]
            == order["stateMachineState"]["technicalName"]
        )
        assert back["billingAddress"]["country"]["iso"] == order["billingAddress"]["country"]["iso"]
        [delivery] = back["deliveries"]
        stored = order["deliveries"][0]["shippingOrderAddress"]
        assert delivery["shippingOrderAddress"]["id"] == stored["id"]
        assert delivery["shippingOrderAddress"]["country"]["iso"] == stored["country"]["iso"]
        by_position = sorted(order["lineItems"], key=lambda item: item["position"])
        assert [i["id"] for i in back["lineItems"]] == [i["id"] for i in by_position]
        # Not asked for: a many-to-one stays null (6.6); the one-to-one customer is autoloaded.
        assert back["currency"] is None
        assert back["orderCustomer"]["email"] == order["orderCustomer"]["email"]
    want = {o["id"] for o in placed if o["stateMachineState"]["technicalName"] == "cancelled"}
    assert {o["id"] for o in cancelled.data} == want and len(want) == 3
    assert all(o["stateMachineState"] is None for o in cancelled.data)  # filtered, not loaded


def test_without_associations_the_order_state_is_not_loaded(sandbox: Sandbox) -> None:
    order = sandbox.shop.add_order(WINDOW_START, state="completed")
    with Shopware6AdminAPIClientBase(lib_config(sandbox)) as client:
        [back] = client.request_post("search/order", Criteria(ids=[order["id"]])).data
    assert back["id"] == order["id"] and back["stateId"] == order["stateId"]
    assert back["stateMachineState"] is None and back["lineItems"] is None


# --- paging --------------------------------------------------------------------------------


def test_paging_to_the_end_returns_every_order_in_the_window_once(sandbox: Sandbox) -> None:
    add_window_orders(sandbox, 348)
    expected = stored_in_window(sandbox)
    assert len(expected) == 348
    criteria = Criteria(filter=[window_filter()], sort=by_time_then_id(), associations=NESTED)
    with Shopware6AdminAPIClientBase(lib_config(sandbox)) as client:
        answer = client.request_post_paginated("search/order", criteria, junk_size=50)
    ids = [o["id"] for o in answer.data]
    assert len(ids) == len(set(ids)) == answer.total == 348
    assert ids == [o["id"] for o in expected]
    assert all(o["stateMachineState"]["technicalName"] == "open" for o in answer.data)
    # Seven pages of 50 or fewer, then the empty eighth the library stops on; one token.
    assert sandbox.shop.calls["search"] == 8 and sandbox.shop.tokens_issued == 1


def test_paging_respects_the_limit_it_is_given(sandbox: Sandbox) -> None:
    add_window_orders(sandbox, 130)
    expected = stored_in_window(sandbox)
    criteria = Criteria(limit=120, filter=[window_filter()], sort=by_time_then_id())
    with Shopware6AdminAPIClientBase(lib_config(sandbox)) as client:
        answer = client.request_post_paginated("search/order", criteria, junk_size=50)
    assert [o["id"] for o in answer.data] == [o["id"] for o in expected[:120]]
    assert sandbox.shop.calls["search"] == 3
