"""The operator commands through the real `agent-runtime` entry point, against the Temporal dev server.

Each command runs `cli.main.main` in a thread (it owns its event loop, as in a terminal), configured only by
AGENT_RUNTIME__* variables; sessions are driven by a real worker and the fake LLM over HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cli import replay
from cli.main import main
from client import inbox
from client.conversation_client import ConversationClient
from devstack.fake_llm import FakeLlmServer, FakeReply
from devstack.temporal import DevServer, free_port, start_dev_server
from settings import Settings, TemporalSettings
from tests.support import Session, call, classify, final, text
from tests.workflow_changes import TimerFirstConversationWorkflow
from worker import running_worker
from workflows.model import (
    SEARCH_ATTRIBUTES,
    ChunkType,
    workflow_id_for,
)

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Ran:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@pytest.fixture(scope="module")
async def dev_server() -> AsyncIterator[DevServer]:
    server = await start_dev_server(ui=False, search_attributes=SEARCH_ATTRIBUTES)
    try:
        yield server
    finally:
        await server.shutdown()


@pytest.fixture(autouse=True)
async def no_sessions_left(dev_server: DevServer) -> AsyncIterator[None]:
    """Each test's worker stops with it; its sessions would then be listed as not answering by the next tests."""
    yield
    async for execution in dev_server.client.list_workflows("ExecutionStatus = 'Running'"):
        await dev_server.client.get_workflow_handle(execution.id).terminate("test over")


@pytest.fixture
def agent_runtime(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, dev_server: DevServer
) -> Callable[..., Any]:
    """Run `agent-runtime ARGS...` in-process against the module's dev server; returns exit code and output."""
    monkeypatch.setenv("AGENT_RUNTIME__TEMPORAL__ADDRESS", dev_server.target)

    async def run(*argv: str) -> Ran:
        capsys.readouterr()
        try:
            code = await asyncio.to_thread(main, list(argv))
        except SystemExit as exit_:  # argparse's usage errors
            code = int(exit_.code or 0)
        out, err = capsys.readouterr()
        return Ran(code, out, err)

    return run


@contextlib.asynccontextmanager
async def runtime(
    server: DevServer,
    llm: FakeLlmServer,
    *,
    search_attributes: bool = True,
    task_queue: str | None = None,
    **overrides: Any,
) -> AsyncIterator[ConversationClient]:
    """A worker on a fresh task queue of `server`, and the client a gateway would use."""
    settings = Settings(
        llm_proxy_url=llm.base_url,
        temporal=TemporalSettings(address=server.target, task_queue=task_queue or f"ops-{uuid.uuid4().hex[:8]}"),
        **overrides,
    )
    config = settings.conversation_config().model_copy(update={"search_attributes": search_attributes})
    async with running_worker(server.client, settings):
        yield ConversationClient(server.client, task_queue=settings.temporal.task_queue, config=config)


async def parked(client: ConversationClient, llm: FakeLlmServer, tool: str, call_id: str, **arguments: Any) -> Session:
    """A new session whose coder asked for `tool` and now waits for a human."""
    session = Session(client, llm)
    session.script(classify("coder"), call(tool, call_id, **arguments))
    assert final(await session.say(f"please use {tool}")).requires_approval is True
    return session


async def eventually(run: Callable[[], Any], done: Callable[[Any], bool], attempts: int = 50) -> Any:
    """Visibility lags the workflow by a moment: repeat a command until its result is what we wait for."""
    result = await run()
    for _ in range(attempts):
        if done(result):
            break
        await asyncio.sleep(0.2)
        result = await run()
    return result


def mine(rows: list[dict[str, Any]], *sessions: Session) -> dict[str, dict[str, Any]]:
    ids = {s.id for s in sessions}
    return {row["session_id"]: row for row in rows if row["session_id"] in ids}


# --- approvals: the cross-session inbox ---


