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
  (renamed, never copied), else a verified copy of the blob.
- symlink: created at a scratch name, renamed over the target.
- dir: ``mkdir`` (a kept folder only has its mode set).
- tree: the folder in the way goes to the trash (one rename), then the new
  tree arrives with one rename: the staged folder, or one built from the
  listing at a scratch name.
- absent: a file or link is unlinked, a folder moved to the transaction's
  trash, emptied when the transaction ends.

No deployed file shares its inode with a blob once a transaction has
ended. A blob linked into the tree (the obvious fast restore) would turn an
edit of the deployed file, made in place (``>>``, most editors keeping the
inode), into a silent edit of the stored image: drift would go unseen, the
image would no longer match its hash, and a later rollback would restore
the edit. Pre-images are hard links only while the file they capture is
about to be replaced. A staged file is linked into the store as its
post-image and then moved into the tree; when the transaction ends, the
store's name goes (``release_posts``): the tree holds the content, and
nothing needs it after a commit. (Staged folders' files are private copies
in the store.)

A rollback puts a pre-image back by moving its blob into the tree with one
rename when the transaction owns that blob (``pre_owned``: it linked the
very inode in, and no earlier record names it), the blob has no other name,
and no later step of the rollback needs it: the file gets its own inode
back, the store drops a blob nobody needs, and no byte is written. This is
what makes a rollback of thousands of files cheap. Other restores copy,
except on a full disk, where a rollback links the blob back rather than
fail (and says so). A rollback also unlinks owned blobs of files it never
replaced, and gives every other blob still sharing a tree file's inode a
private copy (``unshare_pre_images``). The same rule keeps two deployed
paths with equal content from sharing an inode, whose modes and edits would
leak into each other.

Scratch names beside a target are ``.updock-<tx>-<op>.tmp`` and
``.updock-<tx>-<op>.build``; ``remove_scratch`` clears them after a crash.
A path that holds neither image when recovery reaches it (changed by hand)
is replaced all the same.
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
from typing import NamedTuple, Protocol

import msgspec

from engine.errors import EngineError
from engine.paths import SCRATCH_PREFIX
from engine.trees import (
    DIR,
    FILE,
    SYMLINK,
    build_tree,
    copy_all,
    hash_file,
    kind_of,
    remove_tree,
    same_content,
    tree_matches,
)
from journal import BlobStore, TreeEntry, fsio
from journal.crashpoints import crashpoint
from journal.journal import image_blobs
from journal.records import ABSENT, TREE, ImageRef

logger = logging.getLogger(__name__)

_CAPTURING = "capturing"
_paths_encoder = msgspec.json.Encoder()
_paths_decoder = msgspec.json.Decoder(list[str])

# Copy failures after which a restore links the blob instead.
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)

SAME = "same"
MODE_ONLY = "mode"
DIFFERENT = "different"


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
    pre_owned: bool
    post_owned: bool


@dataclass
class Workspace:
    """Where one transaction places images, and where its trash goes.

    Attributes:
        tree: The tree root all operation paths are relative to.
        store: The blob store holding every image's content.
        tx: The transaction id (part of every scratch name).
        work_dir: ``<state>/txn/<tx>``: replaced folders, moved out of the
            tree with one rename; removed when the transaction ends.
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
    known: ImageRef | None = None,
    other: ImageRef | None = None,
    link_ok: bool = False,
    take: bool = False,
) -> bool:
    """Make the path of ``record`` hold ``image``; do nothing if it does.

    Args:
        ws: The transaction's workspace.
        record: The operation (its ``op`` index and ``path``).
        image: The pre-image (undo) or post-image (apply, redo).
        source: A staged file or folder holding ``image``, moved in when
            still there.
        known: What the path is known to hold (it was just captured): the
            disk is not asked.
        other: The operation's opposite image (see ``compare``).
        link_ok: Restoring pre-images: when the disk is full, a blob with
            no other name is linked back (the very inode the file had, no
            space needed) instead of copied; the caller then runs
            ``unshare_pre_images``.
        take: Restoring pre-images: the blob may be moved into the tree
            instead of copied (``takeable_blobs``).

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

    if image.kind == FILE:
        may_be_folder = known is None or known.kind in (DIR, TREE)
        _place_file(ws, record, path, image, source, may_be_folder, link_ok, take)
    elif image.kind == ABSENT:
        _clear(ws, path)
    elif image.kind == SYMLINK:
        _place_symlink(ws, record, path, image)
    elif image.kind == DIR:
        _clear(ws, path)
        os.mkdir(path, 0o700)
        os.chmod(path, image.mode)
    else:
        _place_tree(ws, record, path, image, source, link_ok)
    return True


