"""Fault injection for the sandbox servers: never on unless a plan says so.

The route's promises (nothing lost, nothing sent twice) only mean something if the client is
seen failing. A :class:`FaultPlan` makes failures happen on purpose, in two ways:

- random: per-kind rates drawn from a seeded RNG, for soak runs of the whole route;
- scripted: one-shot (or n-shot) faults matched by method and path, for tests that need a
  failure at an exact moment, e.g. "the next sales-order POST is committed, then lost".

Kinds (each server applies only those that make sense at an endpoint):

``"500"``, ``"503"``
    answered before any work is done, in the system's own error format;
``"429"``
    a rate-limit answer with the system's headers (``Retry-After`` / ``X-RateLimit-*``);
``"slow"``
    sleep ``seconds`` before handling (the request is still processed afterwards, as a real
    server would after the client gave up);
``"lost_after_commit"``
    ERP POSTs only: the entity is stored, then the answer is a 504 (``mode="504"``) or the
    connection is closed without an answer (``mode="drop"``);
``"malformed_json"``
    shop order search only: 200 with a body that is not JSON;
``"token_error"``
    token endpoints only: 503 instead of a token;
``"token_lost"``
    the ERP's token endpoint only: the refresh token is rotated, ``seconds`` pass, then the
    answer is lost (a 504, ``mode="504"``, or a dropped connection, ``mode="drop"``), as when
    the client process dies between Exact's answer and storing the new refresh token.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

KINDS = frozenset(
    {
        "500",
        "503",
        "429",
        "slow",
        "lost_after_commit",
        "malformed_json",
        "token_error",
        "token_lost",
    }
)
LOST_MODES = frozenset({"504", "drop"})


@dataclass(frozen=True)
class Injection:
    """A fault chosen for one request."""

    kind: str
    seconds: float = 0.0  # "slow"
    mode: str = "504"  # "lost_after_commit"


@dataclass
class ScriptedFault:
    kind: str
    path_contains: str | None = None
    method: str | None = None
    times: int = 1  # how many more requests it hits
    seconds: float | None = None
    mode: str | None = None

    def matches(self, method: str, path: str, kinds: frozenset[str]) -> bool:
        return (
            self.times > 0
            and self.kind in kinds
            and (self.method is None or self.method.upper() == method.upper())
            and (self.path_contains is None or self.path_contains in path)
        )


class FaultPlan:
    """Which faults a server injects, and a record of the ones it did.

    ``rates`` maps a kind to a probability per eligible request (seeded, so a soak run is
    reproducible). Scripted faults (:meth:`add`) take precedence over random ones.
    """

    def __init__(
        self,
        rates: Mapping[str, float] | None = None,
        *,
        seed: int = 0,
        slow_seconds: float = 2.0,
        lost_mode: str = "504",
    ) -> None:
        rates = dict(rates or {})
        for kind, rate in rates.items():
            _check_kind(kind)
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"fault rate for {kind!r} must be within [0, 1], got {rate}")
        if lost_mode not in LOST_MODES:
            raise ValueError(f"lost_mode must be one of {sorted(LOST_MODES)}")
        self.rates = rates
        self.slow_seconds = slow_seconds
        self.lost_mode = lost_mode
        self.scripted: list[ScriptedFault] = []
        #: How many faults of each kind were injected.
        self.injected: Counter[str] = Counter()
        #: (method, path, kind) of every injected fault, in order.
        self.log: list[tuple[str, str, str]] = []
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    def add(
        self,
        kind: str,
        *,
        path_contains: str | None = None,
        method: str | None = None,
        times: int = 1,
        seconds: float | None = None,
        mode: str | None = None,
    ) -> ScriptedFault:
        """Inject ``kind`` into the next ``times`` matching requests."""
        _check_kind(kind)
        if mode is not None and mode not in LOST_MODES:
            raise ValueError(f"mode must be one of {sorted(LOST_MODES)}")
        fault = ScriptedFault(kind, path_contains, method, times, seconds, mode)
        with self._lock:
            self.scripted.append(fault)
        return fault

    def clear(self) -> None:
        """Forget scripted faults and random rates (the record of injected faults stays)."""
        with self._lock:
            self.scripted.clear()
            self.rates = {}

    @property
    def pending(self) -> list[ScriptedFault]:
        with self._lock:
            return [f for f in self.scripted if f.times > 0]

    def take(self, method: str, path: str, kinds: Iterable[str]) -> Injection | None:
        """The fault to inject into this request, if any; ``kinds`` = what the endpoint allows."""
        eligible = frozenset(kinds)
        with self._lock:
            chosen: Injection | None = None
            for fault in self.scripted:
                if fault.matches(method, path, eligible):
                    fault.times -= 1
                    chosen = self._injection(fault.kind, fault.seconds, fault.mode)
                    break
            else:
                for kind in sorted(self.rates):
                    if kind in eligible and self._rng.random() < self.rates[kind]:
                        chosen = self._injection(kind, None, None)
                        break
            if chosen is not None:
                self.injected[chosen.kind] += 1
                self.log.append((method, path, chosen.kind))
            return chosen

    def _injection(self, kind: str, seconds: float | None, mode: str | None) -> Injection:
        return Injection(
            kind,
            self.slow_seconds if seconds is None else seconds,
            mode or self.lost_mode,
        )


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown fault kind {kind!r}; known: {sorted(KINDS)}")
