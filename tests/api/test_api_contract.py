"""The HTTP API holds the original Agent Runtime's contract (spec §4.1) field by field, over real HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from api import create_app
from devstack.embedded_server import EmbeddedServer
from devstack.fake_llm import FakeLlmServer
from devstack.temporal import DevServer, free_port
from settings import Settings, TemporalSettings
from tests.api import support
from tests.api.support import KEY, Api, assert_original_shape, chunks, final, types
from tests.support import call, classify, text

# The shared module-scoped fixtures: one dev server, worker and API for this module.
dev_server = support.dev_server
api = support.api


def _operations(document: dict[str, Any]) -> list[tuple[str, str]]:
    return [(method.upper(), path) for path, item in document["paths"].items() for method in item]


def _concrete(path: str) -> str:
    return path.replace("{session_id}", "nobody-here")


# --- health, docs, auth ---


async def test_health_needs_no_key(api: Api) -> None:
    response = await api.http.get("/health", headers={"X-Internal-Auth": ""})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"status", "service", "version"}
    assert (body["status"], body["service"]) == ("healthy", "agent-runtime")
    assert isinstance(body["version"], str) and body["version"]


async def test_every_other_route_needs_the_key(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    document = (await api.http.get("/openapi.json", headers={"X-Internal-Auth": ""})).json()
    operations = [op for op in _operations(document) if op[1] != "/health"]
    assert len(operations) >= 13
    caplog.set_level(logging.WARNING, logger="agent_runtime.api.auth")
    async with httpx.AsyncClient(base_url=api.server.base_url, trust_env=False, timeout=10) as anonymous:
        for method, path in operations:
            for headers in ({}, {"X-Internal-Auth": "wrong-key-value"}, {"X-Internal-Auth": b"\xe9t\xe9"}):
                response = await anonymous.request(method, _concrete(path), headers=headers)
                assert (response.status_code, response.json()) == (401, {"detail": "unauthorized"}), (method, path)
        for open_path in ("/docs", "/redoc", "/openapi.json"):
            assert (await anonymous.get(open_path)).status_code == 200
    assert "Rejected GET /sessions" in caplog.text
    # Bug L11: neither the expected key nor the one a caller sent is ever logged.
    assert KEY not in caplog.text and "wrong-key-value" not in caplog.text


async def test_openapi_document_is_complete(api: Api) -> None:
    document = (await api.http.get("/openapi.json")).json()
    expected = {
        ("POST", "/agent/message/stream"),
        ("GET", "/agent/stream/{session_id}"),
        ("POST", "/sessions"),
        ("GET", "/sessions"),
        ("GET", "/sessions/{session_id}"),
        ("GET", "/sessions/{session_id}/history"),
        ("GET", "/sessions/{session_id}/pending-approvals"),
        ("GET", "/agents"),
        ("GET", "/agents/{session_id}/current"),
        ("POST", "/agents/{session_id}/switch"),
        ("GET", "/events/metrics"),
        ("GET", "/events/metrics/sessions"),
        ("GET", "/events/metrics/session/{session_id}"),
        ("GET", "/health"),
    }
    assert expected <= set(_operations(document))
    schemas = document["components"]["schemas"]
    assert document["components"]["securitySchemes"]["InternalAuth"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-Internal-Auth",
    }
    stream = document["paths"]["/agent/message/stream"]["post"]
    assert stream["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/AgentStreamRequestDoc"
    }
    message = schemas["AgentStreamRequestDoc"]["properties"]["message"]
    assert set(message["discriminator"]["mapping"]) == {
        "user_message",
        "tool_result",
        "hitl_decision",
        "switch_agent",
        "plan_decision",
        "cancel_turn",
    }
    assert "text/event-stream" in stream["responses"]["200"]["content"]
    assert set(schemas["StreamChunk"]["properties"]) >= set(support.ORIGINAL_CHUNK_FIELDS)
    assert schemas["HistoryMessage"]["required"] == ["role", "content"]
    # Every reference resolves.
    refs: list[str] = []

    def collect(node: Any) -> None:
        if isinstance(node, dict):
            refs.extend(v for k, v in node.items() if k == "$ref")
            for value in node.values():
                collect(value)
        elif isinstance(node, list):
            for value in node:
                collect(value)

    collect(document)
    assert refs and all(ref.removeprefix("#/components/schemas/") in schemas for ref in refs)
    assert document["paths"]["/health"]["get"]["security"] == []
    assert document["paths"]["/sessions"]["get"]["security"] == [{"InternalAuth": []}]


async def test_without_a_key_auth_is_off_and_single_agent_mode_lists_two_agents(
    dev_server: DevServer, fake_llm: FakeLlmServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="agent_runtime.api")
    settings = Settings(
        llm_proxy_url=fake_llm.base_url,
        temporal=TemporalSettings(address=dev_server.target, task_queue=f"api-open-{uuid.uuid4().hex[:6]}"),
        multi_agent_mode=False,
    )
    async with EmbeddedServer(create_app(settings, temporal_client=dev_server.client)) as server:
        async with httpx.AsyncClient(base_url=server.base_url, trust_env=False) as http:
            body = (await http.get("/agents")).json()
    assert caplog.text.count("No internal API key is configured") == 1
    assert [a["type"] for a in body["agents"]] == ["orchestrator", "universal"]
    assert body["total"] == 2


async def test_the_api_command_serves_on_the_configured_port(dev_server: DevServer) -> None:
    """`agent-runtime api` runs uvicorn with the app; the port comes from AGENT_RUNTIME__API__PORT."""
    port = free_port()
    env = {
        **os.environ,
        "AGENT_RUNTIME__TEMPORAL__ADDRESS": dev_server.target,
        "AGENT_RUNTIME__API__PORT": str(port),
        "AGENT_RUNTIME__INTERNAL_API_KEY": "process-key",
    }
    command = Path(sys.executable).parent / "agent-runtime"
    process = await asyncio.create_subprocess_exec(
        str(command), "api", env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", trust_env=False) as http:
            for _ in range(150):
                with contextlib.suppress(httpx.TransportError):
                    health = await http.get("/health")
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("the API did not come up")
            assert health.json()["status"] == "healthy"
            assert (await http.get("/agents")).status_code == 401
            assert (await http.get("/agents", headers={"X-Internal-Auth": "process-key"})).json()["total"] == 6
    finally:
        process.terminate()
        output, _ = await asyncio.wait_for(process.communicate(), 15)
    assert b"process-key" not in output


# --- /agents ---


async def test_agents_list(api: Api) -> None:
    body = (await api.http.get("/agents")).json()
    assert set(body) == {"agents", "total"}
    assert body["total"] == len(body["agents"]) == 6
    by_type = {a["type"]: a for a in body["agents"]}
    assert set(by_type) == {"orchestrator", "coder", "architect", "debug", "ask", "universal"}
    for agent in body["agents"]:
        assert set(agent) == {"type", "name", "description", "allowed_tools", "has_file_restrictions"}
    assert "write_file" in by_type["coder"]["allowed_tools"] and by_type["coder"]["has_file_restrictions"] is False
    assert by_type["architect"]["has_file_restrictions"] is True
    assert "write_file" not in by_type["ask"]["allowed_tools"]


async def test_switch_agent_rest_and_sse(api: Api) -> None:
    session_id = api.new_session()
    assert (await api.http.post("/sessions", json={"session_id": session_id})).status_code == 201

    response = await api.http.post(f"/agents/{session_id}/switch", json={"target_agent": "debug", "reason": "crash"})
    assert response.status_code == 200, response.text
    context = response.json()["context"]
    assert set(context) == {
        "id",
        "session_id",
        "current_agent",
        "switch_count",
        "switch_history",
        "last_switch_at",
        "created_at",
    }
    assert (context["session_id"], context["current_agent"], context["switch_count"]) == (session_id, "debug", 1)
    [switch] = context["switch_history"]
    assert set(switch) == {"from_agent", "to_agent", "reason", "switched_at", "confidence"}
    assert (switch["from_agent"], switch["to_agent"], switch["reason"]) == ("orchestrator", "debug", "crash")
    assert context["last_switch_at"] == switch["switched_at"]
    assert (await api.http.get(f"/agents/{session_id}/current")).json()["context"] == context

    assert (
        await api.http.post(f"/agents/{session_id}/switch", json={"target_agent": "nobody", "reason": "x"})
    ).status_code == 400
    assert (await api.http.post(f"/agents/{session_id}/switch", json={"target_agent": "coder"})).status_code == 422
    assert (
        await api.http.post("/agents/no-such-session/switch", json={"target_agent": "coder", "reason": "x"})
    ).status_code == 404
    assert (await api.http.get("/agents/no-such-session/current")).status_code == 404

    # Over the stream: `content` (the gateway's WebSocket schema requires it) is ignored.
    events = await api.post(session_id, {"type": "switch_agent", "agent_type": "ask", "content": "go", "reason": "q"})
    switched = final(events)
    assert_original_shape(switched)
    assert (switched["type"], switched["content"]) == ("agent_switched", "Switched to ask agent")
    assert switched["metadata"] == {"from_agent": "debug", "to_agent": "ask", "reason": "q"}
    context = (await api.http.get(f"/agents/{session_id}/current")).json()["context"]
    assert (context["current_agent"], context["switch_count"]) == ("ask", 2)


# --- /sessions ---


async def test_create_list_and_read_sessions(api: Api) -> None:
    first, second = api.new_session(), api.new_session()
    created = await api.http.post("/sessions", json={"session_id": first})
    assert created.status_code == 201
    body = created.json()
    assert set(body) == {"id", "message_count", "created_at", "is_active", "current_agent"}
    assert (body["id"], body["message_count"], body["is_active"], body["current_agent"]) == (
        first,
        0,
        True,
        "orchestrator",
    )
    assert (await api.http.post("/sessions", json={"session_id": first})).status_code == 409
    assert (await api.http.post("/sessions", json={"session_id": second})).status_code == 201
    generated = await api.http.post("/sessions")
    assert generated.status_code == 201 and uuid.UUID(generated.json()["id"])

    listed = await api.until_listed({first, second})
    assert set(listed) == {"sessions", "total", "limit", "offset"}
    assert (listed["limit"], listed["offset"]) == (1000, 0) and listed["total"] >= 3
    item = next(s for s in listed["sessions"] if s["id"] == first)
    assert set(item) == {"id", "title", "message_count", "last_activity", "is_active", "current_agent"}
    assert (item["title"], item["message_count"], item["is_active"], item["current_agent"]) == (
        None,
        0,
        True,
        "orchestrator",
    )
    page_one = (await api.http.get("/sessions", params={"limit": 1})).json()
    page_two = (await api.http.get("/sessions", params={"limit": 1, "offset": 1})).json()
    assert len(page_one["sessions"]) == len(page_two["sessions"]) == 1
    assert page_one["sessions"][0]["id"] != page_two["sessions"][0]["id"]
    assert page_one["total"] == page_two["total"] >= 3

    for params, status in (({"limit": 0}, 400), ({"limit": 1001}, 400), ({"offset": -1}, 400), ({"limit": "x"}, 422)):
        assert (await api.http.get("/sessions", params=params)).status_code == status

    detail = (await api.http.get(f"/sessions/{first}")).json()["session"]
    assert set(detail) == {
        "id",
        "title",
        "description",
        "message_count",
        "messages",
        "last_activity",
        "is_active",
        "created_at",
        "duration_seconds",
    }
    assert (detail["id"], detail["title"], detail["message_count"], detail["messages"]) == (first, None, 0, None)
    missing = await api.http.get("/sessions/no-such-session")
    assert (missing.status_code, missing.json()) == (404, {"detail": "Session no-such-session not found"})
    assert (await api.http.get("/sessions/no-such-session/history")).status_code == 404
    assert (await api.http.get("/sessions/no-such-session/pending-approvals")).status_code == 404
    # B16: the restore endpoint answers for a session without approvals too.
    assert (await api.http.get(f"/sessions/{first}/pending-approvals")).json() == {
        "session_id": first,
        "pending_approvals": [],
        "count": 0,
    }


async def test_conversation_chunks_history_and_session_views(api: Api) -> None:
    """Scenario 1 and 2 through the API: the chunks, history and session views in the original's shapes."""
    session_id = api.new_session(
        classify("ask"), call("read_file", "call_read1", "Let me look.", path="main.py"), text("It prints 1.")
    )
    events = await api.say(session_id, "explain main.py", role="user")
    assert types(events) == ["agent_switched", "assistant_message", "tool_call"]
    for event in events:
        assert_original_shape(event.data)
        assert event.data["session_id"] == session_id
    switched, preface, tool_call = chunks(events)
    assert switched["is_final"] is False and switched["content"] == "Switched to ask agent"
    assert switched["metadata"]["from_agent"] == "orchestrator" and switched["metadata"]["to_agent"] == "ask"
    assert (preface["content"], preface["token"], preface["is_final"]) == ("Let me look.", "Let me look.", False)
    assert final(events) == tool_call
    assert (tool_call["call_id"], tool_call["tool_name"], tool_call["arguments"]) == (
        "call_read1",
        "read_file",
        {"path": "main.py"},
    )
    assert (tool_call["requires_approval"], tool_call["approval_request_id"]) == (False, None)
    # Offsets are the event ids, and they keep counting across requests.
    assert [e.id for e in events] == [0, 1, 2]

    answer = await api.result(session_id, "call_read1", result="print(1)")
    assert [e.id for e in answer] == [3]
    assert (final(answer)["type"], final(answer)["content"], final(answer)["token"]) == (
        "assistant_message",
        "It prints 1.",
        "It prints 1.",
    )

    history = (await api.http.get(f"/sessions/{session_id}/history")).json()
    assert set(history) == {
        "session_id",
        "messages",
        "message_count",
        "last_activity",
        "current_agent",
        "agent_history",
    }
    assert (history["session_id"], history["message_count"], history["current_agent"]) == (session_id, 4, "ask")
    user, assistant, tool, reply = history["messages"]
    assert user == {"role": "user", "content": "explain main.py"}
    assert assistant == {
        "role": "assistant",
        "content": "Let me look.",
        "tool_calls": [
            {
                "id": "call_read1",
                "type": "function",
                "function": {"name": "read_file", "arguments": '{"path": "main.py"}'},
            }
        ],
    }
    assert (tool["role"], tool["tool_call_id"], tool["content"]) == ("tool", "call_read1", "print(1)")
    assert reply == {"role": "assistant", "content": "It prints 1."}
    [routing] = history["agent_history"]
    assert (routing["from_agent"], routing["to_agent"], routing["confidence"]) == ("orchestrator", "ask", "high")
    await api.history(session_id)  # provider-valid

    detail = (await api.http.get(f"/sessions/{session_id}", params={"include_messages": "true"})).json()["session"]
    assert (detail["title"], detail["message_count"], detail["is_active"]) == ("explain main.py", 4, True)
    assert [m["role"] for m in detail["messages"]] == ["user", "assistant", "tool", "assistant"]
    assert set(detail["messages"][0]) == {"id", "role", "content", "name", "tool_call_id", "tool_calls", "created_at"}
    assert detail["duration_seconds"] >= 0
    listed = await api.until_listed({session_id})
    item = next(s for s in listed["sessions"] if s["id"] == session_id)
    assert (item["title"], item["message_count"], item["current_agent"]) == ("explain main.py", 4, "ask")


