"""The Temporal worker: the conversation workflow and the activities, on one task queue.

`python worker.py` (or `agent-runtime worker`) runs it with settings from the environment. It checks that agents,
prompts, tools and the approval policy agree before it polls (bug B5), so a bad deploy fails at start instead of
in front of a user.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
from temporalio.client import Client
from temporalio.worker import Worker

from activities.llm import LlmActivities
from client.connection import connect_client
from client.telemetry import telemetry
from settings import Settings, load_settings
from workflows.conversation import ConversationWorkflow
from workflows.selfcheck import check_consistency

log = logging.getLogger("agent_runtime.worker")

STICKY_SCHEDULE_TO_START_TIMEOUT = timedelta(seconds=1)


@contextlib.asynccontextmanager
async def running_worker(client: Client, settings: Settings) -> AsyncIterator[Worker]:
    """A worker polling in the background for as long as the context is open."""
    check_consistency(settings.approval_policy())
    async with httpx.AsyncClient() as http:
        llm = LlmActivities(
            http,
            chat_completions_url=settings.chat_completions_url(),
            api_key=settings.llm_api_key.get_secret_value() if settings.llm_api_key else None,
            internal_api_key=settings.internal_api_key.get_secret_value() if settings.internal_api_key else None,
        )
        worker = Worker(
            client,
            task_queue=settings.temporal.task_queue,
            workflows=[ConversationWorkflow],
            activities=[llm.chat_completion],
            # A dead worker's sessions stay pinned to its sticky queue until this runs out; the default (10 s) is
            # an approval click that seems to hang after a restart. A cache miss only costs a replay.
            sticky_queue_schedule_to_start_timeout=STICKY_SCHEDULE_TO_START_TIMEOUT,
        )
        async with worker:
            log.info("Worker polling task queue %r", settings.temporal.task_queue)
            yield worker


async def run_worker(settings: Settings) -> None:
    """Connect to Temporal and run the worker until cancelled (Ctrl-C)."""
    async with telemetry(settings.otel) as otel:
        client = await connect_client(settings.temporal, **otel.client_options())
        async with running_worker(client, settings):
            await asyncio.Event().wait()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_worker(load_settings()))


if __name__ == "__main__":
    main()
