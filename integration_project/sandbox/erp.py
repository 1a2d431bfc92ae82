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
  :func:`compile_filter`: ``eq ne gt ge lt le``, ``and or not``, parentheses, typed literals
  ``'text'`` / ``guid'…'`` / ``datetime'…'`` / numbers, ``trim()``; text compared
  case-insensitively like Exact's SQL collation; a literal of the wrong type or anything else
  is a 400 in Exact's words), ``$select``, ``$top``, ``$expand=SalesOrderLines``, paging by 60
  with ``__next`` / ``$skiptoken``. POST creates accounts (only ``Name`` required; a ``Code``
  sent is kept, right-aligned to 18) and sales orders (only ``OrderedBy`` and lines with
  ``Item`` and ``Quantity`` required: the date, the division's currency, the item's price and
  description are filled in). ``PUT crm/Accounts(guid'…')`` updates the fields sent (204, no
  body). A GET of sales orders gives their lines as a ``__deferred`` link
  (``SalesOrders(guid'…')/SalesOrderLines``, served too) unless ``$expand``-ed. ``YourRef`` is
  NOT deduplicated (the real ERP does not either), which is how tests see a route that sends
  twice.
- ``GET /api/v1/current/Me`` (no division in the path: how a client finds its
  ``CurrentDivision``) and ``hrm/Divisions`` (the division and ``other_divisions``).
- ``vat/VATCodes`` (GET, same OData options) lists the division's VAT codes (see
  :func:`_seed_vat_codes`: one sales code per rate the sandbox orders carry, 0 % codes ``ICL``
  and ``EXP``, and traps at 21 %). A sales order line's VAT comes from its ``VATCode``, else
  from its item's ``SalesVatCode`` (``21`` on every item); unknown, blocked and purchase-only
  codes are refused. Lines and header carry ``AmountFC`` / ``AmountFCExclVat`` /
  ``VATAmount`` (header ``AmountFC`` = what will be invoiced, VAT included).
