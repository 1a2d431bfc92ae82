"""The naive baseline: a per-order Python loop with row-by-row INSERTs into DuckDB.

    python -m bench.contenders.naive --shop-url URL --erp-url URL --start ISO --end ISO \
        --db naive.duckdb [--steps fetch,map|fetch|map] [--one-core]

What a first script would do. ``fetch``: the order search's pages (``requests`` +
``json.loads``, the route's criteria), then one ``INSERT`` per order into a ``staged_orders``
table with our columns. ``map``: each staged order read back, ``json.loads``-ed, filtered and
mapped by the project's own ``transforms.evaluate_order`` and ``to_sales_order``, and one
``INSERT`` per order into an ``erp_orders`` table with our columns. One transaction per page
(500 rows): a commit per row would time the disk's flushes (1-2 ms a row here), not the loop.

ERP look-ups (accounts by e-mail, created when missing; items; the division's VAT codes) go
to the sandbox ERP through ``integration_project.exact.client`` on first sight and are
remembered in dicts for the run: asking the ERP again for every order would make the ERP's
answers the figure, not the loop (and no script would survive Exact's 60 calls a minute that
way). No Dagster, no ledger code.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import requests

from bench.contenders import emit, moment, pin_to_one_core
from bench.contenders.drain import PAGE_SIZE, shop_token
from integration_project import settings
from integration_project.exact.client import ExactClient
from integration_project.exact.models import AccountCreate, StoredTokens, VatCode
from integration_project.shopware.models import ORDER_SEARCH_PATH, created_at_window_criteria
from integration_project.transforms import (
    MappedOrder,
    MappingRules,
    Quarantined,
    Skipped,
    UnknownItemError,
    UnknownVatCodeError,
    choose_vat_code,
    evaluate_order,
    to_sales_order,
)

ROUTE_ID = "naive"
TABLES = """
CREATE TABLE IF NOT EXISTS staged_orders (
    route_id VARCHAR NOT NULL, shop_order_id VARCHAR NOT NULL, order_number VARCHAR,
    created_at TIMESTAMPTZ NOT NULL, payload JSON NOT NULL, fetched_at TIMESTAMPTZ NOT NULL,
    run_id VARCHAR, PRIMARY KEY (route_id, shop_order_id));
CREATE TABLE IF NOT EXISTS erp_orders (
    route_id VARCHAR NOT NULL, shop_order_id VARCHAR NOT NULL, order_number VARCHAR,
    created_at TIMESTAMPTZ NOT NULL, status VARCHAR NOT NULL, country VARCHAR, reason VARCHAR,
    payload JSON, payload_hash VARCHAR, mapped_at TIMESTAMPTZ NOT NULL, run_id VARCHAR,
    your_ref VARCHAR, PRIMARY KEY (route_id, shop_order_id));
"""


def route_rules() -> MappingRules:
    """The shipped default route's mapping rules (its file, as the code location reads it)."""
    import yaml

    from integration_project.routes.config import RouteConfig

    path = Path(settings.__file__).parent / "defs" / "eu_orders_shopware_to_exact" / "defs.yaml"
    return RouteConfig.model_validate(yaml.safe_load(path.read_text())["attributes"]).rules()


def stage(con: duckdb.DuckDBPyConnection, shop_url: str, start: datetime, end: datetime) -> int:
    """Every page of ``[start, end)``, one INSERT per order; the orders staged."""
    url, staged, page = shop_url.rstrip("/") + ORDER_SEARCH_PATH, 0, 1
    with requests.Session() as session:
        headers = {"Authorization": f"Bearer {shop_token(session, shop_url.rstrip('/'))}"}
        while True:
            criteria = created_at_window_criteria(start=start, end=end, page=page, limit=PAGE_SIZE)
            answer = session.post(url, json=criteria.to_json(), headers=headers, timeout=300)
            if not answer.ok:
                raise SystemExit(f"POST {url} (page {page}) answered {answer.status_code}")
            orders = json.loads(answer.content)["data"]
            con.execute("BEGIN")
            for order in orders:
                con.execute(
                    "INSERT INTO staged_orders VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [ROUTE_ID, *_identity(order, start), json.dumps(order), _now(), "naive"],
                )
            con.execute("COMMIT")
            staged += len(orders)
            if len(orders) < PAGE_SIZE:
                return staged
            page += 1


def _identity(order: Any, fallback: datetime) -> tuple[str, str | None, datetime]:
    """An order's shop id (a hash of it when it has none), number and creation moment."""
    fields = order if isinstance(order, dict) else {}
    order_id = fields.get("id")
    if not isinstance(order_id, str) or not order_id:
        order_id = "missing-id-" + hashlib.sha256(json.dumps(order).encode()).hexdigest()[:16]
    number = fields.get("orderNumber")
    try:
        created = datetime.fromisoformat(str(fields.get("createdAt")).replace("Z", "+00:00"))
    except ValueError:
        created = fallback
    return order_id, None if number is None else str(number), created


def _now() -> datetime:
    return datetime.now(UTC)


class MemoryTokens:
    """The ERP token chain kept in memory: this process is the only one using it."""

    def __init__(self) -> None:
        self._tokens: StoredTokens | None = None

    def load(self) -> StoredTokens | None:
        return self._tokens

    def save(self, tokens: StoredTokens) -> None:
        self._tokens = tokens

    def note_refresh_started(self, at: float | None) -> None:
        pass

    def interrupted_refresh(self) -> float | None:
        return None

    def acquire_refresh_lock(self, holder: str, ttl_s: float) -> bool:
        return True

    def release_refresh_lock(self, holder: str) -> None:
        pass

    def authorisation_needed(self) -> tuple[str, str] | None:
        return None

    def note_authorisation_needed(self, seed_fingerprint: str, reason: str) -> None:
        pass


