"""`/sessions`: create, list (Temporal visibility), read, history and the pending-approval restore list.

History is returned as the original stored it: OpenAI chat messages whose `tool_calls` are
`{id, type: "function", function: {name, arguments: <JSON text>}}`, with `name`, `tool_call_id` and `tool_calls`
left out when empty.
"""

from __future__ import annotations

import functools
import json
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, HTTPException, Path, Query
from temporalio.client import WorkflowExecution, WorkflowExecutionStatus, WorkflowQueryFailedError
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError

from api.models import (
    SESSION_ID_MAX_LENGTH,
    SESSION_ID_PATTERN,
    AgentSwitchItem,
    CreateSessionRequest,
    CreateSessionResponse,
    ErrorResponse,
    GetSessionResponse,
    HistoryMessage,
    HistoryResponse,
    HistoryToolCall,
    ListSessionsResponse,
    PendingApprovalItem,
    PendingApprovalsResponse,
    SessionDetail,
    SessionListItem,
    SessionMessage,
    ToolCallFunction,
)
from api.runtime import ApiRuntime, get_runtime, session_id_of
from client.conversation_client import ConversationError
from workflows.model import (
    AgentSwitchRecord,
    ChatMessage,
    PendingApproval,
    ToolCall,
)

router = APIRouter(prefix="/sessions", tags=["sessions"])

SessionIdPath = Annotated[str, Path(max_length=SESSION_ID_MAX_LENGTH, pattern=SESSION_ID_PATTERN)]
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorResponse, "description": "No such session."}}
UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {"model": ErrorResponse, "description": "Temporal or the worker did not answer in time."}
}


@router.post(
    "",
    status_code=201,
    response_model=CreateSessionResponse,
    responses={409: {"model": ErrorResponse, "description": "The session exists."}, **UNAVAILABLE},
)
async def create_session(
    runtime: Annotated[ApiRuntime, Depends(get_runtime)],
    request: Annotated[CreateSessionRequest | None, Body()] = None,
) -> CreateSessionResponse:
    """Start a session without a message (sending a `user_message` to a new id starts one as well)."""
    session_id = (request.session_id if request else None) or str(uuid.uuid4())
    try:
        await runtime.conversations.create_session(session_id)
    except WorkflowAlreadyStartedError:
        raise HTTPException(409, f"Session {session_id} already exists") from None
    return CreateSessionResponse(id=session_id, created_at=datetime.now(UTC))


@router.get("", response_model=ListSessionsResponse, responses={400: {"model": ErrorResponse}, **UNAVAILABLE})
async def list_sessions(
    runtime: Annotated[ApiRuntime, Depends(get_runtime)],
    limit: Annotated[int, Query(description="1..1000")] = 100,
    offset: Annotated[int, Query(description=">= 0")] = 0,
    active_only: bool = True,
) -> ListSessionsResponse:
    """Sessions of this runtime's task queue from Temporal visibility, newest first."""
    # 400 rather than 422 for out-of-range values, as the original answered.
    if not 1 <= limit <= 1000:
        raise HTTPException(400, "Limit must be between 1 and 1000")
    if offset < 0:
        raise HTTPException(400, "Offset must be >= 0")
    page, total = await runtime.list_sessions(active_only=active_only, offset=offset, limit=limit)
    items = await runtime.gather_bounded([functools.partial(_list_item, runtime, execution) for execution in page])
    return ListSessionsResponse(sessions=items, total=total, limit=limit, offset=offset)


async def _list_item(runtime: ApiRuntime, execution: WorkflowExecution) -> SessionListItem:
    session_id = session_id_of(execution)
    is_active = execution.status == WorkflowExecutionStatus.RUNNING
    try:
        state = await runtime.state(session_id)
    except (HTTPException, ConversationError, RPCError, WorkflowQueryFailedError):
        # The state did not answer (no worker, closed long ago): what visibility knows still lists the session.
        return SessionListItem(
            id=session_id,
            title=None,
            message_count=0,
            last_activity=execution.close_time or execution.start_time,
            is_active=is_active,
            current_agent=None,
        )
    return SessionListItem(
        id=session_id,
        title=state.title,
        message_count=state.message_count,
        last_activity=state.last_activity,
        is_active=is_active,
        current_agent=state.current_agent.value,
    )


