"""The PostgreSQL projection over asyncpg: the activity that writes it, its migrations, and typed reads.

The workflow is the source of truth; PostgreSQL holds a projection of it for the read APIs, analytics and audit.
The workflow appends `ProjectionRecord`s to an outbox and a background flusher hands them over in order, as one
`ProjectionBatch` per call of the local activity `persistence.record`. This module writes a batch in ONE
transaction, and every write is keyed by the ids the workflow gave (session id, (session, seq), (session, call
id), (session, request id) and (session, request id, status) for the approval trail, (session, event id),
(session, LLM request id)), so an activity retry, a replayed batch or a flusher that resends after a timeout never
duplicates a row. Rows are inserted once and never deleted; an update touches only what legitimately changes:

- session summary: replaced only by a record whose `last_activity` is not older than the stored one;
- message: only an assistant message's `tool_calls`, when a human edited a call's arguments;
- tool call: `arguments` while the call is open (an edit), then its outcome once (`outcome IS NULL` guards it);
- approval: status moves forward only (pending -> approved | rejected | expired), and each distinct status adds
  one row to `approval_events` (the trail), with the approval as it was then;
- plan: replaced by a record whose `updated_at` is not older.

A database that is down, refuses connections or drops them mid-write raises ApplicationError type
`ProjectionUnavailable` (retryable): the workflow keeps the records and retries with backoff, and conversations
go on meanwhile. Other errors propagate unchanged (also retried: a projection record is never dropped).

Migrations are the numbered SQL files in `activities/migrations/`, applied in order under an advisory lock, each
in its own transaction, and recorded in `schema_migrations`. `agent-runtime migrate`, the dev stack and the
worker apply them at start; the worker also applies them before its first write if the database was down when
it started, so a worker never needs PostgreSQL to be up to serve conversations.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import asyncpg
from pydantic import BaseModel, Field
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.heartbeat import heartbeating
from workflows.model import (
    RECORD_PROJECTION_ACTIVITY,
    AgentSwitchRecord,
    AgentSwitchRow,
    ApprovalRecord,
    ChatMessage,
    EventRecord,
    LlmRequestRecord,
    MessageRecord,
    PendingApproval,
    Plan,
    PlanRecord,
    ProjectionBatch,
    ProjectionRecord,
    SessionRecord,
    TokenUsage,
    ToolCallRecord,
)

log = logging.getLogger("agent_runtime.persistence")

PROJECTION_UNAVAILABLE_ERROR = "ProjectionUnavailable"
PROJECTION_TABLES = (
    "sessions",
    "messages",
    "tool_calls",
    "approvals",
    "approval_events",
    "agent_switches",
    "llm_requests",
    "plans",
    "events",
)
# pg_advisory_lock key of the migration runner: the first 8 bytes of sha256("agent-runtime schema migrations").
MIGRATION_LOCK_KEY = int.from_bytes(hashlib.sha256(b"agent-runtime schema migrations").digest()[:8], "big", signed=True)
# A write is a local activity with a 10 s budget; connecting must fail well inside it when the server is gone.
CONNECT_TIMEOUT_SECONDS = 3.0
COMMAND_TIMEOUT_SECONDS = 5.0
# The workflow's heartbeat timeout for a write is a few of these (workflows/projection.py).
HEARTBEAT_INTERVAL_SECONDS = 1.0

# Errors meaning "the database is not reachable right now", as opposed to a bad statement.
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,  # refused, no socket file, unreachable host; TimeoutError is one too
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,  # "connection is closed" after a server restart
    asyncpg.exceptions.OperatorInterventionError,  # shutting down, starting up, admin shutdown
    asyncpg.exceptions.InsufficientResourcesError,  # too many connections, disk full
)


class MigrationError(RuntimeError):
    """The migrations folder is malformed or a migration failed (the message names it)."""


# --- migrations ---


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


_MIGRATION_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


def load_migrations() -> list[Migration]:
    """The migrations shipped with the package (`activities/migrations/NNNN_name.sql`), in version order.

    Raises:
        MigrationError: A file is misnamed or two share a version.
    """
    found: dict[int, Migration] = {}
    for entry in (resources.files("activities") / "migrations").iterdir():
        if not entry.name.endswith(".sql"):
            continue
        match = _MIGRATION_FILE.match(entry.name)
        if match is None:
            raise MigrationError(f"migration file {entry.name!r} is not named NNNN_lowercase_name.sql")
        version = int(match.group(1))
        if version in found:
            raise MigrationError(f"two migrations have version {version}: {found[version].name}, {match.group(2)}")
        found[version] = Migration(version, match.group(2), entry.read_text(encoding="utf-8"))
    return [found[version] for version in sorted(found)]


async def apply_migrations(dsn: str) -> list[Migration]:
    """Bring the database's schema up to date; safe to run concurrently and repeatedly.

    Args:
        dsn: PostgreSQL DSN (any server 14+).

    Returns:
        The migrations applied now (empty when the schema was current).

    Raises:
        MigrationError: A migration failed; the ones before it stay applied.
        OSError, asyncpg.PostgresError: The database is not reachable.
    """
    migrations = load_migrations()
    conn = await asyncpg.connect(dsn, timeout=CONNECT_TIMEOUT_SECONDS)
    try:
        # Session-level lock: a second runner (another worker starting) waits here, then finds nothing to do.
        await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
        try:
            await conn.execute(
                """
                CREATE TABLE IF NOT EXISTS schema_migrations (
                    version     integer     PRIMARY KEY,
                    name        text        NOT NULL,
                    checksum    text        NOT NULL,
                    applied_at  timestamptz NOT NULL DEFAULT now()
                )
                """
            )
            applied = {row["version"]: row["checksum"] for row in await conn.fetch("SELECT * FROM schema_migrations")}
            done: list[Migration] = []
            for migration in migrations:
                if migration.version in applied:
                    if applied[migration.version] != migration.checksum:
                        log.warning(
                            "Migration %04d_%s changed after it was applied; edit the schema with a new migration",
                            migration.version,
                            migration.name,
                        )
                    continue
                try:
                    async with conn.transaction():
                        await conn.execute(migration.sql)
                        await conn.execute(
                            "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                            migration.version,
                            migration.name,
                            migration.checksum,
                        )
                except asyncpg.PostgresError as err:
                    raise MigrationError(f"migration {migration.version:04d}_{migration.name} failed: {err}") from err
                log.info("Applied migration %04d_%s", migration.version, migration.name)
                done.append(migration)
            return done
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
    finally:
        await conn.close()


async def create_pool(dsn: str, *, max_size: int = 5) -> asyncpg.Pool:
    """A connection pool that opens connections only when needed, so it can be created while PostgreSQL is down.

    JSONB columns read and write Python values (dicts, lists) on its connections.
    """
    return await asyncpg.create_pool(
        dsn,
        min_size=0,
        max_size=max_size,
        timeout=CONNECT_TIMEOUT_SECONDS,
        command_timeout=COMMAND_TIMEOUT_SECONDS,
        init=_init_connection,
    )


async def close_pool(pool: asyncpg.Pool, timeout: float = 10.0) -> None:
    """Close the pool, waiting `timeout` seconds for connections in use before terminating them."""
    try:
        await asyncio.wait_for(pool.close(), timeout)
    except TimeoutError:
        pool.terminate()


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=_json, decoder=json.loads, schema="pg_catalog")


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


# --- writing ---

_SESSION_UPSERT = """
INSERT INTO sessions AS s (session_id, title, current_agent, status, message_count, created_at, last_activity, counters)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (session_id) DO UPDATE SET
    title = COALESCE(EXCLUDED.title, s.title),
    current_agent = EXCLUDED.current_agent,
    status = EXCLUDED.status,
    message_count = EXCLUDED.message_count,
    created_at = LEAST(s.created_at, EXCLUDED.created_at),
    last_activity = EXCLUDED.last_activity,
    counters = EXCLUDED.counters