- Every data call is counted against a minutely and a daily budget and announces both in the
  ``X-RateLimit-*`` headers (reset in epoch milliseconds); over budget -> 429.
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
"""

from __future__ import annotations

import dataclasses
import functools
import hmac
import math
import random
import re
import secrets
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from integration_project.exact.models import (
    ACCOUNTS,
    DIVISIONS,
    ITEMS,
    MAX_VAT_CODE,
    ME,
    MIN_REFRESH_INTERVAL_S,
    SALES_ORDER_LINES,
    SALES_ORDERS,
    TOKEN_PATH,
    VAT_CODES,
    AccountCreate,
    RateLimit,
    SalesOrderCreate,
    SalesOrderLineRef,
    SalesOrderRef,
    TokenResponse,
    VatCode,
    account_code,
    error_body,
    oauth_error_body,
)
from integration_project.sandbox.common import Clock, Request, Response, system_clock
from integration_project.sandbox.data import ORDER_TAX_RATES, VAT_RATES, SandboxData
from integration_project.sandbox.faults import FaultPlan, Injection
from integration_project.settings import (
    CURRENCIES,
    DISCOUNT_ITEM_CODE,
    ISO_COUNTRIES,
    SANDBOX_ERP_CLIENT_ID,
    SANDBOX_ERP_CLIENT_SECRET,
    SANDBOX_ERP_DIVISION,
    SANDBOX_ERP_REFRESH_TOKEN,
    SHIPPING_ITEM_CODE,
)

STATE_PATH = "/sandbox/state"
#: Receives alert webhooks (no auth), so the run-failure sensor can be tried out locally.
WEBHOOK_PATH = "/sandbox/webhook"
_DATA_PATH = re.compile(r"^/api/v1/([^/]+)/(.+)$")
#: ``crm/Accounts(guid'…')`` (one entity) and ``salesorder/SalesOrders(guid'…')/SalesOrderLines``
#: (a navigation property: the ``__deferred`` link of an order's lines).
_ENTITY_PATH = re.compile(r"^([A-Za-z]+/[A-Za-z]+)\(guid'([0-9a-fA-F-]{36})'\)(?:/([A-Za-z]+))?$")
_SKIPTOKEN = re.compile(r"^(?:guid)?'?([0-9a-fA-F-]{36})'?$")
_QUERY_OPTIONS = frozenset({"$filter", "$select", "$top", "$skiptoken", "$expand"})
_FAULTS_TOKEN = frozenset({"500", "503", "429", "slow", "token_error", "token_lost"})
_FAULTS_DATA = frozenset({"500", "503", "429", "slow"})


def _fields(*models: type[BaseModel], extra: str = "") -> frozenset[str]:
    return frozenset(name for m in models for name in m.model_fields) | frozenset(extra.split())


#: resource -> (key field, OData type name, fields a client may $filter / $select on)
RESOURCES: dict[str, tuple[str, str, frozenset[str]]] = {
    # Read-only: who the token belongs to (``GET /api/v1/current/Me``), and their divisions.
    ME: (
        "UserID",
        "Exact.Web.Api.System.Me",
        frozenset({"UserID", "CurrentDivision", "FullName", "UserName", "Email"}),
    ),
    DIVISIONS: (
        "Code",
        "Exact.Web.Api.Models.HRM.Division",
        frozenset({"Code", "Description", "Currency", "Country"}),
    ),
    ACCOUNTS: ("ID", "Exact.Web.Api.Models.Account", _fields(AccountCreate, extra="ID Code")),
    ITEMS: (
        "ID",
        "Exact.Web.Api.Models.Item",
        frozenset({"ID", "Code", "Description", "Unit", "SalesVatCode"}),
    ),
    SALES_ORDERS: (
        "OrderID",
        "Exact.Web.Api.Models.SalesOrder",
        _fields(
            SalesOrderCreate,
            SalesOrderRef,
            extra="OrderedByName Status AmountFC AmountFCExclVat VATAmount Created",
        ),
    ),
    VAT_CODES: ("ID", "Exact.Web.Api.Models.VATCode", _fields(VatCode, extra="ID")),
    # Read-only here: lines are created with their order.
    SALES_ORDER_LINES: (
        "ID",
        "Exact.Web.Api.Models.SalesOrderLine",
        _fields(
            SalesOrderLineRef,
            extra="ID LineNumber ItemCode Description VATAmount VATPercentage AmountFC "
            "AmountFCExclVat",
        ),
    ),
}

_G, _I, _D, _T, _B = "Edm.Guid", "Edm.Int32", "Edm.Double", "Edm.DateTime", "Edm.Boolean"
#: resource -> field -> Edm type (fields not named here are Edm.String), for ``$filter``.
FIELD_TYPES: dict[str, dict[str, str]] = {
    ME: {"UserID": _G, "CurrentDivision": _I},
    DIVISIONS: {"Code": _I},
    ACCOUNTS: {"ID": _G},
    ITEMS: {"ID": _G},
    SALES_ORDERS: {
        "OrderID": _G, "OrderedBy": _G, "OrderNumber": _I, "Status": _I, "AmountFC": _D,
        "AmountFCExclVat": _D, "VATAmount": _D, "OrderDate": _T, "Created": _T,
    },
    SALES_ORDER_LINES: {
        "ID": _G, "OrderID": _G, "Item": _G, "LineNumber": _I, "Quantity": _D, "NetPrice": _D,
        "VATAmount": _D, "VATPercentage": _D, "AmountFC": _D, "AmountFCExclVat": _D,
    },
    VAT_CODES: {"ID": _G, "Percentage": _D, "IsBlocked": _B},
}  # fmt: skip


def field_types(resource: str) -> dict[str, str]:
    """Every filterable field of ``resource`` with its Edm type."""
    typed = FIELD_TYPES.get(resource, {})
    return {name: typed.get(name, "Edm.String") for name in RESOURCES[resource][2]}


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="allow")


class _AccountPost(_Lenient):
    """What Exact requires to create an account: a ``Name``. ``Email`` and ``Country`` are
    optional (ossobv's ``ExactCustomer`` sends neither; its sample account has ``'Email':
    None``); a ``Code`` sent is kept, right-aligned."""

    Name: str
    Email: str | None = None
    Country: str | None = None
    Status: str = "C"
    Code: str | None = None


class _SalesOrderLinePost(_Lenient):
    Item: str
    Quantity: float
    NetPrice: float | None = None  # None: the item's sales price
    Description: str | None = None  # None: the item's description
    VATCode: str | None = Field(default=None, max_length=MAX_VAT_CODE)


class _SalesOrderPost(_Lenient):
    """What Exact requires to create a sales order: ``OrderedBy`` and ``SalesOrderLines`` (each
    with ``Item`` and ``Quantity``); it fills the rest (``OrderDate`` today, the division's
    currency, the item's price and description)."""

    OrderedBy: str
    SalesOrderLines: list[_SalesOrderLinePost] = Field(min_length=1)
    YourRef: str | None = None
    OrderDate: str | None = None
    Description: str | None = None
    Currency: str | None = None


def _rate_code(rate: float) -> str:
    """The sandbox division's sales code for a rate in percent: 19 -> "19", 5.5 -> "55"."""
    return f"{rate:g}".replace(".", "")


#: Rate in percent -> the division's usable sales VAT code (VATTransactionType S or B, Type E
#: = "excluding": prices exclude VAT, not blocked): one for every rate the sandbox's orders
#: carry. Exact's ``Type``: E excluding, I including, N no VAT, B 0 % (only the base amount).
SALES_VAT_CODES: dict[float, str] = {rate: _rate_code(rate) for rate in ORDER_TAX_RATES}
#: 0 % codes: intra-community supply to a business with a VAT id (reverse charge), and export
#: outside the EU.
INTRA_EU_VAT_CODE = "ICL"
EXPORT_VAT_CODE = "EXP"
#: Every item's SalesVatCode, as a Dutch division sets it (the NL high rate): a sales order line
#: that names no VATCode is charged 21 %.
ITEM_SALES_VAT_CODE = "21"
#: Codes at 21 % a mapping must not pick: purchases only, blocked, VAT-inclusive. Listed before
#: the good "21", so choosing "the first code at 21 %" picks a trap.
VAT_CODE_TRAPS = {"21P": "purchases only", "21O": "blocked", "21I": "VAT-inclusive"}


def _seed_vat_codes() -> list[dict[str, Any]]:
    """The division's VAT codes (``vat/VATCodes`` rows without ``ID``), in listing order."""

    def code(code: str, description: str, rate: float, kind: str, **more: Any) -> dict[str, Any]:
        row = {
            "Code": code.ljust(3),  # Exact pads codes with spaces to three characters
            "Description": description,
            "Percentage": rate,
            "VATTransactionType": kind,
            "IsBlocked": False,
            "Type": "E",
        }
        return {**row, **more}

    rows = [
        code("21P", "BTW 21% inkoop (purchases)", 0.21, "P"),
        code("21O", "BTW 21% oud (blocked)", 0.21, "S", IsBlocked=True),
        code("21I", "BTW 21% inclusief (VAT included)", 0.21, "S", Type="I"),
    ]
    for rate, sales_code in SALES_VAT_CODES.items():
        # The home codes serve purchases too (B), the one-stop-shop ones sales only (S).
        kind = "B" if rate in (9.0, 21.0) else "S"
        rows.append(code(sales_code, f"VAT {rate:g}% sales", _fraction(rate), kind))
    rows += [
        code(INTRA_EU_VAT_CODE, "0% intra-EU supply (reverse charge)", 0.0, "S", Type="B"),
        code(EXPORT_VAT_CODE, "0% export outside the EU", 0.0, "S", Type="N"),
    ]
    return rows


def _fraction(rate: float) -> float:
    """19.0 -> 0.19, 5.5 -> 0.055, 25.5 -> 0.255 (no binary noise)."""
    return float(Decimal(str(rate)) / 100)


_CENT = Decimal("0.01")


def _cents(value: Decimal) -> Decimal:
    return value.quantize(_CENT, rounding=ROUND_HALF_UP)


@dataclasses.dataclass(frozen=True)
class Invoice:
    """What the ERP will invoice for one sales order (in the order's currency)."""

    total: Decimal  # incl. VAT (the order's AmountFC)
    excl_vat: Decimal  # AmountFCExclVat
    vat: Decimal  # VATAmount
    lines: int


class SandboxErp:
    """State and behaviour of the sandbox ERP; thread-safe (one lock around the state)."""

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
    ) -> None:
        self.data = data or SandboxData.build(seed)
        self.clock = clock or system_clock
        self.division = str(division)
        self.client_id = client_id
        self.client_secret = client_secret
        #: The newest refresh token (rotates on every refresh).
        self.refresh_token = refresh_token
        #: The one before it: still accepted until the newest pair is first used (Exact's
        #: rule), never when ``strict_rotation``.
        self.previous_refresh_token: str | None = None
        self.strict_rotation = strict_rotation
        self._current_access: str | None = None  # the access token issued with refresh_token
        self.token_lifetime_s = token_lifetime_s
        self.min_refresh_interval_s = min_refresh_interval_s
        self.minute_limit = minute_limit
        self.day_limit = day_limit
        self.minute_window_s = minute_window_s
        self.day_window_s = 86_400.0
        self._day_anchor = 0.0  # epoch: days are UTC days
        self.page_size = page_size
        self.faults = faults or FaultPlan(seed=seed)
        #: Requests per endpoint: "token" (any outcome), and for data calls that passed auth
        #: and the rate limit: "accounts_get", "accounts_post", "items_get",
        #: "salesorders_get", "salesorders_post" (see :func:`call_key`).
        self.calls: Counter[str] = Counter()
        self.token_refreshes = 0
        self.last_refresh: datetime | None = None
        #: Every token and data answer by HTTP status (fault answers included).
        self.statuses: Counter[int] = Counter()
        self.block_after_4xx = block_after_4xx
        #: endpoint (see :func:`call_key`) -> when it answered a client error, last hour.
        self.client_errors: dict[str, list[datetime]] = {}
        #: Until when the app is blocked after too many client errors (None: not blocked).
        self.blocked_until: datetime | None = None
        #: Further divisions the same authorisation reaches (their data is the same).
        self.other_divisions: set[str] = set()
        #: The division's currency: what a sales order without ``Currency`` is in.
        self.currency = "EUR"
        #: The user the tokens belong to (``current/Me``); not drawn from the seed's stream.
        self.user_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"sandbox-erp-user:{seed}"))
        #: Item ID -> its sales price excluding VAT: the ``NetPrice`` of a line that names
        #: none (the catalogue's German gross price, less German VAT; 0 for shipping/discount).
        self.item_prices: dict[str, Decimal] = {}
        self._access_tokens: dict[str, datetime] = {}
        self._minute_start: float | None = None
        self._minute_used = 0
        self._day = -1
        self._day_used = 0
        self._rng = random.Random(f"erp:{seed}")
        self._next_order_number = 1
        self._lock = threading.RLock()

        self.items: dict[str, dict[str, Any]] = {}
        self.accounts: dict[str, dict[str, Any]] = {}
        #: Every sales order that reached the ERP, in arrival order (duplicates included).
        self.sales_orders: list[dict[str, Any]] = []
        #: The rate limits the last data call's answer announced (None before the first).
        self.last_announced: RateLimit | None = None
        #: JSON bodies POSTed to ``/sandbox/webhook`` (alerts), in arrival order.
        self.webhooks: list[Any] = []
        for product in self.data.products:
            item = self._add_item(product.sku, product.name)
            rate = Decimal(str(VAT_RATES["DE"][0 if product.tax_class == "standard" else 1]))
            self.item_prices[item["ID"]] = _cents(Decimal(str(product.price)) / (1 + rate / 100))
        self._add_item(SHIPPING_ITEM_CODE, "Versandkosten / Shipping")
        self._add_item(DISCOUNT_ITEM_CODE, "Rabatt / Discount")
        for customer in self.data.customers:
            if customer.in_erp:
                self._add_account(customer.name, customer.email, customer.country, "C")
        #: The division's VAT codes (``vat/VATCodes``), keyed by ID, in listing order.
        self.vat_codes: dict[str, dict[str, Any]] = {}
        for row in _seed_vat_codes():  # after items and accounts: their IDs stay as they were
            row = {"ID": self._guid(), **row}
            self.vat_codes[row["ID"]] = row

    # --- for tests ---------------------------------------------------------------------

    @property
    def token_calls(self) -> int:
        return self.calls["token"]

    def orders_with_ref(self, your_ref: str) -> list[dict[str, Any]]:
        with self._lock:
            return [o for o in self.sales_orders if o["YourRef"] == your_ref]

    def duplicate_refs(self) -> dict[str, int]:
        """``YourRef`` values that reached the ERP more than once (should stay empty)."""
        with self._lock:
            counts = Counter(o["YourRef"] for o in self.sales_orders if o["YourRef"] is not None)
        return {ref: n for ref, n in counts.items() if n > 1}

    def account_by_email(self, email: str) -> dict[str, Any] | None:
        with self._lock:
            return next((a for a in self.accounts.values() if _eq(a["Email"], email)), None)

    def accounts_by_email(self, email: str) -> list[dict[str, Any]]:
        with self._lock:
            return [a for a in self.accounts.values() if _eq(a["Email"], email)]

    def add_account(
        self, name: str, email: str, country: str = "NL", *, code: str | None = None
    ) -> dict[str, Any]:
        """An account made by hand in the division (as a bookkeeper would): e.g. a second
        account with an e-mail another account already has. ``code`` is right-aligned."""
        with self._lock:
            return self._add_account(
                name, email, country, "C", code=None if code is None else account_code(code)
            )

    def item_by_code(self, code: str) -> dict[str, Any] | None:
        with self._lock:
            return next((i for i in self.items.values() if i["Code"] == code), None)

    def vat_code(self, code: str) -> dict[str, Any] | None:
        """The VAT code row with this ``Code`` (exact match), or None."""
        with self._lock:
            wanted = code.strip()
            return next((v for v in self.vat_codes.values() if v["Code"].strip() == wanted), None)

    def invoices(self) -> dict[str, Invoice]:
        """``YourRef`` -> what the ERP will invoice for it (the first order with that ref)."""
        with self._lock:
            out: dict[str, Invoice] = {}
            for order in self.sales_orders:
                if order["YourRef"] is not None and order["YourRef"] not in out:
                    out[order["YourRef"]] = Invoice(
                        total=Decimal(str(order["AmountFC"])),
                        excl_vat=Decimal(str(order["AmountFCExclVat"])),
                        vat=Decimal(str(order["VATAmount"])),
                        lines=len(order["SalesOrderLines"]),
                    )
            return out

    def invoice_total(self, your_ref: str) -> Decimal:
        """What the ERP will invoice (incl. VAT) for the order sent as ``your_ref``.
        KeyError if none reached the ERP."""
        return self.invoices()[your_ref].total

    def revoke_access_tokens(self) -> None:
        """Invalidate every access token (as when Exact revokes a grant); refresh still works."""
        with self._lock:
            self._access_tokens.clear()

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
        with self._lock:
            self.minute_limit = self.minute_limit if per_minute is None else per_minute
            self.day_limit = self.day_limit if per_day is None else per_day
            if minute_window_s is not None:
                self.minute_window_s = minute_window_s
            if day_window_s is not None:
                # A shortened "day" starts now (a real one at midnight UTC).
                self.day_window_s = day_window_s
                self._day_anchor, self._day = self.clock().timestamp(), -1
            self._minute_start, self._minute_used, self._day_used = None, 0, 0

    def rate_limit(self) -> RateLimit:
        """The budget as the next response would announce it (consumes nothing)."""
        with self._lock:
            return self._budget(consume=False)[1]

    def state(self) -> dict[str, Any]:
        with self._lock:
            orders = [
                {
                    **{k: o.get(k) for k in ("OrderID", "OrderNumber", "YourRef", "OrderedBy")},
                    **{k: o.get(k) for k in ("OrderDate", "Currency", "AmountFC", "Created")},
                    **{k: o.get(k) for k in ("AmountFCExclVat", "VATAmount")},
                    "lines": [
                        {k: line[k] for k in _STATE_LINE_FIELDS} for line in o["SalesOrderLines"]
                    ],
                }
                for o in self.sales_orders
            ]
            return {
                "division": self.division,
                "sales_orders": orders,
                "accounts": len(self.accounts),
                "items": len(self.items),
                "vat_codes": len(self.vat_codes),
                "calls": dict(self.calls),
                "token_refreshes": self.token_refreshes,
                "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
                "blocked_until": self.blocked_until.isoformat() if self.blocked_until else None,
                "rate_limit": self._budget(consume=False)[1].to_headers(),
                "faults_injected": dict(self.faults.injected),
                "webhooks": len(self.webhooks),
            }

    # --- HTTP ------------------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        if (request.method, request.path) == ("POST", TOKEN_PATH):
            return self._token(request)
        if (request.method, request.path) == ("GET", STATE_PATH):
            return Response(200, self.state())
        if (request.method, request.path) == ("POST", WEBHOOK_PATH):
            return self._webhook(request)
        if match := _DATA_PATH.match(request.path):
            division, resource = match.group(1), unquote(match.group(2))
            if (division, resource) == ("current", "Me"):
                resource = ME
            response = self._data(request, division, resource)
            self._count(response, call_key(request.method, _endpoint(resource)))
            return response
        return Response(404, error_body(f"Not found: {request.method} {request.path}"))

    def _count(self, response: Response, endpoint: str) -> None:
        """Tally the answer; the tenth client error on an endpoint within an hour blocks.
        401s count (as at Exact); 429s are the rate limit's, not errors."""
        with self._lock:
            self.statuses[response.status] += 1
            if not 400 <= response.status < 500 or response.status == 429:
                return
            if self._block_message() is not None:
                return  # the block's own 403s do not extend it
            now = self.clock()
            recent = [t for t in self.client_errors.get(endpoint, []) if t > now - _HOUR]
            recent.append(now)
            self.client_errors[endpoint] = recent
            if self.block_after_4xx is not None and len(recent) >= self.block_after_4xx:
                self.blocked_until = now + _HOUR

    def internal_error(self, message: str) -> Response:
        return Response(500, error_body(message))

    def _webhook(self, request: Request) -> Response:
        try:
            body = request.json()
        except ValueError:
            return Response(400, error_body("The request body is not valid JSON"))
        with self._lock:
            self.webhooks.append(body)
        return Response(200, {"ok": True})

    def _block_message(self) -> str | None:
        """Why the app is blocked, or None (a lapsed block is lifted). Hold the lock."""
        if self.blocked_until is None:
            return None
        if self.clock() < self.blocked_until:
            return (
                "Forbidden: this app is blocked until "
                f"{self.blocked_until.isoformat()} after too many errors within an hour"
            )
        self.blocked_until, self.client_errors = None, {}
        return None

    def _token(self, request: Request) -> Response:
        with self._lock:
            blocked = self._block_message()
            if blocked is not None:
                self.calls["token"] += 1
        if blocked is not None:
            response = _oauth_error(403, "access_denied", blocked)
        else:
            response = _oauth_form(self._token_answer(request))
        self._count(response, TOKEN_CALL_KEY)
        return response

    def _token_answer(self, request: Request) -> Response:
        with self._lock:
            self.calls["token"] += 1
        fault = self.faults.take(request.method, request.path, _FAULTS_TOKEN)
        if fault is not None and (answer := self._fault_answer(fault)) is not None:
            return answer
        response = self._refresh(request)
        if fault is not None and fault.kind == "token_lost" and response.status == 200:
            time.sleep(fault.seconds)  # rotated; the client may be killed while it waits
            if fault.mode == "drop":
                return Response(0, drop=True)
            message = "Gateway Timeout: the request was processed, but the answer was lost"
            return Response(504, error_body(message))
        return response

    def _refresh(self, request: Request) -> Response:
        form = dict(parse_qsl(request.body.decode("utf-8", "replace")))
        if form.get("grant_type") != "refresh_token":
            return _oauth_error(400, "unsupported_grant_type", "grant_type must be refresh_token")
        if not all(form.get(k) for k in ("refresh_token", "client_id", "client_secret")):
            detail = "refresh_token, client_id and client_secret are required (form-encoded)"
            return _oauth_error(400, "invalid_request", detail)
        if not (
            hmac.compare_digest(form["client_id"], self.client_id)
            and hmac.compare_digest(form["client_secret"], self.client_secret)
        ):
            return _oauth_error(401, "invalid_client", "Unknown client_id or wrong client_secret")
        with self._lock:
            now = self.clock()
            given = form["refresh_token"]
            is_current = hmac.compare_digest(given, self.refresh_token)
            is_previous = (
                not self.strict_rotation
                and self.previous_refresh_token is not None
                and hmac.compare_digest(given, self.previous_refresh_token)
            )
            if not (is_current or is_previous):
                detail = "The refresh token is invalid, expired or already used"
                return _oauth_error(400, "invalid_grant", detail)
            if self.last_refresh is not None:
                earliest = self.last_refresh + timedelta(seconds=self.min_refresh_interval_s)
                if now < earliest:
                    # Exact's own words, with the reason in a header (see reference/).
                    detail = "Rate limit exceeded: access_token not expired"
                    refused = _oauth_error(400, "access_denied", detail)
                    after = f"TooEarlyToRefreshTokens: refresh after {earliest.isoformat()}"
                    refused.headers = {"Reason": after}
                    return refused
            access = secrets.token_urlsafe(32)
            self._access_tokens = {t: e for t, e in self._access_tokens.items() if e > now}
            self._access_tokens[access] = now + timedelta(seconds=self.token_lifetime_s)
            # Using the newest refresh token ends the grace of every older one; re-using the
            # previous one (the newest pair was never used: its answer was lost) keeps it.
            self.previous_refresh_token = given
            self.refresh_token = secrets.token_urlsafe(32)
            self._current_access = access
            self.last_refresh = now
            self.token_refreshes += 1
            answer = TokenResponse(
                access_token=access,
                token_type="Bearer",
                expires_in=str(self.token_lifetime_s),
                refresh_token=self.refresh_token,
            )
        return Response(200, answer.model_dump())

    def _data(self, request: Request, division: str, resource: str) -> Response:
        endpoint = _endpoint(resource)
        with self._lock:
            token = request.bearer()
            expiry = self._access_tokens.get(token) if token else None
            if expiry is None or expiry <= self.clock():
                message = "Unauthorized: the access token is missing, unknown or expired"
                return Response(401, error_body(message), {"WWW-Authenticate": "Bearer"})
            if token == self._current_access:
                self.previous_refresh_token = None  # the newest pair is in use: older ones die
            if (blocked := self._block_message()) is not None:
                return Response(403, error_body(blocked))
            # current/Me names no division: it is how a client finds one.
            known = division == self.division or division in self.other_divisions
            if resource != ME and not known:
                return Response(403, error_body(f"Forbidden: no access to division {division}"))
            allowed, budget = self._budget(consume=True)
            if allowed:
                self.calls[call_key(request.method, endpoint)] += 1
        headers = budget.to_headers()
        self.last_announced = budget  # what the client was last told (tests compare with it)
        if not allowed:
            message = "Too many requests: the API rate limit of this division is used up"
            return Response(429, error_body(message), headers)
        kinds = _FAULTS_DATA | ({"lost_after_commit"} if request.method == "POST" else set())
        fault = self.faults.take(request.method, request.path, kinds)
        if fault is not None and (answer := self._fault_answer(fault, budget)) is not None:
            answer.headers = {**headers, **answer.headers}
            return answer
        response = self._resource(request, division, resource)
        if fault is not None and fault.kind == "lost_after_commit":
            if fault.mode == "drop":
                return Response(0, drop=True)
            message = "Gateway Timeout: the request was processed, but the answer was lost"
            response = Response(504, error_body(message))
        response.headers = {**headers, **response.headers}
        return response

    def _resource(self, request: Request, division: str, resource: str) -> Response:
        if entity := _ENTITY_PATH.match(resource):
            name, key, nav = entity.group(1), entity.group(2).lower(), entity.group(3)
            return self._entity(request, division, name, key, nav)
        if resource not in RESOURCES:
            return Response(404, error_body(f"Resource not found: {resource}"))
        if request.method == "GET":
            return self._query(request, division, resource)
        if request.method == "POST" and resource in (ACCOUNTS, SALES_ORDERS):
            try:
                body = request.json()
            except ValueError:
                return Response(400, error_body("The request body is not valid JSON"))
            if resource == ACCOUNTS:
                return self._create_account(request, division, body)
            return self._create_sales_order(request, division, body)
        return Response(405, error_body(f"Method not allowed: {request.method} {resource}"))

    def _entity(
        self, request: Request, division: str, resource: str, key: str, nav: str | None
    ) -> Response:
        """``resource(guid'key')`` and its navigation ``…/SalesOrderLines``."""
        where = f"{resource}(guid'{key}')" + (f"/{nav}" if nav else "")
        if resource not in RESOURCES:
            return Response(404, error_body(f"Resource not found: {resource}"))
        if nav is not None:
            if (resource, nav) != (SALES_ORDERS, "SalesOrderLines"):
                return Response(404, error_body(f"Resource not found: {where}"))
            if request.method != "GET":
                return Response(405, error_body(f"Method not allowed: {request.method} {where}"))
            with self._lock:
                order = next((o for o in self.sales_orders if o["OrderID"] == key), None)
                lines = [] if order is None else self._lines_of(order)
            if order is None:
                return Response(404, error_body(f"Sales order {key} does not exist: {where}"))
            return self._query(request, division, SALES_ORDER_LINES, rows=lines)
        if request.method == "PUT" and resource == ACCOUNTS:
            return self._update_account(request, key)
        if request.method == "GET":
            # Clients filter instead (ossobv, picqer: ``$filter=ID eq guid'…'``); not modelled.
            message = f"Not implemented in the sandbox: GET {where}; use $filter=ID eq guid'…'"
            return Response(501, error_body(message))
        return Response(405, error_body(f"Method not allowed: {request.method} {where}"))

    def _query(
        self,
        request: Request,
        division: str,
        resource: str,
        rows: list[dict[str, Any]] | None = None,
    ) -> Response:
        key, type_name, fields = RESOURCES[resource]
        unknown = {p for p in request.query if p.startswith("$")} - _QUERY_OPTIONS
        if unknown:
            return Response(400, error_body(f"Query option not supported: {sorted(unknown)}"))
        if rows is None:
            with self._lock:
                rows = list(self._collection(resource))
        if expression := request.param("$filter"):
            try:
                matches = compile_filter(expression, field_types(resource), type_name)
            except FilterError as exc:
                return Response(400, error_body(str(exc)))
            rows = [row for row in rows if matches(row)]
        select = [f.strip() for f in (request.param("$select") or "").split(",") if f.strip()]
        if missing := [f for f in select if f not in fields and f != "*"]:
            return Response(400, error_body(f"Property '{missing[0]}' does not exist"))
        expand = [f.strip() for f in (request.param("$expand") or "").split(",") if f.strip()]
        if bad := [e for e in expand if (resource, e) != (SALES_ORDERS, "SalesOrderLines")]:
            message = f"'{bad[0]}' is not a navigation property of type '{type_name}'"
            return Response(400, error_body(message))
        if skiptoken := request.param("$skiptoken"):
            match = _SKIPTOKEN.match(skiptoken)
            keys = [str(row[key]) for row in rows]
            if not match or match.group(1).lower() not in keys:
                return Response(400, error_body(f"Invalid $skiptoken: {skiptoken}"))
            rows = rows[keys.index(match.group(1).lower()) + 1 :]
        top = request.param("$top")
        if top is not None and not top.isdigit():
            return Response(400, error_body(f"Invalid $top: {top}"))
        page = rows[: min(int(top), self.page_size) if top else self.page_size]
        render = functools.partial(
            self._render, request, division, resource, select=select, expand_lines=bool(expand)
        )
        body: dict[str, Any] = {"results": [render(row) for row in page]}
        if top is None and len(rows) > len(page):
            query = {k: v[0] for k, v in request.query.items() if k != "$skiptoken"}
            query["$skiptoken"] = f"guid'{page[-1][key]}'"
            encoded = urlencode(query, quote_via=quote, safe="$',=")
            body["__next"] = f"http://{request.host}{request.path}?{encoded}"
        return Response(200, {"d": body})

    def _create_account(self, request: Request, division: str, body: Any) -> Response:
        try:
            account = _AccountPost.model_validate(body)
        except ValidationError as exc:
            return Response(400, error_body(_validation_message(exc)))
        problems = [] if account.Name.strip() else ["Name: Mandatory"]
        country = (account.Country or "").strip() or None  # Exact pads codes: 'NL '
        if country is not None and country not in ISO_COUNTRIES:
            problems.append(f"Country: '{account.Country}' is not a known country code")
        code = None
        if account.Code is not None:
            try:
                code = account_code(account.Code)  # kept as sent, right-aligned like Exact's
            except ValueError:
                problems.append(f"Code: '{account.Code}' is not a valid code")
        if problems:
            return Response(400, error_body("; ".join(problems)))
        with self._lock:
            if code is not None and any(a["Code"] == code for a in self.accounts.values()):
                return Response(400, error_body(f"Code: '{code.strip()}' already exists"))
            row = self._add_account(account.Name, account.Email, country, account.Status, code=code)
            row.update({k: v for k, v in account.model_dump().items() if k not in row})
        return self._created(request, division, ACCOUNTS, row)

    def _update_account(self, request: Request, key: str) -> Response:
        """``PUT crm/Accounts(guid'…')``: the fields sent replace the stored ones (the rest stay,
        as ossobv's ``relations.update(guid, {'Name': …})`` relies on); 204 without a body."""
        try:
            body = request.json()
        except ValueError:
            return Response(400, error_body("The request body is not valid JSON"))
        if not isinstance(body, dict):
            return Response(400, error_body("The request body is not a JSON object"))
        changes = {k: v for k, v in body.items() if k not in ("ID", "__metadata")}
        problems = []
        if "Name" in changes and not str(changes["Name"] or "").strip():
            problems.append("Name: Mandatory")
        if "Country" in changes:
            country = str(changes["Country"] or "").strip() or None
            if country is not None and country not in ISO_COUNTRIES:
                problems.append(f"Country: '{changes['Country']}' is not a known country code")
            changes["Country"] = country
        if "Code" in changes:
            try:
                changes["Code"] = account_code(str(changes["Code"] or ""))
            except ValueError:
                problems.append(f"Code: '{changes['Code']}' is not a valid code")
        with self._lock:
            row = self.accounts.get(key)
            if row is None:
                return Response(404, error_body(f"Account {key} does not exist"))
            code = changes.get("Code")
            taken = any(a["Code"] == code for a in self.accounts.values() if a is not row)
            if not problems and code is not None and taken:
                problems.append(f"Code: '{code.strip()}' already exists")
            if problems:
                return Response(400, error_body("; ".join(problems)))
            row.update(changes)
        return Response(204)

    def _create_sales_order(self, request: Request, division: str, body: Any) -> Response:
        try:
            order = _SalesOrderPost.model_validate(body)
        except ValidationError as exc:
            return Response(400, error_body(_validation_message(exc)))
        with self._lock:
            problems = []
            if order.OrderedBy.lower() not in self.accounts:
                problems.append(f"OrderedBy: account {order.OrderedBy} does not exist")
            currency = order.Currency if order.Currency is not None else self.currency
            if currency not in CURRENCIES:
                problems.append(f"Currency: '{order.Currency}' is not a known currency")
            vat_codes = {v["Code"].strip(): v for v in self.vat_codes.values()}
            line_vat: list[dict[str, Any]] = []
            for n, line in enumerate(order.SalesOrderLines, start=1):
                item = self.items.get(line.Item.lower())
                if item is None:
                    problems.append(f"SalesOrderLines[{n}].Item: item {line.Item} does not exist")
                if not line.Quantity > 0:
                    problems.append(f"SalesOrderLines[{n}].Quantity: must be greater than 0")
                named = (line.VATCode or "").strip()
                code = named or (item["SalesVatCode"] if item is not None else "")
                vat = vat_codes.get(code)
                where = f"SalesOrderLines[{n}].VATCode"
                if item is None and not named:
                    pass  # the item's code is unknown; its error says enough
                elif vat is None:
                    problems.append(f"{where}: VAT code '{code}' does not exist")
                elif vat["IsBlocked"]:
                    problems.append(f"{where}: VAT code '{code}' is blocked")
                elif vat["VATTransactionType"] not in ("S", "B"):
                    problems.append(
                        f"{where}: VAT code '{code}' is a purchase VAT code; "
                        "a sales order needs a sales VAT code"
                    )
                else:
                    line_vat.append(vat)
            if problems:
                return Response(400, error_body("; ".join(problems)))
            lines = []
            for n, (line, vat) in enumerate(
                zip(order.SalesOrderLines, line_vat, strict=True), start=1
            ):
                item = self.items[line.Item.lower()]
                # Exact fills what the line leaves out from the item.
                price = line.NetPrice
                if price is None:
                    price = float(self.item_prices.get(item["ID"], Decimal(0)))
                lines.append(
                    {
                        **line.model_dump(),
                        "NetPrice": price,
                        "Description": (
                            item["Description"] if line.Description is None else line.Description
                        ),
                        "ID": self._guid(),
                        "LineNumber": n,
                        "Item": item["ID"],
                        "ItemCode": item["Code"],
                        **_line_amounts(line.Quantity, price, vat),
                    }
                )
            excl = sum((Decimal(str(line["AmountFCExclVat"])) for line in lines), Decimal(0))
            vat_total = sum((Decimal(str(line["VATAmount"])) for line in lines), Decimal(0))
            row = {
                **order.model_dump(),
                "OrderID": self._guid(),
                "OrderNumber": self._next_order_number,
                "OrderedBy": order.OrderedBy.lower(),
                "OrderedByName": self.accounts[order.OrderedBy.lower()]["Name"],
                # Exact's defaults: today's date, the division's currency.
                "OrderDate": order.OrderDate or self.clock().date().isoformat(),
                "Currency": currency,
                "Status": 12,  # open
                "AmountFC": float(excl + vat_total),  # what will be invoiced, VAT included
                "AmountFCExclVat": float(excl),
                "VATAmount": float(vat_total),
                "Created": self.clock().isoformat(),
                "SalesOrderLines": lines,
            }
            self._next_order_number += 1
            self.sales_orders.append(row)
        return self._created(request, division, SALES_ORDERS, row)

    # --- helpers ---------------------------------------------------------------------------

    def _budget(self, *, consume: bool) -> tuple[bool, RateLimit]:
        """Check (and maybe use) one call of the minutely and daily budgets. Hold the lock."""
        now = self.clock().timestamp()
        if self._minute_start is None or now >= self._minute_start + self.minute_window_s:
            self._minute_start, self._minute_used = now, 0
        day = math.floor((now - self._day_anchor) / self.day_window_s)
        if day != self._day:
            self._day, self._day_used = day, 0
        allowed = self._minute_used < self.minute_limit and self._day_used < self.day_limit
        if allowed and consume:
            self._minute_used += 1
            self._day_used += 1
        return allowed, RateLimit(
            daily_limit=self.day_limit,
            daily_remaining=max(0, self.day_limit - self._day_used),
            daily_reset_ms=int((self._day_anchor + (day + 1) * self.day_window_s) * 1000),
            minutely_limit=self.minute_limit,
            minutely_remaining=max(0, self.minute_limit - self._minute_used),
            minutely_reset_ms=int((self._minute_start + self.minute_window_s) * 1000),
        )

    def _fault_answer(self, fault: Injection, budget: RateLimit | None = None) -> Response | None:
        if fault.kind == "slow":
            time.sleep(fault.seconds)
            return None
        if fault.kind == "500":
            return Response(500, error_body("Injected fault: internal server error"))
        if fault.kind in ("503", "token_error"):
            return Response(503, error_body("Injected fault: service unavailable"))
        if fault.kind == "429":
            budget = budget or self.rate_limit()
            exhausted = dataclasses.replace(budget, minutely_remaining=0)
            message = "Too many requests: the API rate limit of this division is used up"
            return Response(429, error_body(message), exhausted.to_headers())
        return None  # lost_after_commit: applied after the work is done

    def _lines_of(self, order: dict[str, Any]) -> list[dict[str, Any]]:
        """An order's lines as ``salesorder/SalesOrderLines`` rows. Hold the lock."""
        return [{**line, "OrderID": order["OrderID"]} for line in order["SalesOrderLines"]]

    def _collection(self, resource: str) -> list[dict[str, Any]]:
        if resource == ME:
            return [
                {
                    "UserID": self.user_id,
                    "CurrentDivision": int(self.division),
                    "FullName": "Sandbox ERP user",
                    "UserName": "sandbox",
                    "Email": "erp-user@sandbox.invalid",
                }
            ]
        if resource == DIVISIONS:
            return [
                {
                    "Code": int(division),
                    "Description": f"Sandbox division {division}",
                    "Currency": self.currency,
                    "Country": "NL",
                }
                for division in [self.division, *sorted(self.other_divisions)]
            ]
        if resource == SALES_ORDERS:
            return self.sales_orders
        if resource == VAT_CODES:
            return list(self.vat_codes.values())
        if resource == SALES_ORDER_LINES:
            return [line for order in self.sales_orders for line in self._lines_of(order)]
        return list((self.accounts if resource == ACCOUNTS else self.items).values())

    def _render(
        self,
        request: Request,
        division: str,
        resource: str,
        row: dict[str, Any],
        select: list[str],
        *,
        expand_lines: bool = False,
    ) -> dict[str, Any]:
        """One entity as Exact answers it. An order's ``SalesOrderLines`` is a navigation
        property: a ``__deferred`` link to its lines unless ``$expand``-ed (``expand_lines``)."""
        key, type_name, _ = RESOURCES[resource]
        is_guid = FIELD_TYPES.get(resource, {}).get(key) == _G
        literal = f"guid'{row[key]}'" if is_guid else str(row[key])
        where = resource if resource == ME else f"{division}/{resource}"
        uri = f"http://{request.host}/api/v1/{where}({literal})"
        names = list(row) if not select or "*" in select else select
        out: dict[str, Any] = {"__metadata": {"uri": uri, "type": type_name}}
        for name in names:
            value = row.get(name)
            if name == "SalesOrderLines":
                deferred = {"__deferred": {"uri": f"{uri}/SalesOrderLines"}}
                value = {"results": value} if expand_lines else deferred
            out[name] = value
        return out

    def _created(
        self, request: Request, division: str, resource: str, row: dict[str, Any]
    ) -> Response:
        """201 for a POST. The whole entity only with ``Prefer: return=representation``; without
        it, as Exact does, the fields posted (lines: their posted fields) and the key."""
        full = self._render(request, division, resource, row, [], expand_lines=True)
        if _wants_representation(request):
            return Response(201, {"d": full})
        try:
            posted = request.json()
        except ValueError:
            posted = {}
        key = RESOURCES[resource][0]
        out: dict[str, Any] = {"__metadata": full["__metadata"], key: full[key]}
        for name, value in (posted if isinstance(posted, dict) else {}).items():
            if name not in full or name == key:
                continue
            if name == "SalesOrderLines" and isinstance(value, list):
                sent = {k for line in value if isinstance(line, dict) for k in line}
                lines = [{k: v for k, v in ln.items() if k in sent} for ln in full[name]["results"]]
                out[name] = {"results": lines}
            else:
                out[name] = full[name]
        return Response(201, {"d": out})

    def _guid(self) -> str:
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    def _add_item(
        self, code: str, description: str, sales_vat_code: str = ITEM_SALES_VAT_CODE
    ) -> dict[str, Any]:
        item = {
            "ID": self._guid(),
            "Code": code,
            "Description": description,
            "Unit": "pc",
            "SalesVatCode": sales_vat_code,
        }
        self.items[item["ID"]] = item
        return item

    def _add_account(
        self,
        name: str,
        email: str | None,
        country: str | None,
        status: str,
        *,
        code: str | None = None,
    ) -> dict[str, Any]:
        if code is None:  # Exact numbers it, right-aligned to 18 characters: '             7'
            taken = {a["Code"] for a in self.accounts.values()}
            number = len(self.accounts) + 1
            while account_code(str(number)) in taken:
                number += 1
            code = account_code(str(number))
        account = {
            "ID": self._guid(),
            "Code": code,
            "Name": name,
            "Email": email,
            "Country": country,
            "Status": status,
        }
        self.accounts[account["ID"]] = account
        return account


