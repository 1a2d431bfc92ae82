"""The ERP's ids for an order: its customer's account, its items, its VAT rates' codes.

Each is looked up in the ERP once and cached in the ledger (per ERP division), so a steady-state
order costs the ERP nothing here; and each is remembered for the run, so a large backfill does
not open a DuckDB connection per order (each open costs tens of milliseconds). What a batch of
orders learnt from the ERP is written to the cache at once (:meth:`Resolver.flush`); a run that
stops before loses only those cache entries: the ERP, the truth, is asked again.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from integration_project.connectors.base import OrderTarget
from integration_project.exact.client import OutcomeUnknown
from integration_project.exact.models import (
    ACCOUNT_CODE_WIDTH,
    AccountCreate,
    VatCode,
    account_code,
)
from integration_project.ledger import Ledger
from integration_project.transforms import (
    LOOKUP_TARGETS,
    LookupOutcome,
    LookupRule,
    MappedOrder,
    UnknownVatCodeError,
    choose_vat_code,
    decide_lookup,
    unmatched_lookup,
)

#: The division's VAT codes are fetched again after this long (or when a rate has no code).
VAT_CODES_TTL = timedelta(hours=24)


class AccountUnresolved(Exception):
    """The route's rule does not name exactly one ERP account for the order (quarantined)."""


class LookupUnresolved(Exception):
    """A look-up table gives the order no ERP value and the route quarantines it."""


