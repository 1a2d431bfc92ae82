"""A route's hooks (``hooks:`` in its route file), and the checks on what they return.

A hook is someone else's code: whatever it raises or returns must end as a reason on that one
order (quarantined while mapping, failed before sending), never as a crashed run, and never as
a sales order that could be sent twice, since its ``YourRef`` is the exactly-once key.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from integration_project.routes.config import HooksConfig, load_hook
from integration_project.shopware.models import json_problem, storable_text

Hook = Callable[..., Any]


@dataclass(frozen=True)
class RouteHooks:
    """The route's hooks, imported once when its assets are built (a bad path fails there)."""

    before_mapping: Hook | None = None
    after_mapping: Hook | None = None
    before_send: Hook | None = None

    @classmethod
    def load(cls, config: HooksConfig) -> RouteHooks:
        def one(path: str | None) -> Hook | None:
            return load_hook(path) if path else None

        return cls(one(config.before_mapping), one(config.after_mapping), one(config.before_send))


def hook_name(kind: str, hook: Hook) -> str:
    """``after_mapping hook my_package.hooks.fix``: the dotted path it was configured by."""
    module = getattr(hook, "__module__", None)
    name = getattr(hook, "__qualname__", None) or type(hook).__name__
    return f"{kind} hook {module}.{name}" if module else f"{kind} hook {name}"


def kind_of(value: Any) -> str:
    """``None`` or ``a list``: what a value is, for a reason a person reads."""
    return "None" if value is None else f"a {type(value).__name__}"


def error_text(exc: BaseException) -> str:
    """``ValueError: what it said``, short, whatever the exception holds."""
    try:
        text = str(exc)
    except Exception:  # e.g. a message nested too deeply to print
        text = ""
    return storable_text(f"{type(exc).__name__}: {text}" if text else type(exc).__name__, 400)


def sales_order_problem(body: Any) -> str | None:
    """Why ``body`` cannot be stored and sent as the ERP sales order (None when it can): it
    must be a dict, plain JSON (no datetime, NaN, text that is not Unicode, deep nesting),
    with a ``YourRef``, the key that keeps an order from being sent twice."""
    if not isinstance(body, dict):
        return f"{kind_of(body)}, not the ERP sales order (a dict)"
    problem = json_problem(body)
    if problem is not None:
        return f"a sales order that is not plain JSON: {problem}"
    your_ref = body.get("YourRef")
    if not isinstance(your_ref, str) or not your_ref.strip():
        what = "blank" if isinstance(your_ref, str) else kind_of(your_ref)
        return (
            f"a sales order whose YourRef is {what}: it is the key that keeps the order from "
            "being sent twice"
        )
    return None


def checked_before_send(
    before_send: Hook | None, payload: dict[str, Any]
) -> tuple[Any, str | None]:
    """The body to send for a mapped ``payload`` after the route's before_send hook, or
    (None, why) when the hook raised or returned what cannot be sent: not a dict, not plain
    JSON, or a ``YourRef`` other than the mapped one (the exactly-once look-up key)."""
    if before_send is None:
        return payload, None
    name = hook_name("before_send", before_send)
    try:
        body = before_send(dict(payload))
    except Exception as exc:
        return None, f"{name} raised {error_text(exc)}"
    problem = sales_order_problem(body)
    if problem is None and body.get("YourRef") != payload.get("YourRef"):
        problem = (
            f"a sales order with YourRef {body.get('YourRef')!r} instead of "
            f"{payload.get('YourRef')!r}: it is the key that keeps the order from being "
            "sent twice"
        )
    if problem is not None:
        return None, storable_text(f"{name} returned {problem}", 500)
    return body, None
