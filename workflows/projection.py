"""The workflow's outbox for the PostgreSQL projection.

The workflow is the source of truth; PostgreSQL holds an append-only projection for read APIs and audit. Records
are queued here as the conversation changes, and a background task drains them through an activity. When the
database is down the records stay queued and the flusher retries with backoff, so a conversation never waits on the
database; the queue travels across continue-as-new, so nothing is lost. Every record is keyed (message id, call id,
...), so a retried or replayed write changes nothing.

The write is a regular activity: a local one runs inside the workflow task, so a slow or locked database held up
every decision and tool call of the session for up to the write timeout (tests/test_durability.py measured 8-10 s).
Sessions that started with local-activity writes keep them when replayed (the `projection-regular-activity` patch).
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import FailureError

from workflows.model import (
    RECORD_PROJECTION_ACTIVITY,
    AgentSwitchRecord,
    AgentSwitchRow,
    AgentType,
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
    StreamChunk,
    ToolCall,
    ToolCallRecord,
)

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


class Projection:
    """Records waiting to be written, and the task that writes them."""

    def __init__(self, session_id: str, pending: list[ProjectionRecord]) -> None:
        self._session_id = session_id
        self._records: list[ProjectionRecord] = list(pending)
        self._down = False
        self.enabled = False
        self._regular_activity = False
        self._flusher: asyncio.Task[None] | None = None

    def start(self, wanted: bool) -> bool:
        """Turn the projection on for this run if the session wants it; call once, from the workflow's run."""
        self.enabled = wanted and workflow.patched(PROJECTION_PATCH)
        if self.enabled:
            self._regular_activity = workflow.patched(REGULAR_ACTIVITY_PATCH)
            self._flusher = asyncio.create_task(self._flush_forever(), name="projection-flusher")
        return self.enabled

    @property
    def pending(self) -> list[ProjectionRecord]:
        """Records not written yet (carried over continue-as-new)."""
        return list(self._records)

    def add(self, record: ProjectionRecord) -> None:
        if self.enabled:
            self._records.append(record)

    async def drained(self) -> None:
        """Wait until everything queued is written, unless the database is known to be down (then don't wait), or,
        on the regular-activity path, for at most `EMIT_WAIT`: a slow database delays a wait point that long, never
        more (the workflow's own history already holds the call durably; the projection catches up)."""
        if not self.enabled:
            return
        if not self._regular_activity:
            await workflow.wait_condition(lambda: not self._records or self._down)
            return
        with contextlib.suppress(TimeoutError):
            await workflow.wait_condition(lambda: not self._records or self._down, timeout=EMIT_WAIT)

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
        result: str | None = None,
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
        if self._regular_activity:
            await workflow.execute_activity(
                RECORD_PROJECTION_ACTIVITY,
                batch,
                start_to_close_timeout=WRITE_TIMEOUT,
                heartbeat_timeout=WRITE_HEARTBEAT_TIMEOUT,
                retry_policy=WRITE_RETRY,
                summary=summary,
            )
        else:
            await workflow.execute_local_activity(
                RECORD_PROJECTION_ACTIVITY,
                batch,
                schedule_to_close_timeout=WRITE_TIMEOUT,
                retry_policy=WRITE_RETRY,
                summary=summary,
            )

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
