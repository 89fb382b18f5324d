"""The workflow's outbox for the PostgreSQL projection.

The workflow is the source of truth; PostgreSQL holds an append-only projection for read APIs and audit. Records
are queued here as the conversation changes, and a background task drains them through a local activity (a short
write). When the database is down the records stay queued and the flusher retries with backoff, so a conversation
never waits on the database; the queue travels across continue-as-new, so nothing is lost. Every record is keyed
(message id, call id, ...), so a retried or replayed write changes nothing.
"""

from __future__ import annotations

import asyncio
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
WRITE_TIMEOUT = timedelta(seconds=10)
# A local activity's retries run while the workflow task is held, so they are kept short; longer outages are
# bridged by the flusher's own backoff below, which does not hold up the conversation.
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
        self._flusher: asyncio.Task[None] | None = None

    def start(self, wanted: bool) -> bool:
        """Turn the projection on for this run if the session wants it; call once, from the workflow's run."""
        self.enabled = wanted and workflow.patched(PROJECTION_PATCH)
        if self.enabled:
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
        """Wait until everything queued is written, unless the database is known to be down (then don't wait)."""
        if self.enabled:
            await workflow.wait_condition(lambda: not self._records or self._down)

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

    async def _flush_forever(self) -> None:
        delay = RETRY_INITIAL
        while True:
            await workflow.wait_condition(lambda: bool(self._records))
            batch = list(self._records)
            try:
                await workflow.execute_local_activity(
                    RECORD_PROJECTION_ACTIVITY,
                    ProjectionBatch(records=batch),
                    schedule_to_close_timeout=WRITE_TIMEOUT,
                    retry_policy=WRITE_RETRY,
                    summary=f"projection: {len(batch)} records",
                )
            # A local activity that used up its retries raises the activity's own failure (an ApplicationError), a
            # timeout an ActivityError: both mean "not written yet", never "give up".
            except FailureError as err:
                self._down = True
                workflow.logger.warning("Projection write failed, retrying in %s: %s", delay, err.__cause__ or err)
                await workflow.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)
                continue
            del self._records[: len(batch)]
            self._down = False
            delay = RETRY_INITIAL
