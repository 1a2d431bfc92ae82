"""Deterministic seeded data for the sandbox: catalogue, customers, and Shopware orders.

Both sandbox systems are built from the same :class:`SandboxData`, so they agree the way a real
shop and ERP do: every catalogue SKU is an ERP item (``Code`` = SKU), about half the customers
already are ERP accounts (matched by e-mail), and :data:`UNKNOWN_PRODUCTS` are sold by the shop
but unknown to the ERP.

:class:`OrderFactory` produces full Shopware order JSON (camelCase, every field the OpenAPI
``Order`` schema and its associations require) and records the ground truth of each order
(:class:`OrderTruth`: EU or not, malformed or not) so tests can compute what the route should do
without re-implementing the route.

Mix, per seed and reproducible: ~70 % of orders ship inside the EU, ~30 % to GB/CH/US/NO; ~10 %
bill to another country than they ship to; ~20 % carry a ``promotion`` line; ~3 % are malformed,
one kind each (see :data:`MALFORMED_KINDS`). Orders are ``open`` unless asked otherwise;
``state="random"`` draws from :data:`STATE_SHARES` (~5 % cancelled, ~10 % completed, ~5 % in
progress, the rest open).

Taxes follow Shopware's cart (``QuantityPriceCalculator``, ``AmountCalculator``, horizontal
tax calculation): every price is a ``CalculatedPrice`` with ``calculatedTaxes`` (one entry per
rate: ``{tax, taxRate, price}``, ``taxRate`` a percentage) and ``taxRules``. The order's
``taxStatus`` (:func:`shop_tax_status`) is ``gross`` (B2C: prices include VAT, a tax's ``price``
is the gross amount), ``net`` (B2B: prices exclude VAT, ``price`` is the net amount, VAT comes on
top) or ``tax-free`` (exports, intra-EU B2B with a VAT id: net prices, empty ``calculatedTaxes``
and ``taxRules``). Rates are the shipping country's (EU one-stop-shop, :data:`VAT_RATES`), by the
product's :attr:`Product.tax_class`; the promotion and the shipping costs are split over the
rates of the goods in proportion to their prices (Shopware's ``PercentageTaxRuleBuilder``).
"""

from __future__ import annotations

import hashlib
import math
import random
import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from integration_project.settings import EU_27, ISO_COUNTRIES
from integration_project.shopware.models import format_shop_datetime

# --- Catalogue -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Product:
    sku: str
    name: str
    price: float  # gross unit price in EUR (German VAT included, as the shop stores it)
    tax_class: str = "standard"  # or "reduced" (food and drink): a key of TAX_CLASSES


#: Tax classes: index into a country's (standard, reduced) pair of :data:`VAT_RATES`.
TAX_CLASSES = {"standard": 0, "reduced": 1}
#: Food and drink: the reduced rate.
_REDUCED = frozenset(
    {
        "Kaffeebohnen Äthiopien 1 kg",
        "Thé vert Sencha 250 g",
        "Müsli Knusper-Mischung 750 g",
        "Olivenöl Kreta extra vergine 0,5 l",
        "Gewürzset „Würzig & Scharf“",
        "Kakao Ecuador 70 % 500 g",
        "Honig Akazie 500 g",
        "Rooibos Vanille 100 g",
        "Pralinés Assortiment 250 g",
        "Bärlauch-Pesto 180 g",
    }
)


_PRODUCTS = (
    ("Kaffeebohnen Äthiopien 1 kg", 18.90),
    ("Crème brûlée set", 24.50),
    ("Espressotassen Porzellan (2 Stück)", 21.00),
    ("Handmühle „Gourmet“ Edelstahl", 49.95),
    ("Thé vert Sencha 250 g", 9.80),
    ("Smørrebrød-Brett Eiche", 34.00),
    ("Müsli Knusper-Mischung 750 g", 6.49),
    ("Olivenöl Kreta extra vergine 0,5 l", 12.90),
    ("Paella-Pfanne Ø 38 cm", 39.00),
    ("Cafetière française 1 l", 29.90),
    ("Gewürzset „Würzig & Scharf“", 15.75),
    ("Matcha-Besen Chasen", 17.40),
    ("Zuckerdose Glas mit Löffel", 8.95),
    ("Pfeffermühle Keramik", 22.00),
    ("Kakao Ecuador 70 % 500 g", 11.60),
    ("Tarte-Tatin-Form Ø 28 cm", 27.30),
    ("Milchaufschäumer elektrisch", 59.00),
    ("Honig Akazie 500 g", 7.90),
    ("Rooibos Vanille 100 g", 5.40),
    ("Teekanne Gusseisen 0,8 l", 44.00),
    ("Kaffeefilter Nr. 4 (100 Stück)", 2.99),
    ("Pralinés Assortiment 250 g", 19.90),
    ("Crêpe-Pfanne Ø 30 cm", 31.50),
    ("Fika-Backbuch (Svenska)", 24.00),
    ("Bärlauch-Pesto 180 g", 4.95),
)
PRODUCTS: tuple[Product, ...] = tuple(
    Product(f"SW{10001 + i}", name, price, "reduced" if name in _REDUCED else "standard")
    for i, (name, price) in enumerate(_PRODUCTS)
)
#: Sold by the shop, unknown to the ERP: orders with them are quarantined ("unknown SKU").
UNKNOWN_PRODUCTS: tuple[Product, ...] = (
    Product("SW99901", "Geschenkgutschein „Überraschung“", 25.00),
    Product("SW99902", "Édition limitée: Tasse Nuit", 14.00),
)