async def test_session_is_created_when_the_request_has_no_id(api: Api) -> None:
    events = await api.post(None, {"type": "user_message", "content": "what is a closure?"})
    info = events[0].data
    assert (info["type"], info["is_final"], events[0].id) == ("session_info", False, None)
    session_id = info["session_id"]
    assert uuid.UUID(session_id)
    assert {e.data["session_id"] for e in events} == {session_id}
    assert final(events)["type"] == "assistant_message"
    assert (await api.http.get(f"/sessions/{session_id}")).status_code == 200


# --- malformed input: clear 400/422, never 500 ---


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        ({"session_id": "s", "message": {"type": "telepathy"}}, 400, "Unsupported message type: telepathy"),
        ({"session_id": "s", "message": {"content": "no type"}}, 400, "Unsupported message type: None"),
        ({"session_id": "s", "message": {"type": "plan_decision"}}, 400, "approval_request_id and decision are"),
        (
            {"session_id": "s", "message": {"type": "plan_decision", "approval_request_id": "a", "decision": "ok"}},
            400,
            "Invalid plan_decision message: decision",
        ),
        ({"session_id": "s", "message": {"type": "tool_result", "result": 1}}, 400, "call_id is required"),
        ({"session_id": "s", "message": {"type": "hitl_decision", "call_id": "c"}}, 400, "decision are required"),
        (
            {"session_id": "s", "message": {"type": "hitl_decision", "call_id": "c", "decision": "maybe"}},
            400,
            "Invalid hitl_decision message: decision",
        ),
        (
            {"session_id": "s", "message": {"type": "hitl_decision", "call_id": "c", "decision": "edit"}},
            400,
            "needs modified_arguments",
        ),
        ({"session_id": "s", "message": {"type": "switch_agent", "content": "x"}}, 400, "agent_type is required"),
        (
            {"session_id": "s", "message": {"type": "switch_agent", "agent_type": "wizard"}},
            400,
            "Invalid switch_agent message: agent_type",
        ),
        ({"session_id": "s", "message": {"type": "user_message", "content": 5}}, 400, "content"),
        ({"message": {"type": "tool_result", "call_id": "c"}}, 400, "session_id is required for tool_result"),
        ({"session_id": "s"}, 422, "message"),
        ({"session_id": "s", "message": "hello"}, 422, "message"),
        ({"session_id": "", "message": {"type": "user_message", "content": "x"}}, 422, "session_id"),
        ([1, 2], 422, ""),
    ],
)
async def test_malformed_stream_requests(api: Api, body: Any, status: int, detail: str) -> None:
    response = await api.http.post("/agent/message/stream", json=body)
    assert response.status_code == status, response.text
    assert detail in str(response.json()["detail"])


