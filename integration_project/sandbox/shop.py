"""The sandbox shop: the subset of Shopware 6's Admin API this project speaks.

- ``POST /api/oauth/token`` (client credentials, JSON or form body) issues opaque bearer tokens
  with a configurable lifetime. The client id and secret come from the body or, per parameter
  when the body lacks one, from HTTP Basic auth, and refusals carry league/oauth2-server's
  codes in Shopware's envelope, as Shopware 6.5/6.6 does (:meth:`SandboxShop._refuse_client`).
  The endpoint is rate limited (sliding window) because the real one is: a client that fetches
  a token per call gets 429s here before it gets them in production.
- ``POST /api/search/order`` takes a Shopware ``Criteria`` body: ``page``/``limit``,
  ``total-count-mode`` (names or the legacy integers), ``filter`` (``range``, ``equals``,
  ``equalsAny``; on any dotted field, e.g. ``stateMachineState.technicalName`` or
  ``salesChannelId``), ``sort``, ``ids`` and ``associations``. Association fields (order state,
  line items, currency, addresses, deliveries) are only filled when requested, as Shopware 6.6
  does (6.5 still autoloaded ``stateMachineState``); otherwise they are ``null``. The order's
  customer (``orderCustomer``, a one-to-one association) is autoloaded, as in both versions.
  Filters see the whole stored order, loaded or not. To-many associations (``lineItems``) come
  back in a shuffled order, fixed per order, unless the association is sorted in the criteria
  (``"associations": {"lineItems": {"sort": [{"field": "position"}]}}``): the database
  promises no order either. A range filter on a date compares its bound *as text* with the
  stored value in Shopware's storage format (UTC ``2026-11-22 06:15:00.000``), as the database
  does: a bound sent in another form (``T``, an offset) selects the wrong orders.
- ``GET /sandbox/state`` is the sandbox's own summary (no auth).

Errors use Shopware's envelope (:func:`~integration_project.shopware.models.shop_error_body`).
Orders live in memory keyed by id; tests put them into exact windows with :meth:`add_order`,
:meth:`add_orders` and :meth:`add_raw_order`, and entries a dict cannot carry (``null``,
``1e400``, 5,000 levels of nesting) with :meth:`add_verbatim`. :meth:`SandboxShop.b2b` builds
the second example shop (a B2B storefront: own credentials, order numbers from 50001, mostly
company customers, mixed order states).
"""

from __future__ import annotations

import base64
import copy
import hmac
import itertools
import json
import math
import random
import secrets
import threading
import time
import zlib
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl

from pydantic import ValidationError

from integration_project.sandbox.common import Clock, Request, Response, system_clock
from integration_project.sandbox.data import OrderFactory, OrderTruth, SandboxData
from integration_project.sandbox.faults import FaultPlan, Injection
from integration_project.settings import (
    SANDBOX_SHOP2_CLIENT_ID,
    SANDBOX_SHOP2_CLIENT_SECRET,
    SANDBOX_SHOP_CLIENT_ID,
    SANDBOX_SHOP_CLIENT_SECRET,
)
from integration_project.shopware.models import (
    ORDER_SEARCH_PATH,
    TOKEN_PATH,
    RangeParameters,
    SortField,
    TokenResponse,
    format_shop_datetime,
    format_storage_datetime,
    shop_error_body,
)

STATE_PATH = "/sandbox/state"
#: Key that marks a search stand-in for an :meth:`SandboxShop.add_verbatim` entry, and the
#: prefix of its placeholder in an answer (no JSON text of a real order holds a NUL).
_VERBATIM = "\x00verbatim"
_VERBATIM_MARK = "\x00verbatim:"

#: Order fields that Shopware only loads when the criteria ask for the association, nested the
#: same way (e.g. ``billingAddress.country``). Everything else in a stored order is always sent,
#: ``orderCustomer`` included: ``OneToOneAssociationField`` autoloads unless told otherwise.
LOADABLE_ASSOCIATIONS: dict[str, dict[str, Any]] = {
    "stateMachineState": {},
    "lineItems": {},
    "currency": {},
    "billingAddress": {"country": {}},
    "deliveries": {"shippingOrderAddress": {"country": {}}},
}
DATETIME_FIELDS = frozenset({"createdAt", "updatedAt", "orderDateTime"})
#: Shopware's ``total-count-mode``: names, and the integers older clients send.
TOTAL_COUNT_MODES = {"none": "none", "exact": "exact", "next-pages": "next-pages"} | {
    "0": "none", "1": "exact", "2": "next-pages"
}  # fmt: skip
_RANGE_OPERATORS = frozenset(RangeParameters.model_fields)
_FAULTS_TOKEN = frozenset({"500", "503", "429", "slow", "token_error"})
_FAULTS_SEARCH = frozenset({"500", "503", "429", "slow", "malformed_json"})
#: league/oauth2-server 8.5 ``OAuthServerException`` factories the token endpoint raises:
#: (status, code, message, hint). ``invalidClient`` has no hint; ``unsupportedGrantType``'s is
#: fixed; ``invalidRequest``'s names the parameter (:func:`oauth_invalid_request`).
OAUTH_INVALID_CLIENT = (401, "4", "Client authentication failed", None)
OAUTH_UNSUPPORTED_GRANT_TYPE = (
    400,
    "2",
    "The authorization grant type is not supported by the authorization server.",
    "Check that all required parameters have been provided",
)


