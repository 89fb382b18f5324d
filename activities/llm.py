"""The LLM activity: one OpenAI-compatible chat completion over httpx.

Every provider the runtime talks to (the original llm-proxy, LiteLLM, OpenAI, OpenRouter, Ollama, vLLM) speaks
`POST /v1/chat/completions`, so this module speaks only that. It does side effects and translation, nothing else:

- Temporal owns retries. The activity makes exactly one HTTP request per attempt and tells Temporal, through the
  `ApplicationError` type and `non_retryable` flag, whether another attempt can help (bug L13: the original had no
  retry on the main path; here the workflow's retry policy decides, with backoff).
- A failure is never returned as content (invariant I3). In particular the original llm-proxy reports adapter
  failures as HTTP 200 with assistant text "[Error] ..." (root of bug B2); that is raised as a retryable error.
- Assistant text that accompanies tool calls is kept (bug L14).

- Streaming (`LlmRequest.stream`): the answer is read as OpenAI SSE chunks, tool-call deltas included, and each
  text delta is published to the session's event stream as an `assistant_delta` event tagged with the activity
  attempt, so a client can tell a retried call's tokens from the first try's. The accumulated chunks are turned into
  the same completion dict the non-streaming path parses, so both paths share one parser. A provider that ignores
  `stream` and answers JSON is read as a plain completion.
- The activity heartbeats while it waits, so a worker that dies mid-call is noticed after the heartbeat timeout
  instead of the whole start-to-close timeout.
- Bounded context (workflows/context.py): the workflow sends only the current run's message heads and a handle on
  the archived transcript; this activity fetches what fits the model's window, cuts over-long texts with a marker,
  and when the provider still answers `context_length_exceeded` it shrinks the window and tries once more within the
  same attempt. What the model writes that is large (a whole file as an argument, a long answer) is stored in the
  content store and returned by reference, so the reply stays small too.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import re
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from temporalio import activity
from temporalio.contrib.workflow_streams import WorkflowStreamClient
from temporalio.exceptions import ApplicationError

from activities.content import ContentStore
from activities.heartbeat import heartbeating
from activities.payload_drivers import ContentStoreUnavailable
from workflows.content import compact_refs, json_size
from workflows.context import cut_for_context, omitted_note, select_context, shrunk_window, usable_tokens
from workflows.model import (
    CHAT_COMPLETION_ACTIVITY,
    CONTENT_STORE_UNAVAILABLE_ERROR,
    EVENTS_TOPIC,
    LLM_BAD_RESPONSE_ERROR,
    LLM_CONTEXT_TOO_LONG_ERROR,
    LLM_REQUEST_REJECTED_ERROR,
    LLM_UNAVAILABLE_ERROR,
    PROXY_ERROR_PREFIX,
    ChatMessage,
    ChunkType,
    ContentRef,
    LlmReply,
    LlmRequest,
    StreamChunk,
    TokenUsage,
    ToolCall,
    ToolSpec,
)

# Statuses where another attempt can succeed. 408/409 are in the set the official OpenAI SDK retries as well:
# a request timeout or a conflicting concurrent request says nothing about the request being wrong.
_RETRYABLE_STATUSES = frozenset({408, 409, 429})

# Provider error texts can be long (HTML error pages from a proxy); an error message only needs the gist.
_MAX_PROVIDER_MESSAGE_CHARS = 500

# Retry-After values beyond this are treated as "use the retry policy's backoff": a provider asking for an hour
# should not park a conversation for an hour without the retry policy's own limits having a say.
_MAX_RETRY_AFTER = timedelta(minutes=5)

# Heartbeats while waiting on the provider; the workflow's heartbeat timeout is a few times this.
HEARTBEAT_INTERVAL_SECONDS = 2.0
# Tokens are batched into one signal per interval: live enough for a UI, cheap in workflow history.
TOKEN_BATCH_INTERVAL = timedelta(milliseconds=200)


class LlmActivities:
    """Activities that call an OpenAI-compatible chat-completions endpoint.

    The worker builds one instance from settings and registers its bound methods. The HTTP client is injected so
    the worker owns its lifetime (connection pool, TLS settings) and tests can point it anywhere.

    Args:
        http: The shared HTTP client. Its own timeout is ignored; each request uses `LlmRequest.timeout_seconds`.
        content: The content store: referenced content and archived transcripts are read from it, and large
            content the model writes is stored in it.
        chat_completions_url: The full URL of the chat-completions endpoint, e.g.
            `http://llm-proxy:8002/v1/chat/completions`.
        api_key: Sent as `Authorization: Bearer <api_key>` when set (OpenAI, OpenRouter, LiteLLM).
        internal_api_key: Sent as `X-Internal-Auth` when set (how the original llm-proxy authenticates callers).
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        content: ContentStore,
        chat_completions_url: str,
        api_key: str | None = None,
        internal_api_key: str | None = None,
    ) -> None:
        self._http = http
        self._content = content
        self._url = chat_completions_url
        self._api_key = api_key
        self._internal_api_key = internal_api_key

    @activity.defn(name=CHAT_COMPLETION_ACTIVITY)
    async def chat_completion(self, request: LlmRequest) -> LlmReply:
        """Run one non-streaming chat completion.

        Args:
            request: The model, the full message list (system prompt first), the tools and the timeout.

        Returns:
            The first choice's text, tool calls, finish reason, model, usage and the measured latency.

        Raises:
            ApplicationError: `LLM_UNAVAILABLE_ERROR` (retryable) for timeouts, connection failures, 408/409/429,
                5xx and "[Error] ..." replies; `LLM_REQUEST_REJECTED_ERROR` (non-retryable) for other 3xx/4xx
                answers; `LLM_CONTEXT_TOO_LONG_ERROR` (non-retryable) when even the shrunk context was refused;
                `LLM_BAD_RESPONSE_ERROR` (retryable) for a 2xx body that is not a usable completion;
                `CONTENT_STORE_UNAVAILABLE_ERROR` (retryable) when referenced content cannot be read or stored.
        """
        # GenAI semantic conventions (gen_ai.*), so any OpenTelemetry backend shows model, tokens and outcome.
        with _tracer().start_as_current_span(
            f"chat {request.model}",
            kind=SpanKind.CLIENT,
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.system": "openai",
                "gen_ai.request.model": request.model,
                "agent_runtime.session_id": request.session_id,
                "agent_runtime.agent": request.agent.value,
                "agent_runtime.purpose": request.purpose,
                "agent_runtime.attempt": activity.info().attempt,
            },
        ) as span:
            try:
                async with heartbeating(HEARTBEAT_INTERVAL_SECONDS):
                    reply = await self._complete_within_window(request)
            except ContentStoreUnavailable as err:
                span.set_status(Status(StatusCode.ERROR, str(err)))
                raise ApplicationError(str(err), type=CONTENT_STORE_UNAVAILABLE_ERROR) from err
            except ApplicationError as err:
                span.set_attribute("error.type", err.type or "ApplicationError")
                span.set_status(Status(StatusCode.ERROR, str(err)))
                raise
            span.set_attributes(
                {
                    "gen_ai.response.model": reply.model,
                    "gen_ai.usage.input_tokens": reply.usage.prompt_tokens,
                    "gen_ai.usage.output_tokens": reply.usage.completion_tokens,
                    "gen_ai.response.finish_reasons": [reply.finish_reason or "unknown"],
                    "agent_runtime.tool_calls": len(reply.tool_calls),
                }
            )
        _record_metrics(request, reply)
        return reply

    async def _complete_within_window(self, request: LlmRequest) -> LlmReply:
        """Build the request to the window and send it; once more with a smaller window if the provider refuses its
        length; then store what is large in the reply."""
        window = request.context_tokens
        messages, omitted = await self.provider_messages(request, window)
        try:
            reply = await self._complete(request, messages)
        except _ContextTooLong as err:
            window = shrunk_window(window, err.provider_message)
            activity.logger.warning("Context too long for %s; retrying with a %d-token window", request.model, window)
            messages, omitted = await self.provider_messages(request, window)
            try:
                reply = await self._complete(request, messages)
            except _ContextTooLong as again:
                raise ApplicationError(
                    f"LLM provider refused the context as too long, even cut to {window:,} tokens: "
                    f"{again.provider_message}",
                    {"context_tokens": window},
                    type=LLM_CONTEXT_TOO_LONG_ERROR,
                    non_retryable=True,
                ) from again
            reply.context_tokens = window
        reply.omitted_messages = omitted
        reply.content = await self._content.offload_text(reply.content) or ""
        reply.tool_calls = await self._content.offload_calls(reply.tool_calls)
        return reply

    async def provider_messages(self, request: LlmRequest, window: int) -> tuple[list[dict[str, Any]], int]:
        """The request's messages in OpenAI's shape, fitted to `window` tokens, and how many older ones were left out.

        Only the messages that go in are resolved; the archived transcript is read only as far back as needed.
        """
        system, history = _split_system(request.messages)
        fixed = len(system) + sum(json_size(to_openai_tool(tool)) for tool in request.tools)
        usable = usable_tokens(window, fixed)
        archive = request.transcript
        while True:
            selection = select_context(history, usable, older_exist=archive is not None)
            if not selection.needs_older or archive is None:
                break
            segment = await self._content.segment(archive)
            history = [*segment.messages, *history]
            archive = segment.previous
        chosen = history[selection.start :]
        omitted = (archive.message_count if archive is not None else 0) + selection.start
        texts = await self._content.get_many(m.content for m in chosen if isinstance(m.content, ContentRef))
        note = omitted_note(omitted) if omitted else ""
        messages = [to_openai_message(ChatMessage(role="system", content=system + note))]
        for index, message in enumerate(chosen, start=selection.start):
            content = texts[message.content.sha256] if isinstance(message.content, ContentRef) else message.content
            if content is not None and index in selection.caps:
                content = cut_for_context(content, selection.caps[index])
            calls = [c.model_copy(update={"arguments": compact_refs(c.arguments)}) for c in message.tool_calls]
            messages.append(to_openai_message(message.model_copy(update={"content": content, "tool_calls": calls})))
        return messages, omitted

    async def _complete(self, request: LlmRequest, messages: list[dict[str, Any]]) -> LlmReply:
        if request.stream:
            return await self._stream_completion(request, messages)
        body = build_request_body(request, messages, stream=False)
        started = time.monotonic()
        response = await self._post(body, request.timeout_seconds)
        latency_ms = int((time.monotonic() - started) * 1000)
        self._raise_for_status(response)
        payload = _json_body(response)
        return parse_completion(payload, latency_ms=latency_ms, requested_model=request.model)

    async def _stream_completion(self, request: LlmRequest, messages: list[dict[str, Any]]) -> LlmReply:
        body = build_request_body(request, messages, stream=True)
        body["stream_options"] = {"include_usage": True}
        attempt = activity.info().attempt
        publisher = WorkflowStreamClient.from_within_activity(batch_interval=TOKEN_BATCH_INTERVAL)
        events = publisher.topic(EVENTS_TOPIC, type=StreamChunk)
        accumulator = StreamAccumulator()
        published = False
        started = time.monotonic()
        async with self._transport_errors(request.timeout_seconds), publisher:
            request_ = self._http.build_request(
                "POST",
                self._url,
                json=body,
                headers=self._headers() | {"Accept": "text/event-stream"},
                timeout=httpx.Timeout(request.timeout_seconds),
            )
            response = await self._http.send(request_, stream=True)
            try:
                if not 200 <= response.status_code < 300 or "json" in response.headers.get("content-type", ""):
                    # An error, or a provider that ignores `stream`: read it whole, like the plain path.
                    await response.aread()
                    self._raise_for_status(response)
                    latency_ms = int((time.monotonic() - started) * 1000)
                    return parse_completion(_json_body(response), latency_ms=latency_ms, requested_model=request.model)
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    text = accumulator.add(_json_chunk(data))
                    if text:
                        events.publish(
                            StreamChunk(
                                type=ChunkType.ASSISTANT_DELTA,
                                token=text,
                                session_id=request.session_id,
                                metadata={"attempt": attempt, "request_id": request.request_id},
                            )
                        )
                        if not published:
                            # The first token goes out at once (time to first token is what a user feels);
                            # the rest ride the batch interval.
                            await publisher.flush()
                            published = True
            finally:
                await response.aclose()
        latency_ms = int((time.monotonic() - started) * 1000)
        return parse_completion(accumulator.completion(), latency_ms=latency_ms, requested_model=request.model)

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        if self._internal_api_key:
            headers["X-Internal-Auth"] = self._internal_api_key
        return headers

    async def _post(self, body: dict[str, Any], timeout_seconds: float) -> httpx.Response:
        async with self._transport_errors(timeout_seconds):
            return await self._http.post(
                self._url, json=body, headers=self._headers(), timeout=httpx.Timeout(timeout_seconds)
            )

    @contextlib.asynccontextmanager
    async def _transport_errors(self, timeout_seconds: float) -> AsyncIterator[None]:
        """The whole exchange under one deadline, with timeouts and transport failures as retryable errors.

        httpx timeouts apply per phase (connect, each read...), so a provider that drips bytes could exceed the
        budget many times over; the outer asyncio deadline bounds the whole exchange.
        """
        try:
            async with asyncio.timeout(timeout_seconds):
                yield
        except (TimeoutError, httpx.TimeoutException) as err:
            raise ApplicationError(
                f"LLM request timed out after {timeout_seconds:g}s", type=LLM_UNAVAILABLE_ERROR
            ) from err
        except httpx.TransportError as err:
            # Connection refused/reset, DNS failures, protocol errors: the provider may be back on the next attempt.
            raise ApplicationError(
                self._scrub(f"LLM provider unreachable: {type(err).__name__}: {err}"), type=LLM_UNAVAILABLE_ERROR
            ) from err

    def _raise_for_status(self, response: httpx.Response) -> None:
        status = response.status_code
        if 200 <= status < 300:
            return
        provider_message = self._scrub(_provider_error_message(response))
        if status in (400, 413) and _is_context_overflow(response, provider_message):
            raise _ContextTooLong(provider_message)
        if status in _RETRYABLE_STATUSES or status >= 500:
            raise ApplicationError(
                f"LLM provider unavailable (HTTP {status}): {provider_message}",
                {"status_code": status},
                type=LLM_UNAVAILABLE_ERROR,
                next_retry_delay=_retry_after(response),
            )
        # 400 (bad history, context too long), 401/403 (key), 404 (model), 413, 422 and any other 4xx, plus
        # redirects we do not follow: the same request will be refused again, so retrying only burns time.
        raise ApplicationError(
            f"LLM provider rejected the request (HTTP {status}): {provider_message}",
            {"status_code": status},
            type=LLM_REQUEST_REJECTED_ERROR,
            non_retryable=True,
        )

    def _scrub(self, text: str) -> str:
        # Providers and proxies sometimes echo the credential they refused; error messages end up in workflow
        # histories and the Web UI, so no key may survive into them.
        for secret in (self._api_key, self._internal_api_key):
            if secret:
                text = text.replace(secret, "***")
        return text


