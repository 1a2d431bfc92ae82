"""Shopware's cart arithmetic for the sandbox's orders: prices, taxes, shipping costs, VAT ids.

Taxes follow Shopware's cart (``QuantityPriceCalculator``, ``AmountCalculator``, horizontal
tax calculation): every price is a ``CalculatedPrice`` with ``calculatedTaxes`` (one entry per
rate: ``{tax, taxRate, price}``, ``taxRate`` a percentage) and ``taxRules``. The order's
``taxStatus`` (:func:`shop_tax_status`) is ``gross`` (B2C: prices include VAT, a tax's ``price``
is the gross amount), ``net`` (B2B: prices exclude VAT, ``price`` is the net amount, VAT comes on
top) or ``tax-free`` (exports, intra-EU B2B with a VAT id: net prices, empty ``calculatedTaxes``
and ``taxRules``). Rates are the shipping country's (EU one-stop-shop,
:data:`~integration_project.sandbox.world.VAT_RATES`), by the product's tax class; the promotion
and the shipping costs are split over the rates of the goods in proportion to their prices
(Shopware's ``PercentageTaxRuleBuilder``). All sums are integral cents, so every run and every
platform rounds the same way.
"""

from __future__ import annotations

import functools
import math
import re
from typing import Any

from integration_project.sandbox.world import (
    CURRENCIES,
    SHOP_COUNTRY,
    TAX_CLASSES,
    VAT_RATES,
    Product,
    stable_id,
)
from integration_project.settings import EU_27

#: Shopware's cash rounding of every currency the sandbox bills in.
ROUNDING = {"decimals": 2, "interval": 0.01, "roundForNet": True}
#: Rates in tenths of a percent (19.0 -> 190, 5.5 -> 55): cent arithmetic stays integral.
_RATES10: dict[str, tuple[int, int]] = {
    iso: (round(standard * 10), round(reduced * 10))
    for iso, (standard, reduced) in VAT_RATES.items()
}
#: Shipping costs per zone in EUR cents, gross (German VAT included), as the shop stores them.
_SHIPPING_EUR_CENTS = {"DE": 390, "EU": 590, "WORLD": 1490}
_FREE_SHIPPING_EUR_CENTS = 6000  # goods worth this much (in EUR) ship free

#: One rate's share of an amount: (rate10, cents, percentage of the amount).
Part = tuple[int, int, float]


def shop_tax_status(ship: str, *, company: bool, b2b: bool) -> str:
    """Shopware's ``TaxDetector`` as the two sandbox shops are configured.

    Shipments outside the EU are exports: ``tax-free``. The storefront's customer group shows
    gross prices: ``gross``. In the B2B shop (``b2b``) company customers see net prices
    (``net``), and a company shipping to another EU member state than :data:`SHOP_COUNTRY`
    has a VAT id on file and buys tax-free (intra-community supply, reverse charge).
    """
    if ship not in EU_27:
        return "tax-free"
    if not (b2b and company):
        return "gross"
    return "net" if ship == SHOP_COUNTRY else "tax-free"


def shipping_zone(ship: str) -> str:
    """The shipping method's zone (and price list): ``DE``, ``EU`` or ``WORLD``."""
    return "DE" if ship == "DE" else "EU" if ship in EU_27 else "WORLD"


def _half_up(num: int, den: int) -> int:
    """``num / den`` rounded half away from zero, as PHP's ``round`` does (``den`` > 0)."""
    quotient = (2 * abs(num) + den) // (2 * den)
    return quotient if num >= 0 else -quotient


def _in_currency(eur_cents: int, currency: str) -> int:
    factor = CURRENCIES[currency][2]
    return eur_cents if factor == 1.0 else math.floor(eur_cents * factor + 0.5)


def _net_of(gross_eur_cents: int, tax_class: str = "standard") -> int:
    """The net price the shop stores next to a gross one (its own country's rate)."""
    rate10 = _RATES10[SHOP_COUNTRY][TAX_CLASSES[tax_class]]
    return _half_up(gross_eur_cents * 1000, 1000 + rate10)


