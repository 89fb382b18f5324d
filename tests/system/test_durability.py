"""Durability across restarts, with the worker as a separate process (`python worker.py`) that can be SIGKILLed.

Everything is real: the Temporal dev server from the wheel, the embedded PostgreSQL, the fake LLM over HTTP, and
the worker configured only through `AGENT_RUNTIME__*` variables. The test process plays the gateway: it drives the
sessions with `ConversationClient` and reads the projection with `ProjectionReader`. After every scenario the
projection must equal the workflow's own view exactly (`assert_projection_equals_workflow`: the same messages in
order, nothing missing or twice, approvals with their trail, tool calls with their outcome, every event).

- scenario 11: the worker is SIGKILLed while approvals are pending and a new worker takes over; the latency of
  the first decision after the restart is measured (the dead worker's sticky queue holds the session's next task
  until the sticky schedule-to-start timeout, 1 s here, runs out);
- the Temporal dev server is stopped and restarted (same SQLite file and port) under a running worker process;
- the worker is SIGKILLed in the middle of an LLM call (the retry waits for the activity's heartbeat timeout);
- the worker is SIGKILLed in the middle of a projection write (held up by a lock the test takes);
- (xfail, a known bug) a slow projection write must not hold up a decision.

PostgreSQL going away mid conversation is covered in test_projection.py. The figures are printed (`-s` shows them).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from pydantic import SecretStr
from temporalio.api.enums.v1 import TimeoutType
from temporalio.api.workflow.v1 import PendingActivityInfo
from temporalio.client import Client

from activities.persistence import PROJECTION_TABLES
from client.conversation_client import ConversationClient
from client.projection_reader import ProjectionReader
from devstack.fake_llm import FakeLlmServer, FakeReply
from devstack.postgres import EmbeddedPostgres
from devstack.temporal import DevServer, free_port, start_dev_server
from settings import ENV_PREFIX, Settings, TemporalSettings
from tests.projection.support import Transcript, assert_projection_equals_workflow
from tests.support import Session, call, classify, final, text, types
from workflows.model import (
    CHAT_COMPLETION_ACTIVITY,
    ApprovalStatus,
    UserMessage,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKER_READY_SECONDS = 30
WORKER_STOP_SECONDS = 10
# Generous bounds on this 2-core machine; the measured figures are printed.
FIRST_DECISION_BOUND_SECONDS = 5.0
LLM_RETRY_BOUND_SECONDS = 40.0
STEP_TIMEOUT_SECONDS = 30.0
SLOW_DATABASE_BOUND_SECONDS = 2.0


def report(label: str, seconds: float) -> None:
    print(f"[durability] {label}: {seconds:.3f} s")


# --- the worker as a process ---


@dataclass
class WorkerProcess:
    """One `python worker.py`, its combined output collected line by line."""

    process: asyncio.subprocess.Process
    lines: list[str] = field(default_factory=list)
    _reader: asyncio.Task[None] | None = None

    @property
    def output(self) -> str:
        return "".join(self.lines)

    @property
    def running(self) -> bool:
        return self.process.returncode is None

    async def _read(self) -> None:
        assert self.process.stdout is not None
        async for raw in self.process.stdout:
            self.lines.append(raw.decode(errors="replace"))

    async def ready(self, task_queue: str) -> None:
        """Wait until it polls the task queue."""
        needle = f"Worker polling task queue '{task_queue}'"
        deadline = time.monotonic() + WORKER_READY_SECONDS
        while not any(needle in line for line in self.lines):
            assert self.running, f"the worker exited before polling:\n{self.output}"
            assert time.monotonic() < deadline, f"the worker did not start polling:\n{self.output}"
            await asyncio.sleep(0.02)

    async def kill(self) -> None:
        """SIGKILL: no shutdown, no cleanup, what a crash or an OOM kill does."""
        if self.running:
            self.process.send_signal(signal.SIGKILL)
        await self._finish(WORKER_STOP_SECONDS)

    async def stop(self) -> int:
        """SIGTERM and wait (the graceful path), SIGKILL if it does not exit in time; returns the exit code."""
        if self.running:
            self.process.send_signal(signal.SIGTERM)
        try:
            await self._finish(WORKER_STOP_SECONDS)
        except TimeoutError:
            await self.kill()
        assert self.process.returncode is not None
        return self.process.returncode

    async def _finish(self, timeout: float) -> None:
        await asyncio.wait_for(self.process.wait(), timeout)
        if self._reader is not None:
            await self._reader


@dataclass
class Workers:
    """Starts worker processes for one task queue and makes sure none outlives the test."""

    env: Mapping[str, str]
    task_queue: str
    started: list[WorkerProcess] = field(default_factory=list)

    async def start(self) -> WorkerProcess:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "worker.py",
            cwd=REPO_ROOT,
            env=dict(self.env),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        worker = WorkerProcess(process)
        worker._reader = asyncio.create_task(worker._read())
        self.started.append(worker)
        await worker.ready(self.task_queue)
        return worker

    async def close(self) -> None:
        for worker in self.started:
            if worker.running:
                await worker.stop()
        assert not any(w.running for w in self.started)


def worker_env(*, address: str, task_queue: str, llm_url: str, database_url: str) -> dict[str, str]:
    """This process's environment without any runtime setting, plus the worker's four."""
    inherited = {
        k: v for k, v in os.environ.items() if not k.upper().startswith(ENV_PREFIX) and k.upper() != "DATABASE_URL"
    }
    return inherited | {
        "PYTHONUNBUFFERED": "1",
        f"{ENV_PREFIX}TEMPORAL__ADDRESS": address,
        f"{ENV_PREFIX}TEMPORAL__TASK_QUEUE": task_queue,
        f"{ENV_PREFIX}LLM_PROXY_URL": llm_url,
        f"{ENV_PREFIX}DATABASE_URL": database_url,
    }


@dataclass
class Runtime:
    """The gateway's side (client and settings) and the worker processes of one test."""

    workers: Workers
    settings: Settings
    fake_llm: FakeLlmServer

    def client(self, temporal: Client) -> ConversationClient:
        config = self.settings.conversation_config()
        assert config.projection_enabled
        return ConversationClient(temporal, task_queue=self.settings.temporal.task_queue, config=config)

    def session(self, temporal: Client) -> Session:
        return Session(self.client(temporal), self.fake_llm)


