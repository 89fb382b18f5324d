"""The durable waits of a tool the IDE executes: for a human's decision, then for the IDE's result.

Both are workflow conditions with timers, so they survive any restart: an approval may expire (a model-visible
tool message says so), and an IDE call has a lease that closes it with an error result if no answer comes.

Before the wait, the policy (workflows/policy.py) and the remembered decisions (workflows/grants.py) may approve a
call without asking: an allow rule with conditions, or a grant of the session or of its project (read through an
activity, so a replay sees what the live run saw; workflows/project_grants.py). Each such approval is recorded
already settled, decided by "policy" or "remembered", in the ledger, the projection and the metrics, and the
`tool_call` event says so in its metadata; the model sees nothing of it. A human approval may be remembered
(`HitlDecision.remember`): the grant is derived from the call and kept by the session or its project.

Runs whose history evaluated a tool call before this existed keep the first-match reading they ran with (patch
`safe-approvals`, decided at a run's first IDE tool call, so an idle session in flight switches at once).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

from workflows import tool_messages
from workflows.agents import Agent
from workflows.content import Content
from workflows.grants import can_be_remembered, derive_grant, first_match
from workflows.model import (
    PROJECT_GRANTS_ACTIVITY,
    REMEMBER_PROJECT_GRANT_ACTIVITY,
    ApprovalGrant,
    ApprovalRequirement,
    ApprovalStatus,
    CallStatus,
    Decision,
    OutstandingCall,
    PendingApproval,
    ProjectGrants,
    ProjectGrantsRequest,
    RememberDecision,
    SessionStatus,
    ToolCall,
)
from workflows.patches import has_change
from workflows.policy import describe_rule, evaluate, evaluate_first_match
from workflows.session import Session

SAFE_APPROVALS_PATCH = "safe-approvals"
GRANTS_ACTIVITY_TIMEOUT = timedelta(seconds=10)
GRANTS_ACTIVITY_RETRY = RetryPolicy(maximum_attempts=3, initial_interval=timedelta(milliseconds=200))


class ToolWaits:
    """Runs an IDE tool call: the approval the policy asks for, then the IDE's result."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self._safe: bool | None = None

    def _reads_safely(self) -> bool:
        """Whether this run uses deny rules, shell-aware conditions, automatic-approval records and remembered
        decisions. Decided at the run's first IDE tool call rather than at its start: a run that has evaluated no
        call yet switches at once, one whose history holds an evaluation keeps that reading until it continues as
        new (it must replay as it ran)."""
        if self._safe is None:
            self._safe = has_change(SAFE_APPROVALS_PATCH, baseline=self._session.lean)
        return self._safe

    async def run_ide_tool(self, agent: Agent, call: ToolCall) -> None:
        """A tool the IDE executes: approved by the policy, by a remembered decision or by a human (or not), then
        the IDE's result."""
        if not self._reads_safely():
            await self._run_first_match(agent, call)
            return
        session = self._session
        requirement = evaluate(session.policy, call.name, call.arguments)
        arguments = call.arguments
        if requirement.requires_approval:
            grant = None if requirement.deny_rule else await self._remembered(call)
            if grant is None:
                decided = await self._await_approval(agent, call, requirement)
                if decided is None:
                    return
                arguments = decided
            else:
                reason = f"Remembered decision {grant.grant_id} ({grant.scope}): {grant.description}"
                session.approve_automatically(
                    call, agent.type, decided_by="remembered", reason=reason, grant_id=grant.grant_id
                )
                await self._announce(call, {"approved_by": "remembered", "grant_id": grant.grant_id, "reason": reason})
        elif requirement.conditional and requirement.rule_index is not None:
            rule = session.policy.rules[requirement.rule_index]
            reason = f"Allowed by {describe_rule(rule, requirement.rule_index)}"
            session.approve_automatically(call, agent.type, decided_by="policy", reason=reason)
            await self._announce(call, {"approved_by": "policy", "reason": reason})
        else:
            await self._announce(call, None)
        await self._await_result(agent, call.model_copy(update={"arguments": arguments}))

    async def _announce(self, call: ToolCall, metadata: dict[str, Any] | None) -> None:
        """Send a call that needs no (more) approval to the IDE, unless its result is already in."""
        if call.id not in self._session.ledger.results:
            await self._session.announce_tool_call(
                call.id, call.name, call.arguments, requires_approval=False, metadata=metadata
            )

    async def _remembered(self, call: ToolCall) -> ApprovalGrant | None:
        """The grant that approves this call: the session's own, else its project's (read now, through an
        activity, so a revocation holds from the next call on). None, and a human is asked, when there is none or
        the project's grants cannot be read."""
        session = self._session
        if not can_be_remembered(call.name, call.arguments):
            return None
        grant = session.grants.match(call.name, call.arguments)
        if grant is not None or session.project is None:
            return grant
        session.pauses.pause()
        try:
            found = await workflow.execute_activity(
                PROJECT_GRANTS_ACTIVITY,
                ProjectGrantsRequest(project=session.project),
                result_type=ProjectGrants,
                start_to_close_timeout=GRANTS_ACTIVITY_TIMEOUT,
                retry_policy=GRANTS_ACTIVITY_RETRY,
                summary=f"remembered decisions of project {session.project}",
            )
        except ActivityError as err:
            workflow.logger.warning("Project grants not read, asking a human: %s", err.cause or err)
            return None
        return first_match(found.grants, call.name, call.arguments)

    async def _remember(self, call: ToolCall, remember: RememberDecision) -> str | None:
        """Keep the grant an approval asked for (in the session, or in its project); returns its id."""
        session = self._session
        grant = derive_grant(
            call.name,
            call.arguments,
            remember,
            grant_id=f"grant-{session.new_id()}",
            session_id=session.id,
            call_id=call.id,
            created_at=workflow.now(),
        )
        if isinstance(grant, str):
            workflow.logger.warning("Approval of %s not remembered: %s", call.id, grant)
            return None
        if grant.scope == "session":
            return session.grants.add(grant).grant_id
        session.project = session.project or grant.project
        session.pauses.pause()
        try:
            kept = await workflow.execute_activity(
                REMEMBER_PROJECT_GRANT_ACTIVITY,
                grant,
                result_type=ApprovalGrant,
                start_to_close_timeout=GRANTS_ACTIVITY_TIMEOUT,
                retry_policy=GRANTS_ACTIVITY_RETRY,
                summary=f"remember for project {grant.project}: {grant.description}"[:200],
            )
        except ActivityError as err:
            workflow.logger.warning("Approval of %s not remembered for its project: %s", call.id, err.cause or err)
            return None
        return kept.grant_id

    async def _run_first_match(self, agent: Agent, call: ToolCall) -> None:
        """The reading of runs that evaluated a call before `safe-approvals` (see `_reads_safely`)."""
        session = self._session
        requirement = evaluate_first_match(session.policy, call.name, call.arguments)
        arguments = call.arguments
        if requirement.requires_approval:
            decided = await self._await_approval(agent, call, requirement)
            if decided is None:
                return
            arguments = decided
        elif call.id not in session.ledger.results:
            await session.announce_tool_call(call.id, call.name, arguments, requires_approval=False)
        await self._await_result(agent, call.model_copy(update={"arguments": arguments}))

    async def _await_approval(
        self, agent: Agent, call: ToolCall, requirement: ApprovalRequirement
    ) -> dict[str, Any] | None:
        """Park until a decision, an implicit approval (the IDE's result) or expiry, reminding and escalating on the
        way when the policy says so (workflows/reminders.py). Returns the args to execute."""
        session = self._session
        reason, timeout_seconds = requirement.reason, requirement.timeout_seconds
        now = workflow.now()
        remind_at, escalate_at = session.reminders.times(requirement, now)
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
            remind_at=remind_at,
            escalate_at=escalate_at,
        )
        session.record_approval_request(approval, call, agent.type, now)
        await session.announce_tool_call(call.id, call.name, call.arguments, requires_approval=True, reason=reason)
        session.status = SessionStatus.AWAITING_APPROVAL
        ledger = session.ledger
        arrived = await session.reminders.wait(
            call.id, lambda: call.id in ledger.decisions or call.id in ledger.results, timeout_seconds
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
        remembered_as = None
        if self._safe and decision.decision is Decision.APPROVE and decision.remember is not None:
            remembered_as = await self._remember(call, decision.remember)
        session.settle(
            approval,
            ApprovalStatus.APPROVED,
            decision=decision.decision,
            feedback=decision.feedback,
            edited=arguments if decision.decision is Decision.EDIT else None,
            remembered_as=remembered_as,
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
        summary = f"IDE result lease: {call.name} {call.id}"
        if not await session.wait_for_input(lambda: call.id in session.ledger.results, lease, summary=summary):
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
