"""Filter and map: Shopware orders in, Exact Online sales orders out. Pure functions.

No Dagster, no HTTP, no DuckDB here: plain data in, plain data out, so every rule can be tested
on its own. The assets decide what to do with the three possible outcomes of
:func:`evaluate_order`:

* :class:`MappedOrder` — the order ships to an allowed country and is valid. It still names
  the customer by e-mail and the items by product number; :func:`to_sales_order` turns it into
  the ERP payload once those have been resolved to ERP ids.
* :class:`Skipped` — the order ships outside the allowed countries. Nothing is wrong with it.
* :class:`Quarantined` — the order cannot be mapped. ``reason`` says what to fix, naming the
  field, so a person can act on it. It never stops the rest of its window.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from pydantic import ValidationError

from integration_project.settings import (
    DISCOUNT_ITEM_CODE,
    EU_27,
    ISO_COUNTRIES,
    SHIPPING_ITEM_CODE,
)
from integration_project.shopware.models import OrderLineItem, ShopOrder

CENT = Decimal("0.01")
#: Unit prices keep four decimals (0.125 per piece is a real price); totals are in cents.
UNIT = Decimal("0.0001")
#: Bounds past which a value is a data error, not an order (and Decimal stays exact).
MAX_AMOUNT = Decimal("1e12")
MAX_QUANTITY = 1_000_000
#: Exact Online's limit on YourRef.
MAX_YOUR_REF = 255
MAX_DESCRIPTION = 255
MAX_SKU = 60
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")


#: Fields a template (YourRef, Description, extra fields) may use.
TEMPLATE_FIELDS = (
    "order_number",
    "shop_order_id",
    "email",
    "country",
    "customer_name",
    "customer_number",
    "currency",
)


@dataclass(frozen=True)
class MappingRules:
    """What the route is configured to do. Defaults reproduce the reference route."""

    allowed_countries: frozenset[str] = EU_27
    #: Order states (technical names) to deliver; empty = all.
    order_states: frozenset[str] = frozenset()
    min_amount: Decimal | None = None
    max_amount: Decimal | None = None
    #: Sales channel ids to deliver; empty = all.
    sales_channel_ids: frozenset[str] = frozenset()
    #: None leaves shipping costs off the ERP order.
    shipping_item_code: str | None = SHIPPING_ITEM_CODE
    discount_item_code: str = DISCOUNT_ITEM_CODE
    promotions: str = "discount_line"  # or "ignore"
    description_template: str = "Shopware order {order_number}"
    your_ref_template: str = "{order_number}"
    #: Extra sales order header fields: (ERP field, template) pairs.
    extra_fields: tuple[tuple[str, str], ...] = ()
    shipping_description: str = "Shipping"


@dataclass(frozen=True)
class MappedLine:
    item_code: str
    quantity: Decimal
    net_price: Decimal
    description: str
    kind: str = "product"  # product | discount | shipping


@dataclass(frozen=True)
class MappedOrder:
    shop_order_id: str
    order_number: str
    order_date: str
    currency: str
    customer_email: str
    customer_name: str
    customer_country: str
    shipping_country: str
    description: str
    lines: tuple[MappedLine, ...] = field(default_factory=tuple)
    your_ref: str = ""
    extra_fields: tuple[tuple[str, str], ...] = ()

    @property
    def item_codes(self) -> frozenset[str]:
        return frozenset(line.item_code for line in self.lines)


@dataclass(frozen=True)
class Skipped:
    shop_order_id: str
    order_number: str | None
    country: str
    reason: str


@dataclass(frozen=True)
class Quarantined:
    shop_order_id: str
    order_number: str | None
    reason: str


Outcome = MappedOrder | Skipped | Quarantined


class _Reject(Exception):
    """Internal: the order cannot be mapped; the message is the quarantine reason."""


# --- helpers -------------------------------------------------------------------------------


def _text(value: Any) -> str | None:
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def _money(value: Any, where: str, places: Decimal = CENT) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise _Reject(f"{where}: expected a number, got {_show(value)}")
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise _Reject(f"{where}: expected a number, got {_show(value)}") from None
    if not amount.is_finite():
        raise _Reject(f"{where}: expected a finite number, got {_show(value)}")
    if abs(amount) >= MAX_AMOUNT:
        raise _Reject(f"{where}: implausible amount {_show(value)}")
    return amount.quantize(places, rounding=ROUND_HALF_UP)


def _quantity(value: Any, where: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Reject(f"{where}: expected a positive whole number, got {_show(value)}")
    if isinstance(value, float) and (not math.isfinite(value) or not value.is_integer()):
        raise _Reject(f"{where}: expected a positive whole number, got {_show(value)}")
    if value <= 0:
        raise _Reject(f"{where}: expected a positive whole number, got {_show(value)}")
    if value > MAX_QUANTITY:
        raise _Reject(f"{where}: implausible quantity {_show(value)}")
    return Decimal(int(value))


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _country_of(address: Any) -> str | None:
    country = getattr(address, "country", None)
    return _text(getattr(country, "iso", None))


def destination_country(order: ShopOrder) -> tuple[str | None, str]:
    """The shipping country, falling back to the billing country, and where it came from."""
    for index, delivery in enumerate(order.deliveries or []):
        iso = _country_of(delivery.shippingOrderAddress if delivery else None)
        if iso:
            return iso.upper(), f"deliveries[{index}].shippingOrderAddress.country.iso"
    iso = _country_of(order.billingAddress)
    if iso:
        return iso.upper(), "billingAddress.country.iso"
    return None, "deliveries[].shippingOrderAddress.country.iso and billingAddress.country.iso"


def _parse_order(raw: Mapping[str, Any]) -> ShopOrder:
    try:
        return ShopOrder.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ""
        for part in first["loc"]:
            where += f"[{part}]" if isinstance(part, int) else f".{part}"
        raise _Reject(f"{where.lstrip('.') or 'order'}: {first['msg']}") from None


def _order_date(order: ShopOrder) -> str:
    raw = _text(order.orderDateTime)
    if raw is None:
        raise _Reject("orderDateTime is missing")
    try:
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise _Reject(f"orderDateTime: not an ISO 8601 date-time: {_show(raw)}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        utc = parsed.astimezone(UTC)
    except OverflowError:
        raise _Reject(f"orderDateTime: out of range: {_show(raw)}") from None
    if not 2000 <= utc.year <= 2100:
        raise _Reject(f"orderDateTime: implausible date {_show(raw)}")
    return utc.strftime("%Y-%m-%dT%H:%M:%SZ")


def _map_line(index: int, item: OrderLineItem | None, rules: MappingRules) -> MappedLine | None:
    where = f"lineItems[{index}]"
    if item is None:
        raise _Reject(f"{where} is null")
    kind = _text(item.type) or "product"
    label = _text(item.label)
    if kind == "product":
        sku = _text(item.payload.productNumber if item.payload else None)
        if sku is None:
            raise _Reject(f"{where}.payload.productNumber is missing (label {_show(label)})")
        if len(sku) > MAX_SKU:
            raise _Reject(f"{where}.payload.productNumber is too long: {_show(sku)}")
        quantity = _quantity(item.quantity, f"{where}.quantity ({sku})")
        unit_price = _money(item.unitPrice, f"{where}.unitPrice ({sku})", UNIT)
        if unit_price < 0:
            raise _Reject(f"{where}.unitPrice ({sku}): negative price {unit_price}")
        if item.totalPrice is not None:
            total = _money(item.totalPrice, f"{where}.totalPrice ({sku})")
            expected = (unit_price * quantity).quantize(CENT, rounding=ROUND_HALF_UP)
            if abs(total - expected) > CENT:
                raise _Reject(
                    f"{where}.totalPrice ({sku}): {total} is not quantity {quantity} * "
                    f"unitPrice {unit_price} = {expected}"
                )
        return MappedLine(sku, quantity, unit_price, (label or sku)[:MAX_DESCRIPTION])
    if kind in ("promotion", "discount", "credit"):
        amount = _money(
            item.totalPrice if item.totalPrice is not None else item.unitPrice,
            f"{where}.totalPrice ({kind})",
        )
        if amount > 0:
            raise _Reject(f"{where}.totalPrice ({kind}): a {kind} must not add {amount}")
        if amount == 0 or rules.promotions == "ignore":
            return None  # a free-shipping promotion, an expired voucher, or not booked
        description = (label or kind.capitalize())[:MAX_DESCRIPTION]
        return MappedLine(rules.discount_item_code, Decimal(1), amount, description, "discount")
    raise _Reject(
        f"{where}.type: line items of type {_show(kind)} ({_show(label)}) have no ERP mapping; "
        "only product, promotion, discount and credit lines can be sent"
    )


# --- the public functions ------------------------------------------------------------------


def evaluate_order(raw: Mapping[str, Any], rules: MappingRules | None = None) -> Outcome:
    """Filter and validate one shop order. Never raises for bad input: it quarantines."""
    rules = rules or MappingRules()
    shop_id = raw.get("id") if isinstance(raw, Mapping) else None
    shop_id = shop_id if isinstance(shop_id, str) and shop_id else "<missing id>"
    number = raw.get("orderNumber") if isinstance(raw, Mapping) else None
    number = number if isinstance(number, str) and number else None
    try:
        if not isinstance(raw, Mapping):
            raise _Reject(f"expected a JSON object, got {type(raw).__name__}")
        order = _parse_order(raw)
        if shop_id == "<missing id>":
            raise _Reject("id is missing")
        country, source = destination_country(order)
        if country is None:
            raise _Reject(f"no country: {source} are all missing")
        if country not in ISO_COUNTRIES:
            raise _Reject(f"{source}: unknown country code {_show(country)}")
        if country not in rules.allowed_countries:
            return Skipped(
                shop_id, number, country, f"ships to {country}, outside the allowed countries"
            )
        skip = _filtered_out(raw, order, rules)
        if skip:
            return Skipped(shop_id, number, country, skip)
        return _map(order, shop_id, country, rules)
    except _Reject as reject:
        return Quarantined(shop_id, number, str(reject))


def _filtered_out(raw: Mapping[str, Any], order: ShopOrder, rules: MappingRules) -> str | None:
    """The route's other filters (state, amount, sales channel): a reason to skip, or None."""
    if rules.order_states:
        state = raw.get("stateMachineState")
        name = state.get("technicalName") if isinstance(state, Mapping) else None
        if name not in rules.order_states:
            return f"order state {_show(name)} is not one of {sorted(rules.order_states)}"
    if rules.sales_channel_ids and raw.get("salesChannelId") not in rules.sales_channel_ids:
        return f"sales channel {_show(raw.get('salesChannelId'))} is not delivered by this route"
    if rules.min_amount is not None or rules.max_amount is not None:
        amount = _money(order.amountTotal, "amountTotal")
        if rules.min_amount is not None and amount < rules.min_amount:
            return f"amountTotal {amount} is below {rules.min_amount}"
        if rules.max_amount is not None and amount > rules.max_amount:
            return f"amountTotal {amount} is above {rules.max_amount}"
    return None


