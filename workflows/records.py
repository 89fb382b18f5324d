"""The records of the PostgreSQL projection: what the workflow's outbox queues (workflows/projection.py) and the
write activity stores, idempotently (activities/persistence/)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field

from workflows.model import (
    AgentSwitchRecord,
    AgentType,
    ChatMessage,
    ContentRef,
    ContractModel,
    PendingApproval,
    Plan,
    SessionCounters,
    SessionStatus,
    StreamChunk,
    TokenUsage,
)


class SessionRecord(ContractModel):
    """The session's summary row; upserted, newest `last_activity` wins."""

    kind: Literal["session"] = "session"
    session_id: str
    title: str | None
    current_agent: AgentType
    status: SessionStatus
    message_count: int
    created_at: datetime
    last_activity: datetime
    counters: SessionCounters


class MessageRecord(ContractModel):
    """One history message at its position; re-sent with the same id only when a human edited its arguments."""

    kind: Literal["message"] = "message"
    session_id: str
    seq: int
    message: ChatMessage


class ToolCallRecord(ContractModel):
    """A tool call and, once closed, its outcome (completed, failed, rejected, expired, refused, ...)."""

    kind: Literal["tool_call"] = "tool_call"
    session_id: str
    call_id: str
    tool_name: str
    arguments: dict[str, Any]
    agent: AgentType
    requested_at: datetime
    outcome: str | None = None
    result: str | ContentRef | None = None
    closed_at: datetime | None = None


class ApprovalRecord(ContractModel):
    """An approval as it is now; each distinct status is also kept as one row of its trail."""

    kind: Literal["approval"] = "approval"
    approval: PendingApproval


class AgentSwitchRow(ContractModel):
    kind: Literal["agent_switch"] = "agent_switch"
    session_id: str
    seq: int
    switch: AgentSwitchRecord


class LlmRequestRecord(ContractModel):
    kind: Literal["llm_request"] = "llm_request"
    session_id: str
    request_id: str
    purpose: Literal["agent", "classification"]
    agent: AgentType
    model: str
    ok: bool
    usage: TokenUsage = Field(default_factory=TokenUsage)
    latency_ms: int = 0
    finish_reason: str | None = None
    error: str | None = None
    created_at: datetime


class PlanRecord(ContractModel):
    """A plan with its subtasks as they are now; upserted by plan id."""

    kind: Literal["plan"] = "plan"
    session_id: str
    plan: Plan
    updated_at: datetime


class EventRecord(ContractModel):
    """One stream event, for the audit log."""

    kind: Literal["event"] = "event"
    session_id: str
    event_id: str
    chunk: StreamChunk
    created_at: datetime


ProjectionRecord = Annotated[
    SessionRecord
    | MessageRecord
    | ToolCallRecord
    | ApprovalRecord
    | AgentSwitchRow
    | LlmRequestRecord
    | PlanRecord
    | EventRecord,
    Field(discriminator="kind"),
]


class ProjectionBatch(ContractModel):
    """Records to write in one transaction. Every write is keyed, so a retried or replayed batch changes nothing."""

    records: list[ProjectionRecord]
    wait_for_database_seconds: float = Field(
        default=0.0,
        ge=0,
        description="While PostgreSQL is unreachable, keep trying this long (heartbeating) before giving up, so a "
        "backlog is written within about a second of the database's return.",
    )


class ProjectionWriteResult(ContractModel):
    """What one write did. A record PostgreSQL refuses is quarantined (and counted), never retried forever."""

    written: int = 0
    quarantined: int = 0
    truncated: int = Field(default=0, description="Text values cut to the projection's size limit.")
