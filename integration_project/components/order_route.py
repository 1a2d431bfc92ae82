"""``OrderRoute``: the Dagster component behind every route file under ``defs/``.

A route file is ``defs/<folder>/defs.yaml`` with ``type: integration_project.components.OrderRoute``
and the route under ``attributes`` (schema: :class:`RouteConfig`). ``dg scaffold defs
integration_project.components.OrderRoute <folder>`` writes a new one. Each route becomes its own
assets (``<route_id>/...``), group, jobs, schedules and resources.

A route that cannot run fails to load, naming its file: variables unset outside sandbox mode,
a URL that is not https (or loopback), an id used twice, or a ``YourRef`` template that can
give the same value as another route's on the same ERP division.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from string import Formatter
from typing import Any, Literal

import dagster as dg
from pydantic import BaseModel

from integration_project import settings
from integration_project.assets import build_route_assets
from integration_project.checks import build_route_checks
from integration_project.export import ExportFolderError, build_export_asset, build_export_schedule
from integration_project.ledger import endpoint_host
from integration_project.privacy import build_route_retention
from integration_project.resources import route_resources, sandbox_url
from integration_project.routes.config import RouteConfig, address_env, templates_can_collide
from integration_project.schedules import build_route_schedules
from integration_project.sensors import build_route_sensors

#: Definition metadata on every asset of a route: is sandbox mode on, and where do its shop and
#: ERP point ("host:port" of the sandbox, or "$VARIABLE" when the URL comes from a variable).
SANDBOX_MODE_KEY = "integration/sandbox_mode"
SHOP_HOST_KEY = "integration/shop_host"
ERP_HOST_KEY = "integration/erp_host"


@dataclass(frozen=True)
class _Loaded:
    """What the route-set check needs of one route."""

    path: Path | None
    where: str
    #: (ERP URL, division) it delivers to; None when unknown.
    division: tuple[str, str] | None
    your_ref: str
    digits_only: bool
    #: The template's text before its first field, lower-cased (YourRef is compared ignoring
    #: case): two templates whose prefixes differ where both have one never collide.
    prefix: str = ""


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

    @property
    def where(self) -> str:
        """The route file, for error messages."""
        return str(self.path / "defs.yaml") if self.path else "route"

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        try:
            sandbox = settings.sandbox_mode()
        except ValueError as exc:
            raise RouteConfigError(f"{self.where}: {exc}") from None
        problems = self.route.env_problems(sandbox=sandbox)
        if problems:
            raise RouteConfigError(f"{self.where}: " + "; ".join(problems))
        try:
            return build_route_definitions(self.route, sandbox=sandbox)
        except ExportFolderError as exc:
            raise RouteConfigError(f"{self.where}: {exc}") from None


def load_routes(path_within_project: Path) -> dg.Definitions:
    """Every route file of the project that holds ``path_within_project``, checked as a set
    (:func:`check_route_set`) before any is built."""
    tree = dg.ComponentTree.for_project(path_within_project)
    check_route_set(tree.get_all_components(of_type=OrderRoute), sandbox=_sandbox_or_none())
    return tree.build_defs()


def _sandbox_or_none() -> bool | None:
    """Sandbox mode, or None when its variable is unreadable (each route's build names that)."""
    try:
        return settings.sandbox_mode()
    except ValueError:
        return None


def check_route_set(routes: Sequence[OrderRoute], *, sandbox: bool | None) -> None:
    """What no single route file can know: route ids are unique, and no two routes on one ERP
    division can give the same ``YourRef`` (the exactly-once key). Raises
    :class:`RouteConfigError` naming both files. Pure: reads the routes and the environment."""
    seen: dict[str, _Loaded] = {}
    for component in routes:
        route = component.route
        other = seen.get(route.id)
        if other is not None and other.path != component.path:
            raise RouteConfigError(
                f"{component.where}: name: route id {route.id!r} is already used by "
                f"{other.where}; give the route a different name"
            )
        loaded = _Loaded(
            path=component.path,
            where=component.where,
            division=route.erp_division(sandbox=sandbox) if sandbox is not None else None,
            your_ref=route.mapping.your_ref,
            digits_only=route.order_number_digits_only,
            prefix=_literal_prefix(route.mapping.your_ref),
        )
        for route_id, earlier in seen.items():
            if route_id != route.id and _your_refs_collide(loaded, earlier):
                raise RouteConfigError(_collision_text(loaded, earlier))
        seen[route.id] = loaded


def _collision_text(loaded: _Loaded, earlier: _Loaded) -> str:
    return (
        f"{loaded.where}: mapping.your_ref: {loaded.your_ref!r} can give the same YourRef "
        f"as {earlier.your_ref!r} of {earlier.where}, and both routes deliver to "
        f"one ERP division ({_division_text(loaded.division)}). YourRef is the "
        "exactly-once key: an order of one route would be taken for an order of "
        "the other and never sent. Give each route a template of its own, e.g. a "
        "prefix ('B2B-{order_number}')"
    )


def _your_refs_collide(a: _Loaded, b: _Loaded) -> bool:
    # Every pair of routes is compared: the prefix test first keeps 1,000 routes with their
    # own prefixes (e.g. 'SHOP7-{order_number}') from costing seconds of automata at load.
    shared = min(len(a.prefix), len(b.prefix))
    return (
        a.division is not None
        and a.division == b.division
        and a.prefix[:shared] == b.prefix[:shared]
        and templates_can_collide(a.your_ref, a.digits_only, b.your_ref, b.digits_only)
    )


def _literal_prefix(template: str) -> str:
    """The literal text of ``template`` before its first field, lower-cased (braces escaped as
    ``{{`` count as the character they stand for); every value it renders starts with it."""
    prefix = ""
    for literal, field, _, _ in Formatter().parse(template):
        prefix += literal
        if field is not None:
            break
    return prefix.lower()


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
    source_job = next(j for j in schedules.jobs if j.name == f"{route.id}__source_orders_job")
    retention = build_route_retention(route)  # personal data (README, "Personal data")
    # A second destination: delivered orders as daily Parquet files (when the route says so).
    export = build_export_asset(route, assets.erp_delivered_orders, sandbox=on)
    exports = [export] if export is not None else []
    export_jobs, export_schedules = [], []
    if export is not None:
        export_job, export_schedule = build_export_schedule(route, export)
        export_jobs, export_schedules = [export_job], [export_schedule]
    # Shown in the UI on every asset of the route (definition metadata): a sandbox route is
    # told apart at a glance, and so is where a real one points (hosts only, no credentials).
    shown = {
        SANDBOX_MODE_KEY: on,
        SHOP_HOST_KEY: route_endpoint(route, "source", sandbox=on),
        ERP_HOST_KEY: route_endpoint(route, "target", sandbox=on),
    }
    return dg.Definitions(
        assets=dg.map_asset_specs(
            lambda spec: spec.merge_attributes(metadata=shown), [*assets.all, *exports]
        ),
        asset_checks=build_route_checks(assets),
        jobs=[*schedules.jobs, retention.job, *export_jobs],
        schedules=[*schedules.schedules, retention.schedule, *export_schedules],
        sensors=build_route_sensors(assets, delivery_job, source_job),
        resources=route_resources(route, sandbox=on),
    )


def route_endpoint(route: RouteConfig, side: Literal["source", "target"], *, sandbox: bool) -> str:
    """Where a side of the route points, for the UI: the sandbox's ``host:port`` when it uses
    the sandbox, else ``$VARIABLE`` (its value is only read at run time)."""
    section = route.source if side == "source" else route.target
    if route.uses_sandbox(side, sandbox=sandbox):
        url = sandbox_url(section)
        return endpoint_host(url) or url  # a folder: its file:// URL has no host
    return f"${address_env(section)}"
