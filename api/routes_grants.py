"""Remembered decisions (workflows/grants.py): list and revoke those of a session or of a project.

A decision is remembered by sending `remember` with an approving `hitl_decision` (`POST /agent/message/stream`);
these routes read and revoke. A session's grants are read from its workflow, a project's from the project's own
workflow (workflows/project_grants.py), so what they answer is what the sessions go by.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, HTTPException, Path

from api.models import (
    SESSION_ID_MAX_LENGTH,
    SESSION_ID_PATTERN,
    ErrorResponse,
    GrantsResponse,
    RevokedGrantResponse,
    RevokeGrantRequest,
)
from api.runtime import ApiRuntime, get_runtime
from client.conversation_client import UnknownGrantError
from workflows.model import ApprovalGrant

router = APIRouter(tags=["remembered decisions"])

SessionIdPath = Annotated[str, Path(max_length=SESSION_ID_MAX_LENGTH, pattern=SESSION_ID_PATTERN)]
# Project names may hold slashes ("acme/web"): the rest of the path up to "/grants" is the name.
ProjectPath = Annotated[
    str, Path(max_length=200, pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.:/@+-]*$", description="The project's name.")
]
GrantIdPath = Annotated[str, Path(min_length=1, max_length=200)]
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "No such session, or no such grant."}
}


@router.get("/sessions/{session_id}/grants", response_model=GrantsResponse, responses=NOT_FOUND)
async def session_grants(
    session_id: SessionIdPath, runtime: Annotated[ApiRuntime, Depends(get_runtime)]
) -> GrantsResponse:
    """The session's remembered decisions, the newest revoked ones included."""
    grants = await runtime.conversations.grants(session_id, include_revoked=True)
    return GrantsResponse(session_id=session_id, grants=_ordered(grants), count=_active(grants))


@router.delete("/sessions/{session_id}/grants/{grant_id}", response_model=RevokedGrantResponse, responses=NOT_FOUND)
async def revoke_session_grant(
    session_id: SessionIdPath,
    grant_id: GrantIdPath,
    runtime: Annotated[ApiRuntime, Depends(get_runtime)],
    request: Annotated[RevokeGrantRequest | None, Body()] = None,
) -> RevokedGrantResponse:
    """Forget a remembered decision of the session: the calls it approved ask again."""
    try:
        receipt = await runtime.conversations.revoke_grant(session_id, grant_id, request.reason if request else None)
    except UnknownGrantError as err:
        raise HTTPException(404, str(err)) from None
    return RevokedGrantResponse(grant_id=grant_id, duplicate=receipt.duplicate)


@router.get("/projects/{project:path}/grants", response_model=GrantsResponse)
async def project_grants(project: ProjectPath, runtime: Annotated[ApiRuntime, Depends(get_runtime)]) -> GrantsResponse:
    """A project's remembered decisions (empty when nothing was remembered for it), the newest revoked included."""
    found = await runtime.conversations.project_grants(project)
    return GrantsResponse(project=project, grants=[*found.grants, *found.revoked], count=len(found.grants))


@router.delete("/projects/{project:path}/grants/{grant_id}", response_model=RevokedGrantResponse, responses=NOT_FOUND)
async def revoke_project_grant(
    project: ProjectPath,
    grant_id: GrantIdPath,
    runtime: Annotated[ApiRuntime, Depends(get_runtime)],
    request: Annotated[RevokeGrantRequest | None, Body()] = None,
) -> RevokedGrantResponse:
    """Forget a remembered decision of a project, for every session in it, from their next call on."""
    before = await runtime.conversations.project_grants(project)
    try:
        revoked = await runtime.conversations.revoke_project_grant(
            project, grant_id, request.reason if request else None
        )
    except UnknownGrantError as err:
        raise HTTPException(404, str(err)) from None
    duplicate = not any(g.grant_id == grant_id for g in before.grants)
    return RevokedGrantResponse(grant_id=grant_id, duplicate=duplicate, grant=revoked)


def _ordered(grants: list[ApprovalGrant]) -> list[ApprovalGrant]:
    return [g for g in grants if g.revoked_at is None] + [g for g in grants if g.revoked_at is not None]


def _active(grants: list[ApprovalGrant]) -> int:
    return sum(g.revoked_at is None for g in grants)
