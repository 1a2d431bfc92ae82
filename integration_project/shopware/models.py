"""Wire format of the Shopware 6 Admin API subset this project speaks.

Used by both the real client (:mod:`integration_project.shopware.client`) and the sandbox shop
(:mod:`integration_project.sandbox.shop`), so the two cannot drift apart. Field names are
Shopware's own (camelCase); see ``shared/reference/shopware-admin-api-orders.openapi.json``.

Shopware answers ``null`` for unset fields, so every field an order may lack is optional here:
deciding whether an order is usable is the job of the transforms, which quarantine it with a
reason instead of failing the whole page.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import re
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

TOKEN_PATH = "/api/oauth/token"
ORDER_SEARCH_PATH = "/api/search/order"

#: Associations every order search loads: the fields the mapping reads live behind them.
#: Shopware 6.6 returns ``null`` for a to-one association it was not asked for, the order's
#: ``stateMachineState`` included (6.5 loaded it anyway), and line items in no fixed order unless
#: the association is sorted.
ORDER_ASSOCIATIONS: dict[str, Any] = {
    "stateMachineState": {},
    "lineItems": {"sort": [{"field": "position", "order": "ASC"}]},
    "currency": {},
    "orderCustomer": {},
    "billingAddress": {"associations": {"country": {}}},
    "deliveries": {"associations": {"shippingOrderAddress": {"associations": {"country": {}}}}},
}

#: :data:`ORDER_ASSOCIATIONS` and what a route's shipping and payment method look-ups read
#: (``mapping.lookups``): each delivery's shipping method (name, and technicalName from
#: 6.5.7), each transaction's payment method, transactions by ``createdAt`` (Shopware's own
#: code takes the last as the order's, e.g. PaymentTransactionChainProcessor). Only routes
#: with those look-ups ask for them: they add about a quarter to every order's answer.
METHOD_ASSOCIATIONS: dict[str, Any] = {
    **ORDER_ASSOCIATIONS,
    "deliveries": {
        "associations": {
            "shippingOrderAddress": {"associations": {"country": {}}},
            "shippingMethod": {},
        }
    },
    "transactions": {
        "associations": {"paymentMethod": {}},
        "sort": [{"field": "createdAt", "order": "ASC"}],
    },
}

LineItemType = Literal[
    "product", "credit", "custom", "promotion", "container", "discount", "quantity"
]


class _Wire(BaseModel):
    # Shopware sends many more fields than we read; keep them (the sandbox fills them in).
    model_config = ConfigDict(extra="allow", populate_by_name=True)


# --- OAuth -------------------------------------------------------------------------------


class ClientCredentialsGrant(_Wire):
    grant_type: Literal["client_credentials"] = "client_credentials"
    client_id: str
    client_secret: str


class TokenResponse(_Wire):
    token_type: str
    expires_in: int
    access_token: str


# --- Search criteria -----------------------------------------------------------------------


class RangeParameters(_Wire):
    # Text for dates (see format_storage_datetime), integers for autoIncrement.
    gte: str | int | None = None
    lt: str | int | None = None
    gt: str | int | None = None
    lte: str | int | None = None


class RangeFilter(_Wire):
    type: Literal["range"] = "range"
    field: str
    parameters: RangeParameters


class SortField(_Wire):
    field: str
    order: Literal["ASC", "DESC"] = "ASC"


class OrderCriteria(_Wire):
    """The body of ``POST /api/search/order`` (Shopware's ``Criteria`` schema)."""

    page: int = Field(ge=1)
    limit: int = Field(ge=1, le=500)
    total_count_mode: Literal["none", "exact", "next-pages"] = Field(
        "exact", alias="total-count-mode"
    )
    filter: list[RangeFilter] = Field(default_factory=list)
    sort: list[SortField] = Field(default_factory=list)
    associations: dict[str, Any] = Field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True)


def format_shop_datetime(value: datetime) -> str:
    """A moment as Shopware *returns* it in JSON: ISO 8601, UTC, with the offset
    (``2026-11-22T06:15:00.000+00:00``). Not for filter bounds: see
    :func:`format_storage_datetime`."""
    if value.tzinfo is None:
        raise ValueError("naive datetime: pass timezone-aware UTC datetimes")
    return value.astimezone(UTC).isoformat(timespec="milliseconds")


