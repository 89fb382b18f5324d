"""The PostgreSQL projection on a real embedded PostgreSQL: what a conversation leaves in the database.

After every scenario the projection must equal the workflow's own view exactly: the same messages in the same
order with nothing missing and nothing twice, every approval with its trail, every tool call with its outcome, the
agent switches, the LLM requests with their tokens, the events. Writes are idempotent (a replayed batch changes
nothing) and only move forward (an old record replayed after a newer one loses). PostgreSQL going away in the
middle of a conversation does not stop it, and the projection catches up when it is back.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import asyncpg
import pytest
from temporalio import activity

import worker
from activities.persistence import (
    PROJECTION_TABLES,
    PROJECTION_UNAVAILABLE_ERROR,
    QUARANTINE_TABLE,
    PersistenceActivities,
)
from activities.postgres import apply_migrations, create_pool, load_migrations
from client.projection_reader import ProjectionReader
from devstack.fake_llm import FakeReply
from devstack.postgres import EmbeddedPostgres
from tests.conftest import RuntimeFactory
from tests.projection.support import (
    Transcript,
    assert_projection_equals_workflow,
    table_contents,
)
from tests.support import Session, call, classify, final, text, types
from workflows.model import (
    RECORD_PROJECTION_ACTIVITY,
    AgentSwitchRecord,
    AgentType,
    ApprovalStatus,
    ChatMessage,
    ChunkType,
    Decision,
    PendingApproval,
    PlanDecision,
    PlanDecisionKind,
    SessionCounters,
    SessionStatus,
    StreamChunk,
    TokenUsage,
    ToolCall,
)
from workflows.records import (
    AgentSwitchRow,
    ApprovalRecord,
    EventRecord,
    LlmRequestRecord,
    MessageRecord,
    ProjectionBatch,
    ProjectionWriteResult,
    SessionRecord,
    ToolCallRecord,
)

STALL_SECONDS = 20.0


class RecordingWriter(PersistenceActivities):
    """The product's writer, keeping every batch it wrote (to replay them)."""

    batches: ClassVar[list[ProjectionBatch]] = []

    @activity.defn(name=RECORD_PROJECTION_ACTIVITY)
    async def record(self, batch: ProjectionBatch) -> ProjectionWriteResult:
        result = await super().record(batch)
        RecordingWriter.batches.append(batch)
        return result


@pytest.fixture
def recorded_batches(monkeypatch: pytest.MonkeyPatch) -> list[ProjectionBatch]:
    RecordingWriter.batches = []
    monkeypatch.setattr(worker, "PersistenceActivities", RecordingWriter)
    return RecordingWriter.batches


@pytest.fixture
def reader(projection_pool: asyncpg.Pool) -> ProjectionReader:
    return ProjectionReader(projection_pool)


@pytest.fixture
async def projected_session(
    runtime_with: RuntimeFactory, postgres: EmbeddedPostgres, fake_llm: Any
) -> AsyncIterator[Session]:
    """A conversation on a worker that writes the projection to the test database."""
    async with runtime_with(database_url=postgres.dsn) as client:
        yield Session(client, fake_llm)


# --- helpers ---


def _approval_script() -> list[FakeReply]:
    return [
        FakeReply(content='{"agent": "coder", "confidence": "high", "reasoning": "test"}', usage={"prompt_tokens": 40}),
        FakeReply(
            content="I'll run the analyzer.",
            tool_calls=[{"id": "call_run1", "name": "execute_command", "arguments": {"command": "dart analyze"}}],
            usage={"prompt_tokens": 110, "completion_tokens": 24},
        ),
        FakeReply(content="dart analyze found no issues.", usage={"prompt_tokens": 94, "completion_tokens": 25}),
    ]


# --- the scenarios ---


