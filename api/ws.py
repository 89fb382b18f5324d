"""The IDE-facing WebSocket `/ws/{session_id}` with the §4.2 message shapes.

The IDE sends `user_message {content, role}`, `tool_result {call_id, result|error}`, `hitl_decision {call_id,
decision, modified_arguments?, feedback?}` or `switch_agent {agent_type, content, reason?}`; the socket answers with
each chunk of the session (null fields removed, as the gateway relays them) up to the final one of that input.
Inputs are handled one at a time, in order; one that arrives while another is running waits its turn. Bad JSON or
an unknown type gets `{"type": "error", "content": ...}` and the socket stays open.

Auth: the `X-Internal-Auth` header, or a `token` query parameter for clients that cannot set headers, checked by
the same middleware as HTTP; a socket without a valid one is refused before the handshake completes (HTTP 403).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Path, WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from api.models import SESSION_ID_MAX_LENGTH, SESSION_ID_PATTERN
from api.runtime import ApiRuntime
from api.streaming import InputError, parse_input, run_input, without_nulls
from workflows.model import encodable_json

log = logging.getLogger("agent_runtime.api.ws")

router = APIRouter()


@router.websocket("/ws/{session_id}")
async def session_socket(
    websocket: WebSocket,
    session_id: Annotated[str, Path(max_length=SESSION_ID_MAX_LENGTH, pattern=SESSION_ID_PATTERN)],
) -> None:
    runtime: ApiRuntime = websocket.app.state.runtime
    # `?tokens=true` adds live `assistant_delta` chunks, which the original IDE protocol does not have.
    tokens = websocket.query_params.get("tokens", "").lower() in ("1", "true", "yes")
    await websocket.accept()
    inbox: asyncio.Queue[str | None] = asyncio.Queue()
    worker = asyncio.create_task(
        _process(websocket, runtime, session_id, inbox, tokens=tokens), name=f"ws:{session_id}"
    )
    try:
        await _read(websocket, inbox)
    finally:
        # The IDE is gone: stop relaying (the inputs already delivered stay delivered; the workflow has them).
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, RuntimeError):
            await worker


async def _read(websocket: WebSocket, inbox: asyncio.Queue[str | None]) -> None:
    """Queue every text frame until the client disconnects."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        text = message.get("text")
        if text is None:
            data = message.get("bytes") or b""
            text = data.decode("utf-8", errors="replace")
        inbox.put_nowait(text)


async def _process(
    websocket: WebSocket, runtime: ApiRuntime, session_id: str, inbox: asyncio.Queue[str | None], *, tokens: bool
) -> None:
    while (text := await inbox.get()) is not None:
        try:
            await _handle(websocket, runtime, session_id, text, tokens=tokens)
        except (WebSocketDisconnect, OSError):
            return
        except Exception:
            if websocket.client_state is not WebSocketState.CONNECTED:
                return
            log.exception("Input on the socket of session %s failed", session_id)
            await _send_error(websocket, "internal error while handling the message")


async def _handle(websocket: WebSocket, runtime: ApiRuntime, session_id: str, text: str, *, tokens: bool) -> None:
    try:
        # Lone surrogates ("\ud800" with no pair) become U+FFFD: they fail every UTF-8 encoder, this socket's included.
        payload: Any = encodable_json(json.loads(text))
    except ValueError:
        await _send_error(websocket, "Invalid JSON")
        return
    try:
        item = parse_input(payload)
    except InputError as err:
        await _send_error(websocket, str(err))
        return
    async for outgoing in run_input(runtime, session_id, item, tokens=tokens):
        if outgoing.comment is None:
            await websocket.send_json(without_nulls(outgoing.chunk))


async def _send_error(websocket: WebSocket, content: str) -> None:
    await websocket.send_json({"type": "error", "content": content})
