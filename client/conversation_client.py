"""The typed client a gateway embeds to drive conversations.

A gateway never "creates then sends": the first user message starts the session's workflow
(update-with-start, or signal-with-start for fire-and-forget callers). Every other input is an update, so the
caller learns at once whether it was accepted; errors come back as the exceptions below, which a gateway can map
to its own status codes.

Large content never rides through Temporal inline: a large tool result, user message or edited argument is stored
in the content store before it is sent, and every reference in what the client returns (events, history,
approvals, state) is resolved, so callers always see full text.

A session whose workflow is closed (failed, terminated, timed out) is never silently replaced by a new, empty
session under the same id: a message to it raises `SessionClosedError` unless the caller asks for a new session.
A session whose workflow task keeps failing raises `SessionStuckError` with the failure, instead of a timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from temporalio.api.enums.v1 import EventType, TimeoutType
from temporalio.api.workflowservice.v1 import GetWorkflowExecutionHistoryReverseRequest
from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowQueryRejectedError,
    WorkflowUpdateFailedError,
    WorkflowUpdateHandle,
    WorkflowUpdateRPCTimeoutOrCancelledError,
    WorkflowUpdateStage,
)
from temporalio.common import QueryRejectCondition, WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.contrib.workflow_streams import WorkflowStreamClient
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from activities.content import ContentStore
from workflows import tool_messages
from workflows.content import INLINE_TEXT_LIMIT
from workflows.conversation import ConversationWorkflow
from workflows.model import (
    APPROVAL_ALREADY_RESOLVED_ERROR,
    CANCEL_TURN_UPDATE,
    EVENTS_TOPIC,
    HITL_DECISION_UPDATE,
    INVALID_INPUT_ERROR,
    PLAN_DECISION_UPDATE,
    REVOKE_GRANT_UPDATE,
    SWITCH_AGENT_UPDATE,
    TOOL_RESULT_UPDATE,
    UNKNOWN_CALL_ID_ERROR,
    UNKNOWN_GRANT_ERROR,
    USER_MESSAGE_UPDATE,
    AgentType,
    ApprovalGrant,
    CancelTurn,
    ChatMessage,
    ContractModel,
    ConversationConfig,
    HitlDecision,
    InputReceipt,
    PendingApproval,
    PlanDecision,
    ProjectGrants,
    RevokeGrant,
    SessionState,
    StreamChunk,
    SwitchAgent,
    ToolResult,
    UserMessage,
    project_grants_workflow_id,
    workflow_id_for,
)
from workflows.observability import static_details, static_summary
from workflows.project_grants import ProjectGrantsWorkflow
from workflows.state import (
    ConversationInput,
)

R = TypeVar("R")

Input = UserMessage | ToolResult | HitlDecision | PlanDecision | SwitchAgent | CancelTurn | RevokeGrant
"""Every input a session takes (each an update; a user message may also start the session)."""


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


class UnknownGrantError(ConversationError):
    """No remembered decision with this id in the session or project."""


class SessionClosedError(ConversationError):
    """The session's workflow is closed (failed, terminated, cancelled, timed out); it takes no more input.

    Attributes:
        session_id: The session.
        status: How it closed (`FAILED`, `TERMINATED`, ...).
        closed_at: When.
    """

    def __init__(self, session_id: str, status: str, closed_at: datetime | None) -> None:
        when = f" at {closed_at.isoformat()}" if closed_at else ""
        super().__init__(
            f"session {session_id} is closed ({status.lower()}{when}) and takes no more input; start over with a "
            'new session (the HTTP API: send the user_message with "new_session": true)'
        )
        self.session_id = session_id
        self.status = status
        self.closed_at = closed_at


class SessionStuckError(ConversationError):
    """The session's workflow cannot make progress: its workflow task keeps failing (a bug), keeps timing out
    (crashing or overloaded workers; one timeout, a worker lost mid-task, is only a retry), or no worker takes it.

    Attributes:
        session_id: The session.
        attempts: How many times its current workflow task was tried (0 when none was picked up).
        reason: The last failure's message, when Temporal recorded one.
    """

    def __init__(self, session_id: str, attempts: int, reason: str | None, *, timed_out: bool = False) -> None:
        if attempts > 1 and timed_out:
            what = f"its workflow task has timed out {attempts - 1} times"
            hint = "check its workers: crashing, or too busy to replay the session within the workflow task timeout"
        elif attempts > 1:
            what = f"its workflow task has failed {attempts - 1} times"
            hint = "an operator must deploy a fix; the session then resumes where it stopped"
        else:
            what = "no worker answered it in time (is a worker running?)"
            hint = "start one, or check that it polls the session's task queue"
        detail = f" (last error: {reason})" if reason else ""
        super().__init__(f"session {session_id} cannot make progress: {what}{detail}; {hint}")
        self.session_id = session_id
        self.attempts = attempts
        self.reason = reason


_ERRORS_BY_TYPE: dict[str, type[ConversationError]] = {
    UNKNOWN_CALL_ID_ERROR: UnknownCallIdError,
    APPROVAL_ALREADY_RESOLVED_ERROR: ApprovalAlreadyResolvedError,
    INVALID_INPUT_ERROR: InvalidInputError,
    UNKNOWN_GRANT_ERROR: UnknownGrantError,
}


# Pause between polls once caught up. The SDK's 100 ms default made every streamed turn ~110 ms slower at the
# gateway (benchmarks/latency.py: 147 -> 33 ms p50 per turn); a short pause still folds bursts into one poll, and
# each poll is an update in the session's history.
EVENT_POLL_COOLDOWN = timedelta(milliseconds=10)
# An input or a read that a healthy session answers in milliseconds; after this, find out why it did not.
ANSWER_TIMEOUT = timedelta(seconds=20)
# Starting a new session under a closed one's id, a second apart (the server's minimal id reuse interval).
NEW_SESSION_ATTEMPTS = 3
# A workflow task that timed out (its worker was lost mid-task, or it ran past the task timeout) is retried by
# another worker: a session is stuck only once its task has timed out this many times in a row. Temporal refuses
# updates from the third attempt on as well.
STUCK_AFTER_TIMED_OUT_ATTEMPTS = 3


@dataclass(frozen=True)
class TaskProblem:
    """The newest failure or timeout of a session's workflow task, as its history records it."""

    timed_out: bool
    message: str | None