async def test_invalid_json_and_bad_resume_headers(api: Api) -> None:
    response = await api.http.post(
        "/agent/message/stream", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422
    body = {"session_id": "s", "message": {"type": "user_message", "content": "x"}}
    response = await api.http.post("/agent/message/stream", json=body, headers={"Last-Event-ID": "soon"})
    assert response.status_code == 400 and "Last-Event-ID" in response.json()["detail"]
    assert (await api.http.get("/agent/stream/no-such-session", params={"from_offset": 0})).status_code == 404
    assert (await api.http.get("/agent/stream/x", params={"from_offset": -1})).status_code == 422


# --- /events ---


async def test_metrics_from_the_workflow_counters(api: Api) -> None:
    session_id = api.new_session(classify("coder"), call("write_file", "call_m1", path="a.py", content="1"))
    await api.say(session_id, "write a.py")
    await api.decide(session_id, "call_m1", "reject", feedback="no")

    per_session = (await api.http.get(f"/events/metrics/session/{session_id}")).json()
    original_keys = {
        "session_id",
        "total_requests",
        "successful_requests",
        "failed_requests",
        "total_duration_ms",
        "average_duration_ms",
        "total_prompt_tokens",
        "total_completion_tokens",
        "total_tokens",
        "average_tokens_per_request",
        "requests_with_tools",
        "requests",
    }
    assert original_keys <= set(per_session)
    # classification + the call + the answer after the rejection
    assert (per_session["total_requests"], per_session["successful_requests"], per_session["failed_requests"]) == (
        3,
        3,
        0,
    )
    assert per_session["requests_with_tools"] == 1
    assert per_session["approvals"] == {"reject": 1} and per_session["tool_calls"] == {"rejected": 1}
    assert per_session["total_tokens"] > 0 and per_session["agent_switches"] == 1

    missing = await api.http.get("/events/metrics/session/no-such-session")
    assert (missing.status_code, missing.json()) == (404, {"error": "No metrics found for session no-such-session"})

    await api.until_listed({session_id})
    overall = (await api.http.get("/events/metrics")).json()
    assert set(overall) == {"metrics", "computed", "timestamp"}
    metrics = overall["metrics"]
    assert metrics["sessions_scanned"] >= 1 and metrics["truncated"] is False
    assert metrics["llm"]["requests"] >= 3 and metrics["approvals"]["reject"] >= 1
    assert metrics["agent_switches"]["orchestrator_to_coder"] >= 1
    assert 0 <= overall["computed"]["llm_success_rate"] <= 1
    sessions = (await api.http.get("/events/metrics/sessions")).json()
    assert session_id in sessions["sessions"] and sessions["count"] == len(sessions["sessions"])


async def test_token_deltas_only_for_clients_that_ask(dev_server: DevServer, fake_llm: FakeLlmServer) -> None:
    """With streaming on, an unmodified gateway still gets exactly the original chunk types; `?tokens=true` adds the
    live `assistant_delta` chunks before the stored answer."""
    options = support.ApiOptions(stream_timeout_seconds=20, query_timeout_seconds=5)
    async with support.running_api(dev_server, fake_llm, options, llm_streaming=True) as api:
        answer = "Python is a programming language that reads like prose."
        plain = api.new_session(classify("ask"), text(answer))
        events = await api.say(plain, "what is python?")
        assert types(events) == ["agent_switched", "assistant_message"]
        assert final(events)["content"] == answer

        live = api.new_session(classify("ask"), text(answer))
        body = {"session_id": live, "message": {"type": "user_message", "content": "what is python?"}}
        async with api.http.stream("POST", "/agent/message/stream?tokens=true", json=body) as response:
            streamed = await support.read_sse(response)
        kinds = types(streamed)
        assert kinds[0] == "agent_switched" and kinds[-1] == "assistant_message" and "assistant_delta" in kinds
        deltas = [e.data for e in streamed if e.data["type"] == "assistant_delta"]
        assert "".join(d["token"] for d in deltas) == answer
        assert all(d["metadata"]["attempt"] == 1 for d in deltas)
        ids = [e.id for e in streamed]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)


