"""The single-writer lock of a deployment.

A kernel lock (``flock(2)``) on ``.updock/lock``: the kernel releases it when
the holding process exits, however it exits (SIGKILL, power loss), so there
is never a stale lock to clean up. The file also holds the holder's pid, for
the message a second writer gets; only the holder writes it, and only after
taking the lock, so a process that fails to take the lock cannot erase it.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from pathlib import Path

from journal.errors import LockedError

logger = logging.getLogger(__name__)

# How long a loser waits for a winner that holds the lock but has not yet
# written its pid (the two steps are not atomic).
_PID_WAIT = 0.5


class WriterLock:
    """An exclusive, non-blocking lock on ``path``; a context manager.

    Raises (on ``acquire`` or ``with``):
        LockedError: another process holds it; ``holder_pid`` names it.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock at once or raise ``LockedError``."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _wait_for_pid(fd)
            os.close(fd)
            raise LockedError(self.path, holder) from None

        # Write before truncating: a reader in between sees our pid first.
        data = f"{os.getpid()}\n".encode()
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))
        self._fd = fd
        logger.debug("took the writer lock %s", self.path)

    def release(self) -> None:
        """Give the lock up (idempotent). Exiting the process does it too."""
        if self._fd is None:
            return
        os.ftruncate(self._fd, 0)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None
        logger.debug("released the writer lock %s", self.path)

    def __enter__(self) -> WriterLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def read_holder(fd: int) -> int | None:
    """The pid written in the lock file, or None when it holds none."""
    text = os.pread(fd, 64, 0).decode("ascii", "replace")
    first = text.split("\n", 1)[0].strip()
    return int(first) if first.isdigit() else None


def _wait_for_pid(fd: int) -> int | None:
    """The holder's pid, waiting briefly for a holder that just took it.

    A pid whose process is gone was left by a holder that died without
    releasing (the kernel dropped its lock, not its pid): the new holder
    has yet to write its own.
    """
    deadline = time.monotonic() + _PID_WAIT
    while True:
        holder = read_holder(fd)
        if holder is not None and not _alive(holder):
            holder = None
        if holder is not None or time.monotonic() >= deadline:
            return holder
        time.sleep(0.01)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True