# --- OData $filter: the subset of OData v2 that clients send to Exact ---------------------
#
# Exact evaluates ``$filter`` as OData v2 (WCF Data Services): comparisons ``eq ne gt ge lt
# le``, ``and`` / ``or`` / ``not``, parentheses, and typed literals: ``'text'`` (quotes doubled
# inside), ``guid'…'``, ``datetime'…'``, numbers, ``true`` / ``false`` / ``null``. A literal of
# the wrong type is refused, in Exact's words: ``Code eq 200184`` -> 400 "Operator 'eq'
# incompatible with operand types 'System.String' and 'System.Int32' at position 5."
# (picqer/exact-php-client#173), ``Account eq '<guid>'`` -> the same for Guid and String
# (picqer#52). ``trim(Field)`` is Exact's documented way to match a code without its padding.
# Text compares case-insensitively (Exact's SQL collation). Other functions (``substringof``,
# ``startswith`` …) exist at Exact but not here: the sandbox refuses them, naming them.

EDM_GUID, EDM_INT, EDM_DOUBLE = "Edm.Guid", "Edm.Int32", "Edm.Double"
EDM_DATETIME, EDM_BOOL, EDM_STRING, EDM_NULL = "Edm.DateTime", "Edm.Boolean", "Edm.String", "null"
_NUMERIC = frozenset({EDM_INT, EDM_DOUBLE})
_SYSTEM_TYPE = {
    EDM_GUID: "System.Guid",
    EDM_INT: "System.Int32",
    EDM_DOUBLE: "System.Double",
    EDM_DATETIME: "System.DateTime",
    EDM_BOOL: "System.Boolean",
    EDM_STRING: "System.String",
    EDM_NULL: "null",
}
_COMPARISONS = frozenset({"eq", "ne", "gt", "ge", "lt", "le"})
_FUNCTIONS = frozenset({"trim"})
_KNOWN_ELSEWHERE = frozenset(
    {"substringof", "startswith", "endswith", "indexof", "tolower", "toupper", "length",
     "substring", "replace", "concat", "year", "month", "day", "hour", "minute", "second",
     "round", "floor", "ceiling", "isof", "cast", "any", "all"}
)  # fmt: skip
_FILTER_TOKEN = re.compile(
    r"""(?P<guid>guid'(?P<guid_v>[^']*)')
      | (?P<datetime>datetime'(?P<datetime_v>[^']*)')
      | (?P<string>'(?P<string_v>(?:[^']|'')*+)')
      | (?P<number>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?[mMdDfFlL]?)(?![A-Za-z0-9_'])
      | (?P<open>\()
      | (?P<close>\))
      | (?P<comma>,)
      | (?P<name>[A-Za-z_][A-Za-z0-9_]*)""",
    re.VERBOSE,
)
_GUID_TEXT = re.compile(r"^[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")


