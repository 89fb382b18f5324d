"""Plans: the architect's `create_plan`, its one approval, then subtasks in dependency order, each by its agent.

A tool approval or a follow-up question inside a subtask parks that subtask and resumes it exactly there: nothing
re-routes or re-plans (bug B7). Plan validation and ordering are pure (workflows/plans.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta

from temporalio import workflow

from workflows import tool_messages
from workflows.agents import Agent
from workflows.content import preview_of
from workflows.model import (
    ApprovalStatus,
    ChunkType,
    PendingApproval,
    Plan,
    PlanDecisionKind,
    PlanStatus,
    SessionStatus,
    SubtaskStatus,
    ToolCall,
    UserMessage,
)
from workflows.plans import PlanError, block_dependants, next_subtask, parse_plan, subtask_instruction, summary
from workflows.policy import evaluate
from workflows.session import Session
from workflows.turn import TurnEnd

_SUBTASK_FAILURES = {
    TurnEnd.FAILED: "the LLM call failed",
    TurnEnd.BUDGET: "stopped at the tool-call budget",
    TurnEnd.PLAN_APPROVED: "a subtask cannot start a plan",
    TurnEnd.PLAN_REJECTED: "a subtask cannot start a plan",
}

RunTurn = Callable[..., Awaitable[TurnEnd]]


class PlanRunner:
    def __init__(self, session: Session) -> None:
        self._session = session

    async def propose(self, agent: Agent, call: ToolCall) -> TurnEnd | None:
        """The architect's create_plan: validate, ask for the one plan approval, and act on the decision.

        Returns how the turn ends (plan approved or rejected), or None when the LLM should go on (invalid plan,
        modification requested, approval expired) - it then learns why from the call's tool message.
        """
        session = self._session
        now = workflow.now()
        try:
            plan = parse_plan(
                call.arguments, plan_id=session.new_id(), available=session.agents, call_id=call.id, created_at=now
            )
        except PlanError as err:
            session.close_call(call, tool_messages.refused(str(err)), outcome="refused", emit=True)
            return None
        session.plans.append(plan)
        requirement = evaluate(session.policy, call.name, call.arguments)
        timeout_seconds = requirement.timeout_seconds
        remind_at, escalate_at = session.reminders.times(requirement, now)
        approval = PendingApproval(
            request_id=plan.approval_request_id,
            request_type="plan",
            session_id=session.id,
            call_id=call.id,
            tool_name=call.name,
            subject=plan.title[:100],
            arguments=summary(plan) | {"plan_id": plan.plan_id},
            reason="Every plan needs the user's approval before it runs",
            agent=agent.type,
            created_at=now,
            expires_at=now + timedelta(seconds=timeout_seconds) if timeout_seconds else None,
            remind_at=remind_at,
            escalate_at=escalate_at,
        )
        session.record_approval_request(approval, call, agent.type, now)
        session.projection.plan(plan)
        session.status = SessionStatus.AWAITING_APPROVAL
        await session.persist_before_wait_point()
        session.emit(
            ChunkType.PLAN_APPROVAL_REQUIRED,
            content=f"Plan '{plan.title}' ({len(plan.subtasks)} subtasks) needs your approval",
            call_id=call.id,
            tool_name=call.name,
            approval_request_id=plan.approval_request_id,
            plan_id=plan.plan_id,
            plan_summary=summary(plan),
            requires_approval=True,
            is_final=True,
        )
        request_id = plan.approval_request_id
        decisions = session.ledger.plan_decisions
        arrived = await session.reminders.wait(call.id, lambda: request_id in decisions, timeout_seconds)
        decision = decisions.pop(request_id, None)
        if not arrived or decision is None:
            session.settle(approval, ApprovalStatus.EXPIRED, decided_by="expiry")
            session.update_plan(plan, PlanStatus.EXPIRED)
            session.close_call(call, tool_messages.approval_expired(call.name, timeout_seconds or 0), "expired", True)
            return None
        status = ApprovalStatus.APPROVED if decision.decision is PlanDecisionKind.APPROVE else ApprovalStatus.REJECTED
        session.settle(
            approval, status, decided_by="plan_decision", decision=decision.decision, feedback=decision.feedback
        )
        plan.feedback = decision.feedback
        match decision.decision:
            case PlanDecisionKind.APPROVE:
                session.update_plan(plan, PlanStatus.IN_PROGRESS)
                session.close_call(call, tool_messages.plan_approved(len(plan.subtasks)), outcome="completed")
                return TurnEnd.PLAN_APPROVED
            case PlanDecisionKind.REJECT:
                session.update_plan(plan, PlanStatus.REJECTED)
                session.close_call(call, tool_messages.rejected(call.name, decision.feedback), outcome="rejected")
                session.emit(
                    ChunkType.PLAN_REJECTED,
                    content=f"Plan '{plan.title}' was rejected",
                    plan_id=plan.plan_id,
                    approval_request_id=request_id,
                    metadata={"feedback": decision.feedback} if decision.feedback else None,
                    is_final=True,
                )
                return TurnEnd.PLAN_REJECTED
            case PlanDecisionKind.MODIFY:
                session.update_plan(plan, PlanStatus.MODIFICATION_REQUESTED)
                session.close_call(call, tool_messages.plan_changes_requested(decision.feedback), outcome="rejected")
                session.emit(
                    ChunkType.PLAN_MODIFICATION_REQUESTED,
                    content=f"Revising plan '{plan.title}'",
                    plan_id=plan.plan_id,
                    approval_request_id=request_id,
                    metadata={"feedback": decision.feedback} if decision.feedback else None,
                )
                return None

    async def execute(
        self, plan: Plan, run_turn: RunTurn, next_user_message: Callable[[], Awaitable[UserMessage]]
    ) -> None:
        """Run the approved plan's subtasks in dependency order, each as a turn of its agent (`run_turn`); a
        follow-up question is answered by the next user message (`next_user_message`)."""
        session = self._session
        session.emit(
            ChunkType.STATUS,
            content=f"Executing plan '{plan.title}': {len(plan.subtasks)} subtasks",
            plan_id=plan.plan_id,
        )
        while (subtask := next_subtask(plan)) is not None:
            subtask.status = SubtaskStatus.IN_PROGRESS
            session.projection.plan(plan)
            session.emit(
                ChunkType.STATUS,
                content=f"Subtask {subtask.index + 1}/{len(plan.subtasks)}: {subtask.title} ({subtask.agent.value})",
                plan_id=plan.plan_id,
                metadata={"subtask_index": subtask.index, "status": subtask.status.value},
            )
            session.switch_to(subtask.agent, f"Plan subtask {subtask.index + 1}: {subtask.title}", source="plan")
            session.history.add_user(
                subtask_instruction(plan, subtask), message_id=session.new_id(), at=workflow.now(), name="plan"
            )
            end = await run_turn(last_word=False)
            while end is TurnEnd.QUESTION:
                answer = await next_user_message()
                session.history.add_user(answer.content, message_id=session.new_id(), at=workflow.now())
                end = await run_turn(last_word=False)
            if end is TurnEnd.ANSWERED:
                subtask.status, subtask.result = SubtaskStatus.DONE, preview_of(session.history.messages[-1].content)
            else:
                subtask.status, subtask.error = SubtaskStatus.FAILED, _SUBTASK_FAILURES[end]
            session.projection.plan(plan)
            session.emit(
                ChunkType.SUBTASK_COMPLETED,
                content=f"Subtask {subtask.index + 1} {subtask.status.value}: {subtask.title}",
                plan_id=plan.plan_id,
                error=subtask.error,
                metadata={"subtask_index": subtask.index, "status": subtask.status.value, "result": subtask.result},
            )
        block_dependants(plan)
        done = [s for s in plan.subtasks if s.status is SubtaskStatus.DONE]
        failed = len(done) < len(plan.subtasks)
        session.update_plan(plan, PlanStatus.FAILED if failed else PlanStatus.COMPLETED)
        lines = [
            f"- {s.index + 1}. {s.title}: {s.status.value}" + (f" ({s.error})" if s.error else "")
            for s in plan.subtasks
        ]
        verdict = f"failed: {len(done)} of {len(plan.subtasks)} subtasks done" if failed else "completed"
        session.emit(
            ChunkType.EXECUTION_COMPLETED,
            content=f"Plan '{plan.title}' {verdict}\n" + "\n".join(lines),
            plan_id=plan.plan_id,
            plan_summary=summary(plan),
            error=verdict if failed else None,
            is_final=True,
        )
