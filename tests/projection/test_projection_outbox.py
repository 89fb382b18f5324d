"""The workflow's projection outbox (workflows/projection.py) on real parts: Temporal servers, the product's writer,
the embedded PostgreSQL, which the tests stop and start.

- A conversation whose user message, tool arguments and tool result hold NUL bytes goes on, and the projection
  holds them escaped (a lone surrogate never reaches a workflow: inputs replace it with U+FFFD on the way in).
- Writes go in bounded batches (records and bytes, read back from the workflow history), and the backlog kept while
  the database is down is bounded: the oldest records are dropped and counted.
- `quiesce()` before continue-as-new cancels the write in flight and waits for it, so the continue-as-new task
  never fails (UNHANDLED_COMMAND); unwritten records travel to the next run and are written there (in the probe,
  and in a conversation that continues as new while PostgreSQL is down).
- After an outage the projection catches up about a second after PostgreSQL is back (the figure is printed), and the
  history holds one long write for the outage, not a failed attempt per retry.

The outbox's own behaviour is exercised through a small probe workflow that uses `Projection` exactly as the
conversation does; the conversation itself is exercised end to end.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
from pydantic import BaseModel, Field
from temporalio import workflow
from temporalio.client import Client, WorkflowHandle, WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer, Worker

from activities.persistence import NUL_ESCAPE, PersistenceActivities
from activities.postgres import close_pool, create_pool
from client.projection_reader import ProjectionReader
from devstack.fake_llm import FakeLlmServer
from devstack.postgres import EmbeddedPostgres
from devstack.temporal import DevServer
from tests.conftest import RuntimeFactory
from tests.projection.support import Transcript, assert_projection_equals_workflow
from tests.support import Session, call, classify, final, text, types
from workflows.conversation import ConversationWorkflow
from workflows.model import (
    RECORD_PROJECTION_ACTIVITY,
    ChunkType,
    SessionCounters,
    StreamChunk,
)
from workflows.patches import BASELINE
from workflows.projection import (
    MAX_BACKLOG_RECORDS,
    MAX_BATCH_BYTES,
    MAX_BATCH_RECORDS,
    Projection,
    approx_size,
)
from workflows.records import (
    EventRecord,
    ProjectionBatch,
    ProjectionRecord,
)

STEP_SECONDS = 30.0
# Generous bounds for a busy 2-core machine; the measured figures are printed (`-s` shows them).
CATCH_UP_BOUND_SECONDS = 20.0
OUTAGE_SECONDS = 10.0


def report(label: str, seconds: float) -> None:
    print(f"[projection] {label}: {seconds:.3f} s")


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = STEP_SECONDS) -> float:
    """Poll until `check` holds; returns the monotonic time it first did."""
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)
    return time.monotonic()


@dataclass
class Outage:
    stopped: float = 0.0
    restarting: float = 0.0  # `start()` called
    restarted: float = 0.0  # `start()` returned: the server accepts connections


@contextlib.asynccontextmanager
async def postgres_down(postgres: EmbeddedPostgres) -> AsyncIterator[Outage]:
    """PostgreSQL stopped for the block, and started again whatever happens (the fixture is shared)."""
    outage = Outage()
    await postgres.stop()
    outage.stopped = time.monotonic()
    try:
        yield outage
    finally:
        outage.restarting = time.monotonic()
        await postgres.start()
        outage.restarted = time.monotonic()


def report_catch_up(label: str, outage: Outage, done: float) -> None:
    report(f"{label}: PostgreSQL down for", outage.restarting - outage.stopped)
    report(f"{label}: PostgreSQL start() took", outage.restarted - outage.restarting)
    report(f"{label}: start() called -> written", done - outage.restarting)
    report(f"{label}: start() returned (accepting connections) -> written", done - outage.restarted)


# --- the projection writes, read back from a workflow history ---


@dataclass
class Write:
    """One `persistence.record` activity of a history."""

    batch: ProjectionBatch
    outcome: str | None = None  # completed, failed, timed_out, canceled; None while it runs


_OUTCOMES = {
    "activity_task_completed_event_attributes": "completed",
    "activity_task_failed_event_attributes": "failed",
    "activity_task_timed_out_event_attributes": "timed_out",
    "activity_task_canceled_event_attributes": "canceled",
}


def projection_writes(history: WorkflowHistory) -> list[Write]:
    writes: dict[int, Write] = {}
    for event in history.events:
        kind = event.WhichOneof("attributes")
        if kind == "activity_task_scheduled_event_attributes":
            scheduled = event.activity_task_scheduled_event_attributes
            if scheduled.activity_type.name == RECORD_PROJECTION_ACTIVITY:
                [batch] = pydantic_data_converter.payload_converter.from_payloads(
                    list(scheduled.input.payloads), [ProjectionBatch]
                )
                writes[event.event_id] = Write(batch)
        elif kind in _OUTCOMES:
            scheduled_id = getattr(event, kind).scheduled_event_id
            if scheduled_id in writes:
                writes[scheduled_id].outcome = _OUTCOMES[kind]
    return list(writes.values())


def event_types(history: WorkflowHistory) -> list[str]:
    return [str(event.WhichOneof("attributes")).removesuffix("_event_attributes") for event in history.events]


def assert_bounded(writes: list[Write]) -> None:
    for write in writes:
        records = write.batch.records
        assert 1 <= len(records) <= MAX_BATCH_RECORDS, len(records)
        assert len(records) == 1 or sum(approx_size(r) for r in records) <= MAX_BATCH_BYTES


async def waiting_write(handle: WorkflowHandle[Any, Any]) -> Write:
    """Wait until the workflow has a write in flight that waits for the database; return it."""
    found: list[Write] = []

    async def scheduled() -> bool:
        found[:] = [
            w
            for w in projection_writes(await handle.fetch_history())
            if w.batch.wait_for_database_seconds > 0 and w.outcome is None
        ]
        return bool(found)

    await until(scheduled, "a write that waits for the database")
    return found[0]


async def replays(histories: list[WorkflowHistory], workflow_class: type) -> None:
    replayer = Replayer(workflows=[workflow_class], data_converter=pydantic_data_converter)
    for history in histories:
        result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
        assert result.replay_failure is None, f"{history.workflow_id} does not replay: {result.replay_failure}"


# --- a probe workflow: the outbox alone, driven record by record ---


class ProbeInput(BaseModel):
    session_id: str
    pending: list[ProjectionRecord] = Field(default_factory=list)
    counters: SessionCounters = Field(default_factory=SessionCounters)
    next_number: int = 0


class AddEvents(BaseModel):
    count: int
    padding: int = 0


class ProbeStatus(BaseModel):
    pending: list[int]
    dropped: int
    quarantined: int
    counters: SessionCounters


def number_of(record: ProjectionRecord) -> int:
    assert isinstance(record, EventRecord) and isinstance(record.chunk.content, str)
    return int(record.chunk.content.split(":")[0])


@workflow.defn(name="ProjectionProbe", sandboxed=False)
class ProjectionProbe:
    """Adds numbered event records on request; continues as new (quiescing first) or finishes on a signal."""

    @workflow.init
    def __init__(self, input: ProbeInput) -> None:
        self._input = input
        self._projection = Projection(input.session_id, input.pending, counters=input.counters)
        self._next = input.next_number
        self._continue = False
        self._finish = False

    @workflow.run
    async def run(self, input: ProbeInput) -> None:
        assert self._projection.start(True)
        await workflow.wait_condition(lambda: self._continue or self._finish)
        await self._projection.quiesce()
        if self._continue:
            workflow.continue_as_new(
                ProbeInput(
                    session_id=input.session_id,
                    pending=self._projection.pending,
                    counters=input.counters,
                    next_number=self._next,
                )
            )

    @workflow.update
    async def add(self, request: AddEvents) -> int:
        # An update can run before `run` (in the first activation); the outbox takes records once started.
        await workflow.wait_condition(lambda: self._projection.enabled)
        for _ in range(request.count):
            content = f"{self._next}:" + "x" * request.padding
            self._projection.event(
                StreamChunk(type=ChunkType.STATUS, session_id=self._input.session_id, content=content)
            )
            self._next += 1
        return self._next

    @workflow.signal
    def continue_now(self) -> None:
        self._continue = True

    @workflow.signal
    def finish(self) -> None:
        self._finish = True

    @workflow.query
    def status(self) -> ProbeStatus:
        return ProbeStatus(
            pending=[number_of(r) for r in self._projection.pending],
            dropped=self._projection.dropped,
            quarantined=self._projection.quarantined,
            counters=self._input.counters,
        )


@dataclass
class Probe:
    client: Client
    session_id: str  # also the workflow id
    first_run_id: str
    pool: asyncpg.Pool

    @property
    def handle(self) -> WorkflowHandle[Any, Any]:
        """The current run (after a continue-as-new, the new one)."""
        return self.client.get_workflow_handle(self.session_id)

    async def add(self, count: int, padding: int = 0) -> None:
        await self.handle.execute_update("add", AddEvents(count=count, padding=padding))

    async def status(self) -> ProbeStatus:
        return await self.handle.query("status", result_type=ProbeStatus)

    async def written(self) -> list[int]:
        """The numbers of the probe's events in the projection, in the order they were written."""
        rows = await self.pool.fetch("SELECT chunk FROM events WHERE session_id = $1 ORDER BY id", self.session_id)
        return [int(row["chunk"]["content"].split(":")[0]) for row in rows]

    async def written_count(self) -> int:
        return int(await self.pool.fetchval("SELECT count(*) FROM events WHERE session_id = $1", self.session_id))


