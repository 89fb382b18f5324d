"""The workflow's outbox for the PostgreSQL projection.

The workflow is the source of truth; PostgreSQL holds an append-only projection for read APIs and audit. Records
are queued here as the conversation changes, and a background task drains them through an activity. When the
database is down the records stay queued, so a conversation never waits on the database; the queue travels across
continue-as-new, so nothing is lost unless the backlog overflows (below). Every record is keyed (message id, call
id, ...), so a retried or replayed write changes nothing.

The write is a regular activity: a local one runs inside the workflow task, so a slow or locked database held up
every decision and tool call of the session for up to the write timeout (tests/test_durability.py measured 8-10 s).
Sessions that started with local-activity writes keep them when replayed (the `projection-regular-activity` patch).

Runs that start with the `projection-bounded-outbox` patch (older runs keep the unbounded flusher when replayed):

- writes go in batches of at most `MAX_BATCH_RECORDS` records and about `MAX_BATCH_BYTES` (`approx_size`, a cheap
  deterministic estimate; a single larger record goes alone);
- the backlog holds at most `MAX_BACKLOG_RECORDS`; beyond it the oldest records not being written are dropped,
  with a warning, and counted in `dropped` (and in the session's counters when given);
- records PostgreSQL refuses are quarantined by the activity, never retried; their count is kept in `quarantined`;
- once a write fails (the database is marked down, so wait points stop waiting for it), the next write is a long
  one: the activity itself keeps trying about once a second for up to `DATABASE_WAIT`, heartbeating, so the
  backlog is written about a second after PostgreSQL is back, and a long outage costs one activity per
  `DATABASE_WAIT` in the history instead of a failed attempt per retry. If even that write fails, the flusher
  pauses on a short timer (`DOWN_PAUSE_INITIAL`, growing to `DOWN_PAUSE_MAX` only while writes fail quickly) and
  sends another;
- in lean runs (started with the `lean-turns` patch), records are written when the conversation
  reaches a wait point (`flush()`: it waits for an input, or announces a call) or once `MAX_BATCH_RECORDS` are
  queued, not as each is added: one write per turn instead of one per step, each a workflow task and three history
  events; a reader of PostgreSQL sees a turn once the conversation waits, and the workflow's queries always see
  it at once;
- `quiesce()` stops the flusher before continue-as-new: no new write starts, the one in flight is cancelled (it
  heartbeats, so it stops within seconds; if it completed first, its result counts) and awaited, so no activity
  result can arrive while the workflow continues as new (that failed the task with UNHANDLED_COMMAND). Records
  not written stay in `pending` and travel to the next run.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import FailureError

from workflows.model import (
    RECORD_PROJECTION_ACTIVITY,
    AgentSwitchRecord,
    AgentType,
    ChatMessage,
    ContentRef,
    PendingApproval,
    Plan,
    SessionCounters,
    StreamChunk,
    ToolCall,
)
from workflows.patches import has_change
from workflows.records import (
    AgentSwitchRow,
    ApprovalRecord,
    EventRecord,
    LlmRequestRecord,
    MessageRecord,
    PlanRecord,
    ProjectionBatch,
    ProjectionRecord,
    ProjectionWriteResult,
    ToolCallRecord,
)
from workflows.tracing import SessionTraces

# Sessions started before the projection existed replay without it (their histories have no marker).
PROJECTION_PATCH = "postgres-projection"
REGULAR_ACTIVITY_PATCH = "projection-regular-activity"
EMIT_WAIT = timedelta(seconds=1)
# The write beats every second, so a write lost with its worker is retried after this rather than WRITE_TIMEOUT.
WRITE_HEARTBEAT_TIMEOUT = timedelta(seconds=3)
WRITE_TIMEOUT = timedelta(seconds=10)
# Short retries inside one write; longer outages are bridged by the flusher's own backoff below.
WRITE_RETRY = RetryPolicy(maximum_attempts=2, initial_interval=timedelta(milliseconds=200))
RETRY_INITIAL = timedelta(seconds=2)
RETRY_MAX = timedelta(minutes=2)

# --- the bounded outbox (runs started with BOUNDED_OUTBOX_PATCH) ---
BOUNDED_OUTBOX_PATCH = "projection-bounded-outbox"
MAX_BATCH_RECORDS = 100
MAX_BATCH_BYTES = 256 * 1024
MAX_BACKLOG_RECORDS = 1000
# Dropped records are reported on the first drop, then once this many more were dropped (and when writes resume).
DROP_WARNING_EVERY = 100
# The write sent while the database is down keeps trying (in the activity, about once a second) this long.
DATABASE_WAIT = timedelta(minutes=5)
DATABASE_WAIT_TIMEOUT = DATABASE_WAIT + timedelta(minutes=1)
# One attempt: when it fails the flusher pauses and sends another, and a cancelled one is not retried.
DATABASE_WAIT_RETRY = RetryPolicy(maximum_attempts=1)
# The pause after a failed database-wait write; it grows only while such writes fail quickly.
DOWN_PAUSE_INITIAL = timedelta(seconds=2)
DOWN_PAUSE_MAX = timedelta(minutes=1)


def approx_size(value: Any) -> int:
    """About how many bytes `value` takes as JSON: deterministic and cheap (nothing is serialized)."""
    if isinstance(value, str):
        return len(value) + 2
    if isinstance(value, BaseModel):
        return 2 + sum(len(name) + 4 + approx_size(item) for name, item in value.__dict__.items())
    if isinstance(value, dict):
        return 2 + sum(approx_size(key) + 2 + approx_size(item) for key, item in value.items())
    if isinstance(value, list | tuple):
        return 2 + sum(approx_size(item) + 1 for item in value)
    if isinstance(value, datetime):
        return 34
    return 8


class Projection:
    """Records waiting to be written, and the task that writes them.

    Args:
        session_id: The session the records belong to.
        pending: Records a previous run did not write (`CarriedState.unprojected`).
        counters: When given, `dropped` and `quarantined` are added to its `projection_dropped` and
            `projection_quarantined` as they happen (the session's counters are carried across continue-as-new).
        traces: When given, each write is started in the trace of the input being processed.
    """

    def __init__(
        self,
        session_id: str,
        pending: list[ProjectionRecord],
        *,
        counters: SessionCounters | None = None,
        traces: SessionTraces | None = None,
    ) -> None:
        self._session_id = session_id
        self._traces = traces or SessionTraces(session_id)
        self._records: list[ProjectionRecord] = list(pending)
        self._down = False
        self.enabled = False
        self._regular_activity = False
        self._bounded = False
        self._flusher: asyncio.Task[None] | None = None
        self._counters = counters
        # Bounded outbox: how many records at the head of `_records` the write in flight carries, and that write.
        self._in_flight = 0
        self._write_handle: workflow.ActivityHandle[Any] | None = None
        self._write_waits = False  # the write in flight waits for a database that is down
        self._quiescing = False
        self._at_wait_points = False
        self._flush_owed = 0  # how many records at the head a wait point asked to have written
        self._unreported_drops = 0
        self.dropped = 0
        """Records dropped in this run because the backlog was full."""
        self.quarantined = 0
        """Records PostgreSQL refused in this run (kept in its quarantine table by the activity, never retried)."""

    def start(self, wanted: bool, *, lean: bool = False) -> bool:
        """Turn the projection on for this run if the session wants it; call once, from the workflow's run.
        `lean`: the run has `lean-turns` (workflows/patches.py), so every earlier change and writes at wait points
        only (see the module docstring)."""
        self.enabled = wanted and has_change(PROJECTION_PATCH, baseline=lean)
        if self.enabled:
            self._regular_activity = has_change(REGULAR_ACTIVITY_PATCH, baseline=lean)
            self._bounded = self._regular_activity and has_change(BOUNDED_OUTBOX_PATCH, baseline=lean)
            self._at_wait_points = self._bounded and lean
            if self._bounded:
                self._bound_backlog()  # a backlog carried from a run that had no bound
                flusher = self._flush_bounded()
            else:
                flusher = self._flush_forever()
            self._flusher = asyncio.create_task(flusher, name="projection-flusher")
        return self.enabled

    @property
    def pending(self) -> list[ProjectionRecord]:
        """Records not written yet (carried over continue-as-new)."""
        return list(self._records)

    def add(self, record: ProjectionRecord) -> None:
        if self.enabled:
            self._records.append(record)
            if self._bounded:
                self._bound_backlog()

    def flush(self) -> None:
        """The conversation reaches a wait point: write what is queued (runs that write only then)."""
        self._flush_owed = len(self._records)

    async def drained(self) -> None:
        """Wait until everything queued is written, unless the database is known to be down (then don't wait), or,
        on the regular-activity path, for at most `EMIT_WAIT`: a slow database delays a wait point that long, never
        more (the workflow's own history already holds the call durably; the projection catches up)."""
        if not self.enabled:
            return
        self.flush()
        if not self._regular_activity:
            await workflow.wait_condition(lambda: not self._records or self._down)
            return
        with contextlib.suppress(TimeoutError):
            await workflow.wait_condition(lambda: not self._records or self._down or self._quiescing, timeout=EMIT_WAIT)

    async def quiesce(self) -> None:
        """Stop writing, for continue-as-new: call right before it; the projection writes nothing more in this run.

        No new write starts, and the write in flight is awaited, so no activity result can arrive during the
        continue-as-new task. A write that waits for a database that is down is cancelled rather than awaited (it
        could take minutes); an ordinary write is left to finish (a few milliseconds), since cancelling an activity
        that has just completed is a needless race. Unwritten records stay in `pending`. Runs without the bounded
        outbox (older sessions, replayed) return at once, as they always did.
        """
        if not self._bounded or self._flusher is None:
            return
        self._quiescing = True
        if self._write_handle is not None and not self._write_handle.done() and self._write_waits:
            self._write_handle.cancel()
        await self._flusher

    # --- one method per kind of record, so the workflow's call sites stay one line ---

    def message(self, seq: int, message: ChatMessage) -> None:
        self.add(MessageRecord(session_id=self._session_id, seq=seq, message=message))

    def tool_call(
        self,
        call: ToolCall,
        *,
        agent: AgentType,
        requested_at: datetime,
        outcome: str | None = None,
        result: str | ContentRef | None = None,
    ) -> None:
        self.add(
            ToolCallRecord(
                session_id=self._session_id,
                call_id=call.id,
                tool_name=call.name,
                arguments=call.arguments,
                agent=agent,
                requested_at=requested_at,
                outcome=outcome,
                result=result,
                closed_at=workflow.now() if outcome else None,
            )
        )

    def approval(self, approval: PendingApproval) -> None:
        self.add(ApprovalRecord(approval=approval))

    def switch(self, seq: int, record: AgentSwitchRecord) -> None:
        self.add(AgentSwitchRow(session_id=self._session_id, seq=seq, switch=record))

    def plan(self, plan: Plan) -> None:
        self.add(PlanRecord(session_id=self._session_id, plan=plan.model_copy(deep=True), updated_at=workflow.now()))

    def event(self, chunk: StreamChunk) -> None:
        self.add(
            EventRecord(
                session_id=self._session_id, event_id=str(workflow.uuid4()), chunk=chunk, created_at=workflow.now()
            )
        )

    def llm_request(self, record: LlmRequestRecord, **update: Any) -> None:
        self.add(record.model_copy(update=update))

    async def _write(self, batch: ProjectionBatch) -> None:
        summary = f"projection: {len(batch.records)} records"
        with self._traces.in_current_turn():
            if self._regular_activity:
                handle = workflow.start_activity(
                    RECORD_PROJECTION_ACTIVITY,
                    batch,
                    start_to_close_timeout=WRITE_TIMEOUT,
                    heartbeat_timeout=WRITE_HEARTBEAT_TIMEOUT,
                    retry_policy=WRITE_RETRY,
                    summary=summary,
                )
            else:
                handle = workflow.start_local_activity(
                    RECORD_PROJECTION_ACTIVITY,
                    batch,
                    schedule_to_close_timeout=WRITE_TIMEOUT,
                    retry_policy=WRITE_RETRY,
                    summary=summary,
                )
        await handle

    async def _flush_forever(self) -> None:
        delay = RETRY_INITIAL
        while True:
            await workflow.wait_condition(lambda: bool(self._records))
            batch = list(self._records)
            try:
                await self._write(ProjectionBatch(records=batch))
            # A failed write (for a local activity: the activity's own ApplicationError; otherwise an
            # ActivityError) means "not written yet", never "give up".
            except FailureError as err:
                self._down = True
                workflow.logger.warning("Projection write failed, retrying in %s: %s", delay, err.__cause__ or err)
                await workflow.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)
                continue
            del self._records[: len(batch)]
            self._down = False
            delay = RETRY_INITIAL

    # --- the bounded outbox ---

    def _bound_backlog(self) -> None:
        """Drop the oldest records beyond `MAX_BACKLOG_RECORDS`, never those the write in flight carries."""
        excess = len(self._records) - MAX_BACKLOG_RECORDS
        if excess <= 0:
            return
        del self._records[self._in_flight : self._in_flight + excess]
        first = self.dropped == 0
        self.dropped += excess
        self._unreported_drops += excess
        if self._counters is not None:
            self._counters.projection_dropped += excess
        if first or self._unreported_drops >= DROP_WARNING_EVERY:
            self._report_drops()

    def _report_drops(self) -> None:
        workflow.logger.warning(
            "Projection backlog full (%d records, the database is down or slow): dropped the %d oldest, %d in this run",
            MAX_BACKLOG_RECORDS,
            self._unreported_drops,
            self.dropped,
        )
        self._unreported_drops = 0

    def _due(self) -> bool:
        """Whether the flusher writes now: at once, or (lean runs) when asked or when a batch is full."""
        if not self._records:
            return False
        return not self._at_wait_points or self._flush_owed > 0 or len(self._records) >= MAX_BATCH_RECORDS

    def _batch_size(self) -> int:
        """How many records from the head go in the next write: up to `MAX_BATCH_RECORDS` and about
        `MAX_BATCH_BYTES`, at least one."""
        size = 0
        for count, record in enumerate(self._records[:MAX_BATCH_RECORDS]):
            size += approx_size(record)
            if size > MAX_BATCH_BYTES and count > 0:
                return count
        return min(len(self._records), MAX_BATCH_RECORDS)

    async def _write_batch(self, records: list[ProjectionRecord], *, wait_for_database: bool) -> ProjectionWriteResult:
        cancellation = workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED
        with self._traces.in_current_turn():
            self._write_handle = self._start_write(records, wait_for_database, cancellation)
        try:
            result = await self._write_handle
        finally:
            self._write_handle = None
        # Read leniently: a worker still running the previous code (during a rolling deploy) returns nothing.
        return ProjectionWriteResult.model_validate(result) if isinstance(result, dict) else ProjectionWriteResult()

    def _start_write(
        self,
        records: list[ProjectionRecord],
        wait_for_database: bool,
        cancellation: workflow.ActivityCancellationType,
    ) -> workflow.ActivityHandle[Any]:
        if wait_for_database:
            return workflow.start_activity(
                RECORD_PROJECTION_ACTIVITY,
                ProjectionBatch(records=records, wait_for_database_seconds=DATABASE_WAIT.total_seconds()),
                start_to_close_timeout=DATABASE_WAIT_TIMEOUT,
                heartbeat_timeout=WRITE_HEARTBEAT_TIMEOUT,
                retry_policy=DATABASE_WAIT_RETRY,
                cancellation_type=cancellation,
                summary=f"projection: {len(records)} records, waiting for the database",
            )
        return workflow.start_activity(
            RECORD_PROJECTION_ACTIVITY,
            ProjectionBatch(records=records),
            start_to_close_timeout=WRITE_TIMEOUT,
            heartbeat_timeout=WRITE_HEARTBEAT_TIMEOUT,
            retry_policy=WRITE_RETRY,
            cancellation_type=cancellation,
            summary=f"projection: {len(records)} records",
        )

    async def _flush_bounded(self) -> None:
        quick_failures = 0
        while True:
            await workflow.wait_condition(lambda: self._due() or self._quiescing)
            if self._quiescing:
                return
            self._in_flight = self._batch_size()
            waiting = self._write_waits = self._down
            sent_at = workflow.now()
            try:
                result = await self._write_batch(self._records[: self._in_flight], wait_for_database=waiting)
            except FailureError as err:
                self._in_flight = 0
                if self._quiescing:
                    return
                self._down = True
                if not waiting:
                    workflow.logger.warning(
                        "Projection write failed; the next one waits for the database: %s", err.__cause__ or err
                    )
                    continue
                # Only writes that fail quickly (not for want of a database: a bug in the write, say) back off.
                quick = workflow.now() - sent_at < DOWN_PAUSE_MAX
                quick_failures = quick_failures + 1 if quick else 0
                pause = min(DOWN_PAUSE_INITIAL * 2**quick_failures, DOWN_PAUSE_MAX)
                workflow.logger.warning(
                    "Projection write failed again, retrying in %s: %s", pause, err.__cause__ or err
                )
                with contextlib.suppress(TimeoutError):
                    await workflow.wait_condition(lambda: self._quiescing, timeout=pause)
                continue
            written = self._in_flight
            del self._records[:written]
            self._in_flight = 0
            self._down = False
            self._flush_owed = max(0, self._flush_owed - written)
            quick_failures = 0
            if self._unreported_drops:
                self._report_drops()
            if result.quarantined:
                self.quarantined += result.quarantined
                if self._counters is not None:
                    self._counters.projection_quarantined += result.quarantined
                workflow.logger.warning(
                    "PostgreSQL refused %d projection records; they are in its quarantine table, not retried",
                    result.quarantined,
                )
