"""Fail closed: the sandbox only when asked for (``INTEGRATION_SANDBOX``), https to real systems,
``YourRef`` unique per ERP division, and a ledger file only its owner can read.

Whether a route loads depends on the environment, so every load here runs in a fresh Python
process with an environment built from scratch (nothing inherited from the test session's
sandbox mode): the shipped code location, or a throwaway project of route files.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from itertools import product
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml
from dagster_duckdb import DuckDBResource
from pydantic import ValidationError

import integration_project
from integration_project import settings
from integration_project.resources import (
    ErpResource,
    ShopResource,
    default_database_path,
    open_ledger,
)
from integration_project.routes.config import (
    RouteConfig,
    templates_can_collide,
    url_problem,
)

SHIPPED_ASSETS = {
    f"{route}/{asset}"
    for route in (
        "eu_orders_shopware_to_exact",
        "b2b_orders_shopware_to_exact",
        "csv_orders_to_exact",
    )
    for asset in ("source_orders", "erp_orders", "erp_delivered_orders")
} | {
    "eu_orders_shopware_to_exact/delivered_orders_parquet",
    "eu_orders_shopware_to_exact/shop_order_writeback",
}
#: Secrets and URL parts that must never show up in an error.
SECRET = "s3cr3t-value-never-shown"

#: Every variable the shipped routes name, pointing at real-looking systems (https).
REAL_SYSTEMS = {
    "SHOP_API_URL": "https://shop.example.eu",
    "SHOP_CLIENT_ID": "shop-id",
    "SHOP_CLIENT_SECRET": SECRET,
    "SHOP2_API_URL": "https://b2b.example.eu",
    "SHOP2_CLIENT_ID": "b2b-id",
    "SHOP2_CLIENT_SECRET": SECRET,
    "ERP_API_URL": "https://start.exactonline.nl",
    "ERP_DIVISION": "7654321",
    "ERP_CLIENT_ID": "erp-id",
    "ERP_CLIENT_SECRET": SECRET,
    "ERP_REFRESH_TOKEN": SECRET,
    "CSV_ORDERS_FOLDER": "/srv/marketplace/orders",
    "INTEGRATION_EXPORT_DIR": "/srv/warehouse/exports",
}

# --- loading in a fresh process ------------------------------------------------------------

_LOADER = r"""
import json, sys
from pathlib import Path
import dagster as dg

def chain(exc):
    parts = []
    while exc is not None:
        parts.append(f"{type(exc).__name__}: {exc}")
        exc = exc.__cause__ or exc.__context__
    return "\n".join(parts)

root = sys.argv[1]
try:
    if root == "shipped":
        from integration_project.definitions import defs as load_location
        defs = load_location()
    else:
        from integration_project.components.order_route import load_routes
        sys.path.insert(0, root)
        defs = load_routes(Path(root))
except Exception as exc:
    print(json.dumps({"ok": False, "error": chain(exc)}))
    raise SystemExit(0)

def show(value):
    return f"${value.env_var_name}" if isinstance(value, dg.EnvVar) else value

out = {"ok": True, "assets": {}, "resources": {}}
for assets_def in defs.assets or []:
    for spec in assets_def.specs:
        out["assets"][spec.key.to_user_string()] = {
            k: v for k, v in spec.metadata.items() if k.startswith("integration/")
        }
fields = ("api_url", "client_id", "client_secret", "division", "refresh_token", "database")
for key, resource in (defs.resources or {}).items():
    out["resources"][key] = {f: show(getattr(resource, f)) for f in fields if hasattr(resource, f)}
