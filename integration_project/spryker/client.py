"""HTTP client for a Spryker backend: a Back Office user's token, and the orders created in a
time range through the Data Exchange API (``GET /dynamic-entity/sales-orders``).

The Data Exchange API filters by equality or ``IN`` only and sorts by nothing, so a time range
cannot be asked for: the client walks the orders' primary key (``id_sales_order``, auto
increment) in batches, each one ``IN`` list of consecutive ids, and keeps the orders created in
``[start, end)``. A batch names its ids, so no order is read twice or skipped whatever order the
database returns rows in, and the walk stops at the first batch created wholly at or after
``end``, or after ``empty_batches_to_stop`` batches in a row found nothing (past the newest
order). Pass ``after_id`` (the highest id already read) so a walk does not start at the first
order ever placed. Knows nothing of Dagster or DuckDB.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, tzinfo
from typing import Any

import requests
from pydantic import ValidationError

from integration_project.http import DEFAULT_TIMEOUT, ApiError, AuthError, build_session, safe_url
from integration_project.spryker.models import (
    DYNAMIC_ENTITY_PREFIX,
    ORDER_INCLUDE,
    ORDER_KEY,
    ORDERS_ALIAS,
    TOKEN_PATH,
    DynamicEntityCollection,
    GlueErrorResponse,
    PasswordGrant,
    TokenResponse,
    in_filter,
    page_params,
    parse_spryker_datetime,
)

log = logging.getLogger(__name__)

#: Renew the token this many seconds before Spryker says it expires.
TOKEN_RENEW_MARGIN_S = 30.0
#: An error code from a token answer may go into an error text; nothing else of its body.
_SAFE_CODE = re.compile(r"[A-Za-z0-9_]{1,40}")


def _glue_error_code(response: requests.Response) -> str | None:
    try:
        errors = GlueErrorResponse.model_validate(response.json()).errors
    except (ValueError, ValidationError):
        return None
    code = errors[0].code if errors else None
    return code if isinstance(code, str) and _SAFE_CODE.fullmatch(code) else None


def _glue_error_summary(response: requests.Response) -> str:
    try:
        errors = GlueErrorResponse.model_validate(response.json()).errors
    except (ValueError, ValidationError):
        return response.text[:200]
    return "; ".join(f"{e.code or 'error'}: {e.message or ''}".strip(": ") for e in errors)


def record_id(record: Any) -> int | None:
    """A record's ``id_sales_order`` when it is one (a positive integer), else None."""
    key = record.get(ORDER_KEY) if isinstance(record, dict) else None
    return key if isinstance(key, int) and not isinstance(key, bool) and key > 0 else None


