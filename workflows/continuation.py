"""Continue-as-new: what a run hands to the next one, every part of it bounded whatever the session's length.

A run ends between turns (when the next input arrives), once Temporal suggests it, the configured turn limit is
reached, or its messages add `HISTORY_SIZE_LIMIT` to workflow state. The older turns are then archived in the
content store as one transcript segment, and the next run starts from the newest turns and structured state, never a
summary.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.contrib.workflow_streams import WorkflowStream
from temporalio.exceptions import ActivityError

from workflows.ledger import RecentIds
from workflows.model import (
    ARCHIVE_TRANSCRIPT_ACTIVITY,
    ApprovalStatus,
    ArchiveTranscriptInput,
    ChatMessage,
    PlanStatus,
    TranscriptArchive,
)
from workflows.session import Session
from workflows.state import CarriedState

# Continue-as-new once this run's messages add this much (characters) to workflow state: every LLM call sends them,
# so this also bounds the LLM activity's input.
HISTORY_SIZE_LIMIT = 96 * 1024
# Of those, the newest turns that stay in the next run (the rest is archived in the content store).
HISTORY_SIZE_KEPT = 24 * 1024
# Event log entries kept across continue-as-new (older offsets are answered from the retained base), and their size.
EVENTS_KEPT_ON_CONTINUE = 100
EVENTS_SIZE_KEPT_ON_CONTINUE = 48 * 1024
# Deduplication state of the stream's publishers (one per LLM call) is kept this long over continue-as-new; it must
# outlast a publisher's retries, and an LLM activity lives at most its timeout plus a margin (workflows/llm_calls.py).
STREAM_PUBLISHER_TTL = timedelta(minutes=5)
# Settled approvals carried so that late repeats are recognised; pending ones are always carried.
SETTLED_APPROVALS_KEPT = 200
# The newest agent switches and finished plans carried (the projection keeps them all).
SWITCHES_KEPT = 50
PLANS_KEPT = 10
ARCHIVE_TIMEOUT = timedelta(seconds=30)
ARCHIVE_RETRY = RetryPolicy(maximum_attempts=5, initial_interval=timedelta(milliseconds=500))
_FINISHED_PLANS = (PlanStatus.COMPLETED, PlanStatus.FAILED, PlanStatus.REJECTED, PlanStatus.CANCELLED)


async def archive_older_turns(session: Session) -> tuple[list[ChatMessage], int]:
    """Store all but the newest turns in the content store; returns what the next run carries, and its seq.

    If the store cannot be reached, everything is carried (the next run tries again): a session never stops because
    its archive is down, it only carries more for a while.
    """
    archived, kept = session.history.split_for_archive(HISTORY_SIZE_KEPT)
    if not archived:
        return kept, session.history.first_seq
    session.pauses.pause()
    try:
        session.transcript = await workflow.execute_activity(
            ARCHIVE_TRANSCRIPT_ACTIVITY,
            ArchiveTranscriptInput(
                session_id=session.id,
                first_seq=session.history.first_seq,
                messages=archived,
                previous=session.transcript,
            ),
            result_type=TranscriptArchive,
            start_to_close_timeout=ARCHIVE_TIMEOUT,
            retry_policy=ARCHIVE_RETRY,
            summary=f"archive {len(archived)} messages",
        )
    except ActivityError as err:
        workflow.logger.warning("Transcript not archived, carrying it whole: %s", err.cause or err)
        return session.history.messages, session.history.first_seq
    return kept, session.history.first_seq + len(archived)


def trim_event_log(stream: WorkflowStream) -> None:
    """Keep only the newest events (by count and by size) for clients resuming from an offset."""
    # The stream exposes neither its log nor its offset to workflow code; its query handler returns the offset.
    offset = stream._on_offset()
    kept, size = 0, 0
    for item in reversed(stream._log):
        size += item.data.ByteSize()
        if kept >= EVENTS_KEPT_ON_CONTINUE or size > EVENTS_SIZE_KEPT_ON_CONTINUE:
            break
        kept += 1
    stream.truncate(offset - kept)


def publisher_ttl(session: Session) -> timedelta:
    return max(STREAM_PUBLISHER_TTL, 2 * timedelta(seconds=session.config.llm_timeout_seconds))


def carried_state(
    session: Session, history: list[ChatMessage], first_seq: int, seen_message_ids: RecentIds
) -> CarriedState:
    """The state the next run starts from; each part bounded (see the constants above)."""
    approvals = list(session.ledger.approvals.values())
    settled = [a for a in approvals if a.status is not ApprovalStatus.PENDING][-SETTLED_APPROVALS_KEPT:]
    pending = [a for a in approvals if a.status is ApprovalStatus.PENDING]
    old = {id(p) for p in [p for p in session.plans if p.status in _FINISHED_PLANS][:-PLANS_KEPT]}
    return CarriedState(
        history=history,
        transcript=session.transcript,
        first_seq=first_seq,
        answered_call_ids=session.history.answered_ids,
        title=session.title(),
        current_agent=session.agent,
        approvals=settled + pending,
        switches=session.switches[-SWITCHES_KEPT:],
        switch_count=session.switch_count,
        seen_message_ids=seen_message_ids.newest(),
        queued_inputs=list(session.inbox),
        plans=[p for p in session.plans if id(p) not in old],
        counters=session.counters,
        created_at=session.created_at,
        runs=session.run + 1,
        context_tokens=session.context_tokens if session.context_tokens < session.config.llm_context_tokens else None,
        unprojected=session.projection.pending,
        grants=session.grants.carried(),
        project=session.project,
    )
