"""The script model: what a test queues for the fake to answer, and the admin body that queues it.

Pydantic with `extra="forbid"`, so a misspelt field in a script fails at `script()` (or with a 422 from
`POST /_fake/script`) instead of being silently ignored; everything else in the package reads these types.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_QUEUE = "*"

Purpose = Literal["classification", "agent"]


class FakeToolCall(BaseModel):
    """A tool call the fake should return.

    `arguments` as a dict is sent the OpenAI way, as a JSON string (or as an object with
    `arguments_format="object"`, like some proxies do); a str is sent verbatim, which lets a test send unparsable
    arguments.
    """

    model_config = ConfigDict(extra="forbid")

    id: str | None = None
    name: str
    arguments: dict[str, Any] | str = Field(default_factory=dict)
    arguments_format: Literal["string", "object"] = "string"


class FakeUsage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int | None = None


class FakeReply(BaseModel):
    """One scripted answer. Fields combine: text with tool calls, a delay before an error, and so on.

    Attributes:
        content: Assistant text (None with tool calls gives OpenAI's null content).
        tool_calls: Tool calls; ids are generated (`call_<hex>`, deterministic per request) when absent.
        usage: Token usage to report; computed roughly from text lengths when absent.
        omit_usage: Send no `usage` at all, like the original llm-proxy's fake.
        finish_reason: Defaults to "tool_calls" with tool calls, else "stop".
        model: The `model` to echo; defaults to the requested model.
        status: Answer with this HTTP error status and an OpenAI error object instead of a completion.
        error_message: The error object's message for `status`.
        retry_after_seconds: Sent as `Retry-After` with `status`.
        error_text: Answer HTTP 200 with content "[Error] <error_text>", as the original llm-proxy does (bug B2).
        raw_body: Answer HTTP 200 with this body verbatim (for garbled-response tests).
        delay_seconds: Sleep this long before answering (for timeout tests).
        chunk_delay_seconds: When streaming, sleep this long between chunks, like a provider producing tokens over
            time (for latency benchmarks: the first token then clearly precedes the last).
        content_delta_chars: When streaming, send the content in deltas of this many characters (the last may be
            shorter) instead of three pieces; real providers send a token or two per delta, and a client's
            accumulator must cope with thousands of them.
        argument_delta_chars: The same for each tool call's arguments string: real providers stream arguments in
            fragments of a few characters (e.g. 6), so a large argument becomes a very long stream.
        match: Only a request of this purpose consumes the reply; others skip it.
    """

    model_config = ConfigDict(extra="forbid")

    content: str | None = None
    tool_calls: list[FakeToolCall] = Field(default_factory=list)
    usage: FakeUsage | None = None
    omit_usage: bool = False
    finish_reason: str | None = None
    model: str | None = None
    status: int | None = Field(default=None, ge=400, le=599)
    error_message: str | None = None
    retry_after_seconds: float | None = Field(default=None, ge=0)
    error_text: str | None = None
    raw_body: str | None = None
    delay_seconds: float = Field(default=0.0, ge=0)
    chunk_delay_seconds: float = Field(default=0.0, ge=0)
    content_delta_chars: int | None = Field(default=None, ge=1)
    argument_delta_chars: int | None = Field(default=None, ge=1)
    match: Purpose | None = None


class ScriptBody(BaseModel):
    """Body of `POST /_fake/script`."""

    session: str = DEFAULT_QUEUE
    replies: list[FakeReply]