def format_storage_datetime(value: datetime) -> str:
    """A moment in Shopware's storage format, for range filter bounds on date fields.

    Shopware keeps dates as ``DATETIME(3)`` in UTC, written with
    ``Defaults::STORAGE_DATE_TIME_FORMAT`` (``'Y-m-d H:i:s.v'``): ``2026-11-22 06:15:00.000``, no
    ``T``, no offset. A range filter's bound goes to the database as it was sent, so a bound in
    another form (ISO with ``T`` or an offset) is not compared as the moment it names.
    Milliseconds are truncated, as they are when Shopware stores a date.
    """
    if value.tzinfo is None:
        raise ValueError("naive datetime: pass timezone-aware UTC datetimes")
    utc = value.astimezone(UTC).replace(tzinfo=None)
    return utc.isoformat(sep=" ", timespec="milliseconds")


def created_at_window_criteria(
    *,
    start: datetime,
    end: datetime,
    page: int,
    limit: int,
    associations: dict[str, Any] = ORDER_ASSOCIATIONS,
) -> OrderCriteria:
    """Criteria for one page of the orders created in ``[start, end)``, oldest first."""
    return OrderCriteria(
        page=page,
        limit=limit,
        filter=[
            RangeFilter(
                field="createdAt",
                parameters=RangeParameters(
                    gte=format_storage_datetime(start), lt=format_storage_datetime(end)
                ),
            )
        ],
        # id breaks ties between orders created in the same millisecond, so pages are stable.
        sort=[SortField(field="createdAt", order="ASC"), SortField(field="id", order="ASC")],
        associations=associations,
    )


#: The order's ``autoIncrement``: Shopware numbers orders as it stores them (a MySQL
#: AUTO_INCREMENT column, ``AutoIncrementField`` in ``OrderDefinition``), so it orders them
#: uniquely and keeps growing; it is what keyset paging and the late-order cursor go by.
#: Never null: ``auto_increment BIGINT unsigned NOT NULL AUTO_INCREMENT`` with a unique key
#: (Shopware's ``Migration1536232990Order``).
STORED_ORDER_KEY = "autoIncrement"


def stored_orders_criteria(
    *,
    created_from: datetime | None,
    created_to: datetime,
    stored_after: int | None,
    page: int,
    limit: int,
    stored_up_to: int | None = None,
    associations: dict[str, Any] = ORDER_ASSOCIATIONS,
) -> OrderCriteria:
    """One page of the orders created in ``[created_from, created_to)`` (no lower bound when
    ``created_from`` is None) that the shop stored after the order numbered ``stored_after``
    and up to ``stored_up_to`` (``autoIncrement``; None: no bound), in the order it stored
    them.

    Paged by key: the next page asks for ``autoIncrement`` above the last one seen, so every
    page costs the shop the same (an offset makes it skip all the rows before, ever slower
    as a backfill goes on). No total count either (``total-count-mode: none``): it costs the
    shop a second query per page, and paging stops at the first short page.
    """
    created = RangeParameters(lt=format_storage_datetime(created_to))
    if created_from is not None:
        created.gte = format_storage_datetime(created_from)
    filters = [RangeFilter(field="createdAt", parameters=created)]
    if stored_after is not None or stored_up_to is not None:
        stored = RangeParameters(gt=stored_after, lte=stored_up_to)
        filters.append(RangeFilter(field=STORED_ORDER_KEY, parameters=stored))
    return OrderCriteria(
        page=page,
        limit=limit,
        total_count_mode="none",
        filter=filters,
        sort=[SortField(field=STORED_ORDER_KEY, order="ASC")],
        associations=associations,
    )


def stored_order_key(order: Any) -> int | None:
    """An order's ``autoIncrement`` when it is one (an integer a BIGINT holds), else None."""
    key = order.get(STORED_ORDER_KEY) if isinstance(order, dict) else None
    if isinstance(key, int) and not isinstance(key, bool) and 0 <= key < 2**63:
        return key
    return None


# --- Orders --------------------------------------------------------------------------------


def php_empty_object(value: Any) -> Any:
    """PHP's ``json_encode`` writes an empty object (an empty associative array) as ``[]``:
    where Shopware sends an object, ``[]`` is the empty object, and reads as ``{}``."""
    return {} if isinstance(value, list) and not value else value


#: An object-typed field that also takes PHP's ``[]`` for the empty object.
PhpObject = BeforeValidator(php_empty_object)


class Country(_Wire):
    id: str | None = None
    iso: str | None = None
    name: str | None = None