@router.get("/{session_id}", response_model=GetSessionResponse, responses={**NOT_FOUND, **UNAVAILABLE})
async def get_session(
    session_id: SessionIdPath,
    runtime: Annotated[ApiRuntime, Depends(get_runtime)],
    include_messages: bool = False,
) -> GetSessionResponse:
    is_active, started = await runtime.describe_status(session_id)
    state = await runtime.state(session_id)
    history = await runtime.history(session_id) if include_messages else []
    created_at = state.created_at or started
    duration = (state.last_activity - created_at).total_seconds() if state.last_activity else None
    return GetSessionResponse(
        session=SessionDetail(
            id=session_id,
            title=state.title,
            message_count=state.message_count,
            messages=[_session_message(m) for m in history] if include_messages else None,
            last_activity=state.last_activity,
            is_active=is_active,
            created_at=created_at,
            duration_seconds=max(duration, 0.0) if duration is not None else None,
        )
    )


@router.get("/{session_id}/history", response_model=HistoryResponse, responses={**NOT_FOUND, **UNAVAILABLE})
async def get_history(
    session_id: SessionIdPath, runtime: Annotated[ApiRuntime, Depends(get_runtime)]
) -> HistoryResponse:
    """The conversation as the LLM sees it, for an IDE restoring its chat after a restart."""
    state = await runtime.state(session_id)
    history = await runtime.history(session_id)
    return HistoryResponse(
        session_id=session_id,
        messages=[_history_message(m) for m in history],
        message_count=len(history),
        last_activity=state.last_activity,
        current_agent=state.current_agent.value,
        agent_history=[switch_item(s) for s in state.switches],
    )


@router.get(
    "/{session_id}/pending-approvals",
    response_model=PendingApprovalsResponse,
    responses={**NOT_FOUND, **UNAVAILABLE},
)
async def get_pending_approvals(
    session_id: SessionIdPath, runtime: Annotated[ApiRuntime, Depends(get_runtime)]
) -> PendingApprovalsResponse:
    """Approvals still waiting for a decision, for an IDE restoring its dialogs (bug B16: always answers)."""
    pending = await runtime.conversations.pending_approvals(session_id)
    items = [_pending_item(p) for p in pending]
    return PendingApprovalsResponse(session_id=session_id, pending_approvals=items, count=len(items))


def _tool_calls(calls: list[ToolCall]) -> list[HistoryToolCall] | None:
    if not calls:
        return None
    return [
        HistoryToolCall(
            id=c.id, function=ToolCallFunction(name=c.name, arguments=json.dumps(c.arguments, ensure_ascii=False))
        )
        for c in calls
    ]


def _history_message(message: ChatMessage) -> HistoryMessage:
    return HistoryMessage(
        role=message.role,
        content=message.content,
        name=message.name or None,
        tool_call_id=message.tool_call_id or None,
        tool_calls=_tool_calls(message.tool_calls),
    )


def _session_message(message: ChatMessage) -> SessionMessage:
    return SessionMessage(
        id=message.message_id,
        role=message.role,
        content=message.content,
        name=message.name,
        tool_call_id=message.tool_call_id,
        tool_calls=_tool_calls(message.tool_calls),
        created_at=message.created_at,
    )


def _pending_item(approval: PendingApproval) -> PendingApprovalItem:
    """The original's restore shape. As there, `call_id` repeats `request_id` (for a tool it is the call id; for a
    plan, `plan-approval-<plan_id>`, what `plan_decision` answers), and the legacy tool fields are empty for plans."""
    if approval.request_type == "plan":
        return PendingApprovalItem(
            request_id=approval.request_id,
            request_type="plan",
            subject=approval.subject,
            details=approval.arguments,
            reason=approval.reason,
            created_at=approval.created_at,
            call_id=approval.request_id,
            tool_name=None,
            arguments={},
        )
    return PendingApprovalItem(
        request_id=approval.request_id,
        request_type="tool",
        subject=approval.subject,
        details={"arguments": approval.arguments},
        reason=approval.reason,
        created_at=approval.created_at,
        call_id=approval.call_id,
        tool_name=approval.tool_name,
        arguments=approval.arguments,
    )


def switch_item(record: AgentSwitchRecord) -> AgentSwitchItem:
    return AgentSwitchItem(
        from_agent=record.from_agent.value if record.from_agent else None,
        to_agent=record.to_agent.value,
        reason=record.reason,
        switched_at=record.switched_at,
        confidence=record.confidence,
    )