class LookUps:
    """The ERP's ids for an order, asked of the ERP on first sight, remembered in dicts."""

    def __init__(self, client: ExactClient) -> None:
        self._client = client
        self._accounts: dict[str, str] = {}
        self._items: dict[str, str | None] = {}
        self._vat_codes: list[VatCode] | None = None

    def sales_order(self, order: MappedOrder) -> dict[str, Any]:
        """The ERP sales order; ``UnknownItemError``/``UnknownVatCodeError``/``ValueError``
        when it cannot be made (quarantined by the caller)."""
        if self._vat_codes is None:
            self._vat_codes = self._client.list_vat_codes()
        codes = {
            rate: choose_vat_code(rate, self._vat_codes) for rate in order.vat_rates_to_look_up
        }
        for code in order.item_codes - self._items.keys():
            self._items[code] = self._client.find_item_id(code)
        items = {code: self._items[code] for code in order.item_codes if self._items[code]}
        return to_sales_order(
            order, account_id=self._account(order), item_ids=items, vat_codes=codes
        )

    def _account(self, order: MappedOrder) -> str:
        key = order.customer_email.lower()
        if key not in self._accounts:
            found = self._client.find_accounts(order.customer_email)
            if len(found) > 1:
                raise ValueError(f"{len(found)} ERP accounts have the e-mail of the customer")
            self._accounts[key] = (
                found[0].ID
                if found
                else self._client.create_account(
                    AccountCreate(
                        Name=order.customer_name,
                        Email=order.customer_email,
                        Country=order.customer_country,
                    )
                )
            )
        return self._accounts[key]


def erp_client(erp_url: str) -> ExactClient:
    """A client of the sandbox ERP with its own credentials and an in-memory token chain."""
    return ExactClient(
        base_url=erp_url,
        division=settings.SANDBOX_ERP_DIVISION,
        client_id=settings.SANDBOX_ERP_CLIENT_ID,
        client_secret=settings.SANDBOX_ERP_CLIENT_SECRET,
        refresh_token=settings.SANDBOX_ERP_REFRESH_TOKEN,
        token_store=MemoryTokens(),
    )


def map_row(payload: Any, rules: MappingRules, look_ups: LookUps) -> tuple[Any, ...]:
    """One staged order's (status, country, reason, sales order)."""
    outcome = evaluate_order(payload, rules)
    if isinstance(outcome, Skipped):
        return "skipped", outcome.country, outcome.reason, None
    if isinstance(outcome, Quarantined):
        return "quarantined", None, outcome.reason, None
    try:
        body = look_ups.sales_order(outcome)
    except (UnknownItemError, UnknownVatCodeError, ValueError) as exc:
        return "quarantined", outcome.shipping_country, str(exc), None
    return "mapped", outcome.shipping_country, None, body


def map_staged(con: duckdb.DuckDBPyConnection, erp_url: str) -> dict[str, int]:
    """Each staged order read back, mapped, one INSERT per row; counts per status."""
    rules, counts = route_rules(), {"staged": 0, "mapped": 0, "skipped": 0, "quarantined": 0}
    reader = con.cursor()
    reader.execute(
        "SELECT shop_order_id, order_number, created_at, payload FROM staged_orders "
        "WHERE route_id = ? ORDER BY created_at, shop_order_id",
        [ROUTE_ID],
    )
    with erp_client(erp_url) as client:
        look_ups = LookUps(client)
        while batch := reader.fetchmany(PAGE_SIZE):
            con.execute("BEGIN")
            for shop_id, number, created, text in batch:
                status, country, reason, body = map_row(json.loads(text), rules, look_ups)
                payload = None if body is None else json.dumps(body, default=_decimal)
                digest = None if payload is None else hashlib.sha256(payload.encode()).hexdigest()
                your_ref = None if body is None else str(body.get("YourRef"))
                con.execute(
                    "INSERT INTO erp_orders VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    [ROUTE_ID, shop_id, number, created, status, country, reason, payload,
                     digest, _now(), "naive", your_ref],
                )  # fmt: skip
                counts["staged"] += 1
                counts[status] += 1
            con.execute("COMMIT")
        counts["erp_calls"] = client.calls
    return counts


def _decimal(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The steps asked for, each timed; the contender's line."""
    steps: dict[str, float] = {}
    line: dict[str, Any] = {"contender": "naive"}
    began = time.perf_counter()
    with duckdb.connect(args.db) as con:
        con.execute(TABLES)
        if "fetch" in args.steps:
            line["orders"] = stage(con, args.shop_url, moment(args.start), moment(args.end))
            steps["fetch"] = round(time.perf_counter() - began, 3)
        if "map" in args.steps:
            mapped_from = time.perf_counter()
            line["mapping"] = map_staged(con, args.erp_url)
            line.setdefault("orders", line["mapping"]["staged"])
            steps["map"] = round(time.perf_counter() - mapped_from, 3)
    return {**line, "wall_s": round(time.perf_counter() - began, 3), "steps": steps}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.contenders.naive", description=__doc__)
    parser.add_argument("--shop-url", required=True)
    parser.add_argument("--erp-url", required=True)
    parser.add_argument("--start", required=True, help="first moment, ISO 8601")
    parser.add_argument("--end", required=True, help="end of the range (excluded), ISO 8601")
    parser.add_argument("--db", required=True, help="the DuckDB file of the naive tables")
    parser.add_argument("--steps", default="fetch,map", choices=["fetch,map", "fetch", "map"])
    parser.add_argument("--one-core", action="store_true", help="pin this process to CPU 0")
    args = parser.parse_args(argv)
    if args.one_core:
        pin_to_one_core()
    emit(run(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
