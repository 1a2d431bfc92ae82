"""Exact Online's OAuth token chain: one access token shared through a token store, and the
rotating refresh token behind it.

Knows nothing of the ledger: the durable store is handed in (:class:`TokenStore`). Rules it
keeps, all from Exact's documentation:

* Refresh tokens rotate on every use, so the new pair is saved in the token store *before*
  the access token is used (using it kills every older refresh token), and only one process
  refreshes at a time (the store's lock). The access token is shared through the store by
  every run until it is about to expire: delivery runs every minute and Exact refuses a
  refresh within 570 s.
* A refresh is written down before it is sent (the store's *intent*) and crossed off when its
  answer is stored. A process that dies in between (or whose answer is lost) leaves the intent:
  the next one knows Exact may have rotated already, waits out the 570 s, and refreshes with
  the previous token, which Exact still honours because the lost pair was never used. Apps
  that do not honour it fail loudly, naming ``ERP_REFRESH_TOKEN``.
* The token endpoint's client errors count toward Exact's block like any other endpoint's,
  under ``POST oauth2/token`` (:mod:`~integration_project.exact.budget`).
* A refresh Exact refuses as too early (400 ``access_denied``, ``Reason:
  TooEarlyToRefreshTokens``: within 570 s of the last) leaves the tokens valid: the run stops
  as transient, without trying ``ERP_REFRESH_TOKEN``.
* A refresh token Exact refuses (``invalid_grant``, the configured one as well) is stored as
  "authorisation needed" for its chain: no later run calls Exact (which also caps token calls
  per day) until ``ERP_REFRESH_TOKEN`` is set to a newly authorised token.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable
from typing import Protocol

import requests
from pydantic import ValidationError

from integration_project.exact.budget import CallBudget
from integration_project.exact.errors import iso, may_have_arrived
from integration_project.exact.models import (
    MIN_REFRESH_INTERVAL_S,
    TOKEN_PATH,
    StoredTokens,
    TokenResponse,
    oauth_error,
)
from integration_project.http import ApiError, AuthError, safe_url

#: The client's logger: everything the Exact client logs goes out under one name.
log = logging.getLogger("integration_project.exact.client")

#: Use a stored access token only while it has at least this long to live. Exact refuses a
#: refresh within 570 s of the last one, so this must stay below 600 - 570 = 30 s.
ACCESS_TOKEN_MARGIN_S = 20.0
#: How long a process may hold the refresh lock before others may take it over.
REFRESH_LOCK_TTL_S = 60.0
#: Read timeout of the token call (the rotated refresh token is in that answer).
TOKEN_READ_TIMEOUT_S = 45.0  # below REFRESH_LOCK_TTL_S: the lock outlives the call
#: Token answers that prove Exact did not rotate (a 500 or 504 may come after it did).
NOT_PROCESSED = frozenset({*range(400, 500), 502, 503})
#: Longest a run waits for Exact to accept the next token refresh (570 s after the last one).
MAX_TOKEN_WAIT_S = 35.0
#: What the call guard counts the token endpoint's client errors under.
TOKEN_ENDPOINT = "POST oauth2/token"
#: The OAuth error of a refresh token Exact will never accept again (RFC 6749 §5.2).
REFUSED_GRANT = "invalid_grant"
#: The ``Reason`` header's code when a refresh comes within 570 s of the last one.
TOO_EARLY_REASON = "TooEarlyToRefreshTokens"
#: What of a token endpoint's answer may go into an error text: never its body's words (they
#: may echo what was sent), only an OAuth error code and the leading code of Exact's ``Reason``
#: header (``TooEarlyToRefreshTokens: ...``) when they look like codes.
SAFE_OAUTH_ERROR = re.compile(r"[a-z_]{1,40}")
SAFE_REASON = re.compile(r"\s*([A-Za-z][A-Za-z0-9]{2,59})\s*(?::|$)")


class TokenStore(Protocol):
    """The durable side of the chain (implemented over DuckDB by the ledger)."""

    def load(self) -> StoredTokens | None: ...

    def save(self, tokens: StoredTokens) -> None: ...

    def note_refresh_started(self, at: float | None) -> None:
        """The intent: a refresh is being sent at ``at`` (epoch s); None, or :meth:`save`,
        clears it."""
        ...

    def interrupted_refresh(self) -> float | None:
        """When a refresh was sent whose answer was never stored, else None."""
        ...

    def acquire_refresh_lock(self, holder: str, ttl_s: float) -> bool: ...

    def release_refresh_lock(self, holder: str) -> None: ...

    def authorisation_needed(self) -> tuple[str, str] | None:
        """(seed fingerprint, why) once Exact refused the chain started from that seed."""
        ...

    def note_authorisation_needed(self, seed_fingerprint: str, reason: str) -> None:
        """Durable until the chain is saved again (from a new ERP_REFRESH_TOKEN)."""
        ...


def fingerprint(secret: str) -> str:
    """Identifies a refresh token without storing or logging it."""
    return hashlib.sha256(secret.encode()).hexdigest()[:16]


class TokenChain:
    """Access tokens for one client: the cached one, the store's, or a refresh (one process at
    a time); ``token_refreshes`` counts the refreshes this client sent."""

    def __init__(
        self,
        *,
        base_url: str,
        client_id: str,
        client_secret: str,
        refresh_token: str,
        store: TokenStore,
        session: requests.Session,
        timeout: tuple[float, float],
        budget: CallBudget,
        holder: str,
        clock: Callable[[], float],
        sleep: Callable[[float], None],
    ) -> None:
        self._base_url = base_url
        self._client_id = client_id
        self._client_secret = client_secret
        self._seed_refresh_token = refresh_token
        self._store = store
        self._session = session
        self._timeout = timeout
        self._budget = budget
        self._holder = holder
        self._clock = clock
        self._sleep = sleep
        self._access: str | None = None
        self._access_expires_at = 0.0
        self._authorisation_checked = False
        self.token_refreshes = 0

    @property
    def secrets(self) -> tuple[str, ...]:
        """What must never show in an error text taken from Exact's answer."""
        return (self._client_secret, self._seed_refresh_token, self._access or "")

    def access_token(self, *, force: bool = False) -> str:
        """A live access token; ``force``: a new one (the last was refused)."""
        now = self._clock()
        if not force and self._access and now < self._access_expires_at - ACCESS_TOKEN_MARGIN_S:
            return self._access
        deadline = now + REFRESH_LOCK_TTL_S
        while True:
            stored = self._store.load()
            shared = None if force else self._shared_access(stored)
            if shared is not None:
                self._access, self._access_expires_at = shared
                return shared[0]
            if self._store.acquire_refresh_lock(self._holder, REFRESH_LOCK_TTL_S):
                try:
                    again = self._store.load()
                    if again != stored and not force:
                        continue  # someone else refreshed meanwhile: use theirs
                    return self._refresh(stored)
                finally:
                    self._store.release_refresh_lock(self._holder)
            if self._clock() > deadline:
                raise ApiError(
                    "timed out waiting for another process to refresh the Exact Online token",
                    method="POST",
                    url=safe_url(self._base_url + TOKEN_PATH),
                )
            self._sleep(0.5)

    def _shared_access(self, stored: StoredTokens | None) -> tuple[str, float] | None:
        """The stored access token and its expiry, when it is of this ERP_REFRESH_TOKEN's chain
        and lives long enough to use."""
        if (
            stored
            and stored.seed_fingerprint == fingerprint(self._seed_refresh_token)
            and stored.access_token
            and stored.access_expires_at
            and self._clock() < stored.access_expires_at - ACCESS_TOKEN_MARGIN_S
        ):
            return stored.access_token, stored.access_expires_at
        return None

    def ensure_authorised(self) -> None:
        """Before this client's first call (each refresh checks again): see
        :meth:`_check_authorisation`."""
        if not self._authorisation_checked:
            self._check_authorisation()

    def _check_authorisation(self) -> None:
        """Stop, without calling Exact, while the chain of this ERP_REFRESH_TOKEN was refused."""
        needed = self._store.authorisation_needed()
        if needed is not None and needed[0] == fingerprint(self._seed_refresh_token):
            url = safe_url(self._base_url + TOKEN_PATH)
            raise AuthError(
                f"{needed[1]}. No call to Exact Online until ERP_REFRESH_TOKEN is changed",
                method="POST",
                url=url,
                status=400,
            )
        self._authorisation_checked = True

    # --- the refresh (under the store's lock) ----------------------------------------------

    def _refresh(self, stored: StoredTokens | None) -> str:
        self._check_authorisation()  # another process may have been refused meanwhile
        seed = fingerprint(self._seed_refresh_token)
        url = self._base_url + TOKEN_PATH
        interrupted = self._store.interrupted_refresh()
        self._wait_for_turn(stored, seed, interrupted, url)
        last_error = ""
        last_status: int | None = None
        refused: list[str | None] = []  # the OAuth error of each refused candidate
        for refresh_token in self._candidates(stored, seed):
            response = self._send_refresh(url, refresh_token)
            if response.ok:
                return self._keep(response, url, seed)
            last_error = _token_error_text(response)  # no body words: see SAFE_OAUTH_ERROR
            last_status = response.status_code
            refused.append(self._refusal(response, url, last_error))
        grant_refused = bool(refused) and all(code == REFUSED_GRANT for code in refused)
        message = _refused_message(url, last_error, interrupted, grant_refused, self._clock)
        if grant_refused:
            # Every later run would be refused too (and Exact caps token calls per day): none
            # calls Exact until ERP_REFRESH_TOKEN changes.
            self._store.note_authorisation_needed(seed, message)
        raise AuthError(message, method="POST", url=safe_url(url), status=last_status)

    def _candidates(self, stored: StoredTokens | None, seed: str) -> list[str]:
        """The refresh tokens to try, in order."""
        candidates: list[str] = []
        if stored and stored.seed_fingerprint == seed:
            candidates.append(stored.refresh_token)
        # The configured ERP_REFRESH_TOKEN starts a chain when the store has none for it (first
        # run, or an operator re-authorised and set a new one). If the stored token is refused,
        # the configured one is tried once: harmless when it was already used (Exact refuses it).
        if self._seed_refresh_token not in candidates:
            candidates.append(self._seed_refresh_token)
        return candidates

    def _wait_for_turn(
        self, stored: StoredTokens | None, seed: str, interrupted: float | None, url: str
    ) -> None:
        """Wait out Exact's 570 s since the last refresh when that is soon (see
        :meth:`_wait_until`)."""
        if interrupted is not None:
            # A refresh was sent but its answer never stored (the process died, the answer was
            # lost). Exact may have rotated then; the previous token works again once the
            # 570 s are over, because the lost pair was never used.
            earliest = interrupted + MIN_REFRESH_INTERVAL_S
            log.warning(
                "An Exact Online token refresh sent at %s never had its answer stored; "
                "refreshing with the previous refresh token from %s",
                iso(interrupted),
                iso(earliest),
            )
            self._wait_until(earliest, url, why="a token refresh was interrupted")
        elif stored and stored.refreshed_at and stored.seed_fingerprint == seed:
            wait = stored.refreshed_at + MIN_REFRESH_INTERVAL_S - self._clock()
            if 0 < wait <= MAX_TOKEN_WAIT_S:
                self._sleep(wait + 0.5)  # too early to refresh; the access token is nearly due

    def _send_refresh(self, url: str, refresh_token: str) -> requests.Response:
        # Exact blocks the app after ten client errors an hour on the token endpoint too.
        self._budget.check(TOKEN_ENDPOINT, f"POST {safe_url(url)}", url)
        self.token_refreshes += 1
        # Written down before it is sent: see the module docstring.
        self._store.note_refresh_started(self._clock())
        try:
            return self._session.post(
                url,
                data={
                    "grant_type": "refresh_token",
                    "refresh_token": refresh_token,
                    "client_id": self._client_id,
                    "client_secret": self._client_secret,
                },
                headers={"Accept": "application/json"},
                # Giving up on a slow answer means waiting out the 570 s before the next
                # refresh (see the intent), so wait for it far longer than for a data call.
                timeout=(self._timeout[0], max(self._timeout[1], TOKEN_READ_TIMEOUT_S)),
            )
        except requests.RequestException as exc:
            if not may_have_arrived(exc):
                self._store.note_refresh_started(None)  # Exact never saw it
            raise ApiError(
                f"POST {safe_url(url)} failed: {type(exc).__name__}",
                method="POST",
                url=safe_url(url),
            ) from None

    def _keep(self, response: requests.Response, url: str, seed: str) -> str:
        """Store a successful refresh's tokens, then hand out its access token."""
        try:
            token = TokenResponse.model_validate(response.json())
        except (ValueError, ValidationError):
            raise ApiError(
                f"POST {safe_url(url)} answered {response.status_code} with an "
                "unexpected token body",
                method="POST",
                url=safe_url(url),
                status=response.status_code,
            ) from None
        now = self._clock()
        expires_at = now + token.expires_in_seconds
        # Durable first (this also crosses off the intent): using the new access token
        # kills every older refresh token.
        self._store.save(
            StoredTokens(
                refresh_token=token.refresh_token,
                access_token=token.access_token,
                access_expires_at=expires_at,
                refreshed_at=now,
                seed_fingerprint=seed,
            )
        )
        self._access, self._access_expires_at = token.access_token, expires_at
        log.info("Exact Online access token refreshed; the new refresh token is stored")
        return token.access_token

    def _refusal(self, response: requests.Response, url: str, last_error: str) -> str | None:
        """A refused refresh (4xx or 5xx): stop the run when the refusal is no verdict on the
        refresh token, else its OAuth error (None unless a 400) so the next one is tried."""
        status = response.status_code
        if status in NOT_PROCESSED:
            self._store.note_refresh_started(None)  # refused or unavailable: not rotated
        if 400 <= status < 500 and status != 429:
            self._budget.note_client_error(TOKEN_ENDPOINT, status)
        stop = _no_verdict(response, url, last_error)
        if stop is not None:
            raise stop
        return _oauth_error_of(response) if status == 400 else None

    def _wait_until(self, when: float, url: str, *, why: str) -> None:
        """Sleep until ``when`` if that is soon; otherwise stop the run (a transient
        :class:`ApiError`: orders stay pending and a later run goes on)."""
        wait = when - self._clock()
        if wait <= 0:
            return
        if wait > MAX_TOKEN_WAIT_S:
            raise ApiError(
                f"{why}; Exact Online accepts the next token refresh from {iso(when)}, "
                "the next run after that goes on",
                method="POST",
                url=safe_url(url),
            )
        self._sleep(wait + 0.5)


