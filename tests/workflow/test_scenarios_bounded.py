"""Sessions that never wedge: large content, the model's context window, any model output, continue-as-new.

Each test drives a real worker on the time-skipping server through the gateway's client, with the fake LLM over
HTTP, and proves that the session answers the next message and that its history stays provider-valid.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import timedelta

import pytest
from temporalio.api.enums.v1 import TaskQueueKind
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import PollWorkflowTaskQueueRequest

from client.conversation_client import ConversationClient, InvalidInputError, SessionClosedError, SessionStuckError
from devstack.fake_llm import FakeLlmServer, FakeReply, FakeToolCall
from tests.conftest import RuntimeFactory
from tests.support import Session, call, classify, final, largest_event, runs, text, tool_messages_for
from tests.workflow_changes import BugBetweenTurnsWorkflow, BugInATurnWorkflow
from workflows.content import RAW_INPUT_LIMIT
from workflows.model import (
    ChunkType,
    ToolResult,
    UserMessage,
    workflow_id_for,
)

# Temporal warns at 512 KB per payload (and refuses at 2 MB); a bounded session stays far below.
PAYLOAD_WARNING = 512 * 1024


def file_of(size: int, seed: str) -> str:
    line = f"# {seed}: " + "x" * 70 + "\n"
    return (line * (size // len(line) + 1))[:size]


async def test_large_tool_results_are_kept_by_reference(session: Session) -> None:
    """Seven 300 KB results and one 3 MB result: the session goes on, the history holds every byte, and no payload
    in Temporal's history comes near the limits (it wedged the session for good before)."""
    reads = [call("read_file", f"call_r{i}", path=f"f{i}.py") for i in range(8)]
    session.script(classify("coder"), reads[0])
    assert final(await session.say("read the eight files")).call_id == "call_r0"
    contents = [file_of(300_000, f"f{i}") for i in range(7)] + [file_of(3_000_000, "huge")]
    for i, content in enumerate(contents):
        session.script(reads[i + 1] if i + 1 < len(reads) else text("I read them all."))
        await session.result(f"call_r{i}", content)
        chunk = final(await session.events())
    assert chunk.content == "I read them all."

    history = await session.history()
    assert [len(m.content or "") for m in history if m.role == "tool"] == [len(c) for c in contents]
    assert [m.content for m in history if m.role == "tool"] == contents
    assert await largest_event(session.client, session.id) < PAYLOAD_WARNING

    # The model saw the huge file cut to fit its window, with a marker it can act on.
    last_request = session.llm_requests()[-1]
    tool_texts = [m["content"] for m in last_request["messages"] if m["role"] == "tool"]
    assert any("more characters omitted to fit the model's context window" in t for t in tool_texts)
    assert len(json.dumps(last_request)) < 128_000 * 4

    session.script(text("Still here."))
    assert final(await session.say("are you there?")).content == "Still here."


async def test_a_large_argument_and_a_long_answer_reach_the_ide_and_the_user_whole(session: Session) -> None:
    content = file_of(1_500_000, "write")
    answer = "Summary:\n" + file_of(50_000, "answer")
    session.script(
        classify("coder"),
        FakeReply(
            tool_calls=[
                FakeToolCall(id="call_w1", name="write_file", arguments={"path": "big.py", "content": content})
            ],
            argument_delta_chars=6,
        ),
    )
    chunk = final(await session.say("write the big file"))
    assert chunk.type is ChunkType.TOOL_CALL and chunk.requires_approval
    assert chunk.arguments == {"path": "big.py", "content": content}
    [approval] = await session.client.pending_approvals(session.id)
    assert approval.arguments["content"] == content
    await session.decide("call_w1", "approve")
    assert final(await session.events()).arguments == {"path": "big.py", "content": content}
    session.script(text(answer))
    await session.result("call_w1", "written")
    assert final(await session.events()).content == answer
    history = await session.history()
    assert history[1].tool_calls[0].arguments["content"] == content and history[-1].content == answer
    assert await largest_event(session.client, session.id) < PAYLOAD_WARNING


