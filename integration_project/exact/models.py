"""Wire format of the Exact Online REST API subset this project speaks.

Shared by the real client (:mod:`integration_project.exact.client`) and the sandbox ERP
(:mod:`integration_project.sandbox.erp`). Field names are Exact's own (PascalCase).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

TOKEN_PATH = "/api/oauth2/token"

ACCOUNTS = "crm/Accounts"
ITEMS = "logistics/Items"
SALES_ORDERS = "salesorder/SalesOrders"
SALES_ORDER_LINES = "salesorder/SalesOrderLines"
VAT_CODES = "vat/VATCodes"
#: What a sales order's ShippingMethod (an ID), PaymentCondition (a Code), SalesChannel (an ID)
#: and WarehouseID (an ID) refer to (picqer/exact-php-client: SalesShippingMethod.php,
#: PaymentCondition.php, SalesChannel.php, Warehouse.php).
SHIPPING_METHODS = "sales/ShippingMethods"
PAYMENT_CONDITIONS = "cashflow/PaymentConditions"
SALES_CHANNELS = "sales/SalesChannels"
WAREHOUSES = "inventory/Warehouses"
#: The user's divisions (``Code`` = the division number in data URLs).
DIVISIONS = "hrm/Divisions"
#: Who the token belongs to and its ``CurrentDivision``: the one data URL without a division
#: (``GET /api/v1/current/Me``; ossobv ``api/v1division.py`` ``get_divisions``, picqer ``Me.php``).
ME = "current/Me"
#: Exact's VAT codes are at most three characters.
MAX_VAT_CODE = 3
#: Exact's account ``Code`` is at most 18 characters, right-aligned: ``'              1068'``.
ACCOUNT_CODE_WIDTH = 18

#: Exact refuses a refresh within this many seconds of the previous one.
MIN_REFRESH_INTERVAL_S = 570


def data_path(division: int | str, resource: str) -> str:
    return f"/api/v1/{division}/{resource}"


class _Wire(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


# --- OAuth -------------------------------------------------------------------------------


class TokenResponse(_Wire):
    access_token: str
    token_type: str = "Bearer"
    # Exact sends expires_in as a string ("600").
    expires_in: str
    refresh_token: str

    @property
    def expires_in_seconds(self) -> int:
        return int(self.expires_in)


# --- Entities ------------------------------------------------------------------------------


class AccountCreate(_Wire):
    Name: str
    Email: str
    Country: str
    Status: str = "C"  # C = customer
    #: The customer number, when the route keys accounts by it: Exact keeps a code the
    #: client sends (right-aligned to 18 characters) and numbers the account itself otherwise.
    Code: str | None = None


class AccountRef(_Wire):
    """What ``$select=ID,Code,Name`` gives back for an account."""

    ID: str
    Code: str | None = None
    Name: str | None = None


def account_code(value: str) -> str:
    """An account code as Exact stores and filters it: right-aligned to 18 characters
    (``'1068'`` -> ``'              1068'``). ValueError when it is empty or too long."""
    code = value.strip()
    if not 0 < len(code) <= ACCOUNT_CODE_WIDTH:
        raise ValueError(
            f"an Exact account code has 1 to {ACCOUNT_CODE_WIDTH} characters, got {value!r}"
        )
    return code.rjust(ACCOUNT_CODE_WIDTH)


class SalesOrderLine(_Wire):
    Item: str
    Quantity: float
    #: Price per unit *excluding* VAT: Exact adds VAT from the line's VATCode.
    NetPrice: float
    Description: str
    #: None: Exact takes the item's SalesVatCode.
    VATCode: str | None = Field(default=None, max_length=MAX_VAT_CODE)


class SalesOrderCreate(_Wire):
    OrderedBy: str
    YourRef: str
    OrderDate: str
    Description: str
    Currency: str
    SalesOrderLines: list[SalesOrderLine] = Field(min_length=1)
    #: Optional references, set by the route's look-up tables: an ID of sales/ShippingMethods,
    #: a Code of cashflow/PaymentConditions, an ID of sales/SalesChannels and of
    #: inventory/Warehouses. Left out, Exact takes the account's own defaults.
    ShippingMethod: str | None = None
    PaymentCondition: str | None = None
    SalesChannel: str | None = None
    WarehouseID: str | None = None


class VatCode(_Wire):
    """A row of ``vat/VATCodes`` (the fields the mapping chooses by).

    ``Percentage`` is a fraction (0.21 for 21 %); ``VATTransactionType`` is S (sales),
    P (purchases) or B (both); ``Type`` is E (excluding: prices exclude VAT), I (including),
    N (no VAT) or B (0 %, only the base amount). ``Code`` comes padded with spaces to three
    characters (``'2  '``).
    """

    Code: str
    Description: str | None = None
    Percentage: float | None = None
    VATTransactionType: str | None = None
    IsBlocked: bool | None = None
    Type: str | None = None


VAT_CODE_FIELDS = "Code,Description,Percentage,VATTransactionType,IsBlocked,Type"


class LookupRow(_Wire):
    """A row of one of the look-up lists a sales order refers to (sales/ShippingMethods,
    cashflow/PaymentConditions, sales/SalesChannels, inventory/Warehouses): each has a GUID
    ``ID``, a ``Code`` and a ``Description``."""

    ID: str
    Code: str | None = None
    Description: str | None = None


LOOKUP_FIELDS = "ID,Code,Description"


class SalesOrderRef(_Wire):
    """What ``$select=OrderID,OrderNumber,YourRef,OrderedBy`` and the create answer give
    back."""

    OrderID: str
    OrderNumber: int | None = None
    YourRef: str | None = None
    OrderedBy: str | None = None


class SalesOrderLineRef(_Wire):
    """A row of ``salesorder/SalesOrderLines`` (``$filter=OrderID eq guid'...'``)."""

    OrderID: str | None = None
    Item: str | None = None
    Quantity: float | None = None
    NetPrice: float | None = None
    VATCode: str | None = None


SALES_ORDER_LINE_FIELDS = "OrderID,Item,Quantity,NetPrice,VATCode"


# --- OData ---------------------------------------------------------------------------------


def odata_quote(value: str) -> str:
    """An OData string literal: single quotes, with embedded quotes doubled.

    ``o'brien@example.eu`` becomes ``'o''brien@example.eu'``, so a value can never end the
    literal early and change the filter.
    """
    return "'" + value.replace("'", "''") + "'"


def eq_filter(field: str, value: str) -> str:
    if not re.fullmatch(r"[A-Za-z]+", field):
        raise ValueError(f"not an OData field name: {field!r}")
    return f"{field} eq {odata_quote(value)}"


_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def guid_eq_filter(field: str, guid: str) -> str:
    """``OrderID eq guid'...'``: Exact's OData literal for a GUID field."""
    if not re.fullmatch(r"[A-Za-z]+", field):
        raise ValueError(f"not an OData field name: {field!r}")
    if not _GUID.match(guid):
        raise ValueError(f"not a GUID: {guid!r}")
    return f"{field} eq guid'{guid}'"


