"""The HTTP API: the original Agent Runtime's gateway contract (spec §4.1) plus the IDE WebSocket (§4.2).

Routes are thin: each turns a request into one call of `ConversationClient` (an Update for inputs, a Query for
reads) or of Temporal visibility, and the workflow stays the source of truth. The Temporal client lives in the app's
lifespan (`app.state.runtime`); tests inject their own with `create_app(settings, temporal_client=...)`.

Endpoints (all but /health and the docs need `X-Internal-Auth` when a key is configured):

- `POST /agent/message/stream`: one input -> SSE of the session's chunks up to the next wait point.
- `GET /agent/stream/{session_id}`: resume from `?from_offset=` or `Last-Event-ID`.
- `POST /sessions`, `GET /sessions`, `GET /sessions/{id}`, `GET /sessions/{id}/history`,
  `GET /sessions/{id}/pending-approvals`.
- `GET /agents`, `GET /agents/{session_id}/current`, `POST /agents/{session_id}/switch`.
- The approvals inbox: `GET /approvals` (pending approvals across sessions; filters `older_than`, `tool`, `agent`,
  `session_id`; `limit`/`offset`), `POST /approvals/{session_id}/{call_id}` (decide one) (`api.routes_approvals`).
- Remembered decisions: `GET`/`DELETE /sessions/{id}/grants[/{grant_id}]`, `GET`/`DELETE
  /projects/{project}/grants[/{grant_id}]` (`api.routes_grants`).
- `GET /events/metrics`, `GET /events/metrics/sessions`, `GET /events/metrics/session/{id}`.
- `GET /health`; `WS /ws/{session_id}` (see `api.ws`).

Deviations from the original, on purpose: no per-IP rate limit (the gateway is the only client, so the original's
limit was global - bug L10; limit at the gateway); `/events/audit-log` and `/events/stats` are not served (the
PostgreSQL projection keeps the events).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.service import RPCError, RPCStatusCode

from activities.content import ContentStore
from api import routes_agent, routes_agents, routes_approvals, routes_events, routes_grants, routes_sessions, ws
from api.auth import AUTH_HEADER, OPEN_PATHS, InternalAuthMiddleware
from api.models import AgentStreamRequestDoc, HealthResponse
from api.runtime import ApiOptions, ApiRuntime
from client.connection import connect_client, open_content_store, session_config, with_content_store
from client.conversation_client import ConversationError, SessionClosedError, SessionStuckError, UnknownSessionError
from client.telemetry import telemetry
from settings import Settings
from workflows.model import StreamChunk

__all__ = ["ApiOptions", "create_app", "serve"]

log = logging.getLogger("agent_runtime.api")

SERVICE = "agent-runtime"


def _version() -> str:
    try:
        return version(SERVICE)
    except PackageNotFoundError:
        return "0.0.0"


VERSION = _version()


def create_app(
    settings: Settings,
    *,
    temporal_client: Client | None = None,
    options: ApiOptions | None = None,
    content: ContentStore | None = None,
) -> FastAPI:
    """The API application.

    Args:
        settings: Process settings (Temporal connection, task queue, session config, `internal_api_key`).
        temporal_client: Use this client instead of connecting at startup (tests, embedding); the embedder sets
            telemetry up (client/telemetry.py). Without one, the app sets it up from `settings.otel` and connects.
        options: API tunables; the defaults suit production.
        content: Use this content store instead of opening the one the settings describe (it must be the workers').

    Returns:
        The FastAPI app; serve it with uvicorn (lifespan on).
    """
    key = settings.internal_api_key.get_secret_value() if settings.internal_api_key else None

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if key is None:
            log.warning("No internal API key is configured: the API accepts requests without %s", AUTH_HEADER)
        async with contextlib.AsyncExitStack() as stack:
            store = content if content is not None else await stack.enter_async_context(open_content_store(settings))
            threshold = settings.content.external_storage_threshold
            if temporal_client is not None:
                client = with_content_store(temporal_client, store, threshold)
            else:
                otel = await stack.enter_async_context(telemetry(settings.otel))
                client = await connect_client(settings, content=store, **otel.client_options())
            # Sessions started here get the same configuration as the worker's other starters (search attributes on
            # when they are registered, which this also does).
            config = await session_config(client, settings)
            app.state.runtime = ApiRuntime(client, settings, options or ApiOptions(), config, store)
            yield

    app = FastAPI(
        title="Agent Runtime",
        version=VERSION,
        description=__doc__ or "",
        lifespan=lifespan,
    )
    app.add_middleware(InternalAuthMiddleware, key=key)
    _add_error_handlers(app)

    @app.get("/health", response_model=HealthResponse, tags=["health"])
    async def health() -> HealthResponse:
        return HealthResponse(version=VERSION)

    for module in (routes_agent, routes_sessions, routes_approvals, routes_grants, routes_agents, routes_events, ws):
        app.include_router(module.router)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _openapi_document(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def _add_error_handlers(app: FastAPI) -> None:
    """Temporal's and the client's errors as HTTP statuses; nothing a caller can cause becomes a 500."""

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, err: RequestValidationError) -> JSONResponse:
        # FastAPI's own handler fails (500) on a body that is not UTF-8, since the error echoes the input bytes.
        detail = jsonable_encoder(err.errors(), custom_encoder={bytes: lambda b: b.decode("utf-8", "replace")})
        return JSONResponse({"detail": detail}, status_code=422)

    def not_found(request: Request) -> JSONResponse:
        # The original's wording.
        return JSONResponse({"detail": f"Session {request.path_params.get('session_id', '')} not found"}, 404)

    @app.exception_handler(UnknownSessionError)
    async def unknown_session(request: Request, _: UnknownSessionError) -> JSONResponse:
        return not_found(request)

    @app.exception_handler(SessionClosedError)
    async def closed(_: Request, err: SessionClosedError) -> JSONResponse:
        return JSONResponse({"detail": str(err), "status": err.status}, status_code=409)

    @app.exception_handler(SessionStuckError)
    async def stuck(_: Request, err: SessionStuckError) -> JSONResponse:
        return JSONResponse({"detail": str(err), "attempts": err.attempts}, status_code=503)

    @app.exception_handler(ConversationError)
    async def rejected(_: Request, err: ConversationError) -> JSONResponse:
        return JSONResponse({"detail": str(err)}, status_code=400)

    @app.exception_handler(WorkflowUpdateFailedError)
    async def update_failed(_: Request, err: WorkflowUpdateFailedError) -> JSONResponse:
        return JSONResponse({"detail": f"input rejected: {err.cause or err}"}, status_code=400)

    @app.exception_handler(RPCError)
    async def temporal_error(request: Request, err: RPCError) -> JSONResponse:
        if err.status is RPCStatusCode.NOT_FOUND:
            return not_found(request)
        if err.status is RPCStatusCode.INVALID_ARGUMENT:
            return JSONResponse({"detail": f"invalid request: {err.message}"}, status_code=400)
        log.warning("Temporal call failed: %s (%s)", err.message, err.status)
        return JSONResponse({"detail": "Temporal is unavailable"}, status_code=503)

    @app.exception_handler(Exception)
    async def internal(_: Request, err: Exception) -> JSONResponse:
        log.exception("Unhandled error", exc_info=err)
        return JSONResponse({"detail": "Internal server error"}, status_code=500)


def _openapi_document(app: FastAPI) -> dict[str, Any]:
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for model in (StreamChunk, AgentStreamRequestDoc):
        _add_schema(schemas, model)
    body = schema["paths"]["/agent/message/stream"]["post"]["requestBody"]["content"]["application/json"]
    body["schema"] = {"$ref": "#/components/schemas/AgentStreamRequestDoc"}
    components["securitySchemes"] = {"InternalAuth": {"type": "apiKey", "in": "header", "name": AUTH_HEADER}}
    for path, operations in schema["paths"].items():
        for operation in operations.values():
            if path in OPEN_PATHS:
                operation["security"] = []
                continue
            operation["security"] = [{"InternalAuth": []}]
            operation.setdefault("responses", {})["401"] = {
                "description": f"Missing or wrong {AUTH_HEADER} (body: {{'detail': 'unauthorized'}})."
            }
    return schema


def _add_schema(schemas: dict[str, Any], model: type[BaseModel]) -> None:
    document = model.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, definition in document.pop("$defs", {}).items():
        schemas.setdefault(name, definition)
    schemas[model.__name__] = document


def serve(settings: Settings, host: str, port: int) -> None:
    """Serve the API until interrupted (blocking); what `agent-runtime api` runs."""
    log.info("Agent Runtime API listening on http://%s:%d", host, port)
    uvicorn.run(create_app(settings), host=host, port=port, log_level="info")