class OrderAddress(_Wire):
    id: str | None = None
    firstName: str | None = None
    lastName: str | None = None
    company: str | None = None
    street: str | None = None
    zipcode: str | None = None
    city: str | None = None
    country: Annotated[Country | None, PhpObject] = None


class OrderCustomer(_Wire):
    id: str | None = None
    email: str | None = None
    firstName: str | None = None
    lastName: str | None = None
    company: str | None = None
    customerNumber: str | None = None


class Currency(_Wire):
    id: str | None = None
    isoCode: str | None = None
    symbol: str | None = None


class OrderDelivery(_Wire):
    id: str | None = None
    shippingOrderAddress: Annotated[OrderAddress | None, PhpObject] = None


class LineItemPayload(_Wire):
    productNumber: str | None = None


class OrderLineItem(_Wire):
    id: str | None = None
    type: str | None = None
    label: str | None = None
    position: Any = None  # line items arrive in no fixed order; this is theirs
    quantity: Any = None
    unitPrice: Any = None
    totalPrice: Any = None
    #: A CalculatedPrice: ``{unitPrice, quantity, totalPrice, calculatedTaxes, taxRules}``;
    #: ``calculatedTaxes`` is a list of ``{tax, taxRate, price}``, one per VAT rate.
    price: Any = None
    payload: Annotated[LineItemPayload | None, PhpObject] = None


class ShopOrder(_Wire):
    """A Shopware order as returned by the order search with :data:`ORDER_ASSOCIATIONS`."""

    id: str
    orderNumber: str | None = None
    orderDateTime: str | None = None
    createdAt: str | None = None
    amountTotal: Any = None
    amountNet: Any = None
    shippingTotal: Any = None
    #: A CalculatedPrice like a line item's ``price``: shipping's own ``calculatedTaxes``.
    shippingCosts: Any = None
    #: ``gross`` (prices include VAT), ``net`` (they exclude it) or ``tax-free``.
    taxStatus: str | None = None
    currency: Annotated[Currency | None, PhpObject] = None
    orderCustomer: Annotated[OrderCustomer | None, PhpObject] = None
    billingAddress: Annotated[OrderAddress | None, PhpObject] = None
    deliveries: list[Annotated[OrderDelivery | None, PhpObject]] | None = None
    lineItems: list[Annotated[OrderLineItem | None, PhpObject]] | None = None


class OrderSearchResponse(_Wire):
    """``application/json`` answer of ``POST /api/search/order``.

    ``data`` stays raw JSON, whatever each entry is (``null``, a number, an object without
    ``id``): a malformed order must reach the transforms (and quarantine) with everything the
    shop sent, not fail the page it came in. The client reads pages with
    :func:`integration_project.shopware.client.parse_order_page`, not with this model.
    """

    total: Any = None
    data: list[Any]


# --- Orders read without pydantic, where it would only say yes -------------------------------


@dataclass(frozen=True)
class DeclaredField:
    """One field of an order model as declared: ``kind`` is ``str``, ``any``, ``model`` (an
    object of ``model``) or ``list`` (of ``model`` objects, ``null`` too when
    ``element_nullable``). ``php_empty``: it takes PHP's ``[]`` for the empty object."""

    name: str
    kind: str
    nullable: bool
    required: bool
    model: type[BaseModel] | None = None
    php_empty: bool = False
    element_nullable: bool = False


def _unwrap(annotation: Any) -> tuple[Any, list[Any], bool]:
    """(type, metadata, nullable) of ``X | None`` and ``Annotated[X, ...]``."""
    metadata: list[Any] = []
    nullable = False
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            annotation, *extra = typing.get_args(annotation)
            metadata += extra
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(args) != 1:
                raise TypeError(f"not an order model field type: {annotation!r}")
            nullable = nullable or len(args) < len(typing.get_args(annotation))
            annotation = args[0]
        else:
            return annotation, metadata, nullable


def _takes_php_empty(metadata: list[Any]) -> bool:
    return any(isinstance(m, BeforeValidator) and m.func is php_empty_object for m in metadata)


