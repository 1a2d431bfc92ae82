"""A Spryker order record (``spy_sales_order`` with its items, expenses, totals and addresses,
as the Data Exchange API answers) as the Shopware order the mapping reads
(:class:`~integration_project.shopware.models.ShopOrder`). Pure: data in, data out.

Money arrives in integer cents and is worked in :class:`~decimal.Decimal`; it leaves as a JSON
number of two decimals, as Shopware sends it. The tax of each line is the line's total at its
``tax_rate`` (out of the gross price in ``GROSS_MODE``, on top of the net price in
``NET_MODE``), which is how the mapping checks it. ``amountTotal`` is the order's
``grand_total``: what the customer paid, whatever the lines add up to; the mapping quarantines
an order whose lines do not come to it. An order whose every rate is 0 % is ``tax-free``.
Shipping expenses become the shipping costs; any other expense (a payment fee, say) becomes a
``custom`` line, which the mapping refuses with a reason instead of booking it as something
it is not. A record that cannot be read becomes a stand-in the mapping quarantines.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from pydantic import ValidationError

from integration_project.shopware.models import format_shop_datetime, unreadable_order
from integration_project.spryker.models import (
    NET_MODE,
    SHIPMENT_EXPENSE_TYPE,
    SalesExpense,
    SalesOrder,
    SalesOrderAddress,
    SalesOrderItem,
    SalesOrderTotals,
    parse_spryker_datetime,
)

CENT = Decimal("0.01")
HUNDRED = Decimal(100)


def money(cents: int | Decimal) -> float:
    """Cents as the JSON number of currency units Shopware would send (``1999`` -> 19.99)."""
    return float((Decimal(cents) / HUNDRED).quantize(CENT))


def _rate(value: Any) -> Decimal:
    try:
        rate = Decimal(str(value)) if value is not None else Decimal(0)
    except InvalidOperation:
        raise ValueError(f"tax_rate {value!r} is not a number") from None
    if not rate.is_finite() or not 0 <= rate < HUNDRED:
        raise ValueError(f"tax_rate {value!r} is not a VAT rate")
    return rate


def _tax_cents(total: int, rate: Decimal, tax_status: str) -> int:
    """The VAT in a line's ``total`` cents: out of it when gross, on top of it when net."""
    share = rate / (HUNDRED + rate) if tax_status == "gross" else rate / HUNDRED
    return int((Decimal(total) * share).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def calculated_price(
    unit: int, quantity: int, total: int, rate: Decimal, tax_status: str
) -> dict[str, Any]:
    """A Shopware ``CalculatedPrice`` of one rate, from cents."""
    if tax_status == "tax-free":
        taxes: list[dict[str, Any]] = []
        rules: list[dict[str, Any]] = []
    else:
        tax = _tax_cents(total, rate, tax_status)
        taxes = [{"tax": money(tax), "taxRate": float(rate), "price": money(total)}]
        rules = [{"taxRate": float(rate), "percentage": 100.0}]
    return {
        "unitPrice": money(unit),
        "quantity": quantity,
        "totalPrice": money(total),
        "calculatedTaxes": taxes,
        "taxRules": rules,
    }


def _line(
    kind: str, label: str, unit: int, quantity: int, rate: Decimal, tax_status: str
) -> dict[str, Any]:
    total = unit * quantity
    return {
        "type": kind,
        "label": label,
        "quantity": quantity,
        "unitPrice": money(unit),
        "totalPrice": money(total),
        "price": calculated_price(unit, quantity, total, rate, tax_status),
    }


def _address(rows: list[SalesOrderAddress] | None) -> dict[str, Any] | None:
    if not rows:
        return None
    row = rows[0]
    country = row.country[0] if row.country else None
    street = " ".join(p.strip() for p in (row.address1, row.address2) if p and p.strip())
    return {
        "id": str(row.id_sales_order_address) if row.id_sales_order_address else None,
        "firstName": row.first_name,
        "lastName": row.last_name,
        "company": row.company,
        "street": street or None,
        "zipcode": row.zip_code,
        "city": row.city,
        "country": {"iso": country.iso2_code, "name": country.name} if country else None,
    }


def _tax_status(order: SalesOrder) -> str:
    rates = [_rate(i.tax_rate) for i in order.salesOrderItems or []]
    rates += [_rate(e.tax_rate) for e in order.salesExpenses or []]
    if rates and not any(rates):
        return "tax-free"
    return "net" if order.price_mode == NET_MODE else "gross"


def _unit(row: SalesOrderItem | SalesExpense, net_mode: bool) -> int:
    """A row's unit price in cents in the order's price mode (its net price in ``NET_MODE``)."""
    cents = row.net_price if net_mode else row.gross_price
    if cents is None:
        field = "net_price" if net_mode else "gross_price"
        raise ValueError(f"{type(row).__name__} {field} is missing")
    return cents


def _item_lines(order: SalesOrder, tax_status: str) -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = []
    net_mode = order.price_mode == NET_MODE
    items = sorted(order.salesOrderItems or [], key=lambda i: i.id_sales_order_item or 0)
    for item in items:
        rate, quantity = _rate(item.tax_rate), item.quantity or 1
        line = _line("product", item.name or "", _unit(item, net_mode), quantity, rate, tax_status)
        line["id"] = str(item.id_sales_order_item)
        line["payload"] = {"productNumber": item.sku}
        lines.append(line)
        discount = item.discount_amount_full_aggregation or 0
        if discount:
            label = f"Discount {item.sku}"
            lines.append(_line("discount", label, -discount, 1, rate, tax_status))
    return lines


def _expenses(order: SalesOrder, tax_status: str) -> tuple[list[dict[str, Any]], int, dict]:
    """Lines for expenses other than shipping and shipping discounts, the shipping cents,
    and shipping's ``CalculatedPrice`` (one tax entry per rate)."""
    lines: list[dict[str, Any]] = []
    shipping: dict[Decimal, int] = {}
    net_mode = order.price_mode == NET_MODE
    for expense in sorted(order.salesExpenses or [], key=lambda e: e.id_sales_expense or 0):
        rate, unit = _rate(expense.tax_rate), _unit(expense, net_mode)
        if expense.type != SHIPMENT_EXPENSE_TYPE:
            lines.append(
                _line("custom", expense.name or str(expense.type), unit, 1, rate, tax_status)
            )
            continue
        shipping[rate] = shipping.get(rate, 0) + unit
        discount = expense.discount_amount_aggregation or 0
        if discount:
            lines.append(_line("discount", "Shipping discount", -discount, 1, rate, tax_status))
    cents = sum(shipping.values())
    taxes = [] if tax_status == "tax-free" else [
        {"tax": money(_tax_cents(c, r, tax_status)), "taxRate": float(r), "price": money(c)}
        for r, c in sorted(shipping.items())
    ]  # fmt: skip
    costs = {"unitPrice": money(cents), "quantity": 1, "totalPrice": money(cents),
             "calculatedTaxes": taxes}  # fmt: skip
    return lines, cents, costs


def _totals(order: SalesOrder) -> SalesOrderTotals | None:
    """The newest totals row: Spryker adds one each time it recalculates an order."""
    rows = order.salesOrderTotals or []
    return max(rows, key=lambda t: t.id_sales_order_totals or 0) if rows else None


def to_shop_order(record: Any) -> dict[str, Any]:
    """The Spryker order ``record`` as a Shopware order (see the module's docstring)."""
    try:
        order = SalesOrder.model_validate(record)
        return _convert(order)
    except (ValidationError, ValueError, TypeError) as exc:
        key = record.get("id_sales_order") if isinstance(record, dict) else None
        standin = {"id": str(key)} if key is not None else {}
        if isinstance(record, dict):
            standin["orderNumber"] = record.get("order_reference")
        reason = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
        return unreadable_order(f"Spryker order: {reason}", standin)


def _convert(order: SalesOrder) -> dict[str, Any]:
    created = parse_spryker_datetime(order.created_at)
    if created is None:
        raise ValueError(f"created_at {order.created_at!r} is not a date-time")
    tax_status = _tax_status(order)
    extra, shipping_cents, shipping_costs = _expenses(order, tax_status)
    lines = _item_lines(order, tax_status) + extra
    for position, line in enumerate(lines, start=1):
        line["position"] = position
    totals = _totals(order)
    billing = _address(order.billingAddress)
    shipping_address = _address(order.shippingAddress)
    stamp = format_shop_datetime(created)
    grand = totals.grand_total if totals else None
    return {
        "id": str(order.id_sales_order),
        "autoIncrement": order.id_sales_order,
        "orderNumber": order.order_reference,
        "orderDateTime": stamp,
        "createdAt": stamp,
        "salesChannelId": order.store,
        "taxStatus": tax_status,
        "amountTotal": money(grand) if grand is not None else None,
        "amountNet": money(grand - (totals.tax_total or 0)) if grand is not None else None,
        "positionPrice": money(totals.subtotal or 0) if totals else None,
        "shippingTotal": money(shipping_cents),
        "shippingCosts": shipping_costs,
        "currency": {"isoCode": order.currency_iso_code},
        "orderCustomer": {
            "email": order.email,
            "firstName": order.first_name,
            "lastName": order.last_name,
            "company": billing["company"] if billing else None,
            "customerNumber": order.customer_reference,
        },
        "billingAddress": billing,
        "deliveries": [{"shippingOrderAddress": shipping_address}] if shipping_address else [],
        "lineItems": lines,
    }
