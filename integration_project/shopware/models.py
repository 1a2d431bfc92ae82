"""Wire format of the Shopware 6 Admin API subset this project speaks.

Used by both the real client (:mod:`integration_project.shopware.client`) and the sandbox shop
(:mod:`integration_project.sandbox.shop`), so the two cannot drift apart. Field names are
Shopware's own (camelCase); see ``shared/reference/shopware-admin-api-orders.openapi.json``.

Shopware answers ``null`` for unset fields, so every field an order may lack is optional here:
deciding whether an order is usable is the job of the transforms, which quarantine it with a
reason instead of failing the whole page.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

TOKEN_PATH = "/api/oauth/token"
ORDER_SEARCH_PATH = "/api/search/order"

#: Associations every order search loads: the fields the mapping reads live behind them.
#: Shopware 6.6 returns ``null`` for a to-one association it was not asked for, the order's
#: ``stateMachineState`` included (6.5 loaded it anyway), and line items in no fixed order unless
#: the association is sorted.
ORDER_ASSOCIATIONS: dict[str, Any] = {
    "stateMachineState": {},
    "lineItems": {"sort": [{"field": "position", "order": "ASC"}]},
    "currency": {},
    "orderCustomer": {},
    "billingAddress": {"associations": {"country": {}}},
    "deliveries": {"associations": {"shippingOrderAddress": {"associations": {"country": {}}}}},
}

LineItemType = Literal[
    "product", "credit", "custom", "promotion", "container", "discount", "quantity"
]


class _Wire(BaseModel):
    # Shopware sends many more fields than we read; keep them (the sandbox fills them in).
    model_config = ConfigDict(extra="allow", populate_by_name=True)


# --- OAuth -------------------------------------------------------------------------------


class ClientCredentialsGrant(_Wire):
    grant_type: Literal["client_credentials"] = "client_credentials"
    client_id: str
    client_secret: str


class TokenResponse(_Wire):
    token_type: str
    expires_in: int
    access_token: str


# --- Search criteria -----------------------------------------------------------------------


class RangeParameters(_Wire):
    gte: str | None = None
    lt: str | None = None
    gt: str | None = None
    lte: str | None = None


class RangeFilter(_Wire):
    type: Literal["range"] = "range"
    field: str
    parameters: RangeParameters


class SortField(_Wire):
    field: str
    order: Literal["ASC", "DESC"] = "ASC"


class OrderCriteria(_Wire):
    """The body of ``POST /api/search/order`` (Shopware's ``Criteria`` schema)."""

    page: int = Field(ge=1)
    limit: int = Field(ge=1, le=500)
    total_count_mode: Literal["none", "exact", "next-pages"] = Field(
        "exact", alias="total-count-mode"
    )
    filter: list[RangeFilter] = Field(default_factory=list)
    sort: list[SortField] = Field(default_factory=list)
    associations: dict[str, Any] = Field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True)


def format_shop_datetime(value: datetime) -> str:
    """A moment as Shopware *returns* it in JSON: ISO 8601, UTC, with the offset
    (``2026-11-22T06:15:00.000+00:00``). Not for filter bounds: see
    :func:`format_storage_datetime`."""
    if value.tzinfo is None:
        raise ValueError("naive datetime: pass timezone-aware UTC datetimes")
    return value.astimezone(UTC).isoformat(timespec="milliseconds")


def format_storage_datetime(value: datetime) -> str:
    """A moment in Shopware's storage format, for range filter bounds on date fields.

    Shopware keeps dates as ``DATETIME(3)`` in UTC, written with
    ``Defaults::STORAGE_DATE_TIME_FORMAT`` (``'Y-m-d H:i:s.v'``): ``2026-11-22 06:15:00.000``, no
    ``T``, no offset. A range filter's bound goes to the database as it was sent, so a bound in
    another form (ISO with ``T`` or an offset) is not compared as the moment it names.
    Milliseconds are truncated, as they are when Shopware stores a date.
    """
    if value.tzinfo is None:
        raise ValueError("naive datetime: pass timezone-aware UTC datetimes")
    utc = value.astimezone(UTC).replace(tzinfo=None)
    return utc.isoformat(sep=" ", timespec="milliseconds")


