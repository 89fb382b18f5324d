"""The OpenAI chat-completions wire format, pure: request bodies from the runtime's types, and completions (whole or
streamed) back into them. No I/O; the LLM activity (activities/llm.py) does the HTTP.

Every provider the runtime talks to (the original llm-proxy, LiteLLM, OpenAI, OpenRouter, Ollama, vLLM) speaks this
format. What a model writes is untrusted: unreadable arguments are reported (`ToolCall.invalid_arguments`), junk
names and missing ids are repaired, and an "[Error] ..." text is an error, never content (invariant I3, bug B2).
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from typing import Any

import orjson
from temporalio.exceptions import ApplicationError

from workflows.content import compact_refs
from workflows.model import (
    LLM_BAD_RESPONSE_ERROR,
    LLM_UNAVAILABLE_ERROR,
    PROXY_ERROR_PREFIX,
    ChatMessage,
    LlmReply,
    LlmRequest,
    TokenUsage,
    ToolCall,
    ToolSpec,
    encodable_json,
)

log = logging.getLogger("agent_runtime.llm")

# Provider error texts can be long (HTML error pages from a proxy); an error message only needs the gist.
MAX_PROVIDER_MESSAGE_CHARS = 500


class StreamAccumulator:
    """Folds OpenAI `chat.completion.chunk` deltas into one completion dict that `parse_completion` reads.

    Providers stream a large tool argument (a whole file for `write_file`) in deltas of a few characters, so a
    1.5 MB argument is ~250,000 deltas. Fragments are collected in lists and joined once: concatenating strings as
    they arrive copied the growing argument on every delta (quadratic: minutes of CPU for 1.5 MB).
    """

    def __init__(self) -> None:
        self._content: list[str] = []
        self._content_chars = 0
        self._held = ""
        self._calls: dict[int, _CallFragments] = {}
        self._finish_reason: str | None = None
        self._model: str | None = None
        self._usage: Any = None

    @property
    def content(self) -> str:
        return "".join(self._content)

    def add(self, chunk: dict[str, Any]) -> str:
        """Take one chunk; return the text that may be shown now ("" while an "[Error]" prefix is still possible)."""
        self._model = chunk.get("model") or self._model
        if chunk.get("usage"):
            self._usage = chunk["usage"]
        if chunk.get("error"):
            raise ApplicationError(
                f"LLM provider returned an error: {provider_error_text(chunk['error'])}"[:MAX_PROVIDER_MESSAGE_CHARS],
                type=LLM_UNAVAILABLE_ERROR,
            )
        choices = chunk.get("choices") or []
        if not choices or not isinstance(choices[0], dict):
            return ""
        choice = choices[0]
        if choice.get("finish_reason"):
            self._finish_reason = choice["finish_reason"]
        delta = choice.get("delta") or {}
        if not isinstance(delta, dict):
            return ""
        for part in delta.get("tool_calls") or []:
            if isinstance(part, dict):
                index = part.get("index")
                slot = self._calls.setdefault(index if isinstance(index, int) else len(self._calls), _CallFragments())
                slot.add(part)
        text = delta.get("content")
        if not isinstance(text, str) or not text:
            return ""
        self._content.append(text)
        self._content_chars += len(text)
        # Hold text back while it could still turn into the proxy's "[Error] ..." report (bug B2): such text is an
        # error, and must not reach a client as if the assistant had said it. Only the first characters can decide
        # that, so only they are looked at.
        if self._held or self._content_chars <= _ERROR_PREFIX_WINDOW:
            head = "".join(self._content)[:_ERROR_PREFIX_WINDOW].lstrip()
            if head.startswith(PROXY_ERROR_PREFIX) or (PROXY_ERROR_PREFIX.startswith(head)):
                self._held += text
                return ""
        shown, self._held = self._held + text, ""
        return shown

    def completion(self) -> dict[str, Any]:
        tool_calls = [slot.as_openai() for _, slot in sorted(self._calls.items())]
        message: dict[str, Any] = {"role": "assistant", "content": self.content}
        if tool_calls:
            message["tool_calls"] = tool_calls
        return {
            "model": self._model,
            "choices": [{"index": 0, "message": message, "finish_reason": self._finish_reason}],
            "usage": self._usage,
        }


# Whitespace a provider may put before "[Error]", plus the prefix itself: beyond this the text is plain content.
_ERROR_PREFIX_WINDOW = 64


class _CallFragments:
    """One streamed tool call: its id, and its name and arguments as the fragments that arrived."""

    def __init__(self) -> None:
        self.id: str | None = None
        self._name: list[str] = []
        self._arguments: list[str] = []

    def add(self, part: dict[str, Any]) -> None:
        if isinstance(part.get("id"), str) and part["id"]:
            self.id = part["id"]
        function = part.get("function")
        if not isinstance(function, dict):
            return
        if isinstance(function.get("name"), str):
            self._name.append(function["name"])
        if isinstance(function.get("arguments"), str):
            self._arguments.append(function["arguments"])

    def as_openai(self) -> dict[str, Any]:
        name = "".join(self._name)
        return {"id": self.id, "type": "function", "function": {"name": name, "arguments": "".join(self._arguments)}}


def parse_stream_chunk(data: str) -> dict[str, Any]:
    # orjson: a streamed file write is ~250,000 small chunks, and json.loads alone spent ~1 s of CPU on them.
    try:
        chunk = orjson.loads(data)
    except orjson.JSONDecodeError:
        # orjson refuses escaped lone surrogates ("\ud800"), which json reads; a model may well emit one. Nothing
        # downstream encodes them (the activity's result, the IDE's stream), so they become U+FFFD.
        try:
            chunk = encodable_json(json.loads(data))
        except ValueError as err:
            raise bad_response(f"stream chunk is not JSON: {data[:200]!r}") from err
    if not isinstance(chunk, dict):
        raise bad_response("stream chunk is not an object")
    return chunk


# --- Request building ---


def build_request_body(request: LlmRequest, messages: list[dict[str, Any]], *, stream: bool) -> dict[str, Any]:
    """Translate an `LlmRequest` into an OpenAI chat-completions body.

    Args:
        request: The request to translate.
        messages: Its messages in OpenAI's shape, fitted to the window (`LlmActivities.provider_messages`).
        stream: Value of the body's `stream` field.

    Returns:
        The JSON body. `tools`/`tool_choice` appear only with at least one tool (OpenAI rejects an empty `tools`
        array), `temperature` only when set, and `user` carries the session id so the provider (and the fake) can
        attribute requests to a conversation.
    """
    body: dict[str, Any] = {
        "model": request.model,
        "messages": messages,
        "stream": stream,
        "user": request.session_id,
    }
    if request.tools:
        body["tools"] = [to_openai_tool(tool) for tool in request.tools]
        body["tool_choice"] = "auto"
    if request.temperature is not None:
        body["temperature"] = request.temperature
    return body


def encode_request_body(body: dict[str, Any]) -> bytes:
    """The request body as compact UTF-8 JSON.

    orjson: a full 128k-token prompt is ~370 KB of JSON, ~2 ms of every call with the json module (httpx's `json=`)
    against ~0.1 ms. Text orjson refuses (a lone surrogate) goes ASCII-escaped, which any JSON reader takes.
    """
    try:
        return orjson.dumps(body)
    except orjson.JSONEncodeError:
        return json.dumps(body, separators=(",", ":")).encode("ascii")


def to_openai_message(message: ChatMessage, content: str | None) -> dict[str, Any]:
    """Translate one history message to the OpenAI shape, dropping the runtime's bookkeeping fields.

    Args:
        message: A history message.
        content: Its text as the provider gets it (referenced content resolved, cut to the window).

    Returns:
        The OpenAI message dict. `content` is kept as None only for an assistant message with tool calls, the one
        place OpenAI allows it; elsewhere None becomes "" because providers reject a null content there. An argument
        value stored by reference goes as a short placeholder (`compact_refs`): the model wrote it, it need not read
        it again.
    """
    result: dict[str, Any] = {"role": message.role}
    if content is None and not (message.role == "assistant" and message.tool_calls):
        result["content"] = ""
    else:
        result["content"] = content
    if message.tool_calls:
        result["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                # OpenAI wants the arguments as a JSON *string*; an object is rejected with a 400.
                "function": {
                    "name": call.name,
                    "arguments": json.dumps(compact_refs(call.arguments), ensure_ascii=False),
                },
            }
            for call in message.tool_calls
        ]
    if message.tool_call_id is not None:
        result["tool_call_id"] = message.tool_call_id
    if message.name is not None:
        result["name"] = message.name
    return result


def to_openai_tool(tool: ToolSpec) -> dict[str, Any]:
    """Translate a tool spec to an OpenAI function tool."""
    return {
        "type": "function",
        "function": {"name": tool.name, "description": tool.description, "parameters": tool.parameters},
    }


# --- Reply parsing ---


def parse_completion(payload: Any, *, latency_ms: int, requested_model: str = "") -> LlmReply:
    """Read the first choice of a chat-completions response.

    Args:
        payload: The decoded JSON body.
        latency_ms: The measured round trip, recorded on the reply.
        requested_model: Used when the provider does not echo the model.

    Returns:
        The reply.

    Raises:
        ApplicationError: `LLM_BAD_RESPONSE_ERROR` (retryable) when there is no usable first choice;
            `LLM_UNAVAILABLE_ERROR` (retryable) when the content is an "[Error] ..." text.
    """
    if not isinstance(payload, dict):
        raise bad_response(f"expected a JSON object, got {type(payload).__name__}")
    error = payload.get("error")
    if error:
        # Some proxies answer 200 with an error object instead of choices; that is an outage, not content.
        raise ApplicationError(
            f"LLM provider returned an error: {provider_error_text(error)}"[:MAX_PROVIDER_MESSAGE_CHARS],
            type=LLM_UNAVAILABLE_ERROR,
        )
    choices = payload.get("choices")
    if not isinstance(choices, list) or not choices:
        raise bad_response("no choices")
    choice = choices[0]
    if not isinstance(choice, dict) or not isinstance(choice.get("message"), dict):
        raise bad_response("first choice has no message")
    message: dict[str, Any] = choice["message"]

    raw_content = message.get("content")
    content = raw_content if isinstance(raw_content, str) else _text_of_parts(raw_content)
    if content.lstrip().startswith(PROXY_ERROR_PREFIX):
        # Bug B2: the proxy's way of saying "the provider failed". Storing it as an assistant message poisoned
        # histories; raising it lets the retry policy try again and the workflow report an error chunk.
        raise ApplicationError(
            f"LLM proxy reported an error: {content.strip()[:MAX_PROVIDER_MESSAGE_CHARS]}",
            type=LLM_UNAVAILABLE_ERROR,
        )

    return LlmReply(
        content=content,
        tool_calls=_parse_tool_calls(message.get("tool_calls")),
        finish_reason=choice.get("finish_reason") if isinstance(choice.get("finish_reason"), str) else None,
        model=payload.get("model") if isinstance(payload.get("model"), str) else requested_model,
        usage=parse_usage(payload.get("usage")),
        latency_ms=latency_ms,
    )


def read_tool_arguments(raw: Any) -> tuple[dict[str, Any], str | None]:
    """Decode a tool call's arguments, which providers send as a JSON string (OpenAI) or an object (some proxies).

    Args:
        raw: The `function.arguments` value.

    Returns:
        The arguments, and why they could not be read (None when they could). Unreadable arguments (cut off, not
        JSON, not an object) become {} with the reason; the call itself is kept, so its id still gets a tool message
        (the reason, as an error the model can act on) and the history stays paired.
    """
    if raw is None or raw == "":
        return {}, None
    if isinstance(raw, dict):
        return raw, None
    if isinstance(raw, str):
        try:
            decoded = json.loads(raw)
        except json.JSONDecodeError as err:
            return {}, f"the arguments are not valid JSON ({err.msg} at character {err.pos} of {len(raw):,})"
        if isinstance(decoded, dict):
            return decoded, None
        return {}, f"the arguments must be a JSON object, not {_json_kind(decoded)}"
    return {}, f"the arguments must be a JSON object, not {_json_kind(raw)}"


def _json_kind(value: Any) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(type(value), "a number")


def parse_usage(raw: Any) -> TokenUsage:
    """Read token usage; a provider that sends none (the original's fake, some proxies) counts as zeros."""
    if not isinstance(raw, dict):
        return TokenUsage()
    prompt = _int_or_zero(raw.get("prompt_tokens"))
    completion = _int_or_zero(raw.get("completion_tokens"))
    total = raw.get("total_tokens")
    return TokenUsage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=_int_or_zero(total) if total is not None else prompt + completion,
    )


def _parse_tool_calls(raw: Any) -> list[ToolCall]:
    if not isinstance(raw, list):
        return []
    calls: list[ToolCall] = []
    for item in raw:
        if not isinstance(item, dict):
            continue
        function = item.get("function")
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            continue
        name = _tool_name(function["name"])
        call_id = item.get("id")
        if not isinstance(call_id, str) or not call_id:
            # Some OpenAI-compatible servers omit ids; the runtime needs one to pair the tool message (I1). The
            # activity result is recorded in history, so a generated id is stable for the rest of the session.
            call_id = f"call_{uuid.uuid4().hex[:24]}"
            log.warning("Tool call %r came without an id; using %s", name, call_id)
        arguments, problem = read_tool_arguments(function.get("arguments"))
        if problem is not None:
            log.warning("Tool call %r: %s", name[:100], problem)
        calls.append(ToolCall(id=call_id, name=name, arguments=arguments, invalid_arguments=problem))
    return calls


_NOT_A_NAME_CHARACTER = re.compile(r"[^A-Za-z0-9_-]")


def _tool_name(raw: str) -> str:
    """A tool name a provider accepts back in the history (OpenAI: `^[a-zA-Z0-9_-]{1,64}$`): a model may invent any
    string, and the call is refused as an unknown tool either way, but the history must stay sendable."""
    name = _NOT_A_NAME_CHARACTER.sub("_", raw)[:64]
    return name or "unnamed_tool"


def _text_of_parts(raw: Any) -> str:
    # Null content (a pure tool-call answer) is "", and some providers send content as a list of text parts.
    if isinstance(raw, list):
        return "".join(part.get("text", "") for part in raw if isinstance(part, dict) and part.get("type") == "text")
    return ""


def _int_or_zero(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def bad_response(detail: str) -> ApplicationError:
    # Retryable: a truncated or garbled body is usually a transient proxy problem, and the retry policy caps it.
    return ApplicationError(f"LLM provider sent an unusable response: {detail}", type=LLM_BAD_RESPONSE_ERROR)


def provider_error_text(error: Any) -> str:
    if isinstance(error, dict):
        return str(error.get("message") or error)
    return str(error)
