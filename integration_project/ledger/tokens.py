"""The ERP token store and call guard over the ledger file (``erp_tokens``,
``erp_client_errors``, ``erp_pauses``): see ``exact/client.py``'s ``TokenStore`` and
``CallGuard``, which this implements."""

from __future__ import annotations

from integration_project.exact.models import StoredTokens
from integration_project.ledger.db import Database, now_utc


class DuckDBTokenStore:
    """The ERP token store and call guard: survives processes, so every run shares one access
    token and one tally of Exact's budgets.

    ``token_key`` scopes the call guard (``erp_client_errors``, ``erp_pauses``): Exact counts
    client errors and calls per division. ``chain_key`` scopes the token chain
    (``erp_tokens``): it belongs to the app and the authorising user, so every division the
    authorisation reaches shares one refresh and one access token. It defaults to
    ``token_key`` (one division, one chain). ``adopt_from`` is the key an older version kept
    the chain under: on first use its row moves to ``chain_key`` when its seed fingerprint is
    ``seed_fingerprint``, so an upgrade does not burn the rotated refresh token.
    """

    def __init__(
        self,
        db: Database,
        token_key: str,
        *,
        chain_key: str | None = None,
        adopt_from: str | None = None,
        seed_fingerprint: str | None = None,
    ) -> None:
        self._db = db
        self._key = token_key
        self._chain = chain_key or token_key
        self._adopt_from = (
            adopt_from if adopt_from and adopt_from != self._chain and seed_fingerprint else None
        )
        self._seed = seed_fingerprint

    @property
    def chain_key(self) -> str:
        return self._chain

    def _ready(self) -> None:
        """Adopt the legacy chain, once per store, before the first use of the chain."""
        if self._adopt_from is not None:
            self._adopt_legacy_chain(self._adopt_from)
            self._adopt_from = None  # once per store

    def _adopt_legacy_chain(self, legacy_key: str) -> None:
        with self._db.transaction(lock=f"token chain {self._chain}") as con:
            own = con.execute(
                "SELECT refresh_token, refresh_started_at FROM erp_tokens WHERE token_key = ?",
                [self._chain],
            ).fetchone()
            old = con.execute(
                "SELECT refresh_token, access_token, access_expires_at, refreshed_at, "
                "seed_fingerprint, refresh_started_at FROM erp_tokens "
                "WHERE token_key = ? AND seed_fingerprint = ?",
                [legacy_key, self._seed],
            ).fetchone()
            if (own is None or own == (None, None)) and old is not None and old[0]:
                con.execute(
                    """
                    INSERT INTO erp_tokens (token_key, refresh_token, access_token,
                        access_expires_at, refreshed_at, seed_fingerprint, refresh_started_at)
                    VALUES (?, ?, ?, ?, ?, ?, ?)
                    ON CONFLICT (token_key) DO UPDATE SET
                        refresh_token = excluded.refresh_token,
                        access_token = excluded.access_token,
                        access_expires_at = excluded.access_expires_at,
                        refreshed_at = excluded.refreshed_at,
                        seed_fingerprint = excluded.seed_fingerprint,
                        refresh_started_at = excluded.refresh_started_at
                    """,
                    [self._chain, *old],
                )
                # One copy of a refresh token, under the key every division now uses.
                con.execute("DELETE FROM erp_tokens WHERE token_key = ?", [legacy_key])

    def load(self) -> StoredTokens | None:
        self._ready()
        with self._db.connect() as con:
            row = con.execute(
                "SELECT refresh_token, access_token, access_expires_at, refreshed_at, "
                "seed_fingerprint FROM erp_tokens WHERE token_key = ?",
                [self._chain],
            ).fetchone()
        if not row or not row[0]:
            return None
        return StoredTokens(*row)

    def save(self, tokens: StoredTokens) -> None:
        self._ready()
        with self._db.connect() as con:
            con.execute(
                """
                INSERT INTO erp_tokens (token_key, refresh_token, access_token, access_expires_at,
                                        refreshed_at, seed_fingerprint)
                VALUES (?, ?, ?, ?, ?, ?)
                ON CONFLICT (token_key) DO UPDATE SET
                    refresh_token = excluded.refresh_token,
                    access_token = excluded.access_token,
                    access_expires_at = excluded.access_expires_at,
                    refreshed_at = excluded.refreshed_at,
                    seed_fingerprint = excluded.seed_fingerprint,
                    refresh_started_at = NULL,
                    auth_needed_seed = NULL,
                    auth_needed_reason = NULL
                """,
                [
                    self._chain,
                    tokens.refresh_token,
                    tokens.access_token,
                    tokens.access_expires_at,
                    tokens.refreshed_at,
                    tokens.seed_fingerprint,
                ],
            )

    def note_refresh_started(self, at: float | None) -> None:
        self._ready()
        with self._db.connect() as con:
            con.execute(
                """
                INSERT INTO erp_tokens (token_key, refresh_started_at) VALUES (?, ?)
                ON CONFLICT (token_key) DO UPDATE
                SET refresh_started_at = excluded.refresh_started_at
                """,
                [self._chain, at],
            )

    def interrupted_refresh(self) -> float | None:
        self._ready()
        with self._db.connect() as con:
            row = con.execute(
                "SELECT refresh_started_at FROM erp_tokens WHERE token_key = ?", [self._chain]
            ).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def authorisation_needed(self) -> tuple[str, str] | None:
        self._ready()
        with self._db.connect() as con:
            row = con.execute(
                "SELECT auth_needed_seed, auth_needed_reason FROM erp_tokens WHERE token_key = ?",
                [self._chain],
            ).fetchone()
        return None if row is None or row[0] is None else (str(row[0]), str(row[1] or ""))

    def note_authorisation_needed(self, seed_fingerprint: str, reason: str) -> None:
        self._ready()
        with self._db.connect() as con:
            con.execute(
                """
                INSERT INTO erp_tokens (token_key, auth_needed_seed, auth_needed_reason)
                VALUES (?, ?, ?)
                ON CONFLICT (token_key) DO UPDATE SET
                    auth_needed_seed = excluded.auth_needed_seed,
                    auth_needed_reason = excluded.auth_needed_reason
                """,
                [self._chain, seed_fingerprint, reason],
            )

    # --- the call guard: Exact's error threshold and daily budget, shared by every run -------

    def recent_client_errors(self, since: float) -> dict[str, list[float]]:
        with self._db.connect() as con:
            rows = con.execute(
                "SELECT endpoint, seen_at FROM erp_client_errors "
                "WHERE token_key = ? AND seen_at >= ? ORDER BY seen_at",
                [self._key, since],
            ).fetchall()
        out: dict[str, list[float]] = {}
        for endpoint, at in rows:
            out.setdefault(endpoint, []).append(float(at))
        return out

    def record_client_error(self, endpoint: str, status: int, at: float) -> None:
        with self._db.connect() as con:
            con.execute(
                "DELETE FROM erp_client_errors WHERE token_key = ? AND seen_at < ?",
                [self._key, at - 86_400],
            )
            con.execute(
                "INSERT INTO erp_client_errors VALUES (?, ?, ?, ?)",
                [self._key, endpoint, status, at],
            )

    def paused_until(self) -> tuple[float, str] | None:
        with self._db.connect() as con:
            row = con.execute(
                "SELECT until_s, reason FROM erp_pauses WHERE token_key = ?", [self._key]
            ).fetchone()
        return None if row is None or row[0] is None else (float(row[0]), str(row[1]))

    def pause(self, until: float | None, reason: str = "") -> None:
        with self._db.connect() as con:
            con.execute(
                "INSERT INTO erp_pauses VALUES (?, ?, ?) ON CONFLICT (token_key) "
                "DO UPDATE SET until_s = excluded.until_s, reason = excluded.reason",
                [self._key, until, reason],
            )

    def acquire_refresh_lock(self, holder: str, ttl_s: float) -> bool:
        self._ready()
        now = now_utc().timestamp()
        with self._db.transaction(lock=f"token chain {self._chain}") as con:
            row = con.execute(
                "SELECT lock_holder, lock_until FROM erp_tokens WHERE token_key = ?", [self._chain]
            ).fetchone()
            if row and row[0] not in (None, holder) and row[1] is not None and row[1] > now:
                return False
            con.execute(
                """
                INSERT INTO erp_tokens (token_key, lock_holder, lock_until) VALUES (?, ?, ?)
                ON CONFLICT (token_key) DO UPDATE SET
                    lock_holder = excluded.lock_holder, lock_until = excluded.lock_until
                """,
                [self._chain, holder, now + ttl_s],
            )
        return True

    def release_refresh_lock(self, holder: str) -> None:
        with self._db.connect() as con:
            con.execute(
                "UPDATE erp_tokens SET lock_holder = NULL, lock_until = NULL "
                "WHERE token_key = ? AND lock_holder = ?",
                [self._chain, holder],
            )
