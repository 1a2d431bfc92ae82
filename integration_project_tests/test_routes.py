"""Routes as configuration: the YAML schema, loading route files as components, several routes
in one instance, dry runs and hooks."""

from __future__ import annotations

import sys
import textwrap
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from dagster_duckdb import DuckDBResource
from pydantic import ValidationError

from integration_project import settings
from integration_project.assets import build_route_assets
from integration_project.components.order_route import load_routes
from integration_project.resources import ErpResource, ShopResource, open_ledger
from integration_project.routes.config import RouteConfig, slugify
from integration_project.sandbox import Sandbox
from integration_project_testkit.invoices import assert_invoiced_as_paid, by_ref
from integration_project_testkit.ledger_reads import delivered_rows
from integration_project_testkit.resources import make_resources
from integration_project_testkit.routes import default_assets, shipped_route
from integration_project_testkit.windows import WINDOW_END, WINDOW_KEY, WINDOW_START

DEFAULT = default_assets()

# --- the schema ----------------------------------------------------------------------------


#: The columns every CSV route must declare.
CSV_COLUMNS = {
    "order_number": "Order",
    "created_at": "Date",
    "customer_email": "Email",
    "shipping_country": "Country",
    "product_number": "SKU",
    "quantity": "Qty",
    "unit_price": "Price",
    "tax_rate": "VAT",
}


def test_a_route_needs_only_a_name() -> None:
    route = RouteConfig.model_validate({"name": "Orders to Exact"})
    assert route.id == "orders_to_exact"
    assert route.filter.country_set() == settings.EU_27
    assert route.schedule.incoming == "*/5 * * * *"
    assert route.shop_key == "orders_to_exact_shop"


def test_slugs_are_valid_dagster_names() -> None:
    assert slugify("EU orders: Shopware → Exact (NL/BE)") == "eu_orders_shopware_exact_nl_be"
    assert slugify("2nd shop") == "route_2nd_shop"
    assert slugify("Café Crème") == "cafe_creme"


@pytest.mark.parametrize(
    ("attributes", "field", "expected"),
    [
        ({"filter": {"countries": ["DE", "XX"]}}, "filter.countries", "XX"),
        ({"filter": {"countries": []}}, "filter.countries", "at least one"),
        ({"filter": {"order_states": ["shipped"]}}, "filter.order_states", "open"),
        ({"lookback": "an hour"}, "lookback", "15m"),
        ({"page_size": 0}, "page_size", "greater than or equal to 1"),
        ({"mapping": {"your_ref": "{order_nr}"}}, "mapping.your_ref", "{order_number}"),
        ({"mapping": {"fields": {"YourRef": "x"}}}, "mapping.fields", "cannot be overridden"),
        ({"schedule": {"incoming": "every 5 minutes"}}, "schedule.incoming", "cron"),
        ({"schedule": {"outgoing": "61 * * * *"}}, "schedule.outgoing", "not a cron"),
        ({"source": {"timezone": "Europe/Amsterdm"}}, "source.timezone", "Europe/Amsterdam"),
        ({"mapping": {"tax_free_vat_code": "ICL1"}}, "mapping.tax_free_vat_code", "1 to 3"),
        ({"mapping": {"vat_codes": [{"rate": 21, "code": "V210"}]}}, "mapping.vat_codes", "1 to 3"),
        (
            {"mapping": {"vat_codes": [{"rate": 21, "code": "2", "country": "XX"}]}},
            "mapping.vat_codes",
            "'XX'",
        ),
        (
            {"mapping": {"vat_codes": [{"rate": 21, "code": "2"}, {"rate": 21.0, "code": "3"}]}},
            "mapping.vat_codes",
            "pinned twice, to '2' and '3'",
        ),
        ({"mapping": {"vat_codes": [{"rate": 100, "code": "2"}]}}, "mapping.vat_codes", "100"),
        ({"source": {"client_secret_env": "my secret"}}, "source.client_secret_env", "SHOP_API"),
        ({"hooks": {"before_send": "no_such_module.fn"}}, "hooks.before_send", "cannot import"),
        (
            {"hooks": {"before_send": "integration_project_testkit.broken_hooks.not_callable"}},
            "hooks.before_send",
            "no callable",
        ),
        ({"colour": "blue"}, "colour", "Extra inputs are not permitted"),
        ({"source": {"type": "magento"}}, "source", "expected tags: 'shopware', 'spryker', 'csv'"),
        (
            {"source": {"type": "spryker", "client_id_env": "X"}},
            "source.spryker.client_id_env",
            "Extra inputs are not permitted",
        ),
        ({"source": {"type": "spryker", "ids_per_request": 5000}}, "ids_per_request", "1000"),
        ({"source": {"type": "csv"}}, "source.csv.columns", "Field required"),
        (
            {"source": {"type": "csv", "columns": {"order_number": "No"}}},
            "source.csv.columns",
            "required fields not declared: created_at",
        ),
        (
            {"source": {"type": "csv", "columns": CSV_COLUMNS, "delimiter": "#"}},
            "source.csv.delimiter",
            "is not one of",
        ),
        ({"partitions_start": "2026-11-01"}, "partitions_start", "YYYY-MM-DD-HH:MM"),
        ({"name": "***"}, "name", "no letters or digits"),
    ],
)
def test_bad_route_config_names_the_field_and_what_was_expected(
    attributes: dict[str, Any], field: str, expected: str
) -> None:
    with pytest.raises(ValidationError) as raised:
        RouteConfig.model_validate({"name": "Test route", **attributes})
    message = str(raised.value)
    assert field in message or field.split(".")[0] in message
    assert expected in message


