"""Placing images at paths: the one mechanism behind apply, undo and redo.

Every journaled operation is a path with a pre-image and a post-image
(``journal.records.ImageRef``). Applying or redoing it means "make the path
hold the post-image"; undoing it means "make the path hold the pre-image".
``realize`` does exactly that and first asks the disk whether it is already
so (``compare``): same inode as the blob or same hash, same mode, same link
target, the same whole tree. So any operation can be redone or undone any
number of times, after a crash at any instant, without knowing how far an
earlier attempt got.

How each kind of image is put in place, atomically where the kernel allows:

- file: content goes to a scratch name beside the target, then ``rename(2)``
  over it. The content is the staged file itself when it is still there
  (renamed, never copied), else the blob: hard-linked when the blob has no
  other name (link count 1), copied otherwise, so two paths with equal
  content never share an inode (a later ``chmod`` or edit of one would leak
  into the other).
- symlink: created at a scratch name, renamed over the target.
- dir: ``mkdir`` (a kept folder only has its mode set).
- tree: the folder in the way moves aside (rename, O(1)), then the new tree
  arrives with one rename: the staged folder, a folder set aside earlier in
  the same transaction (checked against the listing first), or one built
  from the listing at a scratch name.
- absent: a file or link is unlinked, a folder moved to the transaction's
  trash, emptied when the transaction ends.

Scratch names beside a target are ``.updock-<tx>-<op>.tmp`` and
``.updock-<tx>-<op>.build``; ``remove_scratch`` clears them after a crash.
A path that holds neither image when recovery reaches it (changed by hand)
is replaced all the same, with a WARNING naming it.
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import stat
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, NamedTuple, Protocol

from engine.errors import EngineError
from engine.paths import SCRATCH_PREFIX
from engine.trees import (
    DIR,
    FILE,
    SYMLINK,
    build_tree,
    kind_of,
    remove_tree,
    same_content,
    tree_matches,
)
from journal import BlobStore, TreeEntry, fsio
from journal.crashpoints import crashpoint
from journal.records import ABSENT, TREE, ImageRef

logger = logging.getLogger(__name__)

SAME = "same"
MODE_ONLY = "mode"
DIFFERENT = "different"

# When a hard link into place fails for one of these, the blob is copied.
_NO_LINK = (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP)


class ImageUnavailableError(EngineError):
    """An image cannot be put in place because its content is not stored."""

    def __init__(self, path: Path, image: ImageRef) -> None:
        super().__init__(
            f"cannot put a {image.kind} back at {path}: its content was not recorded"
        )
        self.path = path
        self.image = image


class OpRecord(Protocol):
    """What placement needs of an operation (``OpIntended`` has it all)."""

    op: int
    kind: str
    path: str
    pre: ImageRef
    post: ImageRef


@dataclass
class Workspace:
    """Where one transaction places images, and where it keeps things aside.

    Attributes:
        tree: The tree root all operation paths are relative to.
        store: The blob store holding every image's content.
        tx: The transaction id (part of every scratch name).
        work_dir: ``<state>/txn/<tx>``: replaced folders set aside and the
            trash; removed when the transaction ends.
    """

    tree: Path
    store: BlobStore
    tx: str
    work_dir: Path
    _listings: dict[str, list[TreeEntry]] = field(default_factory=dict)
    _trash_names: Iterator[int] = field(default_factory=itertools.count)

    def scratch(self, path: str, op: int, role: str) -> Path:
        """A scratch name beside the target of ``op`` (``tmp`` or ``build``)."""
        target = self.tree / path
        return target.parent / f"{SCRATCH_PREFIX}{self.tx}-{op}.{role}"

    def aside(self, op: int, role: str) -> Path:
        """Where the folder ``op`` replaced (``pre``) is kept until the end."""
        return self.work_dir / f"{op}.{role}"

    def trash(self) -> Path:
        return self.work_dir / "trash" / f"{os.getpid()}-{next(self._trash_names)}"

    def listing(self, digest: str) -> list[TreeEntry]:
        if digest not in self._listings:
            self._listings[digest] = self.store.read_tree_listing(digest)
        return self._listings[digest]


# -- asking the disk --------------------------------------------------------


def compare(
    ws: Workspace, path: Path, image: ImageRef, other: ImageRef | None = None
) -> str:
    """Whether ``path`` holds ``image``: ``same``, ``mode`` (only the mode
    differs) or ``different``.

    A file image without a blob (the images of ``set_mode``) compares the
    kind and the mode only. ``other`` is the operation's opposite image: a
    file that is the very inode of the other image's blob differs from
    ``image`` without being hashed.
    """
    try:
        info = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return SAME if image.kind == ABSENT else DIFFERENT
    kind = kind_of(info.st_mode)
    if image.kind == TREE:
        listing = ws.listing(image.blob or "")
        return SAME if tree_matches(ws.store, path, listing) else DIFFERENT
    if image.kind != kind:
        return DIFFERENT
    if kind == SYMLINK:
        return SAME if os.readlink(path) == image.target else DIFFERENT
    if kind == FILE and image.blob is not None:
        if _is_other_blob(ws.store, info, image, other):
            return DIFFERENT
        if not same_content(ws.store, path, info, image.blob):
            return DIFFERENT
    return SAME if stat.S_IMODE(info.st_mode) == image.mode else MODE_ONLY


def _is_other_blob(
    store: BlobStore, info: os.stat_result, image: ImageRef, other: ImageRef | None
) -> bool:
    if other is None or other.kind != FILE or other.blob in (None, image.blob):
        return False
    try:
        blob = os.stat(store.path_of(other.blob))
    except FileNotFoundError:
        return False
    return (blob.st_ino, blob.st_dev) == (info.st_ino, info.st_dev)


def compare_images(known: ImageRef, image: ImageRef) -> str:
    """``compare`` when the path is known to hold ``known`` (no disk access)."""
    if known == image:
        return SAME
    same_but_mode = (known.kind, known.blob, known.target) == (
        image.kind,
        image.blob,
        image.target,
    )
    if same_but_mode and known.kind in (FILE, DIR):
        return MODE_ONLY
    return DIFFERENT


# -- putting images in place --------------------------------------------------


class Staged(NamedTuple):
    """A staged file or folder holding a post-image; ``mode`` is its current
    permission bits when known (a file already right is not chmod'ed)."""

    path: Path
    mode: int | None = None


def realize(
    ws: Workspace,
    record: OpRecord,
    image: ImageRef,
    *,
    source: Staged | None = None,
    keep: bool = False,
    candidates: Sequence[Path] = (),
    known: ImageRef | None = None,
    other: ImageRef | None = None,
) -> bool:
    """Make the path of ``record`` hold ``image``; do nothing if it does.

    Args:
        ws: The transaction's workspace.
        record: The operation (its ``op`` index and ``path``).
        image: The pre-image (undo) or post-image (apply, redo).
        source: A staged file or folder holding ``image``, moved in when
            still there.
        keep: Set a folder in the way aside as this op's ``pre`` (for a
            fast undo) rather than in the trash.
        candidates: Folders set aside earlier that may hold ``image``.
        known: What the path is known to hold (it was just captured): the
            disk is not asked.
        other: The operation's opposite image (see ``compare``).

    Returns:
        True when something changed.

    Raises:
        OSError: the kernel refused a step; the path is whole, holding its
            old or new content (or nothing, for a folder being swapped).
        BlobMissingError, BlobCorruptError, ImageUnavailableError: the
            image's content is not in the store.
    """
    path = ws.tree / record.path
    if known is not None:
        state = compare_images(known, image)
    else:
        state = compare(ws, path, image, other)
    if state == SAME:
        return False
    if state == MODE_ONLY:
        os.chmod(path, image.mode)
        return True

    keep_as = ws.aside(record.op, "pre") if keep else None
    if image.kind == FILE:
        may_be_folder = known is None or known.kind in (DIR, TREE)
        _place_file(
            ws, record, path, image, source, keep_as if may_be_folder else False
        )
    elif image.kind == ABSENT:
        _clear(ws, path, keep_as)
    elif image.kind == SYMLINK:
        _place_symlink(ws, record, path, image, keep_as)
    elif image.kind == DIR:
        _clear(ws, path, keep_as)
        os.mkdir(path, 0o700)
        os.chmod(path, image.mode)
    else:
        _place_tree(ws, record, path, image, source, keep_as, candidates)
    return True


def _place_file(
    ws: Workspace,
    record: OpRecord,
    path: Path,
    image: ImageRef,
    source: Staged | None,
    keep_as: Path | None | Literal[False],
) -> None:
    """Put a file in place; ``keep_as`` False: the path is known to hold no
    folder, so none is looked for."""
    if image.blob is None:
        raise ImageUnavailableError(path, image)
    if keep_as is not False:
        _clear_folder(ws, path, keep_as)
    if source is not None and _move_in(source, path, image.mode):
        return
    tmp = ws.scratch(record.path, record.op, "tmp")
    _unlink_quietly(tmp)
    fill_from_blob(ws.store, image.blob, tmp)
    os.chmod(tmp, image.mode)
    os.rename(tmp, path)


def fill_from_blob(store: BlobStore, digest: str, dest: Path) -> None:
    """Put blob ``digest``'s content at the new path ``dest``.

    A blob with no other name is hard-linked (no copy); one already linked
    somewhere is copied, so no two deployed paths share an inode.
    """
    if store.link_count(digest) == 1:
        try:
            os.link(store.path_of(digest), dest)
            return
        except OSError as exc:
            if exc.errno not in _NO_LINK:
                raise
    store.copy_to(digest, dest)


def _move_in(source: Staged, path: Path, mode: int) -> bool:
    """Rename a staged file into place; False when it cannot be (gone, or on
    another filesystem) and the blob must serve instead."""
    try:
        if source.mode != mode:
            os.chmod(source.path, mode, follow_symlinks=False)
        os.rename(source.path, path)
    except FileNotFoundError:
        return False
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        return False
    return True


def _place_symlink(
    ws: Workspace, record: OpRecord, path: Path, image: ImageRef, keep_as: Path | None
) -> None:
    tmp = ws.scratch(record.path, record.op, "tmp")
    _unlink_quietly(tmp)
    os.symlink(image.target or "", tmp)
    _clear_folder(ws, path, keep_as)
    os.rename(tmp, path)


def _place_tree(
    ws: Workspace,
    record: OpRecord,
    path: Path,
    image: ImageRef,
    source: Staged | None,
    keep_as: Path | None,
    candidates: Sequence[Path],
) -> None:
    listing = ws.listing(image.blob or "")
    _clear(ws, path, keep_as)
    ready = [source.path] if source is not None and _is_folder(source.path) else []
    ready += [
        c for c in candidates if _is_folder(c) and tree_matches(ws.store, c, listing)
    ]
    for folder in ready:
        if _rename_quietly(folder, path):
            return

    build = ws.scratch(record.path, record.op, "build")
    if os.path.lexists(build):
        remove_tree(build)
    build_tree(
        ws.store,
        listing,
        build,
        lambda digest, dest: fill_from_blob(ws.store, digest, dest),
    )
    os.rename(build, path)


def _clear(ws: Workspace, path: Path, keep_as: Path | None) -> None:
    """Remove whatever is at ``path``; a folder goes aside or to the trash."""
    try:
        info = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return
    if stat.S_ISDIR(info.st_mode):
        _set_aside(ws, path, keep_as)
    else:
        os.unlink(path)


def _clear_folder(ws: Workspace, path: Path, keep_as: Path | None) -> None:
    """Set aside a folder at ``path``; files are replaced by rename instead."""
    if _is_folder(path):
        _set_aside(ws, path, keep_as)


def _set_aside(ws: Workspace, path: Path, keep_as: Path | None) -> None:
    """Move a folder out of the tree with one rename.

    Its content is in the store already (it is an image of a journaled
    operation), so when the work folder is on another filesystem the folder
    is simply removed.
    """
    dest = keep_as or ws.trash()
    dest.parent.mkdir(parents=True, exist_ok=True)
    if os.path.lexists(dest):
        remove_tree(dest)
    try:
        os.rename(path, dest)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        remove_tree(path)


def _is_folder(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except (FileNotFoundError, NotADirectoryError):
        return False


def _rename_quietly(source: Path, dest: Path) -> bool:
    try:
        os.rename(source, dest)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        return False
    return True


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


# -- whole transactions -------------------------------------------------------


def undo_all(
    ws: Workspace,
    records: Sequence[OpRecord],
    step: str,
    on_op: Callable[[int], None] | None = None,
) -> int:
    """Put every pre-image back, last operation first.

    Args:
        ws: The transaction's workspace.
        records: Every intended operation, in op order.
        step: The crash-point name passed after each operation.
        on_op: Called with the number of operations done so far.

    Returns:
        How many operations changed something on disk.
    """
    changed = 0
    for done, record in enumerate(reversed(records), 1):
        aside = [ws.aside(record.op, "pre")]
        if realize(ws, record, record.pre, candidates=aside, other=record.post):
            changed += 1
            logger.debug(
                "transaction %s: undid op %d on %s", ws.tx, record.op, record.path
            )
        crashpoint(step)
        if on_op is not None:
            on_op(done)
    return changed


def redo_all(ws: Workspace, records: Sequence[OpRecord], step: str) -> int:
    """Put every post-image in place, first operation first.

    Returns:
        How many operations changed something on disk.
    """
    changed = 0
    for record in records:
        if realize(ws, record, record.post, keep=True, other=record.pre):
            changed += 1
            logger.debug(
                "transaction %s: redid op %d on %s", ws.tx, record.op, record.path
            )
        crashpoint(step)
    return changed


def remove_scratch(ws: Workspace, records: Iterable[OpRecord]) -> None:
    """Remove scratch files and folders a crash left beside the targets."""
    for record in records:
        for role in ("tmp", "build"):
            scratch = ws.scratch(record.path, record.op, role)
            try:
                info = os.lstat(scratch)
            except (FileNotFoundError, NotADirectoryError):
                continue
            if stat.S_ISDIR(info.st_mode):
                remove_tree(scratch)
            else:
                os.unlink(scratch)


def discard_work_dir(ws: Workspace) -> None:
    """Remove the transaction's folders set aside and its trash."""
    if os.path.lexists(ws.work_dir):
        remove_tree(ws.work_dir)


def default_work_dir(store: BlobStore) -> Path:
    """``<state>/txn``: beside the blob store, on the deployment's filesystem."""
    return Path(store.root).parent / "txn"


def sync_filesystems(paths: Iterable[Path]) -> int:
    """One ``syncfs(2)`` per distinct filesystem among ``paths``.

    Returns:
        How many filesystems were synced.
    """
    seen: set[int] = set()
    for path in paths:
        path = Path(path)
        while not path.exists() and path != path.parent:
            path = path.parent
        device = os.stat(path).st_dev
        if device in seen:
            continue
        seen.add(device)
        fsio.syncfs(path)
    return len(seen)
