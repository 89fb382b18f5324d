"""Human approval through the API: the §10 scenarios driven over `POST /agent/message/stream` (SSE) and the IDE
WebSocket, with resumable streams. History is read back through `/sessions/{id}/history` and checked for provider
validity; approval records are read from the workflow."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from devstack.fake_llm import FakeReply
from tests.api import support
from tests.api.support import AUTH, KEY, Api, SseEvent, assert_original_shape, final, types
from tests.support import call, classify, text, tool_messages_for

dev_server = support.dev_server
api = support.api

WRITE_ARGS = {"path": "main.py", "content": "print(1)"}


async def _park_write(api: Api, call_id: str, *later: Any) -> str:
    """A session routed to the coder whose write_file call waits for approval."""
    session_id = api.new_session(classify("coder"), call("write_file", call_id, **WRITE_ARGS), *later)
    events = await api.say(session_id, "create main.py")
    assert types(events) == ["agent_switched", "tool_call"]
    tool_call = final(events)
    assert_original_shape(tool_call)
    assert (tool_call["call_id"], tool_call["tool_name"], tool_call["arguments"]) == (call_id, "write_file", WRITE_ARGS)
    assert (tool_call["requires_approval"], tool_call["approval_request_id"]) == (True, call_id)
    return session_id


def _status(events: list[SseEvent]) -> dict[str, Any]:
    assert types(events) == ["status"], types(events)
    chunk = final(events)
    assert_original_shape(chunk)
    assert events[0].id is None  # the API's own chunk has no stream offset
    return chunk


def _error(events: list[SseEvent], code: str) -> dict[str, Any]:
    assert types(events) == ["error"], types(events)
    chunk = final(events)
    assert_original_shape(chunk)
    assert chunk["metadata"] == {"code": code} and chunk["error"] == chunk["content"]
    return chunk


async def test_approve_path(api: Api) -> None:
    """Scenario 3: pending and listed -> approve -> execute -> result -> answer; exactly one tool message."""
    session_id = await _park_write(api, "call_ap1", text("Created main.py."))
    [pending] = await api.pending(session_id)
    assert set(pending) == {
        "request_id",
        "request_type",
        "subject",
        "details",
        "reason",
        "created_at",
        "call_id",
        "tool_name",
        "arguments",
    }
    assert (pending["request_id"], pending["call_id"], pending["request_type"]) == ("call_ap1", "call_ap1", "tool")
    assert (pending["subject"], pending["tool_name"]) == ("write_file", "write_file")
    assert pending["details"] == {"arguments": WRITE_ARGS} and pending["arguments"] == WRITE_ARGS
    assert pending["reason"] and pending["created_at"]

    execute = await api.decide(session_id, "call_ap1", "approve")
    assert types(execute) == ["tool_call"]
    assert (final(execute)["requires_approval"], final(execute)["arguments"]) == (False, WRITE_ARGS)
    assert await api.pending(session_id) == []

    answer = await api.result(session_id, "call_ap1", result={"written": True})
    assert (final(answer)["type"], final(answer)["content"]) == ("assistant_message", "Created main.py.")
    history = await api.history(session_id)
    assert [m.role for m in history] == ["user", "assistant", "tool", "assistant"]
    assert [m.content for m in tool_messages_for(history, "call_ap1")] == ['{"written": true}']
    [approval] = await api.conversations.approvals(session_id)
    assert (approval.status, approval.decision, approval.decided_by) == ("approved", "approve", "hitl_decision")


async def test_edit_path(api: Api) -> None:
    """Scenario 4: the IDE is told to run the edited arguments; history and the approval record show them."""
    session_id = await _park_write(api, "call_ed1", text("Done."))
    edited = {"path": "main.py", "content": "print(2)"}
    execute = await api.decide(session_id, "call_ed1", "edit", modified_arguments=edited, feedback="use 2")
    assert final(execute)["arguments"] == edited and final(execute)["requires_approval"] is False
    assert types(await api.result(session_id, "call_ed1", result="ok")) == ["assistant_message"]
    history = await api.history(session_id)
    assert history[1].tool_calls[0].arguments == edited
    [approval] = await api.conversations.approvals(session_id)
    assert (approval.arguments, approval.edited_arguments) == (WRITE_ARGS, edited)
    assert (approval.decision, approval.status, approval.feedback) == ("edit", "approved", "use 2")


@pytest.mark.parametrize(
    ("feedback", "expected"), [("Use a temp dir", "Use a temp dir"), (None, "User rejected this operation")]
)
async def test_reject_path(api: Api, feedback: str | None, expected: str) -> None:
    """Scenarios 5 and 6: no execution, one tool message with the feedback (or the default), the LLM reacts."""
    session_id = await _park_write(api, "call_rj1", text("Understood."))
    fields = {"feedback": feedback} if feedback else {}
    events = await api.decide(session_id, "call_rj1", "reject", **fields)
    assert types(events) == ["tool_result", "assistant_message"]
    closed = events[0].data
    assert (closed["call_id"], closed["tool_name"], closed["is_final"]) == ("call_rj1", "write_file", False)
    assert final(events)["content"] == "Understood."
    history = await api.history(session_id)
    [tool_message] = tool_messages_for(history, "call_rj1")
    assert json.loads(tool_message.content or "")["feedback"] == expected
    [approval] = await api.conversations.approvals(session_id)
    assert (approval.status, approval.feedback) == ("rejected", feedback)


async def test_duplicate_decisions_and_results(api: Api) -> None:
    """Scenarios 7 and 8: repeats are acknowledged with a final `status` chunk and change nothing; a contradicting
    decision is refused with an `error` chunk."""
    session_id = await _park_write(api, "call_dup1", text("Written."))
    assert types(await api.decide(session_id, "call_dup1", "approve")) == ["tool_call"]
    repeat = _status(await api.decide(session_id, "call_dup1", "approve"))
    assert repeat["metadata"] == {"duplicate": True} and "Already processed" in (repeat["content"] or "")
    refused = _error(await api.decide(session_id, "call_dup1", "reject", feedback="late"), "approval_already_resolved")
    assert "already" in (refused["content"] or "")
    requests_before = len(api.llm.requests(session_id))

    assert types(await api.result(session_id, "call_dup1", result="ok")) == ["assistant_message"]
    again = _status(await api.result(session_id, "call_dup1", result="ok"))
    assert again["metadata"] == {"duplicate": True}
    history = await api.history(session_id)
    assert len(tool_messages_for(history, "call_dup1")) == 1
    assert len(api.llm.requests(session_id)) == requests_before + 1
    [approval] = await api.conversations.approvals(session_id)
    assert approval.status == "approved"


async def test_unknown_and_foreign_call_ids_are_refused(api: Api) -> None:
    """Scenarios 9 and 10: an unknown id, or one owned by another session, is an error and changes nothing."""
    owner = await _park_write(api, "call_own1")
    other = await _park_write(api, "call_oth1")
    before = await api.history(other, open_tail={"call_oth1"})

    _error(await api.decide(other, "call_own1", "approve"), "unknown_call_id")
    _error(await api.result(other, "call_own1", result="x"), "unknown_call_id")
    _error(await api.decide(owner, "call_nope", "reject"), "unknown_call_id")
    _error(await api.result("no-such-session", "call_own1", result="x"), "unknown_session")

    assert await api.history(other, open_tail={"call_oth1"}) == before
    assert [p["call_id"] for p in await api.pending(owner)] == ["call_own1"]
    assert [p["call_id"] for p in await api.pending(other)] == ["call_oth1"]
    [approval] = await api.conversations.approvals(owner)
    assert approval.status == "pending"


async def test_message_while_a_call_waits_is_queued(api: Api) -> None:
    """Scenario 18 through the API: the stream ends at once with a `status` chunk (the gateway's 60 s read timeout,
    bug B11); the message runs after the call closes and can be followed with GET /agent/stream."""
    session_id = await _park_write(api, "call_q1", text("Written."), text("Second answer."))
    queued = _status(await api.say(session_id, "also add a README"))
    assert queued["metadata"]["queued"] is True and queued["metadata"]["resume_from"] == 2
    await api.decide(session_id, "call_q1", "approve")
    answer = await api.result(session_id, "call_q1", result="ok")
    assert final(answer)["content"] == "Written."
    assert answer[-1].id is not None
    later = await api.resume(session_id, from_offset=answer[-1].id + 1)
    assert (final(later)["type"], final(later)["content"]) == ("assistant_message", "Second answer.")
    history = await api.history(session_id)
    assert [m.content for m in history if m.role == "user"] == ["create main.py", "also add a README"]


async def test_the_stream_says_at_once_that_the_input_was_delivered(api: Api) -> None:
    """Once the session has the input, a comment line says so; the approval's re-emitted call follows, straight from
    the update's answer, with its stream offset as the event id."""
    session_id = await _park_write(api, "call_dl1")
    approve = {"type": "hitl_decision", "call_id": "call_dl1", "decision": "approve"}
    body = {"session_id": session_id, "message": approve}
    async with api.http.stream("POST", "/agent/message/stream", json=body) as response:
        lines = [line async for line in response.aiter_lines()]
    assert lines[:2] == [": delivered", ""]
    assert lines[2] == "id: 2" and json.loads(lines[3].removeprefix("data: "))["type"] == "tool_call"
    assert [e.id for e in await api.resume(session_id, from_offset=2)] == [2]  # the same event, on the stream


