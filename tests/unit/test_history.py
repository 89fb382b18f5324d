"""The history type refuses every append a strict provider would reject (invariants I1-I3)."""

from datetime import UTC, datetime

import pytest

from workflows.history import ConversationHistory, HistoryInvariantError, unique_call_ids
from workflows.model import (
    AgentType,
    ToolCall,
)

AT = datetime(2026, 1, 1, tzinfo=UTC)


def _call(call_id: str, name: str = "read_file") -> ToolCall:
    return ToolCall(id=call_id, name=name, arguments={"path": "main.py"})


def _with_open_calls(*ids: str) -> ConversationHistory:
    history = ConversationHistory()
    history.add_user("hi", message_id="u1", at=AT)
    history.add_assistant("", [_call(i) for i in ids], agent=AgentType.CODER, message_id="a1", at=AT)
    return history


def test_open_call_blocks_user_assistant_and_llm_request() -> None:
    history = _with_open_calls("c1", "c2")
    with pytest.raises(HistoryInvariantError):
        history.add_user("again", message_id="u2", at=AT)
    with pytest.raises(HistoryInvariantError):
        history.add_assistant("text", [], agent=AgentType.CODER, message_id="a2", at=AT)
    with pytest.raises(HistoryInvariantError):
        history.for_llm()
    history.add_tool_result("c1", "ok", message_id="t1", at=AT)
    with pytest.raises(HistoryInvariantError):
        history.for_llm()
    history.add_tool_result("c2", "ok", message_id="t2", at=AT)
    assert [m.role for m in history.for_llm()] == ["user", "assistant", "tool", "tool"]


def test_second_tool_message_for_a_call_is_refused() -> None:
    history = _with_open_calls("c1")
    history.add_tool_result("c1", "ok", message_id="t1", at=AT)
    with pytest.raises(HistoryInvariantError):
        history.add_tool_result("c1", "again", message_id="t2", at=AT)
    assert len(history) == 3


def test_tool_message_for_unknown_call_is_refused() -> None:
    history = _with_open_calls("c1")
    with pytest.raises(HistoryInvariantError):
        history.add_tool_result("nope", "x", message_id="t1", at=AT)


def test_error_report_is_not_assistant_content() -> None:
    history = ConversationHistory()
    history.add_user("hi", message_id="u1", at=AT)
    with pytest.raises(HistoryInvariantError):
        history.add_assistant("[Error] LiteLLM proxy unavailable", [], agent=AgentType.ASK, message_id="a", at=AT)
    assert len(history) == 1


def test_reused_call_id_is_refused_and_unique_ids_fix_it() -> None:
    history = _with_open_calls("c1")
    history.add_tool_result("c1", "ok", message_id="t1", at=AT)
    with pytest.raises(HistoryInvariantError):
        history.add_assistant("", [_call("c1")], agent=AgentType.CODER, message_id="a2", at=AT)
    fixed = unique_call_ids([_call("c1"), _call(""), _call("c9"), _call("c9")], history, salt="s")
    ids = [c.id for c in fixed]
    assert ids[0] != "c1" and ids[1] and ids[2] == "c9" and ids[3] != "c9"
    assert len(set(ids)) == 4
    history.add_assistant("", fixed, agent=AgentType.CODER, message_id="a2", at=AT)


def test_amend_arguments_rewrites_the_open_call() -> None:
    history = _with_open_calls("c1")
    history.amend_arguments("c1", {"path": "other.py"})
    assert history.messages[-1].tool_calls[0].arguments == {"path": "other.py"}
    assert history.open_calls[0].arguments == {"path": "other.py"}
    history.add_tool_result("c1", "ok", message_id="t1", at=AT)
    with pytest.raises(HistoryInvariantError):
        history.amend_arguments("c1", {})


def test_rebuilding_from_messages_restores_open_calls() -> None:
    history = _with_open_calls("c1", "c2")
    history.add_tool_result("c1", "ok", message_id="t1", at=AT)
    rebuilt = ConversationHistory(history.messages)
    assert [c.id for c in rebuilt.open_calls] == ["c2"]
    assert rebuilt.has_call("c1") and not rebuilt.is_open("c1")


def test_plain_empty_reply_keeps_string_content() -> None:
    history = ConversationHistory()
    history.add_user("hi", message_id="u1", at=AT)
    message = history.add_assistant("", [], agent=AgentType.ASK, message_id="a1", at=AT)
    assert message.content == ""
    assert _with_open_calls("c1").messages[-1].content is None