@dataclass(frozen=True)
class Event:
    """One stream event and its offset; resume a subscription from `offset + 1`."""

    offset: int
    chunk: StreamChunk


class ConversationClient:
    """Start, drive and read conversations on one task queue.

    Args:
        client: A Temporal client whose data converter uses the same content store (`client.connection`).
        task_queue: The workers' task queue.
        config: The configuration new sessions start with.
        content: The content store; without one, large content is sent inline (and refused over the inline
            limit) and references in what is read are left as they are.
        answer_timeout: How long an input or a read may take before the client finds out why it did not arrive.
        started_by: Who starts sessions through this client, for the Web UI's summary of each (e.g. "gateway (HTTP
            API)"); the Temporal client's identity (`pid@host`) is added either way.
    """

    def __init__(
        self,
        client: Client,
        *,
        task_queue: str,
        config: ConversationConfig | None = None,
        content: ContentStore | None = None,
        answer_timeout: timedelta = ANSWER_TIMEOUT,
        started_by: str | None = None,
    ) -> None:
        self._client = client
        self._task_queue = task_queue
        self._config = config or ConversationConfig()
        self._content = content
        self._answer_timeout = answer_timeout
        self._started_by = started_by

    @property
    def temporal(self) -> Client:
        return self._client

    @property
    def content(self) -> ContentStore | None:
        return self._content

    def handle(self, session_id: str) -> WorkflowHandle[ConversationWorkflow, None]:
        return self._client.get_workflow_handle_for(ConversationWorkflow.run, workflow_id_for(session_id))

    # --- starting ---

    def _start_input(self, session_id: str) -> ConversationInput:
        return ConversationInput(session_id=session_id, config=self._config)

    def _start_metadata(self, session_id: str, first: UserMessage | None = None) -> tuple[str, str]:
        """The Web UI's static summary and details of a session this client starts (workflows/observability.py)."""
        identity = self._client.identity
        by = f"{self._started_by} ({identity})" if self._started_by else identity
        agent = first.agent_type if first is not None and first.agent_type is not None else AgentType.ORCHESTRATOR
        project = first.project if first is not None else None
        now = datetime.now(UTC)
        summary = static_summary(
            session_id,
            agent=agent,
            started_at=now,
            started_by=by,
            project=project,
            first_message=first.content if first is not None else None,
        )
        return summary, static_details(
            session_id, self._config, agent=agent, started_at=now, started_by=by, project=project
        )

    async def create_session(self, session_id: str) -> None:
        """Start a session without a message.

        Raises:
            WorkflowAlreadyStartedError: The session exists, or existed (its id is never reused).
        """
        summary, details = self._start_metadata(session_id)
        await self._client.start_workflow(
            ConversationWorkflow.run,
            self._start_input(session_id),
            id=workflow_id_for(session_id),
            task_queue=self._task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            static_summary=summary,
            static_details=details,
        )

    async def send_user_message(
        self, session_id: str, message: UserMessage, *, new_session: bool = False
    ) -> InputReceipt:
        """Deliver a user message, starting the session if it does not exist yet (update-with-start).

        Args:
            session_id: The session.
            message: The message; large content is stored by reference before it is sent.
            new_session: When the session is closed, start a new one under the same id instead of refusing.

        Raises:
            SessionClosedError: The session is closed and `new_session` is False.
        """
        return await self._send(session_id, message, new_session=new_session)

    async def signal_user_message(self, session_id: str, message: UserMessage, *, new_session: bool = False) -> None:
        """Fire-and-forget variant: signal-with-start, for callers that follow the event stream anyway."""
        message = message.model_copy(update={"content": await self._offload(message.content)})
        summary, details = self._start_metadata(session_id, message)
        try:
            await self._client.start_workflow(
                ConversationWorkflow.run,
                self._start_input(session_id),
                id=workflow_id_for(session_id),
                task_queue=self._task_queue,
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                id_reuse_policy=_reuse_policy(new_session),
                start_signal="user_message",
                start_signal_args=[message],
                static_summary=summary,
                static_details=details,
            )
        except WorkflowAlreadyStartedError as err:
            raise await self._closed(session_id) from err

    # --- inputs ---

    async def send_tool_result(self, session_id: str, result: ToolResult) -> InputReceipt:
        return await self._send(session_id, result)

    async def decide(self, session_id: str, decision: HitlDecision) -> InputReceipt:
        return await self._send(session_id, decision)

    async def decide_plan(self, session_id: str, decision: PlanDecision) -> InputReceipt:
        """Approve, reject or ask to modify a proposed plan (its `approval_request_id`)."""
        return await self._send(session_id, decision)

    async def cancel_turn(self, session_id: str, request: CancelTurn | None = None) -> InputReceipt:
        """Stop the running turn; `accepted=False` when nothing is running. Queued inputs still run afterwards."""
        return await self._send(session_id, request or CancelTurn())

    async def switch_agent(self, session_id: str, request: SwitchAgent) -> InputReceipt:
        return await self._send(session_id, request)

    async def submit(self, session_id: str, item: Input, *, new_session: bool = False) -> DeliveredInput:
        """Deliver an input and return as soon as the session has accepted it; its receipt follows from
        `DeliveredInput.receipt` (at once, or, for an input with `wait_for_events`, with its first events). A user
        message starts the session if it does not exist yet (update-with-start); large content is stored by
        reference first.

        Raises:
            ConversationError: The input was refused (unknown session or call, a settled approval, an invalid
                input), or the session is closed (a user message to it without `new_session`) or stuck.
        """
        item = await self._offload_input(item)
        if not isinstance(item, UserMessage):
            handle = self.handle(session_id)
            update = _UPDATES[type(item)]
            accepted = handle.start_update(
                update,
                item,
                wait_for_stage=WorkflowUpdateStage.ACCEPTED,
                result_type=InputReceipt,
                rpc_timeout=self._answer_timeout,
            )
            return DeliveredInput(self, session_id, await self._answered(session_id, accepted))
        summary, details = self._start_metadata(session_id, item)
        for attempt in range(NEW_SESSION_ATTEMPTS):
            start = WithStartWorkflowOperation(
                ConversationWorkflow.run,
                self._start_input(session_id),
                id=workflow_id_for(session_id),
                task_queue=self._task_queue,
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                id_reuse_policy=_reuse_policy(new_session),
                static_summary=summary,
                static_details=details,
            )
            try:
                try:
                    accepted_with_start = self._client.start_update_with_start_workflow(
                        USER_MESSAGE_UPDATE,
                        item,
                        start_workflow_operation=start,
                        wait_for_stage=WorkflowUpdateStage.ACCEPTED,
                        result_type=InputReceipt,
                        rpc_timeout=self._answer_timeout,
                    )
                    return DeliveredInput(self, session_id, await self._answered(session_id, accepted_with_start))
                finally:
                    _retrieve_start_error(start)
            except WorkflowAlreadyStartedError as err:
                diagnosis = await self._closed(session_id)
                if (
                    not (new_session and isinstance(diagnosis, SessionClosedError))
                    or attempt + 1 == NEW_SESSION_ATTEMPTS
                ):
                    raise diagnosis from err
                # Temporal refuses to reuse an id within a second of its closing (workflowIdReuseMinimalInterval).
                await asyncio.sleep(1.0)
        raise AssertionError("unreachable")  # the loop returns or raises

    async def _send(self, session_id: str, item: Input, *, new_session: bool = False) -> InputReceipt:
        """Deliver an input and wait for its receipt (an input without `wait_for_events` is answered at once)."""
        delivered = await self.submit(session_id, item, new_session=new_session)
        receipt = await delivered.receipt(self._answer_timeout)
        if receipt is None:
            raise await self.diagnose(session_id) or SessionStuckError(session_id, 0, None)
        return receipt

    async def _offload_input(self, item: Input) -> Input:
        """Store an input's large content by reference, so it never rides through Temporal inline."""
        if self._content is None:
            return item
        if isinstance(item, UserMessage):
            return item.model_copy(update={"content": await self._content.offload_text(item.content)})
        if isinstance(item, ToolResult) and item.content is None:
            text = tool_messages.from_ide_result(item.result, item.error)
            if len(text) > INLINE_TEXT_LIMIT:
                stored = await self._content.put(text)
                return item.model_copy(
                    update={"content": stored, "result": None, "error": None, "failed": bool(item.error)}
                )
        if isinstance(item, HitlDecision) and item.modified_arguments is not None:
            arguments = await self._content.offload_arguments(item.modified_arguments)
            return item.model_copy(update={"modified_arguments": arguments})
        return item

    # --- reads ---

    async def state(self, session_id: str) -> SessionState:
        state = await self._query(session_id, ConversationWorkflow.state)
        return state.model_copy(
            update={
                "pending_approvals": [await self._resolve_approval(a) for a in state.pending_approvals],
                "outstanding_calls": [
                    c.model_copy(update={"arguments": await self._resolve_arguments(c.arguments)})
                    for c in state.outstanding_calls
                ],
            }
        )

    async def history(self, session_id: str) -> list[ChatMessage]:
        """The whole conversation, archived part included, with full content."""
        view = await self._query(session_id, ConversationWorkflow.transcript)
        if self._content is None:
            return view.messages
        archived = await self._content.read_transcript(view.archive)
        return await self._content.resolve_messages([*archived, *view.messages])

    async def pending_approvals(self, session_id: str) -> list[PendingApproval]:
        pending = await self._query(session_id, ConversationWorkflow.pending_approvals)
        return [await self._resolve_approval(a) for a in pending]

    async def approvals(self, session_id: str) -> list[PendingApproval]:
        """Every approval of the session with its trail, settled ones included."""
        approvals = await self._query(session_id, ConversationWorkflow.approvals)
        return [await self._resolve_approval(a) for a in approvals]

    async def events(self, session_id: str, from_offset: int = 0) -> AsyncIterator[Event]:
        """The session's events from an offset, live; follows continue-as-new."""
        stream = WorkflowStreamClient.create(self._client, workflow_id_for(session_id))
        subscription = stream.subscribe(
            EVENTS_TOPIC, from_offset, result_type=StreamChunk, poll_cooldown=EVENT_POLL_COOLDOWN
        )
        try:
            async for item in subscription:
                chunk = item.data if self._content is None else await self._content.resolve_chunk(item.data)
                yield Event(offset=item.offset, chunk=chunk)
        except RPCError as err:
            task_failed = "Workflow Task in failed state" in err.message
            diagnosis = await self._diagnose_quietly(session_id, task_failed=task_failed)
            if diagnosis is not None:
                raise diagnosis from err
            raise

    async def until_wait_point(self, session_id: str, from_offset: int = 0) -> list[Event]:
        """Events from an offset up to and including the next `is_final` one: what one SSE response carries."""
        received: list[Event] = []
        async for event in self.events(session_id, from_offset):
            received.append(event)
            if event.chunk.is_final:
                break
        return received

    # --- remembered decisions (workflows/grants.py; a project's in workflows/project_grants.py) ---

    async def grants(self, session_id: str, *, include_revoked: bool = False) -> list[ApprovalGrant]:
        """The session's remembered decisions (with `include_revoked`, also the newest revoked ones)."""
        grants = await self._query(session_id, ConversationWorkflow.approval_grants)
        return [g for g in grants if include_revoked or g.revoked_at is None]

    async def revoke_grant(self, session_id: str, grant_id: str, reason: str | None = None) -> InputReceipt:
        """Forget a remembered decision of the session; calls it would have approved ask again.

        Raises:
            UnknownGrantError: The session has no such grant.
        """
        revoke = RevokeGrant(grant_id=grant_id, reason=reason)
        return await self._send(session_id, revoke)

    async def project_grants(self, project: str) -> ProjectGrants:
        """A project's remembered decisions (none when nothing was ever remembered for it)."""
        handle = self._project_handle(project)
        try:
            return await handle.query(
                ProjectGrantsWorkflow.grants,
                reject_condition=QueryRejectCondition.NOT_OPEN,
                rpc_timeout=self._answer_timeout,
            )
        except WorkflowQueryRejectedError:
            return ProjectGrants(project=project)
        except RPCError as err:
            if err.status is RPCStatusCode.NOT_FOUND:
                return ProjectGrants(project=project)
            raise

    async def revoke_project_grant(self, project: str, grant_id: str, reason: str | None = None) -> ApprovalGrant:
        """Forget a remembered decision of a project for all its sessions; returns it, revoked.

        Raises:
            UnknownGrantError: The project has no such grant.
        """
        handle = self._project_handle(project)
        try:
            return await handle.execute_update(
                ProjectGrantsWorkflow.revoke_grant,
                RevokeGrant(grant_id=grant_id, reason=reason),
                rpc_timeout=self._answer_timeout,
            )
        except WorkflowUpdateFailedError as err:
            raise _translate(err) from err
        except RPCError as err:
            if err.status is RPCStatusCode.NOT_FOUND:
                raise UnknownGrantError(f"project {project!r} has no remembered decisions") from err
            raise

    def _project_handle(self, project: str) -> WorkflowHandle[ProjectGrantsWorkflow, None]:
        return self._client.get_workflow_handle_for(ProjectGrantsWorkflow.run, project_grants_workflow_id(project))

    # --- diagnosis: why a session does not answer ---

    async def diagnose(self, session_id: str, *, task_failed: bool = False) -> ConversationError | None:
        """Why a session does not take input: unknown, closed, or stuck; None when nothing is wrong that Temporal
        can tell (then it is slow, or the worker is busy). `task_failed`: Temporal already said its workflow task
        is in a failed state."""
        try:
            description = await self.handle(session_id).describe()
        except RPCError as err:
            if err.status is RPCStatusCode.NOT_FOUND:
                return UnknownSessionError(f"no session {session_id!r}")
            raise
        if description.status is not WorkflowExecutionStatus.RUNNING:
            status = description.status.name if description.status else "CLOSED"
            return SessionClosedError(session_id, status, description.close_time)
        pending = description.raw_description.pending_workflow_task
        if pending.attempt > 1 or task_failed:
            problem = await self._last_task_problem(session_id)
            timed_out = problem is not None and problem.timed_out
            if timed_out and not task_failed and pending.attempt < STUCK_AFTER_TIMED_OUT_ATTEMPTS:
                return None  # the retry of a task whose worker was lost: slow, not stuck
            reason = problem.message if problem is not None else None
            return SessionStuckError(session_id, max(pending.attempt, 2), reason, timed_out=timed_out)
        if pending.HasField("scheduled_time") and not pending.HasField("started_time"):
            waited = datetime.now(pending.scheduled_time.ToDatetime().tzinfo) - pending.scheduled_time.ToDatetime()
            if waited >= self._answer_timeout:
                return SessionStuckError(session_id, 0, None)
        return None

    async def _last_task_problem(self, session_id: str) -> TaskProblem | None:
        """The newest WorkflowTaskFailed or WorkflowTaskTimedOut event (Temporal records the first failure or
        timeout of a task, not its retries); None when the history does not say."""
        request = GetWorkflowExecutionHistoryReverseRequest(namespace=self._client.namespace, maximum_page_size=100)
        request.execution.workflow_id = workflow_id_for(session_id)
        try:
            response = await self._client.workflow_service.get_workflow_execution_history_reverse(request)
        except RPCError:
            return None  # a server without the reverse history API (the time-skipping test server)
        for event in response.history.events:
            if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
                message = event.workflow_task_failed_event_attributes.failure.message[:500] or None
                return TaskProblem(timed_out=False, message=message)
            if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT:
                kind = event.workflow_task_timed_out_event_attributes.timeout_type
                what = "not picked up in time" if kind == TimeoutType.TIMEOUT_TYPE_SCHEDULE_TO_START else "not finished"
                return TaskProblem(timed_out=True, message=f"workflow task timed out ({what})")
        return None

    async def _closed(self, session_id: str) -> ConversationError:
        return await self.diagnose(session_id) or SessionClosedError(session_id, "CLOSED", None)

    # --- plumbing ---

    async def _answered(self, session_id: str, call: Awaitable[R]) -> R:
        """Await an input or a read (made with `rpc_timeout=self._answer_timeout`); when it fails or does not arrive
        in time, say why in the session's terms.

        The deadline is the RPC's own, never a cancellation from here: a cancelled SDK call leaves a future whose
        exception nobody retrieves.
        """
        try:
            return await call
        except WorkflowUpdateFailedError as err:
            raise _translate(err) from err
        except WorkflowUpdateRPCTimeoutOrCancelledError as err:
            raise await self.diagnose(session_id) or SessionStuckError(session_id, 0, None) from err
        except RPCError as err:
            if err.status is RPCStatusCode.NOT_FOUND:
                raise UnknownSessionError(f"no session {session_id!r}") from err
            if timed_out(err):
                raise await self._diagnose_quietly(session_id) or SessionStuckError(session_id, 0, None) from err
            task_failed = "Workflow Task in failed state" in err.message
            diagnosis = await self._diagnose_quietly(session_id, task_failed=task_failed)
            if diagnosis is not None:
                raise diagnosis from err
            raise
        except WorkflowQueryFailedError as err:
            diagnosis = await self._diagnose_quietly(session_id)
            if diagnosis is not None:
                raise diagnosis from err
            raise

    async def _diagnose_quietly(self, session_id: str, *, task_failed: bool = False) -> ConversationError | None:
        try:
            return await self.diagnose(session_id, task_failed=task_failed)
        except RPCError:
            return None

    async def _query(self, session_id: str, query: Callable[[ConversationWorkflow], R]) -> R:
        return await self._answered(session_id, self.handle(session_id).query(query, rpc_timeout=self._answer_timeout))

    async def _offload(self, text: Any) -> Any:
        if self._content is None:
            return text
        return await self._content.offload_text(text)

    async def _resolve_arguments(self, arguments: dict[str, Any]) -> dict[str, Any]:
        return arguments if self._content is None else await self._content.resolve_arguments(arguments)

    async def resolve_receipt(self, receipt: InputReceipt) -> InputReceipt:
        """The receipt with references in its events resolved to full text."""
        if self._content is None or not receipt.events:
            return receipt
        events = [
            emitted.model_copy(update={"chunk": await self._content.resolve_chunk(emitted.chunk)})
            for emitted in receipt.events
        ]
        return receipt.model_copy(update={"events": events})

    async def _resolve_approval(self, approval: PendingApproval) -> PendingApproval:
        return approval if self._content is None else await self._content.resolve_approval(approval)


