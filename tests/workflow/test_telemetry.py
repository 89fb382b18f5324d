"""OpenTelemetry through in-memory exporters: the span tree of a request, the GenAI conventions, retries, metrics,
and replay safety across a worker restart. (tests/system/test_telemetry_export.py exports to a real OTLP receiver.)
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from client.connection import connect_client
from client.conversation_client import ConversationClient
from client.telemetry import telemetry
from devstack.fake_llm import FakeLlmServer, FakeReply
from devstack.temporal import DevServer
from settings import OtelSettings, Settings, TemporalSettings
from tests.support import Session, call, classify, final, text
from worker import running_worker
from workflows.model import AgentType, UserMessage
from workflows.tracing import SessionTraces


def metric_points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    points: dict[str, list[Any]] = {}
    data = reader.get_metrics_data()
    for resource in data.resource_metrics if data else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                points.setdefault(metric.name, []).extend(metric.data.data_points)
    return points


def named(spans: Sequence[ReadableSpan], prefix: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name.startswith(prefix)]


def parent_of(span: ReadableSpan, spans: Sequence[ReadableSpan]) -> ReadableSpan:
    assert span.parent is not None, f"{span.name} has no parent"
    [parent] = [s for s in spans if s.context.span_id == span.parent.span_id]
    return parent


def requests_to_the_llm(spans: Sequence[ReadableSpan]) -> list[ReadableSpan]:
    return [s for s in spans if s.name == "POST" and s.kind is SpanKind.CLIENT]


def seconds(span: ReadableSpan) -> float:
    assert span.start_time is not None and span.end_time is not None
    return (span.end_time - span.start_time) / 1e9


def gateway_session(client: Client, settings: Settings, fake_llm: FakeLlmServer) -> Session:
    conversations = ConversationClient(
        client, task_queue=settings.temporal.task_queue, config=settings.conversation_config()
    )
    return Session(conversations, fake_llm)


def settings_for(target: str, fake_llm: FakeLlmServer) -> Settings:
    return Settings(
        llm_proxy_url=fake_llm.base_url,
        llm_max_attempts=2,
        temporal=TemporalSettings(address=target, task_queue=f"otel-{uuid.uuid4().hex[:8]}"),
    )


async def test_one_trace_per_request_with_genai_spans_and_metrics(
    temporal_env: WorkflowEnvironment, fake_llm: FakeLlmServer
) -> None:
    spans, reader = InMemorySpanExporter(), InMemoryMetricReader()
    gateway = trace.get_tracer("test.gateway")
    async with telemetry(OtelSettings(), span_exporter=spans, metric_reader=reader) as otel:
        assert otel.enabled
        settings = settings_for(temporal_env.client.service_client.config.target_host, fake_llm)
        client = await connect_client(settings, **otel.client_options())
        async with running_worker(client, settings):
            session = gateway_session(client, settings, fake_llm)
            session.script(
                classify("coder"),
                call("execute_command", "call_o1", command="dart analyze"),
                FakeReply(content="Clean.", usage={"prompt_tokens": 90, "completion_tokens": 3}),
            )
            with gateway.start_as_current_span("gateway: user message") as ask:
                final(await session.say("run dart analyze"))
            await asyncio.sleep(0.5)  # the human takes a while
            with gateway.start_as_current_span("gateway: decision") as decide:
                await session.decide("call_o1", "approve")
            final(await session.events())
            await session.result("call_o1", {"exit_code": 0})
            assert final(await session.events()).content == "Clean."
    # Leaving `telemetry` drains Temporal's metric buffer one last time and flushes the span processor.
    points = metric_points(reader)
    finished = spans.get_finished_spans()
    request_trace = ask.get_span_context().trace_id

    # The turn runs in the trace of the request that sent the message, under the client's update span.
    [turn] = named(finished, "invoke_agent")
    assert turn.name == "invoke_agent coder" and turn.context.trace_id == request_trace
    update = parent_of(turn, finished)
    assert update.name == "StartUpdateWithStartWorkflow:ConversationWorkflow" and update.kind is SpanKind.CLIENT
    assert parent_of(update, finished).name == "gateway: user message"
    assert turn.attributes is not None and turn.attributes["gen_ai.conversation.id"] == session.id

    # One CLIENT span per logical LLM call, under the turn, with the current GenAI attributes.
    chats = named(finished, "chat ")
    assert len(chats) == 3  # classification, the tool call, the answer
    for chat in chats:
        assert chat.kind is SpanKind.CLIENT and parent_of(chat, finished) is turn
        attributes = chat.attributes or {}
        assert attributes["gen_ai.operation.name"] == "chat"
        assert attributes["gen_ai.provider.name"] == "openai"
        assert "gen_ai.system" not in attributes
        assert attributes["gen_ai.request.model"] == settings.llm_model
        assert attributes["server.address"] == "127.0.0.1"
        assert attributes["server.port"] == int(fake_llm.base_url.rsplit(":", 1)[1])
    answer = next(s for s in chats if (s.attributes or {}).get("gen_ai.usage.input_tokens") == 90)
    assert answer.attributes is not None
    assert answer.attributes["gen_ai.usage.output_tokens"] == 3
    assert answer.attributes["gen_ai.response.model"] == settings.llm_model
    assert tuple(answer.attributes["gen_ai.response.finish_reasons"]) == ("stop",)

    # Each attempt is Temporal's RunActivity span under the call, with the HTTP request under it.
    posts = requests_to_the_llm(finished)
    assert len(posts) == 3
    for post in posts:
        attempt = parent_of(post, finished)
        assert attempt.name == "RunActivity:llm.chat_completion" and parent_of(attempt, finished) in chats
        assert (post.attributes or {})["http.response.status_code"] == 200
    # The LLM server (the fake, a FastAPI app) continues the trace from the request's `traceparent`.
    served = [s for s in named(finished, "POST /v1/chat/completions") if s.kind is SpanKind.SERVER]
    assert len(served) == 3 and all(parent_of(s, finished) in posts for s in served)

    # The approval's wait lasts as long as the human took, in the asking trace, linked to the deciding request.
    [wait] = named(finished, "approval.wait")
    assert wait.context.trace_id == request_trace and parent_of(wait, finished) is turn
    assert seconds(wait) >= 0.5
    assert wait.attributes is not None
    assert wait.attributes["agent_runtime.approval.decision"] == "approve"
    assert wait.attributes["gen_ai.tool.name"] == "execute_command"
    assert [link.context.trace_id for link in wait.links] == [decide.get_span_context().trace_id]

    # The GenAI histograms, one point set per logical call, with the standard attributes.
    usage = points["gen_ai.client.token.usage"]
    by_type = {p.attributes["gen_ai.token.type"]: p for p in usage}
    assert set(by_type) == {"input", "output"}
    # Every call's tokens are counted, once: the histograms add up to what the call spans report.
    for kind in ("input", "output"):
        reported = sum((c.attributes or {})[f"gen_ai.usage.{kind}_tokens"] for c in chats)
        assert (by_type[kind].count, by_type[kind].sum) == (3, reported)
    for point in usage:
        assert point.attributes["gen_ai.operation.name"] == "chat"
        assert point.attributes["gen_ai.provider.name"] == "openai"
        assert point.attributes["gen_ai.request.model"] == settings.llm_model
        assert point.attributes["gen_ai.response.model"] == settings.llm_model
        assert point.attributes["server.address"] == "127.0.0.1"
        assert list(point.explicit_bounds)[:3] == [1, 4, 16]
    [duration] = points["gen_ai.client.operation.duration"]
    assert duration.count == 3 and "error.type" not in duration.attributes
    assert list(duration.explicit_bounds)[:2] == [0.01, 0.02]

    # Our own metrics keep their names and labels, and hold what they say.
    assert [(p.attributes["decision"], p.value) for p in points["agent_runtime_approvals"]] == [("approve", 1)]
    [waited] = points["agent_runtime_approval_wait"]
    assert waited.count == 1 and waited.sum >= 0.5 and waited.attributes["tool"] == "execute_command"
    calls = {p.attributes["outcome"]: p.value for p in points["agent_runtime_tool_calls"]}
    assert calls == {"completed": 1}
    requests = {(p.attributes["purpose"], p.attributes["ok"]): p.value for p in points["agent_runtime_llm_requests"]}
    assert requests == {("classification", "true"): 1, ("agent", "true"): 2}
    assert "agent_runtime_llm_latency" not in points and "agent_runtime_llm_tokens" not in points


async def test_retries_are_attempts_under_one_call_span(
    dev_server: DevServer, fake_llm: FakeLlmServer, caplog: pytest.LogCaptureFixture
) -> None:
    spans, reader = InMemorySpanExporter(), InMemoryMetricReader()
    async with telemetry(OtelSettings(), span_exporter=spans, metric_reader=reader) as otel:
        settings = settings_for(dev_server.target, fake_llm)
        settings = settings.model_copy(update={"multi_agent_mode": False})
        client = await connect_client(settings, **otel.client_options())
        async with running_worker(client, settings):
            session = gateway_session(client, settings, fake_llm)
            session.script(FakeReply(status=503, error_message="upstream busy"), text("Hello."))
            with caplog.at_level(logging.WARNING):
                assert final(await session.say("hi")).content == "Hello."
            session.script(FakeReply(status=400, error_message="bad request"))
            await session.say("again")
    finished = spans.get_finished_spans()

    first, second = sorted(named(finished, "chat "), key=lambda s: s.start_time or 0)
    attempts = [s for s in named(finished, "RunActivity:") if parent_of(s, finished) is first]
    assert len(attempts) == 2
    failed, retried = sorted(
        (s for s in requests_to_the_llm(finished) if parent_of(s, finished) in attempts),
        key=lambda s: s.start_time or 0,
    )
    assert (failed.attributes or {})["error.type"] == "503"
    assert "http.request.resend_count" not in (failed.attributes or {})
    assert (retried.attributes or {})["http.request.resend_count"] == 1
    assert (retried.attributes or {})["http.response.status_code"] == 200
    assert "error.type" not in (first.attributes or {})  # the logical call succeeded
    # A refused request is final: one attempt, and the call's span says why.
    assert (second.attributes or {})["error.type"] == "LlmRequestRejected"
    assert second.status.status_code is trace.StatusCode.ERROR

    failures = [r.getMessage() for r in caplog.records if "LLM call failed on attempt" in r.getMessage()]
    assert any("attempt 1 of 2 (LlmUnavailable" in m and "Temporal retries it" in m for m in failures), failures
    assert any("LlmRequestRejected" in m and "no retry left" in m for m in failures), failures

    [duration_ok, duration_failed] = sorted(
        metric_points(reader)["gen_ai.client.operation.duration"], key=lambda p: "error.type" in p.attributes
    )
    assert duration_ok.count == 1 and duration_ok.sum >= 0.5  # the backoff before the retry is part of the call
    assert duration_failed.attributes["error.type"] == "LlmRequestRejected"


async def test_spans_survive_a_worker_restart_exactly_once(dev_server: DevServer, fake_llm: FakeLlmServer) -> None:
    """A worker that replays the session's history exports no span twice, and the spans still open when the first
    worker stopped keep their original start (span ids come from the workflow's deterministic randomness)."""
    spans, reader = InMemorySpanExporter(), InMemoryMetricReader()
    async with telemetry(OtelSettings(), span_exporter=spans, metric_reader=reader) as otel:
        settings = settings_for(dev_server.target, fake_llm)
        client = await connect_client(settings, **otel.client_options())
        session = gateway_session(client, settings, fake_llm)
        session.script(classify("coder"), call("execute_command", "call_r1", command="dart analyze"), text("Clean."))
        async with running_worker(client, settings):
            final(await session.say("run dart analyze"))
        # The stopped worker's open workflow is closed by the garbage collector, outside any workflow: its open
        # spans (the turn) must not be exported from there.
        before = len(spans.get_finished_spans())
        assert not named(spans.get_finished_spans(), "invoke_agent")
        async with running_worker(client, settings):
            await session.decide("call_r1", "approve")
            final(await session.events())
            await session.result("call_r1", {"exit_code": 0})
            assert final(await session.events()).content == "Clean."
    finished = spans.get_finished_spans()

    assert len(finished) > before
    ids = [s.context.span_id for s in finished]
    assert len(ids) == len(set(ids)), "a span was exported twice"
    [turn] = named(finished, "invoke_agent")
    chats = named(finished, "chat ")
    assert len(chats) == 3 and all(parent_of(chat, finished) is turn for chat in chats)
    [wait] = named(finished, "approval.wait")
    assert parent_of(wait, finished) is turn
    # The turn began before the restart, with the first request, and ended after it.
    assert turn.start_time is not None and wait.start_time is not None and turn.start_time <= wait.start_time
    assert [a.attributes["agent_runtime.approval.decision"] for a in [wait] if a.attributes] == ["approve"]


def test_a_span_left_open_by_a_dropped_workflow_is_not_ended() -> None:
    """A worker that stops drops its open conversations from its cache; their coroutines are closed later, by the
    garbage collector, outside the workflow. Their open spans must not end there (with a wrong end time, and once
    more when another worker replays the workflow and ends them)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    traces = SessionTraces("s1", provider.get_tracer("test"))  # a plain tracer: this runs outside any workflow

    async def parked_turn() -> None:
        with traces.turn(UserMessage(content="hi"), lambda: AgentType.CODER):
            await asyncio.Future()  # waits for a human, forever

    turn = parked_turn()
    turn.send(None)
    turn.close()  # what the garbage collector does to a dropped workflow's coroutine
    assert exporter.get_finished_spans() == ()

    async def finished_turn() -> None:
        with traces.turn(UserMessage(content="hi"), lambda: AgentType.CODER):
            await asyncio.sleep(0)

    asyncio.run(finished_turn())
    assert [s.name for s in exporter.get_finished_spans()] == ["invoke_agent coder"]
