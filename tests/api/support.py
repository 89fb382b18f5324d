"""Fixtures and helpers shared by the tests/test_api_*.py modules (this module has no tests of its own).

The API is exercised over real HTTP: a Temporal dev server (real visibility, for the list endpoints), the product's
worker, the fake LLM over HTTP, and the app served by uvicorn on a free port, driven with httpx and websockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from temporalio.client import Client

from api import ApiOptions, create_app
from client.conversation_client import ConversationClient
from devstack.embedded_server import EmbeddedServer
from devstack.fake_llm import FakeLlmServer, FakeReply
from devstack.temporal import DevServer, start_dev_server
from settings import Settings, TemporalSettings
from tests.support import assert_provider_valid
from worker import running_worker
from workflows.model import (
    ChatMessage,
    ToolCall,
)

KEY = "test-internal-key"
AUTH = {"X-Internal-Auth": KEY}

# The chunk fields of the original runtime (spec §4.1), master and [later]; all are sent, nulls included.
ORIGINAL_CHUNK_FIELDS = {
    "type": str,
    "content": (str, type(None)),
    "token": (str, type(None)),
    "is_final": bool,
    "call_id": (str, type(None)),
    "tool_name": (str, type(None)),
    "arguments": (dict, type(None)),
    "requires_approval": (bool, type(None)),
    "error": (str, type(None)),
    "metadata": (dict, type(None)),
    "session_id": (str, type(None)),
    "approval_request_id": (str, type(None)),
}


# Its own server, not conftest's session one: the API sessions park approvals with search attributes set, and
# tests/test_web_ui_visibility.py asserts its stuck-approval filter matches only its own session on the shared server.
@pytest.fixture(scope="module")
async def dev_server() -> AsyncIterator[DevServer]:
    server = await start_dev_server(ui=False)
    try:
        yield server
    finally:
        await server.shutdown()


@dataclass
class SseEvent:
    id: int | None
    data: dict[str, Any]


@dataclass
class Api:
    """The running API and what a test needs around it."""

    server: EmbeddedServer
    http: httpx.AsyncClient
    llm: FakeLlmServer
    temporal: Client
    settings: Settings
    conversations: ConversationClient = field(init=False)

    def __post_init__(self) -> None:
        self.conversations = ConversationClient(
            self.temporal, task_queue=self.settings.temporal.task_queue, config=self.settings.conversation_config()
        )

    def new_session(self, *replies: FakeReply) -> str:
        session_id = f"api-{uuid.uuid4().hex[:12]}"
        if replies:
            self.llm.script(session_id, list(replies))
        return session_id

    async def post(self, session_id: str | None, message: Any, headers: dict[str, str] | None = None) -> list[SseEvent]:
        """POST /agent/message/stream and read the whole SSE response (asserting its framing)."""
        body: dict[str, Any] = {"message": message}
        if session_id is not None:
            body["session_id"] = session_id
        # ASCII-escaped JSON, as JavaScript's JSON.stringify writes it (a lone surrogate goes out as "\ud800").
        headers = {"content-type": "application/json", **(headers or {})}
        content = json.dumps(body)
        async with self.http.stream("POST", "/agent/message/stream", content=content, headers=headers) as response:
            await _expect_sse(response)
            return await read_sse(response)

    async def say(self, session_id: str, content: str, **fields: Any) -> list[SseEvent]:
        return await self.post(session_id, {"type": "user_message", "content": content, **fields})

    async def decide(self, session_id: str, call_id: str, decision: str, **fields: Any) -> list[SseEvent]:
        return await self.post(
            session_id, {"type": "hitl_decision", "call_id": call_id, "decision": decision, **fields}
        )

    async def result(self, session_id: str, call_id: str, **fields: Any) -> list[SseEvent]:
        return await self.post(session_id, {"type": "tool_result", "call_id": call_id, **fields})

    async def resume(self, session_id: str, **params: Any) -> list[SseEvent]:
        headers = {}
        if "last_event_id" in params:
            headers["Last-Event-ID"] = str(params.pop("last_event_id"))
        async with self.http.stream("GET", f"/agent/stream/{session_id}", params=params, headers=headers) as response:
            await _expect_sse(response)
            return await read_sse(response)

    async def history(self, session_id: str, *, open_tail: set[str] | None = None) -> list[ChatMessage]:
        """The history as `/sessions/{id}/history` returns it, turned back into messages and checked for validity."""
        response = await self.http.get(f"/sessions/{session_id}/history")
        assert response.status_code == 200, response.text
        messages = [to_chat_message(m) for m in response.json()["messages"]]
        assert_provider_valid(messages, open_tail=open_tail)
        return messages

    async def pending(self, session_id: str) -> list[dict[str, Any]]:
        response = await self.http.get(f"/sessions/{session_id}/pending-approvals")
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["count"] == len(body["pending_approvals"])
        return list(body["pending_approvals"])

    async def until_listed(self, session_ids: set[str], **params: Any) -> dict[str, Any]:
        """GET /sessions until visibility lists every id (it is eventually consistent)."""
        body: dict[str, Any] = {}
        for _ in range(50):
            body = (await self.http.get("/sessions", params={"limit": 1000, **params})).json()
            if session_ids <= {s["id"] for s in body["sessions"]}:
                return body
            await asyncio.sleep(0.1)
        raise AssertionError(f"visibility never listed {session_ids}: {body}")


async def _expect_sse(response: httpx.Response) -> None:
    if response.status_code != 200:
        await response.aread()
        raise AssertionError(f"{response.status_code}: {response.text}")
    assert response.headers["content-type"].startswith("text/event-stream")


async def read_sse(response: httpx.Response) -> list[SseEvent]:
    """Parse an SSE body strictly: `id:`/`data:` fields and comments only, one JSON object per event."""
    events: list[SseEvent] = []
    event_id: int | None = None
    data: list[str] = []
    async for line in response.aiter_lines():
        if line == "":
            if data:
                events.append(SseEvent(event_id, json.loads("\n".join(data))))
            event_id, data = None, []
        elif line.startswith(":"):
            continue
        elif line.startswith("id: "):
            event_id = int(line[4:])
        elif line.startswith("data: "):
            data.append(line[6:])
        else:
            raise AssertionError(f"unexpected SSE line {line!r}")
    assert not data, "the stream ended inside an event"
    return events


def chunks(events: list[SseEvent]) -> list[dict[str, Any]]:
    return [e.data for e in events]


def types(events: list[SseEvent]) -> list[str]:
    return [e.data["type"] for e in events]


def final(events: list[SseEvent]) -> dict[str, Any]:
    """The last chunk, after checking it is the only final one (the stream ends right after it)."""
    assert events, "empty stream"
    assert events[-1].data["is_final"] is True, types(events)
    assert all(e.data["is_final"] is False for e in events[:-1]), types(events)
    return events[-1].data


def assert_original_shape(chunk: dict[str, Any]) -> None:
    """Every field of the original chunk is present (nulls included) with its JSON type."""
    for name, kind in ORIGINAL_CHUNK_FIELDS.items():
        assert name in chunk, f"chunk lacks {name!r}: {chunk}"
        assert isinstance(chunk[name], kind), f"{name}={chunk[name]!r} in {chunk}"


def to_chat_message(message: dict[str, Any]) -> ChatMessage:
    """A `/history` message (OpenAI shape, arguments as JSON text) as the contract type."""
    calls = [
        ToolCall(id=c["id"], name=c["function"]["name"], arguments=json.loads(c["function"]["arguments"]))
        for c in message.get("tool_calls") or []
    ]
    return ChatMessage(
        role=message["role"],
        content=message["content"],
        tool_calls=calls,
        tool_call_id=message.get("tool_call_id"),
        name=message.get("name"),
    )


@contextlib.asynccontextmanager
async def running_api(
    dev_server: DevServer, fake_llm: FakeLlmServer, options: ApiOptions, **overrides: Any
) -> AsyncIterator[Api]:
    """A worker and the API on a fresh task queue of the dev server, with auth on and, unless overridden, the
    original chunk set (no token deltas)."""
    settings = Settings(
        llm_proxy_url=fake_llm.base_url,
        temporal=TemporalSettings(address=dev_server.target, task_queue=f"api-{uuid.uuid4().hex[:8]}"),
        internal_api_key=SecretStr(KEY),
        llm_max_attempts=overrides.pop("llm_max_attempts", 2),
        llm_streaming=overrides.pop("llm_streaming", False),
        **overrides,
    )
    async with running_worker(dev_server.client, settings):
        app = create_app(settings, temporal_client=dev_server.client, options=options)
        async with EmbeddedServer(app) as server:
            async with httpx.AsyncClient(base_url=server.base_url, headers=AUTH, timeout=30, trust_env=False) as http:
                yield Api(server, http, fake_llm, dev_server.client, settings)


@pytest.fixture(scope="module")
async def api(dev_server: DevServer, fake_llm: FakeLlmServer) -> AsyncIterator[Api]:
    async with running_api(
        dev_server, fake_llm, ApiOptions(stream_timeout_seconds=20, query_timeout_seconds=5)
    ) as running:
        yield running