class _ContextTooLong(Exception):
    """The provider refused the request as longer than the model's context window (handled by shrinking once)."""

    def __init__(self, provider_message: str) -> None:
        super().__init__(provider_message)
        self.provider_message = provider_message


# How providers other than OpenAI (which sends `code: context_length_exceeded`) word the same refusal.
_CONTEXT_OVERFLOW_WORDS = re.compile(
    r"context[ _-]?(length|window)|maximum context|too many tokens|prompt is too long|input is too long"
    r"|reduce the length|exceeds? the (model'?s )?(maximum|max)",
    re.IGNORECASE,
)


def _is_context_overflow(response: httpx.Response, message: str) -> bool:
    try:
        payload = response.json()
    except ValueError:
        payload = None
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, dict) and error.get("code") in ("context_length_exceeded", "string_above_max_length"):
        return True
    return _CONTEXT_OVERFLOW_WORDS.search(message) is not None


def _split_system(messages: list[ChatMessage]) -> tuple[str, list[ChatMessage]]:
    """The system prompt (the first message, when it is one) and the conversation after it."""
    if messages and messages[0].role == "system":
        first = messages[0].content
        return (first if isinstance(first, str) else ""), messages[1:]
    return "", messages


def _tracer() -> trace.Tracer:
    return trace.get_tracer("agent_runtime.llm")


