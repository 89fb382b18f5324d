"""Scale on one machine: parked sessions per worker, cache misses, throughput with 1 and 2 workers, a killed worker.

    .venv/bin/python -m benchmarks.scale [--sessions N] [--concurrency N] [--approvals N] [--flows N]
        [--flow-concurrency N] [--flow-workers 1|2|1,2] [--skip-park] [--skip-flows] [--skip-kill]
        [--projection on|off] [--max-cached-workflows N] [--max-concurrent-workflow-tasks N]
        [--max-concurrent-activities N] [--max-concurrent-local-activities N]
        [--sticky-queue-schedule-to-start-timeout-seconds S]

On a 2-core machine the default 10,000 parked sessions take 17-30 minutes (~6-10 parks/s, both cores busy) and C
and D about 5 more; `--sessions 2000` gives the memory curve and the cache figures in a few minutes.

Not a test: it prints figures. Every piece runs as in production, each in its own process on 127.0.0.1
(benchmarks/stack.py): the Temporal dev server (in memory), PostgreSQL (embedded; the projection and the content
store), the workers (`python worker.py`) and, for the flows, the HTTP API, with an instant OpenAI-compatible fake LLM
over HTTP in this process. A seed flow is the issue's: a user message that is routed (one classification call) to
the coder, whose answer is an `execute_command` call needing approval; approve; the re-emitted call; the IDE's
result; the final answer.

A. Parked sessions, one worker (the typed client, `ConversationClient`, as an embedding gateway drives it; no API
   process). `--sessions` seed sessions, `--concurrency` at a time, each up to its wait point: the `tool_call` that
   needs approval. The worker's RSS (VmRSS of /proc/<pid>/status) at 0 parked, at 1k, 2k, 5k, 10k and at the end,
   the time to park them, the rate, and the latency of one park (p50 / p95 / p99). The worker runs with the
   settings' defaults (AGENT_RUNTIME__WORKER__*) unless the `--max-*` flags say otherwise.
B. Approve -> re-emitted tool_call, a session in the worker's sticky cache against one evicted from it: the newest
   parked sessions are in the cache, the oldest ones are not once more were parked than `max_cached_workflows` (the
   cache drops the least recently used). `--approvals` of each, alternating, one at a time; an evicted session's
   decision makes the worker fetch its whole history and replay it.
C. Throughput of seed flows over the HTTP API (as the gateway drives it: `POST /agent/message/stream`, the SSE body
   read up to the final chunk): `--flows` flows, `--flow-concurrency` at a time, with one worker, then two.
D. A worker killed mid-load: the same flows with two workers; once a third of them are done, one worker gets
   SIGKILL. A flow whose input did not come back as expected asks its session where it is, as a reconnecting
   gateway would, and re-sends the input if it was lost (every input is idempotent: message ids, call ids). Then
   every session of C and D gets one more message and must answer it, and its conversation must be valid: the
   history pairs every call with one tool message (the runtime's own `ConversationHistory` rebuilds it), has exactly
   the flow's messages, and every workflow history replays against the workflow code.

CPU per park and per flow is each process's CPU time (/proc; this process's own for the client and the fake LLM) over
the run, divided by the sessions; "cores busy" is the same time divided by the run's duration. The histories of D's
sessions are searched for workflow task and activity timeouts: what the kill cost them. A summary table ends the run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx
from temporalio.api.enums.v1 import EventType, TimeoutType
from temporalio.api.history.v1 import HistoryEvent

from benchmarks.http_api import Rows, post
from benchmarks.stack import Stack, stack, wait_until_polling
from cli.replay import LoadFailure, Verdict, replay_histories, workflow_histories
from client.connection import connect_client, open_content_store, session_config
from client.conversation_client import ConversationClient, ConversationError
from settings import WorkerSettings
from workflows.history import ConversationHistory, HistoryInvariantError
from workflows.model import (
    ApprovalStatus,
    ChunkType,
    Decision,
    HitlDecision,
    InputReceipt,
    StreamChunk,
    ToolResult,
    UserMessage,
    workflow_id_for,
)

RSS_CHECKPOINTS = (1000, 2000, 5000, 10000)
WORKER_SETTINGS = (
    "max_cached_workflows",
    "max_concurrent_workflow_tasks",
    "max_concurrent_activities",
    "max_concurrent_local_activities",
    "sticky_queue_schedule_to_start_timeout_seconds",
)
# One input, from sending it to its wait point; a killed worker's tasks wait out the workflow task timeout (10 s)
# and its activities their heartbeat timeout first.
STEP_TIMEOUT_SECONDS = 120.0
# How long a flow whose input did not come back waits for its session to get where the input leads, before sending
# the input again.
RECHECK_SECONDS = 15.0
HTTP_TIMEOUT_SECONDS = 60.0
# A seed flow that took longer than this in the kill run was held up by the kill.
SLOW_FLOW_MS = 5000.0

# The fake LLM answers from its deterministic default brain (devstack/fake_llm/_brain.py), never from per-session
# scripts: a request retried after a worker was killed gets the same answer again, as from a real model. This one is
# routed to the coder, who calls `execute_command` with `dart analyze` (which needs approval); a tool result is
# summarised, any other message answered with text.
SEED_REQUEST = "run dart analyze"
# This process's CPU: the driving client (typed client or HTTP) and the fake LLM.
BENCH = "this process (client, fake LLM)"

PARK = "park: user message -> tool_call (approval)"
APPROVE_CACHED = "approve -> re-emitted tool_call, cached"
APPROVE_EVICTED = "approve -> re-emitted tool_call, evicted"
FLOW = "seed flow: message, approve, result (whole)"
TO_APPROVAL = "  user_message -> tool_call needing approval"
APPROVE = "  hitl_decision approve -> re-emitted tool_call"
RESULT = "  tool_result -> final answer"
FOLLOW_UP = "follow-up message -> answer"


def say(line: str = "") -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def new_session(kind: str) -> str:
    return f"{kind}-{uuid.uuid4().hex[:10]}"


# --- A: parking sessions through the typed client ---


async def until_final(conversations: ConversationClient, session_id: str, receipt: InputReceipt) -> StreamChunk:
    """The input's final event: from its receipt, else from the stream after the receipt's events."""
    offset = receipt.offset or 0
    for emitted in receipt.events:
        offset = emitted.offset + 1
        if emitted.chunk.is_final:
            return emitted.chunk
    events = await conversations.until_wait_point(session_id, offset)
    return events[-1].chunk


def expect(chunk: StreamChunk, kind: ChunkType, *, requires_approval: bool | None = None) -> None:
    if chunk.type is not kind or (requires_approval is not None and chunk.requires_approval is not requires_approval):
        raise RuntimeError(f"expected a final {kind.value} (requires_approval={requires_approval}), got {chunk}")


@dataclass
class Parked:
    """Parked sessions in the order they reached their approval, with the call each waits on."""

    sessions: list[tuple[str, str]] = field(default_factory=list)
    checkpoints: list[tuple[int, float, float]] = field(default_factory=list)
    """(parked, seconds since the first was sent, worker RSS MiB)."""
    peak_rss: float = 0.0
    cpu_ms: dict[str, float] = field(default_factory=dict)
    """CPU time per parked session, by process."""
    settled_rss: float = 0.0
    seconds: float = 0.0


async def park(bench: Stack, conversations: ConversationClient, count: int, concurrency: int, rows: Rows) -> Parked:
    parked = Parked()
    checkpoints = sorted({c for c in RSS_CHECKPOINTS if c < count} | {count})
    parked.checkpoints.append((0, 0.0, bench.worker_rss_mib()))
    started = time.perf_counter()
    remaining = [count]

    async def one() -> None:
        session_id = new_session("park")
        t0 = time.perf_counter()
        message = UserMessage(content=SEED_REQUEST, wait_for_events=True)
        receipt = await conversations.send_user_message(session_id, message)
        call = await until_final(conversations, session_id, receipt)
        expect(call, ChunkType.TOOL_CALL, requires_approval=True)
        rows.add(PARK, time.perf_counter() - t0)
        parked.sessions.append((session_id, call.call_id or ""))
        done = len(parked.sessions)
        if checkpoints and done >= checkpoints[0]:
            checkpoints.pop(0)
            rss = bench.worker_rss_mib()
            parked.checkpoints.append((done, time.perf_counter() - started, rss))
            say(f"  {done:>6} parked  {time.perf_counter() - started:7.1f} s  worker RSS {rss:7.1f} MiB")
        if done % 500 == 0:
            bench.fake.fake.clear_requests()  # the fake keeps every request body otherwise

    async def runner() -> None:
        while remaining[0] > 0:
            remaining[0] -= 1
            await one()

    before = bench.cpu() | {BENCH: time.process_time()}
    async with sampling_peak(bench) as peak:
        await asyncio.gather(*(runner() for _ in range(concurrency)))
    parked.seconds = time.perf_counter() - started
    after = bench.cpu() | {BENCH: time.process_time()}
    parked.cpu_ms = {name: (after[name] - before[name]) * 1000 / count for name in after}
    parked.peak_rss = peak[0]
    await asyncio.sleep(5)  # let the projection writes and the cache settle
    parked.settled_rss = bench.worker_rss_mib()
    return parked


@contextlib.asynccontextmanager
async def sampling_peak(bench: Stack, index: int = 0) -> AsyncIterator[list[float]]:
    """The highest RSS of a worker, sampled every 0.5 s while the context is open (in `[0]` afterwards)."""
    peak = [bench.worker_rss_mib(index)]

    async def sample() -> None:
        while True:
            peak[0] = max(peak[0], bench.worker_rss_mib(index))
            await asyncio.sleep(0.5)

    task = asyncio.create_task(sample())
    try:
        yield peak
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


# --- B: approving cached and evicted sessions ---


async def approve_cached_and_evicted(
    conversations: ConversationClient, parked: Parked, samples: int, max_cached: int, rows: Rows
) -> bool:
    """Approve the oldest parked sessions (evicted when more than `max_cached` were parked) and the newest (cached),
    alternating. Returns whether the oldest can have been evicted at all."""
    samples = min(samples, len(parked.sessions) // 2)
    evicted = parked.sessions[:samples]
    cached = parked.sessions[-samples:]
    for (old_session, old_call), (new_session_id, new_call) in zip(evicted, cached, strict=True):
        for session_id, call_id, row in (
            (old_session, old_call, APPROVE_EVICTED),
            (new_session_id, new_call, APPROVE_CACHED),
        ):
            t0 = time.perf_counter()
            decision = HitlDecision(call_id=call_id, decision=Decision.APPROVE, wait_for_events=True)
            receipt = await conversations.decide(session_id, decision)
            expect(await until_final(conversations, session_id, receipt), ChunkType.TOOL_CALL, requires_approval=False)
            rows.add(row, time.perf_counter() - t0)
            await asyncio.sleep(0.05)
    return len(parked.sessions) - samples > max_cached


# --- C and D: seed flows over the HTTP API ---


@dataclass
class FlowStats:
    """What the flows of one run did: completed flows, inputs that had to be re-checked or re-sent."""

    completed: int = 0
    rechecked: int = 0
    resent: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    """Why inputs were re-checked: what came back instead of the expected chunk."""
    spans: list[tuple[float, float]] = field(default_factory=list)
    """Each completed flow's start and end, in seconds from the start of the run."""
    failures: list[str] = field(default_factory=list)
    sessions: list[str] = field(default_factory=list)


