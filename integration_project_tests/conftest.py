"""Shared fixtures: an in-process sandbox on free ports, a DuckDB file in a temp folder, and the
route's resources pointed at both. Tests swap resources at the boundary; nothing is patched.
What the tests share besides fixtures is in ``integration_project_testkit``.

The tests run in sandbox mode (``INTEGRATION_SANDBOX=1``), set here before anything loads
definitions; subprocesses the tests start inherit it. ``test_sandbox_mode.py`` loads routes
with sandbox mode off in subprocesses of their own."""

from __future__ import annotations

import os

os.environ.setdefault("INTEGRATION_SANDBOX", "1")

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from integration_project.ledger import Ledger
from integration_project.sandbox import Sandbox
from integration_project_testkit.postgres import (
    PostgresServer,
    PostgresUnavailable,
    fresh_database,
    server_for_tests,
)
from integration_project_testkit.resources import make_resources, resources_ledger
from integration_project_testkit.routes import default_assets
from integration_project_tests import skips

warnings.filterwarnings("ignore", message=".*is currently in beta.*")

#: The ledger's backends; a test taking ``ledger_location`` runs once on each.
LEDGER_BACKENDS = ("duckdb", "postgres")


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


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """The run's PostgreSQL server (``dev.py test`` starts one; else the test starts its own).
    Without one, a test that needs it fails in CI and skips elsewhere, saying why."""
    try:
        with server_for_tests() as server:
            yield server
    except PostgresUnavailable as exc:
        if skips.in_ci():
            pytest.fail(f"no PostgreSQL server in CI: {exc}")
        pytest.skip(f"no PostgreSQL server on this machine: {exc}")


@pytest.fixture(params=LEDGER_BACKENDS)
def ledger_location(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Where a test's ledger lives, once per backend: a DuckDB file in a temp folder, or a
    new database on the run's PostgreSQL server. Tests that take it run on both."""
    if request.param == "duckdb":
        yield str(tmp_path / "ledger" / "integration.duckdb")
        return
    server = request.getfixturevalue("postgres_server")
    with fresh_database(server) as url:
        yield url


@pytest.fixture
def resources(sandbox: Sandbox, duckdb_path: str) -> dict[str, Any]:
    return make_resources(sandbox, duckdb_path)


@pytest.fixture
def ledger(resources: dict[str, Any]) -> Ledger:
    """The default route's ledger in the test's DuckDB file."""
    return resources_ledger(resources, default_assets().route.id)


# --- figure lines and skips in the terminal summary --------------------------------------------

#: ``record_property("chaos", line)`` and the like: printed at the end of the run, also when
#: output is captured or tests run in xdist workers, so CI's log always shows the figures.
FIGURE_PROPERTIES = ("chaos",)


class RunReport:
    """The session's figure lines and skips, reported at its end; in CI a skip that is not on
    the allow-list (``skips.ALLOWED_SKIPS``) fails the run."""

    def __init__(self) -> None:
        self.figures: list[str] = []
        self.skipped: list[tuple[str, str]] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "call":
            self.figures.extend(str(v) for k, v in report.user_properties if k in FIGURE_PROPERTIES)
        if report.skipped and not hasattr(report, "wasxfail"):
            longrepr = report.longrepr
            why = str(longrepr[2]) if isinstance(longrepr, tuple) else str(longrepr)
            self.skipped.append((report.nodeid, why))

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if self.figures:
            terminalreporter.section("figures")
            for line in self.figures:
                terminalreporter.write_line(line)
        if skips.in_ci() and (bad := skips.unexpected(self.skipped)):
            terminalreporter.section("skipped in CI, not on the allow-list (skips.ALLOWED_SKIPS)")
            for nodeid, why in bad:
                terminalreporter.write_line(f"{nodeid}: {why}")

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        """In CI a skip that is not on the allow-list fails the run: a test that turned itself
        off (a start-up that hung, a missing tool) must not leave CI green."""
        if hasattr(session.config, "workerinput"):  # an xdist worker: the controller decides
            return
        unexpected = skips.unexpected(self.skipped)
        if skips.in_ci() and unexpected and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(RunReport(), "integration-run-report")


# --- the order test files start in ----------------------------------------------------------

#: The longest test files (about 2-3.5 minutes each, then 1), started first. The workers
#: (``dev.py test``: ``--dist loadfile --no-loadscope-reorder``) take whole files in the order
#: collected: long ones left for last, as xdist's own order (most tests first) leaves these
#: single-test files, would run alone while the other workers idle.
LONGEST_FILES = (
    "test_chaos.py",
    "test_bad_shapes.py",
    "test_first_hour.py",
    "test_bench_smoke.py",
    "test_concurrency.py",
    "test_route.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests of :data:`LONGEST_FILES` first, in that order; the rest as collected."""
    rank = {name: place for place, name in enumerate(LONGEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: keeps the rest
