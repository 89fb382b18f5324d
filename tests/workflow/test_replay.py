"""Replay tests: the current workflow code must replay every recorded history (see tests/record_histories.py).

A history is what a running session already did. Replaying it against changed code re-runs the workflow and
compares the commands it issues with the recorded events; any difference is a nondeterminism error, which in
production would wedge every session in flight. These tests prove three things: every recorded history replays;
the check is not vacuous (a workflow changed in a classic incompatible way fails it); and a history recorded just
now by the current code replays too, so the gate does not rely on the files alone.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, WorkflowReplayResult
from temporalio.workflow import NondeterminismError

from client.connection import ensure_search_attributes
from devstack.fake_llm import FakeLlmServer
from devstack.temporal import DevServer, start_time_skipping_server
from tests.record_histories import HISTORY_DIR, SCENARIOS, Scenario, record_scenario, recorded_files
from workflows.conversation import ConversationWorkflow
from workflows.model import CONVERSATION_WORKFLOW
from workflows.state import ConversationInput

HISTORY_FILES = sorted(HISTORY_DIR.glob("*.json"))


def _load(path: Path) -> WorkflowHistory:
    # The export format carries no workflow id; the file name stands in for it (as `agent-runtime replay` does).
    return WorkflowHistory.from_json(path.stem, path.read_text(encoding="utf-8"))


async def _replay(histories: list[WorkflowHistory], workflow_class: type) -> list[WorkflowReplayResult]:
    replayer = Replayer(workflows=[workflow_class], data_converter=pydantic_data_converter)
    results: list[WorkflowReplayResult] = []

    async def source() -> AsyncIterator[WorkflowHistory]:
        for history in histories:
            yield history

    async with replayer.workflow_replay_iterator(source()) as replayed:
        async for result in replayed:
            results.append(result)
    return results


# --- Deliberately incompatible versions of the workflow (never registered with a worker) ---
# Not sandboxed: the sandbox re-imports the module that defines a workflow, and this one imports pytest and the
# recorder. The production class they extend is replayed sandboxed everywhere else, as the worker runs it.


@workflow.defn(name=CONVERSATION_WORKFLOW, sandboxed=False)
class TimerFirstWorkflow(ConversationWorkflow):
    """Someone added a durable sleep before the main loop."""

    @workflow.init
    def __init__(self, input: ConversationInput) -> None:
        super().__init__(input)

    @workflow.run
    async def run(self, input: ConversationInput) -> None:
        await workflow.sleep(timedelta(seconds=5))
        await super().run(input)


@workflow.defn(name=CONVERSATION_WORKFLOW, sandboxed=False)
class ExtraActivityWorkflow(ConversationWorkflow):
    """Someone added an audit activity before the main loop (a new activity type in front of the LLM call)."""

    @workflow.init
    def __init__(self, input: ConversationInput) -> None:
        super().__init__(input)

    @workflow.run
    async def run(self, input: ConversationInput) -> None:
        await workflow.execute_activity(
            "audit.session_started", input.session_id, start_to_close_timeout=timedelta(seconds=10)
        )
        await super().run(input)


# --- Recorded histories ---


def test_histories_are_recorded() -> None:
    """An empty directory must not pass the gate, and every scenario of the recorder has its file."""
    assert HISTORY_FILES, f"no recorded history in {HISTORY_DIR}: run .venv/bin/python -m tests.record_histories"
    missing = [s.name for s in SCENARIOS if not recorded_files(s)]
    assert not missing, f"scenarios without a recorded history: {missing} (run python -m tests.record_histories)"


@pytest.mark.parametrize("path", HISTORY_FILES, ids=[p.stem for p in HISTORY_FILES])
async def test_recorded_history_replays(path: Path) -> None:
    history = _load(path)
    assert history.events[0].workflow_execution_started_event_attributes.workflow_type.name == CONVERSATION_WORKFLOW
    replayer = Replayer(workflows=[ConversationWorkflow], data_converter=pydantic_data_converter)
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{path.name} no longer replays: {result.replay_failure}"


@pytest.mark.parametrize("incompatible", [TimerFirstWorkflow, ExtraActivityWorkflow], ids=lambda c: c.__name__)
async def test_an_incompatible_change_fails_replay(incompatible: type) -> None:
    """The gate can fail: every history whose first run issued a command diverges from the changed code."""
    results = await _replay([_load(p) for p in HISTORY_FILES], incompatible)
    failures = {r.history.workflow_id: r.replay_failure for r in results if r.replay_failure is not None}
    assert all(isinstance(f, NondeterminismError) for f in failures.values()), failures
    # Only a run that issued no command at all (a fresh continue-as-new run, still idle) has nothing to diverge from.
    idle = {p.stem for p in HISTORY_FILES if not _has_commands(_load(p))}
    assert set(failures) == {p.stem for p in HISTORY_FILES} - idle
    assert "approve_tool_result" in failures


def _has_commands(history: WorkflowHistory) -> bool:
    command_events = {
        "activity_task_scheduled_event_attributes",
        "timer_started_event_attributes",
        "workflow_execution_continued_as_new_event_attributes",
    }
    return any(event.WhichOneof("attributes") in command_events for event in history.events)


# --- A history recorded now ---


ON_TIME_SKIPPING = [s for s in SCENARIOS if not s.dev_server]
ON_DEV_SERVER = [s for s in SCENARIOS if s.dev_server]


@pytest.mark.parametrize("scenario", ON_TIME_SKIPPING, ids=[s.name for s in ON_TIME_SKIPPING])
async def test_a_fresh_history_replays(
    scenario: Scenario, temporal_env: WorkflowEnvironment, fake_llm: FakeLlmServer
) -> None:
    """Each scenario played now, on the current code, replays cleanly (and the changed code fails on it)."""
    if scenario.moves_clock:
        env = await start_time_skipping_server()  # see the `clock_env` fixture
        try:
            histories = await record_scenario(env, fake_llm, scenario, unique=True)
        finally:
            await env.shutdown()
    else:
        histories = await record_scenario(temporal_env, fake_llm, scenario, unique=True)
    await _assert_replays_only_on_this_code(histories)


@pytest.mark.parametrize("scenario", ON_DEV_SERVER, ids=[s.name for s in ON_DEV_SERVER])
async def test_a_fresh_dev_server_history_replays(
    scenario: Scenario, dev_server: DevServer, fake_llm: FakeLlmServer
) -> None:
    """The same for the scenarios that set the custom search attributes (the dev server has them registered)."""
    assert await ensure_search_attributes(dev_server.client)
    await _assert_replays_only_on_this_code(await record_scenario(dev_server, fake_llm, scenario, unique=True))


async def _assert_replays_only_on_this_code(histories: list[WorkflowHistory]) -> None:
    assert [r.replay_failure for r in await _replay(histories, ConversationWorkflow)] == [None] * len(histories)
    first_run = await _replay(histories[:1], TimerFirstWorkflow)
    assert isinstance(first_run[0].replay_failure, NondeterminismError)