def _place_file(
    ws: Workspace,
    record: OpRecord,
    path: Path,
    image: ImageRef,
    source: Staged | None,
    may_be_folder: bool,
    link_ok: bool,
    take: bool = False,
) -> None:
    if image.blob is None:
        raise ImageUnavailableError(path, image)
    if may_be_folder and _is_folder(path):
        _to_trash(ws, path)
    if source is not None and _move_in(source, path, image.mode):
        return
    if take and _take_blob(ws.store, image.blob, path, image.mode):
        return
    tmp = ws.scratch(record.path, record.op, "tmp")
    _unlink_quietly(tmp)
    fill_from_blob(ws.store, image.blob, tmp, link_ok)
    os.chmod(tmp, image.mode)
    os.rename(tmp, path)


def fill_from_blob(store: BlobStore, digest: str, dest: Path, link_ok: bool) -> None:
    """Put a verified copy of blob ``digest`` at the new path ``dest``.

    With ``link_ok``, when the copy fails for want of space, a blob with no
    other name is hard-linked instead: a rollback after ENOSPC must not need
    space (``unshare_pre_images`` then warns that the link stays shared).
    """
    try:
        store.copy_to(digest, dest)
    except OSError as exc:
        if not (link_ok and exc.errno in _NO_SPACE and store.link_count(digest) == 1):
            raise
        _unlink_quietly(dest)
        os.link(store.path_of(digest), dest)


def _take_blob(store: BlobStore, digest: str, path: Path, mode: int) -> bool:
    """Move blob ``digest`` to ``path`` with one rename, when the store's
    name is its only one; False when it is not (or is gone) and a copy must
    serve instead."""
    blob = store.path_of(digest)
    try:
        if os.stat(blob).st_nlink != 1:
            return False
        os.rename(blob, path)
    except FileNotFoundError:
        return False
    os.chmod(path, mode)
    return True


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
    ws: Workspace, record: OpRecord, path: Path, image: ImageRef
) -> None:
    tmp = ws.scratch(record.path, record.op, "tmp")
    _unlink_quietly(tmp)
    os.symlink(image.target or "", tmp)
    if _is_folder(path):
        _to_trash(ws, path)
    os.rename(tmp, path)


def _place_tree(
    ws: Workspace,
    record: OpRecord,
    path: Path,
    image: ImageRef,
    source: Staged | None,
    link_ok: bool,
) -> None:
    listing = ws.listing(image.blob or "")
    _clear(ws, path)
    staged = source is not None and _is_folder(source.path)
    if staged and _rename_quietly(source.path, path):
        return

    build = ws.scratch(record.path, record.op, "build")
    if os.path.lexists(build):
        remove_tree(build)
    build_tree(
        listing,
        build,
        lambda digest, dest: fill_from_blob(ws.store, digest, dest, link_ok),
    )
    os.rename(build, path)


def _clear(ws: Workspace, path: Path) -> None:
    """Remove whatever is at ``path``; a folder goes to the trash."""
    try:
        info = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return
    if stat.S_ISDIR(info.st_mode):
        _to_trash(ws, path)
    else:
        os.unlink(path)


def _to_trash(ws: Workspace, path: Path) -> None:
    """Move a folder out of the tree with one rename.

    Its content is in the store already (it is an image of a journaled
    operation), so when the work folder is on another filesystem the folder
    is simply removed.
    """
    dest = ws.trash()
    while os.path.lexists(dest):  # left by an earlier process with our pid
        dest = ws.trash()
    dest.parent.mkdir(parents=True, exist_ok=True)
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
    takers = takeable_blobs(ws, records)
    for done, record in enumerate(reversed(records), 1):
        take = takers.get(record.pre.blob or "") == record.op
        if realize(
            ws, record, record.pre, other=record.post, link_ok=True, take=take
        ):
            changed += 1
            logger.debug(
                "transaction %s: undid op %d on %s", ws.tx, record.op, record.path
            )
        crashpoint(step)
        if on_op is not None:
            on_op(done)
    return changed


def takeable_blobs(ws: Workspace, records: Sequence[OpRecord]) -> dict[str, int]:
    """Blobs an undo may move into the tree, each with the one operation that
    may take it: the last, in undo order, of the file pre-images naming it.

    Only blobs the transaction owns qualify (``pre_owned``), and none a tree
    pre-image names: its files are rebuilt from the store after. Several
    operations may name one blob (files of equal content); the earlier ones
    in undo order copy it, the last takes it.
    """
    owned = {
        r.pre.blob for r in records if r.pre_owned and r.pre.kind == FILE and r.pre.blob
    }
    if not owned:
        return {}
    takers: dict[str, int] = {}
    for record in records:  # op order: the first op is undone last
        pre = record.pre
        if pre.kind == TREE and pre.blob:
            for entry in ws.listing(pre.blob):
                owned.discard(entry.blob or "")
        elif pre.kind == FILE and pre.blob in owned and pre.blob not in takers:
            takers[pre.blob] = record.op
    return {digest: op for digest, op in takers.items() if digest in owned}