def test_a_connector_route_file_loads_and_an_unknown_type_names_file_and_field(
    tmp_path: Path,
) -> None:
    csv = "\n".join(f"      {k}: {v}" for k, v in CSV_COLUMNS.items())
    (tmp_path / "good").mkdir()
    (tmp_path / "bad").mkdir()
    good = make_project(
        tmp_path / "good",
        {
            "files": f"attributes:\n  name: Files\n  mapping:\n    your_ref: F-{{order_number}}\n"
            f"  source:\n    type: csv\n    columns:\n{csv}\n",
            "spryker": "attributes:\n  name: Spryker\n  mapping:\n    your_ref: S-{order_number}\n"
            "  source:\n    type: spryker\n",
        },
    )
    defs = load_project(good)
    names = {sensor.name for sensor in defs.sensors or []}
    assert "files__order_files_sensor" in names
    keys = {spec.key.to_user_string() for a in defs.assets or [] for spec in a.specs}
    assert keys >= {
        "files/source_orders",
        "spryker/source_orders",
    }
    bad = make_project(
        tmp_path / "bad",
        {"odd": "attributes:\n  name: Odd\n  source:\n    type: magento\n"},
    )
    with pytest.raises(Exception) as raised:
        load_project(bad)
    text = error_text(raised.value)
    assert "odd/defs.yaml" in text and "source" in text and "'shopware', 'spryker', 'csv'" in text


# --- route files as components -------------------------------------------------------------

_ROUTE_TYPE = "type: integration_project.components.OrderRoute"


def make_project(tmp_path: Path, routes: dict[str, str]) -> Path:
    """A throwaway dg project whose defs/ holds the given route files."""
    package = f"routes_{tmp_path.parent.name}_{tmp_path.name}".replace("-", "_")
    (tmp_path / "pyproject.toml").write_text(
        textwrap.dedent(
            f"""
            [tool.dg]
            directory_type = "project"
            [tool.dg.project]
            root_module = "{package}"
            """
        )
    )
    defs = tmp_path / package / "defs"
    defs.mkdir(parents=True)
    (tmp_path / package / "__init__.py").write_text("")
    for folder, body in routes.items():
        (defs / folder).mkdir()
        (defs / folder / "defs.yaml").write_text(_ROUTE_TYPE + "\n" + textwrap.dedent(body))
    sys.path.insert(0, str(tmp_path))
    return tmp_path


def load_project(root: Path) -> dg.Definitions:
    try:
        return load_routes(root)
    finally:
        sys.path.remove(str(root))


def error_text(exc: BaseException) -> str:
    parts = []
    while exc is not None:
        parts.append(str(exc))
        exc = exc.__cause__ or exc.__context__
    return "\n".join(parts)


