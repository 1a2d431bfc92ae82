"""Deterministic seeded Shopware orders for the sandbox, and the ground truth of each.

:class:`OrderFactory` produces full Shopware order JSON (camelCase, every field the OpenAPI
``Order`` schema and its associations require: :mod:`~integration_project.sandbox.order_json`,
priced as Shopware's cart does: :mod:`~integration_project.sandbox.order_prices`) over a
:class:`SandboxData` world, and records the ground truth of each order (:class:`OrderTruth`: EU
or not, malformed or not) so tests can compute what the route should do without
re-implementing the route.

Mix, per seed and reproducible: ~70 % of orders ship inside the EU, ~30 % to GB/CH/US/NO; ~10 %
bill to another country than they ship to; ~20 % carry a ``promotion`` line; ~3 % are malformed,
one kind each (see :data:`MALFORMED_KINDS`). Orders are ``open`` unless asked otherwise;
``state="random"`` draws from :data:`STATE_SHARES` (~5 % cancelled, ~10 % completed, ~5 % in
progress, the rest open).

The world (catalogue, countries, :data:`VAT_RATES`, :data:`SHOP_COUNTRY`, customers,
:class:`SandboxData`, :func:`stable_id`) lives in :mod:`~integration_project.sandbox.world` and
is importable from here too, next to the orders made from it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from integration_project.sandbox.order_json import (
    address_json,
    delivery_json,
    hex_id,
    order_customer_json,
    order_json,
    product_line_json,
    promotion_line_json,
)
from integration_project.sandbox.order_prices import (
    Cart,
    shipping_zone,
    shop_tax_status,
    vat_id,
)
from integration_project.sandbox.world import (
    COUNTRIES,
    SHOP_COUNTRY,
    TAX_STATUSES,
    VAT_RATES,
    Customer,
    Product,
    SandboxData,
    draw_country,
    stable_id,
)
from integration_project.settings import EU_27, ISO_COUNTRIES
from integration_project.shopware.models import format_shop_datetime

__all__ = [
    "MALFORMED_KINDS",
    "ORDER_STATES",
    "SHOP_COUNTRY",
    "STATE_SHARES",
    "VAT_RATES",
    "OrderFactory",
    "OrderTruth",
    "SandboxData",
    "stable_id",
]

SPLIT_ADDRESS_SHARE = 0.10
PROMOTION_SHARE = 0.20
MALFORMED_SHARE = 0.03

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


@dataclass(frozen=True)
class _Plan:
    """What is decided about an order before it is priced and written out."""

    order_id: str
    number: str
    created_at: datetime
    customer: Customer
    email: str | None  # orderCustomer.email
    ship: str
    bill: str
    currency: str
    tax_status: str
    state: str
    malformed: str | None
    products: list[Product]
    quantities: list[int]


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
        malformed = self._malformed(rng, malformed)
        state = _order_state(rng, state)
        if tax_status is not None and tax_status not in TAX_STATUSES:
            raise ValueError(f"unknown tax status {tax_status!r}; known: {list(TAX_STATUSES)}")
        order_id, number = hex_id(rng), str(self.next_order_number)
        self.next_order_number += 1
        customer = self._customer(rng)
        pinned = (shipping_country, billing_country)
        ship, bill = _destinations(rng, *pinned, eu_only=countries == "eu", malformed=malformed)
        b2b = self.company_share is not None
        status = tax_status or shop_tax_status(ship, company=bool(customer.company), b2b=b2b)
        products, quantities = self._goods(rng, skus, malformed)
        plan = _Plan(
            order_id=order_id,
            number=number,
            created_at=created_at,
            customer=customer,
            email=None if malformed == "missing_email" else (email or customer.email),
            ship=ship,
            bill=bill,
            currency=COUNTRIES.get(bill, COUNTRIES["DE"])[2],
            tax_status=status,
            state=state,
            malformed=malformed,
            products=products,
            quantities=quantities,
        )
        return self._write(rng, plan)

    def _malformed(self, rng: random.Random, malformed: str | None) -> str | None:
        if malformed == "random":
            drawn = rng.random() < self.malformed_share
            malformed = rng.choice(sorted(MALFORMED_KINDS)) if drawn else None
        if malformed is not None and malformed not in MALFORMED_KINDS:
            known = list(MALFORMED_KINDS)
            raise ValueError(f"unknown malformed kind {malformed!r}; known: {known}")
        return malformed

    def _customer(self, rng: random.Random) -> Customer:
        if self.company_share is None:  # no extra draw: the default stream stays as it was
            return rng.choice(self.data.customers)
        company = rng.random() < self.company_share and self._companies
        return rng.choice(self._companies if company else self.data.customers)

    def _goods(
        self, rng: random.Random, skus: list[str] | None, malformed: str | None
    ) -> tuple[list[Product], list[int]]:
        """The products and their quantities, one of them broken for some malformed kinds."""
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
        return products, quantities

    def _write(self, rng: random.Random, plan: _Plan) -> dict[str, Any]:
        """The order's JSON (priced, ids drawn), its truth recorded."""
        order_id, created = plan.order_id, format_shop_datetime(plan.created_at)
        cart = Cart(plan.currency, plan.ship, plan.tax_status)
        lines = [
            product_line_json(rng, order_id, created, i, product, cart.goods(product, quantity))
            for i, (product, quantity) in enumerate(
                zip(plan.products, plan.quantities, strict=True)
            )
        ]
        promotion = cart.goods_cents > 0 and rng.random() < PROMOTION_SHARE
        if promotion:
            lines.append(
                promotion_line_json(rng, order_id, created, cart.discount(), len(lines) + 1)
            )
        shipping_price = cart.shipping()
        amounts = cart.order_fields(shipping_price)
        if plan.malformed == "no_calculated_taxes":
            goods_lines = [line for line in lines if line["type"] == "product"]
            rng.choice(goods_lines)["price"]["calculatedTaxes"] = None
        vat_ids = None
        if plan.tax_status == "tax-free" and plan.ship in EU_27:
            vat_ids = [vat_id(plan.ship, plan.customer.number)]
        billing = address_json(rng, order_id, created, plan.bill, plan.customer)
        shipping_address = address_json(rng, order_id, created, plan.ship, plan.customer)
        customer = order_customer_json(rng, order_id, created, plan.customer, plan.email, vat_ids)
        delivery = delivery_json(
            rng,
            order_id,
            plan.created_at,
            shipping_address,
            shipping_zone(plan.ship),
            _DELIVERY_STATES[plan.state],
            shipping_price,
        )
        order = order_json(
            rng,
            order_id=order_id,
            number=plan.number,
            created_at=plan.created_at,
            sales_channel_id=self.sales_channel_id,
            state=(plan.state, ORDER_STATES[plan.state]),
            currency=plan.currency,
            currency_loaded=plan.malformed != "null_currency",
            amounts=amounts,
            associations={
                "orderCustomer": customer,
                "billingAddress": billing,
                "deliveries": [delivery],
                "lineItems": lines,
            },
        )
        self.truth[order_id] = _truth(plan, created, amounts, cart, promotion, vat_ids)
        return order


