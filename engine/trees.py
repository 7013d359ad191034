"""Whole directory trees as images: walk, capture, compare, rebuild.

A tree image is a tree listing in the blob store (``journal.blobs.TreeEntry``:
relpath, kind, mode, blob, target; ``""`` is the top folder itself) whose
file entries name further blobs. It records everything a rollback must bring
back: every folder with its mode (empty ones included), every file's content
and mode, every symlink's target. Owners and timestamps are not recorded:
updock runs as the deployment's owner and compose does not read mtimes.

Files are stored with the hard-link fast path (``put_path(link=True)``), so
capturing a tree costs one read (for the hash) and one link per file, never
a copy, when the store shares the tree's filesystem.
"""

from __future__ import annotations

import errno
import hashlib
import itertools
import os
import shutil
import stat
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from engine.errors import BadInputError
from journal import BlobInfo, BlobStore, TreeEntry, fsio
from journal.blobs import CHUNK

FILE = "file"
DIR = "dir"
SYMLINK = "symlink"


class UnsupportedFileTypeError(BadInputError):
    """A device, FIFO or socket where only files, folders and links may be."""

    def __init__(self, path: Path) -> None:
        super().__init__(
            f"{path} is a device, FIFO or socket; updock handles only files, "
            "folders and symlinks"
        )
        self.path = path


@dataclass
class WalkedEntry:
    """One path found by ``walk``; ``blob`` is filled in once stored."""

    relpath: str
    kind: str
    mode: int
    size: int = 0
    target: str | None = None
    blob: str | None = None

    def to_tree_entry(self) -> TreeEntry:
        return TreeEntry(self.relpath, self.kind, self.mode, self.blob, self.target)


def kind_of(mode: int) -> str | None:
    """``file``, ``dir`` or ``symlink`` for an ``st_mode``; None for others."""
    if stat.S_ISREG(mode):
        return FILE
    if stat.S_ISDIR(mode):
        return DIR
    if stat.S_ISLNK(mode):
        return SYMLINK
    return None


def walk(top: Path) -> list[WalkedEntry]:
    """Every path under ``top`` (``top`` itself as ``""``), parents first.

    Symlinks are listed, never followed.

    Raises:
        UnsupportedFileTypeError: a device, FIFO or socket is in the tree.
    """
    entries = [WalkedEntry("", DIR, stat.S_IMODE(os.lstat(top).st_mode))]
    pending = [(top, "")]
    while pending:
        folder, prefix = pending.pop()
        with os.scandir(folder) as found:
            children = sorted(found, key=lambda entry: entry.name)
        for child in children:
            info = child.stat(follow_symlinks=False)
            kind = kind_of(info.st_mode)
            if kind is None:
                raise UnsupportedFileTypeError(Path(child.path))
            relpath = prefix + child.name
            entry = WalkedEntry(relpath, kind, stat.S_IMODE(info.st_mode))
            if kind == FILE:
                entry.size = info.st_size
            elif kind == SYMLINK:
                entry.mode = 0
                entry.target = os.readlink(child.path)
            else:
                pending.append((Path(child.path), relpath + "/"))
            entries.append(entry)
    return entries


def tree_size(entries: list[WalkedEntry]) -> int:
    """Bytes of file content in a walked tree."""
    return sum(entry.size for entry in entries)


# -- storing ----------------------------------------------------------------

# Errors after which a file cannot be hard-linked into the store, only copied.
_NO_LINK = (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.EACCES, errno.ENOTSUP)


def store_file(
    store: BlobStore, path: Path | str, stored: str | None = None, staged: bool = False
) -> BlobInfo:
    """Put a file into the blob store by hard link.

    For pre-images and staged files: the file is hashed through one
    descriptor, then linked
    straight to its digest's name (``store.path_of``), with no temporary
    name and no fsync (the caller makes the names durable with one
    ``syncfs``): a quarter of the system calls of ``BlobStore.put_path``,
    which matters for 10,000 small files. The caller must replace or remove
    the file afterwards (see ``engine.placement`` on shared inodes). A blob
    already there is kept when ``trusted``, else re-linked to this file;
    another filesystem falls back to a copy (``put_path``); a file replaced
    between hashing and linking is caught by its inode number. A file that
    hashes to ``stored`` (a digest the caller knows is in the store already)
    is not linked. Nor is a file with other names (hard links), whose
    inode could be edited through them: it is stored as a private copy.

    A ``staged`` file (a post-image, about to move into the tree, not to be
    replaced) is linked only as new content: when its digest is stored
    already, it is stored as ``store_copy`` does, so that a name another
    operation relies on never becomes an inode the tree will hold.
    """
    path = os.fspath(path)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        info = os.fstat(fd)
        hasher = hashlib.sha256()
        while chunk := os.read(fd, CHUNK):
            hasher.update(chunk)
    finally:
        os.close(fd)
    digest = hasher.hexdigest()
    if digest == stored:
        return BlobInfo(digest, info.st_size)
    if info.st_nlink > 1:
        # Another name (a hard link elsewhere, perhaps outside the tree)
        # could edit this inode in place: the store gets a private copy.
        return store_copy(store, path)

    final = store.path_of(digest)
    try:
        _link_new(path, final)
    except FileExistsError:
        if staged:
            return store_copy(store, path)
        existing = os.stat(final)
        if existing.st_ino != info.st_ino and not trusted(existing, info.st_size):
            return _relink(store, path, final, info)
        return BlobInfo(digest, info.st_size)
    except OSError as exc:
        if exc.errno not in _NO_LINK:
            raise
        return store.put_path(path, link=False, sync=False)
    if os.stat(final).st_ino != info.st_ino:
        os.unlink(final)
        return store.put_path(path, link=True, sync=False)
    return BlobInfo(digest, info.st_size, linked=True)