def created_at_window_criteria(
    *, start: datetime, end: datetime, page: int, limit: int
) -> OrderCriteria:
    """Criteria for one page of the orders created in ``[start, end)``, oldest first."""
    return OrderCriteria(
        page=page,
        limit=limit,
        filter=[
            RangeFilter(
                field="createdAt",
                parameters=RangeParameters(
                    gte=format_storage_datetime(start), lt=format_storage_datetime(end)
                ),
            )
        ],
        # id breaks ties between orders created in the same millisecond, so pages are stable.
        sort=[SortField(field="createdAt", order="ASC"), SortField(field="id", order="ASC")],
        associations=ORDER_ASSOCIATIONS,
    )


# --- Orders --------------------------------------------------------------------------------


class Country(_Wire):
    id: str | None = None
    iso: str | None = None
    name: str | None = None


class OrderAddress(_Wire):
    id: str | None = None
    firstName: str | None = None
    lastName: str | None = None
    company: str | None = None
    street: str | None = None
    zipcode: str | None = None
    city: str | None = None
    country: Country | None = None


class OrderCustomer(_Wire):
    id: str | None = None
    email: str | None = None
    firstName: str | None = None
    lastName: str | None = None
    company: str | None = None
    customerNumber: str | None = None


class Currency(_Wire):
    id: str | None = None
    isoCode: str | None = None
    symbol: str | None = None


class OrderDelivery(_Wire):
    id: str | None = None
    shippingOrderAddress: OrderAddress | None = None


class LineItemPayload(_Wire):
    productNumber: str | None = None


class OrderLineItem(_Wire):
    id: str | None = None
    type: str | None = None
    label: str | None = None
    position: Any = None  # line items arrive in no fixed order; this is theirs
    quantity: Any = None
    unitPrice: Any = None
    totalPrice: Any = None
    position: Any = None
    #: A CalculatedPrice: ``{unitPrice, quantity, totalPrice, calculatedTaxes, taxRules}``;
    #: ``calculatedTaxes`` is a list of ``{tax, taxRate, price}``, one per VAT rate.
    price: Any = None
    payload: LineItemPayload | None = None


class ShopOrder(_Wire):
    """A Shopware order as returned by the order search with :data:`ORDER_ASSOCIATIONS`."""

    id: str
    orderNumber: str | None = None
    orderDateTime: str | None = None
    createdAt: str | None = None
    amountTotal: Any = None
    amountNet: Any = None
    shippingTotal: Any = None
    #: A CalculatedPrice like a line item's ``price``: shipping's own ``calculatedTaxes``.
    shippingCosts: Any = None
    #: ``gross`` (prices include VAT), ``net`` (they exclude it) or ``tax-free``.
    taxStatus: str | None = None
    currency: Currency | None = None
    orderCustomer: OrderCustomer | None = None
    billingAddress: OrderAddress | None = None
    deliveries: list[OrderDelivery | None] | None = None
    lineItems: list[OrderLineItem | None] | None = None


class OrderSearchResponse(_Wire):
    """``application/json`` answer of ``POST /api/search/order``.

    ``data`` stays raw JSON: a malformed order must reach the transforms (and quarantine) with
    everything the shop sent, not fail the page it came in.
    """

    total: int | None = None
    data: list[dict[str, Any]]


# --- Errors --------------------------------------------------------------------------------


class ShopError(_Wire):
    code: str | None = None
    status: str | None = None
    title: str | None = None
    detail: str | None = None


class ShopErrorResponse(_Wire):
    errors: list[ShopError]

    def summary(self) -> str:
        return "; ".join(
            f"{e.title or e.code or 'error'}: {e.detail or ''}".strip(": ") for e in self.errors
        )


def shop_error_body(status: int, title: str, detail: str, code: str = "") -> dict[str, Any]:
    """The error envelope Shopware uses, for the sandbox."""
    return ShopErrorResponse(
        errors=[ShopError(code=code or str(status), status=str(status), title=title, detail=detail)]
    ).model_dump(exclude_none=True)
