"""A content-addressed store of file contents: pre-images and post-images.

A blob is stored once, under its sha256 (``<root>/ab/cdef...``), whatever
path it came from. Contents stream through in 1 MiB chunks: no blob is ever
held in memory whole. A blob is written under a temporary name in
``<root>/tmp``, fsync'd, renamed into place and its folder fsync'd, so a name
in the store always holds complete content (unless the caller chose
``sync=False`` and then lost power before its own ``syncfs``; see ``put``).

The hard-link fast path stores a file without copying it: the store's name
is a second link to the same inode. It is safe only when the source is not
written to afterwards; replacing it by rename, as transactions do, is fine.

A tree listing describes a whole directory for "tree" pre-images: a blob
holding a msgpack list of ``TreeEntry`` (relpath, kind, mode, blob, target),
sorted by path, whose file entries name further blobs.
"""

from __future__ import annotations

import errno
import hashlib
import itertools
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

import msgspec

from journal import fsio
from journal.errors import BlobCorruptError, BlobError, BlobMissingError

logger = logging.getLogger(__name__)

CHUNK = 1024 * 1024
_HEX = frozenset("0123456789abcdef")
# Errors after which a hard link cannot be made but a copy can.
_NO_LINK = (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.EACCES, errno.ENOTSUP)


class BlobInfo(msgspec.Struct, frozen=True):
    """A stored blob: its sha256 and size. ``linked`` is true when this very
    put created the blob as a new hard link to the stored file (the blob is
    that file's inode, and nothing stored before names it)."""

    digest: str
    size: int
    linked: bool = False


class TreeEntry(msgspec.Struct, array_like=True, frozen=True):
    """One path of a tree listing; ``blob`` for files, ``target`` for links."""

    relpath: str
    kind: str
    mode: int
    blob: str | None = None
    target: str | None = None


class NotATreeListingError(BlobError):
    def __init__(self, digest: str, problem: str) -> None:
        super().__init__(f"blob {digest} is not a tree listing: {problem}")
        self.digest = digest
        self.problem = problem


_listing_encoder = msgspec.msgpack.Encoder()
_listing_decoder = msgspec.msgpack.Decoder(list[TreeEntry])


