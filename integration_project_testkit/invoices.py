"""Money adds up: what the sandbox ERP will invoice for each sales order (its lines plus the VAT
the ERP computes per line from each line's VAT code) equals what the customer paid in the shop
(``amountTotal``), give or take a cent per line of rounding.

Used by every test that delivers orders (the route tests, the two-route tests, the chaos test).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from integration_project.sandbox.erp import SandboxErp

CENT = Decimal("0.01")


def invoice_mismatches(
    erp: SandboxErp, shop_orders: Mapping[str, Mapping[str, Any]]
) -> tuple[int, list[str]]:
    """(orders compared, one line per order whose invoice is not what its customer paid).

    ``shop_orders`` maps each ``YourRef`` the route sends to the shop order it came from; every
    sales order in the ERP must be one of them.
    """
    problems: list[str] = []
    invoices = erp.invoices()
    for ref, invoice in invoices.items():
        order = shop_orders.get(ref)
        if order is None:
            problems.append(f"{ref}: in the ERP, but no shop order has that YourRef")
            continue
        paid = Decimal(str(order["amountTotal"]))
        if abs(invoice.total - paid) > CENT * max(1, invoice.lines):
            problems.append(
                f"{ref}: the ERP invoices {invoice.total} ({invoice.excl_vat} + VAT "
                f"{invoice.vat}, {invoice.lines} lines), the customer paid {paid} "
                f"({order.get('taxStatus')})"
            )
    return len(invoices), problems


def by_ref(orders: Iterable[Mapping[str, Any]], template: str = "{}") -> dict[str, Any]:
    """Shop orders keyed by the ``YourRef`` a route makes of their number (``"B2B-{}"``)."""
    return {template.format(order["orderNumber"]): order for order in orders}


def assert_invoiced_as_paid(
    erp: SandboxErp, shop_orders: Mapping[str, Mapping[str, Any]], *, at_least: int = 1
) -> int:
    """Fail (``AssertionError``) unless at least ``at_least`` sales orders were compared and
    every one is invoiced at what its customer paid; the number compared."""
    compared, problems = invoice_mismatches(erp, shop_orders)
    if compared < at_least:
        raise AssertionError(f"only {compared} sales orders to compare")
    if problems:
        raise AssertionError("\n".join(problems[:20]))
    return compared