def _template(template: str, values: Mapping[str, str], what: str) -> str:
    try:
        return template.format(**values)
    except (KeyError, IndexError, ValueError) as exc:
        raise _Reject(f"{what} template {template!r} cannot be filled: {exc}") from None


def _map(order: ShopOrder, shop_id: str, country: str, rules: MappingRules) -> MappedOrder:
    number = _text(order.orderNumber)
    if number is None:
        raise _Reject("orderNumber is missing")
    if len(number) > MAX_YOUR_REF:
        raise _Reject(f"orderNumber is longer than the ERP's YourRef ({MAX_YOUR_REF})")
    currency = _text(order.currency.isoCode if order.currency else None)
    currency = currency.upper() if currency else None
    if currency is None:
        raise _Reject("currency.isoCode is missing")
    if not _CURRENCY.match(currency):
        raise _Reject(f"currency.isoCode: not an ISO 4217 code: {_show(currency)}")
    customer = order.orderCustomer
    if customer is None:
        raise _Reject("orderCustomer is missing")
    email = _text(customer.email)
    if email is None:
        raise _Reject("orderCustomer.email is missing")
    if not _EMAIL.match(email) or len(email) > 254:
        raise _Reject(f"orderCustomer.email: not an e-mail address: {_show(email)}")
    person = " ".join(p for p in (_text(customer.firstName), _text(customer.lastName)) if p)
    name = _text(customer.company) or person or email
    customer_country = (_country_of(order.billingAddress) or country).upper()
    if customer_country not in ISO_COUNTRIES:
        customer_country = country

    if not order.lineItems:
        raise _Reject("lineItems: the order has no line items")
    lines = [
        line
        for index, item in enumerate(order.lineItems)
        if (line := _map_line(index, item, rules)) is not None
    ]
    if not any(line.kind == "product" for line in lines):
        raise _Reject("lineItems: the order has no product lines")
    if order.shippingTotal is not None:
        shipping = _money(order.shippingTotal, "shippingTotal")
        if shipping < 0:
            raise _Reject(f"shippingTotal: negative shipping cost {shipping}")
        if shipping > 0 and rules.shipping_item_code is not None:
            shipping_line = MappedLine(
                rules.shipping_item_code,
                Decimal(1),
                shipping,
                rules.shipping_description,
                "shipping",
            )
            lines.append(shipping_line)
    values = {
        "order_number": number,
        "shop_order_id": shop_id,
        "email": email,
        "country": country,
        "customer_name": name,
        "customer_number": _text(customer.customerNumber) or "",
        "currency": currency,
    }
    description = _template(rules.description_template, values, "description")[:MAX_DESCRIPTION]
    your_ref = _template(rules.your_ref_template, values, "YourRef")
    if not your_ref or len(your_ref) > MAX_YOUR_REF:
        raise _Reject(f"YourRef {_show(your_ref)} is empty or longer than {MAX_YOUR_REF}")
    extra = tuple(
        (field_name, _template(template, values, field_name)[:MAX_DESCRIPTION])
        for field_name, template in rules.extra_fields
    )
    return MappedOrder(
        shop_order_id=shop_id,
        order_number=number,
        order_date=_order_date(order),
        currency=currency,
        customer_email=email,
        customer_name=name[:MAX_DESCRIPTION],
        customer_country=customer_country,
        shipping_country=country,
        description=description,
        lines=tuple(lines),
        your_ref=your_ref,
        extra_fields=extra,
    )


class UnknownItemError(ValueError):
    """A product number that the ERP has no item for: the order is quarantined."""


def to_sales_order(
    order: MappedOrder, *, account_id: str, item_ids: Mapping[str, str]
) -> dict[str, Any]:
    """The ``POST salesorder/SalesOrders`` body, once customer and items are ERP ids."""
    missing = sorted(order.item_codes - item_ids.keys())
    if missing:
        raise UnknownItemError(
            "no ERP item with Code "
            + ", ".join(repr(code) for code in missing)
            + " (logistics/Items); create the item in the ERP or fix the product number"
        )
    return {
        **dict(order.extra_fields),
        "OrderedBy": account_id,
        "YourRef": order.your_ref or order.order_number,
        "OrderDate": order.order_date,
        "Description": order.description,
        "Currency": order.currency,
        "SalesOrderLines": [
            {
                "Item": item_ids[line.item_code],
                "Quantity": float(line.quantity),
                "NetPrice": float(line.net_price),
                "Description": line.description,
            }
            for line in order.lines
        ],
    }
