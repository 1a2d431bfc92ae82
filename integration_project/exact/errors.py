"""What a failed call to Exact Online means for the caller, and how its texts name times.

Shared by the token chain (:mod:`~integration_project.exact.auth`), the call budget
(:mod:`~integration_project.exact.budget`) and the request layer
(:mod:`~integration_project.exact.transport`); callers import them from
:mod:`integration_project.exact.client`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import requests

from integration_project.http import ApiError


class RateLimited(ApiError):
    """429, or the minute budget is spent for longer than we are willing to wait."""


class BudgetExhausted(ApiError):
    """The ERP's daily call budget is spent: stop sending and leave the rest pending."""


class ErrorBudgetSpent(RateLimited):
    """An endpoint answered ``MAX_CLIENT_ERRORS_PER_HOUR`` client errors within the hour: no
    more calls to it until the oldest is an hour old (Exact blocks the app at ten)."""


class OutcomeUnknown(ApiError):
    """A create POST timed out or got a 5xx: the ERP may or may not have stored it."""


class ValidationRejected(ApiError):
    """A 4xx that retrying cannot fix; ``erp_message`` is the ERP's own words."""

    def __init__(self, message: str, *, erp_message: str, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.erp_message = erp_message


def iso(epoch_s: float) -> str:
    """A moment as error texts and logs name it: ``2025-01-31T12:00:00+00:00``."""
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="seconds")


def may_have_arrived(exc: requests.RequestException) -> bool:
    """Only a failure to connect proves that the request never reached the ERP."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return False
    if isinstance(exc, requests.ConnectionError):
        text = str(exc)
        return not any(
            marker in text
            for marker in ("Connection refused", "NewConnectionError", "Failed to resolve")
        )
    return True  # a read timeout, a dropped response: the ERP may have acted
