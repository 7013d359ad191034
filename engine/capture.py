"""Capturing images: filling in each planned operation's pre-image and
post-image, with their content in the blob store.

Staged files and pre-images are stored by hard link (``engine.trees``:
``store_staged``, ``store_file``): no byte is copied. A staged file then
moves into the tree, sharing its inode with its blob until the transaction
ends and releases the blob (``engine.placement.release_posts``); a
pre-image's file is about to be replaced. The files of a staged folder are
stored as private copies (``engine.trees.store_copy``): the folder moves
into the tree whole, and its listing cannot say which blobs a transaction
linked. Folders become tree listings. Large files are hashed on a few
threads (hashlib and ``read`` release the GIL) while the main thread does
the small ones, for which threads would only contend for the GIL.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from engine.ops import (
    DELETE_FILE,
    DELETE_TREE,
    MAKE_DIR,
    MAKE_SYMLINK,
    PUT_FILE,
    SET_MODE,
    PlannedOp,
    lstat_kind,
)
from engine.trees import (
    DIR,
    FILE,
    SYMLINK,
    WalkedEntry,
    store_copy,
    store_file,
    store_staged,
    walk,
)
from journal import BlobInfo, BlobStore
from journal.records import ABSENT, TREE, ImageRef

_HASH_THREADS = 2
# Files at least this large are hashed on the thread pool.
_THREADED_BYTES = 1024 * 1024


def capture_posts(store: BlobStore, planned: Iterable[PlannedOp]) -> None:
    """Fill in every ``post``: staged files by hard link, staged folders'
    files as private copies."""
    work = _Work(store)
    for op in planned:
        _capture_post(work, op)
    work.run(store_copy)


def capture_pres(store: BlobStore, tree: Path, planned: Iterable[PlannedOp]) -> None:
    """Fill in every ``pre`` from what the disk holds, by hard links."""
    work = _Work(store)
    for op in planned:
        _capture_pre(work, tree, op)
    work.run(store_file)


@dataclass(frozen=True)
class _StoreJob:
    """A file to store, and what to do with its ``BlobInfo``; ``put``, when
    set, stores it instead of the run's default."""

    path: Path
    size: int
    done: Callable[[BlobInfo], None]
    put: Callable[[BlobStore, Path], BlobInfo] | None = None


class _Work:
    """Files to store, then steps that need them stored (tree listings)."""

    def __init__(self, store: BlobStore) -> None:
        self.store = store
        self.jobs: list[_StoreJob] = []
        self.after: list[Callable[[], None]] = []

    def run(self, put: Callable[[BlobStore, Path], BlobInfo]) -> None:
        with ThreadPoolExecutor(_HASH_THREADS) as pool:
            large = [
                (pool.submit(job.put or put, self.store, job.path), job.done)
                for job in self.jobs
                if job.size >= _THREADED_BYTES
            ]
            for job in self.jobs:
                if job.size < _THREADED_BYTES:
                    job.done((job.put or put)(self.store, job.path))
            for future, done in large:
                done(future.result())
        for step in self.after:
            step()

    def tree(self, top: Path, entries: list[WalkedEntry], set_image) -> None:
        """Store a folder's files, then its listing; ``set_image`` gets the
        tree image."""
        for entry in entries:
            if entry.kind == FILE:

                def done(blob: BlobInfo, entry: WalkedEntry = entry) -> None:
                    entry.blob = blob.digest

                self.jobs.append(_StoreJob(top / entry.relpath, entry.size, done))
        self.after.append(lambda: set_image(_tree_image(self.store, entries)))


def _capture_post(work: _Work, planned: PlannedOp) -> None:
    kind, mode = planned.kind, planned.mode or 0
    if kind in (SET_MODE, DELETE_FILE, DELETE_TREE):
        return
    if kind == MAKE_DIR:
        planned.post = ImageRef(kind=DIR, mode=mode)
    elif kind == MAKE_SYMLINK:
        planned.post = ImageRef(kind=SYMLINK, target=planned.target)
    elif kind == PUT_FILE and planned.source is None:
        planned.post = ImageRef(
            kind=FILE, blob=planned.blob, size=planned.post_bytes, mode=mode
        )
    elif kind == PUT_FILE:

        def done(blob: BlobInfo) -> None:
            planned.post = ImageRef(
                kind=FILE, blob=blob.digest, size=blob.size, mode=mode
            )
            planned.post_owned = blob.linked

        job = _StoreJob(planned.source, planned.post_bytes, done, store_staged)
        work.jobs.append(job)
    elif planned.source is None:
        planned.post = ImageRef(kind=TREE, blob=planned.blob, size=planned.post_bytes)
    else:
        entries = planned.post_walk or []
        work.tree(
            planned.source, entries, lambda image: setattr(planned, "post", image)
        )


def _capture_pre(work: _Work, tree: Path, planned: PlannedOp) -> None:
    path = tree / planned.path
    found, info = lstat_kind(path)
    if found == ABSENT or info is None:
        planned.pre = ImageRef()
        return
    mode = info.st_mode & 0o7777
    if planned.kind == SET_MODE:
        planned.pre = ImageRef(kind=found, mode=mode)
        planned.post = ImageRef(kind=found, mode=planned.mode or 0)
    elif found == SYMLINK:
        planned.pre = ImageRef(kind=SYMLINK, target=os.readlink(path))
    elif found == DIR and planned.kind == MAKE_DIR:
        planned.pre = ImageRef(kind=DIR, mode=mode)
    elif found == DIR:
        entries = planned.pre_walk if planned.pre_walk is not None else walk(path)
        work.tree(path, entries, lambda image: setattr(planned, "pre", image))
    else:

        def done(blob: BlobInfo) -> None:
            planned.pre = ImageRef(
                kind=FILE, blob=blob.digest, size=blob.size, mode=mode
            )
            planned.pre_owned = blob.linked

        # A file that stays as it is keeps its inode to itself: its content
        # is stored already, as the operation's post-image.
        post = planned.post.blob if planned.post.kind == FILE else None
        work.jobs.append(
            _StoreJob(path, info.st_size, done, functools.partial(store_file, stored=post))
        )


def _tree_image(store: BlobStore, entries: list[WalkedEntry]) -> ImageRef:
    listing = store.put_tree_listing([e.to_tree_entry() for e in entries], sync=False)
    return ImageRef(kind=TREE, blob=listing.digest, size=sum(e.size for e in entries))
