"""Errors of the journal package::

    JournalError
    +-- SegmentHeaderError   a segment's header is damaged or of another format
    +-- CorruptRecordError   a bad record is followed by valid ones
    +-- BlobError
    |   +-- BlobMissingError
    |   +-- BlobCorruptError
    +-- LockedError          another process holds the writer lock
"""

from __future__ import annotations

from pathlib import Path


class JournalError(Exception):
    """Root of every error the journal package raises on purpose."""


class SegmentHeaderError(JournalError):
    """A segment file's header is unreadable, of another format, or damaged."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"journal segment {path}: bad header: {problem}")
        self.path = path
        self.problem = problem


class CorruptRecordError(JournalError):
    """A record fails its checks and valid records follow it."""

    def __init__(self, path: Path, offset: int, problem: str) -> None:
        super().__init__(
            f"journal segment {path} is corrupt at offset {offset}: {problem}"
        )
        self.path = path
        self.offset = offset
        self.problem = problem


class BlobError(JournalError):
    """A blob is unusable."""


class BlobMissingError(BlobError, FileNotFoundError):
    def __init__(self, digest: str) -> None:
        super().__init__(f"blob {digest} is missing from the store")
        self.digest = digest


class BlobCorruptError(BlobError):
    def __init__(self, digest: str, actual: str) -> None:
        super().__init__(f"blob {digest} is corrupt: its content hashes to {actual}")
        self.digest = digest
        self.actual = actual


class LockedError(JournalError):
    """Another process holds the deployment's writer lock."""

    def __init__(self, path: Path, holder_pid: int | None) -> None:
        who = f"process {holder_pid}" if holder_pid else "another process"
        super().__init__(
            f"{who} is changing this deployment (lock {path}); wait for it to finish"
        )
        self.path = path
        self.holder_pid = holder_pid
