"""The writer lock, across real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from journal.errors import LockedError
from journal.lock import WriterLock

# Waits for "go" on stdin, tries the lock, reports, then holds it until stdin
# closes (so the parent decides how long the winner holds it).
CONTENDER = """
import os, sys
from journal.lock import WriterLock
from journal.errors import LockedError
lock = WriterLock(sys.argv[1])
sys.stdin.readline()
try:
    lock.acquire()
except LockedError as exc:
    print("locked", exc.holder_pid, flush=True)
    sys.exit(0)
print("won", os.getpid(), flush=True)
sys.stdin.read()
"""


def _contenders(lock_path: Path, count: int) -> list[subprocess.Popen]:
    return [
        subprocess.Popen(
            [sys.executable, "-c", CONTENDER, str(lock_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]


@pytest.mark.parametrize("count", [2, 5])
def test_acquire_contenders_started_together_exactly_one_wins(
    tmp_path: Path, count: int
) -> None:
    lock_path = tmp_path / ".updock" / "lock"
    for _round in range(4):
        procs = _contenders(lock_path, count)
        for proc in procs:
            proc.stdin.write("go\n")
            proc.stdin.flush()
        lines = [proc.stdout.readline().split() for proc in procs]
        for proc in procs:
            proc.stdin.close()
            proc.wait(timeout=30)

        winners = [int(pid) for verdict, pid in lines if verdict == "won"]
        losers = [int(pid) for verdict, pid in lines if verdict == "locked"]
        assert len(winners) == 1, lines
        assert losers == winners * (count - 1)


def test_acquire_loser_does_not_erase_holder_pid(tmp_path: Path) -> None:
    lock_path = tmp_path / "lock"
    with WriterLock(lock_path):
        for _ in range(3):
            with pytest.raises(LockedError) as caught:
                WriterLock(lock_path).acquire()
            assert caught.value.holder_pid == os.getpid()
        assert lock_path.read_text() == f"{os.getpid()}\n"
    assert str(os.getpid()) in str(caught.value)


def test_acquire_after_holder_killed_succeeds(tmp_path: Path) -> None:
    lock_path = tmp_path / "lock"
    holder = _contenders(lock_path, 1)[0]
    holder.stdin.write("go\n")
    holder.stdin.flush()
    assert holder.stdout.readline().startswith("won")
    with pytest.raises(LockedError):
        WriterLock(lock_path).acquire()

    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)

    with WriterLock(lock_path) as lock:
        assert lock.held
        assert lock_path.read_text() == f"{os.getpid()}\n"


def test_release_lets_the_next_writer_in(tmp_path: Path) -> None:
    lock_path = tmp_path / "lock"
    first = WriterLock(lock_path)
    first.acquire()
    first.release()
    first.release()

    with WriterLock(lock_path) as second:
        assert second.held
    assert not first.held


def test_loser_ignores_the_pid_a_dead_holder_left(tmp_path: Path) -> None:
    """A holder killed without releasing leaves its pid in the file; a loser
    racing the next holder (which has not written its pid yet) must not name
    the dead one."""
    lock_path = tmp_path / "lock"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    lock_path.write_text(dead.stdout)
    # Takes the lock and never writes a pid: a new holder caught in between.
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR); "
         "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); sys.stdin.read()",
         str(lock_path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LockedError) as caught:
            WriterLock(lock_path).acquire()
        assert caught.value.holder_pid is None
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
