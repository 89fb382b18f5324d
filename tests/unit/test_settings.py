"""Settings: environment parsing, validation errors an operator can act on, and what new sessions get."""

from __future__ import annotations

import inspect
import json
import logging
import os
import re
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Worker

from settings import (
    DEFAULT_MAX_CACHED_WORKFLOWS,
    DEFAULT_MAX_CONCURRENT_WORKFLOW_TASKS,
    ENV_PREFIX,
    Settings,
    SettingsError,
    load_settings,
)
from worker import worker_options
from workflows.model import (
    DEFAULT_TASK_QUEUE,
    ConversationConfig,
)
from workflows.policy import DEFAULT_APPROVAL_POLICY, evaluate


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No AGENT_RUNTIME__ variable of the machine running the tests leaks into them."""
    for var in list(os.environ):
        if var.upper().startswith(ENV_PREFIX):
            monkeypatch.delenv(var)
    return monkeypatch


def test_defaults() -> None:
    settings = load_settings()
    assert settings.llm_proxy_url == "http://127.0.0.1:8002"
    assert settings.llm_model == "gpt-4o-mini"
    assert settings.llm_api_key is None
    assert settings.temporal.address == "127.0.0.1:7233"
    assert settings.temporal.namespace == "default"
    assert settings.temporal.task_queue == DEFAULT_TASK_QUEUE
    assert settings.approval.rules is None
    assert settings.approval_policy() == DEFAULT_APPROVAL_POLICY


def test_top_level_and_nested_variables(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("AGENT_RUNTIME__LLM_MODEL", "qwen2.5-coder")
    clean_env.setenv("AGENT_RUNTIME__LLM_API_KEY", "sk-test")
    clean_env.setenv("AGENT_RUNTIME__LLM_TIMEOUT_SECONDS", "7.5")
    clean_env.setenv("AGENT_RUNTIME__MULTI_AGENT_MODE", "false")
    clean_env.setenv("AGENT_RUNTIME__TOOL_CALL_BUDGET", "4")
    clean_env.setenv("AGENT_RUNTIME__TEMPORAL__ADDRESS", "temporal.internal:7233")
    clean_env.setenv("AGENT_RUNTIME__TEMPORAL__NAMESPACE", "agents")
    clean_env.setenv("AGENT_RUNTIME__TEMPORAL__TASK_QUEUE", "agents-q")
    clean_env.setenv("AGENT_RUNTIME__TEMPORAL__API_KEY", "cloud-key")
    clean_env.setenv("AGENT_RUNTIME__APPROVAL__ENABLED", "false")

    settings = load_settings()

    assert settings.llm_model == "qwen2.5-coder"
    assert settings.llm_api_key is not None and settings.llm_api_key.get_secret_value() == "sk-test"
    assert "sk-test" not in repr(settings)
    assert settings.llm_timeout_seconds == 7.5
    assert settings.multi_agent_mode is False
    assert settings.tool_call_budget == 4
    assert settings.temporal.address == "temporal.internal:7233"
    assert settings.temporal.namespace == "agents"
    assert settings.temporal.task_queue == "agents-q"
    assert settings.temporal.api_key is not None and settings.temporal.api_key.get_secret_value() == "cloud-key"
    assert settings.approval.enabled is False


def test_empty_variable_means_unset(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("AGENT_RUNTIME__LLM_API_KEY", "")
    clean_env.setenv("AGENT_RUNTIME__TEMPORAL__ADDRESS", "")
    settings = load_settings()
    assert settings.llm_api_key is None
    assert settings.temporal.address == "127.0.0.1:7233"


def test_approval_rules_from_json(clean_env: pytest.MonkeyPatch) -> None:
    rules = [
        {
            "pattern": "execute_command",
            "requires_approval": False,
            "reason": "read-only git",
            "when": [{"argument": "command", "op": "startswith", "value": "git status"}],
        },
        {"pattern": "execute_*", "requires_approval": True, "reason": "commands", "timeout_seconds": 60},
        {"pattern": "*", "requires_approval": True},
    ]
    clean_env.setenv("AGENT_RUNTIME__APPROVAL__RULES", json.dumps(rules))
    clean_env.setenv("AGENT_RUNTIME__APPROVAL__TIMEOUT_SECONDS", "900")

    policy = load_settings().approval_policy()

    # The built-in rules follow the configured ones (a risky tool no configured rule approves still asks).
    assert [rule.pattern for rule in policy.rules] == [
        "execute_command",
        "execute_*",
        "*",
        *(rule.pattern for rule in DEFAULT_APPROVAL_POLICY.rules),
    ]
    assert policy.default_timeout_seconds == 900
    assert evaluate(policy, "execute_command", {"command": "git status -s"}).requires_approval is False
    rm = evaluate(policy, "execute_command", {"command": "rm -rf /"})
    assert (rm.requires_approval, rm.reason, rm.timeout_seconds) == (True, "commands", 60)
    assert evaluate(policy, "read_file", {"path": "a.py"}).timeout_seconds == 900


def test_default_policy_takes_enabled_and_timeout_from_settings(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("AGENT_RUNTIME__APPROVAL__ENABLED", "false")
    clean_env.setenv("AGENT_RUNTIME__APPROVAL__TIMEOUT_SECONDS", "30")
    policy = load_settings().approval_policy()
    assert policy.rules == DEFAULT_APPROVAL_POLICY.rules
    assert policy.enabled is False
    assert policy.default_timeout_seconds == 30
    assert DEFAULT_APPROVAL_POLICY.enabled is True, "the shared default must not be mutated"
    assert evaluate(policy, "write_file", {"path": "x"}).requires_approval is False


@pytest.mark.parametrize(
    ("base", "url"),
    [
        ("http://127.0.0.1:8002", "http://127.0.0.1:8002/v1/chat/completions"),
        ("http://127.0.0.1:8002/", "http://127.0.0.1:8002/v1/chat/completions"),
        ("https://api.openai.com/v1", "https://api.openai.com/v1/chat/completions"),
        ("https://openrouter.ai/api/v1/", "https://openrouter.ai/api/v1/chat/completions"),
        ("http://gateway:8080/llm", "http://gateway:8080/llm/v1/chat/completions"),
    ],
)
def test_chat_completions_url(clean_env: pytest.MonkeyPatch, base: str, url: str) -> None:
    clean_env.setenv("AGENT_RUNTIME__LLM_PROXY_URL", base)
    assert load_settings().chat_completions_url() == url


@pytest.mark.parametrize("base", ["ftp://proxy:21", "127.0.0.1:8002", "http://"])
def test_non_http_proxy_url_is_rejected(clean_env: pytest.MonkeyPatch, base: str) -> None:
    clean_env.setenv("AGENT_RUNTIME__LLM_PROXY_URL", base)
    with pytest.raises(SettingsError, match="AGENT_RUNTIME__LLM_PROXY_URL: expected an http"):
        load_settings()


def test_every_bad_variable_is_named(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("AGENT_RUNTIME__LLM_API_KEY", "sk-do-not-print")
    clean_env.setenv("AGENT_RUNTIME__LLM_TIMEOUT_SECONDS", "0")
    clean_env.setenv("AGENT_RUNTIME__LLM_MAX_ATTEMPTS", "many")
    clean_env.setenv("AGENT_RUNTIME__TEMPORAL__ADDRESS", "temporal-without-port")
    clean_env.setenv(
        "AGENT_RUNTIME__APPROVAL__RULES", '[{"pattern": "x", "requires_approval": true, "timeout_seconds": -1}]'
    )

    with pytest.raises(SettingsError) as raised:
        load_settings()

    message = str(raised.value)
    assert "AGENT_RUNTIME__LLM_TIMEOUT_SECONDS: Input should be greater than 0" in message
    assert "AGENT_RUNTIME__LLM_MAX_ATTEMPTS: Input should be a valid integer" in message
    assert "AGENT_RUNTIME__TEMPORAL__ADDRESS: expected host:port" in message
    assert "AGENT_RUNTIME__APPROVAL__RULES at [0].timeout_seconds: Input should be greater than 0" in message
    assert "sk-do-not-print" not in message


def test_misspelt_nested_variable_fails(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("AGENT_RUNTIME__TEMPORAL__ADRESS", "temporal:7233")
    with pytest.raises(SettingsError, match="AGENT_RUNTIME__TEMPORAL__ADRESS: Extra inputs are not permitted"):
        load_settings()


def test_unknown_top_level_variable_is_reported(
    clean_env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    clean_env.setenv("AGENT_RUNTIME__LLM_MODLE", "typo")
    with caplog.at_level(logging.WARNING, logger="agent_runtime.settings"):
        settings = load_settings()
    assert settings.llm_model == "gpt-4o-mini"
    assert "AGENT_RUNTIME__LLM_MODLE" in caplog.text


def test_tls_files_are_checked(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cert = tmp_path / "client.pem"
    cert.write_text("cert")
    clean_env.setenv("AGENT_RUNTIME__TEMPORAL__TLS_CERT_PATH", str(cert))
    with pytest.raises(SettingsError, match="TLS_CERT_PATH and AGENT_RUNTIME__TEMPORAL__TLS_KEY_PATH must be set"):
        load_settings()

    clean_env.setenv("AGENT_RUNTIME__TEMPORAL__TLS_KEY_PATH", str(tmp_path / "missing.key"))
    with pytest.raises(SettingsError, match="AGENT_RUNTIME__TEMPORAL__TLS_KEY_PATH: no such file"):
        load_settings()

    key = tmp_path / "client.key"
    key.write_text("key")
    clean_env.setenv("AGENT_RUNTIME__TEMPORAL__TLS_KEY_PATH", str(key))
    assert load_settings().temporal.tls_key_path == key


def test_conversation_config_carries_every_setting(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("AGENT_RUNTIME__MULTI_AGENT_MODE", "false")
    clean_env.setenv("AGENT_RUNTIME__LLM_MODEL", "m-1")
    clean_env.setenv("AGENT_RUNTIME__TOOL_LEASE_SECONDS", "42")
    clean_env.setenv("AGENT_RUNTIME__TOOL_CALL_BUDGET", "3")
    clean_env.setenv("AGENT_RUNTIME__LLM_TIMEOUT_SECONDS", "9")
    clean_env.setenv("AGENT_RUNTIME__LLM_MAX_ATTEMPTS", "5")
    clean_env.setenv("AGENT_RUNTIME__MAX_AGENT_SWITCHES", "6")
    clean_env.setenv("AGENT_RUNTIME__APPROVAL__TIMEOUT_SECONDS", "120")
    clean_env.setenv("AGENT_RUNTIME__APPROVAL__WEBHOOK_URL", "https://hooks.example.com/T0/B0/secret-token")
    settings = load_settings()

    config = settings.conversation_config()

    # A field added to ConversationConfig without a setting behind it would silently use its default. Whether a
    # session sets search attributes is decided when it starts (client.connection.session_config), not by a setting.
    attributes = {"search_attributes", "waiting_call_attributes"}
    assert config.model_fields_set == set(ConversationConfig.model_fields) - attributes
    # The webhook's URL stays with the worker: a session only knows that there is one.
    assert config.approval_webhook is True and "secret-token" not in config.model_dump_json()
    assert config == ConversationConfig(
        multi_agent_mode=False,
        llm_model="m-1",
        approval_policy=settings.approval_policy(),
        tool_lease_seconds=42,
        tool_call_budget=3,
        llm_timeout_seconds=9,
        llm_max_attempts=5,
        max_agent_switches=6,
        approval_webhook=True,
    )
    assert config.approval_policy is not None and config.approval_policy.default_timeout_seconds == 120
    # It travels as a workflow input: through the pydantic payload converter and back unchanged.
    converter = pydantic_data_converter.payload_converter
    (decoded,) = converter.from_payloads(converter.to_payloads([config]), [ConversationConfig])
    assert decoded == config


def test_overrides_win_over_environment(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("AGENT_RUNTIME__LLM_MODEL", "from-env")
    assert load_settings(llm_model="from-flag").llm_model == "from-flag"
    assert isinstance(load_settings(), Settings)


def test_approval_reminders_escalations_and_the_webhook(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("AGENT_RUNTIME__APPROVAL__REMIND_AFTER_SECONDS", "900")
    clean_env.setenv("AGENT_RUNTIME__APPROVAL__ESCALATE_AFTER_SECONDS", "1800")
    clean_env.setenv("AGENT_RUNTIME__APPROVAL__TIMEOUT_SECONDS", "3600")
    clean_env.setenv(
        "AGENT_RUNTIME__APPROVAL__RULES",
        '[{"pattern": "execute_command", "requires_approval": true, "remind_after_seconds": 60,'
        ' "escalate_after_seconds": 120, "timeout_seconds": 300}]',
    )
    clean_env.setenv("AGENT_RUNTIME__APPROVAL__WEBHOOK_URL", "https://hooks.example.com/services/T0/B0/XyZsecret")
    clean_env.setenv("AGENT_RUNTIME__APPROVAL__WEBHOOK_SECRET", "shh")
    settings = load_settings()
    policy = settings.approval_policy()
    assert (policy.default_remind_after_seconds, policy.default_escalate_after_seconds) == (900, 1800)
    assert (policy.rules[0].remind_after_seconds, policy.rules[0].escalate_after_seconds) == (60, 120)
    # Secrets: the URL (its path is a chat service's credential) and the signing key never show in a repr or a log.
    assert "XyZsecret" not in repr(settings) and "shh" not in repr(settings)
    assert settings.approval.webhook_url is not None
    assert settings.approval.webhook_url.get_secret_value().endswith("/XyZsecret")


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        (
            {"REMIND_AFTER_SECONDS": "600", "ESCALATE_AFTER_SECONDS": "300"},
            "remind after (600 s) must be shorter than escalate after (300 s)",
        ),
        ({"ESCALATE_AFTER_SECONDS": "600", "TIMEOUT_SECONDS": "600"}, "escalate after (600 s) must be shorter"),
        (
            {
                "RULES": '[{"pattern": "write_file", "requires_approval": true, "remind_after_seconds": 90, '
                '"timeout_seconds": 60}]'
            },
            "remind after (90 s) must be shorter than expire after (60 s)",
        ),
        ({"WEBHOOK_URL": "https://user:pass@hooks.example.com/x"}, "no credentials in the URL"),
        ({"WEBHOOK_URL": "ftp://hooks.example.com/x"}, "expected an http(s) URL"),
    ],
)
def test_approval_timers_in_order_and_a_webhook_url_without_credentials(
    clean_env: pytest.MonkeyPatch, variables: dict[str, str], message: str
) -> None:
    for name, value in variables.items():
        clean_env.setenv(f"AGENT_RUNTIME__APPROVAL__{name}", value)
    with pytest.raises(SettingsError, match=re.escape(message)) as raised:
        load_settings()
    assert "AGENT_RUNTIME__APPROVAL" in str(raised.value) and "pass@" not in str(raised.value)


def test_worker_settings_defaults_and_environment(clean_env: pytest.MonkeyPatch) -> None:
    defaults = load_settings().worker
    assert defaults.max_cached_workflows == DEFAULT_MAX_CACHED_WORKFLOWS
    assert defaults.max_concurrent_workflow_tasks == DEFAULT_MAX_CONCURRENT_WORKFLOW_TASKS
    assert defaults.max_concurrent_workflow_tasks <= defaults.max_cached_workflows
    assert defaults.sticky_queue_schedule_to_start_timeout_seconds == 0.5

    clean_env.setenv("AGENT_RUNTIME__WORKER__MAX_CACHED_WORKFLOWS", "50")
    clean_env.setenv("AGENT_RUNTIME__WORKER__MAX_CONCURRENT_WORKFLOW_TASKS", "10")
    clean_env.setenv("AGENT_RUNTIME__WORKER__MAX_CONCURRENT_ACTIVITIES", "20")
    clean_env.setenv("AGENT_RUNTIME__WORKER__MAX_CONCURRENT_LOCAL_ACTIVITIES", "30")
    clean_env.setenv("AGENT_RUNTIME__WORKER__STICKY_QUEUE_SCHEDULE_TO_START_TIMEOUT_SECONDS", "2.5")

    options = worker_options(load_settings().worker)

    # Every option is an argument of the SDK's Worker, with the value the worker is built with.
    assert set(options) <= set(inspect.signature(Worker.__init__).parameters)
    assert options == {
        "max_cached_workflows": 50,
        "max_concurrent_workflow_tasks": 10,
        "max_concurrent_activities": 20,
        "max_concurrent_local_activities": 30,
        "sticky_queue_schedule_to_start_timeout": timedelta(seconds=2.5),
    }


def test_worker_settings_are_checked(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("AGENT_RUNTIME__WORKER__MAX_CACHED_WORKFLOWS", "20")
    clean_env.setenv("AGENT_RUNTIME__WORKER__MAX_CONCURRENT_WORKFLOW_TASKS", "40")
    with pytest.raises(SettingsError, match="MAX_CONCURRENT_WORKFLOW_TASKS \\(40\\) must not exceed"):
        load_settings()

    # No cache at all (every task replays its history) takes any number of workflow tasks.
    clean_env.setenv("AGENT_RUNTIME__WORKER__MAX_CACHED_WORKFLOWS", "0")
    assert load_settings().worker.max_cached_workflows == 0

    clean_env.setenv("AGENT_RUNTIME__WORKER__MAX_CONCURRENT_WORKFLOW_TASKS", "1")
    clean_env.setenv("AGENT_RUNTIME__WORKER__STICKY_QUEUE_SCHEDULE_TO_START_TIMEOUT_SECONDS", "0")
    clean_env.setenv("AGENT_RUNTIME__WORKER__MAX_CACHE", "5")
    with pytest.raises(SettingsError) as raised:
        load_settings()
    message = str(raised.value)
    assert "AGENT_RUNTIME__WORKER__MAX_CONCURRENT_WORKFLOW_TASKS: Input should be greater than or equal to 2" in message
    assert (
        "AGENT_RUNTIME__WORKER__STICKY_QUEUE_SCHEDULE_TO_START_TIMEOUT_SECONDS: Input should be greater than 0"
        in message
    )
    assert "AGENT_RUNTIME__WORKER__MAX_CACHE: Extra inputs are not permitted" in message
