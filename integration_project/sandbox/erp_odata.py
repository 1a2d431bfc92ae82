"""The sandbox ERP's OData surface: which resources exist, and how a query is answered.

:data:`RESOURCES` and :data:`FIELD_TYPES` say what each resource is called in OData, its key,
and which fields a client may ``$filter`` (:mod:`~integration_project.sandbox.erp_filter`) and
``$select`` on. :func:`query` answers a GET as Exact does: ``$filter``, ``$select``, ``$top``,
``$expand=SalesOrderLines``, paging by ``page_size`` with ``__next`` / ``$skiptoken``;
:func:`created` answers a POST (the whole entity only with ``Prefer: return=representation``).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote, urlencode

from pydantic import BaseModel

from integration_project.exact.models import (
    ACCOUNTS,
    DIVISIONS,
    ITEMS,
    ME,
    PAYMENT_CONDITIONS,
    SALES_CHANNELS,
    SALES_ORDER_LINES,
    SALES_ORDERS,
    SHIPPING_METHODS,
    VAT_CODES,
    WAREHOUSES,
    AccountCreate,
    LookupRow,
    SalesOrderCreate,
    SalesOrderLineRef,
    SalesOrderRef,
    VatCode,
    error_body,
)
from integration_project.sandbox.common import Request, Response
from integration_project.sandbox.erp_filter import FilterError, compile_filter

#: ``crm/Accounts(guid'…')`` (one entity) and ``salesorder/SalesOrders(guid'…')/SalesOrderLines``
#: (a navigation property: the ``__deferred`` link of an order's lines).
ENTITY_PATH = re.compile(r"^([A-Za-z]+/[A-Za-z]+)\(guid'([0-9a-fA-F-]{36})'\)(?:/([A-Za-z]+))?$")
_SKIPTOKEN = re.compile(r"^(?:guid)?'?([0-9a-fA-F-]{36})'?$")
_QUERY_OPTIONS = frozenset({"$filter", "$select", "$top", "$skiptoken", "$expand"})


def _fields(*models: type[BaseModel], extra: str = "") -> frozenset[str]:
    return frozenset(name for m in models for name in m.model_fields) | frozenset(extra.split())


#: resource -> (key field, OData type name, fields a client may $filter / $select on)
RESOURCES: dict[str, tuple[str, str, frozenset[str]]] = {
    # Read-only: who the token belongs to (``GET /api/v1/current/Me``), and their divisions.
    ME: (
        "UserID",
        "Exact.Web.Api.System.Me",
        frozenset({"UserID", "CurrentDivision", "FullName", "UserName", "Email"}),
    ),
    DIVISIONS: (
        "Code",
        "Exact.Web.Api.Models.HRM.Division",
        frozenset({"Code", "Description", "Currency", "Country"}),
    ),
    ACCOUNTS: ("ID", "Exact.Web.Api.Models.Account", _fields(AccountCreate, extra="ID Code")),
    ITEMS: (
        "ID",
        "Exact.Web.Api.Models.Item",
        frozenset({"ID", "Code", "Description", "Unit", "SalesVatCode"}),
    ),
    SALES_ORDERS: (
        "OrderID",
        "Exact.Web.Api.Models.SalesOrder",
        _fields(
            SalesOrderCreate,
            SalesOrderRef,
            extra="OrderedByName Status AmountFC AmountFCExclVat VATAmount Created",
        ),
    ),
    VAT_CODES: ("ID", "Exact.Web.Api.Models.VATCode", _fields(VatCode, extra="ID")),
    # Read-only here: the lists a sales order refers to.
    SHIPPING_METHODS: ("ID", "Exact.Web.Api.Models.Sales.ShippingMethod", _fields(LookupRow)),
    PAYMENT_CONDITIONS: (
        "ID",
        "Exact.Web.Api.Models.Cashflow.PaymentCondition",
        _fields(LookupRow),
    ),
    SALES_CHANNELS: ("ID", "Exact.Web.Api.Models.Sales.SalesChannel", _fields(LookupRow)),
    WAREHOUSES: (
        "ID",
        "Exact.Web.Api.Models.Inventory.Warehouse",
        _fields(LookupRow, extra="Main"),
    ),
    # Read-only here: lines are created with their order.
    SALES_ORDER_LINES: (
        "ID",
        "Exact.Web.Api.Models.SalesOrderLine",
        _fields(
            SalesOrderLineRef,
            extra="ID LineNumber ItemCode Description VATAmount VATPercentage AmountFC "
            "AmountFCExclVat",
        ),
    ),
}

_G, _I, _D, _T, _B = "Edm.Guid", "Edm.Int32", "Edm.Double", "Edm.DateTime", "Edm.Boolean"
#: resource -> field -> Edm type (fields not named here are Edm.String), for ``$filter``.
FIELD_TYPES: dict[str, dict[str, str]] = {
    ME: {"UserID": _G, "CurrentDivision": _I},
    DIVISIONS: {"Code": _I},
    ACCOUNTS: {"ID": _G},
    ITEMS: {"ID": _G},
    SALES_ORDERS: {
        "OrderID": _G, "OrderedBy": _G, "OrderNumber": _I, "Status": _I, "AmountFC": _D,
        "AmountFCExclVat": _D, "VATAmount": _D, "OrderDate": _T, "Created": _T,
        "ShippingMethod": _G, "SalesChannel": _G, "WarehouseID": _G,
    },
    SALES_ORDER_LINES: {
        "ID": _G, "OrderID": _G, "Item": _G, "LineNumber": _I, "Quantity": _D, "NetPrice": _D,
        "VATAmount": _D, "VATPercentage": _D, "AmountFC": _D, "AmountFCExclVat": _D,
    },
    VAT_CODES: {"ID": _G, "Percentage": _D, "IsBlocked": _B},
    SHIPPING_METHODS: {"ID": _G}, PAYMENT_CONDITIONS: {"ID": _G}, SALES_CHANNELS: {"ID": _G},
    WAREHOUSES: {"ID": _G, "Main": _I},
}  # fmt: skip


def field_types(resource: str) -> dict[str, str]:
    """Every filterable field of ``resource`` with its Edm type."""
    typed = FIELD_TYPES.get(resource, {})
    return {name: typed.get(name, "Edm.String") for name in RESOURCES[resource][2]}


def endpoint(resource: str) -> str:
    """The endpoint a path is counted under: ``crm/Accounts(guid'…')`` -> ``crm/Accounts``."""
    entity = ENTITY_PATH.match(resource)
    return entity.group(1) if entity else resource


def call_key(method: str, resource: str) -> str:
    """``("POST", "salesorder/SalesOrders")`` -> ``"salesorders_post"`` (keys of ``calls``)."""
    return f"{resource.rsplit('/', 1)[-1].lower()}_{method.lower()}"


def query(
    request: Request,
    division: str,
    resource: str,
    rows: list[dict[str, Any]],
    page_size: int,
) -> Response:
    """A GET of ``resource`` over ``rows`` with the request's OData options: one page."""
    key, type_name, fields = RESOURCES[resource]
    unknown = {p for p in request.query if p.startswith("$")} - _QUERY_OPTIONS
    if unknown:
        return Response(400, error_body(f"Query option not supported: {sorted(unknown)}"))
    if expression := request.param("$filter"):
        try:
            matches = compile_filter(expression, field_types(resource), type_name)
        except FilterError as exc:
            return Response(400, error_body(str(exc)))
        rows = [row for row in rows if matches(row)]
    select = [f.strip() for f in (request.param("$select") or "").split(",") if f.strip()]
    if missing := [f for f in select if f not in fields and f != "*"]:
        return Response(400, error_body(f"Property '{missing[0]}' does not exist"))
    expand = [f.strip() for f in (request.param("$expand") or "").split(",") if f.strip()]
    if bad := [e for e in expand if (resource, e) != (SALES_ORDERS, "SalesOrderLines")]:
        message = f"'{bad[0]}' is not a navigation property of type '{type_name}'"
        return Response(400, error_body(message))
    if skiptoken := request.param("$skiptoken"):
        match = _SKIPTOKEN.match(skiptoken)
        keys = [str(row[key]) for row in rows]
        if not match or match.group(1).lower() not in keys:
            return Response(400, error_body(f"Invalid $skiptoken: {skiptoken}"))
        rows = rows[keys.index(match.group(1).lower()) + 1 :]
    top = request.param("$top")
    if top is not None and not top.isdigit():
        return Response(400, error_body(f"Invalid $top: {top}"))
    page = rows[: min(int(top), page_size) if top else page_size]
    results = [
        render(request, division, resource, row, select, expand_lines=bool(expand)) for row in page
    ]
    body: dict[str, Any] = {"results": results}
    if top is None and len(rows) > len(page):
        options = {k: v[0] for k, v in request.query.items() if k != "$skiptoken"}
        options["$skiptoken"] = f"guid'{page[-1][key]}'"
        encoded = urlencode(options, quote_via=quote, safe="$',=")
        body["__next"] = f"http://{request.host}{request.path}?{encoded}"
    return Response(200, {"d": body})


