"""Spec §10 scenarios 1, 2, 14-21 and 25: routing, agents, tool calls, failures and limits."""

from __future__ import annotations

import json

import pytest

from client.conversation_client import ApprovalAlreadyResolvedError, InvalidInputError
from devstack.fake_llm import FakeLlmServer, FakeReply
from tests.conftest import RuntimeFactory
from tests.support import Session, call, classify, final, text, tool_messages_for, types
from workflows.model import (
    AgentType,
    ChunkType,
    SwitchAgent,
    UserMessage,
)


def _system_prompt(request: dict) -> str:
    return str(request["messages"][0]["content"])


def _tool_names(request: dict) -> set[str]:
    return {t["function"]["name"] for t in request.get("tools", [])}


async def test_simple_question_is_routed_to_ask(session: Session) -> None:
    """Scenario 1: agent_switched, then one final assistant message; history user, assistant."""
    session.script(classify("ask"), text("Python is a programming language."))
    chunks = await session.say("what is python?")
    assert types(chunks) == ["agent_switched", "assistant_message"]
    switched, answer = chunks
    assert switched.metadata == {
        "from_agent": "orchestrator",
        "to_agent": "ask",
        "reason": "test",
        "confidence": "high",
        "classification_method": "llm",
    }
    assert (answer.content, answer.is_final) == ("Python is a programming language.", True)
    assert [m.role for m in await session.history()] == ["user", "assistant"]
    state = await session.client.state(session.id)
    assert (state.current_agent, state.status, state.counters.classification_fallbacks) == ("ask", "idle", 0)
    classification = session.llm_requests()[0]
    assert "respond only with JSON" in _system_prompt(classification) and "tools" not in classification


async def test_read_tool_round_trip(session: Session) -> None:
    """Scenario 2: read_file needs no approval; the result closes the call; strictly paired history."""
    session.script(classify("ask"), call("read_file", "call_r1", preface="Let me look.", path="main.py"))
    chunks = await session.say("explain main.py")
    assert types(chunks) == ["agent_switched", "assistant_message", "tool_call"]
    assert chunks[1].content == "Let me look."  # text beside a tool call is kept (L14)
    assert (chunks[2].tool_name, chunks[2].requires_approval, chunks[2].arguments) == (
        "read_file",
        False,
        {"path": "main.py"},
    )
    assert await session.client.pending_approvals(session.id) == []
    session.script(text("main.py prints hello."))
    await session.result("call_r1", {"content": "print('hello')"})
    assert final(await session.events()).content == "main.py prints hello."
    history = await session.history()
    assert [m.role for m in history] == ["user", "assistant", "tool", "assistant"]
    assert history[1].content == "Let me look."
    assert _tool_names(session.llm_requests()[1]) == {
        "read_file",
        "search_in_code",
        "list_files",
        "attempt_completion",
        "switch_mode",
    }


async def test_switch_mode_hands_over_with_its_own_result(session: Session) -> None:
    """Scenario 14: ask -> coder; the tool result answers that exact id; the coder continues the request."""
    session.script(
        classify("ask"),
        call("switch_mode", "call_s1", mode="coder", reason="needs code changes"),
        text("I will change it."),
    )
    chunks = await session.say("rename the function in utils.py")
    assert types(chunks) == ["agent_switched", "agent_switched", "assistant_message"]
    assert chunks[1].metadata and chunks[1].metadata["to_agent"] == "coder"
    history = await session.history()
    assert [m.content for m in tool_messages_for(history, "call_s1")] == ["Switched to coder agent"]
    coder_request = session.llm_requests()[-1]
    assert "coder agent" in _system_prompt(coder_request)
    assert coder_request["messages"][1]["content"] == "rename the function in utils.py"
    assert (await session.client.state(session.id)).current_agent == AgentType.CODER


