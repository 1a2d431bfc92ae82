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
from integration_project.exact.client import ExactClient, TokenStore
from integration_project.ledger import DuckDBTokenStore, Ledger
from integration_project.shopware.client import ShopwareClient


class ShopResource(dg.ConfigurableResource):
    """Shopware 6 Admin API (integration with client credentials)."""

    api_url: str = Field(description="Base URL of the shop, e.g. https://shop.example.eu")
    client_id: str = Field(description="Integration access key id (SHOP_CLIENT_ID)")
    client_secret: str = Field(description="Integration secret (SHOP_CLIENT_SECRET)")
    page_size: int = Field(default=settings.DEFAULT_PAGE_SIZE, ge=1, le=500)
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 30.0
    max_retries: int = 4

    def get_client(self) -> ShopwareClient:
        return ShopwareClient(
            base_url=self.api_url,
            client_id=self.client_id,
            client_secret=self.client_secret,
            timeout=(self.connect_timeout_s, self.read_timeout_s),
            max_retries=self.max_retries,
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
    max_rate_wait_s: float = 65.0

    @property
    def token_key(self) -> str:
        # Identifies the token chain without containing a secret.
        return f"{self.api_url.rstrip('/')}|{self.division}|{self.client_id}"

    def get_client(self, token_store: TokenStore, *, holder: str | None = None) -> ExactClient:
        return ExactClient(
            base_url=self.api_url,
            division=self.division,
            client_id=self.client_id,
            client_secret=self.client_secret,
            refresh_token=self.refresh_token,
            token_store=token_store,
            timeout=(self.connect_timeout_s, self.read_timeout_s),
            max_retries=self.max_retries,
            max_rate_wait_s=self.max_rate_wait_s,
            holder=holder,
        )


def open_ledger(duckdb: DuckDBResource) -> Ledger:
    """The ledger over the configured DuckDB file (its folder is created on first use)."""
    if duckdb.database not in ("", ":memory:"):
        Path(duckdb.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    return Ledger(duckdb.get_connection)


def erp_client(erp: ErpResource, ledger: Ledger, *, holder: str | None = None) -> ExactClient:
    return erp.get_client(DuckDBTokenStore(ledger, erp.token_key), holder=holder)


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


def default_database_path() -> str:
    return str(Path(__file__).resolve().parents[1] / settings.DEFAULT_DUCKDB_PATH)


def resources_from_env() -> dict[str, object]:
    """The three resources, reading the variables listed in the README."""
    shop = ShopResource(
        api_url=_env("SHOP_API_URL", settings.SANDBOX_SHOP_URL),
        client_id=_env(
            "SHOP_CLIENT_ID", settings.SANDBOX_SHOP_CLIENT_ID, required_with="SHOP_API_URL"
        ),
        client_secret=_env(
            "SHOP_CLIENT_SECRET", settings.SANDBOX_SHOP_CLIENT_SECRET, required_with="SHOP_API_URL"
        ),
    )
    erp = ErpResource(
        api_url=_env("ERP_API_URL", settings.SANDBOX_ERP_URL),
        division=_env("ERP_DIVISION", settings.SANDBOX_ERP_DIVISION, required_with="ERP_API_URL"),
        client_id=_env(
            "ERP_CLIENT_ID", settings.SANDBOX_ERP_CLIENT_ID, required_with="ERP_API_URL"
        ),
        client_secret=_env(
            "ERP_CLIENT_SECRET", settings.SANDBOX_ERP_CLIENT_SECRET, required_with="ERP_API_URL"
        ),
        refresh_token=_env(
            "ERP_REFRESH_TOKEN", settings.SANDBOX_ERP_REFRESH_TOKEN, required_with="ERP_API_URL"
        ),
    )
    duckdb = DuckDBResource(
        database=_env("INTEGRATION_DUCKDB_PATH", default_database_path()),
    )
    return {"shop": shop, "erp": erp, "duckdb": duckdb}
