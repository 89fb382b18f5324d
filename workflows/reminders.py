"""Approval reminders and escalations: durable timers while an approval waits for a human.

A policy rule may say "remind after X, escalate after Y, expire after Z" (workflows/policy.py). The wait for the
decision (workflows/waits.py for tool calls, workflows/plan_runner.py for plans) is then cut at those moments: each
is a workflow timer, so it survives restarts like the expiry does. When one fires and the approval still waits, the
session publishes a `status` event (not final: the wait point stays the `tool_call` that asked; `metadata.code` is
`approval_reminder` or `approval_escalation`) and, when the runtime has a webhook, sends an `ApprovalNotice` to it
through an activity with retries (activities/webhook.py). The webhook runs beside the wait: a slow or failing
receiver never delays the decision, and the run waits for it only before it continues as new (`drain`).

Runs that asked for an approval before this existed replay as they ran (patch `operator-view`, asked only when a rule
has a reminder or an escalation, so a session without them records nothing).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Literal

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

from workflows.model import (
    APPROVAL_WEBHOOK_ACTIVITY,
    ApprovalNotice,
    ApprovalRequirement,
    ChunkType,
    NoticeDelivery,
    PendingApproval,
)
from workflows.observability import approval_notice, notice_text

if TYPE_CHECKING:  # the session owns its reminders; only the type is needed here
    from workflows.session import Session

WEBHOOK_TIMEOUT = timedelta(seconds=10)
# About a minute of retries in all: enough for a receiver's restart, short enough not to hold up a continue-as-new.
WEBHOOK_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=20),
    maximum_attempts=5,
)

Kind = Literal["reminder", "escalation"]


def schedule(requirement: ApprovalRequirement, asked_at: datetime) -> tuple[datetime | None, datetime | None]:
    """When the reminder and the escalation of an approval asked at `asked_at` are due (None: not at all); a time at
    or after the expiry is dropped, as it could never fire."""
    expiry = requirement.timeout_seconds

    def due(seconds: float | None) -> datetime | None:
        if seconds is None or (expiry is not None and seconds >= expiry):
            return None
        return asked_at + timedelta(seconds=seconds)

    return due(requirement.remind_after_seconds), due(requirement.escalate_after_seconds)


class ApprovalReminders:
    """The reminder and escalation timers of a session's approvals, and the webhook deliveries they start."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self._deliveries: set[asyncio.Task[None]] = set()

    def times(self, requirement: ApprovalRequirement, asked_at: datetime) -> tuple[datetime | None, datetime | None]:
        """The reminder and escalation times for a new approval; none in runs without the `operator-view` patch."""
        remind_at, escalate_at = schedule(requirement, asked_at)
        if (remind_at or escalate_at) is None or not self._session.operator_view():
            return None, None
        return remind_at, escalate_at

    async def wait(self, call_id: str, ready: Callable[[], bool], timeout_seconds: float | None) -> bool:
        """Wait for the decision on `call_id`'s approval (`ready`) until it expires, reminding and escalating on
        the way: True when it arrived, False when the approval expired first."""
        session = self._session
        approval = session.ledger.approvals[call_id]
        due: list[tuple[datetime | None, Kind]] = [
            (approval.remind_at, "reminder"),
            (approval.escalate_at, "escalation"),
        ]
        milestones = sorted((at, kind) for at, kind in due if at is not None)
        expiry = f"approval expiry: {approval.tool_name} {approval.call_id}"
        if not milestones:
            # The timer's name is metadata, not part of the command: histories from before it replay unchanged.
            return await session.wait_for_input(ready, timeout_seconds, summary=expiry if timeout_seconds else None)
        for at, kind in milestones:
            left = (at - workflow.now()).total_seconds()
            summary = f"approval {kind}: {approval.tool_name} {approval.call_id}"
            if left > 0 and await session.wait_for_input(ready, left, summary=summary):
                return True
            if ready():
                return True
            self._notify(kind, session.ledger.approvals[call_id])
        if approval.expires_at is None:
            return await session.wait_for_input(ready)
        left = (approval.expires_at - workflow.now()).total_seconds()
        return (left > 0 and await session.wait_for_input(ready, left, summary=expiry)) or ready()

    def _notify(self, kind: Kind, approval: PendingApproval) -> None:
        """Publish the reminder or escalation and, with a webhook, deliver it in the background."""
        session = self._session
        notice = approval_notice(kind, approval, workflow.now())
        session.emit(
            ChunkType.STATUS,
            content=notice_text(notice),
            metadata={
                "code": f"approval_{kind}",
                "call_id": approval.call_id,
                "approval_request_id": approval.request_id,
                "tool_name": approval.tool_name,
                "waiting_since": approval.created_at.isoformat(),
                "expires_at": approval.expires_at.isoformat() if approval.expires_at else None,
            },
        )
        session.metrics.approval_notice(approval, kind)
        if not session.config.approval_webhook:
            return
        task = asyncio.create_task(self._deliver(notice))
        self._deliveries.add(task)
        task.add_done_callback(self._deliveries.discard)

    async def _deliver(self, notice: ApprovalNotice) -> None:
        try:
            delivery = await workflow.execute_activity(
                APPROVAL_WEBHOOK_ACTIVITY,
                notice,
                result_type=NoticeDelivery,
                start_to_close_timeout=WEBHOOK_TIMEOUT,
                retry_policy=WEBHOOK_RETRY,
                summary=f"approval {notice.kind} webhook: {notice.tool_name} {notice.call_id}",
            )
        except ActivityError as err:
            detail: object = err.cause or err
        else:
            if delivery.delivered:
                return
            detail = delivery.detail
        workflow.logger.warning("Approval %s of %s not delivered: %s", notice.kind, notice.call_id, detail)

    async def drain(self) -> None:
        """Wait for the webhook deliveries in flight (before the run continues as new: nothing may be left running)."""
        if self._deliveries:
            await asyncio.gather(*self._deliveries, return_exceptions=True)
