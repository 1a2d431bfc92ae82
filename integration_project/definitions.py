"""The one place where the code location is assembled. Nothing imports this module.

Every route is a YAML file under ``defs/`` (an ``OrderRoute`` component); this module loads
them all and adds the shared DuckDB ledger. Loading has no side effects: no network, no files.
With no environment variable set, every route points at the sandbox.
"""

from pathlib import Path

import dagster as dg

from integration_project.components.order_route import forget_routes
from integration_project.resources import duckdb_resource
from integration_project.sensors import run_failure_alert_sensor

forget_routes()
defs = dg.Definitions.merge(
    dg.load_from_defs_folder(project_root=Path(__file__).resolve().parent.parent),
    dg.Definitions(resources={"duckdb": duckdb_resource()}, sensors=[run_failure_alert_sensor]),
)
