"""The last ERP sample of a route's sampled asset checks (``check_samples``): a check that
samples the ERP at most every so often shows the stored result in between, whichever Dagster
instance runs it."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from integration_project.ledger.db import Database


class CheckSamples:
    def __init__(self, db: Database, route_id: str) -> None:
        self._db = db
        self._route_id = route_id

    def last(self, check_name: str) -> tuple[datetime, bool, dict[str, Any]] | None:
        """The route's last ERP sample for a sampled check: (when, passed, metadata)."""
        with self._db.connect() as con:
            row = con.execute(
                "SELECT sampled_at, passed, metadata FROM check_samples "
                "WHERE route_id = ? AND check_name = ?",
                [self._route_id, check_name],
            ).fetchone()
        return None if row is None else (row[0], bool(row[1]), json.loads(row[2]))

    def record(
        self, check_name: str, sampled_at: datetime, passed: bool, metadata: dict[str, Any]
    ) -> None:
        """Keep this sample as the check's last one (replacing the one before)."""
        with self._db.connect() as con:
            con.execute(
                "INSERT INTO check_samples VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (route_id, check_name) DO UPDATE SET sampled_at = "
                "excluded.sampled_at, passed = excluded.passed, metadata = excluded.metadata",
                [self._route_id, check_name, sampled_at, passed, json.dumps(metadata)],
            )
