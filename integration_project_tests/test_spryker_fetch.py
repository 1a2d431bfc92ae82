"""Spryker as a source of the route's real fetch step (``fetch_window``) over real HTTP to the
Spryker sandbox and a real ledger (both backends): consecutive windows stage every order once,
late ones included, whatever the id order says about creation times, and an order that
cannot be read is staged for the mapping to quarantine, not dropped."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from integration_project.connectors.spryker_source import SKEW, SprykerSource
from integration_project.fetching import Window, fetch_window
from integration_project.ledger import Ledger
from integration_project.resources import open_ledger
from integration_project.sandbox.server import Sandbox
from integration_project.sandbox.spryker import SandboxSpryker
from integration_project.spryker.client import SprykerClient
from integration_project_testkit.resources import ledger_resource

pytestmark = pytest.mark.integration

S1 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
WINDOW = timedelta(minutes=5)
#: Ten hours of history before the first window: a walk from id 1 would read all of it.
HISTORY = 2400
LOG = logging.getLogger(__name__)


@pytest.fixture
def duckdb_path(ledger_location: str) -> str:
    return ledger_location


@pytest.fixture
def backend() -> SandboxSpryker:
    app = SandboxSpryker(seed=11)
    history = [S1 - timedelta(seconds=15) * n for n in range(HISTORY, 0, -1)]
    # Stored among orders created five minutes before the first window, but created in it:
    # its process's clock ran ahead (within SKEW).
    history.insert(HISTORY - 20, S1 + timedelta(minutes=1))
    app.add_orders(history)
    app.add_orders(S1 + timedelta(seconds=14) * n for n in range(20))  # the first window
    return app


@pytest.fixture
def server(backend: SandboxSpryker) -> Iterator[Sandbox]:
    with Sandbox(spryker=backend) as running:
        yield running


@pytest.fixture
def ledger(duckdb_path: str) -> Ledger:
    return open_ledger(ledger_resource(duckdb_path), "spryker_orders")


def fetch(ledger: Ledger, server: Sandbox, start: datetime) -> tuple[int, SprykerSource]:
    """The fetch step for the window at ``start`` (no look-back: late orders come by the
    cursor): how many orders it called late, and the source it used."""
    app = server.spryker
    source = SprykerSource(
        SprykerClient(server.spryker_url, app.username, app.password, max_retries=0, page_size=50)
    )
    report = fetch_window(
        ledger,
        lambda: source,
        Window(start, start + WINDOW, timedelta(0)),
        page_size=50,
        run_id=f"run-{start:%H%M}",
        log=LOG,
    )
    return report.late, source


def staged_ids(ledger: Ledger, start: datetime, end: datetime) -> list[str]:
    with ledger.db.connect() as con:
        rows = con.execute(
            "SELECT shop_order_id FROM staged_orders WHERE route_id = ? "
            "AND created_at >= ? AND created_at < ? ORDER BY shop_order_id",
            [ledger.route_id, start, end],
        ).fetchall()
    return [str(r[0]) for r in rows]


def ids_between(app: SandboxSpryker, start: datetime, end: datetime) -> list[str]:
    found = []
    for key, order in app.orders.items():
        created = datetime.fromisoformat(order["created_at"]).replace(tzinfo=UTC)
        if start <= created < end:
            found.append(str(key))
    return sorted(found)


def test_consecutive_windows_stage_every_order_once_late_and_skewed_ones_too(
    backend: SandboxSpryker, server: Sandbox, ledger: Ledger
) -> None:
    S2 = S1 + WINDOW
    late, source = fetch(ledger, server, S1)
    assert staged_ids(ledger, S1, S2) == ids_between(backend, S1, S2)
    assert len(staged_ids(ledger, S1, S2)) == 21 and late == 0
    # Nothing of the ten hours before was staged, and finding where to begin took a few
    # light probes, not a walk over every order.
    assert staged_ids(ledger, S1 - timedelta(days=1), S1) == []
    assert source.probes < 40, source.probes

    # Since then: three orders of the first window show up late, the second window's orders
    # come, and one of them carries a creation time a few minutes before orders stored ahead
    # of it (its process's clock ran behind).
    backend.add_orders(S1 + timedelta(minutes=4, seconds=n) for n in range(3))
    backend.add_orders(S2 + timedelta(seconds=13) * n for n in range(15))
    backend.add_orders([S2 + timedelta(minutes=1) - SKEW / 2])  # created before S2
    late, _ = fetch(ledger, server, S2)

    assert staged_ids(ledger, S1, S2) == ids_between(backend, S1, S2)
    assert len(staged_ids(ledger, S1, S2)) == 25 and late == 4
    assert staged_ids(ledger, S2, S2 + WINDOW) == ids_between(backend, S2, S2 + WINDOW)
    assert len(staged_ids(ledger, S2, S2 + WINDOW)) == 15
    with ledger.db.connect() as con:
        twice = con.execute(
            "SELECT count(*) - count(DISTINCT shop_order_id) FROM staged_orders"
        ).fetchall()[0][0]
    assert twice == 0


def test_an_order_without_a_usable_date_is_staged_as_a_stand_in_not_dropped(
    backend: SandboxSpryker, server: Sandbox, ledger: Ledger
) -> None:
    (broken,) = backend.add_orders([S1 + timedelta(minutes=2)])
    backend.orders[broken]["created_at"] = "yesterday at noon"
    fetch(ledger, server, S1)
    with ledger.db.connect() as con:
        rows = con.execute(
            "SELECT payload FROM staged_orders WHERE route_id = ? AND shop_order_id = ?",
            [ledger.route_id, str(broken)],
        ).fetchall()
    assert rows, "the undated order was dropped"
    assert "created_at" in rows[0][0]  # the stand-in says why it cannot be read
