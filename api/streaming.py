"""One input in, the session's events out until the next wait point: shared by the SSE route and the WebSocket.

Mechanics (spec §4.1, bug B11): deliver the input with an Update (so a bad input is refused before it touches
history); a comment line says so at once. The update answers with the input's first events and where they start on
the session's stream (often the whole answer: a plain turn's message, an approval's re-emitted `tool_call`); relay
them, then the stream's from there, up to and including the first `is_final` chunk. A client that wants live
tokens gets its receipt at once instead, and the deltas on the stream as the model writes them. The stream never
waits on a human: it ends at every wait point, and the durable wait lives in the workflow. Errors of the update
become one final `error` chunk; an input the workflow already had becomes one final `status` chunk, as does a user
message queued behind an outstanding call.

Every relayed chunk carries its stream offset, which the SSE route sends as the event `id:` so a client can resume.

Live token deltas (`assistant_delta`) are relayed only to clients that ask for them (`tokens=true`), and only then
published at all (`TurnInput.live_tokens`): the original contract never sent that chunk type, so an unmodified
gateway and IDE see exactly the chunks they know.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from fastapi import HTTPException
from pydantic import TypeAdapter, ValidationError
from temporalio.client import WorkflowUpdateFailedError
from temporalio.service import RPCError

from api.models import (
    CancelTurnInput,
    HitlDecisionInput,
    MessageInput,
    PlanDecisionInput,
    SwitchAgentInput,
    ToolResultInput,
    UserMessageInput,
)
from api.runtime import ApiRuntime
from client.conversation_client import (
    ApprovalAlreadyResolvedError,
    ConversationError,
    InvalidInputError,
    SessionClosedError,
    SessionStuckError,
    UnknownCallIdError,
    UnknownSessionError,
)
from workflows.model import (
    CancelTurn,
    ChunkType,
    HitlDecision,
    PlanDecision,
    StreamChunk,
    SwitchAgent,
    ToolResult,
    TurnInput,
    UserMessage,
)

Input = UserMessage | ToolResult | HitlDecision | SwitchAgent | PlanDecision | CancelTurn


@dataclass(frozen=True)
class ParsedInput:
    """One input as the workflow takes it, and how to deliver it."""

    item: Input
    new_session: bool = False


SUPPORTED_TYPES = ("user_message", "tool_result", "hitl_decision", "switch_agent", "plan_decision", "cancel_turn")

_MESSAGE = TypeAdapter[
    UserMessageInput | ToolResultInput | HitlDecisionInput | SwitchAgentInput | PlanDecisionInput | CancelTurnInput
](MessageInput)

_ERROR_CODES: dict[type[Exception], str] = {
    UnknownSessionError: "unknown_session",
    UnknownCallIdError: "unknown_call_id",
    ApprovalAlreadyResolvedError: "approval_already_resolved",
    InvalidInputError: "invalid_input",
    SessionClosedError: "session_closed",
    SessionStuckError: "session_stuck",
}


class InputError(ValueError):
    """The message is not one the runtime accepts; the text says why (a 400, or an `error` frame on the socket)."""


@dataclass(frozen=True)
class Outgoing:
    """One chunk for the client; `offset` is its place in the session's stream (None for the API's own chunks).

    A `comment` is no chunk: the SSE route writes it as a comment line (which every SSE reader, the original gateway
    included, skips) and the WebSocket sends nothing.
    """

    chunk: dict[str, Any]
    offset: int | None = None
    comment: str | None = None

    @property
    def is_final(self) -> bool:
        return bool(self.chunk.get("is_final"))


KEEPALIVE = Outgoing(chunk={}, comment="keepalive")
"""Yielded while nothing happens for `keepalive_seconds`."""


DELIVERED = Outgoing(chunk={}, comment="delivered")
"""Yielded as soon as the session has accepted the input: the client knows it need not send it again."""


def parse_input(message: Any) -> ParsedInput:
    """The typed input for one `message` object, or InputError naming what is wrong with it."""
    if not isinstance(message, dict):
        raise InputError("message must be a JSON object")
    kind = message.get("type")
    if kind not in SUPPORTED_TYPES:
        raise InputError(f"Unsupported message type: {kind}")
    # The original's wording for the required fields, which gateways and IDEs may match on.
    if kind in ("tool_result", "hitl_decision") and not message.get("call_id"):
        raise InputError(f"call_id is required for {kind} message")
    if kind == "hitl_decision" and not message.get("decision"):
        raise InputError("call_id and decision are required for hitl_decision message")
    if kind == "switch_agent" and not message.get("agent_type"):
        raise InputError("agent_type is required for switch_agent message")
    if kind == "plan_decision" and not (message.get("approval_request_id") and message.get("decision")):
        raise InputError("approval_request_id and decision are required for plan_decision message")
    try:
        parsed = _MESSAGE.validate_python(message)
    except ValidationError as err:
        raise InputError(f"Invalid {kind} message: {_describe(err)}") from None
    try:
        match parsed:
            case UserMessageInput():
                user = UserMessage(
                    content=parsed.content,
                    agent_type=parsed.agent_type,
                    message_id=parsed.message_id,
                    project=parsed.project,
                )
                return ParsedInput(user, new_session=parsed.new_session)
            case ToolResultInput():
                error = parsed.error
                if error is not None and not isinstance(error, str):
                    error = json.dumps(error, ensure_ascii=False)
                return ParsedInput(ToolResult(call_id=parsed.call_id, result=parsed.result, error=error))
            case HitlDecisionInput():
                decision = HitlDecision(
                    call_id=parsed.call_id,
                    decision=parsed.decision,
                    modified_arguments=parsed.modified_arguments,
                    feedback=parsed.feedback,
                    remember=parsed.remember,
                )
                return ParsedInput(decision)
            case SwitchAgentInput():
                return ParsedInput(SwitchAgent(agent_type=parsed.agent_type, reason=parsed.reason))
            case PlanDecisionInput():
                plan_decision = PlanDecision(
                    approval_request_id=parsed.approval_request_id, decision=parsed.decision, feedback=parsed.feedback
                )
                return ParsedInput(plan_decision)
            case CancelTurnInput():
                return ParsedInput(CancelTurn(reason=parsed.reason))
    except ValidationError as err:
        raise InputError(f"Invalid {kind} message: {_describe(err)}") from None
    raise InputError(f"Unsupported message type: {kind}")  # unreachable: the union is exhaustive


def _describe(err: ValidationError) -> str:
    parts = []
    for problem in err.errors(include_url=False):
        where = ".".join(str(p) for p in problem["loc"][1:]) or "message"
        parts.append(f"{where}: {problem['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)


def chunk_json(chunk: StreamChunk) -> dict[str, Any]:
    """Every field of the original chunk shape, nulls included (the gateway strips them itself)."""
    return chunk.model_dump(mode="json")


def api_chunk(session_id: str, type: str, content: str, *, is_final: bool = True, **fields: Any) -> dict[str, Any]:
    """A chunk the API itself produces (error, status, session_info), in the same shape as the workflow's."""
    base = StreamChunk(type=ChunkType.STATUS, session_id=session_id, content=content, is_final=is_final, **fields)
    return chunk_json(base) | {"type": type}