async def test_resume_sends_what_was_missed_and_nothing_twice(api: Api) -> None:
    session_id = await _park_write(api, "call_rs1", text("Not writing it."))
    parked = await api.resume(session_id, from_offset=0)
    assert [e.id for e in parked] == [0, 1] and types(parked) == ["agent_switched", "tool_call"]
    assert [e.id for e in await api.resume(session_id, last_event_id=0)] == [1]

    # The stream drops after the first event of the rejection's answer.
    body = {
        "session_id": session_id,
        "message": {"type": "hitl_decision", "call_id": "call_rs1", "decision": "reject", "feedback": "no"},
    }
    first: SseEvent | None = None
    async with api.http.stream("POST", "/agent/message/stream", json=body) as response:
        event_id, data = None, None
        async for line in response.aiter_lines():
            if line.startswith("id: "):
                event_id = int(line[4:])
            elif line.startswith("data: "):
                data = json.loads(line[6:])
            elif line == "" and data is not None:
                first = SseEvent(event_id, data)
                break
    assert first is not None and first.id == 2 and first.data["type"] == "tool_result"

    rest = await api.resume(session_id, last_event_id=first.id)
    assert [e.id for e in rest] == [3] and types(rest) == ["assistant_message"]
    assert final(rest)["content"] == "Not writing it."
    # POST with Last-Event-ID (a reconnecting gateway) relays the same events and does not deliver the input again.
    requests = len(api.llm.requests(session_id))
    replay = await api.post(session_id, body["message"], headers={"Last-Event-ID": str(first.id)})
    assert [(e.id, e.data) for e in replay] == [(e.id, e.data) for e in rest]
    assert len(api.llm.requests(session_id)) == requests
    history = await api.history(session_id)
    assert len(tool_messages_for(history, "call_rs1")) == 1


