"""One owner at a time for a data file or folder of the embedded stack, and the servers an owner left behind.

An owner holds an exclusive `flock` on `<path>.lock` (which names its pid) for as long as its server runs; the
kernel drops the lock when the owner dies, however it dies. So a server that runs on the path while nobody holds
the lock was left behind by an owner that was killed (SIGKILL, the OOM killer): it keeps its ports and files, and
the next owner stops it before starting its own. A second live owner is refused with a message naming the first.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

# How long a server left behind gets to stop on SIGTERM before it is killed.
_STOP_GRACE_SECONDS = 10.0
# And how long a killed one gets to disappear (a process stuck in the kernel may take a moment).
_KILL_WAIT_SECONDS = 5.0


class OwnedElsewhere(RuntimeError):
    """Another live process owns the path."""


class Ownership:
    """The exclusive claim on a data path (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock_path = path.with_name(path.name + ".lock")
        self._lock_file: IO[str] | None = None

    @property
    def held(self) -> bool:
        return self._lock_file is not None

    def take(self) -> None:
        """Claim the path (a no-op when this object holds it already).

        Raises:
            OwnedElsewhere: Another live process holds it; the message names it.
        """
        if self._lock_file is not None:
            return
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        lock_file = self.lock_path.open("a+")
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock_file.seek(0)
            owner = lock_file.read().strip() or "another process"
            lock_file.close()
            raise OwnedElsewhere(f"{self.path} is in use by {owner}; stop it, or use another data folder") from None
        lock_file.seek(0)
        lock_file.truncate()
        lock_file.write(f"pid {os.getpid()}\n")
        lock_file.flush()
        self._lock_file = lock_file

    def release(self) -> None:
        if self._lock_file is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None


def processes_matching(accept: Callable[[list[str], Path], bool]) -> list[int]:
    """Pids of the live processes whose command line (and working directory, for relative paths in it) `accept`
    takes; empty where there is no /proc."""
    found: list[int] = []
    proc = Path("/proc")
    if not proc.is_dir():
        return found
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            args = [arg.decode(errors="replace") for arg in (entry / "cmdline").read_bytes().split(b"\0") if arg]
            cwd = Path(os.readlink(entry / "cwd"))
        except OSError:
            continue  # gone meanwhile, or not ours to read
        if args and accept(args, cwd) and not _is_zombie(int(entry.name)):
            found.append(int(entry.name))
    return found


def stop_process(pid: int) -> bool:
    """SIGTERM, then SIGKILL if it is still there after the grace period; True once it is gone."""
    for sig, wait in ((signal.SIGTERM, _STOP_GRACE_SECONDS), (signal.SIGKILL, _KILL_WAIT_SECONDS)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not _alive(pid):
                return True
            time.sleep(0.05)
    return not _alive(pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    """An exited process its parent has not reaped yet (it holds no port or file any more)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state == "Z"