async def test_an_oversized_inline_input_is_refused_with_a_clear_error(session: Session) -> None:
    """A caller that bypasses the client's content store cannot put megabytes into the workflow's state."""
    session.script(classify("ask"), text("hi"))
    final(await session.say("hello"))
    raw = ConversationClient(session.client.temporal, task_queue="unused", content=None)
    with pytest.raises(InvalidInputError, match="over the limit"):
        await raw.send_user_message(session.id, UserMessage(content="x" * (RAW_INPUT_LIMIT + 1)))
    session.script(text("Still fine."))
    assert final(await session.say("and now?")).content == "Still fine."


async def test_the_context_window_is_learned_from_the_provider(
    runtime_with: RuntimeFactory, fake_llm: FakeLlmServer
) -> None:
    """Thirty reads of a 120 KB file overflow a model smaller than the runtime believes: the provider's
    context_length_exceeded shrinks the context once and the session goes on (it failed every later turn)."""
    async with runtime_with(llm_context_tokens=128_000) as client:
        session = Session(client, fake_llm)
        fake_llm.set_context_window(session.id, 60_000)
        session.script(classify("coder"))
        source = file_of(120_000, "module")
        for turn in range(30):
            session.script(call("read_file", f"call_{turn}", path="module.py"), text(f"Read #{turn}."))
            assert final(await session.say(f"read module.py again ({turn})")).call_id == f"call_{turn}"
            await session.result(f"call_{turn}", source)
            assert final(await session.events()).content == f"Read #{turn}."
        refused = [r for r in fake_llm.received(session.id) if r.prompt_tokens > 60_000]
        assert 1 <= len(refused) <= 2, "learned once, not refused on every turn"
        await session.history()


async def test_a_context_too_long_even_when_shrunk_is_an_error_and_the_session_answers_next(
    runtime_with: RuntimeFactory, fake_llm: FakeLlmServer
) -> None:
    async with runtime_with(multi_agent_mode=False) as client:
        session = Session(client, fake_llm)
        fake_llm.set_context_window(session.id, 50)
        chunk = final(await session.say("hello"))
        assert chunk.type is ChunkType.ERROR and "too long" in (chunk.content or "")
        fake_llm.set_context_window(session.id, None)
        session.script(text("Back."))
        assert final(await session.say("hello again")).content == "Back."
        assert [m.role for m in await session.history()] == ["user", "user", "assistant"]


ADVERSARIAL: dict[str, list[FakeToolCall]] = {
    "completion starting with [Error]": [
        FakeToolCall(id="c1", name="attempt_completion", arguments={"result": "[Error] 3 tests failed"})
    ],
    "suggestions that are a number": [
        FakeToolCall(id="c1", name="ask_followup_question", arguments={"question": "which?", "suggestions": 5})
    ],
    "truncated JSON arguments": [FakeToolCall(id="c1", name="read_file", arguments='{"path": "a.py", "start_')],
    "arguments that are not an object": [FakeToolCall(id="c1", name="read_file", arguments="[1, 2]")],
    "wrong argument types": [FakeToolCall(id="c1", name="execute_command", arguments={"command": ["rm", "-rf"]})],
    "an unknown tool": [FakeToolCall(id="c1", name="rm_rf_everything", arguments={})],
    "a hostile tool name": [FakeToolCall(id="c1", name="x" * 500 + "\u202e;DROP", arguments={})],
    "duplicate call ids": [
        FakeToolCall(id="dup", name="calculator", arguments={"expr": "1+1"}),
        FakeToolCall(id="dup", name="calculator", arguments={"expr": "2+2"}),
    ],
    "dozens of calls": [FakeToolCall(id=f"c{i}", name="echo", arguments={"text": str(i)}) for i in range(40)],
    "NUL bytes": [FakeToolCall(id="c1", name="echo", arguments={"text": "a\x00b"})],
    # JSON's "\ud800" escape with no pair: what a model's byte-level tokens can produce; no UTF-8 encoder takes it.
    "lone surrogates": [FakeToolCall(id="c1", name="echo", arguments={"text": "a\ud800b\udfff"})],
    "a huge call id": [FakeToolCall(id="c" * 5_000, name="echo", arguments={"text": "long id"})],
}


