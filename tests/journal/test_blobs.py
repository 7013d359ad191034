"""The content-addressed blob store on real files."""

from __future__ import annotations

import hashlib
import io
import os
import tracemalloc
from pathlib import Path

import pytest

from journal import fsio
from journal.blobs import BlobStore, NotATreeListingError, TreeEntry
from journal.errors import BlobCorruptError, BlobMissingError


@pytest.fixture
def store(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "blobs")


def _file(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_put_path_stores_by_sha256(store: BlobStore, tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    info = store.put_path(_file(tmp_path / "f", data))

    assert info.digest == hashlib.sha256(data).hexdigest()
    assert info.size == len(data)
    assert store.path_of(info.digest).read_bytes() == data
    assert store.has(info.digest)
    assert list(store.digests()) == [info.digest]
    assert store.verify(info.digest) == info


def test_put_stream_same_content_is_stored_once(store: BlobStore) -> None:
    first = store.put_stream(io.BytesIO(b"same"))
    second = store.put_stream(io.BytesIO(b"same"))

    assert first == second
    assert list(store.digests()) == [first.digest]
    assert not any((store.root / "tmp").iterdir())


def test_put_path_streams_without_holding_the_file(store: BlobStore, tmp_path: Path) -> None:
    source = tmp_path / "big"
    with open(source, "wb") as file:
        for _ in range(32):
            file.write(os.urandom(1024 * 1024))

    tracemalloc.start()
    try:
        store.put_path(source)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert peak < 4 * 1024 * 1024


def test_put_path_link_shares_the_inode(store: BlobStore, tmp_path: Path) -> None:
    source = _file(tmp_path / "f", b"linked content")
    info = store.put_path(source, link=True)

    assert store.link_count(info.digest) == 2
    assert store.path_of(info.digest).stat().st_ino == source.stat().st_ino
    source.unlink()
    assert store.link_count(info.digest) == 1
    assert store.verify(info.digest) == info


def test_put_path_link_across_filesystems_copies(store: BlobStore) -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == store.root.parent.stat().st_dev:
        pytest.skip("needs /dev/shm on another filesystem than the store")
    source = shm / f"updock-test-{os.getpid()}"
    source.write_bytes(b"other filesystem")
    try:
        info = store.put_path(source, link=True)
    finally:
        source.unlink()

    assert store.link_count(info.digest) == 1
    assert store.path_of(info.digest).read_bytes() == b"other filesystem"


def test_verify_detects_missing_and_corrupt(store: BlobStore, tmp_path: Path) -> None:
    info = store.put_path(_file(tmp_path / "f", b"original"))
    path = store.path_of(info.digest)
    path.chmod(0o644)
    path.write_bytes(b"0riginal")

    with pytest.raises(BlobCorruptError) as caught:
        store.verify(info.digest)
    assert caught.value.actual == hashlib.sha256(b"0riginal").hexdigest()
    store.remove(info.digest)
    with pytest.raises(BlobMissingError):
        store.verify(info.digest)
    with pytest.raises(BlobMissingError):
        store.read_bytes(info.digest)


def test_copy_to_verifies_on_the_way(store: BlobStore, tmp_path: Path) -> None:
    info = store.put_stream(io.BytesIO(b"payload"))
    store.copy_to(info.digest, tmp_path / "out", sync=True)
    assert (tmp_path / "out").read_bytes() == b"payload"

    path = store.path_of(info.digest)
    path.chmod(0o644)
    path.write_bytes(b"tampered")
    with pytest.raises(BlobCorruptError):
        store.copy_to(info.digest, tmp_path / "out2")
    assert not (tmp_path / "out2").exists()
    with pytest.raises(BlobMissingError):
        store.copy_to("f" * 64, tmp_path / "out3")


def test_put_after_lost_unsynced_blob_replaces_it(store: BlobStore) -> None:
    """A blob put with sync=False whose data a crash lost (an empty file under
    its name) is replaced by the next put of the same content."""
    info = store.put_stream(io.BytesIO(b"content"), sync=False)
    path = store.path_of(info.digest)
    path.chmod(0o644)
    path.write_bytes(b"")

    store.put_stream(io.BytesIO(b"content"))

    assert store.verify(info.digest) == info


class SyncLog:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Path]] = []

    def on_write(self, path: Path) -> None:
        self.calls.append(("write", path))

    def on_fsync(self, path: Path) -> None:
        self.calls.append(("fsync", path))

    def on_fsync_dir(self, path: Path) -> None:
        self.calls.append(("fsync_dir", path))

    def on_syncfs(self, path: Path) -> None:
        self.calls.append(("syncfs", path))


def test_put_sync_choice_decides_the_fsyncs(store: BlobStore) -> None:
    log = SyncLog()
    fsio.set_observer(log)
    try:
        synced = store.put_stream(io.BytesIO(b"synced"))
        synced_calls, log.calls = log.calls, []
        batched = store.put_stream(io.BytesIO(b"batched"), sync=False)
        batched_calls, log.calls = log.calls, []
        store.sync()
        later = log.calls
    finally:
        fsio.set_observer(None)

    synced_dir = store.path_of(synced.digest).parent
    assert [kind for kind, _ in synced_calls].count("fsync") == 1
    assert ("fsync_dir", synced_dir) in synced_calls
    assert {kind for kind, _ in batched_calls} == {"write"}
    assert ("fsync_dir", store.path_of(batched.digest).parent) in later


def test_tree_listing_round_trips_sorted(store: BlobStore) -> None:
    entries = [
        TreeEntry("b/file", "file", 0o644, blob="1" * 64),
        TreeEntry("a", "dir", 0o755),
        TreeEntry("c", "symlink", 0o777, target="b/file"),
    ]
    info = store.put_tree_listing(entries)

    assert store.read_tree_listing(info.digest) == sorted(entries, key=lambda e: e.relpath)
    assert store.put_tree_listing(reversed(entries)) == info


def test_read_tree_listing_of_other_content_raises(store: BlobStore) -> None:
    info = store.put_bytes(b"not msgpack \xc1")

    with pytest.raises(NotATreeListingError):
        store.read_tree_listing(info.digest)


def test_path_of_rejects_a_non_digest(store: BlobStore) -> None:
    with pytest.raises(ValueError, match="not a sha256"):
        store.path_of("../../etc/passwd")
