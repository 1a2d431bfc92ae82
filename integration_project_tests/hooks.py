"""Hooks used by the route tests (referenced from route config by dotted path)."""

from typing import Any


def tag_remarks(payload: dict[str, Any]) -> dict[str, Any]:
    """before_send: stamp every sales order."""
    return {**payload, "Remarks": "sent by the hook test"}


def shout_description(payload: dict[str, Any], order: dict[str, Any]) -> dict[str, Any]:
    """after_mapping: upper-case the description and put the customer number in it."""
    number = (order.get("orderCustomer") or {}).get("customerNumber", "")
    return {**payload, "Description": f"{payload['Description'].upper()} / {number}"}


def drop_even_orders(order: dict[str, Any]) -> dict[str, Any] | None:
    """before_mapping: skip orders with an even order number."""
    return None if int(order["orderNumber"]) % 2 == 0 else order


not_callable = 42