def _no_verdict(response: requests.Response, url: str, last_error: str) -> ApiError | None:
    """The error that stops the run when a refused refresh is no verdict on the refresh token
    (a 5xx or 429: transient; too early: the tokens stay valid), else None."""
    status = response.status_code
    if status >= 500 or status == 429:
        # Transient, and not a verdict on the refresh token: do not burn the configured
        # one as well; the next run tries the stored one again. (A 5xx may still have
        # rotated: the intent stays, so the next run waits out the 570 s first.)
        return ApiError(
            f"POST {safe_url(url)} answered {status} ({last_error}); "
            "the Exact Online token was not refreshed, the next run tries again",
            method="POST",
            url=safe_url(url),
            status=status,
        )
    if _too_early(response):
        # Exact refuses a refresh within 570 s of the last one with 400 access_denied,
        # Reason TooEarlyToRefreshTokens (websmurf/laravel-exact-online#31), and the
        # tokens stay valid: not a verdict on this refresh token, so the configured
        # one is not tried (it would be refused too, or count as one more error).
        return ApiError(
            f"Exact Online refused the token refresh at POST {safe_url(url)} "
            f"({last_error}): the last refresh of this authorisation was less than "
            f"{MIN_REFRESH_INTERVAL_S} s ago (another process or app using it?); the "
            "tokens stay valid and the next run tries again",
            method="POST",
            url=safe_url(url),
            status=status,
        )
    return None