class Gateway:
    """Drives seed flows over the HTTP API; when an input does not come back as expected, it asks the session (the
    typed client's reads) where it is, and sends the input again if the session did not get it."""

    def __init__(self, http: httpx.AsyncClient, bench: Stack, conversations: ConversationClient) -> None:
        self.http = http
        self.bench = bench
        self.conversations = conversations

    async def step(
        self,
        session_id: str,
        message: dict[str, Any],
        arrived: Callable[[dict[str, Any]], bool],
        reached: Callable[[], Awaitable[bool]],
        stats: FlowStats,
    ) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STEP_TIMEOUT_SECONDS
        while True:
            try:
                streamed = await post(self.http, self.bench.api_url, session_id, message)
                last = streamed.chunks[-1] if streamed.chunks else {}
                if arrived(last):
                    return
                code = (last.get("metadata") or {}).get("code") or (last.get("metadata") or {}).get("reason")
                why = f"{message['type']} answered by {last.get('type')}" + (f" ({code})" if code else "")
            except httpx.HTTPError as err:
                why = f"{message['type']}: {type(err).__name__}"
            stats.rechecked += 1
            stats.reasons[why] += 1
            recheck_until = min(deadline, loop.time() + RECHECK_SECONDS)
            while loop.time() < recheck_until:
                with contextlib.suppress(ConversationError, RuntimeError):
                    if await reached():
                        return
                await asyncio.sleep(0.5)
            if loop.time() >= deadline:
                raise TimeoutError(f"{session_id}: {message['type']} did not arrive in {STEP_TIMEOUT_SECONDS} s")
            stats.resent += 1

    async def flow(self, stats: FlowStats, rows: Rows) -> None:
        session_id = new_session("flow")
        stats.sessions.append(session_id)
        conversations = self.conversations
        call_id = ""

        def asks_approval(chunk: dict[str, Any]) -> bool:
            nonlocal call_id
            call_id = chunk.get("call_id") or ""
            return chunk.get("type") == "tool_call" and chunk.get("requires_approval") is True

        async def waits_for_approval() -> bool:
            nonlocal call_id
            pending = await conversations.pending_approvals(session_id)
            call_id = pending[0].call_id if pending else ""
            return bool(pending)

        async def approved() -> bool:
            approvals = await conversations.approvals(session_id)
            return any(a.call_id == call_id and a.status is ApprovalStatus.APPROVED for a in approvals)

        async def answered() -> bool:
            history = await conversations.history(session_id)
            return bool(history) and history[-1].role == "assistant" and not history[-1].tool_calls

        started = time.perf_counter()
        user = {"type": "user_message", "content": SEED_REQUEST, "message_id": f"m-{session_id}"}
        await self.step(session_id, user, asks_approval, waits_for_approval, stats)
        t1 = time.perf_counter()
        decision = {"type": "hitl_decision", "call_id": call_id, "decision": "approve"}
        await self.step(session_id, decision, is_approved_call, approved, stats)
        t2 = time.perf_counter()
        result = {"type": "tool_result", "call_id": call_id, "result": "No issues found!"}
        await self.step(session_id, result, is_answer, answered, stats)
        t3 = time.perf_counter()
        rows.add(TO_APPROVAL, t1 - started)
        rows.add(APPROVE, t2 - t1)
        rows.add(RESULT, t3 - t2)
        rows.add(FLOW, t3 - started)
        stats.completed += 1


