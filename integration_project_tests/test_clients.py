"""The HTTP clients against the sandbox over real HTTP: tokens, paging, rotation, 401, 429."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
import requests

from integration_project import settings
from integration_project.exact.client import ExactClient, fingerprint
from integration_project.exact.models import SalesOrderCreate
from integration_project.http import ApiError, AuthError
from integration_project.ledger import DuckDBTokenStore, Ledger
from integration_project.resources import erp_client
from integration_project.sandbox import Sandbox
from integration_project.shopware.client import ShopwareClient
from integration_project_testkit.windows import WINDOW_END, WINDOW_START

pytestmark = pytest.mark.integration


def shop_client(sb: Sandbox, **kwargs) -> ShopwareClient:  # type: ignore[no-untyped-def]
    return ShopwareClient(
        base_url=sb.shop_url,
        client_id=kwargs.pop("client_id", settings.SANDBOX_SHOP_CLIENT_ID),
        client_secret=kwargs.pop("client_secret", settings.SANDBOX_SHOP_CLIENT_SECRET),
        max_retries=kwargs.pop("max_retries", 1),
        backoff_factor=0.01,
        **kwargs,
    )


def exact_client(sb: Sandbox, ledger: Ledger, **kwargs) -> ExactClient:  # type: ignore[no-untyped-def]
    return ExactClient(
        base_url=sb.erp_url,
        division=settings.SANDBOX_ERP_DIVISION,
        client_id=settings.SANDBOX_ERP_CLIENT_ID,
        client_secret=kwargs.pop("client_secret", settings.SANDBOX_ERP_CLIENT_SECRET),
        refresh_token=kwargs.pop("refresh_token", settings.SANDBOX_ERP_REFRESH_TOKEN),
        token_store=DuckDBTokenStore(ledger.db, "test"),
        max_retries=1,
        backoff_factor=0.01,
        **kwargs,
    )


# --- Shopware ------------------------------------------------------------------------------


def test_shop_pages_through_a_window_with_one_token(sandbox: Sandbox) -> None:
    created = sandbox.shop.add_orders(12, start=WINDOW_START, end=WINDOW_END)
    sandbox.shop.add_order(WINDOW_END)  # the window is half-open
    with shop_client(sandbox) as client:
        pages = list(client.iter_order_pages(start=WINDOW_START, end=WINDOW_END, page_size=5))
    assert [len(p.orders) for p in pages] == [5, 5, 2]
    ids = [o["id"] for p in pages for o in p.orders]
    assert ids == [o["id"] for o in created]  # in the order the shop stored them, each once
    assert client.token_requests == 1
    assert sandbox.shop.token_calls == 1


def test_shop_token_is_renewed_when_it_expires(sandbox: Sandbox) -> None:
    sandbox.shop.token_lifetime_s = 31  # the client renews 30 s before expiry
    sandbox.shop.add_orders(2, start=WINDOW_START, end=WINDOW_END)
    with shop_client(sandbox) as client:
        client.search_orders_page(start=WINDOW_START, end=WINDOW_END, page=1, limit=10)
        client.search_orders_page(start=WINDOW_START, end=WINDOW_END, page=1, limit=10)
        assert client.token_requests == 1
        time.sleep(1.2)
        client.search_orders_page(start=WINDOW_START, end=WINDOW_END, page=1, limit=10)
    assert client.token_requests == 2


def test_shop_wrong_secret_names_variables_never_the_value(sandbox: Sandbox) -> None:
    with shop_client(sandbox, client_secret="s3cr3t-value") as client:
        with pytest.raises(AuthError) as raised:
            client.search_orders_page(start=WINDOW_START, end=WINDOW_END, page=1, limit=10)
    assert "SHOP_CLIENT_SECRET" in str(raised.value)
    assert "s3cr3t-value" not in str(raised.value)
    assert "/api/oauth/token" in str(raised.value)


def test_shop_missing_token_gets_shopwares_401(sandbox: Sandbox) -> None:
    response = requests.post(sandbox.shop_url + "/api/search/order", json={}, timeout=5)
    assert response.status_code == 401
    assert response.json()["errors"][0]["status"] == "401"


def test_shop_retries_transient_errors_then_succeeds(sandbox: Sandbox) -> None:
    sandbox.shop.add_orders(2, start=WINDOW_START, end=WINDOW_END)
    sandbox.shop.faults.add("503", path_contains="/api/search/order", times=2)
    with shop_client(sandbox, max_retries=3) as client:
        page = client.search_orders_page(start=WINDOW_START, end=WINDOW_END, page=1, limit=10)
    assert len(page.orders) == 2


# --- Exact Online --------------------------------------------------------------------------


def test_erp_rotation_is_stored_before_use_and_shared_between_clients(
    sandbox: Sandbox, ledger: Ledger
) -> None:
    store = DuckDBTokenStore(ledger.db, "test")
    with exact_client(sandbox, ledger) as client:
        assert client.find_item_id("SHIPPING")
        stored = store.load()
        assert stored is not None
        # The stored refresh token is the one the ERP will accept next: the rotated one.
        assert stored.refresh_token == sandbox.erp.refresh_token
        assert stored.refresh_token != settings.SANDBOX_ERP_REFRESH_TOKEN
        assert stored.seed_fingerprint == fingerprint(settings.SANDBOX_ERP_REFRESH_TOKEN)
    # A second process (new client, same store) reuses the access token: no refresh.
    with exact_client(sandbox, ledger) as other:
        assert other.find_item_id("DISCOUNT")
        assert other.token_refreshes == 0
    assert sandbox.erp.token_refreshes == 1


def test_erp_refreshes_again_only_when_the_access_token_expires(
    sandbox: Sandbox, ledger: Ledger
) -> None:
    sandbox.erp.token_lifetime_s = 21  # renew margin is 20 s: expires 1 s after issue
    sandbox.erp.min_refresh_interval_s = 0.5
    with exact_client(sandbox, ledger) as client:
        client.find_item_id("SHIPPING")
        client.find_item_id("DISCOUNT")  # the access token is still good: no refresh
        assert sandbox.erp.token_refreshes == 1
        time.sleep(1.2)
        client.find_item_id("SHIPPING")
    assert sandbox.erp.token_refreshes == 2
    assert DuckDBTokenStore(ledger.db, "test").load().refresh_token == sandbox.erp.refresh_token


def test_erp_too_early_refresh_is_refused_by_the_sandbox(sandbox: Sandbox, ledger: Ledger) -> None:
    with exact_client(sandbox, ledger) as client:
        client.find_item_id("SHIPPING")
    response = requests.post(
        sandbox.erp_url + "/api/oauth2/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": sandbox.erp.refresh_token,
            "client_id": settings.SANDBOX_ERP_CLIENT_ID,
            "client_secret": settings.SANDBOX_ERP_CLIENT_SECRET,
        },
        timeout=5,
    )
    assert response.status_code == 400
    assert response.headers["Reason"].startswith("TooEarlyToRefreshTokens")
    assert response.json() == {
        "error": "access_denied",
        "error_description": "Rate limit exceeded: access_token not expired",
    }


def test_erp_wrong_secret_names_variables_never_the_value(sandbox: Sandbox, ledger: Ledger) -> None:
    with exact_client(sandbox, ledger, client_secret="erp-s3cr3t") as client:
        with pytest.raises(AuthError) as raised:
            client.find_item_id("SHIPPING")
    assert "ERP_CLIENT_SECRET" in str(raised.value)
    assert "erp-s3cr3t" not in str(raised.value)


def test_erp_401_on_a_revoked_access_token_refreshes_once(sandbox: Sandbox, ledger: Ledger) -> None:
    sandbox.erp.min_refresh_interval_s = 0
    with exact_client(sandbox, ledger) as client:
        client.find_item_id("SHIPPING")
        sandbox.erp.revoke_access_tokens()
        assert client.find_item_id("SHIPPING")
    assert sandbox.erp.token_refreshes == 2


def test_erp_429_waits_for_the_announced_reset(sandbox: Sandbox, ledger: Ledger) -> None:
    sandbox.erp.minute_limit = 3
    sandbox.erp.minute_window_s = 1.5
    with exact_client(sandbox, ledger) as client:
        started = time.monotonic()
        for _ in range(7):
            assert client.find_item_id("SHIPPING")
        elapsed = time.monotonic() - started
    assert elapsed > 1.0  # it waited for at least one reset instead of failing
    assert client.rate_limit is not None and client.rate_limit.minutely_limit == 3


def test_erp_lookup_with_a_quote_cannot_change_the_filter(sandbox: Sandbox, ledger: Ledger) -> None:
    with exact_client(sandbox, ledger) as client:
        assert client.find_account_id("o'brien@example.ie") is not None
        assert client.find_account_id("x' or Email ne 'y") is None


def test_erp_create_post_is_never_retried_blindly(sandbox: Sandbox, ledger: Ledger) -> None:
    with erp_client_for(sandbox, ledger) as client:
        account = client.find_account_id("o'brien@example.ie")
        item = client.find_item_id("SHIPPING")
        payload = SalesOrderCreate(
            OrderedBy=account,
            YourRef="T-1",
            OrderDate="2026-11-20T10:00:00Z",
            Description="test",
            Currency="EUR",
            SalesOrderLines=[{"Item": item, "Quantity": 1, "NetPrice": 4.9, "Description": "x"}],
        ).model_dump()
        sandbox.erp.faults.add(
            "503", path_contains="salesorder/SalesOrders", method="POST", times=1
        )
        with pytest.raises(ApiError) as raised:
            client.create_sales_order(payload)
    assert type(raised.value).__name__ == "OutcomeUnknown"
    assert not sandbox.erp.sales_orders  # one attempt, refused before commit, not repeated


def erp_client_for(sb: Sandbox, ledger: Ledger) -> ExactClient:
    from integration_project.resources import ErpResource

    erp = ErpResource(
        api_url=sb.erp_url,
        division=settings.SANDBOX_ERP_DIVISION,
        client_id=settings.SANDBOX_ERP_CLIENT_ID,
        client_secret=settings.SANDBOX_ERP_CLIENT_SECRET,
        refresh_token=settings.SANDBOX_ERP_REFRESH_TOKEN,
        max_retries=3,
    )
    return erp_client(erp, ledger)


def test_stale_stored_refresh_token_falls_back_to_the_configured_one(
    sandbox: Sandbox, ledger: Ledger, tmp_path
) -> None:
    """A sandbox restart forgets its rotated tokens; an operator re-authorising sets a new
    ERP_REFRESH_TOKEN. Either way the configured token starts a new chain."""
    with exact_client(sandbox, ledger) as client:
        client.find_item_id("SHIPPING")
    with Sandbox(seed=7) as fresh:
        fresh.erp.min_refresh_interval_s = 0
        store = DuckDBTokenStore(ledger.db, "test")
        stale = store.load()
        assert stale is not None
        store.save(
            stale.__class__(
                refresh_token=stale.refresh_token,
                access_token=None,
                access_expires_at=None,
                refreshed_at=time.time() - timedelta(minutes=20).total_seconds(),
                seed_fingerprint=stale.seed_fingerprint,
            )
        )
        with exact_client(fresh, ledger) as client:
            assert client.find_item_id("SHIPPING")
        assert store.load().refresh_token == fresh.erp.refresh_token