@contextlib.asynccontextmanager
async def runtime(address: str, fake_llm: FakeLlmServer, postgres: EmbeddedPostgres) -> AsyncIterator[Runtime]:
    task_queue = f"durable-{uuid.uuid4().hex[:8]}"
    settings = Settings(
        llm_proxy_url=fake_llm.base_url,
        temporal=TemporalSettings(address=address, task_queue=task_queue),
        database_url=SecretStr(postgres.dsn),
    )
    env = worker_env(address=address, task_queue=task_queue, llm_url=fake_llm.base_url, database_url=postgres.dsn)
    workers = Workers(env, task_queue)
    try:
        yield Runtime(workers, settings, fake_llm)
    finally:
        await workers.close()


# --- helpers ---


@pytest.fixture
def reader(projection_pool: asyncpg.Pool) -> ProjectionReader:
    return ProjectionReader(projection_pool)


async def until(check: Callable[[], Awaitable[bool] | bool], what: str, timeout: float = STEP_TIMEOUT_SECONDS) -> float:
    """Poll until `check` holds; returns the monotonic time it first did."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return time.monotonic()
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def step(what: str) -> AsyncIterator[None]:
    """One step of a conversation, bounded: a stall fails the test instead of eating the suite's time budget."""
    try:
        async with asyncio.timeout(STEP_TIMEOUT_SECONDS):
            yield
    except TimeoutError:
        pytest.fail(f"{what} took over {STEP_TIMEOUT_SECONDS:g} s")


async def projected(reader: ProjectionReader, transcript: Transcript) -> None:
    """Wait until the projection holds every event the client has seen (the flusher is idle)."""

    async def caught_up() -> bool:
        return len(await reader.events(transcript.session.id, limit=10_000)) == len(transcript.chunks)

    await until(caught_up, "the projection to catch up")


