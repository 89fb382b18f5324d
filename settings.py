"""Process settings, read once from the environment and validated before anything starts.

Every variable is `AGENT_RUNTIME__<FIELD>`, nested groups add one more `__`: `AGENT_RUNTIME__LLM_MODEL`,
`AGENT_RUNTIME__TEMPORAL__ADDRESS`, `AGENT_RUNTIME__APPROVAL__RULES` (JSON). Entry points call `load_settings()`,
which reports every bad variable by its environment name, so an operator sees which one to fix.

Settings belong to processes (worker, API, CLI). What a session needs is copied into its `ConversationConfig`
when it starts (`Settings.conversation_config()`), so changing the environment never changes a running session
under it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict
from pydantic_settings import SettingsError as _SourceError

from workflows.context import context_window_for
from workflows.model import (
    DEFAULT_TASK_QUEUE,
    ApprovalPolicy,
    ApprovalRule,
    ConversationConfig,
    check_approval_timers,
)
from workflows.policy import DEFAULT_APPROVAL_POLICY

ENV_PREFIX = "AGENT_RUNTIME__"
NESTED_DELIMITER = "__"

log = logging.getLogger("agent_runtime.settings")

# Worker defaults (WorkerSettings), chosen by measuring with benchmarks/scale.py; the README says why.
DEFAULT_MAX_CACHED_WORKFLOWS = 250
DEFAULT_MAX_CONCURRENT_WORKFLOW_TASKS = 100
DEFAULT_MAX_CONCURRENT_ACTIVITIES = 100
DEFAULT_MAX_CONCURRENT_LOCAL_ACTIVITIES = 100
DEFAULT_STICKY_QUEUE_SCHEDULE_TO_START_TIMEOUT_SECONDS = 0.5


class SettingsError(Exception):
    """The environment does not describe a valid configuration; the message names each bad variable."""


class TemporalSettings(BaseModel):
    """Where the Temporal service is and how to reach it (`AGENT_RUNTIME__TEMPORAL__*`).

    Attributes:
        address: Frontend `host:port`.
        namespace: Temporal namespace.
        task_queue: The one task queue for workflows and activities.
        tls: Use TLS with the system roots. Implied by any of the TLS paths; with `api_key` and no TLS setting,
            the SDK turns TLS on itself (Temporal Cloud).
        tls_cert_path: Client certificate (PEM) for mTLS; needs `tls_key_path`.
        tls_key_path: Client private key (PEM) for mTLS; needs `tls_cert_path`.
        tls_ca_path: CA bundle (PEM) to verify the server with, instead of the system roots.
        api_key: Temporal Cloud API key.
    """

    # A misspelt nested variable (AGENT_RUNTIME__TEMPORAL__ADRESS) must fail loudly, not fall back to a default.
    model_config = ConfigDict(extra="forbid")

    address: str = "127.0.0.1:7233"
    namespace: str = Field(default="default", min_length=1)
    task_queue: str = Field(default=DEFAULT_TASK_QUEUE, min_length=1)
    tls: bool = False
    tls_cert_path: Path | None = None
    tls_key_path: Path | None = None
    tls_ca_path: Path | None = None
    api_key: SecretStr | None = None

    @field_validator("address")
    @classmethod
    def _host_and_port(cls, value: str) -> str:
        host, _, port = value.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"expected host:port, got {value!r}")
        return value

    @field_validator("tls_cert_path", "tls_key_path", "tls_ca_path")
    @classmethod
    def _readable_file(cls, value: Path | None) -> Path | None:
        # Checked here rather than at connect time so a bad mount fails the deploy, not the first request.
        if value is not None and not value.is_file():
            raise ValueError(f"no such file: {value}")
        return value

    @model_validator(mode="after")
    def _cert_and_key_together(self) -> TemporalSettings:
        if (self.tls_cert_path is None) != (self.tls_key_path is None):
            raise ValueError(
                f"{ENV_PREFIX}TEMPORAL__TLS_CERT_PATH and {ENV_PREFIX}TEMPORAL__TLS_KEY_PATH must be set together"
            )
        return self


class ApprovalSettings(BaseModel):
    """The human-approval policy given to new sessions (`AGENT_RUNTIME__APPROVAL__*`).

    Attributes:
        enabled: With False no tool call waits for a human.
        timeout_seconds: Default expiry of an approval; None waits until someone decides. A rule's own
            `timeout_seconds` wins over it.
        remind_after_seconds: Default time after which a pending approval is reminded of (a `status` event on the
            session's stream, and the webhook); None: no reminder. A rule's own `remind_after_seconds` wins.
        escalate_after_seconds: Default time after which a pending approval is escalated (the same, as an
            escalation); None: no escalation. A rule's own `escalate_after_seconds` wins.
        rules: Rules (JSON list of `ApprovalRule`): deny rules (asking, with conditions) win, otherwise the first
            match wins (workflows/policy.py). The built-in `DEFAULT_APPROVAL_POLICY` rules follow them (all of the
            policy when None), so writes, directories and commands no rule approved still ask. A tool no rule
            matches needs no approval; end with a `{"pattern": "*", "requires_approval": true}` rule to make
            approval the default for every tool.
        webhook_url: Where reminders and escalations are POSTed as JSON (`ApprovalNotice`; activities/webhook.py).
            Kept by the worker, never in workflow history or logs (a chat webhook's path is its secret).
        webhook_secret: Signs each notice: `X-Agent-Runtime-Signature: sha256=<HMAC-SHA256 of the body>`.
    """

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    timeout_seconds: float | None = Field(default=None, gt=0)
    remind_after_seconds: float | None = Field(default=None, gt=0)
    escalate_after_seconds: float | None = Field(default=None, gt=0)
    rules: list[ApprovalRule] | None = None
    webhook_url: SecretStr | None = None
    webhook_secret: SecretStr | None = None

    @field_validator("webhook_url")
    @classmethod
    def _webhook_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        parts = urlsplit(value.get_secret_value())
        # Never echo the URL: its path or query may be the receiver's secret.
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("expected an http(s) URL")
        if parts.username or parts.password:
            raise ValueError(
                f"no credentials in the URL: sign notices with {ENV_PREFIX}APPROVAL__WEBHOOK_SECRET instead"
            )
        return value

    @model_validator(mode="after")
    def _timers_in_order(self) -> ApprovalSettings:
        check_approval_timers(self.remind_after_seconds, self.escalate_after_seconds, self.timeout_seconds)
        return self


class ApiSettings(BaseModel):
    """Where `agent-runtime api` listens (`AGENT_RUNTIME__API__*`); `--host`/`--port` win over these.

    Attributes:
        host: Interface to bind.
        port: TCP port (the original Agent Runtime's is 8001, which the gateway expects).
    """

    model_config = ConfigDict(extra="forbid")

    host: str = Field(default="127.0.0.1", min_length=1)
    port: int = Field(default=8001, ge=1, le=65535)


class ContentSettings(BaseModel):
    """The content store: where large content lives outside Temporal's history (`AGENT_RUNTIME__CONTENT__*`).

    Every process of a deployment (worker, API, CLI) must reach the same store: the worker stores what the model
    writes, the API stores what the IDE sends and resolves what it relays.

    Attributes:
        backend: `auto` (PostgreSQL when a database is configured, else a directory), `postgres` (table `payloads`
            in the projection's database), `file` (a directory every process can read; one machine only) or `s3` (an
            S3-compatible bucket: `pip install 'agent-runtime[s3]'`; credentials from the usual AWS variables).
        path: The directory of the `file` backend.
        s3_bucket: The bucket of the `s3` backend.
        s3_endpoint_url: An S3-compatible endpoint (MinIO, R2, ...); None for AWS.
        external_storage_threshold: Temporal payloads of this many bytes or more are stored in the content store
            and referenced from history, whoever sends them (the runtime's own inputs stay far below it).
    """

    model_config = ConfigDict(extra="forbid")

    backend: Literal["auto", "postgres", "file", "s3"] = "auto"
    path: Path = Path(".agent-runtime/content")
    s3_bucket: str | None = None
    s3_endpoint_url: str | None = None
    external_storage_threshold: int = Field(default=256 * 1024, ge=1024, le=2 * 1024 * 1024)

    @model_validator(mode="after")
    def _bucket_for_s3(self) -> ContentSettings:
        if self.backend == "s3" and not self.s3_bucket:
            raise ValueError(f"{ENV_PREFIX}CONTENT__S3_BUCKET is required with backend s3")
        return self


class OtelSettings(BaseModel):
    """OpenTelemetry (`AGENT_RUNTIME__OTEL__*`); with neither an endpoint nor `console`, nothing is exported.

    Attributes:
        exporter_otlp_endpoint: OTLP/HTTP base URL of a collector, e.g. `http://otel-collector:4318`.
        console: Print spans and metrics to stdout (debugging).
        service_name: The `service.name` resource attribute.
    """

    model_config = ConfigDict(extra="forbid")

    exporter_otlp_endpoint: str | None = None
    console: bool = False
    service_name: str = Field(default="agent-runtime", min_length=1)


class WorkerSettings(BaseModel):
    """How much one worker process takes on (`AGENT_RUNTIME__WORKER__*`); read by `agent-runtime worker` only.

    A session parked on an approval costs Temporal nothing but history; while its workflow stays in a worker's
    sticky cache, its state also lives in that worker's memory (from ~0.3 MiB for a fresh session to several MiB for a
    run of a thousand events or more). A session evicted from the cache is replayed from its history on its next input
    (about 1 ms per event of its current run), so the cache bounds a worker's memory however many sessions wait. It
    must still hold the sessions in the middle of a turn, or every input replays one. The defaults come from
    `python -m benchmarks.scale` on a 2-core machine (README, "Worker settings").

    Attributes:
        max_cached_workflows: Workflows kept in memory between their tasks (the sticky cache); 0 turns caching and
            sticky queues off (every task replays the whole history).
        max_concurrent_workflow_tasks: Workflow tasks this worker runs at once; at least 2 with a cache (an SDK
            rule), and at most `max_cached_workflows` (a running task holds a cache slot).
        max_concurrent_activities: LLM calls, projection writes and the other activities run at once.
        max_concurrent_local_activities: Local activities (short projection writes) run at once.
        sticky_queue_schedule_to_start_timeout_seconds: How long a cached session's next task waits on this
            worker's own (sticky) queue before any worker may take it from the shared queue: what a session pays
            once when its worker died. Temporal's default is 10 s.
    """

    model_config = ConfigDict(extra="forbid")

    max_cached_workflows: int = Field(default=DEFAULT_MAX_CACHED_WORKFLOWS, ge=0)
    max_concurrent_workflow_tasks: int = Field(default=DEFAULT_MAX_CONCURRENT_WORKFLOW_TASKS, ge=2)
    max_concurrent_activities: int = Field(default=DEFAULT_MAX_CONCURRENT_ACTIVITIES, ge=1)
    max_concurrent_local_activities: int = Field(default=DEFAULT_MAX_CONCURRENT_LOCAL_ACTIVITIES, ge=1)
    sticky_queue_schedule_to_start_timeout_seconds: float = Field(
        default=DEFAULT_STICKY_QUEUE_SCHEDULE_TO_START_TIMEOUT_SECONDS, gt=0
    )

    @model_validator(mode="after")
    def _tasks_fit_the_cache(self) -> WorkerSettings:
        if 0 < self.max_cached_workflows < self.max_concurrent_workflow_tasks:
            raise ValueError(
                f"{ENV_PREFIX}WORKER__MAX_CONCURRENT_WORKFLOW_TASKS ({self.max_concurrent_workflow_tasks}) must not "
                f"exceed {ENV_PREFIX}WORKER__MAX_CACHED_WORKFLOWS ({self.max_cached_workflows})"
            )
        return self


class Settings(BaseSettings):
    """Everything a runtime process is configured with. Build it with `load_settings()`.

    Attributes:
        llm_proxy_url: Base URL of an OpenAI-compatible API (the original llm-proxy, LiteLLM, OpenAI, vLLM...).
        llm_model: Model name sent with every completion.
        llm_context_tokens: The model's context window in tokens; requests are fitted into it (older turns left
            out, over-long tool results cut). Unset: the window of a well-known model family, else 32,000.
        llm_api_key: Sent as `Authorization: Bearer ...` to the LLM endpoint.
        llm_timeout_seconds: Timeout of one LLM call (one activity attempt).
        llm_max_attempts: Attempts per LLM call, retries included (Temporal owns retries).
        internal_api_key: The `X-Internal-Auth` key the gateway sends and the LLM proxy expects.
        multi_agent_mode: Route between agents; False keeps every session on the universal agent.
        llm_streaming: Ask the LLM to stream and forward its tokens live; turn off for a proxy that drops tool-call
            deltas when streaming (the original llm-proxy does).
        database_url: PostgreSQL DSN of the read projection (`AGENT_RUNTIME__DATABASE_URL`, or plain `DATABASE_URL`);
            SQLAlchemy-style `postgresql+asyncpg://` URLs are accepted. With one, the worker writes the projection and
            new sessions are started with `projection_enabled`; without, the dev stack and the demo start an
            embedded PostgreSQL and other processes run without a projection.
        temporal: Temporal connection.
        approval: Approval policy for new sessions.
        otel: OpenTelemetry exporter.
        api: Where the HTTP API listens.
        content: The content store for large content (tool results, files, long answers, archived transcripts).
        worker: How much one worker process takes on (cache, concurrency, sticky queue).
        tool_lease_seconds: How long an IDE-executed tool call may stay unanswered before it is closed with an
            error result.
        tool_call_budget: Tool calls allowed in one turn before the runtime stops the loop.
        max_agent_switches: Agent switches allowed in one session.
        continue_as_new_after_turns: Start a fresh workflow run (continue-as-new) after this many turns; unset,
            sessions continue-as-new only when Temporal suggests it (history size).
        continue_as_new_after_events: Start a fresh workflow run once the current one has this many history events
            (between turns). A worker without the session in its cache replays the whole run before it answers (after
            a restart, or an eviction), at about 1 ms per event here: 1,000 events keep that near a second, well
            inside the 10 s workflow task timeout even on a busy machine.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=NESTED_DELIMITER,
        case_sensitive=False,
        # `FOO=` in a compose file or .env means "not set", not "set to the empty string".
        env_ignore_empty=True,
        extra="ignore",
    )

    llm_proxy_url: str = "http://127.0.0.1:8002"
    llm_model: str = Field(default="gpt-4o-mini", min_length=1)
    llm_context_tokens: int | None = Field(default=None, ge=1000)
    llm_api_key: SecretStr | None = None
    llm_timeout_seconds: float = Field(default=120.0, gt=0)
    llm_max_attempts: int = Field(default=3, ge=1)
    internal_api_key: SecretStr | None = None
    multi_agent_mode: bool = True
    llm_streaming: bool = True
    # The original runtime and most hosting platforms call it DATABASE_URL; the prefixed name wins when both are set.
    database_url: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices(f"{ENV_PREFIX}DATABASE_URL", "DATABASE_URL", "database_url"),
    )
    temporal: TemporalSettings = Field(default_factory=TemporalSettings)
    approval: ApprovalSettings = Field(default_factory=ApprovalSettings)
    otel: OtelSettings = Field(default_factory=OtelSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    content: ContentSettings = Field(default_factory=ContentSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    tool_lease_seconds: float = Field(default=600.0, gt=0)
    tool_call_budget: int = Field(default=20, ge=1)
    max_agent_switches: int = Field(default=50, ge=1)
    continue_as_new_after_turns: int | None = Field(default=None, ge=1)
    continue_as_new_after_events: int = Field(default=1000, ge=20)

    @field_validator("llm_proxy_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"expected an http(s) URL, got {value!r}")
        return value

    @field_validator("database_url")
    @classmethod
    def _postgres_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        url = value.get_secret_value()
        scheme, sep, rest = url.partition("://")
        # asyncpg wants postgresql:// or postgres://; drop a SQLAlchemy driver suffix (postgresql+asyncpg://).
        base = scheme.split("+", 1)[0].lower()
        if not sep or base not in ("postgresql", "postgres"):
            # Never echo the URL: it may carry a password.
            raise ValueError(f"expected a postgresql:// URL (any PostgreSQL 14+), got a {scheme or 'malformed'} URL")
        return SecretStr(f"postgresql://{rest}") if scheme != "postgresql" else value

    def chat_completions_url(self) -> str:
        """The chat completions endpoint under `llm_proxy_url`.

        Accepts a base with or without the `/v1` suffix, since providers document both forms.

        Returns:
            `{base}/v1/chat/completions`, or `{base}/chat/completions` when the base already ends with `/v1`.
        """
        base = self.llm_proxy_url.rstrip("/")
        if base.endswith("/v1"):
            return f"{base}/chat/completions"
        return f"{base}/v1/chat/completions"

    def approval_policy(self) -> ApprovalPolicy:
        """The approval policy for new sessions.

        Returns:
            The configured rules followed by the built-in ones (only the built-in ones when none are configured),
            with `enabled` and the default timeout taken from the settings either way.
        """
        if self.approval.rules is None:
            base = DEFAULT_APPROVAL_POLICY
        else:
            # The built-in rules follow the configured ones, so a risky tool that no configured rule matches (a
            # command an allow rule did not approve) still asks, instead of running because nothing matched.
            base = ApprovalPolicy(rules=[*self.approval.rules, *DEFAULT_APPROVAL_POLICY.rules])
        return ApprovalPolicy.model_validate(
            base.model_dump()
            | {
                "enabled": self.approval.enabled,
                "default_timeout_seconds": self.approval.timeout_seconds,
                "default_remind_after_seconds": self.approval.remind_after_seconds,
                "default_escalate_after_seconds": self.approval.escalate_after_seconds,
            }
        )

    def conversation_config(self) -> ConversationConfig:
        """The per-session configuration a new session is started with.

        Returns:
            A `ConversationConfig` with every field set from these settings.
        """
        return ConversationConfig(
            multi_agent_mode=self.multi_agent_mode,
            llm_model=self.llm_model,
            llm_context_tokens=self.llm_context_tokens or context_window_for(self.llm_model),
            approval_policy=self.approval_policy(),
            tool_lease_seconds=self.tool_lease_seconds,
            tool_call_budget=self.tool_call_budget,
            llm_timeout_seconds=self.llm_timeout_seconds,
            llm_max_attempts=self.llm_max_attempts,
            llm_streaming=self.llm_streaming,
            max_agent_switches=self.max_agent_switches,
            continue_as_new_after_turns=self.continue_as_new_after_turns,
            continue_as_new_after_events=self.continue_as_new_after_events,
            projection_enabled=self.database_url is not None,
            approval_webhook=self.approval.webhook_url is not None,
        )


def load_settings(**overrides: Any) -> Settings:
    """Read and validate the settings from the environment.

    Args:
        **overrides: Field values that win over the environment (tests, CLI flags).

    Returns:
        The validated settings.

    Raises:
        SettingsError: A variable is malformed or out of range; the message has one line per problem, each
            starting with the variable's name.
    """
    _warn_unknown_variables()
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = [f"{_env_name(err['loc'])}: {err['msg'].removeprefix('Value error, ')}" for err in exc.errors()]
        raise SettingsError("Invalid configuration:\n  " + "\n  ".join(lines)) from None
    except _SourceError as exc:
        # Raised by pydantic-settings before validation, e.g. for a JSON value that does not parse.
        raise SettingsError(f"Invalid configuration: {exc} (check the JSON of the {ENV_PREFIX}* variables)") from exc


def _env_name(loc: tuple[int | str, ...]) -> str:
    """The variable an error location comes from; the rest of the location is the path inside its value."""
    if not loc:
        return f"{ENV_PREFIX}*"
    first = str(loc[0]).upper()
    # A field with its own environment names (database_url) reports the one it was read from.
    name = first if first.startswith(ENV_PREFIX) or first == "DATABASE_URL" else f"{ENV_PREFIX}{first}"
    rest = loc[1:]
    field = Settings.model_fields.get(str(loc[0]))
    nested = field is not None and isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
    if nested and rest and isinstance(rest[0], str):
        name, rest = f"{name}{NESTED_DELIMITER}{rest[0].upper()}", rest[1:]
    if rest:
        name += " at " + "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in rest).lstrip(".")
    return name


def _warn_unknown_variables() -> None:
    # Top-level typos would otherwise be ignored silently (nested ones are rejected by extra="forbid").
    for var in os.environ:
        upper = var.upper()
        if not upper.startswith(ENV_PREFIX):
            continue
        field = upper[len(ENV_PREFIX) :].split(NESTED_DELIMITER, 1)[0].lower()
        if field not in Settings.model_fields:
            log.warning("Ignoring unknown setting %s", var)