async def test_plan_approval_over_sse(api: Api) -> None:
    """Scenario 22/23 at the API edge: `plan_approval_required`, the plan listed for restore in the original's shape,
    `plan_decision` by approval_request_id; a repeat is acknowledged, an unknown id refused."""
    subtasks = [
        {"title": "Write cache", "description": "Add cache.py", "agent": "coder", "estimated_time_minutes": 10},
        {
            "title": "Explain",
            "description": "Summarize",
            "agent": "ask",
            "estimated_time_minutes": 2,
            "dependencies": [0],
        },
    ]
    plan = {"title": "Add a cache", "description": "An LRU cache for the fetcher", "subtasks": subtasks}
    session_id = api.new_session(
        classify("architect"), FakeReply(tool_calls=[{"id": "call_plan1", "name": "create_plan", "arguments": plan}])
    )
    events = await api.say(session_id, "plan a cache")
    assert types(events) == ["agent_switched", "plan_approval_required"]
    required = final(events)
    assert_original_shape(required)
    request_id = required["approval_request_id"]
    assert request_id == f"plan-approval-{required['plan_id']}"
    assert required["plan_summary"]["subtasks_count"] == 2

    [pending] = await api.pending(session_id)
    assert (pending["request_type"], pending["request_id"], pending["call_id"]) == ("plan", request_id, request_id)
    assert (pending["subject"], pending["tool_name"], pending["arguments"]) == ("Add a cache", None, {})
    details = pending["details"]
    assert (details["plan_id"], details["goal"], details["subtasks_count"], details["total_estimated_time"]) == (
        required["plan_id"],
        "Add a cache",
        2,
        12,
    )
    assert [s["title"] for s in details["subtasks"]] == ["Write cache", "Explain"]

    _error(
        await api.post(session_id, {"type": "plan_decision", "approval_request_id": "nope", "decision": "approve"}),
        "unknown_call_id",
    )
    decision = {"type": "plan_decision", "approval_request_id": request_id, "decision": "reject", "feedback": "Too big"}
    rejected = await api.post(session_id, decision)
    assert types(rejected) == ["plan_rejected"] and final(rejected)["metadata"] == {"feedback": "Too big"}
    assert _status(await api.post(session_id, decision))["metadata"] == {"duplicate": True}
    assert await api.pending(session_id) == []
    await api.history(session_id)
    response = await api.http.post(
        "/agent/message/stream",
        json={"session_id": session_id, "message": {"type": "plan_decision", "decision": "approve"}},
    )
    assert (response.status_code, response.json()["detail"]) == (
        400,
        "approval_request_id and decision are required for plan_decision message",
    )


