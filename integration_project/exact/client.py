"""HTTP client for the Exact Online REST API: tokens, look-ups, sales orders, rate budget.

Knows nothing of Dagster or of the ledger's tables: the durable token store is handed in
(:class:`TokenStore`). Rules it keeps, all from Exact's documentation:

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
* Look-ups (GET) are retried with backoff on 5xx; a 429 waits for the announced reset.
* ``POST salesorder/SalesOrders`` is never retried blindly: a timeout or 5xx there is
  :class:`OutcomeUnknown` and the caller looks the order up by ``YourRef`` later.
* One request at a time, paced by the ``X-RateLimit-*`` headers so steady state never hits 429;
  when the daily budget is spent, :class:`BudgetExhausted` stops the caller.
* Every client error counts toward Exact's block (ten an hour per endpoint): 401s, and the
  token endpoint's 4xx under ``POST oauth2/token``, as well.
* A refresh Exact refuses as too early (400 ``access_denied``, ``Reason:
  TooEarlyToRefreshTokens``: within 570 s of the last) leaves the tokens valid: the run stops
  as transient, without trying ``ERP_REFRESH_TOKEN``.
* A refresh token Exact refuses (``invalid_grant``, the configured one as well) is stored as
  "authorisation needed" for its chain: no later run calls Exact (which also caps token calls
  per day) until ``ERP_REFRESH_TOKEN`` is set to a newly authorised token.
* Every POST asks for the created entity (``Prefer: return=representation``, as
  picqer/exact-php-client does): without it Exact answers only the fields sent and the key,
  no ``OrderNumber``.
* ``__next`` links are followed only to ``ERP_API_URL``'s own scheme, host and port.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import quote, urljoin, urlsplit

import requests
from pydantic import ValidationError

from integration_project.exact.models import (
    ACCOUNTS,
    ITEMS,
    MIN_REFRESH_INTERVAL_S,
    SALES_ORDER_LINE_FIELDS,
    SALES_ORDER_LINES,
    SALES_ORDERS,
    TOKEN_PATH,
    VAT_CODE_FIELDS,
    VAT_CODES,
    AccountCreate,
    AccountRef,
    RateLimit,
    SalesOrderLineRef,
    SalesOrderRef,
    StoredTokens,
    TokenResponse,
    VatCode,
    account_code,
    data_path,
    eq_filter,
    error_message,
    guid_eq_filter,
    oauth_error,
    results,
    single,
)
from integration_project.http import DEFAULT_TIMEOUT, ApiError, AuthError, build_session, safe_url

log = logging.getLogger(__name__)

#: Use a stored access token only while it has at least this long to live. Exact refuses a
#: refresh within 570 s of the last one, so this must stay below 600 - 570 = 30 s.
ACCESS_TOKEN_MARGIN_S = 20.0
#: How long a process may hold the refresh lock before others may take it over.
REFRESH_LOCK_TTL_S = 60.0
#: Read timeout of the token call (the rotated refresh token is in that answer).
TOKEN_READ_TIMEOUT_S = 45.0  # below REFRESH_LOCK_TTL_S: the lock outlives the call
#: Token answers that prove Exact did not rotate (a 500 or 504 may come after it did).
NOT_PROCESSED = frozenset({*range(400, 500), 502, 503})
#: Client errors (4xx) allowed per endpoint and hour before this client stops calling it:
#: Exact blocks the whole app for an hour at ten.
MAX_CLIENT_ERRORS_PER_HOUR = 8
#: Calls of the minute budget left unused for other processes on the same division (60 → 3).
MAX_MINUTE_RESERVE = 5
#: Longest a run waits for Exact to accept the next token refresh (570 s after the last one).
MAX_TOKEN_WAIT_S = 35.0
#: Longest we wait for the per-minute budget to reset before giving the run back.
MAX_RATE_WAIT_S = 65.0
#: What the call guard counts the token endpoint's client errors under.
TOKEN_ENDPOINT = "POST oauth2/token"
#: The OAuth error of a refresh token Exact will never accept again (RFC 6749 §5.2).
REFUSED_GRANT = "invalid_grant"
#: The ``Reason`` header's code when a refresh comes within 570 s of the last one.
TOO_EARLY_REASON = "TooEarlyToRefreshTokens"
#: Longest piece of an ERP error text put into a message.
MAX_ERROR_TEXT = 500
#: What of a token endpoint's answer may go into an error text: never its body's words (they
#: may echo what was sent), only an OAuth error code and the leading code of Exact's ``Reason``
#: header (``TooEarlyToRefreshTokens: ...``) when they look like codes.
SAFE_OAUTH_ERROR = re.compile(r"[a-z_]{1,40}")
SAFE_REASON = re.compile(r"\s*([A-Za-z][A-Za-z0-9]{2,59})\s*(?::|$)")


# --- the token store (implemented over DuckDB by the ledger) -------------------------------


class TokenStore(Protocol):
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


class CallGuard(Protocol):
    """What every process must know before it calls Exact (implemented over DuckDB)."""

    def recent_client_errors(self, since: float) -> dict[str, list[float]]:
        """endpoint -> when it answered a client error (epoch s), since ``since``."""
        ...

    def record_client_error(self, endpoint: str, status: int, at: float) -> None: ...

    def paused_until(self) -> tuple[float, str] | None:
        """(epoch s, why) while the daily budget is spent, else None."""
        ...

    def pause(self, until: float | None, reason: str = "") -> None: ...


def fingerprint(secret: str) -> str:
    """Identifies a refresh token without storing or logging it."""
    return hashlib.sha256(secret.encode()).hexdigest()[:16]


# --- errors and outcomes -------------------------------------------------------------------


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


@dataclass(frozen=True)
class CreatedSalesOrder:
    order_id: str
    order_number: int | None


# --- the client ----------------------------------------------------------------------------


class ExactClient:
    def __init__(
        self,
        *,
        base_url: str,
        division: str,
        client_id: str,
        client_secret: str,
        refresh_token: str,
        token_store: TokenStore,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
        max_retries: int = 3,
        backoff_factor: float = 0.5,
        max_rate_wait_s: float = MAX_RATE_WAIT_S,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        holder: str | None = None,
        guard: CallGuard | None = None,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._guard = guard
        self._client_errors: dict[str, list[float]] | None = None  # loaded on first call
        self._division = division
        self._client_id = client_id
        self._client_secret = client_secret
        self._seed_refresh_token = refresh_token
        self._store = token_store
        self._timeout = timeout
        self._max_rate_wait_s = max_rate_wait_s
        self._clock = clock
        self._sleep = sleep
        self._holder = holder or f"pid-{uuid.uuid4().hex[:12]}"
        # GETs are retried by urllib3 on 5xx; 429 is handled here from Exact's own headers.
        self._session = build_session(
            retry_methods=("GET",),
            retry_statuses=(500, 502, 503, 504),
            total=max_retries,
            read_retries=max_retries,
            backoff_factor=backoff_factor,
        )
        self._access: str | None = None
        self._access_expires_at = 0.0
        self._authorisation_checked = False
        self.rate_limit: RateLimit | None = None
        self.calls = 0
        self.token_refreshes = 0

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> ExactClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- look-ups --------------------------------------------------------------------------

    def find_account_id(self, email: str) -> str | None:
        """The first account with this e-mail (see :meth:`find_accounts` for all of them)."""
        rows = self.find_accounts(email)
        return rows[0].ID if rows else None

    def find_accounts(self, email: str) -> list[AccountRef]:
        """Every account with this e-mail: Exact does not keep e-mails unique, so a caller
        must decide what several mean."""
        rows = self._query(ACCOUNTS, eq_filter("Email", email), "ID,Code,Name")
        return [AccountRef.model_validate(row) for row in rows]

    def find_accounts_by_code(self, code: str) -> list[AccountRef]:
        """Accounts whose ``Code`` is this customer number (Exact stores codes right-aligned
        to 18 characters, and so must a filter name them)."""
        rows = self._query(ACCOUNTS, eq_filter("Code", account_code(code)), "ID,Code,Name")
        return [AccountRef.model_validate(row) for row in rows]

    def create_account(self, account: AccountCreate) -> str:
        """Not retried blindly: callers look the e-mail up first, and again after a failure."""
        body = self._request_json(
            "POST",
            data_path(self._division, ACCOUNTS),
            json=account.model_dump(exclude_none=True),
            create=True,
        )
        return str(single(body)["ID"])

    def find_item_id(self, code: str) -> str | None:
        rows = self._query(ITEMS, eq_filter("Code", code), "ID")
        return str(rows[0]["ID"]) if rows else None

    def list_vat_codes(self) -> list[VatCode]:
        """Every VAT code of the division (a few dozen: one call, paged if more)."""
        rows = self._query(VAT_CODES, None, VAT_CODE_FIELDS)
        return [VatCode.model_validate(row) for row in rows]

    def find_sales_orders(self, your_ref: str) -> list[SalesOrderRef]:
        rows = self._query(
            SALES_ORDERS, eq_filter("YourRef", your_ref), "OrderID,OrderNumber,YourRef,OrderedBy"
        )
        return [SalesOrderRef.model_validate(row) for row in rows]

    def sales_order_lines(self, order_id: str) -> list[SalesOrderLineRef]:
        """The lines of one sales order (``salesorder/SalesOrderLines``, filtered by
        ``OrderID``): what the recovery step compares with the order it meant to send."""
        rows = self._query(
            SALES_ORDER_LINES, guid_eq_filter("OrderID", order_id), SALES_ORDER_LINE_FIELDS
        )
        return [SalesOrderLineRef.model_validate(row) for row in rows]

    def create_sales_order(self, payload: dict[str, Any]) -> CreatedSalesOrder:
        body = self._request_json(
            "POST", data_path(self._division, SALES_ORDERS), json=payload, create=True
        )
        created = SalesOrderRef.model_validate(single(body))
        return CreatedSalesOrder(order_id=created.OrderID, order_number=created.OrderNumber)

    def _query(self, resource: str, odata_filter: str | None, select: str) -> list[dict[str, Any]]:
        # Filter queries answer 200 with an empty list where a GET by id would 404: Exact
        # blocks a key after ten 4xx an hour, so look-ups never risk a 404.
        params = f"$select={quote(select, safe=',')}"
        if odata_filter is not None:
            params = f"$filter={quote(odata_filter, safe='')}&{params}"
        out: list[dict[str, Any]] = []
        url: str | None = f"{data_path(self._division, resource)}?{params}"
        while url:
            body = self._request_json("GET", url)
            out.extend(results(body))
            next_url = body.get("d", {}).get("__next") if isinstance(body.get("d"), dict) else None
            url = self._next_page(str(next_url)) if next_url else None
        return out

    def _next_page(self, link: str) -> str:
        """The ``__next`` link, absolute; only ever to ERP_API_URL's scheme, host and port (the
        bearer token goes with it)."""
        url = urljoin(self._base_url + "/", link)
        if _origin(url) != _origin(self._base_url):
            host = urlsplit(url).hostname or "?"
            raise ApiError(
                f"Exact Online's next-page link points to {host}, not to the host of "
                f"ERP_API_URL ({urlsplit(self._base_url).hostname}): not followed",
                method="GET",
                url=safe_url(self._base_url),
            )
        return url

    # --- tokens ----------------------------------------------------------------------------

    def _access_token(self, *, force: bool = False) -> str:
        now = self._clock()
        if not force and self._access and now < self._access_expires_at - ACCESS_TOKEN_MARGIN_S:
            return self._access
        deadline = now + REFRESH_LOCK_TTL_S
        while True:
            stored = self._store.load()
            if (
                not force
                and stored
                and stored.seed_fingerprint == fingerprint(self._seed_refresh_token)
                and stored.access_token
                and stored.access_expires_at
                and self._clock() < stored.access_expires_at - ACCESS_TOKEN_MARGIN_S
            ):
                self._access, self._access_expires_at = (
                    stored.access_token,
                    stored.access_expires_at,
                )
                return self._access
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

    def _refresh(self, stored: StoredTokens | None) -> str:
        self._check_authorisation()  # another process may have been refused meanwhile
        seed = fingerprint(self._seed_refresh_token)
        candidates: list[str] = []
        if stored and stored.seed_fingerprint == seed:
            candidates.append(stored.refresh_token)
        # The configured ERP_REFRESH_TOKEN starts a chain when the store has none for it (first
        # run, or an operator re-authorised and set a new one). If the stored token is refused,
        # the configured one is tried once: harmless when it was already used (Exact refuses it).
        if self._seed_refresh_token not in candidates:
            candidates.append(self._seed_refresh_token)
        url = self._base_url + TOKEN_PATH
        interrupted = self._store.interrupted_refresh()
        if interrupted is not None:
            # A refresh was sent but its answer never stored (the process died, the answer was
            # lost). Exact may have rotated then; the previous token works again once the
            # 570 s are over, because the lost pair was never used.
            earliest = interrupted + MIN_REFRESH_INTERVAL_S
            log.warning(
                "An Exact Online token refresh sent at %s never had its answer stored; "
                "refreshing with the previous refresh token from %s",
                _iso(interrupted),
                _iso(earliest),
            )
            self._wait_until(earliest, url, why="a token refresh was interrupted")
        elif stored and stored.refreshed_at and stored.seed_fingerprint == seed:
            wait = stored.refreshed_at + MIN_REFRESH_INTERVAL_S - self._clock()
            if 0 < wait <= MAX_TOKEN_WAIT_S:
                self._sleep(wait + 0.5)  # too early to refresh; the access token is nearly due
        last_error = ""
        last_status: int | None = None
        refused: list[str | None] = []  # the OAuth error of each refused candidate
        for refresh_token in candidates:
            # Exact blocks the app after ten client errors an hour on the token endpoint too.
            self._check_guard(TOKEN_ENDPOINT, f"POST {safe_url(url)}", url)
            self.token_refreshes += 1
            # Written down before it is sent: see the module docstring.
            self._store.note_refresh_started(self._clock())
            try:
                response = self._session.post(
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
                if not _may_have_arrived(exc):
                    self._store.note_refresh_started(None)  # Exact never saw it
                raise ApiError(
                    f"POST {safe_url(url)} failed: {type(exc).__name__}",
                    method="POST",
                    url=safe_url(url),
                ) from None
            if response.ok:
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
            last_error = _token_error_text(response)  # no body words: see SAFE_OAUTH_ERROR
            last_status = response.status_code
            if response.status_code in NOT_PROCESSED:
                self._store.note_refresh_started(None)  # refused or unavailable: not rotated
            if 400 <= response.status_code < 500 and response.status_code != 429:
                self._note_client_error(TOKEN_ENDPOINT, response.status_code)
                refused.append(_oauth_error_of(response) if response.status_code == 400 else None)
            if response.status_code >= 500 or response.status_code == 429:
                # Transient, and not a verdict on the refresh token: do not burn the configured
                # one as well; the next run tries the stored one again. (A 5xx may still have
                # rotated: the intent stays, so the next run waits out the 570 s first.)
                raise ApiError(
                    f"POST {safe_url(url)} answered {response.status_code} ({last_error}); "
                    "the Exact Online token was not refreshed, the next run tries again",
                    method="POST",
                    url=safe_url(url),
                    status=response.status_code,
                )
            if _too_early(response):
                # Exact refuses a refresh within 570 s of the last one with 400 access_denied,
                # Reason TooEarlyToRefreshTokens (websmurf/laravel-exact-online#31), and the
                # tokens stay valid: not a verdict on this refresh token, so the configured
                # one is not tried (it would be refused too, or count as one more error).
                raise ApiError(
                    f"Exact Online refused the token refresh at POST {safe_url(url)} "
                    f"({last_error}): the last refresh of this authorisation was less than "
                    f"{MIN_REFRESH_INTERVAL_S} s ago (another process or app using it?); the "
                    "tokens stay valid and the next run tries again",
                    method="POST",
                    url=safe_url(url),
                    status=response.status_code,
                )
        grant_refused = bool(refused) and all(code == REFUSED_GRANT for code in refused)
        if interrupted is not None:
            message = (
                f"Exact Online refused the previous refresh token at POST {safe_url(url)} "
                f"({last_error}) after a refresh sent at {_iso(interrupted)} lost its answer: "
                "this Exact app does not accept an older refresh token. Authorise the app "
                "again and set ERP_REFRESH_TOKEN to the new refresh token"
            )
        elif grant_refused:
            message = (
                f"Exact Online refused the refresh token at POST {safe_url(url)} "
                f"({last_error}) on {_iso(self._clock())}, the configured ERP_REFRESH_TOKEN as "
                "well: authorisation needed. Authorise the app again and set ERP_REFRESH_TOKEN "
                "to the new refresh token"
            )
        else:
            message = (
                f"Exact Online refused to refresh the access token at POST {safe_url(url)} "
                f"({last_error}): check ERP_CLIENT_ID and ERP_CLIENT_SECRET, and set a new "
                "ERP_REFRESH_TOKEN if the stored one was revoked"
            )
        if grant_refused:
            # Every later run would be refused too (and Exact caps token calls per day): none
            # calls Exact until ERP_REFRESH_TOKEN changes.
            self._store.note_authorisation_needed(seed, message)
        raise AuthError(message, method="POST", url=safe_url(url), status=last_status)

    def _error_text(self, response: requests.Response, *secrets: str) -> str:
        return _erp_error_text(
            response,
            (self._client_secret, self._seed_refresh_token, self._access or "", *secrets),
        )

    def _wait_until(self, when: float, url: str, *, why: str) -> None:
        """Sleep until ``when`` if that is soon; otherwise stop the run (a transient
        :class:`ApiError`: orders stay pending and a later run goes on)."""
        wait = when - self._clock()
        if wait <= 0:
            return
        if wait > MAX_TOKEN_WAIT_S:
            raise ApiError(
                f"{why}; Exact Online accepts the next token refresh from {_iso(when)}, "
                "the next run after that goes on",
                method="POST",
                url=safe_url(url),
            )
        self._sleep(wait + 0.5)

    # --- plumbing --------------------------------------------------------------------------

    def _pace(self) -> None:
        """Wait for the minute budget to reset rather than earn a 429; stop on the day's."""
        rl = self.rate_limit
        if rl is None:
            return
        now_ms = self._clock() * 1000
        if rl.daily_remaining is not None and rl.daily_remaining <= 0:
            if rl.daily_reset_ms is None or rl.daily_reset_ms > now_ms:
                reason = f"the Exact Online daily call budget is spent (limit {rl.daily_limit})"
                if self._guard is not None:
                    # Later runs stop before calling, instead of each earning a 429.
                    until = rl.daily_reset_ms / 1000 if rl.daily_reset_ms else now_ms / 1000 + 3600
                    self._guard.pause(until, reason)
                raise BudgetExhausted(
                    f"{reason}; resumes after the reset",
                    method="GET",
                    url=safe_url(self._base_url),
                    status=429,
                )
        # The headers count the whole division's calls, but what this process saw is a call
        # or two old when another run shares the division: keep a few calls in reserve.
        reserve = min(MAX_MINUTE_RESERVE, (rl.minutely_limit or 0) // 20)
        if rl.minutely_remaining is not None and rl.minutely_remaining <= reserve:
            reset = rl.minutely_reset_ms
            wait = (reset - now_ms) / 1000 if reset else 1.0
            if wait > self._max_rate_wait_s:
                raise RateLimited(
                    f"the Exact Online minute budget resets in {wait:.0f} s",
                    method="GET",
                    url=safe_url(self._base_url),
                    status=429,
                )
            if wait > 0:
                log.info("Exact Online minute budget spent; waiting %.1f s for the reset", wait)
                self._sleep(wait + 0.05)
            self.rate_limit = None  # unknown until the next response tells us

    # --- the call guard --------------------------------------------------------------------

    def _endpoint(self, method: str, url: str) -> str:
        """``POST salesorder/SalesOrders``: what Exact counts client errors by."""
        path = urlsplit(url).path
        marker = f"/api/v1/{self._division}/"
        return f"{method} {path.split(marker, 1)[-1]}"

    def _check_guard(self, endpoint: str, where: str, url: str) -> None:
        if self._guard is None:
            return
        now = self._clock()
        if self._client_errors is None:
            self._client_errors = self._guard.recent_client_errors(now - 3600)
            paused = self._guard.paused_until()
            if paused is not None and paused[0] > now:
                raise BudgetExhausted(
                    f"{paused[1]}; no calls to Exact Online until {_iso(paused[0])}",
                    method="GET",
                    url=safe_url(self._base_url),
                    status=429,
                )
        recent = [t for t in self._client_errors.get(endpoint, []) if t > now - 3600]
        self._client_errors[endpoint] = recent
        if len(recent) >= MAX_CLIENT_ERRORS_PER_HOUR:
            raise ErrorBudgetSpent(
                f"{endpoint} answered {len(recent)} client errors within the hour; Exact Online "
                f"blocks the app at 10, so it is not called again before {_iso(recent[0] + 3600)}",
                method=where.split(" ", 1)[0],
                url=safe_url(url),
                status=400,
            )

    def _note_client_error(self, endpoint: str, status: int) -> None:
        if self._guard is None:
            return
        now = self._clock()
        self._guard.record_client_error(endpoint, status, now)
        if self._client_errors is not None:
            self._client_errors.setdefault(endpoint, []).append(now)

    def _request_json(
        self, method: str, path_or_url: str, *, json: Any = None, create: bool = False
    ) -> dict[str, Any]:
        url = path_or_url if "://" in path_or_url else self._base_url + path_or_url
        where = f"{method} {safe_url(url)}"
        refreshed = False
        rate_waits = 0
        endpoint = self._endpoint(method, url)
        if not self._authorisation_checked:
            self._check_authorisation()
        self._check_guard(endpoint, where, url)
        headers = {"Accept": "application/json"}
        if method == "POST":
            # Without it Exact answers a POST with the fields sent and the key only: no
            # OrderNumber (picqer/exact-php-client sends it on every request too).
            headers["Prefer"] = "return=representation"
        while True:
            self._pace()
            token = self._access_token(force=refreshed)
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
                error_cls = OutcomeUnknown if create and _may_have_arrived(exc) else ApiError
                raise error_cls(
                    f"{where} failed: {type(exc).__name__}",
                    method=method,
                    url=safe_url(url),
                ) from None
            self.rate_limit = RateLimit.from_headers(response.headers) or self.rate_limit
            status = response.status_code
            if 400 <= status < 500 and status != 429:
                # Exact counts 401s toward its block as well; a 429 is the rate limit's.
                self._note_client_error(endpoint, status)
            if status == 401 and not refreshed:
                refreshed = True  # revoked or expired early: one forced refresh, then retry
                self._check_guard(endpoint, where, url)
                continue
            if status == 429:
                # A 429 is refused before it is processed, so even a create may be repeated.
                rate_waits += 1
                if self.rate_limit and self.rate_limit.daily_remaining == 0:
                    self._pace()  # raises BudgetExhausted
                if rate_waits > 3:
                    raise RateLimited(
                        f"{where} answered 429 {rate_waits} times",
                        method=method,
                        url=safe_url(url),
                        status=429,
                    )
                if self.rate_limit is None or self.rate_limit.minutely_remaining != 0:
                    self.rate_limit = RateLimit(minutely_remaining=0, minutely_reset_ms=None)
                continue
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


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="seconds")


def _may_have_arrived(exc: requests.RequestException) -> bool:
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


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port or {"http": 80, "https": 443}.get(scheme)
    except ValueError:
        port = -1  # not a port: never equal to ours
    return scheme, (parts.hostname or "").lower(), port


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


def _erp_error_text(response: requests.Response, secrets: tuple[str, ...] = ()) -> str:
    """Exact's own words (OData envelope or OAuth form), without any secret of ours in them."""
    try:
        message = error_message(response.json())
    except ValueError:
        message = None
    text = message or f"{response.status_code} {response.reason}"
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "[redacted]")
    if len(text) > MAX_ERROR_TEXT:
        text = text[:MAX_ERROR_TEXT] + "…"
    return text
