"""cancel_turn: stop a running turn wherever it waits, leave a paired history, and keep the session usable."""

from __future__ import annotations

import asyncio
import time

from devstack.fake_llm import FakeReply
from tests.support import Session, call, classify, final, text, tool_messages_for, types
from workflows.model import (
    CancelTurn,
    ChunkType,
    UserMessage,
)


async def test_cancel_while_an_approval_waits(session: Session) -> None:
    session.script(classify("coder"), call("write_file", "call_c1", path="a.py", content="x"))
    final(await session.say("create a.py"))
    receipt = await session.client.cancel_turn(session.id, CancelTurn(reason="changed my mind"))
    assert receipt.accepted and not receipt.duplicate
    chunks = await session.events()
    done = final(chunks)
    assert (done.type, done.content) == (ChunkType.STATUS, "The turn was cancelled")
    assert done.metadata == {"cancelled": True, "reason": "changed my mind"}
    [approval] = await session.client.approvals(session.id)
    assert (approval.status, approval.decided_by, approval.feedback) == ("cancelled", "cancel_turn", "changed my mind")
    assert await session.client.pending_approvals(session.id) == []
    history = await session.history()
    assert "cancelled the turn" in (tool_messages_for(history, "call_c1")[0].content or "")
    state = await session.client.state(session.id)
    assert (state.status, state.outstanding_calls, state.counters.tool_calls) == ("idle", [], {"cancelled": 1})

    session.script(text("Okay, nothing written."))
    assert final(await session.say("never mind")).content == "Okay, nothing written."
    assert (await session.client.cancel_turn(session.id)).accepted is False  # nothing runs now


async def test_cancel_a_slow_llm_call_stores_nothing(session: Session) -> None:
    session.script(classify("ask"), FakeReply(content="too late", delay_seconds=30))
    await session.client.send_user_message(session.id, UserMessage(content="hello"))
    for _ in range(100):  # until the agent's request is in flight at the fake
        if len(session.llm_requests()) == 2:
            break
        await asyncio.sleep(0.05)
    started = time.monotonic()
    await session.client.cancel_turn(session.id)
    chunks = await session.events()
    assert time.monotonic() - started < 10
    assert types(chunks)[-1] == "status" and final(chunks).content == "The turn was cancelled"
    history = await session.history()
    assert [m.role for m in history] == ["user"]
    session.script(text("Hi!"))
    assert final(await session.say("hello again")).content == "Hi!"
    assert [m.role for m in await session.history()] == ["user", "user", "assistant"]


async def test_cancel_keeps_queued_messages(session: Session) -> None:
    session.script(classify("ask"), call("read_file", "call_r1", path="a.py"))
    final(await session.say("read a.py"))
    assert (await session.client.send_user_message(session.id, UserMessage(content="and b.py"))).queued
    session.script(text("b.py is empty."))
    await session.client.cancel_turn(session.id)
    assert final(await session.events()).content == "The turn was cancelled"
    assert final(await session.events()).content == "b.py is empty."
    history = await session.history()
    assert [m.role for m in history] == ["user", "assistant", "tool", "user", "assistant"]
