"""The LLM activity: one OpenAI-compatible chat completion over httpx.

Every provider the runtime talks to (the original llm-proxy, LiteLLM, OpenAI, OpenRouter, Ollama, vLLM) speaks
`POST /v1/chat/completions`, so this module speaks only that. It does side effects and translation, nothing else:

- Temporal owns retries. The activity makes exactly one HTTP request per attempt and tells Temporal, through the
  `ApplicationError` type and `non_retryable` flag, whether another attempt can help (bug L13: the original had no
  retry on the main path; here the workflow's retry policy decides, with backoff).
- A failure is never returned as content (invariant I3). In particular the original llm-proxy reports adapter
  failures as HTTP 200 with assistant text "[Error] ..." (root of bug B2); that is raised as a retryable error.
- Assistant text that accompanies tool calls is kept (bug L14).

- Telemetry: the workflow owns the GenAI span of a logical call (workflows/genai.py); each HTTP request an attempt
  makes is a `POST` span under it (HTTP conventions: `http.request.resend_count` from the second attempt on,
  `http.response.status_code`, `error.type`), and a failed attempt is logged with its number, so a retry storm
  shows as such.
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
import re
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from temporalio import activity
from temporalio.contrib.workflow_streams import WorkflowStreamClient
from temporalio.exceptions import ApplicationError

from activities.content import ContentStore
from activities.heartbeat import heartbeating
from activities.openai_wire import (
    MAX_PROVIDER_MESSAGE_CHARS,
    StreamAccumulator,
    bad_response,
    build_request_body,
    encode_request_body,
    parse_completion,
    parse_stream_chunk,
    provider_error_text,
    to_openai_message,
    to_openai_tool,
)
from activities.payload_drivers import ContentStoreUnavailable
from workflows.content import json_size
from workflows.context import (
    cut_for_context,
    extend_selection,
    omitted_note,
    select_context,
    shrunk_window,
    usable_tokens,
)
from workflows.model import (
    CHAT_COMPLETION_ACTIVITY,
    CONTENT_STORE_UNAVAILABLE_ERROR,
    EVENTS_TOPIC,
    LLM_CONTEXT_TOO_LONG_ERROR,
    LLM_REQUEST_REJECTED_ERROR,
    LLM_UNAVAILABLE_ERROR,
    ChatMessage,
    ChunkType,
    ContentRef,
    LlmReply,
    LlmRequest,
    StreamChunk,
    encodable_json,
)

# Statuses where another attempt can succeed. 408/409 are in the set the official OpenAI SDK retries as well:
# a request timeout or a conflicting concurrent request says nothing about the request being wrong.
_RETRYABLE_STATUSES = frozenset({408, 409, 429})


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
        self._server = _server_of(chat_completions_url)
        self._url_attribute = _without_credentials(chat_completions_url)

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
        try:
            try:
                async with heartbeating(HEARTBEAT_INTERVAL_SECONDS):
                    reply = await self._complete_within_window(request)
            except ContentStoreUnavailable as err:
                raise ApplicationError(str(err), type=CONTENT_STORE_UNAVAILABLE_ERROR) from err
        except ApplicationError as err:
            _log_failed_attempt(request, err)
            raise
        reply.server_address, reply.server_port = self._server
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
        selection = select_context(history, usable, older_exist=archive is not None)
        while selection.needs_older and archive is not None:
            segment = await self._content.segment(archive)
            archive = segment.previous
            selection = extend_selection(segment.messages, history, selection, usable, older_exist=archive is not None)
            history = [*segment.messages, *history]
        chosen = history[selection.start :]
        omitted = (archive.message_count if archive is not None else 0) + selection.start
        texts = await self._content.get_many(m.content for m in chosen if isinstance(m.content, ContentRef))
        note = omitted_note(omitted) if omitted else ""
        messages = [{"role": "system", "content": system + note}]
        for index, message in enumerate(chosen, start=selection.start):
            content = texts[message.content.sha256] if isinstance(message.content, ContentRef) else message.content
            if content is not None and index in selection.caps:
                content = cut_for_context(content, selection.caps[index])
            messages.append(to_openai_message(message, content))
        return messages, omitted

    async def _complete(self, request: LlmRequest, messages: list[dict[str, Any]]) -> LlmReply:
        with self._http_span():
            if request.stream:
                return await self._stream_completion(request, messages)
            return await self._complete_plain(request, messages)

    async def _complete_plain(self, request: LlmRequest, messages: list[dict[str, Any]]) -> LlmReply:
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
                content=encode_request_body(body),
                headers=self._headers() | {"Accept": "text/event-stream"},
                timeout=httpx.Timeout(request.timeout_seconds),
            )
            response = await self._http.send(request_, stream=True)
            _answered(response)
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
                    text = accumulator.add(parse_stream_chunk(data))
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

    @contextlib.contextmanager
    def _http_span(self) -> Iterator[None]:
        """One HTTP request to the provider as a CLIENT span of the HTTP conventions, under the workflow's `chat`
        span (`_answered` adds the status code)."""
        attempt = activity.info().attempt
        host, port = self._server
        attributes: dict[str, str | int] = {
            "http.request.method": "POST",
            "url.full": self._url_attribute,
            "server.address": host,
            "agent_runtime.attempt": attempt,
        }
        if port is not None:
            attributes["server.port"] = port
        if attempt > 1:
            attributes["http.request.resend_count"] = attempt - 1
        with _tracer().start_as_current_span(
            "POST", kind=SpanKind.CLIENT, attributes=attributes, record_exception=False, set_status_on_exception=False
        ) as span:
            try:
                yield
            except (ApplicationError, _ContextTooLong) as err:
                span.set_attribute("error.type", _http_error_type(err))
                span.set_status(Status(StatusCode.ERROR, str(err)[:500]))
                raise

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        if self._internal_api_key:
            headers["X-Internal-Auth"] = self._internal_api_key
        # W3C `traceparent` of the request's span: a traced proxy (LiteLLM, the llm-proxy) continues the trace.
        propagate.inject(headers)
        return headers

    async def _post(self, body: dict[str, Any], timeout_seconds: float) -> httpx.Response:
        async with self._transport_errors(timeout_seconds):
            response = await self._http.post(
                self._url,
                content=encode_request_body(body),
                headers=self._headers(),
                timeout=httpx.Timeout(timeout_seconds),
            )
        _answered(response)
        return response

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
            raise _ContextTooLong(provider_message, status)
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

    def __init__(self, provider_message: str, status: int) -> None:
        super().__init__(provider_message)
        self.provider_message = provider_message
        self.status = status


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


def _answered(response: httpx.Response) -> None:
    """The status code on the request's span (`_http_span`)."""
    trace.get_current_span().set_attribute("http.response.status_code", response.status_code)


