"""The operator's view of a session, as pure functions: the Web UI's details and summary, the search attributes, and
the commands that decide an approval (held to the real `agent-runtime` parser)."""

import json
import shlex
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cli.main import _parser
from workflows.model import (
    AgentType,
    ApprovalPolicy,
    ApprovalRule,
    CallStatus,
    ContentRef,
    ConversationConfig,
    OutstandingCall,
    PendingApproval,
    SessionStatus,
)
from workflows.observability import (
    SessionView,
    approval_commands,
    approval_notice,
    current_details,
    fingerprint,
    notice_text,
    search_attribute_updates,
    static_details,
    static_summary,
    summarize_arguments,
)

AT = datetime(2026, 2, 3, 5, 34, 43, tzinfo=UTC)


def _approval(tool: str, at: datetime, **fields: Any) -> PendingApproval:
    values: dict[str, Any] = {
        "request_id": f"c-{tool}",
        "session_id": "s",
        "call_id": f"c-{tool}",
        "tool_name": tool,
        "subject": tool,
        "arguments": {"command": "dart analyze"},
        "reason": "Running a command requires user approval",
        "agent": AgentType.CODER,
        "created_at": at,
        "expires_at": at + timedelta(minutes=5),
    }
    return PendingApproval.model_validate(values | fields)


def _view(status: SessionStatus, pending: list[PendingApproval], calls: list[OutstandingCall] = (), **fields: Any):  # type: ignore[assignment]
    return SessionView(fields.pop("session_id", "s"), status, AgentType.CODER, pending, list(calls), 0, **fields)


def _parsed(command: str) -> Any:
    words = shlex.split(command)
    assert words[0] == "agent-runtime"
    return _parser().parse_args(words[1:])


def test_details_name_the_tool_arguments_and_times() -> None:
    view = SessionView("s", SessionStatus.AWAITING_APPROVAL, AgentType.CODER, [_approval("execute_command", AT)], [], 2)
    text = current_details(view)
    assert '`execute_command` (command="dart analyze") since 2026-02-03 05:34:43 UTC' in text
    assert "expires 2026-02-03 05:39:43 UTC" in text and "2 input(s) queued" in text


def test_details_say_first_what_waits_since_and_until_when_and_how_to_decide() -> None:
    approval = _approval(
        "execute_command", AT, remind_at=AT + timedelta(minutes=1), escalate_at=AT + timedelta(minutes=2)
    )
    lines = current_details(_view(SessionStatus.AWAITING_APPROVAL, [approval])).splitlines()
    assert lines[0] == '### ⏸ Waits for a human to approve `execute_command` (command="dart analyze")'
    assert lines[1] == (
        "Call `c-execute_command`, asked by agent `coder` since 2026-02-03 05:34:43 UTC; expires 2026-02-03 "
        "05:39:43 UTC. (reminder 2026-02-03 05:35:43 UTC, escalation 2026-02-03 05:36:43 UTC)"
    )
    assert lines[2] == "Reason: Running a command requires user approval"
    assert lines[3] == "- Approve: `agent-runtime approvals approve s c-execute_command`"
    assert lines[4].startswith("- Edit: `agent-runtime approvals edit s c-execute_command --arguments ")
    assert lines[5].startswith("- Reject: `agent-runtime approvals reject s c-execute_command --feedback ")
    assert lines[6] == '- Over HTTP: `POST /approvals/s/c-execute_command {"decision": "approve"}`'


@pytest.mark.parametrize("session_id", ["s1", "it's mine", "a b;rm -rf ~", "$(whoami)"])
def test_the_commands_are_what_the_cli_parses(session_id: str) -> None:
    """Pasted into a shell, each command decides exactly this call, whatever the ids and arguments hold."""
    arguments = {"command": "echo 'hi' && ls $HOME", "cwd": "src"}
    approval = _approval("execute_command", AT, session_id=session_id, call_id="call_1", arguments=arguments)
    commands = approval_commands(session_id, approval)
    approve, edit, reject = _parsed(commands.approve), _parsed(commands.edit or ""), _parsed(commands.reject)
    assert (approve.command, approve.action, approve.session, approve.call_id) == (
        "approvals",
        "approve",
        session_id,
        "call_1",
    )
    assert (edit.action, edit.session, edit.call_id, edit.arguments) == ("edit", session_id, "call_1", arguments)
    assert (reject.action, reject.session, reject.call_id) == ("reject", session_id, "call_1")
    assert reject.feedback


def test_large_arguments_are_edited_from_a_file_and_plans_are_not_edited() -> None:
    big = _approval("write_file", AT, arguments={"path": "a.py", "content": "x" * 1000})
    edit = approval_commands("s", big).edit or ""
    assert edit.endswith('--arguments "$(cat arguments.json)"') and len(edit) < 200
    plan = _approval("create_plan", AT, request_type="plan", request_id="plan-approval-p1", call_id="call_p")
    commands = approval_commands("s", plan)
    assert commands.edit is None
    assert _parsed(commands.approve).call_id == "plan-approval-p1"  # a plan is decided by its request id
    headline = current_details(_view(SessionStatus.AWAITING_APPROVAL, [plan])).splitlines()[0]
    assert headline.startswith("### ⏸ Waits for a human to approve a plan")


