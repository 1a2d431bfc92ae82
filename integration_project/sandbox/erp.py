"""The sandbox ERP: the subset of Exact Online's REST API this project speaks.

- ``POST /api/oauth2/token`` (form-encoded ``grant_type=refresh_token``): the refresh token
  rotates on every successful use. As Exact does, the previous refresh token keeps working
  until the new pair is first used (its access token on a data call, or its refresh token
  here); then every older one dies. ``strict_rotation=True`` models the Exact apps that allow
  no older token at all: the previous one dies at once. A refresh within
  ``min_refresh_interval_s`` of the last successful one is refused (400 ``access_denied``,
  header ``Reason: TooEarlyToRefreshTokens``) and leaves the current tokens valid.
  ``expires_in`` is a string, as Exact sends it.
- ``/api/v1/{division}/crm/Accounts``, ``logistics/Items``, ``salesorder/SalesOrders``,
  ``salesorder/SalesOrderLines``: OData ``$filter`` (a subset of OData v2, see
  :func:`~integration_project.sandbox.erp_filter.compile_filter`: ``eq ne gt ge lt le``,
  ``and or not``, parentheses, typed literals ``'text'`` / ``guid'…'`` / ``datetime'…'`` /
  numbers, ``trim()``; text compared case-insensitively like Exact's SQL collation; a literal
  of the wrong type or anything else is a 400 in Exact's words), ``$select``, ``$top``,
  ``$expand=SalesOrderLines``, paging by 60 with ``__next`` / ``$skiptoken``. POST creates
  accounts (only ``Name`` required; a ``Code`` sent is kept, right-aligned to 18) and sales
  orders (only ``OrderedBy`` and lines with ``Item`` and ``Quantity`` required: the date, the
  division's currency, the item's price and description are filled in).
  ``PUT crm/Accounts(guid'…')`` updates the fields sent (204, no body). A GET of sales orders
  gives their lines as a ``__deferred`` link (``SalesOrders(guid'…')/SalesOrderLines``, served
  too) unless ``$expand``-ed. ``YourRef`` is NOT deduplicated (the real ERP does not either),
  which is how tests see a route that sends twice.
- ``GET /api/v1/current/Me`` (no division in the path: how a client finds its
  ``CurrentDivision``) and ``hrm/Divisions`` (the division and ``other_divisions``).
- ``vat/VATCodes`` (GET, same OData options) lists the division's VAT codes (see
  :func:`~integration_project.sandbox.erp_vat.seed_vat_codes`: one sales code per rate the
  sandbox orders carry, 0 % codes ``ICL`` and ``EXP``, and traps at 21 %). A sales order
  line's VAT comes from its ``VATCode``, else from its item's ``SalesVatCode`` (``21`` on
  every item); unknown, blocked and purchase-only codes are refused. Lines and header carry
  ``AmountFC`` / ``AmountFCExclVat`` / ``VATAmount`` (header ``AmountFC`` = what will be
  invoiced, VAT included).
- Every data call is counted against a minutely and a daily budget and announces both in the
  ``X-RateLimit-*`` headers (reset in epoch milliseconds); over budget -> 429. Each minute's
  calls admitted and refused are kept (``minute_windows`` in the state): how a client's pace
  is counted from the ERP's side.
- ``latency_s``: every token and data call takes at least that long (the answer waits for
  what the sandbox's own work left of it).
- As Exact does, ``block_after_4xx`` (10) client errors (4xx other than 429, 401 included) on
  one endpoint within an hour block the app for an hour: every data call and the token
  endpoint then answer 403. The token endpoint's 4xx count under its own key (``token_post``).
  ``statuses`` counts every data and token answer by HTTP status.
- A POST answers 201 with the whole entity (``OrderNumber``, ``Code``, ``Created``, lines'
  server fields …) only when sent with ``Prefer: return=representation``, as Exact does;
  without it, only the fields posted and the key (``ID``, ``OrderID``).
- ``GET /sandbox/state`` is the sandbox's own summary (no auth).
- ``POST /sandbox/webhook`` stores alert bodies (JSON, no auth) in ``webhooks``.

Every data error uses Exact's OData envelope
(:func:`~integration_project.exact.models.error_body`). The token endpoint answers errors in
the OAuth form only (:func:`~integration_project.exact.models.oauth_error_body`):
``{"error": "invalid_grant", "error_description": "..."}`` (also ``invalid_client``,
``invalid_request``, ``unsupported_grant_type``; faults as ``server_error`` or
``temporarily_unavailable``, a block as ``access_denied``).

This module admits requests, counts them and injects faults; the parts live next to it:
``erp_books`` (the division's entities), ``erp_auth`` (OAuth), ``erp_limits`` (rate limits,
the block), ``erp_routes`` / ``erp_odata`` / ``erp_filter`` / ``erp_writes`` (the resources)
and ``erp_vat`` (VAT codes and amounts), all in :mod:`integration_project.sandbox`.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections import Counter
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, unquote

from integration_project.exact.models import (
    ME,
    MIN_REFRESH_INTERVAL_S,
    TOKEN_PATH,
    RateLimit,
    error_body,
)
from integration_project.sandbox.common import Clock, Forwarded, Request, Response, system_clock
from integration_project.sandbox.erp_auth import ErpAuth, oauth_error, oauth_form
from integration_project.sandbox.erp_books import ErpBooks
from integration_project.sandbox.erp_limits import ErrorBlock, RateBudget
from integration_project.sandbox.erp_odata import call_key, endpoint
from integration_project.sandbox.erp_routes import data_answer
from integration_project.sandbox.erp_vat import (
    EXPORT_VAT_CODE,
    INTRA_EU_VAT_CODE,
    ITEM_SALES_VAT_CODE,
    SALES_VAT_CODES,
)
from integration_project.sandbox.faults import FaultPlan, Injection
from integration_project.sandbox.world import SandboxData
from integration_project.settings import (
    SANDBOX_ERP_CLIENT_ID,
    SANDBOX_ERP_CLIENT_SECRET,
    SANDBOX_ERP_DIVISION,
    SANDBOX_ERP_REFRESH_TOKEN,
)

__all__ = [
    "EXPORT_VAT_CODE",
    "INTRA_EU_VAT_CODE",
    "ITEM_SALES_VAT_CODE",
    "SALES_VAT_CODES",
    "SandboxErp",
]

STATE_PATH = "/sandbox/state"
#: Receives alert webhooks (no auth), so the run-failure sensor can be tried out locally.
WEBHOOK_PATH = "/sandbox/webhook"
_DATA_PATH = re.compile(r"^/api/v1/([^/]+)/(.+)$")
_FAULTS_TOKEN = frozenset({"500", "503", "429", "slow", "token_error", "token_lost"})
_FAULTS_DATA = frozenset({"500", "503", "429", "slow"})
#: The token endpoint's key in ``client_errors`` (as :func:`call_key` names data endpoints).
TOKEN_CALL_KEY = call_key("POST", TOKEN_PATH)
_RATE_LIMITED = "Too many requests: the API rate limit of this division is used up"


class SandboxErp(ErpBooks):
    """State and behaviour of the sandbox ERP; thread-safe (one lock around the state).

    Its books are an :class:`ErpBooks`; the app's OAuth side is ``auth`` (:class:`ErpAuth`),
    the division's call budgets ``limits`` (:class:`RateBudget`), the block after too many
    client errors ``block`` (:class:`ErrorBlock`). Their attributes that callers and tests
    use are readable (and settable) here too.
    """

    client_id = Forwarded("auth")
    client_secret = Forwarded("auth")
    refresh_token = Forwarded("auth")
    previous_refresh_token = Forwarded("auth")
    strict_rotation = Forwarded("auth")
    token_lifetime_s = Forwarded("auth")
    min_refresh_interval_s = Forwarded("auth")
    last_refresh = Forwarded("auth")
    token_refreshes = Forwarded("auth")
    _access_tokens = Forwarded("auth", "access_tokens")  # every token handed out (test_secrets)
    minute_limit = Forwarded("limits")
    minute_window_s = Forwarded("limits")
    blocked_until = Forwarded("block")
    client_errors = Forwarded("block")

    def __init__(
        self,
        *,
        seed: int = 0,
        data: SandboxData | None = None,
        clock: Clock | None = None,
        division: str = SANDBOX_ERP_DIVISION,
        client_id: str = SANDBOX_ERP_CLIENT_ID,
        client_secret: str = SANDBOX_ERP_CLIENT_SECRET,
        refresh_token: str = SANDBOX_ERP_REFRESH_TOKEN,
        token_lifetime_s: int = 600,
        min_refresh_interval_s: float = MIN_REFRESH_INTERVAL_S,
        minute_limit: int = 60,
        day_limit: int = 5000,
        minute_window_s: float = 60.0,
        page_size: int = 60,
        faults: FaultPlan | None = None,
        strict_rotation: bool = False,
        block_after_4xx: int | None = 10,
        latency_s: float = 0.0,
    ) -> None:
        data = data or SandboxData.build(seed)
        super().__init__(data, seed=seed, clock=clock or system_clock, division=str(division))
        self.auth = ErpAuth(
            client_id=client_id,
            client_secret=client_secret,
            refresh_token=refresh_token,
            token_lifetime_s=token_lifetime_s,
            min_refresh_interval_s=min_refresh_interval_s,
            strict_rotation=strict_rotation,
        )
        self.limits = RateBudget(
            minute_limit=minute_limit, day_limit=day_limit, minute_window_s=minute_window_s
        )
        self.block = ErrorBlock(block_after_4xx)
        self.page_size = page_size
        #: Seconds every token and data call takes at least (the network and Exact's own
        #: time): the answer waits for the rest of it. 0: answer at once.
        self.latency_s = latency_s
        self.faults = faults or FaultPlan(seed=seed)
        #: Requests per endpoint: "token" (any outcome), and for data calls that passed auth
        #: and the rate limit: "accounts_get", "accounts_post", "items_get",
        #: "salesorders_get", "salesorders_post" (see :func:`call_key`).
        self.calls: Counter[str] = Counter()
        #: Every token and data answer by HTTP status (fault answers included).
        self.statuses: Counter[int] = Counter()
        #: The rate limits the last data call's answer announced (None before the first).
        self.last_announced: RateLimit | None = None
        #: JSON bodies POSTed to ``/sandbox/webhook`` (alerts), in arrival order.
        self.webhooks: list[Any] = []

    # --- for tests ---------------------------------------------------------------------

    @property
    def token_calls(self) -> int:
        return self.calls["token"]

    def revoke_access_tokens(self) -> None:
        """Invalidate every access token (as when Exact revokes a grant); refresh still works."""
        with self.lock:
            self.auth.access_tokens.clear()

    def set_rate_limit(
        self,
        *,
        per_minute: int | None = None,
        per_day: int | None = None,
        minute_window_s: float | None = None,
        day_window_s: float | None = None,
    ) -> None:
        """Change the budgets (unset = keep); the current windows start afresh.
        ``day_window_s`` shortens the "day" (UTC days by default) for tests of its reset."""
        with self.lock:
            self.limits.reset(
                self.clock().timestamp(),
                per_minute=per_minute,
                per_day=per_day,
                minute_window_s=minute_window_s,
                day_window_s=day_window_s,
            )

    def rate_limit(self) -> RateLimit:
        """The budget as the next response would announce it (consumes nothing)."""
        with self.lock:
            return self.limits.take(self.clock().timestamp(), consume=False)[1]

    def state(self) -> dict[str, Any]:
        with self.lock:
            blocked_until = self.block.blocked_until
            return {
                "division": self.division,
                **self.summary(),
                "calls": dict(self.calls),
                "token_refreshes": self.auth.token_refreshes,
                "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
                "blocked_until": blocked_until.isoformat() if blocked_until else None,
                "rate_limit": self.rate_limit().to_headers(),
                "minute_windows": [list(w) for w in self.limits.windows],
                "faults_injected": dict(self.faults.injected),
                "webhooks": len(self.webhooks),
            }

    # --- HTTP ------------------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        started = time.monotonic()
        response = self._handle(request)
        if self.latency_s > 0 and request.path.startswith("/api/"):  # token and data calls
            time.sleep(max(0.0, self.latency_s - (time.monotonic() - started)))
        return response

    def _handle(self, request: Request) -> Response:
        route = (request.method, request.path)
        if route == ("POST", TOKEN_PATH):
            return self._token(request)
        if route == ("GET", STATE_PATH):
            return Response(200, self.state())
        if route == ("POST", WEBHOOK_PATH):
            return self._webhook(request)
        if match := _DATA_PATH.match(request.path):
            division, resource = match.group(1), unquote(match.group(2))
            if (division, resource) == ("current", "Me"):
                resource = ME
            response = self._data(request, division, resource)
            self._count(response, call_key(request.method, endpoint(resource)))
            return response
        return Response(404, error_body(f"Not found: {request.method} {request.path}"))

    def internal_error(self, message: str) -> Response:
        return Response(500, error_body(message))

    def _count(self, response: Response, endpoint: str) -> None:
        """Tally the answer (the block counts client errors)."""
        with self.lock:
            self.statuses[response.status] += 1
            self.block.record(endpoint, response.status, self.clock())

    def _webhook(self, request: Request) -> Response:
        try:
            body = request.json()
        except ValueError:
            return Response(400, error_body("The request body is not valid JSON"))
        with self.lock:
            self.webhooks.append(body)
        return Response(200, {"ok": True})

    def _token(self, request: Request) -> Response:
        with self.lock:
            self.calls["token"] += 1
            blocked = self.block.message(self.clock())
        if blocked is not None:
            response = oauth_error(403, "access_denied", blocked)
        else:
            response = oauth_form(self._token_answer(request))
        self._count(response, TOKEN_CALL_KEY)
        return response

    def _token_answer(self, request: Request) -> Response:
        fault = self.faults.take(request.method, request.path, _FAULTS_TOKEN)
        if fault is not None and (answer := _fault_answer(fault, self.rate_limit)) is not None:
            return answer
        form = dict(parse_qsl(request.body.decode("utf-8", "replace")))
        with self.lock:
            response = self.auth.refresh(form, self.clock())
        if fault is not None and fault.kind == "token_lost" and response.status == 200:
            time.sleep(fault.seconds)  # rotated; the client may be killed while it waits
            return _lost(fault)
        return response

    def _data(self, request: Request, division: str, resource: str) -> Response:
        with self.lock:
            refused = self._refuse(request, division, resource)
            if refused is not None:
                return refused
            allowed, budget = self.limits.take(self.clock().timestamp(), consume=True)
            if allowed:
                self.calls[call_key(request.method, endpoint(resource))] += 1
        headers = budget.to_headers()
        self.last_announced = budget  # what the client was last told (tests compare with it)
        if not allowed:
            return Response(429, error_body(_RATE_LIMITED), headers)
        kinds = _FAULTS_DATA | ({"lost_after_commit"} if request.method == "POST" else set())
        fault = self.faults.take(request.method, request.path, kinds)
        if fault is not None and (answer := _fault_answer(fault, lambda: budget)) is not None:
            answer.headers = {**headers, **answer.headers}
            return answer
        response = data_answer(self, request, division, resource, self.page_size)
        if fault is not None and fault.kind == "lost_after_commit":
            response = _lost(fault)  # the work is done; its answer never arrives
        if not response.drop:
            response.headers = {**headers, **response.headers}
        return response

    def _refuse(self, request: Request, division: str, resource: str) -> Response | None:
        """Why a data call is refused before it uses the budget, or None. Hold the lock."""
        if not self.auth.authorise(request.bearer(), self.clock()):
            message = "Unauthorized: the access token is missing, unknown or expired"
            return Response(401, error_body(message), {"WWW-Authenticate": "Bearer"})
        if (blocked := self.block.message(self.clock())) is not None:
            return Response(403, error_body(blocked))
        # current/Me names no division: it is how a client finds one.
        known = division == self.division or division in self.other_divisions
        if resource != ME and not known:
            return Response(403, error_body(f"Forbidden: no access to division {division}"))
        return None


def _fault_answer(fault: Injection, budget: Callable[[], RateLimit]) -> Response | None:
    """The answer an injected fault replaces the real one with (None = carry on). ``budget``:
    what a 429 announces, asked only then."""
    if fault.kind == "slow":
        time.sleep(fault.seconds)
        return None
    if fault.kind == "500":
        return Response(500, error_body("Injected fault: internal server error"))
    if fault.kind in ("503", "token_error"):
        return Response(503, error_body("Injected fault: service unavailable"))
    if fault.kind == "429":
        exhausted = dataclasses.replace(budget(), minutely_remaining=0)
        return Response(429, error_body(_RATE_LIMITED), exhausted.to_headers())
    return None  # lost_after_commit, token_lost: applied after the work is done


def _lost(fault: Injection) -> Response:
    """The answer to a request whose work was done but whose answer is lost."""
    if fault.mode == "drop":
        return Response(0, drop=True)
    message = "Gateway Timeout: the request was processed, but the answer was lost"
    return Response(504, error_body(message))
