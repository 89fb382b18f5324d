"""OpenTelemetry: the spans and metrics of one approval scenario, through in-memory exporters."""

from __future__ import annotations

import uuid
from typing import Any

from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from client.conversation_client import ConversationClient
from client.telemetry import telemetry
from devstack.fake_llm import FakeLlmServer, FakeReply
from settings import OtelSettings, Settings, TemporalSettings
from tests.support import Session, call, classify, final
from worker import running_worker


def _metric_points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    points: dict[str, list[Any]] = {}
    data = reader.get_metrics_data()
    for resource in data.resource_metrics if data else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                points.setdefault(metric.name, []).extend(metric.data.data_points)
    return points


async def test_spans_and_metrics_of_an_approval(temporal_env: WorkflowEnvironment, fake_llm: FakeLlmServer) -> None:
    spans, reader = InMemorySpanExporter(), InMemoryMetricReader()
    async with telemetry(OtelSettings(), span_exporter=spans, metric_reader=reader) as otel:
        assert otel.enabled
        client = await Client.connect(
            temporal_env.client.service_client.config.target_host,
            data_converter=pydantic_data_converter,
            **otel.client_options(),
        )
        task_queue = f"otel-{uuid.uuid4().hex[:8]}"
        settings = Settings(llm_proxy_url=fake_llm.base_url, temporal=TemporalSettings(task_queue=task_queue))
        async with running_worker(client, settings):
            session = Session(
                ConversationClient(client, task_queue=task_queue, config=settings.conversation_config()), fake_llm
            )
            session.script(
                classify("coder"),
                call("execute_command", "call_o1", command="dart analyze"),
                FakeReply(content="Clean.", usage={"prompt_tokens": 90, "completion_tokens": 3}),
            )
            final(await session.say("run dart analyze"))
            await session.decide("call_o1", "approve")
            final(await session.events())
            await session.result("call_o1", {"exit_code": 0})
            assert final(await session.events()).content == "Clean."
    # Leaving `telemetry` drains Temporal's metric buffer one last time and flushes the span processor.
    points = _metric_points(reader)

    finished = spans.get_finished_spans()
    chats = [s for s in finished if s.name.startswith("chat ")]
    assert len(chats) == 3  # classification, the tool call, the answer
    answer = next(s for s in chats if s.attributes and s.attributes.get("gen_ai.usage.input_tokens") == 90)
    assert answer.attributes is not None
    assert answer.attributes["gen_ai.request.model"] == settings.llm_model
    assert answer.attributes["gen_ai.usage.output_tokens"] == 3
    assert tuple(answer.attributes["gen_ai.response.finish_reasons"]) == ("stop",)
    [wait] = [s for s in finished if s.name == "approval.wait"]
    assert wait.attributes is not None
    assert (wait.attributes["agent_runtime.tool"], wait.attributes["agent_runtime.approval.outcome"]) == (
        "execute_command",
        "approve",
    )
    # One trace: the approval wait and the LLM calls hang under the workflow started by the client's update.
    assert {s.context.trace_id for s in chats} == {wait.context.trace_id}
    assert any(s.name.startswith("RunActivity:llm.chat_completion") for s in finished)

    approvals = points.get("agent_runtime_approvals", [])
    assert [(p.attributes["decision"], p.value) for p in approvals] == [("approve", 1)]
    tokens = {p.attributes["type"]: p.value for p in points.get("agent_runtime_llm_tokens", [])}
    assert tokens.get("input", 0) >= 90
    assert "agent_runtime_approval_wait" in points and "agent_runtime_tool_calls" in points
