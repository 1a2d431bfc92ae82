"""Hooks that break the hook contract on purpose, for the tests of what the route does then
(each order such a hook breaks is quarantined or failed, naming the hook; the rest go on).

Route configs name them by dotted path (``integration_project_testkit.broken_hooks.<name>``).
Each misbehaves only for orders with an even number (or ``YourRef``), so one run holds both
kinds. Working examples are in ``examples/hooks.py``.
"""

from datetime import UTC, datetime
from typing import Any

#: Not a callable: a route naming it must not load.
not_callable = 42


def _even(reference: Any) -> bool:
    """An order number (or YourRef) that ends in an even digit."""
    text = str(reference or "")
    return bool(text) and text[-1] in "02468"


def after_mapping_returns_none(payload: dict[str, Any], order: dict[str, Any]) -> Any:
    """after_mapping: forgets to return the sales order for even order numbers."""
    return None if _even(order.get("orderNumber")) else payload


def after_mapping_returns_a_list(payload: dict[str, Any], order: dict[str, Any]) -> Any:
    """after_mapping: wraps the sales order in a list for even order numbers."""
    return [payload] if _even(order.get("orderNumber")) else payload


def after_mapping_adds_a_datetime(payload: dict[str, Any], order: dict[str, Any]) -> Any:
    """after_mapping: puts a datetime (not JSON) into the sales order for even numbers."""
    if _even(order.get("orderNumber")):
        return {**payload, "DeliveryDate": datetime(2026, 11, 21, 9, 0, tzinfo=UTC)}
    return payload


def after_mapping_drops_your_ref(payload: dict[str, Any], order: dict[str, Any]) -> Any:
    """after_mapping: loses YourRef (the exactly-once key) for even order numbers."""
    if _even(order.get("orderNumber")):
        return {k: v for k, v in payload.items() if k != "YourRef"}
    return payload


def before_mapping_returns_a_list(order: dict[str, Any]) -> Any:
    """before_mapping: returns a list instead of the order for even order numbers."""
    return [order] if _even(order.get("orderNumber")) else order


def before_send_returns_none(payload: dict[str, Any]) -> Any:
    """before_send: forgets to return the sales order for even YourRefs."""
    return None if _even(payload.get("YourRef")) else payload


def before_send_changes_your_ref(payload: dict[str, Any]) -> Any:
    """before_send: sends even orders under another YourRef than the mapped one."""
    if _even(payload.get("YourRef")):
        return {**payload, "YourRef": f"X-{payload['YourRef']}"}
    return payload