class DeliveredInput:
    """An input the session accepted, whose receipt is yet to come (`ConversationClient.submit`)."""

    def __init__(
        self, conversations: ConversationClient, session_id: str, handle: WorkflowUpdateHandle[InputReceipt]
    ) -> None:
        self._conversations = conversations
        self._session_id = session_id
        self._handle = handle

    async def receipt(self, wait: timedelta) -> InputReceipt | None:
        """The receipt, with references in its events resolved; None when it did not come within `wait` (the
        input is delivered all the same: ask again).

        Raises:
            ConversationError: The workflow refused the input after accepting it.
        """
        try:
            receipt = await self._handle.result(rpc_timeout=wait)
        except WorkflowUpdateRPCTimeoutOrCancelledError:
            return None
        except WorkflowUpdateFailedError as err:
            raise _translate(err) from err
        return await self._conversations.resolve_receipt(receipt)


_UPDATES: dict[type[ContractModel], str] = {
    ToolResult: TOOL_RESULT_UPDATE,
    HitlDecision: HITL_DECISION_UPDATE,
    PlanDecision: PLAN_DECISION_UPDATE,
    SwitchAgent: SWITCH_AGENT_UPDATE,
    CancelTurn: CANCEL_TURN_UPDATE,
    RevokeGrant: REVOKE_GRANT_UPDATE,
}


