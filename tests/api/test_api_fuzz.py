"""Property-based fuzz: no input a caller can send makes the API answer 500 or break a stream or a socket.

Every operation of the app's own OpenAPI document is called with generated path segments, query strings, headers
and bodies (random JSON, random bytes, and bodies close to valid ones so the checks behind the schema are reached
too); the IDE socket gets random frames. The runs are derandomized so CI sees the same examples every time;
`FUZZ_SCALE=N` runs N times as many random ones. The module's API has a short stream bound, which the last test
uses too.
"""

from __future__ import annotations

import asyncio
import json
import os
import string
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import connect

from api import ApiOptions
from devstack.fake_llm import FakeLlmServer
from devstack.temporal import DevServer
from tests.api import support
from tests.api.support import AUTH, Api, read_sse

dev_server = support.dev_server

# FUZZ_SCALE=10 ./run test tests/test_api_fuzz.py: ten times the examples, freshly randomized (a deeper local run).
_SCALE = int(os.environ.get("FUZZ_SCALE", "0"))


def fuzz_settings(examples: int) -> settings:
    return settings(
        max_examples=examples * max(_SCALE, 1),
        deadline=None,
        derandomize=_SCALE == 0,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


@pytest.fixture(scope="module")
async def fuzz_api(dev_server: DevServer, fake_llm: FakeLlmServer) -> AsyncIterator[Api]:
    # Short stream bound and keepalives: a generated resume of a live session ends quickly and exercises both paths.
    options = ApiOptions(stream_timeout_seconds=1.5, keepalive_seconds=0.3, query_timeout_seconds=5)
    async with support.running_api(dev_server, fake_llm, options) as running:
        yield running


json_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
)
json_values = st.recursive(
    json_leaves,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)),
    max_leaves=12,
)
MESSAGE_TYPES = ["user_message", "tool_result", "hitl_decision", "switch_agent", "plan_decision", "", "USER_MESSAGE"]
AGENTS = ["orchestrator", "coder", "architect", "debug", "ask", "universal"]


def _maybe(values: list[str]) -> st.SearchStrategy[Any]:
    return st.one_of(st.sampled_from(values), json_values)


messages = st.fixed_dictionaries(
    {"type": st.one_of(st.sampled_from(MESSAGE_TYPES[:5]), st.sampled_from(MESSAGE_TYPES), json_values)},
    optional={
        "content": json_values,
        "role": json_values,
        "agent_type": _maybe(AGENTS),
        "call_id": _maybe(["call_x", ""]),
        "decision": _maybe(["approve", "edit", "reject"]),
        "modified_arguments": json_values,
        "feedback": json_values,
        "result": json_values,
        "error": json_values,
        "reason": json_values,
        "message_id": json_values,
        "approval_request_id": json_values,
    },
)
texts = st.one_of(st.text(max_size=40), st.sampled_from(["run ls", "create main.py", "explain main.py", ""]))
valid_messages = st.one_of(
    st.fixed_dictionaries(
        {"type": st.just("user_message"), "content": texts},
        optional={"agent_type": st.sampled_from(AGENTS), "role": st.just("user"), "message_id": st.text(max_size=8)},
    ),
    st.fixed_dictionaries(
        {"type": st.just("tool_result"), "call_id": st.text(min_size=1, max_size=10)},
        optional={"result": json_values, "error": json_values},
    ),
    st.fixed_dictionaries(
        {
            "type": st.just("hitl_decision"),
            "call_id": st.text(min_size=1, max_size=10),
            "decision": st.sampled_from(["approve", "edit", "reject"]),
        },
        optional={"modified_arguments": st.dictionaries(st.text(max_size=5), json_values), "feedback": texts},
    ),
    st.fixed_dictionaries(
        {"type": st.just("switch_agent"), "agent_type": st.sampled_from(AGENTS)},
        optional={"reason": texts, "content": texts},
    ),
    st.fixed_dictionaries(
        {
            "type": st.just("plan_decision"),
            "approval_request_id": st.text(min_size=1, max_size=10),
            "decision": st.sampled_from(["approve", "reject", "modify"]),
        },
        optional={"feedback": texts},
    ),
)
session_ids = st.one_of(st.text(max_size=20), st.sampled_from(["fuzz-1", "fuzz-2", "x" * 300]))
# Bodies close to valid ones, per route, so the checks behind the schema (and Temporal) are reached as well.
plain_ids = st.one_of(
    st.sampled_from(["fuzz-1", "fuzz-2"]), st.text(alphabet=string.ascii_letters + string.digits + "-_", min_size=1)
)
stream_bodies = st.one_of(
    st.fixed_dictionaries({"session_id": plain_ids, "message": messages}),
    st.fixed_dictionaries({"session_id": session_ids, "message": messages}),
    st.fixed_dictionaries(
        {}, optional={"session_id": st.one_of(session_ids, json_values), "message": st.one_of(messages, json_values)}
    ),
)
session_bodies = st.fixed_dictionaries({}, optional={"session_id": st.one_of(session_ids, json_values)})
switch_bodies = st.fixed_dictionaries(
    {}, optional={"target_agent": _maybe(AGENTS), "reason": json_values, "confidence": json_values}
)