def error_chunk(session_id: str, message: str, code: str) -> dict[str, Any]:
    return api_chunk(session_id, ChunkType.ERROR.value, message, error=message, metadata={"code": code})


async def run_input(
    runtime: ApiRuntime, session_id: str, parsed: ParsedInput, *, tokens: bool = False
) -> AsyncIterator[Outgoing]:
    """Deliver one input and yield the session's events up to the next wait point (see the module docstring)."""
    item = parsed.item
    if isinstance(item, TurnInput):
        # Live tokens go out on the stream as the model writes them; otherwise the update itself answers with the
        # input's first events, however long the model takes, and a plain turn needs no poll of the stream.
        item = item.model_copy(update={"live_tokens": tokens, "wait_for_events": not tokens})
    options = runtime.options
    loop = asyncio.get_running_loop()
    deadline = loop.time() + options.stream_timeout_seconds
    try:
        # Shielded: a client that hangs up mid-request must not leave it unknown whether the input was delivered.
        delivered = await asyncio.shield(runtime.conversations.submit(session_id, item, new_session=parsed.new_session))
        yield DELIVERED
        while True:
            remaining = deadline - loop.time()
            wait = remaining if options.keepalive_seconds is None else min(remaining, options.keepalive_seconds)
            receipt = await delivered.receipt(timedelta(seconds=max(wait, 0.001)))
            if receipt is not None:
                break
            if loop.time() >= deadline:
                # No event yet (the receipt comes with the first), so the stream's offset now is where they start.
                resume_from = await runtime.current_offset(session_id) or 0
                yield Outgoing(_stream_timeout(session_id, resume_from))
                return
            # A quiet while is an LLM at work, or a session whose workflow task keeps failing: say which.
            stuck = await runtime.conversations.diagnose(session_id)
            if stuck is not None:
                raise stuck
            yield KEEPALIVE
    except ConversationError as err:
        yield Outgoing(error_chunk(session_id, str(err), _ERROR_CODES.get(type(err), "rejected")))
        return
    except WorkflowUpdateFailedError as err:
        yield Outgoing(error_chunk(session_id, f"input rejected: {err.cause or err}", "rejected"))
        return
    except (RPCError, HTTPException) as err:
        yield Outgoing(error_chunk(session_id, f"runtime unavailable: {_text(err)}", "unavailable"))
        return
    if receipt.duplicate:
        detail = receipt.detail or "the input was already received"
        yield Outgoing(api_chunk(session_id, "status", f"Already processed: {detail}", metadata={"duplicate": True}))
        return
    if not receipt.accepted:
        yield Outgoing(api_chunk(session_id, "status", f"Nothing done: {receipt.detail}", metadata={"accepted": False}))
        return
    offset = receipt.offset
    if offset is None:  # a worker older than the API (a rolling deploy): read where the stream is now
        offset = await runtime.current_offset(session_id) or 0
    if receipt.queued:
        content = (
            "Queued: the session is busy or waits for an outstanding tool call; the message runs once that is "
            f"answered. Follow it with GET /agent/stream/{session_id}?from_offset={offset}."
        )
        yield Outgoing(api_chunk(session_id, "status", content, metadata={"queued": True, "resume_from": offset}))
        return
    # The events the input caused before the session paused came with the receipt; the rest is on the stream.
    for emitted in receipt.events:
        offset = emitted.offset + 1
        if emitted.chunk.type is ChunkType.ASSISTANT_DELTA and not tokens:
            continue
        outgoing = Outgoing(chunk_json(emitted.chunk), emitted.offset)
        yield outgoing
        if outgoing.is_final:
            return
    async for outgoing in relay(runtime, session_id, offset, tokens=tokens, deadline=deadline):
        yield outgoing


