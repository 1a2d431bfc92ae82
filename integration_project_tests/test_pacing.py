"""Pacing at Exact's real limit shape, 60 calls a minute, counted from the ERP's own record of
each minute (calls admitted, calls refused with 429). Time is a :class:`ManualClock` shared by
the sandbox ERP and the client, moved only by the client's waits for the reset: nothing here
depends on how fast the machine is.

A client alone on the division uses every call of every minute and never earns a 429; two
clients sharing one notice each other in the headers, keep calls in reserve, and never earn
a 429 either.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from integration_project.exact.client import ExactClient
from integration_project.sandbox import Sandbox, SandboxErp
from integration_project.sandbox.common import ManualClock
from integration_project.settings import SHIPPING_ITEM_CODE
from integration_project_testkit.token_stores import SharedTokens

pytestmark = pytest.mark.integration

PER_MINUTE = 60


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime(2026, 11, 20, 10, 0, tzinfo=UTC))


@pytest.fixture
def paced(clock: ManualClock) -> Iterator[Sandbox]:
    erp = SandboxErp(seed=3, clock=clock, minute_limit=PER_MINUTE, day_limit=100_000)
    with Sandbox(seed=3, clock=clock, erp=erp) as sb:
        yield sb


def _client(sb: Sandbox, clock: ManualClock, tokens: SharedTokens) -> ExactClient:
    """A client on the sandbox's clock: its waits for the reset move that clock."""
    return ExactClient(
        base_url=sb.erp_url,
        division=sb.erp.division,
        client_id=sb.erp.client_id,
        client_secret=sb.erp.client_secret,
        refresh_token=sb.erp.refresh_token,
        token_store=tokens,
        max_retries=0,
        clock=lambda: clock().timestamp(),
        sleep=lambda seconds: clock.advance(seconds),
    )


def test_a_client_alone_uses_every_call_of_every_minute_without_a_429(paced, clock):
    with _client(paced, clock, SharedTokens()) as client:
        for _ in range(3 * PER_MINUTE + 20):
            client.find_item_id(SHIPPING_ITEM_CODE)
    windows = paced.erp.limits.windows
    assert [admitted for _, admitted, _ in windows] == [PER_MINUTE] * 3 + [20]
    assert [refused for _, _, refused in windows] == [0] * 4
    assert paced.erp.statuses[429] == 0
    # Each minute starts when the last one ran out: none is lost between them.
    starts = [start for start, _, _ in windows]
    assert all(b - a < 61 for a, b in itertools.pairwise(starts))


def test_two_clients_sharing_the_division_keep_a_reserve_and_never_earn_a_429(paced, clock):
    tokens = SharedTokens()
    with _client(paced, clock, tokens) as first, _client(paced, clock, tokens) as second:
        for _ in range(2 * PER_MINUTE):  # they take turns: each sees the other in the count
            first.find_item_id(SHIPPING_ITEM_CODE)
            second.find_item_id(SHIPPING_ITEM_CODE)
        assert first._budget.shared and second._budget.shared
    windows = paced.erp.limits.windows
    assert paced.erp.statuses[429] == 0
    assert sum(admitted for _, admitted, _ in windows) == 4 * PER_MINUTE
    assert all(admitted <= PER_MINUTE and refused == 0 for _, admitted, refused in windows)