async def test_an_approval_conversation_is_projected_exactly(
    recorded_batches: list[ProjectionBatch],
    projected_session: Session,
    reader: ProjectionReader,
    projection_pool: asyncpg.Pool,
) -> None:
    session = projected_session
    transcript = Transcript(session)
    session.script(*_approval_script())
    assert types(await transcript.say("run dart analyze")) == ["agent_switched", "assistant_message", "tool_call"]

    # I7 (bug B4): by the time the tool_call reached the client, the call was in the database.
    [user, assistant] = await reader.history(session.id)
    assert (user.content, assistant.tool_calls[0].id) == ("run dart analyze", "call_run1")
    [pending] = await reader.pending_approvals(session.id)
    assert (pending.call_id, pending.status) == ("call_run1", ApprovalStatus.PENDING)
    assert [pending] == [a for a in await reader.pending_approvals() if a.session_id == session.id]
    [open_call] = await reader.tool_calls(session.id)
    assert (open_call.call_id, open_call.outcome) == ("call_run1", None)

    edited = {"command": "dart analyze --fatal-infos"}
    await session.decide("call_run1", "edit", modified_arguments=edited, feedback="be strict")
    assert final(await transcript.events()).arguments == edited
    await session.result("call_run1", {"exit_code": 0, "stdout": "No issues found!"})
    assert final(await transcript.events()).content == "dart analyze found no issues."

    await assert_projection_equals_workflow(reader, transcript)
    [approval] = await reader.approvals(session.id)
    assert (approval.status, approval.decision, approval.edited_arguments, approval.feedback) == (
        ApprovalStatus.APPROVED,
        Decision.EDIT,
        edited,
        "be strict",
    )
    [closed] = await reader.tool_calls(session.id)
    assert (closed.outcome, closed.arguments) == ("completed", edited)
    original = await projection_pool.fetchval(
        "SELECT original_arguments FROM tool_calls WHERE session_id = $1", session.id
    )
    assert original == {"command": "dart analyze"}
    tokens = [
        (r.purpose, r.usage.prompt_tokens, r.usage.completion_tokens) for r in await reader.llm_requests(session.id)
    ]
    assert tokens == [("classification", 40, 0), ("agent", 110, 24), ("agent", 94, 25)]
    metrics = await reader.metrics(session.id)
    assert (metrics.llm_requests, metrics.tokens.prompt_tokens, metrics.tool_calls) == (3, 244, {"completed": 1})
    assert (metrics.approvals, metrics.approval_decisions) == ({"approved": 1}, {"edit": 1})
    assert metrics.agent_switches == {"orchestrator_to_coder": 1}

    # Replaying everything the workflow wrote, twice, changes nothing at all.
    assert recorded_batches
    before = await table_contents(projection_pool, session.id)
    replayer = PersistenceActivities(projection_pool)
    for _ in range(2):
        for batch in recorded_batches:
            await replayer.record(batch)
    assert await table_contents(projection_pool, session.id) == before


async def test_a_conversation_goes_on_while_postgres_is_down_and_the_projection_catches_up(
    projected_session: Session, reader: ProjectionReader, postgres: EmbeddedPostgres
) -> None:
    session = projected_session
    transcript = Transcript(session)
    session.script(classify("coder"), call("write_file", "call_w1", path="main.py", content="print(1)"))
    assert types(await transcript.say("create main.py")) == ["agent_switched", "tool_call"]
    assert len(await reader.history(session.id)) == 2

    await postgres.stop()
    try:
        # Every step still answers: the decision, the IDE's result, a whole new turn.
        async with asyncio.timeout(STALL_SECONDS):
            await _converse_while_down(session, transcript)
    except TimeoutError:
        pytest.fail(
            "the conversation stalled while PostgreSQL was down: the workflow waits for a drained projection, "
            "and its flusher must treat every failure of the write as 'down' (a local activity's failure arrives "
            "as ApplicationError, not ActivityError)"
        )
    finally:
        await postgres.start()

    # No time is skipped: the write in flight waits for the database itself and lands about a second after it is
    # back (tests/test_projection_outbox.py measures it).
    await assert_projection_equals_workflow(reader, transcript)


async def _converse_while_down(session: Session, transcript: Transcript) -> None:
    await session.decide("call_w1", "approve")
    assert final(await transcript.events()).requires_approval is False
    session.script(text("Created main.py."))
    await session.result("call_w1", {"written": True})
    assert final(await transcript.events()).content == "Created main.py."
    session.script(text("It prints 1."))
    assert final(await transcript.say("what does it print?")).content == "It prints 1."
    assert [m.role for m in await session.history()] == ["user", "assistant", "tool", "assistant", "user", "assistant"]