# --- the IDE WebSocket (§4.2) ---


async def _ws_until_final(socket: ClientConnection) -> list[dict[str, Any]]:
    received: list[dict[str, Any]] = []
    while True:
        chunk = json.loads(await asyncio.wait_for(socket.recv(), 20))
        assert None not in chunk.values(), f"null fields are removed: {chunk}"
        received.append(chunk)
        if chunk.get("is_final") or (chunk["type"] == "error" and "is_final" not in chunk):
            return received


async def _ws_send(socket: ClientConnection, message: Any) -> list[dict[str, Any]]:
    await socket.send(message if isinstance(message, str) else json.dumps(message))
    return await _ws_until_final(socket)


async def test_websocket_core_flow(api: Api) -> None:
    """message -> approval -> approve -> tool_result -> answer, over the IDE socket; bad frames keep it open."""
    session_id = api.new_session(
        classify("coder"), call("write_file", "call_ws1", **WRITE_ARGS), text("Created it over the socket.")
    )
    url = f"{api.server.ws_url}/ws/{session_id}"
    async with connect(url, additional_headers=AUTH, proxy=None) as socket:
        assert await _ws_send(socket, "{not json") == [{"type": "error", "content": "Invalid JSON"}]
        [unknown] = await _ws_send(socket, {"type": "telepathy"})
        assert unknown == {"type": "error", "content": "Unsupported message type: telepathy"}

        parked = await _ws_send(socket, {"type": "user_message", "content": "create main.py", "role": "user"})
        assert [c["type"] for c in parked] == ["agent_switched", "tool_call"]
        tool_call = parked[-1]
        assert tool_call == {
            "type": "tool_call",
            "is_final": True,
            "call_id": "call_ws1",
            "tool_name": "write_file",
            "arguments": WRITE_ARGS,
            "requires_approval": True,
            "metadata": tool_call["metadata"],
            "session_id": session_id,
            "approval_request_id": "call_ws1",
        }
        execute = await _ws_send(socket, {"type": "hitl_decision", "call_id": "call_ws1", "decision": "approve"})
        assert [(c["type"], c["requires_approval"]) for c in execute] == [("tool_call", False)]
        answer = await _ws_send(socket, {"type": "tool_result", "call_id": "call_ws1", "result": "written"})
        assert [(c["type"], c["content"]) for c in answer] == [("assistant_message", "Created it over the socket.")]
        refused = await _ws_send(socket, {"type": "tool_result", "call_id": "call_nope", "result": "x"})
        assert [(c["type"], c["metadata"]) for c in refused] == [("error", {"code": "unknown_call_id"})]
        switched = await _ws_send(socket, {"type": "switch_agent", "agent_type": "ask", "content": "/ask"})
        assert [(c["type"], c["content"]) for c in switched] == [("agent_switched", "Switched to ask agent")]

    history = await api.history(session_id)
    assert [m.role for m in history] == ["user", "assistant", "tool", "assistant"]
    [approval] = await api.conversations.approvals(session_id)
    assert (approval.status, approval.decision) == ("approved", "approve")


async def test_websocket_inputs_are_handled_one_at_a_time(api: Api) -> None:
    """Two messages sent back to back: the second is read only after the first one's stream ended."""
    session_id = api.new_session(classify("ask"), text("First."), text("Second."))
    async with connect(f"{api.server.ws_url}/ws/{session_id}?token={KEY}", proxy=None) as socket:
        await socket.send(json.dumps({"type": "user_message", "content": "one", "role": "user"}))
        await socket.send(json.dumps({"type": "user_message", "content": "two", "role": "user"}))
        first = await _ws_until_final(socket)
        second = await _ws_until_final(socket)
    assert [c["type"] for c in first] == ["agent_switched", "assistant_message"] and first[-1]["content"] == "First."
    assert [(c["type"], c["content"]) for c in second] == [("assistant_message", "Second.")]


async def test_websocket_needs_the_key(api: Api) -> None:
    for url, headers in (
        (f"{api.server.ws_url}/ws/s1", {}),
        (f"{api.server.ws_url}/ws/s1", {"X-Internal-Auth": "wrong"}),
        (f"{api.server.ws_url}/ws/s1?token=wrong", {}),
    ):
        with pytest.raises(InvalidStatus) as refused:
            async with connect(url, additional_headers=headers, proxy=None):
                pass
        assert refused.value.response.status_code == 403
