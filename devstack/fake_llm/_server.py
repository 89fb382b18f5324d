"""`FakeLlmServer`: the fake on a real port inside the caller's event loop, as the tests, demo and benchmarks use it.

Real HTTP rather than an in-process transport, so the worker's whole request path (httpx, JSON, SSE) is exercised.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any

from devstack.embedded_server import EmbeddedServer
from devstack.fake_llm._app import create_app
from devstack.fake_llm._script import FakeReply
from devstack.fake_llm._state import FakeLlm, ReceivedRequest


class FakeLlmServer:
    """Runs the fake in the current event loop on a real port.

    Args:
        host: Interface to listen on.
        port: Port; 0 picks a free one (see `port`/`base_url` after start).
        api_key: Require this bearer token (see `FakeLlm`).
        internal_api_key: Require this `X-Internal-Auth` value (see `FakeLlm`).
        context_window: Refuse prompts longer than this many tokens by default (see `FakeLlm`).
        shutdown_timeout: Seconds to let open requests finish on exit before they are cancelled.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        api_key: str | None = None,
        internal_api_key: str | None = None,
        context_window: int | None = None,
        shutdown_timeout: float = 2.0,
    ) -> None:
        self.fake = FakeLlm(api_key=api_key, internal_api_key=internal_api_key, context_window=context_window)
        self.app = create_app(self.fake)
        self._server = EmbeddedServer(
            self.app, host, port, lifespan="off", name="fake-llm", shutdown_timeout=shutdown_timeout
        )

    @property
    def host(self) -> str:
        return self._server.host

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def base_url(self) -> str:
        """E.g. `http://127.0.0.1:54321` (an OpenAI client's base URL is this plus `/v1`)."""
        return self._server.base_url

    @property
    def chat_completions_url(self) -> str:
        return f"{self.base_url}/v1/chat/completions"

    def script(self, session: str, replies: Iterable[FakeReply | Mapping[str, Any]]) -> None:
        """Queue replies for a session ("*" for any); see `FakeLlm.script`."""
        self.fake.script(session, replies)

    def requests(self, session: str | None = None) -> list[Any]:
        """Bodies of the chat requests received (for a session), in order."""
        return self.fake.requests(session)

    def received(self, session: str | None = None) -> list[ReceivedRequest]:
        """Chat requests received (for a session), in order, with their headers."""
        return self.fake.received(session)

    def pending(self, session: str | None = None) -> int:
        return self.fake.pending(session)

    def set_context_window(self, session: str, tokens: int | None) -> None:
        """Limit a session's prompts ("*" for the default); None removes the limit. See `FakeLlm.set_context_window`."""
        self.fake.set_context_window(session, tokens)

    def reset(self) -> None:
        """Forget scripts and received requests, and restore the constructor's context window."""
        self.fake.reset()

    async def start(self) -> None:
        """Bind the port and serve until `stop`."""
        await self._server.start()

    async def stop(self) -> None:
        """Stop serving; open requests get `shutdown_timeout` seconds to finish."""
        await self._server.stop()

    async def __aenter__(self) -> FakeLlmServer:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
