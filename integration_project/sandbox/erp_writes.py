"""What the sandbox ERP accepts as writes, and what it stores for them.

POST creates accounts (only ``Name`` required; a ``Code`` sent is kept, right-aligned to 18)
and sales orders (only ``OrderedBy`` and lines with ``Item`` and ``Quantity`` required: the
date, the division's currency, the item's price and description are filled in). A sales order
line's VAT comes from its ``VATCode``, else from its item's ``SalesVatCode``; unknown, blocked
and purchase-only codes are refused, as are a ``ShippingMethod``, ``SalesChannel`` or
``WarehouseID`` that is no row's ID and a ``PaymentCondition`` that is no row's code. Lines
and header carry ``AmountFC`` / ``AmountFCExclVat`` / ``VATAmount`` (header ``AmountFC`` =
what will be invoiced, VAT included). ``PUT
crm/Accounts(guid'…')`` updates the fields sent. ``YourRef`` is NOT deduplicated (the real ERP
does not either), which is how tests see a route that sends twice. Every function here is
called holding the books' lock and raises :class:`Refused` with Exact's message for a write
Exact refuses.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from integration_project.exact.models import (
    MAX_VAT_CODE,
    PAYMENT_CONDITIONS,
    SALES_CHANNELS,
    SHIPPING_METHODS,
    WAREHOUSES,
    account_code,
)
from integration_project.sandbox.erp_books import ErpBooks
from integration_project.sandbox.erp_vat import line_amounts
from integration_project.settings import CURRENCIES, ISO_COUNTRIES

_M = TypeVar("_M", bound=BaseModel)


class Refused(Exception):
    """A write Exact refuses: the answer's status and message (``; ``-joined problems)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="allow")


class _AccountPost(_Lenient):
    """What Exact requires to create an account: a ``Name``. ``Email`` and ``Country`` are
    optional (ossobv's ``ExactCustomer`` sends neither; its sample account has ``'Email':
    None``); a ``Code`` sent is kept, right-aligned."""

    Name: str
    Email: str | None = None
    Country: str | None = None
    Status: str = "C"
    Code: str | None = None


class _SalesOrderLinePost(_Lenient):
    Item: str
    Quantity: float
    NetPrice: float | None = None  # None: the item's sales price
    Description: str | None = None  # None: the item's description
    VATCode: str | None = Field(default=None, max_length=MAX_VAT_CODE)


class _SalesOrderPost(_Lenient):
    """What Exact requires to create a sales order: ``OrderedBy`` and ``SalesOrderLines`` (each
    with ``Item`` and ``Quantity``); it fills the rest (``OrderDate`` today, the division's
    currency, the item's price and description)."""

    OrderedBy: str
    SalesOrderLines: list[_SalesOrderLinePost] = Field(min_length=1)
    YourRef: str | None = None
    OrderDate: str | None = None
    Description: str | None = None
    Currency: str | None = None
    ShippingMethod: str | None = None  # an ID of sales/ShippingMethods
    PaymentCondition: str | None = None  # a Code of cashflow/PaymentConditions
    SalesChannel: str | None = None  # an ID of sales/SalesChannels
    WarehouseID: str | None = None  # an ID of inventory/Warehouses


#: A sales order's references to the division's lists: field -> (list, the row's field it
#: names, what Exact calls the row in its message).
_REFERENCES = (
    ("ShippingMethod", SHIPPING_METHODS, "ID", "shipping method"),
    ("PaymentCondition", PAYMENT_CONDITIONS, "Code", "payment condition"),
    ("SalesChannel", SALES_CHANNELS, "ID", "sales channel"),
    ("WarehouseID", WAREHOUSES, "ID", "warehouse"),
)


def create_account(books: ErpBooks, body: Any) -> dict[str, Any]:
    """``POST crm/Accounts``: the stored account."""
    account = _validate(_AccountPost, body)
    problems = [] if account.Name.strip() else ["Name: Mandatory"]
    country = (account.Country or "").strip() or None  # Exact pads codes: 'NL '
    if country is not None and country not in ISO_COUNTRIES:
        problems.append(f"Country: '{account.Country}' is not a known country code")
    code = None
    if account.Code is not None:
        try:
            code = account_code(account.Code)  # kept as sent, right-aligned like Exact's
        except ValueError:
            problems.append(f"Code: '{account.Code}' is not a valid code")
    _refuse_if(problems)
    if code is not None and any(a["Code"] == code for a in books.accounts.values()):
        raise Refused(400, f"Code: '{code.strip()}' already exists")
    row = books.open_account(account.Name, account.Email, country, account.Status, code=code)
    row.update({k: v for k, v in account.model_dump().items() if k not in row})
    return row


def update_account(books: ErpBooks, key: str, body: Any) -> None:
    """``PUT crm/Accounts(guid'…')``: the fields sent replace the stored ones (the rest stay,
    as ossobv's ``relations.update(guid, {'Name': …})`` relies on)."""
    if not isinstance(body, dict):
        raise Refused(400, "The request body is not a JSON object")
    changes = {k: v for k, v in body.items() if k not in ("ID", "__metadata")}
    problems = []
    if "Name" in changes and not str(changes["Name"] or "").strip():
        problems.append("Name: Mandatory")
    if "Country" in changes:
        country = str(changes["Country"] or "").strip() or None
        if country is not None and country not in ISO_COUNTRIES:
            problems.append(f"Country: '{changes['Country']}' is not a known country code")
        changes["Country"] = country
    if "Code" in changes:
        try:
            changes["Code"] = account_code(str(changes["Code"] or ""))
        except ValueError:
            problems.append(f"Code: '{changes['Code']}' is not a valid code")
    row = books.accounts.get(key)
    if row is None:
        raise Refused(404, f"Account {key} does not exist")
    code = changes.get("Code")
    taken = any(a["Code"] == code for a in books.accounts.values() if a is not row)
    if not problems and code is not None and taken:
        problems.append(f"Code: '{code.strip()}' already exists")
    _refuse_if(problems)
    row.update(changes)


