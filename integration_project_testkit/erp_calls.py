"""A tiny test-side caller of the sandbox ERP: one access token, Exact's URLs, Exact's headers.

Used by the sandbox tests (plain HTTP, no client of ours in between) so that what they send
is exactly what a test spells out.
"""

from __future__ import annotations

from typing import Any

import requests

from integration_project import settings
from integration_project.exact.models import SALES_ORDERS, TOKEN_PATH, data_path
from integration_project.sandbox import Sandbox

DIVISION = settings.SANDBOX_ERP_DIVISION
TIMEOUT = 10


def erp_access_token(sb: Sandbox) -> str:
    """A fresh access token from the sandbox ERP (a refresh with its current refresh token)."""
    form = {
        "grant_type": "refresh_token",
        "refresh_token": sb.erp.refresh_token,
        "client_id": settings.SANDBOX_ERP_CLIENT_ID,
        "client_secret": settings.SANDBOX_ERP_CLIENT_SECRET,
    }
    answer = requests.post(sb.erp_url + TOKEN_PATH, data=form, timeout=TIMEOUT)
    if answer.status_code != 200:
        raise AssertionError(answer.text)
    return str(answer.json()["access_token"])


class Erp:
    """Calls to the sandbox ERP ``sb`` with one access token, taken when this is made."""

    def __init__(self, sb: Sandbox) -> None:
        self.sb = sb
        self.token = erp_access_token(sb)

    def url(self, resource: str, division: str = DIVISION) -> str:
        """The REST URL of ``resource`` (e.g. ``salesorder/SalesOrders``) in ``division``."""
        return self.sb.erp_url + data_path(division, resource)

    def get(self, resource: str, token: str | None = None, **params: str) -> requests.Response:
        """GET ``resource`` with OData ``params`` (``$filter=...``), as ``token`` if given."""
        headers = {"Authorization": f"Bearer {token or self.token}", "Accept": "application/json"}
        return requests.get(self.url(resource), params=params, headers=headers, timeout=TIMEOUT)

    def post(self, resource: str, body: Any) -> requests.Response:
        """POST ``body`` to ``resource``, asking for the created entity back (as Exact does)."""
        headers = {
            "Authorization": f"Bearer {self.token}",
            "Accept": "application/json",
            "Prefer": "return=representation",
        }
        return requests.post(self.url(resource), json=body, headers=headers, timeout=TIMEOUT)

    def item(self, code: str) -> str:
        """The ERP id of the item with ``code`` (the shop's product number)."""
        item = self.sb.erp.item_by_code(code)
        if item is None:
            raise AssertionError(f"the sandbox ERP has no item {code}")
        return str(item["ID"])

    def sales_order(
        self, ref: str, lines: list[dict[str, Any]] | None = None, **overrides: Any
    ) -> dict[str, Any]:
        """A sales order body for the first account (default: two coffee beans, no VAT code)."""
        account = next(iter(self.sb.erp.accounts.values()))
        default = {"Item": self.item("SW10001"), "Quantity": 2, "NetPrice": 18.9}
        return {
            "OrderedBy": account["ID"],
            "YourRef": ref,
            "OrderDate": "2026-11-22",
            "Description": f"Shop order {ref}",
            "Currency": "EUR",
            "SalesOrderLines": lines or [{**default, "Description": "Kaffee"}],
            **overrides,
        }

    def post_order(
        self, ref: str, lines: list[dict[str, Any]], currency: str = "EUR"
    ) -> requests.Response:
        """POST a sales order for ``ref`` with ``lines`` in ``currency``."""
        return self.post(SALES_ORDERS, self.sales_order(ref, lines, Currency=currency))
