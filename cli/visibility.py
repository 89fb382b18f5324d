"""Visibility queries over sessions: the same text works in the Temporal Web UI's filter box and in the CLI."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from workflows.model import (
    CONVERSATION_WORKFLOW,
    OLDEST_PENDING_APPROVAL_ATTRIBUTE,
    PENDING_APPROVALS_ATTRIBUTE,
)


def sessions_query() -> str:
    """Every session of the runtime."""
    return f"WorkflowType = '{CONVERSATION_WORKFLOW}'"


def stuck_approvals_query(older_than: timedelta, *, now: datetime | None = None) -> str:
    """Running sessions with an approval pending for longer than `older_than`.

    Visibility has no relative time, so the cutoff is written as an absolute UTC timestamp.
    """
    cutoff = (now or datetime.now(UTC)) - older_than
    return (
        f"{sessions_query()} AND ExecutionStatus = 'Running' "
        f"AND {PENDING_APPROVALS_ATTRIBUTE.name} > 0 "
        f"AND {OLDEST_PENDING_APPROVAL_ATTRIBUTE.name} < '{cutoff.strftime('%Y-%m-%dT%H:%M:%SZ')}'"
    )
