"""One conversation's state, shared by the parts of the workflow, and the steps every part takes the same way.

The workflow (workflows/conversation.py) owns a `Session`; the turn (turn.py), the waits (waits.py), the runtime
tools (runtime_tools.py) and the plans (plan_runner.py) act on it. The steps here exist once: a call ends only
through `close_call` (its one tool message, invariants I1 and I2), an approval is settled only through `settle`, the
agent changes only through `switch_to`, and a `tool_call` is announced only after it is in the projection (I7).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from datetime import datetime
from typing import Any

from temporalio import workflow
from temporalio.contrib.workflow_streams import WorkflowStream

from workflows.agents import available_agents
from workflows.content import Content, preview_of
from workflows.emitter import Emitter
from workflows.grants import SessionGrants
from workflows.history import ConversationHistory
from workflows.ledger import CallLedger
from workflows.metrics import SessionMetrics
from workflows.model import (
    AgentSwitchRecord,
    AgentType,
    ApprovalStatus,
    CallStatus,
    ChunkType,
    Decision,
    OutstandingCall,
    PendingApproval,
    Plan,
    PlanDecisionKind,
    PlanStatus,
    SessionStatus,
    SubtaskStatus,
    SwitchAgent,
    ToolCall,
    TranscriptArchive,
    UserMessage,
)
from workflows.observability import SessionView
from workflows.pauses import Pauses
from workflows.policy import DEFAULT_APPROVAL_POLICY
from workflows.projection import Projection
from workflows.records import SessionRecord
from workflows.reminders import ApprovalReminders
from workflows.state import CarriedState, ConversationInput
from workflows.tracing import SessionTraces

# The operator's view: the waiting call's id and tool in the search attributes, approval reminders and escalations.
# Asked lazily where either would first change what a run does (an upsert, an approval with a reminder), so sessions
# that use neither record nothing, and runs from before replay as they ran.
OPERATOR_VIEW_PATCH = "operator-view"


class Session:
    """The state of one session: history, approvals, agent, plans, status, counters, and where events go.

    Args:
        input: The workflow's input.
        carried: What the previous run carried over (a fresh state for a new session).
        stream: The workflow's event stream (constructed in the workflow's `__init__`, as the library requires).
    """

    def __init__(self, input: ConversationInput, carried: CarriedState, stream: WorkflowStream) -> None:
        config = input.config
        self.id = input.session_id
        self.config = config
        self.policy = config.approval_policy or DEFAULT_APPROVAL_POLICY
        self.agents = available_agents(config.multi_agent_mode)
        self.history = ConversationHistory(
            carried.history, first_seq=carried.first_seq, answered=carried.answered_call_ids
        )
        self.transcript: TranscriptArchive | None = carried.transcript
        self.title_text = carried.title
        self.context_tokens = carried.context_tokens or config.llm_context_tokens
        self.ledger = CallLedger(self.history, carried.approvals)
        self.agent = carried.current_agent
        self.switches = list(carried.switches)
        self.switch_count = max(carried.switch_count, len(self.switches))
        self.inbox: deque[UserMessage | SwitchAgent] = deque(carried.queued_inputs)
        self.counters = carried.counters
        self.created_at = carried.created_at
        self.run = carried.runs
        self.last_activity = workflow.now()
        self.outstanding: dict[str, OutstandingCall] = {}
        self.status = SessionStatus.IDLE
        self.plans: list[Plan] = list(carried.plans)
        self.grants = SessionGrants(carried.grants)
        self.project = carried.project
        self.traces = SessionTraces(self.id)
        self.projection = Projection(self.id, carried.unprojected, counters=self.counters, traces=self.traces)
        # When the answer whose tool calls are being run arrived (the projection's `requested_at` of those calls).
        self.answer_started_at = workflow.now()
        self.metrics = SessionMetrics()
        self.pauses = Pauses()
        self.lean = False
        """Runs started with the `lean-turns` patch, the baseline that implies every earlier one (workflows/patches.py):
        the projection is written at wait points, a call approved after it was announced is re-announced without
        waiting for the projection, search attributes change only when the session waits, and input updates answer
        with the events they caused."""
        self._announced: set[str] = set()
        self.live_tokens = False
        """Publish token deltas of the answers (the newest input that continues a turn asked for them)."""
        self._operator_view: bool | None = None
        self.emitter = Emitter(
            self.id,
            stream,
            self.projection,
            search_attributes=config.search_attributes,
            view=self.view,
            waiting_call=lambda: config.waiting_call_attributes and self.operator_view(),
        )
        self.reminders = ApprovalReminders(self)

    def new_id(self) -> str:
        return str(workflow.uuid4())

    def operator_view(self) -> bool:
        """Whether this run keeps the waiting call in the search attributes and reminds of approvals (decided once
        per run, at the first point where it matters: see OPERATOR_VIEW_PATCH)."""
        if self._operator_view is None:
            self._operator_view = workflow.patched(OPERATOR_VIEW_PATCH)
        return self._operator_view

    def emit(self, type: ChunkType, **fields: Any) -> None:
        self.emitter.emit(type, **fields)

    # --- views ---

    def view(self) -> SessionView:
        return SessionView(
            self.id,
            self.status,
            self.agent,
            self.ledger.pending(),
            self.open_calls(),
            len(self.inbox),
            last_activity=self.last_activity,
            created_at=self.created_at,
            project=self.project,
            run=self.run,
        )

    def open_calls(self) -> list[OutstandingCall]:
        """Every call still without a tool message: the one being waited on, and the ones queued behind it."""
        queued_since = self.last_activity
        return [
            self.outstanding.get(call.id)
            or OutstandingCall(
                call_id=call.id,
                tool_name=call.name,
                arguments=call.arguments,
                agent=self.agent,
                status=CallStatus.QUEUED,
                since=queued_since,
            )
            for call in self.history.open_calls
        ]

    def title(self) -> str | None:
        """The first user message (its first 500 characters)."""
        if self.title_text is not None:
            return self.title_text
        # Not set yet, or a session carried over before the title was: the first user message it still holds.
        first = next((m.content for m in self.history.messages if m.role == "user" and not m.name), None)
        return preview_of(first) or None

    # --- the steps every part takes the same way ---

    def switch_to(
        self,
        target: AgentType,
        reason: str,
        *,
        source: str,
        confidence: str | None = None,
        method: str | None = None,
        final: bool = False,
    ) -> bool:
        """Hand the conversation to `target`; False (and nothing happens) when it already has it."""
        if target is self.agent:
            return False
        record = AgentSwitchRecord.model_validate(
            {
                "from_agent": self.agent,
                "to_agent": target,
                "reason": reason,
                "switched_at": workflow.now(),
                "confidence": confidence,
                "source": source,
            }
        )
        metadata: dict[str, Any] = {"from_agent": self.agent.value, "to_agent": target.value, "reason": reason}
        self.metrics.switch(self.agent, target, source)
        self.switches.append(record)
        self.switch_count += 1
        self.projection.switch(self.switch_count - 1, record)
        self.agent = target
        if confidence:
            metadata["confidence"] = confidence
        if method:
            metadata["classification_method"] = method
        self.emit(
            ChunkType.AGENT_SWITCHED, content=f"Switched to {target.value} agent", metadata=metadata, is_final=final
        )
        return True

    def record_approval_request(
        self, approval: PendingApproval, call: ToolCall, agent: AgentType, since: datetime
    ) -> None:
        """Record an approval request and the call that waits for it."""
        self.ledger.approvals[call.id] = approval
        self.traces.approval_requested(approval)
        self.projection.approval(approval)
        self.outstanding[call.id] = OutstandingCall(
            call_id=call.id,
            tool_name=call.name,
            arguments=call.arguments,
            agent=agent,
            status=CallStatus.AWAITING_APPROVAL,
            since=since,
        )

    def settle(
        self,
        approval: PendingApproval,
        status: ApprovalStatus,
        *,
        decided_by: str = "hitl_decision",
        decision: Decision | PlanDecisionKind | None = None,
        feedback: str | None = None,
        edited: dict[str, Any] | None = None,
        remembered_as: str | None = None,
    ) -> None:
        """Settle an approval, keeping it (so repeats are recognised) with how and when it was decided."""
        update: dict[str, Any] = {
            "status": status,
            "decided_at": workflow.now(),
            "decided_by": decided_by,
            "decision": decision,
            "feedback": feedback,
            "edited_arguments": edited,
        }
        if remembered_as is not None:
            update["remembered_as"] = remembered_as
        settled = approval.model_copy(update=update)
        self.ledger.approvals[approval.call_id] = settled
        self.projection.approval(settled)
        self.metrics.approval_settled(settled)
        self.traces.approval_settled(settled)
        key = decision.value if decision else status.value
        self.counters.approvals[key] = self.counters.approvals.get(key, 0) + 1

    def approve_automatically(
        self, call: ToolCall, agent: AgentType, *, decided_by: str, reason: str, grant_id: str | None = None
    ) -> PendingApproval:
        """Record an approval nobody was asked for (an allow rule with conditions, or a remembered decision): in the
        ledger, the projection's trail, the counters and the metrics, already settled, never as a human's."""
        now = workflow.now()
        approval = PendingApproval.model_validate(
            {
                "request_id": call.id,
                "session_id": self.id,
                "call_id": call.id,
                "tool_name": call.name,
                "subject": call.name,
                "arguments": call.arguments,
                "reason": reason,
                "agent": agent,
                "status": ApprovalStatus.APPROVED,
                "created_at": now,
                "decided_at": now,
                "decided_by": decided_by,
                "decision": Decision.APPROVE,
                "grant_id": grant_id,
            }
        )
        self.ledger.approvals[call.id] = approval
        self.projection.approval(approval)
        self.metrics.automatic_approval(approval)
        self.counters.approvals[decided_by] = self.counters.approvals.get(decided_by, 0) + 1
        return approval

    def close_call(self, call: ToolCall, content: Content, outcome: str, emit: bool = False) -> None:
        """Write the one tool message of a call; every path that ends a call ends here (I1, I2)."""
        self.history.add_tool_result(call.id, content, message_id=self.new_id(), at=workflow.now())
        self.projection.tool_call(
            call, agent=self.agent, requested_at=self.answer_started_at, outcome=outcome, result=content
        )
        self.outstanding.pop(call.id, None)
        self.ledger.results.pop(call.id, None)
        self.status = SessionStatus.RUNNING
        self.counters.tool_calls[outcome] = self.counters.tool_calls.get(outcome, 0) + 1
        self.metrics.tool_call(call.name, outcome)
        if emit:
            self.emit(
                ChunkType.TOOL_RESULT,
                content=content,
                call_id=call.id,
                tool_name=call.name,
                error=content if isinstance(content, str) and content.startswith("Error:") else None,
                metadata={"outcome": outcome},
            )

    def close_open_turn(self, tool_text: str, outcome: str, *, decided_by: str, feedback: str | None) -> None:
        """Close everything a stopped turn left open, so pairing holds and nothing waits any more."""
        for call in self.history.open_calls:
            approval = self.ledger.approvals.get(call.id)
            if approval is not None and approval.status is ApprovalStatus.PENDING:
                self.settle(approval, ApprovalStatus.CANCELLED, decided_by=decided_by, feedback=feedback)
            self.ledger.decisions.pop(call.id, None)
            self.close_call(call, tool_text, outcome=outcome)
        for plan in self.plans:
            if plan.status in (PlanStatus.PENDING_APPROVAL, PlanStatus.IN_PROGRESS):
                for subtask in plan.subtasks:
                    if subtask.status in (SubtaskStatus.PENDING, SubtaskStatus.IN_PROGRESS):
                        subtask.status, subtask.error = SubtaskStatus.FAILED, outcome
                self.update_plan(plan, PlanStatus.CANCELLED if outcome == "cancelled" else PlanStatus.FAILED)
        self.outstanding.clear()

    def update_plan(self, plan: Plan, status: PlanStatus) -> None:
        plan.status = status
        self.projection.plan(plan)

    async def announce_tool_call(
        self,
        call_id: str,
        name: str,
        arguments: dict[str, Any],
        *,
        requires_approval: bool,
        reason: str = "",
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """A `tool_call` event is a wait point: the runtime now waits for the human or the IDE.

        The call is written to the projection first (I7, bug B4), unless the database is down: the workflow's own
        history already holds it durably, and the projection catches up later.
        """
        self.status = SessionStatus.AWAITING_APPROVAL if requires_approval else SessionStatus.AWAITING_TOOL_RESULT
        self.projection.tool_call(
            ToolCall(id=call_id, name=name, arguments=arguments),
            agent=self.agent,
            requested_at=self.answer_started_at,
        )
        # A call re-announced once approved is in the projection since its first announcement; the decision and
        # any edited arguments follow with the next write.
        if not (self.lean and call_id in self._announced):
            await self.persist_before_wait_point()
        self._announced.add(call_id)
        self.emit(
            ChunkType.TOOL_CALL,
            call_id=call_id,
            tool_name=name,
            arguments=arguments,
            requires_approval=requires_approval,
            approval_request_id=call_id if requires_approval else None,
            metadata=({"reason": reason} if reason else {}) | (metadata or {}) or None,
            is_final=True,
        )

    async def persist_before_wait_point(self) -> None:
        """Drain the projection before a wait point is announced, unless the database is known to be down."""
        self.project_session()
        self.pauses.pause()
        await self.projection.drained()

    async def wait_for_input(
        self, ready: Callable[[], bool], timeout_seconds: float | None = None, *, summary: str | None = None
    ) -> bool:
        """Wait until an input makes `ready` hold: True when it does, False when the timer (if any) ran out first.

        Every wait for the outside world (the next message, a human decision, the IDE's result) goes through here:
        it is a wait point, so the projection is written, and a pause (workflows/pauses.py). `summary` names the
        timer in the Web UI's timeline.
        """
        if not ready():
            self.projection.flush()
            self.pauses.waiting_for_input(ready)
        try:
            await workflow.wait_condition(ready, timeout=timeout_seconds, timeout_summary=summary)
        except TimeoutError:
            return ready()
        finally:
            self.pauses.resumed()
        return True

    def project_session(self) -> None:
        self.projection.add(
            SessionRecord(
                session_id=self.id,
                title=self.title(),
                current_agent=self.agent,
                status=self.status,
                message_count=len(self.history),
                created_at=self.created_at or workflow.now(),
                last_activity=workflow.now(),
                counters=self.counters,
            )
        )
