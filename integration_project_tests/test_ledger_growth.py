"""A delivery tick reads what waits from ``waiting_orders``, never every order the ledger ever
held, and answers exactly what the full join of ``erp_orders`` and ``delivered_orders`` answers:
whatever mappings, claims and outcomes came before, ``waiting_orders`` mirrors both tables; an
existing ledger gets its waiting orders from the migration; a row written around the stores is
read back, and an order the ledger holds as delivered is never claimed again."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest
from dagster_duckdb import DuckDBResource

from integration_project.ledger import Ledger, MappingRow, Outcome

ROUTE = "route"
T0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
ALLOWED = frozenset({"DE", "NL"})

#: What waits, computed the way the ledger did before waiting_orders: the full join.
EXPECTED = """
SELECT coalesce(e.shop_order_id, d.shop_order_id), e.order_number, e.created_at, e.status,
       e.country, CAST(e.payload AS VARCHAR), e.payload_hash, e.your_ref, e.mapped_at,
       d.status, d.order_number, d.your_ref, d.run_id, d.attempts, d.payload_hash, d.claimed_at
FROM erp_orders e FULL JOIN delivered_orders d
    ON d.route_id = e.route_id AND d.shop_order_id = e.shop_order_id
WHERE coalesce(e.route_id, d.route_id) = ?
  AND ((e.status = 'mapped' AND d.shop_order_id IS NULL)
       OR d.status IN ('pending', 'sending', 'failed'))
ORDER BY 1
"""
MIRRORED = """
SELECT shop_order_id, order_number, created_at, status, country, CAST(payload AS VARCHAR),
       payload_hash, your_ref, mapped_at, d_status, d_order_number, d_your_ref, d_run_id,
       d_attempts, d_payload_hash, d_claimed_at
FROM waiting_orders WHERE route_id = ? ORDER BY 1
"""
#: The pending orders as the full join gave them (``delivery.py``'s query before).
PENDING_BEFORE = """
SELECT e.shop_order_id FROM erp_orders e
LEFT JOIN delivered_orders d USING (route_id, shop_order_id)
WHERE e.route_id = ? AND e.status = 'mapped' AND list_contains(?, e.country)
  AND (d.shop_order_id IS NULL OR d.status = 'pending'
       OR (d.status = 'failed' AND d.payload_hash IS DISTINCT FROM e.payload_hash))
ORDER BY e.created_at, e.shop_order_id
"""


def _ledger(path: Path) -> Ledger:
    ledger = Ledger(DuckDBResource(database=str(path)).get_connection, ROUTE)
    ledger.endpoints.bind_erp("http://erp.example:8080", "1")
    return ledger


def _row(n: int, status: str = "mapped", variant: int = 0, country: str = "DE") -> MappingRow:
    payload = None
    if status == "mapped":
        payload = {"OrderedBy": "acc", "YourRef": f"R{n}", "SalesOrderLines": [{"Q": variant}]}
    return MappingRow(
        f"s{n:03d}", f"{10000 + n}", T0 + timedelta(minutes=n), status, country, None, payload
    )


def _assert_mirrors(ledger: Ledger) -> None:
    """waiting_orders holds exactly the orders that wait, with their rows' values, and the
    tick's queries answer what the full join answers."""
    with ledger.db.connect() as con:
        expected = con.execute(EXPECTED, [ROUTE]).fetchall()
        mirrored = con.execute(MIRRORED, [ROUTE]).fetchall()
        before = [r[0] for r in con.execute(PENDING_BEFORE, [ROUTE, sorted(ALLOWED)]).fetchall()]
    assert mirrored == expected
    pending = ledger.deliveries.pending(countries=ALLOWED)
    assert [p.shop_order_id for p in pending] == before
    sending = {r[0] for r in expected if r[9] == "sending"}
    assert {f.shop_order_id for f in ledger.deliveries.in_flight()} == sending
    waiting = ledger.deliveries.waiting(ALLOWED)[0]
    assert waiting == len(before) + len(
        {r[0] for r in expected if r[9] == "sending" and r[3] == "mapped" and r[4] in ALLOWED}
    )


def _step(ledger: Ledger, rng: random.Random, step: int) -> None:
    """One thing that happens to a ledger: a mapping, claims, outcomes, a requeue, a conflict."""
    deliveries = ledger.deliveries
    kind = rng.choice(["map", "map", "claim", "claim", "outcome", "release", "requeue", "conflict"])
    if kind == "map":
        rows = [
            _row(
                n,
                rng.choice(["mapped"] * 4 + ["skipped", "quarantined"]),
                rng.randrange(3),
                rng.choice(["DE", "NL", "US"]),
            )
            for n in rng.sample(range(30), 6)
        ]
        ledger.mapped.record(rows, run_id=f"map-{step}")
    elif kind == "claim":
        deliveries.record_outcomes([], f"run-{step}", claim=deliveries.pending(3, ALLOWED))
    elif kind == "outcome" and (flying := deliveries.in_flight()):
        order = rng.choice(flying)
        status = rng.choice(["delivered", "failed", "pending", "sending"])
        run_id = order.run_id if rng.random() < 0.9 else "another-run"
        outcome = Outcome(order.shop_order_id, status, "why", "erp-id", 7)
        deliveries.record_outcomes([outcome], run_id or "", claim=[])
    elif kind == "release" and (flying := deliveries.in_flight()):
        deliveries.release_claim(rng.choice(flying).shop_order_id, "429")
    elif kind == "conflict" and (flying := deliveries.in_flight()):
        deliveries.mark_conflict(
            rng.choice(flying).shop_order_id, "another order", erp_order_id="x"
        )
    elif kind == "requeue":
        deliveries.requeue_failed(None if rng.random() < 0.5 else ["10003", "R5"])


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_waiting_orders_mirrors_the_ledger_whatever_happens(tmp_path: Path, seed: int) -> None:
    ledger = _ledger(tmp_path / "ledger.duckdb")
    rng = random.Random(seed)
    for step in range(60):
        _step(ledger, rng, step)
        _assert_mirrors(ledger)


