"""Dagster's run tags the tests, the bench and scripts set or look for, spelled out: Dagster
documents them, but exports their names only from its private modules.
"""

#: The run tags of a single-run backfill over a partition range: a run with them materialises
#: the whole range in one run (``dagster asset materialize --partition-range A...B`` and the
#: UI's single-run backfills set them).
PARTITION_RANGE_START_TAG = "dagster/asset_partition_range_start"
PARTITION_RANGE_END_TAG = "dagster/asset_partition_range_end"
#: The tag on every run a backfill launches (its value: the backfill's id).
BACKFILL_TAG = "dagster/backfill"


def range_tags(first_key: str, last_key: str) -> dict[str, str]:
    """Run tags that make one run materialise every window from ``first_key`` to ``last_key``
    (both included)."""
    return {PARTITION_RANGE_START_TAG: first_key, PARTITION_RANGE_END_TAG: last_key}
