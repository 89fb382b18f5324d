"""The Temporal worker: the conversation workflow and the activities, on one task queue.

`python worker.py` (or `agent-runtime worker`) runs it with settings from the environment. It checks that agents,
prompts, tools and the approval policy agree before it polls (bug B5), so a bad deploy fails at start instead of
in front of a user.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
from temporalio.client import Client
from temporalio.worker import Worker

from activities.content import ContentActivities, ContentStore
from activities.grants import GrantActivities
from activities.llm import LlmActivities
from activities.persistence import PersistenceActivities
from activities.postgres import close_pool, create_pool
from activities.webhook import WebhookActivities
from client.connection import connect_client, open_content_store, settle_after_shutdown, with_content_store
from client.telemetry import telemetry
from settings import Settings, SettingsError, WorkerSettings, load_settings
from workflows.conversation import ConversationWorkflow
from workflows.project_grants import ProjectGrantsWorkflow
from workflows.selfcheck import check_consistency

log = logging.getLogger("agent_runtime.worker")

# Lets an LLM call in flight finish on shutdown; anything longer is retried elsewhere.
GRACEFUL_SHUTDOWN_TIMEOUT = timedelta(seconds=5)


@contextlib.asynccontextmanager
async def running_worker(
    client: Client,
    settings: Settings,
    content: ContentStore | None = None,
    *,
    workflow: type[ConversationWorkflow] = ConversationWorkflow,
) -> AsyncIterator[Worker]:
    """A worker polling in the background for as long as the context is open.

    Args:
        client: The Temporal connection; the worker uses it with a data converter over the content store.
        settings: Process settings.
        content: The content store, when the caller shares it (an embedded client must use the same one); None
            opens the one the settings describe for the worker's lifetime.
        workflow: The conversation workflow (tests run a variant with a planted bug).
    """
    check_consistency(settings.approval_policy())
    async with contextlib.AsyncExitStack() as stack:
        if content is None:
            content = await stack.enter_async_context(open_content_store(settings))
        async with _polling(client, settings, content, workflow) as worker:
            yield worker


@contextlib.asynccontextmanager
async def _polling(
    client: Client, settings: Settings, content: ContentStore, workflow: type[ConversationWorkflow]
) -> AsyncIterator[Worker]:
    client = with_content_store(client, content, settings.content.external_storage_threshold)
    async with httpx.AsyncClient() as http, _projection_writer(settings, content) as projection:
        llm = LlmActivities(
            http,
            content=content,
            chat_completions_url=settings.chat_completions_url(),
            api_key=settings.llm_api_key.get_secret_value() if settings.llm_api_key else None,
            internal_api_key=settings.internal_api_key.get_secret_value() if settings.internal_api_key else None,
        )
        approval = settings.approval
        webhook = WebhookActivities(
            http,
            url=approval.webhook_url.get_secret_value() if approval.webhook_url else None,
            secret=approval.webhook_secret.get_secret_value() if approval.webhook_secret else None,
        )
        worker = Worker(
            client,
            task_queue=settings.temporal.task_queue,
            workflows=[workflow, ProjectGrantsWorkflow],
            activities=[
                llm.chat_completion,
                ContentActivities(content).archive_transcript,
                *([projection.record] if projection else []),
                *GrantActivities(client).all(),
                webhook.notify_approval,
            ],
            graceful_shutdown_timeout=GRACEFUL_SHUTDOWN_TIMEOUT,
            **worker_options(settings.worker),
        )
        async with worker:
            log.info("Worker polling task queue %r", settings.temporal.task_queue)
            yield worker


def worker_options(worker: WorkerSettings) -> dict[str, Any]:
    """The `Worker` arguments that bound what one worker process takes on (settings `AGENT_RUNTIME__WORKER__*`).

    The sticky cache bounds the worker's memory however many sessions are parked: a session it evicted is replayed
    from its history on its next input. A dead worker's sessions stay pinned to its sticky queue until the sticky
    schedule-to-start timeout runs out; Temporal's default (10 s) is an approval click that seems to hang after a
    restart, while a task moved to the shared queue only costs a replay. README, "Worker settings", has the figures.
    """
    return {
        "max_cached_workflows": worker.max_cached_workflows,
        "max_concurrent_workflow_tasks": worker.max_concurrent_workflow_tasks,
        "max_concurrent_activities": worker.max_concurrent_activities,
        "max_concurrent_local_activities": worker.max_concurrent_local_activities,
        "sticky_queue_schedule_to_start_timeout": timedelta(
            seconds=worker.sticky_queue_schedule_to_start_timeout_seconds
        ),
    }


@contextlib.asynccontextmanager
async def _projection_writer(settings: Settings, content: ContentStore) -> AsyncIterator[PersistenceActivities | None]:
    """The projection's writer when a database is configured: a pool, and the schema migrated.

    A database that is down does not stop the worker: conversations go on, the workflow keeps the records, and the
    writer migrates and writes once PostgreSQL answers again.
    """
    if settings.database_url is None:
        yield None
        return
    dsn = settings.database_url.get_secret_value()
    pool = await create_pool(dsn)
    try:
        writer = PersistenceActivities(pool, dsn=dsn, content=content)
        if await writer.prepare():
            log.info("Projection database ready (schema migrated)")
        yield writer
    finally:
        await close_pool(pool)


async def run_worker(settings: Settings) -> None:
    """Connect to Temporal and run the worker until SIGINT or SIGTERM (what `docker stop` and Kubernetes send).

    Either signal stops polling and gives running activities `GRACEFUL_SHUTDOWN_TIMEOUT` to finish; whatever is cut
    short is retried by Temporal on another worker, so a shutdown loses nothing.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with telemetry(settings.otel) as otel, open_content_store(settings) as content:
        client = await connect_client(settings, content=content, **otel.client_options())
        async with running_worker(client, settings, content):
            await stop.wait()
            log.info("Stopping the worker")
    await settle_after_shutdown()


def main() -> int:
    """`python worker.py`: exit 0 after a signal, 2 with the offending variables named when settings are bad."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = load_settings()
    except SettingsError as err:
        print(f"worker: {err}", file=sys.stderr)  # noqa: T201
        return 2
    asyncio.run(run_worker(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
