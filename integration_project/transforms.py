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

Money: every ERP line carries its price *excluding* VAT and the rate it is taxed at, taken from
the shop line's own ``price.calculatedTaxes`` (one ERP line per rate when a shop line mixes
rates, as Shopware's shipping costs and promotions do). Exact adds VAT per line from the
line's ``VATCode``, so what the ERP will invoice is the sum of the lines plus their VAT, and an
order is only mapped when that equals the shop's ``amountTotal`` (what the customer paid),
give or take a cent per line of rounding.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import reprlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import ValidationError

from integration_project.exact.models import (
    MAX_VAT_CODE,
    PAYMENT_CONDITIONS,
    SALES_CHANNELS,
    SHIPPING_METHODS,
    WAREHOUSES,
    VatCode,
)
from integration_project.settings import (
    DEFAULT_SHOP_TIMEZONE,
    DISCOUNT_ITEM_CODE,
    EU_27,
    ISO_COUNTRIES,
    SHIPPING_ITEM_CODE,
)
from integration_project.shopware.models import (
    MAX_ORDER_ID,
    OrderLineItem,
    ShopOrder,
    read_plain,
    storable_text,
    unreadable_reason,
    usable_order_id,
)

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
#: Shopware's ``taxStatus`` values.
TAX_STATUSES = ("gross", "net", "tax-free")
HUNDRED = Decimal(100)
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


#: Every field of a shop order that :func:`evaluate_order` (and the mapping around it: the
#: look-ups, the row's date and number) reads: ``True`` the whole value; ``{key: ...}`` those
#: keys of an object (of a field typed as anything: read only when it is an object, anything
#: else read as having none of them); ``[...]`` each element of a list. The ledger hands the
#: mapping orders cut to these fields (``ledger/projection.py``); tests hold
#: :func:`evaluate_order` to the same outcome on the cut order as on the whole one.
ORDER_FIELDS_READ: dict[str, Any] = {
    "id": True,
    "orderNumber": True,
    "orderDateTime": True,
    "createdAt": True,
    "amountTotal": True,
    "shippingTotal": True,
    "shippingCosts": {"calculatedTaxes": True},
    "taxStatus": True,
    "currency": {"isoCode": True},
    "orderCustomer": {
        "email": True,
        "firstName": True,
        "lastName": True,
        "company": True,
        "customerNumber": True,
    },
    "billingAddress": {"country": {"iso": True}},
    "deliveries": [{"shippingOrderAddress": {"country": {"iso": True}}}],
    "lineItems": [
        {
            "type": True,
            "label": True,
            "position": True,
            "quantity": True,
            "unitPrice": True,
            "totalPrice": True,
            "price": {"calculatedTaxes": True},
            "payload": {"productNumber": True},
        }
    ],
    "stateMachineState": {"technicalName": True},
    "salesChannelId": True,
}


#: What the route's look-up tables read besides (only routes that have some read it).
LOOKUP_FIELDS_READ: dict[str, Any] = {
    "deliveries": [
        {
            "shippingMethodId": True,
            "shippingMethod": {"name": True, "technicalName": True, "translated": {"name": True}},
        }
    ],
    "transactions": [
        {
            "createdAt": True,
            "paymentMethodId": True,
            "paymentMethod": {"name": True, "technicalName": True, "translated": {"name": True}},
        }
    ],
    "salesChannelId": True,
}


def fields_read(rules: MappingRules) -> dict[str, Any]:
    """:data:`ORDER_FIELDS_READ`, with :data:`LOOKUP_FIELDS_READ` merged in when the route
    has look-up tables."""
    return (
        _merge_fields(ORDER_FIELDS_READ, LOOKUP_FIELDS_READ) if rules.lookups else ORDER_FIELDS_READ
    )


def _merge_fields(a: Any, b: Any) -> Any:
    if isinstance(a, dict) and isinstance(b, dict):
        return {
            k: _merge_fields(a[k], b[k]) if k in a and k in b else a.get(k, b.get(k))
            for k in {**a, **b}
        }
    if isinstance(a, list) and isinstance(b, list):
        return [_merge_fields(a[0], b[0])]
    return True if a is True or b is True else a


def outside_reason(country: str) -> str:
    """Why an order shipping to ``country`` outside the route's countries is skipped."""
    return f"ships to {country}, outside the allowed countries"


@dataclass(frozen=True)
class VatPin:
    """A route's own ERP VAT code for a rate (percent), optionally only for one destination."""

    rate: Decimal
    code: str
    country: str | None = None


#: ERP sales order field -> the list it refers to, and which of a row's fields it carries.
LOOKUP_TARGETS: dict[str, tuple[str, str]] = {
    "ShippingMethod": (SHIPPING_METHODS, "ID"),
    "PaymentCondition": (PAYMENT_CONDITIONS, "Code"),
    "SalesChannel": (SALES_CHANNELS, "ID"),
    "WarehouseID": (WAREHOUSES, "ID"),
}