def _near_valid(path: str) -> st.SearchStrategy[Any]:
    if path == "/agent/message/stream":
        return stream_bodies
    if path == "/sessions":
        return session_bodies
    if path.endswith("/switch"):
        return switch_bodies
    return json_values


query_values = st.one_of(
    st.integers(min_value=-(10**12), max_value=10**12).map(str),
    st.sampled_from(["true", "false", "", "1", "0", "1001", "-1"]),
    st.text(alphabet=string.printable, max_size=12),
)
queries = st.dictionaries(
    st.one_of(
        st.sampled_from(["limit", "offset", "active_only", "include_messages", "include_history", "from_offset"]),
        st.text(alphabet=string.ascii_letters, min_size=1, max_size=8),
    ),
    query_values,
    max_size=3,
)
# Values an HTTP client can send at all (h11 refuses control characters and surrounding whitespace).
header_values = st.text(alphabet=string.ascii_letters + string.digits + string.punctuation + " ", max_size=20).map(
    str.strip
)


@st.composite
def requests(draw: st.DrawFn, operations: list[tuple[str, str]]) -> dict[str, Any]:
    # The stream is where most input goes: it gets a larger share of the examples.
    method, path = draw(st.sampled_from([*operations, *[("POST", "/agent/message/stream")] * 6]))
    segment = draw(st.one_of(session_ids, st.sampled_from(["..", "%00", " ", "fuzz-1"])))
    url = path.replace("{session_id}", quote(segment, safe="") or "%20")
    headers: dict[str, str] = dict(AUTH)
    if draw(st.booleans()):
        headers["Last-Event-ID"] = draw(st.one_of(st.integers(-5, 10**6).map(str), header_values))
    body_kind = draw(st.sampled_from(["none", "json", "bytes", "near", "near", "near"]))
    content: bytes | None = None
    if body_kind == "json":
        content = json.dumps(draw(json_values)).encode()
    elif body_kind == "near":
        content = json.dumps(draw(_near_valid(path))).encode()
    elif body_kind == "bytes":
        content = draw(st.binary(max_size=64))
    if content is not None:
        headers["Content-Type"] = draw(st.sampled_from(["application/json"] * 5 + ["text/plain"]))
    return {"method": method, "url": url, "params": draw(queries), "headers": headers, "content": content}


async def _operations(api: Api) -> list[tuple[str, str]]:
    document = (await api.http.get("/openapi.json")).json()
    return [(method.upper(), path) for path, item in document["paths"].items() for method in item]


@fuzz_settings(150)
@given(data=st.data())
async def test_no_route_answers_500(fuzz_api: Api, data: st.DataObject) -> None:
    operations = await _operations(fuzz_api)
    request = data.draw(requests(operations))
    async with httpx.AsyncClient(base_url=fuzz_api.server.base_url, timeout=30, trust_env=False) as http:
        async with http.stream(**request) as response:
            if response.headers.get("content-type", "").startswith("text/event-stream"):
                events = await read_sse(response)
                assert events and events[-1].data["is_final"] is True, request
                assert all(e.data["is_final"] is False for e in events[:-1]), request
            else:
                await response.aread()
    event(f"{request['method']} {response.status_code}")
    assert response.status_code < 500, (request, response.status_code, response.text)
    if response.status_code >= 400 and response.status_code != 404:
        assert "detail" in response.json(), response.text


@fuzz_settings(60)
@given(session_id=st.sampled_from(["fuzz-1", "fuzz-2", "fuzz-3"]), message=st.one_of(valid_messages, messages))
async def test_any_message_ends_at_a_final_chunk_or_is_a_400(fuzz_api: Api, session_id: str, message: Any) -> None:
    """Inputs that reach the workflow (a few sessions, so they pile up state: parked calls, queued messages):
    the stream always ends at exactly one final chunk, and a refusal is a typed `error` chunk."""
    body = {"session_id": session_id, "message": message}
    async with fuzz_api.http.stream("POST", "/agent/message/stream", json=body) as response:
        if response.status_code != 200:
            await response.aread()
            assert response.status_code == 400, response.text
            event("400")
            return
        events = await read_sse(response)
    assert events and events[-1].data["is_final"] is True and all(not e.data["is_final"] for e in events[:-1])
    assert {e.data["session_id"] for e in events} == {session_id}
    last = events[-1].data
    event(f"200 {last['type']}")
    if last["type"] == "error" and events[-1].id is None:
        assert last["metadata"]["code"] in {
            "unknown_session",
            "unknown_call_id",
            "approval_already_resolved",
            "invalid_input",
        }, last