@pytest.fixture
async def probe(
    dev_server: DevServer, postgres: EmbeddedPostgres, projection_pool: asyncpg.Pool
) -> AsyncIterator[Probe]:
    """A probe workflow on the dev server (real time), with the product's writer on its own pool, as a worker has."""
    task_queue = f"probe-{uuid.uuid4().hex[:8]}"
    session_id = f"probe-{uuid.uuid4().hex[:12]}"  # also the workflow id
    pool = await create_pool(postgres.dsn)
    writer = PersistenceActivities(pool, dsn=postgres.dsn)
    client: Client = dev_server.client
    try:
        async with Worker(client, task_queue=task_queue, workflows=[ProjectionProbe], activities=[writer.record]):
            handle = await client.start_workflow(
                ProjectionProbe.run, ProbeInput(session_id=session_id), id=session_id, task_queue=task_queue
            )
            assert handle.result_run_id is not None
            try:
                yield Probe(client, session_id, handle.result_run_id, projection_pool)
            finally:
                with contextlib.suppress(Exception):
                    await client.get_workflow_handle(session_id).terminate()
    finally:
        await close_pool(pool)


async def run_histories(probe: Probe) -> list[WorkflowHistory]:
    """Every run of the probe's continue-as-new chain, oldest first."""
    client = probe.client
    histories = []
    run_id: str | None = probe.first_run_id
    while run_id:
        history = await client.get_workflow_handle(probe.session_id, run_id=run_id).fetch_history()
        histories.append(history)
        last = history.events[-1]
        continued = last.WhichOneof("attributes") == "workflow_execution_continued_as_new_event_attributes"
        run_id = last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id if continued else None
    return histories


