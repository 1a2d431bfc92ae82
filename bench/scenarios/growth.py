"""Growth: what a delivery tick costs as the ledger grows forever.

    python -m bench.scenarios.growth --rows 10000,1000000,10000000

One ledger file in ``ctx.tmp`` is grown to each size in turn (smallest first): ``N`` rows each
in ``staged_orders``, ``erp_orders`` and ``delivered_orders`` for the shipped default route,
all delivered, written by bulk SQL (``INSERT ... SELECT ... FROM range(N)``) with small
Shopware- and Exact-shaped payloads, in chronological order as a long-lived ledger holds them.
Then 50 orders for a real account and item of the sandbox ERP are recorded as mapped through
the ledger's own store (``Ledger.mapped.record``, which keeps ``waiting_orders``), and measured:

* the delivery tick's pending query, ``Ledger.deliveries.pending(limit, countries)`` exactly
  as ``delivery.py`` calls it (on a connection of its own: opening the file is most of it),
  the same on one open connection (the query alone), and ``waiting(countries)`` (the sensor's
  and the run report's count), each the median of several calls (ms);
* a whole delivery tick with those 50 pending: one run of ``<route>/erp_delivered_orders``
  through :func:`integration_project_testkit.windows.deliver`, against the ERP at
  ``ctx.erp_url`` (s).

The bulk rows are written through a connection of their own with a larger memory limit than
the ledger's (:data:`BUILD_MEMORY`): building a ten-million-row primary key at once does not
fit the ledger's buffer pool. Everything measured goes through the ledger's own connections.
Building ten million rows takes minutes (7 on 2 busy cores): it is setup, reported apart.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

from bench.figures import Context, Figure
from integration_project.exact.models import AccountCreate
from integration_project.ledger import Ledger, MappingRow
from integration_project.resources import erp_client
from integration_project.settings import SANDBOX_MODE_ENV, SHIPPING_ITEM_CODE
from integration_project_testkit.resources import resources_ledger, sandbox_resources
from integration_project_testkit.routes import default_assets, shipped_route
from integration_project_testkit.windows import deliver, metadata

log = logging.getLogger("bench.growth")
SCENARIO = "growth"
DEFAULT_ROWS = (10_000, 1_000_000, 10_000_000)
#: Mapped orders that wait at each size: what the tick delivers.
PENDING = 50
#: Calls of each query (fewer when one call takes long).
REPEATS = 7
MAX_QUERY_S = 20.0
#: The bulk connection's memory limit (the ledger's own connections keep theirs).
BUILD_MEMORY = "4GB"
#: Rows per bulk statement.
CHUNK = 1_000_000
#: Seconds between two bulk orders' createdAt: ten million orders span about a year.
SPACING_S = 3
#: The newest bulk order is this old when the first size is built.
NEWEST_AGE = timedelta(days=1)

_KEY = "md5('growth-' || i::VARCHAR)"
_NUMBER = "(1000000 + i)::VARCHAR"
_CREATED = f"(CAST(? AS TIMESTAMPTZ) + to_seconds(i * {SPACING_S}))"
_STAGED = f"""
INSERT INTO staged_orders
    (route_id, shop_order_id, order_number, created_at, payload, fetched_at, run_id, shop_host)
SELECT ?, {_KEY}, {_NUMBER}, {_CREATED},
    json_object('id', {_KEY}, 'orderNumber', {_NUMBER}, 'amountTotal', 59.9,
        'currency', json_object('isoCode', 'EUR'),
        'stateMachineState', json_object('technicalName', 'open'),
        'orderCustomer', json_object('email', 'customer' || (i % 5000) || '@example.com',
            'firstName', 'Kim', 'lastName', 'Muster' || (i % 5000)),
        'billingAddress', json_object('street', 'Hauptstr. ' || (i % 200),
            'zipcode', '10115', 'city', 'Berlin', 'country', json_object('iso', 'DE')),
        'lineItems', json_array(json_object('label', 'Item ' || (i % 300), 'quantity', 1,
            'unitPrice', 49.9, 'payload', json_object('productNumber', 'SW' || (i % 300))))),
    {_CREATED}, 'growth-bulk', 'shop.example:443'
FROM range(?, ?) r(i)
"""
_MAPPED = f"""
INSERT INTO erp_orders
    (route_id, shop_order_id, order_number, created_at, status, country, reason, payload,
     payload_hash, mapped_at, run_id, your_ref)