def test_a_failed_order_waits_again_only_once_its_mapping_changes(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path / "ledger.duckdb")
    ledger.mapped.record([_row(1), _row(2, "skipped")], run_id="m1")
    [order] = ledger.deliveries.pending()
    ledger.deliveries.record_outcomes([], "run-1", claim=[order])
    ledger.deliveries.record_outcomes(
        [Outcome(order.shop_order_id, "failed", "no")], "run-1", claim=[]
    )
    ledger.mapped.record([_row(1), _row(2, "skipped")], run_id="m2")  # the same mapping
    assert ledger.deliveries.pending() == []
    ledger.mapped.record([_row(1, variant=1), _row(2)], run_id="m3")  # fixed; 2 is now mapped
    assert [p.shop_order_id for p in ledger.deliveries.pending()] == ["s001", "s002"]
    _assert_mirrors(ledger)


def test_a_delivered_order_mapped_again_does_not_wait(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path / "ledger.duckdb")
    ledger.mapped.record([_row(1)], run_id="m1")
    [order] = ledger.deliveries.pending()
    ledger.deliveries.record_outcomes([], "run-1", claim=[order])
    ledger.deliveries.mark_delivered(
        order.shop_order_id, erp_order_id="e1", erp_order_number=1, run_id="run-1"
    )
    ledger.mapped.record([_row(1, "skipped")], run_id="m2")
    ledger.mapped.record([_row(1, variant=2)], run_id="m3")
    assert ledger.deliveries.pending() == []
    assert ledger.deliveries.waiting() == (0, None)
    _assert_mirrors(ledger)


def _rewind_to_before_waiting_orders(path: Path) -> None:
    """The file as the version before waiting_orders left it."""
    with duckdb.connect(str(path)) as con:
        con.execute("DROP TABLE waiting_orders")
        con.execute("DELETE FROM schema_migrations WHERE version >= 3")


def test_an_existing_ledger_gets_its_waiting_orders_from_the_migration(tmp_path: Path) -> None:
    path = tmp_path / "ledger.duckdb"
    ledger = _ledger(path)
    rng = random.Random(7)
    for step in range(40):
        _step(ledger, rng, step)
    with ledger.db.connect() as con:
        before = con.execute(EXPECTED, [ROUTE]).fetchall()
    assert before  # something waits in every state
    _rewind_to_before_waiting_orders(path)
    reopened = _ledger(path)
    _assert_mirrors(reopened)
    with reopened.db.connect() as con:
        assert con.execute(MIRRORED, [ROUTE]).fetchall() == before


def _write_around(path: Path, sql: str, params: list[Any]) -> None:
    with duckdb.connect(str(path)) as con:
        con.execute(sql, params)


def test_an_order_delivered_behind_the_stores_back_is_not_claimed_again(tmp_path: Path) -> None:
    path = tmp_path / "ledger.duckdb"
    ledger = _ledger(path)
    ledger.mapped.record([_row(1), _row(2)], run_id="m1")
    first, second = ledger.deliveries.pending()
    ledger.deliveries.record_outcomes([], "run-1", claim=[first])
    ledger.deliveries.mark_delivered(
        first.shop_order_id, erp_order_id="e1", erp_order_number=1, run_id="run-1"
    )
    # waiting_orders says order 1 was never claimed: as if written by hand, or by a bug.
    _write_around(
        path,
        "INSERT INTO waiting_orders (route_id, shop_order_id, status, country, "
        "payload, payload_hash, your_ref, order_number, created_at, mapped_at) "
        "SELECT route_id, shop_order_id, status, country, payload, payload_hash, "
        "your_ref, order_number, created_at, mapped_at FROM erp_orders "
        "WHERE shop_order_id = ?",
        [first.shop_order_id],
    )
    refused = ledger.deliveries.record_outcomes([], "run-2", claim=[first, second])
    assert set(refused) == {first.shop_order_id}  # the caller does not send it
    with ledger.db.connect() as con:
        statuses = dict(
            con.execute("SELECT shop_order_id, status FROM delivered_orders").fetchall()
        )
    assert statuses == {first.shop_order_id: "delivered", second.shop_order_id: "sending"}
    _assert_mirrors(ledger)


def test_an_outcome_is_recorded_when_claimed_at_was_changed_behind_its_back(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ledger.duckdb"
    ledger = _ledger(path)
    ledger.mapped.record([_row(1)], run_id="m1")
    [order] = ledger.deliveries.pending()
    ledger.deliveries.record_outcomes([], "run-1", claim=[order])
    _write_around(path, "UPDATE delivered_orders SET claimed_at = ?", [T0])
    ledger.deliveries.mark_delivered(
        order.shop_order_id, erp_order_id="e1", erp_order_number=1, run_id="run-1"
    )
    assert ledger.views.delivery_counts() == {"delivered": 1}
    _assert_mirrors(ledger)
