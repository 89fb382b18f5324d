"""What an operator sees in the Temporal Web UI: search attributes, current details, the stuck-approval filter.

Runs on the Temporal dev server (real visibility), with the attributes registered the way the dev stack does it.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

from temporalio.api.sdk.v1 import WorkflowMetadata

from client.connection import ensure_search_attributes, session_config
from client.conversation_client import ConversationClient
from client.inbox import stuck_approvals_query
from devstack.fake_llm import FakeLlmServer
from devstack.temporal import DevServer
from settings import Settings, TemporalSettings
from tests.support import Session, call, classify, final, text
from worker import running_worker
from workflows.model import (
    CURRENT_AGENT_ATTRIBUTE,
    PENDING_APPROVALS_ATTRIBUTE,
    PENDING_TOOLS_ATTRIBUTE,
    SESSION_STATUS_ATTRIBUTE,
    WAITING_CALL_ID_ATTRIBUTE,
    WAITING_TOOL_ATTRIBUTE,
    workflow_id_for,
)


async def _matching(server: DevServer, query: str, expected: set[str], attempts: int = 50) -> set[str]:
    """Visibility is eventually consistent: poll until the query returns the expected ids (or give up)."""
    found: set[str] = set()
    for _ in range(attempts):
        found = {w.id async for w in server.client.list_workflows(query)}
        if found == expected:
            break
        await asyncio.sleep(0.2)
    return found


async def test_attributes_details_and_the_stuck_approval_filter(dev_server: DevServer, fake_llm: FakeLlmServer) -> None:
    assert await ensure_search_attributes(dev_server.client) is True
    assert await ensure_search_attributes(dev_server.client) is True  # registering twice is harmless
    settings = Settings(
        llm_proxy_url=fake_llm.base_url,
        temporal=TemporalSettings(address=dev_server.target, task_queue=f"ui-{uuid.uuid4().hex[:8]}"),
    )
    config = await session_config(dev_server.client, settings)
    assert config.search_attributes is True and config.waiting_call_attributes is True
    async with running_worker(dev_server.client, settings):
        client = ConversationClient(
            dev_server.client, task_queue=settings.temporal.task_queue, config=config, started_by="the test gateway"
        )
        stuck, fine = Session(client, fake_llm), Session(client, fake_llm)
        stuck.script(classify("coder"), call("execute_command", "call_x1", command="dart analyze"))
        final(await stuck.say("run dart analyze"))
        fine.script(classify("ask"), text("Hello."))
        final(await fine.say("hello"))

        description = await client.handle(stuck.id).describe()
        attributes = description.typed_search_attributes
        assert attributes.get(PENDING_APPROVALS_ATTRIBUTE) == 1
        assert attributes.get(PENDING_TOOLS_ATTRIBUTE) == ["execute_command"]
        assert attributes.get(CURRENT_AGENT_ATTRIBUTE) == "coder"
        assert attributes.get(SESSION_STATUS_ATTRIBUTE) == "awaiting_approval"
        assert attributes.get(WAITING_CALL_ID_ATTRIBUTE) == "call_x1"
        assert attributes.get(WAITING_TOOL_ATTRIBUTE) == "execute_command"
        # Summary and Details, set by the client that started the session: who, which agent, when.
        summary = await description.static_summary() or ""
        assert summary.startswith(f"Session {stuck.id} · agent orchestrator · started ")
        assert f"by the test gateway ({dev_server.client.identity})" in summary and "“run dart analyze”" in summary
        assert f"(workflow `{workflow_id_for(stuck.id)}`)" in (await description.static_details() or "")
        # The Web UI shows "current details" from the SDK's built-in metadata query: first what waits, since and
        # until when, and the commands that decide it; then the list.
        metadata = await client.handle(stuck.id).query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
        details = metadata.current_details
        lines = details.splitlines()
        assert lines[0] == '### ⏸ Waits for a human to approve `execute_command` (command="dart analyze")'
        assert lines[1].startswith("Call `call_x1`, asked by agent `coder` since ") and "; expires never." in lines[1]
        assert f"- Approve: `agent-runtime approvals approve {stuck.id} call_x1`" in lines
        assert "**Session awaiting approval** · agent `coder`" in details
        assert 'approval for `execute_command` (command="dart analyze")' in details and "call_x1" in details
        assert lines[-1].startswith(f"_Session `{stuck.id}` (run 1) · started ")

        # The README's filter: approvals pending longer than N minutes. Nothing is that old yet...
        assert await _matching(dev_server, stuck_approvals_query(timedelta(minutes=15)), set(), attempts=3) == set()
        # ...but seen from 20 minutes in the future the parked session is stuck, and only that one.
        later = datetime.now(UTC) + timedelta(minutes=20)
        query = stuck_approvals_query(timedelta(minutes=15), now=later)
        assert await _matching(dev_server, query, {workflow_id_for(stuck.id)}) == {workflow_id_for(stuck.id)}
        # A column an operator adds to the list, and a filter: the waiting call, found by its id.
        by_call = f"{WAITING_CALL_ID_ATTRIBUTE.name} = 'call_x1' AND TaskQueue = '{settings.temporal.task_queue}'"
        assert await _matching(dev_server, by_call, {workflow_id_for(stuck.id)}) == {workflow_id_for(stuck.id)}

        await stuck.decide("call_x1", "approve")
        final(await stuck.events())
        stuck.script(text("No issues."))
        await stuck.result("call_x1", {"exit_code": 0})
        final(await stuck.events())
        assert await _matching(dev_server, query, set()) == set()
        settled = (await client.handle(stuck.id).describe()).typed_search_attributes
        assert settled.get(PENDING_APPROVALS_ATTRIBUTE) == 0 and settled.get(SESSION_STATUS_ATTRIBUTE) == "idle"
        assert settled.get(WAITING_CALL_ID_ATTRIBUTE) is None and settled.get(WAITING_TOOL_ATTRIBUTE) is None
        # The column an operator adds to the list: the waiting call, found by its id.
        by_call = f"{WAITING_CALL_ID_ATTRIBUTE.name} = 'call_x1'"
        assert await _matching(dev_server, by_call, set(), attempts=3) == set()