def _refused_message(
    url: str,
    last_error: str,
    interrupted: float | None,
    grant_refused: bool,
    clock: Callable[[], float],
) -> str:
    """What to do once every candidate refresh token was refused (``clock``: when Exact
    refused the grant)."""
    if interrupted is not None:
        return (
            f"Exact Online refused the previous refresh token at POST {safe_url(url)} "
            f"({last_error}) after a refresh sent at {iso(interrupted)} lost its answer: "
            "this Exact app does not accept an older refresh token. Authorise the app "
            "again and set ERP_REFRESH_TOKEN to the new refresh token"
        )
    if grant_refused:
        return (
            f"Exact Online refused the refresh token at POST {safe_url(url)} "
            f"({last_error}) on {iso(clock())}, the configured ERP_REFRESH_TOKEN as "
            "well: authorisation needed. Authorise the app again and set ERP_REFRESH_TOKEN "
            "to the new refresh token"
        )
    return (
        f"Exact Online refused to refresh the access token at POST {safe_url(url)} "
        f"({last_error}): check ERP_CLIENT_ID and ERP_CLIENT_SECRET, and set a new "
        "ERP_REFRESH_TOKEN if the stored one was revoked"
    )


def _oauth_error_of(response: requests.Response) -> str | None:
    """The OAuth error code of a token endpoint answer (``invalid_grant`` …) when it looks like
    one (``SAFE_OAUTH_ERROR``), else None: it goes into error texts."""
    try:
        code = oauth_error(response.json())
    except ValueError:
        return None
    return code if code is not None and SAFE_OAUTH_ERROR.fullmatch(code) else None


def _too_early(response: requests.Response) -> bool:
    """Exact's answer to a refresh within 570 s of the last one: 400, ``Reason:
    TooEarlyToRefreshTokens: ...`` (OAuth error ``access_denied``), the tokens left valid."""
    reason = SAFE_REASON.match(response.headers.get("Reason") or "")
    return (
        response.status_code == 400
        and reason is not None
        and reason.group(1) == TOO_EARLY_REASON
        and _oauth_error_of(response) != REFUSED_GRANT
    )


def _token_error_text(response: requests.Response) -> str:
    """What a refused token call may say about itself: ``HTTP 400, OAuth error invalid_grant,
    Reason TooEarlyToRefreshTokens``. Never the body's words (``error_description``, raw text):
    a token endpoint's answer may echo the form that was sent, secrets included. The caller
    adds what to do."""
    parts = [f"HTTP {response.status_code}"]
    code = _oauth_error_of(response)
    if code:
        parts.append(f"OAuth error {code}")
    reason = SAFE_REASON.match(response.headers.get("Reason") or "")
    if reason:
        parts.append(f"Reason {reason.group(1)}")
    return ", ".join(parts)