async def test_switch_mode_to_the_current_agent(session: Session) -> None:
    """Scenario 15: no error, a tool result, the same agent continues."""
    session.script(classify("ask"), call("switch_mode", "call_s1", mode="ask"), text("Still here."))
    chunks = await session.say("explain this")
    assert types(chunks) == ["agent_switched", "assistant_message"]
    history = await session.history()
    assert "Already in ask mode" in (tool_messages_for(history, "call_s1")[0].content or "")
    assert (await session.client.state(session.id)).current_agent == AgentType.ASK


async def test_two_switches_in_one_turn(session: Session) -> None:
    """Scenario 16: ask -> architect -> coder, both executed, no raw switch_agent chunk reaches the client."""
    session.script(
        classify("ask"),
        call("switch_mode", "call_s1", mode="architect"),
        call("switch_mode", "call_s2", mode="coder"),
        text("Coder here."),
    )
    chunks = await session.say("plan and build a cache")
    assert types(chunks) == ["agent_switched"] * 3 + ["assistant_message"]
    assert [c.metadata["to_agent"] for c in chunks[:3] if c.metadata] == ["ask", "architect", "coder"]
    history = await session.history()
    assert tool_messages_for(history, "call_s1")[0].content == "Switched to architect agent"
    assert tool_messages_for(history, "call_s2")[0].content == "Switched to coder agent"
    switches = (await session.client.state(session.id)).switches
    assert [(s.from_agent, s.to_agent, s.source) for s in switches] == [
        ("orchestrator", "ask", "classification"),
        ("ask", "architect", "switch_mode"),
        ("architect", "coder", "switch_mode"),
    ]


async def test_forbidden_tool_and_path_leave_no_pending_approval(session: Session) -> None:
    """Scenario 17: debug may not write; architect may write only markdown. Error result, nothing pending."""
    session.script(
        classify("debug"),
        call("write_file", "call_f1", path="fix.py", content="x"),
        call("switch_mode", "call_s1", mode="architect"),
        call("write_file", "call_f2", path="main.py", content="x"),
        text("I can only write markdown."),
    )
    chunks = await session.say("debug the crash and fix it")
    assert ChunkType.TOOL_CALL.value not in types(chunks)
    refusals = [c for c in chunks if c.type is ChunkType.TOOL_RESULT]
    assert [c.call_id for c in refusals] == ["call_f1", "call_f2"]
    assert all(c.error for c in refusals)
    assert final(chunks).content == "I can only write markdown."
    history = await session.history()
    assert "cannot edit files" in (tool_messages_for(history, "call_f1")[0].content or "")
    assert "markdown" in (tool_messages_for(history, "call_f2")[0].content or "")
    assert await session.client.approvals(session.id) == []
    assert (await session.client.state(session.id)).counters.tool_calls["refused"] == 2


async def test_user_message_while_a_call_is_outstanding_is_queued(session: Session) -> None:
    """Scenario 18: the new message waits until the call is closed; the provider never sees a broken history."""
    session.script(classify("ask"), call("read_file", "call_r1", path="main.py"))
    final(await session.say("explain main.py"))
    receipt = await session.client.send_user_message(session.id, UserMessage(content="also explain utils.py"))
    assert receipt.queued is True
    assert (await session.client.state(session.id)).queued_inputs == 1
    session.script(text("main.py prints."), text("utils.py helps."))
    await session.result("call_r1", "print(1)")
    assert final(await session.events()).content == "main.py prints."
    assert final(await session.events()).content == "utils.py helps."
    history = await session.history()
    assert [m.role for m in history] == ["user", "assistant", "tool", "assistant", "user", "assistant"]


