"""HTTP client for the Exact Online REST API: accounts, items, VAT codes, sales orders.

Knows nothing of Dagster or of the ledger's tables: the durable token store (:class:`TokenStore`)
and the call guard (:class:`CallGuard`) are handed in. The client is put together from:

* :mod:`~integration_project.exact.auth`: the rotating OAuth token chain, shared through the
  token store (refresh lock, interrupted refreshes, too-early refusals, authorisation needed);
* :mod:`~integration_project.exact.budget`: the rate limits and the client-error block;
* :mod:`~integration_project.exact.transport`: one call, from budget check to JSON or error;
* :mod:`~integration_project.exact.errors`: what a failed call means for the caller.

This module keeps the API operations, and the names callers import (re-exported below).
``POST salesorder/SalesOrders`` is never retried blindly: a timeout or 5xx there is
:class:`OutcomeUnknown` and the caller looks the order up by ``YourRef`` later. Look-ups use
filter queries, and ``__next`` links are followed only to ``ERP_API_URL``'s own scheme, host
and port.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

from integration_project.exact.auth import TOKEN_ENDPOINT, TokenChain, TokenStore, fingerprint
from integration_project.exact.budget import (
    MAX_CLIENT_ERRORS_PER_HOUR,
    MAX_RATE_WAIT_S,
    CallBudget,
    CallGuard,
)
from integration_project.exact.errors import (
    BudgetExhausted,
    ErrorBudgetSpent,
    OutcomeUnknown,
    RateLimited,
    ValidationRejected,
)
from integration_project.exact.models import (
    ACCOUNTS,
    ITEMS,
    LOOKUP_FIELDS,
    SALES_ORDER_LINE_FIELDS,
    SALES_ORDER_LINES,
    SALES_ORDERS,
    VAT_CODE_FIELDS,
    VAT_CODES,
    AccountCreate,
    AccountRef,
    LookupRow,
    RateLimit,
    SalesOrderLineRef,
    SalesOrderRef,
    VatCode,
    account_code,
    data_path,
    eq_filter,
    guid_eq_filter,
    results,
    single,
)
from integration_project.exact.transport import ExactTransport
from integration_project.http import DEFAULT_TIMEOUT, ApiError, build_session, safe_url

__all__ = [
    "MAX_CLIENT_ERRORS_PER_HOUR",
    "TOKEN_ENDPOINT",
    "BudgetExhausted",
    "CallGuard",
    "CreatedSalesOrder",
    "ErrorBudgetSpent",
    "ExactClient",
    "OutcomeUnknown",
    "RateLimited",
    "TokenStore",
    "ValidationRejected",
    "fingerprint",
]


@dataclass(frozen=True)
class CreatedSalesOrder:
    order_id: str
    order_number: int | None


class ExactClient:
    """The Exact Online operations the route needs, over one division (see the module
    docstring for what each part keeps)."""

    def __init__(
        self,
        *,
        base_url: str,
        division: str,
        client_id: str,
        client_secret: str,
        refresh_token: str,
        token_store: TokenStore,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
        max_retries: int = 3,
        backoff_factor: float = 0.5,
        max_rate_wait_s: float = MAX_RATE_WAIT_S,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        holder: str | None = None,
        guard: CallGuard | None = None,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._division = division
        # GETs are retried by urllib3 on 5xx; 429 is handled here from Exact's own headers.
        self._session = build_session(
            retry_methods=("GET",),
            retry_statuses=(500, 502, 503, 504),
            total=max_retries,
            read_retries=max_retries,
            backoff_factor=backoff_factor,
        )
        self._budget = CallBudget(
            base_url=self._base_url,
            division=division,
            guard=guard,
            max_rate_wait_s=max_rate_wait_s,
            clock=clock,
            sleep=sleep,
        )
        self._tokens = TokenChain(
            base_url=self._base_url,
            client_id=client_id,
            client_secret=client_secret,
            refresh_token=refresh_token,
            store=token_store,
            session=self._session,
            timeout=timeout,
            budget=self._budget,
            holder=holder or f"pid-{uuid.uuid4().hex[:12]}",
            clock=clock,
            sleep=sleep,
        )
        self._transport = ExactTransport(
            base_url=self._base_url,
            session=self._session,
            timeout=timeout,
            budget=self._budget,
            tokens=self._tokens,
        )

    @property
    def rate_limit(self) -> RateLimit | None:
        """Exact's rate limit headers as last seen (None: unknown until the next answer)."""
        return self._budget.rate_limit

    @property
    def calls(self) -> int:
        """Requests this client sent to the data endpoints."""
        return self._transport.calls

    @property
    def token_refreshes(self) -> int:
        """Token refreshes this client sent."""
        return self._tokens.token_refreshes

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> ExactClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- look-ups --------------------------------------------------------------------------

    def find_account_id(self, email: str) -> str | None:
        """The first account with this e-mail (see :meth:`find_accounts` for all of them)."""
        rows = self.find_accounts(email)
        return rows[0].ID if rows else None

    def find_accounts(self, email: str) -> list[AccountRef]:
        """Every account with this e-mail: Exact does not keep e-mails unique, so a caller
        must decide what several mean."""
        rows = self._query(ACCOUNTS, eq_filter("Email", email), "ID,Code,Name")
        return [AccountRef.model_validate(row) for row in rows]

    def find_accounts_by_code(self, code: str) -> list[AccountRef]:
        """Accounts whose ``Code`` is this customer number (Exact stores codes right-aligned
        to 18 characters, and so must a filter name them)."""
        rows = self._query(ACCOUNTS, eq_filter("Code", account_code(code)), "ID,Code,Name")
        return [AccountRef.model_validate(row) for row in rows]

    def create_account(self, account: AccountCreate) -> str:
        """Not retried blindly: callers look the e-mail up first, and again after a failure."""
        body = self._transport.request_json(
            "POST",
            data_path(self._division, ACCOUNTS),
            json=account.model_dump(exclude_none=True),
            create=True,
        )
        return str(single(body)["ID"])

    def find_item_id(self, code: str) -> str | None:
        rows = self._query(ITEMS, eq_filter("Code", code), "ID")
        return str(rows[0]["ID"]) if rows else None

    def list_vat_codes(self) -> list[VatCode]:
        """Every VAT code of the division (a few dozen: one call, paged if more)."""
        rows = self._query(VAT_CODES, None, VAT_CODE_FIELDS)
        return [VatCode.model_validate(row) for row in rows]

    def find_lookup_rows(self, resource: str, field: str, value: str) -> list[LookupRow]:
        """Rows of a look-up list a sales order refers to (``sales/ShippingMethods``,
        ``cashflow/PaymentConditions``, ``sales/SalesChannels``, ``inventory/Warehouses``)
        whose ``field`` (``Code`` or ``Description``) is ``value``: Exact compares text
        without case, and keeps neither unique, so a caller decides what several mean."""
        rows = self._query(resource, eq_filter(field, value), LOOKUP_FIELDS)
        return [LookupRow.model_validate(row) for row in rows]

    def find_sales_orders(self, your_ref: str) -> list[SalesOrderRef]:
        rows = self._query(
            SALES_ORDERS, eq_filter("YourRef", your_ref), "OrderID,OrderNumber,YourRef,OrderedBy"
        )
        return [SalesOrderRef.model_validate(row) for row in rows]

    def sales_order_lines(self, order_id: str) -> list[SalesOrderLineRef]:
        """The lines of one sales order (``salesorder/SalesOrderLines``, filtered by
        ``OrderID``): what the recovery step compares with the order it meant to send."""
        rows = self._query(
            SALES_ORDER_LINES, guid_eq_filter("OrderID", order_id), SALES_ORDER_LINE_FIELDS
        )
        return [SalesOrderLineRef.model_validate(row) for row in rows]

    def create_sales_order(self, payload: dict[str, Any]) -> CreatedSalesOrder:
        body = self._transport.request_json(
            "POST", data_path(self._division, SALES_ORDERS), json=payload, create=True
        )
        created = SalesOrderRef.model_validate(single(body))
        return CreatedSalesOrder(order_id=created.OrderID, order_number=created.OrderNumber)

    def _query(self, resource: str, odata_filter: str | None, select: str) -> list[dict[str, Any]]:
        # Filter queries answer 200 with an empty list where a GET by id would 404: Exact
        # blocks a key after ten 4xx an hour, so look-ups never risk a 404.
        params = f"$select={quote(select, safe=',')}"
        if odata_filter is not None:
            params = f"$filter={quote(odata_filter, safe='')}&{params}"
        out: list[dict[str, Any]] = []
        url: str | None = f"{data_path(self._division, resource)}?{params}"
        while url:
            body = self._transport.request_json("GET", url)
            out.extend(results(body))
            next_url = body.get("d", {}).get("__next") if isinstance(body.get("d"), dict) else None
            url = self._next_page(str(next_url)) if next_url else None
        return out

    def _next_page(self, link: str) -> str:
        """The ``__next`` link, absolute; only ever to ERP_API_URL's scheme, host and port (the
        bearer token goes with it)."""
        url = urljoin(self._base_url + "/", link)
        if _origin(url) != _origin(self._base_url):
            host = urlsplit(url).hostname or "?"
            raise ApiError(
                f"Exact Online's next-page link points to {host}, not to the host of "
                f"ERP_API_URL ({urlsplit(self._base_url).hostname}): not followed",
                method="GET",
                url=safe_url(self._base_url),
            )
        return url


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port or {"http": 80, "https": 443}.get(scheme)
    except ValueError:
        port = -1  # not a port: never equal to ours
    return scheme, (parts.hostname or "").lower(), port
