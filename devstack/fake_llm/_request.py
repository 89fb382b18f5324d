"""What the fake reads from a chat request: its text, its session (which script queue answers it) and its purpose.

Shared by the token estimate, the default brain, the rendering and the state, so all of them read a request alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from devstack.fake_llm._script import DEFAULT_QUEUE, Purpose

# How the fake tells a routing request from an agent turn: the classifier's system prompt (workflows/routing.py)
# says it. Matching a phrase keeps the fake independent of the workflow package.
CLASSIFICATION_MARKER = "respond only with json"


def text_of(content: Any) -> str:
    """The text of a message content (a string or a list of text parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def purpose_of(body: Mapping[str, Any]) -> Purpose:
    """Classification when a system/developer message says the answer is JSON only, else an agent turn."""
    for message in body.get("messages") or []:
        if isinstance(message, dict) and message.get("role") in ("system", "developer"):
            if CLASSIFICATION_MARKER in text_of(message.get("content")).lower():
                return "classification"
    return "agent"


def session_of(body: Any) -> str:
    user = body.get("user") if isinstance(body, dict) else None
    return user if isinstance(user, str) and user else DEFAULT_QUEUE
