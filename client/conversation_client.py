"""The typed client a gateway embeds to drive conversations.

A gateway never "creates then sends": the first user message starts the session's workflow
(update-with-start, or signal-with-start for fire-and-forget callers). Every other input is an update, so the
caller learns at once whether it was accepted; errors come back as the exceptions below, which a gateway can map
to its own status codes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.contrib.workflow_streams import WorkflowStreamClient
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode
from temporalio.workflow import UpdateMethodMultiParam

from workflows.conversation import ConversationWorkflow
from workflows.model import (
    APPROVAL_ALREADY_RESOLVED_ERROR,
    EVENTS_TOPIC,
    INVALID_INPUT_ERROR,
    UNKNOWN_CALL_ID_ERROR,
    CancelTurn,
    ChatMessage,
    ConversationConfig,
    ConversationInput,
    HitlDecision,
    InputReceipt,
    PendingApproval,
    PlanDecision,
    SessionState,
    StreamChunk,
    SwitchAgent,
    ToolResult,
    UserMessage,
    workflow_id_for,
)

P = TypeVar("P")
R = TypeVar("R")


class ConversationError(Exception):
    """Base of the errors a caller can act on."""


class UnknownSessionError(ConversationError):
    """No conversation exists with this session id."""


class UnknownCallIdError(ConversationError):
    """The call id does not belong to this session (unknown, or another session's)."""


class ApprovalAlreadyResolvedError(ConversationError):
    """The decision contradicts how the approval was already settled."""


class InvalidInputError(ConversationError):
    """The input is well-formed but not acceptable now (e.g. an agent this session does not have)."""


_ERRORS_BY_TYPE: dict[str, type[ConversationError]] = {
    UNKNOWN_CALL_ID_ERROR: UnknownCallIdError,
    APPROVAL_ALREADY_RESOLVED_ERROR: ApprovalAlreadyResolvedError,
    INVALID_INPUT_ERROR: InvalidInputError,
}


# Pause between polls once caught up. The SDK's 100 ms default made every streamed turn ~110 ms slower at the
# gateway (benchmarks/latency.py: 147 -> 33 ms p50 per turn); a short pause still folds bursts into one poll, and
# each poll is an update in the session's history.
EVENT_POLL_COOLDOWN = timedelta(milliseconds=10)


@dataclass(frozen=True)
class Event:
    """One stream event and its offset; resume a subscription from `offset + 1`."""

    offset: int
    chunk: StreamChunk


class ConversationClient:
    """Start, drive and read conversations on one task queue."""

    def __init__(self, client: Client, *, task_queue: str, config: ConversationConfig | None = None) -> None:
        self._client = client
        self._task_queue = task_queue
        self._config = config or ConversationConfig()

    def handle(self, session_id: str) -> WorkflowHandle[ConversationWorkflow, None]:
        return self._client.get_workflow_handle_for(ConversationWorkflow.run, workflow_id_for(session_id))

    async def send_user_message(self, session_id: str, message: UserMessage) -> InputReceipt:
        """Deliver a user message, starting the session if it does not exist yet (update-with-start)."""
        start = WithStartWorkflowOperation(
            ConversationWorkflow.run,
            ConversationInput(session_id=session_id, config=self._config),
            id=workflow_id_for(session_id),
            task_queue=self._task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        )
        try:
            return await self._client.execute_update_with_start_workflow(
                ConversationWorkflow.submit_user_message, message, start_workflow_operation=start
            )
        except WorkflowUpdateFailedError as err:
            raise _translate(err) from err

    async def signal_user_message(self, session_id: str, message: UserMessage) -> None:
        """Fire-and-forget variant: signal-with-start, for callers that follow the event stream anyway."""
        await self._client.start_workflow(
            ConversationWorkflow.run,
            ConversationInput(session_id=session_id, config=self._config),
            id=workflow_id_for(session_id),
            task_queue=self._task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            start_signal="user_message",
            start_signal_args=[message],
        )

    async def send_tool_result(self, session_id: str, result: ToolResult) -> InputReceipt:
        return await self._update(session_id, ConversationWorkflow.submit_tool_result, result)

    async def decide(self, session_id: str, decision: HitlDecision) -> InputReceipt:
        return await self._update(session_id, ConversationWorkflow.submit_hitl_decision, decision)

    async def decide_plan(self, session_id: str, decision: PlanDecision) -> InputReceipt:
        """Approve, reject or ask to modify a proposed plan (its `approval_request_id`)."""
        return await self._update(session_id, ConversationWorkflow.submit_plan_decision, decision)

    async def cancel_turn(self, session_id: str, request: CancelTurn | None = None) -> InputReceipt:
        """Stop the running turn; `accepted=False` when nothing is running. Queued inputs still run afterwards."""
        return await self._update(session_id, ConversationWorkflow.submit_cancel_turn, request or CancelTurn())

    async def switch_agent(self, session_id: str, request: SwitchAgent) -> InputReceipt:
        return await self._update(session_id, ConversationWorkflow.submit_switch_agent, request)

    async def state(self, session_id: str) -> SessionState:
        return await self._query(session_id, ConversationWorkflow.state)

    async def history(self, session_id: str) -> list[ChatMessage]:
        return await self._query(session_id, ConversationWorkflow.history)

    async def pending_approvals(self, session_id: str) -> list[PendingApproval]:
        return await self._query(session_id, ConversationWorkflow.pending_approvals)

    async def approvals(self, session_id: str) -> list[PendingApproval]:
        """Every approval of the session with its trail, settled ones included."""
        return await self._query(session_id, ConversationWorkflow.approvals)

    async def events(self, session_id: str, from_offset: int = 0) -> AsyncIterator[Event]:
        """The session's events from an offset, live; follows continue-as-new."""
        stream = WorkflowStreamClient.create(self._client, workflow_id_for(session_id))
        async for item in stream.subscribe(
            EVENTS_TOPIC, from_offset, result_type=StreamChunk, poll_cooldown=EVENT_POLL_COOLDOWN
        ):
            yield Event(offset=item.offset, chunk=item.data)

    async def until_wait_point(self, session_id: str, from_offset: int = 0) -> list[Event]:
        """Events from an offset up to and including the next `is_final` one: what one SSE response carries."""
        received: list[Event] = []
        async for event in self.events(session_id, from_offset):
            received.append(event)
            if event.chunk.is_final:
                break
        return received

    async def _update(
        self, session_id: str, update: UpdateMethodMultiParam[[ConversationWorkflow, P], R], payload: P
    ) -> R:
        try:
            return await self.handle(session_id).execute_update(update, payload)
        except WorkflowUpdateFailedError as err:
            raise _translate(err) from err
        except RPCError as err:
            raise _translate_rpc(err, session_id) from err

    async def _query(self, session_id: str, query: Callable[[ConversationWorkflow], R]) -> R:
        try:
            return await self.handle(session_id).query(query)
        except RPCError as err:
            raise _translate_rpc(err, session_id) from err


def _translate(err: WorkflowUpdateFailedError) -> Exception:
    cause = err.cause
    if isinstance(cause, ApplicationError) and cause.type in _ERRORS_BY_TYPE:
        return _ERRORS_BY_TYPE[cause.type](cause.message)
    return err


def _translate_rpc(err: RPCError, session_id: str) -> Exception:
    if err.status is RPCStatusCode.NOT_FOUND:
        return UnknownSessionError(f"no session {session_id!r}")
    return err
