"""Running the API inside an existing event loop (tests, the embedded dev stack) on a real port."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from types import TracebackType

import uvicorn
from fastapi import FastAPI


class _GuestServer(uvicorn.Server):
    """A uvicorn server that leaves the process's signal handlers alone: it is a guest in someone's event loop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class EmbeddedApiServer:
    """Serve an app (lifespan on) in the current event loop; port 0 picks a free port, known after `start`."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0, *, shutdown_timeout: float = 2.0) -> None:
        self.app = app
        self.host = host
        self.port = port
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
        self.port = sock.getsockname()[1]
        # log_config=None: an embedded server must not reconfigure the host's logging.
        config = uvicorn.Config(self.app, lifespan="on", log_config=None, log_level=None, timeout_graceful_shutdown=1)
        server = _GuestServer(config)
        self._server = server
        self._task = asyncio.create_task(server.serve(sockets=[sock]), name=f"agent-runtime-api:{self.port}")
        while not server.started:
            if self._task.done():
                sock.close()
                self._task.result()
                raise RuntimeError("API server exited during startup")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
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

    async def __aenter__(self) -> EmbeddedApiServer:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
