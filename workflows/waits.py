"""The durable waits of a tool the IDE executes: for a human's decision, then for the IDE's result.

Both are workflow conditions with timers, so they survive any restart: an approval may expire (a model-visible
tool message says so), and an IDE call has a lease that closes it with an error result if no answer comes.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow

from workflows import tool_messages
from workflows.agents import Agent
from workflows.content import Content
from workflows.model import (
    ApprovalStatus,
    CallStatus,
    Decision,
    OutstandingCall,
    PendingApproval,
    SessionStatus,
    ToolCall,
)
from workflows.policy import evaluate
from workflows.session import Session


class ToolWaits:
    """Runs an IDE tool call: the approval the policy asks for, then the IDE's result."""

    def __init__(self, session: Session) -> None:
        self._session = session

    async def run_ide_tool(self, agent: Agent, call: ToolCall) -> None:
        """A tool the IDE executes: wait for approval if the policy says so, then for the IDE's result."""
        session = self._session
        requirement = evaluate(session.policy, call.name, call.arguments)
        arguments = call.arguments
        if requirement.requires_approval:
            decided = await self._await_approval(agent, call, requirement.reason, requirement.timeout_seconds)
            if decided is None:
                return
            arguments = decided
        elif call.id not in session.ledger.results:
            await session.announce_tool_call(call.id, call.name, arguments, requires_approval=False)
        await self._await_result(agent, call.model_copy(update={"arguments": arguments}))

    async def _await_approval(
        self, agent: Agent, call: ToolCall, reason: str, timeout_seconds: float | None
    ) -> dict[str, Any] | None:
        """Park until a decision, an implicit approval (the IDE's result) or expiry. Returns the args to execute."""
        session = self._session
        now = workflow.now()
        approval = PendingApproval(
            request_id=call.id,
            session_id=session.id,
            call_id=call.id,
            tool_name=call.name,
            subject=call.name,
            arguments=call.arguments,
            reason=reason,
            agent=agent.type,
            created_at=now,
            expires_at=now + timedelta(seconds=timeout_seconds) if timeout_seconds else None,
        )
        session.record_approval_request(approval, call, agent.type, now)
        await session.announce_tool_call(call.id, call.name, call.arguments, requires_approval=True, reason=reason)
        session.status = SessionStatus.AWAITING_APPROVAL
        ledger = session.ledger
        arrived = await session.wait_for_input(
            lambda: call.id in ledger.decisions or call.id in ledger.results, timeout_seconds
        )
        decision = ledger.decisions.pop(call.id, None)
        if not arrived:
            session.settle(approval, ApprovalStatus.EXPIRED, decided_by="expiry")
            session.close_call(call, tool_messages.approval_expired(call.name, timeout_seconds or 0), "expired", True)
            return None
        if decision is None:
            # A legacy IDE executes on click and sends only the result: that is an implicit approval.
            session.settle(approval, ApprovalStatus.APPROVED, decided_by="tool_result", decision=Decision.APPROVE)
            return call.arguments
        if decision.decision is Decision.REJECT:
            session.settle(approval, ApprovalStatus.REJECTED, decision=decision.decision, feedback=decision.feedback)
            session.close_call(call, tool_messages.rejected(call.name, decision.feedback), "rejected", emit=True)
            return None
        arguments = call.arguments
        if decision.decision is Decision.EDIT and decision.modified_arguments is not None:
            arguments = decision.modified_arguments
            session.history.amend_arguments(call.id, arguments)
        session.settle(
            approval,
            ApprovalStatus.APPROVED,
            decision=decision.decision,
            feedback=decision.feedback,
            edited=arguments if decision.decision is Decision.EDIT else None,
        )
        if call.id not in ledger.results:
            await session.announce_tool_call(call.id, call.name, arguments, requires_approval=False)
        return arguments

    async def _await_result(self, agent: Agent, call: ToolCall) -> None:
        """Park until the IDE answers; the lease closes the call with an error if it never does."""
        session = self._session
        lease = session.config.tool_lease_seconds
        session.outstanding[call.id] = OutstandingCall(
            call_id=call.id,
            tool_name=call.name,
            arguments=call.arguments,
            agent=agent.type,
            status=CallStatus.AWAITING_RESULT,
            since=workflow.now(),
            lease_expires_at=workflow.now() + timedelta(seconds=lease),
        )
        session.status = SessionStatus.AWAITING_TOOL_RESULT
        if not await session.wait_for_input(lambda: call.id in session.ledger.results, lease):
            session.close_call(call, tool_messages.lease_expired(call.name, lease), outcome="lease_expired", emit=True)
            return
        result = session.ledger.results.pop(call.id)
        # An execution error after approval is a failed tool, not a rejection (bug L3).
        if result.content is not None:
            content: Content = result.content
            failed = result.failed
        else:
            content, failed = tool_messages.from_ide_result(result.result, result.error), bool(result.error)
        session.close_call(call, content, outcome="failed" if failed else "completed")
