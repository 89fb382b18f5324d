"""Inputs as Signals (the design card): signal-with-start, and signals the update validator would have refused.

A signal cannot answer, so the workflow checks it with the same code as the update validator and drops what it
would refuse (logged by the worker). Dropping must leave the session exactly as it was.
"""

from __future__ import annotations

import uuid

from temporalio.api.enums.v1 import EventType

from devstack.fake_llm import FakeLlmServer
from tests.conftest import RuntimeFactory
from tests.support import Session, call, classify, final, text, types
from workflows.conversation import ConversationWorkflow
from workflows.model import (
    HITL_DECISION_SIGNAL,
    TOOL_RESULT_SIGNAL,
    USER_MESSAGE_SIGNAL,
    Decision,
    HitlDecision,
    ToolResult,
    UserMessage,
)


async def _signal_names(session: Session) -> list[str]:
    history = await session.client.handle(session.id).fetch_history()
    return [
        event.workflow_execution_signaled_event_attributes.signal_name
        for event in history.events
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED
    ]


async def test_signal_with_start_starts_a_session_and_answers(
    runtime_with: RuntimeFactory, fake_llm: FakeLlmServer
) -> None:
    async with runtime_with(llm_streaming=False) as client:
        session = Session(client, fake_llm, id=f"sig-{uuid.uuid4().hex[:12]}")
        session.script(classify("ask"), text("Hello!"))
        await client.signal_user_message(session.id, UserMessage(content="hi"))
        chunks = await session.events()
        assert types(chunks) == ["agent_switched", "assistant_message"]
        assert final(chunks).content == "Hello!"

        # The same call on a running session signals it (no second workflow, no error).
        session.script(text("Hello again!"))
        await client.signal_user_message(session.id, UserMessage(content="hi again"))
        assert final(await session.events()).content == "Hello again!"
        assert [m.role for m in await session.history()] == ["user", "assistant", "user", "assistant"]
        assert await _signal_names(session) == [USER_MESSAGE_SIGNAL, USER_MESSAGE_SIGNAL]


async def test_signals_with_unknown_call_ids_are_dropped_harmlessly(
    runtime_with: RuntimeFactory, fake_llm: FakeLlmServer
) -> None:
    async with runtime_with(llm_streaming=False) as client:
        session = Session(client, fake_llm, id=f"sig-{uuid.uuid4().hex[:12]}")
        session.script(classify("coder"), call("write_file", "call_w1", path="main.py", content="print(1)"))
        await client.signal_user_message(session.id, UserMessage(content="create main.py"))
        assert final(await session.events()).requires_approval is True
        before_history = await session.history()
        before_state = await client.state(session.id)

        handle = client.handle(session.id)
        await handle.signal(
            ConversationWorkflow.hitl_decision, HitlDecision(call_id="call_nope", decision=Decision.APPROVE)
        )
        await handle.signal(ConversationWorkflow.tool_result, ToolResult(call_id="call_nope", result="x"))
        # A signal carries a payload its type refuses too: an edit without arguments fails model validation.
        await handle.signal(HITL_DECISION_SIGNAL, {"call_id": "call_w1", "decision": "edit"})
        # Handlers run in arrival order: once the real decision is processed, the bad signals were too.
        await handle.signal(
            ConversationWorkflow.hitl_decision, HitlDecision(call_id="call_w1", decision=Decision.APPROVE)
        )
        reemitted = final(await session.events())
        assert (reemitted.call_id, reemitted.requires_approval) == ("call_w1", False)

        assert await session.history() == before_history
        after_state = await client.state(session.id)
        assert [c.call_id for c in after_state.outstanding_calls] == ["call_w1"]
        assert after_state.counters.approvals == {"approve": 1}
        assert after_state.counters.tool_calls == before_state.counters.tool_calls == {}
        [approval] = await client.approvals(session.id)
        assert (approval.call_id, approval.status, approval.decision) == ("call_w1", "approved", "approve")
        assert await _signal_names(session) == [
            USER_MESSAGE_SIGNAL,
            HITL_DECISION_SIGNAL,
            TOOL_RESULT_SIGNAL,
            HITL_DECISION_SIGNAL,
            HITL_DECISION_SIGNAL,
        ]

        # The session goes on: the IDE's result by signal, the answer, then the next message.
        session.script(text("Created main.py."))
        await handle.signal(ConversationWorkflow.tool_result, ToolResult(call_id="call_w1", result="ok"))
        assert final(await session.events()).content == "Created main.py."
        session.script(text("Anything else?"))
        await client.signal_user_message(session.id, UserMessage(content="thanks"))
        assert final(await session.events()).content == "Anything else?"
        history = await session.history()
        assert [m.role for m in history] == ["user", "assistant", "tool", "assistant", "user", "assistant"]
        assert [m.content for m in history if m.role == "tool"] == ["ok"]
