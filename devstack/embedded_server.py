"""Serving an ASGI app inside an existing event loop on a real port: the HTTP API in the dev stack and tests, the
fake LLM everywhere. One implementation, so port binding, startup failures and shutdown behave the same."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from types import TracebackType
from typing import Literal

import uvicorn
from starlette.types import ASGIApp


class _GuestServer(uvicorn.Server):
    """A uvicorn server that leaves the process's signal handlers alone: it is a guest in someone's event loop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class EmbeddedServer:
    """Serve an app in the current event loop; port 0 picks a free port, known after `start`.

    Args:
        app: The ASGI app.
        host: Interface to bind.
        port: Port; 0 picks a free one.
        lifespan: Run the app's startup/shutdown ("on") or not ("off").
        name: For the serving task's name (debugging).
        shutdown_timeout: Seconds open requests get to finish on `stop` before they are cancelled.
    """

    def __init__(
        self,
        app: ASGIApp,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        lifespan: Literal["on", "off"] = "on",
        name: str = "server",
        shutdown_timeout: float = 2.0,
    ) -> None:
        self.app = app
        self.host = host
        self.port = port
        self._lifespan = lifespan
        self._name = name
        self._shutdown_timeout = shutdown_timeout
        self._server: _GuestServer | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return "ws" + self.base_url.removeprefix("http")

    async def start(self) -> None:
        """Bind the port and serve until `stop`."""
        if self._task is not None:
            raise RuntimeError("server already started")
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
        except OSError:
            sock.close()
            raise
        # Binding here rather than in uvicorn makes port 0 usable: the chosen port is known before serving.
        self.port = sock.getsockname()[1]
        # log_config=None: an embedded server must not reconfigure the host's logging.
        config = uvicorn.Config(
            self.app, lifespan=self._lifespan, log_config=None, log_level=None, timeout_graceful_shutdown=1
        )
        server = _GuestServer(config)
        self._server = server
        self._task = asyncio.create_task(server.serve(sockets=[sock]), name=f"{self._name}:{self.port}")
        while not server.started:
            if self._task.done():
                sock.close()
                self._task.result()  # re-raises the startup failure
                raise RuntimeError(f"{self._name} exited during startup")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        """Stop serving; open requests get `shutdown_timeout` seconds to finish."""
        server, task = self._server, self._task
        if server is None or task is None:
            return
        self._server = self._task = None
        server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(task), self._shutdown_timeout)
        except TimeoutError:
            server.force_exit = True
            await task

    async def __aenter__(self) -> EmbeddedServer:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
