"""`/events/metrics...`: metrics derived from the workflows' own counters (spec §7), not from an in-memory bus.

The aggregate reads the newest `ApiOptions.metrics_session_limit` sessions (200 by default) found by Temporal
visibility, one state query each, and says in `metrics.truncated` whether more exist. The audit log and the event bus
statistics of the original are not served: the PostgreSQL projection keeps every event for that.
"""

from __future__ import annotations

import functools
from collections import Counter
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import JSONResponse
from temporalio.client import WorkflowQueryFailedError
from temporalio.service import RPCError

from api.models import (
    AggregateMetrics,
    LlmTotals,
    MetricsResponse,
    MetricsSessionsResponse,
    SessionMetricsResponse,
)
from api.routes_sessions import UNAVAILABLE, SessionIdPath
from api.runtime import ApiRuntime, get_runtime, session_id_of
from client.conversation_client import ConversationError, UnknownSessionError
from workflows.model import SessionState

router = APIRouter(prefix="/events", tags=["events"])


@router.get("/metrics", response_model=MetricsResponse, responses=UNAVAILABLE)
async def metrics(runtime: Annotated[ApiRuntime, Depends(get_runtime)]) -> MetricsResponse:
    limit = runtime.options.metrics_session_limit
    page, total = await runtime.list_sessions(active_only=False, offset=0, limit=limit)
    states = await runtime.gather_bounded(
        [functools.partial(_state_or_none, runtime, session_id_of(execution)) for execution in page]
    )
    found = [s for s in states if s is not None]

    llm = LlmTotals()
    by_status: Counter[str] = Counter()
    classification: Counter[str] = Counter()
    switches: Counter[str] = Counter()
    tool_calls: Counter[str] = Counter()
    approvals: Counter[str] = Counter()
    pending = budget_stops = 0
    for state in found:
        c = state.counters
        llm.requests += c.llm_requests
        llm.failed += c.llm_failures
        llm.successful += c.llm_requests - c.llm_failures
        llm.total_latency_ms += c.llm_latency_ms
        llm.prompt_tokens += c.tokens.prompt_tokens
        llm.completion_tokens += c.tokens.completion_tokens
        llm.total_tokens += c.tokens.total_tokens
        by_status[state.status.value] += 1
        classification.update(calls=c.classification_calls, fallbacks=c.classification_fallbacks)
        switches.update(
            f"{s.from_agent.value if s.from_agent else 'none'}_to_{s.to_agent.value}" for s in state.switches
        )
        tool_calls.update(c.tool_calls)
        approvals.update(c.approvals)
        pending += len(state.pending_approvals)
        budget_stops += c.budget_stops

    computed: dict[str, float] = {}
    if llm.successful:
        computed["llm_avg_latency_ms"] = round(llm.total_latency_ms / llm.successful, 2)
        computed["llm_avg_tokens_per_request"] = round(llm.total_tokens / llm.successful, 2)
    if llm.requests:
        computed["llm_success_rate"] = round(llm.successful / llm.requests, 3)
    if classification["calls"]:
        computed["classification_fallback_rate"] = round(classification["fallbacks"] / classification["calls"], 3)
    closed_calls = sum(tool_calls.values())
    if closed_calls:
        computed["tool_success_rate"] = round(tool_calls["completed"] / closed_calls, 3)

    return MetricsResponse(
        metrics=AggregateMetrics(
            sessions_total=total,
            sessions_scanned=len(found),
            truncated=total > len(page),
            sessions_by_status=dict(by_status),
            llm=llm,
            classification={"calls": classification["calls"], "fallbacks": classification["fallbacks"]},
            agent_switches=dict(switches),
            tool_calls=dict(tool_calls),
            approvals=dict(approvals),
            pending_approvals=pending,
            budget_stops=budget_stops,
        ),
        computed=computed,
        timestamp=datetime.now(UTC),
    )


@router.get("/metrics/sessions", response_model=MetricsSessionsResponse, responses=UNAVAILABLE)
async def metrics_sessions(runtime: Annotated[ApiRuntime, Depends(get_runtime)]) -> MetricsSessionsResponse:
    """Sessions that have metrics: every session of this runtime (newest `metrics_session_limit`)."""
    page, _ = await runtime.list_sessions(active_only=False, offset=0, limit=runtime.options.metrics_session_limit)
    ids = [session_id_of(e) for e in page]
    return MetricsSessionsResponse(sessions=ids, count=len(ids))


@router.get(
    "/metrics/session/{session_id}",
    response_model=SessionMetricsResponse,
    responses={
        404: {"description": 'No such session: `{"error": "No metrics found for session <id>"}`'},
        **UNAVAILABLE,
    },
)
async def session_metrics(
    session_id: SessionIdPath, runtime: Annotated[ApiRuntime, Depends(get_runtime)]
) -> SessionMetricsResponse | JSONResponse:
    try:
        state = await runtime.state(session_id)
        history = await runtime.history(session_id)
    except UnknownSessionError:
        # The original's shape for this 404.
        return JSONResponse({"error": f"No metrics found for session {session_id}"}, status_code=404)
    c = state.counters
    successful = c.llm_requests - c.llm_failures
    return SessionMetricsResponse(
        session_id=session_id,
        total_requests=c.llm_requests,
        successful_requests=successful,
        failed_requests=c.llm_failures,
        total_duration_ms=c.llm_latency_ms,
        average_duration_ms=round(c.llm_latency_ms / successful, 2) if successful else 0.0,
        total_prompt_tokens=c.tokens.prompt_tokens,
        total_completion_tokens=c.tokens.completion_tokens,
        total_tokens=c.tokens.total_tokens,
        average_tokens_per_request=round(c.tokens.total_tokens / successful, 2) if successful else 0.0,
        requests_with_tools=sum(1 for m in history if m.role == "assistant" and m.tool_calls),
        classification_calls=c.classification_calls,
        classification_fallbacks=c.classification_fallbacks,
        agent_switches=len(state.switches),
        tool_calls=dict(c.tool_calls),
        approvals=dict(c.approvals),
        budget_stops=c.budget_stops,
    )


async def _state_or_none(runtime: ApiRuntime, session_id: str) -> SessionState | None:
    """One unreadable session (no worker for a closed one, a timeout) must not fail the aggregate."""
    try:
        return await runtime.state(session_id)
    except (HTTPException, ConversationError, RPCError, WorkflowQueryFailedError):
        return None
