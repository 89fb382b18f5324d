"""Helpers of the projection tests: a transcript of what a client received, and the projection compared with it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from activities.persistence import PROJECTION_TABLES
from client.projection_reader import ProjectionReader
from tests.support import Session
from workflows.model import ApprovalStatus, StreamChunk, TokenUsage

CATCH_UP_SECONDS = 15.0


class Transcript:
    """The session's events as a client received them (live token deltas aside), to compare with `events`."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.chunks: list[StreamChunk] = []

    async def say(self, content: str) -> list[StreamChunk]:
        return self._keep(await self.session.say(content))

    async def events(self) -> list[StreamChunk]:
        return self._keep(await self.session.events())

    def _keep(self, chunks: list[StreamChunk]) -> list[StreamChunk]:
        self.chunks += chunks
        return chunks


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = CATCH_UP_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "the projection did not catch up"
        await asyncio.sleep(0.1)


async def assert_projection_equals_workflow(reader: ProjectionReader, transcript: Transcript) -> None:
    """Wait until the projection has caught up, then compare it with the workflow's queries, row for row."""
    session = transcript.session
    history = await session.history()
    state = await session.client.state(session.id)

    async def caught_up() -> bool:
        row = await reader.get_session(session.id)
        return (
            row is not None
            and row.message_count == len(history)
            and row.status == state.status
            and len(await reader.events(session.id, limit=10_000)) == len(transcript.chunks)
        )

    await eventually(caught_up)

    # Messages: the same, in the same order, nothing missing, nothing twice.
    assert await reader.history(session.id) == history

    # The session's summary row.
    row = await reader.get_session(session.id)
    assert row is not None
    assert (row.current_agent, row.status, row.counters) == (state.current_agent, state.status, state.counters)
    assert row.title == next(m.content for m in history if m.role == "user")

    # Approvals as they are now, and each one's trail of distinct statuses.
    approvals = await session.client.approvals(session.id)
    assert await reader.approvals(session.id) == approvals
    for approval in approvals:
        trail = await reader.approval_trail(session.id, approval.request_id)
        expected = [ApprovalStatus.PENDING] + ([approval.status] if approval.status != ApprovalStatus.PENDING else [])
        assert [a.status for a in trail] == expected
        assert trail[-1] == approval

    # One tool-call row per call id of the history, closed with the text of its one tool message.
    calls = {c.id: c for m in history for c in m.tool_calls}
    results = {m.tool_call_id: m.content for m in history if m.role == "tool"}
    rows = {r.call_id: r for r in await reader.tool_calls(session.id)}
    assert rows.keys() == calls.keys()
    for call_id, tool_call in calls.items():
        assert (rows[call_id].tool_name, rows[call_id].arguments) == (tool_call.name, tool_call.arguments)
        assert rows[call_id].result == results.get(call_id)
        assert (rows[call_id].outcome is None) == (call_id not in results)

    # Agent switches, and the LLM requests with their tokens.
    assert await reader.switches(session.id) == state.switches
    requests = await reader.llm_requests(session.id)
    assert len(requests) == state.counters.llm_requests
    assert sum(not r.ok for r in requests) == state.counters.llm_failures
    assert (
        TokenUsage(
            prompt_tokens=sum(r.usage.prompt_tokens for r in requests),
            completion_tokens=sum(r.usage.completion_tokens for r in requests),
            total_tokens=sum(r.usage.total_tokens for r in requests),
        )
        == state.counters.tokens
    )

    # The audit log holds every event the client saw, in order.
    events = await reader.events(session.id, limit=10_000)
    assert [e.chunk for e in events] == [c.model_copy(update={"session_id": session.id}) for c in transcript.chunks]


async def table_contents(pool: asyncpg.Pool, session_id: str) -> dict[str, list[dict[str, Any]]]:
    """Every projection row of a session, every column, in a stable order."""
    contents = {}
    async with pool.acquire() as conn:
        for table in PROJECTION_TABLES:
            rows = await conn.fetch(f"SELECT * FROM {table} WHERE session_id = $1", session_id)
            contents[table] = sorted((dict(r) for r in rows), key=repr)
    return contents