@functools.cache
def _unit_cents(product: Product, currency: str, net: bool) -> int:
    """The product's unit price in cents of ``currency``: gross, or net (``net``). Cached: bulk
    generation asks for the same few prices a hundred thousand times."""
    eur = round(product.price * 100)
    if net:
        eur = _net_of(eur, product.tax_class)
    return _in_currency(eur, currency)


def _split(amount: int, weights: dict[int, int]) -> list[Part]:
    """``amount`` (cents) over the rates in ``weights`` (rate -> cents), in proportion:
    ``[(rate, cents, percentage)]`` whose cents sum exactly to ``amount`` (the last rate takes
    the rounding rest). Shopware's ``PercentageTaxRuleBuilder``."""
    if not weights:
        return []
    total = sum(weights.values())
    items = list(weights.items())
    if len(items) == 1 or total == 0:
        return [(items[0][0], amount, 100.0)]
    parts, rest = [], amount
    for rate, weight in items[:-1]:
        part = _half_up(amount * weight, total)
        parts.append((rate, part, weight / total * 100))
        rest -= part
    rate, weight = items[-1]
    parts.append((rate, rest, weight / total * 100))
    return parts


def _copy_price(price: dict[str, Any]) -> dict[str, Any]:
    """A ``CalculatedPrice`` that shares no list or dict with ``price``."""
    return {
        **price,
        "calculatedTaxes": [dict(tax) for tax in price["calculatedTaxes"]],
        "taxRules": [dict(rule) for rule in price["taxRules"]],
    }


