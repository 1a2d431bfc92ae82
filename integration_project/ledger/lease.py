"""Named leases (``leases``): one delivery run of a route sends at a time."""

from __future__ import annotations

from datetime import timedelta

from integration_project.ledger.db import Database, now_utc


class Leases:
    def __init__(self, db: Database) -> None:
        self._db = db

    def acquire(
        self, name: str, holder: str, ttl: timedelta, *, take_over_from: str | None = None
    ) -> str | None:
        """Take (or renew) the lease. Returns None on success, else the current holder.

        ``take_over_from``: the caller knows that this holder is dead (its run is over), so its
        unexpired lease may be taken; any other live holder still wins.
        """
        now = now_utc()
        with self._db.transaction(lock=f"lease {name}") as con:
            row = con.execute(
                "SELECT holder, expires_at FROM leases WHERE name = ?", [name]
            ).fetchone()
            if (
                row
                and row[0] not in (None, holder, take_over_from)
                and row[1] is not None
                and row[1] > now
            ):
                return str(row[0])
            con.execute(
                "INSERT INTO leases VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE "
                "SET holder = excluded.holder, expires_at = excluded.expires_at",
                [name, holder, now + ttl],
            )
        return None

    def release(self, name: str, holder: str) -> None:
        """Free the lease if ``holder`` still holds it."""
        with self._db.connect() as con:
            con.execute(
                "UPDATE leases SET holder = NULL, expires_at = NULL WHERE name = ? AND holder = ?",
                [name, holder],
            )
