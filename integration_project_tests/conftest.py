"""Shared fixtures: an in-process sandbox on free ports, a DuckDB file in a temp folder, and the
route's resources pointed at both. Tests swap resources at the boundary; nothing is patched.

The tests run in sandbox mode (``INTEGRATION_SANDBOX=1``), set here before anything loads
definitions; subprocesses the tests start inherit it. ``test_sandbox_mode.py`` loads routes
with sandbox mode off in subprocesses of their own."""

from __future__ import annotations

import os

os.environ.setdefault("INTEGRATION_SANDBOX", "1")

import warnings
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster_duckdb import DuckDBResource

from integration_project import settings
from integration_project.assets import RouteAssets, build_route_assets
from integration_project.resources import ErpResource, ShopResource, open_ledger
from integration_project.routes.config import RouteConfig
from integration_project.sandbox import Sandbox
from integration_project_tests import skips

warnings.filterwarnings("ignore", message=".*is currently in beta.*")

#: A window the partitions definition knows (it starts on 2026-11-01).
WINDOW_KEY = "2026-11-20-10:00"
WINDOW_START = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
WINDOW_END = datetime(2026, 11, 20, 10, 5, tzinfo=UTC)

DEFS = Path(__file__).resolve().parents[1] / "integration_project" / "defs"


def shipped_route(folder: str = "eu_orders_shopware_to_exact", **updates: object) -> RouteConfig:
    """A route exactly as shipped under defs/, optionally changed."""
    attributes = yaml.safe_load((DEFS / folder / "defs.yaml").read_text())["attributes"]
    return RouteConfig.model_validate({**attributes, **updates})


#: The shipped default route (resource keys shop / erp), built once for the whole session.
DEFAULT_ROUTE = shipped_route()
DEFAULT = build_route_assets(DEFAULT_ROUTE)


def route_assets(**updates: object) -> RouteAssets:
    return build_route_assets(shipped_route(**updates)) if updates else DEFAULT


@pytest.fixture(scope="session")
def dagster_instance() -> Iterator[dg.DagsterInstance]:
    """One test instance for the session: Dagster keeps a process-wide pointer to the last
    instance's state storage, so a per-test instance would leave it dangling."""
    with dg.instance_for_test() as instance:
        yield instance


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(seed=7) as sb:
        yield sb


@pytest.fixture
def duckdb_path(tmp_path: Path) -> str:
    return str(tmp_path / "ledger" / "integration.duckdb")


def make_resources(sb: Sandbox, duckdb_path: str, **shop_overrides: object) -> dict[str, object]:
    shop_config: dict[str, object] = {
        "api_url": sb.shop_url,
        "client_id": settings.SANDBOX_SHOP_CLIENT_ID,
        "client_secret": settings.SANDBOX_SHOP_CLIENT_SECRET,
        "max_retries": 1,
        "read_timeout_s": 5.0,
        **shop_overrides,
    }
    return {
        "shop": ShopResource(**shop_config),
        "erp": ErpResource(
            api_url=sb.erp_url,
            division=settings.SANDBOX_ERP_DIVISION,
            client_id=settings.SANDBOX_ERP_CLIENT_ID,
            client_secret=settings.SANDBOX_ERP_CLIENT_SECRET,
            refresh_token=settings.SANDBOX_ERP_REFRESH_TOKEN,
            max_retries=1,
            read_timeout_s=5.0,
        ),
        "duckdb": DuckDBResource(database=duckdb_path),
    }


@pytest.fixture
def resources(sandbox: Sandbox, duckdb_path: str) -> dict[str, object]:
    return make_resources(sandbox, duckdb_path)


@pytest.fixture
def ledger(resources: dict[str, object]):  # type: ignore[no-untyped-def]
    duckdb, erp = resources["duckdb"], resources["erp"]
    assert isinstance(duckdb, DuckDBResource) and isinstance(erp, ErpResource)
    return open_ledger(duckdb, DEFAULT_ROUTE.id, erp.token_key)


# --- figure lines in the terminal summary ------------------------------------------------------

#: ``record_property("chaos", line)`` and the like: printed at the end of the run, also when
#: output is captured or tests run in xdist workers, so CI's log always shows the figures.
FIGURE_PROPERTIES = ("chaos",)
_figures: list[str] = []


_skipped: list[tuple[str, str]] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call":
        _figures.extend(str(v) for k, v in report.user_properties if k in FIGURE_PROPERTIES)
    if report.skipped and not hasattr(report, "wasxfail"):
        longrepr = report.longrepr
        why = str(longrepr[2]) if isinstance(longrepr, tuple) else str(longrepr)
        _skipped.append((report.nodeid, why))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _figures:
        terminalreporter.section("figures")
        for line in _figures:
            terminalreporter.write_line(line)
    if skips.in_ci() and (bad := skips.unexpected(_skipped)):
        terminalreporter.section("skipped in CI, not on the allow-list (skips.ALLOWED_SKIPS)")
        for nodeid, why in bad:
            terminalreporter.write_line(f"{nodeid}: {why}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """In CI a skip that is not on the allow-list fails the run: a test that turned itself off
    (a start-up that hung, a missing tool) must not leave CI green."""
    if hasattr(session.config, "workerinput"):  # an xdist worker: the controller decides
        return
    if skips.in_ci() and skips.unexpected(_skipped) and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
