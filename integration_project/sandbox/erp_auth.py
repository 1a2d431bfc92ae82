"""The sandbox ERP's OAuth side: ``POST /api/oauth2/token`` and the access tokens it issues.

``grant_type=refresh_token`` (form-encoded): the refresh token rotates on every successful use.
As Exact does, the previous refresh token keeps working until the new pair is first used (its
access token on a data call, or its refresh token here); then every older one dies.
``strict_rotation=True`` models the Exact apps that allow no older token at all: the previous
one dies at once. A refresh within ``min_refresh_interval_s`` of the last successful one is
refused (400 ``access_denied``, header ``Reason: TooEarlyToRefreshTokens``) and leaves the
current tokens valid. ``expires_in`` is a string, as Exact sends it. Errors come in the OAuth
form only (:func:`~integration_project.exact.models.oauth_error_body`).
"""

from __future__ import annotations

import hmac
import secrets
from datetime import datetime, timedelta

from integration_project.exact.models import TokenResponse, oauth_error_body
from integration_project.sandbox.common import Response


class ErpAuth:
    """One app's client credentials, its refresh token's rotation, and the access tokens
    issued. Not thread-safe on its own: the ERP calls it under its lock."""

    def __init__(
        self,
        *,
        client_id: str,
        client_secret: str,
        refresh_token: str,
        token_lifetime_s: int,
        min_refresh_interval_s: float,
        strict_rotation: bool,
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        #: The newest refresh token (rotates on every refresh).
        self.refresh_token = refresh_token
        #: The one before it: still accepted until the newest pair is first used (Exact's
        #: rule), never when ``strict_rotation``.
        self.previous_refresh_token: str | None = None
        self.strict_rotation = strict_rotation
        self.token_lifetime_s = token_lifetime_s
        self.min_refresh_interval_s = min_refresh_interval_s
        self.token_refreshes = 0
        self.last_refresh: datetime | None = None
        #: Every access token issued and not yet found expired -> when it expires.
        self.access_tokens: dict[str, datetime] = {}
        self._current_access: str | None = None  # the access token issued with refresh_token

    def refresh(self, form: dict[str, str], now: datetime) -> Response:
        """The token endpoint's answer to ``form``: a new pair, or why not."""
        refused = self._refuse(form)
        if refused is not None:
            return refused
        given = form["refresh_token"]
        is_current = hmac.compare_digest(given, self.refresh_token)
        is_previous = (
            not self.strict_rotation
            and self.previous_refresh_token is not None
            and hmac.compare_digest(given, self.previous_refresh_token)
        )
        if not (is_current or is_previous):
            detail = "The refresh token is invalid, expired or already used"
            return oauth_error(400, "invalid_grant", detail)
        if self.last_refresh is not None:
            earliest = self.last_refresh + timedelta(seconds=self.min_refresh_interval_s)
            if now < earliest:
                # Exact's own words, with the reason in a header (see reference/).
                detail = "Rate limit exceeded: access_token not expired"
                refused = oauth_error(400, "access_denied", detail)
                after = f"TooEarlyToRefreshTokens: refresh after {earliest.isoformat()}"
                refused.headers = {"Reason": after}
                return refused
        return self._rotate(given, now)

    def authorise(self, token: str | None, now: datetime) -> bool:
        """Whether ``token`` is a live access token; using the newest one ends the grace of
        every older refresh token."""
        expiry = self.access_tokens.get(token) if token else None
        if expiry is None or expiry <= now:
            return False
        if token == self._current_access:
            self.previous_refresh_token = None  # the newest pair is in use: older ones die
        return True

    def _refuse(self, form: dict[str, str]) -> Response | None:
        """Why the request cannot refresh at all (grant type, parameters, client), or None."""
        if form.get("grant_type") != "refresh_token":
            return oauth_error(400, "unsupported_grant_type", "grant_type must be refresh_token")
        if not all(form.get(k) for k in ("refresh_token", "client_id", "client_secret")):
            detail = "refresh_token, client_id and client_secret are required (form-encoded)"
            return oauth_error(400, "invalid_request", detail)
        if not (
            hmac.compare_digest(form["client_id"], self.client_id)
            and hmac.compare_digest(form["client_secret"], self.client_secret)
        ):
            return oauth_error(401, "invalid_client", "Unknown client_id or wrong client_secret")
        return None

    def _rotate(self, given: str, now: datetime) -> Response:
        """A new access token and refresh token, ``given`` becoming the previous one."""
        access = secrets.token_urlsafe(32)
        self.access_tokens = {t: e for t, e in self.access_tokens.items() if e > now}
        self.access_tokens[access] = now + timedelta(seconds=self.token_lifetime_s)
        # Using the newest refresh token ends the grace of every older one; re-using the
        # previous one (the newest pair was never used: its answer was lost) keeps it.
        self.previous_refresh_token = given
        self.refresh_token = secrets.token_urlsafe(32)
        self._current_access = access
        self.last_refresh = now
        self.token_refreshes += 1
        answer = TokenResponse(
            access_token=access,
            token_type="Bearer",
            expires_in=str(self.token_lifetime_s),
            refresh_token=self.refresh_token,
        )
        return Response(200, answer.model_dump())


def oauth_error(status: int, code: str, message: str) -> Response:
    """A token endpoint error in the OAuth form (RFC 6749 §5.2), as Exact answers it."""
    return Response(status, oauth_error_body(code, message))


def oauth_form(response: Response) -> Response:
    """The token endpoint's answer with any OData error envelope (faults) in the OAuth form."""
    body = response.body
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        message = body["error"].get("message")
        text = message.get("value", "") if isinstance(message, dict) else ""
        code = body["error"].get("code") or (
            "server_error" if response.status == 500 else "temporarily_unavailable"
        )
        response.body = oauth_error_body(code, text)
    return response
