"""`/approvals`: the inbox of pending approvals across sessions, for gateways, IDEs and on-call tools; and a decision
on one of them.

Both read and decide through the rules the CLI uses (`client.inbox`): the search attributes find the sessions that
wait, each session then says what exactly it waits for, and a decision goes to the session as a `hitl_decision`
(or, for a plan, a `plan_decision`) through its update validator. Behind `X-Internal-Auth` like every route.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from api.models import (
    SESSION_ID_MAX_LENGTH,
    SESSION_ID_PATTERN,
    ApprovalDecisionRequest,
    ApprovalDecisionResponse,
    ApprovalInboxResponse,
    ErrorResponse,
)
from api.runtime import ApiRuntime, get_runtime
from client.conversation_client import ApprovalAlreadyResolvedError, UnknownCallIdError, UnknownSessionError
from client.inbox import InboxFilter, decide_approval, find_pending_approvals, inbox_item, parse_duration
from workflows.model import AgentType, HitlDecision

router = APIRouter(prefix="/approvals", tags=["approvals"])

MAX_PAGE = 500
SessionIdPath = Annotated[str, Path(max_length=SESSION_ID_MAX_LENGTH, pattern=SESSION_ID_PATTERN)]
CallIdPath = Annotated[str, Path(min_length=1, max_length=200, description="The call id, or a plan's request id.")]
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "A malformed filter, or a decision the session refuses."},
    404: {"model": ErrorResponse, "description": "No such session, or no such call in it."},
    503: {"model": ErrorResponse, "description": "Temporal or the worker did not answer in time."},
}


@router.get("", response_model=ApprovalInboxResponse, responses=ERRORS)
async def list_approvals(
    runtime: Annotated[ApiRuntime, Depends(get_runtime)],
    older_than: Annotated[
        str | None, Query(description="Pending for at least this long: 90s, 15m, 2h, 1d, 1h30m, or seconds.")
    ] = None,
    tool: Annotated[str | None, Query(description="Only calls of this tool.")] = None,
    agent: Annotated[AgentType | None, Query(description="Only calls this agent asked for.")] = None,
    session_id: Annotated[list[str] | None, Query(description="Only these sessions (repeat the parameter).")] = None,
    limit: Annotated[int, Query(description=f"1..{MAX_PAGE}")] = 50,
    offset: Annotated[int, Query(description=">= 0")] = 0,
    scan: Annotated[bool, Query(description="Ask every running session instead of using the search attributes.")] = (
        False
    ),
) -> ApprovalInboxResponse:
    """Pending approvals of this runtime's sessions, oldest first, with how to decide each one."""
    if not 1 <= limit <= MAX_PAGE:
        raise HTTPException(400, f"Limit must be between 1 and {MAX_PAGE}")
    if offset < 0:
        raise HTTPException(400, "Offset must be >= 0")
    try:
        age = parse_duration(older_than) if older_than is not None else None
    except ValueError as err:
        raise HTTPException(400, f"older_than: {err}") from None
    criteria = InboxFilter(
        older_than=age,
        tool=tool,
        session_ids=tuple(session_id or ()),
        agent=agent.value if agent else None,
        task_queue=runtime.task_queue,
    )
    now = datetime.now(UTC)
    try:
        inbox = await find_pending_approvals(runtime.client, runtime.conversations, criteria, now=now, scan=scan)
    except UnknownSessionError as err:
        raise HTTPException(404, str(err)) from None
    page = inbox.entries[offset : offset + limit]
    following = offset + len(page)
    return ApprovalInboxResponse(
        approvals=[inbox_item(entry, now) for entry in page],
        count=len(page),
        total=len(inbox.entries),
        limit=limit,
        offset=offset,
        next_offset=following if following < len(inbox.entries) else None,
        scanned=inbox.scanned,
        unanswered_sessions=inbox.silent,
    )


@router.post(
    "/{session_id}/{call_id}",
    response_model=ApprovalDecisionResponse,
    responses={**ERRORS, 409: {"model": ErrorResponse, "description": "It was already decided differently."}},
)
async def decide(
    session_id: SessionIdPath,
    call_id: CallIdPath,
    request: ApprovalDecisionRequest,
    runtime: Annotated[ApiRuntime, Depends(get_runtime)],
) -> ApprovalDecisionResponse:
    """Approve, edit or reject a pending approval; a repeated identical decision changes nothing (`duplicate`)."""
    try:
        decision = HitlDecision(call_id=call_id, **request.model_dump(exclude_none=True))
    except ValidationError as err:
        raise RequestValidationError(err.errors(include_url=False, include_context=False)) from None
    try:
        receipt = await decide_approval(runtime.conversations, session_id, decision)
    except UnknownCallIdError as err:
        raise HTTPException(404, str(err)) from None
    except ApprovalAlreadyResolvedError as err:
        raise HTTPException(409, str(err)) from None
    resume_from = receipt.events[-1].offset + 1 if receipt.events else receipt.offset
    return ApprovalDecisionResponse(
        session_id=session_id,
        call_id=call_id,
        decision=request.decision,
        duplicate=receipt.duplicate,
        detail=receipt.detail,
        resume_from=resume_from,
        events=[emitted.chunk for emitted in receipt.events],
    )
