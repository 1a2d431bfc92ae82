"""Skips in CI: a test that turns itself off must not leave CI green.

In CI (``CI`` set to ``true``/``1``/``yes``, as ``.ci/run`` and most CI services set it) every
skipped test fails the session unless it is on :data:`ALLOWED_SKIPS`, with a comment saying
why it may skip there. Outside CI a test may skip, but only for a reason that is the
machine's (a port in use, an executable missing), and it says which.
"""

from __future__ import annotations

import os

#: Test node ids (``file::name``, parameters included) that may skip in CI, each with why.
#: Empty: nothing in this suite has a reason to skip on CI's machine.
ALLOWED_SKIPS: dict[str, str] = {}


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def unexpected(skipped: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The (node id, reason) pairs that are not allowed to skip in CI."""
    return [(nodeid, why) for nodeid, why in skipped if nodeid not in ALLOWED_SKIPS]