def render(
    request: Request,
    division: str,
    resource: str,
    row: dict[str, Any],
    select: list[str],
    *,
    expand_lines: bool = False,
) -> dict[str, Any]:
    """One entity as Exact answers it. An order's ``SalesOrderLines`` is a navigation
    property: a ``__deferred`` link to its lines unless ``$expand``-ed (``expand_lines``)."""
    key, type_name, _ = RESOURCES[resource]
    is_guid = FIELD_TYPES.get(resource, {}).get(key) == _G
    literal = f"guid'{row[key]}'" if is_guid else str(row[key])
    where = resource if resource == ME else f"{division}/{resource}"
    uri = f"http://{request.host}/api/v1/{where}({literal})"
    names = list(row) if not select or "*" in select else select
    out: dict[str, Any] = {"__metadata": {"uri": uri, "type": type_name}}
    for name in names:
        value = row.get(name)
        if name == "SalesOrderLines":
            deferred = {"__deferred": {"uri": f"{uri}/SalesOrderLines"}}
            value = {"results": value} if expand_lines else deferred
        out[name] = value
    return out


def created(request: Request, division: str, resource: str, row: dict[str, Any]) -> Response:
    """201 for a POST. The whole entity only with ``Prefer: return=representation``; without
    it, as Exact does, the fields posted (lines: their posted fields) and the key."""
    full = render(request, division, resource, row, [], expand_lines=True)
    if _wants_representation(request):
        return Response(201, {"d": full})
    try:
        posted = request.json()
    except ValueError:
        posted = {}
    key = RESOURCES[resource][0]
    out: dict[str, Any] = {"__metadata": full["__metadata"], key: full[key]}
    for name, value in (posted if isinstance(posted, dict) else {}).items():
        if name not in full or name == key:
            continue
        if name == "SalesOrderLines" and isinstance(value, list):
            sent = {k for line in value if isinstance(line, dict) for k in line}
            lines = [{k: v for k, v in ln.items() if k in sent} for ln in full[name]["results"]]
            out[name] = {"results": lines}
        else:
            out[name] = full[name]
    return Response(201, {"d": out})


def _wants_representation(request: Request) -> bool:
    prefer = request.headers.get("prefer", "")
    return "return=representation" in prefer.replace(" ", "").lower()
