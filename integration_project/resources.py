"""Dagster resources: the shop, the ERP and the DuckDB ledger, configured from the environment.

Resources only hold configuration and hand out clients; the clients do the HTTP. Tests swap
these resources (pointing them at an in-process sandbox and a temp DuckDB file), never patch.

A route's resources read its variables through ``dagster.EnvVar``. Only in sandbox mode
(``INTEGRATION_SANDBOX=1``) does a side whose URL variable is unset get the local sandbox's
address and credentials; otherwise the route does not load (``RouteConfig.env_problems``).
"""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_duckdb import DuckDBResource
from pydantic import ConfigDict, Field, field_validator

from integration_project import settings
from integration_project.connectors.spryker_source import SprykerSource
from integration_project.exact.client import CallGuard, ExactClient, TokenStore, fingerprint
from integration_project.ledger import DuckDBTokenStore, Ledger, postgres
from integration_project.routes.config import (
    CsvFolderSource,
    ErpTarget,
    RouteConfig,
    ShopSource,
    Side,
    SprykerSourceConfig,
    env_is_set,
    side_uses_sandbox,
    url_problem,
)
from integration_project.shopware.client import ShopwareClient
from integration_project.shopware.models import METHOD_ASSOCIATIONS, ORDER_ASSOCIATIONS
from integration_project.spryker.client import SprykerClient


def _checked_url(value: Any) -> Any:
    """``api_url`` over https, or plain http to a loopback address. An ``EnvVar`` is checked
    when Dagster resolves it, at run time (the resource is validated again then). The error
    names the field and at most the host: never the URL's user info or query."""
    if isinstance(value, str) and not isinstance(value, dg.EnvVar):
        problem = url_problem(value)
        if problem:
            raise ValueError(f"api_url {problem}")
    return value


class ShopResource(dg.ConfigurableResource):
    """Shopware 6 Admin API (integration with client credentials)."""

    # Validation errors never echo a value (a URL with credentials in it, a secret).
    model_config = ConfigDict(hide_input_in_errors=True)

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
    secret_env_names: list[str] = Field(
        default=[],
        description="The variables holding this side's secrets (from the route file's *_env "
        "names): the run-failure alert redacts their values",
    )

    def get_client(self, *, with_methods: bool = False) -> ShopwareClient:
        """``with_methods``: also load each order's shipping and payment method (a route
        whose ``mapping.lookups`` reads them)."""
        return ShopwareClient(
            base_url=self.api_url,
            client_id=self.client_id,
            client_secret=self.client_secret,
            timeout=(self.connect_timeout_s, self.read_timeout_s),
            max_retries=self.max_retries,
            backoff_factor=self.backoff_factor,
            credential_names=(self.client_id_env, self.client_secret_env),
            associations=METHOD_ASSOCIATIONS if with_methods else ORDER_ASSOCIATIONS,
        )

    @field_validator("api_url", mode="before")
    @classmethod
    def _https(cls, value: Any) -> Any:
        return _checked_url(value)


class SprykerResource(dg.ConfigurableResource):
    """A Spryker Commerce OS backend's Glue Backend API, read as a Back Office user: the
    route's orders come through the Data Exchange API (``dynamic-entity/sales-orders``)."""

    model_config = ConfigDict(hide_input_in_errors=True)

    api_url: str = Field(description="The Glue Backend API's base URL")
    username: str = Field(description="The Back Office user's login (SPRYKER_USERNAME)")
    password: str = Field(description="That user's password (SPRYKER_PASSWORD)")
    ids_per_request: int = Field(default=100, ge=1, le=1000)
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 30.0
    max_retries: int = 3
    backoff_factor: float = 0.5
    username_env: str = "SPRYKER_USERNAME"
    password_env: str = "SPRYKER_PASSWORD"
    secret_env_names: list[str] = Field(
        default=[], description="The variables holding this side's secrets (alerts redact them)"
    )

    def get_client(self) -> SprykerSource:
        client = SprykerClient(
            self.api_url,
            self.username,
            self.password,
            page_size=self.ids_per_request,
            timeout=(self.connect_timeout_s, self.read_timeout_s),
            max_retries=self.max_retries,
            backoff_factor=self.backoff_factor,
            credential_names=(self.username_env, self.password_env),
        )
        return SprykerSource(client)

    @field_validator("api_url", mode="before")
    @classmethod
    def _https(cls, value: Any) -> Any:
        return _checked_url(value)


class CsvFolderResource(dg.ConfigurableResource):
    """The folder a CSV route's order files arrive in (local or mounted). Files that are not
    the route's CSV are moved to its ``rejected/`` subfolder."""

    folder: str = Field(description="Absolute path of the folder (CSV_ORDERS_FOLDER)")
    secret_env_names: list[str] = Field(default=[], description="None: a folder holds no secret")

    def path(self) -> Path:
        return Path(self.folder).expanduser()


#: The resource of a route's source, by the source's ``type``.
SourceResource = ShopResource | SprykerResource | CsvFolderResource