def is_approved_call(chunk: dict[str, Any]) -> bool:
    return chunk.get("type") == "tool_call" and chunk.get("requires_approval") is False


def is_answer(chunk: dict[str, Any]) -> bool:
    return chunk.get("type") == "assistant_message"


@dataclass
class Throughput:
    workers: int
    flows: int
    seconds: float
    rows: Rows
    stats: FlowStats
    cpu_ms_per_flow: dict[str, float]
    kill_at: float | None = None


async def run_flows(
    gateway: Gateway,
    count: int,
    concurrency: int,
    workers: int,
    *,
    kill: Callable[[], Awaitable[None]] | None = None,
) -> Throughput:
    bench = gateway.bench
    rows, stats = Rows(), FlowStats()
    remaining = [count]
    kill_at: list[float] = []
    before = bench.cpu() | {BENCH: time.process_time()}
    started = time.perf_counter()

    async def runner() -> None:
        while remaining[0] > 0:
            remaining[0] -= 1
            flow_started = time.perf_counter() - started
            try:
                await gateway.flow(stats, rows)
                stats.spans.append((flow_started, time.perf_counter() - started))
            except (TimeoutError, RuntimeError, ConversationError) as err:
                stats.failures.append(str(err))
            if kill is not None and not kill_at and stats.completed >= count // 3:
                kill_at.append(time.perf_counter() - started)
                await kill()
            if stats.completed % 200 == 0:
                bench.fake.fake.clear_requests()

    await asyncio.gather(*(runner() for _ in range(concurrency)))
    seconds = time.perf_counter() - started
    after = bench.cpu() | {BENCH: time.process_time()}
    cpu = {name: (after[name] - before.get(name, 0.0)) * 1000 / max(stats.completed, 1) for name in after}
    return Throughput(workers, count, seconds, rows, stats, cpu, kill_at[0] if kill_at else None)


