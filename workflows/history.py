"""A conversation history that cannot break the provider's rules (invariants I1-I3 and I7 of the spec).

Every append goes through this class, and it refuses what a strict provider would reject: a user or assistant
message while a tool call is open (I1), a tool message for an unknown, foreign or already answered call id (I2),
an LLM request while any call is open, and assistant text that is really an error report (I3). The workflow
therefore cannot hand the LLM a history that earns a 400, whatever order inputs arrive in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from workflows.model import AgentType, ChatMessage, ToolCall


class HistoryInvariantError(ValueError):
    """An append would break pairing; this is a bug in the caller, never a user error."""


class ConversationHistory:
    """The messages of one session, plus the call ids that still wait for their tool message."""

    def __init__(self, messages: Iterable[ChatMessage] = ()) -> None:
        self._messages: list[ChatMessage] = []
        self._open: dict[str, ToolCall] = {}
        self._answered: set[str] = set()
        # Told of every later append or amendment, with the message's position (the projection listens here).
        self.listener: Callable[[int, ChatMessage], None] | None = None
        for message in messages:
            self._append(message)

    # --- reading ---

    @property
    def messages(self) -> list[ChatMessage]:
        return list(self._messages)

    def __len__(self) -> int:
        return len(self._messages)

    @property
    def open_calls(self) -> list[ToolCall]:
        """Calls of the last assistant message that have no tool message yet, in the order the LLM gave them."""
        return list(self._open.values())

    def is_open(self, call_id: str) -> bool:
        return call_id in self._open

    def has_call(self, call_id: str) -> bool:
        return call_id in self._open or call_id in self._answered

    def last_user_text(self) -> str:
        return next((m.content or "" for m in reversed(self._messages) if m.role == "user"), "")

    def for_llm(self) -> list[ChatMessage]:
        """The history to send to the LLM; refused while a call is open, so no request can be unpaired."""
        if self._open:
            raise HistoryInvariantError(f"LLM request with open tool calls: {sorted(self._open)}")
        return list(self._messages)

    # --- appending ---

    def add_user(self, content: str, *, message_id: str, at: datetime, name: str | None = None) -> ChatMessage:
        """A user turn; `name` marks one the runtime wrote on the user's behalf (a plan's subtask instruction)."""
        return self._append(ChatMessage(role="user", content=content, name=name, message_id=message_id, created_at=at))

    def add_assistant(
        self, content: str, tool_calls: list[ToolCall], *, agent: AgentType, message_id: str, at: datetime
    ) -> ChatMessage:
        if content.lstrip().startswith("[Error]"):
            raise HistoryInvariantError("an LLM error report is not assistant content")
        message = ChatMessage(
            role="assistant",
            # Providers want content on a plain reply and accept null beside tool calls.
            content=content or (None if tool_calls else ""),
            tool_calls=tool_calls,
            agent=agent,
            message_id=message_id,
            created_at=at,
        )
        return self._append(message)

    def add_tool_result(self, call_id: str, content: str, *, message_id: str, at: datetime) -> ChatMessage:
        call = self._open.get(call_id)
        if call is None:
            raise HistoryInvariantError(f"tool message for call {call_id!r}, which is not open")
        message = ChatMessage(
            role="tool", content=content, tool_call_id=call_id, name=call.name, message_id=message_id, created_at=at
        )
        return self._append(message)

    def amend_arguments(self, call_id: str, arguments: dict[str, Any]) -> None:
        """Record the arguments a human edited, so the history shows what was actually executed."""
        if call_id not in self._open:
            raise HistoryInvariantError(f"cannot edit call {call_id!r}, which is not open")
        index = next(i for i in range(len(self._messages) - 1, -1, -1) if self._messages[i].role == "assistant")
        message = self._messages[index]
        calls = [c.model_copy(update={"arguments": arguments}) if c.id == call_id else c for c in message.tool_calls]
        self._messages[index] = message.model_copy(update={"tool_calls": calls})
        self._open[call_id] = self._open[call_id].model_copy(update={"arguments": arguments})
        if self.listener:
            self.listener(index, self._messages[index])

    def _append(self, message: ChatMessage) -> ChatMessage:
        if message.role == "tool":
            if message.tool_call_id not in self._open:
                raise HistoryInvariantError(f"tool message for call {message.tool_call_id!r}, which is not open")
            del self._open[message.tool_call_id]
            self._answered.add(message.tool_call_id)
        else:
            if self._open:
                raise HistoryInvariantError(f"{message.role} message while tool calls are open: {sorted(self._open)}")
            if message.role == "assistant":
                ids = [c.id for c in message.tool_calls]
                if len(set(ids)) != len(ids) or any(not i or self.has_call(i) for i in ids):
                    raise HistoryInvariantError(f"tool call ids must be new and unique: {ids}")
                self._open = {c.id: c for c in message.tool_calls}
        self._messages.append(message)
        if self.listener:
            self.listener(len(self._messages) - 1, message)
        return message


def unique_call_ids(calls: list[ToolCall], history: ConversationHistory, salt: str) -> list[ToolCall]:
    """Give every call an id that is non-empty and new to this history (some providers repeat or omit ids)."""
    taken: set[str] = set()
    result = []
    for index, call in enumerate(calls):
        call_id = call.id
        if not call_id or call_id in taken or history.has_call(call_id):
            call_id = f"call_{salt}_{index}"
        taken.add(call_id)
        result.append(call if call_id == call.id else call.model_copy(update={"id": call_id}))
    return result
