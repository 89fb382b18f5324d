"""The fake LLM over real HTTP: OpenAI-grade strictness, scripting, streaming and the admin endpoints."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

import devstack.fake_llm
import devstack.fake_llm._cli
from devstack.fake_llm import (
    FakeLlmServer,
    FakeReply,
    FakeToolCall,
    FakeUsage,
    create_app,
    estimate_prompt_tokens,
)
from workflows.model import AgentType
from workflows.routing import CLASSIFICATION_SYSTEM_PROMPT, classification_prompt

EXEC_TOOL = {
    "type": "function",
    "function": {
        "name": "execute_command",
        "description": "Run a shell command.",
        "parameters": {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]},
    },
}


@pytest_asyncio.fixture(scope="module")
async def server() -> AsyncIterator[FakeLlmServer]:
    async with FakeLlmServer() as running:
        yield running


@pytest_asyncio.fixture
async def http(server: FakeLlmServer) -> AsyncIterator[httpx.AsyncClient]:
    server.reset()
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:
        yield client
    server.reset()


def body(messages: list[dict[str, Any]], session: str | None = "s1", **extra: Any) -> dict[str, Any]:
    result: dict[str, Any] = {"model": "gpt-test", "messages": messages, **extra}
    if session is not None:
        result["user"] = session
    return result


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def call(call_id: str, name: str = "execute_command", arguments: str = '{"command": "ls"}') -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def calls(*ids: str, content: str | None = None) -> dict[str, Any]:
    return {"role": "assistant", "content": content, "tool_calls": [call(i) for i in ids]}


def result(call_id: str, text: str = "ok") -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": call_id, "content": text}


async def chat(http: httpx.AsyncClient, payload: Any) -> httpx.Response:
    return await http.post("/v1/chat/completions", json=payload)


async def rejected(http: httpx.AsyncClient, payload: Any) -> dict[str, Any]:
    response = await chat(http, payload)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    return dict(error)


def reply_message(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["object"] == "chat.completion"
    return dict(data["choices"][0]["message"])


# --- Strictness ---


async def test_valid_history_with_answered_tool_calls_is_accepted(http: httpx.AsyncClient) -> None:
    history = [
        {"role": "system", "content": "You are a coder."},
        user("list files"),
        calls("call_a", "call_b", content="Let me look."),
        result("call_b", "b"),  # answers may come in any order
        result("call_a", "a"),
        {"role": "assistant", "content": "Done."},
        user("and now?"),
        calls("call_c"),
        {"role": "tool", "tool_call_id": "call_c", "content": "c", "name": "execute_command"},
    ]
    response = await chat(http, body(history, tools=[EXEC_TOOL], tool_choice="auto", temperature=0.2))
    assert reply_message(response)["role"] == "assistant"


async def test_missing_and_empty_messages_are_rejected(http: httpx.AsyncClient) -> None:
    missing = await rejected(http, {"model": "gpt-test"})
    assert missing["param"] == "messages"
    assert missing["code"] == "missing_required_parameter"
    empty = await rejected(http, body([]))
    assert "empty array" in empty["message"]
    assert empty["code"] == "empty_array"


async def test_missing_model_is_rejected(http: httpx.AsyncClient) -> None:
    error = await rejected(http, {"messages": [user("hi")]})
    assert "model" in error["message"]


async def test_invalid_role_is_rejected(http: httpx.AsyncClient) -> None:
    error = await rejected(http, body([user("hi"), {"role": "robot", "content": "beep"}]))
    assert error["param"] == "messages[1].role"
    assert "'robot'" in error["message"]


async def test_tool_calls_followed_by_user_message_is_rejected(http: httpx.AsyncClient) -> None:
    error = await rejected(http, body([user("go"), calls("call_a", "call_b"), result("call_a"), user("next")]))
    assert error["message"].startswith(
        "An assistant message with 'tool_calls' must be followed by tool messages responding to each 'tool_call_id'."
    )
    assert error["message"].endswith("The following tool_call_ids did not have response messages: call_b")
    assert error["param"] == "messages.[1].role"


async def test_unanswered_tool_calls_at_the_end_are_rejected(http: httpx.AsyncClient) -> None:
    error = await rejected(http, body([user("go"), calls("call_x")]))
    assert "did not have response messages: call_x" in error["message"]
    partial = await rejected(http, body([user("go"), calls("call_x", "call_y"), result("call_y")]))
    assert partial["message"].endswith("response messages: call_x")


async def test_tool_message_without_a_preceding_call_is_rejected(http: httpx.AsyncClient) -> None:
    error = await rejected(http, body([user("go"), result("call_nobody")]))
    assert error["message"] == (
        "Invalid parameter: messages with role 'tool' must be a response to a preceeding message with 'tool_calls'."
    )
    assert error["param"] == "messages.[1].role"


async def test_tool_message_answering_an_older_call_is_rejected(http: httpx.AsyncClient) -> None:
    # call_a was answered and a new turn began; a late second answer for it must not be accepted.
    history = [user("go"), calls("call_a"), result("call_a"), {"role": "assistant", "content": "ok"}, result("call_a")]
    error = await rejected(http, body(history))
    assert "must be a response to a preceeding message" in error["message"]


async def test_tool_message_answering_a_call_twice_is_rejected(http: httpx.AsyncClient) -> None:
    error = await rejected(http, body([user("go"), calls("call_a", "call_b"), result("call_a"), result("call_a")]))
    assert "must be a response to a preceeding message" in error["message"]
    assert error["param"] == "messages.[3].role"


async def test_tool_message_answering_a_foreign_id_is_rejected(http: httpx.AsyncClient) -> None:
    error = await rejected(http, body([user("go"), calls("call_a"), result("call_zzz")]))
    assert "must be a response to a preceeding message" in error["message"]


async def test_duplicate_tool_call_ids_are_rejected(http: httpx.AsyncClient) -> None:
    within = await rejected(http, body([user("go"), calls("call_a", "call_a"), result("call_a")]))
    assert "duplicate tool call id 'call_a'" in within["message"]
    across = await rejected(
        http, body([user("go"), calls("call_a"), result("call_a"), user("again"), calls("call_a"), result("call_a")])
    )
    assert "duplicate tool call id 'call_a'" in across["message"]


async def test_bookkeeping_fields_in_messages_are_rejected(http: httpx.AsyncClient) -> None:
    error = await rejected(http, body([{"role": "user", "content": "hi", "message_id": "m1"}]))
    assert error["message"] == "Additional properties are not allowed ('message_id' was unexpected) - 'messages.0'"


async def test_tool_call_arguments_must_be_a_json_string(http: httpx.AsyncClient) -> None:
    bad = {"role": "assistant", "content": None, "tool_calls": [call("call_a") | {"function": {"name": "x"}}]}
    missing = await rejected(http, body([user("go"), bad, result("call_a")]))
    assert missing["param"] == "messages[1].tool_calls[0].function.arguments"
    as_object = {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "call_a", "type": "function", "function": {"name": "x", "arguments": {"a": 1}}}],
    }
    error = await rejected(http, body([user("go"), as_object, result("call_a")]))
    assert error["code"] == "invalid_type"
    assert "expected a string" in error["message"]


async def test_null_content_is_only_allowed_for_assistant_tool_calls(http: httpx.AsyncClient) -> None:
    error = await rejected(http, body([user("hi"), {"role": "assistant", "content": None}, user("again")]))
    assert error["param"] == "messages[1].content"
    tool_without_id = await rejected(http, body([user("go"), calls("call_a"), {"role": "tool", "content": "x"}]))
    assert "tool_call_id" in tool_without_id["message"]


@pytest.mark.parametrize(
    ("tools", "fragment"),
    [
        ([], "empty array"),
        ("execute_command", "expected an array"),
        ([{"type": "function"}], "tools[0].function"),
        ([{"type": "function", "function": {"name": "bad name!"}}], "does not match pattern"),
        ([{"type": "function", "function": {"name": "t", "parameters": {"type": "string"}}}], "Invalid schema"),
        ([{"type": "retrieval", "function": {"name": "t"}}], "Invalid value: 'retrieval'"),
    ],
)
async def test_malformed_tools_are_rejected(http: httpx.AsyncClient, tools: Any, fragment: str) -> None:
    error = await rejected(http, body([user("hi")], tools=tools))
    assert fragment in error["message"]


async def test_tool_choice_needs_tools_and_stream_options_need_stream(http: httpx.AsyncClient) -> None:
    choice = await rejected(http, body([user("hi")], tool_choice="auto"))
    assert choice["param"] == "tool_choice"
    options = await rejected(http, body([user("hi")], stream_options={"include_usage": True}))
    assert options["param"] == "stream_options"


async def test_unknown_parameters_and_bad_json_are_rejected(http: httpx.AsyncClient) -> None:
    unknown = await rejected(http, body([user("hi")], session_id="s1"))
    assert unknown["message"] == "Unrecognized request argument supplied: session_id"
    response = await http.post(
        "/v1/chat/completions", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert "could not parse the JSON body" in response.json()["error"]["message"]


async def test_rejected_requests_are_recorded_too(http: httpx.AsyncClient, server: FakeLlmServer) -> None:
    await rejected(http, body([user("go"), calls("call_a")], session="bad"))
    seen = server.requests("bad")
    assert len(seen) == 1
    assert seen[0]["messages"][1]["tool_calls"][0]["id"] == "call_a"


# --- Scripting ---


async def test_scripted_replies_are_consumed_in_order_per_session(
    http: httpx.AsyncClient, server: FakeLlmServer
) -> None:
    server.script("s1", [FakeReply(content="first"), FakeReply(content="second")])
    server.script("s2", [FakeReply(content="other session")])
    server.script("*", [FakeReply(content="from star")])

    contents = [reply_message(await chat(http, body([user("hi")], session="s1")))["content"] for _ in range(3)]
    assert contents == ["first", "second", "from star"]
    assert reply_message(await chat(http, body([user("hi")], session="s2")))["content"] == "other session"
    # All queues empty: the default brain answers.
    fallback = reply_message(await chat(http, body([user("hi")], session="s1")))["content"]
    assert "fake LLM" in fallback
    assert server.pending() == 0


async def test_requests_without_user_use_the_star_queue(http: httpx.AsyncClient, server: FakeLlmServer) -> None:
    server.script("*", [FakeReply(content="anonymous")])
    assert reply_message(await chat(http, body([user("hi")], session=None)))["content"] == "anonymous"
    assert [b["messages"][0]["content"] for b in server.requests("*")] == ["hi"]


async def test_match_routes_replies_by_purpose(http: httpx.AsyncClient, server: FakeLlmServer) -> None:
    server.script(
        "s1",
        [
            FakeReply(content="agent answer", match="agent"),
            FakeReply(content='{"agent": "debug", "confidence": "high", "reasoning": "r"}', match="classification"),
        ],
    )
    classifier = [
        {"role": "system", "content": CLASSIFICATION_SYSTEM_PROMPT},
        user(classification_prompt("hello", frozenset(AgentType))),
    ]
    # The classification request skips the agent reply queued before it.
    assert json.loads(reply_message(await chat(http, body(classifier)))["content"])["agent"] == "debug"
    assert server.pending("s1") == 1
    assert reply_message(await chat(http, body([user("hi")])))["content"] == "agent answer"


async def test_scripted_tool_calls_usage_and_finish_reason(http: httpx.AsyncClient, server: FakeLlmServer) -> None:
    server.script(
        "s1",
        [
            FakeReply(
                content="Running it.",
                tool_calls=[
                    FakeToolCall(id="call_fixed", name="execute_command", arguments={"command": "ls"}),
                    FakeToolCall(name="read_file", arguments={"path": "a.py"}, arguments_format="object"),
                ],
                usage=FakeUsage(prompt_tokens=11, completion_tokens=7),
            )
        ],
    )
    response = await chat(http, body([user("go")]))
    data = response.json()
    message = reply_message(response)
    assert message["content"] == "Running it."
    first, second = message["tool_calls"]
    assert first == {
        "id": "call_fixed",
        "type": "function",
        "function": {"name": "execute_command", "arguments": '{"command": "ls"}'},
    }
    assert second["id"].startswith("call_") and len(second["id"]) > len("call_")
    assert second["function"]["arguments"] == {"path": "a.py"}
    assert data["choices"][0]["finish_reason"] == "tool_calls"
    assert data["usage"] == {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}


async def test_pure_tool_call_has_null_content_and_omit_usage_drops_usage(
    http: httpx.AsyncClient, server: FakeLlmServer
) -> None:
    server.script("s1", [FakeReply(tool_calls=[FakeToolCall(name="t")], omit_usage=True)])
    response = await chat(http, body([user("go")]))
    assert reply_message(response)["content"] is None
    assert "usage" not in response.json()


async def test_error_text_is_a_200_with_error_content(http: httpx.AsyncClient, server: FakeLlmServer) -> None:
    server.script("s1", [FakeReply(error_text="LiteLLM proxy unavailable: boom")])
    message = reply_message(await chat(http, body([user("hi")])))
    assert message["content"] == "[Error] LiteLLM proxy unavailable: boom"


async def test_status_answers_an_openai_error_with_retry_after(http: httpx.AsyncClient, server: FakeLlmServer) -> None:
    server.script("s1", [FakeReply(status=429, error_message="Rate limit reached", retry_after_seconds=3)])
    response = await chat(http, body([user("hi")]))
    assert response.status_code == 429
    assert response.headers["retry-after"] == "3"
    assert response.json()["error"]["message"] == "Rate limit reached"
    assert response.json()["error"]["type"] == "rate_limit_error"
    # The scripted error was used up; the next request succeeds.
    assert (await chat(http, body([user("hi")]))).status_code == 200


async def test_delay_holds_the_answer(http: httpx.AsyncClient, server: FakeLlmServer) -> None:
    server.script("s1", [FakeReply(content="late", delay_seconds=0.4), FakeReply(content="later", delay_seconds=5)])
    started = time.monotonic()
    assert reply_message(await chat(http, body([user("hi")])))["content"] == "late"
    assert time.monotonic() - started >= 0.4
    with pytest.raises(httpx.ReadTimeout):
        await http.post("/v1/chat/completions", json=body([user("hi")]), timeout=0.3)


async def test_raw_body_is_sent_verbatim(http: httpx.AsyncClient, server: FakeLlmServer) -> None:
    server.script("s1", [FakeReply(raw_body="<html>bad gateway</html>")])
    response = await chat(http, body([user("hi")]))
    assert response.status_code == 200
    assert response.text == "<html>bad gateway</html>"


# --- Context window ---


def context_error(window: int, tokens: int) -> dict[str, Any]:
    return {
        "error": {
            "message": f"This model's maximum context length is {window} tokens. However, your messages resulted in "
            f"{tokens} tokens. Please reduce the length of the messages.",
            "type": "invalid_request_error",
            "param": "messages",
            "code": "context_length_exceeded",
        }
    }


async def test_a_prompt_over_the_context_window_gets_openais_error(
    http: httpx.AsyncClient, server: FakeLlmServer
) -> None:
    payload = body([{"role": "system", "content": "You are a coder."}, user("a long request " * 100)])
    tokens = estimate_prompt_tokens(payload)
    server.set_context_window("*", tokens - 1)
    refused = await chat(http, payload)
    assert refused.status_code == 400
    assert refused.json() == context_error(tokens - 1, tokens)
    # A prompt exactly as long as the window fits, as does anything shorter.
    server.set_context_window("*", tokens)
    assert reply_message(await chat(http, payload))["role"] == "assistant"
    assert reply_message(await chat(http, body([user("short")])))["role"] == "assistant"


async def test_streamed_requests_are_refused_before_streaming(http: httpx.AsyncClient, server: FakeLlmServer) -> None:
    payload = body([user("x" * 400)], stream=True)
    server.set_context_window("s1", 50)
    response = await chat(http, payload)
    assert response.status_code == 400
    assert response.json() == context_error(50, estimate_prompt_tokens(payload))


async def test_context_window_per_session_overrides_the_default() -> None:
    long_prompt = [user("y" * 2000)]  # 500 + 4 tokens
    async with FakeLlmServer(context_window=300) as server, httpx.AsyncClient(base_url=server.base_url) as client:
        assert (await chat(client, body(long_prompt, session="s1"))).status_code == 400
        widened = await client.post("/_fake/context-window", json={"session": "s1", "tokens": 1000})
        assert widened.json() == {"session": "s1", "tokens": 1000}
        assert (await chat(client, body(long_prompt, session="s1"))).status_code == 200
        # Other sessions, and requests without a session, still get the default.
        assert (await chat(client, body(long_prompt, session="s2"))).json() == context_error(300, 504)
        assert (await chat(client, body(long_prompt, session=None))).status_code == 400

        # A session window may also be narrower than the default.
        server.set_context_window("s2", 10)
        assert (await chat(client, body([user("z" * 100)], session="s2"))).json() == context_error(10, 29)
        assert (await chat(client, body([user("z" * 100)], session="s3"))).status_code == 200

        # Null removes a session's window (back to the default); on "*" it removes the default.
        await client.post("/_fake/context-window", json={"session": "s1", "tokens": None})
        assert (await client.get("/_fake/context-window", params={"session": "s1"})).json()["tokens"] == 300
        assert (await chat(client, body(long_prompt, session="s1"))).status_code == 400
        cleared = await client.post("/_fake/context-window", json={"session": "*", "tokens": None})
        assert cleared.json() == {"session": "*", "tokens": None}
        assert (await chat(client, body(long_prompt, session="s1"))).status_code == 200

        # reset() restores the constructor's default and drops the overrides.
        server.reset()
        assert server.fake.context_window("*") == 300
        assert server.fake.context_window("s2") == 300

        for bad in ({"session": "s1", "tokens": 0}, {"session": "s1"}, {"session": "s1", "tokens": 5, "window": 5}):
            assert (await client.post("/_fake/context-window", json=bad)).status_code == 422
    with pytest.raises(ValueError, match="positive"):
        server.set_context_window("s1", 0)


async def test_a_refused_request_keeps_the_script_and_is_recorded(
    http: httpx.AsyncClient, server: FakeLlmServer
) -> None:
    server.script("s1", [FakeReply(content="scripted")])
    payload = body([user("w" * 1000)])
    server.set_context_window("s1", 100)
    assert (await chat(http, payload)).status_code == 400
    assert server.pending("s1") == 1
    (refused,) = server.received("s1")
    assert refused.prompt_tokens == estimate_prompt_tokens(payload) == 254

    server.set_context_window("s1", 1000)
    assert reply_message(await chat(http, payload))["content"] == "scripted"
    assert server.pending("s1") == 0
    received = (await http.get("/_fake/received", params={"session": "s1"})).json()
    assert [r["prompt_tokens"] for r in received] == [254, 254]


def test_prompt_token_estimate_is_documented_and_monotonic() -> None:
    # ceil(bytes / 4) + 4 per message; content is counted in UTF-8 bytes.
    assert estimate_prompt_tokens(body([user("x" * 40)])) == 10 + 4
    assert estimate_prompt_tokens(body([user("é" * 40)])) == 20 + 4
    assert estimate_prompt_tokens(body([user("x")])) == 1 + 4
    assert estimate_prompt_tokens(None) == 0
    assert estimate_prompt_tokens({"messages": "not a list"}) == 0

    messages: list[dict[str, Any]] = [{"role": "system", "content": "You are a coder."}]
    previous = estimate_prompt_tokens(body(messages))
    growth = [
        user("please run the tests"),
        {"role": "user", "content": [{"type": "text", "text": "and this part too"}]},
        calls("call_a", content="Running."),
        result("call_a", "12 passed"),
        {"role": "assistant", "content": ""},
        user("é" * 1000),
    ]
    for message in growth:
        messages.append(message)
        current = estimate_prompt_tokens(body(messages))
        assert current > previous, message
        previous = current
    # Longer content never counts less.
    counts = [estimate_prompt_tokens(body([user("a" * n)])) for n in range(200)]
    assert counts == sorted(counts)
    # Tool calls count their name and arguments; tools count their JSON.
    small = [user("go"), calls("call_a"), result("call_a")]
    large = [user("go"), {"role": "assistant", "content": None, "tool_calls": [call("call_a", arguments="{}" * 50)]}]
    assert estimate_prompt_tokens(body([*large, result("call_a")])) > estimate_prompt_tokens(body(small))
    assert estimate_prompt_tokens(body(small, tools=[EXEC_TOOL])) > estimate_prompt_tokens(body(small))


def test_context_window_is_configurable_at_construction_and_on_the_command_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert create_app(context_window=42).state.fake.context_window("any") == 42
    assert create_app().state.fake.context_window("any") is None
    with pytest.raises(ValueError):
        FakeLlmServer(context_window=0)

    served: list[dict[str, Any]] = []
    monkeypatch.setattr(devstack.fake_llm._cli, "serve", lambda host, port, **options: served.append(options))
    assert devstack.fake_llm.main(["--port", "0", "--context-window", "8192"]) == 0
    assert served[-1]["context_window"] == 8192
    assert devstack.fake_llm.main([]) == 0
    assert served[-1]["context_window"] is None
    with pytest.raises(SystemExit):
        devstack.fake_llm.main(["--context-window", "0"])


# --- Default brain ---


@pytest.mark.parametrize(
    ("text", "agent"),
    [
        ("Please run the tests", "coder"),
        ("implement a parser", "coder"),
        ("design the architecture of the service", "architect"),
        ("the app crashes on start", "debug"),
        ("explain this function", "ask"),
        ("hello there", "ask"),
    ],
)
async def test_default_brain_classifies_by_keywords(http: httpx.AsyncClient, text: str, agent: str) -> None:
    messages = [
        {"role": "system", "content": CLASSIFICATION_SYSTEM_PROMPT},
        # The real prompt lists every agent's description; only the quoted request may decide.
        user(classification_prompt(text, frozenset(AgentType))),
    ]
    answer = json.loads(reply_message(await chat(http, body(messages)))["content"])
    assert answer["agent"] == agent
    assert answer["confidence"] == "medium"
    assert answer["reasoning"]


async def test_default_brain_runs_commands_when_the_tool_is_offered(http: httpx.AsyncClient) -> None:
    messages = [{"role": "system", "content": "You are a coder."}, user("Please run `pytest -q` for me")]
    first = await chat(http, body(messages, tools=[EXEC_TOOL]))
    message = reply_message(first)
    assert first.json()["choices"][0]["finish_reason"] == "tool_calls"
    (tool_call,) = message["tool_calls"]
    assert tool_call["function"]["name"] == "execute_command"
    assert json.loads(tool_call["function"]["arguments"]) == {"command": "pytest -q"}
    # Deterministic: the same request gets the same call id.
    again = reply_message(await chat(http, body(messages, tools=[EXEC_TOOL])))
    assert again["tool_calls"][0]["id"] == tool_call["id"]
    # Without the tool on offer it answers in text instead.
    assert "tool_calls" not in reply_message(await chat(http, body(messages)))


async def test_default_brain_summarises_tool_results(http: httpx.AsyncClient) -> None:
    messages = [user("run ls"), calls("call_a"), result("call_a", "README.md\nsetup.py")]
    content = reply_message(await chat(http, body(messages, tools=[EXEC_TOOL])))["content"]
    assert "execute_command" in content
    assert "README.md" in content


# --- Streaming ---


async def stream_events(http: httpx.AsyncClient, payload: dict[str, Any]) -> list[Any]:
    events: list[Any] = []
    async with http.stream("POST", "/v1/chat/completions", json=payload) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                data = line[len("data: ") :]
                events.append(data if data == "[DONE]" else json.loads(data))
    return events


async def test_streaming_sends_content_and_tool_call_deltas(http: httpx.AsyncClient, server: FakeLlmServer) -> None:
    server.script(
        "s1",
        [
            FakeReply(
                content="Let me run that for you.",
                tool_calls=[
                    FakeToolCall(id="call_1", name="execute_command", arguments={"command": "ls -la"}),
                    FakeToolCall(id="call_2", name="read_file", arguments={"path": "README.md"}),
                ],
                usage=FakeUsage(prompt_tokens=5, completion_tokens=9),
            )
        ],
    )
    events = await stream_events(
        http, body([user("go")], stream=True, stream_options={"include_usage": True}, tools=[EXEC_TOOL])
    )
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"

    content_pieces = [c["choices"][0]["delta"].get("content") for c in chunks if c["choices"]]
    content_pieces = [p for p in content_pieces if p]
    assert len(content_pieces) > 1
    assert "".join(content_pieces) == "Let me run that for you."

    calls_by_index: dict[int, dict[str, Any]] = {}
    fragments = 0
    for chunk in chunks:
        for delta in chunk["choices"][0]["delta"].get("tool_calls", []) if chunk["choices"] else []:
            entry = calls_by_index.setdefault(delta["index"], {"id": None, "name": "", "arguments": ""})
            if "id" in delta:
                entry["id"] = delta["id"]
                entry["name"] = delta["function"]["name"]
            if delta["function"].get("arguments"):
                fragments += 1
                entry["arguments"] += delta["function"]["arguments"]
    assert calls_by_index[0]["id"] == "call_1"
    assert json.loads(calls_by_index[0]["arguments"]) == {"command": "ls -la"}
    assert calls_by_index[1]["name"] == "read_file"
    assert json.loads(calls_by_index[1]["arguments"]) == {"path": "README.md"}
    assert fragments > 2  # arguments arrive in pieces, not whole

    finals = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert len(finals) == 1
    assert finals[0]["choices"][0]["finish_reason"] == "tool_calls"
    assert finals[0]["choices"][0]["delta"] == {}
    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"] == {"prompt_tokens": 5, "completion_tokens": 9, "total_tokens": 14}


def tool_call_fragments(chunks: list[Any]) -> dict[int, list[str]]:
    """Each streamed tool call's argument fragments, by index."""
    fragments: dict[int, list[str]] = {}
    for chunk in chunks:
        for delta in chunk["choices"][0]["delta"].get("tool_calls", []) if chunk["choices"] else []:
            pieces = fragments.setdefault(delta["index"], [])
            if delta["function"].get("arguments"):
                pieces.append(delta["function"]["arguments"])
    return fragments