class ErpResource(dg.ConfigurableResource):
    """Exact Online REST API (OAuth2 refresh tokens, rotated and stored in DuckDB)."""

    model_config = ConfigDict(hide_input_in_errors=True)

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
    secret_env_names: list[str] = Field(
        default=[],
        description="The variables holding this side's secrets (from the route file's *_env "
        "names): the run-failure alert redacts their values",
    )

    @field_validator("api_url", mode="before")
    @classmethod
    def _https(cls, value: Any) -> Any:
        return _checked_url(value)

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


class PostgresLedgerResource(dg.ConfigurableResource):
    """The ledger on PostgreSQL, for deployments whose runs execute on several hosts
    (``INTEGRATION_LEDGER_URL=postgresql://user:password@host:5432/database``). It sits under
    the ``duckdb`` resource key, where the embedded DuckDB ledger sits by default, so a route's
    assets need not know which one they write to."""

    url: str = Field(
        description="postgresql://user:password@host:port/database (keep it in an "
        "environment variable: it holds the password)"
    )

    @field_validator("url", mode="before")
    @classmethod
    def _known_scheme(cls, value: Any) -> Any:
        if isinstance(value, str) and not isinstance(value, dg.EnvVar):
            postgres.check_url(value)
        return value

    @contextmanager
    def get_connection(self) -> Iterator[postgres.PgConnection]:
        with postgres.connect(self.url) as con:
            yield con


LedgerResource = DuckDBResource | PostgresLedgerResource


def open_ledger(duckdb: LedgerResource, route_id: str, erp_key: str = "") -> Ledger:
    """A route's ledger over the configured database. A DuckDB file's folder is created on
    first use (mode 0700) and the file readable by its owner only (0600), whatever the umask:
    the ledger holds customer data and the ERP's rotating tokens."""
    if isinstance(duckdb, PostgresLedgerResource):
        return Ledger(duckdb.get_connection, route_id, erp_key, dialect="postgres")
    database = duckdb.database
    if database not in ("", ":memory:") and not database.startswith(("md:", "motherduck:")):
        path = Path(database).expanduser()
        _make_private_folder(path.parent)
        if not path.exists():
            # DuckDB refuses an empty file, so let it create the database, then close it to
            # 0600 before anything is written to it. DuckDB writes ``<file>.wal`` (and spills
            # to ``<file>.tmp/``) beside it with the process umask: the 0700 folder keeps
            # those private when we created it; in a shared folder, run with umask 077.
            with duckdb.get_connection():
                pass
            path.chmod(0o600)
    return Ledger(duckdb.get_connection, route_id, erp_key)


def _make_private_folder(folder: Path) -> None:
    """Create ``folder`` and any missing parents, each 0700; folders that already exist (such
    as /tmp or the user's home) are left as they are."""
    missing: list[Path] = []
    while not folder.exists():
        missing.append(folder)
        if folder.parent == folder:
            break
        folder = folder.parent
    for created in reversed(missing):
        try:
            created.mkdir(mode=0o700)
        except FileExistsError:  # another process made it first: not ours to chmod
            continue
        created.chmod(0o700)  # mkdir's mode is masked by the umask; this is not


def token_store(erp: ErpResource, ledger: Ledger) -> DuckDBTokenStore:
    """The ERP's token chain (per app and authorisation) and call guard (per division), shared
    by every route and run using them. A chain an older version stored under the division's
    key is adopted when it started from the same ERP_REFRESH_TOKEN."""
    return DuckDBTokenStore(
        ledger.db,
        erp.token_key,
        chain_key=erp.chain_key,
        adopt_from=erp.token_key,
        seed_fingerprint=fingerprint(erp.refresh_token),
    )


def erp_client(erp: ErpResource, ledger: Ledger, *, holder: str | None = None) -> ExactClient:
    store = token_store(erp, ledger)
    return erp.get_client(store, holder=holder, guard=store)


# --- configuration from the environment -------------------------------------------------------

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
}


def sandbox_url(section: Side) -> str:
    """The sandbox address a side uses in sandbox mode when its address variable is unset
    (a folder's ``file://`` URL for order files)."""
    if isinstance(section, ErpTarget):
        return settings.SANDBOX_ERP_URL
    if isinstance(section, SprykerSourceConfig):
        return settings.SANDBOX_SPRYKER_URL
    if isinstance(section, CsvFolderSource):
        return settings.sandbox_csv_folder().as_uri()
    return _SANDBOX_SHOPS[section.sandbox][0]


def source_resource(
    source: ShopSource | SprykerSourceConfig | CsvFolderSource, *, sandbox: bool | None = None
) -> SourceResource:
    """The resource of a route's source, by its type: every field from its variable, or, in
    sandbox mode with the address variable unset, the sandbox's (never a mix: credentials set
    for a real system are not sent to the sandbox). ``sandbox`` defaults to sandbox mode, now."""
    if isinstance(source, SprykerSourceConfig):
        return _spryker_resource(source, sandbox=sandbox)
    if isinstance(source, CsvFolderSource):
        return _csv_folder_resource(source, sandbox=sandbox)
    return shop_resource(source, sandbox=sandbox)


def _uses_sandbox(section: Side, sandbox: bool | None) -> bool:
    on = settings.sandbox_mode() if sandbox is None else sandbox
    return side_uses_sandbox(section, on, os.environ)