@fuzz_settings(40)
@given(
    frames=st.lists(
        st.one_of(
            st.text(max_size=40), valid_messages.map(json.dumps), messages.map(json.dumps), json_values.map(json.dumps)
        ),
        max_size=3,
    )
)
async def test_socket_survives_any_frame(fuzz_api: Api, frames: list[str]) -> None:
    async with connect(f"{fuzz_api.server.ws_url}/ws/fuzz-ws", additional_headers=AUTH, proxy=None) as socket:
        for frame in [*frames, json.dumps({"type": "no-such-type"})]:
            await socket.send(frame)
            while True:
                reply = json.loads(await asyncio.wait_for(socket.recv(), 10))
                assert isinstance(reply, dict) and isinstance(reply.get("type"), str)
                event(f"ws {reply['type']}")
                if reply.get("is_final") or reply["type"] == "error" and "is_final" not in reply:
                    break
        # The last frame proves the socket is still open and answering after everything before it.
        assert reply == {"type": "error", "content": "Unsupported message type: no-such-type"}


async def test_quiet_stream_keeps_alive_then_ends_with_a_resume_point(fuzz_api: Api) -> None:
    """A resumed stream with nothing to say sends SSE comments, then ends at its bound with a final `status` chunk
    naming the offset to resume from (never an open-ended wait: bug B11)."""
    created = await fuzz_api.http.post("/sessions", json={})
    session_id = created.json()["id"]
    lines: list[str] = []
    async with fuzz_api.http.stream("GET", f"/agent/stream/{session_id}") as response:
        assert response.status_code == 200
        lines = [line async for line in response.aiter_lines()]
    assert lines.count(": keepalive") >= 2
    [data] = [json.loads(line[6:]) for line in lines if line.startswith("data: ")]
    assert (data["type"], data["is_final"], data["session_id"]) == ("status", True, session_id)
    assert data["metadata"] == {"reason": "stream_timeout", "resume_from": 0}


# What JSON's "\ud800" escape with no pair decodes to: JavaScript's JSON.stringify writes it for a binary file read
# as text, and no UTF-8 encoder takes the string (hypothesis' text never holds one).
LONE_SURROGATE = json.loads('"\\ud800"')


async def test_lone_surrogates_anywhere_in_a_request_are_answered_cleanly(fuzz_api: Api) -> None:
    """In an id, a type or a result, over HTTP and the socket: answered, with U+FFFD in their place (they were a 500
    for ids and types, an internal error that left the call open for a result, and a dead socket)."""
    json_headers = {"content-type": "application/json"}
    created = await fuzz_api.http.post(
        "/sessions", content=json.dumps({"session_id": f"sur{LONE_SURROGATE}"}), headers=json_headers
    )
    assert created.status_code == 201 and created.json()["id"] == "sur\ufffd"
    wrong_type = {"session_id": "sur\ufffd", "message": {"type": f"x{LONE_SURROGATE}"}}
    response = await fuzz_api.http.post("/agent/message/stream", content=json.dumps(wrong_type), headers=json_headers)
    assert (response.status_code, response.json()) == (400, {"detail": "Unsupported message type: x\ufffd"})
    unknown_call = {
        "session_id": "sur\ufffd",
        "message": {"type": "tool_result", "call_id": f"c{LONE_SURROGATE}", "result": LONE_SURROGATE},
    }
    async with fuzz_api.http.stream(
        "POST", "/agent/message/stream", content=json.dumps(unknown_call), headers=json_headers
    ) as streamed:
        [error] = [e.data for e in await read_sse(streamed)]
    assert error["metadata"]["code"] == "unknown_call_id" and "c\ufffd" in error["content"]
    async with connect(f"{fuzz_api.server.ws_url}/ws/fuzz-sur", additional_headers=AUTH, proxy=None) as socket:
        replies = []
        for frame in (json.dumps({"type": f"x{LONE_SURROGATE}"}), json.dumps({"type": "no-such-type"})):
            await socket.send(frame)
            replies.append(json.loads(await asyncio.wait_for(socket.recv(), 10)))
        assert [reply["content"] for reply in replies] == [
            "Unsupported message type: x\ufffd",
            "Unsupported message type: no-such-type",  # the socket lives on
        ]
