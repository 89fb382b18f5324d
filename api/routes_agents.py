"""`/agents`: the agents of this runtime's mode, a session's agent context, and explicit switches."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Response

from api.models import (
    AgentContext,
    AgentContextResponse,
    AgentInfo,
    ErrorResponse,
    ListAgentsResponse,
    SwitchAgentRequest,
)
from api.routes_sessions import NOT_FOUND, UNAVAILABLE, SessionIdPath, switch_item
from api.runtime import ApiRuntime, get_runtime
from workflows.agents import AGENTS, describe
from workflows.model import (
    AgentType,
    SessionState,
    SwitchAgent,
    workflow_id_for,
)

router = APIRouter(prefix="/agents", tags=["agents"])


@router.get("", response_model=ListAgentsResponse)
async def list_agents(runtime: Annotated[ApiRuntime, Depends(get_runtime)]) -> ListAgentsResponse:
    """The agents new sessions have (orchestrator and universal only in single-agent mode)."""
    agents = [AgentInfo.model_validate(describe(agent)) for kind, agent in AGENTS.items() if kind in runtime.agents]
    return ListAgentsResponse(agents=agents, total=len(agents))


@router.get("/{session_id}/current", response_model=AgentContextResponse, responses={**NOT_FOUND, **UNAVAILABLE})
async def current_agent(
    session_id: SessionIdPath,
    runtime: Annotated[ApiRuntime, Depends(get_runtime)],
    include_history: bool = True,
) -> AgentContextResponse:
    state = await runtime.state(session_id)
    return _context(session_id, state, include_history=include_history)


@router.post(
    "/{session_id}/switch",
    response_model=AgentContextResponse,
    responses={
        202: {"model": AgentContextResponse, "description": "Queued behind the running turn; context as of now."},
        400: {"model": ErrorResponse, "description": "Unknown agent, or one this session does not have."},
        **NOT_FOUND,
        **UNAVAILABLE,
    },
)
async def switch_agent(
    session_id: SessionIdPath,
    request: SwitchAgentRequest,
    runtime: Annotated[ApiRuntime, Depends(get_runtime)],
    response: Response,
) -> AgentContextResponse:
    """Switch the session's agent and answer with the context after the switch. Switching to the current agent
    changes nothing and is not an error."""
    try:
        target = AgentType(request.target_agent)
    except ValueError:
        raise HTTPException(400, f"Invalid agent type: {request.target_agent}") from None
    if target not in runtime.agents:
        raise HTTPException(400, f"Agent {target.value} is not available in this runtime's mode")
    offset = await runtime.current_offset(session_id)
    if offset is None:
        raise HTTPException(404, f"Session {session_id} not found")
    receipt = await runtime.conversations.switch_agent(
        session_id, SwitchAgent(agent_type=target, reason=request.reason, confidence=request.confidence)
    )
    if receipt.queued:
        response.status_code = 202
    else:
        # The switch is applied by the workflow's loop; its `agent_switched` chunk is the wait point after it.
        await runtime.bounded(runtime.conversations.until_wait_point(session_id, offset))
    return _context(session_id, await runtime.state(session_id), include_history=True)


def _context(session_id: str, state: SessionState, *, include_history: bool) -> AgentContextResponse:
    switches = state.switches
    return AgentContextResponse(
        context=AgentContext(
            id=workflow_id_for(session_id),
            session_id=session_id,
            current_agent=state.current_agent.value,
            switch_count=len(switches),
            switch_history=[switch_item(s) for s in switches] if include_history else [],
            last_switch_at=switches[-1].switched_at if switches else None,
            created_at=state.created_at,
        )
    )
