"""Telemetry as an operator receives it: a real OTLP/HTTP receiver that decodes the protobuf exports.

Every process sets telemetry up from `AGENT_RUNTIME__OTEL__*` and exports over OTLP/HTTP: the worker with the API
(as `agent-runtime worker` and `agent-runtime api` do, in-process here), the API alone (its own lifespan sets
telemetry up), and the dev stack (`python -m devstack dev`'s `run_dev`). A gateway's request with a W3C
`traceparent` is one trace: the API's request span -> the update -> the workflow's turn -> each LLM call (with its
attempt and HTTP request) and projection write, plus the approval's wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import io
import json
import random
import threading
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as SpanProto
from pydantic import SecretStr

from api import ApiOptions, create_app
from cli.main import main as agent_runtime
from client.connection import connect_client
from client.conversation_client import ConversationClient
from client.telemetry import telemetry
from devstack.dev import READY_LINE, DevOptions, run_dev
from devstack.embedded_server import EmbeddedServer
from devstack.fake_llm import FakeLlmServer
from devstack.postgres import EmbeddedPostgres
from devstack.temporal import DevServer, free_port
from settings import OtelSettings, Settings, TemporalSettings
from tests.support import Session, call, classify, final, text
from worker import running_worker

KEY = "telemetry-test-key"


# --- the receiver ---


@dataclass
class ReceivedSpan:
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict[str, Any]
    links: list[tuple[str, str]]
    start: int
    end: int
    status: int
    resource: dict[str, Any]

    @property
    def seconds(self) -> float:
        return (self.end - self.start) / 1e9


@dataclass
class ReceivedPoint:
    metric: str
    unit: str
    attributes: dict[str, Any]
    value: float | None = None
    count: int | None = None
    total: float | None = None
    bounds: list[float] = field(default_factory=list)


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    return getattr(value, kind) if kind else None


def _attributes(pairs: Sequence[KeyValue]) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs}


class OtlpReceiver:
    """An OTLP/HTTP collector in a thread: `POST /v1/traces` and `/v1/metrics`, protobuf decoded and kept."""

    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self.points: list[ReceivedPoint] = []
        self.requests: dict[str, int] = {"/v1/traces": 0, "/v1/metrics": 0}
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the standard library's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                assert self.headers.get("Content-Type") == "application/x-protobuf", self.headers
                if self.path == "/v1/traces":
                    receiver._traces(ExportTraceServiceRequest.FromString(body))
                    answer = ExportTraceServiceResponse().SerializeToString()
                elif self.path == "/v1/metrics":
                    receiver._metrics(ExportMetricsServiceRequest.FromString(body))
                    answer = ExportMetricsServiceResponse().SerializeToString()
                else:
                    self.send_error(404)
                    return
                with receiver._lock:
                    receiver.requests[self.path] += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def _traces(self, request: ExportTraceServiceRequest) -> None:
        received = [
            ReceivedSpan(
                name=span.name,
                kind=span.kind,
                trace_id=span.trace_id.hex(),
                span_id=span.span_id.hex(),
                parent_id=span.parent_span_id.hex(),
                attributes=_attributes(span.attributes),
                links=[(link.trace_id.hex(), link.span_id.hex()) for link in span.links],
                start=span.start_time_unix_nano,
                end=span.end_time_unix_nano,
                status=span.status.code,
                resource=_attributes(resource.resource.attributes),
            )
            for resource in request.resource_spans
            for scope in resource.scope_spans
            for span in scope.spans
        ]
        with self._lock:
            self.spans += received

    def _metrics(self, request: ExportMetricsServiceRequest) -> None:
        received: list[ReceivedPoint] = []
        for resource in request.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    kind = metric.WhichOneof("data")
                    data = getattr(metric, kind)
                    for point in data.data_points:
                        attributes = _attributes(point.attributes)
                        if kind == "histogram":
                            received.append(
                                ReceivedPoint(
                                    metric.name,
                                    metric.unit,
                                    attributes,
                                    count=point.count,
                                    total=point.sum,
                                    bounds=list(point.explicit_bounds),
                                )
                            )
                        else:
                            number = point.as_int if point.WhichOneof("value") == "as_int" else point.as_double
                            received.append(ReceivedPoint(metric.name, metric.unit, attributes, value=number))
        with self._lock:
            self.points += received

    def __enter__(self) -> OtlpReceiver:
        threading.Thread(target=self._server.serve_forever, name="otlp-receiver", daemon=True).start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    # --- reading what arrived ---

    def trace(self, trace_id: str) -> list[ReceivedSpan]:
        return [s for s in self.spans if s.trace_id == trace_id]

    def named(self, spans: Sequence[ReceivedSpan], prefix: str) -> list[ReceivedSpan]:
        return [s for s in spans if s.name.startswith(prefix)]

    def parent(self, span: ReceivedSpan) -> ReceivedSpan:
        [parent] = [s for s in self.spans if s.span_id == span.parent_id and s.trace_id == span.trace_id]
        return parent

    def ancestors(self, span: ReceivedSpan) -> Iterator[ReceivedSpan]:
        by_id = {s.span_id: s for s in self.trace(span.trace_id)}
        while span.parent_id in by_id:
            span = by_id[span.parent_id]
            yield span

    def metric(self, name: str) -> list[ReceivedPoint]:
        # A cumulative metric is exported at every interval; the last export holds the totals.
        points = [p for p in self.points if p.metric == name]
        latest: dict[str, ReceivedPoint] = {}
        for point in points:
            latest[json.dumps(point.attributes, sort_keys=True)] = point
        return list(latest.values())


@pytest.fixture
def otlp() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as receiver:
        yield receiver


SPAN_KIND_SERVER = SpanProto.SpanKind.SPAN_KIND_SERVER
SPAN_KIND_CLIENT = SpanProto.SpanKind.SPAN_KIND_CLIENT


class Gateway:
    """The gateway's side: each request carries a `traceparent` of a trace of its own."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self._http = http
        self.traces: list[tuple[str, str]] = []

    async def post(self, session_id: str, message: dict[str, Any]) -> list[dict[str, Any]]:
        trace_id, span_id = f"{random.getrandbits(128):032x}", f"{random.getrandbits(64):016x}"
        self.traces.append((trace_id, span_id))
        headers = {"traceparent": f"00-{trace_id}-{span_id}-01", "X-Internal-Auth": KEY}
        body = {"session_id": session_id, "message": message}
        async with self._http.stream("POST", "/agent/message/stream", json=body, headers=headers) as response:
            assert response.status_code == 200, await response.aread()
            return [json.loads(line[6:]) async for line in response.aiter_lines() if line.startswith("data: ")]