SELECT ?, {_KEY}, {_NUMBER}, {_CREATED}, 'mapped', 'DE', NULL,
    json_object('OrderedBy', md5('account-' || (i % 5000)::VARCHAR), 'YourRef', {_NUMBER},
        'Description', 'Shopware order ' || {_NUMBER}, 'Currency', 'EUR',
        'SalesOrderLines', json_array(json_object('Item', md5('item-' || (i % 300)::VARCHAR),
            'Quantity', 1, 'NetPrice', 41.93))),
    substr(md5('hash-' || i::VARCHAR), 1, 16), {_CREATED}, 'growth-bulk', {_NUMBER}
FROM range(?, ?) r(i)
"""
_DELIVERED = f"""
INSERT INTO delivered_orders
    (route_id, shop_order_id, order_number, erp_order_id, erp_order_number, status, attempts,
     last_error, run_id, payload_hash, claimed_at, delivered_at, updated_at, your_ref,
     erp_host, erp_division)
SELECT ?, {_KEY}, {_NUMBER}, md5('erp-' || i::VARCHAR), i + 1, 'delivered', 1, NULL,
    'growth-bulk', substr(md5('hash-' || i::VARCHAR), 1, 16), {_CREATED}, {_CREATED},
    {_CREATED}, {_NUMBER}, ?, ?
FROM range(?, ?) r(i)
"""


def run(ctx: Context) -> list[Figure]:
    """Grow one ledger through ``ctx.sizes["growth_rows"]`` and measure at each size."""
    sizes = sorted(int(n) for n in ctx.sizes.get("growth_rows") or DEFAULT_ROWS)
    path = ctx.tmp / "growth.duckdb"
    resources = sandbox_resources(ctx.shop_url, ctx.erp_url, str(path))
    route = shipped_route()  # read once: the route file may change while the bench runs
    ledger = resources_ledger(resources, route.id)
    erp = resources["erp"]
    ledger.endpoints.bind_erp(erp.api_url, erp.division)
    account, item = _erp_refs(resources, ledger)
    allowed = route.rules().allowed_countries
    base = datetime.now(UTC) - NEWEST_AGE - timedelta(seconds=SPACING_S * sizes[-1])
    figures: list[Figure] = []
    built = 0
    for rows in sizes:
        took = _grow(path, ledger, base, built, rows)
        built = rows
        measured = _measure(ledger, resources, rows, took, (account, item), allowed)
        for figure in measured:
            log.info("%s: %s %s (%s)", figure.metric, figure.value, figure.unit, figure.note)
        figures += measured
    return figures


def _erp_refs(resources: dict[str, Any], ledger: Ledger) -> tuple[str, str]:
    """A customer account and an item of the sandbox ERP for the pending orders' payloads."""
    with erp_client(resources["erp"], ledger, holder="bench-growth") as client:
        account = client.create_account(
            AccountCreate(Name="Growth Bench GmbH", Email="growth@example.com", Country="DE")
        )
        item = client.find_item_id(SHIPPING_ITEM_CODE)
    if item is None:
        raise RuntimeError(
            f"the sandbox ERP at {resources['erp'].api_url} has no item {SHIPPING_ITEM_CODE}"
        )
    return account, item


def _grow(path: Path, ledger: Ledger, base: datetime, start: int, end: int) -> float:
    """Bulk rows ``[start, end)`` in the three tables; seconds it took."""
    with ledger.db.connect():
        pass  # the schema, by the ledger's own migrations
    erp_host, division = ledger.endpoints.erp or ("", "")
    began = time.perf_counter()
    with duckdb.connect(str(path)) as con:
        con.execute(f"SET memory_limit = '{BUILD_MEMORY}'")
        for first in range(start, end, CHUNK):
            last = min(end, first + CHUNK)
            route, span = ledger.route_id, [first, last]
            con.execute(_STAGED, [route, base, base, *span])
            con.execute(_MAPPED, [route, base, base, *span])
            con.execute(_DELIVERED, [route, base, base, base, erp_host, division, *span])
        con.execute("CHECKPOINT")
    return time.perf_counter() - began