def store_staged(store: BlobStore, path: Path | str) -> BlobInfo:
    """``store_file`` for a staged file (see there)."""
    return store_file(store, path, staged=True)


_copy_names = itertools.count()


def store_copy(store: BlobStore, path: Path | str) -> BlobInfo:
    """Put a private copy of a file into the blob store.

    For the files of a staged folder, which moves into the tree and must
    not share its inodes with the store, and for staged files whose content
    is stored already (``store_staged``). The file is hashed first; a ``trusted`` blob
    already there is kept, and nothing is written. Otherwise the copy goes
    straight to the digest's name, created exclusively, without fsync (the
    caller syncs the filesystem once): one file creation, no rename, which
    is what costs most on a busy disk. A crash mid-copy leaves a short
    blob, which ``trusted`` refuses by its size; an untrusted blob in the
    way is replaced through a temporary name.
    """
    source = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        digest, size, data = _hash_descriptor(source)
        final = store.path_of(digest)
        try:
            if trusted(os.stat(final), size):
                return BlobInfo(digest, size)
        except FileNotFoundError:
            final.parent.mkdir(parents=True, exist_ok=True)
            try:
                _copy_out(source, data, size, final)
                return BlobInfo(digest, size)
            except FileExistsError:
                pass  # another thread stores the same content right now
        tmp = Path(store.root) / "tmp" / f"{os.getpid()}-{next(_copy_names)}.copy"
        tmp.parent.mkdir(exist_ok=True)
        _copy_out(source, data, size, tmp)
    finally:
        os.close(source)
    os.rename(tmp, final)
    return BlobInfo(digest, size)


def _hash_descriptor(fd: int) -> tuple[str, int, bytes | None]:
    """Hash a file through its descriptor; a small file's bytes are kept."""
    hasher, size, first = hashlib.sha256(), 0, b""
    while chunk := os.read(fd, CHUNK):
        if size == 0:
            first = chunk
        hasher.update(chunk)
        size += len(chunk)
    return hasher.hexdigest(), size, first if size == len(first) else None


def _copy_out(source: int, data: bytes | None, size: int, dest: Path) -> None:
    """Write a new file ``dest`` with ``data``, or copy it from ``source``
    in the kernel when it was too large to keep."""
    out = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444)
    try:
        if data is not None:
            _write_all(out, data)
        else:
            os.lseek(source, 0, os.SEEK_SET)
            copy_all(source, out, size)
    except BaseException:
        os.close(out)
        os.unlink(dest)
        raise
    os.close(out)
    fsio.note_write(dest)


def copy_all(source: int, out: int, size: int) -> None:
    """Copy ``size`` bytes between descriptors in the kernel
    (``copy_file_range(2)``), by ``read``/``write`` where unsupported."""
    copied = 0
    while copied < size:
        try:
            done = os.copy_file_range(source, out, size - copied)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP):
                raise
            done = os.write(out, os.read(source, CHUNK))
        if done == 0:
            break
        copied += done


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def trusted(blob: os.stat_result, size: int) -> bool:
    """Whether an existing blob can stand for content of ``size`` bytes
    just hashed to its name: the right size (an earlier copy may have lost
    its data in a power cut), and no second name (a file sharing its inode
    may have been edited in place since it was stored)."""
    return blob.st_size == size and blob.st_nlink == 1


