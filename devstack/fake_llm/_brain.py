"""The default "brain": the deterministic answer when no script applies.

Good enough for the demo and for tests that do not care what the model says: it routes by keywords, calls
`execute_command` when asked to run something, and summarises tool results. Deterministic, so a replayed demo sees
the same answers.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from devstack.fake_llm._request import text_of
from devstack.fake_llm._script import FakeReply, FakeToolCall, Purpose

_ROUTING_KEYWORDS: list[tuple[str, tuple[str, ...]]] = [
    ("coder", ("run", "command", "create", "write", "fix", "implement", "code")),
    ("architect", ("design", "plan", "architecture")),
    ("debug", ("debug", "error", "crash", "bug")),
    ("ask", ("explain", "what", "how", "why")),
]
# The classifier prompt quotes the user's text as a JSON string after this label (workflows/routing.py); reading it
# keeps the agent descriptions in the same prompt from triggering keywords.
_QUOTED_REQUEST = re.compile(r'Request[^:\n]*:\s*("(?:[^"\\]|\\.)*")')
_RUN_REQUEST = re.compile(r"\b(?:run|execute)\s+(.+)", re.IGNORECASE | re.DOTALL)
_QUOTED = re.compile(r"[`'\"]([^`'\"]+)[`'\"]")


def _last_user_text(messages: Sequence[Any]) -> str:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return text_of(message.get("content"))
    return ""


def classify(text: str) -> tuple[str, str]:
    """Pick an agent label by keyword, first group first; "ask" when nothing matches.

    Returns:
        The label and the reasoning.
    """
    quoted = _QUOTED_REQUEST.search(text)
    if quoted:
        with contextlib.suppress(ValueError):
            text = str(json.loads(quoted.group(1)))
    lowered = text.lower()
    for agent, words in _ROUTING_KEYWORDS:
        for word in words:
            if re.search(rf"\b{word}", lowered):
                return agent, f"The request mentions '{word}'."
    return "ask", "No keyword matched; answering as a question."


def command_to_run(text: str) -> str | None:
    """The command a user asks to run ("please run `ls -la`" -> "ls -la"), or None."""
    found = _RUN_REQUEST.search(text)
    if not found:
        return None
    rest = found.group(1).strip()
    quoted = _QUOTED.search(rest)
    if quoted and rest[0] in "`'\"":
        return quoted.group(1).strip()
    command = rest.splitlines()[0].strip().rstrip(".!?;")
    return command or None


def default_reply(body: Mapping[str, Any], purpose: Purpose) -> FakeReply:
    """The deterministic answer when no script applies."""
    messages: list[Any] = list(body.get("messages") or [])
    if purpose == "classification":
        agent, reasoning = classify(_last_user_text(messages))
        return FakeReply(content=json.dumps({"agent": agent, "confidence": "medium", "reasoning": reasoning}))
    last = messages[-1] if messages else {}
    if last.get("role") == "tool":
        tool_name = _tool_name_for(messages, str(last.get("tool_call_id")))
        result = text_of(last.get("content")).strip()
        snippet = result if len(result) <= 200 else result[:200] + "..."
        return FakeReply(content=f"The {tool_name} call finished. Result: {snippet or '(empty)'}")
    if last.get("role") == "user":
        text = text_of(last.get("content"))
        command = command_to_run(text)
        if command and "execute_command" in _tool_names(body):
            return FakeReply(
                content=f"I'll run `{command}`.",
                tool_calls=[FakeToolCall(name="execute_command", arguments={"command": command})],
            )
        snippet = " ".join(text.split())[:80]
        return FakeReply(content=f'Here is my answer to "{snippet}": this reply comes from the fake LLM.')
    return FakeReply(content="How can I help?")


def _tool_name_for(messages: Sequence[Any], call_id: str) -> str:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "assistant":
            for call in message.get("tool_calls") or []:
                if call.get("id") == call_id:
                    return str(call.get("function", {}).get("name", "tool"))
    return "tool"


def _tool_names(body: Mapping[str, Any]) -> set[str]:
    names: set[str] = set()
    for tool in body.get("tools") or []:
        function = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            names.add(function["name"])
    return names