def otel_settings(receiver: OtlpReceiver) -> OtelSettings:
    return OtelSettings(exporter_otlp_endpoint=receiver.url)


@contextlib.asynccontextmanager
async def gateway_to(base_url: str) -> AsyncIterator[Gateway]:
    async with httpx.AsyncClient(base_url=base_url, timeout=30, trust_env=False) as http:
        yield Gateway(http)


# --- the tests ---


async def test_a_request_is_one_trace_from_the_gateway_to_the_llm_and_the_database(
    dev_server: DevServer, fake_llm: FakeLlmServer, postgres: EmbeddedPostgres, otlp: OtlpReceiver
) -> None:
    settings = Settings(
        llm_proxy_url=fake_llm.base_url,
        database_url=SecretStr(postgres.dsn),
        internal_api_key=SecretStr(KEY),
        temporal=TemporalSettings(address=dev_server.target, task_queue=f"otlp-{uuid.uuid4().hex[:8]}"),
        otel=otel_settings(otlp),
    )
    session_id = f"otlp-{uuid.uuid4().hex[:12]}"
    fake_llm.script(
        session_id, [classify("coder"), call("execute_command", "call_t1", command="dart analyze"), text("Clean.")]
    )
    # As `agent-runtime worker` and `agent-runtime api` set themselves up, in one process.
    async with telemetry(settings.otel) as otel:
        client = await connect_client(settings, **otel.client_options())
        async with running_worker(client, settings):
            app = create_app(settings, temporal_client=client, options=ApiOptions(stream_timeout_seconds=20))
            async with EmbeddedServer(app) as api, gateway_to(api.base_url) as gateway:
                asked = await gateway.post(session_id, {"type": "user_message", "content": "run dart analyze"})
                assert asked[-1]["type"] == "tool_call" and asked[-1]["requires_approval"] is True
                await asyncio.sleep(0.5)  # the human takes a while
                await gateway.post(session_id, {"type": "hitl_decision", "call_id": "call_t1", "decision": "approve"})
                answered = await gateway.post(
                    session_id, {"type": "tool_result", "call_id": "call_t1", "result": {"exit_code": 0}}
                )
                assert answered[-1]["content"] == "Clean."
    # Leaving `telemetry` flushed the batched spans and exported the metrics one last time.
    assert otlp.requests["/v1/traces"] > 0 and otlp.requests["/v1/metrics"] > 0
    (ask_trace, gateway_span), (decide_trace, _), _ = gateway.traces

    # The API continues the gateway's trace; the update, the workflow's turn and everything it does follow.
    spans = otlp.trace(ask_trace)
    assert {s.resource["service.name"] for s in spans} == {"agent-runtime"}
    [request] = [s for s in spans if s.kind == SPAN_KIND_SERVER and s.name == "POST /agent/message/stream"]
    assert request.parent_id == gateway_span
    assert request.attributes["http.route"] == "/agent/message/stream"
    [update] = otlp.named(spans, "StartUpdateWithStartWorkflow:ConversationWorkflow")
    assert update.kind == SPAN_KIND_CLIENT and request in otlp.ancestors(update)
    [turn] = otlp.named(spans, "invoke_agent")
    assert otlp.parent(turn) is update
    assert turn.attributes["gen_ai.agent.name"] == "coder" and turn.attributes["gen_ai.conversation.id"] == session_id

    chats = otlp.named(spans, "chat ")
    assert len(chats) == 3 and all(otlp.parent(chat) is turn for chat in chats)
    for chat in chats:
        assert chat.kind == SPAN_KIND_CLIENT
        assert chat.attributes["gen_ai.operation.name"] == "chat"
        assert chat.attributes["gen_ai.provider.name"] == "openai"
        assert chat.attributes["gen_ai.request.model"] == settings.llm_model
        assert chat.attributes["gen_ai.response.model"] == settings.llm_model
        assert chat.attributes["server.address"] == "127.0.0.1"
        assert chat.attributes["gen_ai.usage.input_tokens"] > 0
        assert "gen_ai.system" not in chat.attributes
        [attempt] = [s for s in spans if s.parent_id == chat.span_id]
        assert attempt.name == "RunActivity:llm.chat_completion"
        [post] = [s for s in spans if s.parent_id == attempt.span_id and s.kind == SPAN_KIND_CLIENT]
        assert post.name == "POST" and post.attributes["http.response.status_code"] == 200
    # Projection writes: those of the turn under it, the session's first record (before the turn) under the update.
    writes = otlp.named(spans, "RunActivity:persistence.record")
    assert writes and all(update in otlp.ancestors(write) for write in writes)
    assert any(turn in otlp.ancestors(write) for write in writes)

    [wait] = otlp.named(spans, "approval.wait")
    assert otlp.parent(wait) is turn and wait.seconds >= 0.5
    assert wait.attributes["agent_runtime.approval.decision"] == "approve"
    assert wait.attributes["gen_ai.tool.call.id"] == "call_t1"
    assert [trace for trace, _ in wait.links] == [decide_trace]
    decision = otlp.trace(decide_trace)
    assert otlp.named(decision, "POST /agent/message/stream")
    assert otlp.named(decision, "StartWorkflowUpdate:submit_hitl_decision")

    # The GenAI metrics with their standard attributes, and ours.
    usage = otlp.metric("gen_ai.client.token.usage")
    assert {p.attributes["gen_ai.token.type"] for p in usage} == {"input", "output"}
    for point in usage:
        assert point.unit == "{token}" and point.bounds[:3] == [1, 4, 16]
        for name in ("gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.request.model", "server.address"):
            assert name in point.attributes
    input_tokens = sum(p.total or 0 for p in usage if p.attributes["gen_ai.token.type"] == "input")
    assert input_tokens == sum(chat.attributes["gen_ai.usage.input_tokens"] for chat in chats)
    [duration] = otlp.metric("gen_ai.client.operation.duration")
    assert duration.unit == "s" and duration.count == 3
    [approvals] = otlp.metric("agent_runtime_approvals")
    assert approvals.attributes["decision"] == "approve" and approvals.value == 1
    [waited] = otlp.metric("agent_runtime_approval_wait")
    assert waited.unit == "s" and (waited.total or 0) >= 0.5