def _relink(store: BlobStore, path: str, final: Path, info: os.stat_result) -> BlobInfo:
    """Make ``final`` a link to the file at ``path``, just hashed to its name
    (a private copy when it cannot be linked)."""
    tmp = Path(store.root) / "tmp" / f"{final.parent.name}{final.name}.relink"
    tmp.parent.mkdir(exist_ok=True)
    if os.path.lexists(tmp):
        os.unlink(tmp)
    try:
        os.link(path, tmp)
    except OSError as exc:
        if exc.errno not in _NO_LINK:
            raise
        return store_copy(store, path)
    if os.stat(tmp).st_ino != info.st_ino:
        os.unlink(tmp)
        raise FileChangedError(Path(path))
    os.rename(tmp, final)
    return BlobInfo(final.parent.name + final.name, info.st_size)


class FileChangedError(BadInputError):
    """A file was replaced while updock was storing it."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"{path} changed while it was being stored; retry")
        self.path = path


def _link_new(path: str, final: Path) -> None:
    try:
        os.link(path, final)
    except FileNotFoundError:
        final.parent.mkdir(parents=True, exist_ok=True)
        os.link(path, final)


# -- comparing --------------------------------------------------------------


def same_content(
    store: BlobStore, path: Path, info: os.stat_result, digest: str
) -> bool:
    """Whether the regular file at ``path`` (stat ``info``) holds blob ``digest``.

    The same inode as the blob means the same bytes (the hard-link fast path
    makes this the usual case); otherwise sizes, then hashes, are compared.
    """
    try:
        blob = os.stat(store.path_of(digest))
    except FileNotFoundError:
        blob = None
    if blob is not None:
        if (blob.st_ino, blob.st_dev) == (info.st_ino, info.st_dev):
            return True
        if blob.st_size != info.st_size:
            return False
    return hash_file(path) == digest


def hash_file(path: Path) -> str:
    """The sha256 hex digest of a file, read in chunks."""
    hasher = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(CHUNK):
            hasher.update(chunk)
    return hasher.hexdigest()


def tree_matches(store: BlobStore, top: Path, listing: list[TreeEntry]) -> bool:
    """Whether the folder ``top`` holds exactly the tree ``listing`` describes.

    Every path, kind, mode, file content and link target must match, and no
    path may be there that the listing lacks.
    """
    try:
        if not stat.S_ISDIR(os.lstat(top).st_mode):
            return False
        found = {entry.relpath: entry for entry in walk(top)}
    except (FileNotFoundError, NotADirectoryError, UnsupportedFileTypeError):
        return False
    if len(found) != len(listing):
        return False
    for expected in listing:
        actual = found.get(expected.relpath)
        if not _entry_matches(store, top, expected, actual):
            return False
    return True


def _entry_matches(
    store: BlobStore, top: Path, expected: TreeEntry, actual: WalkedEntry | None
) -> bool:
    if actual is None or actual.kind != expected.kind:
        return False
    if expected.kind == SYMLINK:
        return actual.target == expected.target
    if actual.mode != expected.mode:
        return False
    if expected.kind == DIR:
        return True
    if expected.blob is None:
        return False
    path = top / expected.relpath
    return same_content(store, path, os.lstat(path), expected.blob)


# -- building ---------------------------------------------------------------


def build_tree(
    listing: list[TreeEntry], dest: Path, copy_blob: Callable[[str, Path], object]
) -> None:
    """Create the tree ``listing`` describes at ``dest`` (which must not exist).

    Folders are created writable and get their recorded modes last, deepest
    first, so a read-only folder can still be filled.

    Args:
        listing: The tree listing.
        dest: The folder to create.
        copy_blob: Called with a file's digest and destination path; puts a
            copy of the content there (``BlobStore.copy_to``).
    """
    folders: list[tuple[Path, int]] = []
    for entry in sorted(listing, key=lambda entry: entry.relpath):
        path = dest / entry.relpath if entry.relpath else dest
        if entry.kind == DIR:
            os.mkdir(path, 0o700)
            folders.append((path, entry.mode))
        elif entry.kind == SYMLINK:
            os.symlink(entry.target or "", path)
        else:
            copy_blob(entry.blob or "", path)
            os.chmod(path, entry.mode)
    for path, mode in reversed(folders):
        os.chmod(path, mode)


def remove_tree(path: Path) -> None:
    """Remove a folder and everything in it, read-only subfolders included."""

    def retry_writable(function: Callable, failed: str, exc: BaseException) -> None:
        parent = os.path.dirname(failed)
        if not isinstance(exc, PermissionError) or not parent:
            raise exc
        os.chmod(parent, 0o700)
        function(failed)

    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=retry_writable)
    else:
        shutil.rmtree(
            path, onerror=lambda fn, failed, info: retry_writable(fn, failed, info[1])
        )