async def park_on_approval(transcript: Transcript, call_id: str, command: str) -> None:
    """A new session whose first turn stops at an approval for `execute_command`."""
    session = transcript.session
    session.script(classify("coder"), call("execute_command", call_id, command=command), text(f"{command}: ok"))
    assert types(await transcript.say(f"run {command}")) == ["agent_switched", "tool_call"]
    chunk = final(transcript.chunks)
    assert (chunk.call_id, chunk.requires_approval) == (call_id, True)


async def approve(transcript: Transcript, call_id: str) -> float:
    """Approve; returns the seconds from the call to the re-emitted tool_call (the IDE may execute now)."""
    started = time.monotonic()
    async with step(f"the approval of {call_id}"):
        await transcript.session.decide(call_id, "approve")
        chunk = final(await transcript.events())
    elapsed = time.monotonic() - started
    assert (chunk.type.value, chunk.call_id, chunk.requires_approval) == ("tool_call", call_id, False)
    return elapsed


async def finish(transcript: Transcript, call_id: str, command: str) -> None:
    """The IDE's tool_result, then the final answer."""
    await transcript.session.result(call_id, {"exit_code": 0, "stdout": "No issues found!"})
    async with step("the final answer"):
        assert final(await transcript.events()).content == f"{command}: ok"
    roles = [m.role for m in await transcript.session.history()]
    assert roles == ["user", "assistant", "tool", "assistant"]


async def assert_pending_in_projection(reader: ProjectionReader, session: Session, call_id: str) -> None:
    [pending] = await reader.pending_approvals(session.id)
    assert (pending.call_id, pending.status) == (call_id, ApprovalStatus.PENDING)


async def assert_settled_exactly(reader: ProjectionReader, transcript: Transcript) -> None:
    """The projection equals the workflow, and every approval went pending -> approved exactly once."""
    await assert_projection_equals_workflow(reader, transcript)
    session = transcript.session
    for approval in await reader.approvals(session.id):
        trail = await reader.approval_trail(session.id, approval.request_id)
        assert [a.status for a in trail] == [ApprovalStatus.PENDING, ApprovalStatus.APPROVED]
    counts = await reader.row_counts(session.id)
    assert counts["sessions"] == 1 and counts["messages"] == len(await session.history()), counts


