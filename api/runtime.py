"""What the routes share: the Temporal client, the typed conversation client, settings, and bounded reads.

Every read of a session is a workflow query (the workflow is the source of truth); each is bounded by
`ApiOptions.query_timeout_seconds` so an endpoint answers instead of hanging when no worker is up (bug B16: the
restore endpoints always answer). A read that does not arrive in time is diagnosed: a closed session, a session
whose workflow task keeps failing, or no worker at all each get their own answer. Listing uses Temporal visibility.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

from fastapi import HTTPException, Request
from temporalio.client import Client, WorkflowExecution, WorkflowExecutionStatus, WorkflowQueryFailedError
from temporalio.service import RPCError, RPCStatusCode

from activities.content import ContentStore
from client.conversation_client import ConversationClient, UnknownSessionError, timed_out
from settings import Settings
from workflows.agents import available_agents
from workflows.model import (
    CONVERSATION_WORKFLOW,
    STREAM_OFFSET_QUERY,
    WORKFLOW_ID_PREFIX,
    AgentType,
    ChatMessage,
    ConversationConfig,
    SessionState,
    workflow_id_for,
)

T = TypeVar("T")


@dataclass(frozen=True)
class ApiOptions:
    """Tunables of the HTTP API (not environment settings: the defaults suit production).

    Attributes:
        keepalive_seconds: An SSE comment line is sent after this long without an event, so proxies and read
            timeouts see a live stream while the LLM works. None sends none.
        stream_timeout_seconds: A stream that has not reached a wait point after this long ends with a final
            `status` chunk saying where to resume (`GET /agent/stream/{id}?from_offset=`).
        query_timeout_seconds: Bound of one workflow query or describe.
        metrics_session_limit: How many sessions (newest first) `/events/metrics` aggregates.
        query_concurrency: Parallel workflow queries when one request reads many sessions.
    """

    keepalive_seconds: float | None = 15.0
    stream_timeout_seconds: float = 600.0
    query_timeout_seconds: float = 10.0
    metrics_session_limit: int = 200
    query_concurrency: int = 16


class ApiRuntime:
    """Per-process state of the API, kept in `app.state.runtime`."""

    def __init__(
        self,
        client: Client,
        settings: Settings,
        options: ApiOptions,
        config: ConversationConfig,
        content: ContentStore | None = None,
    ) -> None:
        self.client = client
        self.settings = settings
        self.options = options
        self.session_config = config
        self.task_queue = settings.temporal.task_queue
        self.conversations = ConversationClient(
            client,
            task_queue=self.task_queue,
            config=config,
            content=content,
            answer_timeout=timedelta(seconds=options.query_timeout_seconds),
            started_by="the HTTP API",
        )
        self.agents: frozenset[AgentType] = available_agents(settings.multi_agent_mode)

    # --- bounded reads ---

    async def bounded(self, read: Awaitable[T], session_id: str | None = None) -> T:
        """Await a Temporal read within the query timeout; when it does not arrive, say why (a closed or stuck
        session), else answer 503."""
        try:
            return await asyncio.wait_for(read, self.options.query_timeout_seconds)
        except TimeoutError:
            raise await self._unanswered(session_id) from None

    async def _unanswered(self, session_id: str | None) -> Exception:
        """Why a read of a session did not arrive: its diagnosis, or a 503."""
        diagnosis = await self.conversations.diagnose(session_id) if session_id else None
        if diagnosis is not None:
            return diagnosis
        return HTTPException(503, "the session's state did not arrive in time (is a worker running?)")

    @property
    def _read_timeout(self) -> timedelta:
        return timedelta(seconds=self.options.query_timeout_seconds)

    async def state(self, session_id: str) -> SessionState:
        return await self.conversations.state(session_id)

    async def history(self, session_id: str) -> list[ChatMessage]:
        return await self.conversations.history(session_id)

    async def current_offset(self, session_id: str) -> int | None:
        """The session's next stream offset, or None when the session does not exist."""
        handle = self.client.get_workflow_handle(workflow_id_for(session_id))
        try:
            # The stream's offset query (WorkflowStreamClient.get_offset), with an RPC deadline of its own.
            return await handle.query(STREAM_OFFSET_QUERY, result_type=int, rpc_timeout=self._read_timeout)
        except RPCError as err:
            if err.status is RPCStatusCode.NOT_FOUND:
                return None
            if timed_out(err):
                raise await self._unanswered(session_id) from err
            raise
        except WorkflowQueryFailedError as err:
            raise await self.conversations.diagnose(session_id) or err from err

    async def describe_status(self, session_id: str) -> tuple[bool, datetime]:
        """(is the workflow running, when it started); raises UnknownSessionError."""
        handle = self.client.get_workflow_handle(workflow_id_for(session_id))
        try:
            description = await handle.describe(rpc_timeout=self._read_timeout)
        except RPCError as err:
            if err.status is RPCStatusCode.NOT_FOUND:
                raise UnknownSessionError(f"no session {session_id!r}") from err
            if timed_out(err):
                raise HTTPException(503, "Temporal did not answer in time") from err
            raise
        return description.status == WorkflowExecutionStatus.RUNNING, description.start_time

    # --- visibility ---

    def visibility_query(self, *, active_only: bool) -> str:
        task_queue = self.task_queue.replace("\\", "\\\\").replace('"', '\\"')
        query = f'WorkflowType = "{CONVERSATION_WORKFLOW}" AND TaskQueue = "{task_queue}"'
        # Each continue-as-new leaves a closed run behind; only the newest run of a session counts.
        status = 'ExecutionStatus = "Running"' if active_only else 'ExecutionStatus != "ContinuedAsNew"'
        return f"{query} AND {status}"

    async def list_sessions(self, *, active_only: bool, offset: int, limit: int) -> tuple[list[WorkflowExecution], int]:
        """One page of sessions, newest first, and how many there are in all."""
        query = self.visibility_query(active_only=active_only)
        page: list[WorkflowExecution] = []
        seen = 0
        async for execution in self.client.list_workflows(query, page_size=min(1000, offset + limit)):
            seen += 1
            if seen > offset:
                page.append(execution)
            if len(page) >= limit:
                break
        total = (await self.client.count_workflows(query)).count
        return page, max(total, offset + len(page))

    async def gather_bounded(self, reads: Sequence[Callable[[], Awaitable[T]]]) -> list[T]:
        """Run reads with at most `query_concurrency` in flight, keeping their order."""
        gate = asyncio.Semaphore(self.options.query_concurrency)

        async def run(read: Callable[[], Awaitable[T]]) -> T:
            async with gate:
                return await read()

        return list(await asyncio.gather(*(run(read) for read in reads)))


def session_id_of(execution: WorkflowExecution) -> str:
    return execution.id.removeprefix(WORKFLOW_ID_PREFIX)


async def get_runtime(request: Request) -> ApiRuntime:
    """The app's runtime. `async` although it awaits nothing: FastAPI runs a plain `def` dependency in a thread
    pool, a hop to another thread and back on every request."""
    runtime: ApiRuntime = request.app.state.runtime
    return runtime