async def test_writes_are_idempotent_and_only_move_forward(projection_pool: asyncpg.Pool) -> None:
    """Direct batches: a retried batch changes nothing; an older record replayed after a newer one loses."""
    session_id = f"direct-{time.monotonic_ns()}"
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    at = [t0 + timedelta(seconds=i) for i in range(10)]
    call = ToolCall(id="call_1", name="write_file", arguments={"path": "a.txt"})
    edited_call = call.model_copy(update={"arguments": {"path": "b.txt"}})
    assistant = ChatMessage(
        role="assistant", tool_calls=[call], message_id="m2", agent=AgentType.CODER, created_at=at[1]
    )
    approval = PendingApproval(
        request_id="call_1",
        session_id=session_id,
        call_id="call_1",
        tool_name="write_file",
        subject="write_file",
        arguments=call.arguments,
        reason="Writing a file requires user approval",
        agent=AgentType.CODER,
        created_at=at[1],
    )
    approved = approval.model_copy(
        update={
            "status": ApprovalStatus.APPROVED,
            "decided_at": at[2],
            "decided_by": "hitl_decision",
            "decision": Decision.EDIT,
            "edited_arguments": edited_call.arguments,
        }
    )

    def summary(when: datetime, status: SessionStatus, count: int) -> SessionRecord:
        return SessionRecord(
            session_id=session_id,
            title="write a",
            current_agent=AgentType.CODER,
            status=status,
            message_count=count,
            created_at=t0,
            last_activity=when,
            counters=SessionCounters(llm_requests=count),
        )

    def open_call(arguments: ToolCall) -> ToolCallRecord:
        return ToolCallRecord(
            session_id=session_id,
            call_id="call_1",
            tool_name="write_file",
            arguments=arguments.arguments,
            agent=AgentType.CODER,
            requested_at=at[1],
        )

    first = ProjectionBatch(
        records=[
            MessageRecord(
                session_id=session_id,
                seq=0,
                message=ChatMessage(role="user", content="write a", message_id="m1", created_at=t0),
            ),
            MessageRecord(session_id=session_id, seq=1, message=assistant),
            AgentSwitchRow(
                session_id=session_id,
                seq=0,
                switch=AgentSwitchRecord(
                    from_agent=AgentType.ORCHESTRATOR, to_agent=AgentType.CODER, reason="code", switched_at=t0
                ),
            ),
            LlmRequestRecord(
                session_id=session_id,
                request_id="r1",
                purpose="agent",
                agent=AgentType.CODER,
                model="m",
                ok=True,
                usage=TokenUsage(prompt_tokens=5, completion_tokens=2, total_tokens=7),
                created_at=at[1],
            ),
            ApprovalRecord(approval=approval),
            open_call(call),
            EventRecord(
                session_id=session_id,
                event_id="e1",
                chunk=StreamChunk(type=ChunkType.TOOL_CALL, call_id="call_1", is_final=True),
                created_at=at[1],
            ),
            summary(at[1], SessionStatus.AWAITING_APPROVAL, 2),
        ]
    )
    second = ProjectionBatch(
        records=[
            ApprovalRecord(approval=approved),
            MessageRecord(
                session_id=session_id,
                seq=1,
                message=assistant.model_copy(update={"tool_calls": [edited_call]}),
            ),
            open_call(edited_call),
            ToolCallRecord(
                **open_call(edited_call).model_dump(exclude={"outcome", "result", "closed_at"}),
                outcome="completed",
                result="ok",
                closed_at=at[3],
            ),
            MessageRecord(
                session_id=session_id,
                seq=2,
                message=ChatMessage(
                    role="tool",
                    content="ok",
                    tool_call_id="call_1",
                    name="write_file",
                    message_id="m3",
                    created_at=at[3],
                ),
            ),
            summary(at[3], SessionStatus.IDLE, 3),
        ]
    )
    writer = PersistenceActivities(projection_pool)
    reader = ProjectionReader(projection_pool)
    await writer.record(first)
    await writer.record(second)
    settled = await table_contents(projection_pool, session_id)

    await writer.record(second)  # a retried batch
    await writer.record(first)  # an old batch after a newer one: nothing goes backwards
    await writer.record(second)
    assert await table_contents(projection_pool, session_id) == settled

    assert [m.message_id for m in await reader.history(session_id)] == ["m1", "m2", "m3"]
    assert (await reader.history(session_id))[1].tool_calls == [edited_call]
    [current] = await reader.approvals(session_id)
    assert current == approved
    assert [a.status for a in await reader.approval_trail(session_id, "call_1")] == ["pending", "approved"]
    assert await reader.pending_approvals(session_id) == []
    [closed] = await reader.tool_calls(session_id)
    assert (closed.outcome, closed.arguments, closed.result) == ("completed", {"path": "b.txt"}, "ok")
    row = await reader.get_session(session_id)
    assert row is not None and (row.status, row.message_count, row.last_activity) == (SessionStatus.IDLE, 3, at[3])
    counts = {table: len(rows) for table, rows in settled.items()}
    assert counts == {
        "sessions": 1,
        "messages": 3,
        "tool_calls": 1,
        "approvals": 1,
        "approval_events": 2,
        "agent_switches": 1,
        "llm_requests": 1,
        "plans": 0,
        "events": 1,
    }
    page = await reader.list_sessions(limit=1000)
    assert session_id in {s.session_id for s in page.sessions} and page.total >= 1


