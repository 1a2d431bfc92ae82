"""Which shop (host) and ERP (host + division) a route's rows belong to (``route_endpoints``).

Bound on first use, then a run pointed elsewhere is refused: its orders would be called
delivered (they were delivered to another ERP), or sent twice.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import duckdb

from integration_project.ledger.db import Database, now_utc, route_lock


class LedgerMismatch(Exception):
    """The route's ledger belongs to another shop or ERP division than this run points at."""


def endpoint_host(url: str) -> str:
    """``https://user:pw@Start.ExactOnline.nl:443/x`` -> ``start.exactonline.nl:443``: the
    host (and port) a URL points at, lower-cased, never its credentials or path."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    return f"{host}:{parts.port}" if parts.port else host


class Endpoints:
    """One route's binding. Remembers what this process bound, for the stores that stamp rows
    with it (staging: the shop host; deliveries: the ERP host and division)."""

    def __init__(self, db: Database, route_id: str) -> None:
        self._db = db
        self._route_id = route_id
        self._shop_host: str | None = None
        self._erp: tuple[str, str] | None = None

    @property
    def shop_host(self) -> str | None:
        """The shop host this process bound the route to (None: not bound here)."""
        return self._shop_host

    @property
    def erp(self) -> tuple[str, str] | None:
        """The (ERP host, division) this process bound the route to (None: not bound here)."""
        return self._erp

    def bind_shop(self, url: str) -> None:
        """Bind the route to this shop (first use), or refuse a shop other than the bound one:
        its order ids would mix with another shop's in staging."""
        host = endpoint_host(url)
        with self._db.transaction(lock=route_lock(self._route_id)) as con:
            row = self._row(con)
            bound_shop = row[0] if row else None
            if bound_shop not in (None, host):
                raise LedgerMismatch(
                    f"route {self._route_id}: this ledger holds orders of the shop at "
                    f"{bound_shop}; this run points at the shop at {host}. Use another "
                    "ledger (INTEGRATION_DUCKDB_PATH or INTEGRATION_LEDGER_URL) or another "
                    "route name for that shop"
                )
            if row is None:
                self._insert(con, host, None)
            if bound_shop is None:
                con.execute(
                    "UPDATE route_endpoints SET shop_host = ? WHERE route_id = ?",
                    [host, self._route_id],
                )
                # Rows staged before the ledger recorded hosts belong to this shop.
                con.execute(
                    "UPDATE staged_orders SET shop_host = ? "
                    "WHERE route_id = ? AND shop_host IS NULL",
                    [host, self._route_id],
                )
        self._shop_host = host

    def bind_erp(self, url: str, division: str) -> None:
        """Bind the route to this ERP division (first use), or refuse another one: the rows
        the ledger calls delivered were delivered *there*, and would never reach this one."""
        erp = (endpoint_host(url), str(division))
        with self._db.transaction(lock=route_lock(self._route_id)) as con:
            row = self._row(con)
            _, bound_host, bound_division = row or (None, None, None)
            if bound_host is not None and (bound_host, bound_division) != erp:
                raise LedgerMismatch(
                    f"route {self._route_id}: this ledger delivered to the ERP at {bound_host} "
                    f"division {bound_division}; this run points at {erp[0]} division "
                    f"{erp[1]}. Refusing to deliver: orders it calls delivered are not in "
                    "that ERP. Use another ledger (INTEGRATION_DUCKDB_PATH or "
                    "INTEGRATION_LEDGER_URL) or another route name for that division"
                )
            if row is None:
                self._insert(con, None, erp)
            if bound_host is None:
                con.execute(
                    "UPDATE route_endpoints SET erp_host = ?, erp_division = ? WHERE route_id = ?",
                    [*erp, self._route_id],
                )
                con.execute(
                    "UPDATE delivered_orders SET erp_host = ?, erp_division = ? "
                    "WHERE route_id = ? AND erp_host IS NULL",
                    [*erp, self._route_id],
                )
        self._erp = erp

    def bound(self) -> dict[str, str | None]:
        """The shop and ERP the route's rows belong to (None: not bound yet)."""
        with self._db.connect() as con:
            row = self._row(con)
        keys = ("shop_host", "erp_host", "erp_division")
        return dict(zip(keys, row or (None, None, None), strict=True))

    def _row(self, con: duckdb.DuckDBPyConnection) -> tuple[str | None, ...] | None:
        return con.execute(
            "SELECT shop_host, erp_host, erp_division FROM route_endpoints WHERE route_id = ?",
            [self._route_id],
        ).fetchone()

    def _insert(
        self, con: duckdb.DuckDBPyConnection, shop_host: str | None, erp: tuple[str, str] | None
    ) -> None:
        con.execute(
            "INSERT INTO route_endpoints VALUES (?, ?, ?, ?, ?)",
            [self._route_id, shop_host, *(erp or (None, None)), now_utc()],
        )
