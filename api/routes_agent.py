"""`POST /agent/message/stream` (the gateway's one write path) and `GET /agent/stream/{session_id}` (resume)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Path, Query
from fastapi.responses import StreamingResponse

from api.models import SESSION_ID_MAX_LENGTH, SESSION_ID_PATTERN, AgentStreamRequest, ErrorResponse
from api.runtime import ApiRuntime, get_runtime
from api.streaming import (
    InputError,
    Outgoing,
    api_chunk,
    error_chunk,
    parse_input,
    relay,
    run_input,
    sse_event,
)
from workflows.model import UserMessage

log = logging.getLogger("agent_runtime.api")

router = APIRouter(tags=["messages"])


class EventStreamResponse(StreamingResponse):
    media_type = "text/event-stream"


SSE_HEADERS = {"Cache-Control": "no-cache", "Connection": "keep-alive", "X-Accel-Buffering": "no"}

SSE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": (
            "Server-sent events. Each event is `data: <StreamChunk JSON>` and a blank line; relayed chunks also "
            "carry `id: <stream offset>`; comment lines (`: keepalive`) may appear while the runtime works. The "
            "stream ends right after the chunk with `is_final: true`. Chunk types besides the workflow's: "
            "`session_info` (first, when the session was created for this request), `status` (duplicate or queued "
            "input, stream timeout) and `error` (the input was refused)."
        ),
        "content": {"text/event-stream": {"schema": {"$ref": "#/components/schemas/StreamChunk"}}},
    },
    400: {"model": ErrorResponse, "description": "Unsupported message type or a message missing a field."},
    404: {"model": ErrorResponse, "description": "Resuming a session that does not exist."},
}

StreamTokens = Annotated[
    bool,
    Query(
        alias="tokens",
        description="Also relay live `assistant_delta` token chunks (not part of the original contract).",
    ),
]

LastEventId = Annotated[
    str | None,
    Header(
        alias="Last-Event-ID",
        description="Resume after this event id (an offset) instead of sending the input again.",
    ),
]


def _event_stream(session_id: str, outgoing: AsyncIterator[Outgoing]) -> EventStreamResponse:
    async def body() -> AsyncIterator[str]:
        try:
            async for item in outgoing:
                yield sse_event(item)
        except Exception:
            # Once the 200 is sent, a failure can only be told in the stream: as a final error chunk (spec §4.1).
            log.exception("The event stream of session %s failed", session_id)
            yield sse_event(Outgoing(error_chunk(session_id, "internal error while streaming", "internal")))

    return EventStreamResponse(body(), headers=SSE_HEADERS)


def _resume_offset(last_event_id: str | None) -> int | None:
    if last_event_id is None:
        return None
    value = last_event_id.strip()
    if not value.isdigit():
        raise HTTPException(400, "Last-Event-ID must be an event id (a non-negative integer)")
    return int(value) + 1


@router.post(
    "/agent/message/stream",
    response_class=EventStreamResponse,
    responses=SSE_RESPONSES,
    summary="Send one input to a session and stream its events up to the next wait point",
)
async def message_stream(
    request: AgentStreamRequest,
    runtime: Annotated[ApiRuntime, Depends(get_runtime)],
    last_event_id: LastEventId = None,
    tokens: StreamTokens = False,
) -> EventStreamResponse:
    """Types: `user_message {content, agent_type?}` (starts the session if needed), `tool_result {call_id, result?,
    error?}`, `hitl_decision {call_id, decision: approve|edit|reject, modified_arguments?, feedback?}`,
    `switch_agent {agent_type, reason?}`, `plan_decision {approval_request_id, decision: approve|reject|modify,
    feedback?}`. With `Last-Event-ID` the input is not sent again: the events after that
    id are relayed up to the next wait point (a reconnect after a dropped stream)."""
    try:
        item = parse_input(request.message)
    except InputError as err:
        raise HTTPException(400, str(err)) from None
    resume_from = _resume_offset(last_event_id)
    session_id = request.session_id
    if session_id is None:
        if not isinstance(item.item, UserMessage) or resume_from is not None:
            raise HTTPException(400, f"session_id is required for {request.message['type']} message")
        session_id = str(uuid.uuid4())
        return _event_stream(session_id, _announced(session_id, run_input(runtime, session_id, item, tokens=tokens)))
    if resume_from is not None:
        if await runtime.current_offset(session_id) is None:
            raise HTTPException(404, f"Session {session_id} not found")
        return _event_stream(session_id, relay(runtime, session_id, resume_from, tokens=tokens))
    return _event_stream(session_id, run_input(runtime, session_id, item, tokens=tokens))


async def _announced(session_id: str, outgoing: AsyncIterator[Outgoing]) -> AsyncIterator[Outgoing]:
    content = f"Session {session_id} created"
    yield Outgoing(api_chunk(session_id, "session_info", content, is_final=False))
    async for item in outgoing:
        yield item


@router.get(
    "/agent/stream/{session_id}",
    response_class=EventStreamResponse,
    responses=SSE_RESPONSES,
    summary="Resume a session's event stream from an offset, up to the next wait point",
)
async def resume_stream(
    session_id: Annotated[str, Path(max_length=SESSION_ID_MAX_LENGTH, pattern=SESSION_ID_PATTERN)],
    runtime: Annotated[ApiRuntime, Depends(get_runtime)],
    from_offset: Annotated[int | None, Query(ge=0, description="First offset to send; wins over the header.")] = None,
    last_event_id: LastEventId = None,
    tokens: StreamTokens = False,
) -> EventStreamResponse:
    """Events from `from_offset` (or after `Last-Event-ID`, or from now when neither is given) through the next
    chunk with `is_final: true`. Nothing before the offset is sent again."""
    current = await runtime.current_offset(session_id)
    if current is None:
        raise HTTPException(404, f"Session {session_id} not found")
    start = from_offset if from_offset is not None else _resume_offset(last_event_id)
    return _event_stream(session_id, relay(runtime, session_id, current if start is None else start, tokens=tokens))
