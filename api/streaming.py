"""One input in, the session's events out until the next wait point: shared by the SSE route and the WebSocket.

Mechanics (spec §4.1, bug B11): read the stream's offset, deliver the input with an Update (so a bad input is
refused before it touches history), then relay the session's events from that offset up to and including the first
`is_final` chunk. The stream never waits on a human: it ends at every wait point, and the durable wait lives in the
workflow. Errors of the update become one final `error` chunk; an input the workflow already had becomes one final
`status` chunk, as does a user message queued behind an outstanding call.

Every relayed chunk carries its stream offset, which the SSE route sends as the event `id:` so a client can resume.

Live token deltas (`assistant_delta`) are relayed only to clients that ask for them (`tokens=true`): the original
contract never sent that chunk type, so an unmodified gateway and IDE see exactly the chunks they know.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
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
    InputReceipt,
    PlanDecision,
    StreamChunk,
    SwitchAgent,
    ToolResult,
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
    """One chunk for the client; `offset` is its place in the session's stream (None for the API's own chunks)."""

    chunk: dict[str, Any]
    offset: int | None = None

    @property
    def is_final(self) -> bool:
        return bool(self.chunk.get("is_final"))


KEEPALIVE = Outgoing(chunk={})
"""Yielded while nothing happens for `keepalive_seconds`; the SSE route writes a comment line for it."""


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


async def send_input(runtime: ApiRuntime, session_id: str, parsed: ParsedInput) -> InputReceipt:
    conversations = runtime.conversations
    match item := parsed.item:
        case UserMessage():
            return await conversations.send_user_message(session_id, item, new_session=parsed.new_session)
        case ToolResult():
            return await conversations.send_tool_result(session_id, item)
        case HitlDecision():
            return await conversations.decide(session_id, item)
        case SwitchAgent():
            return await conversations.switch_agent(session_id, item)
        case PlanDecision():
            return await conversations.decide_plan(session_id, item)
        case CancelTurn():
            return await conversations.cancel_turn(session_id, item)


async def run_input(
    runtime: ApiRuntime, session_id: str, item: ParsedInput, *, tokens: bool = False
) -> AsyncIterator[Outgoing]:
    """Deliver one input and yield the session's events up to the next wait point (see the module docstring)."""
    try:
        offset = await runtime.current_offset(session_id) or 0
        if item.new_session and offset and not (await runtime.describe_status(session_id))[0]:
            offset = 0  # the closed session is replaced by a new one, whose stream starts over
        # Shielded: a client that hangs up mid-request must not leave it unknown whether the input was delivered.
        receipt = await asyncio.shield(send_input(runtime, session_id, item))
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
    if receipt.queued:
        content = (
            "Queued: the session is busy or waits for an outstanding tool call; the message runs once that is "
            f"answered. Follow it with GET /agent/stream/{session_id}?from_offset={offset}."
        )
        yield Outgoing(api_chunk(session_id, "status", content, metadata={"queued": True, "resume_from": offset}))
        return
    async for outgoing in relay(runtime, session_id, offset, tokens=tokens):
        yield outgoing


async def relay(
    runtime: ApiRuntime, session_id: str, from_offset: int, *, tokens: bool = False
) -> AsyncIterator[Outgoing]:
    """The session's events from `from_offset` through the first final chunk; KEEPALIVE while it is quiet.
    Token deltas are skipped unless `tokens`."""
    options = runtime.options
    loop = asyncio.get_running_loop()
    deadline = loop.time() + options.stream_timeout_seconds
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
                    content = "The stream timed out before the next wait point; resume from `resume_from`."
                    metadata = {"reason": "stream_timeout", "resume_from": next_offset}
                    yield Outgoing(api_chunk(session_id, "status", content, metadata=metadata))
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
    if outgoing is KEEPALIVE:
        return ": keepalive\n\n"
    data = json.dumps(outgoing.chunk, ensure_ascii=False, separators=(",", ":"))
    prefix = f"id: {outgoing.offset}\n" if outgoing.offset is not None else ""
    return f"{prefix}data: {data}\n\n"


def without_nulls(chunk: dict[str, Any]) -> dict[str, Any]:
    """What the gateway forwards to the IDE: the chunk with its null fields removed."""
    return {key: value for key, value in chunk.items() if value is not None}