class WriteLock:
    """A transaction holding every projection table against writes (reads still pass)."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.transaction = conn.transaction()
        self.held = False

    async def hold(self) -> None:
        await self.transaction.start()
        self.held = True
        await self.conn.execute(f"LOCK TABLE {', '.join(PROJECTION_TABLES)} IN EXCLUSIVE MODE")

    async def blocked_writers(self) -> list[int]:
        """Wait until some backend waits for the lock; returns their pids."""
        found: list[int] = []

        async def blocked() -> bool:
            rows = await self.conn.fetch(
                "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
            )
            found[:] = [r["pid"] for r in rows]
            return bool(found)

        await until(blocked, "a projection write to block on the lock", 10)
        return found

    async def release(self) -> None:
        if self.held:
            self.held = False
            await self.transaction.rollback()


@contextlib.asynccontextmanager
async def write_lock(postgres: EmbeddedPostgres) -> AsyncIterator[WriteLock]:
    conn = await asyncpg.connect(postgres.dsn)
    try:
        lock = WriteLock(conn)
        await lock.hold()
        try:
            yield lock
        finally:
            await lock.release()
    finally:
        await conn.close()


async def cancel(task: asyncio.Task[Any]) -> None:
    """Cancel a task this test started (a no-op once it is done) and wait for it, whatever it raises."""
    task.cancel()
    with contextlib.suppress(BaseException):
        await task


async def workflow_task_timeouts(session: Session) -> list[float]:
    """Seconds each timed-out workflow task of the session had been running when the server gave up on it."""
    started: datetime | None = None
    found = []
    async for event in session.client.handle(session.id).fetch_history_events():
        if event.HasField("workflow_task_started_event_attributes"):
            started = event.event_time.ToDatetime()
        elif event.HasField("workflow_task_timed_out_event_attributes") and started is not None:
            found.append((event.event_time.ToDatetime() - started).total_seconds())
    return found


# --- the scenarios ---


async def test_scenario_11_worker_sigkilled_while_approvals_are_pending(
    dev_server: DevServer, fake_llm: FakeLlmServer, postgres: EmbeddedPostgres, reader: ProjectionReader
) -> None:
    """Two sessions wait for approval; the worker is SIGKILLed; a new worker process serves both.

    `queried` is asked for its pending approvals first (the query is its first contact after the restart);
    `direct` is approved straight away, so its approval is the first task that meets the dead worker's sticky
    queue: that is the figure the sticky schedule-to-start timeout bounds.
    """
    async with runtime(dev_server.target, fake_llm, postgres) as rt:
        first = await rt.workers.start()
        queried, direct = Transcript(rt.session(dev_server.client)), Transcript(rt.session(dev_server.client))
        await park_on_approval(queried, "call_q1", "dart analyze")
        await park_on_approval(direct, "call_d1", "dart test")

        await first.kill()
        killed = time.monotonic()
        await rt.workers.start()
        report("scenario 11: SIGKILL to a new worker polling", time.monotonic() - killed)

        # Still listed: in the projection, and by the workflow itself.
        await assert_pending_in_projection(reader, queried.session, "call_q1")
        await assert_pending_in_projection(reader, direct.session, "call_d1")
        started = time.monotonic()
        [pending] = await queried.session.client.pending_approvals(queried.session.id)
        report("scenario 11: first query after the restart (pending approvals)", time.monotonic() - started)
        assert (pending.call_id, pending.tool_name, pending.arguments) == (
            "call_q1",
            "execute_command",
            {"command": "dart analyze"},
        )

        first_contact = await approve(direct, "call_d1")
        report("scenario 11: approve -> re-emitted tool_call, first contact after the restart", first_contact)
        after_query = await approve(queried, "call_q1")
        report("scenario 11: approve -> re-emitted tool_call, after a query", after_query)
        report("scenario 11: SIGKILL -> first decision's tool_call", time.monotonic() - killed)
        assert first_contact < FIRST_DECISION_BOUND_SECONDS
        assert after_query < FIRST_DECISION_BOUND_SECONDS

        await finish(direct, "call_d1", "dart test")
        await finish(queried, "call_q1", "dart analyze")
        assert await queried.session.client.pending_approvals(queried.session.id) == []
        assert await reader.pending_approvals(queried.session.id) == []
        for transcript in (queried, direct):
            await assert_settled_exactly(reader, transcript)


async def test_the_temporal_server_restarts_under_a_running_worker_with_pending_approvals(
    tmp_path: Path, fake_llm: FakeLlmServer, postgres: EmbeddedPostgres, reader: ProjectionReader
) -> None:
    """Two sessions wait for approval; the dev server (SQLite file) is stopped and started again on its port.

    The worker process is NOT restarted: the SDK's pollers retry with backoff (warnings in the worker's log) and
    pick up again once the server is back, so the same process answers the queries and runs both decisions.
    """
    port = free_port()
    db_file = tmp_path / "temporal.sqlite"
    server = await start_dev_server(ui=False, db_file=db_file, port=port)
    try:
        async with runtime(server.target, fake_llm, postgres) as rt:
            worker = await rt.workers.start()
            sessions = [Transcript(rt.session(server.client)), Transcript(rt.session(server.client))]
            await park_on_approval(sessions[0], "call_a1", "dart analyze")
            await park_on_approval(sessions[1], "call_b1", "dart test")

            stopped = time.monotonic()
            await server.shutdown()
            await asyncio.sleep(2)  # down for a while: the worker's polls fail meanwhile
            server = await start_dev_server(ui=False, db_file=db_file, port=port)
            restarted = time.monotonic()
            report("server restart: stop to serving again", restarted - stopped)
            for transcript in sessions:
                transcript.session.client = rt.client(server.client)

            # Both still listed, in the projection and by the workflows (answered by the same worker process).
            await assert_pending_in_projection(reader, sessions[0].session, "call_a1")
            await assert_pending_in_projection(reader, sessions[1].session, "call_b1")
            for transcript, call_id in zip(sessions, ("call_a1", "call_b1"), strict=True):
                [pending] = await transcript.session.client.pending_approvals(transcript.session.id)
                assert pending.call_id == call_id
            report("server restart: restart to both approvals listed by query", time.monotonic() - restarted)

            for transcript, call_id in zip(sessions, ("call_a1", "call_b1"), strict=True):
                report(f"server restart: approve {call_id} -> tool_call", await approve(transcript, call_id))
            report("server restart: restart to both decided", time.monotonic() - restarted)
            assert worker.running, f"the worker did not survive the server restart:\n{worker.output}"
            assert len(rt.workers.started) == 1

            await finish(sessions[0], "call_a1", "dart analyze")
            await finish(sessions[1], "call_b1", "dart test")
            for transcript in sessions:
                await assert_settled_exactly(reader, transcript)
    finally:
        await server.shutdown()


async def test_the_worker_is_sigkilled_in_the_middle_of_an_llm_call(
    dev_server: DevServer, fake_llm: FakeLlmServer, postgres: EmbeddedPostgres, reader: ProjectionReader
) -> None:
    """The worker dies while an LLM request is in flight; a new worker retries the call once the server notices.

    The retry waits for the activity's heartbeat timeout (20 s, workflows/llm_calls.py) plus the retry policy's
    first interval (1 s): the test shows that wait through the pending activity's attempt and last failure. The
    step ends with exactly one assistant message, in the history and in the projection.
    """
    answer = "The answer is 42."
    async with runtime(dev_server.target, fake_llm, postgres) as rt:
        first = await rt.workers.start()
        transcript = Transcript(rt.session(dev_server.client))
        session = transcript.session
        # The first agent call hangs (the worker dies under it); its retry answers at once.
        session.script(classify("ask"), FakeReply(content=answer, delay_seconds=120), text(answer))
        await session.client.send_user_message(session.id, UserMessage(content="what is the answer?"))
        await until(lambda: len(session.llm_requests()) == 2, "the agent's LLM request to be in flight")

        await first.kill()
        killed = time.time()
        await rt.workers.start()
        # Nothing tells Temporal the attempt died with its worker: it finds out when the heartbeat timeout runs
        # out. The wait is visible on the workflow's pending activity (attempt, last failure, next attempt).
        handle = session.client.handle(session.id)
        failed_attempt: list[PendingActivityInfo] = []

        async def attempt_timed_out() -> bool:
            failed_attempt[:] = [
                a
                for a in (await handle.describe()).raw_description.pending_activities
                if a.activity_type.name == CHAT_COMPLETION_ACTIVITY and a.attempt >= 2
            ]
            return bool(failed_attempt)

        await until(attempt_timed_out, "the dead attempt to time out", LLM_RETRY_BOUND_SECONDS)
        report("LLM call: SIGKILL -> the server times the dead attempt out", time.time() - killed)
        failure = failed_attempt[0].last_failure
        assert failure.timeout_failure_info.timeout_type == TimeoutType.TIMEOUT_TYPE_HEARTBEAT, failure
        await until(lambda: len(session.llm_requests()) == 3, "the LLM call to be retried", LLM_RETRY_BOUND_SECONDS)
        retry = session.llm.received(session.id)[2]
        report("LLM call: SIGKILL -> the retried request reaches the LLM", retry.received_at - killed)

        async with step("the answer after the retry"):
            chunks = await transcript.events()
        report("LLM call: SIGKILL -> the answer", time.time() - killed)
        assert final(chunks).content == answer
        assert types(transcript.chunks) == ["agent_switched", "assistant_message"]
        requests = session.llm_requests()
        assert requests[2]["messages"] == requests[1]["messages"]  # the same step, retried

        history = await session.history()
        assert [(m.role, m.content) for m in history] == [("user", "what is the answer?"), ("assistant", answer)]
        await assert_settled_exactly(reader, transcript)
        assert [r.ok for r in await reader.llm_requests(session.id)] == [True, True]  # classification, agent step


async def test_the_worker_is_sigkilled_in_the_middle_of_a_projection_write(
    dev_server: DevServer,
    fake_llm: FakeLlmServer,
    postgres: EmbeddedPostgres,
    projection_pool: asyncpg.Pool,
    reader: ProjectionReader,
) -> None:
    """The projection write of a decision blocks on a lock the test holds; the worker is SIGKILLed meanwhile.

    The decision is acknowledged at once (the write is a regular activity, so it does not hold the workflow task).
    The dead worker's open transaction never commits; once the lock is released and a new worker runs, the write
    is retried after its heartbeat timeout, and the projection ends up equal to the workflow's history with nothing
    twice.
    """
    async with runtime(dev_server.target, fake_llm, postgres) as rt:
        first = await rt.workers.start()
        transcript = Transcript(rt.session(dev_server.client))
        session = transcript.session
        await park_on_approval(transcript, "call_w1", "dart format")
        await projected(reader, transcript)  # so the write that blocks is the decision's

        async with write_lock(postgres) as lock:
            decided = asyncio.create_task(session.decide("call_w1", "approve"))
            try:
                blocked = await lock.blocked_writers()
                await first.kill()
                killed = time.monotonic()
                await lock.release()

                # The dead worker's transaction never commits: its backend ends as soon as it runs on after the
                # lock, and the batch it was writing (the decision) is not in the projection.
                async def backends_gone() -> bool:
                    alive = await projection_pool.fetchval(
                        "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1::int[])", blocked
                    )
                    return alive == 0

                await until(backends_gone, "the dead worker's backend to go")
                [approval] = await reader.approvals(session.id)
                assert approval.status is ApprovalStatus.PENDING

                restarted = time.monotonic()
                await rt.workers.start()
                report("projection write: SIGKILL -> a new worker polling", time.monotonic() - killed)
                await asyncio.wait_for(asyncio.shield(decided), STEP_TIMEOUT_SECONDS)
            finally:
                await cancel(decided)
        report("projection write: restart -> the decision acknowledged", time.monotonic() - restarted)
        async with step("the re-emitted tool_call"):
            chunk = final(await transcript.events())
        report("projection write: restart -> the tool_call re-emitted", time.monotonic() - restarted)
        assert (chunk.call_id, chunk.requires_approval) == ("call_w1", False)
        # The write no longer holds a workflow task open: only the task the dead worker was running (if any) times
        # out, after seconds, not the 10 s a held task needed.
        for seconds in await workflow_task_timeouts(session):
            report("projection write: the dead worker's workflow task timed out after", seconds)
            assert seconds < 5

        await finish(transcript, "call_w1", "dart format")
        await assert_settled_exactly(reader, transcript)


async def test_a_decision_is_not_held_up_by_a_slow_projection_write(
    dev_server: DevServer, fake_llm: FakeLlmServer, postgres: EmbeddedPostgres, reader: ProjectionReader
) -> None:
    """A database that answers slowly (here: a lock) must not stall the conversation any more than one that is down."""
    async with runtime(dev_server.target, fake_llm, postgres) as rt:
        await rt.workers.start()
        transcript = Transcript(rt.session(dev_server.client))
        await park_on_approval(transcript, "call_s1", "dart doc")
        await projected(reader, transcript)
        async with write_lock(postgres):
            started = time.monotonic()
            decided = asyncio.create_task(transcript.session.decide("call_s1", "approve"))
            try:
                await asyncio.wait_for(asyncio.shield(decided), SLOW_DATABASE_BOUND_SECONDS)
            finally:
                report("slow projection: approve -> acknowledged (or given up on)", time.monotonic() - started)
                await cancel(decided)
            # The re-emitted call waits for the projection at most projection.EMIT_WAIT, then goes out anyway.
            reemitted = final(await asyncio.wait_for(transcript.events(), SLOW_DATABASE_BOUND_SECONDS + 3))
            report("slow projection: approve -> re-emitted tool_call", time.monotonic() - started)
            assert (reemitted.call_id, reemitted.requires_approval) == ("call_s1", False)
        await finish(transcript, "call_s1", "dart doc")
        await assert_settled_exactly(reader, transcript)