def _record_metrics(request: LlmRequest, reply: LlmReply) -> None:
    meter = activity.metric_meter()
    labels = {"model": reply.model or request.model, "purpose": request.purpose}
    meter.create_histogram_timedelta(
        "agent_runtime_llm_latency", "LLM request latency (one attempt)", "duration"
    ).record(timedelta(milliseconds=reply.latency_ms), labels)
    tokens = meter.create_counter("agent_runtime_llm_tokens", "LLM tokens used", "tokens")
    tokens.add(reply.usage.prompt_tokens, labels | {"type": "input"})
    tokens.add(reply.usage.completion_tokens, labels | {"type": "output"})


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
                f"LLM provider returned an error: {_error_text(chunk['error'])}"[:_MAX_PROVIDER_MESSAGE_CHARS],
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


def _json_chunk(data: str) -> dict[str, Any]:
    # orjson: a streamed file write is ~250,000 small chunks, and json.loads alone spent ~1 s of CPU on them.
    try:
        chunk = orjson.loads(data)
    except orjson.JSONDecodeError:
        # orjson refuses escaped lone surrogates ("\ud800"), which json reads; a model may well emit one.
        try:
            chunk = json.loads(data)
        except ValueError as err:
            raise _bad_response(f"stream chunk is not JSON: {data[:200]!r}") from err
    if not isinstance(chunk, dict):
        raise _bad_response("stream chunk is not an object")
    return chunk


