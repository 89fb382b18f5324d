"""The LLM activity against the fake provider over real HTTP: request shape, parsing and error mapping."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import pytest_asyncio
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.content import ContentStore
from activities.llm import LlmActivities
from activities.openai_wire import StreamAccumulator, parse_completion, parse_stream_chunk
from activities.payload_drivers import FilePayloadDriver
from devstack.fake_llm import FakeLlmServer, FakeReply, FakeToolCall, FakeUsage
from workflows import context
from workflows.model import (
    LLM_BAD_RESPONSE_ERROR,
    LLM_REQUEST_REJECTED_ERROR,
    LLM_UNAVAILABLE_ERROR,
    AgentType,
    ArchiveTranscriptInput,
    ChatMessage,
    LlmReply,
    LlmRequest,
    ToolCall,
    ToolSpec,
    TranscriptSegment,
)

SESSION = "sess-llm"
API_KEY = "sk-test-0123456789abcdef"
INTERNAL_KEY = "internal-key-42"

EXEC_SPEC = ToolSpec(
    name="execute_command",
    description="Run a shell command.",
    parameters={"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]},
)


@pytest_asyncio.fixture(scope="module")
async def server() -> AsyncIterator[FakeLlmServer]:
    async with FakeLlmServer() as running:
        yield running


@pytest_asyncio.fixture(scope="module")
async def http_client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> ContentStore:
    return ContentStore(FilePayloadDriver(tmp_path_factory.mktemp("content")))


@pytest.fixture
def llm(server: FakeLlmServer, http_client: httpx.AsyncClient, store: ContentStore) -> LlmActivities:
    server.reset()
    return LlmActivities(http_client, content=store, chat_completions_url=server.chat_completions_url)


def request(*messages: ChatMessage, tools: list[ToolSpec] | None = None, **extra: Any) -> LlmRequest:
    history = [ChatMessage(role="system", content="You are a coder."), *messages]
    return LlmRequest(
        session_id=SESSION, agent=AgentType.CODER, model="gpt-test", messages=history, tools=tools or [], **extra
    )


def user(text: str) -> ChatMessage:
    return ChatMessage(role="user", content=text, message_id="m-user", created_at=datetime.now(UTC))


async def run(llm: LlmActivities, req: LlmRequest) -> LlmReply:
    return await ActivityEnvironment().run(llm.chat_completion, req)


async def failure(llm: LlmActivities, req: LlmRequest) -> ApplicationError:
    with pytest.raises(ApplicationError) as caught:
        await run(llm, req)
    return caught.value


# --- Happy path and request shape ---


async def test_text_reply(llm: LlmActivities, server: FakeLlmServer) -> None:
    server.script(
        SESSION,
        [FakeReply(content="Hello!", model="gpt-test-2024", usage=FakeUsage(prompt_tokens=12, completion_tokens=3))],
    )
    reply = await run(llm, request(user("hi")))
    assert reply.content == "Hello!"
    assert reply.tool_calls == []
    assert reply.finish_reason == "stop"
    assert reply.model == "gpt-test-2024"
    assert reply.usage.model_dump() == {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}
    assert reply.latency_ms >= 0


async def test_request_body_is_openai_shaped(llm: LlmActivities, server: FakeLlmServer) -> None:
    history = [
        user("run ls"),
        ChatMessage(
            role="assistant",
            content=None,
            tool_calls=[ToolCall(id="call_1", name="execute_command", arguments={"command": "ls"})],
            message_id="m-a",
            agent=AgentType.CODER,
        ),
        ChatMessage(role="tool", content="a.py", tool_call_id="call_1", name="execute_command", message_id="m-t"),
    ]
    await run(llm, request(*history, tools=[EXEC_SPEC], temperature=0.3))

    (sent,) = server.requests(SESSION)
    assert sent["model"] == "gpt-test"
    assert sent["user"] == SESSION
    assert sent["stream"] is False
    assert sent["temperature"] == 0.3
    assert sent["tool_choice"] == "auto"
    assert sent["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "execute_command",
                "description": "Run a shell command.",
                "parameters": EXEC_SPEC.parameters,
            },
        }
    ]
    assert sent["messages"] == [
        {"role": "system", "content": "You are a coder."},
        {"role": "user", "content": "run ls"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "execute_command", "arguments": '{"command": "ls"}'},
                }
            ],
        },
        {"role": "tool", "content": "a.py", "tool_call_id": "call_1", "name": "execute_command"},
    ]


async def test_a_lone_surrogate_reaches_the_provider_as_a_json_escape(
    llm: LlmActivities, server: FakeLlmServer
) -> None:
    server.script(SESSION, [FakeReply(content="ok")])
    await run(llm, request(user("héllo \ud800 wörld")))  # a lone surrogate: not UTF-8, fine as a JSON escape
    (sent,) = server.requests(SESSION)
    assert sent["messages"][-1]["content"] == "héllo \ud800 wörld"


async def test_a_lone_surrogate_from_the_model_becomes_a_replacement_character(
    llm: LlmActivities, server: FakeLlmServer
) -> None:
    """JSON's "\\ud800" with no pair decodes to a string no encoder takes (the activity's result failed, and every
    retry with it): the reply carries U+FFFD instead, in text and in tool arguments."""
    server.script(
        SESSION,
        [
            FakeReply(
                content="half \ud83d",
                tool_calls=[FakeToolCall(id="c1", name="execute_command", arguments={"command": "\udfff"})],
            )
        ],
    )
    reply = await run(llm, request(user("hi"), tools=[EXEC_SPEC]))
    assert reply.content == "half \ufffd"
    assert reply.tool_calls[0].arguments == {"command": "\ufffd"}
    streamed = parse_stream_chunk('{"choices": [{"delta": {"content": "half \\ud83d"}}]}')
    assert streamed["choices"][0]["delta"]["content"] == "half \ufffd"


async def test_no_tools_means_no_tools_key_and_no_temperature_when_unset(
    llm: LlmActivities, server: FakeLlmServer
) -> None:
    await run(llm, request(user("hi")))
    (sent,) = server.requests(SESSION)
    assert "tools" not in sent
    assert "tool_choice" not in sent
    assert "temperature" not in sent


async def test_auth_headers_are_sent(
    server: FakeLlmServer, http_client: httpx.AsyncClient, store: ContentStore
) -> None:
    server.reset()
    llm = LlmActivities(
        http_client,
        content=store,
        chat_completions_url=server.chat_completions_url,
        api_key=API_KEY,
        internal_api_key=INTERNAL_KEY,
    )
    await run(llm, request(user("hi")))
    (seen,) = server.received(SESSION)
    assert seen.headers["authorization"] == f"Bearer {API_KEY}"
    assert seen.headers["x-internal-auth"] == INTERNAL_KEY


async def test_no_auth_headers_without_keys(llm: LlmActivities, server: FakeLlmServer) -> None:
    await run(llm, request(user("hi")))
    (seen,) = server.received(SESSION)
    assert "authorization" not in seen.headers
    assert "x-internal-auth" not in seen.headers


async def test_a_provider_that_requires_keys_accepts_the_activity(
    http_client: httpx.AsyncClient, store: ContentStore
) -> None:
    async with FakeLlmServer(api_key=API_KEY, internal_api_key=INTERNAL_KEY) as strict:
        strict.script(SESSION, [FakeReply(content="authorised")])
        good = LlmActivities(
            http_client,
            content=store,
            chat_completions_url=strict.chat_completions_url,
            api_key=API_KEY,
            internal_api_key=INTERNAL_KEY,
        )
        assert (await run(good, request(user("hi")))).content == "authorised"
        wrong = LlmActivities(
            http_client, content=store, chat_completions_url=strict.chat_completions_url, api_key="sk-wrong"
        )
        error = await failure(wrong, request(user("hi")))
        assert error.type == LLM_REQUEST_REJECTED_ERROR
        assert error.non_retryable
        assert "401" in error.message


# --- Parsing ---


async def test_tool_calls_keep_the_accompanying_text(llm: LlmActivities, server: FakeLlmServer) -> None:
    server.script(
        SESSION,
        [
            FakeReply(
                content="I'll list the files first.",
                tool_calls=[FakeToolCall(id="call_9", name="execute_command", arguments={"command": "ls -la"})],
            )
        ],
    )
    reply = await run(llm, request(user("run ls"), tools=[EXEC_SPEC]))
    assert reply.content == "I'll list the files first."  # bug L14
    assert reply.tool_calls == [ToolCall(id="call_9", name="execute_command", arguments={"command": "ls -la"})]
    assert reply.finish_reason == "tool_calls"


async def test_pure_tool_call_has_empty_content(llm: LlmActivities, server: FakeLlmServer) -> None:
    server.script(SESSION, [FakeReply(tool_calls=[FakeToolCall(name="execute_command", arguments={"command": "pwd"})])])
    reply = await run(llm, request(user("where am I"), tools=[EXEC_SPEC]))
    assert reply.content == ""
    assert reply.tool_calls[0].id.startswith("call_")
    assert reply.tool_calls[0].arguments == {"command": "pwd"}


async def test_tool_call_arguments_as_string_object_or_garbage(
    llm: LlmActivities, server: FakeLlmServer, caplog: pytest.LogCaptureFixture
) -> None:
    server.script(
        SESSION,
        [
            FakeReply(
                tool_calls=[
                    FakeToolCall(id="c_str", name="a", arguments={"x": 1}),
                    FakeToolCall(id="c_obj", name="b", arguments={"y": [1, 2]}, arguments_format="object"),
                    FakeToolCall(id="c_bad", name="c", arguments="{not json"),
                    FakeToolCall(id="c_list", name="d", arguments="[1, 2]"),
                ]
            )
        ],
    )
    with caplog.at_level(logging.WARNING):
        reply = await run(llm, request(user("go")))
    assert {call.id: call.arguments for call in reply.tool_calls} == {
        "c_str": {"x": 1},
        "c_obj": {"y": [1, 2]},
        "c_bad": {},
        "c_list": {},
    }
    problems = {call.id: call.invalid_arguments for call in reply.tool_calls}
    assert problems["c_str"] is None and problems["c_obj"] is None
    assert "not valid JSON" in (problems["c_bad"] or "")
    assert problems["c_list"] == "the arguments must be a JSON object, not an array"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("'c'" in w and "not valid JSON" in w for w in warnings)


async def test_missing_usage_counts_as_zero(llm: LlmActivities, server: FakeLlmServer) -> None:
    server.script(SESSION, [FakeReply(content="no usage", omit_usage=True)])
    reply = await run(llm, request(user("hi")))
    assert reply.content == "no usage"
    assert reply.usage.model_dump() == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}


async def test_missing_total_is_prompt_plus_completion(llm: LlmActivities, server: FakeLlmServer) -> None:
    server.script(
        SESSION, [FakeReply(raw_body=json.dumps(_completion("hi", usage={"prompt_tokens": 4, "completion_tokens": 6})))]
    )
    reply = await run(llm, request(user("hi")))
    assert reply.usage.total_tokens == 10


async def test_model_falls_back_to_the_requested_one(llm: LlmActivities, server: FakeLlmServer) -> None:
    payload = _completion("hi")
    del payload["model"]
    server.script(SESSION, [FakeReply(raw_body=json.dumps(payload))])
    assert (await run(llm, request(user("hi")))).model == "gpt-test"


# --- Error mapping ---


async def test_invalid_history_is_a_non_retryable_rejection(llm: LlmActivities) -> None:
    dangling = ChatMessage(role="assistant", tool_calls=[ToolCall(id="call_dangling", name="execute_command")])
    error = await failure(llm, request(user("run ls"), dangling, user("hello?"), tools=[EXEC_SPEC]))
    assert error.type == LLM_REQUEST_REJECTED_ERROR
    assert error.non_retryable
    assert "HTTP 400" in error.message
    assert "did not have response messages: call_dangling" in error.message


@pytest.mark.parametrize("status", [401, 403, 404, 413, 422])
async def test_client_errors_are_non_retryable(llm: LlmActivities, server: FakeLlmServer, status: int) -> None:
    server.script(SESSION, [FakeReply(status=status, error_message=f"provider says {status}")])
    error = await failure(llm, request(user("hi")))
    assert error.type == LLM_REQUEST_REJECTED_ERROR
    assert error.non_retryable
    assert f"provider says {status}" in error.message
    assert str(status) in error.message


@pytest.mark.parametrize("status", [500, 502, 503, 429, 408])
async def test_server_errors_and_rate_limits_are_retryable(
    llm: LlmActivities, server: FakeLlmServer, status: int
) -> None:
    server.script(SESSION, [FakeReply(status=status, error_message="try later")])
    error = await failure(llm, request(user("hi")))
    assert error.type == LLM_UNAVAILABLE_ERROR
    assert not error.non_retryable
    assert "try later" in error.message
    assert error.next_retry_delay is None


async def test_retry_after_becomes_the_next_retry_delay(llm: LlmActivities, server: FakeLlmServer) -> None:
    server.script(SESSION, [FakeReply(status=429, error_message="slow down", retry_after_seconds=7)])
    error = await failure(llm, request(user("hi")))
    assert error.type == LLM_UNAVAILABLE_ERROR
    assert error.next_retry_delay == timedelta(seconds=7)


async def test_proxy_error_text_is_an_error_not_content(llm: LlmActivities, server: FakeLlmServer) -> None:
    server.script(SESSION, [FakeReply(error_text="LiteLLM proxy unavailable: No tool output found for call_x")])
    error = await failure(llm, request(user("hi")))
    assert error.type == LLM_UNAVAILABLE_ERROR
    assert not error.non_retryable
    assert "LiteLLM proxy unavailable" in error.message


async def test_timeout_is_retryable_unavailable(llm: LlmActivities, server: FakeLlmServer) -> None:
    server.script(SESSION, [FakeReply(content="too late", delay_seconds=3)])
    started = time.monotonic()
    error = await failure(llm, request(user("hi"), timeout_seconds=0.3))
    assert time.monotonic() - started < 2
    assert error.type == LLM_UNAVAILABLE_ERROR
    assert not error.non_retryable
    assert "timed out" in error.message


async def test_a_provider_that_drips_bytes_still_times_out(http_client: httpx.AsyncClient, store: ContentStore) -> None:
    # Each byte arrives well within httpx's per-read timeout; only a deadline on the whole exchange stops it.
    async def drip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n")
        with contextlib.suppress(ConnectionError):
            for _ in range(100):
                writer.write(b" ")
                await writer.drain()
                await asyncio.sleep(0.1)
        writer.close()

    dripper = await asyncio.start_server(drip, "127.0.0.1", 0)
    port = dripper.sockets[0].getsockname()[1]
    try:
        llm = LlmActivities(
            http_client, content=store, chat_completions_url=f"http://127.0.0.1:{port}/v1/chat/completions"
        )
        started = time.monotonic()
        error = await failure(llm, request(user("hi"), timeout_seconds=0.5))
        assert time.monotonic() - started < 2
    finally:
        dripper.close()
    assert error.type == LLM_UNAVAILABLE_ERROR
    assert not error.non_retryable


async def test_connection_refused_is_retryable_unavailable(http_client: httpx.AsyncClient, store: ContentStore) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound but not listening: connections are refused
        llm = LlmActivities(
            http_client, content=store, chat_completions_url=f"http://127.0.0.1:{port}/v1/chat/completions"
        )
        error = await failure(llm, request(user("hi"), timeout_seconds=5))
    assert error.type == LLM_UNAVAILABLE_ERROR
    assert not error.non_retryable


@pytest.mark.parametrize(
    "raw",
    [
        "<html>502 Bad Gateway</html>",
        json.dumps({"id": "x", "choices": []}),
        json.dumps([1, 2]),
        json.dumps({"choices": [{}]}),
    ],
)
async def test_unusable_bodies_are_retryable_bad_responses(llm: LlmActivities, server: FakeLlmServer, raw: str) -> None:
    server.script(SESSION, [FakeReply(raw_body=raw)])
    error = await failure(llm, request(user("hi")))
    assert error.type == LLM_BAD_RESPONSE_ERROR
    assert not error.non_retryable


async def test_error_messages_never_contain_the_keys(
    server: FakeLlmServer, http_client: httpx.AsyncClient, store: ContentStore
) -> None:
    server.reset()
    llm = LlmActivities(
        http_client,
        content=store,
        chat_completions_url=server.chat_completions_url,
        api_key=API_KEY,
        internal_api_key=INTERNAL_KEY,
    )
    # A provider that echoes the refused credentials back.
    server.script(
        SESSION,
        [
            FakeReply(status=401, error_message=f"Incorrect API key provided: {API_KEY} ({INTERNAL_KEY})"),
            FakeReply(status=503, error_message=f"upstream refused {API_KEY}"),
        ],
    )
    for _ in range(2):
        error = await failure(llm, request(user("hi")))
        assert API_KEY not in error.message
        assert INTERNAL_KEY not in error.message
        assert "***" in error.message


# --- Context over an archived transcript ---


async def test_an_archived_transcript_is_read_back_once_per_segment(
    llm: LlmActivities, store: ContentStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A long session's LLM call reads its archived transcript back, a segment at a time, until the window is full.
    Each message is weighed once (not once more with every older segment read: that grew with the square of the
    segments, ~12 ms of every call of a full 128k-token window), and a segment read by an earlier call is not parsed
    again."""
    archive, seq, conversation = None, 0, []
    for segment in range(12):
        messages = [
            ChatMessage(role=role, content=f"{role} {segment}.{turn} " + "x" * size)
            for turn in range(10)
            for role, size in (("user", 500), ("assistant", 1_500))
        ]
        archive = await store.archive(
            ArchiveTranscriptInput(session_id=SESSION, first_seq=seq, messages=messages, previous=archive)
        )
        seq += len(messages)
        conversation += messages
    weighed: Counter[int] = Counter()
    parsed: list[int] = []
    weigh, parse = context.message_chars, TranscriptSegment.model_validate_json

    def counting_weigh(message: ChatMessage, cap: int | None = None) -> int:
        weighed[id(message)] += 1
        return weigh(message, cap)

    def counting_parse(data: str | bytes) -> TranscriptSegment:
        parsed.append(len(data))
        return parse(data)

    monkeypatch.setattr(context, "message_chars", counting_weigh)
    monkeypatch.setattr(TranscriptSegment, "model_validate_json", counting_parse)
    req = request(user("and now?"), transcript=archive, context_tokens=128_000)
    for _ in range(2):
        weighed.clear()
        messages, omitted = await llm.provider_messages(req, 128_000)
        assert omitted == 0
        assert [m["content"] for m in messages[1:]] == [m.content for m in conversation] + ["and now?"]
        assert max(weighed.values()) <= 2, "the open turn is weighed twice (it may need cutting), the others once"
    assert len(parsed) == 12, "each segment parsed once, by the first call"


