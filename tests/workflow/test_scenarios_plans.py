"""Spec §10 scenarios 22 and 23, and the plan behaviours of bug B7: one approval, subtasks in order, exact resumes."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from client.conversation_client import ApprovalAlreadyResolvedError, InvalidInputError
from devstack.fake_llm import FakeLlmServer, FakeReply
from tests.conftest import RuntimeFactory
from tests.support import Session, call, classify, final, text, tool_messages_for, types
from workflows.model import (
    ChunkType,
    PlanDecision,
    PlanDecisionKind,
)


def _plan_call(call_id: str = "call_plan1", **overrides: Any) -> FakeReply:
    arguments = {
        "title": "Add a cache",
        "description": "Add an LRU cache to the fetcher and prove it works",
        "subtasks": [
            {"title": "Write cache", "description": "Add cache.py", "agent": "coder", "estimated_time_minutes": 10},
            {
                "title": "Run tests",
                "description": "Run the test suite",
                "agent": "coder",
                "estimated_time_minutes": 5,
                "dependencies": [0],
            },
            {
                "title": "Explain",
                "description": "Summarize the change",
                "agent": "ask",
                "estimated_time_minutes": 2,
                "dependencies": [1],
            },
        ],
    } | overrides
    return FakeReply(tool_calls=[{"id": call_id, "name": "create_plan", "arguments": arguments}])


async def _propose(session: Session) -> str:
    session.script(classify("architect"), _plan_call())
    chunks = await session.say("plan and add a cache")
    assert types(chunks) == ["agent_switched", "plan_approval_required"]
    required = final(chunks)
    assert required.plan_summary and required.plan_summary["subtasks_count"] == 3
    assert required.approval_request_id == f"plan-approval-{required.plan_id}"
    return required.approval_request_id


async def _decide_plan(session: Session, request_id: str, decision: str, feedback: str | None = None):  # type: ignore[no-untyped-def]
    return await session.client.decide_plan(
        session.id,
        PlanDecision(approval_request_id=request_id, decision=PlanDecisionKind(decision), feedback=feedback),
    )


async def test_approved_plan_runs_in_order_and_a_tool_approval_resumes_its_subtask(session: Session) -> None:
    """Scenario 22 and B7: a tool approval inside subtask 2 resumes subtask 2; the plan is never re-approved."""
    request_id = await _propose(session)
    [pending] = await session.client.pending_approvals(session.id)
    assert (pending.request_type, pending.request_id, pending.tool_name) == ("plan", request_id, "create_plan")

    session.script(
        call("attempt_completion", "call_s1", result="cache.py written"),
        call("execute_command", "call_t1", command="pytest -q"),
    )
    assert (await _decide_plan(session, request_id, "approve")).duplicate is False
    chunks = await session.events()
    parked = final(chunks)
    assert (parked.type, parked.call_id, parked.requires_approval) == (ChunkType.TOOL_CALL, "call_t1", True)
    completed = [c for c in chunks if c.type is ChunkType.SUBTASK_COMPLETED]
    assert [c.metadata["status"] for c in completed if c.metadata] == ["done"]
    assert not any(c.type is ChunkType.ASSISTANT_MESSAGE and c.is_final for c in chunks)

    await session.decide("call_t1", "approve")
    assert final(await session.events()).call_id == "call_t1"
    session.script(call("attempt_completion", "call_s2", result="12 passed"), text("The cache stores results."))
    await session.result("call_t1", {"exit_code": 0, "stdout": "12 passed"})
    chunks = await session.events()
    done = final(chunks)
    assert done.type is ChunkType.EXECUTION_COMPLETED and done.error is None
    assert "completed" in (done.content or "")
    assert [c.metadata["subtask_index"] for c in chunks if c.type is ChunkType.SUBTASK_COMPLETED and c.metadata] == [
        1,
        2,
    ]

    state = await session.client.state(session.id)
    [plan] = state.plans
    assert plan.status == "completed" and [s.status for s in plan.subtasks] == ["done"] * 3
    assert [s.result for s in plan.subtasks] == ["cache.py written", "12 passed", "The cache stores results."]
    approvals = await session.client.approvals(session.id)
    assert sorted((a.request_type, a.status) for a in approvals) == [("plan", "approved"), ("tool", "approved")]
    assert state.counters.classification_calls == 1  # routing ran once: no re-routing after decisions
    assert [s.to_agent for s in state.switches] == ["architect", "coder", "ask"]
    history = await session.history()
    assert [m.name for m in history if m.role == "user"] == [None, "plan", "plan", "plan"]
    assert len(session.llm_requests()) == 6


async def test_plan_reject_returns_to_idle_without_execution(session: Session) -> None:
    """Scenario 23 (reject): plan_rejected, no subtask runs, the LLM is not called again."""
    request_id = await _propose(session)
    requests_before = len(session.llm_requests())
    await _decide_plan(session, request_id, "reject", "Too big")
    chunks = await session.events()
    assert types(chunks) == ["plan_rejected"] and final(chunks).metadata == {"feedback": "Too big"}
    assert len(session.llm_requests()) == requests_before
    state = await session.client.state(session.id)
    assert (state.status, state.plans[0].status) == ("idle", "rejected")
    history = await session.history()
    assert json.loads(tool_messages_for(history, "call_plan1")[0].content or "")["feedback"] == "Too big"
    assert (await _decide_plan(session, request_id, "reject")).duplicate is True
    with pytest.raises(ApprovalAlreadyResolvedError):
        await _decide_plan(session, request_id, "approve")


async def test_plan_modify_replans_with_one_new_approval(session: Session) -> None:
    """Scenario 23 (modify): the feedback reaches the architect, which proposes a new plan needing its own approval."""
    first = await _propose(session)
    session.script(_plan_call("call_plan2", title="Add a smaller cache"))
    await _decide_plan(session, first, "modify", "Only one subtask please")
    chunks = await session.events()
    assert types(chunks) == ["plan_modification_requested", "plan_approval_required"]
    second = final(chunks).approval_request_id
    assert second != first
    assert "Only one subtask please" in json.dumps(session.llm_requests()[-1]["messages"])
    pending = await session.client.pending_approvals(session.id)
    assert [p.request_id for p in pending] == [second]
    plans = (await session.client.state(session.id)).plans
    assert [p.status for p in plans] == ["modification_requested", "pending_approval"]


async def test_failed_subtask_blocks_its_dependants_and_fails_the_plan(session: Session) -> None:
    request_id = await _propose(session)
    session.script(*[FakeReply(status=400, error_message="context too long")])
    await _decide_plan(session, request_id, "approve")
    chunks = await session.events()
    done = final(chunks)
    assert done.type is ChunkType.EXECUTION_COMPLETED and "failed: 0 of 3" in (done.error or "")
    assert "blocked" in (done.content or "")
    [plan] = (await session.client.state(session.id)).plans
    assert [s.status for s in plan.subtasks] == ["failed", "blocked", "blocked"]
    assert plan.status == "failed" and plan.subtasks[0].error == "the LLM call failed"
    await session.history()


async def test_plan_survives_a_worker_restart_while_waiting_for_approval(
    dev_runtime_with: RuntimeFactory, fake_llm: FakeLlmServer
) -> None:
    task_queue = f"plans-restart-{uuid.uuid4().hex[:6]}"
    async with dev_runtime_with(task_queue=task_queue) as client:
        session = Session(client, fake_llm)
        request_id = await _propose(session)
    # The worker is gone; a new one (empty cache) takes over the same task queue and replays the session.
    async with dev_runtime_with(task_queue=task_queue) as client:
        session.client = client
        assert [p.request_id for p in await client.pending_approvals(session.id)] == [request_id]
        session.script(
            call("attempt_completion", "call_a", result="a"),
            call("attempt_completion", "call_b", result="b"),
            text("c"),
        )
        await _decide_plan(session, request_id, "approve")
        assert final(await session.events()).type is ChunkType.EXECUTION_COMPLETED
        assert (await client.state(session.id)).plans[0].status == "completed"


async def test_plan_inputs_are_checked(session: Session) -> None:
    request_id = await _propose(session)
    with pytest.raises(InvalidInputError, match="plan_decision"):
        await session.decide("call_plan1", "approve")
    with pytest.raises(InvalidInputError, match="runtime"):
        await session.result("call_plan1", "x")
    with pytest.raises(Exception, match="unknown approval_request_id"):
        await _decide_plan(session, "plan-approval-nope", "approve")
    assert [p.request_id for p in await session.client.pending_approvals(session.id)] == [request_id]