def test_a_new_route_in_under_ten_lines_of_yaml(tmp_path: Path) -> None:
    root = make_project(
        tmp_path,
        {
            "nl_orders": """
            attributes:
              name: NL orders
              filter:
                countries: [NL]
            """
        },
    )
    defs = dg.Definitions.merge(
        load_project(root),
        dg.Definitions(resources={"duckdb": DuckDBResource(database=":memory:")}),
    )
    dg.Definitions.validate_loadable(defs)
    keys = {key.to_user_string() for key in defs.resolve_all_asset_keys()}
    assert keys == {
        "nl_orders/source_orders",
        "nl_orders/erp_orders",
        "nl_orders/erp_delivered_orders",
    }
    assert {s.name for s in defs.schedules} == {
        "nl_orders__source_orders_schedule",
        "nl_orders__erp_delivery_schedule",
        # Personal data older than the route's retention is blanked once a day.
        "nl_orders__personal_data_retention_schedule",
    }


def test_partitions_start_where_the_route_file_says_else_at_the_sandbox_worlds_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A route file's ``partitions_start`` wins; without one, sandbox mode starts the windows
    where ``dev.py up``'s sandbox world starts (``INTEGRATION_SANDBOX_START``), so the catalog
    shows that world's windows, not weeks of empty ones; outside sandbox mode the fixed
    default applies."""
    root = make_project(
        tmp_path,
        {
            "pinned": "attributes:\n  name: Pinned\n  partitions_start: 2026-10-05-08:30\n",
            "unpinned": "attributes:\n  name: Unpinned\n"
            "  mapping:\n    your_ref: 'U-{order_number}'\n",
        },
    )

    def starts() -> dict[str, str]:
        if str(root) not in sys.path:  # load_project takes it out again
            sys.path.insert(0, str(root))
        defs = dg.Definitions.merge(
            load_project(root),
            dg.Definitions(resources={"duckdb": DuckDBResource(database=":memory:")}),
        )
        return {
            route: defs.resolve_assets_def(
                dg.AssetKey([route, "source_orders"])
            ).partitions_def.start.strftime("%Y-%m-%d-%H:%M")
            for route in ("pinned", "unpinned")
        }

    monkeypatch.setenv(settings.SANDBOX_START_ENV, "2026-12-02-04:00")
    assert starts() == {"pinned": "2026-10-05-08:30", "unpinned": "2026-12-02-04:00"}
    monkeypatch.setenv(settings.SANDBOX_START_ENV, "yesterday")
    with pytest.raises(Exception) as raised:
        starts()
    assert "INTEGRATION_SANDBOX_START='yesterday' is not a window start" in error_text(raised.value)
    monkeypatch.setenv(settings.SANDBOX_START_ENV, "2026-12-02-04:00")
    monkeypatch.setenv(settings.SANDBOX_MODE_ENV, "0")
    for name in ("SHOP", "ERP"):
        monkeypatch.setenv(f"{name}_API_URL", f"https://{name.lower()}.example.com")
    for name in ("SHOP_CLIENT_ID", "SHOP_CLIENT_SECRET", "ERP_DIVISION", "ERP_CLIENT_ID"):
        monkeypatch.setenv(name, "1234")
    monkeypatch.setenv("ERP_CLIENT_SECRET", "x")
    monkeypatch.setenv("ERP_REFRESH_TOKEN", "x")
    assert starts() == {"pinned": "2026-10-05-08:30", "unpinned": settings.PARTITIONS_START}


def test_a_broken_route_file_fails_loudly_naming_file_line_and_field(tmp_path: Path) -> None:
    root = make_project(
        tmp_path,
        {
            "good": "attributes:\n  name: Good route\n",
            "broken": """
            attributes:
              name: Broken route
              filter:
                countries: [DE, XX]
            """,
        },
    )
    with pytest.raises(Exception) as raised:
        load_project(root)
    text = error_text(raised.value)
    assert "broken/defs.yaml" in text
    assert "filter.countries" in text and "XX" in text


def test_two_routes_with_the_same_id_name_both_files(tmp_path: Path) -> None:
    root = make_project(
        tmp_path,
        {"a": "attributes:\n  name: Same name\n", "b": "attributes:\n  name: Same  NAME\n"},
    )
    with pytest.raises(Exception) as raised:
        load_project(root)
    text = error_text(raised.value)
    assert "same_name" in text and "a/defs.yaml" in text and "b/defs.yaml" in text


def test_missing_secret_variable_fails_at_load_time(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("ACME_SHOP_URL", "https://shop.acme.example")
    monkeypatch.delenv("ACME_SHOP_SECRET", raising=False)
    monkeypatch.setenv("ACME_SHOP_ID", "acme")
    root = make_project(
        tmp_path,
        {
            "acme": """
            attributes:
              name: ACME
              source:
                api_url_env: ACME_SHOP_URL
                client_id_env: ACME_SHOP_ID
                client_secret_env: ACME_SHOP_SECRET
                sandbox: none
            """
        },
    )
    with pytest.raises(Exception) as raised:
        load_project(root)
    text = error_text(raised.value)
    assert "acme/defs.yaml" in text
    assert "source.client_secret_env" in text and "ACME_SHOP_SECRET" in text


# --- several routes, one instance ----------------------------------------------------------


@pytest.fixture
def two_shops() -> Any:
    with Sandbox(seed=11, second_shop=True) as sb:
        yield sb


def b2b_resources(sb: Sandbox, duckdb_path: str) -> dict[str, Any]:
    route = shipped_route("b2b_orders_shopware_to_exact")
    base = make_resources(sb, duckdb_path)
    return {
        **base,
        route.shop_key: ShopResource(
            api_url=sb.shop2_url,
            client_id=settings.SANDBOX_SHOP2_CLIENT_ID,
            client_secret=settings.SANDBOX_SHOP2_CLIENT_SECRET,
            max_retries=1,
        ),
        route.erp_key: base["erp"],
    }


def materialize_route(assets, resources, **kwargs: Any) -> None:  # type: ignore[no-untyped-def]
    assert dg.materialize(
        [assets.source_orders, assets.erp_orders],
        partition_key=WINDOW_KEY,
        resources=resources,
        **kwargs,
    ).success
    assert dg.materialize([assets.erp_delivered_orders], resources=resources, **kwargs).success


@pytest.mark.integration
def test_two_routes_in_one_instance_keep_separate_ledgers(
    two_shops: Sandbox, duckdb_path: str, dagster_instance: dg.DagsterInstance
) -> None:
    sb = two_shops
    sb.shop.add_orders(6, start=WINDOW_START, end=WINDOW_END)
    for state in ("open", "in_progress", "completed", "cancelled"):
        sb.shop2.add_order(WINDOW_START, shipping_country="NL", state=state)
    sb.shop2.add_order(WINDOW_START, shipping_country="FR")  # EU, but not this route's
    sb.shop2.add_order(WINDOW_START, shipping_country="DE", tax_status="net")  # B2B at home
    sb.shop2.add_order(WINDOW_START, shipping_country="CH")  # an export: tax-free
    b2b = build_route_assets(shipped_route("b2b_orders_shopware_to_exact"))
    resources = b2b_resources(sb, duckdb_path)

    materialize_route(DEFAULT, resources, instance=dagster_instance)
    materialize_route(b2b, resources, instance=dagster_instance)

    refs = Counter(order["YourRef"] for order in sb.erp.sales_orders)
    expected_default = {
        t.order_number for t in sb.shop.truth_between(WINDOW_START, WINDOW_END) if t.expected_in_erp
    }
    expected_b2b = {
        f"B2B-{t.order_number}"
        for t in sb.shop2.truth_between(WINDOW_START, WINDOW_END)
        if t.state in ("open", "in_progress") and t.shipping_country in ("NL", "DE", "CH")
    }
    assert len(expected_b2b) == 4
    assert set(refs) == expected_default | expected_b2b
    assert set(refs.values()) == {1}
    # Gross, net and tax-free orders alike: the ERP invoices what each customer paid.
    statuses = {t.tax_status for t in sb.shop2.truth.values() if f"B2B-{t.order_number}" in refs}
    assert statuses >= {"net", "tax-free"}
    shop_orders = {
        **by_ref(sb.shop.orders.values()),
        **by_ref(sb.shop2.orders.values(), "B2B-{}"),
    }
    assert assert_invoiced_as_paid(sb.erp, shop_orders) == len(refs)
    tax_free = [o for o in sb.erp.sales_orders if o["VATAmount"] == 0]
    assert tax_free and all(
        line["VATCode"].strip() == "ICL" for o in tax_free for line in o["SalesOrderLines"]
    )

    duckdb = resources["duckdb"]
    assert isinstance(duckdb, DuckDBResource)
    erp = resources["erp"]
    assert isinstance(erp, ErpResource)
    default_ledger = open_ledger(duckdb, DEFAULT.route.id, erp.token_key)
    b2b_ledger = open_ledger(duckdb, b2b.route.id, erp.token_key)
    assert {r["order_number"] for r in delivered_rows(default_ledger)} == expected_default
    assert {r["your_ref"] for r in delivered_rows(b2b_ledger)} == expected_b2b
    # Each route sends only its own: running them again sends nothing.
    materialize_route(DEFAULT, resources, instance=dagster_instance)
    materialize_route(b2b, resources, instance=dagster_instance)
    assert len(sb.erp.sales_orders) == len(refs)
    # One token chain for the shared ERP, not one per route.
    assert sb.erp.token_refreshes == 1


@pytest.mark.integration
def test_dry_run_previews_payloads_and_sends_nothing(sandbox: Sandbox, resources) -> None:
    sandbox.shop.add_orders(3, start=WINDOW_START, end=WINDOW_END)
    assert dg.materialize(
        [DEFAULT.source_orders, DEFAULT.erp_orders], partition_key=WINDOW_KEY, resources=resources
    ).success
    config = dg.RunConfig(
        ops={"eu_orders_shopware_to_exact__erp_delivered_orders": {"config": {"dry_run": True}}}
    )
    result = dg.materialize([DEFAULT.erp_delivered_orders], resources=resources, run_config=config)
    [event] = result.get_asset_materialization_events()
    meta = {k: v.value for k, v in event.materialization.metadata.items()}
    assert meta["would_send"] == 3 and meta["sent"] == 0
    assert '"YourRef"' in meta["payload_preview"]
    assert not sandbox.erp.sales_orders
    assert sandbox.erp.calls.get("salesorders_post", 0) == 0
    # Nothing was claimed either: the ledger holds no delivery, and the next real run sends all.
    duckdb, erp = resources["duckdb"], resources["erp"]
    ledger = open_ledger(duckdb, DEFAULT.route.id, erp.token_key)
    assert ledger.views.delivery_counts() == {}
    result = dg.materialize([DEFAULT.erp_delivered_orders], resources=resources)
    [event] = result.get_asset_materialization_events()
    assert event.materialization.metadata["sent"].value == 3
    assert len(sandbox.erp.sales_orders) == 3


@pytest.mark.integration
def test_hooks_change_what_is_sent(sandbox: Sandbox, resources) -> None:
    sandbox.shop.add_orders(4, start=WINDOW_START, end=WINDOW_END, shipping_country="DE")
    hooked = build_route_assets(
        shipped_route(
            hooks={
                "before_mapping": "examples.hooks.drop_even_orders",
                "after_mapping": "examples.hooks.shout_description",
                "before_send": "examples.hooks.tag_remarks",
            }
        )
    )
    materialize_route(hooked, resources)
    sent = sandbox.erp.sales_orders
    assert sent and all(int(o["YourRef"]) % 2 == 1 for o in sent)
    assert len(sent) == 2
    assert all(o["Remarks"] == "sent by the hook test" for o in sent)
    assert all(o["Description"].startswith("SHOPWARE ORDER ") for o in sent)


def test_vat_codes_tax_free_code_and_time_zone_reach_the_mapping_rules() -> None:
    route = RouteConfig.model_validate(
        {
            "name": "Belgian shop",
            "source": {"timezone": "Europe/Brussels"},
            "mapping": {
                "tax_free_vat_code": " 0 ",
                "vat_codes": [
                    {"rate": 21, "code": "2"},
                    {"rate": 6, "code": "B6", "country": "be"},
                ],
            },
        }
    )

    rules = route.rules()

    assert rules.shop_timezone == "Europe/Brussels"
    assert rules.tax_free_vat_code == "0"
    assert rules.pinned_vat_code(Decimal("21.0"), "NL") == "2"
    assert rules.pinned_vat_code(Decimal(6), "BE") == "B6"
    assert rules.pinned_vat_code(Decimal(6), "NL") is None