@dataclass(frozen=True)
class LookupRule:
    """A route's table from one of the order's shop values to an ERP sales order field.

    ``kind``: ``shipping_method`` (the order's delivery), ``payment_method`` (its latest
    transaction) or ``sales_channel``; ``by``: which shop value is the key (``technical_name``,
    ``name`` or ``id``); ``table``: (shop value, ERP code) pairs, matched without case; an ERP
    code is the row's ``Code`` in the list (an ID is also taken as it is). ``dynamic``: no
    table, the ERP row whose ``Description`` is the shop's name. ``unmatched``: ``quarantine``
    the order, or use ``default`` (None: leave the field off, the ERP takes the account's)."""

    kind: str
    erp_field: str
    by: str = "technical_name"
    table: tuple[tuple[str, str], ...] = ()
    dynamic: bool = False
    default: str | None = None
    unmatched: str = "quarantine"

    def find(self, value: str) -> str | None:
        wanted = value.casefold()
        return next((erp for shop, erp in self.table if shop.casefold() == wanted), None)


@dataclass(frozen=True)
class LookupKey:
    """What an order gives a look-up: the shop's value (None: the order has none), and where
    it was read, for the reason a person reads."""

    kind: str
    value: str | None
    where: str


@dataclass(frozen=True)
class LookupOutcome:
    """``matched`` / ``defaulted`` (``value``: the ERP code, None = leave the field off),
    ``ask`` (``value``: the shop's name, to find by description in the ERP), or
    ``quarantined`` (``reason``)."""

    status: str
    value: str | None
    reason: str = ""


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
    #: ERP VAT code for tax-free orders (zero-rate or reverse charge); None quarantines them.
    tax_free_vat_code: str | None = None
    #: Codes the route pins by rate (and country); other rates are looked up in the division.
    vat_codes: tuple[VatPin, ...] = ()
    #: The shop's time zone: ``OrderDate`` is the order's calendar date there.
    shop_timezone: str = DEFAULT_SHOP_TIMEZONE
    #: Order numbers must be ASCII digits (Shopware's default number range ``{n}``): routes on
    #: one ERP division are told apart by their YourRef templates on that promise.
    order_number_digits_only: bool = False
    #: The route's look-up tables (shipping method, payment method, sales channel).
    lookups: tuple[LookupRule, ...] = ()

    def pinned_vat_code(self, rate: Decimal, country: str) -> str | None:
        for pin in self.vat_codes:
            if pin.rate == rate and pin.country == country:
                return pin.code
        for pin in self.vat_codes:
            if pin.rate == rate and pin.country is None:
                return pin.code
        return None


@dataclass(frozen=True)
class MappedLine:
    item_code: str
    quantity: Decimal
    #: Price per unit *excluding* VAT (four decimals).
    net_price: Decimal
    description: str
    kind: str = "product"  # product | discount | shipping
    #: The VAT rate in percent (19, 5.5, 25.5), None for a tax-free line.
    vat_rate: Decimal | None = None
    #: The ERP VAT code when the route decides it (pinned or tax-free); None: look it up by
    #: ``vat_rate`` in the division.
    vat_code: str | None = None

    @property
    def amount(self) -> Decimal:
        """What the ERP books for the line, excluding VAT."""
        return (self.quantity * self.net_price).quantize(CENT, rounding=ROUND_HALF_UP)

    @property
    def vat(self) -> Decimal:
        """The VAT the ERP adds to the line (per line, from its rate)."""
        if self.vat_rate is None:
            return Decimal(0)
        return (self.amount * self.vat_rate / HUNDRED).quantize(CENT, rounding=ROUND_HALF_UP)


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
    tax_status: str = "gross"
    #: What the customer paid (the shop's ``amountTotal``).
    amount_total: Decimal | None = None
    #: The shop's customer number (orderCustomer.customerNumber), "" when it has none.
    customer_number: str = ""
    #: What the order gives each of the route's look-up tables.
    lookup_keys: tuple[LookupKey, ...] = ()

    @property
    def item_codes(self) -> frozenset[str]:
        return frozenset(line.item_code for line in self.lines)

    @property
    def vat_rates_to_look_up(self) -> frozenset[Decimal]:
        """Rates whose ERP VAT code the division must tell (not pinned by the route)."""
        return frozenset(
            line.vat_rate
            for line in self.lines
            if line.vat_code is None and line.vat_rate is not None
        )

    @property
    def invoice_total(self) -> Decimal:
        """What the ERP will invoice: the lines plus the VAT it adds to each."""
        return sum((line.amount + line.vat for line in self.lines), Decimal(0))


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
    if isinstance(value, str):
        value = value.strip()
        if value:
            return value
    return None


