"""Automatic approvals in the PostgreSQL projection: recorded as such (decided by "policy" or "remembered", with the
grant that approved them), distinct from a human's decision, in the approvals table and in their trail."""

from __future__ import annotations

import asyncpg

from client.projection_reader import ProjectionReader
from devstack.fake_llm import FakeLlmServer
from devstack.postgres import EmbeddedPostgres
from tests.conftest import RuntimeFactory
from tests.projection.support import eventually
from tests.support import Session, call, final, readme_approval_rules, text
from workflows.model import ApprovalStatus, Decision, GrantScope, HitlDecision, RememberDecision


async def test_automatic_approvals_are_in_the_projection_as_such(
    runtime_with: RuntimeFactory, postgres: EmbeddedPostgres, fake_llm: FakeLlmServer, projection_pool: asyncpg.Pool
) -> None:
    reader = ProjectionReader(projection_pool)
    overrides = {"multi_agent_mode": False, "llm_streaming": False, "approval": {"rules": readme_approval_rules()}}
    async with runtime_with(database_url=postgres.dsn, **overrides) as client:
        session = Session(client, fake_llm)

        async def run(call_id: str, command: str, result_of: str | None = None) -> bool:
            session.script(call("execute_command", call_id, command=command))
            if result_of is None:
                chunks = await session.say(f"run {command}")
            else:
                await session.result(result_of, "ok")
                chunks = await session.events()
            chunk = final(chunks)
            assert chunk.call_id == call_id
            return bool(chunk.requires_approval)

        assert await run("call_g", "git status") is False
        assert await run("call_n1", "npm test", result_of="call_g") is True
        remember = RememberDecision(scope=GrantScope.SESSION, command_words=2)
        await client.decide(session.id, HitlDecision(call_id="call_n1", decision=Decision.APPROVE, remember=remember))
        final(await session.events())
        assert await run("call_n2", "npm test -u", result_of="call_n1") is False
        session.script(text("Done."))
        await session.result("call_n2", "ok")
        final(await session.events())
        [grant] = await client.grants(session.id)

        approvals = await client.approvals(session.id)

        async def projected() -> bool:
            rows = await reader.approvals(session.id)
            return len(rows) == 3 and all(r.status is ApprovalStatus.APPROVED for r in rows)

        await eventually(projected)
        assert await reader.approvals(session.id) == approvals
        by_call = {a.call_id: a for a in approvals}
        assert (by_call["call_g"].decided_by, by_call["call_g"].grant_id) == ("policy", None)
        assert (by_call["call_n1"].decided_by, by_call["call_n1"].remembered_as) == ("hitl_decision", grant.grant_id)
        assert (by_call["call_n2"].decided_by, by_call["call_n2"].grant_id) == ("remembered", grant.grant_id)

        # An automatic approval was never pending: its trail is the one settled state.
        for call_id, decided_by in (("call_g", "policy"), ("call_n2", "remembered")):
            trail = await reader.approval_trail(session.id, call_id)
            assert [(a.status, a.decided_by) for a in trail] == [(ApprovalStatus.APPROVED, decided_by)]
        human = await reader.approval_trail(session.id, "call_n1")
        assert [a.status for a in human] == [ApprovalStatus.PENDING, ApprovalStatus.APPROVED]

        rows = await projection_pool.fetch(
            "SELECT decided_by, count(*) AS n FROM approvals WHERE session_id = $1 GROUP BY 1 ORDER BY 1", session.id
        )
        assert {r["decided_by"]: r["n"] for r in rows} == {"hitl_decision": 1, "policy": 1, "remembered": 1}
        granted = await projection_pool.fetchval(
            "SELECT call_id FROM approvals WHERE session_id = $1 AND grant_id = $2", session.id, grant.grant_id
        )
        assert granted == "call_n2"
        assert (await client.state(session.id)).counters.approvals == {"policy": 1, "approve": 1, "remembered": 1}
