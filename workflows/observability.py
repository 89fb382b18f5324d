"""What an operator sees in the Temporal Web UI: the session's current details and its search attributes.

Pure functions of the session's state, so the workflow only decides when to publish them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime

from temporalio.common import SearchAttributeUpdate

from workflows.model import (
    CURRENT_AGENT_ATTRIBUTE,
    OLDEST_PENDING_APPROVAL_ATTRIBUTE,
    PENDING_APPROVALS_ATTRIBUTE,
    PENDING_TOOLS_ATTRIBUTE,
    SESSION_STATUS_ATTRIBUTE,
    AgentType,
    CallStatus,
    OutstandingCall,
    PendingApproval,
    SessionStatus,
)

ARGUMENTS_SUMMARY_CHARS = 120


def summarize_arguments(arguments: dict[str, object]) -> str:
    """A one-line view of a call's arguments, cut short: enough to recognise `dart analyze` or a file path."""
    text = ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in arguments.items())
    return text if len(text) <= ARGUMENTS_SUMMARY_CHARS else text[: ARGUMENTS_SUMMARY_CHARS - 1] + "…"


def _time(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "never"


def current_details(
    status: SessionStatus,
    agent: AgentType,
    pending: Sequence[PendingApproval],
    calls: Sequence[OutstandingCall],
    queued_inputs: int,
) -> str:
    """Markdown for the Web UI's "current details": what the session waits for, since when, until when."""
    lines = [f"**Session {status.value.replace('_', ' ')}** · agent `{agent.value}`"]
    for approval in pending:
        lines.append(
            f"- ⏸ approval for `{approval.tool_name}` ({summarize_arguments(approval.arguments)}) "
            f"since {_time(approval.created_at)}, expires {_time(approval.expires_at)}; "
            f"call id `{approval.call_id}`"
        )
    for call in calls:
        if call.status is CallStatus.AWAITING_RESULT:
            lines.append(
                f"- ⏳ IDE result for `{call.tool_name}` since {_time(call.since)}, "
                f"lease ends {_time(call.lease_expires_at)}; call id `{call.call_id}`"
            )
    if queued_inputs:
        lines.append(f"- {queued_inputs} input(s) queued behind the current turn")
    return "\n".join(lines)


def search_attribute_updates(
    status: SessionStatus, agent: AgentType, pending: Sequence[PendingApproval]
) -> list[SearchAttributeUpdate]:
    """The attribute values for this state; the oldest pending approval is unset when nothing waits."""
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
    return updates


def fingerprint(updates: Sequence[SearchAttributeUpdate]) -> tuple[tuple[str, str], ...]:
    """A comparable form of updates, so the workflow skips upserts that would change nothing."""
    return tuple((u.key.name, repr(u.value)) for u in updates)