def _stream_timeout(session_id: str, resume_from: int) -> dict[str, Any]:
    content = "The stream timed out before the next wait point; resume from `resume_from`."
    return api_chunk(session_id, "status", content, metadata={"reason": "stream_timeout", "resume_from": resume_from})


async def relay(
    runtime: ApiRuntime, session_id: str, from_offset: int, *, tokens: bool = False, deadline: float | None = None
) -> AsyncIterator[Outgoing]:
    """The session's events from `from_offset` through the first final chunk; KEEPALIVE while it is quiet.
    Token deltas are skipped unless `tokens`. The stream ends at `deadline` (the event loop's clock; by default
    `stream_timeout_seconds` from now) with a final `status` chunk saying where to resume."""
    options = runtime.options
    loop = asyncio.get_running_loop()
    deadline = deadline if deadline is not None else loop.time() + options.stream_timeout_seconds
    events = runtime.conversations.events(session_id, from_offset).__aiter__()
    next_offset = from_offset
    pending: asyncio.Future[Any] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(events.__anext__())
            remaining = deadline - loop.time()
            wait = remaining if options.keepalive_seconds is None else min(remaining, options.keepalive_seconds)
            done, _ = await asyncio.wait({pending}, timeout=max(wait, 0))
            if not done:
                if loop.time() >= deadline:
                    yield Outgoing(_stream_timeout(session_id, next_offset))
                    return
                yield KEEPALIVE
                continue
            try:
                event = pending.result()
            except StopAsyncIteration:
                return
            except RPCError as err:
                yield Outgoing(error_chunk(session_id, f"event stream failed: {_text(err)}", "unavailable"))
                return
            finally:
                pending = None
            next_offset = event.offset + 1
            if event.chunk.type is ChunkType.ASSISTANT_DELTA and not tokens:
                continue
            outgoing = Outgoing(chunk_json(event.chunk), event.offset)
            yield outgoing
            if outgoing.is_final:
                return
    finally:
        if pending is not None:
            pending.cancel()
            await asyncio.gather(pending, return_exceptions=True)
        if isinstance(events, AsyncGenerator):
            await events.aclose()


def _text(err: Exception) -> str:
    if isinstance(err, HTTPException):
        return str(err.detail)
    return str(err) or type(err).__name__


def sse_event(outgoing: Outgoing) -> str:
    """One SSE event: `id: <offset>` (relayed chunks only), `data: <chunk JSON>`, blank line."""
    if outgoing.comment is not None:
        return f": {outgoing.comment}\n\n"
    data = json.dumps(outgoing.chunk, ensure_ascii=False, separators=(",", ":"))
    prefix = f"id: {outgoing.offset}\n" if outgoing.offset is not None else ""
    return f"{prefix}data: {data}\n\n"


def without_nulls(chunk: dict[str, Any]) -> dict[str, Any]:
    """What the gateway forwards to the IDE: the chunk with its null fields removed."""
    return {key: value for key, value in chunk.items() if value is not None}
