"""The route definition: what one YAML file under ``defs/`` says, validated by pydantic.

A route has a name (its id is a slug of it), a source shop, a target ERP, a filter, mapping
rules, hooks, schedules and paging settings. Everything has a default that reproduces the
reference route, so a new route can be a handful of lines.

No Dagster here: the schema is plain pydantic, so it can be validated and tested on its own;
``integration_project.components`` turns a validated route into Dagster definitions. Also here,
as pure functions: what the environment must hold for a route (:meth:`RouteConfig.env_problems`,
the https rule of :func:`url_problem`) and whether two ``YourRef`` templates can render the
same value (:func:`templates_can_collide`).
"""

from __future__ import annotations

import importlib
import ipaddress
import os
import re
import unicodedata
from collections import deque
from collections.abc import Callable, Mapping
from datetime import timedelta
from decimal import Decimal
from string import Formatter
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationInfo,
    field_validator,
    model_validator,
)

from integration_project import settings
from integration_project.connectors.csv_orders import CsvSourceConfig
from integration_project.exact.models import MAX_VAT_CODE
from integration_project.transforms import (
    TEMPLATE_FIELDS,
    LookupRule,
    MappingRules,
    VatPin,
)

_ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")
_DURATION = re.compile(r"^\s*(\d+)\s*(s|m|h|d)\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
ORDER_STATES = ("open", "in_progress", "completed", "cancelled")


def slugify(name: str) -> str:
    """``"EU orders: Shopware → Exact"`` → ``"eu_orders_shopware_exact"`` (a valid Dagster name)."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "_", ascii_name.lower()).strip("_")
    if not slug:
        raise ValueError(f"route name {name!r} has no letters or digits to derive an id from")
    return slug if slug[0].isalpha() else f"route_{slug}"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _env_name(value: str) -> str:
    if not _ENV_NAME.match(value):
        raise ValueError(f"expected an environment variable name like SHOP_API_URL, got {value!r}")
    return value


def _known_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {value!r}: expected an IANA name like Europe/Amsterdam"
        ) from None
    return value


class _SourceBase(_Strict):
    """What every source kind has: its resource key, its orders' time zone and number form."""

    resource_key: str | None = Field(
        default=None, description="Dagster resource key; default '<route_id>_shop'"
    )
    timezone: str = Field(
        default=settings.DEFAULT_SHOP_TIMEZONE,
        description="The shop's IANA time zone: the ERP's OrderDate is the order's date there",
    )

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        return _known_zone(value)


class ShopSource(_SourceBase):
    """Where orders come from. Secrets are named by environment variable, never written here."""

    type: Literal["shopware"] = "shopware"
    api_url_env: str = "SHOP_API_URL"
    client_id_env: str = "SHOP_CLIENT_ID"
    client_secret_env: str = "SHOP_CLIENT_SECRET"
    #: In sandbox mode (``INTEGRATION_SANDBOX=1``) and only then, the local sandbox shop used when
    #: ``api_url_env`` is not set ("shop" or "shop2"); ``none``: the variables are always required.
    sandbox: Literal["shop", "shop2", "none"] = "shop"
    order_number_format: Literal["digits", "any"] = Field(
        default="digits",
        description="The shop's order numbers: 'digits' (Shopware's default number range {n}; "
        "an order whose number is not all digits is quarantined) or 'any'. Decides which "
        "YourRef templates of routes on the same ERP division can collide",
    )

    @field_validator("api_url_env", "client_id_env", "client_secret_env")
    @classmethod
    def _envs(cls, value: str) -> str:
        return _env_name(value)


class SprykerSourceConfig(_SourceBase):
    """Orders of a Spryker Commerce OS backend, read through its Data Exchange API
    (``dynamic-entity/sales-orders``) as a Back Office user."""

    type: Literal["spryker"]
    api_url_env: str = "SPRYKER_API_URL"
    username_env: str = "SPRYKER_USERNAME"
    password_env: str = "SPRYKER_PASSWORD"
    #: In sandbox mode only: the sandbox Spryker backend when ``api_url_env`` is unset.
    sandbox: Literal["spryker", "none"] = "spryker"
    order_number_format: Literal["digits", "any"] = Field(
        default="any",
        description="Spryker's order references look like 'DE--1': 'any' unless the project "
        "numbers its orders with digits only",
    )
    ids_per_request: int = Field(
        default=100,
        ge=1,
        le=1000,
        description="Order ids asked for per request (the Data Exchange API pages up to 1,000)",
    )

    @field_validator("api_url_env", "username_env", "password_env")
    @classmethod
    def _envs(cls, value: str) -> str:
        return _env_name(value)


class CsvFolderSource(_SourceBase, CsvSourceConfig):
    """Order files (CSV) dropped in a folder, local or mounted: each new file is read once,
    keyed by its content (README "Connectors", docs/connectors-csv.md)."""

    type: Literal["csv"]
    folder_env: str = "CSV_ORDERS_FOLDER"
    #: In sandbox mode only: the folder the sandbox fills when ``folder_env`` is unset.
    sandbox: Literal["csv", "none"] = "csv"
    order_number_format: Literal["digits", "any"] = "any"
    settle_s: float = Field(
        default=10.0,
        ge=0,
        le=3600,
        description="A file is read once it has not changed for this many seconds (one still "
        "being copied in is left for the next tick)",
    )

    @field_validator("folder_env")
    @classmethod
    def _envs(cls, value: str) -> str:
        return _env_name(value)


def source_type(value: Any) -> str:
    """The source's ``type`` as written: one that is not a known tag fails with pydantic's
    own error, which names the field and the expected types."""
    kind = value.get("type", "shopware") if isinstance(value, dict) else value.type
    return str(kind)


#: A route's ``source``, picked by its ``type`` (``shopware`` when left out).
SourceConfig = Annotated[
    Annotated[ShopSource, Tag("shopware")]
    | Annotated[SprykerSourceConfig, Tag("spryker")]
    | Annotated[CsvFolderSource, Tag("csv")],
    Discriminator(source_type),
]


class ErpTarget(_Strict):
    type: Literal["exact_online"] = "exact_online"
    api_url_env: str = "ERP_API_URL"
    division_env: str = "ERP_DIVISION"
    client_id_env: str = "ERP_CLIENT_ID"
    client_secret_env: str = "ERP_CLIENT_SECRET"
    refresh_token_env: str = "ERP_REFRESH_TOKEN"
    #: In sandbox mode only: the sandbox ERP when ``api_url_env`` is unset; ``none`` never.
    sandbox: Literal["erp", "none"] = "erp"
    resource_key: str | None = Field(
        default=None, description="Dagster resource key; default '<route_id>_erp'"
    )

    @field_validator(
        "api_url_env", "division_env", "client_id_env", "client_secret_env", "refresh_token_env"
    )
    @classmethod
    def _envs(cls, value: str) -> str:
        return _env_name(value)


class FilterConfig(_Strict):
    countries: Literal["EU"] | list[str] = Field(
        default="EU", description="'EU' (the EU-27) or a list of ISO 3166 alpha-2 codes"
    )
    order_states: list[Literal["open", "in_progress", "completed", "cancelled"]] | None = Field(
        default=None, description="Order states to deliver; empty means every state"
    )
    min_amount: Decimal | None = None
    max_amount: Decimal | None = None
    sales_channel_ids: list[str] | None = None

    @field_validator("countries")
    @classmethod
    def _known_countries(cls, value: Any) -> Any:
        if value == "EU":
            return value
        codes = [str(code).strip().upper() for code in value]
        unknown = sorted(set(codes) - settings.ISO_COUNTRIES)
        if unknown:
            raise ValueError(
                f"unknown ISO 3166 country code(s) {', '.join(unknown)}: expected two-letter "
                "codes like DE, NL, FR, or 'EU' for the EU-27"
            )
        if not codes:
            raise ValueError("expected at least one country code, or 'EU'")
        return codes

    def country_set(self) -> frozenset[str]:
        return settings.EU_27 if self.countries == "EU" else frozenset(self.countries)


def _check_template(value: str) -> str:
    try:
        value.format(**{name: "x" for name in TEMPLATE_FIELDS})
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(
            f"template {value!r} uses an unknown or malformed field ({exc}); available fields: "
            + ", ".join("{" + name + "}" for name in TEMPLATE_FIELDS)
        ) from None
    return value


def _vat_code(value: str) -> str:
    code = value.strip()
    if not 0 < len(code) <= MAX_VAT_CODE:
        raise ValueError(f"ERP VAT codes have 1 to {MAX_VAT_CODE} characters, got {value!r}")
    return code


class VatCodePin(_Strict):
    """The ERP VAT code for one rate, optionally only for orders shipped to one country."""

    rate: Decimal = Field(ge=0, lt=100, description="VAT rate in percent, e.g. 21 or 5.5")
    code: str = Field(description="The division's VAT code (vat/VATCodes), at most 3 characters")
    country: str | None = Field(
        default=None, description="Only for orders shipped to this country (ISO 3166 alpha-2)"
    )

    @field_validator("code")
    @classmethod
    def _code(cls, value: str) -> str:
        return _vat_code(value)

    @field_validator("country")
    @classmethod
    def _country(cls, value: str | None) -> str | None:
        if value is None:
            return None
        code = value.strip().upper()
        if code not in settings.ISO_COUNTRIES:
            raise ValueError(f"unknown ISO 3166 country code {value!r}")
        return code


class LookupTableConfig(_Strict):
    """One look-up table of ``mapping.lookups``: the shop's value -> an ERP row's code."""

    by: Literal["technical_name", "name", "id"] | None = Field(
        default=None,
        description="The shop value that is the key: the method's technicalName (Shopware "
        "6.5.7+; the default), its name, or its id. Dynamic tables go by name",
    )
    table: dict[str, str] = Field(
        default_factory=dict,
        description="Shop value -> the ERP row's Code (or its ID); keys match without case",
    )
    dynamic: bool = Field(
        default=False,
        description="Find the ERP row whose Description is the shop's name (cached), instead "
        "of a table",
    )
    default: str | None = Field(
        default=None,
        description="The ERP code for unmatched values (unmatched: default); null leaves the "
        "field off, so the ERP takes the account's own",
    )
    unmatched: Literal["quarantine", "default"] = "quarantine"

    @model_validator(mode="after")
    def _consistent(self) -> LookupTableConfig:
        if self.dynamic and self.table:
            raise ValueError("a dynamic look-up has no table: give one or the other")
        if self.dynamic and self.by not in (None, "name"):
            raise ValueError("a dynamic look-up finds the ERP row by the shop's name: by: name")
        if self.default is not None and self.unmatched != "default":
            raise ValueError("default is only used with unmatched: default")
        if not self.dynamic and not self.table and self.unmatched == "quarantine":
            raise ValueError("an empty table would quarantine every order: add entries")
        return self


class SalesChannelLookupConfig(LookupTableConfig):
    """The sales channel's table: by the channel's id, to the ERP's sales channel or
    warehouse."""

    by: Literal["id"] | None = Field(
        default=None, description="Orders name their sales channel by id (salesChannelId)"
    )
    field: Literal["SalesChannel", "WarehouseID"] = Field(
        default="SalesChannel",
        description="The sales order field set: SalesChannel (sales/SalesChannels) or "
        "WarehouseID (inventory/Warehouses)",
    )

    @model_validator(mode="after")
    def _static(self) -> SalesChannelLookupConfig:
        if self.dynamic:
            raise ValueError("an order names its sales channel by id only: give a table")
        return self


class LookupsConfig(_Strict):
    """``mapping.lookups``: the ERP's ShippingMethod, PaymentCondition and sales channel (or
    warehouse) of each order, from the shop's shipping method, payment method and channel."""

    shipping_method: LookupTableConfig | None = None
    payment_method: LookupTableConfig | None = None
    sales_channel: SalesChannelLookupConfig | None = None

    def rules(self) -> tuple[LookupRule, ...]:
        fields = {"shipping_method": "ShippingMethod", "payment_method": "PaymentCondition"}
        out = []
        for kind in ("shipping_method", "payment_method", "sales_channel"):
            table = getattr(self, kind)
            if table is None:
                continue
            by = table.by or ("name" if table.dynamic else "technical_name")
            out.append(
                LookupRule(
                    kind=kind,
                    erp_field=table.field if kind == "sales_channel" else fields[kind],
                    by="id" if kind == "sales_channel" else by,
                    table=tuple(sorted(table.table.items())),
                    dynamic=table.dynamic,
                    default=table.default,
                    unmatched=table.unmatched,
                )
            )
        return tuple(out)


class MappingConfig(_Strict):
    your_ref: str = Field(
        default="{order_number}",
        description="Template for the ERP's YourRef (the exactly-once key): unique per ERP "
        "division; routes on one division whose templates can render the same value fail to "
        "load",
    )
    description: str = "Shopware order {order_number}"
    shipping_item_code: str | None = Field(
        default=settings.SHIPPING_ITEM_CODE,
        description="ERP item for shipping costs; null to leave shipping off the order",
    )
    promotions: Literal["discount_line", "ignore"] = "discount_line"
    discount_item_code: str = settings.DISCOUNT_ITEM_CODE
    fields: dict[str, str] = Field(
        default_factory=dict,
        description="Extra sales order fields: constants or templates, e.g. Remarks",
    )
    vat_codes: list[VatCodePin] = Field(
        default_factory=list,
        description="ERP VAT codes pinned by rate (and country); other rates are looked up in "
        "the division's vat/VATCodes",
    )
    tax_free_vat_code: str | None = Field(
        default=None,
        description="ERP VAT code for tax-free orders (zero rate or reverse charge); without "
        "it such orders are quarantined",
    )
    account_match: Literal["email", "customer_number"] = Field(
        default="email",
        description="How an order finds its ERP account: by the customer's e-mail (several "
        "accounts with it quarantine the order), or by the shop's customer number kept in the "
        "account's Code (new accounts are created with it)",
    )
    lookups: LookupsConfig = Field(
        default_factory=LookupsConfig,
        description="The ERP's ShippingMethod, PaymentCondition and SalesChannel/WarehouseID "
        "from the shop's shipping method, payment method and sales channel",
    )

    @field_validator("tax_free_vat_code")
    @classmethod
    def _tax_free_code(cls, value: str | None) -> str | None:
        return None if value is None else _vat_code(value)

    @field_validator("vat_codes")
    @classmethod
    def _unique_pins(cls, value: list[VatCodePin]) -> list[VatCodePin]:
        seen: dict[tuple[Decimal, str | None], str] = {}
        for pin in value:
            key = (pin.rate, pin.country)
            if key in seen and seen[key] != pin.code:
                where = f" for {pin.country}" if pin.country else ""
                raise ValueError(
                    f"rate {pin.rate}{where} is pinned twice, to {seen[key]!r} and {pin.code!r}"
                )
            seen[key] = pin.code
        return value

    @field_validator("your_ref", "description")
    @classmethod
    def _templates(cls, value: str) -> str:
        return _check_template(value)

    @field_validator("fields")
    @classmethod
    def _field_templates(cls, value: dict[str, str]) -> dict[str, str]:
        reserved = {"OrderedBy", "YourRef", "OrderDate", "Currency", "SalesOrderLines"}
        clash = sorted(set(value) & reserved)
        if clash:
            raise ValueError(f"{', '.join(clash)} are set by the mapping and cannot be overridden")
        for template in value.values():
            _check_template(template)
        return value


class ScheduleConfig(_Strict):
    incoming: str = Field(
        default="*/5 * * * *", description="Cron of the fetch windows (one partition per tick)"
    )
    outgoing: str = Field(default="* * * * *", description="Cron of the delivery run")
    running: bool = Field(default=True, description="Schedules start running when loaded")

    @field_validator("incoming", "outgoing")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        import dagster as dg  # here, not at the top: the schema stays importable without it

        try:  # Dagster's own check, through its public API
            dg.ScheduleDefinition(name="cron_check", cron_schedule=value, job_name="cron_check")
        except dg.DagsterInvalidDefinitionError:
            raise ValueError(f"not a cron expression: {value!r} (e.g. '*/5 * * * *')") from None
        return value


class ExportConfig(_Strict):
    """Second destinations beside the ERP. Off unless a route file turns one on: an export
    writes files a warehouse reads, so it needs a folder someone chose
    (``INTEGRATION_EXPORT_DIR``)."""

    parquet: bool = Field(
        default=False,
        description="Write the delivered orders, their lines and ERP numbers as daily Parquet "
        "files (asset '<route_id>/delivered_orders_parquet', folder INTEGRATION_EXPORT_DIR)",
    )


class HooksConfig(_Strict):
    """Dotted paths (``package.module.function``) to callables, for what configuration cannot say.

    * ``before_mapping(order: dict) -> dict | None``: the shop order; None skips it.
    * ``after_mapping(payload: dict, order: dict) -> dict``: the ERP sales order.
    * ``before_send(payload: dict) -> dict``: right before the POST.

    Results are checked per order: a hook that raises, or returns something other than a
    JSON-serialisable dict (None included, except from ``before_mapping``), quarantines that
    order (``before_send``: fails it, nothing sent), naming the hook. The sales order must keep
    a non-empty ``YourRef``, and ``before_send`` must not change it (the exactly-once key).
    """

    before_mapping: str | None = None
    after_mapping: str | None = None
    before_send: str | None = None

    @field_validator("before_mapping", "after_mapping", "before_send")
    @classmethod
    def _importable(cls, value: str | None) -> str | None:
        if value is not None:
            load_hook(value)
        return value


def load_hook(path: str) -> Callable[..., Any]:
    module_name, _, attribute = path.rpartition(".")
    if not module_name:
        raise ValueError(f"hook {path!r}: expected a dotted path like 'my_package.hooks.fix'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"hook {path!r}: cannot import module {module_name!r} ({exc})") from None
    hook = getattr(module, attribute, None)
    if not callable(hook):
        raise ValueError(f"hook {path!r}: module {module_name!r} has no callable {attribute!r}")
    return hook


# --- the environment a route needs ------------------------------------------------------------


def env_is_set(name: str, environ: Mapping[str, str] | None = None) -> bool:
    """A variable counts as set when it holds something other than whitespace."""
    return bool((os.environ if environ is None else environ).get(name, "").strip())


#: Either side of a route.
Side = ShopSource | SprykerSourceConfig | CsvFolderSource | ErpTarget


def address_env(section: Side) -> str:
    """The variable that says where a side is: its URL, or a source's folder of files."""
    return section.folder_env if isinstance(section, CsvFolderSource) else section.api_url_env


def side_uses_sandbox(section: Side, on: bool, environ: Mapping[str, str]) -> bool:
    """Whether a side talks to the local sandbox: sandbox mode ``on``, its ``sandbox`` not
    ``none`` and its address variable unset in ``environ``."""
    return on and section.sandbox != "none" and not env_is_set(address_env(section), environ)


def _address_field(section: Side) -> str:
    return "folder_env" if isinstance(section, CsvFolderSource) else "api_url_env"


def _address_problem(section: Side, value: str) -> str | None:
    """Why a side's address is refused: a URL by :func:`url_problem`; a folder must be an
    absolute path (a relative one would depend on where each Dagster process started)."""
    if not isinstance(section, CsvFolderSource):
        return url_problem(value)
    if not os.path.isabs(os.path.expanduser(value.strip())):
        return "is not an absolute folder path (a relative one depends on where Dagster started)"
    return None


def _side_variables(section: BaseModel) -> list[tuple[str, str]]:
    """(field, variable) for every ``*_env`` field of a source or target, its address first."""
    names = [name for name in type(section).model_fields if name.endswith("_env")]
    return [(name, getattr(section, name)) for name in names]


def is_loopback_host(host: str) -> bool:
    """127.0.0.0/8, ::1 or ``localhost``: traffic that never leaves the machine."""
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def url_problem(url: str) -> str | None:
    """Why a shop or ERP URL is refused, or None. Credentials go over https only; plain http is
    allowed to a loopback address (the sandbox, a local proxy). The reason names the host at
    most, never the URL's user info, path or query."""
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname
    except ValueError:
        return "is not a URL (expected e.g. https://shop.example.eu)"
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not host:
        return "is not an http(s) URL with a host (expected e.g. https://shop.example.eu)"
    if scheme == "https" or is_loopback_host(host):
        return None
    return (
        f"is plain http to {host}, which would send credentials unencrypted: use https:// "
        "(plain http is only allowed to a loopback address: 127.0.0.0/8, ::1, localhost)"
    )


# --- YourRef: can two routes' templates render the same value? -----------------------------

#: A character class of the template languages: ("lit", c) the character c, ("digit", "")
#: 0-9, ("hex", "") 0-9a-f, ("any", "") any character.
_CharClass = tuple[str, str]
_ANY: _CharClass = ("any", "")
_DIGIT: _CharClass = ("digit", "")
_HEX: _CharClass = ("hex", "")
_CLASS_CHARS = {"digit": frozenset("0123456789"), "hex": frozenset("0123456789abcdef")}
#: Shopware ids: 32 lowercase hex characters.
_HEX_ID_LENGTH = 32
#: Fields that may render empty (a customer without a customer number).
_MAYBE_EMPTY_FIELDS = frozenset({"customer_number"})


def _meet(a: _CharClass, b: _CharClass) -> bool:
    """Whether one character belongs to both classes."""
    if a[0] == "any" or b[0] == "any":
        return True
    if a[0] == "lit" and b[0] == "lit":
        return a[1] == b[1]
    if a[0] == "lit":
        return a[1] in _CLASS_CHARS[b[0]]
    if b[0] == "lit":
        return b[1] in _CLASS_CHARS[a[0]]
    return True  # digit and hex share 0-9


def your_ref_tokens(
    template: str, digits: bool, *, hex_ids: bool = False
) -> list[tuple[_CharClass, bool]]:
    """The template as (class, repeat) tokens: ``repeat`` False is exactly one character of the
    class, True any number of them (none included). Compared case-insensitively (literals are
    lower-cased): Exact's look-up by YourRef does not tell upper from lower case.

    ``{order_number}`` is one or more digits when ``digits`` (the route quarantines other
    numbers), else one or more of anything; ``{shop_order_id}`` is 32 lowercase hex characters
    when ``hex_ids`` (only once the mapping quarantines other ids; it does not today), else one
    or more of anything; ``{customer_number}`` any string, possibly empty; every other field one
    or more of anything. A field with a format spec or conversion (``{order_number:.3}``) or an
    index (``{email[0]}``) is any string. Lengths are not bounded, so the languages are
    supersets of what the mapping renders: the check never misses a collision."""
    tokens: list[tuple[_CharClass, bool]] = []

    def some(cls: _CharClass) -> None:  # one or more
        tokens.extend([(cls, False), (cls, True)])

    for literal, field, spec, conversion in Formatter().parse(template):
        tokens.extend((("lit", char), False) for char in literal.lower())
        if field is None:
            continue
        if spec or conversion or field not in TEMPLATE_FIELDS or field in _MAYBE_EMPTY_FIELDS:
            tokens.append((_ANY, True))
        elif field == "order_number":
            some(_DIGIT if digits else _ANY)
        elif field == "shop_order_id" and hex_ids:
            tokens.extend([(_HEX, False)] * _HEX_ID_LENGTH)
        else:
            some(_ANY)
    return tokens


def _automaton(
    tokens: list[tuple[_CharClass, bool]],
) -> tuple[list[list[tuple[_CharClass, int]]], list[list[int]]]:
    """A nondeterministic automaton: states 0..len(tokens), the last accepting. Token i moves
    state i to i+1 on one character of its class; a repeated token loops on state i and moves
    to i+1 without a character instead. Each state loops on at most one class."""
    moves: list[list[tuple[_CharClass, int]]] = [[] for _ in range(len(tokens) + 1)]
    free: list[list[int]] = [[] for _ in range(len(tokens) + 1)]
    for index, (cls, repeat) in enumerate(tokens):
        if repeat:
            moves[index].append((cls, index))
            free[index].append(index + 1)
        else:
            moves[index].append((cls, index + 1))
    return moves, free


def templates_can_collide(
    a: str, a_digits: bool, b: str, b_digits: bool, *, hex_ids: bool = False
) -> bool:
    """Whether YourRef template ``a`` (order numbers all digits when ``a_digits``) and ``b`` can
    render the same value (ignoring case) for some two orders: the two template languages
    (:func:`your_ref_tokens`) intersect. Decided exactly by a breadth-first search over the
    product of their automata, where a step on both needs one character in both classes."""
    moves_a, free_a = _automaton(your_ref_tokens(a, a_digits, hex_ids=hex_ids))
    moves_b, free_b = _automaton(your_ref_tokens(b, b_digits, hex_ids=hex_ids))
    final = (len(moves_a) - 1, len(moves_b) - 1)
    seen = {(0, 0)}
    queue = deque(seen)
    while queue:
        state = queue.popleft()
        if state == final:
            return True
        i, j = state
        following = [(i2, j) for i2 in free_a[i]] + [(i, j2) for j2 in free_b[j]]
        following += [
            (i2, j2) for cls_a, i2 in moves_a[i] for cls_b, j2 in moves_b[j] if _meet(cls_a, cls_b)
        ]
        for pair in following:
            if pair not in seen:
                seen.add(pair)
                queue.append(pair)
    return False


def parse_duration(value: Any) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return timedelta(seconds=value)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"expected a duration like '15m', '1h' or '30s', got {value!r}")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


class WritebackConfig(_Strict):
    """After delivery, the ERP's order number written onto the shop order (Shopware sources
    only), once per order: as a custom field, or as a tag (``writeback.py``)."""

    enabled: bool = False
    mode: Literal["custom_field", "tag"] = "custom_field"
    custom_field: str = Field(
        default="erp_order_number",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$",
        description="The order's custom field that gets the number (merged, others kept)",
    )
    tag_template: str = Field(
        default="ERP {erp_order_number}",
        min_length=1,
        max_length=255,
        description="The tag's name; fields {erp_order_number} and {order_number}",
    )
    max_per_run: int = Field(default=200, ge=1, le=5000, description="Most writes per run")
    pause_s: float = Field(default=0.1, ge=0, le=10, description="Pause between two writes")

    @field_validator("tag_template")
    @classmethod
    def _tag_template(cls, value: str) -> str:
        try:
            value.format(erp_order_number=1, order_number="1")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(
                f"template {value!r} uses an unknown or malformed field ({exc}); available "
                "fields: {erp_order_number}, {order_number}"
            ) from None
        return value


def _writeback_source(value: WritebackConfig, info: ValidationInfo) -> WritebackConfig:
    """Write-back speaks Shopware's Admin API: refused for any other source, at load."""
    source = info.data.get("source")
    if value.enabled and source is not None and source.type != "shopware":
        raise ValueError(
            f"writeback.enabled: the ERP order number can only be written back to a Shopware "
            f"shop, and this route's source.type is {source.type!r}; remove the writeback "
            "section or set enabled: false"
        )
    return value


class RouteConfig(_Strict):
    name: str = Field(min_length=1, max_length=80)
    description: str = ""
    source: SourceConfig = Field(default_factory=ShopSource)
    target: ErpTarget = Field(default_factory=ErpTarget)
    filter: FilterConfig = Field(default_factory=FilterConfig)
    mapping: MappingConfig = Field(default_factory=MappingConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    hooks: HooksConfig = Field(default_factory=HooksConfig)
    page_size: int = Field(default=settings.DEFAULT_PAGE_SIZE, ge=1, le=500)
    lookback: timedelta = Field(
        default=timedelta(0),
        description="Also re-read this much before each window (late_orders makes this "
        "unnecessary for a shop that numbers its orders)",
    )
    late_orders: timedelta = Field(
        default=timedelta(days=1),
        description="Each fetch also asks the shop for orders it stored since the route's last "
        "fetch (by autoIncrement) that were created up to this long before the window's end: "
        "late orders are staged under their own window and mapped by the next run; '0m' turns "
        "it off (older ones, e.g. an import of last year's orders, are left alone)",
    )
    partitions_start: str | None = Field(
        default=None,
        description="First window, 'YYYY-MM-DD-HH:MM' (UTC): how far back the UI and backfills "
        "reach. Unset: the sandbox world's start under `dev.py up`, else "
        f"{settings.PARTITIONS_START}",
    )
    personal_data_retention: timedelta = Field(
        default=timedelta(days=30),
        description="Keep customers' personal data this long after an order is delivered or "
        "skipped, e.g. '30d' (at least 1 day); README 'Personal data'",
    )
    writeback: Annotated[WritebackConfig, AfterValidator(_writeback_source)] = WritebackConfig()
    export: ExportConfig = Field(default_factory=ExportConfig)

    @field_validator("lookback", "late_orders", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> timedelta:
        duration = parse_duration(value)
        if duration < timedelta(0) or duration > timedelta(days=7):
            raise ValueError("expected a duration between 0 and 7 days, e.g. '1h' or '1d'")
        return duration

    @field_validator("partitions_start")
    @classmethod
    def _window_start(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            settings.parse_window_start(value)
        except ValueError:
            raise ValueError(
                f"expected a window start 'YYYY-MM-DD-HH:MM' (UTC), got {value!r}"
            ) from None
        return value

    @field_validator("personal_data_retention", mode="before")
    @classmethod
    def _retention(cls, value: Any) -> timedelta:
        duration = parse_duration(value)
        if duration < timedelta(days=1):
            raise ValueError(f"expected a retention of at least 1 day, like '30d', got {value!r}")
        return duration

    @model_validator(mode="after")
    def _slug(self) -> RouteConfig:
        slugify(self.name)
        return self

    @property
    def id(self) -> str:
        return slugify(self.name)

    @property
    def shop_key(self) -> str:
        return self.source.resource_key or f"{self.id}_shop"

    @property
    def erp_key(self) -> str:
        return self.target.resource_key or f"{self.id}_erp"

    @property
    def order_number_digits_only(self) -> bool:
        """``source.order_number_format == "digits"``: the mapping quarantines an order whose
        number does not fullmatch ``transforms.ORDER_NUMBER_DIGITS`` (the YourRef collision
        check between routes relies on it)."""
        return self.source.order_number_format == "digits"

    def rules(self) -> MappingRules:
        return MappingRules(
            allowed_countries=self.filter.country_set(),
            order_states=frozenset(self.filter.order_states or ()),
            min_amount=self.filter.min_amount,
            max_amount=self.filter.max_amount,
            sales_channel_ids=frozenset(self.filter.sales_channel_ids or ()),
            shipping_item_code=self.mapping.shipping_item_code,
            discount_item_code=self.mapping.discount_item_code,
            promotions=self.mapping.promotions,
            description_template=self.mapping.description,
            your_ref_template=self.mapping.your_ref,
            extra_fields=tuple(sorted(self.mapping.fields.items())),
            tax_free_vat_code=self.mapping.tax_free_vat_code,
            vat_codes=tuple(
                VatPin(pin.rate, pin.code, pin.country) for pin in self.mapping.vat_codes
            ),
            shop_timezone=self.source.timezone,
            order_number_digits_only=self.order_number_digits_only,
            lookups=self.mapping.lookups.rules(),
        )

    def _sides(self) -> tuple[tuple[str, Side], ...]:
        return (("source", self.source), ("target", self.target))

    def uses_sandbox(
        self,
        side: Literal["source", "target"],
        *,
        sandbox: bool | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> bool:
        """Whether that side talks to the local sandbox: only in sandbox mode, when the side's
        URL variable is unset and its ``sandbox`` is not ``none``."""
        env = os.environ if environ is None else environ
        on = settings.sandbox_mode(env) if sandbox is None else sandbox
        return side_uses_sandbox(self.source if side == "source" else self.target, on, env)

    def missing_env(
        self, *, sandbox: bool | None = None, environ: Mapping[str, str] | None = None
    ) -> list[tuple[str, str]]:
        """(field, variable) pairs that must be set but are not. Every variable of a side must
        be set, unless the side uses the sandbox (:meth:`uses_sandbox`). ``sandbox`` and
        ``environ`` default to sandbox mode and the process environment, read now."""
        env = os.environ if environ is None else environ
        on = settings.sandbox_mode(env) if sandbox is None else sandbox
        missing: list[tuple[str, str]] = []
        for side, section in self._sides():
            if side_uses_sandbox(section, on, env):
                continue
            missing += [
                (f"{side}.{name}", variable)
                for name, variable in _side_variables(section)
                if not env_is_set(variable, env)
            ]
        return missing

    def env_problems(
        self, *, sandbox: bool | None = None, environ: Mapping[str, str] | None = None
    ) -> list[str]:
        """Why the environment cannot run this route, one message per problem (empty: it can):
        unset variables, credentials set without their URL, URLs refused by :func:`url_problem`.
        Messages name fields and variables, never a value (a URL at most by its host)."""
        env = os.environ if environ is None else environ
        on = settings.sandbox_mode(env) if sandbox is None else sandbox
        missing = dict(self.missing_env(sandbox=on, environ=env))
        problems: list[str] = []
        for side, section in self._sides():
            url_var = address_env(section)
            url_field = f"{side}.{_address_field(section)}"
            if env_is_set(url_var, env):
                problem = _address_problem(section, env[url_var])
                if problem:
                    problems.append(f"{url_field}: {url_var} {problem}")
            elif url_field in missing:
                credentials = [
                    variable
                    for name, variable in _side_variables(section)
                    if variable != url_var and env_is_set(variable, env)
                ]
                if credentials:  # never send them to a default address: say so
                    problems.append(
                        f"{url_field}: {', '.join(credentials)} "
                        f"{'is' if len(credentials) == 1 else 'are'} set but {url_var} is not; "
                        f"set {url_var} to the system they belong to"
                    )
                    del missing[url_field]
        problems += [
            f"{field}: environment variable {variable} is not set"
            for field, variable in missing.items()
        ]
        if (
            problems
            and not on
            and any(
                section.sandbox != "none" and not env_is_set(address_env(section), env)
                for _, section in self._sides()
            )
        ):
            problems.append(
                f"sandbox mode is off, so every variable a route names must be set "
                f"({settings.SANDBOX_MODE_ENV}=1 uses the local sandbox where a URL or folder "
                "variable is unset)"
            )
        return problems

    def erp_division(
        self, *, sandbox: bool | None = None, environ: Mapping[str, str] | None = None
    ) -> tuple[str, str] | None:
        """The ERP division this route delivers to, as (URL, division) with the URL lower-cased
        and without a trailing slash; the sandbox ERP's when the target uses it. None when the
        variables are not set (the route cannot load then anyway)."""
        env = os.environ if environ is None else environ
        target = self.target
        if self.uses_sandbox("target", sandbox=sandbox, environ=env):
            url, division = settings.SANDBOX_ERP_URL, settings.SANDBOX_ERP_DIVISION
        elif env_is_set(target.api_url_env, env) and env_is_set(target.division_env, env):
            url, division = env[target.api_url_env], env[target.division_env]
        else:
            return None
        return url.strip().rstrip("/").lower(), division.strip()