def _pending_rows(ledger: Ledger, rows: int, refs: tuple[str, str]) -> None:
    """Map :data:`PENDING` new orders the route's way: they wait for the next tick."""
    account, item = refs
    now = datetime.now(UTC)
    mapped = []
    for n in range(PENDING):
        ref = f"G{rows}-{n}"
        payload = {
            "OrderedBy": account,
            "YourRef": ref,
            "Description": f"Growth bench order {ref}",
            "SalesOrderLines": [{"Item": item, "Quantity": 1, "NetPrice": 4.95}],
        }
        created = now - timedelta(seconds=PENDING - n)
        mapped.append(MappingRow(uuid.uuid4().hex, ref, created, "mapped", "DE", None, payload))
    ledger.mapped.record(mapped, run_id=f"growth-{rows}")


def _median_ms(call: Any) -> tuple[float, int]:
    """Median wall milliseconds of ``call()`` over up to :data:`REPEATS` calls, and the
    number of calls (fewer when they are slow)."""
    took: list[float] = []
    began = time.perf_counter()
    while len(took) < REPEATS and (not took or time.perf_counter() - began < MAX_QUERY_S):
        start = time.perf_counter()
        call()
        took.append((time.perf_counter() - start) * 1000)
    return statistics.median(took), len(took)


def _queries(ledger: Ledger, allowed: frozenset[str]) -> dict[str, tuple[float, int]]:
    """Median ms (and calls) of the tick's queries: each on a connection of its own, as
    ``delivery.py`` and the sensor call them (opening the file is most of it), and the
    pending query again on one open connection (the query alone)."""
    deliveries = ledger.deliveries
    timed = {
        "pending query": _median_ms(lambda: deliveries.pending(limit=500, countries=allowed)),
        "waiting count": _median_ms(lambda: deliveries.waiting(allowed)),
    }
    with ledger.db.connect() as con:
        one = Ledger(lambda: contextlib.nullcontext(con), ledger.route_id).deliveries
        timed["pending query, open connection"] = _median_ms(
            lambda: one.pending(limit=500, countries=allowed)
        )
    return timed


def _measure(
    ledger: Ledger,
    resources: dict[str, Any],
    rows: int,
    built_s: float,
    refs: tuple[str, str],
    allowed: frozenset[str],
) -> list[Figure]:
    """The tick's queries and one whole tick at this size."""
    _pending_rows(ledger, rows, refs)
    found = ledger.deliveries.pending(limit=500, countries=allowed)
    if len(found) != PENDING:
        raise RuntimeError(f"growth @ {rows:,}: {len(found)} orders pending, expected {PENDING}")
    at = f"@ {rows:,} rows"
    figures = [
        Figure(SCENARIO, "ours", f"{name} {at}", round(ms, 2), "ms", f"median of {n}")
        for name, (ms, n) in _queries(ledger, allowed).items()
    ]
    began = time.perf_counter()
    result = deliver(resources, default_assets(), raise_on_error=False)
    tick_s = time.perf_counter() - began
    sent = metadata(result, "erp_delivered_orders").get("sent") if result.success else None
    if sent != PENDING:
        raise RuntimeError(f"growth @ {rows:,}: the tick sent {sent}, expected {PENDING}")
    tick = f"delivery tick, {PENDING} pending {at}"
    return [
        *figures,
        Figure(SCENARIO, "ours", tick, round(tick_s, 2), "s", "one erp_delivered_orders run"),
        Figure(SCENARIO, "bench", f"bulk build to {at}", round(built_s, 1), "s", "setup"),
    ]


def main(argv: list[str] | None = None) -> int:
    """Run the scenario alone, against a sandbox process of its own."""
    from bench.sandbox_process import SandboxProcess, bench_start

    parser = argparse.ArgumentParser(prog="python -m bench.scenarios.growth")
    parser.add_argument(
        "--rows",
        default=",".join(str(n) for n in DEFAULT_ROWS),
        help="ledger sizes, comma-separated (default %(default)s)",
    )
    parser.add_argument(
        "--keep", default=None, help="build the ledger in this folder and keep it afterwards"
    )
    args = parser.parse_args(argv)
    os.environ[SANDBOX_MODE_ENV] = "1"
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    with (
        tempfile.TemporaryDirectory() as scratch,
        SandboxProcess(100, bench_start(1), 1) as ready,
    ):
        tmp = args.keep or scratch
        ctx = Context(
            ready["shop_url"],
            ready["erp_url"],
            Path(tmp),
            {"growth_rows": [int(n) for n in args.rows.split(",")]},
            ready,
        )
        for figure in run(ctx):
            line = f"{figure.metric:45} {figure.value:>12,.2f} {figure.unit:3} {figure.note}"
            sys.stdout.write(line + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