class Resolver:
    """One run's look-ups: customer e-mail (or customer number) → ERP account id, product
    number → ERP item id, VAT rate → the division's VAT code. ``erp_lookups`` and
    ``accounts_created`` count what it asked of the ERP."""

    def __init__(
        self,
        ledger: Ledger,
        client: OrderTarget,
        log: logging.Logger,
        match: str = "email",
    ) -> None:
        self._ledger = ledger
        self._match = match  # "email" or "customer_number": how orders find their account
        self._client = client
        self._log = log
        self.erp_lookups = 0
        self.accounts_created = 0
        #: lower-cased e-mail (or ``customer-number:<n>``) → account id, this run
        self._accounts: dict[str, str] = {}
        self._items: dict[str, str | None] = {}  # item code → id (None: unknown), this run
        self._not_cached: set[str] = set()  # e-mails prefetched and not in the DuckDB cache
        self._vat_codes: list[VatCode] | None = None  # the division's, this run
        self._vat_code_of: dict[Decimal, str] = {}  # rate -> its code among _vat_codes
        self._vat_codes_fetched = False  # asked the ERP this run
        #: learnt from the ERP since the last flush, for the DuckDB cache
        self._new_accounts: dict[str, str] = {}
        self._new_items: dict[str, str | None] = {}
        #: The route's look-up tables (shipping method, payment method, sales channel).
        self.tables = LookupTables(ledger, client, log)

    def flush(self) -> None:
        """Write what was learnt from the ERP since the last flush to the DuckDB cache, in
        one transaction (the mapping calls it after each batch)."""
        self._ledger.lookups.cache(self._new_accounts, self._new_items)
        self._new_accounts, self._new_items = {}, {}

    def prefetch(self, payloads: list[Any]) -> None:
        """Load the DuckDB cache for a batch of raw orders in two queries, instead of one per
        order: a look-back re-maps an hour of orders every tick."""
        emails: set[str] = set()
        codes: set[str] = set()
        for payload in payloads:
            if not isinstance(payload, dict):
                continue
            customer = payload.get("orderCustomer")
            if self._match == "customer_number":
                number = customer.get("customerNumber") if isinstance(customer, dict) else None
                if isinstance(number, str | int) and str(number).strip():
                    emails.add(f"customer-number:{str(number).strip()}".lower())
            else:
                email = customer.get("email") if isinstance(customer, dict) else None
                if isinstance(email, str) and email.strip():
                    emails.add(email.strip().lower())
            lines = payload.get("lineItems")
            for line in lines if isinstance(lines, list) else []:
                extra = line.get("payload") if isinstance(line, dict) else None
                code = extra.get("productNumber") if isinstance(extra, dict) else None
                if isinstance(code, str) and code:
                    codes.add(code)
        unseen_emails = emails - self._accounts.keys() - self._not_cached
        if unseen_emails:
            found = self._ledger.lookups.cached_accounts(unseen_emails)
            self._accounts.update(found)
            self._not_cached |= unseen_emails - found.keys()
        unseen_codes = codes - self._items.keys()
        if unseen_codes:
            self._items.update(self._ledger.lookups.cached_items(unseen_codes))

    def account_for(self, order: MappedOrder) -> str:
        """The ERP account the order is booked to, found (or created) by the route's rule:
        the customer's e-mail (the default), or the customer number kept in the account's
        ``Code``. :class:`AccountUnresolved` when the rule cannot name exactly one account."""
        if self._match == "customer_number":
            number = order.customer_number.strip()
            if not number:
                raise AccountUnresolved(
                    "the order has no customer number (orderCustomer.customerNumber), and the "
                    "route finds ERP accounts by it (mapping.account_match: customer_number)"
                )
            if len(number) > ACCOUNT_CODE_WIDTH:
                raise AccountUnresolved(
                    f"customer number {number!r} is longer than an ERP account code "
                    f"({ACCOUNT_CODE_WIDTH} characters)"
                )
            key = f"customer-number:{number}".lower()
        else:
            key = order.customer_email.lower()
        if key in self._accounts:
            return self._accounts[key]
        cached = None if key in self._not_cached else self._ledger.lookups.cached_account(key)
        if cached:
            self._accounts[key] = cached
            return cached
        account_id = self._find_account(order)
        if account_id is None:
            account = AccountCreate(
                Name=order.customer_name,
                Email=order.customer_email,
                Country=order.customer_country,
                Code=account_code(order.customer_number)
                if self._match == "customer_number"
                else None,
            )
            try:
                account_id = self._client.create_account(account)
            except OutcomeUnknown:
                # Not retried blindly: the answer was lost, so look the account up again.
                # Found: the ERP did create it. Not found: it did not; the order is deferred
                # to the next run.
                account_id = self._find_account(order)
                if account_id is None:
                    raise
                self._log.info(
                    "Account for order %s was created; its answer was lost", order.order_number
                )
            self.accounts_created += 1
            self._log.debug("Created ERP account for order %s", order.order_number)
        self._new_accounts[key] = account_id
        self._accounts[key] = account_id
        return account_id

    def _find_account(self, order: MappedOrder) -> str | None:
        """The one account the rule names, None when there is none. Several accounts are an
        :class:`AccountUnresolved` naming them: the shop does not verify e-mail addresses, so
        taking the first could book the order to somebody else."""
        self.erp_lookups += 1
        if self._match == "customer_number":
            found = self._client.find_accounts_by_code(order.customer_number)
            what = f"the customer number {order.customer_number.strip()!r} as their code"
        else:
            found = self._client.find_accounts(order.customer_email)
            what = "the customer's e-mail address"
        if len(found) > 1:
            names = ", ".join(
                f"{(a.Code or '').strip() or '?'} ({a.Name or 'no name'})" for a in found[:5]
            )
            more = f" and {len(found) - 5} more" if len(found) > 5 else ""
            raise AccountUnresolved(
                f"{len(found)} ERP accounts have {what}: codes {names}{more}. Merge them in "
                "the ERP, or find accounts by customer number (mapping.account_match: "
                "customer_number)"
            )
        return found[0].ID if found else None

    def vat_codes_for(self, rates: frozenset[Decimal]) -> dict[Decimal, str]:
        """The division's VAT code for each rate (percent), from ``vat/VATCodes``.

        The list is cached in DuckDB for :data:`VAT_CODES_TTL` (one call a day per division),
        and fetched again, once per run, when a rate has no code: an accountant may just have
        created it. :class:`UnknownVatCodeError` when a rate has no code or several.
        """
        found: dict[Decimal, str] = {}
        for rate in sorted(rates):
            try:
                found[rate] = self._vat_code(rate)
            except UnknownVatCodeError:
                if self._vat_codes_fetched:
                    raise
                self._division_vat_codes(refresh=True)
                found[rate] = self._vat_code(rate)
        return found

    def _vat_code(self, rate: Decimal) -> str:
        """The code for ``rate`` among the division's codes, worked out once per list."""
        if rate not in self._vat_code_of:
            self._vat_code_of[rate] = choose_vat_code(rate, self._division_vat_codes())
        return self._vat_code_of[rate]

    def _division_vat_codes(self, *, refresh: bool = False) -> list[VatCode]:
        if self._vat_codes is None and not refresh:
            codes, cached_at = self._ledger.lookups.cached_vat_codes()
            if cached_at is not None and cached_at > datetime.now(UTC) - VAT_CODES_TTL:
                self._vat_codes = codes
        if self._vat_codes is None or refresh:
            self.erp_lookups += 1
            self._vat_codes = self._client.list_vat_codes()
            self._vat_code_of.clear()
            self._vat_codes_fetched = True
            self._ledger.lookups.cache_vat_codes(self._vat_codes)
            self._log.info(
                "Fetched the ERP division's %s VAT codes (vat/VATCodes)", len(self._vat_codes)
            )
        return self._vat_codes

    def items_for(self, codes: frozenset[str]) -> dict[str, str]:
        unseen = codes - self._items.keys()
        if unseen:
            cached = self._ledger.lookups.cached_items(unseen)
            for code in sorted(unseen - cached.keys()):
                self.erp_lookups += 1
                cached[code] = self._client.find_item_id(code)
                # A miss is remembered for a while.
                self._new_items[code] = cached[code]
            self._items.update(cached)
        return {code: self._items[code] for code in codes if self._items[code] is not None}