# --- D: every conversation still answers, and is valid ---


@dataclass
class Verification:
    sessions: int = 0
    answered: int = 0
    valid_histories: int = 0
    replayed: int = 0
    problems: list[str] = field(default_factory=list)
    timeouts: dict[str, Counter[str]] = field(default_factory=dict)
    """By group of sessions: the timeouts and failures their workflow histories record (what a kill costs)."""


def timeouts_of(events: Iterable[HistoryEvent]) -> Counter[str]:
    """Workflow task and activity timeouts (by kind) and failed workflow tasks in a workflow history."""
    found: Counter[str] = Counter()
    for event in events:
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT:
            kind = TimeoutType.Name(event.workflow_task_timed_out_event_attributes.timeout_type)
            found[f"workflow task {kind.removeprefix('TIMEOUT_TYPE_').lower()}"] += 1
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT:
            failure = event.activity_task_timed_out_event_attributes.failure
            kind = TimeoutType.Name(failure.timeout_failure_info.timeout_type)
            found[f"activity {kind.removeprefix('TIMEOUT_TYPE_').lower()}"] += 1
        elif event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
            found["workflow task failed"] += 1
    return found


async def verify(gateway: Gateway, groups: dict[str, list[str]], rows: Rows, concurrency: int) -> Verification:
    """Each session answers one more message; its history is the flow's and pairs; its workflow history replays."""
    sessions = [session_id for members in groups.values() for session_id in members]
    group_of = {session_id: group for group, members in groups.items() for session_id in members}
    result = Verification(sessions=len(sessions), timeouts={group: Counter() for group in groups})
    conversations = gateway.conversations
    pending = iter(sessions)
    expected_roles = ["user", "assistant", "tool", "assistant", "user", "assistant"]

    async def check(session_id: str) -> None:
        t0 = time.perf_counter()
        message = {"type": "user_message", "content": "thanks", "message_id": f"t-{session_id}"}
        streamed = await post(gateway.http, gateway.bench.api_url, session_id, message)
        if not (streamed.chunks and is_answer(streamed.chunks[-1])):
            last = streamed.chunks[-1] if streamed.chunks else None
            result.problems.append(f"{session_id}: follow-up ended with {last}")
            return
        rows.add(FOLLOW_UP, time.perf_counter() - t0)
        result.answered += 1
        messages = await conversations.history(session_id)
        roles = [m.role for m in messages]
        try:
            rebuilt = ConversationHistory(messages)
        except HistoryInvariantError as err:
            result.problems.append(f"{session_id}: history does not pair: {err}")
            return
        if roles != expected_roles or rebuilt.open_calls:
            result.problems.append(f"{session_id}: history {roles}, open calls {len(rebuilt.open_calls)}")
            return
        result.valid_histories += 1

    async def runner() -> None:
        for session_id in pending:
            try:
                await check(session_id)
            except (httpx.HTTPError, ConversationError, RuntimeError) as err:
                result.problems.append(f"{session_id}: {type(err).__name__}: {err}")

    await asyncio.gather(*(runner() for _ in range(concurrency)))

    async def histories() -> AsyncIterator[Any]:
        for session_id in sessions:
            async for item in workflow_histories(conversations.temporal, workflow_id_for(session_id)):
                if not isinstance(item, LoadFailure):
                    result.timeouts[group_of[session_id]] += timeouts_of(item[0].events)
                yield item

    async for report in replay_histories(histories(), content=conversations.content):
        if report.verdict is Verdict.OK:
            result.replayed += 1
        else:
            result.problems.append(f"{report.workflow_id}: replay {report.verdict.value}: {report.detail}")
    return result