class FilterError(ValueError):
    """A ``$filter`` Exact would refuse (400); the message names what was not understood."""


@dataclasses.dataclass(frozen=True)
class _Tok:
    kind: str  # guid datetime string number open close comma name end
    value: Any
    pos: int


def _filter_tokens(text: str) -> list[_Tok]:
    tokens: list[_Tok] = []
    pos = 0
    while pos < len(text):
        if text[pos].isspace():
            pos += 1
            continue
        match = _FILTER_TOKEN.match(text, pos)
        if match is None:
            if text[pos] == "'" or text[pos:].startswith(("guid'", "datetime'")):
                raise FilterError(f"Unterminated string literal at position {pos} in '{text}'.")
            raise FilterError(f"Syntax error: '{text[pos]}' at position {pos} in '{text}'.")
        kind = match.lastgroup or ""
        if kind.endswith("_v"):
            kind = kind[:-2]
        raw = match.group(kind)
        value: Any = raw
        if kind == "guid":
            value = match.group("guid_v")
            if not _GUID_TEXT.match(value):
                raise FilterError(f"Unrecognized 'Edm.Guid' literal '{raw}' at position {pos}.")
            value = value.lower()
        elif kind == "datetime":
            try:
                value = _naive_utc(datetime.fromisoformat(match.group("datetime_v")))
            except ValueError:
                raise FilterError(
                    f"Unrecognized 'Edm.DateTime' literal '{raw}' at position {pos}."
                ) from None
        elif kind == "string":
            value = match.group("string_v").replace("''", "'")
        elif kind == "number":
            body = raw.rstrip("mMdDfFlL")
            is_int = re.fullmatch(r"-?\d+", body) is not None and raw[-1:] not in "mMdDfF"
            value = int(body) if is_int else float(body)
        tokens.append(_Tok(kind, value, pos))
        pos = match.end()
    tokens.append(_Tok("end", None, len(text)))
    return tokens