async def test_cancel_turn_through_the_stream(api: Api) -> None:
    session_id = api.new_session(classify("coder"), call("execute_command", "call_k1", command="make"))
    assert final(await api.say(session_id, "build it"))["requires_approval"] is True
    events = await api.post(session_id, {"type": "cancel_turn", "reason": "wrong branch"})
    done = final(events)
    assert (done["type"], done["content"], done["metadata"]["reason"]) == (
        "status",
        "The turn was cancelled",
        "wrong branch",
    )
    assert await api.pending(session_id) == []
    await api.history(session_id)
    idle = final(await api.post(session_id, {"type": "cancel_turn"}))
    assert idle["type"] == "status" and idle["metadata"] == {"accepted": False}


# --- sessions that never wedge, over the wire ---


async def test_a_large_tool_result_over_http_is_kept_whole(api: Api) -> None:
    """A 3 MB file read through the HTTP API: stored by reference, returned whole by /history."""
    content = ("0123456789abcdef" * 64 + "\n") * 3_000
    session_id = api.new_session(classify("coder"), call("read_file", "call_big", path="big.txt"), text("Read it."))
    assert final(await api.say(session_id, "read big.txt"))["call_id"] == "call_big"
    assert final(await api.result(session_id, "call_big", result=content))["content"] == "Read it."
    [tool] = [m for m in await api.history(session_id) if m.role == "tool"]
    assert tool.content == content


