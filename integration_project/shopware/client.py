"""HTTP client for the Shopware 6 Admin API: token, order search with paging.

Knows nothing of Dagster or DuckDB. One session, explicit timeouts, the access token cached
until shortly before it expires (the token endpoint is rate limited), retries with backoff for
these calls, which are all safe to repeat (the order search is a read).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import requests
from pydantic import ValidationError

from integration_project.http import (
    DEFAULT_TIMEOUT,
    ApiError,
    AuthError,
    build_session,
    safe_url,
)
from integration_project.shopware.models import (
    ORDER_SEARCH_PATH,
    TOKEN_PATH,
    ClientCredentialsGrant,
    OrderSearchResponse,
    ShopErrorResponse,
    TokenResponse,
    created_at_window_criteria,
)

log = logging.getLogger(__name__)

#: Renew the token this many seconds before Shopware says it expires.
TOKEN_RENEW_MARGIN_S = 30.0


@dataclass(frozen=True)
class OrderPage:
    """One page of an order search: the raw orders (validated later, one by one)."""

    page: int
    total: int | None
    orders: list[dict[str, Any]]


class ShopwareClient:
    def __init__(
        self,
        *,
        base_url: str,
        client_id: str,
        client_secret: str,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
        max_retries: int = 4,
        backoff_factor: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
        credential_names: tuple[str, str] = ("SHOP_CLIENT_ID", "SHOP_CLIENT_SECRET"),
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._client_id = client_id
        self._client_secret = client_secret
        self._timeout = timeout
        self._clock = clock
        self._credential_names = credential_names
        # Token and search are both safe to repeat, so POST is retried here (and only here).
        self._session = build_session(
            retry_methods=("POST",),
            total=max_retries,
            read_retries=max_retries,
            backoff_factor=backoff_factor,
        )
        self._token: str | None = None
        self._token_expires_at = 0.0
        self.token_requests = 0

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> ShopwareClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- auth ------------------------------------------------------------------------------

    def _access_token(self) -> str:
        if self._token and self._clock() < self._token_expires_at - TOKEN_RENEW_MARGIN_S:
            return self._token
        url = self._base_url + TOKEN_PATH
        grant = ClientCredentialsGrant(client_id=self._client_id, client_secret=self._client_secret)
        self.token_requests += 1
        response = self._send("POST", url, json=grant.model_dump(), auth=False)
        if response.status_code in (400, 401, 403):
            id_var, secret_var = self._credential_names
            raise AuthError(
                f"Shopware refused the API credentials at POST {safe_url(url)} "
                f"({response.status_code}): check {id_var} and {secret_var}",
                method="POST",
                url=safe_url(url),
                status=response.status_code,
            )
        token = self._parse(response, TokenResponse, "POST", url)
        self._token = token.access_token
        self._token_expires_at = self._clock() + token.expires_in
        log.debug("Shopware access token renewed; valid for %s s", token.expires_in)
        return self._token

    # --- orders ----------------------------------------------------------------------------

    def search_orders_page(
        self, *, start: datetime, end: datetime, page: int, limit: int
    ) -> OrderPage:
        criteria = created_at_window_criteria(start=start, end=end, page=page, limit=limit)
        url = self._base_url + ORDER_SEARCH_PATH
        response = self._authorized("POST", url, json=criteria.to_json())
        body = self._parse(response, OrderSearchResponse, "POST", url)
        return OrderPage(page=page, total=body.total, orders=body.data)

    def iter_order_pages(
        self, *, start: datetime, end: datetime, page_size: int
    ) -> Iterator[OrderPage]:
        """Every order created in ``[start, end)``, a page at a time (memory stays flat).

        Pages are requested until one comes back short; ``total`` is cross-checked so that a
        shop that changes while we page is noticed in the logs.
        """
        page = 1
        seen = 0
        while True:
            result = self.search_orders_page(start=start, end=end, page=page, limit=page_size)
            seen += len(result.orders)
            yield result
            if len(result.orders) < page_size:
                break
            if result.total is not None and seen >= result.total:
                break
            page += 1
        if result.total is not None and seen != result.total:
            log.warning(
                "Shopware reported %s orders in [%s, %s) but %s were paged; the window changed "
                "while it was read (the look-back or the next run will pick the rest up)",
                result.total,
                start.isoformat(),
                end.isoformat(),
                seen,
            )

    # --- plumbing --------------------------------------------------------------------------

    def _authorized(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        response = self._send(
            method,
            url,
            headers={"Authorization": f"Bearer {self._access_token()}"},
            **kwargs,
        )
        if response.status_code == 401:
            # Revoked or expired early: fetch a new token once, then give up.
            self._token = None
            response = self._send(
                method,
                url,
                headers={"Authorization": f"Bearer {self._access_token()}"},
                **kwargs,
            )
        return response

    def _send(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        auth: bool = True,
        **kwargs: Any,
    ) -> requests.Response:
        all_headers = {"Accept": "application/json", **(headers or {})}
        try:
            return self._session.request(
                method, url, headers=all_headers, timeout=self._timeout, **kwargs
            )
        except requests.RequestException as exc:
            raise ApiError(
                f"{method} {safe_url(url)} failed: {type(exc).__name__}: {_describe(exc)}",
                method=method,
                url=safe_url(url),
            ) from None

    @staticmethod
    def _parse(response: requests.Response, model: Any, method: str, url: str) -> Any:
        where = f"{method} {safe_url(url)}"
        if not response.ok:
            detail = ""
            try:
                detail = ShopErrorResponse.model_validate(response.json()).summary()
            except (ValueError, ValidationError):
                detail = response.text[:200]
            raise ApiError(
                f"{where} answered {response.status_code} {response.reason}: {detail}",
                method=method,
                url=safe_url(url),
                status=response.status_code,
            )
        try:
            payload = response.json()
        except ValueError:
            raise ApiError(
                f"{where} answered {response.status_code} with a body that is not JSON "
                f"(content-type {response.headers.get('Content-Type')!r}): "
                f"{response.text[:120]!r}",
                method=method,
                url=safe_url(url),
                status=response.status_code,
            ) from None
        try:
            return model.model_validate(payload)
        except ValidationError as exc:
            raise ApiError(
                f"{where} answered {response.status_code} with an unexpected body: "
                f"{exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}",
                method=method,
                url=safe_url(url),
                status=response.status_code,
            ) from None


def _describe(exc: requests.RequestException) -> str:
    # Exception text from urllib3 can be long; its first line says what happened.
    return str(exc).splitlines()[0][:200] if str(exc) else ""
