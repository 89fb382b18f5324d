"""What an operator sees of a session: the Temporal Web UI's summary, details and search attributes, and the commands
that decide a pending approval.

Pure functions of the session's state, so the workflow only decides when to publish them, and the client, the CLI,
the API and the approval webhook say the same thing:

- `static_summary` / `static_details`: set once by the client that starts the session (who, which agent, when).
- `current_details`: at the top, what the session waits for, since when, until when, and the exact commands that
  approve, edit or reject it; below, every pending approval and open call.
- `search_attribute_updates`: the custom search attributes (workflows/model.py) for the list's columns and filters.
- `approval_commands`: the `agent-runtime approvals ...` commands (cli/operators.py parses them; a test holds them
  to it) and the HTTP route (api/routes_approvals.py) for one approval.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from temporalio.common import SearchAttributeUpdate

from workflows.content import Content, preview_of
from workflows.model import (
    CURRENT_AGENT_ATTRIBUTE,
    OLDEST_PENDING_APPROVAL_ATTRIBUTE,
    PENDING_APPROVALS_ATTRIBUTE,
    PENDING_TOOLS_ATTRIBUTE,
    SESSION_STATUS_ATTRIBUTE,
    WAITING_CALL_ID_ATTRIBUTE,
    WAITING_TOOL_ATTRIBUTE,
    AgentType,
    ApprovalCommands,
    ApprovalNotice,
    CallStatus,
    ConversationConfig,
    OutstandingCall,
    PendingApproval,
    SessionStatus,
    workflow_id_for,
)

ARGUMENTS_SUMMARY_CHARS = 120
# The arguments an `edit` command repeats inline, at most; longer ones are read from a file the operator writes.
EDIT_ARGUMENTS_CHARS = 400
SUMMARY_TITLE_CHARS = 60
CLI = "agent-runtime"
DECIDE_ROUTE = "/approvals/{session_id}/{call_id}"


def summarize_arguments(arguments: dict[str, object]) -> str:
    """A one-line view of a call's arguments, cut short: enough to recognise `dart analyze` or a file path."""
    text = ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in arguments.items())
    return text if len(text) <= ARGUMENTS_SUMMARY_CHARS else text[: ARGUMENTS_SUMMARY_CHARS - 1] + "…"


