"""Operations on a tree, and the plan that checks them before anything runs.

An ``Op`` says what a path should become; ``plan_ops`` turns a list of them
into numbered ``PlannedOp`` entries after checking every rule, reading the
disk only with ``lstat``/``readlink``/``scandir``:

- every path passes ``engine.paths`` (relative, no ``..``, not the root, no
  symlink or file among its parents, symlink targets inside the tree);
- a path is named by one operation only;
- an operation below a path an *earlier* operation changes is allowed only
  when that earlier one is ``make_dir`` or ``set_mode`` (the folder stays a
  folder); otherwise its pre-image would be read from a disk the earlier
  operation is about to change;
- a missing parent folder gets a ``make_dir`` (mode 0755) just before the
  first operation that needs it, so a rollback removes it again;
- ``swap_tree`` becomes one operation per top-level entry of the old and the
  new tree, except the preserved (user-data) names;
- staged sources and stored blobs must exist and be of the right kind.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from engine.errors import BadInputError
from engine.paths import (
    DiskKinds,
    check_link_target,
    check_parents,
    check_relative,
    parents_of,
)
from engine.placement import Staged
from engine.trees import (
    DIR,
    FILE,
    SYMLINK,
    UnsupportedFileTypeError,
    WalkedEntry,
    kind_of,
    walk,
)
from journal import BlobStore
from journal.records import ABSENT, ImageRef, OpIntended

PUT_FILE = "put_file"
REPLACE_DIR = "replace_dir"
DELETE_FILE = "delete_file"
DELETE_TREE = "delete_tree"
MAKE_DIR = "make_dir"
SET_MODE = "set_mode"
MAKE_SYMLINK = "make_symlink"
SWAP_TREE = "swap_tree"

# Operations that leave a folder a folder: others may run below them later.
_KEEPS_FOLDER = (MAKE_DIR, SET_MODE)
_DEFAULT_DIR_MODE = 0o755


class InvalidOpError(BadInputError):
    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"invalid operation on {path!r}: {problem}")
        self.path = path
        self.problem = problem


class DuplicatePathError(BadInputError):
    def __init__(self, path: str, first: int, second: int) -> None:
        super().__init__(
            f"{path!r} is changed by two operations (#{first} and #{second}); "
            "a path may be named once per transaction"
        )
        self.path = path


class OverlappingOpsError(BadInputError):
    def __init__(self, path: str, ancestor: str, kind: str) -> None:
        super().__init__(
            f"{path!r} lies below {ancestor!r}, which an earlier {kind} replaces; "
            "change the staged folder instead"
        )
        self.path = path
        self.ancestor = ancestor


class WrongKindError(BadInputError):
    def __init__(self, path: str, kind: str, found: str) -> None:
        super().__init__(f"{kind} {path!r}: the path is {_article(found)}")
        self.path = path
        self.found = found


class MissingSourceError(BadInputError):
    def __init__(self, path: str, source: str, problem: str) -> None:
        super().__init__(f"operation on {path!r}: its content {source} {problem}")
        self.path = path
        self.source = source


class MissingTreeError(BadInputError):
    def __init__(self, tree: Path) -> None:
        super().__init__(f"the tree {tree} is not a folder")
        self.tree = tree
        self.hint = "check [updates] project_dir in config.toml"


def _article(kind: str) -> str:
    return {"absent": "missing", "dir": "a folder", "symlink": "a symlink"}.get(
        kind, "a file"
    )


@dataclass(frozen=True)
class Op:
    """One change to a tree; build it with the class methods.

    ``path`` is relative to the tree root. Content comes from ``source`` (a
    staged file or folder, moved into place when on the same filesystem) or
    from ``blob`` (a file's sha256 or a tree listing's, in the blob store).

    ``restoring`` marks an operation that puts back what the tree held
    before (a rollback, a backup restore): its symlinks may point anywhere,
    as the operator's own links did. Release content never sets it; its
    links must stay inside the tree.
    """

    kind: str
    path: str
    source: Path | None = None
    blob: str | None = None
    mode: int | None = None
    target: str | None = None
    preserve: frozenset[str] = frozenset()
    restoring: bool = False

    @classmethod
    def put_file(
        cls,
        path: str,
        *,
        source: Path | None = None,
        blob: str | None = None,
        mode: int = 0o644,
    ) -> Op:
        """Create or replace a file with a staged file's or a blob's content."""
        if (source is None) == (blob is None):
            raise InvalidOpError(path, "put_file needs exactly one of source or blob")
        return cls(
            PUT_FILE, path, _path_or_none(source), blob, _checked_mode(path, mode)
        )

    @classmethod
    def replace_dir(
        cls,
        path: str,
        *,
        source: Path | None = None,
        listing: str | None = None,
        restoring: bool = False,
    ) -> Op:
        """Replace a folder (or create one) with a whole staged or stored tree."""
        if (source is None) == (listing is None):
            raise InvalidOpError(
                path, "replace_dir needs exactly one of source or listing"
            )
        return cls(
            REPLACE_DIR, path, _path_or_none(source), listing, restoring=restoring
        )

    @classmethod
    def delete_file(cls, path: str) -> Op:
        """Remove a file or symlink (nothing to do when it is missing)."""
        return cls(DELETE_FILE, path)

    @classmethod
    def delete_tree(cls, path: str) -> Op:
        """Remove a folder with everything in it (or a file)."""
        return cls(DELETE_TREE, path)

    @classmethod
    def make_dir(cls, path: str, mode: int = _DEFAULT_DIR_MODE) -> Op:
        """Create a folder; an existing one keeps its content and gets ``mode``."""
        return cls(MAKE_DIR, path, mode=_checked_mode(path, mode))

    @classmethod
    def set_mode(cls, path: str, mode: int) -> Op:
        """Change the permission bits of a file or folder."""
        return cls(SET_MODE, path, mode=_checked_mode(path, mode))

    @classmethod
    def make_symlink(cls, path: str, target: str, *, restoring: bool = False) -> Op:
        """Create or replace a symlink; unless ``restoring``, its target must
        stay inside the tree."""
        return cls(MAKE_SYMLINK, path, target=target, restoring=restoring)

    @classmethod
    def swap_tree(cls, source: Path, preserve: Iterable[str] = ()) -> Op:
        """Make the whole tree equal the staged folder ``source``, except the
        top-level entries named in ``preserve`` (user data), kept as they are."""
        return cls(SWAP_TREE, "", Path(source), preserve=frozenset(preserve))


def _path_or_none(value: Path | str | None) -> Path | None:
    return None if value is None else Path(value)


def _checked_mode(path: str, mode: int) -> int:
    if not isinstance(mode, int) or not 0 <= mode <= 0o7777:
        raise InvalidOpError(path, f"mode {mode!r} is not between 0 and 0o7777")
    return mode


@dataclass
class PlannedOp:
    """An operation checked and numbered, with what prepare will need.

    ``pre`` and ``post`` are filled in by the transaction's prepare step;
    ``pre_walk`` and ``post_walk`` hold the trees walked while planning.
    ``pre_owned`` and ``post_owned`` say the images' blobs were linked in by
    this capture (``journal.records.OpIntended``).
    """

    op: int
    kind: str
    path: str
    source: Path | None = None
    blob: str | None = None
    mode: int | None = None
    target: str | None = None
    pre_walk: list[WalkedEntry] | None = None
    post_walk: list[WalkedEntry] | None = None
    source_mode: int | None = None
    pre_bytes: int = 0
    post_bytes: int = 0
    pre: ImageRef = field(default_factory=ImageRef)
    post: ImageRef = field(default_factory=ImageRef)
    pre_owned: bool = False
    post_owned: bool = False

    def staged(self) -> Staged | None:
        """The staged source, for ``engine.placement.realize``."""
        return None if self.source is None else Staged(self.source, self.source_mode)

    def record(self, tx: str, planned: int, at: float) -> OpIntended:
        return OpIntended(
            tx=tx,
            op=self.op,
            kind=self.kind,
            path=self.path,
            pre=self.pre,
            post=self.post,
            planned=planned,
            pre_owned=self.pre_owned,
            post_owned=self.post_owned,
            at=at,
        )


def lstat_kind(path: Path) -> tuple[str, os.stat_result | None]:
    """What is at ``path`` (``absent``, ``file``, ``dir``, ``symlink``) and its stat.

    Raises:
        UnsupportedFileTypeError: a device, FIFO or socket.
    """
    try:
        info = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return ABSENT, None
    kind = kind_of(info.st_mode)
    if kind is None:
        raise UnsupportedFileTypeError(path)
    return kind, info


class _Planner:
    """Checks operations one by one against the disk and the earlier ones."""

    def __init__(self, tree: Path, store: BlobStore) -> None:
        self.tree = tree
        self.store = store
        self.planned: list[PlannedOp] = []
        self.result: dict[str, str] = {}  # path -> kind after the earlier ops
        self.owner: dict[str, PlannedOp] = {}
        self.on_disk = DiskKinds(tree)

    def kind_at(self, path: str) -> str:
        """What is at ``path`` once the earlier operations have run."""
        return self.result.get(path) or self.on_disk(path)

    def add(self, op: Op) -> None:
        if op.kind == SWAP_TREE:
            for part in expand_swap(self.tree, op):
                self.add(part)
            return
        path = check_relative(op.path)
        self._check_claims(path)
        for parent in check_parents(path, self.kind_at):
            self._append(PlannedOp(0, MAKE_DIR, parent, mode=_DEFAULT_DIR_MODE), DIR)
            self.owner[parent] = self.planned[-1]
        planned = PlannedOp(0, op.kind, path, op.source, op.blob, op.mode, op.target)
        self._append(planned, self._check_kind(planned, op.restoring))
        self.owner[path] = planned

    def _append(self, planned: PlannedOp, result: str) -> None:
        planned.op = len(self.planned)
        self.planned.append(planned)
        self.result[planned.path] = result

    def _check_claims(self, path: str) -> None:
        if path in self.owner:
            raise DuplicatePathError(path, self.owner[path].op, len(self.planned))
        for parent in parents_of(path):
            earlier = self.owner.get(parent)
            if earlier is not None and earlier.kind not in _KEEPS_FOLDER:
                raise OverlappingOpsError(path, parent, earlier.kind)

    def _check_kind(self, planned: PlannedOp, restoring: bool) -> str:
        """Check the op fits what is at its path; return what it leaves there."""
        found, info = lstat_kind(self.tree / planned.path)
        kind = planned.kind
        if kind == DELETE_FILE and found == DIR:
            raise WrongKindError(planned.path, kind, found)
        if kind == SET_MODE and found not in (FILE, DIR):
            raise WrongKindError(planned.path, kind, found)
        if kind == MAKE_SYMLINK and not restoring:
            check_link_target(planned.path, planned.target or "")
        if kind in (PUT_FILE, REPLACE_DIR):
            self._check_content(planned, restoring)
        if found == DIR and kind not in _KEEPS_FOLDER:
            planned.pre_walk = walk(self.tree / planned.path)
            planned.pre_bytes = sum(entry.size for entry in planned.pre_walk)
        elif found == FILE and info is not None:
            planned.pre_bytes = info.st_size
        return {
            PUT_FILE: FILE,
            REPLACE_DIR: DIR,
            DELETE_FILE: ABSENT,
            DELETE_TREE: ABSENT,
            MAKE_DIR: DIR,
            SET_MODE: found,
            MAKE_SYMLINK: SYMLINK,
        }[kind]

    def _check_content(self, planned: PlannedOp, restoring: bool) -> None:
        want = FILE if planned.kind == PUT_FILE else DIR
        if planned.source is not None:
            found, info = lstat_kind(planned.source)
            if found != want:
                raise MissingSourceError(
                    planned.path, str(planned.source), f"is {_article(found)}"
                )
            if want == FILE and info is not None:
                planned.post_bytes = info.st_size
                planned.source_mode = stat.S_IMODE(info.st_mode)
            else:
                planned.post_walk = walk(planned.source)
                planned.post_bytes = sum(entry.size for entry in planned.post_walk)
                if not restoring:
                    _check_staged_links(planned.path, planned.post_walk)
            return
        digest = planned.blob or ""
        if not self.store.has(digest):
            raise MissingSourceError(
                planned.path, f"blob {digest}", "is not in the store"
            )
        if want == FILE:
            planned.post_bytes = self.store.size_of(digest)
        else:
            listing = self.store.read_tree_listing(digest)
            planned.post_bytes = sum(
                self.store.size_of(entry.blob) for entry in listing if entry.blob
            )


def _check_staged_links(path: str, entries: list[WalkedEntry]) -> None:
    """Symlinks in a staged folder must point inside the tree once placed."""
    for entry in entries:
        if entry.kind == SYMLINK:
            check_link_target(f"{path}/{entry.relpath}", entry.target or "")


def expand_swap(tree: Path, op: Op) -> list[Op]:
    """One operation per top-level name of the old or new tree, except the
    preserved ones: the new entry replaces the old, or the old is deleted.

    Raises:
        MissingSourceError: the staged folder is missing or not a folder.
    """
    source = op.source or Path()
    found, _ = lstat_kind(source)
    if found != DIR:
        raise MissingSourceError("", str(source), f"is {_article(found)}")
    new = {entry.name for entry in os.scandir(source)}
    old = {entry.name for entry in os.scandir(tree)}
    ops = []
    for name in sorted((new | old) - op.preserve):
        ops.append(_swap_entry(tree, source, name, name in new))
    return ops


def _swap_entry(tree: Path, source: Path, name: str, in_new: bool) -> Op:
    if not in_new:
        kind, _ = lstat_kind(tree / name)
        return Op.delete_tree(name) if kind == DIR else Op.delete_file(name)
    kind, info = lstat_kind(source / name)
    if kind == DIR:
        return Op.replace_dir(name, source=source / name)
    if kind == SYMLINK:
        return Op.make_symlink(name, os.readlink(source / name))
    return Op.put_file(name, source=source / name, mode=stat.S_IMODE(info.st_mode))


def plan_ops(tree: Path, store: BlobStore, ops: Iterable[Op]) -> list[PlannedOp]:
    """Check and number operations; nothing on disk changes.

    Args:
        tree: The tree root.
        store: The blob store (for operations whose content is a blob).
        ops: The operations, in the order they are to run.

    Returns:
        The planned operations, implied ``make_dir`` included, in run order.

    Raises:
        MissingTreeError: the tree root is not a folder.
        BadInputError: a subclass naming the path and the rule it breaks.
    """
    if not os.path.isdir(tree):
        raise MissingTreeError(tree)
    planner = _Planner(tree, store)
    for op in ops:
        planner.add(op)
    return planner.planned
