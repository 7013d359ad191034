"""Path safety: which relative paths a transaction may touch.

Every operation names its path relative to the tree root. Before anything
changes, each path passes the policies below; each is a small pure function
(the disk is read only through the lookup ``check_parents`` is given), so a
reader can see every rule on its own:

- ``check_relative``: not absolute, no ``..`` component, not the root itself,
  no NUL byte, not one of updock's scratch names.
- ``check_parents``: no existing parent component is a symlink (writing
  through a link planted by an earlier package is the classic escape, see
  CVE-2007-4559 and PEP 706) or a non-directory. What is at each component
  comes from a lookup: ``DiskKinds`` asks ``lstat``, which never follows the
  final link, and a planner lays the earlier operations over it.
- ``check_link_target``: a symlink created by a transaction points inside the
  tree, judged lexically from the link's own folder (an absolute target or
  one that climbs above the root is refused).

A violation raises an ``UnsafePathError`` subclass naming the path.
"""

from __future__ import annotations

import os
import posixpath
import stat
from collections.abc import Callable
from pathlib import Path

from engine.errors import BadInputError

# Names updock gives its own temporary files inside the tree; a transaction
# may not touch them, so a crash leftover can never be mistaken for content.
SCRATCH_PREFIX = ".updock-"


class UnsafePathError(BadInputError):
    """A path a transaction would touch breaks a safety rule."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"unsafe path {path!r}: {problem}")
        self.path = path
        self.problem = problem


class AbsolutePathError(UnsafePathError):
    def __init__(self, path: str) -> None:
        super().__init__(path, "paths must be relative to the tree root")


class EscapingPathError(UnsafePathError):
    def __init__(self, path: str) -> None:
        super().__init__(path, "a '..' component may leave the tree")


class RootPathError(UnsafePathError):
    def __init__(self, path: str) -> None:
        super().__init__(path, "it names the tree root itself, which is never replaced")


class ReservedPathError(UnsafePathError):
    def __init__(self, path: str) -> None:
        super().__init__(
            path, f"names starting with {SCRATCH_PREFIX!r} are reserved for updock"
        )


THROUGH_LINK_HINT = (
    "updock never writes through a symbolic link in the deployment: replace "
    "the link by the folder it points to, or list that folder among the "
    "user-data folders ([updates] user_data in config.toml)"
)


class SymlinkInPathError(UnsafePathError):
    """A parent component is a symlink: writing below it could leave the tree."""

    hint = THROUGH_LINK_HINT

    def __init__(self, path: str, link: str) -> None:
        super().__init__(path, f"its parent {link!r} is a symlink")
        self.link = link


class ParentNotDirectoryError(UnsafePathError):
    def __init__(self, path: str, parent: str) -> None:
        super().__init__(path, f"its parent {parent!r} is not a directory")
        self.parent = parent


class LinkTargetEscapeError(UnsafePathError):
    """A symlink's target points outside the tree."""

    def __init__(self, path: str, target: str) -> None:
        super().__init__(path, f"symlink target {target!r} points outside the tree")
        self.target = target


def check_relative(path: str) -> str:
    """Normalise a relative path and check it names something inside the tree.

    Args:
        path: The path as given, with ``/`` separators.

    Returns:
        The normalised path (no ``.`` or empty components, no trailing ``/``).

    Raises:
        AbsolutePathError, EscapingPathError, RootPathError, ReservedPathError,
        UnsafePathError: the path breaks the rule its class names.
    """
    if "\0" in path:
        raise UnsafePathError(path, "it contains a NUL byte")
    if path.startswith("/"):
        raise AbsolutePathError(path)
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise EscapingPathError(path)
    if not parts:
        raise RootPathError(path)
    if any(part.startswith(SCRATCH_PREFIX) for part in parts):
        raise ReservedPathError(path)
    return "/".join(parts)


def parents_of(path: str) -> list[str]:
    """The parent paths of a normalised relative path, outermost first.

    ``parents_of("a/b/c")`` is ``["a", "a/b"]``.
    """
    parts = path.split("/")
    return ["/".join(parts[:end]) for end in range(1, len(parts))]


def is_within(path: str, ancestor: str) -> bool:
    """Whether ``path`` lies strictly below ``ancestor`` (both normalised)."""
    return path.startswith(ancestor + "/")


# What is at a path: "dir", "file", "symlink" or "absent".
KindLookup = Callable[[str], str]


def check_parents(path: str, kind_at: KindLookup) -> list[str]:
    """Check every existing parent of ``path`` is a real directory.

    Args:
        path: A normalised relative path.
        kind_at: What is at a relative path once the earlier operations of
            the transaction have run (see ``DiskKinds``).

    Returns:
        The parents that do not exist yet, outermost first; the caller
        creates them.

    Raises:
        SymlinkInPathError: a parent is a symlink.
        ParentNotDirectoryError: a parent is a file or another non-directory.
    """
    missing: list[str] = []
    for parent in parents_of(path):
        kind = "absent" if missing else kind_at(parent)
        if kind == "symlink":
            raise SymlinkInPathError(path, parent)
        if kind == "absent":
            missing.append(parent)
        elif kind != "dir":
            raise ParentNotDirectoryError(path, parent)
    return missing


class DiskKinds:
    """What ``lstat`` finds at relative paths under ``root``, remembered.

    Planning asks about the same parent folders thousands of times; the disk
    does not change meanwhile (the writer lock is held).
    """

    def __init__(self, root: Path) -> None:
        self._root = os.fspath(root)
        self._known: dict[str, str] = {}

    def __call__(self, path: str) -> str:
        kind = self._known.get(path)
        if kind is None:
            kind = self._known[path] = _kind_on_disk(f"{self._root}/{path}")
        return kind


def _kind_on_disk(path: str) -> str:
    try:
        mode = os.lstat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return "absent"
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISDIR(mode):
        return "dir"
    return "file"


def check_link_target(path: str, target: str) -> None:
    """Check a symlink at ``path`` with text ``target`` points inside the tree.

    The judgement is lexical, from the link's folder: symlinks already in the
    tree are not followed, because ``check_parents`` refuses to write
    through them anyway.

    Raises:
        LinkTargetEscapeError: the target is absolute or climbs above the root.
        UnsafePathError: the target is empty or contains a NUL byte.
    """
    if not target or "\0" in target:
        raise UnsafePathError(path, "a symlink target must be a non-empty path")
    if target.startswith("/"):
        raise LinkTargetEscapeError(path, target)
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
    if resolved == ".." or resolved.startswith("../"):
        raise LinkTargetEscapeError(path, target)
