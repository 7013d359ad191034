"""Free-space checks, done before anything changes.

A transaction writes to up to three filesystems: the staging folder, the
blob store (pre-images, post-images, the journal) and the tree. Each need is
stated as bytes and new inodes at a path; needs on the same filesystem (same
``st_dev`` of the nearest existing folder) are added up and compared with
``statvfs``'s space available to unprivileged users, after a safety margin,
so a run never discovers a full disk half-way when it could have known before
(the lesson of dpkg padding its journal, and of OSTree's
``min-free-space-percent``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from engine.errors import InsufficientSpaceError

MIN_MARGIN_BYTES = 4 * 1024 * 1024
MARGIN_RATIO = 0.05
MIN_MARGIN_INODES = 64


class NotEnoughSpaceError(InsufficientSpaceError):
    """A filesystem lacks the bytes (or inodes) a change needs."""

    def __init__(self, path: Path, needed: int, free: int, unit: str = "bytes") -> None:
        super().__init__(
            f"not enough free space on the filesystem of {path}: needs {needed} "
            f"{unit} (margin included), {free} {unit} free"
        )
        self.path = path
        self.needed = needed
        self.free = free
        self.unit = unit


@dataclass
class SpaceNeed:
    """What a change will write at ``path``: bytes and new inodes."""

    path: Path
    bytes: int = 0
    inodes: int = 0

    def add(self, size: int, inodes: int = 0) -> None:
        self.bytes += size
        self.inodes += inodes


@dataclass
class _Filesystem:
    path: Path
    bytes: int = 0
    inodes: int = 0


def existing_ancestor(path: Path) -> Path:
    """``path`` itself or its nearest ancestor that exists."""
    path = Path(os.path.abspath(path))
    while not os.path.exists(path) and path != path.parent:
        path = path.parent
    return path


def filesystem_id(path: Path) -> int:
    """The device id of the filesystem that holds (or would hold) ``path``."""
    try:
        return os.stat(path).st_dev
    except FileNotFoundError:
        return os.stat(existing_ancestor(path)).st_dev


def check_free_space(
    needs: Iterable[SpaceNeed],
    margin_bytes: int = MIN_MARGIN_BYTES,
    margin_ratio: float = MARGIN_RATIO,
) -> None:
    """Refuse when any filesystem lacks room for what will be written to it.

    Args:
        needs: What will be written where; several needs on one filesystem
            add up.
        margin_bytes: Free bytes that must remain on each filesystem.
        margin_ratio: Extra margin as a share of the bytes needed there.

    Raises:
        NotEnoughSpaceError: names the first filesystem short of bytes or
            inodes, with the need (margin included) and what is free.
    """
    filesystems: dict[int, _Filesystem] = {}
    for need in needs:
        base = existing_ancestor(need.path)
        fs = filesystems.setdefault(os.stat(base).st_dev, _Filesystem(base))
        fs.bytes += need.bytes
        fs.inodes += need.inodes

    for fs in filesystems.values():
        info = os.statvfs(fs.path)
        free = info.f_bavail * info.f_frsize
        needed = fs.bytes + max(margin_bytes, int(fs.bytes * margin_ratio))
        if needed > free:
            raise NotEnoughSpaceError(fs.path, needed, free)
        # Filesystems without an inode limit (btrfs, some tmpfs) report 0.
        if info.f_files:
            inodes = fs.inodes + MIN_MARGIN_INODES
            if inodes > info.f_favail:
                raise NotEnoughSpaceError(fs.path, inodes, info.f_favail, "inodes")
