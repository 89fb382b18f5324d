"""Projection records as PostgreSQL rows: keyed statements, and values made storable.

Every write is keyed by the ids the workflow gave (session id, (session, seq), (session, call id), (session,
request id) and (session, request id, status) for the approval trail, (session, event id), (session, LLM request
id)), so a retried or replayed batch never duplicates a row. Rows are inserted once and never deleted; an update
touches only what legitimately changes (see each statement).

Before anything reaches PostgreSQL every string of a record, JSON values included (keys and values, at any depth),
is made storable: PostgreSQL's `text` and `jsonb` both refuse NUL, so a NUL becomes the six visible characters
`\\u0000` (`NUL_ESCAPE`); a lone UTF-16 surrogate is not UTF-8 at all and becomes U+FFFD; a non-finite float inside
JSON becomes its name as a string. A single text value longer than `MAX_TEXT_BYTES` (UTF-8) is cut, ending with a
visible `TRUNCATION_MARKER` that names its full size.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from workflows.model import ContentRef, encodable_text
from workflows.records import (
    AgentSwitchRow,
    ApprovalRecord,
    EventRecord,
    LlmRequestRecord,
    MessageRecord,
    PlanRecord,
    ProjectionRecord,
    SessionRecord,
    ToolCallRecord,
)

# The projection's tables (the reader counts their rows per session).
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
# What a NUL (which neither `text` nor `jsonb` can hold) becomes: the six characters backslash, "u", "0000".
NUL_ESCAPE = "\\u0000"
# The largest single text value written (UTF-8 bytes, marker included); longer ones are cut and end with the marker.
MAX_TEXT_BYTES = 1024 * 1024
TRUNCATION_MARKER = "\n…[truncated by agent-runtime: {size} bytes in all]"
QUARANTINE_TABLE = "projection_quarantine"
# The error text kept with a quarantined record is cut to this many characters.
MAX_ERROR_CHARS = 4000

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
     status, created_at, expires_at, decided_at, decided_by, decision, feedback, grant_id, remembered_as, remind_at,
     escalate_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)
ON CONFLICT (session_id, request_id) DO UPDATE SET
    edited_arguments = EXCLUDED.edited_arguments,
    status = EXCLUDED.status,
    decided_at = EXCLUDED.decided_at,
    decided_by = EXCLUDED.decided_by,
    decision = EXCLUDED.decision,
    feedback = EXCLUDED.feedback,
    grant_id = EXCLUDED.grant_id,
    remembered_as = EXCLUDED.remembered_as
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


QUARANTINE_INSERT = """
INSERT INTO projection_quarantine (session_id, kind, record_key, digest, error, record)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (session_id, kind, record_key, digest) DO NOTHING
"""


class Sanitizer:
    """Makes strings storable (see the module docstring), counting the text values it cuts."""

    def __init__(self) -> None:
        self.truncated = 0

    def text(self, text: str, *, limit: int | None = MAX_TEXT_BYTES) -> str:
        if "\x00" in text:
            text = text.replace("\x00", NUL_ESCAPE)
        text = encodable_text(text)
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
class PreparedRecord:
    """One record as sanitized statement rows, or the reason it could not be turned into rows."""

    record: ProjectionRecord
    rows: list[tuple[str, tuple[Any, ...]]]
    truncated: int
    error: str | None = None

    def identity(self) -> tuple[str, str, str]:
        """(session id, kind, key): the quarantine table's key, made storable; "?" for what cannot be read."""
        parts = []
        for read in (lambda: session_of(self.record), lambda: self.record.kind, lambda: key_of(self.record)):
            try:
                parts.append(Sanitizer().text(str(read()), limit=None))
            except Exception:  # a record built without validation may lack anything
                parts.append("?")
        return parts[0], parts[1], parts[2]

    def document(self) -> Any:
        """The record as sanitized JSON, for the quarantine table."""
        try:
            dumped: Any = self.record.model_dump(mode="json")
        except Exception as err:  # whatever it is, the record must still be kept
            dumped = {"unserializable": describe_error(err), "repr": repr(self.record)}
        return Sanitizer().value(dumped)


def prepare(record: ProjectionRecord) -> PreparedRecord:
    sanitizer = Sanitizer()
    try:
        rows = [(sql, tuple(sanitizer.value(param) for param in row)) for sql, row in _rows(record)]
    except Exception as err:  # a record that cannot become rows is quarantined, not retried
        return PreparedRecord(record, [], 0, error=f"could not be prepared: {describe_error(err)}")
    return PreparedRecord(record, rows, sanitizer.truncated)


def session_of(record: ProjectionRecord) -> str:
    return record.approval.session_id if isinstance(record, ApprovalRecord) else record.session_id


def key_of(record: ProjectionRecord) -> str:
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


def statements(prepared: Iterable[PreparedRecord]) -> list[tuple[str, list[tuple[Any, ...]]]]:
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
                        a.grant_id,
                        a.remembered_as,
                        _utc(a.remind_at),
                        _utc(a.escalate_at),
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


def describe_error(err: BaseException) -> str:
    """The error's type and message, storable and loggable (asyncpg may quote the value it refused), and short."""
    text = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
    return Sanitizer().text(text[:MAX_ERROR_CHARS], limit=None)
