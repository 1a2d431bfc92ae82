"""Order files a route read (CSV sources), by content hash: which file its orders came from,
and the span of their ``created_at`` that the file's mapping reads (:meth:`SourceFiles.window`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from integration_project.ledger.db import Database


@dataclass(frozen=True)
class SourceFile:
    sha256: str
    file_name: str
    orders: int
    quarantined: int
    #: ``[first_created_at, end_created_at)`` of the orders staged from it (None: none).
    first_created_at: datetime | None
    end_created_at: datetime | None
    read_at: datetime
    run_id: str


class SourceFiles:
    def __init__(self, db: Database, route_id: str) -> None:
        self._db = db
        self._route_id = route_id

    def record(self, file: SourceFile) -> None:
        """Record (or, for the same content read again, update) a file the route read."""
        with self._db.connect() as con:
            con.execute(
                """
                INSERT INTO source_files (route_id, sha256, file_name, orders, quarantined,
                    first_created_at, end_created_at, read_at, run_id)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (route_id, sha256) DO UPDATE SET
                    file_name = excluded.file_name, orders = excluded.orders,
                    quarantined = excluded.quarantined,
                    first_created_at = excluded.first_created_at,
                    end_created_at = excluded.end_created_at,
                    read_at = excluded.read_at, run_id = excluded.run_id
                """,
                [
                    self._route_id,
                    file.sha256,
                    file.file_name,
                    file.orders,
                    file.quarantined,
                    file.first_created_at,
                    file.end_created_at,
                    file.read_at,
                    file.run_id,
                ],
            )

    def get(self, sha256: str) -> SourceFile | None:
        with self._db.connect() as con:
            rows = con.execute(
                "SELECT sha256, file_name, orders, quarantined, first_created_at, "
                "end_created_at, read_at, run_id FROM source_files "
                "WHERE route_id = ? AND sha256 = ?",
                [self._route_id, sha256],
            ).fetchall()
        return SourceFile(*rows[0]) if rows else None