def create_sales_order(books: ErpBooks, body: Any) -> dict[str, Any]:
    """``POST salesorder/SalesOrders``: the stored order, with Exact's defaults and amounts."""
    order = _validate(_SalesOrderPost, body)
    currency = order.Currency if order.Currency is not None else books.currency
    line_vat = _check_sales_order(books, order, currency)
    lines = [
        _line_row(books, n, line, vat)
        for n, (line, vat) in enumerate(zip(order.SalesOrderLines, line_vat, strict=True), start=1)
    ]
    excl = sum((Decimal(str(line["AmountFCExclVat"])) for line in lines), Decimal(0))
    vat_total = sum((Decimal(str(line["VATAmount"])) for line in lines), Decimal(0))
    row = {
        **order.model_dump(),
        "OrderID": books.guid(),
        "OrderNumber": books.next_order_number(),
        "OrderedBy": order.OrderedBy.lower(),
        "OrderedByName": books.accounts[order.OrderedBy.lower()]["Name"],
        # Exact's defaults: today's date, the division's currency.
        "OrderDate": order.OrderDate or books.clock().date().isoformat(),
        "Currency": currency,
        "Status": 12,  # open
        "AmountFC": float(excl + vat_total),  # what will be invoiced, VAT included
        "AmountFCExclVat": float(excl),
        "VATAmount": float(vat_total),
        "Created": books.clock().isoformat(),
        "SalesOrderLines": lines,
    }
    books.sales_orders.append(row)
    return row


def _check_sales_order(
    books: ErpBooks, order: _SalesOrderPost, currency: str
) -> list[dict[str, Any]]:
    """Each line's VAT code row; :class:`Refused` naming every problem of the order."""
    problems = []
    if order.OrderedBy.lower() not in books.accounts:
        problems.append(f"OrderedBy: account {order.OrderedBy} does not exist")
    if currency not in CURRENCIES:
        problems.append(f"Currency: '{order.Currency}' is not a known currency")
    problems += _reference_problems(books, order)
    vat_codes = {v["Code"].strip(): v for v in books.vat_codes.values()}
    line_vat: list[dict[str, Any]] = []
    for n, line in enumerate(order.SalesOrderLines, start=1):
        item = books.items.get(line.Item.lower())
        if item is None:
            problems.append(f"SalesOrderLines[{n}].Item: item {line.Item} does not exist")
        if not line.Quantity > 0:
            problems.append(f"SalesOrderLines[{n}].Quantity: must be greater than 0")
        named = (line.VATCode or "").strip()
        code = named or (item["SalesVatCode"] if item is not None else "")
        vat = vat_codes.get(code)
        where = f"SalesOrderLines[{n}].VATCode"
        if item is None and not named:
            pass  # the item's code is unknown; its error says enough
        elif vat is None:
            problems.append(f"{where}: VAT code '{code}' does not exist")
        elif vat["IsBlocked"]:
            problems.append(f"{where}: VAT code '{code}' is blocked")
        elif vat["VATTransactionType"] not in ("S", "B"):
            problems.append(
                f"{where}: VAT code '{code}' is a purchase VAT code; "
                "a sales order needs a sales VAT code"
            )
        else:
            line_vat.append(vat)
    _refuse_if(problems)
    return line_vat


def _reference_problems(books: ErpBooks, order: _SalesOrderPost) -> list[str]:
    """What Exact says of references to rows the division does not have (an ID compared
    without case, a payment condition's code without padding or case)."""
    problems = []
    for name, resource, key, what in _REFERENCES:
        value = getattr(order, name)
        if value is None or value == "":
            continue  # left off: Exact takes the account's own
        wanted = value.strip().casefold()
        rows = books.lookup_lists[resource]
        if not any(str(row[key]).strip().casefold() == wanted for row in rows):
            problems.append(f"{name}: {what} {value} does not exist")
    return problems


def _line_row(
    books: ErpBooks, n: int, line: _SalesOrderLinePost, vat: dict[str, Any]
) -> dict[str, Any]:
    """Line ``n`` as stored: what the line leaves out filled in from its item, as Exact does."""
    item = books.items[line.Item.lower()]
    price = line.NetPrice
    if price is None:
        price = float(books.item_prices.get(item["ID"], Decimal(0)))
    return {
        **line.model_dump(),
        "NetPrice": price,
        "Description": item["Description"] if line.Description is None else line.Description,
        "ID": books.guid(),
        "LineNumber": n,
        "Item": item["ID"],
        "ItemCode": item["Code"],
        **line_amounts(line.Quantity, price, vat),
    }


def _validate(model: type[_M], body: Any) -> _M:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"]) or "body"
            problems.append(f"{where}: {error['msg']}")
        raise Refused(400, "; ".join(problems)) from None


def _refuse_if(problems: list[str]) -> None:
    if problems:
        raise Refused(400, "; ".join(problems))