#: A compiled filter: row -> bool (None = unknown, treated as no match).
Predicate = Any


class _FilterParser:
    """Recursive descent over :func:`_filter_tokens`; type-checks as it goes."""

    def __init__(self, text: str, types: dict[str, str], type_name: str) -> None:
        self.text = text
        self.types = types
        self.type_name = type_name
        self.tokens = _filter_tokens(text)
        self.i = 0

    def parse(self) -> Predicate:
        kind, evaluate = self._or()
        end = self._peek()
        if end.kind != "end":
            raise FilterError(
                f"Syntax error at position {end.pos} in '{self.text}': "
                f"unexpected '{self._show(end)}'."
            )
        if kind != EDM_BOOL:
            raise FilterError(f"Expression of type '{kind}' expected to be 'Edm.Boolean'.")
        return evaluate

    # -- grammar: or > and > not > comparison > operand ------------------------------------

    def _or(self) -> tuple[str, Predicate]:
        kind, left = self._and()
        while self._keyword("or"):
            pos = self._next().pos
            left = self._logical("or", pos, (kind, left), self._and())
            kind = EDM_BOOL
        return kind, left

    def _and(self) -> tuple[str, Predicate]:
        kind, left = self._not()
        while self._keyword("and"):
            pos = self._next().pos
            left = self._logical("and", pos, (kind, left), self._not())
            kind = EDM_BOOL
        return kind, left

    def _not(self) -> tuple[str, Predicate]:
        if self._keyword("not"):
            pos = self._next().pos
            kind, inner = self._not()
            if kind != EDM_BOOL:
                raise FilterError(f"Operator 'not' incompatible with operand type '{kind}' at "
                                  f"position {pos}.")  # fmt: skip
            return EDM_BOOL, lambda row: None if (v := inner(row)) is None else not v
        return self._comparison()

    def _comparison(self) -> tuple[str, Predicate]:
        left = self._operand()
        token = self._peek()
        if token.kind == "name" and token.value.lower() in _COMPARISONS:
            self._next()
            op = token.value.lower()
            right = self._operand()
            return EDM_BOOL, self._compare(op, token.pos, left, right)
        if token.kind == "name" and token.value.lower() not in ("and", "or"):
            raise FilterError(
                f"Syntax error at position {token.pos} in '{self.text}': "
                f"'{token.value}' is not an operator this filter understands "
                "(eq, ne, gt, ge, lt, le, and, or, not)."
            )
        return left

    def _operand(self) -> tuple[str, Predicate]:
        token = self._next()
        if token.kind == "open":
            inner = self._or()
            close = self._next()
            if close.kind != "close":
                raise FilterError(
                    f"Syntax error at position {close.pos} in '{self.text}': ')' expected."
                )
            return inner
        literal_kinds = {
            "guid": EDM_GUID, "datetime": EDM_DATETIME, "string": EDM_STRING,
        }  # fmt: skip
        if token.kind in literal_kinds:
            value = token.value
            return literal_kinds[token.kind], lambda row: value
        if token.kind == "number":
            value = token.value
            return (EDM_INT if isinstance(value, int) else EDM_DOUBLE), lambda row: value
        if token.kind != "name":
            raise FilterError(
                f"Syntax error at position {token.pos} in '{self.text}': "
                f"expression expected, found '{self._show(token)}'."
            )
        word = token.value
        if word in ("true", "false"):
            flag = word == "true"
            return EDM_BOOL, lambda row: flag
        if word == "null":
            return EDM_NULL, lambda row: None
        if self._peek().kind == "open":
            return self._function(token)
        if word not in self.types:
            raise FilterError(
                f"No property '{word}' exists in type '{self.type_name}' at position {token.pos}."
            )
        kind = self.types[word]
        return kind, lambda row: _field_value(row.get(word), kind)

    def _function(self, name: _Tok) -> tuple[str, Predicate]:
        function = name.value
        if function not in _FUNCTIONS:
            known = "an OData function the sandbox does not evaluate" if (
                function in _KNOWN_ELSEWHERE
            ) else "not a known function"  # fmt: skip
            raise FilterError(
                f"Unsupported $filter at position {name.pos}: '{function}' is {known} "
                "(the sandbox evaluates eq, ne, gt, ge, lt, le, and, or, not, trim)."
            )
        self._next()  # (
        kind, argument = self._or()
        close = self._next()
        if close.kind != "close":
            raise FilterError(
                f"Syntax error at position {close.pos} in '{self.text}': ')' expected."
            )
        if kind != EDM_STRING:
            raise FilterError(
                f"No function signature for the function with name '{function}' matches the "
                f"argument type '{kind}' at position {name.pos}."
            )
        return EDM_STRING, lambda row: None if (v := argument(row)) is None else v.strip()

    # -- semantics ---------------------------------------------------------------------------

    def _logical(
        self, op: str, pos: int, left: tuple[str, Predicate], right: tuple[str, Predicate]
    ) -> Predicate:
        for kind, _ in (left, right):
            if kind != EDM_BOOL:
                raise FilterError(
                    f"Operator '{op}' incompatible with operand types '{_SYSTEM_TYPE[left[0]]}' "
                    f"and '{_SYSTEM_TYPE[right[0]]}' at position {pos}."
                )
        a, b = left[1], right[1]
        if op == "and":
            return lambda row: _and3(a(row), b(row))
        return lambda row: _or3(a(row), b(row))

    def _compare(
        self, op: str, pos: int, left: tuple[str, Predicate], right: tuple[str, Predicate]
    ) -> Predicate:
        (lk, lf), (rk, rf) = left, right
        same = lk == rk or EDM_NULL in (lk, rk) or (lk in _NUMERIC and rk in _NUMERIC)
        ordered = op in ("eq", "ne") or lk not in (EDM_GUID, EDM_BOOL)
        if not same or not ordered:
            raise FilterError(
                f"Operator '{op}' incompatible with operand types '{_SYSTEM_TYPE[lk]}' and "
                f"'{_SYSTEM_TYPE[rk]}' at position {pos}."
            )

        def compare(row: dict[str, Any]) -> bool | None:
            a, b = lf(row), rf(row)
            if a is None or b is None:  # C# null semantics, as Exact's LINQ provider
                return (a is None and b is None) == (op == "eq") if op in ("eq", "ne") else False
            if isinstance(a, str):
                a, b = a.casefold(), b.casefold()
            return {
                "eq": a == b, "ne": a != b, "gt": a > b, "ge": a >= b, "lt": a < b, "le": a <= b,
            }[op]  # fmt: skip

        return compare

    # -- tokens ------------------------------------------------------------------------------

    def _peek(self) -> _Tok:
        return self.tokens[self.i]

    def _next(self) -> _Tok:
        token = self.tokens[self.i]
        if token.kind == "end":
            raise FilterError(f"Syntax error: '{self.text}' ends where an expression was expected.")
        self.i += 1
        return token

    def _keyword(self, word: str) -> bool:
        token = self._peek()
        return token.kind == "name" and token.value.lower() == word

    def _show(self, token: _Tok) -> str:
        return self.text[token.pos :].split(" ", 1)[0] or "end of the filter"


