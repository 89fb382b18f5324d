"""The projection's writer (`PersistenceActivities.record`) on the embedded PostgreSQL, called directly with crafted
batches: what it does with values PostgreSQL cannot store, with records PostgreSQL refuses, and with a database
that is away for a while.

- NUL (refused by `text` and `jsonb`) and lone surrogates (not UTF-8) are made storable everywhere, JSON keys and
  nested values included, and an over-long text value is cut with a visible marker: the batch is written;
- a record PostgreSQL still refuses (a CHECK constraint, a number out of a column's range) is quarantined with its
  error and the rest of the batch is written; a resent batch quarantines nothing twice; a record that cannot even be
  quarantined is logged and counted, never raised (so never retried);
- a write that may wait for the database lands about a second after PostgreSQL is back.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from activities.persistence import (
    DATABASE_RETRY_SECONDS,
    MAX_TEXT_BYTES,
    NUL_ESCAPE,
    PROJECTION_UNAVAILABLE_ERROR,
    PersistenceActivities,
)
from activities.postgres import create_pool
from client.projection_reader import ProjectionReader
from devstack.postgres import EmbeddedPostgres
from tests.projection.support import table_contents
from workflows.model import (
    AgentType,
    ChatMessage,
    ChunkType,
    ContentRef,
    StreamChunk,
    TokenUsage,
)
from workflows.records import (
    EventRecord,
    LlmRequestRecord,
    MessageRecord,
    ProjectionBatch,
    ProjectionWriteResult,
    ToolCallRecord,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
# What JSON's "\ud800" decodes to in Python: a lone surrogate, which no UTF-8 encoder accepts.
LONE_SURROGATE = json.loads('"\\ud800"')
# A character outside the BMP split into its two surrogates (what some decoders hand over).
SPLIT_PAIR = "\ud83d\ude00"
# Back after this long at most (generous: a busy 2-core machine); the measured figure is printed.
BACK_BOUND_SECONDS = 10.0


def report(label: str, seconds: float) -> None:
    print(f"[projection] {label}: {seconds:.3f} s")


def new_session_id() -> str:
    return f"writer-{time.monotonic_ns()}"


def message(session_id: str, seq: int, content: str, role: str = "user") -> MessageRecord:
    return MessageRecord(
        session_id=session_id,
        seq=seq,
        message=ChatMessage(role=role, content=content, message_id=f"m{seq}", created_at=T0),  # type: ignore[arg-type]
    )


def tool_call(session_id: str, call_id: str, arguments: dict[str, object], result: str | None = None) -> ToolCallRecord:
    return ToolCallRecord(
        session_id=session_id,
        call_id=call_id,
        tool_name="write_file",
        arguments=arguments,
        agent=AgentType.CODER,
        requested_at=T0,
        outcome="completed" if result is not None else None,
        result=result,
        closed_at=T0 + timedelta(seconds=1) if result is not None else None,
    )


async def test_nul_and_lone_surrogates_are_escaped_and_an_over_long_text_is_cut(projection_pool: asyncpg.Pool) -> None:
    session_id = new_session_id()
    writer = PersistenceActivities(projection_pool)
    reader = ProjectionReader(projection_pool)
    long_text = "é" * (MAX_TEXT_BYTES // 2 + 10)  # two UTF-8 bytes each: just over the limit
    batch = ProjectionBatch(
        records=[
            message(session_id, 0, f"nul\x00 lone{LONE_SURROGATE} pair{SPLIT_PAIR}"),
            tool_call(
                session_id,
                "call\x00_1",
                {
                    "path\x00": f"a\x00b{LONE_SURROGATE}",
                    "nested": [{"deep": ["\x00", LONE_SURROGATE]}],
                    "ratio": float("nan"),
                },
                result=f"out\x00put{LONE_SURROGATE}",
            ),
            message(session_id, 1, long_text, role="tool"),
            EventRecord(
                session_id=session_id,
                event_id="e1",
                chunk=StreamChunk(type=ChunkType.ASSISTANT_MESSAGE, content=f"said\x00{LONE_SURROGATE}", is_final=True),
                created_at=T0,
            ),
        ]
    )

    assert await writer.record(batch) == ProjectionWriteResult(written=4, quarantined=0, truncated=1)

    [first, second] = await reader.history(session_id)
    assert first.content == f"nul{NUL_ESCAPE} lone\ufffd pair\U0001f600"
    assert NUL_ESCAPE == "\\u0000"  # visible: a backslash, "u" and four zeros
    assert second.content is not None and second.content.startswith("é" * 1000)
    assert len(second.content.encode()) <= MAX_TEXT_BYTES
    assert second.content.endswith(f"[truncated by agent-runtime: {len(long_text.encode())} bytes in all]")
    [call] = await reader.tool_calls(session_id)
    assert call.call_id == f"call{NUL_ESCAPE}_1"
    assert call.arguments == {
        f"path{NUL_ESCAPE}": f"a{NUL_ESCAPE}b\ufffd",
        "nested": [{"deep": [NUL_ESCAPE, "\ufffd"]}],
        "ratio": "NaN",
    }
    assert call.result == f"out{NUL_ESCAPE}put\ufffd"
    [event] = await reader.events(session_id)
    assert event.chunk.content == f"said{NUL_ESCAPE}\ufffd"

    # Sanitizing is deterministic, so a resent batch is the same write: nothing changes.
    before = await table_contents(projection_pool, session_id)
    assert await writer.record(batch) == ProjectionWriteResult(written=4, quarantined=0, truncated=1)
    assert await table_contents(projection_pool, session_id) == before


async def test_content_stored_by_reference_is_written_as_its_preview_and_a_note(projection_pool: asyncpg.Pool) -> None:
    """The projection does not resolve references: a text column holds the preview and names size and digest."""
    session_id = new_session_id()
    ref = ContentRef(driver="test", claim={"key": "k"}, sha256="ab" * 32, size=50_000, preview="first line\x00")
    batch = ProjectionBatch(
        records=[
            MessageRecord(
                session_id=session_id,
                seq=0,
                message=ChatMessage(role="tool", content=ref, tool_call_id="call_1", message_id="m0", created_at=T0),
            ),
            tool_call(session_id, "call_1", {"path": "big.txt"}, result=None).model_copy(
                update={"outcome": "completed", "result": ref, "closed_at": T0}
            ),
        ]
    )
    writer = PersistenceActivities(projection_pool)
    assert await writer.record(batch) == ProjectionWriteResult(written=2)
    note = f"first line{NUL_ESCAPE}…[stored by reference: 50000 characters, sha256 {'ab' * 32}]"
    reader = ProjectionReader(projection_pool)
    assert [m.content for m in await reader.history(session_id)] == [note]
    assert [c.result for c in await reader.tool_calls(session_id)] == [note]


async def test_a_record_postgres_refuses_is_quarantined_and_the_rest_is_written(
    projection_pool: asyncpg.Pool, caplog: pytest.LogCaptureFixture
) -> None:
    session_id = new_session_id()
    writer = PersistenceActivities(projection_pool)
    reader = ProjectionReader(projection_pool)
    # Refused by the server: the messages table's CHECK on role (the model would not allow it; a peer might).
    bad_role = MessageRecord.model_construct(
        session_id=session_id, seq=1, message=ChatMessage.model_construct(role="robot", content="beep", message_id="m1")
    )
    # Refused by the driver: the column is an integer (asyncpg's DataError, which is also an InterfaceError).
    bad_tokens = LlmRequestRecord(
        session_id=session_id,
        request_id="r1",
        purpose="agent",
        agent=AgentType.CODER,
        model="m",
        ok=True,
        usage=TokenUsage(prompt_tokens=2**40, completion_tokens=1, total_tokens=2**40 + 1),
        created_at=T0,
    )
    batch = ProjectionBatch(
        records=[
            message(session_id, 0, "before"),
            bad_role,
            bad_tokens,
            tool_call(session_id, "call_1", {"path": "a.txt"}, result="ok"),
        ]
    )

    with caplog.at_level(logging.WARNING, logger="agent_runtime.persistence"):
        assert await writer.record(batch) == ProjectionWriteResult(written=2, quarantined=2)
    assert [m.content for m in await reader.history(session_id)] == ["before"]
    assert [c.call_id for c in await reader.tool_calls(session_id)] == ["call_1"]
    quarantined = {q.kind: q for q in await reader.quarantined(session_id)}
    assert quarantined.keys() == {"message", "llm_request"}
    assert quarantined["message"].record_key == "1:m1"
    assert "CheckViolationError" in quarantined["message"].error
    assert quarantined["message"].record["message"]["role"] == "robot"
    assert quarantined["llm_request"].record_key == "r1"
    assert "int32" in quarantined["llm_request"].error
    assert quarantined["llm_request"].record["usage"]["prompt_tokens"] == 2**40
    logged = [r.getMessage() for r in caplog.records if "quarantined" in r.getMessage()]
    assert len(logged) == 2 and all(session_id in line for line in logged), logged

    # A resent batch (an activity retry) quarantines nothing twice; later records are written as usual.
    assert await writer.record(batch) == ProjectionWriteResult(written=2, quarantined=2)
    assert len(await reader.quarantined(session_id)) == 2
    later = ProjectionBatch(records=[message(session_id, 2, "after")])
    assert await writer.record(later) == ProjectionWriteResult(written=1)
    assert [m.content for m in await reader.history(session_id)] == ["before", "after"]


async def test_a_record_that_cannot_even_be_quarantined_is_logged_and_counted_not_raised(
    projection_pool: asyncpg.Pool, caplog: pytest.LogCaptureFixture
) -> None:
    """A session id too large for any btree index: refused by `messages` and by the quarantine table alike."""
    session_id = new_session_id()
    huge_id = secrets.token_urlsafe(75_000)  # ~100,000 random characters: no compression brings it under 2704 bytes
    writer = PersistenceActivities(projection_pool)
    batch = ProjectionBatch(records=[message(huge_id, 0, "lost"), message(session_id, 0, "kept")])
    with caplog.at_level(logging.WARNING, logger="agent_runtime.persistence"):
        assert await writer.record(batch) == ProjectionWriteResult(written=1, quarantined=1)
    assert [m.content for m in await ProjectionReader(projection_pool).history(session_id)] == ["kept"]
    stored = await projection_pool.fetchval(
        "SELECT count(*) FROM projection_quarantine WHERE length(session_id) > 50000"
    )
    assert stored == 0
    assert any("Projection record dropped" in r.getMessage() for r in caplog.records)


async def test_a_write_that_may_wait_lands_about_a_second_after_postgres_is_back(
    postgres: EmbeddedPostgres, projection_pool: asyncpg.Pool
) -> None:
    session_id = new_session_id()
    pool = await create_pool(postgres.dsn)  # the worker's own pool, with connections from before the stop
    writer = PersistenceActivities(pool, dsn=postgres.dsn)
    try:
        assert await writer.record(ProjectionBatch(records=[message(session_id, 0, "before")])) == (
            ProjectionWriteResult(written=1)
        )
        await postgres.stop()
        try:
            batch = ProjectionBatch(records=[message(session_id, 1, "during")], wait_for_database_seconds=60)
            write = asyncio.create_task(writer.record(batch))
            await asyncio.sleep(3 * DATABASE_RETRY_SECONDS)  # the database stays away for a few of its retries
            assert not write.done()
        finally:
            await postgres.start()
        back = time.monotonic()
        result = await asyncio.wait_for(write, BACK_BOUND_SECONDS)
        report("direct write: PostgreSQL started -> batch written", time.monotonic() - back)
        assert result == ProjectionWriteResult(written=1)
        history = await ProjectionReader(projection_pool).history(session_id)
        assert [m.content for m in history] == ["before", "during"]
    finally:
        await pool.close()


async def test_a_write_that_may_wait_gives_up_at_its_deadline(tmp_path: Path) -> None:
    dsn = f"postgresql://postgres@/postgres?host={tmp_path}&port=5432"  # no server there
    pool = await create_pool(dsn)
    writer = PersistenceActivities(pool, dsn=dsn)
    try:
        started = time.monotonic()
        with pytest.raises(Exception) as raised:
            await writer.record(ProjectionBatch(records=[], wait_for_database_seconds=2.5))
        elapsed = time.monotonic() - started
        assert getattr(raised.value, "type", None) == PROJECTION_UNAVAILABLE_ERROR
        assert getattr(raised.value, "non_retryable", True) is False
        assert 1.5 <= elapsed < 10, elapsed
    finally:
        await pool.close()
