"""The route definition: what one YAML file under ``defs/`` says, validated by pydantic.

A route has a name (its id is a slug of it), a source shop, a target ERP, a filter, mapping
rules, hooks, schedules and paging settings. Everything has a default that reproduces the
reference route, so a new route can be a handful of lines.

No Dagster here: the schema is plain pydantic, so it can be validated and tested on its own;
``integration_project.components`` turns a validated route into Dagster definitions.
"""

from __future__ import annotations

import importlib
import os
import re
import unicodedata
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from integration_project import settings
from integration_project.exact.models import MAX_VAT_CODE
from integration_project.transforms import TEMPLATE_FIELDS, MappingRules, VatPin

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


class ShopSource(_Strict):
    """Where orders come from. Secrets are named by environment variable, never written here."""

    type: Literal["shopware"] = "shopware"
    api_url_env: str = "SHOP_API_URL"
    client_id_env: str = "SHOP_CLIENT_ID"
    client_secret_env: str = "SHOP_CLIENT_SECRET"
    #: Used when ``api_url_env`` is not set: one of the local sandbox shops ("shop" or "shop2").
    #: ``none`` means the variables are required.
    sandbox: Literal["shop", "shop2", "none"] = "shop"
    resource_key: str | None = Field(
        default=None, description="Dagster resource key; default '<route_id>_shop'"
    )
    timezone: str = Field(
        default=settings.DEFAULT_SHOP_TIMEZONE,
        description="The shop's IANA time zone: the ERP's OrderDate is the order's date there",
    )

    @field_validator("api_url_env", "client_id_env", "client_secret_env")
    @classmethod
    def _envs(cls, value: str) -> str:
        return _env_name(value)

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {value!r}: expected an IANA name like Europe/Amsterdam"
            ) from None
        return value


class ErpTarget(_Strict):
    type: Literal["exact_online"] = "exact_online"
    api_url_env: str = "ERP_API_URL"
    division_env: str = "ERP_DIVISION"
    client_id_env: str = "ERP_CLIENT_ID"
    client_secret_env: str = "ERP_CLIENT_SECRET"
    refresh_token_env: str = "ERP_REFRESH_TOKEN"
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


class MappingConfig(_Strict):
    your_ref: str = Field(
        default="{order_number}",
        description="Template for the ERP's YourRef (the exactly-once key): unique per route",
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


class HooksConfig(_Strict):
    """Dotted paths (``package.module.function``) to callables, for what configuration cannot say.

    * ``before_mapping(order: dict) -> dict | None``: the shop order; None skips it.
    * ``after_mapping(payload: dict, order: dict) -> dict``: the ERP sales order.
    * ``before_send(payload: dict) -> dict``: right before the POST.
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


def parse_duration(value: Any) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return timedelta(seconds=value)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"expected a duration like '15m', '1h' or '30s', got {value!r}")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


class RouteConfig(_Strict):
    name: str = Field(min_length=1, max_length=80)
    description: str = ""
    source: ShopSource = Field(default_factory=ShopSource)
    target: ErpTarget = Field(default_factory=ErpTarget)
    filter: FilterConfig = Field(default_factory=FilterConfig)
    mapping: MappingConfig = Field(default_factory=MappingConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    hooks: HooksConfig = Field(default_factory=HooksConfig)
    page_size: int = Field(default=settings.DEFAULT_PAGE_SIZE, ge=1, le=500)
    lookback: timedelta = Field(
        default=timedelta(0),
        description="Also re-read this much before each window, for orders that arrive late",
    )
    partitions_start: str = Field(
        default=settings.PARTITIONS_START, description="First window, 'YYYY-MM-DD-HH:MM' (UTC)"
    )

    @field_validator("lookback", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> timedelta:
        duration = parse_duration(value)
        if duration < timedelta(0) or duration > timedelta(days=7):
            raise ValueError("expected a look-back between 0 and 7 days")
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
        )

    def missing_env(self) -> list[tuple[str, str]]:
        """(field, variable) pairs that must be set but are not, given the sandbox fallbacks."""
        missing: list[tuple[str, str]] = []
        for side, section in (("source", self.source), ("target", self.target)):
            url_var = section.api_url_env
            if url_var in os.environ:
                names = [f for f in type(section).model_fields if f.endswith("_env")]
                missing += [
                    (f"{side}.{f}", getattr(section, f))
                    for f in names
                    if getattr(section, f) not in os.environ
                ]
            elif section.sandbox == "none":
                missing.append((f"{side}.api_url_env", url_var))
        return missing