def _server_of(url: str) -> tuple[str, int | None]:
    """`server.address` and `server.port` of an endpoint URL (the port of its scheme when it names none)."""
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return parts.hostname or "", port


def _without_credentials(url: str) -> str:
    """The URL for `url.full`, which must not carry credentials (a `user:password@` in a proxy's base URL)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"REDACTED:REDACTED@{host}" + (f":{parts.port}" if parts.port else "")
    return parts._replace(netloc=netloc).geturl()


def _http_error_type(err: Exception) -> str:
    """The HTTP conventions' `error.type`: the status code of an error answer, else `timeout` or the transport
    failure's class, else the activity's error type (a 2xx body that is not a completion)."""
    if isinstance(err, _ContextTooLong):
        return str(err.status)
    details = err.details[0] if isinstance(err, ApplicationError) and err.details else None
    if isinstance(details, dict) and isinstance(details.get("status_code"), int):
        return str(details["status_code"])
    cause = err.__cause__
    if isinstance(cause, TimeoutError | httpx.TimeoutException):
        return "timeout"
    if isinstance(cause, httpx.TransportError):
        return type(cause).__qualname__
    return err.type if isinstance(err, ApplicationError) and err.type else type(err).__qualname__


def _log_failed_attempt(request: LlmRequest, err: ApplicationError) -> None:
    """Log a failed attempt with its number and what happens next, so retries that multiply are visible."""
    info = activity.info()
    # The server sends the retry policy with the task (Temporal's time-skipping test server does not).
    limit = info.retry_policy.maximum_attempts if info.retry_policy else None
    if err.non_retryable or (limit and info.attempt >= limit):
        then = "no retry left"
    elif limit is None:
        then = "Temporal retries it if its retry policy allows"
    else:
        then = "Temporal retries it with backoff"
    activity.logger.warning(
        "LLM call failed on attempt %d%s (%s, %s request %s); %s: %s",
        info.attempt,
        f" of {limit}" if limit else "",
        err.type,
        request.purpose,
        request.request_id,
        then,
        err,
    )


def _json_body(response: httpx.Response) -> Any:
    try:
        return encodable_json(response.json())
    except ValueError as err:
        raise bad_response(f"body is not JSON: {response.text[:200]!r}") from err


def _provider_error_message(response: httpx.Response) -> str:
    """The provider's own words for an error answer: OpenAI's `error.message`, a `detail`, or the raw text."""
    try:
        payload = encodable_json(response.json())
    except ValueError:
        payload = None
    if isinstance(payload, dict):
        if payload.get("error"):
            return provider_error_text(payload["error"])[:MAX_PROVIDER_MESSAGE_CHARS]
        if payload.get("detail"):
            return str(payload["detail"])[:MAX_PROVIDER_MESSAGE_CHARS]
        if payload.get("message"):
            return str(payload["message"])[:MAX_PROVIDER_MESSAGE_CHARS]
    return response.text.strip()[:MAX_PROVIDER_MESSAGE_CHARS] or response.reason_phrase


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