print(json.dumps(out))
"""


def fresh_env(tmp_path: Path, **variables: str) -> dict[str, str]:
    """This process's environment without any route, sandbox or ledger variable, plus
    ``variables``; the user's data folder is a temp one."""
    dropped = ("SHOP", "ERP", "INTEGRATION_", "ACME", "XDG_DATA_HOME", "DAGSTER_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
    return {**env, "XDG_DATA_HOME": str(tmp_path / "xdg"), **variables}


def load(root: Path | str, env: dict[str, str], cwd: Path) -> dict[str, Any]:
    """Load a code location in a fresh process: ``{"ok": True, "assets", "resources"}`` or
    ``{"ok": False, "error"}`` (the whole exception chain, and the process's stderr)."""
    done = subprocess.run(
        [sys.executable, "-c", _LOADER, str(root)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert lines, f"the loader printed nothing:\n{done.stdout}\n{done.stderr[-3000:]}"
    result = json.loads(lines[-1])
    if not result["ok"]:
        result["error"] += "\n" + done.stderr
    return result


def make_project(tmp_path: Path, routes: dict[str, dict[str, Any]]) -> Path:
    """A throwaway dg project whose ``defs/`` holds one folder per route (its attributes)."""
    root = tmp_path / "project"
    package = "sandbox_mode_routes"
    (root / package / "defs").mkdir(parents=True)
    (root / "pyproject.toml").write_text(
        f'[tool.dg]\ndirectory_type = "project"\n\n[tool.dg.project]\nroot_module = "{package}"\n'
    )
    (root / package / "__init__.py").write_text("")
    for folder, attributes in routes.items():
        (root / package / "defs" / folder).mkdir()
        route_file = {"type": "integration_project.components.OrderRoute", "attributes": attributes}
        (root / package / "defs" / folder / "defs.yaml").write_text(yaml.safe_dump(route_file))
    return root


#: The second shop's variables, as the shipped B2B route names them.
SHOP2 = {
    "api_url_env": "SHOP2_API_URL",
    "client_id_env": "SHOP2_CLIENT_ID",
    "client_secret_env": "SHOP2_CLIENT_SECRET",
}


# --- sandbox mode ----------------------------------------------------------------------------


@pytest.mark.parametrize("flag", [None, "0", "false"])
def test_shipped_routes_without_urls_do_not_load_outside_sandbox_mode(
    tmp_path: Path, flag: str | None
) -> None:
    """The newcomer's case turned around: no variable set and sandbox mode not asked for must
    not quietly point at 127.0.0.1, it must fail naming the route file and the variables."""
    extra = {} if flag is None else {settings.SANDBOX_MODE_ENV: flag}
    result = load("shipped", fresh_env(tmp_path, **extra), tmp_path)
    assert not result["ok"]
    error = result["error"]
    assert "_orders_shopware_to_exact/defs.yaml" in error
    assert "environment variable ERP_API_URL is not set" in error
    assert "SHOP_API_URL" in error or "SHOP2_API_URL" in error
    assert "INTEGRATION_SANDBOX=1" in error  # says how to get the sandbox


def test_an_unset_url_fails_naming_the_file_and_the_variable(tmp_path: Path) -> None:
    root = make_project(
        tmp_path,
        {
            "acme": {
                "name": "ACME",
                "source": {
                    "api_url_env": "ACME_SHOP_URL",
                    "client_id_env": "ACME_ID",
                    "client_secret_env": "ACME_SECRET",
                },
            }
        },
    )
    erp = {k: v for k, v in REAL_SYSTEMS.items() if k.startswith("ERP_")}
    env = fresh_env(tmp_path, ACME_ID="acme", **erp)
    result = load(root, env, tmp_path)
    assert not result["ok"]
    error = result["error"]
    assert "acme/defs.yaml" in error
    assert "source.api_url_env" in error and "ACME_SHOP_URL" in error
    # Once the URL is set, the other missing variable is named.
    result = load(root, {**env, "ACME_SHOP_URL": "https://acme.example"}, tmp_path)
    assert not result["ok"]
    assert (
        "source.client_secret_env: environment variable ACME_SECRET is not set" in (result["error"])
    )
    assert "ACME_SHOP_URL is not set" not in result["error"]


def test_credentials_without_their_url_fail_instead_of_going_to_the_sandbox(
    tmp_path: Path,
) -> None:
    env = {k: v for k, v in REAL_SYSTEMS.items() if k != "SHOP_API_URL"}
    result = load("shipped", fresh_env(tmp_path, **env), tmp_path)
    assert not result["ok"]
    error = result["error"]
    assert "eu_orders_shopware_to_exact/defs.yaml" in error
    assert "SHOP_CLIENT_ID, SHOP_CLIENT_SECRET are set but SHOP_API_URL is not" in error
    assert SECRET not in error

    # In sandbox mode that side uses the sandbox shop, with the sandbox's own credentials:
    # a real secret is never sent to the sandbox's port.
    sandbox = load("shipped", fresh_env(tmp_path, **env, INTEGRATION_SANDBOX="1"), tmp_path)
    assert sandbox["ok"], sandbox.get("error")
    shop = sandbox["resources"]["shop"]
    assert shop["api_url"] == settings.SANDBOX_SHOP_URL
    assert shop["client_secret"] == settings.SANDBOX_SHOP_CLIENT_SECRET
    assert sandbox["resources"]["erp"]["api_url"] == "$ERP_API_URL"


def test_plain_http_to_another_host_is_refused_at_load_time(tmp_path: Path) -> None:
    url = f"http://someone:{SECRET}@shop.example.com/api?token={SECRET}"
    env = fresh_env(tmp_path, **{**REAL_SYSTEMS, "SHOP_API_URL": url})
    result = load("shipped", env, tmp_path)
    assert not result["ok"]
    error = result["error"]
    assert "eu_orders_shopware_to_exact/defs.yaml" in error
    assert "source.api_url_env: SHOP_API_URL is plain http to shop.example.com" in error
    assert SECRET not in error and "someone" not in error


def test_plain_http_to_loopback_loads_and_the_ledger_defaults_outside_the_package(
    tmp_path: Path,
) -> None:
    env = fresh_env(
        tmp_path,
        **{
            **REAL_SYSTEMS,
            "SHOP_API_URL": "http://127.0.0.1:18801",
            "ERP_API_URL": "http://[::1]:9",
        },
    )
    result = load("shipped", env, tmp_path)
    assert result["ok"], result.get("error")
    assert set(result["assets"]) == SHIPPED_ASSETS
    for key, metadata in result["assets"].items():
        assert metadata["integration/sandbox_mode"] is False, key
        assert metadata["integration/erp_host"] == "$ERP_API_URL"
    eu = result["assets"]["eu_orders_shopware_to_exact/source_orders"]
    assert eu["integration/shop_host"] == "$SHOP_API_URL"
    b2b = result["assets"]["b2b_orders_shopware_to_exact/source_orders"]
    assert b2b["integration/shop_host"] == "$SHOP2_API_URL"
    files = result["assets"]["csv_orders_to_exact/source_orders"]
    assert files["integration/shop_host"] == "$CSV_ORDERS_FOLDER"
    # Every credential comes from its variable; the ledger from the user's data folder.
    assert result["resources"]["shop"]["client_secret"] == "$SHOP_CLIENT_SECRET"
    assert result["resources"]["erp"]["refresh_token"] == "$ERP_REFRESH_TOKEN"
    expected = tmp_path / "xdg" / "integration_project" / "ledger.duckdb"
    assert result["resources"]["duckdb"]["database"] == str(expected)


@pytest.mark.parametrize("flag", ["1", "yes", "TRUE"])
def test_sandbox_mode_loads_the_shipped_routes_and_shows_it_on_every_asset(
    tmp_path: Path, flag: str
) -> None:
    result = load("shipped", fresh_env(tmp_path, INTEGRATION_SANDBOX=flag), tmp_path)
    assert result["ok"], result.get("error")
    assert set(result["assets"]) == SHIPPED_ASSETS
    for key, metadata in result["assets"].items():
        assert metadata["integration/sandbox_mode"] is True, key
        assert metadata["integration/erp_host"] == "127.0.0.1:8802"
    eu = result["assets"]["eu_orders_shopware_to_exact/erp_delivered_orders"]
    assert eu["integration/shop_host"] == "127.0.0.1:8801"
    b2b = result["assets"]["b2b_orders_shopware_to_exact/erp_orders"]
    assert b2b["integration/shop_host"] == "127.0.0.1:8803"
    # The CSV route reads the folder the sandbox fills, beside the sandbox's ledger.
    files = result["assets"]["csv_orders_to_exact/erp_orders"]
    folder = tmp_path / "xdg" / "integration_project" / "sandbox_csv_orders"
    assert files["integration/shop_host"] == folder.as_uri()
    assert result["resources"]["erp"]["client_secret"] == settings.SANDBOX_ERP_CLIENT_SECRET
    # The sandbox's ledger is never a real route's.
    expected = tmp_path / "xdg" / "integration_project" / "sandbox.duckdb"
    assert result["resources"]["duckdb"]["database"] == str(expected)


def test_an_unrecognised_sandbox_flag_fails_naming_the_variable(tmp_path: Path) -> None:
    result = load("shipped", fresh_env(tmp_path, INTEGRATION_SANDBOX="maybe"), tmp_path)
    assert not result["ok"]
    assert "INTEGRATION_SANDBOX='maybe' is not understood" in result["error"]
    assert "defs.yaml" in result["error"]


def test_sandbox_mode_is_parsed_when_asked_not_at_import() -> None:
    assert settings.sandbox_mode({}) is False
    for on in ("1", "true", "yes", " Yes "):
        assert settings.sandbox_mode({settings.SANDBOX_MODE_ENV: on}) is True
    for off in ("0", "false", "no", ""):
        assert settings.sandbox_mode({settings.SANDBOX_MODE_ENV: off}) is False
    for bad in ("maybe", "2", "on"):
        with pytest.raises(ValueError, match="INTEGRATION_SANDBOX"):
            settings.sandbox_mode({settings.SANDBOX_MODE_ENV: bad})


def test_env_problems_outside_and_inside_sandbox_mode() -> None:
    route = RouteConfig.model_validate({"name": "R"})
    real = {k: v for k, v in REAL_SYSTEMS.items() if not k.startswith("SHOP2")}
    assert route.env_problems(sandbox=False, environ=real) == []
    assert route.env_problems(sandbox=True, environ={}) == []
    assert route.env_problems(sandbox=True, environ={**real, "ERP_DIVISION": " "}) == [
        "target.division_env: environment variable ERP_DIVISION is not set"
    ]
    # Every unset variable, and only those, by the setting that names it.
    target = [
        ("target.division_env", "ERP_DIVISION"),
        ("target.client_id_env", "ERP_CLIENT_ID"),
        ("target.client_secret_env", "ERP_CLIENT_SECRET"),
        ("target.refresh_token_env", "ERP_REFRESH_TOKEN"),
    ]
    missing = route.missing_env(sandbox=False, environ={"ERP_API_URL": "https://e.example"})
    assert missing == [
        ("source.api_url_env", "SHOP_API_URL"),
        ("source.client_id_env", "SHOP_CLIENT_ID"),
        ("source.client_secret_env", "SHOP_CLIENT_SECRET"),
        *target,
    ]
    # A target pinned off the sandbox needs all its variables in sandbox mode; the shop side
    # still uses the sandbox and needs none.
    pinned = RouteConfig.model_validate({"name": "R", "target": {"sandbox": "none"}})
    assert pinned.missing_env(sandbox=True, environ={}) == [
        ("target.api_url_env", "ERP_API_URL"),
        *target,
    ]


# --- https -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "refused"),
    [
        ("https://shop.example.eu", False),
        ("HTTPS://Shop.Example.eu:8443/api", False),
        ("http://127.0.0.1:8801", False),
        ("http://127.3.4.5", False),
        ("http://[::1]:8080/", False),
        ("http://LOCALHOST:3000", False),
        ("http://shop.example.com", True),
        ("http://128.0.0.1", True),
        ("http://localhost.example.com", True),
        ("http://10.0.0.7:8080", True),
        ("ftp://shop.example.eu", True),
        ("shop.example.eu", True),
        ("https://", True),
    ],
)
def test_url_rule_https_or_loopback(url: str, refused: bool) -> None:
    assert (url_problem(url) is not None) is refused


def _shop(url: str | dg.EnvVar) -> ShopResource:
    return ShopResource(api_url=url, client_id="id", client_secret=SECRET)


def _erp(url: str | dg.EnvVar) -> ErpResource:
    return ErpResource(
        api_url=url, division="1", client_id="id", client_secret=SECRET, refresh_token=SECRET
    )


@pytest.mark.parametrize("make", [_shop, _erp])
def test_resources_refuse_plain_http_to_other_hosts_without_showing_the_url(make: Any) -> None:
    with pytest.raises(ValidationError) as raised:
        make(f"http://user:{SECRET}@erp.example.com/x?token={SECRET}")
    text = str(raised.value)
    assert "api_url" in text and "plain http to erp.example.com" in text
    assert SECRET not in text and "user" not in text
    assert make("http://127.0.0.1:8802").api_url == "http://127.0.0.1:8802"
    assert make("https://start.exactonline.nl").api_url == "https://start.exactonline.nl"
    assert make(dg.EnvVar("SOME_URL")).api_url == "SOME_URL"  # checked when resolved


_RUN_TIME = r"""
import json
import dagster as dg
from integration_project.resources import ShopResource

@dg.asset
def uses_the_shop(shop: ShopResource) -> None:
    pass

shop = ShopResource(
    api_url=dg.EnvVar("SOME_SHOP_URL"), client_id="id", client_secret=dg.EnvVar("SOME_SECRET")
)
result = dg.materialize([uses_the_shop], resources={"shop": shop}, raise_on_error=False)
errors = [
    e.event_specific_data.error.to_string()
    for e in result.all_events
    if e.is_failure and getattr(e.event_specific_data, "error", None)
]
print(json.dumps({"success": result.success, "errors": errors}))
"""


def test_a_url_from_a_variable_is_checked_when_the_run_resolves_it(tmp_path: Path) -> None:
    url = f"http://user:{SECRET}@shop.example.com/?token={SECRET}"
    env = fresh_env(tmp_path, SOME_SHOP_URL=url, SOME_SECRET=SECRET)
    env["DAGSTER_HOME"] = str(tmp_path / "home")
    (tmp_path / "home").mkdir()
    done = subprocess.run(
        [sys.executable, "-c", _RUN_TIME],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["success"] is False
    errors = "\n".join(result["errors"])
    assert "api_url" in errors and "plain http to shop.example.com" in errors
    assert SECRET not in errors and SECRET not in done.stderr


# --- YourRef unique per ERP division ---------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "a_digits", "b", "b_digits", "collide"),
    [
        ("{order_number}", True, "B2B-{order_number}", True, False),
        ("{order_number}", False, "B2B-{order_number}", True, True),
        ("{order_number}", True, "B2B-{order_number}", False, False),
        ("{order_number}", True, "{order_number}", True, True),
        ("A{order_number}", True, "{order_number}B", True, False),
        ("A{order_number}", False, "{order_number}B", True, False),
        ("A{order_number}", False, "{order_number}B", False, True),
        ("X-{customer_name}", True, "X-{order_number}", True, True),
        ("X-{customer_name}", True, "Y-{order_number}", True, False),
        ("b2b-{order_number}", True, "B2B-{order_number}", True, True),  # Exact ignores case
        ("{order_number}-1", True, "{order_number}", True, False),
        ("{order_number}-{order_number}", False, "{order_number}", True, False),
        ("{order_number}-{order_number}", False, "{order_number}", False, True),
        ("{order_number}{order_number}", True, "{order_number}", True, True),
        ("W{email}", True, "W", True, False),
        ("W{customer_number}", True, "W", True, True),  # a customer number may be empty
        ("{order_number:.2}", True, "AB", True, True),  # a format spec may render anything
        ("{{literal}}", True, "{literal}", True, True),  # braces escaped in a template
        ("{shop_order_id}", True, "{order_number}", True, True),
        ("EU{order_number}", True, "B2B{order_number}", True, False),
    ],
)
def test_templates_can_collide(a: str, a_digits: bool, b: str, b_digits: bool, collide: bool):
    assert templates_can_collide(a, a_digits, b, b_digits) is collide
    assert templates_can_collide(b, b_digits, a, a_digits) is collide  # symmetric


def test_shopware_ids_as_hex_when_the_mapping_guarantees_them() -> None:
    assert templates_can_collide("x{order_number}", True, "{shop_order_id}", True)
    assert not templates_can_collide("x{order_number}", True, "{shop_order_id}", True, hex_ids=True)
    assert templates_can_collide("a{order_number}", True, "{shop_order_id}", True, hex_ids=True)
    assert not templates_can_collide("{order_number}", True, "{shop_order_id}-", True, hex_ids=True)
    # 32 characters exactly: one digit more or fewer than an id never matches.
    assert templates_can_collide(
        "1" * 31 + "{order_number}", True, "{shop_order_id}", True, hex_ids=True
    )
    assert not templates_can_collide(
        "1" * 32 + "{order_number}", True, "{shop_order_id}", True, hex_ids=True
    )


def test_templates_can_collide_agrees_with_brute_force() -> None:
    """Every pair of templates of up to two pieces, both order-number formats: the automaton's
    answer equals a search over every string of up to five characters (long enough for a
    witness of templates this short) matched against each template's own regular expression."""
    import re

    pieces = ["a", "A", "1", "-", "{order_number}", "{email}", "{customer_number}"]
    templates = pieces + [x + y for x, y in product(pieces, repeat=2)]
    alphabet = "a1-z"  # z: a character no template names
    strings = ["".join(p) for n in range(1, 6) for p in product(alphabet, repeat=n)]

    def regex(template: str, digits: bool) -> re.Pattern[str]:
        fields = {
            "{order_number}": "[0-9]+" if digits else ".+",
            "{email}": ".+",
            "{customer_number}": ".*",
        }
        parts = re.split(r"(\{[a-z_]+\})", template.lower())
        return re.compile("".join(fields.get(p, re.escape(p)) for p in parts))

    rendered = {
        (t, d): {s for s in strings if regex(t, d).fullmatch(s)}
        for t in templates
        for d in (True, False)
    }
    for (a, a_digits), (b, b_digits) in product(rendered, repeat=2):
        expected = bool(rendered[a, a_digits] & rendered[b, b_digits])
        assert templates_can_collide(a, a_digits, b, b_digits) is expected, (
            a,
            a_digits,
            b,
            b_digits,
        )


def test_two_routes_on_one_division_with_colliding_templates_fail_naming_both_files(
    tmp_path: Path,
) -> None:
    """Both on the sandbox ERP: one shop whose order numbers may be anything (``B2B-7`` is a
    possible order number there), the other prefixing B2B-."""
    root = make_project(
        tmp_path,
        {
            "web": {"name": "Web orders", "source": {"order_number_format": "any"}},
            "b2b": {
                "name": "B2B orders",
                "source": {**SHOP2, "sandbox": "shop2"},
                "mapping": {"your_ref": "B2B-{order_number}"},
            },
        },
    )
    result = load(root, fresh_env(tmp_path, INTEGRATION_SANDBOX="1"), tmp_path)
    assert not result["ok"]
    error = result["error"]
    assert "web/defs.yaml" in error and "b2b/defs.yaml" in error
    assert "'{order_number}'" in error and "'B2B-{order_number}'" in error
    assert "division 1234567 at 127.0.0.1:8802" in error


def test_digits_only_order_numbers_keep_the_shipped_pair_apart(tmp_path: Path) -> None:
    root = make_project(
        tmp_path,
        {
            "web": {"name": "Web orders"},
            "b2b": {
                "name": "B2B orders",
                "source": {**SHOP2, "sandbox": "shop2"},
                "mapping": {"your_ref": "B2B-{order_number}"},
            },
        },
    )
    result = load(root, fresh_env(tmp_path, INTEGRATION_SANDBOX="1"), tmp_path)
    assert result["ok"], result.get("error")
    assert len(result["assets"]) == 6


def test_the_division_is_what_the_variables_hold_not_their_names(tmp_path: Path) -> None:
    """Two routes with their own ERP variables: the same division when the URLs are equal up to
    case and a trailing slash and the divisions are equal; different divisions load."""
    erp2 = {
        f"{field}_env": f"ERP2_{field.upper()}"
        for field in ("api_url", "division", "client_id", "client_secret", "refresh_token")
    }
    second = {"name": "Second", "source": SHOP2, "target": erp2}
    root = make_project(tmp_path, {"first": {"name": "First"}, "second": second})
    variables = {
        "ERP2_API_URL": "HTTPS://Start.ExactOnline.nl/",
        "ERP2_DIVISION": REAL_SYSTEMS["ERP_DIVISION"],
        "ERP2_CLIENT_ID": "other-app",
        "ERP2_CLIENT_SECRET": SECRET,
        "ERP2_REFRESH_TOKEN": SECRET,
    }
    env = fresh_env(tmp_path, **REAL_SYSTEMS, **variables)
    result = load(root, env, tmp_path)
    assert not result["ok"]
    assert "first/defs.yaml" in result["error"] and "second/defs.yaml" in result["error"]
    assert SECRET not in result["error"]

    result = load(root, {**env, "ERP2_DIVISION": "1111111"}, tmp_path)
    assert result["ok"], result.get("error")


# --- the ledger file -------------------------------------------------------------------------


def test_a_new_ledger_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    before = stat.S_IMODE(tmp_path.stat().st_mode)
    path = tmp_path / "new" / "deeper" / "ledger.duckdb"
    old_umask = os.umask(0o022)  # the usual umask: DuckDB alone would create 0644
    try:
        ledger = open_ledger(DuckDBResource(database=str(path)), "route")
        with ledger.db.connect():
            pass  # the first connection creates the schema
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.parent.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(tmp_path.stat().st_mode) == before  # not ours: left alone
    # Opening it again keeps it so, and it is a working ledger.
    with open_ledger(DuckDBResource(database=str(path)), "route").db.connect():
        pass
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_the_default_ledger_is_not_inside_the_installed_package(tmp_path: Path) -> None:
    installed = Path(integration_project.__file__).resolve().parents[1]
    for sandbox in (False, True):
        path = Path(default_database_path(sandbox=sandbox)).resolve()
        assert not path.is_relative_to(installed), path
    env = {"XDG_DATA_HOME": str(tmp_path)}
    assert settings.default_ledger_path(env) == tmp_path / "integration_project" / "ledger.duckdb"
    assert settings.default_ledger_path({"XDG_DATA_HOME": "relative/ignored"}) == (
        Path.home() / ".local" / "share" / "integration_project" / "ledger.duckdb"
    )
