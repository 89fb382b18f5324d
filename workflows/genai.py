"""The OpenTelemetry GenAI semantic conventions as the runtime applies them to its LLM calls (spans and metrics).

Names checked against the current GenAI conventions (client inference span, `gen_ai.client.*` metrics):

- One `chat {model}` span (kind CLIENT) per logical call. The workflow starts it (workflows/tracing.py), so it covers
  every attempt and the backoff between them, as the conventions ask of a retried operation; each attempt shows
  under it as Temporal's `RunActivity:llm.chat_completion` span, with one `POST` span per HTTP request inside
  (activities/llm.py; `http.request.resend_count` on a retry).
- `gen_ai.provider.name` is `openai`: the runtime speaks OpenAI's chat-completions API to whatever serves it (a
  proxy such as LiteLLM may relay to another provider; `server.address` and `gen_ai.response.model` tell which).
  `server.address`/`server.port` are those of the configured endpoint; they come back with the reply, so a failed
  call has none.
- `error.type`, on failed calls: the activity's error type (`LlmUnavailable`, `LlmRequestRejected`,
  `LlmContextTooLong`, `LlmBadResponse`, `ContentStoreUnavailable`), `timeout` when Temporal's timeout ended the
  call, else the failure's class name.
"""

from __future__ import annotations

from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.exceptions import TimeoutError as ActivityTimeoutError

from workflows.model import LlmReply, LlmRequest

OPERATION_NAME = "gen_ai.operation.name"
PROVIDER_NAME = "gen_ai.provider.name"
REQUEST_MODEL = "gen_ai.request.model"
RESPONSE_MODEL = "gen_ai.response.model"
TOKEN_TYPE = "gen_ai.token.type"
CONVERSATION_ID = "gen_ai.conversation.id"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
ERROR_TYPE = "error.type"

CHAT = "chat"
OPENAI = "openai"
INPUT = "input"
OUTPUT = "output"
ERROR_OTHER = "_OTHER"


def span_name(request: LlmRequest) -> str:
    return f"{CHAT} {request.model}"


def request_attributes(request: LlmRequest) -> dict[str, str | int | float | bool]:
    """What the span knows when the call starts."""
    attributes: dict[str, str | int | float | bool] = {
        OPERATION_NAME: CHAT,
        PROVIDER_NAME: OPENAI,
        REQUEST_MODEL: request.model,
        CONVERSATION_ID: request.session_id,
        "gen_ai.request.stream": request.stream,
        "agent_runtime.agent": request.agent.value,
        "agent_runtime.purpose": request.purpose,
    }
    if request.temperature is not None:
        attributes["gen_ai.request.temperature"] = request.temperature
    return attributes


def reply_attributes(reply: LlmReply) -> dict[str, str | int | list[str]]:
    """What the span learns from a successful call."""
    attributes: dict[str, str | int | list[str]] = {
        "gen_ai.usage.input_tokens": reply.usage.prompt_tokens,
        "gen_ai.usage.output_tokens": reply.usage.completion_tokens,
        "gen_ai.response.finish_reasons": [reply.finish_reason or "unknown"],
        "agent_runtime.tool_calls": len(reply.tool_calls),
    }
    if reply.model:
        attributes[RESPONSE_MODEL] = reply.model
    return attributes | server_attributes(reply)


def server_attributes(reply: LlmReply | None) -> dict[str, str | int]:
    if reply is None or not reply.server_address:
        return {}
    attributes: dict[str, str | int] = {SERVER_ADDRESS: reply.server_address}
    if reply.server_port is not None:
        attributes[SERVER_PORT] = reply.server_port
    return attributes


def metric_attributes(
    request: LlmRequest, reply: LlmReply | None, error: str | None = None
) -> dict[str, str | int | float | bool]:
    """The standard attributes of `gen_ai.client.operation.duration` and `gen_ai.client.token.usage`."""
    attributes: dict[str, str | int | float | bool] = {
        OPERATION_NAME: CHAT,
        PROVIDER_NAME: OPENAI,
        REQUEST_MODEL: request.model,
    }
    if reply is not None and reply.model:
        attributes[RESPONSE_MODEL] = reply.model
    if error is not None:
        attributes[ERROR_TYPE] = error
    return attributes | server_attributes(reply)


def error_type(err: BaseException) -> str:
    """A low-cardinality `error.type` for a failed call (see the module docstring)."""
    cause = err.cause if isinstance(err, ActivityError) else err
    if isinstance(cause, ApplicationError) and cause.type:
        return cause.type
    if isinstance(cause, ActivityTimeoutError):
        return "timeout"
    return type(cause).__name__ if cause is not None else ERROR_OTHER
