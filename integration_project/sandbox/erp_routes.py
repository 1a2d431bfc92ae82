"""Which resource and method of the sandbox ERP's REST API does what, once a call is admitted.

``/api/v1/{division}/crm/Accounts``, ``logistics/Items``, ``salesorder/SalesOrders``,
``salesorder/SalesOrderLines``, ``vat/VATCodes``, the lists a sales order refers to
(``sales/ShippingMethods``, ``cashflow/PaymentConditions``, ``sales/SalesChannels``,
``inventory/Warehouses``), ``hrm/Divisions`` and ``current/Me`` answer GETs
(:func:`~integration_project.sandbox.erp_odata.query`); accounts and sales orders take POSTs,
an account ``PUT crm/Accounts(guid'…')`` (:mod:`~integration_project.sandbox.erp_writes`).
A GET of sales orders gives their lines as a ``__deferred`` link
(``SalesOrders(guid'…')/SalesOrderLines``, served here too) unless ``$expand``-ed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from integration_project.exact.models import (
    ACCOUNTS,
    SALES_ORDER_LINES,
    SALES_ORDERS,
    error_body,
)
from integration_project.sandbox.common import Request, Response
from integration_project.sandbox.erp_books import ErpBooks
from integration_project.sandbox.erp_odata import ENTITY_PATH, RESOURCES, created, query
from integration_project.sandbox.erp_writes import (
    Refused,
    create_account,
    create_sales_order,
    update_account,
)


def data_answer(
    books: ErpBooks, request: Request, division: str, resource: str, page_size: int
) -> Response:
    """The answer to an admitted data call on ``resource`` (a path below the division)."""
    if entity := ENTITY_PATH.match(resource):
        name, key, nav = entity.group(1), entity.group(2).lower(), entity.group(3)
        return _entity(books, request, division, name, key, nav, page_size)
    if resource not in RESOURCES:
        return Response(404, error_body(f"Resource not found: {resource}"))
    if request.method == "GET":
        with books.lock:
            rows = list(books.rows(resource))
        return query(request, division, resource, rows, page_size)
    if request.method == "POST" and resource in (ACCOUNTS, SALES_ORDERS):
        create = create_account if resource == ACCOUNTS else create_sales_order
        return _write(
            books, request, lambda body: created(request, division, resource, create(books, body))
        )
    return Response(405, error_body(f"Method not allowed: {request.method} {resource}"))


def _entity(
    books: ErpBooks,
    request: Request,
    division: str,
    resource: str,
    key: str,
    nav: str | None,
    page_size: int,
) -> Response:
    """``resource(guid'key')`` and its navigation ``…/SalesOrderLines``."""
    where = f"{resource}(guid'{key}')" + (f"/{nav}" if nav else "")
    if resource not in RESOURCES:
        return Response(404, error_body(f"Resource not found: {resource}"))
    if nav is not None:
        if (resource, nav) != (SALES_ORDERS, "SalesOrderLines"):
            return Response(404, error_body(f"Resource not found: {where}"))
        if request.method != "GET":
            return Response(405, error_body(f"Method not allowed: {request.method} {where}"))
        with books.lock:
            order = next((o for o in books.sales_orders if o["OrderID"] == key), None)
            lines = [] if order is None else books.lines_of(order)
        if order is None:
            return Response(404, error_body(f"Sales order {key} does not exist: {where}"))
        return query(request, division, SALES_ORDER_LINES, lines, page_size)
    if request.method == "PUT" and resource == ACCOUNTS:
        return _write(books, request, lambda body: _updated(books, key, body))
    if request.method == "GET":
        # Clients filter instead (ossobv, picqer: ``$filter=ID eq guid'…'``); not modelled.
        message = f"Not implemented in the sandbox: GET {where}; use $filter=ID eq guid'…'"
        return Response(501, error_body(message))
    return Response(405, error_body(f"Method not allowed: {request.method} {where}"))


def _write(books: ErpBooks, request: Request, write: Callable[[Any], Response]) -> Response:
    """``write`` the request's JSON body under the books' lock; a refusal in Exact's words."""
    try:
        body = request.json()
    except ValueError:
        return Response(400, error_body("The request body is not valid JSON"))
    try:
        with books.lock:
            return write(body)
    except Refused as refused:
        return Response(refused.status, error_body(str(refused)))


def _updated(books: ErpBooks, key: str, body: Any) -> Response:
    update_account(books, key, body)
    return Response(204)  # no body, as Exact answers a PUT
