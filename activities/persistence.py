"""The PostgreSQL projection over asyncpg: the activity that writes it, and typed reads.

The workflow is the source of truth; PostgreSQL holds a projection of it for the read APIs, analytics and audit.
The workflow appends `ProjectionRecord`s to an outbox and a background flusher hands them over in order, as one
`ProjectionBatch` per call of the activity `persistence.record`. This module writes a batch in ONE
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

Before anything reaches PostgreSQL every string of a record, JSON values included (keys and values, at any
depth), is made storable: PostgreSQL's `text` and `jsonb` both refuse NUL, so a NUL becomes the six visible
characters `\\u0000` (`NUL_ESCAPE`); a lone UTF-16 surrogate (what JSON's "\\ud800" decodes to in Python) is not
UTF-8 at all and becomes U+FFFD; a non-finite float inside JSON becomes its name as a string ("NaN", "Infinity").
A single text value longer than `MAX_TEXT_BYTES` (UTF-8) is cut, ending with a visible `TRUNCATION_MARKER` that
names its full size; the write's result counts the values cut.

A batch is written in ONE transaction. If PostgreSQL refuses it for any reason other than being unreachable (a
value it will not store, a constraint, a value out of a column's range), the records are written again one by one,
each under a savepoint, and every record still refused is kept in `projection_quarantine` (with its key, the error
and the sanitized record as JSON; keyed too, so a resent batch adds nothing) and logged, instead of being retried
forever: one bad record must not hold up everything the session writes after it. A record that cannot even be
quarantined is logged, counted with the quarantined ones and dropped. `ProjectionWriteResult` says what happened.

A database that is down, refuses connections, drops them mid-write or is only briefly unable to take the write (a
deadlock, a cancelled statement, a read-only standby after a failover) raises ApplicationError type
`ProjectionUnavailable` (retryable): the workflow keeps the records and writes them later, and conversations go on
meanwhile. With `ProjectionBatch.wait_for_database_seconds`, the write first keeps trying about once a second
(`DATABASE_RETRY_SECONDS`, heartbeating) for up to that long, so a backlog lands within about a second of the
database's return rather than at the workflow's next retry; the workflow sends such a write once it knows the
database is down (workflows/projection.py).

The schema's migrations and the connection pool are in activities/postgres.py; the worker applies the migrations
before its first write if the database was down when it started, so a worker never needs PostgreSQL to be up to
serve conversations.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
from pydantic import BaseModel, Field
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.content import ContentStore
from activities.heartbeat import heartbeating
from activities.payload_drivers import ContentStoreUnavailable
from activities.postgres import apply_migrations
from workflows.model import (
    RECORD_PROJECTION_ACTIVITY,
    AgentSwitchRecord,
    AgentSwitchRow,
    ApprovalRecord,
    ChatMessage,
    ContentRef,
    EventRecord,
    LlmRequestRecord,
    MessageRecord,
    PendingApproval,
    Plan,
    PlanRecord,
    ProjectionBatch,
    ProjectionRecord,
    ProjectionWriteResult,
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
# The workflow's heartbeat timeout for a write is a few of these (workflows/projection.py).
HEARTBEAT_INTERVAL_SECONDS = 1.0
# How often a write with `wait_for_database_seconds` tries again while PostgreSQL is unreachable.
DATABASE_RETRY_SECONDS = 1.0

# What a NUL (which neither `text` nor `jsonb` can hold) becomes: the six characters backslash, "u", "0000".
NUL_ESCAPE = "\\u0000"
# The largest single text value written (UTF-8 bytes, marker included); longer ones are cut and end with the marker.
MAX_TEXT_BYTES = 1024 * 1024
TRUNCATION_MARKER = "\n…[truncated by agent-runtime: {size} bytes in all]"
# The error text kept with a quarantined record is cut to this many characters.
MAX_ERROR_CHARS = 4000
QUARANTINE_TABLE = "projection_quarantine"

# Errors meaning "the database is not reachable right now" (or cannot take this write right now), as opposed to a
# statement or a value it refuses. See `_unavailable` for the one exception.
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,  # refused, no socket file, unreachable host; TimeoutError is one too (asyncpg's command timeout)
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,  # "connection is closed" after a server restart
    asyncpg.exceptions.OperatorInterventionError,  # shutting down, starting up, admin shutdown, query cancelled
    asyncpg.exceptions.InsufficientResourcesError,  # too many connections, disk full
    asyncpg.exceptions.TransactionRollbackError,  # deadlock, serialization failure: the same write succeeds later
    asyncpg.exceptions.LockNotAvailableError,
    asyncpg.exceptions.ReadOnlySQLTransactionError,  # a standby, e.g. right after a failover
    ContentStoreUnavailable,  # referenced content could not be read yet (the store is this database, or S3)
)


def _unavailable(err: BaseException) -> bool:
    """Whether `err` means "try again later" rather than "PostgreSQL will never take this".

    asyncpg reports a value it cannot encode for a parameter (a number out of a column's range, text that is not
    UTF-8) as `asyncpg.exceptions._base.DataError`, an InterfaceError that is also a ValueError; it is bad input,
    and retrying it would wedge the session's outbox.
    """
    return isinstance(err, _UNAVAILABLE) and not (
        isinstance(err, asyncpg.InterfaceError) and isinstance(err, ValueError)
    )


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


_QUARANTINE_INSERT = """
INSERT INTO projection_quarantine (session_id, kind, record_key, digest, error, record)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (session_id, kind, record_key, digest) DO NOTHING
"""


class PersistenceActivities:
    """The projection writer, registered on the worker when a database is configured.

    Args:
        pool: From `create_pool` (JSONB codec installed).
        dsn: When given, migrations are applied before the first write unless `prepare()` already did.
        content: The content store: message texts, tool results and arguments stored by reference are written in
            full (up to the projection's size limit), so the projection reads like the conversation. Without one,
            a referenced text is written as its preview and a note naming its size and digest.
    """

    def __init__(self, pool: asyncpg.Pool, *, dsn: str | None = None, content: ContentStore | None = None) -> None:
        self._pool = pool
        self._content = content
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
    async def record(self, batch: ProjectionBatch) -> ProjectionWriteResult:
        """Write a batch of projection records in one transaction; idempotent (see the module docstring).

        Records PostgreSQL refuses are quarantined, not raised. With `batch.wait_for_database_seconds`, an
        unreachable database is tried again about once a second until that deadline.

        Raises:
            ApplicationError: Type `ProjectionUnavailable` (retryable) when PostgreSQL cannot be reached (in time).
        """
        # A regular-activity write beats, so a write lost with its worker is retried after a few seconds; sessions
        # started before writes were regular activities still call this as a local activity, which cannot beat.
        regular = activity.in_activity() and not activity.info().is_local
        beat = heartbeating(HEARTBEAT_INTERVAL_SECONDS) if regular else contextlib.nullcontext()
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + batch.wait_for_database_seconds
        attempts = 0
        async with beat:
            while True:
                attempts += 1
                try:
                    records = await self._resolved(batch.records)
                    await self._ensure_schema()
                    result = await self._write([_prepare(record) for record in records])
                except Exception as err:
                    if not _unavailable(err):
                        raise
                    if loop.time() + DATABASE_RETRY_SECONDS > deadline:
                        raise ApplicationError(
                            f"PostgreSQL unavailable: {_describe(err)}", type=PROJECTION_UNAVAILABLE_ERROR
                        ) from err
                    if attempts == 1:
                        log.info(
                            "PostgreSQL unavailable (%s); retrying every %g s for up to %g s",
                            _describe(err),
                            DATABASE_RETRY_SECONDS,
                            batch.wait_for_database_seconds,
                        )
                    await asyncio.sleep(DATABASE_RETRY_SECONDS)
                    continue
                if attempts > 1:
                    log.info(
                        "PostgreSQL answered again after %.1f s; wrote %d projection records",
                        loop.time() - started,
                        result.written,
                    )
                return result

    async def _resolved(self, records: list[ProjectionRecord]) -> list[ProjectionRecord]:
        """The records with referenced texts and argument values replaced by their content (see `content`)."""
        if self._content is None:
            return records
        resolved: list[ProjectionRecord] = []
        for record in records:
            match record:
                case MessageRecord():
                    message = await self._content.resolve_message(record.message)
                    resolved.append(record.model_copy(update={"message": message}))
                case ToolCallRecord():
                    result = await self._content.resolve_text(record.result)
                    arguments = await self._content.resolve_arguments(record.arguments)
                    resolved.append(record.model_copy(update={"result": result, "arguments": arguments}))
                case ApprovalRecord():
                    approval = await self._content.resolve_approval(record.approval)
                    resolved.append(record.model_copy(update={"approval": approval}))
                case _:
                    resolved.append(record)
        return resolved

    async def _write(self, prepared: list[_Prepared]) -> ProjectionWriteResult:
        truncated = sum(p.truncated for p in prepared)
        async with self._pool.acquire() as conn:
            if all(p.error is None for p in prepared):
                try:
                    async with conn.transaction():
                        for sql, rows in _statements(prepared):
                            await conn.executemany(sql, rows)
                    return ProjectionWriteResult(written=len(prepared), truncated=truncated)
                except Exception as err:
                    if _unavailable(err):
                        raise
                    log.warning(
                        "PostgreSQL refused a batch of %d projection records (%s); writing them one by one",
                        len(prepared),
                        _describe(err),
                    )
            written = quarantined = 0
            async with conn.transaction():
                for record in prepared:
                    error = record.error
                    if error is None:
                        try:
                            async with conn.transaction():  # a savepoint: a refused record leaves the rest intact
                                for sql, row in record.rows:
                                    await conn.execute(sql, *row)
                        except Exception as err:
                            if _unavailable(err):
                                raise
                            error = _describe(err)
                        else:
                            written += 1
                            continue
                    await _quarantine(conn, record, error)
                    quarantined += 1
        return ProjectionWriteResult(written=written, quarantined=quarantined, truncated=truncated)

    async def _ensure_schema(self) -> None:
        if self._schema_ready or self._dsn is None:
            return
        async with self._schema_lock:
            if not self._schema_ready:
                await apply_migrations(self._dsn)
                self._schema_ready = True


async def _quarantine(conn: asyncpg.Connection, record: _Prepared, error: str) -> None:
    """Keep a record PostgreSQL refused in `projection_quarantine` and log it; if even that fails, log and drop it.

    Raises only what `_unavailable` accepts (the whole write is then tried again later), never anything else: a
    record that cannot be kept must not wedge the session's outbox.
    """
    session_id, kind, key = record.identity()
    try:
        document = record.document()
        canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), default=str)
        digest = hashlib.sha256(canonical.encode()).hexdigest()
        async with conn.transaction():
            await conn.execute(_QUARANTINE_INSERT, session_id, kind, key, digest, error, document)
    except Exception as err:
        if _unavailable(err):
            raise
        log.error(
            "Projection record dropped: PostgreSQL refused it (%s) and it could not be quarantined either (%s); "
            "session %s, %s %s",
            error,
            _describe(err),
            session_id,
            kind,
            key,
        )
        return
    log.warning(
        "Projection record quarantined in %s: session %s, %s %s: %s", QUARANTINE_TABLE, session_id, kind, key, error
    )


def _describe(err: BaseException) -> str:
    """The error's type and message, storable and loggable (asyncpg may quote the value it refused), and short."""
    text = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
    return _Sanitizer().text(text[:MAX_ERROR_CHARS], limit=None)


# --- making values storable ---

# NUL, and UTF-16 surrogates (lone ones are not UTF-8; a pair split over two code points is joined again).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


class _Sanitizer:
    """Makes strings storable (see the module docstring), counting the text values it cuts."""

    def __init__(self) -> None:
        self.truncated = 0

    def text(self, text: str, *, limit: int | None = MAX_TEXT_BYTES) -> str:
        if _UNSTORABLE.search(text):
            if "\x00" in text:
                text = text.replace("\x00", NUL_ESCAPE)
            # UTF-16 round trip: a surrogate pair becomes its character again, a lone surrogate U+FFFD.
            text = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
        if limit is not None and len(text) * 4 > limit:  # only then can the UTF-8 form exceed the limit
            encoded = text.encode()
            if len(encoded) > limit:
                marker = TRUNCATION_MARKER.format(size=len(encoded))
                kept = encoded[: max(0, limit - len(marker.encode()))]
                text = kept.decode("utf-8", "ignore") + marker
                self.truncated += 1
        return text

    def value(self, value: Any) -> Any:
        """A query parameter or a JSON value, with every string in it (keys too) made storable."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {
                (self.text(key, limit=None) if isinstance(key, str) else key): self.value(item)
                for key, item in value.items()
            }
        if isinstance(value, list | tuple):
            return [self.value(item) for item in value]
        if isinstance(value, float) and not math.isfinite(value):
            return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
        return value


@dataclass
class _Prepared:
    """One record as sanitized statement rows, or the reason it could not be turned into rows."""

    record: ProjectionRecord
    rows: list[tuple[str, tuple[Any, ...]]]
    truncated: int
    error: str | None = None

    def identity(self) -> tuple[str, str, str]:
        """(session id, kind, key): the quarantine table's key, made storable; "?" for what cannot be read."""
        parts = []
        for read in (lambda: _session_of(self.record), lambda: self.record.kind, lambda: _key_of(self.record)):
            try:
                parts.append(_Sanitizer().text(str(read()), limit=None))
            except Exception:  # a record built without validation may lack anything
                parts.append("?")
        return parts[0], parts[1], parts[2]

    def document(self) -> Any:
        """The record as sanitized JSON, for the quarantine table."""
        try:
            dumped: Any = self.record.model_dump(mode="json")
        except Exception as err:  # whatever it is, the record must still be kept
            dumped = {"unserializable": _describe(err), "repr": repr(self.record)}
        return _Sanitizer().value(dumped)


def _prepare(record: ProjectionRecord) -> _Prepared:
    sanitizer = _Sanitizer()
    try:
        rows = [(sql, tuple(sanitizer.value(param) for param in row)) for sql, row in _rows(record)]
    except Exception as err:  # a record that cannot become rows is quarantined, not retried
        return _Prepared(record, [], 0, error=f"could not be prepared: {_describe(err)}")
    return _Prepared(record, rows, sanitizer.truncated)


def _session_of(record: ProjectionRecord) -> str:
    return record.approval.session_id if isinstance(record, ApprovalRecord) else record.session_id


def _key_of(record: ProjectionRecord) -> str:
    """What identifies the record's version within its session and kind (the quarantine table's key)."""
    match record:
        case SessionRecord():
            return record.last_activity.isoformat()
        case MessageRecord():
            return f"{record.seq}:{record.message.message_id}"
        case ToolCallRecord():
            return f"{record.call_id}:{record.outcome or 'open'}"
        case ApprovalRecord():
            return f"{record.approval.request_id}:{record.approval.status.value}"
        case AgentSwitchRow():
            return str(record.seq)
        case LlmRequestRecord():
            return record.request_id
        case PlanRecord():
            return f"{record.plan.plan_id}@{record.updated_at.isoformat()}"
        case EventRecord():
            return record.event_id
    raise TypeError(f"not a projection record: {type(record).__name__}")  # pragma: no cover - the union is closed


def _statements(prepared: Iterable[_Prepared]) -> list[tuple[str, list[tuple[Any, ...]]]]:
    """The batch as (statement, rows) pairs; rows of one statement keep the batch's order (later wins)."""
    rows: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    for record in prepared:
        for sql, row in record.rows:
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
                        _text(message.content),
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
                        _text(record.result),
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


def _text(value: str | ContentRef | None) -> str | None:
    """A text column's value. Content stored by reference (workflows/content.py) is not resolved here: the column
    holds its preview and a visible note naming its size and digest (the full text is in the content store)."""
    if isinstance(value, ContentRef):
        return f"{value.preview}…[stored by reference: {value.size} characters, sha256 {value.sha256}]"
    return value


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