async def test_inbox_lists_filters_and_decides(
    agent_runtime: Callable[..., Any], dev_server: DevServer, fake_llm: FakeLlmServer
) -> None:
    async with runtime(dev_server, fake_llm) as client:
        command = await parked(client, fake_llm, "execute_command", "call_c1", command="dart analyze")
        write = await parked(client, fake_llm, "write_file", "call_w1", path="main.py", content="print(1)")
        idle = Session(client, fake_llm)
        idle.script(classify("ask"), text("Hello."))
        final(await idle.say("hello"))

        listed = await eventually(
            lambda: agent_runtime("approvals", "list", "--json"), lambda r: len(mine(r.json(), command, write)) == 2
        )
        assert listed.code == 0
        rows = mine(listed.json(), command, write, idle)
        assert set(rows) == {command.id, write.id}
        row = rows[command.id]
        assert (row["tool_name"], row["call_id"], row["agent"], row["status"]) == (
            "execute_command",
            "call_c1",
            "coder",
            "pending",
        )
        assert row["arguments"] == {"command": "dart analyze"}
        assert row["arguments_summary"] == 'command="dart analyze"'
        assert row["workflow_id"] == workflow_id_for(command.id) and row["answered"] is True
        assert 0 <= row["age_seconds"] < 60 and row["expires_at"] is None

        # The readable table, one session.
        table = await agent_runtime("approvals", "list", "--session", command.id)
        header, line = table.out.splitlines()[:2]
        assert header.split() == ["AGE", "SESSION", "TOOL", "ARGUMENTS", "AGENT", "CALL", "ID", "EXPIRES"]
        assert command.id in line and 'command="dart analyze"' in line and "call_c1" in line and "never" in line
        assert "1 pending approval(s) in 1 session(s)" in table.out
        assert f"Decide the oldest: agent-runtime approvals approve {command.id} call_c1" in table.out
        # Bare `approvals` is the inbox, with the same options.
        bare = await agent_runtime("approvals", "--session", command.id)
        assert bare.code == 0 and bare.out.splitlines()[0] == table.out.splitlines()[0]
        assert "1 pending approval(s) in 1 session(s)" in bare.out and "call_c1" in bare.out
        both = await agent_runtime("approvals", "--session", command.id, "--session", write.id, "--json")
        assert {r["call_id"] for r in both.json()} == {"call_c1", "call_w1"}
        assert both.json()[0]["commands"]["approve"] == f"agent-runtime approvals approve {command.id} call_c1"

        # Filters: by tool (visibility narrows, the session's answer decides), agent, age.
        by_tool = await agent_runtime("approvals", "list", "--tool", "write_file", "--json")
        assert set(mine(by_tool.json(), command, write)) == {write.id}
        by_agent = await agent_runtime("approvals", "list", "--agent", "ask", "--json")
        assert mine(by_agent.json(), command, write) == {}
        old = await agent_runtime("approvals", "list", "--older-than", "15m", "--fail-if-any")
        assert (old.code, old.out.strip()) == (0, "No pending approvals.")
        monitored = await agent_runtime("approvals", "list", "--fail-if-any", "--json")
        assert monitored.code == 3

        # Decisions, through the update validators.
        approved = await agent_runtime("approvals", "approve", command.id, "call_c1")
        assert (approved.code, approved.out.strip()) == (0, f"approved call_c1 in session {command.id}")
        reemitted = final(await command.events())
        assert (reemitted.type, reemitted.call_id, reemitted.requires_approval) == (
            ChunkType.TOOL_CALL,
            "call_c1",
            False,
        )
        again = await agent_runtime("approvals", "approve", command.id, "call_c1")
        assert again.code == 0 and "no change" in again.out
        contradicting = await agent_runtime("approvals", "reject", command.id, "call_c1", "--feedback", "too late")
        assert contradicting.code == 6 and contradicting.err.count("\n") == 1
        assert contradicting.err.startswith("agent-runtime approvals: ")
        assert (await agent_runtime("approvals", "approve", command.id, "call_nope")).code == 5
        assert (await agent_runtime("approvals", "approve", "no-such-session", "call_c1")).code == 4
        assert (await agent_runtime("approvals", "edit", write.id, "call_w1", "--arguments", "[1]")).code == 2

        edited = {"path": "main.py", "content": "print(2)"}
        done = await agent_runtime("approvals", "edit", write.id, "call_w1", "--arguments", json.dumps(edited))
        assert done.code == 0 and "approved with edited arguments call_w1" in done.out
        assert final(await write.events()).arguments == edited
        assert mine((await agent_runtime("approvals", "list", "--json")).json(), command, write) == {}