def _and3(a: bool | None, b: bool | None) -> bool | None:
    if a is False or b is False:
        return False
    return None if a is None or b is None else True


def _or3(a: bool | None, b: bool | None) -> bool | None:
    if a is True or b is True:
        return True
    return None if a is None or b is None else False


def _naive_utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


_JSON_DATE = re.compile(r"^/Date\((-?\d+)(?:[+-]\d{4})?\)/$")


def _field_value(value: Any, kind: str) -> Any:
    """A row's value as the filter compares it (None when absent or not of that type)."""
    if value is None:
        return None
    try:
        if kind == EDM_STRING:
            return str(value)
        if kind == EDM_GUID:
            return str(value).lower()
        if kind in _NUMERIC:
            return float(value)
        if kind == EDM_BOOL:
            return bool(value)
        if kind == EDM_DATETIME:
            if isinstance(value, datetime):
                return _naive_utc(value)
            if match := _JSON_DATE.match(str(value)):
                return datetime.fromtimestamp(int(match.group(1)) / 1000, UTC).replace(tzinfo=None)
            return _naive_utc(datetime.fromisoformat(str(value)))
    except (TypeError, ValueError):
        return None
    return value


def compile_filter(text: str, types: dict[str, str], type_name: str) -> Predicate:
    """``$filter`` text -> a predicate over rows; :class:`FilterError` when Exact would refuse
    it (or the sandbox cannot evaluate it). ``types``: field -> Edm type of the entity."""
    predicate = _FilterParser(text, types, type_name).parse()
    return lambda row: predicate(row) is True