# --- Request building (pure) ---


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


def to_openai_message(message: ChatMessage) -> dict[str, Any]:
    """Translate one history message to the OpenAI shape, dropping the runtime's bookkeeping fields.

    Args:
        message: A history message.

    Returns:
        The OpenAI message dict. `content` is kept as None only for an assistant message with tool calls, the one
        place OpenAI allows it; elsewhere None becomes "" because providers reject a null content there.
    """
    result: dict[str, Any] = {"role": message.role}
    if message.content is None and not (message.role == "assistant" and message.tool_calls):
        result["content"] = ""
    else:
        result["content"] = message.content
    if message.tool_calls:
        result["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                # OpenAI wants the arguments as a JSON *string*; an object is rejected with a 400.
                "function": {"name": call.name, "arguments": json.dumps(call.arguments, ensure_ascii=False)},
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


# --- Reply parsing (pure) ---


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
        raise _bad_response(f"expected a JSON object, got {type(payload).__name__}")
    error = payload.get("error")
    if error:
        # Some proxies answer 200 with an error object instead of choices; that is an outage, not content.
        raise ApplicationError(
            f"LLM provider returned an error: {_error_text(error)}"[:_MAX_PROVIDER_MESSAGE_CHARS],
            type=LLM_UNAVAILABLE_ERROR,
        )
    choices = payload.get("choices")
    if not isinstance(choices, list) or not choices:
        raise _bad_response("no choices")
    choice = choices[0]
    if not isinstance(choice, dict) or not isinstance(choice.get("message"), dict):
        raise _bad_response("first choice has no message")
    message: dict[str, Any] = choice["message"]

    raw_content = message.get("content")
    content = raw_content if isinstance(raw_content, str) else _text_of_parts(raw_content)
    if content.lstrip().startswith(PROXY_ERROR_PREFIX):
        # Bug B2: the proxy's way of saying "the provider failed". Storing it as an assistant message poisoned
        # histories; raising it lets the retry policy try again and the workflow report an error chunk.
        raise ApplicationError(
            f"LLM proxy reported an error: {content.strip()[:_MAX_PROVIDER_MESSAGE_CHARS]}",
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
            activity.logger.warning("Tool call %r came without an id; using %s", name, call_id)
        arguments, problem = read_tool_arguments(function.get("arguments"))
        if problem is not None:
            activity.logger.warning("Tool call %r: %s", name[:100], problem)
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


def _json_body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError as err:
        raise _bad_response(f"body is not JSON: {response.text[:200]!r}") from err


def _bad_response(detail: str) -> ApplicationError:
    # Retryable: a truncated or garbled body is usually a transient proxy problem, and the retry policy caps it.
    return ApplicationError(f"LLM provider sent an unusable response: {detail}", type=LLM_BAD_RESPONSE_ERROR)


def _provider_error_message(response: httpx.Response) -> str:
    """The provider's own words for an error answer: OpenAI's `error.message`, a `detail`, or the raw text."""
    try:
        payload = response.json()
    except ValueError:
        payload = None
    if isinstance(payload, dict):
        if payload.get("error"):
            return _error_text(payload["error"])[:_MAX_PROVIDER_MESSAGE_CHARS]
        if payload.get("detail"):
            return str(payload["detail"])[:_MAX_PROVIDER_MESSAGE_CHARS]
        if payload.get("message"):
            return str(payload["message"])[:_MAX_PROVIDER_MESSAGE_CHARS]
    return response.text.strip()[:_MAX_PROVIDER_MESSAGE_CHARS] or response.reason_phrase


def _error_text(error: Any) -> str:
    if isinstance(error, dict):
        return str(error.get("message") or error)
    return str(error)


def _retry_after(response: httpx.Response) -> timedelta | None:
    """The server's requested wait (OpenAI's `retry-after-ms`, or `Retry-After` in seconds or as an HTTP date)."""
    delay = _parse_delay(response.headers.get("retry-after-ms"), unit_seconds=0.001)
    if delay is None:
        delay = _parse_delay(response.headers.get("retry-after"), unit_seconds=1.0)
    if delay is None or delay <= timedelta(0) or delay > _MAX_RETRY_AFTER:
        return None
    return delay


def _parse_delay(value: str | None, *, unit_seconds: float) -> timedelta | None:
    if value is None:
        return None
    try:
        return timedelta(seconds=float(value) * unit_seconds)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when - datetime.now(UTC)