# --- Countries ---------------------------------------------------------------------------

#: iso -> (name, iso3, currency billed there, (street, zipcode, city))
COUNTRIES: dict[str, tuple[str, str, str, tuple[str, str, str]]] = {
    "DE": ("Germany", "DEU", "EUR", ("Hauptstraße", "10115", "Berlin")),
    "NL": ("Netherlands", "NLD", "EUR", ("Keizersgracht", "1015 CJ", "Amsterdam")),
    "FR": ("France", "FRA", "EUR", ("Rue de Rivoli", "75001", "Paris")),
    "AT": ("Austria", "AUT", "EUR", ("Mariahilfer Straße", "1070", "Wien")),
    "BE": ("Belgium", "BEL", "EUR", ("Rue Neuve", "1000", "Bruxelles")),
    "IT": ("Italy", "ITA", "EUR", ("Via del Corso", "00186", "Roma")),
    "ES": ("Spain", "ESP", "EUR", ("Calle de Alcalá", "28014", "Madrid")),
    "PL": ("Poland", "POL", "EUR", ("ulica Piotrkowska", "90-001", "Łódź")),
    "IE": ("Ireland", "IRL", "EUR", ("Grafton Street", "D02 VF65", "Dublin")),
    "SE": ("Sweden", "SWE", "SEK", ("Drottninggatan", "111 51", "Stockholm")),
    "DK": ("Denmark", "DNK", "EUR", ("Strøget", "1160", "København")),
    "PT": ("Portugal", "PRT", "EUR", ("Rua Augusta", "1100-053", "Lisboa")),
    "FI": ("Finland", "FIN", "EUR", ("Mannerheimintie", "00100", "Helsinki")),
    "GB": ("United Kingdom", "GBR", "GBP", ("Baker Street", "NW1 6XE", "London")),
    "CH": ("Switzerland", "CHE", "CHF", ("Bahnhofstrasse", "8001", "Zürich")),
    "US": ("United States of America", "USA", "EUR", ("Main Street", "10001", "New York")),
    "NO": ("Norway", "NOR", "EUR", ("Karl Johans gate", "0154", "Oslo")),
}
#: EU country -> (standard, reduced) VAT rate in percent. Shipments to the EU are taxed at the
#: destination's rates (one-stop-shop); anything else is an export (tax-free).
VAT_RATES: dict[str, tuple[float, float]] = {
    "DE": (19.0, 7.0), "NL": (21.0, 9.0), "FR": (20.0, 5.5), "AT": (20.0, 10.0),
    "BE": (21.0, 6.0), "IT": (22.0, 10.0), "ES": (21.0, 10.0), "PL": (23.0, 5.0),
    "IE": (23.0, 13.5), "SE": (25.0, 12.0), "DK": (25.0, 25.0), "PT": (23.0, 6.0),
    "FI": (25.5, 14.0),
}  # fmt: skip
#: The shop's own country: its rates apply to the stored net prices, and B2B orders shipped
#: elsewhere in the EU are intra-community supplies (tax-free with a VAT id).
SHOP_COUNTRY = "DE"
#: Every rate the sandbox's orders can carry (percent), for the ERP's VAT codes.
ORDER_TAX_RATES: tuple[float, ...] = tuple(
    sorted({r for rates in VAT_RATES.values() for r in rates})
)
TAX_STATUSES = ("gross", "net", "tax-free")
_EU_WEIGHTS = {
    "DE": 30, "NL": 10, "FR": 10, "AT": 8, "BE": 6, "IT": 7, "ES": 7, "PL": 6, "IE": 4, "SE": 5,
    "DK": 4, "PT": 3, "FI": 3,
}  # fmt: skip
_NON_EU_WEIGHTS = {"GB": 12, "CH": 10, "US": 5, "NO": 3}
EU_SHIPPING_SHARE = 0.70
SPLIT_ADDRESS_SHARE = 0.10
PROMOTION_SHARE = 0.20
MALFORMED_SHARE = 0.03