def _completion(content: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": "gpt-test",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        **extra,
    }


def _delta_chunk(**delta: object) -> dict[str, object]:
    return {"model": "m", "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}


def test_stream_accumulator_folds_tool_call_deltas_and_holds_error_prefixes() -> None:

    acc = StreamAccumulator()
    assert acc.add(_delta_chunk(role="assistant", content="[")) == ""  # could still become "[Error]"
    assert acc.add(_delta_chunk(content="1] first")) == "[1] first"
    acc.add(_delta_chunk(tool_calls=[{"index": 0, "id": "call_a", "function": {"name": "read_", "arguments": '{"pa'}}]))
    acc.add(_delta_chunk(tool_calls=[{"index": 0, "function": {"name": "file", "arguments": 'th": "x"}'}}]))
    acc.add({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}], "usage": {"prompt_tokens": 3}})
    reply = parse_completion(acc.completion(), latency_ms=1)
    assert reply.content == "[1] first"
    assert [(c.id, c.name, c.arguments) for c in reply.tool_calls] == [("call_a", "read_file", {"path": "x"})]
    assert (reply.finish_reason, reply.usage.prompt_tokens) == ("tool_calls", 3)

    error = StreamAccumulator()
    assert error.add(_delta_chunk(content="[Err")) == ""
    assert error.add(_delta_chunk(content="or] proxy down")) == ""
    with pytest.raises(ApplicationError) as raised:
        parse_completion(error.completion(), latency_ms=1)
    assert raised.value.type == LLM_UNAVAILABLE_ERROR
