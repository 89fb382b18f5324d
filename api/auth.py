"""`X-Internal-Auth`: the shared key between the gateway and the runtime (spec §4.1).

Checked for every HTTP request and WebSocket handshake except the health check and the API docs, with a constant-
time comparison. A rejected request is logged with its method and path only: never the key it carried or the one
expected (bug L11). With no key configured the check is off (the app warns once at startup).
"""

from __future__ import annotations

import hmac
import logging

from starlette.datastructures import QueryParams
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocketClose

log = logging.getLogger("agent_runtime.api.auth")

AUTH_HEADER = "X-Internal-Auth"
WS_TOKEN_PARAM = "token"
OPEN_PATHS = frozenset({"/health", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
# RFC 6455 "policy violation"; before the handshake completes, servers turn it into an HTTP 403.
WS_POLICY_VIOLATION = 1008


class InternalAuthMiddleware:
    """Pure ASGI middleware (no buffering, so SSE streams pass through untouched)."""

    def __init__(self, app: ASGIApp, *, key: str | None) -> None:
        self.app = app
        self._key = key.encode("utf-8") if key else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._key is None or scope["type"] not in ("http", "websocket") or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        supplied = _raw_header(scope, AUTH_HEADER)
        if supplied is None and scope["type"] == "websocket":
            token = QueryParams(scope.get("query_string", b"")).get(WS_TOKEN_PARAM)
            supplied = token.encode("utf-8", "replace") if token is not None else None
        if supplied is not None and hmac.compare_digest(supplied, self._key):
            await self.app(scope, receive, send)
            return
        log.warning(
            "Rejected %s %s: %s header missing or wrong",
            scope.get("method", "WEBSOCKET"),
            scope["path"],
            AUTH_HEADER,
        )
        if scope["type"] == "websocket":
            await WebSocketClose(code=WS_POLICY_VIOLATION)(scope, receive, send)
            return
        await JSONResponse({"detail": "unauthorized"}, status_code=401)(scope, receive, send)


def _raw_header(scope: Scope, name: str) -> bytes | None:
    """The header's bytes as sent (decoding them could make two different keys compare equal, or a key unequal)."""
    wanted = name.lower().encode("latin-1")
    for key, value in scope.get("headers", []):
        if key.lower() == wanted:
            return bytes(value)
    return None
