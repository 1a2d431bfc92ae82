"""``OrderRoute``: the Dagster component behind every route file under ``defs/``.

A route file is ``defs/<folder>/defs.yaml`` with ``type: integration_project.components.OrderRoute``
and the route under ``attributes`` (schema: :class:`RouteConfig`). ``dg scaffold defs
integration_project.components.OrderRoute <folder>`` writes a new one. Each route becomes its own
assets (``<route_id>/...``), group, jobs, schedules and resources.

A route that cannot run fails to load, naming its file: variables unset outside sandbox mode,
a URL that is not https (or loopback), an id used twice, or a ``YourRef`` template that can
give the same value as another route's on the same ERP division.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import dagster as dg
from pydantic import BaseModel

from integration_project import settings
from integration_project.assets import build_route_assets
from integration_project.checks import build_route_checks
from integration_project.ledger import endpoint_host
from integration_project.privacy import build_route_retention
from integration_project.resources import route_resources, sandbox_url
from integration_project.routes.config import RouteConfig, templates_can_collide
from integration_project.schedules import build_route_schedules
from integration_project.sensors import build_route_sensors

#: Definition metadata on every asset of a route: is sandbox mode on, and where do its shop and
#: ERP point ("host:port" of the sandbox, or "$VARIABLE" when the URL comes from a variable).
SANDBOX_MODE_KEY = "integration/sandbox_mode"
SHOP_HOST_KEY = "integration/shop_host"
ERP_HOST_KEY = "integration/erp_host"


@dataclass(frozen=True)
class _Loaded:
    """What the registry remembers of a loaded route."""

    path: Path | None
    where: str
    #: (ERP URL, division) it delivers to; None when unknown.
    division: tuple[str, str] | None
    your_ref: str
    digits_only: bool


#: route id → the route loaded under it: to name both files when two routes share an id, or
#: when two routes on one ERP division can give the same YourRef.
_SEEN: dict[str, _Loaded] = {}


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
        try:
            sandbox = settings.sandbox_mode()
        except ValueError as exc:
            raise RouteConfigError(f"{where}: {exc}") from None
        other = _SEEN.get(route.id)
        if other is not None and other.path != self.path:
            raise RouteConfigError(
                f"{where}: name: route id {route.id!r} is already used by {other.where}; "
                "give the route a different name"
            )
        problems = route.env_problems(sandbox=sandbox)
        if problems:
            raise RouteConfigError(f"{where}: " + "; ".join(problems))
        loaded = _Loaded(
            path=self.path,
            where=where,
            division=route.erp_division(sandbox=sandbox),
            your_ref=route.mapping.your_ref,
            digits_only=route.order_number_digits_only,
        )
        for route_id, earlier in _SEEN.items():
            if route_id != route.id and _your_refs_collide(loaded, earlier):
                raise RouteConfigError(
                    f"{where}: mapping.your_ref: {loaded.your_ref!r} can give the same YourRef "
                    f"as {earlier.your_ref!r} of {earlier.where}, and both routes deliver to "
                    f"one ERP division ({_division_text(loaded.division)}). YourRef is the "
                    "exactly-once key: an order of one route would be taken for an order of "
                    "the other and never sent. Give each route a template of its own, e.g. a "
                    "prefix ('B2B-{order_number}')"
                )
        _SEEN[route.id] = loaded
        return build_route_definitions(route, sandbox=sandbox)


def _your_refs_collide(a: _Loaded, b: _Loaded) -> bool:
    return (
        a.division is not None
        and a.division == b.division
        and templates_can_collide(a.your_ref, a.digits_only, b.your_ref, b.digits_only)
    )


def _division_text(division: tuple[str, str] | None) -> str:
    if division is None:
        return "unknown"
    url, number = division
    return f"division {number} at {endpoint_host(url)}"


def build_route_definitions(route: RouteConfig, *, sandbox: bool | None = None) -> dg.Definitions:
    """Everything one route contributes (also used by tests to build routes from Python).
    ``sandbox`` defaults to sandbox mode (``INTEGRATION_SANDBOX``), read now."""
    on = settings.sandbox_mode() if sandbox is None else sandbox
    assets = build_route_assets(route)
    schedules = build_route_schedules(assets)
    delivery_job = next(j for j in schedules.jobs if j.name == f"{route.id}__erp_delivery_job")
    retention = build_route_retention(route)  # personal data (README, "Personal data")
    # Shown in the UI on every asset of the route (definition metadata): a sandbox route is
    # told apart at a glance, and so is where a real one points (hosts only, no credentials).
    shown = {
        SANDBOX_MODE_KEY: on,
        SHOP_HOST_KEY: route_endpoint(route, "source", sandbox=on),
        ERP_HOST_KEY: route_endpoint(route, "target", sandbox=on),
    }
    return dg.Definitions(
        assets=dg.map_asset_specs(lambda spec: spec.merge_attributes(metadata=shown), assets.all),
        asset_checks=build_route_checks(assets),
        jobs=[*schedules.jobs, retention.job],
        schedules=[*schedules.schedules, retention.schedule],
        sensors=build_route_sensors(assets, delivery_job),
        resources=route_resources(route, sandbox=on),
    )


def route_endpoint(route: RouteConfig, side: Literal["source", "target"], *, sandbox: bool) -> str:
    """Where a side of the route points, for the UI: the sandbox's ``host:port`` when it uses
    the sandbox, else ``$VARIABLE`` (its value is only read at run time)."""
    section = route.source if side == "source" else route.target
    if route.uses_sandbox(side, sandbox=sandbox):
        return endpoint_host(sandbox_url(section))
    return f"${section.api_url_env}"


def forget_routes() -> None:
    """Reset the registry of loaded routes (definitions are being loaded again in this
    process)."""
    _SEEN.clear()
