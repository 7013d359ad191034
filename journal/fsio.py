"""The durability layer: every fsync, directory sync and rename goes through here.

updock's crash safety rests on a small set of kernel promises (POSIX, Linux):

- ``fsync(fd)`` on a file makes its data and inode durable, not its name;
- ``fsync`` on a directory makes the names created, renamed or removed in it
  durable;
- ``rename(2)`` within one filesystem replaces the target atomically: after a
  crash the name holds either the old or the new inode, never a mix;
- ``syncfs(2)`` makes everything written on one filesystem durable, so one
  call can stand in for thousands of per-file fsyncs.

Keeping these calls in one module gives tests a seam: ``set_observer`` installs
an object that sees each write and each sync, so a test can model a power cut
by discarding what was written and never synced.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from pathlib import Path
from typing import Protocol


class Observer(Protocol):
    """Sees durability-relevant calls; used by tests that model power loss."""

    def on_write(self, path: Path) -> None: ...

    def on_fsync(self, path: Path) -> None: ...

    def on_fsync_dir(self, path: Path) -> None: ...

    def on_syncfs(self, path: Path) -> None: ...


_observer: Observer | None = None
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def set_observer(observer: Observer | None) -> None:
    """Install (or remove, with None) the observer of durability calls."""
    global _observer
    _observer = observer


def note_write(path: Path) -> None:
    """Tell the observer that ``path`` was written and not yet synced."""
    if _observer is not None:
        _observer.on_write(Path(path))


def fsync_fd(fd: int, path: Path) -> None:
    """fsync an open file descriptor whose file is ``path``."""
    os.fsync(fd)
    if _observer is not None:
        _observer.on_fsync(Path(path))


def fsync_path(path: Path) -> None:
    """Open ``path`` read-only and fsync it."""
    fd = os.open(path, os.O_RDONLY)
    try:
        fsync_fd(fd, path)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """fsync a directory, making the names in it durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    if _observer is not None:
        _observer.on_fsync_dir(Path(path))


def syncfs(path: Path) -> None:
    """Make everything written on the filesystem holding ``path`` durable.

    One ``syncfs(2)`` replaces a per-file fsync of every file staged or placed
    by a transaction (the batching OSTree uses before its boot switch).
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        if _libc.syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), str(path))
    finally:
        os.close(fd)
    if _observer is not None:
        _observer.on_syncfs(Path(path))


_SYNC_FILE_RANGE_WRITE = 2
_sync_file_range = getattr(_libc, "sync_file_range", None)
if _sync_file_range is not None:
    _sync_file_range.argtypes = (
        ctypes.c_int,
        ctypes.c_int64,
        ctypes.c_int64,
        ctypes.c_uint,
    )


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing a range of a file to disk, now,
    without waiting (``sync_file_range(2)`` with ``SYNC_FILE_RANGE_WRITE``).

    Not a durability promise (an ``fsync`` must still follow): it lets the
    disk work while a long write goes on, so that the final ``fsync`` has
    little left to do. On a machine with much memory the kernel would
    otherwise hold hundreds of megabytes back until that ``fsync``. A no-op
    where the call is missing or refused.
    """
    if _sync_file_range is not None:
        _sync_file_range(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Durably replace ``path`` with ``data``.

    Steps: temporary file beside the target, write, fsync, rename over the
    target, fsync the directory. After a crash the path holds the old or the
    new content, never a mix.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        note_write(tmp)
        fsync_fd(fd, tmp)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)