async def test_parallel_tool_calls_are_handled_in_order(session: Session) -> None:
    """Scenario 19: several calls in one answer: each closed in order, approvals included, pairing intact."""
    session.script(
        classify("coder"),
        FakeReply(
            tool_calls=[
                {"id": "call_p1", "name": "read_file", "arguments": {"path": "a.py"}},
                {"id": "call_p2", "name": "write_file", "arguments": {"path": "b.py", "content": "x"}},
                {"id": "call_p3", "name": "list_files", "arguments": {"path": "."}},
            ]
        ),
    )
    first = final(await session.say("copy a.py to b.py"))
    assert (first.call_id, first.requires_approval) == ("call_p1", False)
    await session.result("call_p1", "a")
    second = final(await session.events())
    assert (second.call_id, second.requires_approval) == ("call_p2", True)
    await session.decide("call_p2", "approve")
    assert final(await session.events()).call_id == "call_p2"
    await session.result("call_p2", "ok")
    third = final(await session.events())
    assert (third.call_id, third.requires_approval) == ("call_p3", False)
    session.script(text("Copied."))
    await session.result("call_p3", ["a.py", "b.py"])
    assert final(await session.events()).content == "Copied."
    history = await session.history()
    assert [m.tool_call_id for m in history if m.role == "tool"] == ["call_p1", "call_p2", "call_p3"]
    assert len(session.llm_requests()) == 3


async def test_llm_failures_are_errors_not_content(runtime_with: RuntimeFactory, fake_llm: FakeLlmServer) -> None:
    """Scenario 20: a 500, an "[Error] ..." 200 and a 400 each end in an error chunk; history keeps only the user."""
    async with runtime_with(llm_max_attempts=2) as client:
        session = Session(client, fake_llm)
        session.script(
            classify("ask"),
            FakeReply(status=500, error_message="upstream down"),
            FakeReply(error_text="LiteLLM proxy unavailable: No tool output found"),
        )
        error = final(await session.say("hello"))
        assert error.type is ChunkType.ERROR and "LiteLLM proxy unavailable" in (error.error or "")
        assert [m.role for m in await session.history()] == ["user"]

        session.script(FakeReply(status=400, error_message="Invalid parameter: messages"))
        error = final(await session.say("hello again"))
        assert error.type is ChunkType.ERROR and "Invalid parameter" in (error.error or "")
        assert len(session.llm_requests()) == 4  # a 400 is not retried

        session.script(text("Hi!"))
        assert final(await session.say("third time")).content == "Hi!"
        history = await session.history()
        assert [m.role for m in history] == ["user", "user", "user", "assistant"]
        assert not any("[Error]" in (m.content or "") for m in history)
        assert (await client.state(session.id)).counters.llm_failures == 2


async def test_single_agent_mode(runtime_with: RuntimeFactory, fake_llm: FakeLlmServer) -> None:
    """Scenario 21: routed to universal without an LLM call; universal is offered every tool."""
    async with runtime_with(multi_agent_mode=False) as client:
        session = Session(client, fake_llm)
        session.script(call("calculator", "call_c1", expr="6*7"), text("It is 42."))
        chunks = await session.say("what is 6*7?")
        assert types(chunks) == ["agent_switched", "tool_result", "assistant_message"]
        assert chunks[0].metadata and chunks[0].metadata["classification_method"] == "single_agent"
        assert chunks[1].content == "42"
        requests = session.llm_requests()
        assert len(requests) == 2 and "respond only with JSON" not in _system_prompt(requests[0])
        assert {"write_file", "execute_command", "calculator", "echo", "attempt_completion"} <= _tool_names(requests[0])
        await session.history()


async def test_tool_call_budget_stops_a_runaway_loop(runtime_with: RuntimeFactory, fake_llm: FakeLlmServer) -> None:
    """Scenario 25: the turn stops with an explanation once its tool-call budget is spent."""
    async with runtime_with(multi_agent_mode=False, tool_call_budget=3) as client:
        session = Session(client, fake_llm)
        session.script(*[call("echo", f"call_e{i}", text=f"loop {i}") for i in range(6)])
        chunks = await session.say("loop forever")
        answer = final(chunks)
        assert "limit of 3 tool calls" in (answer.content or "")
        assert len(session.llm_requests()) == 4
        history = await session.history()
        assert "budget" in (tool_messages_for(history, "call_e3")[0].content or "")
        assert (await client.state(session.id)).counters.budget_stops == 1