@functools.cache
def declared_fields(model: type[BaseModel]) -> tuple[DeclaredField, ...]:
    """The fields of an order model, as the plain reader below and the ledger's SQL shape
    check (``ledger/projection.py``) read them; TypeError for a type neither knows."""
    found = []
    for name, info in model.model_fields.items():
        kind, metadata, nullable = _unwrap(info.annotation)
        metadata += info.metadata
        required = info.is_required()
        if kind is Any or kind is str:
            found.append(DeclaredField(name, "any" if kind is Any else "str", nullable, required))
        elif isinstance(kind, type) and issubclass(kind, BaseModel):
            php = _takes_php_empty(metadata)
            found.append(DeclaredField(name, "model", nullable, required, kind, php))
        elif typing.get_origin(kind) is list:
            element, element_metadata, element_nullable = _unwrap(typing.get_args(kind)[0])
            if not (isinstance(element, type) and issubclass(element, BaseModel)):
                raise TypeError(f"{model.__name__}.{name}: not an order model field: {kind!r}")
            php = _takes_php_empty(element_metadata)
            found.append(
                DeclaredField(name, "list", nullable, required, element, php, element_nullable)
            )
        else:
            raise TypeError(f"{model.__name__}.{name}: not an order model field: {kind!r}")
    return tuple(found)


class _NotPlain(Exception):
    """A value pydantic has to judge: the plain reader leaves the order to it."""


_MISSING = object()


def read_plain(model: type[BaseModel], raw: Any) -> Any:
    """``raw`` read as ``model`` without pydantic: an object with the model's fields as
    attributes, the very values ``model.model_validate(raw)`` would hold, when every field is
    plainly what the model declares (a str where text belongs, a dict or PHP's ``[]`` where a
    model does, a list of them); None when pydantic has to judge (and maybe reject) it.
    Only the declared fields are read: the order models' extra fields are never used."""
    try:
        return _plain_reader(model)(raw) if type(raw) is dict else None
    except _NotPlain:
        return None


@functools.cache
def _plain_reader(model: type[BaseModel]) -> Callable[[dict[str, Any]], Any]:
    """A function reading ``model`` plainly, written out for the model's fields and compiled
    once (as :mod:`dataclasses` writes its ``__init__``): a loop over the fields with a call
    per value took most of the time of reading an order."""
    fields = declared_fields(model)
    plain = type(f"Plain{model.__name__}", (), {"__slots__": tuple(f.name for f in fields)})
    scope: dict[str, Any] = {"Plain": plain, "MISSING": _MISSING, "NotPlain": _NotPlain}
    lines = ["def read(raw):", "    found = Plain()", "    get = raw.get"]
    for n, field in enumerate(fields):
        lines += [f"    # {field.name}: {field.kind}", *_plain_lines(field, n, scope)]
        lines.append(f"    found.{field.name} = value")
    lines.append("    return found")
    exec(compile("\n".join(lines), f"<plain reader of {model.__name__}>", "exec"), scope)
    return scope["read"]


def _plain_lines(field: DeclaredField, n: int, scope: dict[str, Any]) -> list[str]:
    """The lines reading one field into ``value`` (raising NotPlain where pydantic must judge:
    a value of another type, a required field missing, a null where none is taken)."""
    name = repr(field.name)
    missing = "raise NotPlain" if field.required else "value = None"  # else the default
    lines = [f"    value = get({name}, MISSING)", f"    if value is MISSING: {missing}"]
    if field.kind == "any":
        return lines
    lines.append(f"    elif value is None: {'pass' if field.nullable else 'raise NotPlain'}")
    if field.kind == "str":  # pydantic takes a str as it is (a lone surrogate too)
        lines.append("    elif value.__class__ is not str: raise NotPlain")
        return lines
    assert field.model is not None
    if field.kind == "model":
        scope[f"object_{n}"] = _plain_object(field.model, field.php_empty, nullable=False)
        return [*lines, f"    else: value = object_{n}(value)"]
    scope[f"element_{n}"] = _plain_object(
        field.model, field.php_empty, nullable=field.element_nullable
    )
    return [
        *lines,
        "    elif value.__class__ is not list: raise NotPlain",
        f"    else: value = [element_{n}(item) for item in value]",
    ]


def _plain_object(
    model: type[BaseModel], php_empty: bool, *, nullable: bool
) -> Callable[[Any], Any]:
    """Reads an object of ``model`` (PHP's ``[]`` too when ``php_empty``; ``null`` too when
    ``nullable``)."""
    reader = _plain_reader(model)

    def one(value: Any) -> Any:
        if value.__class__ is dict:
            return reader(value)
        if value is None and nullable:
            return None
        if php_empty and value.__class__ is list and not value:
            return reader({})
        raise _NotPlain

    return one


