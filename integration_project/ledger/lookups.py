"""Look-up caches of one ERP division (``erp_key``), shared by every route that targets it:
e-mail -> account id (``erp_accounts``), item code -> item id (``erp_items``), the VAT codes
(``erp_vat_codes``), and the rows of the lists a sales order refers to (shipping methods,
payment conditions ...) by code or description (``erp_lookup_values``). They save the ERP's
call budget; the ERP stays the truth."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta

from integration_project.exact.models import VatCode
from integration_project.ledger.db import Database, now_utc


class Lookups:
    def __init__(self, db: Database, erp_key: str) -> None:
        self._db = db
        self._erp_key = erp_key

    def cached_account(self, email: str) -> str | None:
        return self.cached_accounts([email]).get(email.lower())

    def cached_accounts(self, emails: Iterable[str]) -> dict[str, str]:
        """Cached account ids of many e-mails at once (keys lower-cased); misses are absent."""
        wanted = sorted({e.lower() for e in emails})
        if not wanted:
            return {}
        with self._db.connect() as con:
            rows = con.execute(
                "SELECT email, account_id FROM erp_accounts WHERE erp_key = ? AND email = ANY(?)",
                [self._erp_key, wanted],
            ).fetchall()
        return {str(r[0]): str(r[1]) for r in rows}

    def cache(self, accounts: Mapping[str, str], items: Mapping[str, str | None]) -> None:
        """Remember accounts (e-mail -> id) and items (code -> id, or ``None``: the ERP has no
        such item, for a while) in one transaction: each connection costs tens of ms."""
        if not accounts and not items:
            return
        now = now_utc()
        with self._db.transaction(lock=f"erp caches {self._erp_key}") as con:
            if accounts:
                con.executemany(
                    "INSERT INTO erp_accounts VALUES (?, ?, ?, ?) ON CONFLICT (erp_key, email) "
                    "DO UPDATE SET account_id = excluded.account_id, "
                    "cached_at = excluded.cached_at",
                    [[self._erp_key, e.lower(), a, now] for e, a in sorted(accounts.items())],
                )
            if items:
                con.executemany(
                    "INSERT INTO erp_items VALUES (?, ?, ?, ?) ON CONFLICT (erp_key, code) "
                    "DO UPDATE SET item_id = excluded.item_id, cached_at = excluded.cached_at",
                    [[self._erp_key, c, i, now] for c, i in sorted(items.items())],
                )

    def cached_items(
        self, codes: Iterable[str], missing_ttl: timedelta = timedelta(minutes=15)
    ) -> dict[str, str | None]:
        """Cached item ids; ``None`` for a code the ERP did not know within ``missing_ttl``.

        Remembering misses keeps a look-back from asking the ERP about the same unknown product
        number every tick; the TTL lets an item created in the ERP be picked up soon after.
        """
        codes = sorted(set(codes))
        if not codes:
            return {}
        with self._db.connect() as con:
            rows = con.execute(
                "SELECT code, item_id FROM erp_items WHERE erp_key = ? AND code = ANY(?) "
                "AND (item_id IS NOT NULL OR cached_at > ?)",
                [self._erp_key, codes, now_utc() - missing_ttl],
            ).fetchall()
        return dict(rows)

    def cached_lookup_value(
        self,
        resource: str,
        by_field: str,
        key: str,
        *,
        found_ttl: timedelta = timedelta(hours=24),
        missing_ttl: timedelta = timedelta(minutes=15),
    ) -> tuple[bool, str | None]:
        """``(known, value)`` of a row of ``resource`` whose ``by_field`` is ``key`` (without
        case): ``(True, None)`` when the ERP had no such row within ``missing_ttl``;
        ``(False, None)`` when it must be asked. A value found is trusted for ``found_ttl``: a
        shipping method renamed in the ERP is picked up within a day."""
        now = now_utc()
        with self._db.connect() as con:
            row = con.execute(
                "SELECT erp_value FROM erp_lookup_values WHERE erp_key = ? AND resource = ? "
                "AND by_field = ? AND lookup_key = ? AND cached_at > "
                "CASE WHEN erp_value IS NULL THEN CAST(? AS TIMESTAMPTZ) "
                "ELSE CAST(? AS TIMESTAMPTZ) END",
                [
                    self._erp_key,
                    resource,
                    by_field,
                    key.casefold(),
                    now - missing_ttl,
                    now - found_ttl,
                ],
            ).fetchone()
        return (True, row[0]) if row is not None else (False, None)

    def cache_lookup_value(self, resource: str, by_field: str, key: str, value: str | None) -> None:
        """Remember what the ERP said of a row of ``resource`` (``None``: no such row)."""
        with self._db.transaction(lock=f"erp caches {self._erp_key}") as con:
            con.execute(
                "INSERT INTO erp_lookup_values VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (erp_key, resource, by_field, lookup_key) DO UPDATE SET "
                "erp_value = excluded.erp_value, cached_at = excluded.cached_at",
                [self._erp_key, resource, by_field, key.casefold(), value, now_utc()],
            )

    def cached_vat_codes(self) -> tuple[list[VatCode], datetime | None]:
        """The division's VAT codes as last fetched, and when (None: never)."""
        with self._db.connect() as con:
            rows = con.execute(
                "SELECT code, description, percentage, transaction_type, is_blocked, vat_type, "
                "cached_at FROM erp_vat_codes WHERE erp_key = ? ORDER BY code",
                [self._erp_key],
            ).fetchall()
        codes = [
            VatCode(
                Code=r[0],
                Description=r[1],
                Percentage=r[2],
                VATTransactionType=r[3],
                IsBlocked=r[4],
                Type=r[5],
            )
            for r in rows
        ]
        return codes, (min(r[6] for r in rows) if rows else None)

    def cache_vat_codes(self, codes: Sequence[VatCode]) -> None:
        """Replace the division's cached VAT codes with ``codes`` (one transaction)."""
        now = now_utc()
        rows = [
            [
                self._erp_key,
                c.Code,
                c.Description,
                c.Percentage,
                c.VATTransactionType,
                c.IsBlocked,
                c.Type,
                now,
            ]
            for c in codes
        ]
        with self._db.transaction(lock=f"erp caches {self._erp_key}") as con:
            con.execute("DELETE FROM erp_vat_codes WHERE erp_key = ?", [self._erp_key])
            if rows:
                con.executemany(_VAT_CODE_UPSERT, rows)


#: A VAT code, replacing one of the same code earlier in the same list.
_VAT_CODE_UPSERT = """
INSERT INTO erp_vat_codes VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (erp_key, code) DO UPDATE SET
    description = excluded.description, percentage = excluded.percentage,
    transaction_type = excluded.transaction_type, is_blocked = excluded.is_blocked,
    vat_type = excluded.vat_type, cached_at = excluded.cached_at
"""
