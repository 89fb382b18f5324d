"""The projection's write activity: one batch of records, in one transaction, over asyncpg.

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

import asyncpg
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.content import ContentStore
from activities.heartbeat import heartbeating
from activities.payload_drivers import ContentStoreUnavailable
from activities.persistence.rows import (
    QUARANTINE_INSERT,
    QUARANTINE_TABLE,
    PreparedRecord,
    describe_error,
    prepare,
    statements,
)
from activities.postgres import apply_migrations
from workflows.model import RECORD_PROJECTION_ACTIVITY
from workflows.records import (
    ApprovalRecord,
    MessageRecord,
    ProjectionBatch,
    ProjectionRecord,
    ProjectionWriteResult,
    ToolCallRecord,
)

log = logging.getLogger("agent_runtime.persistence")

PROJECTION_UNAVAILABLE_ERROR = "ProjectionUnavailable"
# The workflow's heartbeat timeout for a write is a few of these (workflows/projection.py).
HEARTBEAT_INTERVAL_SECONDS = 1.0
# How often a write with `wait_for_database_seconds` tries again while PostgreSQL is unreachable.
DATABASE_RETRY_SECONDS = 1.0


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
            log.warning("PostgreSQL is not reachable (%s); the projection catches up once it is", describe_error(err))
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
                    result = await self._write([prepare(record) for record in records])
                except Exception as err:
                    if not _unavailable(err):
                        raise
                    if loop.time() + DATABASE_RETRY_SECONDS > deadline:
                        raise ApplicationError(
                            f"PostgreSQL unavailable: {describe_error(err)}", type=PROJECTION_UNAVAILABLE_ERROR
                        ) from err
                    if attempts == 1:
                        log.info(
                            "PostgreSQL unavailable (%s); retrying every %g s for up to %g s",
                            describe_error(err),
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

    async def _write(self, prepared: list[PreparedRecord]) -> ProjectionWriteResult:
        truncated = sum(p.truncated for p in prepared)
        async with self._pool.acquire() as conn:
            if all(p.error is None for p in prepared):
                try:
                    async with conn.transaction():
                        for sql, rows in statements(prepared):
                            await conn.executemany(sql, rows)
                    return ProjectionWriteResult(written=len(prepared), truncated=truncated)
                except Exception as err:
                    if _unavailable(err):
                        raise
                    log.warning(
                        "PostgreSQL refused a batch of %d projection records (%s); writing them one by one",
                        len(prepared),
                        describe_error(err),
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
                            error = describe_error(err)
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


async def _quarantine(conn: asyncpg.Connection, record: PreparedRecord, error: str) -> None:
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
            await conn.execute(QUARANTINE_INSERT, session_id, kind, key, digest, error, document)
    except Exception as err:
        if _unavailable(err):
            raise
        log.error(
            "Projection record dropped: PostgreSQL refused it (%s) and it could not be quarantined either (%s); "
            "session %s, %s %s",
            error,
            describe_error(err),
            session_id,
            kind,
            key,
        )
        return
    log.warning(
        "Projection record quarantined in %s: session %s, %s %s: %s", QUARANTINE_TABLE, session_id, kind, key, error
    )
