"""The content store on real backends: PostgreSQL (the default with a database) and files; Temporal's external
payload storage over it; and a projection that holds referenced content in full."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from pydantic import SecretStr

from activities.content import ContentStore
from activities.payload_drivers import ContentStoreUnavailable, FilePayloadDriver, PostgresPayloadDriver
from client.connection import with_content_store
from devstack.fake_llm import FakeLlmServer
from devstack.postgres import EmbeddedPostgres
from tests.conftest import RuntimeFactory
from tests.support import Session, call, classify, final, largest_event, text
from workflows.content import RAW_INPUT_LIMIT, ref_marker
from workflows.model import (
    ArchiveTranscriptInput,
    ChatMessage,
    ContentRef,
    ToolResult,
    TranscriptArchive,
)


@pytest.fixture(params=["postgres", "file"])
async def store(
    request: pytest.FixtureRequest, postgres: EmbeddedPostgres, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[ContentStore]:
    if request.param == "file":
        yield ContentStore(FilePayloadDriver(tmp_path_factory.mktemp("content")))
        return
    driver = PostgresPayloadDriver(postgres.dsn)
    try:
        yield ContentStore(driver)
    finally:
        await driver.close()


async def test_texts_round_trip_by_content(store: ContentStore) -> None:
    text_ = "def main():\n    print('héllo \x00 wörld')\n" * 5_000 + "\ud800 lone surrogate"
    ref = await store.put(text_)
    again = await store.put(text_)
    assert ref == again, "the same content is the same reference"
    assert ref.size == len(text_) and ref.preview == text_[:500]
    assert await store.get(ref) == text_
    fresh = ContentStore(store.driver)  # nothing cached: read from the backend itself
    assert await fresh.get(ref) == text_


async def test_arguments_are_offloaded_and_resolved(store: ContentStore) -> None:
    arguments = {"path": "big.py", "content": "x" * 100_000, "mode": "w"}
    stored = await store.offload_arguments(arguments)
    assert stored["path"] == "big.py" and stored["mode"] == "w"
    assert isinstance(stored["content"], dict)
    assert await store.resolve_arguments(stored) == arguments
    many = {f"k{i}": "y" * 500 for i in range(100)}  # too big, yet no single value worth a reference
    whole = await store.offload_arguments(many)
    assert set(whole) == set(ref_marker(ContentRef(driver="d", claim={}, sha256="", size=0))) and len(whole) == 1
    assert await store.resolve_arguments(whole) == many


async def test_segments_are_kept_parsed_and_transcripts_are_read_as_copies(tmp_path: Path) -> None:
    store = ContentStore(FilePayloadDriver(tmp_path), segment_cache_chars=8_000)
    archive: TranscriptArchive | None = None
    for number in range(3):
        message = ChatMessage(role="user", content=f"question {number}")
        archive = await store.archive(
            ArchiveTranscriptInput(session_id="s", first_seq=number, messages=[message], previous=archive)
        )
    assert archive is not None
    newest = await store.segment(archive)
    assert await store.segment(archive) is newest, "parsed once, then shared"
    transcript = await store.read_transcript(archive)
    assert [m.content for m in transcript] == ["question 0", "question 1", "question 2"]
    transcript[-1].content = "changed by a caller"
    assert newest.messages[0].content == "question 2", "a caller's transcript is its own"
    later = archive
    for number in range(8):  # ~1,100 characters each: the oldest fall out of an 8,000-character cache
        later = await store.archive(
            ArchiveTranscriptInput(
                session_id="s", first_seq=3 + number, messages=[ChatMessage(role="user", content="x" * 900)]
            )
        )
        await store.segment(later)
    assert await store.segment(later) is await store.segment(later)
    assert await store.segment(archive) is not newest, "evicted, parsed again"


async def test_a_missing_entry_is_a_clear_error(store: ContentStore) -> None:
    missing = ContentRef(driver=store.driver.name(), claim={"sha256": "0" * 64}, sha256="0" * 64, size=1)
    with pytest.raises(ContentStoreUnavailable, match="has no entry"):
        await ContentStore(store.driver).get(missing)


async def test_an_unreachable_database_is_a_clear_error() -> None:
    store = ContentStore(PostgresPayloadDriver("postgresql://nobody@127.0.0.1:1/none"))
    with pytest.raises(ContentStoreUnavailable, match="unreachable"):
        await store.put("x")


async def test_large_payloads_of_raw_callers_go_to_external_storage(session: Session) -> None:
    """A gateway that signals the workflow directly with a 300 KB payload: Temporal's external payload storage keeps
    it out of history, and the workflow cuts it to its inline limit with a visible marker."""
    session.script(classify("coder"), call("read_file", "call_r1", path="a.py"), text("got it"))
    final(await session.say("read a.py"))
    store = session.client.content
    assert store is not None
    raw = with_content_store(session.client.temporal, store, threshold=32 * 1024)
    await raw.get_workflow_handle(f"session-{session.id}").signal(
        "tool_result", ToolResult(call_id="call_r1", result="z" * 300_000)
    )
    assert final(await session.events()).content == "got it"
    history = await session.client.handle(session.id).fetch_history()
    [signaled] = [
        e for e in history.events if e.workflow_execution_signaled_event_attributes.signal_name == "tool_result"
    ]
    assert signaled.ByteSize() < 2_048, "the signal's payload is a reference to the stored payload"
    # What the workflow then holds is its inline limit at most (sent on to the LLM activity once).
    assert await largest_event(session.client, session.id) < RAW_INPUT_LIMIT + 16 * 1024
    [tool] = [m for m in await session.history() if m.role == "tool"]
    assert isinstance(tool.content, str) and len(tool.content) <= RAW_INPUT_LIMIT


async def test_the_projection_holds_referenced_content_in_full(
    runtime_with: RuntimeFactory, fake_llm: FakeLlmServer, postgres: EmbeddedPostgres, projection_pool: asyncpg.Pool
) -> None:
    content = "line of a big file\n" * 10_000
    async with runtime_with(database_url=SecretStr(postgres.dsn)) as client:
        session = Session(client, fake_llm)
        session.script(classify("coder"), call("read_file", "call_big", path="big.txt"), text("Read."))
        final(await session.say("read big.txt"))
        await session.result("call_big", content)
        assert final(await session.events()).content == "Read."

        async def projected() -> str | None:
            return await projection_pool.fetchval(
                "SELECT content FROM messages WHERE session_id = $1 AND role = 'tool'", session.id
            )

        for _ in range(200):
            if (await projected()) is not None:
                break
            await session.client.state(session.id)  # a cheap event-driven pause: one round trip to the worker
        assert await projected() == content
        stored = await projection_pool.fetchval("SELECT count(*) FROM payloads")
        assert stored >= 1, "the content store is the same database"