# --- the run ---


def worker_env(args: argparse.Namespace) -> dict[str, str]:
    return {
        f"AGENT_RUNTIME__WORKER__{name.upper()}": str(value)
        for name in WORKER_SETTINGS
        if (value := getattr(args, name)) is not None
    }


def effective_worker_settings(args: argparse.Namespace) -> WorkerSettings:
    given = {name: value for name in WORKER_SETTINGS if (value := getattr(args, name)) is not None}
    return WorkerSettings(**given)


@contextlib.asynccontextmanager
async def typed_client(bench: Stack) -> AsyncIterator[ConversationClient]:
    settings = bench.settings()
    async with open_content_store(settings) as content:
        client = await connect_client(settings, content=content)
        config = await session_config(client, settings)
        yield ConversationClient(client, task_queue=bench.task_queue, config=config, content=content)


async def warm_up(conversations: ConversationClient) -> None:
    session_id = new_session("warm")
    receipt = await conversations.send_user_message(session_id, UserMessage(content=SEED_REQUEST, wait_for_events=True))
    call_id = (await until_final(conversations, session_id, receipt)).call_id or ""
    decision = HitlDecision(call_id=call_id, decision=Decision.APPROVE, wait_for_events=True)
    await until_final(conversations, session_id, await conversations.decide(session_id, decision))
    result = ToolResult(call_id=call_id, result="ok", wait_for_events=True)
    await until_final(conversations, session_id, await conversations.send_tool_result(session_id, result))


