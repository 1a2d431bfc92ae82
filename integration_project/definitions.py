"""The one place where the code location is assembled. Nothing imports this module.

Every route is a YAML file under ``defs/`` (an ``OrderRoute`` component); this module loads
them all and adds the shared DuckDB ledger. Loading has no side effects: no network, no files.
Only in sandbox mode (``INTEGRATION_SANDBOX=1``) does a route whose URL variable is unset
point at the local sandbox; otherwise it fails to load, naming the variable.
"""

from pathlib import Path

import dagster as dg

from integration_project.components.order_route import forget_routes
from integration_project.privacy import erase_customer_job
from integration_project.resources import duckdb_resource
from integration_project.sensors import build_run_failure_alert_sensor, route_secret_env_names


def _with_shared(routes: dg.Definitions) -> dg.Definitions:
    """The routes plus the ledger and the run-failure alert, which redacts every credential
    variable a route file names, whatever its name (one Definitions object at module scope)."""
    alert_sensor = build_run_failure_alert_sensor(route_secret_env_names(routes))
    return dg.Definitions.merge(
        routes,
        dg.Definitions(
            resources={"duckdb": duckdb_resource()},
            sensors=[alert_sensor],
            jobs=[erase_customer_job],  # location-wide (README, "Personal data")
        ),
    )


forget_routes()
defs = _with_shared(dg.load_from_defs_folder(project_root=Path(__file__).resolve().parent.parent))
