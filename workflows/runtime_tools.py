"""The tools the workflow executes itself, deterministically, right after the answer that called them.

`switch_mode` hands the conversation to another agent (its result always answers its own call id: bugs B3, B13);
`echo` and `calculator` (no `eval`) answer at once; `attempt_completion` and `ask_followup_question` end the turn
with the model's final text or question. Arguments were checked against the tool's schema before (agents.py), and
a value stored by reference stays a reference.
"""

from __future__ import annotations

from typing import Any

from workflows import tool_messages
from workflows.calculator import CalculatorError, calculate
from workflows.content import Content, marker_ref, text_or_preview
from workflows.model import AgentType, ToolCall
from workflows.session import Session

# What a suggested answer or a switch reason is cut to: they are shown in a list, or stored in the switch record.
SHORT_TEXT_CHARS = 500


class RuntimeTools:
    def __init__(self, session: Session) -> None:
        self._session = session

    def run(self, call: ToolCall) -> Content:
        """Execute a runtime tool and close its call; the turn's final text for the completion tools, else None."""
        session = self._session
        args = call.arguments
        match call.name:
            case "switch_mode":
                reason = text_or_preview(argument_text(args.get("reason")))[:SHORT_TEXT_CHARS]
                session.close_call(call, self._switch_mode(str(args["mode"]), reason or None), outcome="completed")
            case "echo":
                session.close_call(call, argument_text(args["text"]), outcome="completed", emit=True)
            case "calculator":
                try:
                    expression = args["expr"]
                    if not isinstance(expression, str):
                        raise CalculatorError("the expression is too long")
                    content, outcome = str(calculate(expression)), "completed"
                except CalculatorError as err:
                    content, outcome = tool_messages.refused(str(err)), "failed"
                session.close_call(call, content, outcome=outcome, emit=True)
            case "attempt_completion":
                session.close_call(call, "The result was shown to the user.", outcome="completed")
                return argument_text(args["result"])
            case "ask_followup_question":
                session.close_call(call, "The question was shown to the user.", outcome="completed")
                suggestions = [
                    text_or_preview(argument_text(s))[:SHORT_TEXT_CHARS] for s in args.get("suggestions") or []
                ]
                return tool_messages.followup_text(text_or_preview(argument_text(args["question"])), suggestions)
        return None

    def _switch_mode(self, mode: str, reason: Any) -> str:
        """The switch_mode tool: its result always answers its own call id (bugs B3, B13)."""
        session = self._session
        try:
            target = AgentType(mode)
        except ValueError:
            return tool_messages.refused(f"unknown agent '{mode}'")
        if target not in session.agents:
            return tool_messages.refused(f"agent '{mode}' is not available in this session")
        if target is session.agent:
            return f"Already in {target.value} mode; continuing."
        if session.switch_count >= session.config.max_agent_switches:
            limit = session.config.max_agent_switches
            return tool_messages.refused(f"the session reached its limit of {limit} switches")
        session.switch_to(target, str(reason or f"Switched by the {session.agent.value} agent"), source="switch_mode")
        return f"Switched to {target.value} agent"


def argument_text(value: Any) -> Content:
    """A string argument as the runtime uses it: the text, or its reference when it was stored by reference."""
    ref = marker_ref(value)
    return ref if ref is not None else str(value)