async def test_completion_and_followup_tools_end_the_turn_as_assistant_messages(session: Session) -> None:
    """B5, B17: attempt_completion's result is an assistant message; a follow-up question waits for the user."""
    session.script(
        classify("coder"),
        call("ask_followup_question", "call_q1", question="Which file?", suggestions=["a.py", "b.py"]),
    )
    question = final(await session.say("fix the bug"))
    assert question.content == "Which file?\n- a.py\n- b.py"
    session.script(call("attempt_completion", "call_done", result="Fixed a.py."))
    answer = final(await session.say("a.py"))
    assert (answer.type, answer.content) == (ChunkType.ASSISTANT_MESSAGE, "Fixed a.py.")
    history = await session.history()
    assert history[-1].role == "assistant" and history[-1].content == "Fixed a.py."
    assert tool_messages_for(history, "call_done")


async def test_classification_failure_falls_back_to_keywords_and_is_counted(session: Session) -> None:
    """B12: an unusable classifier answer routes by keywords and shows in the counters."""
    session.script(text("Mock LLM response (static)"), text("Here is why it crashes."))
    chunks = await session.say("why does it crash?")
    assert chunks[0].metadata and chunks[0].metadata["to_agent"] == "debug"
    assert chunks[0].metadata["classification_method"] == "keywords"
    counters = (await session.client.state(session.id)).counters
    assert (counters.classification_calls, counters.classification_fallbacks) == (1, 1)


async def test_explicit_switch_and_invalid_inputs(session: Session) -> None:
    """Explicit switches answer with agent_switched; bad inputs are refused before they touch history."""
    session.script(text("Architect here."))
    chunks = await session.say("let's design", agent_type="architect")
    assert types(chunks) == ["agent_switched", "assistant_message"]
    assert chunks[0].metadata and chunks[0].metadata["to_agent"] == "architect"
    assert json.dumps(session.llm_requests()[-1]).count("architect agent") == 1
    assert len(session.llm_requests()) == 1  # an explicit switch skips classification

    await session.client.switch_agent(session.id, SwitchAgent(agent_type=AgentType.ASK, reason="questions"))
    switched = final(await session.events())
    assert (switched.type, switched.content) == (ChunkType.AGENT_SWITCHED, "Switched to ask agent")
    await session.client.switch_agent(session.id, SwitchAgent(agent_type=AgentType.ASK))
    assert final(await session.events()).content == "Already using the ask agent"

    before = await session.history()
    with pytest.raises(InvalidInputError, match="content or an agent_type"):
        await session.client.send_user_message(session.id, UserMessage(content="   "))
    assert await session.history() == before


async def test_single_agent_session_refuses_specialists(runtime_with: RuntimeFactory, fake_llm: FakeLlmServer) -> None:
    async with runtime_with(multi_agent_mode=False) as client:
        session = Session(client, fake_llm)
        with pytest.raises(InvalidInputError, match="not available"):
            await client.send_user_message(session.id, UserMessage(content="hi", agent_type=AgentType.CODER))


async def test_continue_as_new_carries_the_whole_session(runtime_with: RuntimeFactory, fake_llm: FakeLlmServer) -> None:
    """A new run keeps history, agent, approvals, counters and the event stream's offsets; the session goes on."""
    async with runtime_with(continue_as_new_after_turns=1) as client:
        session = Session(client, fake_llm)
        session.script(classify("coder"), call("write_file", "call_w1", path="a.py", content="x"))
        final(await session.say("create a.py"))
        session.script(text("Okay."))  # before the decision: the rejection goes straight on to the model
        await session.decide("call_w1", "reject", feedback="not now")
        assert final(await session.events()).content == "Okay."
        first_run = await client.handle(session.id).describe()

        session.script(text("Still the coder."))
        chunks = await session.say("anything else?")
        assert types(chunks) == ["assistant_message"]  # no re-routing: the agent survived the new run
        state = await client.state(session.id)
        assert state.run >= 2 and state.current_agent == AgentType.CODER
        assert (await client.handle(session.id).describe()).run_id != first_run.run_id
        assert [a.status for a in await client.approvals(session.id)] == ["rejected"]
        assert state.counters.llm_requests == 4 and state.counters.approvals == {"reject": 1}
        history = await session.history()
        assert [m.role for m in history] == ["user", "assistant", "tool", "assistant", "user", "assistant"]
        with pytest.raises(ApprovalAlreadyResolvedError):
            await session.decide("call_w1", "approve")
        # Offsets keep counting across runs: a client resuming from 0 sees every event exactly once.
        replayed = await client.until_wait_point(session.id, 0)
        assert [e.offset for e in replayed] == list(range(len(replayed)))


