"""The sandbox shop's ``POST /api/oauth/token``: client credentials in, opaque bearer tokens out.

The client id and secret come from the body (JSON or form) or, per parameter when the body
lacks one, from HTTP Basic auth, and refusals carry league/oauth2-server's codes in Shopware's
envelope, as Shopware 6.5/6.6 does (:meth:`ShopTokens.refuse`). The endpoint is rate limited
(sliding window) because the real one is: a client that fetches a token per call gets 429s here
before it gets them in production.
"""

from __future__ import annotations

import base64
import hmac
import math
import secrets
from collections import deque
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl

from integration_project.sandbox.common import Request, Response
from integration_project.sandbox.shop_answers import shop_error, too_many_requests
from integration_project.shopware.models import TokenResponse

#: league/oauth2-server 8.5 ``OAuthServerException`` factories the token endpoint raises:
#: (status, code, message, hint). ``invalidClient`` has no hint; ``unsupportedGrantType``'s is
#: fixed; ``invalidRequest``'s names the parameter (:func:`oauth_invalid_request`).
OAUTH_INVALID_CLIENT = (401, "4", "Client authentication failed", None)
OAUTH_UNSUPPORTED_GRANT_TYPE = (
    400,
    "2",
    "The authorization grant type is not supported by the authorization server.",
    "Check that all required parameters have been provided",
)


def oauth_invalid_request(parameter: str) -> tuple[int, str, str, str]:
    """``OAuthServerException::invalidRequest($parameter)``: (status, code, message, hint)."""
    message = (
        "The request is missing a required parameter, includes an invalid parameter value, "
        "includes a parameter more than once, or is otherwise malformed."
    )
    return 400, "3", message, f"Check the `{parameter}` parameter"


