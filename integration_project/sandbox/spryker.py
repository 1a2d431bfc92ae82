"""A sandbox Spryker backend: the Glue Backend API's ``POST /token`` and the Data Exchange API's
``GET /dynamic-entity/sales-orders``, as a Spryker project configures it for this route.

What it does as Spryker does (sources in ``reference/spryker.md``): the token endpoint takes a
Back Office user's login as a form (``grant_type=password``) and refuses a wrong one with HTTP
400 and league/oauth2-server's ``invalid_grant``; the orders endpoint wants the bearer token
(403 ``002`` without one, 401 ``001`` with a bad one), filters by equality or by
``{"in": [...]}`` only (``filter[sales-orders.<column>]``), pages by ``page[offset]`` and
``page[limit]`` (1,000 by default), answers ``{"data": [...]}`` with the configured relations
(``include``) nested as lists, and money in integer cents. Rows come in primary key order, as a
plain table scan returns them.

Orders are generated from a seed: several lines (some with a quantity above one, some
discounted), a shipping expense, destinations inside and outside the EU (VAT at the
destination's rate, 0 % for exports), ``GROSS_MODE`` for consumers and ``NET_MODE`` for
companies shipping to Germany, and now and then an id left unused (a rolled-back insert).
:class:`~integration_project.sandbox.server.Sandbox` serves it beside the shops and the ERP.
"""

from __future__ import annotations

import hmac
import json
import random
import secrets
import threading
from collections.abc import Iterable
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from urllib.parse import parse_qsl

from integration_project.sandbox.common import Clock, Request, Response, system_clock
from integration_project.sandbox.world import (
    COUNTRIES,
    CURRENCIES,
    PRODUCTS,
    TAX_CLASSES,
    VAT_RATES,
    SandboxData,
    draw_country,
)
from integration_project.settings import (
    SANDBOX_SPRYKER_PASSWORD,
    SANDBOX_SPRYKER_USERNAME,
)
from integration_project.spryker.models import (
    DYNAMIC_ENTITY_PREFIX,
    GROSS_MODE,
    NET_MODE,
    ORDERS_ALIAS,
    RELATION_BILLING,
    RELATION_COUNTRY,
    RELATION_EXPENSES,
    RELATION_ITEMS,
    RELATION_SHIPPING,
    RELATION_TOTALS,
    SHIPMENT_EXPENSE_TYPE,
    TOKEN_PATH,
    format_spryker_datetime,
    glue_error_body,
)

#: Spryker's default access token lifetime (8 hours).
TOKEN_LIFETIME_S = 28800
#: ``DynamicEntityBackendApiConfig::getDefaultPaginationLimit``.
DEFAULT_PAGE_LIMIT = 1000
#: Shipping per zone in EUR cents, gross.
_SHIPPING_CENTS = {"DE": 490, "EU": 690, "WORLD": 1490}
_RELATIONS = (RELATION_ITEMS, RELATION_EXPENSES, RELATION_TOTALS, RELATION_BILLING,
              RELATION_SHIPPING)  # fmt: skip


