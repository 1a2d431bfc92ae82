"""The sandbox ERP's books: the division's items, accounts, sales orders and VAT codes.

Seeded from the shared :class:`~integration_project.sandbox.world.SandboxData` as a real
division would be: every catalogue SKU is an item (``Code`` = SKU, priced at the catalogue's
German gross price less German VAT), plus a shipping and a discount item; every customer marked
``in_erp`` is an account. IDs come from the ERP's own seeded stream, so the same seed gives the
same IDs in every run. :class:`ErpBooks` also answers the questions tests ask of the ERP
(which orders arrived, twice?, what will be invoiced).
"""

from __future__ import annotations

import random
import threading
import uuid
from collections import Counter
from decimal import Decimal
from typing import Any

from integration_project.exact.models import (
    ACCOUNTS,
    DIVISIONS,
    ME,
    PAYMENT_CONDITIONS,
    SALES_CHANNELS,
    SALES_ORDER_LINES,
    SALES_ORDERS,
    SHIPPING_METHODS,
    VAT_CODES,
    WAREHOUSES,
    account_code,
)
from integration_project.sandbox.common import Clock
from integration_project.sandbox.erp_vat import ITEM_SALES_VAT_CODE, Invoice, cents, seed_vat_codes
from integration_project.sandbox.world import (
    ERP_PAYMENT_CONDITIONS,
    ERP_SALES_CHANNELS,
    ERP_SHIPPING_METHODS,
    ERP_WAREHOUSES,
    VAT_RATES,
    SandboxData,
)
from integration_project.settings import DISCOUNT_ITEM_CODE, SHIPPING_ITEM_CODE

_STATE_LINE_FIELDS = (
    "Item", "ItemCode", "Quantity", "NetPrice", "VATCode", "VATPercentage", "VATAmount",
    "AmountFC", "AmountFCExclVat",
)  # fmt: skip


