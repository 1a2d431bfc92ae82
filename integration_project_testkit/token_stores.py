"""A token store in memory for tests whose Exact clients share one token chain (the ledger's
store is per process, in DuckDB)."""

from __future__ import annotations

import threading

from integration_project.exact.models import StoredTokens


class SharedTokens:
    """A token store two clients share in memory (the ledger's is per process, in DuckDB)."""

    def __init__(self) -> None:
        self.tokens: StoredTokens | None = None
        self.lock = threading.Lock()

    def load(self) -> StoredTokens | None:
        return self.tokens

    def save(self, tokens: StoredTokens) -> None:
        self.tokens = tokens

    def note_refresh_started(self, at: float | None) -> None:
        pass

    def interrupted_refresh(self) -> float | None:
        return None

    def acquire_refresh_lock(self, holder: str, ttl_s: float) -> bool:
        return self.lock.acquire(timeout=ttl_s)

    def release_refresh_lock(self, holder: str) -> None:
        self.lock.release()

    def authorisation_needed(self) -> tuple[str, str] | None:
        return None

    def note_authorisation_needed(self, seed_fingerprint: str, reason: str) -> None:
        pass
