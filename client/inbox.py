"""The operator's view across sessions: every pending approval (the inbox), deciding one, and every running session.

One copy of these rules serves `agent-runtime approvals` and `sessions` (cli/) and `GET /approvals` and `POST
/approvals/{session_id}/{call_id}` (api/routes_approvals.py).

Visibility finds the sessions worth asking, through the custom search attributes of `workflows.model` (registered
by the dev stack, the API and the compose setup job); each of them is then asked for its own state with a query,
which is exact and current while visibility lags by up to a second. Where the attributes are not registered, every
running session is asked instead. A session that does not answer within `QUERY_TIMEOUT` (no worker running) is
still listed from its search attributes, so stuck sessions show up even while every worker is down. The visibility
queries are the same text the Temporal Web UI's filter box takes.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, Field
from temporalio.client import Client, WorkflowExecution
from temporalio.service import RPCError, RPCStatusCode

from client.conversation_client import ConversationClient, ConversationError, InvalidInputError
from workflows.model import (
    CONVERSATION_WORKFLOW,
    CURRENT_AGENT_ATTRIBUTE,
    OLDEST_PENDING_APPROVAL_ATTRIBUTE,
    PENDING_APPROVALS_ATTRIBUTE,
    PENDING_TOOLS_ATTRIBUTE,
    SESSION_STATUS_ATTRIBUTE,
    WAITING_CALL_ID_ATTRIBUTE,
    WORKFLOW_ID_PREFIX,
    AgentType,
    ApprovalCommands,
    ApprovalStatus,
    Decision,
    GrantScope,
    HitlDecision,
    InputReceipt,
    PendingApproval,
    PlanDecision,
    PlanDecisionKind,
    SessionState,
    workflow_id_for,
)
from workflows.observability import approval_commands, summarize_arguments

# A query needs a worker; without one it would wait for the RPC deadline. Long enough for a busy worker.
QUERY_TIMEOUT = timedelta(seconds=5)
_CONCURRENT_QUERIES = 64

T = TypeVar("T")


# --- visibility queries (the Web UI's filter box takes them as they are) ---


def sessions_query() -> str:
    """Every session of the runtime."""
    return f"WorkflowType = '{CONVERSATION_WORKFLOW}'"


def running_sessions_query(task_queue: str | None = None) -> str:
    query = f"{sessions_query()} AND ExecutionStatus = 'Running'"
    return query if task_queue is None else f"{query} AND TaskQueue = {_quoted(task_queue)}"


def stuck_approvals_query(older_than: timedelta, *, now: datetime | None = None) -> str:
    """Running sessions with an approval pending for longer than `older_than`.

    Visibility has no relative time, so the cutoff is written as an absolute UTC timestamp.
    """
    cutoff = (now or datetime.now(UTC)) - older_than
    return (
        f"{sessions_query()} AND ExecutionStatus = 'Running' "
        f"AND {PENDING_APPROVALS_ATTRIBUTE.name} > 0 "
        f"AND {OLDEST_PENDING_APPROVAL_ATTRIBUTE.name} < '{cutoff.strftime('%Y-%m-%dT%H:%M:%SZ')}'"
    )


def parse_duration(text: str) -> timedelta:
    """`90s`, `15m`, `2h`, `1d`, `1h30m` (or a plain number of seconds) -> timedelta.

    Raises:
        ValueError: Not such a duration.
    """
    stripped = text.strip()
    if stripped.isdigit():
        return timedelta(seconds=int(stripped))
    parts = re.fullmatch(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", stripped)
    if not stripped or parts is None:
        raise ValueError(f"expected a duration like 90s, 15m, 2h, 1d or 1h30m, got {text!r}")
    days, hours, minutes, seconds = (int(p or 0) for p in parts.groups())
    return timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)


# --- the inbox ---


@dataclass(frozen=True)
class InboxFilter:
    """Which pending approvals to list; every given criterion must hold.

    Attributes:
        older_than: Pending for at least this long.
        tool: Tool name (exact).
        session_ids: Only these sessions (asked directly, no visibility needed).
        agent: The agent that asked for the tool call.
        task_queue: Only sessions of this task queue (the API lists its own).
    """

    older_than: timedelta | None = None
    tool: str | None = None
    session_ids: tuple[str, ...] = ()
    agent: str | None = None
    task_queue: str | None = None

    def matches(self, approval: PendingApproval, now: datetime) -> bool:
        return (
            (self.older_than is None or now - approval.created_at >= self.older_than)
            and (self.tool is None or approval.tool_name == self.tool)
            and (self.agent is None or approval.agent.value == self.agent)
        )


@dataclass(frozen=True)
class InboxEntry:
    """One pending approval, or, when `approval` is None, a session visibility says waits but that did not answer.

    Attributes:
        session_id: The session.
        approval: The approval as the session reports it; None when it did not answer.
        pending_tools: From the search attributes, for an unanswered session.
        oldest: From the search attributes, for an unanswered session.
        waiting_call_id: From the search attributes, for an unanswered session (when it sets it).
    """

    session_id: str
    approval: PendingApproval | None
    pending_tools: tuple[str, ...] = ()
    oldest: datetime | None = None
    waiting_call_id: str | None = None

    @property
    def since(self) -> datetime | None:
        return self.approval.created_at if self.approval else self.oldest


@dataclass(frozen=True)
class Inbox:
    """The result of a search.

    Attributes:
        entries: Oldest first.
        scanned: The search attributes were not usable, so every running session was asked.
        silent: Sessions that did not answer during a scan (they may or may not wait for a decision).
    """

    entries: list[InboxEntry]
    scanned: bool = False
    silent: list[str] = field(default_factory=list)


class InboxItem(BaseModel):
    """One inbox entry as JSON (`agent-runtime approvals --json`, `GET /approvals`): the approval's fields, how old
    it is, whether it is escalated, and how to decide it. For a session that did not answer, only what its search
    attributes say (`answered` false)."""

    session_id: str
    workflow_id: str
    answered: bool = Field(description="False: the session did not answer (no worker?); listed from visibility.")
    age_seconds: int | None = None
    created_at: datetime | None = None
    request_id: str | None = None
    request_type: Literal["tool", "plan"] | None = None
    call_id: str | None = None
    tool_name: str | None = None
    subject: str | None = None
    arguments: dict[str, Any] | None = None
    arguments_summary: str | None = None
    reason: str | None = None
    agent: AgentType | None = None
    status: ApprovalStatus | None = None
    expires_at: datetime | None = None
    remind_at: datetime | None = None
    escalate_at: datetime | None = None
    escalated: bool = Field(default=False, description="Its escalation time has passed and it still waits.")
    pending_tools: list[str] = Field(default_factory=list, description="Unanswered sessions: tools that wait.")
    commands: ApprovalCommands | None = Field(default=None, description="How to approve, edit or reject it.")


def inbox_item(entry: InboxEntry, now: datetime) -> InboxItem:
    """The JSON form of an entry, `now` giving its age and whether it is escalated."""
    common: dict[str, Any] = {
        "session_id": entry.session_id,
        "workflow_id": workflow_id_for(entry.session_id),
        "age_seconds": round((now - entry.since).total_seconds()) if entry.since else None,
        "created_at": entry.since,
    }
    approval = entry.approval
    if approval is None:
        tools = list(entry.pending_tools)
        return InboxItem(answered=False, pending_tools=tools, call_id=entry.waiting_call_id, **common)
    return InboxItem(
        answered=True,
        request_id=approval.request_id,
        request_type=approval.request_type,
        call_id=approval.call_id,
        tool_name=approval.tool_name,
        subject=approval.subject,
        arguments=approval.arguments,
        arguments_summary=summarize_arguments(approval.arguments),
        reason=approval.reason,
        agent=approval.agent,
        status=approval.status,
        expires_at=approval.expires_at,
        remind_at=approval.remind_at,
        escalate_at=approval.escalate_at,
        escalated=approval.escalate_at is not None and approval.escalate_at <= now,
        commands=approval_commands(entry.session_id, approval),
        **common,
    )


def inbox_query(criteria: InboxFilter, *, now: datetime) -> str:
    """The visibility query for sessions that may hold matching approvals (the Web UI accepts it too)."""
    if criteria.older_than is not None:
        query = stuck_approvals_query(criteria.older_than, now=now)
    else:
        query = f"{running_sessions_query()} AND {PENDING_APPROVALS_ATTRIBUTE.name} > 0"
    if criteria.tool is not None:
        query += f" AND {PENDING_TOOLS_ATTRIBUTE.name} = {_quoted(criteria.tool)}"
    if criteria.task_queue is not None:
        query += f" AND TaskQueue = {_quoted(criteria.task_queue)}"
    return query


async def find_pending_approvals(
    client: Client, conversations: ConversationClient, criteria: InboxFilter, *, now: datetime, scan: bool = False
) -> Inbox:
    """Every pending approval matching `criteria`, across sessions, oldest first.

    Args:
        client: Temporal client (for visibility).
        conversations: The typed client (for the queries).
        criteria: What to list.
        now: The moment ages are measured from.
        scan: Ask every running session, ignoring the search attributes (for sessions started before the
            attributes were registered).

    Raises:
        UnknownSessionError: One of `criteria.session_ids` names no session.
        SessionStuckError: One of `criteria.session_ids` did not answer in time (the client's answer timeout).
        RPCError: Temporal refused or could not be reached.
    """
    if criteria.session_ids:
        asked = await _bounded([conversations.pending_approvals(s) for s in dict.fromkeys(criteria.session_ids)])
        found = [InboxEntry(a.session_id, a) for approvals in asked for a in approvals if criteria.matches(a, now)]
        return Inbox(_sorted(found))
    executions: list[WorkflowExecution] = []
    if not scan:
        try:
            executions = [e async for e in client.list_workflows(inbox_query(criteria, now=now))]
        except RPCError as err:
            if not _unregistered_attribute(err):
                raise
            scan = True
    if scan:
        executions = [e async for e in client.list_workflows(running_sessions_query(criteria.task_queue))]
    answers = await _bounded(
        [_ask(conversations.pending_approvals, e.id.removeprefix(WORKFLOW_ID_PREFIX)) for e in executions]
    )
    entries: list[InboxEntry] = []
    silent: list[str] = []
    for execution, answer in zip(executions, answers, strict=True):
        session_id = execution.id.removeprefix(WORKFLOW_ID_PREFIX)
        if answer is not None:
            entries += [InboxEntry(session_id, a) for a in answer if criteria.matches(a, now)]
        elif scan:
            silent.append(session_id)
        else:
            attributes = execution.typed_search_attributes
            entries.append(
                InboxEntry(
                    session_id,
                    None,
                    pending_tools=tuple(attributes.get(PENDING_TOOLS_ATTRIBUTE) or ()),
                    oldest=attributes.get(OLDEST_PENDING_APPROVAL_ATTRIBUTE),
                    waiting_call_id=attributes.get(WAITING_CALL_ID_ATTRIBUTE),
                )
            )
    return Inbox(_sorted(entries), scanned=scan, silent=silent)


async def decide_approval(conversations: ConversationClient, session_id: str, decision: HitlDecision) -> InputReceipt:
    """Decide a pending approval from the inbox: a tool call takes the decision as it is, a plan approval (named by
    its call id or its request id) an approve or reject `plan_decision` with the feedback.

    Raises:
        InvalidInputError: A plan cannot be edited, and its approval cannot be remembered.
        ConversationError: What the session answers (unknown session or call, a settled approval, ...).
    """
    approvals = await conversations.approvals(session_id)
    plan = next(
        (a for a in approvals if a.request_type == "plan" and decision.call_id in (a.call_id, a.request_id)), None
    )
    if plan is None:
        return await conversations.decide(session_id, decision)
    if decision.decision is Decision.EDIT:
        raise InvalidInputError("a plan cannot be edited, only approved or rejected (with feedback)")
    if decision.remember is not None and decision.remember.scope is not GrantScope.ONCE:
        raise InvalidInputError("a plan approval cannot be remembered")
    kind = PlanDecisionKind.APPROVE if decision.decision is Decision.APPROVE else PlanDecisionKind.REJECT
    return await conversations.decide_plan(
        session_id, PlanDecision(approval_request_id=plan.request_id, decision=kind, feedback=decision.feedback)
    )


# --- running sessions ---


@dataclass(frozen=True)
class SessionSummary:
    """A running session as `agent-runtime sessions` lists it; `state` is None when it did not answer."""

    session_id: str
    started: datetime | None
    state: SessionState | None
    status: str | None
    agent: str | None
    pending_approvals: int | None


async def list_sessions(
    client: Client, conversations: ConversationClient, *, limit: int | None
) -> list[SessionSummary]:
    """Running sessions, newest first, each with its state (or its search attributes if it did not answer)."""
    executions = [e async for e in client.list_workflows(running_sessions_query(), limit=limit)]
    states = await _bounded([_ask(conversations.state, e.id.removeprefix(WORKFLOW_ID_PREFIX)) for e in executions])
    summaries = []
    for execution, state in zip(executions, states, strict=True):
        attributes = execution.typed_search_attributes
        summaries.append(
            SessionSummary(
                session_id=execution.id.removeprefix(WORKFLOW_ID_PREFIX),
                started=execution.start_time,
                state=state,
                status=state.status.value if state else attributes.get(SESSION_STATUS_ATTRIBUTE),
                agent=state.current_agent.value if state else attributes.get(CURRENT_AGENT_ATTRIBUTE),
                pending_approvals=len(state.pending_approvals)
                if state
                else attributes.get(PENDING_APPROVALS_ATTRIBUTE),
            )
        )
    return summaries


# --- plumbing ---


async def _ask(query: Callable[[str], Awaitable[T]], session_id: str) -> T | None:
    """A query's answer, or None when the session does not answer in time or is gone."""
    try:
        return await query(session_id)
    except ConversationError:  # gone, closed or not answering (the client's answer timeout is QUERY_TIMEOUT)
        return None
    except RPCError as err:
        if err.status in (RPCStatusCode.UNAVAILABLE, RPCStatusCode.UNAUTHENTICATED, RPCStatusCode.PERMISSION_DENIED):
            raise
        return None


async def _bounded(calls: Sequence[Awaitable[T]]) -> list[T]:
    gate = asyncio.Semaphore(_CONCURRENT_QUERIES)

    async def one(call: Awaitable[T]) -> T:
        async with gate:
            return await call

    return list(await asyncio.gather(*(one(c) for c in calls)))


def _sorted(entries: list[InboxEntry]) -> list[InboxEntry]:
    return sorted(entries, key=lambda e: (e.since is None, e.since or datetime.max.replace(tzinfo=UTC), e.session_id))


def _unregistered_attribute(err: RPCError) -> bool:
    # The server answers a query on an unknown attribute with INVALID_ARGUMENT "invalid search attribute: ...".
    return err.status is RPCStatusCode.INVALID_ARGUMENT and "search attribute" in err.message.lower()


def _quoted(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("'", "\\'")
    return f"'{escaped}'"