async def run_park(args: argparse.Namespace, worker: WorkerSettings) -> list[tuple[str, str]]:
    say(f"\nA/B. {args.sessions} parked sessions on one worker ({describe(worker)}), {args.concurrency} at a time")
    rows = Rows()
    async with stack(True, args.projection == "on", workers=1, api=False, env=worker_env(args)) as bench:
        async with typed_client(bench) as conversations:
            await asyncio.sleep(1)
            await wait_until_polling(conversations.temporal, bench.task_queue, bench.workers[0])
            idle = bench.worker_rss_mib()
            await warm_up(conversations)
            parked = await park(bench, conversations, args.sessions, args.concurrency, rows)
            parked.checkpoints[0] = (0, 0.0, idle)
            evictable = await approve_cached_and_evicted(
                conversations, parked, args.approvals, worker.max_cached_workflows, rows
            )
            history_events = await count_events(conversations, parked.sessions[-1][0])
    say()
    say(f"  {'parked':>8} {'seconds':>9} {'worker RSS MiB':>15} {'MiB per 1k parked since the row before':>40}")
    previous = (0, 0.0, parked.checkpoints[0][2])
    for count, seconds, rss in parked.checkpoints:
        step = (rss - previous[2]) / (count - previous[0]) * 1000 if count > previous[0] else 0.0
        say(f"  {count:>8} {seconds:>9.1f} {rss:>15.1f} {step:>40.1f}")
        previous = (count, seconds, rss)
    rate = len(parked.sessions) / parked.seconds
    say(f"  parked {len(parked.sessions)} in {parked.seconds:.1f} s ({rate:.1f} sessions/s)")
    say(f"  worker RSS: peak {parked.peak_rss:.1f} MiB, 5 s after the last park {parked.settled_rss:.1f} MiB")
    say(f"  history of a parked session after its approval: {history_events} events")
    cpu = parked.cpu_ms
    say(f"  CPU per parked session: {sum(cpu.values()):.0f} ms ({', '.join(f'{k} {v:.0f}' for k, v in cpu.items())})")
    if not evictable:
        say(f"  (not more sessions than max_cached_workflows={worker.max_cached_workflows}: none was evicted)")
    say(f"\n  {'':<48} {'p50':>8} {'p95':>8} {'p99':>8}  (ms)")
    for row in (PARK, APPROVE_CACHED, APPROVE_EVICTED):
        say(rows.line(row))
    sizes = " / ".join(f"{mib:.0f}" for _, _, mib in parked.checkpoints)
    at = " / ".join(f"{count / 1000:g}k" if count >= 1000 else str(count) for count, _, _ in parked.checkpoints)
    summary: list[tuple[str, str]] = [
        (f"worker RSS at {at} parked (MiB)", sizes),
        (f"time to park {len(parked.sessions)} sessions", f"{parked.seconds:.0f} s ({rate:.1f}/s)"),
        ("park (ms)", rows.percentiles(PARK)),
        ("approve -> re-emitted call, cached (ms)", rows.percentiles(APPROVE_CACHED)),
    ]
    if evictable:
        summary.append(("approve -> re-emitted call, evicted (ms)", rows.percentiles(APPROVE_EVICTED)))
    return summary