# --- the probe's scenarios ---


async def test_batches_are_bounded_and_a_full_backlog_drops_its_oldest_records(
    probe: Probe, postgres: EmbeddedPostgres
) -> None:
    await probe.add(1)
    await until(lambda: _equals(probe.written(), [0]), "the first record to be written")

    overflow = 200
    async with postgres_down(postgres) as outage:
        await probe.add(1)  # record 1: its write fails, and the next write waits for the database
        waiting = await waiting_write(probe.handle)
        assert [number_of(r) for r in waiting.batch.records] == [1]
        await probe.add(MAX_BACKLOG_RECORDS + overflow)  # records 2 .. 1201
        status = await probe.status()
        # Record 1 rides with the write in flight; of the rest, the oldest beyond the bound are gone.
        dropped = MAX_BACKLOG_RECORDS + overflow + 1 - MAX_BACKLOG_RECORDS
        assert (status.dropped, status.counters.projection_dropped) == (dropped, dropped)
        assert len(status.pending) == MAX_BACKLOG_RECORDS
        assert status.pending == [1, *range(2 + dropped, 2 + MAX_BACKLOG_RECORDS + overflow)]
    expected = [0, 1, *range(2 + dropped, 2 + MAX_BACKLOG_RECORDS + overflow)]
    caught_up = await until(lambda: _equals(probe.written(), expected), "the backlog to be written")
    report_catch_up("probe, a backlog of 1000 records", outage, caught_up)

    # Big records: a batch holds about MAX_BATCH_BYTES.
    await until(lambda: _empty(probe), "the outbox to drain")
    await probe.add(20, padding=60_000)
    await until(lambda: _count(probe, len(expected) + 20), "the big records to be written")

    writes = projection_writes(await probe.handle.fetch_history())
    assert_bounded(writes)
    sizes = [len(w.batch.records) for w in writes]
    assert sizes.count(MAX_BATCH_RECORDS) >= 9, sizes  # the backlog went out in full batches
    big = [w for w in writes if any(approx_size(r) > 60_000 for r in w.batch.records)]
    assert sum(len(w.batch.records) for w in big) == 20
    assert len(big) >= 20 * 60_000 // MAX_BATCH_BYTES, [len(w.batch.records) for w in big]  # in several writes
    failed = [w for w in writes if w.outcome != "completed"]
    assert len(failed) == 1 and failed[0].batch.wait_for_database_seconds == 0, failed  # only the first write
    await replays(await run_histories(probe), ProjectionProbe)


