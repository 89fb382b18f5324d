"""The text of every tool message the runtime writes, so the model always learns what happened to its call."""

from __future__ import annotations

import json
from typing import Any

from workflows.content import Content, text_or_preview
from workflows.model import (
    PROXY_ERROR_PREFIX,
    ContentRef,
)

DEFAULT_REJECTION_FEEDBACK = "User rejected this operation"


def from_ide_result(result: Any, error: str | None) -> str:
    """The IDE's answer as tool message content (spec §2): error text, JSON, or a plain success note."""
    if error:
        return f"Error: {error}"
    if result is None or result == "" or result == {} or result == []:
        return "Tool executed successfully"
    if isinstance(result, str):
        return result
    return json.dumps(result, ensure_ascii=False, sort_keys=True)


def rejected(tool_name: str, feedback: str | None) -> str:
    return json.dumps(
        {"status": "rejected", "tool_name": tool_name, "feedback": feedback or DEFAULT_REJECTION_FEEDBACK},
        ensure_ascii=False,
    )


def approval_expired(tool_name: str, waited_seconds: float) -> str:
    return (
        f"Error: approval expired after {waited_seconds:g} s without a decision; {tool_name} was not executed. "
        "Ask the user before trying again."
    )


def lease_expired(tool_name: str, waited_seconds: float) -> str:
    return f"Error: the IDE returned no result for {tool_name} within {waited_seconds:g} s; the outcome is unknown."


def refused(reason: str) -> str:
    return f"Error: {reason}"


def over_budget(budget: int) -> str:
    return f"Error: not executed, the turn reached its budget of {budget} tool calls."


def budget_stop_message(budget: int) -> str:
    return (
        f"I stopped because this turn reached its limit of {budget} tool calls. Tell me how you would like to continue."
    )


def followup_text(question: str, suggestions: list[str]) -> str:
    if not suggestions:
        return question
    return question + "\n" + "\n".join(f"- {s}" for s in suggestions)


def plan_approved(subtasks: int) -> str:
    return f"The user approved the plan; its {subtasks} subtasks now run in order, each by its agent."


def plan_changes_requested(feedback: str | None) -> str:
    return (
        f"The user asked for changes to the plan: {feedback or 'no details given'}. "
        "Revise the plan and call create_plan again."
    )


def cancelled(reason: str | None) -> str:
    return f"Error: the user cancelled the turn before this call finished ({reason or 'no reason given'})."


def unmistakable(text: Content) -> Content:
    """A final text the model wrote (attempt_completion, a follow-up question) as it is stored and shown.

    A result that starts like the proxy's error report ("[Error] 3 tests failed") is legitimate, but stored as is it
    would be indistinguishable from a provider failure stored as content (invariant I3, bug B2), so it is labelled.
    """
    if not text_or_preview(text).lstrip().startswith(PROXY_ERROR_PREFIX):
        return text
    return "Result:\n" + (text_or_preview(text) if isinstance(text, ContentRef) else text or "")


def too_many_calls(count: int, limit: int) -> str:
    return f"Error: not executed: the answer had {count} tool calls and at most {limit} are handled per answer."


def turn_failed(reason: str) -> str:
    return f"Error: not executed: the turn failed inside the runtime ({reason})."
