"""Plain-text rendering for the operator commands: aligned tables, short durations, one session's story."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from client.inbox import InboxEntry, SessionSummary
from workflows.content import text_or_preview
from workflows.model import (
    ChatMessage,
    SessionState,
    workflow_id_for,
)
from workflows.observability import approval_commands, summarize_arguments

MESSAGE_CHARS = 300
# A table row must fit a terminal; the JSON output has the arguments in full.
TABLE_ARGUMENTS_CHARS = 60


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell, two spaces apart, no trailing blanks."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=False)]
    return "\n".join(
        "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=False)).rstrip()
        for row in (headers, *rows)
    )


def duration(span: timedelta) -> str:
    """`42s`, `17m`, `3h05m`, `2d04h`: precise enough to triage, short enough for a column."""
    seconds = max(0, int(span.total_seconds()))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def age(later: datetime, earlier: datetime) -> str:
    return duration(later - earlier)


def _clip(text: str, full: bool) -> str:
    text = " ".join(text.split()) if not full else text
    return text if full or len(text) <= MESSAGE_CHARS else text[: MESSAGE_CHARS - 1] + "…"


def _when(moment: datetime | None, now: datetime) -> str:
    return f"{moment.strftime('%Y-%m-%d %H:%M:%S UTC')} ({age(now, moment)} ago)" if moment else "?"


def render_session(state: SessionState, history: Sequence[ChatMessage], *, now: datetime, full: bool = False) -> str:
    """What `agent-runtime show` prints: the state, what the session waits for, then the conversation."""
    lines = [
        f"Session {state.session_id} (run {state.run})",
        f"  status {state.status.value} · agent {state.current_agent.value} · {state.message_count} message(s)"
        f" · {state.queued_inputs} queued input(s)",
        f"  created {_when(state.created_at, now)} · last activity {_when(state.last_activity, now)}",
    ]
    if state.pending_approvals:
        lines += ["", "Pending approvals:"]
        rows = [
            [
                a.call_id,
                a.tool_name,
                summarize_arguments(a.arguments),
                age(now, a.created_at),
                "never" if a.expires_at is None else a.expires_at.strftime("%Y-%m-%d %H:%M:%S UTC"),
            ]
            for a in state.pending_approvals
        ]
        lines += ["  " + line for line in table(["CALL ID", "TOOL", "ARGUMENTS", "AGE", "EXPIRES"], rows).splitlines()]
    if state.outstanding_calls:
        lines += ["", "Open tool calls:"]
        rows = [
            [
                c.call_id,
                c.tool_name,
                c.status.value,
                age(now, c.since),
                c.lease_expires_at.strftime("%Y-%m-%d %H:%M:%S UTC") if c.lease_expires_at else "-",
            ]
            for c in state.outstanding_calls
        ]
        lines += ["  " + line for line in table(["CALL ID", "TOOL", "STATUS", "AGE", "LEASE ENDS"], rows).splitlines()]
    lines += ["", "History:"]
    for index, message in enumerate(history, start=1):
        who = message.role + (f" [{message.agent.value}]" if message.agent else "")
        if message.role == "tool":
            who += f" {message.tool_call_id}"
        text = _clip(text_or_preview(message.content), full) if message.content else ""
        lines.append(f"  #{index} {who}: {text}".rstrip())
        for call in message.tool_calls:
            lines.append(f"       → {call.name}({summarize_arguments(call.arguments)})  {call.id}")
    if not history:
        lines.append("  (empty)")
    return "\n".join(lines)


def _short(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[: chars - 1] + "…"


def render_inbox(entries: Sequence[InboxEntry], now: datetime) -> str:
    """The `approvals list` table, oldest first, with a count of approvals and sessions."""
    if not entries:
        return "No pending approvals."
    rows = []
    for entry in entries:
        since = age(now, entry.since) if entry.since else "?"
        approval = entry.approval
        if approval is None:
            tools = ",".join(entry.pending_tools) or "?"
            rows.append(
                [since, entry.session_id, tools, "(session not answering: is a worker running?)", "?", "?", "?"]
            )
            continue
        if approval.expires_at is None:
            expires = "never"
        else:
            expires = "overdue" if approval.expires_at <= now else f"in {age(approval.expires_at, now)}"
        if approval.escalate_at is not None and approval.escalate_at <= now:
            expires += " (escalated)"
        arguments = _short(summarize_arguments(approval.arguments), TABLE_ARGUMENTS_CHARS)
        rows.append(
            [since, entry.session_id, approval.tool_name, arguments, approval.agent.value, approval.call_id, expires]
        )
    sessions = len({e.session_id for e in entries})
    headers = ["AGE", "SESSION", "TOOL", "ARGUMENTS", "AGENT", "CALL ID", "EXPIRES"]
    oldest = next((e for e in entries if e.approval is not None), None)
    hint = ""
    if oldest is not None and oldest.approval is not None:
        commands = approval_commands(oldest.session_id, oldest.approval)
        hint = f"\nDecide the oldest: {commands.approve}\n               or: {commands.reject}"
    return f"{table(headers, rows)}\n\n{len(entries)} pending approval(s) in {sessions} session(s){hint}"


def render_sessions(summaries: Sequence[SessionSummary], now: datetime) -> str:
    if not summaries:
        return "No running sessions."
    rows = [
        [
            s.session_id,
            s.status or "?",
            s.agent or "?",
            "?" if s.pending_approvals is None else str(s.pending_approvals),
            str(s.state.message_count) if s.state else "?",
            str(s.state.run) if s.state else "?",
            f"{age(now, s.state.last_activity)} ago" if s.state and s.state.last_activity else "?",
            f"{age(now, s.started)} ago" if s.started else "?",
        ]
        for s in summaries
    ]
    return table(["SESSION", "STATUS", "AGENT", "PENDING", "MESSAGES", "RUN", "LAST ACTIVITY", "STARTED"], rows)


def session_summary_json(summary: SessionSummary) -> dict[str, Any]:
    state = summary.state
    return {
        "session_id": summary.session_id,
        "workflow_id": workflow_id_for(summary.session_id),
        "status": summary.status,
        "agent": summary.agent,
        "pending_approvals": summary.pending_approvals,
        "message_count": state.message_count if state else None,
        "run": state.run if state else None,
        "last_activity": state.last_activity.isoformat() if state and state.last_activity else None,
        "started": summary.started.isoformat() if summary.started else None,
        "answered": state is not None,
    }
