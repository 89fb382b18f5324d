"""The product's commands as an operator runs them: real subprocesses, configured only through the environment.

`./run demo` plays the seed incident on its own embedded stack and must leave nothing running;
`python worker.py` serves conversations from a dev server and stops cleanly on Ctrl-C (SIGINT); a bad setting
stops `agent-runtime worker` before it connects anywhere, naming the variable; `agent-runtime check` passes on the
defaults.

Leftover processes are found by ancestry, not by name: while the demo runs its descendants are sampled from
/proc, and afterwards each of them (same pid and start time) must be gone. Comparing every `temporal` process
before and after would also count the servers of this pytest session and of anything else on the machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from client.conversation_client import ConversationClient
from devstack.fake_llm import FakeLlmServer
from devstack.temporal import DevServer
from settings import ENV_PREFIX, Settings, TemporalSettings
from tests.support import Session, call, classify, final, text, types

REPO_ROOT = Path(__file__).resolve().parents[2]
BIN_DIR = Path(sys.executable).parent
AGENT_RUNTIME = BIN_DIR / "agent-runtime"
# The README's commands: `./run demo` and `./run dev` start the embedded stack (python -m devstack).
RUN = REPO_ROOT / "run"

DEMO_TIMEOUT_SECONDS = 120
SIGINT_EXIT_SECONDS = 10
SETTINGS_ERROR_SECONDS = 15


def _env(**variables: str) -> dict[str, str]:
    """This process's environment without any AGENT_RUNTIME__ variable, plus the given ones."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(ENV_PREFIX)}
    return env | {"PYTHONUNBUFFERED": "1"} | variables


@dataclass
class _Proc:
    """A subprocess whose combined output is collected line by line while it runs."""

    process: asyncio.subprocess.Process
    lines: list[str] = field(default_factory=list)
    _reader: asyncio.Task[None] | None = None
    _new_line: asyncio.Event = field(default_factory=asyncio.Event)

    @classmethod
    async def start(cls, *argv: str | Path, env: Mapping[str, str], cwd: Path = REPO_ROOT) -> _Proc:
        process = await asyncio.create_subprocess_exec(
            *map(str, argv),
            cwd=cwd,
            env=dict(env),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        proc = cls(process)
        proc._reader = asyncio.create_task(proc._read())
        return proc

    @property
    def output(self) -> str:
        return "".join(self.lines)

    async def _read(self) -> None:
        assert self.process.stdout is not None
        async for raw in self.process.stdout:
            self.lines.append(raw.decode(errors="replace"))
            self._new_line.set()

    async def wait_for_line(self, needle: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not any(needle in line for line in self.lines):
            if self.process.returncode is not None or (self._reader is not None and self._reader.done()):
                raise AssertionError(f"process ended before printing {needle!r}:\n{self.output}")
            self._new_line.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new_line.wait(), max(0.0, deadline - time.monotonic()))
            if time.monotonic() > deadline:
                raise AssertionError(f"no {needle!r} within {timeout} s:\n{self.output}")

    async def wait(self, timeout: float) -> int:
        """The exit code; the output is complete afterwards."""
        try:
            code = await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            raise AssertionError(f"still running after {timeout} s:\n{self.output}") from None
        if self._reader is not None:
            await self._reader
        return code

    async def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        if self._reader is not None:
            await self._reader


@contextlib.asynccontextmanager
async def _running(*argv: str | Path, env: Mapping[str, str]) -> AsyncIterator[_Proc]:
    proc = await _Proc.start(*argv, env=env)
    try:
        yield proc
    finally:
        await proc.kill()  # only if a failed assertion left it running


# --- /proc ---


@dataclass(frozen=True)
class _ProcInfo:
    pid: int
    ppid: int
    name: str
    start_time: int
    state: str


def _processes() -> dict[int, _ProcInfo]:
    found: dict[int, _ProcInfo] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue  # gone meanwhile
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        # Fields after the name, from stat(5): state, ppid, ..., starttime (the 20th of them).
        found[int(entry)] = _ProcInfo(int(entry), int(fields[1]), name, int(fields[19]), fields[0])
    return found


def _descendants(root: int) -> list[_ProcInfo]:
    table = _processes()
    children: dict[int, list[_ProcInfo]] = {}
    for info in table.values():
        children.setdefault(info.ppid, []).append(info)
    found: list[_ProcInfo] = []
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child.pid)
    return found


def _still_running(info: _ProcInfo) -> bool:
    now = _processes().get(info.pid)
    return now is not None and now.start_time == info.start_time and now.state != "Z"


# --- The commands ---