# --- Odd orders: what cannot be kept as it came ----------------------------------------------

#: Key of a stand-in order (see :func:`unreadable_order`); never a Shopware field name.
UNREADABLE_KEY = "_unreadable"
#: Orders nested deeper than this are not kept as they came (a Shopware order is ~6 levels
#: deep, custom fields a few more): Python's ``json`` cannot be trusted to read them back at
#: every stack depth (it raises RecursionError near 1,000 levels).
MAX_ORDER_DEPTH = 100
#: Longest shop order id taken as a key (Shopware's are 32 hex digits).
MAX_ORDER_ID = 64

_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_A_BRACKET = re.compile(r"[^\[\]{}]+")
_BRACKET_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}
_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,60}$")


def usable_order_id(value: Any) -> str | None:
    """``value`` if it can key an order: text of at most :data:`MAX_ORDER_ID` printable
    characters (no control characters, no lone surrogates), not blank; else None."""
    if isinstance(value, str) and value.strip() and len(value) <= MAX_ORDER_ID:
        return value if value.isprintable() else None
    return None


def storable_text(value: str, limit: int | None = None) -> str:
    """``value`` as UTF-8 can hold it (a lone surrogate becomes ``\\udXXX``), cut to ``limit``."""
    text = value.encode("utf-8", "backslashreplace").decode("utf-8")
    return text if limit is None or len(text) <= limit else text[: limit - 3] + "..."


def order_number_text(order: Any) -> str | None:
    """An order's ``orderNumber`` for the ledger's ``order_number`` column and for messages:
    the text, or the digits of a number (``10001`` and ``"10001"`` alike); else None."""
    number = order.get("orderNumber") if isinstance(order, dict) else None
    if isinstance(number, str) and number:
        return storable_text(number, 255)
    if isinstance(number, int) and not isinstance(number, bool) and abs(number) < 10**40:
        return str(number)
    if isinstance(number, float) and math.isfinite(number):
        return repr(number)
    return None


def nested_deeper_than(text: str, limit: int = MAX_ORDER_DEPTH) -> bool:
    """Whether the JSON ``text`` nests objects and arrays more than ``limit`` levels deep,
    found without parsing it (no recursion: safe at any depth, and cheap for most orders)."""
    if text.count("[") + text.count("{") <= limit:
        return False
    skeleton = _NOT_A_BRACKET.sub("", _JSON_STRING.sub("", text))
    return max(itertools.accumulate(map(_BRACKET_STEP.__getitem__, skeleton)), default=0) > limit


def json_problem(value: Any, max_depth: int = MAX_ORDER_DEPTH) -> str | None:
    """Why ``value`` cannot be written as JSON (and read back): the first offending path and
    what is wrong there, e.g. ``lineItems[0].label: not valid Unicode``; None when it can.

    Iterative, so it works at any depth. Checks what :func:`json.dumps` with
    ``allow_nan=False`` and UTF-8 need, and nesting up to ``max_depth`` levels.
    """
    if _plainly_json(value, max_depth):
        return None  # the common case, without building a path for every value
    stack: list[tuple[Any, tuple[Any, ...]]] = [(value, ())]
    while stack:
        item, path = stack.pop()
        where = json_path(path)
        if isinstance(item, dict | list | tuple) and len(path) >= max_depth:
            return f"{where}: nested deeper than {max_depth} levels"
        if isinstance(item, dict):
            children = []
            for key, child in item.items():
                if not isinstance(key, str):
                    return f"{where}: a key that is not text ({type(key).__name__})"
                if not _is_utf8(key):
                    return f"{where}: a key that is not valid Unicode (a lone surrogate)"
                children.append((child, (*path, key)))
            stack.extend(reversed(children))
        elif isinstance(item, list | tuple):
            stack.extend((child, (*path, n)) for n, child in reversed(list(enumerate(item))))
        elif isinstance(item, str):
            if not _is_utf8(item):
                return f"{where}: text that is not valid Unicode (a lone surrogate)"
        elif isinstance(item, float):
            if not math.isfinite(item):
                return f"{where}: {item!r} is not a JSON number"
        elif isinstance(item, int) and not isinstance(item, bool):
            if item.bit_length() > 14_000:  # past Python's 4,300-digit limit for writing ints
                return f"{where}: an integer of {item.bit_length()} bits is too long to write"
        elif item is not None and not isinstance(item, bool):
            return f"{where}: a {type(item).__name__} is not JSON"
    return None