_HOUR = timedelta(hours=1)
_STATE_LINE_FIELDS = (
    "Item", "ItemCode", "Quantity", "NetPrice", "VATCode", "VATPercentage", "VATAmount",
    "AmountFC", "AmountFCExclVat",
)  # fmt: skip


def _line_amounts(quantity: float, net_price: float, vat: dict[str, Any]) -> dict[str, Any]:
    """A sales order line's amounts as Exact computes them from its VAT code.

    ``AmountFC`` = Quantity x NetPrice, rounded to cents; for an excluding code (Type E, and
    the 0 % types B/N) that excludes VAT and VAT = AmountFC x Percentage; for an including
    code (Type I) it includes VAT: VAT = AmountFC x p / (1 + p).
    """
    amount = _cents(Decimal(str(quantity)) * Decimal(str(net_price)))
    rate = Decimal(str(vat["Percentage"] or 0))
    if vat["Type"] == "I":
        tax = _cents(amount * rate / (1 + rate))
        excl = amount - tax
    else:
        tax = _cents(amount * rate)
        excl = amount
    return {
        "VATCode": vat["Code"],
        "VATPercentage": float(rate),
        "VATAmount": float(tax),
        "AmountFC": float(amount),
        "AmountFCExclVat": float(excl),
    }


def _endpoint(resource: str) -> str:
    """The endpoint a path is counted under: ``crm/Accounts(guid'…')`` -> ``crm/Accounts``."""
    entity = _ENTITY_PATH.match(resource)
    return entity.group(1) if entity else resource