async def test_demo_runs_the_seed_incident_and_leaves_nothing_running() -> None:
    started = time.monotonic()
    async with _running(RUN, "demo", env=_env()) as demo:
        descendants: dict[tuple[int, int], _ProcInfo] = {}
        while demo.process.returncode is None and time.monotonic() - started < DEMO_TIMEOUT_SECONDS:
            descendants |= {(p.pid, p.start_time): p for p in _descendants(demo.process.pid)}
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(demo.process.wait()), 0.05)
        code = await demo.wait(timeout=max(1.0, DEMO_TIMEOUT_SECONDS - (time.monotonic() - started)))
    output = demo.output
    assert code == 0, output

    steps = [
        "agent_switched orchestrator -> coder",
        "tool_call execute_command",
        "[needs approval]",
        'pending: execute_command {"command": "dart analyze"}',
        "The user approves",
        "[execute now]",
        "sends the tool_result",
        "assistant_message: dart analyze found no issues.  (wait point)",
        "approval call_6OGe4demo: approved by hitl_decision",
        "demo complete",
    ]
    positions = [output.find(step) for step in steps]
    assert all(p >= 0 for p in positions), [s for s, p in zip(steps, positions, strict=True) if p < 0]
    assert positions == sorted(positions), "the demo's steps are out of order"

    servers = [p for p in descendants.values() if p.name == "temporal"]
    assert servers, f"never saw the demo's Temporal dev server among its children: {list(descendants.values())}"
    deadline = time.monotonic() + 2
    while (left := [p for p in descendants.values() if _still_running(p)]) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert not left, f"the demo left processes running: {left}"


async def test_python_worker_py_serves_a_conversation_and_stops_on_sigint(
    dev_server: DevServer, fake_llm: FakeLlmServer
) -> None:
    task_queue = f"proc-{uuid.uuid4().hex[:8]}"
    env = _env(
        AGENT_RUNTIME__TEMPORAL__ADDRESS=dev_server.target,
        AGENT_RUNTIME__TEMPORAL__TASK_QUEUE=task_queue,
        AGENT_RUNTIME__LLM_PROXY_URL=fake_llm.base_url,
    )
    async with _running(sys.executable, "worker.py", env=env) as worker:
        await worker.wait_for_line(f"Worker polling task queue '{task_queue}'", timeout=30)

        # The gateway side, in this process: the same settings a gateway would have.
        settings = Settings(
            llm_proxy_url=fake_llm.base_url, temporal=TemporalSettings(address=dev_server.target, task_queue=task_queue)
        )
        session = Session(
            ConversationClient(dev_server.client, task_queue=task_queue, config=settings.conversation_config()),
            fake_llm,
        )
        session.script(classify("coder"), call("write_file", "call_w1", path="main.py", content="print(1)"))
        assert types(await session.say("create main.py")) == ["agent_switched", "tool_call"]
        await session.decide("call_w1", "approve")
        assert final(await session.events()).requires_approval is False
        session.script(text("Created main.py."))
        await session.result("call_w1", {"written": True})
        assert final(await session.events()).content == "Created main.py."
        assert len(session.llm_requests()) == 3  # every LLM call went from the worker process to the fake over HTTP
        assert [m.role for m in await session.history()] == ["user", "assistant", "tool", "assistant"]

        worker.process.send_signal(signal.SIGINT)
        code = await worker.wait(timeout=SIGINT_EXIT_SECONDS)
    assert code == 0, worker.output
    assert "Traceback" not in worker.output, worker.output


async def test_python_worker_py_stops_gracefully_on_sigterm(dev_server: DevServer) -> None:
    task_queue = f"proc-{uuid.uuid4().hex[:8]}"
    env = _env(AGENT_RUNTIME__TEMPORAL__ADDRESS=dev_server.target, AGENT_RUNTIME__TEMPORAL__TASK_QUEUE=task_queue)
    async with _running(sys.executable, "worker.py", env=env) as worker:
        await worker.wait_for_line(f"Worker polling task queue '{task_queue}'", timeout=30)
        worker.process.send_signal(signal.SIGTERM)
        code = await worker.wait(timeout=SIGINT_EXIT_SECONDS)
    assert "Beginning worker shutdown" in worker.output, worker.output
    assert code == 0, worker.output


async def _run(*argv: str | Path, env: Mapping[str, str], timeout: float) -> tuple[int, str, str]:
    """Run a short command to its end: exit code, stdout, stderr."""
    process = await asyncio.create_subprocess_exec(
        *map(str, argv),
        cwd=REPO_ROOT,
        env=dict(env),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"{argv} still running after {timeout} s") from None
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_worker_refuses_an_invalid_setting_before_connecting() -> None:
    # Nothing listens on the default Temporal address here: a worker that got as far as connecting would not exit
    # with a settings error.
    code, out, err = await _run(
        AGENT_RUNTIME, "worker", env=_env(AGENT_RUNTIME__LLM_TIMEOUT_SECONDS="-1"), timeout=SETTINGS_ERROR_SECONDS
    )
    assert code == 2, (out, err)
    assert "AGENT_RUNTIME__LLM_TIMEOUT_SECONDS: Input should be greater than 0" in err, err
    assert "Traceback" not in err, err


async def test_python_worker_py_refuses_an_invalid_setting_cleanly() -> None:
    code, out, err = await _run(
        sys.executable, "worker.py", env=_env(AGENT_RUNTIME__LLM_TIMEOUT_SECONDS="-1"), timeout=SETTINGS_ERROR_SECONDS
    )
    assert code == 2 and "AGENT_RUNTIME__LLM_TIMEOUT_SECONDS: Input should be greater than 0" in err, err
    assert "Traceback" not in err, err


async def test_check_passes_on_the_defaults() -> None:
    code, out, err = await _run(AGENT_RUNTIME, "check", env=_env(), timeout=SETTINGS_ERROR_SECONDS)
    assert code == 0, (out, err)
    assert out.strip().splitlines()[-1] == "ok", out