#: iso -> (name, symbol, factor against EUR)
CURRENCIES: dict[str, tuple[str, str, float]] = {
    "EUR": ("Euro", "€", 1.0),
    "GBP": ("Pound sterling", "£", 0.86),
    "CHF": ("Schweizer Franken", "CHF", 0.95),
    "SEK": ("Svensk krona", "kr", 11.2),
}

# --- Malformed orders ------------------------------------------------------------------------

#: Each kind breaks one thing the mapping needs; the order is otherwise complete.
MALFORMED_KINDS: dict[str, str] = {
    "missing_email": "orderCustomer.email is null",
    "unknown_sku": "a product line's payload.productNumber is not an ERP item (SW999xx)",
    "zero_quantity": "a product line has quantity 0",
    "no_line_items": "lineItems is an empty list",
    "unknown_country": "shipping and billing country iso are 'XX' (no billing fallback)",
    "null_currency": "currency is null (currencyId still set)",
    "no_calculated_taxes": "a product line's price.calculatedTaxes is null",
}
#: Kinds whose order also breaks Shopware's own schema (OrderCustomer requires ``email``).
SCHEMA_BREAKING_KINDS = frozenset({"missing_email"})
UNKNOWN_COUNTRY = "XX"

# --- Order states ----------------------------------------------------------------------------

#: Shopware's ``order.state`` machine: technical name -> display name (English default).
ORDER_STATES: dict[str, str] = {
    "open": "Open",
    "in_progress": "In Progress",
    "completed": "Done",
    "cancelled": "Cancelled",
}
#: Shares of the non-open states when a state is drawn (``state="random"``); the rest is open.
STATE_SHARES: dict[str, float] = {"cancelled": 0.05, "completed": 0.10, "in_progress": 0.05}
#: The delivery state that goes with each order state.
_DELIVERY_STATES = {
    "open": "open", "in_progress": "open", "completed": "shipped", "cancelled": "cancelled"
}  # fmt: skip

# --- Customers -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Customer:
    number: str
    first_name: str
    last_name: str
    email: str
    company: str | None
    country: str  # home country (the ERP account's Country)
    in_erp: bool  # already an ERP account (matched by e-mail)

    @property
    def name(self) -> str:
        return self.company or f"{self.first_name} {self.last_name}"


#: Fixed customers that exercise quoting and unicode; ``in_erp`` is fixed for them.
_SPECIAL_CUSTOMERS = (
    ("Siobhán", "O'Brien", "o'brien@example.ie", None, "IE", True),
    ("Zoë", "Łukasiewicz", "zoe.lukasiewicz@example.pl", None, "PL", False),
    ("José", "Núñez", "jose.nunez@example.es", "Cafés Núñez S.L.", "ES", True),
    ("Søren", "Ærø", "soren.aero@example.dk", None, "DK", False),
)
_FIRST = (
    "Anna Lukas Émilie Jürgen Maximilian Chloé Mateo Ingrid Björn Agnieszka Łucja Giulia "
    "François Renée Dörte Oisín Niamh Ana Małgorzata Jörg Hélène Åsa Marek Lotte"
).split()
_LAST = (
    "Müller Schröder Dubois Lefèvre Rossi Kowalski Wiśniewska García Fernández Jansen de Vries "
    "Öztürk Nyström Håkansson Brennan Murphy Kühn Gonçalves Dvořák Weiß Peeters Bianchi Žukauskas"
).split()
_COMPANIES = (
    "Müller & Söhne GmbH", "Café Lumière SARL", "Nordlys AS", "Brauerei Weißbräu KG",
    "Koffiebranderij De Boon B.V.", "Pâtisserie Étoile", "Łódzka Palarnia Sp. z o.o.",
    "Teehaus Grüner Drache e.K.", "Smaak & Zoet BV", "Fjällkaffe AB",
)  # fmt: skip
_FOLD = str.maketrans({"ł": "l", "ø": "o", "æ": "ae", "ß": "ss", "đ": "d", "'": "", " ": "-"})
_DOMAINS = {"DE": "de", "AT": "at", "FR": "fr", "NL": "nl", "GB": "co.uk", "CH": "ch", "SE": "se"}


def _ascii(text: str) -> str:
    folded = text.lower().translate(_FOLD)
    return unicodedata.normalize("NFKD", folded).encode("ascii", "ignore").decode()