WHERE EXCLUDED.last_activity >= s.last_activity
  AND (s.title, s.current_agent, s.status, s.message_count, s.created_at, s.last_activity, s.counters)
      IS DISTINCT FROM
      (COALESCE(EXCLUDED.title, s.title), EXCLUDED.current_agent, EXCLUDED.status, EXCLUDED.message_count,
       LEAST(s.created_at, EXCLUDED.created_at), EXCLUDED.last_activity, EXCLUDED.counters)
"""

_MESSAGE_INSERT = """
INSERT INTO messages AS m
    (session_id, seq, message_id, role, content, name, tool_call_id, tool_calls, agent, created_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
ON CONFLICT (session_id, seq) DO UPDATE SET tool_calls = EXCLUDED.tool_calls
WHERE m.message_id = EXCLUDED.message_id AND m.tool_calls IS DISTINCT FROM EXCLUDED.tool_calls
"""

_TOOL_CALL_UPSERT = """
INSERT INTO tool_calls AS t
    (session_id, call_id, tool_name, original_arguments, arguments, agent, requested_at, outcome, result, closed_at)
VALUES ($1, $2, $3, $4, $4, $5, $6, $7, $8, $9)
ON CONFLICT (session_id, call_id) DO UPDATE SET
    arguments = EXCLUDED.arguments,
    outcome = EXCLUDED.outcome,
    result = EXCLUDED.result,
    closed_at = EXCLUDED.closed_at
WHERE t.outcome IS NULL
  AND (t.arguments, t.outcome, t.result, t.closed_at)
      IS DISTINCT FROM (EXCLUDED.arguments, EXCLUDED.outcome, EXCLUDED.result, EXCLUDED.closed_at)
"""

_APPROVAL_UPSERT = """
INSERT INTO approvals AS a
    (session_id, request_id, request_type, call_id, tool_name, subject, arguments, edited_arguments, reason, agent,
     status, created_at, expires_at, decided_at, decided_by, decision, feedback)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)
