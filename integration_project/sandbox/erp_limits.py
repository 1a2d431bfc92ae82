"""The sandbox ERP's limits: Exact's API rate limits, and its block of apps that err too often.

Every data call is counted against a minutely and a daily budget (:class:`RateBudget`) and
announces both in the ``X-RateLimit-*`` headers (reset in epoch milliseconds); over budget ->
429. As Exact does, ``block_after_4xx`` client errors (4xx other than 429, 401 included) on one
endpoint within an hour block the app for an hour (:class:`ErrorBlock`): every data call and
the token endpoint then answer 403. Neither is thread-safe on its own: the ERP calls them under
its lock.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from integration_project.exact.models import RateLimit

_HOUR = timedelta(hours=1)
#: Minute windows a :class:`RateBudget` keeps a record of (a day of one-minute windows).
MAX_WINDOWS = 1440


class RateBudget:
    """A division's minutely and daily call budgets. Minutes start with the first call after
    the last one ran out; days are UTC days (or :meth:`reset`'s shortened ones). ``windows``
    records the calls admitted and refused in each minute; :meth:`reset` starts it afresh."""

    def __init__(self, *, minute_limit: int, day_limit: int, minute_window_s: float) -> None:
        self.minute_limit = minute_limit
        self.day_limit = day_limit
        self.minute_window_s = minute_window_s
        self.day_window_s = 86_400.0
        self._day_anchor = 0.0  # epoch: days are UTC days
        self._minute_start: float | None = None
        self._minute_used = 0
        self._day = -1
        self._day_used = 0
        #: The minute windows calls were made in, oldest first (the last :data:`MAX_WINDOWS`):
        #: [epoch start, calls admitted, calls refused with 429]. What a bench or a test
        #: counts the client's pace by, from the ERP's side.
        self.windows: list[list[float]] = []

    def take(self, now: float, *, consume: bool) -> tuple[bool, RateLimit]:
        """Check (and maybe use) one call at epoch ``now``: (allowed, what to announce)."""
        if self._minute_start is None or now >= self._minute_start + self.minute_window_s:
            self._minute_start, self._minute_used = now, 0
        day = math.floor((now - self._day_anchor) / self.day_window_s)
        if day != self._day:
            self._day, self._day_used = day, 0
        allowed = self._minute_used < self.minute_limit and self._day_used < self.day_limit
        if consume:
            self._record(allowed)
        if allowed and consume:
            self._minute_used += 1
            self._day_used += 1
        return allowed, RateLimit(
            daily_limit=self.day_limit,
            daily_remaining=max(0, self.day_limit - self._day_used),
            daily_reset_ms=int((self._day_anchor + (day + 1) * self.day_window_s) * 1000),
            minutely_limit=self.minute_limit,
            minutely_remaining=max(0, self.minute_limit - self._minute_used),
            minutely_reset_ms=int((self._minute_start + self.minute_window_s) * 1000),
        )

    def _record(self, allowed: bool) -> None:
        """Count a call in its window's record (a window is recorded from its first call)."""
        if not self.windows or self.windows[-1][0] != self._minute_start:
            self.windows.append([self._minute_start or 0.0, 0, 0])
            del self.windows[:-MAX_WINDOWS]
        self.windows[-1][1 if allowed else 2] += 1

    def reset(
        self,
        now: float,
        *,
        per_minute: int | None = None,
        per_day: int | None = None,
        minute_window_s: float | None = None,
        day_window_s: float | None = None,
    ) -> None:
        """Change the budgets (unset = keep); the current windows start afresh. A shortened
        "day" (``day_window_s``) starts at epoch ``now``."""
        self.minute_limit = self.minute_limit if per_minute is None else per_minute
        self.day_limit = self.day_limit if per_day is None else per_day
        if minute_window_s is not None:
            self.minute_window_s = minute_window_s
        if day_window_s is not None:
            self.day_window_s = day_window_s
            self._day_anchor, self._day = now, -1
        self._minute_start, self._minute_used, self._day_used = None, 0, 0
        self.windows = []


class ErrorBlock:
    """Client errors per endpoint in the last hour, and the block they lead to."""

    def __init__(self, block_after_4xx: int | None) -> None:
        self.block_after_4xx = block_after_4xx
        #: endpoint (see :func:`~integration_project.sandbox.erp_odata.call_key`) -> when it
        #: answered a client error, last hour.
        self.client_errors: dict[str, list[datetime]] = {}
        #: Until when the app is blocked after too many client errors (None: not blocked).
        self.blocked_until: datetime | None = None

    def message(self, now: datetime) -> str | None:
        """Why the app is blocked, or None (a lapsed block is lifted)."""
        if self.blocked_until is None:
            return None
        if now < self.blocked_until:
            return (
                "Forbidden: this app is blocked until "
                f"{self.blocked_until.isoformat()} after too many errors within an hour"
            )
        self.blocked_until, self.client_errors = None, {}
        return None

    def record(self, endpoint: str, status: int, now: datetime) -> None:
        """Tally an answer; the tenth client error on an endpoint within an hour blocks.
        401s count (as at Exact); 429s are the rate limit's, not errors."""
        if not 400 <= status < 500 or status == 429:
            return
        if self.message(now) is not None:
            return  # the block's own 403s do not extend it
        recent = [t for t in self.client_errors.get(endpoint, []) if t > now - _HOUR]
        recent.append(now)
        self.client_errors[endpoint] = recent
        if self.block_after_4xx is not None and len(recent) >= self.block_after_4xx:
            self.blocked_until = now + _HOUR
