"""Route hooks, one of each kind, for what configuration cannot say (README, "Hooks").

A route file names a hook by its dotted path, e.g. ``before_send: examples.hooks.tag_remarks``
(importable when the code location runs from the repository root). The route tests run these
three. Each hook gets plain dicts and returns a new dict; a hook that raises, or returns
anything but a JSON-serialisable dict (``None`` included, except from ``before_mapping``),
quarantines that order only (before sending: fails it), naming the hook. The sales order
must keep a non-empty ``YourRef``, and ``before_send`` must not change it.
"""

from typing import Any


def tag_remarks(payload: dict[str, Any]) -> dict[str, Any]:
    """before_send: stamp every sales order, right before the POST."""
    return {**payload, "Remarks": "sent by the hook test"}


def shout_description(payload: dict[str, Any], order: dict[str, Any]) -> dict[str, Any]:
    """after_mapping: upper-case the description and put the customer number in it."""
    number = (order.get("orderCustomer") or {}).get("customerNumber", "")
    return {**payload, "Description": f"{payload['Description'].upper()} / {number}"}


def drop_even_orders(order: dict[str, Any]) -> dict[str, Any] | None:
    """before_mapping: skip orders with an even order number (``None`` skips the order)."""
    return None if int(order["orderNumber"]) % 2 == 0 else order