async def test_the_api_sets_telemetry_up_itself(
    dev_server: DevServer, fake_llm: FakeLlmServer, otlp: OtlpReceiver
) -> None:
    """`agent-runtime api`: the app connects and sets telemetry up in its lifespan, from the settings."""
    settings = Settings(
        llm_proxy_url=fake_llm.base_url,
        internal_api_key=SecretStr(KEY),
        multi_agent_mode=False,
        temporal=TemporalSettings(address=dev_server.target, task_queue=f"otlp-{uuid.uuid4().hex[:8]}"),
        otel=otel_settings(otlp),
    )
    session_id = f"otlp-{uuid.uuid4().hex[:12]}"
    fake_llm.script(session_id, [text("Hello.")])
    async with running_worker(dev_server.client, settings):
        async with EmbeddedServer(create_app(settings)) as api, gateway_to(api.base_url) as gateway:
            events = await gateway.post(session_id, {"type": "user_message", "content": "hi"})
            assert events[-1]["content"] == "Hello."
    [(trace_id, gateway_span)] = gateway.traces
    spans = otlp.trace(trace_id)
    [request] = otlp.named(spans, "POST /agent/message/stream")
    assert request.parent_id == gateway_span
    [update] = otlp.named(spans, "StartUpdateWithStartWorkflow:ConversationWorkflow")
    assert request in otlp.ancestors(update)


