"""Dagster resources: the shop, the ERP and the DuckDB ledger, configured from the environment.

Resources only hold configuration and hand out clients; the clients do the HTTP. Tests swap
these resources (pointing them at an in-process sandbox and a temp DuckDB file), never patch.
"""

import os
from pathlib import Path

import dagster as dg
from dagster_duckdb import DuckDBResource
from pydantic import Field

from integration_project import settings
from integration_project.exact.client import CallGuard, ExactClient, TokenStore, fingerprint
from integration_project.ledger import DuckDBTokenStore, Ledger
from integration_project.routes.config import ErpTarget, RouteConfig, ShopSource
from integration_project.shopware.client import ShopwareClient


class ShopResource(dg.ConfigurableResource):
    """Shopware 6 Admin API (integration with client credentials)."""

    api_url: str = Field(description="Base URL of the shop, e.g. https://shop.example.eu")
    client_id: str = Field(description="Integration access key id (SHOP_CLIENT_ID)")
    client_secret: str = Field(description="Integration secret (SHOP_CLIENT_SECRET)")
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 30.0
    max_retries: int = 4
    backoff_factor: float = Field(
        default=0.5, description="Seconds before the first retry of a safe call; doubles each time"
    )
    client_id_env: str = Field(
        default="SHOP_CLIENT_ID", description="The variable the client id comes from"
    )
    client_secret_env: str = Field(
        default="SHOP_CLIENT_SECRET", description="The variable the secret comes from"
    )

    def get_client(self) -> ShopwareClient:
        return ShopwareClient(
            base_url=self.api_url,
            client_id=self.client_id,
            client_secret=self.client_secret,
            timeout=(self.connect_timeout_s, self.read_timeout_s),
            max_retries=self.max_retries,
            backoff_factor=self.backoff_factor,
            credential_names=(self.client_id_env, self.client_secret_env),
        )


class ErpResource(dg.ConfigurableResource):
    """Exact Online REST API (OAuth2 refresh tokens, rotated and stored in DuckDB)."""

    api_url: str = Field(description="e.g. https://start.exactonline.nl")
    division: str = Field(description="Exact Online division (company) number")
    client_id: str = Field(description="App client id (ERP_CLIENT_ID)")
    client_secret: str = Field(description="App client secret (ERP_CLIENT_SECRET)")
    refresh_token: str = Field(
        description="The first refresh token (ERP_REFRESH_TOKEN); rotated ones live in DuckDB"
    )
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 30.0
    max_retries: int = 3
    backoff_factor: float = Field(
        default=0.5, description="Seconds before the first retry of a look-up; doubles each time"
    )
    max_rate_wait_s: float = 65.0

    @property
    def token_key(self) -> str:
        """The division's key (ERP URL, division, client id; no secret): look-up caches and the
        call guard (Exact's per-division budgets and error counts). Older versions also kept
        the token chain under it; see :attr:`chain_key`."""
        return f"{self.api_url.rstrip('/')}|{self.division}|{self.client_id}"

    @property
    def chain_key(self) -> str:
        """The token chain's key: the app and the authorising user (ERP URL, client id and
        ERP_REFRESH_TOKEN's fingerprint; no secret, no division). Every division that one
        authorisation reaches shares one refresh and one access token."""
        seed = fingerprint(self.refresh_token)
        return f"{self.api_url.rstrip('/')}|{self.client_id}|seed:{seed}"

    def get_client(
        self,
        token_store: TokenStore,
        *,
        holder: str | None = None,
        guard: CallGuard | None = None,
    ) -> ExactClient:
        return ExactClient(
            base_url=self.api_url,
            division=self.division,
            client_id=self.client_id,
            client_secret=self.client_secret,
            refresh_token=self.refresh_token,
            token_store=token_store,
            timeout=(self.connect_timeout_s, self.read_timeout_s),
            max_retries=self.max_retries,
            backoff_factor=self.backoff_factor,
            max_rate_wait_s=self.max_rate_wait_s,
            holder=holder,
            guard=guard,
        )