def make_customers(rng: random.Random, count: int = 40) -> tuple[Customer, ...]:
    """``count`` customers, the special ones first; about half of the rest are ERP accounts."""
    customers: list[Customer] = []
    emails: set[str] = set()
    for i, (first, last, email, company, country, in_erp) in enumerate(_SPECIAL_CUSTOMERS):
        customers.append(Customer(str(20001 + i), first, last, email, company, country, in_erp))
        emails.add(email)
    countries = [*_EU_WEIGHTS, *_NON_EU_WEIGHTS]
    while len(customers) < count:
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        country = rng.choice(countries)
        local = f"{_ascii(first)}.{_ascii(last)}"
        email = f"{local}@example.{_DOMAINS.get(country, 'eu')}"
        if email in emails:
            email = f"{local}{len(customers)}@example.com"
        emails.add(email)
        company = rng.choice(_COMPANIES) if rng.random() < 0.3 else None
        number = str(20001 + len(customers))
        in_erp = rng.random() < 0.5
        customers.append(Customer(number, first, last, email, company, country, in_erp))
    return tuple(customers)


@dataclass(frozen=True)
class SandboxData:
    """Everything both systems must agree on, built from one seed."""

    seed: int
    products: tuple[Product, ...]
    unknown_products: tuple[Product, ...]
    customers: tuple[Customer, ...]

    @classmethod
    def build(cls, seed: int = 0) -> SandboxData:
        rng = random.Random(seed)
        return cls(seed, PRODUCTS, UNKNOWN_PRODUCTS, make_customers(rng))

    def product(self, sku: str) -> Product:
        for product in (*self.products, *self.unknown_products):
            if product.sku == sku:
                return product
        raise KeyError(sku)


# --- Orders --------------------------------------------------------------------------------


@dataclass(frozen=True)
class OrderTruth:
    """What a test needs to know about a generated order, without parsing it."""

    order_id: str
    order_number: str
    created_at: datetime
    shipping_country: str
    billing_country: str
    currency: str
    customer_email: str | None
    customer_in_erp: bool
    skus: tuple[str, ...]
    has_promotion: bool
    malformed: str | None  # a key of MALFORMED_KINDS
    state: str = "open"  # a key of ORDER_STATES (stateMachineState.technicalName)
    tax_status: str = "gross"  # a value of TAX_STATUSES (the order's taxStatus)
    amount_total: float = 0.0  # what the customer pays (amountTotal), in the order's currency
    amount_net: float = 0.0  # amountNet
    #: The VAT rates (percent) in the order's price.calculatedTaxes, ascending; () if tax-free.
    tax_rates: tuple[float, ...] = ()
    #: orderCustomer.vatIds (intra-EU B2B deliveries), else ().
    vat_ids: tuple[str, ...] = ()

    @property
    def country(self) -> str:
        """The country the route filters on: shipping, falling back to billing."""
        if self.shipping_country in ISO_COUNTRIES:
            return self.shipping_country
        return self.billing_country

    @property
    def eu(self) -> bool:
        return self.country in EU_27

    @property
    def schema_valid(self) -> bool:
        return self.malformed not in SCHEMA_BREAKING_KINDS

    @property
    def expected_in_erp(self) -> bool:
        """Shipped inside the EU and mappable: the route should deliver it exactly once."""
        return self.eu and self.malformed is None


def stable_id(*parts: str) -> str:
    """A 32-hex id that is the same in every run (countries, currencies, states...)."""
    return hashlib.md5(":".join(parts).encode(), usedforsecurity=False).hexdigest()


def _hex_id(rng: random.Random) -> str:
    return f"{rng.getrandbits(128):032x}"


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


def _half_up(num: int, den: int) -> int:
    """``num / den`` rounded half away from zero, as PHP's ``round`` does (``den`` > 0)."""
    quotient = (2 * abs(num) + den) // (2 * den)
    return quotient if num >= 0 else -quotient


#: Rates in tenths of a percent (19.0 -> 190, 5.5 -> 55): cent arithmetic stays integral.
_RATES10: dict[str, tuple[int, int]] = {
    iso: (round(standard * 10), round(reduced * 10))
    for iso, (standard, reduced) in VAT_RATES.items()
}
#: Shipping costs per zone in EUR cents, gross (German VAT included), as the shop stores them.
_SHIPPING_EUR_CENTS = {"DE": 390, "EU": 590, "WORLD": 1490}
_FREE_SHIPPING_EUR_CENTS = 6000  # goods worth this much (in EUR) ship free
_UNIT_CENTS: dict[tuple[Product, str, bool], int] = {}


def _in_currency(eur_cents: int, currency: str) -> int:
    factor = CURRENCIES[currency][2]
    return eur_cents if factor == 1.0 else math.floor(eur_cents * factor + 0.5)


def _net_of(gross_eur_cents: int, tax_class: str = "standard") -> int:
    """The net price the shop stores next to a gross one (its own country's rate)."""
    rate10 = _RATES10[SHOP_COUNTRY][TAX_CLASSES[tax_class]]
    return _half_up(gross_eur_cents * 1000, 1000 + rate10)