def _money(value: Any, where: str, places: Decimal = CENT) -> Decimal:
    # The common cases first (a JSON number in range), ending as _checked_money ends for them.
    if value.__class__ is float:
        amount = Decimal(repr(value))
        if amount.is_finite() and abs(amount) < MAX_AMOUNT:
            return amount.quantize(places, rounding=ROUND_HALF_UP)
    elif value.__class__ is int and abs(value) < MAX_AMOUNT:
        return Decimal(value).quantize(places, rounding=ROUND_HALF_UP)
    return _checked_money(value, where, places)


def _checked_money(value: Any, where: str, places: Decimal) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise _Reject(f"{where}: expected a number, got {_show(value)}")
    if isinstance(value, int) and abs(value) >= MAX_AMOUNT:
        raise _Reject(f"{where}: implausible amount {_show(value)}")
    try:
        amount = Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise _Reject(f"{where}: expected a number, got {_show(value)}") from None
    if not amount.is_finite():
        raise _Reject(f"{where}: expected a finite number, got {_show(value)}")
    if abs(amount) >= MAX_AMOUNT:
        raise _Reject(f"{where}: implausible amount {_show(value)}")
    return amount.quantize(places, rounding=ROUND_HALF_UP)


def _is_mapping(value: Any) -> bool:
    """``isinstance(value, Mapping)``, the common case (a dict) without the ABC's check."""
    return value.__class__ is dict or isinstance(value, Mapping)


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


#: Shows nested values a few levels deep and a few items wide: never recurses far.
_REPR = reprlib.Repr()  # (keyword arguments need Python 3.12)
_REPR.maxlevel, _REPR.maxdict, _REPR.maxlist, _REPR.maxstring, _REPR.maxother = 3, 4, 4, 60, 60


