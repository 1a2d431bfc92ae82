"""A code location of routes: every route file under a project's ``defs/``, checked as a set,
plus what the routes share (the DuckDB ledger, the run-failure alert, the erase job, one
process per run). ``definitions.py`` builds this project's; the many-routes benchmark builds
one of a thousand generated route files the same way."""

import warnings
from pathlib import Path

import dagster as dg

from integration_project.components.order_route import load_routes
from integration_project.privacy import erase_customer_job
from integration_project.resources import duckdb_resource
from integration_project.sensors import build_run_failure_alert_sensor, route_secret_env_names


def build_location(path_within_project: Path) -> dg.Definitions:
    """The definitions of the project that holds ``path_within_project``: its routes and
    what they share. Reads the route files; no network, nothing written."""
    _quiet_dagsters_own_beta_warning()
    return with_shared(load_routes(path_within_project))


def with_shared(routes: dg.Definitions) -> dg.Definitions:
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


def _quiet_dagsters_own_beta_warning() -> None:
    """Dagster 1.13 warns about its own use of a beta parameter when it loads asset checks
    (not a parameter this project passes); only that message is silenced, in this process."""
    warnings.filterwarnings(
        "ignore",
        message=r"Parameter `execution_type` of function `AssetsDefinition.__init__`",
        category=dg.BetaWarning,
    )
