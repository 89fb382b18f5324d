"""The inputs addressed to tool calls and approvals: what arrived, and whether it may be accepted.

Update validators and signal handlers run the same `check_*` here before anything is recorded (a failed check
rejects the update, or drops the signal with a warning); `accept_*` records the input and says whether it only
repeated an earlier one. The turn then consumes what was recorded. Settled approvals are kept, so repeats are
recognised for the life of the session, and call ids are scoped to it: one ledger per workflow.
"""

from __future__ import annotations

from collections.abc import Iterable

from temporalio.exceptions import ApplicationError

from workflows.content import RAW_INPUT_LIMIT, json_size, raw_size
from workflows.history import ConversationHistory
from workflows.model import (
    APPROVAL_ALREADY_RESOLVED_ERROR,
    INVALID_INPUT_ERROR,
    UNKNOWN_CALL_ID_ERROR,
    ApprovalStatus,
    Decision,
    HitlDecision,
    InputReceipt,
    PendingApproval,
    PlanDecision,
    PlanDecisionKind,
    ToolResult,
)
from workflows.tools import CATALOGUE, Executor


class CallLedger:
    """Approvals (pending and settled), and the results and decisions that arrived for open calls."""

    def __init__(self, history: ConversationHistory, approvals: Iterable[PendingApproval]) -> None:
        self._history = history
        self.approvals: dict[str, PendingApproval] = {a.call_id: a for a in approvals}
        self.results: dict[str, ToolResult] = {}
        self.decisions: dict[str, HitlDecision] = {}
        self.plan_decisions: dict[str, PlanDecision] = {}

    def pending(self) -> list[PendingApproval]:
        return [a for a in self.approvals.values() if a.status is ApprovalStatus.PENDING]

    def check_tool_result(self, result: ToolResult) -> None:
        if not self._history.has_call(result.call_id):
            raise unknown_call(result.call_id)
        size = raw_size(result.result) + raw_size(result.error or "")
        if size > RAW_INPUT_LIMIT:
            raise too_large_inline(f"the result of call {result.call_id}", size)
        runtime_call = next((c for c in self._history.open_calls if c.id == result.call_id), None)
        if runtime_call is not None and CATALOGUE[runtime_call.name].executor is Executor.RUNTIME:
            raise invalid_input(f"call {result.call_id} ({runtime_call.name}) is executed by the runtime, not the IDE")

    def accept_tool_result(self, result: ToolResult) -> InputReceipt:
        if not self._history.is_open(result.call_id) or result.call_id in self.results:
            return InputReceipt(duplicate=True, detail=f"call {result.call_id} already has its result")
        self.results[result.call_id] = result
        return InputReceipt()

    def check_decision(self, decision: HitlDecision) -> None:
        approval = self.approvals.get(decision.call_id)
        if approval is None:
            if self._history.has_call(decision.call_id):
                raise invalid_input(f"call {decision.call_id} does not wait for approval")
            raise unknown_call(decision.call_id)
        if approval.request_type == "plan":
            raise invalid_input(f"approval {approval.request_id} is a plan approval: send a plan_decision")
        if decision.modified_arguments is not None and json_size(decision.modified_arguments) > RAW_INPUT_LIMIT:
            raise too_large_inline("the edited arguments", json_size(decision.modified_arguments))
        if decision.feedback is not None and len(decision.feedback) > RAW_INPUT_LIMIT:
            raise too_large_inline("the feedback", len(decision.feedback))
        earlier = self.decisions.get(decision.call_id)
        _refuse_contradiction(approval, earlier.decision if earlier else None, decision.decision)

    def accept_decision(self, decision: HitlDecision) -> InputReceipt:
        approval = self.approvals[decision.call_id]
        if approval.status is not ApprovalStatus.PENDING or decision.call_id in self.decisions:
            return InputReceipt(duplicate=True, detail=f"approval {decision.call_id} is already decided")
        self.decisions[decision.call_id] = decision
        return InputReceipt()

    def plan_approval(self, request_id: str) -> PendingApproval | None:
        return next(
            (a for a in self.approvals.values() if a.request_type == "plan" and a.request_id == request_id), None
        )

    def check_plan_decision(self, decision: PlanDecision) -> None:
        approval = self.plan_approval(decision.approval_request_id)
        if approval is None:
            raise ApplicationError(
                f"unknown approval_request_id {decision.approval_request_id!r} in this session",
                type=UNKNOWN_CALL_ID_ERROR,
                non_retryable=True,
            )
        if decision.feedback is not None and len(decision.feedback) > RAW_INPUT_LIMIT:
            raise too_large_inline("the feedback", len(decision.feedback))
        earlier = self.plan_decisions.get(decision.approval_request_id)
        _refuse_contradiction(approval, earlier.decision if earlier else None, decision.decision)

    def accept_plan_decision(self, decision: PlanDecision) -> InputReceipt:
        approval = self.plan_approval(decision.approval_request_id)
        assert approval is not None  # checked by the validator
        if approval.status is not ApprovalStatus.PENDING or decision.approval_request_id in self.plan_decisions:
            return InputReceipt(duplicate=True, detail=f"plan approval {approval.request_id} is already decided")
        self.plan_decisions[decision.approval_request_id] = decision
        return InputReceipt()


class RecentIds:
    """Idempotency keys seen lately (callers' message ids), remembered in arrival order: only the newest `kept`
    survive, so the set stays bounded and a repeat of a recent input is always recognised."""

    def __init__(self, ids: Iterable[str], kept: int) -> None:
        self._kept = kept
        self._ids: dict[str, None] = dict.fromkeys(list(ids)[-kept:])

    def __contains__(self, key: object) -> bool:
        return key in self._ids

    def add(self, key: str) -> None:
        self._ids.pop(key, None)
        self._ids[key] = None
        # Trim in batches: rebuilding the dict on every add would cost O(kept) per message.
        if len(self._ids) > 2 * self._kept:
            self._ids = dict.fromkeys(list(self._ids)[-self._kept :])

    def newest(self) -> list[str]:
        """The newest `kept` ids, oldest first (what continue-as-new carries)."""
        return list(self._ids)[-self._kept :]


def _refuse_contradiction(
    approval: PendingApproval, received: Decision | PlanDecisionKind | None, requested: Decision | PlanDecisionKind
) -> None:
    """Accept a first decision or a repeat of the outcome (a duplicate); refuse one that contradicts it.

    `received` is a decision already recorded but not yet acted on; an expired approval takes no decision at all.
    """
    if approval.status is ApprovalStatus.PENDING and received is None:
        return
    settled_as = received or approval.decision
    if approval.status is not ApprovalStatus.EXPIRED and settled_as == requested:
        return
    outcome = f"decided ({received.value})" if received else approval.status.value
    kind = "plan approval" if approval.request_type == "plan" else "approval"
    raise ApplicationError(
        f"{kind} {approval.request_id} is already {outcome}", type=APPROVAL_ALREADY_RESOLVED_ERROR, non_retryable=True
    )


def invalid_input(message: str) -> ApplicationError:
    return ApplicationError(message, type=INVALID_INPUT_ERROR, non_retryable=True)


def too_large_inline(what: str, size: int) -> ApplicationError:
    return invalid_input(
        f"{what} has {size:,} characters inline, over the limit of {RAW_INPUT_LIMIT:,}: send large content by "
        "reference (ConversationClient and the HTTP API store it in the content store for you)"
    )


def unknown_call(call_id: str) -> ApplicationError:
    return ApplicationError(
        f"unknown call_id {call_id!r} in this session", type=UNKNOWN_CALL_ID_ERROR, non_retryable=True
    )