@pytest.mark.parametrize("case", sorted(ADVERSARIAL))
async def test_any_model_output_is_survivable(case: str, runtime_with: RuntimeFactory, fake_llm: FakeLlmServer) -> None:
    # The universal agent may call every tool, the runtime's own (echo, calculator) included.
    async with runtime_with(tool_call_budget=50, multi_agent_mode=False) as client:
        session = Session(client, fake_llm)
        session.script(FakeReply(content="On it.\x00", tool_calls=ADVERSARIAL[case]))
        if case != "completion starting with [Error]":
            session.script(text("I recovered."))
        chunks = await session.say("do the thing")
        last = final(chunks)
        assert last.type in (ChunkType.ASSISTANT_MESSAGE, ChunkType.TOOL_CALL)
        if last.type is ChunkType.TOOL_CALL:  # execute_command with bad types is refused, nothing else waits
            pytest.fail(f"unexpected wait on {last.tool_name}")
        history = await session.history()
        calls = [c for m in history for c in m.tool_calls]
        assert calls and all(len(tool_messages_for(history, c.id)) == 1 for c in calls)
        assert all(len(c.id) <= 128 and len(c.name) <= 64 for c in calls)
        if case == "completion starting with [Error]":
            assert last.content == "Result:\n[Error] 3 tests failed"
        else:
            assert last.content == "I recovered."
            errors = [m for m in history if m.role == "tool" and str(m.content).startswith("Error:")]
            if case not in ("duplicate call ids", "NUL bytes", "a huge call id", "lone surrogates"):
                assert errors, "the model is told what was wrong with its call"
            if case == "dozens of calls":
                assert len(errors) == 8 and all("at most 32" in str(m.content) for m in errors)
            if case == "NUL bytes":
                assert [m.content for m in history if m.role == "tool"] == ["a\x00b"]
            if case == "lone surrogates":
                assert [m.content for m in history if m.role == "tool"] == ["a\ufffdb\ufffd"]
            if case == "duplicate call ids":
                assert [m.content for m in history if m.role == "tool"] == ["2", "4"]
        session.script(text("Next answer."))
        assert final(await session.say("next")).content == "Next answer."
        await session.history()


async def test_continue_as_new_archives_the_transcript_and_keeps_it_whole(
    runtime_with: RuntimeFactory, fake_llm: FakeLlmServer
) -> None:
    """Many runs later the history endpoint still returns every message, and the model still sees old turns."""
    async with runtime_with(continue_as_new_after_turns=2) as client:
        session = Session(client, fake_llm)
        session.script(classify("coder"))
        for turn in range(9):
            session.script(call("read_file", f"call_{turn}", path=f"f{turn}.py"), text(f"answer {turn}"))
            final(await session.say(f"question {turn}"))
            await session.result(f"call_{turn}", f"content {turn}")
            assert final(await session.events()).content == f"answer {turn}"
        state = await client.state(session.id)
        assert state.run >= 4 and state.message_count == 9 * 4
        history = await session.history()
        assert [m.content for m in history if m.role == "user"] == [f"question {t}" for t in range(9)]
        last = session.llm_requests()[-1]
        assert "question 0" in json.dumps(last["messages"]), "archived turns still reach the model's context"
        assert state.title == "question 0"


