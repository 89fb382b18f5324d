"""The fake provider's FastAPI app: the OpenAI endpoints, the `/_fake/*` admin endpoints, and SSE streaming.

The HTTP layer over the state: it records, checks and answers each request in the order a provider would (auth,
validation and the context window before a scripted reply is consumed), so a refused request costs no script.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from devstack.fake_llm._render import completion_chunks, completion_json
from devstack.fake_llm._request import session_of
from devstack.fake_llm._script import DEFAULT_QUEUE, FakeReply, ScriptBody
from devstack.fake_llm._state import FakeLlm, ReceivedRequest
from devstack.fake_llm._tokens import estimate_prompt_tokens
from devstack.fake_llm._validation import OpenAIError, validate_chat_body

FAKE_MODEL_ID = "fake-llm"


class ContextWindowBody(BaseModel):
    """Body of `POST /_fake/context-window`: a session's window in tokens ("*" sets the default); null removes it.

    `tokens` is required so that a typo cannot silently lift a limit; null is the explicit way to do that.
    """

    model_config = ConfigDict(extra="forbid")

    session: str = DEFAULT_QUEUE
    tokens: int | None = Field(ge=1)


def create_app(fake: FakeLlm | None = None, *, context_window: int | None = None) -> FastAPI:
    """The fake provider's ASGI app.

    Args:
        fake: The state to serve; a fresh one when None.
        context_window: The fresh state's context window (see `FakeLlm`); only without `fake`, which has its own.

    Returns:
        The app, with the state on `app.state.fake`.

    Raises:
        ValueError: Both `fake` and `context_window` were given.
    """
    if fake is not None and context_window is not None:
        raise ValueError("give context_window to the FakeLlm passed as `fake`")
    state = fake if fake is not None else FakeLlm(context_window=context_window)
    app = FastAPI(title="Fake LLM (OpenAI-compatible)", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.fake = state

    async def chat_completions(request: Request) -> Response:
        raw = await request.body()
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        received = ReceivedRequest(
            path=request.url.path,
            session=session_of(body),
            headers=dict(request.headers),
            body=body,
            prompt_tokens=estimate_prompt_tokens(body),
        )
        state.record(received)
        try:
            state.check_auth(request)
            if body is None:
                raise OpenAIError(
                    "We could not parse the JSON body of your request. (HINT: This likely means you aren't using "
                    "your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not "
                    "valid JSON.)"
                )
            validate_chat_body(body)
            # Before a reply is taken: a refused request leaves the session's script as it was, as a real provider
            # charges nothing for it.
            state.check_context_window(received.session, received.prompt_tokens)
        except OpenAIError as err:
            return err.response()

        reply = state.next_reply(body)
        if reply.delay_seconds:
            await _sleep_unless_disconnected(request, reply.delay_seconds)
        if reply.status is not None:
            return _scripted_error(reply)
        if reply.raw_body is not None:
            return Response(reply.raw_body, media_type="application/json")
        session = session_of(body)
        if body.get("stream"):
            return StreamingResponse(_sse(reply, body, session, received), media_type="text/event-stream")
        # ASCII-escaped, as the streamed chunks are: a scripted lone surrogate (adversarial output) goes out as
        # "\ud800" instead of failing the fake's own UTF-8 encoding.
        return Response(json.dumps(completion_json(reply, body, session)), media_type="application/json")

    app.add_api_route("/v1/chat/completions", chat_completions, methods=["POST"])
    app.add_api_route("/chat/completions", chat_completions, methods=["POST"])

    async def models() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [{"id": FAKE_MODEL_ID, "object": "model", "created": 0, "owned_by": "fake-llm"}],
        }

    app.add_api_route("/v1/models", models, methods=["GET"])
    app.add_api_route("/models", models, methods=["GET"])

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok", "service": "fake-llm"}

    @app.post("/_fake/script")
    async def post_script(script: ScriptBody) -> dict[str, Any]:
        state.script(script.session, script.replies)
        return {"session": script.session, "queued": state.pending(script.session)}

    @app.get("/_fake/script")
    async def get_script(session: str | None = None) -> dict[str, Any]:
        return {"session": session, "pending": state.pending(session)}

    @app.delete("/_fake/script")
    async def delete_script(session: str | None = None) -> dict[str, Any]:
        state.clear_scripts(session)
        return {"cleared": session or "all"}

    @app.post("/_fake/context-window")
    async def post_context_window(window: ContextWindowBody) -> dict[str, Any]:
        state.set_context_window(window.session, window.tokens)
        return {"session": window.session, "tokens": state.context_window(window.session)}

    @app.get("/_fake/context-window")
    async def get_context_window(session: str = DEFAULT_QUEUE) -> dict[str, Any]:
        return {"session": session, "tokens": state.context_window(session)}

    @app.get("/_fake/requests")
    async def get_requests(session: str | None = None) -> list[Any]:
        return state.requests(session)

    @app.get("/_fake/received")
    async def get_received(session: str | None = None) -> list[dict[str, Any]]:
        return [
            {
                "path": r.path,
                "session": r.session,
                "headers": r.headers,
                "body": r.body,
                "prompt_tokens": r.prompt_tokens,
            }
            for r in state.received(session)
        ]

    @app.delete("/_fake/requests")
    async def delete_requests() -> dict[str, Any]:
        state.clear_requests()
        return {"cleared": True}

    return app


_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_error",
    404: "invalid_request_error",
    409: "conflict_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


def _scripted_error(reply: FakeReply) -> JSONResponse:
    assert reply.status is not None
    status = reply.status
    headers = {"Retry-After": f"{reply.retry_after_seconds:g}"} if reply.retry_after_seconds is not None else {}
    return OpenAIError(
        reply.error_message or f"Scripted error {status}",
        status=status,
        type=_ERROR_TYPES.get(status, "server_error"),
        code=None,
    ).response(headers)


# Unpaced streams are written in batches of about this many bytes: one ASGI send (and event-loop turn) per event
# made a 250,000-delta stream (1.5 MB of arguments in 6-character deltas) take 8-19 s to serve on two cores, batches
# about 2 s; and several events per read is what a provider's TCP stream looks like to a client anyway.
_SSE_WRITE_BYTES = 64 * 1024


async def _sse(
    reply: FakeReply, body: Mapping[str, Any], session: str, received: ReceivedRequest
) -> AsyncIterator[bytes]:
    """The reply as SSE events, ending with `[DONE]`.

    Paced (`chunk_delay_seconds`), each event is its own write, so a client sees deltas arrive over time; unpaced,
    events are written in batches of about `_SSE_WRITE_BYTES`. `first_token_at` is set when the write holding the
    first text delta is handed to the server.
    """
    batch: list[bytes] = []
    batch_bytes = 0
    batch_has_text = False
    for index, chunk in enumerate(completion_chunks(reply, body, session)):
        event = f"data: {json.dumps(chunk)}\n\n".encode()
        if reply.chunk_delay_seconds:
            if index:
                await asyncio.sleep(reply.chunk_delay_seconds)
            if received.first_token_at is None and _has_text(chunk):
                received.first_token_at = time.time()
            yield event
            # A real provider's deltas arrive over time; yielding lets a client see them one by one.
            await asyncio.sleep(0)
            continue
        batch.append(event)
        batch_bytes += len(event)
        batch_has_text = batch_has_text or (received.first_token_at is None and _has_text(chunk))
        if batch_bytes >= _SSE_WRITE_BYTES:
            if batch_has_text and received.first_token_at is None:
                received.first_token_at = time.time()
            yield b"".join(batch)
            batch, batch_bytes, batch_has_text = [], 0, False
            await asyncio.sleep(0)
    if batch_has_text and received.first_token_at is None:
        received.first_token_at = time.time()
    batch.append(b"data: [DONE]\n\n")
    yield b"".join(batch)


def _has_text(chunk: Mapping[str, Any]) -> bool:
    return any(bool((choice.get("delta") or {}).get("content")) for choice in chunk.get("choices") or [])


async def _sleep_unless_disconnected(request: Request, seconds: float) -> None:
    # A client that timed out has gone; stop waiting for it so the server can shut down promptly.
    deadline = time.monotonic() + seconds
    while (remaining := deadline - time.monotonic()) > 0:
        await asyncio.sleep(min(0.05, remaining))
        if await request.is_disconnected():
            return