def _spryker_resource(source: SprykerSourceConfig, *, sandbox: bool | None) -> SprykerResource:
    names = {
        "username_env": source.username_env,
        "password_env": source.password_env,
        "secret_env_names": [source.username_env, source.password_env],
        "ids_per_request": source.ids_per_request,
    }
    if _uses_sandbox(source, sandbox):
        return SprykerResource(
            api_url=settings.SANDBOX_SPRYKER_URL,
            username=settings.SANDBOX_SPRYKER_USERNAME,
            password=settings.SANDBOX_SPRYKER_PASSWORD,
            **names,
        )
    return SprykerResource(
        api_url=dg.EnvVar(source.api_url_env),
        username=dg.EnvVar(source.username_env),
        password=dg.EnvVar(source.password_env),
        **names,
    )


def _csv_folder_resource(source: CsvFolderSource, *, sandbox: bool | None) -> CsvFolderResource:
    if _uses_sandbox(source, sandbox):
        return CsvFolderResource(folder=str(settings.sandbox_csv_folder()))
    return CsvFolderResource(folder=dg.EnvVar(source.folder_env))


def shop_resource(source: ShopSource, *, sandbox: bool | None = None) -> ShopResource:
    """The shop's resource: every field from its variable, or, in sandbox mode with the URL
    variable unset, the sandbox shop's address and credentials (never a mix: credentials set
    for a real shop are not sent to the sandbox). ``sandbox`` defaults to sandbox mode, now."""
    if _uses_sandbox(source, sandbox):
        url, client_id, secret = _SANDBOX_SHOPS[source.sandbox]
        return ShopResource(
            api_url=url,
            client_id=client_id,
            client_secret=secret,
            client_id_env=source.client_id_env,
            client_secret_env=source.client_secret_env,
            secret_env_names=[source.client_id_env, source.client_secret_env],
        )
    return ShopResource(
        api_url=dg.EnvVar(source.api_url_env),
        client_id=dg.EnvVar(source.client_id_env),
        client_secret=dg.EnvVar(source.client_secret_env),
        client_id_env=source.client_id_env,
        client_secret_env=source.client_secret_env,
        secret_env_names=[source.client_id_env, source.client_secret_env],
    )


def erp_resource(target: ErpTarget, *, sandbox: bool | None = None) -> ErpResource:
    """The ERP's resource, like :func:`shop_resource`: its variables, or the sandbox ERP."""
    if _uses_sandbox(target, sandbox):
        return ErpResource(
            api_url=settings.SANDBOX_ERP_URL,
            division=settings.SANDBOX_ERP_DIVISION,
            client_id=settings.SANDBOX_ERP_CLIENT_ID,
            client_secret=settings.SANDBOX_ERP_CLIENT_SECRET,
            refresh_token=settings.SANDBOX_ERP_REFRESH_TOKEN,
            secret_env_names=_erp_secret_env_names(target),
        )
    return ErpResource(
        api_url=dg.EnvVar(target.api_url_env),
        division=dg.EnvVar(target.division_env),
        client_id=dg.EnvVar(target.client_id_env),
        client_secret=dg.EnvVar(target.client_secret_env),
        refresh_token=dg.EnvVar(target.refresh_token_env),
        secret_env_names=_erp_secret_env_names(target),
    )


def _erp_secret_env_names(target: ErpTarget) -> list[str]:
    return [target.client_id_env, target.client_secret_env, target.refresh_token_env]


def default_database_path(*, sandbox: bool | None = None) -> str:
    """Where the ledger lives without ``INTEGRATION_DUCKDB_PATH``: the user's data folder
    (``$XDG_DATA_HOME/integration_project/ledger.duckdb``, ``sandbox.duckdb`` in sandbox mode),
    never inside the installed package."""
    on = settings.sandbox_mode() if sandbox is None else sandbox
    return str(settings.default_ledger_path(sandbox=on))


def duckdb_resource() -> LedgerResource:
    """The ledger, shared by every route: PostgreSQL when ``INTEGRATION_LEDGER_URL`` is set
    (a URL of another scheme stops the code location from loading, naming the scheme only),
    else the DuckDB file at ``INTEGRATION_DUCKDB_PATH`` or in the user's data folder."""
    if env_is_set(settings.LEDGER_URL_ENV):
        postgres.check_url(os.environ[settings.LEDGER_URL_ENV].strip())
        return PostgresLedgerResource(url=dg.EnvVar(settings.LEDGER_URL_ENV))
    if env_is_set(settings.DUCKDB_PATH_ENV):
        return DuckDBResource(database=dg.EnvVar(settings.DUCKDB_PATH_ENV))
    return DuckDBResource(database=default_database_path())


def route_resources(route: RouteConfig, *, sandbox: bool | None = None) -> dict[str, object]:
    """The route's shop and ERP resources, under the keys its assets require."""
    on = settings.sandbox_mode() if sandbox is None else sandbox
    return {
        route.shop_key: source_resource(route.source, sandbox=on),
        route.erp_key: erp_resource(route.target, sandbox=on),
    }
