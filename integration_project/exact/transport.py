"""One call to Exact Online's REST API, from budget check to JSON body or a telling error.

* Look-ups (GET) are retried by the session with backoff on 5xx; a 429 waits for the
  announced reset (:mod:`~integration_project.exact.budget`).
* A create POST is never retried blindly: a timeout or 5xx there is :class:`OutcomeUnknown`
  and the caller looks the entity up later.
* A 401 gets one forced token refresh (:mod:`~integration_project.exact.auth`), then fails.
* Every POST asks for the created entity (``Prefer: return=representation``, as
  picqer/exact-php-client does): without it Exact answers only the fields sent and the key,
  no ``OrderNumber``.
"""

from __future__ import annotations

from typing import Any

import requests

from integration_project.exact.auth import TokenChain
from integration_project.exact.budget import CallBudget
from integration_project.exact.errors import OutcomeUnknown, ValidationRejected, may_have_arrived
from integration_project.exact.models import error_message
from integration_project.http import ApiError, AuthError, safe_url

#: Longest piece of an ERP error text put into a message.
MAX_ERROR_TEXT = 500


class ExactTransport:
    """Sends a client's calls one at a time within its budget, with its access token;
    ``calls`` counts the requests sent."""

    def __init__(
        self,
        *,
        base_url: str,
        session: requests.Session,
        timeout: tuple[float, float],
        budget: CallBudget,
        tokens: TokenChain,
    ) -> None:
        self._base_url = base_url
        self._session = session
        self._timeout = timeout
        self._budget = budget
        self._tokens = tokens
        self.calls = 0

    def request_json(
        self, method: str, path_or_url: str, *, json: Any = None, create: bool = False
    ) -> dict[str, Any]:
        """The JSON answer of one call (``create``: a POST whose failure leaves its outcome
        unknown, never repeated after it may have reached Exact)."""
        url = path_or_url if "://" in path_or_url else self._base_url + path_or_url
        where = f"{method} {safe_url(url)}"
        refreshed = False
        rate_waits = 0
        endpoint = self._budget.endpoint(method, url)
        self._tokens.ensure_authorised()
        self._budget.check(endpoint, where, url)
        headers = {"Accept": "application/json"}
        if method == "POST":
            # Without it Exact answers a POST with the fields sent and the key only: no
            # OrderNumber (picqer/exact-php-client sends it on every request too).
            headers["Prefer"] = "return=representation"
        while True:
            response = self._send(method, url, json, headers, refreshed=refreshed, create=create)
            status = response.status_code
            if 400 <= status < 500 and status != 429:
                # Exact counts 401s toward its block as well; a 429 is the rate limit's.
                self._budget.note_client_error(endpoint, status)
            if status == 401 and not refreshed:
                refreshed = True  # revoked or expired early: one forced refresh, then retry
                self._budget.check(endpoint, where, url)
                continue
            if status == 429:
                # A 429 is refused before it is processed, so even a create may be repeated.
                rate_waits += 1
                self._budget.note_429(rate_waits, where, method, url)
                continue
            return self._answer(response, method, url, create=create)

    def _send(
        self,
        method: str,
        url: str,
        json: Any,
        headers: dict[str, str],
        *,
        refreshed: bool,
        create: bool,
    ) -> requests.Response:
        self._budget.pace()
        token = self._tokens.access_token(force=refreshed)
        self.calls += 1
        try:
            response = self._session.request(
                method,
                url,
                json=json,
                headers={**headers, "Authorization": f"Bearer {token}"},
                timeout=self._timeout,
            )
        except requests.RequestException as exc:
            error_cls = OutcomeUnknown if create and may_have_arrived(exc) else ApiError
            raise error_cls(
                f"{method} {safe_url(url)} failed: {type(exc).__name__}",
                method=method,
                url=safe_url(url),
            ) from None
        self._budget.note_answer(response)
        return response

    def _answer(
        self, response: requests.Response, method: str, url: str, *, create: bool
    ) -> dict[str, Any]:
        """The body of an answer that is not 429 (nor a first 401), else the error it means."""
        where = f"{method} {safe_url(url)}"
        status = response.status_code
        if status >= 500:
            error_cls = OutcomeUnknown if create else ApiError
            raise error_cls(
                f"{where} answered {status}: {self._error_text(response)}",
                method=method,
                url=safe_url(url),
                status=status,
            )
        if status in (401, 403):
            raise AuthError(
                f"{where} answered {status}: check ERP_DIVISION and the app's access to it",
                method=method,
                url=safe_url(url),
                status=status,
            )
        if status >= 400:
            message = self._error_text(response)
            raise ValidationRejected(
                f"{where} answered {status}: {message}",
                erp_message=message,
                method=method,
                url=safe_url(url),
                status=status,
            )
        try:
            return response.json()
        except ValueError:
            error_cls = OutcomeUnknown if create else ApiError
            raise error_cls(
                f"{where} answered {status} with a body that is not JSON",
                method=method,
                url=safe_url(url),
                status=status,
            ) from None

    def _error_text(self, response: requests.Response) -> str:
        """Exact's own words (OData envelope or OAuth form), without any secret of ours in
        them, and cut to ``MAX_ERROR_TEXT``."""
        try:
            message = error_message(response.json())
        except ValueError:
            message = None
        text = message or f"{response.status_code} {response.reason}"
        for secret in self._tokens.secrets:
            if secret and len(secret) >= 4:
                text = text.replace(secret, "[redacted]")
        if len(text) > MAX_ERROR_TEXT:
            text = text[:MAX_ERROR_TEXT] + "…"
        return text
