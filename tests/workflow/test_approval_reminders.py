"""Approval reminders and escalations (workflows/reminders.py, activities/webhook.py), and expiry kept apart from
rejection everywhere it is recorded.

Durable timers on a time-skipping server of the test's own (`clock_env`), the approval webhook received over real
HTTP (`devstack.webhook_sink`), the fake LLM over HTTP, PostgreSQL for the projection, metrics read from the process's
telemetry: nothing mocked.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import uuid
from datetime import timedelta
from typing import Any

import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from temporalio.testing import WorkflowEnvironment

from activities.webhook import EVENT_HEADER, NOTICE_HEADER, SIGNATURE_HEADER
from client.connection import connect_client
from client.conversation_client import ConversationClient
from client.projection_reader import ProjectionReader
from client.telemetry import telemetry
from devstack.fake_llm import FakeLlmServer
from devstack.postgres import EmbeddedPostgres
from devstack.webhook_sink import WebhookSink
from settings import OtelSettings, Settings, TemporalSettings
from tests.conftest import RuntimeFactory
from tests.projection.support import eventually
from tests.support import Session, call, classify, final, skip_time, text, tool_messages_for, types
from tests.workflow.test_telemetry import metric_points
from worker import running_worker
from workflows.model import ChunkType

SECRET = "hook-signing-key"
RULE = {
    "pattern": "write_file",
    "requires_approval": True,
    "remind_after_seconds": 60,
    "escalate_after_seconds": 120,
    "timeout_seconds": 300,
}


async def _park_write(session: Session, call_id: str) -> None:
    session.script(classify("coder"), call("write_file", call_id, path="main.py", content="print(1)"))
    chunks = await session.say("create main.py")
    assert types(chunks) == ["agent_switched", "tool_call"] and final(chunks).requires_approval is True


async def _until(check: Any, timeout: float = 30.0) -> None:
    async def poll() -> None:
        while not check():
            await asyncio.sleep(0.05)

    await asyncio.wait_for(poll(), timeout)


async def test_reminders_and_escalations_reach_the_stream_and_the_webhook_then_the_approval_expires(
    clock_runtime_with: RuntimeFactory,
    fake_llm: FakeLlmServer,
    clock_env: WorkflowEnvironment,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with WebhookSink() as sink:
        # The URL's query stands for a credential in it (a chat service's webhook path is one): never logged.
        approval = {"rules": [RULE], "webhook_url": f"{sink.url}?token=not-for-logs", "webhook_secret": SECRET}
        async with clock_runtime_with(approval=approval, llm_streaming=False) as client:
            waiting, decided = Session(client, fake_llm), Session(client, fake_llm)
            await _park_write(waiting, "call_w1")
            await _park_write(decided, "call_w2")
            [pending] = await client.pending_approvals(waiting.id)
            assert pending.remind_at == pending.created_at + timedelta(seconds=60)
            assert pending.escalate_at == pending.created_at + timedelta(seconds=120)
            assert pending.expires_at == pending.created_at + timedelta(seconds=300)
            # Decided before its reminder: no timer of it ever fires.
            decided.script(text("Written."))
            await decided.decide("call_w2", "approve")
            final(await decided.events())
            await decided.result("call_w2", "ok")
            final(await decided.events())

            sink.fail_next(503)  # the first delivery fails; the activity's retry delivers it
            with caplog.at_level(logging.WARNING):
                await skip_time(clock_env, timedelta(seconds=61))
                [reminder] = await waiting.next_events(1)
                await _until(lambda: len(sink.delivered()) == 1)
            assert (reminder.type, reminder.is_final) == (ChunkType.STATUS, False)
            metadata = reminder.metadata or {}
            assert (metadata["code"], metadata["call_id"], metadata["tool_name"]) == (
                "approval_reminder",
                "call_w1",
                "write_file",
            )
            assert (reminder.content or "").startswith(
                "Reminder: the approval of write_file (call call_w1) has waited 60 s since "
            )
            assert [hook.status for hook in sink.received] == [503, 200]
            assert "not-for-logs" not in caplog.text and "answered 503 on attempt 1" in caplog.text

            await skip_time(clock_env, timedelta(seconds=60))
            [escalation] = await waiting.next_events(1)
            assert (escalation.metadata or {})["code"] == "approval_escalation"
            await _until(lambda: len(sink.delivered()) == 2)

            waiting.script(text("Nobody approved the write, so I did not write the file."))
            await skip_time(clock_env, timedelta(seconds=181))
            expired = await waiting.events()
            assert types(expired) == ["tool_result", "assistant_message"]
            assert "approval expired" in (expired[0].content or "")
            state = await client.state(waiting.id)
            assert state.counters.approvals == {"expired": 1} and state.counters.tool_calls == {"expired": 1}

    # What the webhook received: both notices, each once, signed, with the commands that decide the call.
    reminded, escalated = sink.delivered()
    assert (reminded["kind"], escalated["kind"]) == ("reminder", "escalation")
    assert (reminded["session_id"], reminded["call_id"], reminded["tool_name"]) == (waiting.id, "call_w1", "write_file")
    assert 60 <= reminded["waited_seconds"] < 61 and 120 <= escalated["waited_seconds"] < 121
    assert reminded["commands"]["approve"] == f"agent-runtime approvals approve {waiting.id} call_w1"
    for hook in sink.received:
        assert hook.headers[SIGNATURE_HEADER.lower()] == (
            "sha256=" + hmac.new(SECRET.encode(), hook.raw, hashlib.sha256).hexdigest()
        )
        assert hook.headers[EVENT_HEADER.lower()] == f"approval.{hook.body['kind']}"
        assert hook.headers[NOTICE_HEADER.lower()] == hook.body["notice_id"]
    assert len({hook.body["notice_id"] for hook in sink.received}) == 2  # the retry repeats its notice's id
    assert all(hook.body["session_id"] == waiting.id for hook in sink.received)


async def test_without_a_webhook_reminders_are_events_only(
    clock_runtime_with: RuntimeFactory, fake_llm: FakeLlmServer, clock_env: WorkflowEnvironment
) -> None:
    """A reminder from the policy's defaults; no webhook configured, so no activity is scheduled at all."""
    approval = {"remind_after_seconds": 30, "rules": [{"pattern": "write_file", "requires_approval": True}]}
    async with clock_runtime_with(approval=approval, llm_streaming=False) as client:
        session = Session(client, fake_llm)
        await _park_write(session, "call_w1")
        await skip_time(clock_env, timedelta(seconds=31))
        [reminder] = await session.next_events(1)
        assert (reminder.metadata or {})["code"] == "approval_reminder"
        session.script(text("Written."))
        await session.decide("call_w1", "approve")
        assert final(await session.events()).requires_approval is False
        history = [e async for e in client.handle(session.id).fetch_history_events()]
        scheduled = [
            e.activity_task_scheduled_event_attributes.activity_type.name
            for e in history
            if e.HasField("activity_task_scheduled_event_attributes")
        ]
        assert "notify.approval_webhook" not in scheduled
        # The Web UI's timeline names each timer of a wait.
        timers = [
            json.loads(e.user_metadata.summary.data)
            for e in history
            if e.HasField("timer_started_event_attributes") and e.user_metadata.HasField("summary")
        ]
        assert timers == ["approval reminder: write_file call_w1", "IDE result lease: write_file call_w1"]