async def test_size_triggers_continue_as_new_and_state_stays_bounded(
    runtime_with: RuntimeFactory, fake_llm: FakeLlmServer
) -> None:
    async with runtime_with(multi_agent_mode=False) as client:
        session = Session(client, fake_llm)
        for turn in range(16):
            session.script(text(f"ok {turn}"))
            assert final(await session.say(f"{turn} " + "y" * 8_000)).content == f"ok {turn}"
        state = await client.state(session.id)
        assert state.run >= 2, "96 KB of inline messages ends a run"
        assert len(await session.history()) == 32
        assert await largest_event(client, session.id) < 200 * 1024


async def test_a_run_ends_once_it_has_the_configured_number_of_history_events(
    runtime_with: RuntimeFactory, fake_llm: FakeLlmServer
) -> None:
    """A worker without the session cached replays the whole run before it answers: runs stay short."""
    limit = 60
    async with runtime_with(multi_agent_mode=False, continue_as_new_after_events=limit) as client:
        session = Session(client, fake_llm)
        for turn in range(12):
            session.script(text(f"ok {turn}"))
            assert final(await session.say(f"question {turn}")).content == f"ok {turn}"
        lengths = [len(events) async for events in runs(client, session.id)]
        assert len(lengths) >= 3, f"12 small turns (~17 events each) in runs of at most {limit}: {lengths}"
        # A run ends at the first input after it reached the limit, so it exceeds it by at most one turn.
        assert all(length < limit + 40 for length in lengths), lengths
        assert len(await session.history()) == 24, "every message of every run is still there"
        session.script(text("still here"))
        assert final(await session.say("and now?")).content == "still here"


async def test_a_message_to_a_closed_session_is_refused_unless_a_new_one_is_asked_for(session: Session) -> None:
    session.script(classify("ask"), text("first"))
    final(await session.say("hello"))
    await session.client.handle(session.id).terminate("operator")
    with pytest.raises(SessionClosedError, match="closed .terminated"):
        await session.client.send_user_message(session.id, UserMessage(content="are you there?"))
    session.script(classify("ask"), text("fresh start"))
    await session.client.send_user_message(session.id, UserMessage(content="again"), new_session=True)
    events = await session.client.until_wait_point(session.id, 0)
    assert events[-1].chunk.content == "fresh start"
    assert [m.role for m in await session.client.history(session.id)] == ["user", "assistant"]


async def test_a_raw_signal_with_an_oversized_result_is_cut_not_dropped(session: Session) -> None:
    session.script(classify("coder"), call("read_file", "call_r1", path="a.py"), text("got it"))
    final(await session.say("read a.py"))
    await session.client.handle(session.id).signal("tool_result", ToolResult(call_id="call_r1", result="z" * 200_000))
    assert final(await session.events()).content == "got it"
    [tool] = [m for m in await session.history() if m.role == "tool"]
    assert isinstance(tool.content, str) and len(tool.content) <= RAW_INPUT_LIMIT
    assert "200,000 characters in all" in tool.content


async def test_a_bug_inside_a_turn_ends_the_turn_not_the_session(
    runtime_with: RuntimeFactory, fake_llm: FakeLlmServer
) -> None:
    async with runtime_with(workflow=BugInATurnWorkflow, multi_agent_mode=False) as client:
        session = Session(client, fake_llm)
        echo = FakeReply(
            tool_calls=[
                FakeToolCall(id="c_ok", name="echo", arguments={"text": "fine"}),
                FakeToolCall(id="c_boom", name="echo", arguments={"text": "boom"}),
                FakeToolCall(id="c_after", name="echo", arguments={"text": "never run"}),
            ]
        )
        session.script(echo)
        last = final(await session.say("echo things"))
        assert last.type is ChunkType.ERROR and (last.metadata or {}).get("code") == "turn_failed"
        assert "planted bug in echo" in (last.error or "")
        history = await session.history()
        assert [tool_messages_for(history, c)[0].content for c in ("c_ok", "c_boom", "c_after")][0] == "fine"
        assert str(tool_messages_for(history, "c_boom")[0].content).startswith("Error: not executed: the turn failed")
        state = await client.state(session.id)
        assert state.counters.turn_failures == 1 and state.status == "idle" and not state.outstanding_calls
        session.script(text("Recovered."))
        assert final(await session.say("still there?")).content == "Recovered."


