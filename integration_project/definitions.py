"""The one place where the code location is assembled. Nothing imports this module.

Every route is a YAML file under ``defs/`` (an ``OrderRoute`` component); this module loads
them all and adds the shared DuckDB ledger. Loading has no side effects: no network, no files.
Only in sandbox mode (``INTEGRATION_SANDBOX=1``) does a route whose URL variable is unset
point at the local sandbox; otherwise it fails to load, naming the variable.
"""

import warnings
from pathlib import Path

import dagster as dg

from integration_project.components.order_route import load_routes
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
            # Each run in one process: a delivery run (the asset and its four checks) used to
            # start a process per step, about 20-30 s of a 2-core machine every minute.
            executor=dg.in_process_executor,
        ),
    )


@dg.definitions
def defs() -> dg.Definitions:
    """The code location: every route file under ``defs/``, checked as a set, plus what the
    routes share. Dagster calls this when it loads the location, never at import."""
    _quiet_dagsters_own_beta_warning()
    return _with_shared(load_routes(Path(__file__)))


def _quiet_dagsters_own_beta_warning() -> None:
    """Dagster 1.13 warns about its own use of a beta parameter when it loads asset checks
    (not a parameter this project passes); only that message is silenced, in this process."""
    warnings.filterwarnings(
        "ignore",
        message=r"Parameter `execution_type` of function `AssetsDefinition.__init__`",
        category=dg.BetaWarning,
    )
