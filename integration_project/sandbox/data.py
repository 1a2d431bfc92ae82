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
"""

from __future__ import annotations

import hashlib
import random
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
    price: float  # gross unit price in EUR


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
    Product(f"SW{10001 + i}", name, price) for i, (name, price) in enumerate(_PRODUCTS)
)
#: Sold by the shop, unknown to the ERP: orders with them are quarantined ("unknown SKU").
UNKNOWN_PRODUCTS: tuple[Product, ...] = (
    Product("SW99901", "Geschenkgutschein „Überraschung“", 25.00),
    Product("SW99902", "Édition limitée: Tasse Nuit", 14.00),
)

# --- Countries ---------------------------------------------------------------------------

#: iso -> (name, iso3, VAT rate, currency billed there, (street, zipcode, city))
COUNTRIES: dict[str, tuple[str, str, float, str, tuple[str, str, str]]] = {
    "DE": ("Germany", "DEU", 0.19, "EUR", ("Hauptstraße", "10115", "Berlin")),
    "NL": ("Netherlands", "NLD", 0.21, "EUR", ("Keizersgracht", "1015 CJ", "Amsterdam")),
    "FR": ("France", "FRA", 0.20, "EUR", ("Rue de Rivoli", "75001", "Paris")),
    "AT": ("Austria", "AUT", 0.20, "EUR", ("Mariahilfer Straße", "1070", "Wien")),
    "BE": ("Belgium", "BEL", 0.21, "EUR", ("Rue Neuve", "1000", "Bruxelles")),
    "IT": ("Italy", "ITA", 0.22, "EUR", ("Via del Corso", "00186", "Roma")),
    "ES": ("Spain", "ESP", 0.21, "EUR", ("Calle de Alcalá", "28014", "Madrid")),
    "PL": ("Poland", "POL", 0.23, "EUR", ("ulica Piotrkowska", "90-001", "Łódź")),
    "IE": ("Ireland", "IRL", 0.23, "EUR", ("Grafton Street", "D02 VF65", "Dublin")),
    "SE": ("Sweden", "SWE", 0.25, "SEK", ("Drottninggatan", "111 51", "Stockholm")),
    "DK": ("Denmark", "DNK", 0.25, "EUR", ("Strøget", "1160", "København")),
    "PT": ("Portugal", "PRT", 0.23, "EUR", ("Rua Augusta", "1100-053", "Lisboa")),
    "GB": ("United Kingdom", "GBR", 0.0, "GBP", ("Baker Street", "NW1 6XE", "London")),
    "CH": ("Switzerland", "CHE", 0.0, "CHF", ("Bahnhofstrasse", "8001", "Zürich")),
    "US": ("United States of America", "USA", 0.0, "EUR", ("Main Street", "10001", "New York")),
    "NO": ("Norway", "NOR", 0.0, "EUR", ("Karl Johans gate", "0154", "Oslo")),
}
_EU_WEIGHTS = {
    "DE": 30, "NL": 10, "FR": 10, "AT": 8, "BE": 6, "IT": 7, "ES": 7, "PL": 6, "IE": 4, "SE": 5,
    "DK": 4, "PT": 3,
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


def _money(value: float) -> float:
    return round(value + 0.0, 2)


_SHIPPING_EUR = {"DE": 3.9, "EU": 5.9, "WORLD": 14.9}
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
    ) -> dict[str, Any]:
        """A full order created at ``created_at`` (aware UTC).

        ``malformed``: None = well-formed, ``"random"`` = malformed with
        :data:`MALFORMED_SHARE` probability (kind drawn from the seed), or a kind of
        :data:`MALFORMED_KINDS`. ``countries``: ``"mix"`` = the realistic mix (EU / non-EU /
        split addresses), ``"eu"`` = ship and bill to one EU country. ``state``: a key of
        :data:`ORDER_STATES`, or ``"random"`` = drawn per :data:`STATE_SHARES`. The other
        keyword arguments pin what would otherwise be drawn at random.
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
        currency = COUNTRIES.get(bill, COUNTRIES["DE"])[3]
        factor = CURRENCIES[currency][2]

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

        line_items = [
            self._product_line(rng, order_id, created, i, product, qty, factor)
            for i, (product, qty) in enumerate(zip(products, quantities, strict=True))
        ]
        goods = _money(sum(line["totalPrice"] for line in line_items))
        promotion = goods > 0 and rng.random() < PROMOTION_SHARE
        if promotion:
            discount = _money(-goods * 0.10)
            line_items.append(self._promotion_line(rng, order_id, created, discount))
        position_price = _money(sum(line["totalPrice"] for line in line_items))
        ship_zone = "DE" if ship == "DE" else "EU" if ship in EU_27 else "WORLD"
        free_shipping = goods / factor >= 60  # thresholds are in EUR
        shipping = 0.0 if free_shipping else _money(_SHIPPING_EUR[ship_zone] * factor)
        total = _money(position_price + shipping)
        vat = COUNTRIES.get(ship, COUNTRIES["DE"])[2] if ship in EU_27 else 0.0
        net = _money(total / (1 + vat))

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
            "vatIds": None,
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
            "shippingCosts": {"unitPrice": shipping, "totalPrice": shipping, "quantity": 1},
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
                "positionPrice": position_price,
                "rawTotal": total,
                "taxStatus": "gross",
            },
            "amountTotal": total,
            "amountNet": net,
            "positionPrice": position_price,
            "taxStatus": "gross",
            "shippingCosts": {"unitPrice": shipping, "totalPrice": shipping, "quantity": 1},
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
        street, zipcode, city = COUNTRIES[iso][4] if iso in COUNTRIES else ("Nowhere 1", "0", "?")
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
        quantity: int,
        factor: float,
    ) -> dict[str, Any]:
        unit = _money(product.price * factor)
        total = _money(unit * quantity)
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
            "quantity": quantity,
            "unitPrice": unit,
            "totalPrice": total,
            "price": {"unitPrice": unit, "totalPrice": total, "quantity": quantity},
            "priceDefinition": {"type": "quantity", "price": unit, "quantity": 1},
            "payload": {"productNumber": product.sku, "isNew": False, "options": []},
            "children": [],
            "states": [],
            "parentId": None,
            "coverId": None,
        }

    @staticmethod
    def _promotion_line(
        rng: random.Random, order_id: str, created: str, discount: float
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
            "position": 99,
            "quantity": 1,
            "unitPrice": discount,
            "totalPrice": discount,
            "price": {"unitPrice": discount, "totalPrice": discount, "quantity": 1},
            "payload": {"code": "WINTER10", "discountType": "percentage", "value": "10"},
            "children": [],
            "states": [],
        }