def _unit_cents(product: Product, currency: str, net: bool) -> int:
    """The product's unit price in cents of ``currency``: gross, or net (``net``)."""
    key = (product, currency, net)
    cents = _UNIT_CENTS.get(key)
    if cents is None:
        eur = round(product.price * 100)
        if net:
            eur = _net_of(eur, product.tax_class)
        cents = _UNIT_CENTS[key] = _in_currency(eur, currency)
    return cents


def _split(amount: int, weights: dict[int, int]) -> list[tuple[int, int, float]]:
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


def _calculated_price(
    unit: int,
    quantity: int,
    total: int,
    parts: list[tuple[int, int, float]],
    gross: bool,
    taxes_by_rate: dict[int, list[int]],
) -> dict[str, Any]:
    """A Shopware ``CalculatedPrice`` (cents in, euros out); adds its taxes to
    ``taxes_by_rate`` (rate10 -> [price cents, tax cents]) for the order's sum."""
    taxes, rules = [], []
    for rate10, price, percentage in parts:
        tax = _half_up(price * rate10, 1000 + rate10 if gross else 1000)
        rate = rate10 / 10
        taxes.append({"tax": tax / 100, "taxRate": rate, "price": price / 100})
        rules.append({"taxRate": rate, "percentage": percentage})
        slot = taxes_by_rate.get(rate10)
        if slot is None:
            taxes_by_rate[rate10] = [price, tax]
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


