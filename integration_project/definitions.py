"""The one place where the code location is assembled. Nothing imports this module.

Every route is a YAML file under ``defs/`` (an ``OrderRoute`` component); this module loads
them all and adds the shared DuckDB ledger (:mod:`integration_project.location`). Loading has
no side effects: no network, no files. Only in sandbox mode (``INTEGRATION_SANDBOX=1``) does a
route whose URL variable is unset point at the local sandbox; otherwise it fails to load,
naming the variable.
"""

from pathlib import Path

import dagster as dg

from integration_project.location import build_location


@dg.definitions
def defs() -> dg.Definitions:
    """The code location: every route file under ``defs/``, checked as a set, plus what the
    routes share. Dagster calls this when it loads the location, never at import."""
    return build_location(Path(__file__))