async def test_a_binary_tool_result_over_http_is_delivered(api: Api) -> None:
    """A binary file read as text by the IDE carries lone surrogates in its JSON ("\\ud800"): the result is delivered
    with U+FFFD in their place (it failed as an internal error and left the call open), and the model's own lone
    surrogates are replaced the same way."""
    binary = "PNG\x00\x1a" + json.loads('"\\ud800\\udfff\\udc00|\\ud83d"')
    session_id = api.new_session(
        classify("coder"), call("read_file", "call_bin", path="logo.png"), text("A picture" + binary[-1])
    )
    assert final(await api.say(session_id, "read logo.png"))["call_id"] == "call_bin"
    answer = final(await api.result(session_id, "call_bin", result=binary))
    assert answer["type"] == "assistant_message" and answer["content"] == "A picture\ufffd"
    [tool] = [m for m in await api.history(session_id) if m.role == "tool"]
    assert tool.content == "PNG\x00\x1a\U000103ff\ufffd|\ufffd"
    api.llm.script(session_id, [text("still here")])
    assert final(await api.say(session_id, "and now?"))["content"] == "still here"


async def test_a_closed_session_is_refused_clearly_unless_a_new_one_is_asked_for(api: Api) -> None:
    session_id = api.new_session(classify("ask"), text("first"))
    final(await api.say(session_id, "hello"))
    await api.conversations.handle(session_id).terminate("operator")
    refused = final(await api.say(session_id, "are you there?"))
    assert refused["type"] == "error" and refused["metadata"]["code"] == "session_closed"
    assert f"session {session_id} is closed (terminated" in refused["content"]
    response = await api.http.post("/sessions", json={"session_id": session_id})
    assert response.status_code == 409
    api.llm.script(session_id, [classify("ask"), text("fresh start")])
    assert final(await api.say(session_id, "again", new_session=True))["content"] == "fresh start"