async def test_inbox_while_no_worker_runs(
    agent_runtime: Callable[..., Any], dev_server: DevServer, fake_llm: FakeLlmServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At 3 a.m. with every worker down the stuck session is still listed, from its search attributes."""
    async with runtime(dev_server, fake_llm) as client:
        stuck = await parked(client, fake_llm, "execute_command", "call_d1", command="rm -rf build")
    monkeypatch.setattr(inbox, "QUERY_TIMEOUT", inbox.QUERY_TIMEOUT / 10)
    listed = await eventually(lambda: agent_runtime("approvals", "list", "--json"), lambda r: mine(r.json(), stuck))
    row = mine(listed.json(), stuck)[stuck.id]
    assert (row["answered"], row["pending_tools"]) == (False, ["execute_command"])
    table = await agent_runtime("approvals", "list", "--tool", "execute_command")
    assert any(stuck.id in line and "not answering" in line for line in table.out.splitlines())
    asked = await agent_runtime("approvals", "list", "--session", stuck.id)
    assert asked.code == 9 and "is a worker running?" in asked.err


async def test_inbox_without_search_attributes_asks_every_session(
    agent_runtime: Callable[..., Any], fake_llm: FakeLlmServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A namespace where nobody registered the attributes: the inbox falls back to asking each running session."""
    async with await start_dev_server(ui=False) as bare, runtime(bare, fake_llm, search_attributes=False) as client:
        monkeypatch.setenv("AGENT_RUNTIME__TEMPORAL__ADDRESS", bare.target)
        session = await parked(client, fake_llm, "write_file", "call_f1", path="a.txt", content="x")
        listed = await eventually(
            lambda: agent_runtime("approvals", "list", "--json"), lambda r: mine(r.json(), session)
        )
        assert mine(listed.json(), session)[session.id]["call_id"] == "call_f1"
        assert "search attributes not registered" in listed.err

        session.script(text("Understood."))
        rejected = await agent_runtime("approvals", "reject", session.id, "call_f1", "--feedback", "use a temp dir")
        assert rejected.code == 0 and rejected.out.startswith("rejected call_f1")
        final(await session.events())
        assert "use a temp dir" in json.dumps(session.llm_requests()[-1]["messages"])


async def test_unreachable_temporal_and_bad_settings(
    agent_runtime: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENT_RUNTIME__TEMPORAL__ADDRESS", f"127.0.0.1:{free_port()}")
    down = await agent_runtime("approvals", "list")
    assert down.code == 7 and down.err.startswith("agent-runtime approvals: cannot reach Temporal")
    monkeypatch.setenv("AGENT_RUNTIME__TEMPORAL__ADDRESS", "no-port")
    bad = await agent_runtime("sessions")
    assert bad.code == 2 and "AGENT_RUNTIME__TEMPORAL__ADDRESS" in bad.err


# --- sessions and show ---


async def test_sessions_and_show(
    agent_runtime: Callable[..., Any], dev_server: DevServer, fake_llm: FakeLlmServer
) -> None:
    async with runtime(dev_server, fake_llm) as client:
        session = await parked(client, fake_llm, "execute_command", "call_s1", command="dart analyze")
        listed = await eventually(lambda: agent_runtime("sessions", "--json"), lambda r: mine(r.json(), session))
        row = mine(listed.json(), session)[session.id]
        assert (row["status"], row["agent"], row["pending_approvals"], row["message_count"]) == (
            "awaiting_approval",
            "coder",
            1,
            2,
        )
        assert session.id in (await agent_runtime("sessions")).out

        shown = await agent_runtime("show", session.id)
        assert shown.code == 0
        assert "status awaiting_approval · agent coder" in shown.out
        assert "Pending approvals:" in shown.out and 'command="dart analyze"' in shown.out
        assert "#1 user: please use execute_command" in shown.out
        assert '→ execute_command(command="dart analyze")  call_s1' in shown.out
        as_json = (await agent_runtime("show", session.id, "--json")).json()
        assert as_json["state"]["status"] == "awaiting_approval" and len(as_json["history"]) == 2
        assert (await agent_runtime("show", "no-such-session")).code == 4


# --- export and replay: the deploy gate ---


async def finished_session(client: ConversationClient, llm: FakeLlmServer) -> Session:
    """A session through a whole approval cycle: classification, tool call, approval, IDE result, answer."""
    session = await parked(client, llm, "write_file", "call_r1", path="main.py", content="print(1)")
    await session.decide("call_r1", "approve")
    final(await session.events())
    session.script(text("Created main.py."))
    await session.result("call_r1", {"written": True})
    assert final(await session.events()).content == "Created main.py."
    return session


async def test_export_then_replay_catches_an_incompatible_change(
    agent_runtime: Callable[..., Any],
    dev_server: DevServer,
    fake_llm: FakeLlmServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with runtime(dev_server, fake_llm) as client:
        session = await finished_session(client, fake_llm)
    exported = await agent_runtime("export", session.id, "-o", str(tmp_path / f"{workflow_id_for(session.id)}.json"))
    assert exported.code == 0 and "events of run" in exported.err
    [history_file] = tmp_path.glob("*.json")

    same_code = await agent_runtime("replay", str(history_file))
    assert same_code.code == 0, same_code.out
    assert same_code.out.splitlines()[0].startswith(f"OK                {workflow_id_for(session.id)}  run ")
    assert same_code.out.splitlines()[-1] == "replayed 1 history: 1 OK, 0 NONDETERMINISTIC, 0 FAILED"

    monkeypatch.setattr(replay, "WORKFLOWS", (TimerFirstConversationWorkflow,))
    changed_code = await agent_runtime("replay", str(history_file))
    assert changed_code.code == 1
    line = changed_code.out.splitlines()[0]
    assert line.startswith("NONDETERMINISTIC") and workflow_id_for(session.id) in line
    assert "Nondeterminism" in line or "nondeterminism" in line, line
    assert changed_code.out.splitlines()[-1] == "replayed 1 history: 0 OK, 1 NONDETERMINISTIC, 0 FAILED"
    # The same gate from the server, by workflow id.
    from_server = await agent_runtime("replay", "--workflow-id", workflow_id_for(session.id))
    assert from_server.code == 1 and from_server.out.startswith("NONDETERMINISTIC")


async def test_replay_from_the_server_follows_continue_as_new(
    agent_runtime: Callable[..., Any], dev_server: DevServer, fake_llm: FakeLlmServer
) -> None:
    async with runtime(dev_server, fake_llm, continue_as_new_after_turns=1) as client:
        session = Session(client, fake_llm)
        session.script(classify("ask"), text("One."), text("Two."), text("Three."))
        final(await session.say("first"))
        final(await session.say("second"))
        final(await session.say("third"))
        assert (await client.state(session.id)).run == 3  # a new run for each input after the first
    workflow_id = workflow_id_for(session.id)

    by_id = await agent_runtime("replay", "--workflow-id", workflow_id)
    assert by_id.code == 0, by_id.out
    assert [line.split()[0] for line in by_id.out.splitlines()] == ["OK", "OK", "OK", "replayed"]
    assert by_id.out.splitlines()[-1] == "replayed 3 histories: 3 OK, 0 NONDETERMINISTIC, 0 FAILED"

    by_query = await eventually(
        lambda: agent_runtime("replay", "--query", f"WorkflowId = '{workflow_id}'"), lambda r: "3 OK" in r.out
    )
    assert by_query.code == 0 and "replayed 3 histories" in by_query.out
    everything = await agent_runtime("replay")
    assert everything.code == 0 and "0 NONDETERMINISTIC, 0 FAILED" in everything.out

    assert (await agent_runtime("replay", "--workflow-id", "session-no-such")).code == 4
    assert (await agent_runtime("replay", "--query", "NoSuchAttribute = 1")).code == 2


async def test_replay_of_files_needs_no_server(
    agent_runtime: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENT_RUNTIME__TEMPORAL__ADDRESS", f"127.0.0.1:{free_port()}")
    garbage = tmp_path / "session-garbage.json"
    garbage.write_text('{"events": [{"eventId": "1"}]}')
    not_json = tmp_path / "session-text.json"
    not_json.write_text("not json")
    failed = await agent_runtime("replay", str(garbage), str(not_json))
    assert failed.code == 1
    lines = failed.out.splitlines()
    assert lines[0].startswith("FAILED            session-garbage  run ?")
    assert lines[1].startswith("FAILED            session-text  run ?") and "could not read" in lines[1]
    assert lines[2] == "replayed 2 histories: 0 OK, 0 NONDETERMINISTIC, 2 FAILED"
    missing = await agent_runtime("replay", str(tmp_path / "missing.json"))
    assert missing.code == 2 and "no such file" in missing.err
    both = await agent_runtime("replay", str(garbage), "--query", "WorkflowType = 'x'")
    assert both.code == 2


async def test_replay_gate_as_a_process(
    agent_runtime: Callable[..., Any], dev_server: DevServer, fake_llm: FakeLlmServer, tmp_path: Path
) -> None:
    """What a deploy pipeline runs: the console entry point in its own process, on an exported history."""
    async with runtime(dev_server, fake_llm) as client:
        session = await finished_session(client, fake_llm)
    target = tmp_path / "exported.json"
    assert (await agent_runtime("export", session.id, "-o", str(target))).code == 0
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("AGENT_RUNTIME__")}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cli.main", "replay", str(target), "--workflow-id", workflow_id_for(session.id),
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    assert out.decode().splitlines()[-1] == "replayed 1 history: 1 OK, 0 NONDETERMINISTIC, 0 FAILED"


async def test_replay_of_the_recorded_histories() -> None:
    """The deploy gate over the histories recorded in tests/histories (by tests/record_histories.py)."""
    files = sorted((REPO / "tests" / "histories").glob("*.json"))
    if not files:
        pytest.skip("no recorded histories yet")
    items = replay.file_histories(files)
    reports = [report async for report in replay.replay_histories(items)]
    assert [(r.source, r.verdict) for r in reports] == [(str(f), replay.Verdict.OK) for f in files]


# --- worker-health: the worker container's health check ---


async def test_worker_health(
    agent_runtime: Callable[..., Any], dev_server: DevServer, fake_llm: FakeLlmServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    task_queue = f"health-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("AGENT_RUNTIME__TEMPORAL__TASK_QUEUE", task_queue)
    assert (await agent_runtime("worker-health")).code == 1  # nobody polls yet
    async with runtime(dev_server, fake_llm, task_queue=task_queue):
        healthy = await eventually(lambda: agent_runtime("worker-health"), lambda r: r.code == 0)
        assert healthy.code == 0 and task_queue in healthy.out
        elsewhere = await agent_runtime("worker-health", "--hostname", "another-container")
        assert elsewhere.code == 1
        assert elsewhere.err.startswith("agent-runtime worker-health: no workflow or activity poll from another")


async def test_plan_approvals_are_in_the_inbox_too(
    agent_runtime: Callable[..., Any], dev_server: DevServer, fake_llm: FakeLlmServer
) -> None:
    """A proposed plan waits like a tool call; approving it by its request id sends the plan decision."""
    async with runtime(dev_server, fake_llm) as client:
        session = Session(client, fake_llm)
        subtask = {"title": "Explain", "description": "Summarize", "agent": "ask", "estimated_time_minutes": 2}
        plan = {"title": "Explain the code", "description": "One step", "subtasks": [subtask]}
        session.script(
            classify("architect"), FakeReply(tool_calls=[{"id": "call_p1", "name": "create_plan", "arguments": plan}])
        )
        assert final(await session.say("plan it")).type is ChunkType.PLAN_APPROVAL_REQUIRED
        [row] = (await agent_runtime("approvals", "list", "--session", session.id, "--json")).json()
        assert (row["request_type"], row["tool_name"], row["call_id"]) == ("plan", "create_plan", "call_p1")

        refused = await agent_runtime("approvals", "edit", session.id, "call_p1", "--arguments", "{}")
        assert refused.code == 8 and "cannot be edited" in refused.err
        session.script(text("It reads a file."))
        approved = await agent_runtime("approvals", "approve", session.id, row["request_id"])
        assert approved.code == 0, approved.err
        await session.events()
        [settled] = await client.approvals(session.id)
        assert (settled.status, settled.decided_by) == ("approved", "plan_decision")


# --- grants: remembered decisions ---


async def test_decisions_are_remembered_listed_and_revoked(
    agent_runtime: Callable[..., Any], dev_server: DevServer, fake_llm: FakeLlmServer
) -> None:
    async with runtime(dev_server, fake_llm) as client:
        session = await parked(client, fake_llm, "execute_command", "call_g1", command="npm test")
        assert (await agent_runtime("approvals", "approve", session.id, "call_g1", "--command-words", "2")).code == 2
        refused = await agent_runtime("approvals", "approve", session.id, "call_g1", "--remember", "project")
        assert refused.code == 2 and "project exactly when" in refused.err
        approved = await agent_runtime(
            "approvals", "approve", session.id, "call_g1", "--remember", "session", "--command-words", "2"
        )
        assert approved.code == 0
        assert final(await session.events()).requires_approval is False
        session.script(call("execute_command", "call_g2", command="npm test -u"))
        await session.result("call_g1", "ok")
        assert final(await session.events()).requires_approval is False  # remembered

        [grant] = (await agent_runtime("grants", "list", "--session", session.id, "--json")).json()
        assert grant["description"] == "execute_command: npm test ..."
        table = (await agent_runtime("grants", "list", "--session", session.id)).out
        assert table.splitlines()[0].split() == ["GRANT", "SCOPE", "APPROVES", "AGE", "FROM", "SESSION", "STATUS"]
        assert grant["grant_id"] in table and "active" in table
        revoked = await agent_runtime("grants", "revoke", "--session", session.id, grant["grant_id"])
        assert (revoked.code, revoked.out.strip()) == (0, f"revoked {grant['grant_id']} in session {session.id}")
        again = await agent_runtime("grants", "revoke", "--session", session.id, grant["grant_id"])
        assert again.code == 0 and "no change" in again.out
        assert (await agent_runtime("grants", "revoke", "--session", session.id, "grant-nope")).code == 5
        assert (await agent_runtime("grants", "list", "--session", session.id)).out.strip() == "no remembered decisions"
        assert "revoked" in (await agent_runtime("grants", "list", "--session", session.id, "--all")).out

        project = f"cli-{uuid.uuid4().hex[:8]}"
        writer = Session(client, fake_llm)
        writer.script(classify("coder"), call("write_file", "call_w1", path="src/a.py", content="x"))
        assert final(await writer.say("write it", project=project)).requires_approval is True
        remembered = await agent_runtime(
            "approvals",
            "approve",
            writer.id,
            "call_w1",
            "--remember",
            "project",
            "--project",
            project,
            "--path-prefix",
            "src",
        )
        assert remembered.code == 0
        final(await writer.events())
        [shared] = (await agent_runtime("grants", "list", "--project", project, "--json")).json()
        assert (shared["scope"], shared["project"], shared["description"]) == (
            "project",
            project,
            "write_file: src/...",
        )
        gone = await agent_runtime("grants", "revoke", "--project", project, shared["grant_id"], "--reason", "done")
        assert (gone.code, gone.out.strip()) == (0, f"revoked {shared['grant_id']} in project {project}")
        assert (await agent_runtime("grants", "list", "--project", project, "--json")).json() == []
        assert (await agent_runtime("grants", "revoke", "--project", project, "grant-nope")).code == 5
        assert (await agent_runtime("grants", "list")).code == 2  # --session or --project
