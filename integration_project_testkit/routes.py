"""The shipped route files as route configs, and the route assets built from them.

Building a route's assets takes a moment and the same definitions must be used together (a
check built for one set of assets belongs to that set), so the shipped default route's assets
are built once per process, on first use, by :func:`default_assets`.
"""

from __future__ import annotations

import functools
from pathlib import Path

import yaml

import integration_project
from integration_project.assets import RouteAssets, build_route_assets
from integration_project.routes.config import RouteConfig

#: The route files the code location loads (one folder per route).
DEFS = Path(integration_project.__file__).resolve().parent / "defs"
#: The shipped reference route (resource keys ``shop`` / ``erp``).
DEFAULT_FOLDER = "eu_orders_shopware_to_exact"


def shipped_route(folder: str = DEFAULT_FOLDER, **updates: object) -> RouteConfig:
    """A route exactly as shipped under ``defs/<folder>/defs.yaml``, with ``updates`` applied
    to its top-level attributes (a changed copy, validated like the file itself)."""
    attributes = yaml.safe_load((DEFS / folder / "defs.yaml").read_text())["attributes"]
    return RouteConfig.model_validate({**attributes, **updates})


@functools.cache
def default_assets() -> RouteAssets:
    """The shipped default route's assets, built on the first call and shared afterwards."""
    return build_route_assets(shipped_route())


def route_assets(**updates: object) -> RouteAssets:
    """The default route's assets, or, with ``updates``, a changed route's (built anew)."""
    return build_route_assets(shipped_route(**updates)) if updates else default_assets()