def call_key(method: str, resource: str) -> str:
    """``("POST", "salesorder/SalesOrders")`` -> ``"salesorders_post"`` (keys of ``calls``)."""
    return f"{resource.rsplit('/', 1)[-1].lower()}_{method.lower()}"


def _eq(value: Any, literal: str) -> bool:
    return value is not None and str(value).casefold() == literal.casefold()


#: The token endpoint's key in ``client_errors`` (as :func:`call_key` names data endpoints).
TOKEN_CALL_KEY = call_key("POST", TOKEN_PATH)


def _oauth_error(status: int, code: str, message: str) -> Response:
    """A token endpoint error in the OAuth form (RFC 6749 §5.2), as Exact answers it."""
    return Response(status, oauth_error_body(code, message))


def _oauth_form(response: Response) -> Response:
    """The token endpoint's answer with any OData error envelope (faults) in the OAuth form."""
    body = response.body
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        message = body["error"].get("message")
        text = message.get("value", "") if isinstance(message, dict) else ""
        code = body["error"].get("code") or (
            "server_error" if response.status == 500 else "temporarily_unavailable"
        )
        response.body = oauth_error_body(code, text)
    return response


def _wants_representation(request: Request) -> bool:
    prefer = request.headers.get("prefer", "")
    return "return=representation" in prefer.replace(" ", "").lower()


def _validation_message(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "body"
        problems.append(f"{where}: {error['msg']}")
    return "; ".join(problems)