async def test_expired_stays_distinct_from_rejected(
    clock_env: WorkflowEnvironment, fake_llm: FakeLlmServer, postgres: EmbeddedPostgres, projection_pool: Any
) -> None:
    """In the model-visible tool message, the ledger, the counters, the projection and the metrics."""
    reader = InMemoryMetricReader()
    settings = Settings(
        llm_proxy_url=fake_llm.base_url,
        llm_streaming=False,
        llm_max_attempts=2,
        database_url=postgres.dsn,
        temporal=TemporalSettings(
            address=clock_env.client.service_client.config.target_host, task_queue=f"exp-{uuid.uuid4().hex[:8]}"
        ),
        approval={"rules": [{"pattern": "write_file", "requires_approval": True, "timeout_seconds": 300}]},
    )
    async with telemetry(OtelSettings(), metric_reader=reader) as otel:
        temporal = await connect_client(settings, **otel.client_options())
        async with running_worker(temporal, settings):
            client = ConversationClient(
                temporal, task_queue=settings.temporal.task_queue, config=settings.conversation_config()
            )
            rejected, expired = Session(client, fake_llm), Session(client, fake_llm)
            await _park_write(rejected, "call_r")
            rejected.script(text("I will not write it."))
            await rejected.decide("call_r", "reject", feedback="not now")
            assert types(await rejected.events()) == ["tool_result", "assistant_message"]
            await _park_write(expired, "call_e")
            expired.script(text("Nobody answered; I did not write it."))
            await skip_time(clock_env, timedelta(seconds=301))
            assert types(await expired.events()) == ["tool_result", "assistant_message"]

            # The model-visible tool messages.
            [rejection] = tool_messages_for(await rejected.history(), "call_r")
            [expiry] = tool_messages_for(await expired.history(), "call_e")
            assert '"status": "rejected"' in (rejection.content or "") and "not now" in (rejection.content or "")
            assert (expiry.content or "").startswith("Error: approval expired after 300 s without a decision")
            # The ledger and the counters.
            [by_human] = await client.approvals(rejected.id)
            [by_clock] = await client.approvals(expired.id)
            assert (by_human.status, by_human.decided_by, by_human.decision) == ("rejected", "hitl_decision", "reject")
            assert (by_clock.status, by_clock.decided_by, by_clock.decision) == ("expired", "expiry", None)
            rejected_state, expired_state = await client.state(rejected.id), await client.state(expired.id)
            assert rejected_state.counters.approvals == {"reject": 1}
            assert rejected_state.counters.tool_calls == {"rejected": 1}
            assert expired_state.counters.approvals == {"expired": 1}
            assert expired_state.counters.tool_calls == {"expired": 1}

            # The projection.
            projection = ProjectionReader(projection_pool)

            async def projected() -> bool:
                approvals = await projection.approvals(rejected.id) + await projection.approvals(expired.id)
                return [a.status for a in approvals] == ["rejected", "expired"]

            await eventually(projected)
            rows = {r.call_id: r.outcome for r in await projection.tool_calls(rejected.id)}
            rows |= {r.call_id: r.outcome for r in await projection.tool_calls(expired.id)}
            assert rows == {"call_r": "rejected", "call_e": "expired"}
            trail = await projection.approval_trail(expired.id, "call_e")
            assert [a.status for a in trail] == ["pending", "expired"]

    # The metrics (drained when telemetry closed), by decision; the expiration counted on its own.
    points = metric_points(reader)
    mine = settings.temporal.task_queue

    def counted(name: str) -> dict[tuple[str, ...], int]:
        return {
            tuple(f"{k}={v}" for k, v in sorted(p.attributes.items()) if k in ("decision", "outcome", "tool")): p.value
            for p in points.get(name, [])
            if p.attributes.get("task_queue") == mine
        }

    assert counted("agent_runtime_approvals") == {
        ("decision=reject", "tool=write_file"): 1,
        ("decision=expired", "tool=write_file"): 1,
    }
    assert counted("agent_runtime_approval_expirations") == {("tool=write_file",): 1}
    assert counted("agent_runtime_tool_calls") == {
        ("outcome=rejected", "tool=write_file"): 1,
        ("outcome=expired", "tool=write_file"): 1,
    }
