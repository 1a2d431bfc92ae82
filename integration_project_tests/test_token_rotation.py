"""Exact's refresh token rotates on every use and the old one dies: a failed or slow token call
must neither lose the chain nor burn the configured ``ERP_REFRESH_TOKEN`` as well."""

from __future__ import annotations

import pytest

from integration_project import settings
from integration_project.exact.client import ExactClient
from integration_project.http import ApiError, AuthError
from integration_project.ledger import DuckDBTokenStore, Ledger
from integration_project.sandbox import Sandbox

pytestmark = pytest.mark.integration


def exact_client(sb: Sandbox, ledger: Ledger, **kwargs: object) -> ExactClient:
    return ExactClient(
        base_url=sb.erp_url,
        division=settings.SANDBOX_ERP_DIVISION,
        client_id=settings.SANDBOX_ERP_CLIENT_ID,
        client_secret=settings.SANDBOX_ERP_CLIENT_SECRET,
        refresh_token=settings.SANDBOX_ERP_REFRESH_TOKEN,
        token_store=DuckDBTokenStore(ledger, "rotation"),
        max_retries=1,
        backoff_factor=0.01,
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("kind", ["token_error", "500", "429"])
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
    stored = DuckDBTokenStore(ledger, "rotation").load()
    assert stored is not None and stored.refresh_token == sandbox.erp.refresh_token