def _copy_price(price: dict[str, Any]) -> dict[str, Any]:
    return {
        **price,
        "calculatedTaxes": [dict(tax) for tax in price["calculatedTaxes"]],
        "taxRules": [dict(rule) for rule in price["taxRules"]],
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


_ROUNDING = {"decimals": 2, "interval": 0.01, "roundForNet": True}
_VERSION = stable_id("version", "live")  # Shopware's live version id
_EPOCH = "2026-01-05T09:00:00.000+00:00"  # createdAt of the shop's fixed entities


def country_json(iso: str) -> dict[str, Any]:
    name, iso3 = COUNTRIES[iso][:2] if iso in COUNTRIES else ("Unknown", "XXX")
    return {
        "id": stable_id("country", iso),
        "iso": iso,
        "iso3": iso3,
        "name": name,
        "isEu": iso in EU_27,
        "active": True,
        "shippingAvailable": True,
        "position": 1,
        "addressFormat": {},
        "translated": {"name": name},
        "createdAt": _EPOCH,
        "updatedAt": None,
    }


def currency_json(iso: str) -> dict[str, Any]:
    name, symbol, factor = CURRENCIES[iso]
    return {
        "id": stable_id("currency", iso),
        "isoCode": iso,
        "factor": factor,
        "symbol": symbol,
        "shortName": iso,
        "name": name,
        "position": 1,
        "isSystemDefault": iso == "EUR",
        "taxFreeFrom": 0.0,
        "itemRounding": dict(_ROUNDING),
        "totalRounding": dict(_ROUNDING),
        "translated": {"shortName": iso, "name": name},
        "createdAt": _EPOCH,
        "updatedAt": None,
    }


def _child(order_id: str, created: str) -> dict[str, Any]:
    """Fields every entity that belongs to an order carries."""
    return {
        "versionId": _VERSION,
        "orderId": order_id,
        "orderVersionId": _VERSION,
        "createdAt": created,
        "updatedAt": None,
    }


def _state(machine: str, technical: str, name: str) -> dict[str, Any]:
    return {
        "id": stable_id("state", machine, technical),
        "technicalName": technical,
        "name": name,
        "stateMachineId": stable_id("state_machine", machine),
        "translated": {"name": name},
        "createdAt": _EPOCH,
        "updatedAt": None,
    }


def _draw_state(rng: random.Random) -> str:
    draw = rng.random()
    for state, share in STATE_SHARES.items():
        if draw < share:
            return state
        draw -= share
    return "open"


class OrderFactory:
    """Makes Shopware orders with increasing order numbers, and remembers their ground truth.

    ``stream`` names the random stream (another name = other orders from the same seed and
    data); ``sales_channel`` names the sales channel (its id is
    ``stable_id("sales_channel", sales_channel)``); ``company_share``: None = customers drawn
    evenly, else the share of orders drawn from the customers with a company (B2B).
    Not thread-safe on its own: the shop calls it under its lock.
    """

    def __init__(
        self,
        data: SandboxData,
        *,
        first_order_number: int = 10001,
        stream: str = "orders",
        sales_channel: str = "storefront",
        company_share: float | None = None,
    ) -> None:
        self.data = data
        self.rng = random.Random(f"{stream}:{data.seed}")
        self.next_order_number = first_order_number
        self.malformed_share = MALFORMED_SHARE
        self.sales_channel_id = stable_id("sales_channel", sales_channel)
        self.company_share = company_share
        self._companies = tuple(c for c in data.customers if c.company)
        #: order id -> ground truth, for every order this factory made.
        self.truth: dict[str, OrderTruth] = {}

    def make_order(
        self,
        created_at: datetime,
        rng: random.Random | None = None,
        *,
        malformed: str | None = None,
        shipping_country: str | None = None,
        billing_country: str | None = None,
        email: str | None = None,
        skus: list[str] | None = None,
        countries: str = "mix",
        state: str = "open",
        tax_status: str | None = None,
    ) -> dict[str, Any]:
        """A full order created at ``created_at`` (aware UTC).

        ``malformed``: None = well-formed, ``"random"`` = malformed with
        :data:`MALFORMED_SHARE` probability (kind drawn from the seed), or a kind of
        :data:`MALFORMED_KINDS`. ``countries``: ``"mix"`` = the realistic mix (EU / non-EU /
        split addresses), ``"eu"`` = ship and bill to one EU country. ``state``: a key of
        :data:`ORDER_STATES`, or ``"random"`` = drawn per :data:`STATE_SHARES`.
        ``tax_status``: one of :data:`TAX_STATUSES`; None = as the shop decides it
        (:func:`shop_tax_status`). The other keyword arguments pin what would otherwise be drawn at
        random.
        """
        if countries not in ("mix", "eu"):
            raise ValueError("countries must be 'mix' or 'eu'")
        if created_at.tzinfo is None:
            raise ValueError("naive datetime: pass timezone-aware UTC datetimes")
        rng = rng or self.rng
        if malformed == "random":
            drawn = rng.random() < self.malformed_share
            malformed = rng.choice(sorted(MALFORMED_KINDS)) if drawn else None
        if malformed is not None and malformed not in MALFORMED_KINDS:
            known = list(MALFORMED_KINDS)
            raise ValueError(f"unknown malformed kind {malformed!r}; known: {known}")
        if state == "random":
            state = _draw_state(rng)
        if state not in ORDER_STATES:
            raise ValueError(f"unknown order state {state!r}; known: {list(ORDER_STATES)}")
        if tax_status is not None and tax_status not in TAX_STATUSES:
            raise ValueError(f"unknown tax status {tax_status!r}; known: {list(TAX_STATUSES)}")

        order_id = _hex_id(rng)
        number = str(self.next_order_number)
        self.next_order_number += 1
        created = format_shop_datetime(created_at)
        customer = self._customer(rng)
        eu_only = countries == "eu"
        ship = shipping_country or billing_country or self._country(rng, eu_only=eu_only)
        bill = billing_country or shipping_country
        if bill is None and eu_only:
            bill = ship
        elif bill is None:
            split = rng.random() < SPLIT_ADDRESS_SHARE
            bill = self._country(rng, other_than=ship) if split else ship
        if malformed == "unknown_country":
            ship = bill = UNKNOWN_COUNTRY
        currency = COUNTRIES.get(bill, COUNTRIES["DE"])[2]
        factor = CURRENCIES[currency][2]
        status = tax_status or shop_tax_status(
            ship, company=bool(customer.company), b2b=self.company_share is not None
        )
        gross, taxed = status == "gross", status != "tax-free"
        rates10 = _RATES10.get(ship, _RATES10[SHOP_COUNTRY])

        if skus is not None:
            products = [self.data.product(sku) for sku in skus]
        else:
            products = rng.sample(self.data.products, rng.randint(1, 4))
        quantities = [rng.choice((1, 1, 1, 2, 2, 3, 5)) for _ in products]
        if malformed == "unknown_sku":
            products[-1] = rng.choice(self.data.unknown_products)
        if malformed == "zero_quantity":
            quantities[rng.randrange(len(quantities))] = 0
        if malformed == "no_line_items":
            products, quantities = [], []

        taxes_by_rate: dict[int, list[int]] = {}
        goods_by_rate: dict[int, int] = {}  # rate10 -> cents of goods at that rate
        line_items = []
        goods_cents = 0
        for i, (product, qty) in enumerate(zip(products, quantities, strict=True)):
            unit = _unit_cents(product, currency, not gross)
            total = unit * qty
            goods_cents += total
            parts: list[tuple[int, int, float]] = []
            if taxed:
                rate10 = rates10[TAX_CLASSES[product.tax_class]]
                goods_by_rate[rate10] = goods_by_rate.get(rate10, 0) + total
                parts = [(rate10, total, 100.0)]
            price = _calculated_price(unit, qty, total, parts, gross, taxes_by_rate)
            line_items.append(self._product_line(rng, order_id, created, i, product, price))
        position_cents = goods_cents
        promotion = goods_cents > 0 and rng.random() < PROMOTION_SHARE
        if promotion:
            discount = _half_up(-goods_cents * 10, 100)
            position_cents += discount
            parts = _split(discount, goods_by_rate)
            price = _calculated_price(discount, 1, discount, parts, gross, taxes_by_rate)
            position = len(line_items) + 1
            line_items.append(self._promotion_line(rng, order_id, created, price, position))
        ship_zone = "DE" if ship == "DE" else "EU" if ship in EU_27 else "WORLD"
        free_shipping = goods_cents / factor >= _FREE_SHIPPING_EUR_CENTS  # threshold in EUR
        shipping_cents = 0
        if not free_shipping:
            eur = _SHIPPING_EUR_CENTS[ship_zone]
            shipping_cents = _in_currency(eur if gross else _net_of(eur), currency)
        shipping_parts = _split(shipping_cents, goods_by_rate)
        shipping_price = _calculated_price(
            shipping_cents, 1, shipping_cents, shipping_parts, gross, taxes_by_rate
        )
        shipping = shipping_price["totalPrice"]
        tax_cents = sum(tax for _, tax in taxes_by_rate.values())
        if gross:
            total_cents = position_cents + shipping_cents
            net_cents = total_cents - tax_cents
        else:  # net; tax-free has no taxes
            net_cents = position_cents + shipping_cents
            total_cents = net_cents + tax_cents
        total, net = total_cents / 100, net_cents / 100
        taxed_cents = sum(price for price, _ in taxes_by_rate.values())
        order_taxes = [
            {"tax": tax / 100, "taxRate": rate10 / 10, "price": price / 100}
            for rate10, (price, tax) in taxes_by_rate.items()
        ]
        order_rules = [
            {"taxRate": rate10 / 10, "percentage": price / taxed_cents * 100 if taxed_cents else 0}
            for rate10, (price, _) in taxes_by_rate.items()
        ]
        if malformed == "no_calculated_taxes":
            goods_lines = [line for line in line_items if line["type"] == "product"]
            rng.choice(goods_lines)["price"]["calculatedTaxes"] = None
        vat_ids = None
        if status == "tax-free" and ship in EU_27:
            vat_ids = [vat_id(ship, customer.number)]

        first, last, company = customer.first_name, customer.last_name, customer.company
        billing = self._address(rng, order_id, created, bill, first, last, company)
        shipping_address = self._address(rng, order_id, created, ship, first, last, company)
        order_customer = {
            "id": _hex_id(rng),
            **_child(order_id, created),
            "customerId": stable_id("customer", customer.number),
            "email": None if malformed == "missing_email" else (email or customer.email),
            "firstName": first,
            "lastName": last,
            "company": customer.company,
            "customerNumber": customer.number,
            "salutationId": stable_id("salutation", "not_specified"),
            "title": None,
            "vatIds": vat_ids,
        }
        delivery = {
            "id": _hex_id(rng),
            **_child(order_id, created),
            "shippingOrderAddressId": shipping_address["id"],
            "shippingOrderAddressVersionId": _VERSION,
            "shippingOrderAddress": shipping_address,
            "shippingMethodId": stable_id("shipping_method", ship_zone),
            "stateId": stable_id("state", "order_delivery.state", _DELIVERY_STATES[state]),
            "shippingDateEarliest": format_shop_datetime(created_at + timedelta(days=1)),
            "shippingDateLatest": format_shop_datetime(created_at + timedelta(days=3)),
            "shippingCosts": shipping_price,
            "trackingCodes": [],
        }
        order: dict[str, Any] = {
            "id": order_id,
            "versionId": _VERSION,
            "orderNumber": number,
            "autoIncrement": int(number),
            "billingAddressId": billing["id"],
            "billingAddressVersionId": _VERSION,
            "currencyId": stable_id("currency", currency),
            "languageId": stable_id("language", "de-DE"),
            "salesChannelId": self.sales_channel_id,
            "stateId": stable_id("state", "order.state", state),
            "orderDateTime": created,
            "orderDate": created_at.date().isoformat(),
            "createdAt": created,
            "updatedAt": None,
            "currencyFactor": factor,
            "price": {
                "netPrice": net,
                "totalPrice": total,
                "calculatedTaxes": order_taxes,
                "taxRules": order_rules,
                "positionPrice": position_cents / 100,
                "rawTotal": total,
                "taxStatus": status,
            },
            "amountTotal": total,
            "amountNet": net,
            "positionPrice": position_cents / 100,
            "taxStatus": status,
            "shippingCosts": _copy_price(shipping_price),
            "shippingTotal": shipping,
            "itemRounding": dict(_ROUNDING),
            "totalRounding": dict(_ROUNDING),
            "taxCalculationType": "horizontal",
            "deepLinkCode": f"{rng.getrandbits(128):032x}",
            "customerComment": None,
            "affiliateCode": None,
            "campaignCode": None,
            "customFields": None,
            "ruleIds": [],
            "stateMachineState": _state("order.state", state, ORDER_STATES[state]),
            "currency": None if malformed == "null_currency" else currency_json(currency),
            "orderCustomer": order_customer,
            "billingAddress": billing,
            "deliveries": [delivery],
            "lineItems": line_items,
        }
        self.truth[order_id] = OrderTruth(
            order_id=order_id,
            order_number=number,
            created_at=datetime.fromisoformat(created),
            shipping_country=ship,
            billing_country=bill,
            currency=currency,
            customer_email=order_customer["email"],
            customer_in_erp=customer.in_erp and order_customer["email"] == customer.email,
            skus=tuple(p.sku for p in products),
            has_promotion=promotion,
            malformed=malformed,
            state=state,
            tax_status=status,
            amount_total=total,
            amount_net=net,
            tax_rates=tuple(sorted(rate10 / 10 for rate10 in taxes_by_rate)),
            vat_ids=tuple(vat_ids or ()),
        )
        return order

    def _customer(self, rng: random.Random) -> Customer:
        if self.company_share is None:  # no extra draw: the default stream stays as it was
            return rng.choice(self.data.customers)
        company = rng.random() < self.company_share and self._companies
        return rng.choice(self._companies if company else self.data.customers)

    @staticmethod
    def _country(
        rng: random.Random, other_than: str | None = None, *, eu_only: bool = False
    ) -> str:
        while True:
            eu = eu_only or rng.random() < EU_SHIPPING_SHARE
            weights = _EU_WEIGHTS if eu else _NON_EU_WEIGHTS
            iso = rng.choices(list(weights), weights=list(weights.values()))[0]
            if iso != other_than:
                return iso

    @staticmethod
    def _address(
        rng: random.Random,
        order_id: str,
        created: str,
        iso: str,
        first: str,
        last: str,
        company: str | None,
    ) -> dict[str, Any]:
        street, zipcode, city = COUNTRIES[iso][3] if iso in COUNTRIES else ("Nowhere 1", "0", "?")
        return {
            "id": _hex_id(rng),
            **_child(order_id, created),
            "countryId": stable_id("country", iso),
            "country": country_json(iso),
            "firstName": first,
            "lastName": last,
            "company": company,
            "street": f"{street} {rng.randint(1, 120)}",
            "zipcode": zipcode,
            "city": city,
            "phoneNumber": None,
            "salutationId": stable_id("salutation", "not_specified"),
        }

    @staticmethod
    def _product_line(
        rng: random.Random,
        order_id: str,
        created: str,
        index: int,
        product: Product,
        price: dict[str, Any],
    ) -> dict[str, Any]:
        product_id = stable_id("product", product.sku)
        return {
            "id": _hex_id(rng),
            **_child(order_id, created),
            "identifier": product_id,
            "referencedId": product_id,
            "productId": product_id,
            "productVersionId": _VERSION,
            "type": "product",
            "label": product.name,
            "good": True,
            "removable": True,
            "stackable": True,
            "position": index + 1,
            "quantity": price["quantity"],
            "unitPrice": price["unitPrice"],
            "totalPrice": price["totalPrice"],
            "price": price,
            "priceDefinition": {
                "type": "quantity",
                "price": price["unitPrice"],
                "quantity": price["quantity"],
                "taxRules": [dict(rule) for rule in price["taxRules"]],
                "isCalculated": True,
            },
            "payload": {"productNumber": product.sku, "isNew": False, "options": []},
            "children": [],
            "states": [],
            "parentId": None,
            "coverId": None,
        }

    @staticmethod
    def _promotion_line(
        rng: random.Random, order_id: str, created: str, price: dict[str, Any], position: int
    ) -> dict[str, Any]:
        promotion_id = stable_id("promotion", "WINTER10")
        return {
            "id": _hex_id(rng),
            **_child(order_id, created),
            "identifier": promotion_id,
            "referencedId": "WINTER10",
            "promotionId": promotion_id,
            "type": "promotion",
            "label": "Winterrabatt 10 %",
            "good": False,
            "removable": True,
            "stackable": False,
            "position": position,
            "quantity": 1,
            "unitPrice": price["unitPrice"],
            "totalPrice": price["totalPrice"],
            "price": price,
            "priceDefinition": {"type": "percentage", "percentage": -10.0, "filter": None},
            "payload": {"code": "WINTER10", "discountType": "percentage", "value": "10"},
            "children": [],
            "states": [],
        }