def _tax(total: int, rate: Decimal, gross: bool) -> int:
    """VAT cents of a line: out of a gross total, on top of a net one (half up)."""
    share = rate / (100 + rate) if gross else rate / 100
    return int((Decimal(total) * share).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def _rates(ship: str, tax_class: str) -> Decimal:
    if ship not in VAT_RATES:
        return Decimal(0)  # an export: Spryker's tax set has 0 % for the country
    return Decimal(str(VAT_RATES[ship][TAX_CLASSES[tax_class]]))


def order_totals(
    order_id: int, items: list[dict], expenses: list[dict], net: bool, stamp: str
) -> dict[str, Any]:
    """Totals in cents; the tax of each line (and of each discount) rounded on its own."""
    subtotal = discount_total = tax_total = 0
    for item in items:
        rate = Decimal(item["tax_rate"])
        line = item["price"] * item["quantity"]
        discount = item["discount_amount_full_aggregation"]
        subtotal += line
        discount_total += discount
        tax_total += _tax(line, rate, not net) - _tax(discount, rate, not net)
    expense_total = 0
    for expense in expenses:
        expense_total += expense["price"]
        tax_total += _tax(expense["price"], Decimal(expense["tax_rate"]), not net)
    grand = subtotal - discount_total + expense_total + (tax_total if net else 0)
    return {
        "id_sales_order_totals": order_id,
        "fk_sales_order": order_id,
        "subtotal": subtotal,
        "order_expense_total": expense_total,
        "discount_total": discount_total,
        "tax_total": tax_total,
        "grand_total": grand,
        "refund_total": 0,
        "canceled_total": 0,
        "created_at": stamp,
    }


def order_address(rng: random.Random, address_id: int, iso: str, customer: Any) -> dict:
    street, zipcode, city = COUNTRIES[iso][3]
    return {
        "id_sales_order_address": address_id,
        "fk_country": list(COUNTRIES).index(iso) + 1,
        "first_name": customer.first_name,
        "last_name": customer.last_name,
        "company": customer.company,
        "address1": street,
        "address2": str(rng.randint(1, 120)),
        "zip_code": zipcode,
        "city": city,
        "email": customer.email,
        RELATION_COUNTRY: [
            {
                "id_country": list(COUNTRIES).index(iso) + 1,
                "iso2_code": iso,
                "iso3_code": COUNTRIES[iso][1],
                "name": COUNTRIES[iso][0],
            }
        ],
    }


class SandboxSpryker:
    """The sandbox backend: a Back Office user, the tokens issued to them, and the orders."""

    def __init__(
        self,
        *,
        seed: int = 0,
        username: str = SANDBOX_SPRYKER_USERNAME,
        password: str = SANDBOX_SPRYKER_PASSWORD,
        token_lifetime_s: int = TOKEN_LIFETIME_S,
        clock: Clock = system_clock,
        data: SandboxData | None = None,
        gap_share: float = 0.04,
    ) -> None:
        self.seed = seed
        self.username = username
        self.password = password
        self.token_lifetime_s = token_lifetime_s
        self.clock = clock
        self.data = data or SandboxData.build(seed)
        self.gap_share = gap_share
        #: id_sales_order -> the full record (all relations, each a list).
        self.orders: dict[int, dict[str, Any]] = {}
        self._tokens: dict[str, datetime] = {}
        self._next_id = 1
        self._lock = threading.Lock()
        self.requests = 0

    # --- orders ----------------------------------------------------------------------------

    def add_orders(self, moments: Iterable[datetime]) -> list[int]:
        """One generated order created at each of ``moments``; their ids."""
        added = []
        with self._lock:
            for moment in moments:
                rng = random.Random(f"spryker:{self.seed}:{self._next_id}")
                if rng.random() < self.gap_share:
                    self._next_id += 1  # an id a rolled-back insert used up
                order_id = self._next_id
                self._next_id += 1
                self.orders[order_id] = self._order(rng, order_id, moment)
                added.append(order_id)
        return added

    def add_history(
        self, history: timedelta, orders_per_minute: float, *, until: datetime | None = None
    ) -> list[int]:
        """Orders over ``[until - history, until)`` (default: until now), ``orders_per_minute``
        on average with uneven gaps, as the sandbox shops make their history."""
        end = until or self.clock()
        rng = random.Random(f"spryker-history:{self.seed}")
        mean_gap = 60.0 / orders_per_minute
        moments, moment = [], end - history
        while moment < end:
            moments.append(moment)
            moment += timedelta(seconds=mean_gap * rng.uniform(0.5, 1.5))
        return self.add_orders(moments)

    def _order(self, rng: random.Random, order_id: int, created: datetime) -> dict[str, Any]:
        customer = rng.choice(self.data.customers)
        ship = draw_country(rng)
        currency = COUNTRIES[ship][2]
        net = customer.company is not None and ship == "DE"
        stamp = format_spryker_datetime(created)
        items = self._items(rng, order_id, ship, currency, net, stamp)
        expense = self._shipping(order_id, ship, currency, net, stamp)
        totals = order_totals(order_id, items, [expense], net, stamp)
        billing = order_address(rng, order_id * 2 - 1, customer.country, customer)
        shipping = order_address(rng, order_id * 2, ship, customer)
        return {
            "id_sales_order": order_id,
            "fk_sales_order_address_billing": billing["id_sales_order_address"],
            "fk_sales_order_address_shipping": shipping["id_sales_order_address"],
            "order_reference": f"DE--{order_id}",
            "customer_reference": f"DE--{customer.number}",
            "email": customer.email,
            "salutation": "n/a",
            "first_name": customer.first_name,
            "last_name": customer.last_name,
            "currency_iso_code": currency,
            "price_mode": NET_MODE if net else GROSS_MODE,
            "store": "DE",
            "is_test": False,
            "created_at": stamp,
            "updated_at": stamp,
            RELATION_ITEMS: items,
            RELATION_EXPENSES: [expense],
            RELATION_TOTALS: [totals],
            RELATION_BILLING: [billing],
            RELATION_SHIPPING: [shipping],
        }

    def _items(
        self, rng: random.Random, order_id: int, ship: str, currency: str, net: bool, stamp: str
    ) -> list[dict[str, Any]]:
        factor = CURRENCIES[currency][2]
        items = []
        for n, product in enumerate(rng.sample(PRODUCTS, rng.randint(2, 4))):
            rate = _rates(ship, product.tax_class)
            gross = round(product.price * 100 * factor)
            net_price = gross - _tax(gross, rate, gross=True)
            if net:
                gross = net_price + _tax(net_price, rate, gross=False)
            quantity = rng.choice((1, 1, 1, 2, 3))
            unit = net_price if net else gross
            discount = round(unit * quantity / 10) if n == 0 and rng.random() < 0.2 else 0
            items.append(
                {
                    "id_sales_order_item": order_id * 10 + n,
                    "fk_sales_order": order_id,
                    "sku": product.sku,
                    "name": product.name,
                    "quantity": quantity,
                    "gross_price": gross,
                    "net_price": net_price,
                    "price": unit,
                    "tax_rate": f"{rate:.2f}",
                    "discount_amount_full_aggregation": discount,
                    "price_to_pay_aggregation": unit * quantity - discount,
                    "created_at": stamp,
                }
            )
        return items

    def _shipping(
        self, order_id: int, ship: str, currency: str, net: bool, stamp: str
    ) -> dict[str, Any]:
        zone = "DE" if ship == "DE" else "EU" if ship in VAT_RATES else "WORLD"
        gross = round(_SHIPPING_CENTS[zone] * CURRENCIES[currency][2])
        rate = _rates(ship, "standard")
        net_price = gross - _tax(gross, rate, gross=True)
        return {
            "id_sales_expense": order_id,
            "fk_sales_order": order_id,
            "type": SHIPMENT_EXPENSE_TYPE,
            "name": {"DE": "Standard", "EU": "Express EU", "WORLD": "International"}[zone],
            "gross_price": gross,
            "net_price": net_price,
            "price": net_price if net else gross,
            "tax_rate": f"{rate:.2f}",
            "discount_amount_aggregation": 0,
            "price_to_pay_aggregation": net_price if net else gross,
            "created_at": stamp,
        }

    # --- HTTP ------------------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        with self._lock:
            self.requests += 1
            if request.path in (TOKEN_PATH, TOKEN_PATH + "/") and request.method == "POST":
                return self._token(request)
            if request.path == f"{DYNAMIC_ENTITY_PREFIX}/{ORDERS_ALIAS}":
                if request.method != "GET":
                    return Response(405, glue_error_body(405, "1318", "Method not allowed."))
                return self._orders(request)
            return Response(404, glue_error_body(404, "007", "Not found"))

    def internal_error(self, message: str) -> Response:
        return Response(500, glue_error_body(500, "500", message))

    def _token(self, request: Request) -> Response:
        form = _form(request)
        if form.get("grant_type") != "password":
            message = "The authorization grant type is not supported by the authorization server."
            return Response(400, glue_error_body(400, "unsupported_grant_type", message))
        username, password = form.get("username", ""), form.get("password", "")
        if not username or not password:
            message = "The request is missing a required parameter, includes an invalid parameter value, includes a parameter more than once, or is otherwise malformed."  # noqa: E501
            return Response(400, glue_error_body(400, "invalid_request", message))
        good_user = hmac.compare_digest(username.encode(), self.username.encode())
        good_password = hmac.compare_digest(password.encode(), self.password.encode())
        if not (good_user and good_password):
            message = "The user credentials were incorrect."
            return Response(400, glue_error_body(400, "invalid_grant", message))
        token = secrets.token_urlsafe(32)
        self._tokens[token] = self.clock()
        body = {
            "token_type": "Bearer",
            "expires_in": self.token_lifetime_s,
            "access_token": token,
            "refresh_token": secrets.token_urlsafe(32),
        }
        return Response(200, body)

    def _authorised(self, request: Request) -> Response | None:
        token = request.bearer()
        if token is None:
            return Response(403, glue_error_body(403, "002", "Missing access token."))
        issued = self._tokens.get(token)
        age = (self.clock() - issued).total_seconds() if issued else None
        if age is None or age >= self.token_lifetime_s:
            return Response(401, glue_error_body(401, "001", "Invalid access token."))
        return None

    def _orders(self, request: Request) -> Response:
        refused = self._authorised(request)
        if refused is not None:
            return refused
        try:
            conditions = _conditions(request)
            offset = int(request.param("page[offset]") or 0)
            limit = int(request.param("page[limit]") or DEFAULT_PAGE_LIMIT)
            include = _include(request.param("include"))
        except ValueError as exc:
            return Response(400, glue_error_body(400, "1301", str(exc)))
        rows = [o for _, o in sorted(self.orders.items()) if _matches(o, conditions)]
        data = [_with(o, include) for o in rows[max(0, offset) : max(0, offset) + max(0, limit)]]
        return Response(200, {"data": data})


def _form(request: Request) -> dict[str, str]:
    """The token request's parameters: a form (as documented), or a JSON object."""
    text = request.body.decode("utf-8", "replace")
    if "json" in request.headers.get("content-type", ""):
        try:
            body = json.loads(text)
        except ValueError:
            return {}
        return {k: str(v) for k, v in body.items()} if isinstance(body, dict) else {}
    return dict(parse_qsl(text, keep_blank_values=True))


def _conditions(request: Request) -> list[tuple[str, Any]]:
    """``filter[sales-orders.<column>]`` parameters: (column, value or ``{"in": [...]}``)."""
    found = []
    for key, values in request.query.items():
        if not key.startswith("filter[") or not key.endswith("]"):
            continue
        alias, _, column = key[len("filter[") : -1].partition(".")
        if alias != ORDERS_ALIAS or column not in _ORDER_COLUMNS:
            raise ValueError(f"The filter field `{key[7:-1]}` is not found.")
        value: Any = values[0]
        try:
            decoded = json.loads(value)
        except ValueError:
            decoded = None
        if isinstance(decoded, dict) and len(decoded) == 1 and "in" in {k.lower() for k in decoded}:
            value = {"in": [str(v) for v in next(iter(decoded.values()))]}
        found.append((column, value))
    return found


def _matches(order: dict[str, Any], conditions: list[tuple[str, Any]]) -> bool:
    for column, value in conditions:
        actual = _as_text(order.get(column))
        if isinstance(value, dict):
            if actual not in value["in"]:
                return False
        elif actual != value:
            return False
    return True


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return "" if value is None else str(value)


def _include(text: str | None) -> dict[str, bool]:
    """Requested relations: name -> whether its ``country`` relation is wanted too."""
    wanted: dict[str, bool] = {}
    for chain in filter(None, (text or "").split(",")):
        first, _, rest = chain.strip().partition(".")
        if first not in _RELATIONS or rest not in ("", RELATION_COUNTRY):
            raise ValueError(f"The relation `{chain}` is not found.")
        wanted[first] = wanted.get(first, False) or rest == RELATION_COUNTRY
    return wanted


def _with(order: dict[str, Any], include: dict[str, bool]) -> dict[str, Any]:
    record = {k: v for k, v in order.items() if k not in _RELATIONS}
    for name, with_country in include.items():
        rows = order[name]
        if name in (RELATION_BILLING, RELATION_SHIPPING) and not with_country:
            rows = [{k: v for k, v in row.items() if k != RELATION_COUNTRY} for row in rows]
        record[name] = rows
    return record


_ORDER_COLUMNS = frozenset(
    (
        "id_sales_order fk_sales_order_address_billing fk_sales_order_address_shipping "
        "order_reference customer_reference email first_name last_name currency_iso_code "
        "price_mode store is_test created_at updated_at salutation"
    ).split()
)