class ErpBooks:
    """A division (its code, the user the tokens belong to, further divisions reached) and its
    entities; thread-safe (``lock`` around them, shared with the ERP's HTTP side). Methods
    without a lock of their own say "hold the lock"."""

    def __init__(self, data: SandboxData, *, seed: int, clock: Clock, division: str) -> None:
        self.data = data
        self.clock = clock
        self.division = division
        #: Further divisions the same authorisation reaches (their data is the same).
        self.other_divisions: set[str] = set()
        #: The user the tokens belong to (``current/Me``); not drawn from the seed's stream.
        self.user_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"sandbox-erp-user:{seed}"))
        #: The division's currency: what a sales order without ``Currency`` is in.
        self.currency = "EUR"
        #: Item ID -> its sales price excluding VAT: the ``NetPrice`` of a line that names
        #: none (the catalogue's German gross price, less German VAT; 0 for shipping/discount).
        self.item_prices: dict[str, Decimal] = {}
        self.items: dict[str, dict[str, Any]] = {}
        self.accounts: dict[str, dict[str, Any]] = {}
        #: Every sales order that reached the ERP, in arrival order (duplicates included).
        self.sales_orders: list[dict[str, Any]] = []
        #: The division's VAT codes (``vat/VATCodes``), keyed by ID, in listing order.
        self.vat_codes: dict[str, dict[str, Any]] = {}
        #: The lists a sales order refers to (shipping methods, payment conditions, sales
        #: channels, warehouses): resource -> rows (ID, Code, Description), in listing order.
        self.lookup_lists: dict[str, list[dict[str, Any]]] = {
            SHIPPING_METHODS: [],
            PAYMENT_CONDITIONS: [],
            SALES_CHANNELS: [],
            WAREHOUSES: [],
        }
        self._rng = random.Random(f"erp:{seed}")
        self._next_order_number = 1
        #: The one lock around the books (and the ERP's other state).
        self.lock = threading.RLock()
        self._seed()

    def _seed(self) -> None:
        """Items, accounts and VAT codes a fresh division holds, IDs drawn in that order."""
        for product in self.data.products:
            item = self.add_item(product.sku, product.name)
            rate = Decimal(str(VAT_RATES["DE"][0 if product.tax_class == "standard" else 1]))
            self.item_prices[item["ID"]] = cents(Decimal(str(product.price)) / (1 + rate / 100))
        self.add_item(SHIPPING_ITEM_CODE, "Versandkosten / Shipping")
        self.add_item(DISCOUNT_ITEM_CODE, "Rabatt / Discount")
        for customer in self.data.customers:
            if customer.in_erp:
                self.open_account(customer.name, customer.email, customer.country, "C")
        for row in seed_vat_codes():  # after items and accounts: their IDs stay as they were
            row = {"ID": self.guid(), **row}
            self.vat_codes[row["ID"]] = row
        seeds = (
            (SHIPPING_METHODS, ERP_SHIPPING_METHODS),
            (PAYMENT_CONDITIONS, ERP_PAYMENT_CONDITIONS),
            (SALES_CHANNELS, ERP_SALES_CHANNELS),
            (WAREHOUSES, ERP_WAREHOUSES),
        )
        for resource, rows in seeds:  # last: every ID drawn before stays as it was
            for code, description in rows:
                self.add_lookup_row(resource, code, description)

    # --- for tests ---------------------------------------------------------------------

    def orders_with_ref(self, your_ref: str) -> list[dict[str, Any]]:
        with self.lock:
            return [o for o in self.sales_orders if o["YourRef"] == your_ref]

    def duplicate_refs(self) -> dict[str, int]:
        """``YourRef`` values that reached the ERP more than once (should stay empty)."""
        with self.lock:
            counts = Counter(o["YourRef"] for o in self.sales_orders if o["YourRef"] is not None)
        return {ref: n for ref, n in counts.items() if n > 1}

    def account_by_email(self, email: str) -> dict[str, Any] | None:
        with self.lock:
            return next((a for a in self.accounts.values() if _eq(a["Email"], email)), None)

    def accounts_by_email(self, email: str) -> list[dict[str, Any]]:
        with self.lock:
            return [a for a in self.accounts.values() if _eq(a["Email"], email)]

    def add_account(
        self, name: str, email: str, country: str = "NL", *, code: str | None = None
    ) -> dict[str, Any]:
        """An account made by hand in the division (as a bookkeeper would): e.g. a second
        account with an e-mail another account already has. ``code`` is right-aligned."""
        with self.lock:
            return self.open_account(
                name, email, country, "C", code=None if code is None else account_code(code)
            )

    def item_by_code(self, code: str) -> dict[str, Any] | None:
        with self.lock:
            return next((i for i in self.items.values() if i["Code"] == code), None)

    def vat_code(self, code: str) -> dict[str, Any] | None:
        """The VAT code row with this ``Code`` (exact match), or None."""
        with self.lock:
            wanted = code.strip()
            return next((v for v in self.vat_codes.values() if v["Code"].strip() == wanted), None)

    def add_lookup_row(self, resource: str, code: str, description: str) -> dict[str, Any]:
        """A row of a list a sales order refers to, made in the division (as a bookkeeper
        would: e.g. a second shipping method with a description another one has)."""
        with self.lock:
            row = {"ID": self.guid(), "Code": code, "Description": description}
            if resource == WAREHOUSES:
                row["Main"] = int(not self.lookup_lists[resource])
            self.lookup_lists[resource].append(row)
            return row

    def lookup_row(self, resource: str, field: str, value: str) -> dict[str, Any] | None:
        """The first row of ``resource`` whose ``field`` is ``value`` (exact match), or None."""
        with self.lock:
            return next((r for r in self.lookup_lists[resource] if r[field] == value), None)

    def invoices(self) -> dict[str, Invoice]:
        """``YourRef`` -> what the ERP will invoice for it (the first order with that ref)."""
        with self.lock:
            out: dict[str, Invoice] = {}
            for order in self.sales_orders:
                if order["YourRef"] is not None and order["YourRef"] not in out:
                    out[order["YourRef"]] = Invoice(
                        total=Decimal(str(order["AmountFC"])),
                        excl_vat=Decimal(str(order["AmountFCExclVat"])),
                        vat=Decimal(str(order["VATAmount"])),
                        lines=len(order["SalesOrderLines"]),
                    )
            return out

    def invoice_total(self, your_ref: str) -> Decimal:
        """What the ERP will invoice (incl. VAT) for the order sent as ``your_ref``.
        KeyError if none reached the ERP."""
        return self.invoices()[your_ref].total

    # --- for the ERP's endpoints (hold the lock) -------------------------------------------

    def guid(self) -> str:
        """A new entity ID, the next draw of the ERP's stream."""
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    def add_item(
        self, code: str, description: str, sales_vat_code: str = ITEM_SALES_VAT_CODE
    ) -> dict[str, Any]:
        item = {
            "ID": self.guid(),
            "Code": code,
            "Description": description,
            "Unit": "pc",
            "SalesVatCode": sales_vat_code,
        }
        self.items[item["ID"]] = item
        return item

    def open_account(
        self,
        name: str,
        email: str | None,
        country: str | None,
        status: str,
        *,
        code: str | None = None,
    ) -> dict[str, Any]:
        """A new account; without ``code``, numbered as Exact numbers it."""
        if code is None:  # Exact numbers it, right-aligned to 18 characters: '             7'
            taken = {a["Code"] for a in self.accounts.values()}
            number = len(self.accounts) + 1
            while account_code(str(number)) in taken:
                number += 1
            code = account_code(str(number))
        account = {
            "ID": self.guid(),
            "Code": code,
            "Name": name,
            "Email": email,
            "Country": country,
            "Status": status,
        }
        self.accounts[account["ID"]] = account
        return account

    def next_order_number(self) -> int:
        """The ``OrderNumber`` of the next sales order (each call takes one)."""
        number = self._next_order_number
        self._next_order_number += 1
        return number

    def lines_of(self, order: dict[str, Any]) -> list[dict[str, Any]]:
        """An order's lines as ``salesorder/SalesOrderLines`` rows."""
        return [{**line, "OrderID": order["OrderID"]} for line in order["SalesOrderLines"]]

    def rows(self, resource: str) -> list[dict[str, Any]]:
        """The rows a GET of ``resource`` reads (the stored list itself for sales orders)."""
        if resource == ME:
            return [
                {
                    "UserID": self.user_id,
                    "CurrentDivision": int(self.division),
                    "FullName": "Sandbox ERP user",
                    "UserName": "sandbox",
                    "Email": "erp-user@sandbox.invalid",
                }
            ]
        if resource == DIVISIONS:
            return [
                {
                    "Code": int(division),
                    "Description": f"Sandbox division {division}",
                    "Currency": self.currency,
                    "Country": "NL",
                }
                for division in [self.division, *sorted(self.other_divisions)]
            ]
        if resource == SALES_ORDERS:
            return self.sales_orders
        if resource == VAT_CODES:
            return list(self.vat_codes.values())
        if resource == SALES_ORDER_LINES:
            return [line for order in self.sales_orders for line in self.lines_of(order)]
        if resource in self.lookup_lists:
            return list(self.lookup_lists[resource])
        return list((self.accounts if resource == ACCOUNTS else self.items).values())

    def summary(self) -> dict[str, Any]:
        """The books as ``/sandbox/state`` shows them: every sales order, and counts."""
        orders = [
            {
                **{k: o.get(k) for k in ("OrderID", "OrderNumber", "YourRef", "OrderedBy")},
                **{k: o.get(k) for k in ("OrderDate", "Currency", "AmountFC", "Created")},
                **{k: o.get(k) for k in ("AmountFCExclVat", "VATAmount")},
                "lines": [
                    {k: line[k] for k in _STATE_LINE_FIELDS} for line in o["SalesOrderLines"]
                ],
            }
            for o in self.sales_orders
        ]
        return {
            "sales_orders": orders,
            "accounts": len(self.accounts),
            "items": len(self.items),
            "vat_codes": len(self.vat_codes),
        }


def _eq(value: Any, literal: str) -> bool:
    return value is not None and str(value).casefold() == literal.casefold()