async def count_events(conversations: ConversationClient, session_id: str) -> int:
    return len([e async for e in conversations.handle(session_id).fetch_history_events()])


def describe(worker: WorkerSettings) -> str:
    return (
        f"max_cached_workflows={worker.max_cached_workflows}, "
        f"max_concurrent_workflow_tasks={worker.max_concurrent_workflow_tasks}, "
        f"max_concurrent_activities={worker.max_concurrent_activities}, "
        f"sticky timeout {worker.sticky_queue_schedule_to_start_timeout_seconds} s"
    )


async def run_throughput(args: argparse.Namespace, worker: WorkerSettings) -> list[tuple[str, str]]:
    say(f"\nC/D. {args.flows} seed flows over the HTTP API, {args.flow_concurrency} at a time ({describe(worker)})")
    async with stack(True, args.projection == "on", workers=1, api=True, env=worker_env(args)) as bench:
        async with typed_client(bench) as conversations, httpx.AsyncClient(timeout=HTTP_TIMEOUT_SECONDS) as http:
            await wait_until_polling(conversations.temporal, bench.task_queue, bench.workers[0])
            gateway = Gateway(http, bench, conversations)
            await run_flows(gateway, 4, 2, 1)  # warm up the API, the worker and the connections
            groups: dict[str, list[str]] = {}
            summary: list[tuple[str, str]] = []
            for workers in (1, 2):
                if workers > len(bench.workers):
                    await bench.start_worker(conversations.temporal)
                if str(workers) in args.flow_workers:
                    result = await run_flows(gateway, args.flows, args.flow_concurrency, workers)
                    report_throughput(result)
                    groups[f"C, {workers} worker(s)"] = result.stats.sessions
                    summary.append((f"seed flows/s, {workers} worker(s)", throughput_figure(result)))
            if not args.skip_kill:

                async def kill_first() -> None:
                    await bench.kill_worker(0)

                killed = await run_flows(gateway, args.flows, args.flow_concurrency, 2, kill=kill_first)
                report_throughput(killed)
                groups["D, a worker killed"] = killed.stats.sessions
                summary.append(("seed flows/s, 2 workers, one SIGKILLed", throughput_figure(killed)))
                whole = sorted(killed.rows.values.get(FLOW, [0.0]))
                summary.append(("  slowest flow of that run", f"{whole[-1] / 1000:.1f} s"))
            total = sum(len(members) for members in groups.values())
            say(f"\n  Every session of C and D ({total}) gets one more message:")
            rows = Rows()
            checked = await verify(gateway, groups, rows, args.flow_concurrency)
    say(
        f"  answered {checked.answered}/{checked.sessions}, valid histories {checked.valid_histories}/"
        f"{checked.sessions}, replayed OK {checked.replayed} workflow runs"
    )
    say(rows.line(FOLLOW_UP))
    for group, found in checked.timeouts.items():
        listed = ", ".join(f"{kind} {times}" for kind, times in sorted(found.items())) or "none"
        say(f"  timeouts in the workflow histories of {group}: {listed}")
    for problem in checked.problems[:10]:
        say(f"  PROBLEM {problem}")
    if checked.problems:
        say(f"  {len(checked.problems)} problems in all")
    lost = checked.sessions - min(checked.answered, checked.valid_histories)
    summary.append(("sessions answering a follow-up afterwards", f"{checked.answered}/{checked.sessions}"))
    summary.append(("valid histories / replayed runs", f"{checked.valid_histories} / {checked.replayed}"))
    summary.append(("conversations lost", str(lost)))
    return summary


