"""Test helpers: a session driver over the real client, and an independent check of provider validity."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio.api.history.v1 import HistoryEvent
from temporalio.api.testservice.v1 import SleepRequest
from temporalio.testing import WorkflowEnvironment

from client.conversation_client import ConversationClient
from devstack.fake_llm import FakeLlmServer, FakeReply
from workflows.model import (
    ChatMessage,
    ChunkType,
    Decision,
    HitlDecision,
    InputReceipt,
    StreamChunk,
    ToolResult,
    UserMessage,
    workflow_id_for,
)


def assert_provider_valid(messages: list[ChatMessage], *, open_tail: set[str] | None = None) -> None:
    """The rules OpenAI enforces, written independently of workflows/history.py so it can catch its bugs.

    Every assistant message with tool calls is followed by exactly one tool message per call id, before any other
    message; no tool message answers an unknown or already answered id; no call id is reused. `open_tail` names
    the calls a parked session may still have open at the end (the LLM is not called while any is open).
    """
    seen_ids: set[str] = set()
    open_ids: list[str] = []
    for index, message in enumerate(messages):
        if message.role == "tool":
            assert message.tool_call_id in open_ids, f"#{index}: tool message for {message.tool_call_id} is not open"
            open_ids.remove(message.tool_call_id)
            continue
        assert not open_ids, f"#{index}: {message.role} message while calls {open_ids} are unanswered"
        if message.role == "assistant":
            assert message.content is not None or message.tool_calls, f"#{index}: empty assistant message"
            assert not (message.content or "").startswith("[Error]"), f"#{index}: error stored as content"
            for call in message.tool_calls:
                assert call.id not in seen_ids, f"#{index}: call id {call.id} reused"
                seen_ids.add(call.id)
                open_ids.append(call.id)
    assert set(open_ids) == (open_tail or set()), f"history ends with unanswered calls {open_ids}"


def readme_approval_rules() -> list[dict[str, Any]]:
    """The README's example of `AGENT_RUNTIME__APPROVAL__RULES`, as written there (the tests hold it to be safe)."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    row = next(line for line in readme.splitlines() if line.startswith("| `AGENT_RUNTIME__APPROVAL__RULES` |"))
    match = re.search(r"Example: `(\[.*?\])`", row)
    assert match is not None, "the README's approval rules have no example"
    rules: list[dict[str, Any]] = json.loads(match.group(1))
    return rules


async def skip_time(env: WorkflowEnvironment, duration: timedelta) -> None:
    """Move the time-skipping test server's clock on by `duration` (`env.sleep`, with a deadline of our own).

    The server skips only once the workers are idle; on a loaded machine that took longer than the RPC's default
    deadline, and `env.sleep` failed with "Timeout expired" although nothing was wrong.
    """
    request = SleepRequest()
    request.duration.FromTimedelta(duration)
    await env.client.test_service.unlock_time_skipping_with_sleep(request, timeout=timedelta(minutes=2))


def tool_messages_for(messages: list[ChatMessage], call_id: str) -> list[ChatMessage]:
    return [m for m in messages if m.role == "tool" and m.tool_call_id == call_id]


def classify(agent: str) -> FakeReply:
    """A scripted classification answer."""
    return FakeReply(content=f'{{"agent": "{agent}", "confidence": "high", "reasoning": "test"}}')


def call(name: str, call_id: str, preface: str = "", **arguments: Any) -> FakeReply:
    """A scripted reply with one tool call."""
    return FakeReply(content=preface, tool_calls=[{"id": call_id, "name": name, "arguments": arguments}])


def text(content: str) -> FakeReply:
    return FakeReply(content=content)


@dataclass
class Session:
    """One conversation driven the way a gateway drives it: inputs through updates, output from the stream."""

    client: ConversationClient
    llm: FakeLlmServer
    id: str = field(default_factory=lambda: f"test-{uuid.uuid4().hex[:12]}")
    offset: int = 0
    deltas: list[StreamChunk] = field(default_factory=list)

    def script(self, *replies: FakeReply) -> None:
        self.llm.script(self.id, list(replies))

    def llm_requests(self) -> list[dict[str, Any]]:
        return self.llm.requests(self.id)

    async def say(self, content: str, **fields: Any) -> list[StreamChunk]:
        """Send a user message and return the events up to the next wait point."""
        await self.client.send_user_message(self.id, UserMessage(content=content, **fields))
        return await self.events()

    async def events(self) -> list[StreamChunk]:
        """Events up to the next wait point; live token deltas are set aside in `deltas`."""
        received = await self.client.until_wait_point(self.id, self.offset)
        self.offset = received[-1].offset + 1
        chunks = [e.chunk for e in received]
        self.deltas += [c for c in chunks if c.type is ChunkType.ASSISTANT_DELTA]
        return [c for c in chunks if c.type is not ChunkType.ASSISTANT_DELTA]

    async def next_events(self, count: int, timeout: float = 60.0) -> list[StreamChunk]:
        """The next `count` events, wait point or not (a reminder is not one, so `events` would wait past it)."""
        received: list[StreamChunk] = []

        async def read() -> None:
            async with contextlib.aclosing(self.client.events(self.id, self.offset)) as events:
                async for event in events:
                    received.append(event.chunk)
                    self.offset = event.offset + 1
                    if len(received) == count:
                        return

        await asyncio.wait_for(read(), timeout)
        return received

    async def result(self, call_id: str, result: Any = None, error: str | None = None) -> InputReceipt:
        return await self.client.send_tool_result(self.id, ToolResult(call_id=call_id, result=result, error=error))

    async def decide(self, call_id: str, decision: str, **fields: Any) -> InputReceipt:
        return await self.client.decide(self.id, HitlDecision(call_id=call_id, decision=Decision(decision), **fields))

    async def history(self) -> list[ChatMessage]:
        messages = await self.client.history(self.id)
        outstanding = {c.call_id for c in (await self.client.state(self.id)).outstanding_calls}
        assert_provider_valid(messages, open_tail=outstanding)
        return messages


def types(chunks: list[StreamChunk]) -> list[str]:
    return [c.type.value for c in chunks]


def final(chunks: list[StreamChunk]) -> StreamChunk:
    assert chunks and chunks[-1].is_final, f"stream did not end at a wait point: {types(chunks)}"
    assert all(not c.is_final for c in chunks[:-1]), f"more than one final chunk: {types(chunks)}"
    return chunks[-1]


async def runs(client: ConversationClient, session_id: str) -> AsyncIterator[list[HistoryEvent]]:
    """The history events of each run of the session's continue-as-new chain, the newest run first."""
    run_id: str | None = None
    while True:
        run = client.temporal.get_workflow_handle(workflow_id_for(session_id), run_id=run_id)
        events = [event async for event in run.fetch_history_events()]
        yield events
        run_id = events[0].workflow_execution_started_event_attributes.continued_execution_run_id
        if not run_id:
            return


async def largest_event(client: ConversationClient, session_id: str) -> int:
    """The largest event (payloads included) in any run of the session's continue-as-new chain."""
    return max([event.ByteSize() async for events in runs(client, session_id) for event in events])