def _show(value: Any) -> str:
    """A short, printable rendering of any value for a reason (at most 60 characters)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 200:
        text = f"<a {len(str(abs(value))) if value.bit_length() < 14_000 else 'huge'}-digit number>"
    elif isinstance(value, str | int | float | bool) or value is None:
        text = repr(value[:100] if isinstance(value, str) else value)
    else:
        try:
            text = _REPR.repr(value)
        except (RecursionError, ValueError):
            text = f"<{type(value).__name__}>"
    text = storable_text(text)
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
    """The order as :class:`ShopOrder` reads it: plainly (``read_plain``, the same values
    without pydantic's cost) when every field is plainly as declared, else by pydantic, whose
    first complaint is the quarantine reason."""
    plain = read_plain(ShopOrder, raw)
    if plain is not None:
        return plain  # ShopOrder's fields, as attributes
    try:
        return ShopOrder.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ""
        for part in first["loc"]:
            where += f"[{part}]" if isinstance(part, int) else f".{part}"
        raise _Reject(f"{where.lstrip('.') or 'order'}: {first['msg']}") from None


def _order_date(order: ShopOrder, timezone: str) -> str:
    """The order's calendar date in the shop's time zone, without a zone suffix: Exact's
    ``OrderDate`` is a date, so an order placed at 00:30 in Amsterdam is dated that day."""
    raw = _text(order.orderDateTime)
    if raw is None:
        raise _Reject("orderDateTime is missing")
    try:
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise _Reject(f"orderDateTime: not an ISO 8601 date-time: {_show(raw)}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)  # Shopware stores UTC
    try:
        local = parsed.astimezone(_zone(timezone))
    except OverflowError:
        raise _Reject(f"orderDateTime: out of range: {_show(raw)}") from None
    if not 2000 <= local.year <= 2100:
        raise _Reject(f"orderDateTime: implausible date {_show(raw)}")
    return local.strftime("%Y-%m-%dT00:00:00")


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise _Reject(f"the route's shop time zone {name!r} is not an IANA time zone") from None


# --- VAT -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _TaxPart:
    """The share of a shop price taxed at one rate: excluding VAT, and the shop's tax on it."""

    rate: Decimal | None  # percent; None = tax-free
    net: Decimal
    tax: Decimal


def _rate(value: Any, where: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise _Reject(f"{where}.taxRate: expected a number, got {_show(value)}")
    if isinstance(value, int) and abs(value) >= HUNDRED:
        raise _Reject(f"{where}.taxRate: implausible VAT rate {_show(value)}")
    try:
        rate = Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise _Reject(f"{where}.taxRate: expected a number, got {_show(value)}") from None
    if not rate.is_finite() or not 0 <= rate < HUNDRED:
        raise _Reject(f"{where}.taxRate: implausible VAT rate {_show(value)}")
    return rate


@functools.lru_cache(maxsize=1024)
def rate_text(rate: Decimal | None) -> str:
    """``Decimal("19.00")`` → ``"19 %"``, ``Decimal("5.5")`` → ``"5.5 %"``."""
    if rate is None:
        return "tax-free"
    text = format(rate.normalize(), "f")
    return f"{text} %"


def _tax_parts(
    price: Any, total: Decimal, tax_status: str, where: str, what: str
) -> list[_TaxPart]:
    """Split ``total`` (the shop's own price of a line, or of shipping) by VAT rate, from its
    ``calculatedTaxes``: the price excluding VAT and the tax of each rate.

    Gross prices include VAT: a rate's part is its ``price`` minus its ``tax``. Net prices
    exclude it: the part is the ``price``. Tax-free prices carry none.
    """
    taxes = price.get("calculatedTaxes") if _is_mapping(price) else None
    if tax_status == "tax-free":
        if not isinstance(taxes, list):
            # Shopware always sends the list (``[]`` when empty): without it nothing says
            # the line carries no VAT.
            if total == 0:
                return []
            raise _Reject(
                f"{where}.calculatedTaxes ({what}) is missing: a tax-free order's line must "
                "still say it carries no tax"
            )
        for n, entry in enumerate(taxes):
            tax = entry.get("tax") if _is_mapping(entry) else None
            if tax not in (None, 0, 0.0, "0", "0.00"):
                raise _Reject(
                    f"{where}.calculatedTaxes[{n}] ({what}): a tax-free order charges "
                    f"tax {_show(tax)}"
                )
        return [_TaxPart(None, total, Decimal(0))]
    if not isinstance(taxes, list) or not taxes:
        if total == 0:
            return []  # a free line: nothing to book VAT on
        raise _Reject(
            f"{where}.calculatedTaxes ({what}) is missing: the VAT in {total} cannot be worked out"
        )
    parts: list[_TaxPart] = []
    for n, entry in enumerate(taxes):
        at = f"{where}.calculatedTaxes[{n}]"
        if not _is_mapping(entry):
            raise _Reject(f"{at} ({what}): expected {{tax, taxRate, price}}, got {_show(entry)}")
        rate = _rate(entry.get("taxRate"), at)
        label = f"{at} ({what}, {rate_text(rate)})"
        amount = _money(entry.get("price"), f"{label}.price")
        tax = _money(entry.get("tax"), f"{label}.tax")
        base = amount - tax if tax_status == "gross" else amount
        expected = (base * rate / HUNDRED).quantize(CENT, rounding=ROUND_HALF_UP)
        if abs(tax - expected) > CENT:
            raise _Reject(
                f"{label}: tax {tax} is not {rate_text(rate)} of {base} "
                f"({'gross' if tax_status == 'gross' else 'net'} price {amount})"
            )
        parts.append(_TaxPart(rate, base, tax))
    summed = sum((p.net + (p.tax if tax_status == "gross" else 0) for p in parts), Decimal(0))
    if abs(summed - total) > CENT * len(parts):
        raise _Reject(
            f"{where}.calculatedTaxes ({what}): the prices add up to {summed}, not the "
            f"{tax_status} total {total}"
        )
    return parts


def _vat_lines(
    parts: list[_TaxPart],
    *,
    item_code: str,
    quantity: Decimal,
    description: str,
    kind: str,
    country: str,
    rules: MappingRules,
) -> list[MappedLine]:
    """One ERP line per rate; the unit price excludes VAT (four decimals)."""
    lines = []
    for part in parts:
        if part.rate is None:
            code = rules.tax_free_vat_code
            if code is None:
                raise _Reject(
                    "taxStatus is tax-free, but the route sets no mapping.tax_free_vat_code "
                    "(the ERP's zero-rate or reverse-charge VAT code for such orders)"
                )
        else:
            code = rules.pinned_vat_code(part.rate, country)
        text = description
        if len(parts) > 1:
            text = f"{description} ({rate_text(part.rate)} VAT)"
        unit = (part.net / quantity).quantize(UNIT, rounding=ROUND_HALF_UP)
        lines.append(
            MappedLine(
                item_code,
                quantity,
                unit,
                text[:MAX_DESCRIPTION],
                kind,
                vat_rate=part.rate,
                vat_code=code,
            )
        )
    return lines


def choose_vat_code(rate: Decimal, codes: Iterable[VatCode]) -> str:
    """The division's VAT code for sales at ``rate`` (percent).

    A code fits when it is not blocked, can be used for sales (``VATTransactionType`` S or B),
    does not include VAT in the price (``Type`` I, "including", would read our net prices as
    gross) and its ``Percentage`` matches (Exact reports 0.21; a whole-number 21 is accepted
    alike). Exact pads codes with spaces to three characters: they are compared trimmed. No
    fit, or several, raise :class:`UnknownVatCodeError` naming the rate: the route then pins
    one.
    """
    fits: list[str] = []
    for code in codes:
        name = code.Code.strip()
        if code.IsBlocked or (code.VATTransactionType or "S").strip().upper() not in ("S", "B"):
            continue
        if (code.Type or "").strip().upper() == "I" or code.Percentage is None:
            continue
        percent = Decimal(str(code.Percentage))
        if percent < 1:
            percent *= HUNDRED  # Exact's fraction: 0.21 = 21 %
        if abs(percent - rate) < Decimal("0.0001") and 0 < len(name) <= MAX_VAT_CODE:
            fits.append(name)
    if len(fits) == 1:
        return fits[0]
    if not fits:
        raise UnknownVatCodeError(
            f"no ERP VAT code for {rate_text(rate)}: the division (vat/VATCodes) has no code "
            "for sales at that rate that is not blocked and excludes VAT; create one, or pin "
            "one in the route file (mapping.vat_codes)",
            rate,
        )
    raise UnknownVatCodeError(
        f"the ERP VAT codes {', '.join(repr(c) for c in sorted(fits))} all fit "
        f"{rate_text(rate)}: pin the right one in the route file (mapping.vat_codes)",
        rate,
    )


def _map_line(
    index: int, item: OrderLineItem | None, rules: MappingRules, tax_status: str, country: str
) -> tuple[list[MappedLine], Decimal]:
    """The ERP lines of one shop line (one per VAT rate), and what the route leaves off on
    purpose (an ignored promotion), as the shop priced it."""
    where = f"lineItems[{index}]"
    if item is None:
        raise _Reject(f"{where} is null")
    kind = _text(item.type) or "product"
    label = _text(item.label)
    if kind == "product":
        return _product_lines(where, item, label, rules, tax_status, country), Decimal(0)
    if kind in ("promotion", "discount", "credit"):
        return _discount_lines(where, item, kind, label, rules, tax_status, country)
    raise _Reject(
        f"{where}.type: line items of type {_show(kind)} ({_show(label)}) have no ERP mapping; "
        "only product, promotion, discount and credit lines can be sent"
    )


def _product_lines(
    where: str,
    item: OrderLineItem,
    label: str | None,
    rules: MappingRules,
    tax_status: str,
    country: str,
) -> list[MappedLine]:
    """A product line: its SKU's item, at the shop's unit price excluding VAT."""
    sku = _text(item.payload.productNumber if item.payload else None)
    if sku is None:
        raise _Reject(f"{where}.payload.productNumber is missing (label {_show(label)})")
    if len(sku) > MAX_SKU:
        raise _Reject(f"{where}.payload.productNumber is too long: {_show(sku)}")
    quantity = _quantity(item.quantity, f"{where}.quantity ({sku})")
    unit_price = _money(item.unitPrice, f"{where}.unitPrice ({sku})", UNIT)
    if unit_price < 0:
        raise _Reject(f"{where}.unitPrice ({sku}): negative price {unit_price}")
    expected = (unit_price * quantity).quantize(CENT, rounding=ROUND_HALF_UP)
    total = expected
    if item.totalPrice is not None:
        total = _money(item.totalPrice, f"{where}.totalPrice ({sku})")
        if abs(total - expected) > CENT:
            raise _Reject(
                f"{where}.totalPrice ({sku}): {total} is not quantity {quantity} * "
                f"unitPrice {unit_price} = {expected}"
            )
    parts = _tax_parts(item.price, total, tax_status, f"{where}.price", sku)
    if not parts:  # free of charge: booked at nothing, VAT from the item's own code
        return [MappedLine(sku, quantity, Decimal("0.0000"), (label or sku)[:MAX_DESCRIPTION])]
    return _vat_lines(
        parts,
        item_code=sku,
        quantity=quantity,
        description=label or sku,
        kind="product",
        country=country,
        rules=rules,
    )


def _discount_lines(
    where: str,
    item: OrderLineItem,
    kind: str,
    label: str | None,
    rules: MappingRules,
    tax_status: str,
    country: str,
) -> tuple[list[MappedLine], Decimal]:
    """A promotion, discount or credit: lines of the route's discount item, or (promotions
    ``ignore``) nothing, and its gross amount as what the route leaves off."""
    amount = _money(
        item.totalPrice if item.totalPrice is not None else item.unitPrice,
        f"{where}.totalPrice ({kind})",
    )
    if amount > 0:
        raise _Reject(f"{where}.totalPrice ({kind}): a {kind} must not add {amount}")
    if amount == 0:
        return [], Decimal(0)  # a free-shipping promotion or an expired voucher
    if rules.promotions == "ignore":
        return [], _gross(amount, item.price, tax_status)
    parts = _tax_parts(item.price, amount, tax_status, f"{where}.price", kind)
    lines = _vat_lines(
        parts,
        item_code=rules.discount_item_code,
        quantity=Decimal(1),
        description=label or kind.capitalize(),
        kind="discount",
        country=country,
        rules=rules,
    )
    return lines, Decimal(0)


def _gross(amount: Decimal, price: Any, tax_status: str) -> Decimal:
    """A shop price including its VAT (for what a route leaves off the ERP order)."""
    if tax_status != "net":
        return amount
    taxes = price.get("calculatedTaxes") if _is_mapping(price) else None
    tax = Decimal(0)
    for entry in taxes if isinstance(taxes, list) else []:
        if _is_mapping(entry) and entry.get("tax") is not None:
            tax += _money(entry.get("tax"), "calculatedTaxes.tax")
    return amount + tax


def _position(item: OrderLineItem | None) -> float:
    position = item.position if item is not None else None
    if isinstance(position, int | float) and not isinstance(position, bool):
        return float(position)
    return math.inf


# --- the public functions ------------------------------------------------------------------


def evaluate_order(raw: Mapping[str, Any], rules: MappingRules | None = None) -> Outcome:
    """Filter and validate one shop order. Never raises for bad input: it quarantines.

    Any shape is bad input: ``null`` or a number instead of the order, ``[]`` where an object
    belongs (PHP's empty object, read as ``{}``), a number where text or a list belongs,
    values too large for a float, nesting too deep to show, and the stand-ins staging keeps
    for orders it could not keep as they came (their reason is the quarantine reason).
    """
    rules = rules or MappingRules()
    raw_id = raw.get("id") if isinstance(raw, Mapping) else None
    shop_id = usable_order_id(raw_id) or "<missing id>"
    number = raw.get("orderNumber") if isinstance(raw, Mapping) else None
    number = storable_text(number, 255) if isinstance(number, str) and number else None
    try:
        if not isinstance(raw, Mapping):
            raise _Reject(f"expected a JSON object, got {_json_kind(raw)}")
        unreadable = unreadable_reason(raw)
        if unreadable is not None:
            raise _Reject(unreadable)
        order = _parse_order(raw)
        if shop_id == "<missing id>":
            if isinstance(raw_id, str) and raw_id.strip():
                raise _Reject(
                    f"id: not a usable order id (at most {MAX_ORDER_ID} printable "
                    f"characters): {_show(raw_id)}"
                )
            raise _Reject("id is missing")
        country, source = destination_country(order)
        if country is None:
            raise _Reject(f"no country: {source} are all missing")
        if country not in ISO_COUNTRIES:
            raise _Reject(f"{source}: unknown country code {_show(country)}")
        if country not in rules.allowed_countries:
            return Skipped(shop_id, number, country, outside_reason(country))
        skip = _filtered_out(raw, order, rules)
        if skip:
            return Skipped(shop_id, number, country, skip)
        mapped = _map(order, shop_id, country, rules)
        if rules.lookups:
            keys = tuple(lookup_key(raw, rule) for rule in rules.lookups)
            mapped = dataclasses.replace(mapped, lookup_keys=keys)
        return mapped
    except _Reject as reject:
        return Quarantined(shop_id, number, storable_text(str(reject)))
    except RecursionError:  # a value nested too deeply to even describe
        return Quarantined(shop_id, number, "the order is nested too deeply to be read")


def _json_kind(value: Any) -> str:
    """``null`` for None, else the Python type's name (``list``, ``int``, ``str`` …)."""
    return "null (NoneType)" if value is None else type(value).__name__


def _filtered_out(raw: Mapping[str, Any], order: ShopOrder, rules: MappingRules) -> str | None:
    """The route's other filters (state, amount, sales channel): a reason to skip, or None."""
    if rules.order_states:
        state = raw.get("stateMachineState")
        name = state.get("technicalName") if isinstance(state, Mapping) else None
        if not isinstance(name, str) or name not in rules.order_states:
            return f"order state {_show(name)} is not one of {sorted(rules.order_states)}"
    channel = raw.get("salesChannelId")
    if rules.sales_channel_ids and (
        not isinstance(channel, str) or channel not in rules.sales_channel_ids
    ):
        return f"sales channel {_show(channel)} is not delivered by this route"
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


#: What ``source.order_number_format: digits`` promises of every order number (ASCII digits).
ORDER_NUMBER_DIGITS = re.compile(r"[0-9]+")


def _map(order: ShopOrder, shop_id: str, country: str, rules: MappingRules) -> MappedOrder:
    number = _order_number(order, rules)
    currency = _currency(order)
    customer = _customer(order, country)
    tax_status = _text(order.taxStatus)
    if tax_status not in TAX_STATUSES:
        raise _Reject(
            f"taxStatus: expected one of {', '.join(TAX_STATUSES)}, got {_show(order.taxStatus)}"
        )
    if order.amountTotal is None:
        raise _Reject("amountTotal is missing")
    amount_total = _money(order.amountTotal, "amountTotal")
    lines, left_off = _order_lines(order, rules, tax_status, country)
    _check_total(lines, amount_total - left_off, tax_status, left_off)
    values = {
        "order_number": number,
        "shop_order_id": shop_id,
        "email": customer.email,
        "country": country,
        "customer_name": customer.name,
        "customer_number": customer.number,
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
        order_date=_order_date(order, rules.shop_timezone),
        currency=currency,
        customer_email=customer.email,
        customer_number=customer.number,
        customer_name=customer.name[:MAX_DESCRIPTION],
        customer_country=customer.country,
        shipping_country=country,
        description=description,
        lines=tuple(lines),
        your_ref=your_ref,
        extra_fields=extra,
        tax_status=tax_status,
        amount_total=amount_total,
    )


def _order_number(order: ShopOrder, rules: MappingRules) -> str:
    """The shop's order number, as the ERP's YourRef can hold it and the route promises it."""
    number = _text(order.orderNumber)
    if number is None:
        raise _Reject("orderNumber is missing")
    if len(number) > MAX_YOUR_REF:
        raise _Reject(f"orderNumber is longer than the ERP's YourRef ({MAX_YOUR_REF})")
    if rules.order_number_digits_only and not ORDER_NUMBER_DIGITS.fullmatch(number):
        raise _Reject(
            f"orderNumber {_show(number)} is not all digits, and the route says its shop numbers "
            "orders with digits only (source.order_number_format: digits); set it to 'any' and "
            "give the route a YourRef template no other route on the division can produce"
        )
    return number


def _currency(order: ShopOrder) -> str:
    currency = _text(order.currency.isoCode if order.currency else None)
    currency = currency.upper() if currency else None
    if currency is None:
        raise _Reject("currency.isoCode is missing")
    if not _CURRENCY.match(currency):
        raise _Reject(f"currency.isoCode: not an ISO 4217 code: {_show(currency)}")
    return currency


@dataclass(frozen=True)
class _Customer:
    """Who ordered, as the ERP account is found and named."""

    email: str
    #: The company, else the person, else the e-mail address.
    name: str
    #: The shop's customer number, "" when it has none.
    number: str
    #: The billing country when it is a known one, else the shipping country.
    country: str


def _customer(order: ShopOrder, country: str) -> _Customer:
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
    return _Customer(email, name, _text(customer.customerNumber) or "", customer_country)


def _order_lines(
    order: ShopOrder, rules: MappingRules, tax_status: str, country: str
) -> tuple[list[MappedLine], Decimal]:
    """The ERP lines of the order's line items and shipping, and what the route leaves off on
    purpose (ignored promotions, shipping without an item), as the shop priced it."""
    if not order.lineItems:
        raise _Reject("lineItems: the order has no line items")
    lines: list[MappedLine] = []
    left_off = Decimal(0)  # what the route leaves off the ERP order on purpose (shop prices)
    # Shopware returns line items in no fixed order: book them in the shop's own order.
    for index, item in sorted(enumerate(order.lineItems), key=lambda p: _position(p[1])):
        mapped, skipped = _map_line(index, item, rules, tax_status, country)
        lines += mapped
        left_off += skipped
    if not any(line.kind == "product" for line in lines):
        raise _Reject("lineItems: the order has no product lines")
    if order.shippingTotal is not None:
        shipping = _money(order.shippingTotal, "shippingTotal")
        if shipping < 0:
            raise _Reject(f"shippingTotal: negative shipping cost {shipping}")
        if shipping > 0 and rules.shipping_item_code is None:
            left_off += _gross(shipping, order.shippingCosts, tax_status)
        elif shipping > 0:
            parts = _tax_parts(
                order.shippingCosts, shipping, tax_status, "shippingCosts", "shipping"
            )
            lines += _vat_lines(
                parts,
                item_code=rules.shipping_item_code,
                quantity=Decimal(1),
                description=rules.shipping_description,
                kind="shipping",
                country=country,
                rules=rules,
            )
    return lines, left_off


def _check_total(
    lines: list[MappedLine], expected: Decimal, tax_status: str, left_off: Decimal
) -> None:
    """The invariant: what the ERP will invoice (lines plus the VAT it adds per line) equals
    what the customer paid, give or take a cent per line of rounding."""
    invoice = sum((line.amount + line.vat for line in lines), Decimal(0))
    if abs(invoice - expected) > CENT * max(1, len(lines)):
        by_rate: dict[str, Decimal] = {}
        for line in lines:
            key = rate_text(line.vat_rate)
            by_rate[key] = by_rate.get(key, Decimal(0)) + line.amount
        detail = ", ".join(f"{amount} at {rate}" for rate, amount in sorted(by_rate.items()))
        paid = "amountTotal" if not left_off else f"amountTotal less {left_off} left off"
        raise _Reject(
            f"amounts do not add up: the {tax_status} lines come to {invoice} including VAT "
            f"({detail}), but {paid} is {expected}"
        )


class UnknownItemError(ValueError):
    """A product number that the ERP has no item for: the order is quarantined."""


class UnknownVatCodeError(ValueError):
    """A VAT rate with no ERP VAT code (or several): the order is quarantined."""

    def __init__(self, message: str, rate: Decimal | None = None) -> None:
        super().__init__(message)
        self.rate = rate


def to_sales_order(
    order: MappedOrder,
    *,
    account_id: str,
    item_ids: Mapping[str, str],
    vat_codes: Mapping[Decimal, str] | None = None,
    lookups: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The ``POST salesorder/SalesOrders`` body, once customer, items and the VAT codes of
    the rates the route does not pin are ERP ids and codes; ``lookups``: the ERP fields the
    route's look-up tables set (``ShippingMethod``, ``PaymentCondition`` ...)."""
    missing = sorted(order.item_codes - item_ids.keys())
    if missing:
        raise UnknownItemError(
            "no ERP item with Code "
            + ", ".join(repr(code) for code in missing)
            + " (logistics/Items); create the item in the ERP or fix the product number"
        )
    codes = vat_codes or {}
    unresolved = sorted(order.vat_rates_to_look_up - codes.keys())
    if unresolved:
        raise UnknownVatCodeError(
            "no ERP VAT code for " + ", ".join(rate_text(rate) for rate in unresolved),
            unresolved[0],
        )
    return {
        **dict(order.extra_fields),
        **(lookups or {}),
        "OrderedBy": account_id,
        "YourRef": order.your_ref or order.order_number,
        "OrderDate": order.order_date,
        "Description": order.description,
        "Currency": order.currency,
        "SalesOrderLines": [_sales_order_line(line, item_ids, codes) for line in order.lines],
    }


def _sales_order_line(
    line: MappedLine, item_ids: Mapping[str, str], codes: Mapping[Decimal, str]
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "Item": item_ids[line.item_code],
        "Quantity": float(line.quantity),
        "NetPrice": float(line.net_price),
        "Description": line.description,
    }
    code = line.vat_code or (codes.get(line.vat_rate) if line.vat_rate is not None else None)
    if code is not None:
        body["VATCode"] = code
    return body


# --- look-up tables ------------------------------------------------------------------------


def lookup_key(raw: Mapping[str, Any], rule: LookupRule) -> LookupKey:
    """The shop value ``rule`` looks up in ``raw``: the first delivery's shipping method, the
    latest transaction's payment method (as Shopware takes it: transactions by ``createdAt``,
    the last), or the sales channel's id."""
    if rule.kind == "sales_channel":
        return LookupKey(rule.kind, _text(raw.get("salesChannelId")), "salesChannelId")
    if rule.kind == "shipping_method":
        rows, name, entity = raw.get("deliveries"), "deliveries", "shippingMethod"
        entries = list(enumerate(rows)) if isinstance(rows, list) else []
        entries = [(i, d) for i, d in entries if isinstance(d, Mapping)][:1]
    else:
        rows, name, entity = raw.get("transactions"), "transactions", "paymentMethod"
        entries = [(i, t) for i, t in enumerate(rows or []) if isinstance(t, Mapping)]
        entries = sorted(entries, key=lambda p: str(p[1].get("createdAt") or ""))[-1:]
    if not entries:
        return LookupKey(rule.kind, None, f"{name}[]")
    index, row = entries[0]
    where = f"{name}[{index}]"
    if rule.by == "id":
        return LookupKey(rule.kind, _text(row.get(f"{entity}Id")), f"{where}.{entity}Id")
    method = row.get(entity)
    method = method if isinstance(method, Mapping) else {}
    if rule.by == "technical_name":
        return LookupKey(
            rule.kind, _text(method.get("technicalName")), f"{where}.{entity}.technicalName"
        )
    translated = method.get("translated")
    value = _text(translated.get("name")) if isinstance(translated, Mapping) else None
    return LookupKey(rule.kind, value or _text(method.get("name")), f"{where}.{entity}.name")


def decide_lookup(rule: LookupRule, key: LookupKey) -> LookupOutcome:
    """What the route's table says of the order's value (no ERP asked: ``ask`` when the route
    finds it by description in the ERP)."""
    if key.value is None:
        return unmatched_lookup(rule, f"{key.where} is missing")
    if rule.dynamic:
        return LookupOutcome("ask", key.value)
    found = rule.find(key.value)
    if found is not None:
        return LookupOutcome("matched", found)
    return unmatched_lookup(
        rule, f"{key.where} {_show(key.value)} is not in mapping.lookups.{rule.kind}.table"
    )


def unmatched_lookup(rule: LookupRule, why: str) -> LookupOutcome:
    """The route's rule for a value its table does not cover: its default, or quarantine."""
    if rule.unmatched == "default":
        return LookupOutcome("defaulted", rule.default)
    return LookupOutcome(
        "quarantined",
        None,
        f"{rule.kind.replace('_', ' ')}: {why} (add it to the table, or set "
        f"mapping.lookups.{rule.kind}.unmatched: default)",
    )