def timed_out(err: RPCError) -> bool:
    """Whether an RPC ended at its own deadline (the SDK reports `rpc_timeout` as CANCELLED "Timeout expired")."""
    return err.status is RPCStatusCode.DEADLINE_EXCEEDED or (
        err.status is RPCStatusCode.CANCELLED and "Timeout expired" in err.message
    )


def _retrieve_start_error(start: WithStartWorkflowOperation[Any, Any]) -> None:
    """Mark the start operation's failure as seen. When update-with-start fails, the SDK also sets the error on the
    operation's handle future; unseen, it is logged at garbage collection, which during a `compile()` (Python 3.11's
    traceback formatting parses source) crashes the interpreter's AST validation (SystemError)."""
    future = start._workflow_handle
    if future.done() and not future.cancelled():
        future.exception()


def _reuse_policy(new_session: bool) -> WorkflowIDReusePolicy:
    # A closed session's id is reused only on request: a failed or terminated workflow silently replaced by an empty
    # session under the same id lost the conversation without telling anyone.
    return WorkflowIDReusePolicy.ALLOW_DUPLICATE if new_session else WorkflowIDReusePolicy.REJECT_DUPLICATE


def _translate(err: WorkflowUpdateFailedError) -> Exception:
    cause = err.cause
    if isinstance(cause, ApplicationError) and cause.type in _ERRORS_BY_TYPE:
        return _ERRORS_BY_TYPE[cause.type](cause.message)
    return err