class ShopTokens:
    """The shop's API client and the tokens issued to it. Not thread-safe on its own: the shop
    calls it under its lock."""

    def __init__(
        self,
        *,
        client_id: str,
        client_secret: str,
        token_lifetime_s: int,
        token_rate_limit: int,
        token_rate_window_s: float,
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.token_lifetime_s = token_lifetime_s
        self.token_rate_limit = token_rate_limit
        self.token_rate_window_s = token_rate_window_s
        self.tokens_issued = 0
        self._tokens: dict[str, datetime] = {}
        self._token_attempts: deque[datetime] = deque()

    def admit(self, now: datetime) -> Response | None:
        """Count a token request against the sliding window: a 429 when it is full."""
        window_start = now - timedelta(seconds=self.token_rate_window_s)
        while self._token_attempts and self._token_attempts[0] <= window_start:
            self._token_attempts.popleft()
        if len(self._token_attempts) >= self.token_rate_limit:
            wait = (self._token_attempts[0] - window_start).total_seconds()
            return too_many_requests(max(1, math.ceil(wait)))
        self._token_attempts.append(now)
        return None

    def issue(self, now: datetime) -> Response:
        """A new token, valid for ``token_lifetime_s`` (expired ones are forgotten)."""
        token = secrets.token_urlsafe(32)
        self._tokens = {t: exp for t, exp in self._tokens.items() if exp > now}
        self._tokens[token] = now + timedelta(seconds=self.token_lifetime_s)
        self.tokens_issued += 1
        answer = TokenResponse(
            token_type="Bearer", expires_in=self.token_lifetime_s, access_token=token
        )
        return Response(200, answer.model_dump())

    def unauthorised(self, token: str | None, now: datetime) -> str | None:
        """Why ``token`` does not authorise a call now (None: it does)."""
        expiry = self._tokens.get(token) if token else None
        if expiry is None:
            return "Access token could not be verified."
        if expiry <= now:
            return "The access token has expired."
        return None

    def refuse(self, request: Request) -> Response | None:
        """Why a token request is refused (None: the client is authenticated), in the order
        league/oauth2-server 8.5 and Shopware's ``ClientRepository`` check it.

        ``grant_type`` must be ``client_credentials``; the client id and secret each come from
        the body, else from HTTP Basic auth (per parameter: the body wins); no id is
        ``invalid_request`` (400); an unknown id or a wrong secret ``invalid_client`` (401, with
        ``WWW-Authenticate`` when the request carried an ``Authorization`` header); an id
        without any secret ``unsupported_grant_type`` (400: Shopware's ``validateClient``).
        Shopware wraps each in its ``errors`` envelope. No answer repeats what was sent.
        """
        try:
            body = _token_parameters(request)
        except ValueError:
            return shop_error(400, "Bad Request", "The JSON payload is malformed.", "0")
        if body.get("grant_type") != "client_credentials":
            return _oauth_error(*OAUTH_UNSUPPORTED_GRANT_TYPE)
        basic_id, basic_secret = _basic_credentials(request.headers.get("authorization", ""))
        client_id = body.get("client_id")
        client_id = basic_id if client_id is None else client_id
        if client_id is None:
            return _oauth_error(*oauth_invalid_request("client_id"))
        client_secret = body.get("client_secret")
        client_secret = basic_secret if client_secret is None else client_secret
        if client_secret is not None and not isinstance(client_secret, str):
            return _oauth_error(*oauth_invalid_request("client_secret"))
        if not isinstance(client_id, str) or not hmac.compare_digest(
            client_id.encode("utf-8", "surrogatepass"), self.client_id.encode()
        ):
            return _invalid_client(request)
        if client_secret is None:
            return _oauth_error(*OAUTH_UNSUPPORTED_GRANT_TYPE)
        if not hmac.compare_digest(
            client_secret.encode("utf-8", "surrogatepass"), self.client_secret.encode()
        ):
            return _invalid_client(request)
        return None


def _token_parameters(request: Request) -> dict[str, Any]:
    """The token request's parameters as Shopware parses them: a form body, or a JSON object
    body sent as ``application/json`` (anything else JSON gives no parameters); ``ValueError``
    for a body typed JSON that is not (``JsonRequestTransformerListener``)."""
    content_type = request.headers.get("content-type", "").lower()
    if content_type.startswith("application/x-www-form-urlencoded"):
        return dict(parse_qsl(request.body.decode("utf-8", "replace")))
    if not content_type.startswith("application/json") or not request.body:
        return {}
    body = request.json()
    return body if isinstance(body, dict) else {}


def _basic_credentials(header: str) -> tuple[str | None, str | None]:
    """Id and secret of an ``Authorization: Basic`` header, as league's
    ``getBasicAuthCredentials`` reads it: ``(None, None)`` unless it starts with ``"Basic "``
    and decodes to text with a colon; split at the first colon."""
    if not header.startswith("Basic "):
        return None, None
    try:
        decoded = base64.b64decode(header[6:].strip() + "==", validate=False).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None, None
    if not decoded or decoded == "0" or ":" not in decoded:
        return None, None
    client_id, _, client_secret = decoded.partition(":")
    return client_id, client_secret


def _oauth_error(
    status: int, code: str, message: str, hint: str | None, headers: dict[str, str] | None = None
) -> Response:
    """An ``OAuthServerException`` as Shopware answers it: ``ErrorResponseFactory`` puts the
    exception's message in ``title`` and its hint in ``detail`` (``null`` when it has none)."""
    error = {"code": code, "status": str(status), "title": message, "detail": hint}
    return Response(status, {"errors": [error]}, headers or {})


def _invalid_client(request: Request) -> Response:
    headers = {}
    authorization = request.headers.get("authorization", "")
    if authorization:  # RFC 6749 5.2, as league's getHttpHeaders does it
        scheme = "Bearer" if authorization.startswith("Bearer") else "Basic"
        headers["WWW-Authenticate"] = f'{scheme} realm="OAuth"'
    return _oauth_error(*OAUTH_INVALID_CLIENT, headers)