async def test_quiesce_stops_the_write_in_flight_and_the_backlog_moves_to_the_next_run(
    probe: Probe, postgres: EmbeddedPostgres
) -> None:
    await probe.add(3)
    await until(lambda: _equals(probe.written(), [0, 1, 2]), "the first records to be written")
    async with postgres_down(postgres) as outage:
        await probe.add(2)
        await waiting_write(probe.handle)
        await probe.add(1)
        asked = time.monotonic()
        await probe.handle.signal(ProjectionProbe.continue_now)
        await until(lambda: continued_as_new(probe), "the probe to continue as new")
        report("probe: continue-as-new asked -> continued (cancelling a write that waits)", time.monotonic() - asked)
        # The next run carries the three records; its own writes wait for the database.
        assert (await probe.status()).pending == [3, 4, 5]
    caught_up = await until(lambda: _equals(probe.written(), [0, 1, 2, 3, 4, 5]), "the carried records")
    report_catch_up("probe, records carried to the next run", outage, caught_up)

    [first, second] = await run_histories(probe)
    kinds = event_types(first)
    assert "workflow_task_failed" not in kinds, kinds
    assert kinds[-1] == "workflow_execution_continued_as_new"
    # The write in flight was cancelled and its cancellation awaited before the workflow continued as new.
    [*_, cancelled] = projection_writes(first)
    assert cancelled.outcome == "canceled" and cancelled.batch.wait_for_database_seconds > 0
    assert kinds.index("activity_task_canceled") < kinds.index("workflow_execution_continued_as_new")
    assert "workflow_task_failed" not in event_types(second)
    await replays([first, second], ProjectionProbe)


async def test_quiesce_without_a_write_in_flight_changes_nothing(probe: Probe) -> None:
    await probe.add(2)
    await until(lambda: _equals(probe.written(), [0, 1]), "the records to be written")
    await until(lambda: _empty(probe), "the outbox to drain")
    await probe.handle.signal(ProjectionProbe.continue_now)
    await until(lambda: continued_as_new(probe), "the probe to continue as new")
    await probe.add(1)
    await until(lambda: _equals(probe.written(), [0, 1, 2]), "the next run's record")
    for history in await run_histories(probe):
        assert "workflow_task_failed" not in event_types(history)
    assert (await probe.status()).dropped == 0


async def continued_as_new(probe: Probe) -> bool:
    described = await probe.client.get_workflow_handle(probe.session_id, run_id=probe.first_run_id).describe()
    return described.status is not None and described.status.name == "CONTINUED_AS_NEW"


