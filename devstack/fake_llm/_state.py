"""The fake's state: per-session reply scripts, context windows, and the log of received requests.

Apart from the app so one state can be served (`create_app`), embedded (`FakeLlmServer`) or inspected by a test,
and so the rules for which reply answers a request live in one class.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request

from devstack.fake_llm._brain import default_reply
from devstack.fake_llm._request import purpose_of, session_of
from devstack.fake_llm._script import DEFAULT_QUEUE, FakeReply
from devstack.fake_llm._tokens import context_length_exceeded
from devstack.fake_llm._validation import OpenAIError


@dataclass
class ReceivedRequest:
    """One request as the fake received it.

    Attributes:
        received_at: Wall-clock time (`time.time()`) the request was recorded.
        first_token_at: Wall-clock time the first streamed chunk with assistant text was handed to the server to
            send; None until then (and for non-streamed or text-less replies).
        prompt_tokens: The prompt's size as the fake counts it (`estimate_prompt_tokens`), the number its context
            window is checked against; recorded for refused requests too, so a test can see how close it came.
    """

    path: str
    session: str
    headers: dict[str, str]
    body: Any
    prompt_tokens: int = 0
    received_at: float = field(default_factory=time.time)
    first_token_at: float | None = None


class FakeLlm:
    """The fake's state: per-session reply scripts, context windows, and the log of received requests.

    Args:
        api_key: When set, requests must carry `Authorization: Bearer <api_key>` (else 401, like OpenAI).
        internal_api_key: When set, requests must carry `X-Internal-Auth: <internal_api_key>` (the original
            llm-proxy's check).
        context_window: When set, a request whose prompt is estimated (`estimate_prompt_tokens`) at more tokens
            than this is refused with OpenAI's `context_length_exceeded` 400. The "*" window of
            `set_context_window`, restored by `reset`.
    """

    def __init__(
        self, *, api_key: str | None = None, internal_api_key: str | None = None, context_window: int | None = None
    ) -> None:
        self.api_key = api_key
        self.internal_api_key = internal_api_key
        self._default_context_window = _checked_window(context_window)
        self._scripts: dict[str, deque[FakeReply]] = {}
        self._context_windows: dict[str, int] = {}
        self._received: list[ReceivedRequest] = []
        self.clear_context_windows()

    def script(self, session: str, replies: Iterable[FakeReply | Mapping[str, Any]]) -> None:
        """Queue replies for a session ("*" for any session without its own); appends to what is queued."""
        queue = self._scripts.setdefault(session, deque())
        queue.extend(r if isinstance(r, FakeReply) else FakeReply.model_validate(r) for r in replies)

    def pending(self, session: str | None = None) -> int:
        """How many scripted replies are still queued (for one session, or in all)."""
        if session is not None:
            return len(self._scripts.get(session, ()))
        return sum(len(queue) for queue in self._scripts.values())

    def clear_scripts(self, session: str | None = None) -> None:
        if session is None:
            self._scripts.clear()
        else:
            self._scripts.pop(session, None)

    def received(self, session: str | None = None) -> list[ReceivedRequest]:
        """Received chat requests in arrival order, with headers; all sessions when `session` is None."""
        return [r for r in self._received if session is None or r.session == session]

    def requests(self, session: str | None = None) -> list[Any]:
        """The bodies of received chat requests in arrival order: what the LLM saw."""
        return [r.body for r in self.received(session)]

    def clear_requests(self) -> None:
        self._received.clear()

    def reset(self) -> None:
        """Forget all scripts and received requests, and restore the constructor's context window."""
        self.clear_scripts()
        self.clear_requests()
        self.clear_context_windows()

    def set_context_window(self, session: str, tokens: int | None) -> None:
        """Limit a session's prompts to `tokens` ("*": any session without its own window); None removes the limit.

        Resolution is the scripts': the session's window, else the "*" window, else none. Removing a session's
        window makes it follow "*" again; to exempt one session from a default, give it a large window.

        Raises:
            ValueError: `tokens` is not a positive int.
        """
        tokens = _checked_window(tokens)
        if tokens is None:
            self._context_windows.pop(session, None)
        else:
            self._context_windows[session] = tokens

    def context_window(self, session: str) -> int | None:
        """The window a request of this session is checked against, None when unlimited."""
        return self._context_windows.get(session, self._context_windows.get(DEFAULT_QUEUE))

    def clear_context_windows(self) -> None:
        """Drop every `set_context_window`, back to the constructor's `context_window`."""
        self._context_windows.clear()
        if self._default_context_window is not None:
            self._context_windows[DEFAULT_QUEUE] = self._default_context_window

    def check_context_window(self, session: str, prompt_tokens: int) -> None:
        """Refuse a prompt longer than the session's window, as OpenAI does.

        Raises:
            OpenAIError: `context_length_exceeded` (400).
        """
        window = self.context_window(session)
        if window is not None and prompt_tokens > window:
            raise context_length_exceeded(window, prompt_tokens)

    def record(self, request: ReceivedRequest) -> None:
        self._received.append(request)

    def next_reply(self, body: Mapping[str, Any]) -> FakeReply:
        """Consume the reply for a request: the session's script, then the "*" script, then the default brain."""
        session = session_of(body)
        purpose = purpose_of(body)
        for queue_name in dict.fromkeys((session, DEFAULT_QUEUE)):
            queue = self._scripts.get(queue_name)
            if not queue:
                continue
            for reply in queue:
                if reply.match is None or reply.match == purpose:
                    queue.remove(reply)
                    return reply
        return default_reply(body, purpose)

    def check_auth(self, request: Request) -> None:
        if self.api_key is not None and request.headers.get("authorization") != f"Bearer {self.api_key}":
            # Like OpenAI, but without echoing any part of the presented key.
            raise OpenAIError("Incorrect API key provided.", status=401, code="invalid_api_key")
        if self.internal_api_key is not None and request.headers.get("x-internal-auth") != self.internal_api_key:
            raise OpenAIError("Invalid or missing X-Internal-Auth header.", status=401, code="invalid_api_key")


def _checked_window(tokens: int | None) -> int | None:
    if tokens is not None and (isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1):
        raise ValueError(f"a context window must be a positive number of tokens, not {tokens!r}")
    return tokens