def throughput_figure(result: Throughput) -> str:
    failed = f", {len(result.stats.failures)} failed" if result.stats.failures else ""
    return f"{result.stats.completed / result.seconds:.2f} (a flow {result.rows.percentiles(FLOW)} ms{failed})"


def report_throughput(result: Throughput) -> None:
    stats = result.stats
    rate = stats.completed / result.seconds
    killed = f", one of them SIGKILLed at {result.kill_at:.1f} s" if result.kill_at is not None else ""
    done = f"{stats.completed}/{result.flows} flows in {result.seconds:.1f} s = {rate:.2f} flows/s"
    say(f"\n  {result.workers} worker(s){killed}: {done}")
    say(f"  inputs re-checked {stats.rechecked}, re-sent {stats.resent}, flows failed {len(stats.failures)}")
    for why, times in stats.reasons.most_common():
        say(f"    re-checked {times}x: {why}")
    for failure in stats.failures[:5]:
        say(f"  FAILED {failure}")
    cpu = result.cpu_ms_per_flow
    say(f"  CPU per flow: {sum(cpu.values()):.0f} ms ({', '.join(f'{k} {v:.0f}' for k, v in cpu.items())})")
    busy = {name: ms * stats.completed / 1000 / result.seconds for name, ms in cpu.items()}
    say(f"  cores busy: {sum(busy.values()):.2f} ({', '.join(f'{k} {v:.2f}' for k, v in busy.items())})")
    if result.kill_at is not None:
        kill_at = result.kill_at
        for label, spans in (
            ("in flight at the kill", [(a, b) for a, b in stats.spans if a <= kill_at < b]),
            ("started after the kill", [(a, b) for a, b in stats.spans if a > kill_at]),
        ):
            took = sorted(b - a for a, b in spans)
            slow = sum(1 for seconds in took if seconds * 1000 > SLOW_FLOW_MS)
            worst = f", slowest {took[-1]:.1f} s, p50 {statistics.median(took):.1f} s" if took else ""
            say(f"  flows {label}: {len(took)}, over {SLOW_FLOW_MS / 1000:.0f} s: {slow}{worst}")
    say(f"  {'':<48} {'p50':>8} {'p95':>8} {'p99':>8}  (ms)")
    for row in (FLOW, TO_APPROVAL, APPROVE, RESULT):
        say(result.rows.line(row))


async def run(args: argparse.Namespace) -> None:
    worker = effective_worker_settings(args)
    summary: list[tuple[str, str]] = []
    if not args.skip_park:
        summary += await run_park(args, worker)
    if not args.skip_flows:
        summary += await run_throughput(args, worker)
    say(f"\nSummary ({describe(worker)}; latencies p50 / p95 / p99)")
    for figure, value in summary:
        say(f"  {figure:<52} {value}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--sessions", type=int, default=10000, help="sessions to park (A)")
    parser.add_argument("--concurrency", type=int, default=16, help="sessions parked at a time (A)")
    parser.add_argument("--approvals", type=int, default=50, help="approvals of cached and of evicted sessions (B)")
    parser.add_argument("--flows", type=int, default=150, help="seed flows per run (C, D)")
    parser.add_argument("--flow-concurrency", type=int, default=16, help="flows at a time (C, D)")
    parser.add_argument("--skip-park", action="store_true", help="skip A and B")
    parser.add_argument("--skip-flows", action="store_true", help="skip C and D")
    parser.add_argument("--flow-workers", choices=["1", "2", "1,2"], default="1,2", help="worker counts of C")
    parser.add_argument("--skip-kill", action="store_true", help="skip D")
    parser.add_argument("--projection", choices=["on", "off"], default="on")
    for name in WORKER_SETTINGS:
        kind = float if name.endswith("_seconds") else int
        flag = "--" + name.replace("_", "-")
        parser.add_argument(flag, type=kind, default=None, help=f"AGENT_RUNTIME__WORKER__{name.upper()}")
    asyncio.run(run(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
