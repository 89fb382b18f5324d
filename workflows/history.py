"""A conversation history that cannot break the provider's rules (invariants I1-I3 and I7 of the spec).

Every append goes through this class, and it refuses what a strict provider would reject: a user or assistant
message while a tool call is open (I1), a tool message for an unknown, foreign or already answered call id (I2),
an LLM request while any call is open, and assistant text that is really an error report (I3). The workflow
therefore cannot hand the LLM a history that earns a 400, whatever order inputs arrive in.

It holds the current run's part of the conversation: at continue-as-new the older turns move to the archived
transcript (`split_for_archive`), so what a run carries stays bounded however long the session. Positions (`seq`)
count from the start of the whole conversation.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from workflows.content import Content, message_size, preview_of, text_or_preview
from workflows.model import (
    PROXY_ERROR_PREFIX,
    AgentType,
    ChatMessage,
    ToolCall,
)

# Answered call ids remembered after their messages are archived, so a late duplicate result is still recognised
# as a duplicate (older ones are reported as unknown: they are hours of conversation back).
ANSWERED_IDS_KEPT = 1000
# OpenAI's own ids are ~30 characters; a longer one from a model is junk, and it is repeated in every event.
MAX_CALL_ID_LENGTH = 128


class HistoryInvariantError(ValueError):
    """An append would break pairing; this is a bug in the caller, never a user error."""


class ConversationHistory:
    """The messages of one run, plus the call ids that still wait for their tool message.

    Args:
        messages: The messages carried into this run.
        first_seq: The position of `messages[0]` in the whole conversation.
        answered: Call ids answered before `messages` (oldest first).
    """

    def __init__(
        self, messages: Iterable[ChatMessage] = (), *, first_seq: int = 0, answered: Iterable[str] = ()
    ) -> None:
        self._messages: list[ChatMessage] = []
        self._first_seq = first_seq
        self._open: dict[str, ToolCall] = {}
        self._answered: OrderedDict[str, None] = OrderedDict()
        self._size = 0
        # Told of every later append or amendment, with the message's position (the projection listens here).
        self.listener: Callable[[int, ChatMessage], None] | None = None
        for message in messages:
            self._append(message)
        # Ids answered in archived messages come first (oldest first); those of the carried messages stay newest.
        self._answered = OrderedDict.fromkeys([*answered, *self._answered])

    # --- reading ---

    @property
    def messages(self) -> list[ChatMessage]:
        return list(self._messages)

    @property
    def first_seq(self) -> int:
        return self._first_seq

    def __len__(self) -> int:
        """Messages in the whole conversation, archived ones included."""
        return self._first_seq + len(self._messages)

    @property
    def size(self) -> int:
        """Approximate characters this run's messages add to workflow state (see `workflows.content.message_size`)."""
        return self._size

    @property
    def open_calls(self) -> list[ToolCall]:
        """Calls of the last assistant message that have no tool message yet, in the order the LLM gave them."""
        return list(self._open.values())

    @property
    def answered_ids(self) -> list[str]:
        """The newest answered call ids, oldest first (at most ANSWERED_IDS_KEPT)."""
        return list(self._answered)[-ANSWERED_IDS_KEPT:]

    def is_open(self, call_id: str) -> bool:
        return call_id in self._open

    def has_call(self, call_id: str) -> bool:
        return call_id in self._open or call_id in self._answered

    def last_user_text(self) -> str:
        return next((text_or_preview(m.content) for m in reversed(self._messages) if m.role == "user"), "")

    def for_llm(self) -> list[ChatMessage]:
        """The history to send to the LLM; refused while a call is open, so no request can be unpaired."""
        if self._open:
            raise HistoryInvariantError(f"LLM request with open tool calls: {sorted(self._open)}")
        return list(self._messages)

    def split_for_archive(self, keep_size: int) -> tuple[list[ChatMessage], list[ChatMessage]]:
        """(older turns to archive, newest turns to keep): the kept turns fit `keep_size` (the last one always
        stays). Refused while a call is open: a turn is never cut in half."""
        if self._open:
            raise HistoryInvariantError(f"cannot archive with open tool calls: {sorted(self._open)}")
        starts = [i for i, m in enumerate(self._messages) if m.role == "user"]
        cut = starts[-1] if starts else 0
        kept = sum(message_size(m) for m in self._messages[cut:])
        for start in reversed(starts[:-1]):
            turn = sum(message_size(m) for m in self._messages[start:cut])
            if kept + turn > keep_size:
                break
            kept += turn
            cut = start
        return self._messages[:cut], self._messages[cut:]

    # --- appending ---

    def add_user(self, content: Content, *, message_id: str, at: datetime, name: str | None = None) -> ChatMessage:
        """A user turn; `name` marks one the runtime wrote on the user's behalf (a plan's subtask instruction)."""
        return self._append(ChatMessage(role="user", content=content, name=name, message_id=message_id, created_at=at))

    def add_assistant(
        self, content: Content, tool_calls: list[ToolCall], *, agent: AgentType, message_id: str, at: datetime
    ) -> ChatMessage:
        if preview_of(content).lstrip().startswith(PROXY_ERROR_PREFIX):
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

    def add_tool_result(self, call_id: str, content: Content, *, message_id: str, at: datetime) -> ChatMessage:
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
        amended = message.model_copy(update={"tool_calls": calls})
        self._size += message_size(amended) - message_size(message)
        self._messages[index] = amended
        self._open[call_id] = self._open[call_id].model_copy(update={"arguments": arguments})
        if self.listener:
            self.listener(self._first_seq + index, amended)

    def _append(self, message: ChatMessage) -> ChatMessage:
        if message.role == "tool":
            if message.tool_call_id not in self._open:
                raise HistoryInvariantError(f"tool message for call {message.tool_call_id!r}, which is not open")
            del self._open[message.tool_call_id]
            self._answered[message.tool_call_id] = None
            if len(self._answered) > 2 * ANSWERED_IDS_KEPT:
                for _ in range(ANSWERED_IDS_KEPT):
                    self._answered.popitem(last=False)
        else:
            if self._open:
                raise HistoryInvariantError(f"{message.role} message while tool calls are open: {sorted(self._open)}")
            if message.role == "assistant":
                ids = [c.id for c in message.tool_calls]
                if len(set(ids)) != len(ids) or any(not i or self.has_call(i) for i in ids):
                    raise HistoryInvariantError(f"tool call ids must be new and unique: {ids}")
                self._open = {c.id: c for c in message.tool_calls}
        self._messages.append(message)
        self._size += message_size(message)
        if self.listener:
            self.listener(self._first_seq + len(self._messages) - 1, message)
        return message


def unique_call_ids(calls: list[ToolCall], history: ConversationHistory, salt: str) -> list[ToolCall]:
    """Give every call an id that is non-empty, new to this history and of a sane length (some providers repeat or
    omit ids; a model may invent a huge one)."""
    taken: set[str] = set()
    result = []
    for index, call in enumerate(calls):
        call_id = call.id
        if not call_id or len(call_id) > MAX_CALL_ID_LENGTH or call_id in taken or history.has_call(call_id):
            call_id = f"call_{salt}_{index}"
        taken.add(call_id)
        result.append(call if call_id == call.id else call.model_copy(update={"id": call_id}))
    return result