async def test_tokens_stream_live_before_the_stored_answer(session: Session) -> None:
    """Agent answers stream as `assistant_delta` events tagged with the attempt; the full text follows once stored."""
    answer_text = "Python is a programming language that reads like prose."
    session.script(classify("ask"), FakeReply(status=503, error_message="busy"), text(answer_text))
    await session.client.send_user_message(session.id, UserMessage(content="what is python?", live_tokens=True))
    events = await session.client.until_wait_point(session.id, 0)
    kinds = [e.chunk.type for e in events]
    deltas = [e.chunk for e in events if e.chunk.type is ChunkType.ASSISTANT_DELTA]
    assert len(deltas) >= 2 and kinds[-1] is ChunkType.ASSISTANT_MESSAGE
    assert kinds.index(ChunkType.ASSISTANT_DELTA) < kinds.index(ChunkType.ASSISTANT_MESSAGE)
    assert "".join(d.token or "" for d in deltas) == answer_text == events[-1].chunk.content
    # The first attempt failed before any token, so every delta comes from attempt 2 of one request.
    assert {(d.metadata or {}).get("attempt") for d in deltas} == {2}
    assert len({(d.metadata or {}).get("request_id") for d in deltas}) == 1
    classification, *agent_requests = session.llm_requests()
    assert "stream" not in classification or classification["stream"] is False
    assert all(r["stream"] is True for r in agent_requests)


async def test_streamed_tool_calls_arrive_whole(session: Session) -> None:
    """Tool-call deltas are folded back into complete calls with their arguments."""
    session.script(
        classify("coder"),
        call("write_file", "call_w1", preface="Writing it now.", path="src/app.py", content="print('hi')\n"),
    )
    chunks = await session.say("create src/app.py", live_tokens=True)
    tool_call = final(chunks)
    assert (tool_call.call_id, tool_call.arguments) == ("call_w1", {"path": "src/app.py", "content": "print('hi')\n"})
    assert "".join(d.token or "" for d in session.deltas) == "Writing it now."


async def test_tokens_go_out_only_to_clients_that_ask(session: Session) -> None:
    """Without `live_tokens` the answer is fetched whole: no deltas (each one a workflow task nobody reads); an
    input that asks turns them on for the turns that follow, one that does not turns them off again."""
    session.script(classify("ask"), text("Whole."), text("Token by token."), text("Whole again."))
    assert types(await session.say("first")) == ["agent_switched", "assistant_message"]
    assert types(await session.say("second", live_tokens=True)) == ["assistant_message"]
    assert "".join(d.token or "" for d in session.deltas) == "Token by token."
    deltas = len(session.deltas)
    assert types(await session.say("third")) == ["assistant_message"]
    assert len(session.deltas) == deltas
    agent_requests = session.llm_requests()[1:]
    assert [r.get("stream", False) for r in agent_requests] == [False, True, False]


async def test_error_text_is_never_streamed_as_tokens(session: Session) -> None:
    """B2 in streaming mode: an "[Error] ..." answer produces no token events, only an error."""
    session.script(classify("ask"), *[FakeReply(error_text="LiteLLM proxy unavailable") for _ in range(2)])
    error = final(await session.say("hello", live_tokens=True))
    assert error.type is ChunkType.ERROR
    assert session.deltas == []