def test_details_of_an_ide_wait_a_running_turn_and_an_idle_session() -> None:
    call = OutstandingCall(
        call_id="call_r1",
        tool_name="read_file",
        arguments={"path": "a.py"},
        agent=AgentType.CODER,
        status=CallStatus.AWAITING_RESULT,
        since=AT,
        lease_expires_at=AT + timedelta(minutes=10),
    )
    ide = current_details(_view(SessionStatus.AWAITING_TOOL_RESULT, [], [call])).splitlines()
    assert ide[0] == '### ⏳ Waits for the IDE to run `read_file` (path="a.py")'
    assert "the lease ends 2026-02-03 05:44:43 UTC" in ide[1]
    assert current_details(_view(SessionStatus.RUNNING, [])).startswith("### ▶ Runs a turn (agent `coder`)")
    idle = current_details(_view(SessionStatus.IDLE, [], last_activity=AT))
    assert idle.startswith("### 💤 Waits for the next user message since 2026-02-03 05:34:43 UTC")


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
    assert "AgentRuntimeWaitingCallId" not in updates  # runs without the operator-view patch replay as they ran
    idle = search_attribute_updates(SessionStatus.IDLE, AgentType.CODER, [])
    assert {u.key.name: u.value for u in idle}["AgentRuntimeOldestPendingApproval"] is None
    assert fingerprint(idle) != fingerprint(search_attribute_updates(SessionStatus.IDLE, AgentType.ASK, []))


def test_attributes_name_the_waiting_call_and_its_tool() -> None:
    pending = [_approval("write_file", AT + timedelta(minutes=1)), _approval("execute_command", AT)]

    def values(status: SessionStatus, approvals: list[PendingApproval], calls: list[OutstandingCall]) -> Any:
        updates = search_attribute_updates(status, AgentType.CODER, approvals, calls, with_waiting_call=True)
        return {u.key.name: u.value for u in updates}

    waiting = values(SessionStatus.AWAITING_APPROVAL, pending, [])
    assert (waiting["AgentRuntimeWaitingCallId"], waiting["AgentRuntimeWaitingTool"]) == (
        "c-execute_command",
        "execute_command",
    )
    call = OutstandingCall(
        call_id="call_r1",
        tool_name="read_file",
        arguments={},
        agent=AgentType.CODER,
        status=CallStatus.AWAITING_RESULT,
        since=AT,
    )
    ide = values(SessionStatus.AWAITING_TOOL_RESULT, [], [call])
    assert (ide["AgentRuntimeWaitingCallId"], ide["AgentRuntimeWaitingTool"]) == ("call_r1", "read_file")
    idle = values(SessionStatus.IDLE, [], [])
    assert idle["AgentRuntimeWaitingCallId"] is None and idle["AgentRuntimeWaitingTool"] is None


def test_static_summary_and_details_say_who_which_agent_and_when() -> None:
    summary = static_summary(
        "s1",
        agent=AgentType.ORCHESTRATOR,
        started_at=AT,
        started_by="the HTTP API (1@host)",
        project="acme/web",
        first_message="please   run\ndart analyze on the whole project, and then fix every warning it reports",
    )
    assert summary.startswith(
        "Session s1 · project acme/web · agent orchestrator · started 2026-02-03 05:34 UTC by the HTTP API (1@host) · "
    )
    assert summary.endswith("“please run dart analyze on the whole project, and then fix…”")
    referenced = ContentRef(driver="file", claim={}, sha256="0", size=10_000, preview="a long paste")
    pasted = static_summary("s2", agent=AgentType.CODER, started_at=AT, started_by="x", first_message=referenced)
    assert pasted.endswith("“a long paste”")
    policy = ApprovalPolicy(
        rules=[ApprovalRule(pattern="execute_command", requires_approval=True)],
        default_timeout_seconds=3600,
        default_remind_after_seconds=900,
    )
    details = static_details(
        "s1",
        ConversationConfig(approval_policy=policy, llm_model="m"),
        agent=AgentType.ORCHESTRATOR,
        started_at=AT,
        started_by="me",
    )
    assert "**Session** `s1` (workflow `session-s1`)" in details
    assert "- Started 2026-02-03 05:34:43 UTC by me" in details
    assert "- Approvals asked for: `execute_command`; by default remind after 900 s, expire after 3600 s" in details
    assert "`agent-runtime show s1`" in details and "`GET /approvals?session_id=s1`" in details


def test_a_notice_carries_what_waits_and_how_to_decide_it() -> None:
    approval = _approval("execute_command", AT, escalate_at=AT + timedelta(minutes=3))
    notice = approval_notice("escalation", approval, AT + timedelta(minutes=3))
    assert notice.notice_id == "session-s/c-execute_command/escalation"
    assert (notice.waited_seconds, notice.arguments_summary) == (180.0, 'command="dart analyze"')
    assert notice.commands == approval_commands("s", approval)
    assert notice_text(notice) == (
        "Escalation: the approval of execute_command (call c-execute_command) has waited 3 min since "
        "2026-02-03 05:34:43 UTC; it expires at 2026-02-03 05:39:43 UTC"
    )
    assert json.loads(notice.model_dump_json())["kind"] == "escalation"