class SprykerClient:
    """One Spryker backend (``base_url``: the Glue Backend API host, e.g.
    ``https://glue-backend.example.com``), read as the Back Office user ``username``.

    ``credential_names``: the settings the username and password come from, named in errors
    (never their values). ``page_size``: ids per batch (the Data Exchange API's default page
    limit is 1,000). ``timezone``: the zone of ``created_at`` values without an offset.
    """

    def __init__(
        self,
        base_url: str,
        username: str,
        password: str,
        *,
        alias: str = ORDERS_ALIAS,
        include: Sequence[str] = ORDER_INCLUDE,
        page_size: int = 100,
        empty_batches_to_stop: int = 2,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
        max_retries: int = 3,
        backoff_factor: float = 0.5,
        credential_names: tuple[str, str] = ("SPRYKER_USERNAME", "SPRYKER_PASSWORD"),
        timezone: tzinfo = UTC,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 1 <= page_size <= 1000:
            raise ValueError("page_size must be 1..1000")
        self._base_url = base_url.rstrip("/")
        self._username = username
        self._password = password
        self._alias = alias
        self._include = ",".join(include)
        self.page_size = page_size
        #: Batches in a row that held no order, after which a walk takes it that no newer
        #: order exists (a gap of more unused ids than that would end a walk early).
        self.empty_batches_to_stop = max(1, empty_batches_to_stop)
        self._timeout = timeout
        self._credential_names = credential_names
        self._timezone = timezone
        self._clock = clock
        # Both calls are safe to repeat: the token call only issues another token.
        self._session = build_session(
            retry_methods=("GET", "POST"),
            total=max_retries,
            read_retries=max_retries,
            backoff_factor=backoff_factor,
        )
        self._token: str | None = None
        self._token_expires_at = 0.0
        self.token_requests = 0
        #: Ids of records read without a usable ``created_at``: they fit no window.
        self.undated_ids: list[int] = []

    @property
    def orders_url(self) -> str:
        return f"{self._base_url}{DYNAMIC_ENTITY_PREFIX}/{self._alias}"

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> SprykerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- auth ------------------------------------------------------------------------------

    def token(self) -> str:
        """A bearer token, cached until shortly before it expires."""
        if self._token and self._clock() < self._token_expires_at - TOKEN_RENEW_MARGIN_S:
            return self._token
        url = self._base_url + TOKEN_PATH
        grant = PasswordGrant(username=self._username, password=self._password)
        self.token_requests += 1
        response = self._send("POST", url, data=grant.model_dump())
        status = response.status_code
        code = _glue_error_code(response)
        answered = f"HTTP {status}, error {code}" if code else f"HTTP {status}"
        if status in (400, 401, 403):
            user_var, password_var = self._credential_names
            raise AuthError(
                f"Spryker refused the Back Office user at POST {safe_url(url)} ({answered}): "
                f"check {user_var} and {password_var}",
                method="POST",
                url=safe_url(url),
                status=status,
            )
        if not response.ok:
            raise ApiError(
                f"POST {safe_url(url)} answered {answered}: Spryker issued no access token",
                method="POST",
                url=safe_url(url),
                status=status,
            )
        try:
            token = TokenResponse.model_validate(response.json())
        except (ValueError, ValidationError):
            raise ApiError(
                f"POST {safe_url(url)} answered {status} without a token in the body",
                method="POST",
                url=safe_url(url),
                status=status,
            ) from None
        self._token = token.access_token
        self._token_expires_at = self._clock() + token.expires_in
        return self._token

    # --- orders ----------------------------------------------------------------------------

    def orders_by_id(self, ids: Sequence[int], *, relations: bool = True) -> list[Any]:
        """The order records whose ``id_sales_order`` is in ``ids`` (with the relations,
        unless ``relations`` is False: a probe that needs ids and dates only), as Spryker
        sent them, ordered by id; missing ids are simply absent."""
        params = {
            **in_filter(self._alias, ORDER_KEY, ids),
            **page_params(len(ids)),
            **({"include": self._include} if relations else {}),
        }
        response = self._get(self.orders_url, params)
        try:
            body = DynamicEntityCollection.model_validate(response.json())
        except (ValueError, ValidationError):
            raise ApiError(
                f"GET {safe_url(self.orders_url)} answered {response.status_code} without a "
                '"data" list',
                method="GET",
                url=safe_url(self.orders_url),
                status=response.status_code,
            ) from None
        return sorted(body.data, key=lambda r: record_id(r) or 0)

    def orders_between(
        self, start: datetime, end: datetime, *, after_id: int = 0
    ) -> Iterator[list[Any]]:
        """Pages of the raw order records created in ``[start, end)`` with an id above
        ``after_id``, in id order; each record once. A page may be empty (a batch of orders
        all before ``start``)."""
        if start.tzinfo is None or end.tzinfo is None:
            raise ValueError("naive datetime: pass timezone-aware UTC datetimes")
        next_id, empty = after_id + 1, 0
        while empty < self.empty_batches_to_stop:
            batch = self.orders_by_id(range(next_id, next_id + self.page_size))
            next_id += self.page_size
            empty = 0 if batch else empty + 1
            page, past_end = self._in_window(batch, start, end)
            if page:
                yield page
            if batch and past_end:
                return

    def created_at(self, record: Any) -> datetime | None:
        """A record's ``created_at`` in UTC (None: not a usable date-time)."""
        value = record.get("created_at") if isinstance(record, dict) else None
        return parse_spryker_datetime(value, self._timezone)

    def _in_window(
        self, batch: list[Any], start: datetime, end: datetime
    ) -> tuple[list[Any], bool]:
        """The records of ``batch`` created in ``[start, end)``, and whether every dated
        record of it was created at or after ``end`` (the walk is past the window)."""
        page: list[Any] = []
        past_end = True
        for record in batch:
            created = parse_spryker_datetime(
                record.get("created_at") if isinstance(record, dict) else None, self._timezone
            )
            if created is None:
                key = record_id(record)
                if key is not None and key not in self.undated_ids:
                    self.undated_ids.append(key)
                    log.warning("Spryker order %s has no usable created_at; not read", key)
                continue
            if created < end:
                past_end = False
                if created >= start:
                    page.append(record)
        return page, past_end

    # --- plumbing --------------------------------------------------------------------------

    def _get(self, url: str, params: dict[str, str]) -> requests.Response:
        for attempt in (1, 2):
            headers = {"Authorization": f"Bearer {self.token()}"}
            response = self._send("GET", url, params=params, headers=headers)
            if response.status_code == 401 and attempt == 1:
                self._token = None  # revoked or expired early: one fresh token, once
                continue
            if not response.ok:
                raise ApiError(
                    f"GET {safe_url(url)} answered {response.status_code} {response.reason}: "
                    f"{_glue_error_summary(response)}",
                    method="GET",
                    url=safe_url(url),
                    status=response.status_code,
                )
            return response
        raise AssertionError("unreachable")

    def _send(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> requests.Response:
        all_headers = {"Accept": "application/json", **(headers or {})}
        try:
            return self._session.request(
                method, url, headers=all_headers, timeout=self._timeout, **kwargs
            )
        except requests.RequestException as exc:
            raise ApiError(
                f"{method} {safe_url(url)} failed: {type(exc).__name__}",
                method=method,
                url=safe_url(url),
            ) from None