ON CONFLICT (session_id, request_id) DO UPDATE SET
    edited_arguments = EXCLUDED.edited_arguments,
    status = EXCLUDED.status,
    decided_at = EXCLUDED.decided_at,
    decided_by = EXCLUDED.decided_by,
    decision = EXCLUDED.decision,
    feedback = EXCLUDED.feedback
WHERE a.status = 'pending' AND EXCLUDED.status <> 'pending'
"""

_APPROVAL_EVENT_INSERT = """
INSERT INTO approval_events
    (session_id, request_id, status, at, decided_by, decision, feedback, edited_arguments, snapshot)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (session_id, request_id, status) DO NOTHING
"""

_SWITCH_INSERT = """
INSERT INTO agent_switches (session_id, seq, from_agent, to_agent, reason, confidence, source, switched_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (session_id, seq) DO NOTHING
"""

_LLM_REQUEST_INSERT = """
INSERT INTO llm_requests
    (session_id, request_id, purpose, agent, model, ok, prompt_tokens, completion_tokens, total_tokens, latency_ms,
     finish_reason, error, created_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
ON CONFLICT (session_id, request_id) DO NOTHING
"""

_PLAN_UPSERT = """
INSERT INTO plans AS p (session_id, plan_id, title, status, call_id, approval_request_id, plan, created_at, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (session_id, plan_id) DO UPDATE SET
    title = EXCLUDED.title,
    status = EXCLUDED.status,
    plan = EXCLUDED.plan,
    updated_at = EXCLUDED.updated_at
WHERE EXCLUDED.updated_at >= p.updated_at AND (p.status, p.plan) IS DISTINCT FROM (EXCLUDED.status, EXCLUDED.plan)
"""

_EVENT_INSERT = """
INSERT INTO events (session_id, event_id, type, chunk, created_at)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (session_id, event_id) DO NOTHING
"""


class PersistenceActivities:
    """The projection writer, registered on the worker when a database is configured.

    Args:
        pool: From `create_pool` (JSONB codec installed).
        dsn: When given, migrations are applied before the first write unless `prepare()` already did.
    """

    def __init__(self, pool: asyncpg.Pool, *, dsn: str | None = None) -> None:
        self._pool = pool
        self._dsn = dsn
        self._schema_ready = dsn is None
        self._schema_lock = asyncio.Lock()

    async def prepare(self) -> bool:
        """Apply the migrations now; returns False (and logs) when the database is not reachable yet."""
        try:
            await self._ensure_schema()
        except _UNAVAILABLE as err:
            log.warning("PostgreSQL is not reachable (%s); the projection catches up once it is", _describe(err))
            return False
        return True

    @activity.defn(name=RECORD_PROJECTION_ACTIVITY)
    async def record(self, batch: ProjectionBatch) -> None:
        """Write a batch of projection records in one transaction; idempotent (see the module docstring).

        Raises:
            ApplicationError: Type `ProjectionUnavailable` (retryable) when PostgreSQL cannot be reached.
        """
        statements = _statements(batch.records)
        # A regular-activity write beats, so a write lost with its worker is retried after a few seconds; sessions
        # started before writes were regular activities still call this as a local activity, which cannot beat.
        regular = activity.in_activity() and not activity.info().is_local
        beat = heartbeating(HEARTBEAT_INTERVAL_SECONDS) if regular else contextlib.nullcontext()
        try:
            async with beat:
                await self._ensure_schema()
                async with self._pool.acquire() as conn, conn.transaction():
                    for sql, rows in statements:
                        await conn.executemany(sql, rows)
        except _UNAVAILABLE as err:
            raise ApplicationError(
                f"PostgreSQL unavailable: {_describe(err)}", type=PROJECTION_UNAVAILABLE_ERROR
            ) from err

    async def _ensure_schema(self) -> None:
        if self._schema_ready or self._dsn is None:
            return
        async with self._schema_lock:
            if not self._schema_ready:
                await apply_migrations(self._dsn)
                self._schema_ready = True


def _describe(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__


def _statements(records: Iterable[ProjectionRecord]) -> list[tuple[str, list[tuple[Any, ...]]]]:
    """The batch as (statement, rows) pairs; rows of one statement keep the batch's order (later wins)."""
    rows: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    for record in records:
        for sql, row in _rows(record):
            rows[sql].append(row)
    return list(rows.items())


def _rows(record: ProjectionRecord) -> list[tuple[str, tuple[Any, ...]]]:
    match record:
        case SessionRecord():
            return [
                (
                    _SESSION_UPSERT,
                    (
                        record.session_id,
                        record.title,
                        record.current_agent.value,
                        record.status.value,
                        record.message_count,
                        _utc(record.created_at),
                        _utc(record.last_activity),
                        record.counters.model_dump(mode="json"),
                    ),
                )
            ]
        case MessageRecord():
            message = record.message
            return [
                (
                    _MESSAGE_INSERT,
                    (
                        record.session_id,
                        record.seq,
                        message.message_id,
                        message.role,
                        message.content,
                        message.name,
                        message.tool_call_id,
                        [call.model_dump(mode="json") for call in message.tool_calls] or None,
                        message.agent.value if message.agent else None,
                        _utc(message.created_at),
                    ),
                )
            ]
        case ToolCallRecord():
            return [
                (
                    _TOOL_CALL_UPSERT,
                    (
                        record.session_id,
                        record.call_id,
                        record.tool_name,
                        _jsonable(record.arguments),
                        record.agent.value,
                        _utc(record.requested_at),
                        record.outcome,
                        record.result,
                        _utc(record.closed_at),
                    ),
                )
            ]
        case ApprovalRecord():
            a = record.approval
            decision = a.decision.value if a.decision else None
            edited = _jsonable(a.edited_arguments) if a.edited_arguments is not None else None
            return [
                (
                    _APPROVAL_UPSERT,
                    (
                        a.session_id,
                        a.request_id,
                        a.request_type,
                        a.call_id,
                        a.tool_name,
                        a.subject,
                        _jsonable(a.arguments),
                        edited,
                        a.reason,
                        a.agent.value,
                        a.status.value,
                        _utc(a.created_at),
                        _utc(a.expires_at),
                        _utc(a.decided_at),
                        a.decided_by,
                        decision,
                        a.feedback,
                    ),
                ),
                (
                    _APPROVAL_EVENT_INSERT,
                    (
                        a.session_id,
                        a.request_id,
                        a.status.value,
                        _utc(a.decided_at or a.created_at),
                        a.decided_by,
                        decision,
                        a.feedback,
                        edited,
                        a.model_dump(mode="json"),
                    ),
                ),
            ]
        case AgentSwitchRow():
            s = record.switch
            return [
                (
                    _SWITCH_INSERT,
                    (
                        record.session_id,
                        record.seq,
                        s.from_agent.value if s.from_agent else None,
                        s.to_agent.value,
                        s.reason,
                        s.confidence,
                        s.source,
                        _utc(s.switched_at),
                    ),
                )
            ]
        case LlmRequestRecord():
            return [
                (
                    _LLM_REQUEST_INSERT,
                    (
                        record.session_id,
                        record.request_id,
                        record.purpose,
                        record.agent.value,
                        record.model,
                        record.ok,
                        record.usage.prompt_tokens,
                        record.usage.completion_tokens,
                        record.usage.total_tokens,
                        record.latency_ms,
                        record.finish_reason,
                        record.error,
                        _utc(record.created_at),
                    ),
                )
            ]
        case PlanRecord():
            plan = record.plan
            return [
                (
                    _PLAN_UPSERT,
                    (
                        record.session_id,
                        plan.plan_id,
                        plan.title,
                        plan.status.value,
                        plan.call_id,
                        plan.approval_request_id,
                        plan.model_dump(mode="json"),
                        _utc(plan.created_at),
                        _utc(record.updated_at),
                    ),
                )
            ]
        case EventRecord():
            return [
                (
                    _EVENT_INSERT,
                    (
                        record.session_id,
                        record.event_id,
                        record.chunk.type.value,
                        record.chunk.model_dump(mode="json", exclude_none=True),
                        _utc(record.created_at),
                    ),
                )
            ]
    raise TypeError(f"not a projection record: {type(record).__name__}")  # pragma: no cover - the union is closed


def _utc(value: datetime | None) -> datetime | None:
    """Workflow time is UTC; a naive value is taken as UTC rather than as the server's local time."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def _jsonable(value: dict[str, Any]) -> Any:
    """Tool arguments are JSON from the LLM or a human, but make sure (a datetime would fail the encoder)."""
    return json.loads(json.dumps(value, default=str))


# --- reading (for the read APIs, the CLI and the tests) ---


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
