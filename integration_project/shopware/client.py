"""HTTP client for the Shopware 6 Admin API: token, order search with paging.

Knows nothing of Dagster or DuckDB. One session, explicit timeouts, the access token cached
until shortly before it expires (the token endpoint is rate limited), retries with backoff for
these calls, which are all safe to repeat (the order search is a read).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
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
    MAX_ORDER_DEPTH,
    ORDER_ASSOCIATIONS,
    ORDER_SEARCH_PATH,
    TOKEN_PATH,
    ClientCredentialsGrant,
    OrderCriteria,
    OrderSearchResponse,
    ShopErrorResponse,
    TokenResponse,
    created_at_window_criteria,
    json_path,
    stored_order_key,
    stored_orders_criteria,
    unreadable_order,
)

log = logging.getLogger(__name__)

#: Renew the token this many seconds before Shopware says it expires.
TOKEN_RENEW_MARGIN_S = 30.0
#: One order of the Admin API's entity routes (``PATCH /api/order/{id}``).
ORDER_PATH = "/api/order"
#: Shopware's ids: 32 lowercase hex characters (``Uuid::isValid``).
SHOP_ID = re.compile(r"[0-9a-f]{32}")
#: An OAuth error code from a token answer may go into an error text; nothing else of its body.
SAFE_OAUTH_ERROR = re.compile(r"[a-z_]{1,40}")


@dataclass(frozen=True)
class PageFacts:
    """What paging needs to know of a page: how many entries it held, and the ``total`` the
    shop reported (None when it sent none)."""

    entries: int
    total: int | None
    #: The highest ``autoIncrement`` on the page (None: no entry had a usable one).
    last_key: int | None = None


@dataclass(frozen=True)
class OrderPage:
    """One page of an order search: the answer's bytes as the shop sent them, read lazily.

    :attr:`orders` parses them in Python (:func:`parse_order_page`); a caller that reads the
    bytes some faster way (e.g. DuckDB's JSON reader) need not pay for that. An entry of
    :attr:`orders` is whatever the shop sent (``null``, a number, an object without ``id`` …),
    or a stand-in (:func:`~integration_project.shopware.models.unreadable_order`) for one that
    could not be parsed: staging keeps each, the transforms quarantine the odd ones.
    """

    page: int
    body: bytes
    status: int
    url: str
    content_type: str | None = None

    @cached_property
    def _parsed(self) -> tuple[int | None, list[Any]]:
        try:
            return parse_order_page(self.body)
        except ValueError as exc:
            raise self.unreadable(exc) from None

    @property
    def total(self) -> int | None:
        return self._parsed[0]

    @property
    def orders(self) -> list[Any]:
        return self._parsed[1]

    @property
    def facts(self) -> PageFacts:
        keys = [k for k in map(stored_order_key, self.orders) if k is not None]
        return PageFacts(len(self.orders), self.total, max(keys, default=None))

    def unreadable(self, exc: ValueError) -> ApiError:
        """The error for an answer that is no order search page, naming the call and page."""
        where = f"POST {self.url} (page {self.page} of the order search)"
        if isinstance(exc, BadOrderPage):
            text = f"{where} answered {self.status} with an unexpected body: {exc}"
        else:
            shown = self.body[:120].decode("utf-8", "replace")
            text = (
                f"{where} answered {self.status} with a body that is not JSON "
                f"({exc}; content-type {self.content_type!r}): {shown!r}"
            )
        return ApiError(text, method="POST", url=self.url, status=self.status)


#: Reads a page for :meth:`ShopwareClient.iter_order_pages` (e.g. stages it) and says what
#: paging needs to know of it.
PageReader = Callable[[OrderPage], PageFacts]


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
        associations: dict[str, Any] = ORDER_ASSOCIATIONS,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._associations = associations  # what each order search loads
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
        # Never the answer's words in an error (they may echo the credentials sent): the
        # status, an OAuth error code that looks like one, and what to do.
        status = response.status_code
        code = _oauth_error_of(response)
        answered = f"HTTP {status}, OAuth error {code}" if code else f"HTTP {status}"
        if status in (400, 401, 403):
            id_var, secret_var = self._credential_names
            raise AuthError(
                f"Shopware refused the API credentials at POST {safe_url(url)} "
                f"({answered}): check {id_var} and {secret_var}",
                method="POST",
                url=safe_url(url),
                status=status,
            )
        if not response.ok:
            raise ApiError(
                f"POST {safe_url(url)} answered {answered}: Shopware issued no access token; "
                "the next run tries again",
                method="POST",
                url=safe_url(url),
                status=status,
            )
        token = self._parse(response, TokenResponse, "POST", url, body_in_errors=False)
        self._token = token.access_token
        self._token_expires_at = self._clock() + token.expires_in
        log.debug("Shopware access token renewed; valid for %s s", token.expires_in)
        return self._token

    # --- orders ----------------------------------------------------------------------------

    def search_orders_page(
        self, *, start: datetime, end: datetime, page: int, limit: int
    ) -> OrderPage:
        """One page of the orders created in ``[start, end)`` by page number, oldest first,
        parsed (an answer that is no order search page raises :class:`ApiError` here)."""
        criteria = created_at_window_criteria(
            start=start, end=end, page=page, limit=limit, associations=self._associations
        )
        result = self._order_page(criteria)
        result.facts  # noqa: B018 - parse now: a bad answer is this call's error
        return result

    def _order_page(self, criteria: OrderCriteria) -> OrderPage:
        url = self._base_url + ORDER_SEARCH_PATH
        response = self._authorized("POST", url, json=criteria.to_json())
        if not response.ok:
            self._parse(response, OrderSearchResponse, "POST", url)  # raises, naming the status
        # Not response.json(): one odd order must not cost the page (see parse_order_page).
        return OrderPage(
            page=criteria.page,
            body=response.content,
            status=response.status_code,
            url=safe_url(url),
            content_type=response.headers.get("Content-Type"),
        )

    def iter_order_pages(
        self,
        *,
        start: datetime | None,
        end: datetime,
        page_size: int,
        read: PageReader | None = None,
        stored_after: int | None = None,
        stored_up_to: int | None = None,
    ) -> Iterator[OrderPage]:
        """Every order created in ``[start, end)`` (no lower bound when ``start`` is None)
        and stored after ``autoIncrement`` ``stored_after`` and up to ``stored_up_to`` (None:
        unbounded), a page at a time, in the order the shop stored them (memory stays flat).

        Paged by key (:func:`stored_orders_criteria`): the next page asks for what was stored
        after the page's highest ``autoIncrement``. ``read`` reads each page before the next
        is asked for (default: parse it in Python, :attr:`OrderPage.facts`). A page that comes
        back short is the last; one without a usable ``autoIncrement`` is followed by the next
        page number under the same key.
        """
        read = read or _parsed_facts
        after, page = stored_after, 1
        while True:
            criteria = stored_orders_criteria(
                created_from=start,
                created_to=end,
                stored_after=after,
                stored_up_to=stored_up_to,
                page=page,
                limit=page_size,
                associations=self._associations,
            )
            result = self._order_page(criteria)
            facts = read(result)
            yield result
            if facts.entries < page_size:
                return
            if facts.last_key is not None and (after is None or facts.last_key > after):
                after, page = facts.last_key, 1
            else:
                page += 1

    def update_order(self, order_id: str, changes: dict[str, Any]) -> None:
        """``PATCH /api/order/{id}`` with ``changes``; Shopware answers 204 No Content. Sent
        once (only a connection never made is retried). :class:`ApiError` names the call, with
        the status and the shop's ``title``/``detail``, or no status when no answer came."""
        if not SHOP_ID.fullmatch(order_id):
            raise ValueError(f"not a Shopware id (32 lowercase hex characters): {order_id!r}")
        url = f"{self._base_url}{ORDER_PATH}/{order_id}"
        response = self._authorized("PATCH", url, json=changes)
        if not response.ok:
            self._parse(response, ShopErrorResponse, "PATCH", url)  # raises, with its words

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
    def _parse(
        response: requests.Response,
        model: Any,
        method: str,
        url: str,
        *,
        body_in_errors: bool = True,
    ) -> Any:
        """The answer as ``model``, else an :class:`ApiError` naming the call and the status.

        ``body_in_errors=False`` (the token call) keeps every word of the answer out of the
        error: a token endpoint's answer may echo the credentials that were sent.
        """
        where = f"{method} {safe_url(url)}"
        if not response.ok:
            if body_in_errors:
                try:
                    detail = ShopErrorResponse.model_validate(response.json()).summary()
                except (ValueError, ValidationError):
                    detail = response.text[:200]
                text = f"{where} answered {response.status_code} {response.reason}: {detail}"
            else:
                text = f"{where} answered HTTP {response.status_code}"
            raise ApiError(text, method=method, url=safe_url(url), status=response.status_code)
        try:
            payload = response.json()
        except ValueError:
            text = f"{where} answered {response.status_code} with a body that is not JSON"
            if body_in_errors:
                text += (
                    f" (content-type {response.headers.get('Content-Type')!r}): "
                    f"{response.text[:120]!r}"
                )
            raise ApiError(
                text, method=method, url=safe_url(url), status=response.status_code
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


# --- reading an order search page ----------------------------------------------------------

#: Integers with more digits than this stay text: Python refuses to convert past 4,300.
MAX_INT_DIGITS = 4000
#: A JSON string, or one structural character: enough to find an answer's parts at any depth.
_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[][{}:,]')
#: Members of an order kept in a stand-in when the order itself cannot be parsed.
_IDENTITY = ("id", "orderNumber", "createdAt")


def _parsed_facts(page: OrderPage) -> PageFacts:
    return page.facts


class BadOrderPage(ValueError):
    """The answer is JSON, but not an order search page (no ``data`` list)."""


def parse_order_page(body: bytes | str) -> tuple[int | None, list[Any]]:
    """The ``total`` and the ``data`` entries of an order search answer.

    Read so that no single order can cost its page:

    * entries stay what the shop sent: ``null``, a number, an object without ``id``; staging
      keeps them and the transforms quarantine them;
    * numbers a float cannot hold (``1e400``), ``NaN`` and ``Infinity`` stay the text they were
      sent as (``"1e400"``), and so do integers of more than :data:`MAX_INT_DIGITS` digits:
      the transforms quarantine them like any other non-number, naming the field;
    * bytes that are not UTF-8 are kept (as lone surrogates): staging quarantines that order;
    * an answer nested too deeply for Python's ``json`` (it raises ``RecursionError`` near
      1,000 levels) is cut into its ``data`` entries by a scanner that only follows strings
      and brackets, and each entry is parsed on its own; one that still cannot be parsed
      becomes a stand-in that keeps its ``id``, ``orderNumber`` and ``createdAt`` and says why
      (it is quarantined under its own id, never lost).

    A body that is not JSON at all raises ``ValueError`` (``json.JSONDecodeError``), one
    without a ``data`` list :class:`BadOrderPage`: such a page is an error, never read as empty.
    """
    text = body.decode("utf-8-sig", "surrogateescape") if isinstance(body, bytes) else body
    try:
        answer = _loads(text)
    except RecursionError:
        return _split_page(text)
    if not isinstance(answer, dict):
        raise BadOrderPage(f"expected a JSON object, got {_kind(answer)}")
    data = answer.get("data")
    if not isinstance(data, list):
        raise BadOrderPage(f"'data' is not a list of orders (got {_kind(data)})")
    return _total(answer.get("total")), data


def _loads(text: str) -> Any:
    return json.loads(text, parse_float=_float, parse_int=_int, parse_constant=str)


def _float(text: str) -> float | str:
    number = float(text)
    return number if math.isfinite(number) else text


def _int(text: str) -> int | str:
    return int(text) if len(text) <= MAX_INT_DIGITS else text


def _total(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _split_page(text: str) -> tuple[int | None, list[Any]]:
    """:func:`parse_order_page` for an answer too deep for ``json``: the top-level object's
    ``total`` and ``data`` found by scanning, each ``data`` entry parsed on its own."""
    depth = 0
    key: str | None = None  # the top-level member being read
    expect_key = False
    value_start = 0
    total: Any = None
    entries: list[str] | None = None  # the data list's entries, as text
    entry_start = 0
    end = -1
    for match in _TOKEN.finditer(text):
        token, at = match.group(), match.start()
        head = token[0]
        if head == '"':
            if depth == 1 and expect_key:
                key, expect_key = json.loads(token), False
        elif head in "{[":
            if depth == 0:
                if head != "{" or text[:at].strip():
                    raise BadOrderPage("expected a JSON object")
                expect_key = True
            elif depth == 1 and key == "data":
                if head != "[":
                    raise BadOrderPage("'data' is not a list of orders")
                entries, entry_start = [], match.end()
            depth += 1
        elif head in "}]":
            depth -= 1
            if depth < 0:
                raise json.JSONDecodeError("unbalanced brackets", text, at)
            if depth == 1 and key == "data" and entries is not None and head == "]":
                piece = text[entry_start:at]
                if piece.strip() or entries:
                    entries.append(piece)
            if depth == 0:
                if key == "total":
                    total = _scalar(text[value_start:at])
                end = match.end()
                break
        elif head == ":":
            if depth == 1:
                value_start = match.end()
        elif depth == 1:  # a comma between top-level members
            if key == "total":
                total = _scalar(text[value_start:at])
            expect_key = True
        elif depth == 2 and key == "data" and entries is not None:  # between data entries
            entries.append(text[entry_start:at])
            entry_start = match.end()
    return _total(total), _parse_entries(text, end, entries)


def _parse_entries(text: str, end: int, entries: list[str] | None) -> list[Any]:
    """The ``data`` entries :func:`_split_page` found (``end``: where the answer's object
    closed, -1 if it never did), each parsed on its own; one that cannot be becomes a
    stand-in."""
    if end < 0:
        raise json.JSONDecodeError("the answer ends before its brackets close", text, len(text))
    if text[end:].strip():
        raise json.JSONDecodeError("extra data after the answer", text, end)
    if entries is None:
        raise BadOrderPage("'data' is missing")
    orders: list[Any] = []
    for piece in entries:
        if not piece.strip():
            raise json.JSONDecodeError("an empty entry in 'data'", text, 0)
        try:
            orders.append(_loads(piece))
        except (RecursionError, ValueError) as exc:
            orders.append(_unreadable_entry(piece, exc))
    return orders


def _scalar(text: str) -> Any:
    try:
        return _loads(text)
    except (RecursionError, ValueError):
        return None


def _unreadable_entry(piece: str, exc: Exception) -> dict[str, Any]:
    """A stand-in for a ``data`` entry that cannot be parsed, naming the field at fault."""
    members, deep_at = _scan_entry(piece)
    if deep_at is not None:
        reason = (
            f"{deep_at}: nested deeper than {MAX_ORDER_DEPTH} levels; the shop's JSON for "
            "this order cannot be read"
        )
    else:
        reason = f"the shop's JSON for this order cannot be read: {type(exc).__name__}: {exc}"
    digest = hashlib.sha256(piece.strip().encode("utf-8", "surrogatepass")).hexdigest()
    return unreadable_order(reason[:500], members, raw_sha256=digest)


def _scan_entry(piece: str) -> tuple[dict[str, Any], str | None]:
    """The entry's top-level ``id``, ``orderNumber`` and ``createdAt`` when they are strings,
    and the path at which it first nests deeper than :data:`MAX_ORDER_DEPTH` (None: never)."""
    stack: list[list[Any]] = []  # per open container: [bracket, key or index, expects a key]
    members: dict[str, Any] = {}
    member: str | None = None  # a wanted top-level member whose value comes next
    deep_at: str | None = None
    for match in _TOKEN.finditer(piece):
        token = match.group()
        head = token[0]
        top = stack[-1] if stack else None
        if head == '"':
            if top is not None and top[0] == "{" and top[2]:
                top[1], top[2] = _text(token), False
            elif member is not None and len(stack) == 1:
                members[member] = _text(token)
            member = None
        elif head in "{[":
            member = None
            if deep_at is None and len(stack) >= MAX_ORDER_DEPTH:
                deep_at = json_path([entry[1] for entry in stack])
            stack.append([head, 0 if head == "[" else None, head == "{"])
        elif head in "}]":
            member = None
            if stack:
                stack.pop()
        elif head == ":":
            if top is not None and len(stack) == 1 and top[1] in _IDENTITY:
                member = top[1]
        else:  # a comma
            member = None
            if top is not None:
                if top[0] == "[":
                    top[1] += 1
                else:
                    top[2] = True
    return members, deep_at


def _text(token: str) -> str | None:
    try:
        value = json.loads(token)
    except ValueError:
        return None
    return value if isinstance(value, str) else None


#: league/oauth2-server's exception codes for the errors of a client-credentials token call.
#: Shopware sends the number as the ``code`` of its ``errors`` entry (``ErrorResponseFactory``).
LEAGUE_OAUTH_CODES = {
    "2": "unsupported_grant_type",
    "3": "invalid_request",
    "4": "invalid_client",
    "5": "invalid_scope",
}


def _oauth_error_of(response: requests.Response) -> str | None:
    """An OAuth error code of a token answer (``invalid_client`` …: ``error``, or the code of
    Shopware's first ``errors`` entry, league's number named) when it looks like one
    (``SAFE_OAUTH_ERROR``)."""
    try:
        body = response.json()
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    code = body.get("error")
    errors = body.get("errors")
    if not isinstance(code, str) and isinstance(errors, list) and errors:
        first = errors[0]
        code = first.get("code") if isinstance(first, dict) else None
        code = LEAGUE_OAUTH_CODES.get(code, code) if isinstance(code, str) else code
    return code if isinstance(code, str) and SAFE_OAUTH_ERROR.fullmatch(code) else None


def _describe(exc: requests.RequestException) -> str:
    # Exception text from urllib3 can be long; its first line says what happened.
    return str(exc).splitlines()[0][:200] if str(exc) else ""