async def test_the_dev_stack_exports_traces_and_metrics(
    dev_server: DevServer, postgres: EmbeddedPostgres, otlp: OtlpReceiver
) -> None:
    """`python -m devstack dev` against existing Temporal and PostgreSQL (its own fake LLM, worker and API)."""
    settings = Settings(
        database_url=SecretStr(postgres.dsn),
        temporal=TemporalSettings(address=dev_server.target, task_queue=f"otlp-dev-{uuid.uuid4().hex[:8]}"),
        otel=otel_settings(otlp),
    )
    options = DevOptions(llm_port=free_port(), api_port=free_port())
    out, stop = io.StringIO(), asyncio.Event()
    dev = asyncio.create_task(run_dev(settings, options, out=out, stop=stop))
    try:
        for _ in range(600):
            if READY_LINE in out.getvalue() or dev.done():
                break
            await asyncio.sleep(0.05)
        assert READY_LINE in out.getvalue() and otlp.url in out.getvalue(), out.getvalue()
        async with gateway_to(f"http://127.0.0.1:{options.api_port}") as gateway:
            events = await gateway.post(f"dev-{uuid.uuid4().hex[:8]}", {"type": "user_message", "content": "hello"})
            assert events[-1]["is_final"] is True
    finally:
        stop.set()
        assert await dev == 0
    [(trace_id, gateway_span)] = gateway.traces
    spans = otlp.trace(trace_id)
    [request] = otlp.named(spans, "POST /agent/message/stream")
    assert request.parent_id == gateway_span
    [turn] = otlp.named(spans, "invoke_agent")
    assert request in otlp.ancestors(turn)
    assert otlp.named(spans, "chat ")
    assert otlp.metric("gen_ai.client.operation.duration")


async def test_a_decision_from_the_cli_is_traced(
    dev_server: DevServer, fake_llm: FakeLlmServer, otlp: OtlpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`agent-runtime approvals approve`: the command's update is a trace, and the wait it ends links to it."""
    settings = Settings(
        llm_proxy_url=fake_llm.base_url,
        temporal=TemporalSettings(address=dev_server.target, task_queue=f"otlp-cli-{uuid.uuid4().hex[:8]}"),
        otel=otel_settings(otlp),
    )
    for name, value in {"TEMPORAL__ADDRESS": dev_server.target, "OTEL__EXPORTER_OTLP_ENDPOINT": otlp.url}.items():
        monkeypatch.setenv(f"AGENT_RUNTIME__{name}", value)
    async with telemetry(settings.otel) as otel:
        client = await connect_client(settings, **otel.client_options())
        async with running_worker(client, settings):
            session = Session(
                ConversationClient(
                    client, task_queue=settings.temporal.task_queue, config=settings.conversation_config()
                ),
                fake_llm,
            )
            session.script(classify("coder"), call("execute_command", "call_c1", command="make"))
            assert final(await session.say("build it")).requires_approval is True
            code = await asyncio.to_thread(agent_runtime, ["approvals", "approve", session.id, "call_c1"])
            assert code == 0
            final(await session.events())
    [wait] = {s.span_id: s for s in otlp.named(otlp.spans, "approval.wait")}.values()
    [(decided_in, _)] = wait.links
    decisions = otlp.named(otlp.trace(decided_in), "StartWorkflowUpdate:submit_hitl_decision")
    assert decisions and decisions[0].kind == SPAN_KIND_CLIENT and decisions[0].parent_id == ""