def oauth_invalid_request(parameter: str) -> tuple[int, str, str, str]:
    """``OAuthServerException::invalidRequest($parameter)``: (status, code, message, hint)."""
    message = (
        "The request is missing a required parameter, includes an invalid parameter value, "
        "includes a parameter more than once, or is otherwise malformed."
    )
    return 400, "3", message, f"Check the `{parameter}` parameter"


#: ``states`` of a shop: the state of its generated (history, arrivals) orders.
SHOP_STATES = frozenset({"open", "mixed"})
#: How the second sandbox shop (B2B storefront) differs from the first: see :meth:`SandboxShop.b2b`.
B2B_SHOP_OPTIONS: dict[str, Any] = {
    "client_id": SANDBOX_SHOP2_CLIENT_ID,
    "client_secret": SANDBOX_SHOP2_CLIENT_SECRET,
    "first_order_number": 50001,
    "order_stream": "b2b-orders",
    "sales_channel": "b2b",
    "company_share": 0.85,
    "states": "mixed",
}


class BadCriteria(ValueError):
    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


@dataclass
class Criteria:
    page: int
    limit: int
    total_count_mode: str
    filters: list[Callable[[dict[str, Any]], bool]]
    sort: list[SortField]
    associations: dict[str, Any]
    ids: list[str] | None
    #: Sorts of to-many associations, by dotted path (``"lineItems"``).
    association_sorts: dict[str, list[SortField]]