def results(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The list inside an OData collection envelope ``{"d": {"results": [...]}}``."""
    d = body.get("d")
    if isinstance(d, dict) and isinstance(d.get("results"), list):
        return d["results"]
    if isinstance(d, list):  # some Exact endpoints answer {"d": [...]}
        return d
    raise ValueError("not an OData collection envelope (expected {'d': {'results': [...]}})")


def single(body: dict[str, Any]) -> dict[str, Any]:
    """The entity inside ``{"d": {...}}``."""
    d = body.get("d")
    if not isinstance(d, dict):
        raise ValueError("not an OData entity envelope (expected {'d': {...}})")
    return d


# --- Errors and rate limits ----------------------------------------------------------------


def error_body(message: str, code: str = "") -> dict[str, Any]:
    return {"error": {"code": code, "message": {"lang": "", "value": message}}}


def oauth_error_body(error: str, description: str) -> dict[str, Any]:
    """The token endpoint's error form (RFC 6749 §5.2), not the OData envelope."""
    return {"error": error, "error_description": description}


def oauth_error(body: Any) -> str | None:
    """The OAuth error name (``invalid_grant`` …) of a token endpoint answer, else None."""
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, str) and error else None


def error_message(body: Any) -> str | None:
    """Exact's own words: the OData envelope's ``error.message.value`` on data endpoints, the
    OAuth form's ``error_description`` (else ``error``) on the token endpoint."""
    if not isinstance(body, dict):
        return None
    error = body.get("error")
    if isinstance(error, dict):
        message = error.get("message")
        if isinstance(message, dict) and message.get("value") is not None:
            return str(message["value"])
        return None
    description = body.get("error_description")
    if isinstance(description, str) and description.strip():
        return description
    return oauth_error(body)


RATE_LIMIT_HEADERS = (
    "X-RateLimit-Limit",
    "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
    "X-RateLimit-Minutely-Limit",
    "X-RateLimit-Minutely-Remaining",
    "X-RateLimit-Minutely-Reset",
)


@dataclass(frozen=True)
class RateLimit:
    """The budget Exact announces on every response (reset = epoch milliseconds)."""

    daily_limit: int | None = None
    daily_remaining: int | None = None
    daily_reset_ms: int | None = None
    minutely_limit: int | None = None
    minutely_remaining: int | None = None
    minutely_reset_ms: int | None = None

    @classmethod
    def from_headers(cls, headers: Any) -> RateLimit | None:
        def num(name: str) -> int | None:
            raw = headers.get(name)
            try:
                return int(raw) if raw is not None else None
            except ValueError:
                return None

        values = [num(h) for h in RATE_LIMIT_HEADERS]
        if all(v is None for v in values):
            return None
        return cls(*values)

    def to_headers(self) -> dict[str, str]:
        values = (
            self.daily_limit,
            self.daily_remaining,
            self.daily_reset_ms,
            self.minutely_limit,
            self.minutely_remaining,
            self.minutely_reset_ms,
        )
        return {h: str(v) for h, v in zip(RATE_LIMIT_HEADERS, values, strict=True) if v is not None}


# --- the token chain, as a token store keeps it (the ledger's ``erp_tokens`` table) --------


@dataclass(frozen=True)
class StoredTokens:
    """One division's OAuth state: the latest refresh token of its rotation chain and the access
    token it last yielded."""

    refresh_token: str
    access_token: str | None
    access_expires_at: float | None  # epoch seconds
    refreshed_at: float | None  # epoch seconds
    seed_fingerprint: str  # which ERP_REFRESH_TOKEN this chain of rotations started from