def redo_all(ws: Workspace, records: Sequence[OpRecord], step: str) -> int:
    """Put every post-image in place, first operation first.

    An owned post-image whose blob is gone was released by a commit that a
    crash stopped short of its record: every file was in place before the
    commit was decided, so the file at the path is kept.

    Returns:
        How many operations changed something on disk.
    """
    changed = 0
    for record in records:
        if _released(ws, record):
            crashpoint(step)
            continue
        if realize(ws, record, record.post, other=record.pre):
            changed += 1
            logger.debug(
                "transaction %s: redid op %d on %s", ws.tx, record.op, record.path
            )
        crashpoint(step)
    return changed


def _released(ws: Workspace, record: OpRecord) -> bool:
    post = record.post
    if not (record.post_owned and post.kind == FILE and post.blob):
        return False
    if ws.store.has(post.blob):
        return False
    path = ws.tree / record.path
    if not os.path.isfile(path) or os.path.islink(path):
        raise ImageUnavailableError(path, post)
    if compare(ws, path, post) != SAME:
        logger.warning(
            "%s changed after transaction %s placed it; kept as it is", path, ws.tx
        )
    return True


def release_posts(ws: Workspace, records: Sequence[OpRecord]) -> int:
    """Remove the store's names of the post-images the transaction linked in
    (``post_owned``), once it ends: the tree holds their content (committed)
    or they are not wanted (rolled back). A blob that any other image of the
    transaction names stays: its pre-images are what ``upgrade rollback``
    restores, and a capture may have re-linked the name to another file of
    the same content. The caller makes the removals durable (one sync)
    before it journals the end.

    Returns:
        How many blobs were removed.
    """
    owned = {
        r.post.blob for r in records if r.post_owned and r.post.kind == FILE and r.post.blob
    }
    if owned:
        for record in records:
            owned.difference_update(image_blobs(record.pre, ws.store))
            if not record.post_owned:
                owned.difference_update(image_blobs(record.post, ws.store))
    for digest in owned:
        ws.store.remove(digest, sync=False)
    return len(owned)


def unshare_pre_images(ws: Workspace, records: Sequence[OpRecord], step: str) -> int:
    """End every sharing of an inode between the tree and the store.

    A pre-image is captured by hard-linking the file about to be replaced;
    once the transaction ends with that file in the tree (rolled back,
    aborted), file and blob would share an inode (see the module doc). A
    blob the transaction owns (``pre_owned``) is needed by no one once the
    transaction is undone: its name is simply removed. Any other blob's
    name gets a private copy, so the tree keeps its very inode. Copies are
    written first, made durable with one sync, and only then renamed over
    the blobs' names: a power cut can never leave a name pointing at lost
    data. When a copy cannot be made (the disk that failed the transaction
    is still full), the sharing stays, with a WARNING: the rollback itself
    matters more.

    Args:
        ws: The transaction's workspace.
        records: Its operations, all undone (or never applied).
        step: The crash-point name passed once the blobs are unshared.

    Returns:
        How many blobs were removed or got a private copy.
    """
    found = (
        (path, digest, record.pre_owned and record.pre.kind == FILE)
        for record in records
        for path, digest in _pre_files(ws, record)
    )
    return _unshare(ws, found, step)


def _unshare(
    ws: Workspace, found: Iterable[tuple[Path, str, bool]], step: str
) -> int:
    """Unshare each (tree file, blob, owned) that shares an inode (see
    ``unshare_pre_images``)."""
    copies: list[tuple[Path, Path]] = []
    removed = 0
    for path, digest, owned in found:
        if not _shares_inode(ws.store, path, digest):
            continue
        if owned:
            ws.store.remove(digest, sync=False)
            removed += 1
            continue
        try:
            copies.append((copy_blob_aside(ws.store, digest), ws.store.path_of(digest)))
        except OSError as exc:
            logger.warning(
                "%s shares its inode with blob %s (a private copy failed: %s); "
                "an edit in place would change the stored image",
                path,
                digest,
                exc,
            )
    if copies:
        sync_filesystems([ws.store.root])
    if copies or removed:
        crashpoint(step)
    for tmp, final in copies:
        os.rename(tmp, final)
    return removed + len(copies)