class Cart:
    """One order's prices as Shopware's cart computes them, in integral cents.

    Add the goods (:meth:`goods`), then maybe the promotion (:meth:`discount`), then the
    shipping costs (:meth:`shipping`): each returns its ``CalculatedPrice`` and adds its taxes
    to the order's, per rate. :meth:`order_fields` then sums the order up.
    """

    def __init__(self, currency: str, ship: str, tax_status: str) -> None:
        self.currency = currency
        self.ship = ship
        self.tax_status = tax_status
        self.gross = tax_status == "gross"
        self.taxed = tax_status != "tax-free"
        self.goods_cents = 0
        self.position_cents = 0  # goods and promotion
        self.shipping_cents = 0
        #: rate10 -> [price cents, tax cents] of everything priced so far.
        self.taxes_by_rate: dict[int, list[int]] = {}
        #: rate10 -> cents of goods at that rate: the weights promotion and shipping split by.
        self._goods_by_rate: dict[int, int] = {}
        self._rates10 = _RATES10.get(ship, _RATES10[SHOP_COUNTRY])

    @property
    def tax_rates(self) -> tuple[float, ...]:
        """The VAT rates (percent) the order carries, ascending; () if tax-free."""
        return tuple(sorted(rate10 / 10 for rate10 in self.taxes_by_rate))

    def goods(self, product: Product, quantity: int) -> dict[str, Any]:
        """A product line's price: ``quantity`` at the product's unit price."""
        unit = _unit_cents(product, self.currency, not self.gross)
        total = unit * quantity
        self.goods_cents += total
        self.position_cents += total
        parts: list[Part] = []
        if self.taxed:
            rate10 = self._rates10[TAX_CLASSES[product.tax_class]]
            self._goods_by_rate[rate10] = self._goods_by_rate.get(rate10, 0) + total
            parts = [(rate10, total, 100.0)]
        return self._price(unit, quantity, total, parts)

    def discount(self) -> dict[str, Any]:
        """The promotion line's price: 10 % off the goods, over their rates."""
        discount = _half_up(-self.goods_cents * 10, 100)
        self.position_cents += discount
        return self._price(discount, 1, discount, _split(discount, self._goods_by_rate))

    def shipping(self) -> dict[str, Any]:
        """The shipping costs' price: the zone's, unless the goods ship free (in EUR)."""
        factor = CURRENCIES[self.currency][2]
        free_shipping = self.goods_cents / factor >= _FREE_SHIPPING_EUR_CENTS
        if not free_shipping:
            eur = _SHIPPING_EUR_CENTS[shipping_zone(self.ship)]
            self.shipping_cents = _in_currency(eur if self.gross else _net_of(eur), self.currency)
        cents = self.shipping_cents
        return self._price(cents, 1, cents, _split(cents, self._goods_by_rate))

    def order_fields(self, shipping_price: dict[str, Any]) -> dict[str, Any]:
        """The order's amounts, ``currencyFactor`` to ``taxCalculationType`` in the order's
        field order; ``shipping_price`` is what :meth:`shipping` returned."""
        tax_cents = sum(tax for _, tax in self.taxes_by_rate.values())
        if self.gross:
            total_cents = self.position_cents + self.shipping_cents
            net_cents = total_cents - tax_cents
        else:  # net; tax-free has no taxes
            net_cents = self.position_cents + self.shipping_cents
            total_cents = net_cents + tax_cents
        total, net = total_cents / 100, net_cents / 100
        taxed_cents = sum(price for price, _ in self.taxes_by_rate.values())
        order_taxes = [
            {"tax": tax / 100, "taxRate": rate10 / 10, "price": price / 100}
            for rate10, (price, tax) in self.taxes_by_rate.items()
        ]
        order_rules = [
            {"taxRate": rate10 / 10, "percentage": price / taxed_cents * 100 if taxed_cents else 0}
            for rate10, (price, _) in self.taxes_by_rate.items()
        ]
        return {
            "currencyFactor": CURRENCIES[self.currency][2],
            "price": {
                "netPrice": net,
                "totalPrice": total,
                "calculatedTaxes": order_taxes,
                "taxRules": order_rules,
                "positionPrice": self.position_cents / 100,
                "rawTotal": total,
                "taxStatus": self.tax_status,
            },
            "amountTotal": total,
            "amountNet": net,
            "positionPrice": self.position_cents / 100,
            "taxStatus": self.tax_status,
            "shippingCosts": _copy_price(shipping_price),
            "shippingTotal": shipping_price["totalPrice"],
            "itemRounding": dict(ROUNDING),
            "totalRounding": dict(ROUNDING),
            "taxCalculationType": "horizontal",
        }

    def _price(self, unit: int, quantity: int, total: int, parts: list[Part]) -> dict[str, Any]:
        """A Shopware ``CalculatedPrice`` (cents in, euros out); adds its taxes to
        :attr:`taxes_by_rate` for the order's sum."""
        taxes, rules = [], []
        for rate10, price, percentage in parts:
            tax = _half_up(price * rate10, 1000 + rate10 if self.gross else 1000)
            rate = rate10 / 10
            taxes.append({"tax": tax / 100, "taxRate": rate, "price": price / 100})
            rules.append({"taxRate": rate, "percentage": percentage})
            slot = self.taxes_by_rate.get(rate10)
            if slot is None:
                self.taxes_by_rate[rate10] = [price, tax]
            else:
                slot[0] += price
                slot[1] += tax
        return {
            "unitPrice": unit / 100,
            "quantity": quantity,
            "totalPrice": total / 100,
            "calculatedTaxes": taxes,
            "taxRules": rules,
            "referencePrice": None,
            "listPrice": None,
            "regulationPrice": None,
        }


_VAT_ID_SHAPES = {
    "NL": "{9}B01", "AT": "U{8}", "BE": "0{9}", "FR": "{11}", "IT": "{11}", "ES": "B{8}",
    "PL": "{10}", "IE": "{7}A", "SE": "{10}01", "DK": "{8}", "PT": "{9}", "FI": "{8}",
    "DE": "{9}",
}  # fmt: skip


def vat_id(iso: str, customer_number: str) -> str:
    """A VAT id in the shape of ``iso``'s (not checksummed), the same for a customer always."""
    digits = str(int(stable_id("vat", iso, customer_number), 16))
    shape = _VAT_ID_SHAPES.get(iso, "{9}")
    out, i = iso, 0
    for part in re.split(r"(\{\d+\})", shape):
        if part.startswith("{"):
            n = int(part[1:-1])
            out, i = out + digits[i : i + n], i + n
        else:
            out += part
    return out
