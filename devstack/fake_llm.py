"""A scriptable fake of an OpenAI-compatible LLM provider, served over real HTTP.

The demo and the tests talk to it exactly as the worker talks to a real provider (httpx, JSON, SSE), so the whole
request/response path is exercised. It is as strict as OpenAI about the things the original runtime got wrong: a
history whose tool calls are not answered (bug B1/B3, "No tool output found ..."), a tool message that answers
nothing ("No tool call found ..."), bookkeeping fields leaking into messages, an empty `tools` array. A request
OpenAI would refuse gets OpenAI's 400 error object here too, so a test that passes against the fake does not
fail in production on a malformed history. It can also have a context window (`context_window`,
`set_context_window`): a prompt longer than it gets OpenAI's `context_length_exceeded` 400, counted with
`estimate_prompt_tokens`, so compaction and overflow handling can be tested without a real model.

Replies come from scripts queued per session (the body's `user` field, which the LLM activity sets to the session
id), then from the "*" queue, then from a small deterministic "brain" good enough for the demo: it classifies by
keywords, calls `execute_command` when asked to run something, and summarises tool results.

It is a test double, shipped with the app for `agent-runtime dev`/`demo`; production settings never point at it.

Use it in-process::

    async with FakeLlmServer() as server:
        server.script("s1", [FakeReply(content="hello")])
        ...  # point the LLM activity at server.chat_completions_url
        assert server.requests("s1")[0]["messages"][-1]["content"] == "hi"

or as a process: `agent-runtime fake-llm --port 8002` (see `serve`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import logging
import math
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal

import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from devstack.embedded_server import EmbeddedServer

logger = logging.getLogger(__name__)

DEFAULT_QUEUE = "*"
FAKE_MODEL_ID = "fake-llm"

# How the fake tells a routing request from an agent turn: the classifier's system prompt (workflows/routing.py)
# says it. Matching a phrase keeps the fake independent of the workflow package.
CLASSIFICATION_MARKER = "respond only with json"

Purpose = Literal["classification", "agent"]


# --- Script model ---


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


class ContextWindowBody(BaseModel):
    """Body of `POST /_fake/context-window`: a session's window in tokens ("*" sets the default); null removes it.

    `tokens` is required so that a typo cannot silently lift a limit; null is the explicit way to do that.
    """

    model_config = ConfigDict(extra="forbid")

    session: str = DEFAULT_QUEUE
    tokens: int | None = Field(ge=1)


@dataclass
class ReceivedRequest:
    """One request as the fake received it.

    Attributes:
        received_at: Wall-clock time (`time.time()`) the request was recorded.
        first_token_at: Wall-clock time the first streamed chunk with assistant text was handed to the server to
            send; None until then (and for non-streamed or text-less replies).
        prompt_tokens: The prompt's size as the fake counts it (`estimate_prompt_tokens`), the number its context
            window is checked against; recorded for refused requests too, so a test can see how close it came.
    """

    path: str
    session: str
    headers: dict[str, str]
    body: Any
    prompt_tokens: int = 0
    received_at: float = field(default_factory=time.time)
    first_token_at: float | None = None


# --- OpenAI-style validation ---


class OpenAIError(Exception):
    """An error the fake answers with OpenAI's error object."""

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        status: int = 400,
        type: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        self.status = status
        self.type = type

    def response(self, headers: Mapping[str, str] | None = None) -> JSONResponse:
        return JSONResponse(
            {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}},
            status_code=self.status,
            headers=dict(headers or {}),
        )


_ROLES = ("system", "assistant", "user", "function", "tool", "developer")
_ROLES_TEXT = "'system', 'assistant', 'user', 'function', 'tool', and 'developer'"
_MESSAGE_FIELDS: dict[str, frozenset[str]] = {
    "system": frozenset({"role", "content", "name"}),
    "developer": frozenset({"role", "content", "name"}),
    "user": frozenset({"role", "content", "name"}),
    "assistant": frozenset({"role", "content", "name", "tool_calls", "function_call", "refusal", "audio"}),
    # `name` on tool messages is accepted by OpenAI (its cookbook sends it) though not documented.
    "tool": frozenset({"role", "content", "tool_call_id", "name"}),
    "function": frozenset({"role", "content", "name"}),
}
_BODY_FIELDS = frozenset(
    {
        "model",
        "messages",
        "stream",
        "stream_options",
        "temperature",
        "top_p",
        "n",
        "stop",
        "max_tokens",
        "max_completion_tokens",
        "presence_penalty",
        "frequency_penalty",
        "logit_bias",
        "logprobs",
        "top_logprobs",
        "user",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "functions",
        "function_call",
        "response_format",
        "seed",
        "service_tier",
        "store",
        "metadata",
        "modalities",
        "audio",
        "prediction",
        "reasoning_effort",
        "verbosity",
        "safety_identifier",
        "prompt_cache_key",
        "web_search_options",
    }
)
_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_MISSING_TOOL_OUTPUT = (
    "An assistant message with 'tool_calls' must be followed by tool messages responding to each 'tool_call_id'. "
    "The following tool_call_ids did not have response messages: {ids}"
)
_ORPHAN_TOOL_MESSAGE = (
    "Invalid parameter: messages with role 'tool' must be a response to a preceeding message with 'tool_calls'."
)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _invalid_type(param: str, expected: str, value: Any) -> OpenAIError:
    return OpenAIError(
        f"Invalid type for '{param}': expected {expected}, but got {_json_type(value)} instead.",
        param=param,
        code="invalid_type",
    )