class SandboxShop:
    """State and behaviour of the sandbox shop; thread-safe (one lock around the state).

    Orders come from an :class:`OrderFactory` over ``data`` (numbers from
    ``first_order_number``, random stream ``order_stream``, sales channel ``sales_channel``,
    ``company_share`` as there). ``states``: ``"open"`` = generated orders (history, arrivals)
    are all open; ``"mixed"`` = their state is drawn (~5 % cancelled, ~10 % completed, ~5 % in
    progress). :meth:`add_order` makes open orders either way unless given ``state``.
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        data: SandboxData | None = None,
        clock: Clock | None = None,
        client_id: str = SANDBOX_SHOP_CLIENT_ID,
        client_secret: str = SANDBOX_SHOP_CLIENT_SECRET,
        token_lifetime_s: int = 600,
        token_rate_limit: int = 30,
        token_rate_window_s: float = 60.0,
        max_limit: int = 500,
        default_limit: int = 25,
        faults: FaultPlan | None = None,
        first_order_number: int = 10001,
        order_stream: str = "orders",
        sales_channel: str = "storefront",
        company_share: float | None = None,
        states: str = "open",
    ) -> None:
        if states not in SHOP_STATES:
            raise ValueError(f"states must be one of {sorted(SHOP_STATES)}, not {states!r}")
        self.data = data or SandboxData.build(seed)
        self.factory = OrderFactory(
            self.data,
            first_order_number=first_order_number,
            stream=order_stream,
            sales_channel=sales_channel,
            company_share=company_share,
        )
        self.states = states
        self.clock = clock or system_clock
        self.client_id = client_id
        self.client_secret = client_secret
        self.token_lifetime_s = token_lifetime_s
        self.token_rate_limit = token_rate_limit
        self.token_rate_window_s = token_rate_window_s
        self.max_limit = max_limit
        self.default_limit = default_limit
        self.faults = faults or FaultPlan(seed=seed)
        #: Every order, keyed by id (insertion order = arrival order).
        self.orders: dict[str, dict[str, Any]] = {}
        #: Requests per endpoint ("token", "search", ...), whatever their outcome.
        self.calls: Counter[str] = Counter()
        self.tokens_issued = 0
        self._tokens: dict[str, datetime] = {}
        self._token_attempts: deque[datetime] = deque()
        # The first shop keeps its historical stream name; others get their own.
        history_key = "history" if order_stream == "orders" else f"history:{order_stream}"
        self._history_rng = random.Random(f"{history_key}:{seed}")
        self._lock = threading.RLock()
        #: Orders added by :meth:`add_bulk`, each zlib-compressed JSON (append-only).
        self._packed: list[bytes] = []
        #: Bumped whenever an order is added; search results are cached per version.
        self._version = 0
        self._matches: dict[str, tuple[int, list[dict[str, Any] | int]]] = {}
        #: Entries served as raw JSON text (:meth:`add_verbatim`), by key.
        self._verbatim: dict[str, str] = {}
        #: Their place in searches: a stand-in order with ``id``, ``createdAt`` and the key.
        self._verbatim_places: list[dict[str, Any]] = []

    @classmethod
    def b2b(cls, **options: Any) -> SandboxShop:
        """The second example shop, a B2B storefront; ``options`` override :data:`B2B_SHOP_OPTIONS`.

        Same catalogue and customers as the first shop (pass the same ``data``), so the shared
        ERP knows its items; another order stream, numbers from 50001, sales channel id
        ``stable_id("sales_channel", "b2b")``, ~85 % company customers, mixed states.
        """
        return cls(**{**B2B_SHOP_OPTIONS, **options})

    # --- putting orders in ---------------------------------------------------------------

    @property
    def token_calls(self) -> int:
        return self.calls["token"]

    @property
    def truth(self) -> dict[str, OrderTruth]:
        """Ground truth of every generated order (not of raw ones), keyed by order id."""
        return self.factory.truth

    def add_order(self, created_at: datetime | None = None, **options: Any) -> dict[str, Any]:
        """Generate and store one order created at ``created_at`` (default: now); returns it.

        ``options`` go to :meth:`OrderFactory.make_order` (``malformed``, ``shipping_country``,
        ``billing_country``, ``email``, ``skus``, ``countries``, ``state``). The defaults give an
        order the route should deliver: well-formed, open, shipped and billed to one EU country.
        The returned dict is the stored order itself: changing it changes what the shop answers.
        """
        options.setdefault("countries", "eu")
        with self._lock:
            order = self.factory.make_order(created_at or self.clock(), **options)
            self.orders[order["id"]] = order
            self._version += 1
            return order

    def add_orders(
        self,
        n: int,
        *,
        created_at: datetime | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        **options: Any,
    ) -> list[dict[str, Any]]:
        """``n`` orders, all at ``created_at``, or spread over ``[start, end)`` (first at start)."""
        if (start is None) != (end is None):
            raise ValueError("give both start and end, or neither")
        if start is not None and end is not None:
            times = [start + (end - start) * i / n for i in range(n)]
        else:
            times = [created_at or self.clock()] * n
        return [self.add_order(t, **options) for t in times]

    def add_random_order(self, created_at: datetime | None = None) -> dict[str, Any]:
        """One order as history and arrivals make them: country mix, ~3 % bad, per ``states``."""
        state = "random" if self.states == "mixed" else "open"
        return self.add_order(created_at, malformed="random", countries="mix", state=state)

    def add_raw_order(self, order: dict[str, Any]) -> dict[str, Any]:
        """Store ``order`` exactly as given (it needs an ``id``); for hand-made broken orders."""
        if not order.get("id"):
            raise ValueError("a raw order needs an 'id'")
        with self._lock:
            self.orders[order["id"]] = copy.deepcopy(order)
            self._version += 1
            return self.orders[order["id"]]

    def add_verbatim(self, created_at: datetime, text: str, *, sort_id: str | None = None) -> str:
        """Test hook: serve ``text`` as it is, one entry of ``data``, in the order searches
        whose ``createdAt`` range covers ``created_at``; returns the entry's key.

        ``text`` is JSON (or anything else) that is neither parsed nor checked: ``null``, ``5``,
        ``{"id": 1}``, ``{"amountTotal": 1e400}``, an order with 5,000 levels of nesting, an
        order a dict cannot hold. The entry takes its place in the search as an order with
        ``createdAt`` = ``created_at`` and ``id`` = ``sort_id`` would (default: after the
        stored orders of the same millisecond); filters other than the range see nothing else
        of it. Not in :attr:`orders` or :attr:`truth`.
        """
        with self._lock:
            key = f"verbatim-{len(self._verbatim):06d}"
            self._verbatim[key] = text
            self._verbatim_places.append(
                {
                    "id": sort_id if sort_id is not None else f"~{key}",
                    "createdAt": format_shop_datetime(created_at),
                    _VERBATIM: key,
                }
            )
            self._version += 1
            return key

    def clear_verbatim(self) -> None:
        """Test hook: stop serving every :meth:`add_verbatim` entry."""
        with self._lock:
            self._verbatim.clear()
            self._verbatim_places.clear()
            self._version += 1

    def add_history(
        self, history: timedelta, orders_per_minute: float, *, until: datetime | None = None
    ) -> list[dict[str, Any]]:
        """Orders over ``[until - history, until)``, ``orders_per_minute`` on average, ~3 % bad.

        Their states follow ``states`` (see :meth:`add_random_order`).
        """
        end = until or self.clock()
        t = end - history
        mean_gap = 60.0 / orders_per_minute
        added = []
        while t < end:
            added.append(self.add_random_order(t))
            t += timedelta(seconds=mean_gap * self._history_rng.uniform(0.5, 1.5))
        return added

    def add_bulk(self, n: int, *, start: datetime, end: datetime) -> Counter[str]:
        """``n`` orders as history makes them (country mix, ~3 % bad, states per ``states``),
        spread evenly over ``[start, end)``, stored compactly for benchmarks (a day at 70 a
        minute is ~100,000 orders: ~1.4 GiB as dicts, ~0.2 GiB packed).

        Bulk orders are served by the order search like any other, but are not in
        :attr:`orders` or :attr:`truth`: the ground truth is the returned tally (``orders``,
        ``eu``, ``expected_in_erp``, ``malformed``). While bulk orders exist, a search's matches
        are computed on its first page and reused for the following pages of the same criteria
        (until an order is added), as a database with an index would answer.
        """
        state = "random" if self.states == "mixed" else "open"
        tally: Counter[str] = Counter()
        with self._lock:
            for i in range(n):
                created_at = start + (end - start) * i / n
                order = self.factory.make_order(
                    created_at, malformed="random", countries="mix", state=state
                )
                truth = self.factory.truth.pop(order["id"])
                tally["orders"] += 1
                tally["eu"] += truth.eu
                tally["expected_in_erp"] += truth.expected_in_erp
                tally["malformed"] += truth.malformed is not None
                self._packed.append(_pack(order))
            self._version += 1
        return tally

    def truth_between(self, start: datetime, end: datetime) -> list[OrderTruth]:
        """Ground truth of the generated orders created in ``[start, end)``, oldest first."""
        with self._lock:
            truths = [t for t in self.truth.values() if start <= t.created_at < end]
        return sorted(truths, key=lambda t: (t.created_at, t.order_id))

    def state(self) -> dict[str, Any]:
        with self._lock:
            return {
                "orders": len(self.orders) + len(self._packed),
                "tokens_issued": self.tokens_issued,
                "calls": dict(self.calls),
                "faults_injected": dict(self.faults.injected),
            }

    # --- HTTP ------------------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        route = (request.method, request.path)
        if route == ("POST", TOKEN_PATH):
            return self._token(request)
        if route == ("POST", ORDER_SEARCH_PATH):
            return self._search(request)
        if route == ("GET", STATE_PATH):
            return Response(200, self.state())
        detail = f'No route found for "{request.method} {request.path}"'
        return _error(404, "Not Found", detail, "FRAMEWORK__ROUTE_NOT_FOUND")

    def internal_error(self, message: str) -> Response:
        return _error(500, "Internal Server Error", message)

    def _token(self, request: Request) -> Response:
        with self._lock:
            self.calls["token"] += 1
        fault = self.faults.take(request.method, request.path, _FAULTS_TOKEN)
        if fault is not None and (answer := _fault_answer(fault)) is not None:
            return answer
        with self._lock:
            now = self.clock()
            window_start = now - timedelta(seconds=self.token_rate_window_s)
            while self._token_attempts and self._token_attempts[0] <= window_start:
                self._token_attempts.popleft()
            if len(self._token_attempts) >= self.token_rate_limit:
                wait = (self._token_attempts[0] - window_start).total_seconds()
                return _too_many_requests(max(1, math.ceil(wait)))
            self._token_attempts.append(now)
        refused = self._refuse_client(request)
        if refused is not None:
            return refused
        with self._lock:
            token = secrets.token_urlsafe(32)
            now = self.clock()
            self._tokens = {t: exp for t, exp in self._tokens.items() if exp > now}
            self._tokens[token] = now + timedelta(seconds=self.token_lifetime_s)
            self.tokens_issued += 1
        answer = TokenResponse(
            token_type="Bearer", expires_in=self.token_lifetime_s, access_token=token
        )
        return Response(200, answer.model_dump())

    def _refuse_client(self, request: Request) -> Response | None:
        """Why a token request is refused (None: the client is authenticated), in the order
        league/oauth2-server 8.5 and Shopware's ``ClientRepository`` check it.

        ``grant_type`` must be ``client_credentials``; the client id and secret each come from
        the body, else from HTTP Basic auth (per parameter: the body wins); no id is
        ``invalid_request`` (400); an unknown id or a wrong secret ``invalid_client`` (401, with
        ``WWW-Authenticate`` when the request carried an ``Authorization`` header); an id
        without any secret ``unsupported_grant_type`` (400: Shopware's ``validateClient``).
        Shopware wraps each in its ``errors`` envelope. No answer repeats what was sent.
        """
        try:
            body = _token_parameters(request)
        except ValueError:
            return _error(400, "Bad Request", "The JSON payload is malformed.", "0")
        if body.get("grant_type") != "client_credentials":
            return _oauth_error(*OAUTH_UNSUPPORTED_GRANT_TYPE)
        basic_id, basic_secret = _basic_credentials(request.headers.get("authorization", ""))
        client_id = body.get("client_id")
        client_id = basic_id if client_id is None else client_id
        if client_id is None:
            return _oauth_error(*oauth_invalid_request("client_id"))
        client_secret = body.get("client_secret")
        client_secret = basic_secret if client_secret is None else client_secret
        if client_secret is not None and not isinstance(client_secret, str):
            return _oauth_error(*oauth_invalid_request("client_secret"))
        if not isinstance(client_id, str) or not hmac.compare_digest(
            client_id.encode("utf-8", "surrogatepass"), self.client_id.encode()
        ):
            return _invalid_client(request)
        if client_secret is None:
            return _oauth_error(*OAUTH_UNSUPPORTED_GRANT_TYPE)
        if not hmac.compare_digest(
            client_secret.encode("utf-8", "surrogatepass"), self.client_secret.encode()
        ):
            return _invalid_client(request)
        return None

    def _search(self, request: Request) -> Response:
        with self._lock:
            self.calls["search"] += 1
            token = request.bearer()
            expiry = self._tokens.get(token) if token else None
            now = self.clock()
        if expiry is None or expiry <= now:
            detail = (
                "Access token could not be verified."
                if expiry is None
                else ("The access token has expired.")
            )
            return _error(401, "Unauthorized", detail, "9", {"WWW-Authenticate": "Bearer"})
        fault = self.faults.take(request.method, request.path, _FAULTS_SEARCH)
        if fault is not None and (answer := _fault_answer(fault)) is not None:
            return answer
        try:
            criteria = parse_criteria(request.body, self.max_limit, self.default_limit)
        except BadCriteria as bad:
            return _error(400, "Bad Request", bad.detail, bad.code)
        with self._lock:
            orders = list(self.orders.values()) + list(self._verbatim_places)
            packed, version = self._packed, self._version
        offset = (criteria.page - 1) * criteria.limit
        if packed:
            entries = self._cached_matches(request.body, criteria, orders, packed, version)
            matched: list[Any] = entries
            page = [
                e if isinstance(e, dict) else _unpack(packed[e])
                for e in entries[offset : offset + criteria.limit]
            ]
        else:
            if criteria.ids is not None:
                wanted = set(criteria.ids)
                orders = [o for o in orders if o.get("id") in wanted]
            matched = [o for o in orders if all(f(o) for f in criteria.filters)]
            for sort in reversed(criteria.sort):
                key = _sort_key(sort.field)
                matched.sort(key=key, reverse=sort.order == "DESC")
            page = matched[offset : offset + criteria.limit]
        if criteria.total_count_mode == "exact":
            total = len(matched)
        elif criteria.total_count_mode == "next-pages":
            # Shopware only looks a few pages ahead in this mode.
            total = offset + min(len(matched) - offset, criteria.limit * 5 + 1)
        else:  # "none": Shopware reports the size of the page
            total = len(page)
        data = [
            _VERBATIM_MARK + o[_VERBATIM]
            if _VERBATIM in o
            else _project(
                o,
                LOADABLE_ASSOCIATIONS,
                criteria.associations,
                criteria.association_sorts,
                seed=str(o.get("id")),
            )
            for o in page
        ]
        body = {"total": max(total, 0), "data": data, "aggregations": []}
        if fault is not None and fault.kind == "malformed_json":
            return Response(200, b'{"total": 1, "data": [{"id": "0f')  # cut off mid-body
        if any(isinstance(o, str) for o in data):
            return Response(200, self._with_verbatim(body))
        return Response(200, body)

    def _with_verbatim(self, body: dict[str, Any]) -> bytes:
        """The answer as JSON, each :meth:`add_verbatim` entry put in as its raw text."""
        text = json.dumps(body, ensure_ascii=False)
        for entry in body["data"]:
            if isinstance(entry, str):
                text = text.replace(json.dumps(entry), self._verbatim[entry[len(_VERBATIM_MARK) :]])
        return text.encode("utf-8", "surrogatepass")

    def _cached_matches(
        self,
        raw: bytes,
        criteria: Criteria,
        orders: list[dict[str, Any]],
        packed: list[bytes],
        version: int,
    ) -> list[dict[str, Any] | int]:
        """Matching orders, sorted: a stored order itself, or the index of a packed one.

        Computed on page 1 (and whenever an order was added since), reused for later pages of
        the same filter/sort/ids: paging a day costs one pass over the orders, not one a page.
        """
        body = json.loads(raw.decode("utf-8")) if raw.strip() else {}
        key = json.dumps([body.get(k) for k in ("filter", "sort", "ids")], sort_keys=True)
        with self._lock:
            hit = self._matches.get(key)
        if criteria.page > 1 and hit is not None and hit[0] == version:
            return hit[1]
        wanted = set(criteria.ids) if criteria.ids is not None else None
        sort_keys = [_sort_key(s.field) for s in criteria.sort]
        rows: list[tuple[list[Any], dict[str, Any] | int]] = []
        # One order decoded at a time: the packed ones never all sit in memory as dicts.
        stored = ((o, o) for o in orders)
        bulk = ((_unpack(b), i) for i, b in enumerate(packed))
        for order, ref in itertools.chain(stored, bulk):
            if wanted is not None and order.get("id") not in wanted:
                continue
            if all(f(order) for f in criteria.filters):
                rows.append(([k(order) for k in sort_keys], ref))
        for n in reversed(range(len(sort_keys))):
            rows.sort(key=lambda row: row[0][n], reverse=criteria.sort[n].order == "DESC")
        entries = [ref for _, ref in rows]
        with self._lock:
            if len(self._matches) >= 8:
                self._matches.pop(next(iter(self._matches)))
            self._matches[key] = (version, entries)
        return entries


def _pack(order: dict[str, Any]) -> bytes:
    return zlib.compress(json.dumps(order, separators=(",", ":")).encode("utf-8"), 1)


def _unpack(blob: bytes) -> dict[str, Any]:
    return json.loads(zlib.decompress(blob))


# --- criteria ------------------------------------------------------------------------------


def parse_criteria(raw: bytes, max_limit: int = 500, default_limit: int = 25) -> Criteria:
    """Parse and check a ``Criteria`` body; :class:`BadCriteria` for anything Shopware rejects."""
    try:
        body = json.loads(raw.decode("utf-8")) if raw.strip() else {}
    except ValueError as exc:
        raise BadCriteria("FRAMEWORK__INVALID_REQUEST_BODY", f"Invalid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise BadCriteria("FRAMEWORK__INVALID_CRITERIA", "The criteria must be a JSON object.")
    page = body.get("page", 1)
    if not _is_int(page) or page < 1:
        detail = "The page parameter must be a positive integer greater or equals than 1."
        raise BadCriteria("FRAMEWORK__INVALID_PAGE_QUERY", detail)
    limit = body.get("limit", default_limit)
    if not _is_int(limit) or not 1 <= limit <= max_limit:
        detail = f"The limit parameter must be an integer between 1 and {max_limit}."
        raise BadCriteria("FRAMEWORK__INVALID_LIMIT_QUERY", detail)
    mode = TOTAL_COUNT_MODES.get(str(body.get("total-count-mode", "none")))
    if mode is None:
        detail = "total-count-mode must be one of none, exact, next-pages (or 0, 1, 2)."
        raise BadCriteria("FRAMEWORK__INVALID_TOTAL_COUNT_MODE", detail)
    filters = body.get("filter", [])
    if not isinstance(filters, list):
        raise BadCriteria("FRAMEWORK__INVALID_FILTER_QUERY", "filter must be a list.")
    sort = _parse_sort(body.get("sort", []))
    ids = body.get("ids")
    if ids is not None and not (isinstance(ids, list) and all(isinstance(i, str) for i in ids)):
        raise BadCriteria("FRAMEWORK__INVALID_CRITERIA", "ids must be a list of strings.")
    association_sorts: dict[str, list[SortField]] = {}
    return Criteria(
        page=page,
        limit=limit,
        total_count_mode=mode,
        filters=[_compile_filter(f) for f in filters],
        sort=sort,
        associations=_association_tree(body.get("associations"), sorts=association_sorts),
        ids=ids,
        association_sorts=association_sorts,
    )


def _parse_sort(sorts: Any) -> list[SortField]:
    if not isinstance(sorts, list):
        raise BadCriteria("FRAMEWORK__INVALID_SORT_QUERY", "sort must be a list.")
    try:
        return [
            SortField.model_validate({**s, "order": str(s.get("order", "ASC")).upper()})
            for s in sorts
        ]
    except (ValidationError, TypeError, AttributeError) as exc:
        detail = "Each sort needs a field and an order of ASC or DESC."
        raise BadCriteria("FRAMEWORK__INVALID_SORT_QUERY", detail) from exc


def _compile_filter(raw: Any) -> Callable[[dict[str, Any]], bool]:
    if not isinstance(raw, dict) or not isinstance(raw.get("field"), str) or not raw["field"]:
        raise BadCriteria("FRAMEWORK__INVALID_FILTER_QUERY", "A filter needs a type and a field.")
    kind, field = raw.get("type"), raw["field"].removeprefix("order.")
    if kind == "range":
        params = raw.get("parameters")
        if not isinstance(params, dict) or not params or set(params) - _RANGE_OPERATORS:
            detail = f"A range filter needs parameters among {sorted(_RANGE_OPERATORS)}."
            raise BadCriteria("FRAMEWORK__INVALID_FILTER_QUERY", detail)
        if field.rsplit(".", 1)[-1] in DATETIME_FIELDS:
            # The database compares the bound as sent with the stored text (storage format).
            texts = {op: _date_bound(field, value) for op, value in params.items()}
            return lambda order: any(_in_range(v, texts) for v in _stored_dates(order, field))
        bounds = {op: _comparable(field, value, strict=True) for op, value in params.items()}
        return lambda order: any(_in_range(v, bounds) for v in _values(order, field, coerce=True))
    if kind == "equals":
        if "value" not in raw:
            raise BadCriteria("FRAMEWORK__INVALID_FILTER_QUERY", "An equals filter needs a value.")
        return lambda order: any(_same(v, raw["value"]) for v in _values(order, field) or [None])
    if kind == "equalsAny":
        wanted = raw.get("value")
        if isinstance(wanted, str):
            wanted = wanted.split("|")
        if not isinstance(wanted, list):
            detail = "An equalsAny filter needs a list value."
            raise BadCriteria("FRAMEWORK__INVALID_FILTER_QUERY", detail)
        return lambda order: any(_same(v, w) for v in _values(order, field) for w in wanted)
    detail = f"Filter type {kind!r} is not supported (the sandbox knows range, equals, equalsAny)."
    raise BadCriteria("FRAMEWORK__INVALID_FILTER_QUERY", detail)


def _association_tree(
    raw: Any, *, sorts: dict[str, list[SortField]] | None = None, prefix: str = ""
) -> dict[str, Any]:
    """``{"a": {"associations": {"b": {}}}, "c.d": {}}`` -> ``{"a": {"b": {}}, "c": {"d": {}}}``.

    An association's own ``sort`` goes into ``sorts`` under its dotted path (``"a.b"``).
    """
    if raw is None or raw == []:  # PHP clients send an empty list for an empty object
        return {}
    if not isinstance(raw, dict):
        raise BadCriteria("FRAMEWORK__INVALID_CRITERIA", "associations must be an object.")
    tree: dict[str, Any] = {}
    for key, sub in raw.items():
        if sub == []:
            sub = {}
        if not isinstance(sub, dict):
            detail = f"association {key!r} must be a criteria object."
            raise BadCriteria("FRAMEWORK__INVALID_CRITERIA", detail)
        path = f"{prefix}{key}"
        nested = _association_tree(sub.get("associations"), sorts=sorts, prefix=f"{path}.")
        head, _, rest = key.partition(".")
        if rest:
            nested = _merge(nested, _association_tree({rest: {}}))
        if sorts is not None and sub.get("sort"):
            sorts[path] = _parse_sort(sub["sort"])
        tree[head] = _merge(tree.get(head, {}), nested)
    return tree


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    merged = dict(a)
    for key, value in b.items():
        merged[key] = _merge(merged.get(key, {}), value)
    return merged


def _project(
    entity: dict[str, Any],
    loadable: dict[str, Any],
    wanted: dict[str, Any],
    sorts: dict[str, list[SortField]] | None = None,
    *,
    seed: str,
    prefix: str = "",
) -> Any:
    """``entity`` with every association that was not asked for set to ``null``, and each
    loaded to-many association in the order of its sort, or else shuffled (fixed per ``seed``)."""
    sorts = sorts or {}
    out = dict(entity)
    for name, sub in loadable.items():
        value = out.get(name)
        path = f"{prefix}{name}"
        if name not in wanted:
            out[name] = None
        elif isinstance(value, list):
            items = [
                _project(v, sub, wanted[name], sorts, seed=seed, prefix=f"{path}.")
                for v in value
                if isinstance(v, dict)
            ]
            out[name] = _arrange(items, sorts.get(path, []), f"{seed}:{path}")
        elif isinstance(value, dict):
            out[name] = _project(value, sub, wanted[name], sorts, seed=seed, prefix=f"{path}.")
    return out


def _arrange(items: list[Any], sort: list[SortField], seed: str) -> list[Any]:
    """A to-many association as the database returns it: in no promised order (shuffled with
    ``seed``, never the stored order when there are two or more), then stably sorted by
    ``sort`` if the criteria gave one (ties keep the shuffled order, as in MySQL)."""
    if len(items) > 1:
        shuffled = list(items)
        random.Random(seed).shuffle(shuffled)
        if all(a is b for a, b in zip(shuffled, items, strict=True)):
            shuffled = shuffled[1:] + shuffled[:1]
        items = shuffled
    for by in reversed(sort):
        items.sort(key=_sort_key(by.field), reverse=by.order == "DESC")
    return items


def _values(entity: Any, field: str, *, coerce: bool = False) -> list[Any]:
    """Every value at a dotted path (to-many associations fan out), ``null`` left out."""
    current = [entity]
    for part in field.split("."):
        following = []
        for item in current:
            value = item.get(part) if isinstance(item, dict) else None
            following.extend(value if isinstance(value, list) else [value])
        current = following
    found = [v for v in current if v is not None]
    if coerce:
        return [c for v in found if (c := _comparable(field, v, strict=False)) is not None]
    return found


def _date_bound(field: str, value: Any) -> str:
    """A range bound on a date, kept as the text it was sent as (checked to be a date)."""
    try:
        datetime.fromisoformat(value)
    except (TypeError, ValueError):
        detail = (
            f"{value!r} is not a date for {field}: send Shopware's storage format, UTC "
            "(2026-11-22 06:15:00.000); ISO 8601 parses but compares as text."
        )
        raise BadCriteria("FRAMEWORK__INVALID_FILTER_QUERY", detail) from None
    return value


def _stored_dates(order: dict[str, Any], field: str) -> list[str]:
    """Every date at ``field`` as the database holds it: UTC, storage format, as text."""
    stored = []
    for value in _values(order, field):
        try:
            parsed = datetime.fromisoformat(str(value))
        except ValueError:
            continue
        utc = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        stored.append(format_storage_datetime(utc))
    return stored


def _comparable(field: str, value: Any, *, strict: bool) -> Any:
    """Dates compare as datetimes, numbers as floats; ``strict`` = raise on a bad bound."""
    if field.rsplit(".", 1)[-1] in DATETIME_FIELDS:
        try:
            parsed = datetime.fromisoformat(str(value))
        except ValueError:
            if strict:
                detail = f"{value!r} is not an ISO 8601 date for {field}."
                raise BadCriteria("FRAMEWORK__INVALID_FILTER_QUERY", detail) from None
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if strict and not isinstance(value, str):
        raise BadCriteria("FRAMEWORK__INVALID_FILTER_QUERY", f"bad range bound {value!r}")
    return value


def _in_range(value: Any, bounds: dict[str, Any]) -> bool:
    try:
        return all(
            {"gt": value > b, "gte": value >= b, "lt": value < b, "lte": value <= b}[op]
            for op, b in bounds.items()
        )
    except TypeError:  # e.g. a number against a string bound
        return False


def _same(value: Any, wanted: Any) -> bool:
    if value == wanted:
        return True
    return value is not None and wanted is not None and str(value) == str(wanted)


def _sort_key(field: str) -> Callable[[dict[str, Any]], tuple[int, Any]]:
    def key(order: dict[str, Any]) -> tuple[int, Any]:
        values = _values(order, field, coerce=True)
        if not values:
            return (0, 0)  # NULLs first when ascending, like MySQL
        value = values[0]
        if isinstance(value, datetime):
            return (1, value.timestamp())
        if isinstance(value, float):
            return (1, value)
        return (2, str(value))

    return key


# --- answers -------------------------------------------------------------------------------


def _error(
    status: int, title: str, detail: str, code: str = "", headers: dict[str, str] | None = None
) -> Response:
    return Response(status, shop_error_body(status, title, detail, code), headers or {})


def _too_many_requests(retry_after_s: int) -> Response:
    detail = f"Too many requests, try again in {retry_after_s} seconds."
    return _error(
        429,
        "Too Many Requests",
        detail,
        "FRAMEWORK__RATE_LIMIT_EXCEEDED",
        {"Retry-After": str(retry_after_s)},
    )


def _fault_answer(fault: Injection) -> Response | None:
    """The answer an injected fault replaces the real one with (None = carry on)."""
    if fault.kind == "slow":
        time.sleep(fault.seconds)
        return None
    if fault.kind == "500":
        return _error(500, "Internal Server Error", "Injected fault: internal server error.")
    if fault.kind in ("503", "token_error"):
        return _error(503, "Service Unavailable", "Injected fault: service unavailable.")
    if fault.kind == "429":
        return _too_many_requests(1)
    return None  # malformed_json: applied to the answer


def _token_parameters(request: Request) -> dict[str, Any]:
    """The token request's parameters as Shopware parses them: a form body, or a JSON object
    body sent as ``application/json`` (anything else JSON gives no parameters); ``ValueError``
    for a body typed JSON that is not (``JsonRequestTransformerListener``)."""
    content_type = request.headers.get("content-type", "").lower()
    if content_type.startswith("application/x-www-form-urlencoded"):
        return dict(parse_qsl(request.body.decode("utf-8", "replace")))
    if not content_type.startswith("application/json") or not request.body:
        return {}
    body = request.json()
    return body if isinstance(body, dict) else {}


def _basic_credentials(header: str) -> tuple[str | None, str | None]:
    """Id and secret of an ``Authorization: Basic`` header, as league's
    ``getBasicAuthCredentials`` reads it: ``(None, None)`` unless it starts with ``"Basic "``
    and decodes to text with a colon; split at the first colon."""
    if not header.startswith("Basic "):
        return None, None
    try:
        decoded = base64.b64decode(header[6:].strip() + "==", validate=False).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None, None
    if not decoded or decoded == "0" or ":" not in decoded:
        return None, None
    client_id, _, client_secret = decoded.partition(":")
    return client_id, client_secret


def _oauth_error(
    status: int, code: str, message: str, hint: str | None, headers: dict[str, str] | None = None
) -> Response:
    """An ``OAuthServerException`` as Shopware answers it: ``ErrorResponseFactory`` puts the
    exception's message in ``title`` and its hint in ``detail`` (``null`` when it has none)."""
    error = {"code": code, "status": str(status), "title": message, "detail": hint}
    return Response(status, {"errors": [error]}, headers or {})


def _invalid_client(request: Request) -> Response:
    headers = {}
    authorization = request.headers.get("authorization", "")
    if authorization:  # RFC 6749 5.2, as league's getHttpHeaders does it
        scheme = "Bearer" if authorization.startswith("Bearer") else "Basic"
        headers["WWW-Authenticate"] = f'{scheme} realm="OAuth"'
    return _oauth_error(*OAUTH_INVALID_CLIENT, headers)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