def _plainly_json(value: Any, max_depth: int) -> bool:
    """Whether :func:`json_problem` finds nothing wrong with ``value``: the same checks, with
    only each value's depth kept (a mapped sales order is checked like this every time)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if not item.isascii() and not _is_utf8(item):
                return False
        elif isinstance(item, dict):
            if depth >= max_depth:
                return False
            for key, child in item.items():
                if not isinstance(key, str) or not (key.isascii() or _is_utf8(key)):
                    return False
                stack.append((child, depth + 1))
        elif isinstance(item, list | tuple):
            if depth >= max_depth:
                return False
            stack.extend((child, depth + 1) for child in item)
        elif isinstance(item, float):
            if not math.isfinite(item):
                return False
        elif isinstance(item, int):  # bool too: always plain
            if item.bit_length() > 14_000:
                return False
        elif item is not None:
            return False
    return True


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def json_path(path: Sequence[Any], shown: int = 8) -> str:
    """``("lineItems", 0, "label")`` -> ``lineItems[0].label``; long paths are cut short."""
    text = ""
    for part in path[:shown]:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            name = part if _FIELD.match(part) else repr(part[:40])
            text += f".{storable_text(name)}"
    if len(path) > shown:
        text += f"...({len(path) - shown} levels more)"
    return text.lstrip(".") or "the order"


def unreadable_order(reason: str, order: Any = None, *, raw_sha256: str | None = None) -> dict:
    """A stand-in for a shop order that cannot be kept as it came (it cannot be parsed, or
    written back as JSON). It keeps the order's ``id``, ``orderNumber`` and ``createdAt`` when
    those are usable, and ``reason``: the transforms quarantine it with that reason, so the
    order stays visible in the ledger instead of failing its page or vanishing."""
    standin: dict[str, Any] = {}
    if isinstance(order, dict):
        order_id = usable_order_id(order.get("id"))
        if order_id is not None:
            standin["id"] = order_id
        number = order_number_text(order)
        if number is not None:
            standin["orderNumber"] = number
        created = order.get("createdAt")
        if isinstance(created, str) and len(created) <= 64 and created.isprintable():
            standin["createdAt"] = created
    if raw_sha256 is not None:
        standin["rawSha256"] = raw_sha256
    standin[UNREADABLE_KEY] = storable_text(reason, 500)
    return standin


def order_json(order: Any) -> tuple[Any, str]:
    """The order as staging can keep it, and its JSON text: the order itself when it can be
    written as JSON and read back (any shape: ``null``, a number, an object without ``id``),
    else a stand-in (:func:`unreadable_order`) naming the field at fault, e.g. a ``NaN``, text
    that is not valid Unicode or nesting deeper than :data:`MAX_ORDER_DEPTH` levels."""
    try:
        text = json.dumps(order, ensure_ascii=False, allow_nan=False)
        text.encode("utf-8")
    except (TypeError, ValueError, RecursionError):  # UnicodeEncodeError is a ValueError
        text = None
    if text is not None and not nested_deeper_than(text):
        return order, text
    problem = json_problem(order) or "cannot be written as JSON"
    standin = unreadable_order(f"{problem}; the shop's order cannot be kept as it came", order)
    return standin, json.dumps(standin, ensure_ascii=False)


def unreadable_reason(order: Any) -> str | None:
    """The reason of a stand-in made by :func:`unreadable_order`; None for any other value."""
    if isinstance(order, dict):
        reason = order.get(UNREADABLE_KEY)
        if isinstance(reason, str) and reason:
            return reason
    return None


# --- Errors --------------------------------------------------------------------------------


class ShopError(_Wire):
    code: str | None = None
    status: str | None = None
    title: str | None = None
    detail: str | None = None


class ShopErrorResponse(_Wire):
    errors: list[ShopError]

    def summary(self) -> str:
        return "; ".join(
            f"{e.title or e.code or 'error'}: {e.detail or ''}".strip(": ") for e in self.errors
        )


def shop_error_body(status: int, title: str, detail: str, code: str = "") -> dict[str, Any]:
    """The error envelope Shopware uses, for the sandbox."""
    return ShopErrorResponse(
        errors=[ShopError(code=code or str(status), status=str(status), title=title, detail=detail)]
    ).model_dump(exclude_none=True)