def note_capturing(ws: Workspace, paths: Sequence[str]) -> None:
    """Record durably which paths' pre-images are about to be captured.

    A crash after a batch's capture and before its intents reach the journal
    leaves tree files sharing their inode with blobs no record names. This
    list, ``<work_dir>/capturing`` (one per transaction, each batch
    overwriting the last), is how recovery finds them (``unshare_captured``).
    """
    fresh = not ws.work_dir.is_dir()
    ws.work_dir.mkdir(parents=True, exist_ok=True)
    if fresh:  # the transaction's folder, and <state>/txn if it is new too
        fsio.fsync_dir(ws.work_dir.parent)
        fsio.fsync_dir(ws.work_dir.parent.parent)
    fsio.write_atomic(ws.work_dir / _CAPTURING, _paths_encoder.encode(list(paths)))


def unshare_captured(ws: Workspace, records: Sequence[OpRecord], step: str) -> int:
    """Unshare the files of a batch captured but never journaled.

    Reads the list ``note_capturing`` left; each listed path that is not
    among ``records`` (the journaled intents) is looked at, a folder file by
    file: a file with more than one name is hashed, and if the store's blob
    of that hash is its inode, the blob gets a private copy (whether some
    record names it cannot be known cheaply, so it is never just removed).

    Returns:
        How many blobs got a private copy.
    """
    try:
        paths = _paths_decoder.decode((ws.work_dir / _CAPTURING).read_bytes())
    except FileNotFoundError:
        return 0  # no batch was being captured
    known = {record.path for record in records}
    found = (
        (path, hash_file(path), False)
        for rel in paths
        if rel not in known
        for path in _linked_files(ws.tree / rel)
    )
    return _unshare(ws, found, step)


def _linked_files(top: Path) -> Iterator[Path]:
    """``top`` or, for a folder, every file under it, that has a second name."""
    try:
        info = os.lstat(top)
    except (FileNotFoundError, NotADirectoryError):
        return
    if stat.S_ISREG(info.st_mode) and info.st_nlink > 1:
        yield top
    elif stat.S_ISDIR(info.st_mode):
        for folder, _dirs, files in os.walk(top):
            for name in files:
                path = Path(folder) / name
                found = os.lstat(path)
                if stat.S_ISREG(found.st_mode) and found.st_nlink > 1:
                    yield path


def _shares_inode(store: BlobStore, path: Path, digest: str) -> bool:
    try:
        info = os.lstat(path)
        blob = os.stat(store.path_of(digest))
    except (FileNotFoundError, NotADirectoryError):
        return False
    return (info.st_ino, info.st_dev) == (blob.st_ino, blob.st_dev)


def _pre_files(ws: Workspace, record: OpRecord) -> Iterator[tuple[Path, str]]:
    pre, path = record.pre, ws.tree / record.path
    if pre.kind == FILE and pre.blob:
        yield path, pre.blob
    elif pre.kind == TREE and pre.blob:
        for entry in ws.listing(pre.blob):
            if entry.kind == FILE and entry.blob:
                yield path / entry.relpath, entry.blob


def copy_blob_aside(store: BlobStore, digest: str) -> Path:
    """Copy blob ``digest`` to a temporary name beside it (no fsync).

    The copy is made in the kernel (``copy_file_range(2)``), unverified: its
    source is the file hashed when the pre-image was captured.

    Returns:
        The copy's path, to be renamed over the blob's name once durable.
    """
    final = store.path_of(digest)
    tmp = Path(store.root) / "tmp" / f"{digest}.unshare"
    tmp.parent.mkdir(exist_ok=True)
    _unlink_quietly(tmp)
    source = os.open(final, os.O_RDONLY | os.O_CLOEXEC)
    try:
        out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444)
        try:
            copy_all(source, out, os.fstat(source).st_size)
        finally:
            os.close(out)
    finally:
        os.close(source)
    fsio.note_write(tmp)
    return tmp


def remove_scratch(ws: Workspace, records: Iterable[OpRecord]) -> None:
    """Remove scratch files and folders a crash left beside the targets.

    Each folder that holds a target is listed once (far fewer system calls
    than probing two scratch names per operation).
    """
    prefix = f"{SCRATCH_PREFIX}{ws.tx}-"
    folders = {os.path.dirname(record.path) for record in records}
    for folder in folders:
        try:
            entries = [
                e for e in os.scandir(ws.tree / folder) if e.name.startswith(prefix)
            ]
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                remove_tree(Path(entry.path))
            else:
                os.unlink(entry.path)


def discard_work_dir(ws: Workspace) -> None:
    """Remove the transaction's trash."""
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
