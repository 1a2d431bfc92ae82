"""Wire format of the Spryker Glue Backend API subset this project reads.

Shared by the client (:mod:`integration_project.spryker.client`) and the sandbox
(:mod:`integration_project.sandbox.spryker`) so the two cannot drift apart. Field names are
Spryker's own: the Data Exchange API answers with the database column names (snake_case) of the
tables it exposes, and each configured relation as a list of child records under the
relation's name. Every model keeps fields it does not declare: a project configures which
columns an endpoint exposes, and more are harmless.

Money is integer cents in every ``spy_sales_*`` column (``gross_price``, ``grand_total`` ...);
tax rates are ``DECIMAL(8,2)`` percentages. See ``reference/spryker.md`` for the sources.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

#: The Glue Backend API's token resource (``OauthBackendApiConfig::RESOURCE_TOKEN``).
TOKEN_PATH = "/token"
#: The Data Exchange API's route prefix (``DynamicEntityBackendApiConfig::ROUTE_PREFIX``).
DYNAMIC_ENTITY_PREFIX = "/dynamic-entity"
#: The table alias a project gives ``spy_sales_order`` when it configures the endpoint.
ORDERS_ALIAS = "sales-orders"
#: The primary key of ``spy_sales_order`` (auto increment): what paging goes by.
ORDER_KEY = "id_sales_order"

#: Relation names configured on the ``sales-orders`` endpoint (Back Office > Data Exchange
#: API configuration). They are project configuration, not Spryker constants: these are the
#: ones this route expects, each joined by the foreign key named.
RELATION_ITEMS = "salesOrderItems"  # spy_sales_order_item.fk_sales_order
RELATION_EXPENSES = "salesExpenses"  # spy_sales_expense.fk_sales_order
RELATION_TOTALS = "salesOrderTotals"  # spy_sales_order_totals.fk_sales_order
RELATION_BILLING = "billingAddress"  # spy_sales_order.fk_sales_order_address_billing
RELATION_SHIPPING = "shippingAddress"  # spy_sales_order.fk_sales_order_address_shipping
RELATION_COUNTRY = "country"  # spy_sales_order_address.fk_country -> spy_country
ORDER_INCLUDE = (
    RELATION_ITEMS,
    RELATION_EXPENSES,
    RELATION_TOTALS,
    f"{RELATION_BILLING}.{RELATION_COUNTRY}",
    f"{RELATION_SHIPPING}.{RELATION_COUNTRY}",
)

#: Spryker's expense type for shipping costs (``ShipmentConfig::SHIPMENT_EXPENSE_TYPE``).
SHIPMENT_EXPENSE_TYPE = "SHIPMENT_EXPENSE_TYPE"
#: ``spy_sales_order.price_mode`` values.
GROSS_MODE = "GROSS_MODE"
NET_MODE = "NET_MODE"


class _Wire(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


# --- token ---------------------------------------------------------------------------------


class PasswordGrant(_Wire):
    """The form body of ``POST /token``: a Back Office user's login (``ApiTokenAttributes``)."""

    grant_type: str = "password"
    username: str
    password: str


class TokenResponse(_Wire):
    """``ApiTokenResponseAttributes``, snake-cased as the token resource declares."""

    token_type: str
    expires_in: int
    access_token: str
    refresh_token: str | None = None


class GlueError(_Wire):
    """One entry of a Glue Backend API error answer (``GlueErrorTransfer``)."""

    code: str | None = None
    status: int | None = None
    message: str | None = None


class GlueErrorResponse(_Wire):
    errors: list[GlueError]


def glue_error_body(status: int, code: str, message: str) -> dict[str, Any]:
    """The error envelope the Glue Backend API answers with, for the sandbox."""
    return {"errors": [{"code": code, "status": status, "message": message}]}


# --- orders --------------------------------------------------------------------------------


class Country(_Wire):
    iso2_code: str | None = None
    name: str | None = None


class SalesOrderAddress(_Wire):
    id_sales_order_address: int | None = None
    first_name: str | None = None
    last_name: str | None = None
    company: str | None = None
    address1: str | None = None
    address2: str | None = None
    address3: str | None = None
    zip_code: str | None = None
    city: str | None = None
    email: str | None = None
    country: list[Country] | None = None


class SalesOrderItem(_Wire):
    id_sales_order_item: int | None = None
    sku: str | None = None
    name: str | None = None
    quantity: int | None = None
    gross_price: int | None = None  # cents, one unit, VAT included
    net_price: int | None = None  # cents, one unit, VAT excluded
    tax_rate: Any = None  # DECIMAL(8,2): "19.00" or 19.0
    discount_amount_full_aggregation: int | None = None  # cents, all units
    price_to_pay_aggregation: int | None = None


class SalesExpense(_Wire):
    id_sales_expense: int | None = None
    type: str | None = None
    name: str | None = None
    gross_price: int | None = None
    net_price: int | None = None
    tax_rate: Any = None
    discount_amount_aggregation: int | None = None
    price_to_pay_aggregation: int | None = None


class SalesOrderTotals(_Wire):
    id_sales_order_totals: int | None = None
    subtotal: int | None = None
    order_expense_total: int | None = None
    discount_total: int | None = None
    tax_total: int | None = None
    grand_total: int | None = None


class SalesOrder(_Wire):
    """A ``spy_sales_order`` record with the relations of :data:`ORDER_INCLUDE`."""

    id_sales_order: int
    order_reference: str | None = None
    customer_reference: str | None = None
    email: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    currency_iso_code: str | None = None
    price_mode: str | None = None
    store: str | None = None
    created_at: str | None = None
    salesOrderItems: list[SalesOrderItem] | None = None
    salesExpenses: list[SalesExpense] | None = None
    salesOrderTotals: list[SalesOrderTotals] | None = None
    billingAddress: list[SalesOrderAddress] | None = None
    shippingAddress: list[SalesOrderAddress] | None = None


class DynamicEntityCollection(_Wire):
    """``GET /dynamic-entity/{alias}`` with ``Accept: application/json``: ``{"data": [...]}``,
    no ``links`` and no ``meta``. ``data`` stays raw: each record goes on as Spryker sent it."""

    data: list[Any]


# --- query parameters and timestamps ---------------------------------------------------------


def in_filter(alias: str, field: str, values: Iterable[int | str]) -> dict[str, str]:
    """The query parameter of the Data Exchange API's IN filter (``InFilterStrategy``):
    ``filter[alias.field]={"in": [...]}``."""
    return {f"filter[{alias}.{field}]": json.dumps({"in": list(values)}, separators=(",", ":"))}


def page_params(limit: int, offset: int = 0) -> dict[str, str]:
    return {"page[limit]": str(limit), "page[offset]": str(offset)}


def format_spryker_datetime(value: datetime) -> str:
    """A moment as the sandbox writes ``created_at``: Propel's ``Y-m-d H:i:s.u`` in UTC,
    without an offset (the column is a plain ``TIMESTAMP``)."""
    if value.tzinfo is None:
        raise ValueError("naive datetime: pass timezone-aware UTC datetimes")
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def parse_spryker_datetime(text: Any, timezone: Any = UTC) -> datetime | None:
    """``created_at`` as an aware datetime: ``2026-11-22 06:15:00.000000`` or ISO 8601; a
    value without an offset is read in ``timezone`` (the Zed database's, UTC by default).
    None when it is not a date-time."""
    if not isinstance(text, str) or not text or len(text) > 40:
        return None
    try:
        parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone)
    return parsed.astimezone(UTC)
