"""Typed reads of the PostgreSQL projection (for read APIs, operators and tests): every method returns contract
types (workflows/model.py, workflows/records.py). The runtime's own reads go to the workflows, the source of truth."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg
from pydantic import BaseModel, Field

from activities.persistence import PROJECTION_TABLES, QUARANTINE_TABLE
from workflows.model import AgentSwitchRecord, ChatMessage, PendingApproval, Plan, TokenUsage
from workflows.records import EventRecord, LlmRequestRecord, SessionRecord, ToolCallRecord


class SessionPage(BaseModel):
    sessions: list[SessionRecord]
    total: int


class ProjectionMetrics(BaseModel):
    """Metrics derived from the projection (spec §7), for one session or all of them."""

    sessions: int = 0
    messages: int = 0
    llm_requests: int = 0
    llm_failures: int = 0
    tokens: TokenUsage = Field(default_factory=TokenUsage)
    llm_latency_ms_avg: float | None = None
    tool_calls: dict[str, int] = Field(default_factory=dict, description="outcome -> count; 'open' for unanswered")
    approvals: dict[str, int] = Field(default_factory=dict, description="status -> count")
    approval_decisions: dict[str, int] = Field(default_factory=dict, description="decision -> count")
    approval_wait_seconds_avg: float | None = None
    agent_switches: dict[str, int] = Field(default_factory=dict, description='"<from>_to_<to>" -> count')


class QuarantinedRecord(BaseModel):
    """A projection record PostgreSQL refused, as kept in `projection_quarantine`."""

    session_id: str
    kind: str
    record_key: str
    error: str
    record: dict[str, Any] = Field(description="The record as JSON, every string made storable.")
    quarantined_at: datetime


class ProjectionReader:
    """Typed reads of the projection; every method returns contract types (workflows/model.py)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def list_sessions(self, *, limit: int = 50, offset: int = 0) -> SessionPage:
        """Sessions, most recently active first, with the total count."""
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT * FROM sessions ORDER BY last_activity DESC, session_id LIMIT $1 OFFSET $2", limit, offset
            )
            total = await conn.fetchval("SELECT count(*) FROM sessions")
        return SessionPage(sessions=[_session(row) for row in rows], total=total)

    async def get_session(self, session_id: str) -> SessionRecord | None:
        row = await self._pool.fetchrow("SELECT * FROM sessions WHERE session_id = $1", session_id)
        return _session(row) if row else None

    async def history(self, session_id: str) -> list[ChatMessage]:
        """The session's messages in order."""
        rows = await self._pool.fetch("SELECT * FROM messages WHERE session_id = $1 ORDER BY seq", session_id)
        return [ChatMessage.model_validate({**row, "tool_calls": row["tool_calls"] or []}) for row in rows]

    async def pending_approvals(self, session_id: str | None = None, *, limit: int = 1000) -> list[PendingApproval]:
        """Unresolved approvals, oldest first, of one session or of all."""
        rows = await self._pool.fetch(
            "SELECT * FROM approvals WHERE status = 'pending' AND ($1::text IS NULL OR session_id = $1) "
            "ORDER BY created_at, request_id LIMIT $2",
            session_id,
            limit,
        )
        return [_approval(row) for row in rows]

    async def approvals(self, session_id: str) -> list[PendingApproval]:
        """Every approval of a session as it is now, in request order."""
        rows = await self._pool.fetch(
            "SELECT * FROM approvals WHERE session_id = $1 ORDER BY created_at, request_id", session_id
        )
        return [_approval(row) for row in rows]

    async def approval_trail(self, session_id: str, request_id: str) -> list[PendingApproval]:
        """The approval as it was at each status it went through, in order."""
        rows = await self._pool.fetch(
            "SELECT snapshot FROM approval_events WHERE session_id = $1 AND request_id = $2 ORDER BY at, id",
            session_id,
            request_id,
        )
        return [PendingApproval.model_validate(row["snapshot"]) for row in rows]

    async def tool_calls(self, session_id: str) -> list[ToolCallRecord]:
        rows = await self._pool.fetch(
            "SELECT * FROM tool_calls WHERE session_id = $1 ORDER BY requested_at, recorded_at, call_id", session_id
        )
        return [ToolCallRecord.model_validate(dict(row)) for row in rows]

    async def switches(self, session_id: str) -> list[AgentSwitchRecord]:
        rows = await self._pool.fetch("SELECT * FROM agent_switches WHERE session_id = $1 ORDER BY seq", session_id)
        return [AgentSwitchRecord.model_validate(dict(row)) for row in rows]

    async def llm_requests(self, session_id: str) -> list[LlmRequestRecord]:
        rows = await self._pool.fetch(
            "SELECT * FROM llm_requests WHERE session_id = $1 ORDER BY created_at, recorded_at", session_id
        )
        return [
            LlmRequestRecord.model_validate(
                {**row, "usage": {key: row[key] for key in ("prompt_tokens", "completion_tokens", "total_tokens")}}
            )
            for row in rows
        ]

    async def plans(self, session_id: str) -> list[Plan]:
        rows = await self._pool.fetch(
            "SELECT plan FROM plans WHERE session_id = $1 ORDER BY created_at, plan_id", session_id
        )
        return [Plan.model_validate(row["plan"]) for row in rows]

    async def events(
        self, session_id: str | None = None, *, event_type: str | None = None, limit: int = 100
    ) -> list[EventRecord]:
        """The audit log: events in the order they were written, newest `limit` of them."""
        rows = await self._pool.fetch(
            "SELECT * FROM (SELECT * FROM events WHERE ($1::text IS NULL OR session_id = $1) "
            "AND ($2::text IS NULL OR type = $2) ORDER BY id DESC LIMIT $3) newest ORDER BY id",
            session_id,
            event_type,
            limit,
        )
        return [EventRecord.model_validate(dict(row)) for row in rows]

    async def quarantined(self, session_id: str | None = None, *, limit: int = 100) -> list[QuarantinedRecord]:
        """Records PostgreSQL refused, of one session or of all, oldest first."""
        rows = await self._pool.fetch(
            f"SELECT * FROM {QUARANTINE_TABLE} WHERE ($1::text IS NULL OR session_id = $1) ORDER BY id LIMIT $2",
            session_id,
            limit,
        )
        return [QuarantinedRecord.model_validate(dict(row)) for row in rows]

    async def metrics(self, session_id: str | None = None) -> ProjectionMetrics:
        """Aggregates over one session (or all): LLM usage, tool outcomes, approvals, switches."""
        where = "WHERE ($1::text IS NULL OR session_id = $1)"
        async with self._pool.acquire() as conn:
            sessions = await conn.fetchval(f"SELECT count(*) FROM sessions {where}", session_id)
            messages = await conn.fetchval(f"SELECT count(*) FROM messages {where}", session_id)
            llm = await conn.fetchrow(
                "SELECT count(*) AS n, count(*) FILTER (WHERE NOT ok) AS failures, "
                "coalesce(sum(prompt_tokens), 0) AS prompt, coalesce(sum(completion_tokens), 0) AS completion, "
                "coalesce(sum(total_tokens), 0) AS total, avg(latency_ms) FILTER (WHERE ok) AS latency "
                f"FROM llm_requests {where}",
                session_id,
            )
            outcomes = await conn.fetch(
                f"SELECT coalesce(outcome, 'open') AS k, count(*) AS n FROM tool_calls {where} GROUP BY 1", session_id
            )
            statuses = await conn.fetch(
                f"SELECT status AS k, count(*) AS n FROM approvals {where} GROUP BY 1", session_id
            )
            decisions = await conn.fetch(
                f"SELECT decision AS k, count(*) AS n FROM approvals {where} AND decision IS NOT NULL GROUP BY 1",
                session_id,
            )
            wait = await conn.fetchval(
                f"SELECT avg(extract(epoch FROM decided_at - created_at)) FROM approvals {where} "
                "AND decided_at IS NOT NULL",
                session_id,
            )
            switches = await conn.fetch(
                f"SELECT coalesce(from_agent, 'none') || '_to_' || to_agent AS k, count(*) AS n FROM agent_switches "
                f"{where} GROUP BY 1",
                session_id,
            )
        return ProjectionMetrics(
            sessions=sessions,
            messages=messages,
            llm_requests=llm["n"],
            llm_failures=llm["failures"],
            tokens=TokenUsage(
                prompt_tokens=llm["prompt"], completion_tokens=llm["completion"], total_tokens=llm["total"]
            ),
            llm_latency_ms_avg=float(llm["latency"]) if llm["latency"] is not None else None,
            tool_calls=_counts(outcomes),
            approvals=_counts(statuses),
            approval_decisions=_counts(decisions),
            approval_wait_seconds_avg=float(wait) if wait is not None else None,
            agent_switches=_counts(switches),
        )

    async def row_counts(self, session_id: str | None = None) -> dict[str, int]:
        """Rows per projection table, of one session or of all (the demo prints them)."""
        async with self._pool.acquire() as conn:
            return {
                table: await conn.fetchval(
                    f"SELECT count(*) FROM {table} WHERE ($1::text IS NULL OR session_id = $1)", session_id
                )
                for table in PROJECTION_TABLES
            }


def _counts(rows: Sequence[asyncpg.Record]) -> dict[str, int]:
    return {row["k"]: row["n"] for row in rows}


def _session(row: asyncpg.Record) -> SessionRecord:
    return SessionRecord.model_validate(dict(row))


def _approval(row: asyncpg.Record) -> PendingApproval:
    return PendingApproval.model_validate(dict(row))
