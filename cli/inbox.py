"""The operator's view across sessions: every pending approval (the inbox) and every running session.

Visibility finds the sessions worth asking, through the custom search attributes of `workflows.model` (registered
by the dev stack and by the compose setup job); each of them is then asked for its own state with a query, which
is exact and current while visibility lags by up to a second. Where the attributes are not registered, every
running session is asked instead. A session that does not answer within `QUERY_TIMEOUT` (no worker running) is
still listed from its search attributes, so stuck sessions show up even while every worker is down.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TypeVar

from temporalio.client import Client, WorkflowExecution
from temporalio.service import RPCError, RPCStatusCode

from cli.visibility import sessions_query, stuck_approvals_query
from client.conversation_client import ConversationClient, ConversationError
from workflows.model import (
    CURRENT_AGENT_ATTRIBUTE,
    OLDEST_PENDING_APPROVAL_ATTRIBUTE,
    PENDING_APPROVALS_ATTRIBUTE,
    PENDING_TOOLS_ATTRIBUTE,
    SESSION_STATUS_ATTRIBUTE,
    WORKFLOW_ID_PREFIX,
    PendingApproval,
    SessionState,
)

# A query needs a worker; without one it would wait for the RPC deadline. Long enough for a busy worker.
QUERY_TIMEOUT = timedelta(seconds=5)
_CONCURRENT_QUERIES = 64

T = TypeVar("T")


@dataclass(frozen=True)
class InboxFilter:
    """Which pending approvals to list; every given criterion must hold.

    Attributes:
        older_than: Pending for at least this long.
        tool: Tool name (exact).
        session_id: Only this session (asked directly, no visibility needed).
        agent: The agent that asked for the tool call.
    """

    older_than: timedelta | None = None
    tool: str | None = None
    session_id: str | None = None
    agent: str | None = None

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
    """

    session_id: str
    approval: PendingApproval | None
    pending_tools: tuple[str, ...] = ()
    oldest: datetime | None = None

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


@dataclass(frozen=True)
class SessionSummary:
    """A running session as `agent-runtime sessions` lists it; `state` is None when it did not answer."""

    session_id: str
    started: datetime | None
    state: SessionState | None
    status: str | None
    agent: str | None
    pending_approvals: int | None


def running_sessions_query() -> str:
    return f"{sessions_query()} AND ExecutionStatus = 'Running'"


def inbox_query(criteria: InboxFilter, *, now: datetime) -> str:
    """The visibility query for sessions that may hold matching approvals (the Web UI accepts it too)."""
    if criteria.older_than is not None:
        query = stuck_approvals_query(criteria.older_than, now=now)
    else:
        query = f"{running_sessions_query()} AND {PENDING_APPROVALS_ATTRIBUTE.name} > 0"
    if criteria.tool is not None:
        query += f" AND {PENDING_TOOLS_ATTRIBUTE.name} = {_quoted(criteria.tool)}"
    return query


async def find_pending_approvals(
    client: Client, conversations: ConversationClient, criteria: InboxFilter, *, now: datetime, scan: bool = False
) -> Inbox:
    """Every pending approval matching `criteria`, across sessions.

    Args:
        client: Temporal client (for visibility).
        conversations: The typed client (for the queries).
        criteria: What to list.
        now: The moment ages are measured from.
        scan: Ask every running session, ignoring the search attributes (for sessions started before the
            attributes were registered).

    Raises:
        UnknownSessionError: `criteria.session_id` names no session.
        SessionStuckError: `criteria.session_id`'s session did not answer in time (the client's answer timeout).
        RPCError: Temporal refused or could not be reached.
    """
    if criteria.session_id is not None:
        approvals = await conversations.pending_approvals(criteria.session_id)
        return Inbox(_sorted([InboxEntry(a.session_id, a) for a in approvals if criteria.matches(a, now)]))
    executions: list[WorkflowExecution] = []
    if not scan:
        try:
            executions = [e async for e in client.list_workflows(inbox_query(criteria, now=now))]
        except RPCError as err:
            if not _unregistered_attribute(err):
                raise
            scan = True
    if scan:
        executions = [e async for e in client.list_workflows(running_sessions_query())]
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
                )
            )
    return Inbox(_sorted(entries), scanned=scan, silent=silent)


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
    return sorted(entries, key=lambda e: (e.since is None, e.since or datetime.max, e.session_id))


def _unregistered_attribute(err: RPCError) -> bool:
    # The server answers a query on an unknown attribute with INVALID_ARGUMENT "invalid search attribute: ...".
    return err.status is RPCStatusCode.INVALID_ARGUMENT and "search attribute" in err.message.lower()


def _quoted(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("'", "\\'")
    return f"'{escaped}'"