async def test_delta_chars_stream_content_and_arguments_in_pieces_of_that_size(
    http: httpx.AsyncClient, server: FakeLlmServer
) -> None:
    arguments = {"path": "src/app.py", "content": "print('héllo, wörld')\n" * 7}
    server.script(
        "s1",
        [
            FakeReply(
                content="Writing the file now.",
                tool_calls=[
                    FakeToolCall(id="call_1", name="write_file", arguments=arguments),
                    FakeToolCall(id="call_2", name="execute_command", arguments='{"command": "python src/app.py"}'),
                    FakeToolCall(id="call_3", name="read_file", arguments={"path": "a"}, arguments_format="object"),
                ],
                content_delta_chars=4,
                argument_delta_chars=6,
            )
        ],
    )
    chunks = (await stream_events(http, body([user("go")], stream=True)))[:-1]

    content = [c["choices"][0]["delta"]["content"] for c in chunks if c["choices"][0]["delta"].get("content")]
    assert "".join(content) == "Writing the file now."
    assert [len(piece) for piece in content] == [4] * 5 + [1]

    fragments = tool_call_fragments(chunks)
    expected = [
        json.dumps(arguments, ensure_ascii=False),
        '{"command": "python src/app.py"}',
        json.dumps({"path": "a"}),
    ]
    assert sorted(fragments) == [0, 1, 2]
    for index, whole in enumerate(expected):
        pieces = fragments[index]
        assert "".join(pieces) == whole  # the exact JSON text, not merely an equivalent one
        assert all(len(piece) == 6 for piece in pieces[:-1])
        assert 1 <= len(pieces[-1]) <= 6
        assert len(pieces) == -(-len(whole) // 6)


async def test_a_large_argument_streams_in_small_deltas(http: httpx.AsyncClient, server: FakeLlmServer) -> None:
    # 1.5 MB of file content in 6-character deltas, as a provider streams a big write_file: 250,000 chunks.
    big_content = "".join(f"line {n:07d}: some generated text\n" for n in range(50_000))[:1_500_000]
    arguments = json.dumps({"path": "big.txt", "content": big_content})
    server.script(
        "s1",
        [
            FakeReply(
                tool_calls=[FakeToolCall(id="call_big", name="write_file", arguments=arguments)], argument_delta_chars=6
            )
        ],
    )
    started = time.monotonic()
    pieces: list[str] = []
    events = 0
    async with http.stream("POST", "/v1/chat/completions", json=body([user("go")], stream=True)) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            events += 1
            for delta in json.loads(line[len("data: ") :])["choices"][0]["delta"].get("tool_calls", []):
                if delta["function"].get("arguments"):
                    pieces.append(delta["function"]["arguments"])
    elapsed = time.monotonic() - started
    assert "".join(pieces) == arguments
    assert json.loads("".join(pieces))["content"] == big_content
    assert len(pieces) == -(-len(arguments) // 6)
    assert events == len(pieces) + 3  # role, tool-call header, finish
    # About 5 s here on two cores (most of it this client's parsing); one write per event took several times that.
    assert elapsed < 60, elapsed


async def test_streaming_without_include_usage_has_no_usage_chunk(http: httpx.AsyncClient) -> None:
    events = await stream_events(http, body([user("hello")], stream=True))
    chunks = events[:-1]
    assert all(c["choices"] for c in chunks)
    assert all("usage" not in c for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert "fake LLM" in "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)


# --- Admin and auxiliary endpoints ---


async def test_admin_endpoints_over_http(http: httpx.AsyncClient) -> None:
    scripted = await http.post(
        "/_fake/script",
        json={"session": "s9", "replies": [{"content": "one"}, {"tool_calls": [{"name": "t", "arguments": {"a": 1}}]}]},
    )
    assert scripted.status_code == 200
    assert scripted.json()["queued"] == 2
    assert (await http.get("/_fake/script", params={"session": "s9"})).json()["pending"] == 2

    assert reply_message(await chat(http, body([user("first")], session="s9")))["content"] == "one"
    await chat(http, body([user("other")], session="s8"))
    seen = (await http.get("/_fake/requests", params={"session": "s9"})).json()
    assert [b["messages"][0]["content"] for b in seen] == ["first"]
    assert len((await http.get("/_fake/requests")).json()) == 2
    received = (await http.get("/_fake/received", params={"session": "s9"})).json()
    assert received[0]["path"] == "/v1/chat/completions"
    assert "content-type" in received[0]["headers"]

    assert (await http.delete("/_fake/script")).status_code == 200
    assert (await http.get("/_fake/script")).json()["pending"] == 0
    assert (await http.delete("/_fake/requests")).status_code == 200
    assert (await http.get("/_fake/requests")).json() == []

    bad = await http.post("/_fake/script", json={"session": "s9", "replies": [{"status": 200}]})
    assert bad.status_code == 422


async def test_models_health_and_the_short_path(http: httpx.AsyncClient) -> None:
    models = (await http.get("/v1/models")).json()
    assert models["object"] == "list"
    assert models["data"][0]["id"]
    assert (await http.get("/health")).json()["status"] == "ok"
    short = await http.post("/chat/completions", json=body([user("hi")]))
    assert reply_message(short)["role"] == "assistant"


async def test_auth_is_enforced_when_configured() -> None:
    async with FakeLlmServer(api_key="sk-secret", internal_api_key="internal-secret") as server:
        async with httpx.AsyncClient(base_url=server.base_url) as client:
            denied = await client.post("/v1/chat/completions", json=body([user("hi")]))
            assert denied.status_code == 401
            assert "sk-secret" not in denied.text
            half = await client.post(
                "/v1/chat/completions", json=body([user("hi")]), headers={"Authorization": "Bearer sk-secret"}
            )
            assert half.status_code == 401
            ok = await client.post(
                "/v1/chat/completions",
                json=body([user("hi")]),
                headers={"Authorization": "Bearer sk-secret", "X-Internal-Auth": "internal-secret"},
            )
            assert ok.status_code == 200


async def test_server_picks_a_free_port_and_releases_it() -> None:
    async with FakeLlmServer() as server:
        assert server.port != 0
        assert server.base_url == f"http://127.0.0.1:{server.port}"
        async with httpx.AsyncClient() as client:
            assert (await client.get(f"{server.base_url}/health")).status_code == 200
    async with httpx.AsyncClient() as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(f"{server.base_url}/health")