async def _equals(value: Awaitable[list[int]], expected: list[int]) -> bool:
    return await value == expected


async def _count(probe: Probe, count: int) -> bool:
    return await probe.written_count() == count


async def _empty(probe: Probe) -> bool:
    return not (await probe.status()).pending


# --- the conversation, end to end ---


@pytest.fixture
def reader(projection_pool: asyncpg.Pool) -> ProjectionReader:
    return ProjectionReader(projection_pool)


async def test_nul_bytes_in_a_message_tool_arguments_and_a_tool_result_reach_the_projection_escaped(
    runtime_with: RuntimeFactory, postgres: EmbeddedPostgres, fake_llm: FakeLlmServer, reader: ProjectionReader
) -> None:
    async with runtime_with(database_url=postgres.dsn) as client:
        session = Session(client, fake_llm)
        session.script(classify("coder"), call("write_file", "call_n1", path="a\x00.txt", content="x\x00y"))
        assert types(await session.say("write a\x00b")) == ["agent_switched", "tool_call"]
        await session.decide("call_n1", "approve")
        assert final(await session.events()).requires_approval is False
        session.script(text("Written\x00."))
        await session.result("call_n1", {"stdout": "ok\x00done"})
        assert final(await session.events()).content == "Written\x00."
        # The session goes on, and what it says next is written too.
        session.script(text("Still here."))
        assert final(await session.say("and now?")).content == "Still here."
        history = await session.history()

        async def caught_up() -> bool:
            row = await reader.get_session(session.id)
            return row is not None and row.message_count == len(history) == len(await reader.history(session.id))

        await until(caught_up, "the projection to hold the whole conversation")
        projected = await reader.history(session.id)
        assert [m.content for m in projected] == [
            (m.content or "").replace("\x00", NUL_ESCAPE) if m.content is not None else None for m in history
        ]
        assert projected[0].content == f"write a{NUL_ESCAPE}b"
        assert projected[-1].content == "Still here."
        [tool_call] = await reader.tool_calls(session.id)
        assert tool_call.arguments == {"path": f"a{NUL_ESCAPE}.txt", "content": f"x{NUL_ESCAPE}y"}
        assert tool_call.result is not None and f"ok{NUL_ESCAPE}done" in tool_call.result
        assert [a.call_id for a in await reader.approvals(session.id)] == ["call_n1"]
        events = await reader.events(session.id, limit=1000)
        assert events[-1].chunk.content == "Still here."
        state = await client.state(session.id)
        assert (state.counters.projection_quarantined, state.counters.projection_dropped) == (0, 0)

        # A lone surrogate never reaches the workflow: inputs replace it with U+FFFD on the way in.
        session.script(text("Fine."))
        assert final(await session.say("lone \ud800")).content == "Fine."
        assert [m.content for m in await session.history()][-2:] == ["lone \ufffd", "Fine."]


