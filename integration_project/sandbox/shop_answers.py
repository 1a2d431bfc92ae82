"""The sandbox shop's error answers, in Shopware's envelope
(:func:`~integration_project.shopware.models.shop_error_body`), and what injected faults answer.
"""

from __future__ import annotations

import time

from integration_project.sandbox.common import Response
from integration_project.sandbox.faults import Injection
from integration_project.shopware.models import shop_error_body


def shop_error(
    status: int, title: str, detail: str, code: str = "", headers: dict[str, str] | None = None
) -> Response:
    return Response(status, shop_error_body(status, title, detail, code), headers or {})


def too_many_requests(retry_after_s: int) -> Response:
    detail = f"Too many requests, try again in {retry_after_s} seconds."
    return shop_error(
        429,
        "Too Many Requests",
        detail,
        "FRAMEWORK__RATE_LIMIT_EXCEEDED",
        {"Retry-After": str(retry_after_s)},
    )


def fault_answer(fault: Injection) -> Response | None:
    """The answer an injected fault replaces the real one with (None = carry on)."""
    if fault.kind == "slow":
        time.sleep(fault.seconds)
        return None
    if fault.kind == "500":
        return shop_error(500, "Internal Server Error", "Injected fault: internal server error.")
    if fault.kind in ("503", "token_error"):
        return shop_error(503, "Service Unavailable", "Injected fault: service unavailable.")
    if fault.kind == "429":
        return too_many_requests(1)
    return None  # malformed_json: applied to the answer
