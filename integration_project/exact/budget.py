"""Exact Online's call budgets, kept before each call rather than learnt from a refusal.

* The rate limits: one request at a time, paced by the ``X-RateLimit-*`` headers so steady
  state never hits 429; when the daily budget is spent, :class:`BudgetExhausted` stops the
  caller (and, through the :class:`CallGuard`, every later run until the reset). A client
  alone on the division uses the whole minute; once the headers show another caller, it
  keeps a few calls in reserve (see :meth:`CallBudget.pace`).
* The client-error block: Exact blocks the app for an hour after ten client errors an hour on
  one endpoint, so an endpoint that answered ``MAX_CLIENT_ERRORS_PER_HOUR`` is not called
  again within the hour (:class:`ErrorBudgetSpent`). 401s count, and so do the token
  endpoint's 4xx (under ``TOKEN_ENDPOINT``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol
from urllib.parse import urlsplit

import requests

from integration_project.exact.errors import BudgetExhausted, ErrorBudgetSpent, RateLimited, iso
from integration_project.exact.models import RateLimit
from integration_project.http import safe_url

#: The client's logger: everything the Exact client logs goes out under one name.
log = logging.getLogger("integration_project.exact.client")

#: Client errors (4xx) allowed per endpoint and hour before this client stops calling it:
#: Exact blocks the whole app for an hour at ten.
MAX_CLIENT_ERRORS_PER_HOUR = 8
#: Calls of the minute budget left unused once another process shows on the same division
#: (60 → 3); none while this client is alone on it.
MAX_MINUTE_RESERVE = 5
#: Longest we wait for the per-minute budget to reset before giving the run back.
MAX_RATE_WAIT_S = 65.0
#: How often one call may be answered 429 before the run is given back.
MAX_429_PER_CALL = 3


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


class CallBudget:
    """One client's view of the budgets: the last rate limit headers it saw, and the client
    errors of the last hour (shared with other processes through the optional guard)."""

    def __init__(
        self,
        *,
        base_url: str,
        division: str,
        guard: CallGuard | None,
        max_rate_wait_s: float,
        clock: Callable[[], float],
        sleep: Callable[[float], None],
    ) -> None:
        self._base_url = base_url
        self._division = division
        self._guard = guard
        self._max_rate_wait_s = max_rate_wait_s
        self._clock = clock
        self._sleep = sleep
        self._client_errors: dict[str, list[float]] | None = None  # loaded on first call
        self.rate_limit: RateLimit | None = None
        #: Another caller uses the division too (seen in the headers): keep a reserve.
        self.shared = False

    # --- the rate limits -------------------------------------------------------------------

    def pace(self) -> None:
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
        # The headers count the whole division's calls. Alone on it, this client's view is
        # exact and it uses the whole minute (a reserve of 3 of 60 would cap it at 95 %).
        # Once another caller shows, what this client saw is a call or two old: keep a few
        # calls in reserve from then on.
        reserve = min(MAX_MINUTE_RESERVE, (rl.minutely_limit or 0) // 20) if self.shared else 0
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

    def note_answer(self, response: requests.Response) -> None:
        """Keep the rate limit headers of an answer (an answer without them keeps the last),
        and notice another caller: within one minute, the calls left fell by more than this
        client's one call since its last answer."""
        seen = RateLimit.from_headers(response.headers)
        if seen is None:
            return
        last = self.rate_limit
        if (
            last is not None
            and last.minutely_reset_ms == seen.minutely_reset_ms
            and last.minutely_remaining is not None
            and seen.minutely_remaining is not None
            and last.minutely_remaining - seen.minutely_remaining > 1
        ):
            self.shared = True
        self.rate_limit = seen

    def note_429(self, times: int, where: str, method: str, url: str) -> None:
        """A call was answered 429 for the ``times``-th time: stop if the day's budget is spent
        or the call keeps being refused, else make :meth:`pace` wait for the minute's reset."""
        self.shared = True  # a 429 this client's view did not foresee: someone else calls
        if self.rate_limit and self.rate_limit.daily_remaining == 0:
            self.pace()  # raises BudgetExhausted
        if times > MAX_429_PER_CALL:
            raise RateLimited(
                f"{where} answered 429 {times} times",
                method=method,
                url=safe_url(url),
                status=429,
            )
        if self.rate_limit is None or self.rate_limit.minutely_remaining != 0:
            self.rate_limit = RateLimit(minutely_remaining=0, minutely_reset_ms=None)

    # --- the client-error block ------------------------------------------------------------

    def endpoint(self, method: str, url: str) -> str:
        """``POST salesorder/SalesOrders``: what Exact counts client errors by."""
        path = urlsplit(url).path
        marker = f"/api/v1/{self._division}/"
        return f"{method} {path.split(marker, 1)[-1]}"

    def check(self, endpoint: str, where: str, url: str) -> None:
        """Stop before a call Exact would count toward its block, or while the day's budget is
        paused by any process."""
        if self._guard is None:
            return
        now = self._clock()
        if self._client_errors is None:
            self._client_errors = self._guard.recent_client_errors(now - 3600)
            paused = self._guard.paused_until()
            if paused is not None and paused[0] > now:
                raise BudgetExhausted(
                    f"{paused[1]}; no calls to Exact Online until {iso(paused[0])}",
                    method="GET",
                    url=safe_url(self._base_url),
                    status=429,
                )
        recent = [t for t in self._client_errors.get(endpoint, []) if t > now - 3600]
        self._client_errors[endpoint] = recent
        if len(recent) >= MAX_CLIENT_ERRORS_PER_HOUR:
            raise ErrorBudgetSpent(
                f"{endpoint} answered {len(recent)} client errors within the hour; Exact Online "
                f"blocks the app at 10, so it is not called again before {iso(recent[0] + 3600)}",
                method=where.split(" ", 1)[0],
                url=safe_url(url),
                status=400,
            )

    def note_client_error(self, endpoint: str, status: int) -> None:
        if self._guard is None:
            return
        now = self._clock()
        self._guard.record_client_error(endpoint, status, now)
        if self._client_errors is not None:
            self._client_errors.setdefault(endpoint, []).append(now)