def _time(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "never"


# --- deciding an approval ---


def decision_id(approval: PendingApproval) -> str:
    """The id a decision names: a tool call's id, or a plan approval's request id."""
    return approval.request_id if approval.request_type == "plan" else approval.call_id


def approval_commands(session_id: str, approval: PendingApproval) -> ApprovalCommands:
    """The exact commands that approve, edit (tool calls only) or reject a pending approval."""
    target = f"{shlex.quote(session_id)} {shlex.quote(decision_id(approval))}"
    edit = None
    if approval.request_type == "tool":
        arguments = json.dumps(approval.arguments, ensure_ascii=False)
        value = shlex.quote(arguments) if len(arguments) <= EDIT_ARGUMENTS_CHARS else '"$(cat arguments.json)"'
        edit = f"{CLI} approvals edit {target} --arguments {value}"
    route = DECIDE_ROUTE.format(session_id=session_id, call_id=decision_id(approval))
    return ApprovalCommands(
        approve=f"{CLI} approvals approve {target}",
        edit=edit,
        reject=f"{CLI} approvals reject {target} --feedback 'why, for the model'",
        http=f'POST {route} {{"decision": "approve"}}',
    )


def approval_notice(
    kind: Literal["reminder", "escalation"], approval: PendingApproval, now: datetime
) -> ApprovalNotice:
    """What the approval webhook is sent when `approval` still waits at its reminder or escalation time."""
    workflow_id = workflow_id_for(approval.session_id)
    return ApprovalNotice(
        notice_id=f"{workflow_id}/{approval.request_id}/{kind}",
        kind=kind,
        session_id=approval.session_id,
        workflow_id=workflow_id,
        request_id=approval.request_id,
        request_type=approval.request_type,
        call_id=approval.call_id,
        tool_name=approval.tool_name,
        agent=approval.agent,
        reason=approval.reason,
        arguments_summary=summarize_arguments(approval.arguments),
        waiting_since=approval.created_at,
        waited_seconds=(now - approval.created_at).total_seconds(),
        expires_at=approval.expires_at,
        escalate_at=approval.escalate_at,
        commands=approval_commands(approval.session_id, approval),
        sent_at=now,
    )


def notice_text(notice: ApprovalNotice) -> str:
    """The `status` event of a reminder or an escalation, as people read it."""
    what = "Reminder" if notice.kind == "reminder" else "Escalation"
    until = f"; it expires at {_time(notice.expires_at)}" if notice.expires_at else ""
    return (
        f"{what}: the approval of {notice.tool_name} (call {notice.call_id}) has waited "
        f"{_duration(notice.waited_seconds)} since {_time(notice.waiting_since)}{until}"
    )


def _duration(seconds: float) -> str:
    whole = int(seconds)
    if whole < 120:
        return f"{whole} s"
    if whole < 7200:
        return f"{whole // 60} min"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


# --- the Web UI ---


@dataclass(frozen=True)
class SessionView:
    """What an operator is shown of a session: its status, agent, pending approvals, open calls and queue."""

    session_id: str
    status: SessionStatus
    agent: AgentType
    pending: list[PendingApproval]
    open_calls: list[OutstandingCall]
    queued: int
    last_activity: datetime | None = None
    created_at: datetime | None = None
    project: str | None = None
    run: int = 1


def current_details(view: SessionView) -> str:
    """Markdown for the Web UI's "current details": first what the session waits for and how to act, then the list,
    then which session this is (a run started by continue-as-new has no static summary: Temporal does not carry it
    over, so the details say it)."""
    lines = [*_headline(view), "", f"**Session {view.status.value.replace('_', ' ')}** · agent `{view.agent.value}`"]
    for approval in view.pending:
        lines.append(
            f"- ⏸ approval for `{approval.tool_name}` ({summarize_arguments(approval.arguments)}) "
            f"since {_time(approval.created_at)}, expires {_time(approval.expires_at)}; "
            f"call id `{approval.call_id}`"
        )
    for call in view.open_calls:
        if call.status is CallStatus.AWAITING_RESULT:
            lines.append(
                f"- ⏳ IDE result for `{call.tool_name}` since {_time(call.since)}, "
                f"lease ends {_time(call.lease_expires_at)}; call id `{call.call_id}`"
            )
    if view.queued:
        lines.append(f"- {view.queued} input(s) queued behind the current turn")
    project = f" · project `{view.project}`" if view.project else ""
    lines += ["", f"_Session `{view.session_id}` (run {view.run}){project} · started {_time(view.created_at)}_"]
    return "\n".join(lines)


def _headline(view: SessionView) -> list[str]:
    """What the session waits for, since when, until when, and what to do about it."""
    if view.pending:
        approval = min(view.pending, key=lambda a: a.created_at)
        what = "a plan" if approval.request_type == "plan" else f"`{approval.tool_name}`"
        lines = [
            f"### ⏸ Waits for a human to approve {what} ({summarize_arguments(approval.arguments)})",
            f"Call `{approval.call_id}`, asked by agent `{approval.agent.value}` since {_time(approval.created_at)}; "
            f"expires {_time(approval.expires_at)}.{_timers(approval)}",
            f"Reason: {approval.reason}",
        ]
        commands = approval_commands(view.session_id, approval)
        lines += [f"- Approve: `{commands.approve}`"]
        if commands.edit is not None:
            lines += [f"- Edit: `{commands.edit}`"]
        lines += [f"- Reject: `{commands.reject}`", f"- Over HTTP: `{commands.http}`"]
        if len(view.pending) > 1:
            lines += [
                f"- {len(view.pending) - 1} more approval(s) wait below; list them: `{CLI} approvals "
                f"--session {shlex.quote(view.session_id)}`"
            ]
        return lines
    call = _ide_call(view.status, view.open_calls)
    if call is not None:
        lease = (
            f"the lease ends {_time(call.lease_expires_at)}, then the call is closed with an error result and the "
            "agent goes on."
            if call.lease_expires_at
            else "approved, just sent to the IDE."
        )
        return [
            f"### ⏳ Waits for the IDE to run `{call.tool_name}` ({summarize_arguments(call.arguments)})",
            f"Call `{call.call_id}` since {_time(call.since)}; {lease}",
        ]
    if view.status is SessionStatus.RUNNING:
        return [f"### ▶ Runs a turn (agent `{view.agent.value}`)"]
    since = f" since {_time(view.last_activity)}" if view.last_activity else ""
    return [f"### 💤 Waits for the next user message{since}", "Nothing to decide."]


def _timers(approval: PendingApproval) -> str:
    parts = []
    if approval.remind_at is not None:
        parts.append(f"reminder {_time(approval.remind_at)}")
    if approval.escalate_at is not None:
        parts.append(f"escalation {_time(approval.escalate_at)}")
    return f" ({', '.join(parts)})" if parts else ""


def static_summary(
    session_id: str,
    *,
    agent: AgentType,
    started_at: datetime,
    started_by: str,
    project: str | None = None,
    first_message: Content = None,
) -> str:
    """The Web UI's one-line summary, set when the session starts: which session, whose, which agent, when."""
    parts = [f"Session {session_id}"]
    if project:
        parts.append(f"project {project}")
    parts += [f"agent {agent.value}", f"started {started_at.strftime('%Y-%m-%d %H:%M UTC')} by {started_by}"]
    title = " ".join(preview_of(first_message, SUMMARY_TITLE_CHARS * 2).split())
    if title:
        short = title if len(title) <= SUMMARY_TITLE_CHARS else title[: SUMMARY_TITLE_CHARS - 1].rstrip() + "…"
        parts.append(f"“{short}”")
    return " · ".join(parts)


def static_details(
    session_id: str,
    config: ConversationConfig,
    *,
    agent: AgentType,
    started_at: datetime,
    started_by: str,
    project: str | None = None,
) -> str:
    """The Web UI's fixed details (Markdown): the session, how it was configured, and where to look further."""
    quoted = shlex.quote(session_id)
    policy = config.approval_policy
    lines = [
        f"**Session** `{session_id}` (workflow `{workflow_id_for(session_id)}`)",
        f"- Started {_time(started_at)} by {started_by}",
        f"- Project: `{project}`" if project else "- Project: none (a user message with `project` sets it)",
        f"- First agent: `{agent.value}`"
        + (" (routes by classification)" if config.multi_agent_mode else " (single-agent mode)"),
        f"- Model: `{config.llm_model}` · context window {config.llm_context_tokens:,} tokens",
    ]
    if policy is not None and policy.enabled:
        timers = [
            f"{label} {seconds:g} s"
            for label, seconds in (
                ("remind after", policy.default_remind_after_seconds),
                ("escalate after", policy.default_escalate_after_seconds),
                ("expire after", policy.default_timeout_seconds),
            )
            if seconds is not None
        ]
        asking = sorted({r.pattern for r in policy.rules if r.requires_approval})
        lines.append(
            f"- Approvals asked for: {', '.join(f'`{p}`' for p in asking) or 'none'}"
            + (f"; by default {', '.join(timers)}" if timers else "; no expiry by default")
        )
    elif policy is not None:
        lines.append("- Approvals: off (no tool call waits for a human)")
    lines += [
        f"- Inspect: `{CLI} show {quoted}` · its approvals: `{CLI} approvals --session {quoted}` · "
        f"`GET /sessions/{session_id}` · `GET /approvals?session_id={session_id}`",
        "- What it waits for right now: the current details (above, refreshed at every wait).",
    ]
    return "\n".join(lines)


# --- search attributes ---


def _ide_call(status: SessionStatus, calls: Sequence[OutstandingCall]) -> OutstandingCall | None:
    """The call whose result the session waits for from the IDE: not one queued behind it (an approved call is
    announced to the IDE just before its wait starts, still marked as it was while it waited for approval)."""
    if status is not SessionStatus.AWAITING_TOOL_RESULT:
        return None
    return next((c for c in calls if c.status is not CallStatus.QUEUED), None)


def waiting_call(
    status: SessionStatus, pending: Sequence[PendingApproval], calls: Sequence[OutstandingCall]
) -> tuple[str, str] | None:
    """The call the session waits on, as (call id, tool): its oldest pending approval, else the IDE's result."""
    if pending:
        oldest = min(pending, key=lambda a: a.created_at)
        return oldest.call_id, oldest.tool_name
    awaited = _ide_call(status, calls)
    return (awaited.call_id, awaited.tool_name) if awaited else None


def search_attribute_updates(
    status: SessionStatus,
    agent: AgentType,
    pending: Sequence[PendingApproval],
    calls: Sequence[OutstandingCall] = (),
    *,
    with_waiting_call: bool = False,
) -> list[SearchAttributeUpdate]:
    """The attribute values for this state; the oldest pending approval (and the waiting call) unset when nothing
    waits. `with_waiting_call`: also the waiting call's id and tool (runs with the `operator-view` patch)."""
    oldest = min((a.created_at for a in pending), default=None)
    updates: list[SearchAttributeUpdate] = [
        PENDING_APPROVALS_ATTRIBUTE.value_set(len(pending)),
        PENDING_TOOLS_ATTRIBUTE.value_set(sorted({a.tool_name for a in pending})),
        CURRENT_AGENT_ATTRIBUTE.value_set(agent.value),
        SESSION_STATUS_ATTRIBUTE.value_set(status.value),
        OLDEST_PENDING_APPROVAL_ATTRIBUTE.value_set(oldest)
        if oldest is not None
        else OLDEST_PENDING_APPROVAL_ATTRIBUTE.value_unset(),
    ]
    if with_waiting_call:
        waiting = waiting_call(status, pending, calls)
        if waiting is None:
            updates += [WAITING_CALL_ID_ATTRIBUTE.value_unset(), WAITING_TOOL_ATTRIBUTE.value_unset()]
        else:
            updates += [WAITING_CALL_ID_ATTRIBUTE.value_set(waiting[0]), WAITING_TOOL_ATTRIBUTE.value_set(waiting[1])]
    return updates


def fingerprint(updates: Sequence[SearchAttributeUpdate]) -> tuple[tuple[str, str], ...]:
    """A comparable form of updates, so the workflow skips upserts that would change nothing."""
    return tuple((u.key.name, repr(u.value)) for u in updates)