def _order_state(rng: random.Random, state: str) -> str:
    """``state`` checked, or drawn per :data:`STATE_SHARES` when ``"random"``."""
    if state == "random":
        draw = rng.random()
        for drawn, share in STATE_SHARES.items():
            if draw < share:
                return drawn
            draw -= share
        return "open"
    if state not in ORDER_STATES:
        raise ValueError(f"unknown order state {state!r}; known: {list(ORDER_STATES)}")
    return state


def _destinations(
    rng: random.Random,
    shipping: str | None,
    billing: str | None,
    *,
    eu_only: bool,
    malformed: str | None,
) -> tuple[str, str]:
    """(shipping, billing) country: as pinned, else drawn (billing elsewhere ~10 % of the time
    in the mix, never with ``eu_only``); both unknown for the ``unknown_country`` kind."""
    ship = shipping or billing or draw_country(rng, eu_only=eu_only)
    bill = billing or shipping
    if bill is None and eu_only:
        bill = ship
    elif bill is None:
        split = rng.random() < SPLIT_ADDRESS_SHARE
        bill = draw_country(rng, other_than=ship) if split else ship
    if malformed == "unknown_country":
        return UNKNOWN_COUNTRY, UNKNOWN_COUNTRY
    return ship, bill


def _truth(
    plan: _Plan,
    created: str,
    amounts: dict[str, Any],
    cart: Cart,
    promotion: bool,
    vat_ids: list[str] | None,
) -> OrderTruth:
    return OrderTruth(
        order_id=plan.order_id,
        order_number=plan.number,
        created_at=datetime.fromisoformat(created),
        shipping_country=plan.ship,
        billing_country=plan.bill,
        currency=plan.currency,
        customer_email=plan.email,
        customer_in_erp=plan.customer.in_erp and plan.email == plan.customer.email,
        skus=tuple(p.sku for p in plan.products),
        has_promotion=promotion,
        malformed=plan.malformed,
        state=plan.state,
        tax_status=plan.tax_status,
        amount_total=amounts["amountTotal"],
        amount_net=amounts["amountNet"],
        tax_rates=cart.tax_rates,
        vat_ids=tuple(vat_ids or ()),
    )
