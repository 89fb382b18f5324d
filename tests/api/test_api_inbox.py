"""The approvals inbox over HTTP: `GET /approvals` across sessions (filters, pagination, JSON) and `POST
/approvals/{session_id}/{call_id}`, behind the internal key, on a real API, worker and dev server."""

from __future__ import annotations

import asyncio
from typing import Any

from api import ApiOptions
from devstack.fake_llm import FakeLlmServer
from devstack.temporal import DevServer
from tests.api import support
from tests.api.support import KEY, Api, assert_original_shape, final, running_api, types
from tests.support import call, classify, text

dev_server = support.dev_server
api = support.api


async def _park(api: Api, tool: str, call_id: str, **arguments: Any) -> str:
    session_id = api.new_session(classify("coder"), call(tool, call_id, **arguments))
    assert final(await api.say(session_id, f"use {tool}"))["requires_approval"] is True
    return session_id


async def _inbox(api: Api, **params: Any) -> Any:
    response = await api.http.get("/approvals", params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def _listed(api: Api, sessions: set[str], **params: Any) -> Any:
    """The inbox once visibility lists every one of `sessions` (it is eventually consistent)."""
    body: Any = {}
    for _ in range(50):
        body = await _inbox(api, **params)
        if sessions <= {item["session_id"] for item in body["approvals"]}:
            return body
        await asyncio.sleep(0.1)
    raise AssertionError(f"the inbox never listed {sessions}: {body}")


async def test_the_inbox_lists_filters_pages_and_decides(api: Api) -> None:
    write = await _park(api, "write_file", "call_iw", path="main.py", content="print(1)")
    command = await _park(api, "execute_command", "call_ic", command="dart analyze")
    idle = api.new_session(classify("ask"), text("Hello."))
    final(await api.say(idle, "hello"))

    body = await _listed(api, {write, command}, limit=500)
    mine = [item for item in body["approvals"] if item["session_id"] in {write, command, idle}]
    assert [item["call_id"] for item in mine] == ["call_iw", "call_ic"]  # oldest first
    first = mine[0]
    assert (first["tool_name"], first["agent"], first["status"], first["answered"]) == (
        "write_file",
        "coder",
        "pending",
        True,
    )
    assert first["arguments"] == {"path": "main.py", "content": "print(1)"}
    assert first["workflow_id"] == f"session-{write}" and first["age_seconds"] >= 0 and first["escalated"] is False
    assert first["commands"]["approve"] == f"agent-runtime approvals approve {write} call_iw"
    assert first["commands"]["http"] == f'POST /approvals/{write}/call_iw {{"decision": "approve"}}'
    assert body["total"] == len(body["approvals"]) == body["count"] and body["next_offset"] is None

    # Pagination over the same order.
    total = body["total"]
    page = await _inbox(api, limit=1, offset=0)
    assert (page["count"], page["total"], page["next_offset"]) == (1, total, 1 if total > 1 else None)
    following = await _inbox(api, limit=1, offset=1)
    assert following["approvals"][0]["call_id"] == body["approvals"][1]["call_id"]

    # Filters: tool, agent, age, sessions (asked directly, whatever visibility says).
    by_tool = await _inbox(api, tool="execute_command", limit=500)
    assert command in {i["session_id"] for i in by_tool["approvals"]}
    assert write not in {i["session_id"] for i in by_tool["approvals"]}
    assert not [i for i in (await _inbox(api, agent="ask"))["approvals"] if i["session_id"] in {write, command}]
    assert (await _inbox(api, older_than="15m"))["approvals"] == []
    asked = await _inbox(api, session_id=[command, write, idle])
    assert [i["call_id"] for i in asked["approvals"]] == ["call_iw", "call_ic"]
    for params, status in (
        ({"older_than": "soon"}, 400),
        ({"limit": 0}, 400),
        ({"offset": -1}, 400),
        ({"agent": "nobody"}, 422),
        ({"session_id": "no-such-session"}, 404),
    ):
        response = await api.http.get("/approvals", params=params)
        assert response.status_code == status, (params, response.text)

    # Behind the internal key, reading and deciding alike.
    for method, path in (("GET", "/approvals"), ("POST", f"/approvals/{write}/call_iw")):
        refused = await api.http.request(method, path, json={"decision": "approve"}, headers={"X-Internal-Auth": "no"})
        assert (refused.status_code, refused.json()) == (401, {"detail": "unauthorized"})
    assert KEY not in refused.text

    # A decision: answered with the events it caused (the call, re-sent to the IDE as approved).
    approved = await api.http.post(f"/approvals/{write}/call_iw", json={"decision": "approve"})
    assert approved.status_code == 200, approved.text
    decided = approved.json()
    assert (decided["session_id"], decided["call_id"], decided["decision"], decided["duplicate"]) == (
        write,
        "call_iw",
        "approve",
        False,
    )
    [reemitted] = decided["events"]
    assert (reemitted["type"], reemitted["call_id"], reemitted["requires_approval"]) == ("tool_call", "call_iw", False)
    assert isinstance(decided["resume_from"], int)
    again = await api.http.post(f"/approvals/{write}/call_iw", json={"decision": "approve"})
    assert (again.status_code, again.json()["duplicate"]) == (200, True)
    contradicting = await api.http.post(f"/approvals/{write}/call_iw", json={"decision": "reject"})
    assert contradicting.status_code == 409
    assert (await api.http.post(f"/approvals/{write}/call_nope", json={"decision": "approve"})).status_code == 404
    assert (await api.http.post("/approvals/no-such-session/call_iw", json={"decision": "approve"})).status_code == 404
    needs_arguments = await api.http.post(f"/approvals/{command}/call_ic", json={"decision": "edit"})
    assert needs_arguments.status_code == 422 and "modified_arguments" in needs_arguments.text

    # A rejection reaches the model; the session then answers on its stream.
    api.llm.script(command, [text("Understood, I will not run it.")])
    rejected = await api.http.post(
        f"/approvals/{command}/call_ic", json={"decision": "reject", "feedback": "not on a Friday"}
    )
    assert rejected.status_code == 200, rejected.text
    assert [e["type"] for e in rejected.json()["events"]][:1] == ["tool_result"]
    rest = await api.resume(command, from_offset=rejected.json()["resume_from"])
    assert types(rest)[-1] == "assistant_message"
    assert "not on a Friday" in str(api.llm.requests(command)[-1]["messages"])

    remaining = await _inbox(api, session_id=[write, command])
    assert remaining["approvals"] == [] and remaining["total"] == 0


async def test_reminders_are_relayed_in_the_original_chunk_shape_and_escalations_show_in_the_inbox(
    dev_server: DevServer, fake_llm: FakeLlmServer
) -> None:
    """Reminders are `status` chunks, not wait points: a gateway that knows nothing of them relays them like any
    status; a stream resumed after the `tool_call` carries them. Real timers of a second or two (the dev server)."""
    rule = {"pattern": "write_file", "requires_approval": True, "remind_after_seconds": 1, "escalate_after_seconds": 2}
    options = ApiOptions(stream_timeout_seconds=4, query_timeout_seconds=5, keepalive_seconds=None)
    async with running_api(dev_server, fake_llm, options, approval={"rules": [rule]}) as api:
        session_id = api.new_session(classify("coder"), call("write_file", "call_rw", path="a.py", content="x"))
        parked = await api.say(session_id, "write a.py")
        assert final(parked)["requires_approval"] is True
        resumed = await api.resume(session_id, from_offset=(parked[-1].id or 0) + 1)
        reminder, escalation, timeout = (event.data for event in resumed)
        for chunk in (reminder, escalation):
            assert_original_shape(chunk)
            assert (chunk["type"], chunk["is_final"], chunk["metadata"]["call_id"]) == ("status", False, "call_rw")
        assert (reminder["metadata"]["code"], escalation["metadata"]["code"]) == (
            "approval_reminder",
            "approval_escalation",
        )
        assert [event.id is not None for event in resumed] == [True, True, False]  # the API's own timeout chunk
        assert timeout["metadata"]["reason"] == "stream_timeout"

        [item] = (await _inbox(api, session_id=session_id))["approvals"]
        assert item["escalated"] is True and item["escalate_at"] is not None
        api.llm.script(session_id, [text("Written.")])
        decided = await api.http.post(f"/approvals/{session_id}/call_rw", json={"decision": "approve"})
        assert decided.status_code == 200 and decided.json()["events"][0]["requires_approval"] is False