_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


class LookupTables:
    """One run's look-up tables: the ERP fields (``ShippingMethod``, ``PaymentCondition``,
    ``SalesChannel``, ``WarehouseID``) of an order, by the route's rules.

    A table names ERP rows by ``Code`` (what a person sees in Exact); a field that holds an ID
    gets the row's ID, found once in the ERP and cached in the ledger. A dynamic rule finds
    the row whose ``Description`` is the shop's name. ``counts`` tallies, per look-up,
    ``matched`` / ``defaulted`` / ``quarantined`` orders; ``erp_lookups`` the ERP calls."""

    def __init__(self, ledger: Ledger, client: OrderTarget, log: logging.Logger) -> None:
        self._ledger = ledger
        self._client = client
        self._log = log
        self.erp_lookups = 0
        self.counts: dict[str, Counter[str]] = {}
        #: (resource, field, lower-cased key) -> value (None: no row), this run
        self._known: dict[tuple[str, str, str], str | None] = {}
        self._ambiguous: dict[tuple[str, str, str], str] = {}  # the same, several rows: why

    def fields_for(self, order: MappedOrder, rules: tuple[LookupRule, ...]) -> dict[str, str]:
        """The ERP fields of ``order``; :class:`LookupUnresolved` naming every reason to
        quarantine it (each look-up is counted either way)."""
        fields: dict[str, str] = {}
        problems: list[str] = []
        for rule, key in zip(rules, order.lookup_keys, strict=True):
            try:
                outcome = self._resolve(rule, decide_lookup(rule, key))
            except LookupUnresolved as exc:
                outcome = LookupOutcome("quarantined", None, str(exc))
            self.counts.setdefault(rule.kind, Counter())[outcome.status] += 1
            if outcome.status == "quarantined":
                problems.append(outcome.reason)
            elif outcome.value is not None:
                fields[rule.erp_field] = outcome.value
        if problems:
            raise LookupUnresolved("; ".join(problems))
        return fields

    def _resolve(self, rule: LookupRule, outcome: LookupOutcome) -> LookupOutcome:
        """The table's outcome with the value the sales order carries: a row found by the
        shop's name (``ask``), or the ID of the row a code names."""
        resource, _ = LOOKUP_TARGETS[rule.erp_field]
        if outcome.status == "ask":
            name = outcome.value or ""
            found = self._find(rule, "Description", name)
            if found is not None:
                return LookupOutcome("matched", found)
            outcome = unmatched_lookup(rule, f"the ERP has no row described {name!r} in {resource}")
        if outcome.value is None:
            return outcome  # quarantined, or defaulted to leaving the field off
        value = self._erp_value(rule, outcome.value)
        if value is None:
            return LookupOutcome(
                "quarantined",
                None,
                f"{rule.kind.replace('_', ' ')}: the ERP has no row with Code "
                f"{outcome.value!r} in {resource} (named by mapping.lookups.{rule.kind})",
            )
        return LookupOutcome(outcome.status, value)

    def _erp_value(self, rule: LookupRule, code: str) -> str | None:
        """What the sales order carries for the row the route names by ``code``: a payment
        condition's code and an ID as they are, else the ID of the row with that ``Code``
        (None: no such row)."""
        if _GUID.match(code) or LOOKUP_TARGETS[rule.erp_field][1] == "Code":
            return code  # the ERP refuses an unknown one when the order is sent
        return self._find(rule, "Code", code)

    def _find(self, rule: LookupRule, field: str, key: str) -> str | None:
        """The value of the one row of the rule's list whose ``field`` is ``key``, from this
        run, the ledger's cache, or the ERP. Several rows: :class:`LookupUnresolved`."""
        resource, returns = LOOKUP_TARGETS[rule.erp_field]
        known = (resource, field, key.casefold())
        if known in self._known:
            return self._known[known]
        if known in self._ambiguous:
            raise LookupUnresolved(self._ambiguous[known])
        cached, value = self._ledger.lookups.cached_lookup_value(resource, field, key)
        if not cached:
            self.erp_lookups += 1
            rows = self._client.find_lookup_rows(resource, field, key)
            if len(rows) > 1:  # not cached: a person fixes it in the ERP, the next run sees it
                codes = ", ".join(repr((r.Code or "").strip()) for r in rows[:5])
                self._ambiguous[known] = (
                    f"{rule.kind.replace('_', ' ')}: {len(rows)} rows of {resource} have "
                    f"{field} {key!r} (codes {codes}); make it unique in the ERP"
                )
                raise LookupUnresolved(self._ambiguous[known])
            row = rows[0] if rows else None
            value = (
                None if row is None else (row.ID if returns == "ID" else (row.Code or "").strip())
            )
            self._ledger.lookups.cache_lookup_value(resource, field, key, value)
            self._log.info(
                "Looked up %s %s %r in the ERP: %s", resource, field, key, value or "none"
            )
        self._known[known] = value
        return value
