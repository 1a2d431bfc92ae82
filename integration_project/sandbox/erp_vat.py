"""VAT in the sandbox ERP: the division's VAT codes, and the amounts of a sales order line.

``vat/VATCodes`` lists one sales code per rate the sandbox's orders carry, the 0 % codes
:data:`INTRA_EU_VAT_CODE` and :data:`EXPORT_VAT_CODE`, and traps at 21 % a mapping must not
pick (:data:`VAT_CODE_TRAPS`). A line's ``AmountFC`` / ``AmountFCExclVat`` / ``VATAmount``
follow from its code as Exact computes them (:func:`line_amounts`), in exact decimal cents.
"""

from __future__ import annotations

import dataclasses
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from integration_project.sandbox.world import ORDER_TAX_RATES


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


def seed_vat_codes() -> list[dict[str, Any]]:
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


def cents(value: Decimal) -> Decimal:
    return value.quantize(_CENT, rounding=ROUND_HALF_UP)


@dataclasses.dataclass(frozen=True)
class Invoice:
    """What the ERP will invoice for one sales order (in the order's currency)."""

    total: Decimal  # incl. VAT (the order's AmountFC)
    excl_vat: Decimal  # AmountFCExclVat
    vat: Decimal  # VATAmount
    lines: int


def line_amounts(quantity: float, net_price: float, vat: dict[str, Any]) -> dict[str, Any]:
    """A sales order line's amounts as Exact computes them from its VAT code.

    ``AmountFC`` = Quantity x NetPrice, rounded to cents; for an excluding code (Type E, and
    the 0 % types B/N) that excludes VAT and VAT = AmountFC x Percentage; for an including
    code (Type I) it includes VAT: VAT = AmountFC x p / (1 + p).
    """
    amount = cents(Decimal(str(quantity)) * Decimal(str(net_price)))
    rate = Decimal(str(vat["Percentage"] or 0))
    if vat["Type"] == "I":
        tax = cents(amount * rate / (1 + rate))
        excl = amount - tax
    else:
        tax = cents(amount * rate)
        excl = amount
    return {
        "VATCode": vat["Code"],
        "VATPercentage": float(rate),
        "VATAmount": float(tax),
        "AmountFC": float(amount),
        "AmountFCExclVat": float(excl),
    }
