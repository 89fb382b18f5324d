"""Spec §10 scenarios 3-10, 12, 13 and 24: human approval of risky tool calls, and inputs that must not harm."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from temporalio.testing import WorkflowEnvironment

from client.conversation_client import ApprovalAlreadyResolvedError, UnknownCallIdError
from devstack.fake_llm import FakeLlmServer
from tests.conftest import RuntimeFactory
from tests.support import Session, call, classify, final, skip_time, text, tool_messages_for, types
from workflows.model import (
    ApprovalPolicy,
    ApprovalRule,
    ApprovalStatus,
    ChunkType,
)


async def _park_write(session: Session, call_id: str = "call_w1") -> None:
    """Route to the coder, which asks to write a file: the session parks on the approval."""
    session.script(classify("coder"), call("write_file", call_id, path="main.py", content="print(1)"))
    chunks = await session.say("create main.py")
    assert types(chunks) == ["agent_switched", "tool_call"]
    tool_call = final(chunks)
    assert (tool_call.call_id, tool_call.requires_approval, tool_call.approval_request_id) == (call_id, True, call_id)


async def test_approve_path(session: Session) -> None:
    """Scenario 3: pending and listed -> approve -> re-emitted call -> result -> answer; one tool message."""
    await _park_write(session)
    pending = await session.client.pending_approvals(session.id)
    assert [(p.call_id, p.tool_name, p.status) for p in pending] == [("call_w1", "write_file", ApprovalStatus.PENDING)]
    assert (await session.client.state(session.id)).status == "awaiting_approval"

    assert (await session.decide("call_w1", "approve")).duplicate is False
    reemitted = final(await session.events())
    assert (reemitted.type, reemitted.call_id, reemitted.requires_approval) == (ChunkType.TOOL_CALL, "call_w1", False)
    assert reemitted.arguments == {"path": "main.py", "content": "print(1)"}

    session.script(text("Created main.py."))
    await session.result("call_w1", {"written": True})
    answer = final(await session.events())
    assert (answer.type, answer.content) == (ChunkType.ASSISTANT_MESSAGE, "Created main.py.")

    history = await session.history()
    assert [m.role for m in history] == ["user", "assistant", "tool", "assistant"]
    assert [m.content for m in tool_messages_for(history, "call_w1")] == ['{"written": true}']
    [approval] = await session.client.approvals(session.id)
    assert (approval.status, approval.decision, approval.decided_by) == ("approved", "approve", "hitl_decision")
    assert await session.client.pending_approvals(session.id) == []


async def test_inputs_are_answered_with_the_events_they_caused(session: Session) -> None:
    """The update that delivers an input says where its events start on the stream and carries those published
    before the session paused: an approval's re-emitted call, a rejection's tool result; none for a message whose
    answer needs the LLM (that follows on the stream), and nothing waits when an input wakes nothing."""
    await _park_write(session)
    approved = await session.decide("call_w1", "approve")
    assert approved.offset == session.offset
    [emitted] = approved.events
    assert (emitted.offset, emitted.chunk.type, emitted.chunk.requires_approval) == (
        session.offset,
        ChunkType.TOOL_CALL,
        False,
    )
    assert emitted.chunk.is_final and emitted.chunk.arguments == {"path": "main.py", "content": "print(1)"}
    assert await session.events() == [emitted.chunk]  # the very event the stream holds, at that offset

    session.script(text("Written."), call("write_file", "call_w2", path="b.py", content=""), text("Not written."))
    answered = await session.result("call_w1", "ok")
    assert (answered.offset, answered.events) == (session.offset, [])  # the LLM is called: its answer is streamed
    assert types(await session.events()) == ["assistant_message"]

    await session.say("and b.py")  # parks on the next approval
    rejected = await session.decide("call_w2", "reject", feedback="not now")
    assert [e.chunk.type for e in rejected.events] == [ChunkType.TOOL_RESULT]
    assert [e.offset for e in rejected.events] == [session.offset]
    assert types(await session.events()) == ["tool_result", "assistant_message"]

    # A result for a call nobody waits for any more is acknowledged at once, with nothing to relay.
    late = await session.result("call_w2", "too late")
    assert late.duplicate and late.events == []


async def test_edit_path(session: Session) -> None:
    """Scenario 4: the IDE executes the edited arguments; history and approval record show them."""
    await _park_write(session)
    edited = {"path": "main.py", "content": "print(2)"}
    await session.decide("call_w1", "edit", modified_arguments=edited)
    assert final(await session.events()).arguments == edited

    session.script(text("Done."))
    await session.result("call_w1", "ok")
    final(await session.events())
    history = await session.history()
    assert history[1].tool_calls[0].arguments == edited
    [approval] = await session.client.approvals(session.id)
    assert approval.arguments == {"path": "main.py", "content": "print(1)"}
    assert (approval.edited_arguments, approval.decision, approval.status) == (edited, "edit", "approved")
    # The LLM's next request carries the arguments that were actually executed.
    assert json.loads(session.llm_requests()[-1]["messages"][2]["tool_calls"][0]["function"]["arguments"]) == edited


@pytest.mark.parametrize(
    ("feedback", "expected"),
    [("Use a temp dir instead", "Use a temp dir instead"), (None, "User rejected this operation")],
)
async def test_reject_path(session: Session, feedback: str | None, expected: str) -> None:
    """Scenarios 5 and 6: no execution, one tool message with the feedback (or the default), the LLM reacts."""
    await _park_write(session)
    session.script(text("Understood, I will not write it."))
    await session.decide("call_w1", "reject", feedback=feedback)
    chunks = await session.events()
    assert types(chunks) == ["tool_result", "assistant_message"]
    assert ChunkType.TOOL_CALL.value not in types(chunks)
    history = await session.history()
    [tool_message] = tool_messages_for(history, "call_w1")
    assert json.loads(tool_message.content or "") == {
        "status": "rejected",
        "tool_name": "write_file",
        "feedback": expected,
    }
    [approval] = await session.client.approvals(session.id)
    assert (approval.status, approval.feedback) == ("rejected", feedback)
    assert expected in json.dumps(session.llm_requests()[-1]["messages"])


async def test_duplicate_decisions(session: Session) -> None:
    """Scenario 7: a repeated decision is acknowledged with no effect; a contradicting one is refused."""
    await _park_write(session)
    assert (await session.decide("call_w1", "approve")).duplicate is False
    assert (await session.decide("call_w1", "approve")).duplicate is True
    final(await session.events())
    with pytest.raises(ApprovalAlreadyResolvedError, match="already"):
        await session.decide("call_w1", "reject", feedback="too late")
    assert (await session.decide("call_w1", "approve")).duplicate is True
    requests_before = len(session.llm_requests())

    session.script(text("Written."))
    await session.result("call_w1", "ok")
    final(await session.events())
    history = await session.history()
    assert len(tool_messages_for(history, "call_w1")) == 1
    assert len(session.llm_requests()) == requests_before + 1
    [approval] = await session.client.approvals(session.id)
    assert approval.status == "approved"


async def test_duplicate_and_late_tool_results(session: Session) -> None:
    """Scenario 8: the same result twice, at once and later, is processed once."""
    session.script(classify("ask"), call("read_file", "call_r1", path="main.py"))
    assert final(await session.say("explain main.py")).requires_approval is False
    session.script(text("It prints 1."))
    first = await session.result("call_r1", "print(1)")
    second = await session.result("call_r1", "print(1)")
    assert (first.duplicate, second.duplicate) == (False, True)
    final(await session.events())
    late = await session.result("call_r1", "print(1)")
    assert late.duplicate is True
    history = await session.history()
    assert len(tool_messages_for(history, "call_r1")) == 1
    assert len(session.llm_requests()) == 3  # classification, call, answer: no extra LLM call


async def test_unknown_call_ids_are_refused(session: Session) -> None:
    """Scenario 9: unknown ids get an error and change nothing."""
    await _park_write(session)
    before = await session.history()
    with pytest.raises(UnknownCallIdError):
        await session.result("call_nope", "x")
    with pytest.raises(UnknownCallIdError):
        await session.decide("call_nope", "approve")
    assert await session.history() == before
    assert len(await session.client.pending_approvals(session.id)) == 1


async def test_cross_session_decision_is_refused(runtime_with: RuntimeFactory, fake_llm: FakeLlmServer) -> None:
    """Scenario 10: a call id of session A means nothing in session B."""
    async with runtime_with() as client:
        owner, other = Session(client, fake_llm), Session(client, fake_llm)
        await _park_write(owner, "call_a")
        other.script(classify("ask"), text("Hello."))
        final(await other.say("hello"))
        with pytest.raises(UnknownCallIdError):
            await other.decide("call_a", "approve")
        with pytest.raises(UnknownCallIdError):
            await other.result("call_a", "x")
        [pending] = await client.pending_approvals(owner.id)
        assert pending.status == "pending"
        assert await client.pending_approvals(other.id) == []


async def test_tool_result_without_decision_is_an_implicit_approval(session: Session) -> None:
    """Scenario 12: a legacy IDE executes on click and sends only the result."""
    await _park_write(session)
    session.script(text("Done."))
    await session.result("call_w1", "written")
    chunks = await session.events()
    assert types(chunks) == ["assistant_message"]
    history = await session.history()
    assert [m.content for m in tool_messages_for(history, "call_w1")] == ["written"]
    [approval] = await session.client.approvals(session.id)
    assert (approval.status, approval.decided_by) == ("approved", "tool_result")


async def test_tool_failure_after_approval_is_not_a_rejection(session: Session) -> None:
    """Scenario 13: the execution error becomes the tool message; the approval stays approved."""
    await _park_write(session)
    await session.decide("call_w1", "approve")
    final(await session.events())
    session.script(text("The disk is full; free some space."))
    await session.result("call_w1", error="disk full")
    assert final(await session.events()).content == "The disk is full; free some space."
    history = await session.history()
    assert [m.content for m in tool_messages_for(history, "call_w1")] == ["Error: disk full"]
    [approval] = await session.client.approvals(session.id)
    assert approval.status == "approved"
    assert (await session.client.state(session.id)).counters.tool_calls == {"failed": 1}


async def test_approval_expiry(
    clock_runtime_with: RuntimeFactory, fake_llm: FakeLlmServer, clock_env: WorkflowEnvironment
) -> None:
    """Scenario 24: an undecided approval expires on a durable timer; the LLM learns it and continues."""
    policy = ApprovalPolicy(rules=[ApprovalRule(pattern="write_file", requires_approval=True, timeout_seconds=300)])
    async with clock_runtime_with(approval={"rules": policy.rules}) as client:
        session = Session(client, fake_llm)
        await _park_write(session)
        [pending] = await client.pending_approvals(session.id)
        assert pending.expires_at is not None and pending.expires_at - pending.created_at == timedelta(seconds=300)
        session.script(text("The approval expired, so I did not write the file."))
        await skip_time(clock_env, timedelta(seconds=301))
        chunks = await session.events()
        assert types(chunks) == ["tool_result", "assistant_message"]
        assert "approval expired" in (chunks[0].content or "")
        history = await session.history()
        assert "approval expired" in (tool_messages_for(history, "call_w1")[0].content or "")
        assert await client.pending_approvals(session.id) == []
        [approval] = await client.approvals(session.id)
        assert (approval.status, approval.decided_by) == ("expired", "expiry")
        with pytest.raises(ApprovalAlreadyResolvedError, match="expired"):
            await session.decide("call_w1", "approve")


async def test_ide_lease_expiry_closes_the_call(
    clock_runtime_with: RuntimeFactory, fake_llm: FakeLlmServer, clock_env: WorkflowEnvironment
) -> None:
    """An IDE that never answers does not block the session forever: the lease closes the call."""
    async with clock_runtime_with(tool_lease_seconds=120) as client:
        session = Session(client, fake_llm)
        session.script(classify("ask"), call("read_file", "call_r1", path="main.py"))
        final(await session.say("explain main.py"))
        assert (await client.state(session.id)).outstanding_calls[0].lease_expires_at is not None
        session.script(text("I could not read the file."))
        await skip_time(clock_env, timedelta(seconds=121))
        assert final(await session.events()).content == "I could not read the file."
        history = await session.history()
        assert "returned no result" in (tool_messages_for(history, "call_r1")[0].content or "")
        late = await session.result("call_r1", "too late")
        assert late.duplicate is True
        assert len(tool_messages_for(await session.history(), "call_r1")) == 1