async def test_a_write_to_a_database_that_is_down_is_a_retryable_projection_unavailable(tmp_path: Any) -> None:
    dsn = f"postgresql://postgres@/postgres?host={tmp_path}&port=5432"  # no server there
    pool = await create_pool(dsn)
    writer = PersistenceActivities(pool, dsn=dsn)
    try:
        assert await writer.prepare() is False  # the worker starts anyway
        with pytest.raises(Exception) as raised:
            await writer.record(ProjectionBatch(records=[]))
        assert getattr(raised.value, "type", None) == PROJECTION_UNAVAILABLE_ERROR
        assert getattr(raised.value, "non_retryable", True) is False
    finally:
        await pool.close()


async def test_migrations_are_versioned_and_idempotent(postgres: EmbeddedPostgres) -> None:
    database = f"migrations_{time.monotonic_ns()}"
    admin = await asyncpg.connect(postgres.dsn)
    try:
        await admin.execute(f"CREATE DATABASE {database}")
    finally:
        await admin.close()
    dsn = postgres.dsn.replace("/postgres?", f"/{database}?")
    # Two runners at once (two workers starting): one applies, the other waits on the lock and finds nothing to do.
    first, second = await asyncio.gather(apply_migrations(dsn), apply_migrations(dsn))
    shipped = load_migrations()
    assert sorted([len(first), len(second)]) == [0, len(shipped)]
    assert await apply_migrations(dsn) == []
    conn = await asyncpg.connect(dsn)
    try:
        versions = [r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")]
        tables = {
            r["table_name"]
            for r in await conn.fetch("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")
        }
    finally:
        await conn.close()
    assert versions == [m.version for m in shipped] and versions[:2] == [1, 2]
    assert set(PROJECTION_TABLES) | {"schema_migrations", QUARANTINE_TABLE} <= tables


async def test_a_plan_and_its_subtasks_are_projected(projected_session: Session, reader: ProjectionReader) -> None:
    """Issue 7: the plan, its approval and every subtask's outcome reach PostgreSQL as the workflow sees them."""
    session = projected_session
    subtasks = [
        {"title": "Write", "description": "write it", "agent": "coder", "estimated_time_minutes": 3},
        {
            "title": "Explain",
            "description": "explain it",
            "agent": "ask",
            "estimated_time_minutes": 1,
            "dependencies": [0],
        },
    ]
    plan_call = FakeReply(
        tool_calls=[
            {
                "id": "call_plan",
                "name": "create_plan",
                "arguments": {"title": "Small plan", "description": "two steps", "subtasks": subtasks},
            }
        ]
    )
    session.script(classify("architect"), plan_call)
    required = final(await session.say("plan it"))
    assert required.approval_request_id is not None
    session.script(call("attempt_completion", "call_done", result="written"), text("It is explained."))
    await session.client.decide_plan(
        session.id, PlanDecision(approval_request_id=required.approval_request_id, decision=PlanDecisionKind.APPROVE)
    )
    assert final(await session.events()).type.value == "execution_completed"

    state = await session.client.state(session.id)
    for _ in range(50):  # the flusher writes shortly after the final event
        if await reader.plans(session.id) == state.plans:
            break
        await asyncio.sleep(0.1)
    assert await reader.plans(session.id) == state.plans
    [plan] = await reader.plans(session.id)
    assert plan.status == "completed" and [s.result for s in plan.subtasks] == ["written", "It is explained."]
    [approval] = await reader.approvals(session.id)
    assert (approval.request_type, approval.status, approval.request_id) == (
        "plan",
        ApprovalStatus.APPROVED,
        required.approval_request_id,
    )
    assert [m.role for m in await reader.history(session.id)] == [m.role for m in await session.history()]