async def test_the_projection_catches_up_seconds_after_postgres_returns(
    dev_runtime_with: RuntimeFactory, postgres: EmbeddedPostgres, fake_llm: FakeLlmServer, reader: ProjectionReader
) -> None:
    """PostgreSQL stops for OUTAGE_SECONDS in the middle of a conversation, which goes on meanwhile; once it is
    back the projection holds everything within seconds, and the outage cost the history one waiting write."""
    async with dev_runtime_with(database_url=postgres.dsn) as client:
        transcript = Transcript(Session(client, fake_llm))
        session = transcript.session
        session.script(classify("coder"), call("write_file", "call_w1", path="main.py", content="print(1)"))
        assert types(await transcript.say("create main.py")) == ["agent_switched", "tool_call"]
        assert len(await reader.history(session.id)) == 2
        handle = client.handle(session.id)
        before = len(projection_writes(await handle.fetch_history()))

        async with postgres_down(postgres) as outage:
            async with asyncio.timeout(STEP_SECONDS):
                await session.decide("call_w1", "approve")
                assert final(await transcript.events()).requires_approval is False
                session.script(text("Created main.py."))
                await session.result("call_w1", {"written": True})
                assert final(await transcript.events()).content == "Created main.py."
                for turn in range(3):
                    session.script(text(f"Answer {turn}."))
                    assert final(await transcript.say(f"question {turn}?")).content == f"Answer {turn}."
            await waiting_write(handle)
            await asyncio.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - outage.stopped)))
        history = await session.history()

        async def caught_up() -> bool:
            row = await reader.get_session(session.id)
            return (
                row is not None
                and row.message_count == len(history)
                and len(await reader.events(session.id, limit=10_000)) == len(transcript.chunks)
            )

        done = await until(caught_up, "the projection to catch up", CATCH_UP_BOUND_SECONDS)
        report_catch_up("conversation", outage, done)
        await assert_projection_equals_workflow(reader, transcript)

        workflow_history = await handle.fetch_history()
        assert "workflow_task_failed" not in event_types(workflow_history)
        writes = projection_writes(workflow_history)
        assert_bounded(writes)
        during = writes[before:]
        failed = [w for w in during if w.outcome not in ("completed", None)]
        waited = [w for w in during if w.batch.wait_for_database_seconds > 0]
        # One normal write failed (the database went away), then one write waited for it: not one per second.
        assert len(failed) <= 2, [(w.outcome, w.batch.wait_for_database_seconds) for w in failed]
        assert len(waited) == 1 and waited[0].outcome == "completed"
        markers = [
            e.marker_recorded_event_attributes
            for e in workflow_history.events
            if e.HasField("marker_recorded_event_attributes")
        ]
        # The run has the bounded outbox: through the baseline, which implies every earlier change.
        assert any(BASELINE.encode() in m.SerializeToString() for m in markers)
        await replays([workflow_history], ConversationWorkflow)


async def test_a_session_continues_as_new_while_a_write_waits_for_postgres(
    dev_runtime_with: RuntimeFactory,
    dev_server: DevServer,
    postgres: EmbeddedPostgres,
    fake_llm: FakeLlmServer,
    reader: ProjectionReader,
) -> None:
    """The conversation quiesces its outbox before continuing as new: the write waiting for the database is
    cancelled, the continue-as-new task does not fail, and the next run writes what the first one could not."""
    async with dev_runtime_with(database_url=postgres.dsn, continue_as_new_after_turns=1) as client:
        session = Session(client, fake_llm)
        async with postgres_down(postgres) as outage:
            session.script(classify("ask"), text("Hello."), text("Again."))
            assert final(await session.say("hello")).content == "Hello."
            handle = client.handle(session.id)
            # The next input ends the run (continue-as-new-on-input), while its write waits for the database.
            await waiting_write(handle)
            assert final(await session.say("again")).content == "Again."

            async def second_run() -> bool:
                started = (await handle.fetch_history()).events[0].workflow_execution_started_event_attributes
                return bool(started.continued_execution_run_id)

            await until(second_run, "the session to continue as new")
            await waiting_write(handle)  # the new run's own write, waiting for the database
        history = await session.history()

        async def caught_up() -> bool:
            row = await reader.get_session(session.id)
            return row is not None and len(await reader.history(session.id)) == len(history) == 4

        done = await until(caught_up, "the next run to write the first run's records", CATCH_UP_BOUND_SECONDS)
        report_catch_up("conversation across continue-as-new", outage, done)

        latest = await handle.fetch_history()
        first_run = latest.events[0].workflow_execution_started_event_attributes.continued_execution_run_id
        first = await dev_server.client.get_workflow_handle(handle.id, run_id=first_run).fetch_history()
        kinds = event_types(first)
        assert "workflow_task_failed" not in kinds, kinds
        assert kinds[-1] == "workflow_execution_continued_as_new"
        # Every write the first run started was resolved before it continued as new (a write still only scheduled
        # in that last task is cancelled without reaching the server; one already running is cancelled and awaited).
        outcomes = [(w.outcome, w.batch.wait_for_database_seconds) for w in projection_writes(first)]
        print(f"[projection] first run's writes (outcome, wait): {outcomes}")
        assert all(outcome is not None for outcome, _ in outcomes), outcomes
        assert "workflow_task_failed" not in event_types(latest)
        await replays([first, latest], ConversationWorkflow)
