"""The Web UI's view of a session, as pure functions."""

from datetime import UTC, datetime, timedelta

from workflows.model import (
    AgentType,
    PendingApproval,
    SessionStatus,
)
from workflows.observability import current_details, fingerprint, search_attribute_updates, summarize_arguments

AT = datetime(2026, 2, 3, 5, 34, 43, tzinfo=UTC)


def _approval(tool: str, at: datetime) -> PendingApproval:
    return PendingApproval(
        request_id=f"c-{tool}",
        session_id="s",
        call_id=f"c-{tool}",
        tool_name=tool,
        subject=tool,
        arguments={"command": "dart analyze"},
        reason="r",
        agent=AgentType.CODER,
        created_at=at,
        expires_at=at + timedelta(minutes=5),
    )


def test_details_name_the_tool_arguments_and_times() -> None:
    text = current_details(SessionStatus.AWAITING_APPROVAL, AgentType.CODER, [_approval("execute_command", AT)], [], 2)
    assert '`execute_command` (command="dart analyze") since 2026-02-03 05:34:43 UTC' in text
    assert "expires 2026-02-03 05:39:43 UTC" in text and "2 input(s) queued" in text


def test_long_arguments_are_cut() -> None:
    summary = summarize_arguments({"content": "x" * 500})
    assert len(summary) == 120 and summary.endswith("…")


def test_attributes_track_the_oldest_pending_approval_and_unset_it() -> None:
    pending = [_approval("write_file", AT + timedelta(minutes=1)), _approval("execute_command", AT)]
    updates = {
        u.key.name: u.value for u in search_attribute_updates(SessionStatus.AWAITING_APPROVAL, AgentType.CODER, pending)
    }
    assert updates["AgentRuntimePendingApprovals"] == 2
    assert updates["AgentRuntimeOldestPendingApproval"] == AT
    assert updates["AgentRuntimePendingTools"] == ["execute_command", "write_file"]
    idle = search_attribute_updates(SessionStatus.IDLE, AgentType.CODER, [])
    assert {u.key.name: u.value for u in idle}["AgentRuntimeOldestPendingApproval"] is None
    assert fingerprint(idle) != fingerprint(search_attribute_updates(SessionStatus.IDLE, AgentType.ASK, []))