def _missing(param: str) -> OpenAIError:
    return OpenAIError(f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter")


def validate_chat_body(body: Any) -> None:
    """Refuse what OpenAI's chat-completions endpoint refuses, with its messages.

    Args:
        body: The decoded request body.

    Raises:
        OpenAIError: The first problem found (400).
    """
    if not isinstance(body, dict):
        raise _invalid_type("body", "an object", body)
    unknown = sorted(set(body) - _BODY_FIELDS)
    if unknown:
        raise OpenAIError(f"Unrecognized request argument supplied: {unknown[0]}")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise OpenAIError("you must provide a model parameter")
    _validate_messages(body)
    _validate_tools(body)
    _validate_options(body)


def _validate_messages(body: dict[str, Any]) -> None:
    if "messages" not in body:
        raise _missing("messages")
    messages = body["messages"]
    if not isinstance(messages, list):
        raise _invalid_type("messages", "an array", messages)
    if not messages:
        raise OpenAIError(
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.",
            param="messages",
            code="empty_array",
        )
    for index, message in enumerate(messages):
        _validate_message(index, message)
    _validate_pairing(messages)


def _validate_message(index: int, message: Any) -> None:
    where = f"messages[{index}]"
    if not isinstance(message, dict):
        raise _invalid_type(where, "an object", message)
    if "role" not in message:
        raise _missing(f"{where}.role")
    role = message["role"]
    if role not in _ROLES:
        raise OpenAIError(
            f"Invalid value: '{role}'. Supported values are: {_ROLES_TEXT}.",
            param=f"{where}.role",
            code="invalid_value",
        )
    extra = sorted(set(message) - _MESSAGE_FIELDS[role])
    if extra:
        raise OpenAIError(f"Additional properties are not allowed ('{extra[0]}' was unexpected) - 'messages.{index}'")

    has_tool_calls = role == "assistant" and message.get("tool_calls") is not None
    content = message.get("content")
    if content is None:
        # Only an assistant message that calls tools (or the legacy function) may go without content.
        if not (role == "assistant" and (has_tool_calls or message.get("function_call"))):
            if "content" not in message:
                raise _missing(f"{where}.content")
            raise _invalid_type(f"{where}.content", "one of a string or array of objects", content)
    elif isinstance(content, list):
        for part_index, part in enumerate(content):
            if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                raise _invalid_type(f"{where}.content[{part_index}]", "an object with a 'type'", part)
    elif not isinstance(content, str):
        raise _invalid_type(f"{where}.content", "one of a string or array of objects", content)

    if role == "tool":
        if not isinstance(message.get("tool_call_id"), str) or not message["tool_call_id"]:
            raise OpenAIError(
                "Missing parameter 'tool_call_id': messages with role 'tool' must have a 'tool_call_id'.",
                param=f"{where}.tool_call_id",
                code="missing_required_parameter",
            )
    if "name" in message and not isinstance(message["name"], str):
        raise _invalid_type(f"{where}.name", "a string", message["name"])
    if has_tool_calls:
        _validate_tool_calls(where, message["tool_calls"])


def _validate_tool_calls(where: str, tool_calls: Any) -> None:
    if not isinstance(tool_calls, list):
        raise _invalid_type(f"{where}.tool_calls", "an array", tool_calls)
    if not tool_calls:
        raise OpenAIError(
            f"Invalid '{where}.tool_calls': empty array. Expected an array with minimum length 1, "
            "but got an empty array instead.",
            param=f"{where}.tool_calls",
            code="empty_array",
        )
    for call_index, call in enumerate(tool_calls):
        at = f"{where}.tool_calls[{call_index}]"
        if not isinstance(call, dict):
            raise _invalid_type(at, "an object", call)
        if not isinstance(call.get("id"), str) or not call["id"]:
            raise _missing(f"{at}.id")
        if call.get("type") != "function":
            raise OpenAIError(
                f"Invalid value: '{call.get('type')}'. Supported values are: 'function'.",
                param=f"{at}.type",
                code="invalid_value",
            )
        function = call.get("function")
        if not isinstance(function, dict):
            raise _missing(f"{at}.function")
        if not isinstance(function.get("name"), str) or not function["name"]:
            raise _missing(f"{at}.function.name")
        if "arguments" not in function:
            raise _missing(f"{at}.function.arguments")
        if not isinstance(function["arguments"], str):
            # OpenAI wants the arguments JSON-encoded; an object here is a classic client bug.
            raise _invalid_type(f"{at}.function.arguments", "a string", function["arguments"])


def _validate_pairing(messages: list[dict[str, Any]]) -> None:
    """Invariant I1/I2 as OpenAI enforces it: each tool-call message is answered in full, right after it."""
    seen_ids: dict[str, int] = {}
    unanswered: list[str] = []  # call ids of the open assistant tool-call message, in order
    open_index = -1
    for index, message in enumerate(messages):
        role = message["role"]
        if role == "tool":
            call_id = message["tool_call_id"]
            if call_id not in unanswered:
                # Answers nothing, answers a call of an older message, or answers one twice.
                raise OpenAIError(_ORPHAN_TOOL_MESSAGE, param=f"messages.[{index}].role")
            unanswered.remove(call_id)
            continue
        if unanswered:
            raise OpenAIError(
                _MISSING_TOOL_OUTPUT.format(ids=", ".join(unanswered)), param=f"messages.[{open_index}].role"
            )
        if role == "assistant" and message.get("tool_calls"):
            for call in message["tool_calls"]:
                call_id = call["id"]
                if call_id in seen_ids:
                    raise OpenAIError(
                        f"Invalid 'messages[{index}].tool_calls': duplicate tool call id '{call_id}' "
                        f"(already used in messages[{seen_ids[call_id]}]).",
                        param=f"messages[{index}].tool_calls",
                        code="invalid_value",
                    )
                seen_ids[call_id] = index
                unanswered.append(call_id)
            open_index = index
    if unanswered:
        raise OpenAIError(_MISSING_TOOL_OUTPUT.format(ids=", ".join(unanswered)), param=f"messages.[{open_index}].role")


def _validate_tools(body: dict[str, Any]) -> None:
    if "tools" in body:
        tools = body["tools"]
        if not isinstance(tools, list):
            raise _invalid_type("tools", "an array", tools)
        if not tools:
            raise OpenAIError(
                "Invalid 'tools': empty array. Expected an array with minimum length 1, "
                "but got an empty array instead.",
                param="tools",
                code="empty_array",
            )
        for index, tool in enumerate(tools):
            _validate_tool(index, tool)
    if "tool_choice" in body:
        choice = body["tool_choice"]
        if not body.get("tools"):
            raise OpenAIError(
                "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified.",
                param="tool_choice",
            )
        names = {tool["function"]["name"] for tool in body["tools"]}
        if isinstance(choice, str):
            if choice not in ("none", "auto", "required"):
                raise OpenAIError(
                    f"Invalid value: '{choice}'. Supported values are: 'none', 'auto', and 'required'.",
                    param="tool_choice",
                    code="invalid_value",
                )
        elif isinstance(choice, dict):
            function = choice.get("function")
            name = function.get("name") if isinstance(function, dict) else None
            if choice.get("type") != "function" or name not in names:
                raise OpenAIError(
                    f"Invalid value for 'tool_choice': no function named '{name}' was specified in the 'tools' "
                    "parameter.",
                    param="tool_choice",
                )
        else:
            raise _invalid_type("tool_choice", "one of a string or object", choice)


def _validate_tool(index: int, tool: Any) -> None:
    where = f"tools[{index}]"
    if not isinstance(tool, dict):
        raise _invalid_type(where, "an object", tool)
    if tool.get("type") != "function":
        raise OpenAIError(
            f"Invalid value: '{tool.get('type')}'. Supported values are: 'function' and 'custom'.",
            param=f"{where}.type",
            code="invalid_value",
        )
    function = tool.get("function")
    if not isinstance(function, dict):
        raise _missing(f"{where}.function")
    name = function.get("name")
    if not isinstance(name, str):
        raise _missing(f"{where}.function.name")
    if not _TOOL_NAME.match(name):
        raise OpenAIError(
            f"Invalid '{where}.function.name': string does not match pattern. Expected a string that matches the "
            "pattern '^[a-zA-Z0-9_-]+$'.",
            param=f"{where}.function.name",
            code="invalid_value",
        )
    if "description" in function and not isinstance(function["description"], str):
        raise _invalid_type(f"{where}.function.description", "a string", function["description"])
    if "parameters" in function:
        parameters = function["parameters"]
        if not isinstance(parameters, dict):
            raise _invalid_type(f"{where}.function.parameters", "an object", parameters)
        if parameters.get("type") != "object":
            raise OpenAIError(
                f"Invalid schema for function '{name}': schema must be a JSON Schema of 'type: \"object\"', "
                f"got 'type: \"{parameters.get('type')}\"'.",
                param=f"{where}.function.parameters",
                code="invalid_function_parameters",
            )


def _validate_options(body: dict[str, Any]) -> None:
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _invalid_type("stream", "a boolean", stream)
    if body.get("stream_options") is not None and not stream:
        raise OpenAIError(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.", param="stream_options"
        )
    temperature = body.get("temperature")
    if temperature is not None:
        if isinstance(temperature, bool) or not isinstance(temperature, int | float):
            raise _invalid_type("temperature", "a decimal", temperature)
        if not 0 <= temperature <= 2:
            raise OpenAIError(
                f"Invalid 'temperature': decimal out of range. Expected a value between 0 and 2, but got "
                f"{temperature} instead.",
                param="temperature",
                code="decimal_out_of_range",
            )
    n = body.get("n")
    if n is not None and n != 1:
        # Not an OpenAI limit: the fake answers one choice and says so rather than silently ignoring `n`.
        raise OpenAIError("The fake LLM supports only n=1.", param="n", code="unsupported_value")
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise _invalid_type("user", "a string", user)


# --- Request helpers ---


def text_of(content: Any) -> str:
    """The text of a message content (a string or a list of text parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


# The token estimate: OpenAI's rule of thumb of about four bytes of English per token, plus the few tokens of framing
# (role, separators) each message costs in its chat format. A tokenizer would be closer, but the fake needs a count
# that tests and benchmarks can reproduce exactly, not a faithful one.
BYTES_PER_TOKEN = 4
MESSAGE_OVERHEAD_TOKENS = 4


def estimate_prompt_tokens(body: Any) -> int:
    """The fake's deterministic count of a chat request's prompt tokens, which its context window is checked against.

    `ceil(B / BYTES_PER_TOKEN) + MESSAGE_OVERHEAD_TOKENS * len(messages)`, where B is the total UTF-8 bytes of every
    message's content (the text of a string or of its text parts), every tool call's function name and arguments
    string, and the `tools` array as compact JSON (`separators=(",", ":")`, `ensure_ascii=False`). Other fields
    (roles, ids, options) are covered by the per-message overhead. Adding a message or a byte anywhere counted never
    lowers the estimate. Malformed bodies are counted as far as they make sense (a non-object body counts 0), since
    refused requests are recorded with their count too.

    Args:
        body: The decoded request body.

    Returns:
        The estimated number of prompt tokens.
    """
    if not isinstance(body, dict):
        return 0
    messages = body.get("messages")
    messages = messages if isinstance(messages, list) else []
    size = 0
    for message in messages:
        if not isinstance(message, dict):
            continue
        size += _utf8_len(text_of(message.get("content")))
        tool_calls = message.get("tool_calls")
        for call in tool_calls if isinstance(tool_calls, list) else []:
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict):
                size += _utf8_len(function.get("name")) + _utf8_len(function.get("arguments"))
    if "tools" in body:
        size += _utf8_len(json.dumps(body["tools"], separators=(",", ":"), ensure_ascii=False, default=str))
    return math.ceil(size / BYTES_PER_TOKEN) + MESSAGE_OVERHEAD_TOKENS * len(messages)


def _utf8_len(value: Any) -> int:
    if value is None:
        return 0
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return len(text.encode("utf-8", "surrogatepass"))


def context_length_exceeded(window: int, prompt_tokens: int) -> OpenAIError:
    """OpenAI's refusal of a prompt longer than the model's context window, word for word."""
    return OpenAIError(
        f"This model's maximum context length is {window} tokens. However, your messages resulted in {prompt_tokens} "
        "tokens. Please reduce the length of the messages.",
        param="messages",
        code="context_length_exceeded",
    )


def purpose_of(body: Mapping[str, Any]) -> Purpose:
    """Classification when a system/developer message says the answer is JSON only, else an agent turn."""
    for message in body.get("messages") or []:
        if isinstance(message, dict) and message.get("role") in ("system", "developer"):
            if CLASSIFICATION_MARKER in text_of(message.get("content")).lower():
                return "classification"
    return "agent"


def session_of(body: Any) -> str:
    user = body.get("user") if isinstance(body, dict) else None
    return user if isinstance(user, str) and user else DEFAULT_QUEUE


def _tool_names(body: Mapping[str, Any]) -> set[str]:
    names: set[str] = set()
    for tool in body.get("tools") or []:
        function = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            names.add(function["name"])
    return names


# --- The default brain ---

_ROUTING_KEYWORDS: list[tuple[str, tuple[str, ...]]] = [
    ("coder", ("run", "command", "create", "write", "fix", "implement", "code")),
    ("architect", ("design", "plan", "architecture")),
    ("debug", ("debug", "error", "crash", "bug")),
    ("ask", ("explain", "what", "how", "why")),
]
# The classifier prompt quotes the user's text as a JSON string after this label (workflows/routing.py); reading it
# keeps the agent descriptions in the same prompt from triggering keywords.
_QUOTED_REQUEST = re.compile(r'Request[^:\n]*:\s*("(?:[^"\\]|\\.)*")')
_RUN_REQUEST = re.compile(r"\b(?:run|execute)\s+(.+)", re.IGNORECASE | re.DOTALL)
_QUOTED = re.compile(r"[`'\"]([^`'\"]+)[`'\"]")


def _last_user_text(messages: Sequence[Any]) -> str:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return text_of(message.get("content"))
    return ""


def classify(text: str) -> tuple[str, str]:
    """Pick an agent label by keyword, first group first; "ask" when nothing matches.

    Returns:
        The label and the reasoning.
    """
    quoted = _QUOTED_REQUEST.search(text)
    if quoted:
        with contextlib.suppress(ValueError):
            text = str(json.loads(quoted.group(1)))
    lowered = text.lower()
    for agent, words in _ROUTING_KEYWORDS:
        for word in words:
            if re.search(rf"\b{word}", lowered):
                return agent, f"The request mentions '{word}'."
    return "ask", "No keyword matched; answering as a question."


def command_to_run(text: str) -> str | None:
    """The command a user asks to run ("please run `ls -la`" -> "ls -la"), or None."""
    found = _RUN_REQUEST.search(text)
    if not found:
        return None
    rest = found.group(1).strip()
    quoted = _QUOTED.search(rest)
    if quoted and rest[0] in "`'\"":
        return quoted.group(1).strip()
    command = rest.splitlines()[0].strip().rstrip(".!?;")
    return command or None


def default_reply(body: Mapping[str, Any], purpose: Purpose) -> FakeReply:
    """The deterministic answer when no script applies."""
    messages: list[Any] = list(body.get("messages") or [])
    if purpose == "classification":
        agent, reasoning = classify(_last_user_text(messages))
        return FakeReply(content=json.dumps({"agent": agent, "confidence": "medium", "reasoning": reasoning}))
    last = messages[-1] if messages else {}
    if last.get("role") == "tool":
        tool_name = _tool_name_for(messages, str(last.get("tool_call_id")))
        result = text_of(last.get("content")).strip()
        snippet = result if len(result) <= 200 else result[:200] + "..."
        return FakeReply(content=f"The {tool_name} call finished. Result: {snippet or '(empty)'}")
    if last.get("role") == "user":
        text = text_of(last.get("content"))
        command = command_to_run(text)
        if command and "execute_command" in _tool_names(body):
            return FakeReply(
                content=f"I'll run `{command}`.",
                tool_calls=[FakeToolCall(name="execute_command", arguments={"command": command})],
            )
        snippet = " ".join(text.split())[:80]
        return FakeReply(content=f'Here is my answer to "{snippet}": this reply comes from the fake LLM.')
    return FakeReply(content="How can I help?")


def _tool_name_for(messages: Sequence[Any], call_id: str) -> str:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "assistant":
            for call in message.get("tool_calls") or []:
                if call.get("id") == call_id:
                    return str(call.get("function", {}).get("name", "tool"))
    return "tool"


# --- Rendering a reply as OpenAI JSON or SSE ---


@dataclass(frozen=True)
class _RenderedCall:
    id: str
    name: str
    arguments: str | dict[str, Any]


def _render_calls(reply: FakeReply, body: Mapping[str, Any], session: str) -> list[_RenderedCall]:
    # Generated ids are derived from the request so a replayed demo sees the same ids, yet differ per turn because
    # each turn's request has a longer history.
    seed = hashlib.sha256(
        (session + json.dumps(body.get("messages"), sort_keys=True, default=str)).encode()
    ).hexdigest()
    rendered: list[_RenderedCall] = []
    for index, call in enumerate(reply.tool_calls):
        call_id = call.id or "call_" + hashlib.sha256(f"{seed}/{index}".encode()).hexdigest()[:24]
        if isinstance(call.arguments, str):
            arguments: str | dict[str, Any] = call.arguments
        elif call.arguments_format == "object":
            arguments = call.arguments
        else:
            arguments = json.dumps(call.arguments, ensure_ascii=False)
        rendered.append(_RenderedCall(call_id, call.name, arguments))
    return rendered


def _content_of(reply: FakeReply) -> str | None:
    if reply.error_text is not None:
        return f"[Error] {reply.error_text}"
    return reply.content


def _usage(
    reply: FakeReply, body: Mapping[str, Any], content: str | None, calls: list[_RenderedCall]
) -> dict[str, int]:
    if reply.usage is not None:
        prompt, completion = reply.usage.prompt_tokens, reply.usage.completion_tokens
        total = reply.usage.total_tokens if reply.usage.total_tokens is not None else prompt + completion
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total}
    # Roughly four characters per token, as OpenAI's rule of thumb; good enough for counters to move.
    prompt_chars = sum(len(text_of(m.get("content"))) for m in body.get("messages") or [] if isinstance(m, dict))
    completion_chars = len(content or "") + sum(len(c.name) + len(json.dumps(c.arguments)) for c in calls)
    prompt, completion = prompt_chars // 4 + 1, completion_chars // 4 + 1
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _finish_reason(reply: FakeReply, calls: list[_RenderedCall]) -> str:
    return reply.finish_reason or ("tool_calls" if calls else "stop")


def completion_json(reply: FakeReply, body: Mapping[str, Any], session: str) -> dict[str, Any]:
    """The non-streaming `chat.completion` object for a reply."""
    calls = _render_calls(reply, body, session)
    content = _content_of(reply)
    message: dict[str, Any] = {
        "role": "assistant",
        # OpenAI sends null content with pure tool calls and "" never; mirror that.
        "content": content if content else (None if calls else ""),
        "refusal": None,
    }
    if calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}} for c in calls
        ]
    result: dict[str, Any] = {
        "id": _completion_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": reply.model or str(body.get("model")),
        "system_fingerprint": "fp_fake",
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": _finish_reason(reply, calls)}],
    }
    if not reply.omit_usage:
        result["usage"] = _usage(reply, body, content, calls)
    return result


def completion_chunks(reply: FakeReply, body: Mapping[str, Any], session: str) -> Iterator[dict[str, Any]]:
    """The `chat.completion.chunk` objects of a streamed reply, in OpenAI's order.

    Role first, content in a few pieces, each tool call as a header delta (index, id, name) followed by argument
    fragments, a final empty delta with the finish reason, then the usage chunk when the request asked for it.
    `content_delta_chars`/`argument_delta_chars` make the pieces that many characters long instead of three per
    text. A generator, linear in the reply's size: a 1.5 MB argument in 6-character deltas is 250,000 chunks.
    """
    calls = _render_calls(reply, body, session)
    content = _content_of(reply)
    options = body.get("stream_options")
    include_usage = isinstance(options, dict) and bool(options.get("include_usage")) and not reply.omit_usage
    base: dict[str, Any] = {
        "id": _completion_id(),
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": reply.model or str(body.get("model")),
        "system_fingerprint": "fp_fake",
    }

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        result = {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]}
        if include_usage:
            result["usage"] = None
        return result

    yield chunk({"role": "assistant", "content": "" if content else None, "refusal": None})
    for piece in _fragments(content or "", reply.content_delta_chars):
        yield chunk({"content": piece})
    for index, call in enumerate(calls):
        header = {"index": index, "id": call.id, "type": "function", "function": {"name": call.name, "arguments": ""}}
        yield chunk({"tool_calls": [header]})
        arguments = call.arguments if isinstance(call.arguments, str) else json.dumps(call.arguments)
        for fragment in _fragments(arguments, reply.argument_delta_chars):
            yield chunk({"tool_calls": [{"index": index, "function": {"arguments": fragment}}]})
    yield chunk({}, _finish_reason(reply, calls))
    if include_usage:
        yield {**base, "choices": [], "usage": _usage(reply, body, content, calls)}


def _fragments(text: str, size: int | None, default_count: int = 3) -> Iterator[str]:
    """Consecutive non-empty pieces of `text`, `size` characters each (the last may be shorter).

    Without a size, at most `default_count` pieces, so streams still have more than one delta. Each piece is one
    slice of the original, so the whole is linear in `len(text)`.
    """
    if not text:
        return
    step = size if size is not None else max(1, -(-len(text) // default_count))
    for start in range(0, len(text), step):
        yield text[start : start + step]


def _completion_id() -> str:
    return f"chatcmpl-{time.time_ns():x}"


_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_error",
    404: "invalid_request_error",
    409: "conflict_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


def _scripted_error(reply: FakeReply) -> JSONResponse:
    assert reply.status is not None
    status = reply.status
    headers = {"Retry-After": f"{reply.retry_after_seconds:g}"} if reply.retry_after_seconds is not None else {}
    return OpenAIError(
        reply.error_message or f"Scripted error {status}",
        status=status,
        type=_ERROR_TYPES.get(status, "server_error"),
        code=None,
    ).response(headers)


# --- State and app ---


class FakeLlm:
    """The fake's state: per-session reply scripts, context windows, and the log of received requests.

    Args:
        api_key: When set, requests must carry `Authorization: Bearer <api_key>` (else 401, like OpenAI).
        internal_api_key: When set, requests must carry `X-Internal-Auth: <internal_api_key>` (the original
            llm-proxy's check).
        context_window: When set, a request whose prompt is estimated (`estimate_prompt_tokens`) at more tokens
            than this is refused with OpenAI's `context_length_exceeded` 400. The "*" window of
            `set_context_window`, restored by `reset`.
    """

    def __init__(
        self, *, api_key: str | None = None, internal_api_key: str | None = None, context_window: int | None = None
    ) -> None:
        self.api_key = api_key
        self.internal_api_key = internal_api_key
        self._default_context_window = _checked_window(context_window)
        self._scripts: dict[str, deque[FakeReply]] = {}
        self._context_windows: dict[str, int] = {}
        self._received: list[ReceivedRequest] = []
        self.clear_context_windows()

    def script(self, session: str, replies: Iterable[FakeReply | Mapping[str, Any]]) -> None:
        """Queue replies for a session ("*" for any session without its own); appends to what is queued."""
        queue = self._scripts.setdefault(session, deque())
        queue.extend(r if isinstance(r, FakeReply) else FakeReply.model_validate(r) for r in replies)

    def pending(self, session: str | None = None) -> int:
        """How many scripted replies are still queued (for one session, or in all)."""
        if session is not None:
            return len(self._scripts.get(session, ()))
        return sum(len(queue) for queue in self._scripts.values())

    def clear_scripts(self, session: str | None = None) -> None:
        if session is None:
            self._scripts.clear()
        else:
            self._scripts.pop(session, None)

    def received(self, session: str | None = None) -> list[ReceivedRequest]:
        """Received chat requests in arrival order, with headers; all sessions when `session` is None."""
        return [r for r in self._received if session is None or r.session == session]

    def requests(self, session: str | None = None) -> list[Any]:
        """The bodies of received chat requests in arrival order: what the LLM saw."""
        return [r.body for r in self.received(session)]

    def clear_requests(self) -> None:
        self._received.clear()

    def reset(self) -> None:
        """Forget all scripts and received requests, and restore the constructor's context window."""
        self.clear_scripts()
        self.clear_requests()
        self.clear_context_windows()

    def set_context_window(self, session: str, tokens: int | None) -> None:
        """Limit a session's prompts to `tokens` ("*": any session without its own window); None removes the limit.

        Resolution is the scripts': the session's window, else the "*" window, else none. Removing a session's
        window makes it follow "*" again; to exempt one session from a default, give it a large window.

        Raises:
            ValueError: `tokens` is not a positive int.
        """
        tokens = _checked_window(tokens)
        if tokens is None:
            self._context_windows.pop(session, None)
        else:
            self._context_windows[session] = tokens

    def context_window(self, session: str) -> int | None:
        """The window a request of this session is checked against, None when unlimited."""
        return self._context_windows.get(session, self._context_windows.get(DEFAULT_QUEUE))

    def clear_context_windows(self) -> None:
        """Drop every `set_context_window`, back to the constructor's `context_window`."""
        self._context_windows.clear()
        if self._default_context_window is not None:
            self._context_windows[DEFAULT_QUEUE] = self._default_context_window

    def check_context_window(self, session: str, prompt_tokens: int) -> None:
        """Refuse a prompt longer than the session's window, as OpenAI does.

        Raises:
            OpenAIError: `context_length_exceeded` (400).
        """
        window = self.context_window(session)
        if window is not None and prompt_tokens > window:
            raise context_length_exceeded(window, prompt_tokens)

    def record(self, request: ReceivedRequest) -> None:
        self._received.append(request)

    def next_reply(self, body: Mapping[str, Any]) -> FakeReply:
        """Consume the reply for a request: the session's script, then the "*" script, then the default brain."""
        session = session_of(body)
        purpose = purpose_of(body)
        for queue_name in dict.fromkeys((session, DEFAULT_QUEUE)):
            queue = self._scripts.get(queue_name)
            if not queue:
                continue
            for reply in queue:
                if reply.match is None or reply.match == purpose:
                    queue.remove(reply)
                    return reply
        return default_reply(body, purpose)

    def check_auth(self, request: Request) -> None:
        if self.api_key is not None and request.headers.get("authorization") != f"Bearer {self.api_key}":
            # Like OpenAI, but without echoing any part of the presented key.
            raise OpenAIError("Incorrect API key provided.", status=401, code="invalid_api_key")
        if self.internal_api_key is not None and request.headers.get("x-internal-auth") != self.internal_api_key:
            raise OpenAIError("Invalid or missing X-Internal-Auth header.", status=401, code="invalid_api_key")


def _checked_window(tokens: int | None) -> int | None:
    if tokens is not None and (isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1):
        raise ValueError(f"a context window must be a positive number of tokens, not {tokens!r}")
    return tokens


def create_app(fake: FakeLlm | None = None, *, context_window: int | None = None) -> FastAPI:
    """The fake provider's ASGI app.

    Args:
        fake: The state to serve; a fresh one when None.
        context_window: The fresh state's context window (see `FakeLlm`); only without `fake`, which has its own.

    Returns:
        The app, with the state on `app.state.fake`.

    Raises:
        ValueError: Both `fake` and `context_window` were given.
    """
    if fake is not None and context_window is not None:
        raise ValueError("give context_window to the FakeLlm passed as `fake`")
    state = fake if fake is not None else FakeLlm(context_window=context_window)
    app = FastAPI(title="Fake LLM (OpenAI-compatible)", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.fake = state

    async def chat_completions(request: Request) -> Response:
        raw = await request.body()
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        received = ReceivedRequest(
            path=request.url.path,
            session=session_of(body),
            headers=dict(request.headers),
            body=body,
            prompt_tokens=estimate_prompt_tokens(body),
        )
        state.record(received)
        try:
            state.check_auth(request)
            if body is None:
                raise OpenAIError(
                    "We could not parse the JSON body of your request. (HINT: This likely means you aren't using "
                    "your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not "
                    "valid JSON.)"
                )
            validate_chat_body(body)
            # Before a reply is taken: a refused request leaves the session's script as it was, as a real provider
            # charges nothing for it.
            state.check_context_window(received.session, received.prompt_tokens)
        except OpenAIError as err:
            return err.response()

        reply = state.next_reply(body)
        if reply.delay_seconds:
            await _sleep_unless_disconnected(request, reply.delay_seconds)
        if reply.status is not None:
            return _scripted_error(reply)
        if reply.raw_body is not None:
            return Response(reply.raw_body, media_type="application/json")
        session = session_of(body)
        if body.get("stream"):
            return StreamingResponse(_sse(reply, body, session, received), media_type="text/event-stream")
        return JSONResponse(completion_json(reply, body, session))

    app.add_api_route("/v1/chat/completions", chat_completions, methods=["POST"])
    app.add_api_route("/chat/completions", chat_completions, methods=["POST"])

    async def models() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [{"id": FAKE_MODEL_ID, "object": "model", "created": 0, "owned_by": "fake-llm"}],
        }

    app.add_api_route("/v1/models", models, methods=["GET"])
    app.add_api_route("/models", models, methods=["GET"])

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok", "service": "fake-llm"}

    @app.post("/_fake/script")
    async def post_script(script: ScriptBody) -> dict[str, Any]:
        state.script(script.session, script.replies)
        return {"session": script.session, "queued": state.pending(script.session)}

    @app.get("/_fake/script")
    async def get_script(session: str | None = None) -> dict[str, Any]:
        return {"session": session, "pending": state.pending(session)}

    @app.delete("/_fake/script")
    async def delete_script(session: str | None = None) -> dict[str, Any]:
        state.clear_scripts(session)
        return {"cleared": session or "all"}

    @app.post("/_fake/context-window")
    async def post_context_window(window: ContextWindowBody) -> dict[str, Any]:
        state.set_context_window(window.session, window.tokens)
        return {"session": window.session, "tokens": state.context_window(window.session)}

    @app.get("/_fake/context-window")
    async def get_context_window(session: str = DEFAULT_QUEUE) -> dict[str, Any]:
        return {"session": session, "tokens": state.context_window(session)}

    @app.get("/_fake/requests")
    async def get_requests(session: str | None = None) -> list[Any]:
        return state.requests(session)

    @app.get("/_fake/received")
    async def get_received(session: str | None = None) -> list[dict[str, Any]]:
        return [
            {
                "path": r.path,
                "session": r.session,
                "headers": r.headers,
                "body": r.body,
                "prompt_tokens": r.prompt_tokens,
            }
            for r in state.received(session)
        ]

    @app.delete("/_fake/requests")
    async def delete_requests() -> dict[str, Any]:
        state.clear_requests()
        return {"cleared": True}

    return app


# Unpaced streams are written in batches of about this many bytes: one ASGI send (and event-loop turn) per event
# made a 250,000-delta stream (1.5 MB of arguments in 6-character deltas) take 8-19 s to serve on two cores, batches
# about 2 s; and several events per read is what a provider's TCP stream looks like to a client anyway.
_SSE_WRITE_BYTES = 64 * 1024


async def _sse(
    reply: FakeReply, body: Mapping[str, Any], session: str, received: ReceivedRequest
) -> AsyncIterator[bytes]:
    """The reply as SSE events, ending with `[DONE]`.

    Paced (`chunk_delay_seconds`), each event is its own write, so a client sees deltas arrive over time; unpaced,
    events are written in batches of about `_SSE_WRITE_BYTES`. `first_token_at` is set when the write holding the
    first text delta is handed to the server.
    """
    batch: list[bytes] = []
    batch_bytes = 0
    batch_has_text = False
    for index, chunk in enumerate(completion_chunks(reply, body, session)):
        event = f"data: {json.dumps(chunk)}\n\n".encode()
        if reply.chunk_delay_seconds:
            if index:
                await asyncio.sleep(reply.chunk_delay_seconds)
            if received.first_token_at is None and _has_text(chunk):
                received.first_token_at = time.time()
            yield event
            # A real provider's deltas arrive over time; yielding lets a client see them one by one.
            await asyncio.sleep(0)
            continue
        batch.append(event)
        batch_bytes += len(event)
        batch_has_text = batch_has_text or (received.first_token_at is None and _has_text(chunk))
        if batch_bytes >= _SSE_WRITE_BYTES:
            if batch_has_text and received.first_token_at is None:
                received.first_token_at = time.time()
            yield b"".join(batch)
            batch, batch_bytes, batch_has_text = [], 0, False
            await asyncio.sleep(0)
    if batch_has_text and received.first_token_at is None:
        received.first_token_at = time.time()
    batch.append(b"data: [DONE]\n\n")
    yield b"".join(batch)


def _has_text(chunk: Mapping[str, Any]) -> bool:
    return any(bool((choice.get("delta") or {}).get("content")) for choice in chunk.get("choices") or [])


async def _sleep_unless_disconnected(request: Request, seconds: float) -> None:
    # A client that timed out has gone; stop waiting for it so the server can shut down promptly.
    deadline = time.monotonic() + seconds
    while (remaining := deadline - time.monotonic()) > 0:
        await asyncio.sleep(min(0.05, remaining))
        if await request.is_disconnected():
            return


# --- Running it ---


class FakeLlmServer:
    """Runs the fake in the current event loop on a real port.

    Args:
        host: Interface to listen on.
        port: Port; 0 picks a free one (see `port`/`base_url` after start).
        api_key: Require this bearer token (see `FakeLlm`).
        internal_api_key: Require this `X-Internal-Auth` value (see `FakeLlm`).
        context_window: Refuse prompts longer than this many tokens by default (see `FakeLlm`).
        shutdown_timeout: Seconds to let open requests finish on exit before they are cancelled.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        api_key: str | None = None,
        internal_api_key: str | None = None,
        context_window: int | None = None,
        shutdown_timeout: float = 2.0,
    ) -> None:
        self.fake = FakeLlm(api_key=api_key, internal_api_key=internal_api_key, context_window=context_window)
        self.app = create_app(self.fake)
        self._server = EmbeddedServer(
            self.app, host, port, lifespan="off", name="fake-llm", shutdown_timeout=shutdown_timeout
        )

    @property
    def host(self) -> str:
        return self._server.host

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def base_url(self) -> str:
        """E.g. `http://127.0.0.1:54321` (an OpenAI client's base URL is this plus `/v1`)."""
        return self._server.base_url

    @property
    def chat_completions_url(self) -> str:
        return f"{self.base_url}/v1/chat/completions"

    def script(self, session: str, replies: Iterable[FakeReply | Mapping[str, Any]]) -> None:
        """Queue replies for a session ("*" for any); see `FakeLlm.script`."""
        self.fake.script(session, replies)

    def requests(self, session: str | None = None) -> list[Any]:
        """Bodies of the chat requests received (for a session), in order."""
        return self.fake.requests(session)

    def received(self, session: str | None = None) -> list[ReceivedRequest]:
        """Chat requests received (for a session), in order, with their headers."""
        return self.fake.received(session)

    def pending(self, session: str | None = None) -> int:
        return self.fake.pending(session)

    def set_context_window(self, session: str, tokens: int | None) -> None:
        """Limit a session's prompts ("*" for the default); None removes the limit. See `FakeLlm.set_context_window`."""
        self.fake.set_context_window(session, tokens)

    def reset(self) -> None:
        """Forget scripts and received requests, and restore the constructor's context window."""
        self.fake.reset()

    async def start(self) -> None:
        """Bind the port and serve until `stop`."""
        await self._server.start()

    async def stop(self) -> None:
        """Stop serving; open requests get `shutdown_timeout` seconds to finish."""
        await self._server.stop()

    async def __aenter__(self) -> FakeLlmServer:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()


def serve(
    host: str,
    port: int,
    *,
    api_key: str | None = None,
    internal_api_key: str | None = None,
    context_window: int | None = None,
) -> None:
    """Serve the fake until interrupted (blocking); what `python -m devstack.fake_llm` runs."""
    app = create_app(FakeLlm(api_key=api_key, internal_api_key=internal_api_key, context_window=context_window))
    logger.info("Fake LLM listening on http://%s:%d/v1", host, port)
    uvicorn.run(app, host=host, port=port, log_level="info")


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry: `python -m devstack.fake_llm --port 8002`."""
    parser = argparse.ArgumentParser(prog="fake-llm", description="Scriptable OpenAI-compatible fake LLM server.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8002)
    parser.add_argument("--api-key", default=None, help="require this bearer token")
    parser.add_argument("--internal-api-key", default=None, help="require this X-Internal-Auth value")
    parser.add_argument(
        "--context-window",
        type=_positive_int,
        default=None,
        metavar="TOKENS",
        help="refuse prompts estimated at more tokens than this, as OpenAI does (context_length_exceeded)",
    )
    args = parser.parse_args(argv)
    serve(
        args.host,
        args.port,
        api_key=args.api_key,
        internal_api_key=args.internal_api_key,
        context_window=args.context_window,
    )
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number of tokens, got {text!r}")
    return value


if __name__ == "__main__":
    raise SystemExit(main())
