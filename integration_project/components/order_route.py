"""``OrderRoute``: the Dagster component behind every route file under ``defs/``.

A route file is ``defs/<folder>/defs.yaml`` with ``type: integration_project.components.OrderRoute``
and the route under ``attributes`` (schema: :class:`RouteConfig`). ``dg scaffold defs
integration_project.components.OrderRoute <folder>`` writes a new one. Each route becomes its own
assets (``<route_id>/...``), group, jobs, schedules and resources.
"""

from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import BaseModel

from integration_project.assets import build_route_assets
from integration_project.checks import build_route_checks
from integration_project.resources import route_resources
from integration_project.routes.config import RouteConfig
from integration_project.schedules import build_route_schedules
from integration_project.sensors import build_route_sensors

#: route id → the file that defined it, to name both files when two routes share an id.
_SEEN: dict[str, Path] = {}


class RouteScaffolder(dg.Scaffolder):
    """``dg scaffold defs integration_project.components.OrderRoute <folder>``: a route file
    with a name derived from the folder, ready to edit."""

    def scaffold(self, request: dg.ScaffoldRequest) -> None:
        folder = Path(request.target_path).name
        dg.scaffold_component(
            request,
            {
                "name": folder.replace("_", " ").capitalize(),
                "description": "",
                "filter": {"countries": "EU"},
            },
        )


class RouteConfigError(ValueError):
    """A route file is valid YAML but cannot be run; the message names the file and field."""


@dg.scaffold_with(RouteScaffolder)
class OrderRoute(dg.Component):
    """Shop orders filtered, mapped and delivered to the ERP exactly once (one route)."""

    def __init__(self, route: RouteConfig, path: Path | None = None) -> None:
        self.route = route
        self.path = path

    @classmethod
    def get_model_cls(cls) -> type[BaseModel]:
        return RouteConfig

    @classmethod
    def load(cls, attributes: Any, context: dg.ComponentLoadContext) -> "OrderRoute":
        route = (
            attributes
            if isinstance(attributes, RouteConfig)
            else RouteConfig.model_validate(
                attributes.model_dump() if isinstance(attributes, BaseModel) else attributes
            )
        )
        return cls(route, Path(context.path))

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        where = str(self.path / "defs.yaml") if self.path else "route"
        route = self.route
        other = _SEEN.get(route.id)
        if other is not None and other != self.path:
            raise RouteConfigError(
                f"{where}: name: route id {route.id!r} is already used by {other / 'defs.yaml'}; "
                "give the route a different name"
            )
        _SEEN[route.id] = self.path or Path(".")
        missing = route.missing_env()
        if missing:
            raise RouteConfigError(
                f"{where}: "
                + "; ".join(
                    f"{field}: environment variable {var} is not set" for field, var in missing
                )
            )
        return build_route_definitions(route)


def build_route_definitions(route: RouteConfig) -> dg.Definitions:
    """Everything one route contributes (also used by tests to build routes from Python)."""
    assets = build_route_assets(route)
    schedules = build_route_schedules(assets)
    delivery_job = next(j for j in schedules.jobs if j.name == f"{route.id}__erp_delivery_job")
    return dg.Definitions(
        assets=assets.all,
        asset_checks=build_route_checks(assets),
        jobs=schedules.jobs,
        schedules=schedules.schedules,
        sensors=build_route_sensors(assets, delivery_job),
        resources=route_resources(route),
    )


def forget_routes() -> None:
    """Reset the id registry (definitions are being loaded again in this process)."""
    _SEEN.clear()
