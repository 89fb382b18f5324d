"""Replaying session histories against the current workflow code: the gate for every change to the workflow.

A history recorded by older code replays cleanly only if the new code issues the same commands in the same order.
`replay_histories` runs the SDK's `Replayer` over histories from three sources, the way `agent-runtime replay`
does: one session's whole continue-as-new chain (`workflow_histories`), every execution a visibility query matches
(`query_histories`), or exported JSON files (`file_histories`, the format of `export_history`, the Temporal CLI and
the Web UI's download). Each history gets one `ReplayReport`: OK, NONDETERMINISTIC (the new code diverges from
what happened) or FAILED (the history could not be fetched, read or replayed for another reason).

The replayer must be configured like the worker (`worker.running_worker`): same workflows, same data converter.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from google.protobuf import json_format
from temporalio.client import Client, WorkflowHistory
from temporalio.runtime import LoggingConfig, Runtime, TelemetryConfig, TelemetryFilter
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Replayer
from temporalio.workflow import NondeterminismError

from activities.content import ContentStore
from client.inbox import sessions_query
from client.plugin import AgentRuntimePlugin
from workflows.conversation import ConversationWorkflow
from workflows.project_grants import ProjectGrantsWorkflow

# What `agent-runtime replay` replays against (the sessions, and the projects' remembered decisions). Tests swap in a
# changed workflow to prove the gate catches it.
WORKFLOWS: Sequence[type] = (ConversationWorkflow, ProjectGrantsWorkflow)

DEFAULT_QUERY = sessions_query()
_DETAIL_CHARS = 300
# The SDK core wraps the reason in a Rust debug dump: `... Failure { message: "[TMPRL1100] Nondeterminism error: ..."`.
_CORE_MESSAGE = re.compile(r'message: "((?:[^"\\]|\\.)*)"')


class Verdict(StrEnum):
    OK = "OK"
    NONDETERMINISTIC = "NONDETERMINISTIC"
    FAILED = "FAILED"


@dataclass(frozen=True)
class ReplayReport:
    """The outcome of replaying one history.

    Attributes:
        workflow_id: The workflow the history belongs to.
        run_id: Its run, when the history could be read.
        source: Where it came from: a file path, or "server".
        verdict: OK, NONDETERMINISTIC or FAILED.
        detail: The first line of the error, empty when OK.
    """

    workflow_id: str
    run_id: str | None
    source: str
    verdict: Verdict
    detail: str = ""


@dataclass(frozen=True)
class LoadFailure:
    """A history that could not be fetched or read; it is reported as FAILED without being replayed."""

    workflow_id: str
    source: str
    error: str


HistoryItem = tuple[WorkflowHistory, str] | LoadFailure


class UnknownWorkflowError(Exception):
    """No workflow execution exists with this id."""


async def workflow_histories(client: Client, workflow_id: str) -> AsyncIterator[HistoryItem]:
    """Every run of a workflow's continue-as-new chain, oldest first.

    The chain is followed backwards from the latest run through each run's `continued_execution_run_id`, which
    needs no visibility. Runs already removed by the namespace's retention end the chain.

    Raises:
        UnknownWorkflowError: The workflow does not exist (checked before anything is yielded).
    """
    runs: list[WorkflowHistory] = []
    run_id: str | None = None
    while True:
        try:
            history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
        except RPCError as err:
            if err.status is not RPCStatusCode.NOT_FOUND:
                raise
            if run_id is None:
                raise UnknownWorkflowError(f"no workflow {workflow_id!r}") from err
            break  # older runs are past retention
        runs.append(history)
        run_id = history.events[0].workflow_execution_started_event_attributes.continued_execution_run_id
        if not run_id:
            break
    for history in reversed(runs):
        yield history, "server"


async def export_history(client: Client, workflow_id: str) -> WorkflowHistory:
    """The latest run's history; its `to_json()` is what `agent-runtime export` writes and `file_histories` reads.

    Raises:
        UnknownWorkflowError: The workflow does not exist.
    """
    try:
        return await client.get_workflow_handle(workflow_id).fetch_history()
    except RPCError as err:
        if err.status is RPCStatusCode.NOT_FOUND:
            raise UnknownWorkflowError(f"no workflow {workflow_id!r}") from err
        raise


async def query_histories(client: Client, query: str, *, limit: int | None = None) -> AsyncIterator[HistoryItem]:
    """The history of every execution (every run) a visibility query matches.

    Raises:
        RPCError: The query is invalid (status INVALID_ARGUMENT) or the server is unreachable.
    """
    async for execution in client.list_workflows(query, limit=limit):
        try:
            history = await client.get_workflow_handle(execution.id, run_id=execution.run_id).fetch_history()
        except RPCError as err:
            yield LoadFailure(execution.id, "server", f"could not fetch run {execution.run_id}: {err.message}")
            continue
        yield history, "server"


async def file_histories(paths: Iterable[Path], *, workflow_id: str | None = None) -> AsyncIterator[HistoryItem]:
    """Histories from exported JSON files.

    Args:
        paths: The files.
        workflow_id: The workflow id of every file; by default each file's name without `.json`, which is how
            `export_history` names them (`session-<id>.json`).
    """
    for path in paths:
        wid = workflow_id or path.name.removesuffix(".json")
        try:
            history = WorkflowHistory.from_json(wid, path.read_text(encoding="utf-8"))
            history.run_id  # noqa: B018 - fails here, not in the replayer, when the file is not a history
        except (OSError, ValueError, RuntimeError, json_format.Error) as err:
            yield LoadFailure(wid, str(path), f"could not read: {_first_line(err)}")
            continue
        yield history, str(path)


async def replay_histories(
    items: AsyncIterator[HistoryItem],
    *,
    workflows: Sequence[type] = WORKFLOWS,
    content: ContentStore | None = None,
) -> AsyncIterator[ReplayReport]:
    """Replay histories against workflow code, one report per history, in order.

    Args:
        items: Histories with their source, or failures to load one.
        workflows: The workflow classes to replay against; the current `ConversationWorkflow` by default.
        content: The content store the workers use: payloads stored externally are read from it (it is only contacted
            for histories that have such payloads).

    Yields:
        One report per item.
    """
    replayer = Replayer(workflows=list(workflows), plugins=[AgentRuntimePlugin(content)], runtime=_quiet_runtime())
    sources: dict[int, str] = {}
    failures: list[ReplayReport] = []

    async def histories() -> AsyncIterator[WorkflowHistory]:
        async for item in items:
            if isinstance(item, LoadFailure):
                failures.append(ReplayReport(item.workflow_id, None, item.source, Verdict.FAILED, item.error))
                continue
            history, source = item
            sources[id(history)] = source
            yield history

    async with replayer.workflow_replay_iterator(histories()) as results:
        async for result in results:
            while failures:
                yield failures.pop(0)
            history = result.history
            yield _report(history, sources.pop(id(history), "server"), result.replay_failure)
    while failures:
        yield failures.pop(0)


def _report(history: WorkflowHistory, source: str, failure: Exception | None) -> ReplayReport:
    if failure is None:
        verdict, detail = Verdict.OK, ""
    elif isinstance(failure, NondeterminismError):
        verdict, detail = Verdict.NONDETERMINISTIC, _first_line(failure)
    else:
        verdict, detail = Verdict.FAILED, _first_line(failure)
    return ReplayReport(history.workflow_id, history.run_id, source, verdict, detail)


def _quiet_runtime() -> Runtime:
    # The core logs every failed replay as a warning on stderr; the report already says it, once, on stdout.
    quiet = TelemetryFilter(core_level="ERROR", other_level="ERROR")
    return Runtime(telemetry=TelemetryConfig(logging=LoggingConfig(filter=quiet)))


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    core = _CORE_MESSAGE.search(text)
    lines = (core.group(1) if core else text).splitlines()
    line = lines[0] if lines else type(err).__name__
    return line if len(line) <= _DETAIL_CHARS else line[: _DETAIL_CHARS - 1] + "…"
