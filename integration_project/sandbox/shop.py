"""The sandbox shop: the subset of Shopware 6's Admin API this project speaks.

- ``POST /api/oauth/token`` (client credentials, JSON or form body) issues opaque bearer tokens
  with a configurable lifetime, rate limited like the real one
  (:mod:`~integration_project.sandbox.shop_auth`).
- ``POST /api/search/order`` takes a Shopware ``Criteria`` body
  (:mod:`~integration_project.sandbox.shop_criteria`: ``page``/``limit``,
  ``total-count-mode``, ``filter`` on any dotted field, e.g.
  ``stateMachineState.technicalName`` or ``salesChannelId``, ``sort``, ``ids`` and
  ``associations``) and answers with only the associations asked for
  (:mod:`~integration_project.sandbox.shop_search`).
- ``GET /sandbox/state`` is the sandbox's own summary (no auth).

Errors use Shopware's envelope (:func:`~integration_project.shopware.models.shop_error_body`).
The orders themselves, and the ways tests put them in, are
:class:`~integration_project.sandbox.shop_orders.ShopOrders`. :meth:`SandboxShop.b2b` builds
the second example shop (a B2B storefront: own credentials, order numbers from 50001, mostly
company customers, mixed order states).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from integration_project.sandbox.common import Clock, Forwarded, Request, Response
from integration_project.sandbox.faults import FaultPlan
from integration_project.sandbox.shop_answers import fault_answer, shop_error
from integration_project.sandbox.shop_auth import ShopTokens
from integration_project.sandbox.shop_criteria import BadCriteria, parse_criteria
from integration_project.sandbox.shop_orders import ShopOrders
from integration_project.sandbox.shop_search import MatchCache, answer_bytes, find_page
from integration_project.sandbox.shop_writes import FAULTS_WRITE, ORDER_PATH_PREFIX, OrderWrites
from integration_project.sandbox.world import SandboxData
from integration_project.settings import (
    SANDBOX_SHOP2_CLIENT_ID,
    SANDBOX_SHOP2_CLIENT_SECRET,
    SANDBOX_SHOP_CLIENT_ID,
    SANDBOX_SHOP_CLIENT_SECRET,
)
from integration_project.shopware.models import ORDER_SEARCH_PATH, TOKEN_PATH

STATE_PATH = "/sandbox/state"
_FAULTS_TOKEN = frozenset({"500", "503", "429", "slow", "token_error"})
_FAULTS_SEARCH = frozenset({"500", "503", "429", "slow", "malformed_json"})
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


class SandboxShop(ShopOrders):
    """State and behaviour of the sandbox shop; thread-safe (one lock around the state).

    Its orders are a :class:`ShopOrders` (``data``, ``first_order_number``, ``order_stream``,
    ``sales_channel``, ``company_share`` and ``states`` are described there); its API client
    and tokens a :class:`ShopTokens`. ``max_limit`` / ``default_limit`` bound a search page.
    """

    client_id = Forwarded("tokens")
    client_secret = Forwarded("tokens")
    token_lifetime_s = Forwarded("tokens")
    tokens_issued = Forwarded("tokens")

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
        super().__init__(
            seed=seed,
            data=data,
            clock=clock,
            first_order_number=first_order_number,
            order_stream=order_stream,
            sales_channel=sales_channel,
            company_share=company_share,
            states=states,
        )
        self.tokens = ShopTokens(
            client_id=client_id,
            client_secret=client_secret,
            token_lifetime_s=token_lifetime_s,
            token_rate_limit=token_rate_limit,
            token_rate_window_s=token_rate_window_s,
        )
        self.max_limit = max_limit
        self.default_limit = default_limit
        self.faults = faults or FaultPlan(seed=seed)
        #: Requests per endpoint ("token", "search", ...), whatever their outcome.
        self.calls: Counter[str] = Counter()
        self._matches = MatchCache()
        #: Answer from the bulk index and splice answers from ready texts where the criteria
        #: allow; False = always the general path (tests compare the two).
        self.fast_search = True
        #: ``PATCH /api/order/{id}``: tags, writes taken, the refusal hook (:mod:`.shop_writes`).
        self.writes = OrderWrites()

    @classmethod
    def b2b(cls, **options: Any) -> SandboxShop:
        """The second example shop, a B2B storefront; ``options`` override :data:`B2B_SHOP_OPTIONS`.

        Same catalogue and customers as the first shop (pass the same ``data``), so the shared
        ERP knows its items; another order stream, numbers from 50001, sales channel id
        ``stable_id("sales_channel", "b2b")``, ~85 % company customers, mixed states.
        """
        return cls(**{**B2B_SHOP_OPTIONS, **options})

    @property
    def token_calls(self) -> int:
        return self.calls["token"]

    def state(self) -> dict[str, Any]:
        with self._lock:
            return {
                "orders": len(self.orders) + self.bulk_count,
                "tokens_issued": self.tokens.tokens_issued,
                "calls": dict(self.calls),
                "faults_injected": dict(self.faults.injected),
                # Orders a route wrote back to (their ERP number), and the writes taken.
                "orders_written": len({order for order, _ in self.writes.log}),
                "writes": len(self.writes.log),
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
        if request.method == "PATCH" and request.path.startswith(ORDER_PATH_PREFIX):
            return self._write_order(request)
        detail = f'No route found for "{request.method} {request.path}"'
        return shop_error(404, "Not Found", detail, "FRAMEWORK__ROUTE_NOT_FOUND")

    def internal_error(self, message: str) -> Response:
        return shop_error(500, "Internal Server Error", message)

    def _token(self, request: Request) -> Response:
        with self._lock:
            self.calls["token"] += 1
        fault = self.faults.take(request.method, request.path, _FAULTS_TOKEN)
        if fault is not None and (answer := fault_answer(fault)) is not None:
            return answer
        with self._lock:
            limited = self.tokens.admit(self.clock())
        if limited is not None:
            return limited
        refused = self.tokens.refuse(request)
        if refused is not None:
            return refused
        with self._lock:
            return self.tokens.issue(self.clock())

    def _write_order(self, request: Request) -> Response:
        with self._lock:
            self.calls["order_write"] += 1
            unauthorised = self.tokens.unauthorised(request.bearer(), self.clock())
        if unauthorised is not None:
            headers = {"WWW-Authenticate": "Bearer"}
            return shop_error(401, "Unauthorized", unauthorised, "9", headers)
        fault = self.faults.take(request.method, request.path, FAULTS_WRITE)
        if fault is not None and (answer := fault_answer(fault)) is not None:
            return answer
        with self._lock:
            answer = self.writes.apply(self.orders, request, f"http://{request.host}")
            self._version += 1  # searches show the change
            return answer

    def _search(self, request: Request) -> Response:
        with self._lock:
            self.calls["search"] += 1
            unauthorised = self.tokens.unauthorised(request.bearer(), self.clock())
        if unauthorised is not None:
            headers = {"WWW-Authenticate": "Bearer"}
            return shop_error(401, "Unauthorized", unauthorised, "9", headers)
        fault = self.faults.take(request.method, request.path, _FAULTS_SEARCH)
        if fault is not None and (answer := fault_answer(fault)) is not None:
            return answer
        try:
            criteria = parse_criteria(request.body, self.max_limit, self.default_limit)
        except BadCriteria as bad:
            return shop_error(400, "Bad Request", bad.detail, bad.code)
        orders, bulk, version = self._searchable()
        fast = self.fast_search
        matched, page = find_page(
            criteria, request.body, orders, bulk, version, self._matches, indexed=fast
        )
        if fault is not None and fault.kind == "malformed_json":
            return Response(200, b'{"total": 1, "data": [{"id": "0f')  # cut off mid-body
        return Response(
            200, answer_bytes(criteria, matched, page, bulk, self._verbatim, splice=fast)
        )