def open_ledger(duckdb: DuckDBResource, route_id: str, erp_key: str = "") -> Ledger:
    """A route's ledger over the configured DuckDB file (its folder is created on first use)."""
    if duckdb.database not in ("", ":memory:"):
        Path(duckdb.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    return Ledger(duckdb.get_connection, route_id, erp_key)


def token_store(erp: ErpResource, ledger: Ledger) -> DuckDBTokenStore:
    """The ERP's token chain (per app and authorisation) and call guard (per division), shared
    by every route and run using them. A chain an older version stored under the division's
    key is adopted when it started from the same ERP_REFRESH_TOKEN."""
    return DuckDBTokenStore(
        ledger,
        erp.token_key,
        chain_key=erp.chain_key,
        adopt_from=erp.token_key,
        seed_fingerprint=fingerprint(erp.refresh_token),
    )


def erp_client(erp: ErpResource, ledger: Ledger, *, holder: str | None = None) -> ExactClient:
    store = token_store(erp, ledger)
    return erp.get_client(store, holder=holder, guard=store)


# --- configuration from the environment -------------------------------------------------------


def _env(name: str, sandbox_default: str, *, required_with: str | None = None) -> str | dg.EnvVar:
    """``EnvVar(name)`` when set; the sandbox default when the whole side is unconfigured.

    Once the side's URL points elsewhere (``required_with`` is set), its credentials must come
    from the environment too: Dagster then fails the run naming the missing variable, instead
    of sending sandbox credentials to a real system.
    """
    if name in os.environ:
        return dg.EnvVar(name)
    if required_with is not None and required_with in os.environ:
        return dg.EnvVar(name)
    return sandbox_default


_SANDBOX_SHOPS = {
    "shop": (
        settings.SANDBOX_SHOP_URL,
        settings.SANDBOX_SHOP_CLIENT_ID,
        settings.SANDBOX_SHOP_CLIENT_SECRET,
    ),
    "shop2": (
        settings.SANDBOX_SHOP2_URL,
        settings.SANDBOX_SHOP2_CLIENT_ID,
        settings.SANDBOX_SHOP2_CLIENT_SECRET,
    ),
    "none": ("", "", ""),
}


def shop_resource(source: ShopSource) -> ShopResource:
    url, client_id, secret = _SANDBOX_SHOPS[source.sandbox]
    url_var = source.api_url_env
    return ShopResource(
        api_url=_env(url_var, url),
        client_id=_env(source.client_id_env, client_id, required_with=url_var),
        client_secret=_env(source.client_secret_env, secret, required_with=url_var),
        client_id_env=source.client_id_env,
        client_secret_env=source.client_secret_env,
    )


def erp_resource(target: ErpTarget) -> ErpResource:
    url_var = target.api_url_env
    return ErpResource(
        api_url=_env(url_var, settings.SANDBOX_ERP_URL),
        division=_env(target.division_env, settings.SANDBOX_ERP_DIVISION, required_with=url_var),
        client_id=_env(target.client_id_env, settings.SANDBOX_ERP_CLIENT_ID, required_with=url_var),
        client_secret=_env(
            target.client_secret_env, settings.SANDBOX_ERP_CLIENT_SECRET, required_with=url_var
        ),
        refresh_token=_env(
            target.refresh_token_env, settings.SANDBOX_ERP_REFRESH_TOKEN, required_with=url_var
        ),
    )


def default_database_path() -> str:
    return str(Path(__file__).resolve().parents[1] / settings.DEFAULT_DUCKDB_PATH)


def duckdb_resource() -> DuckDBResource:
    """The ledger, shared by every route (``INTEGRATION_DUCKDB_PATH``)."""
    return DuckDBResource(database=_env("INTEGRATION_DUCKDB_PATH", default_database_path()))


def route_resources(route: RouteConfig) -> dict[str, object]:
    """The route's shop and ERP resources, under the keys its assets require."""
    return {route.shop_key: shop_resource(route.source), route.erp_key: erp_resource(route.target)}
