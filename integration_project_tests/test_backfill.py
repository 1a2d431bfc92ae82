"""A backfill over two hours (24 five-minute windows) of the default route: ONE run (single-run
backfill policy), every order staged once, and a second backfill stages nothing twice.

``dagster asset materialize --partition-range A...B`` and the UI's single-run backfills tag
the run with the range (``dagster/asset_partition_range_start`` / ``_end``); the same tags on
an in-process materialisation give the same run.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
import pytest

from integration_project.sandbox import Sandbox, SandboxErp
from integration_project_testkit.ledger_reads import mapping_counts
from integration_project_testkit.routes import default_assets
from integration_project_testkit.run_tags import PARTITION_RANGE_START_TAG
from integration_project_testkit.windows import fetch_and_map_range

DEFAULT = default_assets()

pytestmark = pytest.mark.integration

#: 24 windows: [10:00, 12:00) UTC.
RANGE_START = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
RANGE_END = RANGE_START + timedelta(hours=2)
FIRST_KEY, LAST_KEY = "2026-11-20-10:00", "2026-11-20-11:55"


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    """History from an hour before the range (the look-back reads it) to an hour after, ~4 orders
    a minute; the ERP's minute budget is generous so mapping never waits for a reset."""
    erp = SandboxErp(seed=11, minute_limit=10_000, day_limit=100_000)
    with Sandbox(seed=11, erp=erp) as sb:
        sb.shop.add_history(timedelta(hours=4), 4.0, until=RANGE_END + timedelta(hours=1))
        yield sb


def backfill(resources: dict[str, Any], instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    """A single-run backfill of the range: run tags name its first and last window."""
    return fetch_and_map_range(resources, FIRST_KEY, LAST_KEY, DEFAULT, instance=instance)


def metadata(result: dg.ExecuteInProcessResult, asset: str) -> list[dict[str, Any]]:
    return [
        {k: v.value for k, v in e.materialization.metadata.items()}
        for e in result.get_asset_materialization_events()
        if e.asset_key.path[-1] == asset
    ]


def test_two_hour_backfill_is_one_run_and_stages_every_order_once(
    sandbox, resources, ledger, dagster_instance
):
    lookback = DEFAULT.route.lookback
    in_range = sandbox.shop.truth_between(RANGE_START, RANGE_END)
    read = sandbox.shop.truth_between(RANGE_START - lookback, RANGE_END)
    assert len(in_range) >= 24 * 10  # a few per minute in every window
    searches_before = sandbox.shop.calls["search"]
    runs_before = {r.run_id for r in dagster_instance.get_runs()}

    result = backfill(resources, dagster_instance)
    assert result.success
    new_runs = [r for r in dagster_instance.get_runs() if r.run_id not in runs_before]
    assert [r.run_id for r in new_runs] == [result.run_id]  # one run for the whole range
    assert new_runs[0].tags[PARTITION_RANGE_START_TAG] == FIRST_KEY
    partitions = {
        e.partition for e in result.get_asset_materialization_events() if e.partition is not None
    }
    assert len(partitions) == 24
    assert min(partitions) == FIRST_KEY and max(partitions) == LAST_KEY

    # One paging pass over the range (and its look-back), not one per window.
    fetches = metadata(result, "source_orders")
    assert len(fetches) == 24  # one materialisation per window, all from the one fetch
    fetched = fetches[0]
    assert fetched["fetched"] == len(read)
    assert fetched["new"] == len(read)
    assert fetched["window_start"] == RANGE_START.isoformat()
    assert fetched["window_end"] == RANGE_END.isoformat()
    assert sandbox.shop.calls["search"] - searches_before == fetched["pages"]

    # The ledger holds every order of the range once: ground truth == staged == mapped rows.
    assert ledger.staging.count(RANGE_START, RANGE_END) == len(in_range)
    assert ledger.staging.count(RANGE_START - lookback, RANGE_END) == len(read)
    mapping = mapping_counts(ledger, RANGE_START, RANGE_END)
    assert sum(mapping.values()) == len(in_range)
    expected_mapped = sum(1 for t in in_range if t.expected_in_erp)
    assert mapping["mapped"] == expected_mapped

    # The same backfill again: nothing new, nothing twice.
    again = backfill(resources, dagster_instance)
    assert again.success
    refetched = metadata(again, "source_orders")[0]
    assert (refetched["new"], refetched["refetched"]) == (0, len(read))
    assert ledger.staging.count(RANGE_START, RANGE_END) == len(in_range)
    assert ledger.staging.count(RANGE_START - lookback, RANGE_END) == len(read)
    assert mapping_counts(ledger, RANGE_START, RANGE_END) == mapping