class BlobStore:
    """The blob store rooted at ``root`` (created on first put)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self._root_text = os.fspath(self.root)
        self._tmp = self.root / "tmp"
        self._names = itertools.count()
        self._unsynced_dirs: set[Path] = set()

    # -- names -------------------------------------------------------------

    def path_of(self, digest: str) -> Path:
        """Where the blob ``digest`` lives (whether or not it exists)."""
        if len(digest) != 64 or not _HEX.issuperset(digest):
            raise ValueError(f"not a sha256 hex digest: {digest!r}")
        # One string, one Path: rollbacks ask this for every file.
        return Path(f"{self._root_text}/{digest[:2]}/{digest[2:]}")

    def has(self, digest: str) -> bool:
        return self.path_of(digest).is_file()

    def size_of(self, digest: str) -> int:
        return self._stat(digest).st_size

    def link_count(self, digest: str) -> int:
        """How many names the blob's inode has (2 or more: linked in)."""
        return self._stat(digest).st_nlink

    def digests(self) -> Iterator[str]:
        """Every blob's digest, in no particular order."""
        if not self.root.is_dir():
            return
        for folder in os.scandir(self.root):
            if len(folder.name) != 2 or not folder.is_dir():
                continue
            for entry in os.scandir(folder.path):
                digest = folder.name + entry.name
                if len(digest) == 64 and _HEX.issuperset(digest):
                    yield digest

    def _stat(self, digest: str) -> os.stat_result:
        try:
            return self.path_of(digest).stat()
        except FileNotFoundError as exc:
            raise BlobMissingError(digest) from exc

    # -- putting -----------------------------------------------------------

    def put_path(
        self, path: Path | str, link: bool = False, sync: bool = True
    ) -> BlobInfo:
        """Store the content of the regular file at ``path``.

        Args:
            path: The file to store.
            link: Hard-link instead of copying, when the source is on the
                store's filesystem; the caller promises not to write to the
                source afterwards. Falls back to a copy when linking fails.
            sync: fsync the blob and its folder. False leaves that to the
                caller (one ``fsio.syncfs`` after many puts).

        Returns:
            The blob's digest and size.
        """
        if link:
            try:
                return self._put_link(Path(path), sync)
            except OSError as exc:
                if exc.errno not in _NO_LINK:
                    raise
                logger.debug("cannot hard-link %s (%s); copying it", path, exc)
        with open(path, "rb") as source:
            return self.put_stream(source, sync=sync)

    def put_stream(self, readable: BinaryIO, sync: bool = True) -> BlobInfo:
        """Store everything ``readable`` yields until EOF (see ``put_path``)."""
        tmp = self._tmp_name()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444)
        try:
            info = _pump(readable, fd, tmp, sync)
        except BaseException:
            os.close(fd)
            os.unlink(tmp)
            raise
        os.close(fd)
        return self._settle(tmp, info, sync)

    def put_bytes(self, data: bytes, sync: bool = True) -> BlobInfo:
        """Store a small in-memory content (a tree listing, a manifest)."""
        tmp = self._tmp_name()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444)
        try:
            _write_all(fd, data)
            fsio.note_write(tmp)
            if sync:
                fsio.fsync_fd(fd, tmp)
        finally:
            os.close(fd)
        info = BlobInfo(hashlib.sha256(data).hexdigest(), len(data))
        return self._settle(tmp, info, sync)

    def _put_link(self, path: Path, sync: bool) -> BlobInfo:
        tmp = self._tmp_name()
        os.link(path, tmp)
        try:
            info = BlobInfo(*_hash_file(tmp))
            if sync:
                fsio.fsync_path(tmp)
        except BaseException:
            os.unlink(tmp)
            raise
        return self._settle(tmp, info, sync)

    def _tmp_name(self) -> Path:
        self._tmp.mkdir(parents=True, exist_ok=True)
        return self._tmp / f"{os.getpid()}-{next(self._names)}.part"

    def _settle(self, tmp: Path, info: BlobInfo, sync: bool) -> BlobInfo:
        """Rename a written temporary file to its digest's name.

        An existing blob of the same size is kept and the new copy dropped. A
        size mismatch means an earlier unsynced put lost its data in a crash;
        the new, complete copy replaces it.
        """
        final = self.path_of(info.digest)
        try:
            if final.stat().st_size == info.size:
                os.unlink(tmp)
                return info
        except FileNotFoundError:
            pass  # the usual case: a new blob
        folder = final.parent
        if not folder.is_dir():
            folder.mkdir(parents=True, exist_ok=True)
            self._sync_dir(self.root, sync)
        os.rename(tmp, final)
        self._sync_dir(folder, sync)
        return info

    def _sync_dir(self, folder: Path, sync: bool) -> None:
        if sync:
            fsio.fsync_dir(folder)
        else:
            self._unsynced_dirs.add(folder)

    def sync(self) -> None:
        """fsync every folder changed by a put or remove with ``sync=False``."""
        for folder in sorted(self._unsynced_dirs):
            if folder.is_dir():
                fsio.fsync_dir(folder)
        self._unsynced_dirs.clear()

    # -- reading -----------------------------------------------------------

    def verify(self, digest: str) -> BlobInfo:
        """Hash the blob and compare with its name.

        Raises:
            BlobMissingError: no such blob.
            BlobCorruptError: its content hashes to something else.
        """
        try:
            actual, size = _hash_file(self.path_of(digest))
        except FileNotFoundError as exc:
            raise BlobMissingError(digest) from exc
        if actual != digest:
            raise BlobCorruptError(digest, actual)
        return BlobInfo(digest, size)

    def read_bytes(self, digest: str) -> bytes:
        """The verified content of a small blob."""
        try:
            data = self.path_of(digest).read_bytes()
        except FileNotFoundError as exc:
            raise BlobMissingError(digest) from exc
        actual = hashlib.sha256(data).hexdigest()
        if actual != digest:
            raise BlobCorruptError(digest, actual)
        return data

    def copy_to(self, digest: str, dest: Path | str, sync: bool = False) -> BlobInfo:
        """Copy a blob's content to ``dest``, verifying it on the way.

        ``dest`` is created or truncated (mode 0644 when created). On a hash
        mismatch ``dest`` is removed and ``BlobCorruptError`` raised.
        """
        try:
            source = open(self.path_of(digest), "rb")
        except FileNotFoundError as exc:
            raise BlobMissingError(digest) from exc
        with source:
            fd = os.open(
                dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644
            )
            try:
                info = _pump(source, fd, Path(dest), sync)
            finally:
                os.close(fd)
        if info.digest != digest:
            os.unlink(dest)
            raise BlobCorruptError(digest, info.digest)
        return info

    # -- removing ----------------------------------------------------------

    def remove(self, digest: str, sync: bool = True) -> None:
        """Remove a blob (no error if it is already gone)."""
        path = self.path_of(digest)
        try:
            os.unlink(path)
        except FileNotFoundError:
            return
        self._sync_dir(path.parent, sync)

    # -- tree listings -----------------------------------------------------

    def put_tree_listing(
        self, entries: Iterable[TreeEntry], sync: bool = True
    ) -> BlobInfo:
        """Store a tree listing (sorted by path, so equal trees share a blob)."""
        ordered = sorted(entries, key=lambda entry: entry.relpath)
        return self.put_bytes(_listing_encoder.encode(ordered), sync=sync)

    def read_tree_listing(self, digest: str) -> list[TreeEntry]:
        """The verified entries of a tree listing.

        Raises:
            BlobMissingError, BlobCorruptError: the blob is unusable.
            NotATreeListingError: its content is not a listing.
        """
        data = self.read_bytes(digest)
        try:
            return _listing_decoder.decode(data)
        except msgspec.DecodeError as exc:
            raise NotATreeListingError(digest, str(exc)) from exc


def _pump(readable: BinaryIO, fd: int, path: Path, sync: bool) -> BlobInfo:
    """Copy ``readable`` to ``fd`` chunk by chunk, hashing on the way."""
    hasher, size = hashlib.sha256(), 0
    while chunk := readable.read(CHUNK):
        hasher.update(chunk)
        size += len(chunk)
        _write_all(fd, chunk)
    fsio.note_write(path)
    if sync:
        fsio.fsync_fd(fd, path)
    return BlobInfo(hasher.hexdigest(), size)


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _hash_file(path: Path) -> tuple[str, int]:
    hasher, size = hashlib.sha256(), 0
    with open(path, "rb") as file:
        while chunk := file.read(CHUNK):
            hasher.update(chunk)
            size += len(chunk)
    return hasher.hexdigest(), size
