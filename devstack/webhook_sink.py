"""A receiver for the approval webhook (activities/webhook.py), served over real HTTP: the tests, the recorded
histories and anyone trying reminders out on the dev stack point `AGENT_RUNTIME__APPROVAL__WEBHOOK_URL` at it.

It records every POST (headers, raw body, the status it answered) and can be told to fail the next requests, to
show the activity's retries. A test double: production settings never point at it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from devstack.embedded_server import EmbeddedServer

PATH = "/hooks/approvals"


@dataclass(frozen=True)
class ReceivedHook:
    """One POST as it arrived, and what the sink answered."""

    headers: dict[str, str]
    raw: bytes
    status: int

    @property
    def body(self) -> Any:
        return json.loads(self.raw)


class WebhookSink:
    """Serves `POST /hooks/approvals` in the current event loop on a free port (see `url` after start)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.received: list[ReceivedHook] = []
        self._failures: list[int] = []
        app = Starlette(routes=[Route(PATH, self._receive, methods=["POST"])])
        self._server = EmbeddedServer(app, host, port, lifespan="off", name="webhook-sink")

    @property
    def url(self) -> str:
        return f"{self._server.base_url}{PATH}"

    def fail_next(self, *statuses: int) -> None:
        """Answer the next requests with these statuses, in order (then 200 again)."""
        self._failures.extend(statuses)

    def delivered(self) -> list[Any]:
        """The bodies of the notices that were accepted (answered 2xx), in order."""
        return [hook.body for hook in self.received if 200 <= hook.status < 300]

    async def _receive(self, request: Request) -> JSONResponse:
        status = self._failures.pop(0) if self._failures else 200
        self.received.append(ReceivedHook(dict(request.headers), await request.body(), status))
        return JSONResponse({"ok": status < 300}, status_code=status)

    async def __aenter__(self) -> WebhookSink:
        await self._server.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._server.stop()
