"""The world both sandbox systems share: catalogue, countries, currencies, VAT rates, customers.

Both sandbox systems are built from the same :class:`SandboxData`, so they agree the way a real
shop and ERP do: every catalogue SKU is an ERP item (``Code`` = SKU), about half the customers
already are ERP accounts (matched by e-mail), and :data:`UNKNOWN_PRODUCTS` are sold by the shop
but unknown to the ERP. Everything here is fixed or drawn from the seed, so the same seed gives
the same world in every run.
"""

from __future__ import annotations

import hashlib
import random
import unicodedata
from dataclasses import dataclass

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

#: iso -> (name, symbol, factor against EUR)
CURRENCIES: dict[str, tuple[str, str, float]] = {
    "EUR": ("Euro", "€", 1.0),
    "GBP": ("Pound sterling", "£", 0.86),
    "CHF": ("Schweizer Franken", "CHF", 0.95),
    "SEK": ("Svensk krona", "kr", 11.2),
}

# --- Shipping, payment, sales channels -----------------------------------------------------

#: The shop's shipping method per shipping zone (``order_prices.shipping_zone``): (name,
#: technicalName). Shopware 6.5.7 gave its own "Standard" and "Express" a technical name
#: (``shipping_standard``, ``shipping_express``); a method a merchant made before 6.7 may have
#: none (the column is nullable until then), as the world-wide one here.
SHIPPING_METHODS: dict[str, tuple[str, str | None]] = {
    "DE": ("Standard", "shipping_standard"),
    "EU": ("Express", "shipping_express"),
    "WORLD": ("Weltweiter Versand", None),
}
#: The shop's payment methods: (name, technicalName), as Shopware's own are named since 6.5.7
#: (``payment_`` + the handler's short name, lower-cased). An order pays with one of them.
PAYMENT_METHODS: tuple[tuple[str, str], ...] = (
    ("Rechnung", "payment_invoicepayment"),
    ("Vorkasse", "payment_prepayment"),
    ("Nachnahme", "payment_cashpayment"),
)
#: The ERP's lists a sales order refers to, as (Code, Description): shipping methods
#: (sales/ShippingMethods), payment conditions (cashflow/PaymentConditions; a sales order names
#: one by Code), sales channels (sales/SalesChannels) and warehouses (inventory/Warehouses).
#: Some descriptions are the shop's names (a dynamic look-up finds them), some are not.
ERP_SHIPPING_METHODS = (("STD", "Standard"), ("EXP", "Express"), ("DHL", "DHL Paket"))
ERP_PAYMENT_CONDITIONS = (("14", "14 Tage netto"), ("RE", "Rechnung"), ("VK", "Vorkasse"))
ERP_SALES_CHANNELS = (("WEB", "Webshop"), ("B2B", "B2B-Portal"))
ERP_WAREHOUSES = (("1", "Hauptlager"), ("2", "Lager Süd"))

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


def stable_id(*parts: str) -> str:
    """A 32-hex id that is the same in every run (countries, currencies, states...)."""
    return hashlib.md5(":".join(parts).encode(), usedforsecurity=False).hexdigest()


def draw_country(
    rng: random.Random, other_than: str | None = None, *, eu_only: bool = False
) -> str:
    """A destination drawn by weight: inside the EU with :data:`EU_SHIPPING_SHARE` (always when
    ``eu_only``), never ``other_than``."""
    while True:
        eu = eu_only or rng.random() < EU_SHIPPING_SHARE
        weights = _EU_WEIGHTS if eu else _NON_EU_WEIGHTS
        iso = rng.choices(list(weights), weights=list(weights.values()))[0]
        if iso != other_than:
            return iso
