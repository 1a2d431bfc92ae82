"""Materialise a window, or a range of windows in one run, through the route's real assets,
and read back what the runs reported (the metadata and failures the UI shows).

Each helper takes the route's assets as a parameter; without it, the shipped default route's
(:func:`~integration_project_testkit.routes.default_assets`, built on first use).
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

import dagster as dg

from integration_project.assets import RouteAssets
from integration_project.sandbox import Sandbox
from integration_project_testkit.routes import default_assets
from integration_project_testkit.run_tags import range_tags

#: A window the partitions definition knows (the shipped routes start on 2026-11-01).
WINDOW_KEY = "2026-11-20-10:00"
WINDOW_START = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
WINDOW_END = datetime(2026, 11, 20, 10, 5, tzinfo=UTC)


def fetch_and_map(
    resources: dict[str, Any],
    partition_key: str = WINDOW_KEY,
    assets: RouteAssets | None = None,
    **kwargs: Any,
) -> dg.ExecuteInProcessResult:
    """Fetch and map one window (``source_orders`` and ``erp_orders``) in one run; ``kwargs``
    go to :func:`dagster.materialize` (an instance, ``raise_on_error``, tags)."""
    assets = assets or default_assets()
    return dg.materialize(
        [assets.source_orders, assets.erp_orders],
        partition_key=partition_key,
        resources=resources,
        **kwargs,
    )


def fetch_and_map_range(
    resources: dict[str, Any],
    first_key: str,
    last_key: str,
    assets: RouteAssets | None = None,
    **kwargs: Any,
) -> dg.ExecuteInProcessResult:
    """Fetch and map every window from ``first_key`` to ``last_key`` (both included) in ONE
    run, as a single-run backfill does; ``kwargs`` go to :func:`dagster.materialize`."""
    assets = assets or default_assets()
    return dg.materialize(
        [assets.source_orders, assets.erp_orders],
        resources=resources,
        tags=range_tags(first_key, last_key),
        **kwargs,
    )


def deliver(
    resources: dict[str, Any], assets: RouteAssets | None = None, **kwargs: Any
) -> dg.ExecuteInProcessResult:
    """One delivery run (``erp_delivered_orders``); ``kwargs`` go to
    :func:`dagster.materialize`."""
    assets = assets or default_assets()
    return dg.materialize([assets.erp_delivered_orders], resources=resources, **kwargs)


def metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict[str, Any]:
    """The metadata of the run's one materialisation of ``asset`` (its last key part), as
    plain values."""
    [event] = [
        e for e in result.get_asset_materialization_events() if e.asset_key.path[-1] == asset
    ]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def failure_message(result: dg.ExecuteInProcessResult) -> str:
    """The step failure's message and its causes: what the run page shows."""
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    error, parts = failure.step_failure_data.error, []
    while error is not None:
        parts.append(error.message)
        error = error.cause
    return "\n".join(parts)


def erp_refs(sb: Sandbox) -> Counter[str]:
    """How many sales orders the sandbox ERP holds under each ``YourRef``."""
    return Counter(order["YourRef"] for order in sb.erp.sales_orders)