async def _lose_the_next_workflow_task(client: ConversationClient, session_id: str, task_queue: str) -> int:
    """Poll the session's next workflow task as a worker that is then killed would: take it, never answer. Returns
    the attempt of the retry that Temporal schedules once the task times out (the workflow's task timeout)."""
    temporal = client.temporal
    lost = await temporal.workflow_service.poll_workflow_task_queue(
        PollWorkflowTaskQueueRequest(
            namespace=temporal.namespace,
            task_queue=TaskQueue(name=task_queue, kind=TaskQueueKind.TASK_QUEUE_KIND_NORMAL),
            identity="a worker killed mid-task",
        )
    )
    assert lost.workflow_execution.workflow_id == workflow_id_for(session_id)
    handle = client.handle(session_id)
    while (await handle.describe()).raw_description.pending_workflow_task.attempt <= lost.attempt:
        await asyncio.sleep(0.2)  # the server's task timeout (10 s) is the event waited for
    return lost.attempt + 1


async def test_a_session_whose_worker_was_lost_mid_task_is_slow_not_stuck(
    dev_runtime_with: RuntimeFactory, fake_llm: FakeLlmServer
) -> None:
    """The retry of a task whose worker was lost is not `stuck` (a kill under load answered inputs the session
    then took as stuck); a task that keeps timing out is, and says so."""
    task_queue = f"lost-{uuid.uuid4().hex[:8]}"
    async with dev_runtime_with(task_queue=task_queue, multi_agent_mode=False) as client:
        session = Session(client, fake_llm)
        session.script(text("first"))
        final(await session.say("hello"))
    await client.signal_user_message(session.id, UserMessage(content="are you there?"))
    assert await _lose_the_next_workflow_task(client, session.id, task_queue) == 2
    assert await client.diagnose(session.id) is None, "one lost worker: the retry is on its way"
    assert await _lose_the_next_workflow_task(client, session.id, task_queue) == 3
    stuck = await client.diagnose(session.id)
    assert isinstance(stuck, SessionStuckError) and stuck.attempts == 3
    assert "timed out 2 times" in str(stuck) and "workflow task timed out (not finished)" in str(stuck)
    async with dev_runtime_with(task_queue=task_queue, multi_agent_mode=False) as client:
        session.client = client
        session.script(text("still here"))
        handle = client.handle(session.id)
        while (await handle.describe()).raw_description.pending_workflow_task.attempt > 1:
            await asyncio.sleep(0.1)  # Temporal refuses updates (the stream's polls) until the retry completes
        assert final(await session.events()).content == "still here", "a new worker takes the retry"
        assert await client.diagnose(session.id) is None


async def test_a_session_whose_workflow_task_fails_is_reported_as_stuck_with_the_reason(
    dev_runtime_with: RuntimeFactory, fake_llm: FakeLlmServer
) -> None:
    async with dev_runtime_with(workflow=BugBetweenTurnsWorkflow, multi_agent_mode=False) as client:
        session = Session(client, fake_llm)
        session.script(text("noted"))
        final(await session.say("crash"))
        impatient = ConversationClient(
            client.temporal, task_queue="unused", content=client.content, answer_timeout=timedelta(seconds=3)
        )
        # The next input wakes the loop, where the bug fails every workflow task: the session cannot go on.
        with pytest.raises(SessionStuckError) as caught:
            await impatient.send_user_message(session.id, UserMessage(content="hello?"))
        assert caught.value.attempts > 1
        assert "planted bug between turns" in (caught.value.reason or "")
        assert f"session {session.id} cannot make progress" in str(caught.value)
        with pytest.raises(SessionStuckError):
            await impatient.state(session.id)
        await client.handle(session.id).terminate("test over")
