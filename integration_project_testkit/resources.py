"""The route's resources (``shop``, ``erp``, ``duckdb``) pointed at a sandbox and a ledger: a
DuckDB file, or a PostgreSQL database when the ledger's location is a ``postgresql://`` URL.

The credentials are the sandbox's own (``settings.SANDBOX_*``); what differs between the tests,
the chaos test and the bench is passed in as resource fields, never patched.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from dagster_duckdb import DuckDBResource

from integration_project import settings
from integration_project.ledger import Ledger, postgres
from integration_project.resources import (
    ErpResource,
    LedgerResource,
    PostgresLedgerResource,
    ShopResource,
    open_ledger,
)
from integration_project.sandbox import Sandbox

#: What the tests give both clients: the sandbox answers in milliseconds, so one retry and a
#: short read timeout keep a failing test quick.
TEST_CLIENT: Mapping[str, Any] = MappingProxyType({"max_retries": 1, "read_timeout_s": 5.0})


def sandbox_resources(
    shop_url: str,
    erp_url: str,
    duckdb_path: str,
    *,
    shop: Mapping[str, Any] | None = None,
    erp: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Resources for a sandbox at ``shop_url`` / ``erp_url`` and a ledger at ``duckdb_path``
    (a file, or a PostgreSQL URL: :func:`ledger_resource`).

    ``shop`` and ``erp`` are :class:`ShopResource` / :class:`ErpResource` fields on top of the
    sandbox's URL and credentials (retries, timeouts, another secret); fields set nowhere keep
    the resources' defaults."""
    shop_fields = {
        "api_url": shop_url,
        "client_id": settings.SANDBOX_SHOP_CLIENT_ID,
        "client_secret": settings.SANDBOX_SHOP_CLIENT_SECRET,
        **(shop or {}),
    }
    erp_fields = {
        "api_url": erp_url,
        "division": settings.SANDBOX_ERP_DIVISION,
        "client_id": settings.SANDBOX_ERP_CLIENT_ID,
        "client_secret": settings.SANDBOX_ERP_CLIENT_SECRET,
        "refresh_token": settings.SANDBOX_ERP_REFRESH_TOKEN,
        **(erp or {}),
    }
    return {
        "shop": ShopResource(**shop_fields),
        "erp": ErpResource(**erp_fields),
        "duckdb": ledger_resource(duckdb_path),
    }


def ledger_resource(location: str) -> LedgerResource:
    """The ``duckdb`` resource for a ledger ``location``: a DuckDB file's path, or a
    PostgreSQL database's URL."""
    if location.startswith(tuple(f"{scheme}://" for scheme in postgres.SCHEMES)):
        return PostgresLedgerResource(url=location)
    return DuckDBResource(database=location)


def location_of(resource: LedgerResource) -> str:
    """The ledger location a ``duckdb`` resource points at (:func:`ledger_resource`'s input)."""
    if isinstance(resource, PostgresLedgerResource):
        return resource.url
    return resource.database


def make_resources(
    sb: Sandbox,
    duckdb_path: str,
    *,
    shop: Mapping[str, Any] | None = None,
    erp: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A test's resources for the in-process sandbox ``sb``: :data:`TEST_CLIENT` on both
    clients, then the fields in ``shop`` / ``erp`` on top."""
    return sandbox_resources(
        sb.shop_url,
        sb.erp_url,
        duckdb_path,
        shop={**TEST_CLIENT, **(shop or {})},
        erp={**TEST_CLIENT, **(erp or {})},
    )


def resources_ledger(resources: Mapping[str, Any], route_id: str) -> Ledger:
    """The ledger ``route_id`` keeps in the resources' DuckDB file, bound to their ERP's token
    key (what the route's own runs open)."""
    return open_ledger(resources["duckdb"], route_id, resources["erp"].token_key)
