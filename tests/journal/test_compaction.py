"""Compaction drops old segments and blobs, never what is still needed."""

from __future__ import annotations

import hashlib
from pathlib import Path

import msgspec
from journal_samples import tx_events

from journal import records as r
from journal.blobs import BlobStore, TreeEntry
from journal.journal import Journal
from journal.verify import verify_journal


def _ops(journal: Journal, store: BlobStore, tx: str, contents: list[bytes], **kw):
    """Journal a transaction whose ops have pre-images with these contents."""
    journal.append(r.TxBegun(tx=tx, kind="upgrade", to_version=tx))
    for op, content in enumerate(contents):
        blob = store.put_bytes(content)
        pre = r.ImageRef(kind=r.FILE, blob=blob.digest, size=blob.size)
        journal.append(r.OpIntended(tx=tx, op=op, kind="put_file", path=f"f{op}",
                                    pre=pre, **kw))
        journal.append(r.OpApplied(tx=tx, op=op))


def _commit(journal: Journal, tx: str) -> None:
    journal.append_many([r.CommitDecided(tx=tx), r.Committed(tx=tx, version=tx)])


def _digest(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def _without_seq(state):
    return msgspec.structs.replace(state, seq=0)


def test_compact_keeps_unfinished_last_committed_and_backups(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    path = tmp_path / "journal"
    journal = Journal.open(path, segment_size=700, checkpoint_every=0)
    journal.append(r.BackupCreated(tx=None, backup_id="bk1", path="/b", kind="manual",
                                   version="0", sha256="0" * 64, size=1, files=1))
    _ops(journal, store, "old", [b"old-1", b"shared"])
    _commit(journal, "old")
    for n in range(6):
        _ops(journal, store, f"filler{n}", [f"filler-{n}".encode()])
        _commit(journal, f"filler{n}")
    store.put_bytes(b"never referenced")

    leaf = store.put_bytes(b"inside a tree")
    listing = store.put_tree_listing([TreeEntry("x", "file", 0o644, blob=leaf.digest)])
    tree = r.ImageRef(kind=r.TREE, blob=listing.digest)
    _ops(journal, store, "last", [b"last-1", b"shared"], post=tree)
    _commit(journal, "last")
    _ops(journal, store, "open", [b"open-1"])
    journal.append(r.TxBegun(tx="gave-up", kind="upgrade"))
    journal.append(r.Aborted(tx="gave-up", reason="test"))
    needed = {name: journal.tx_records(name) for name in ("last", "open", "gave-up")}
    before = _without_seq(journal.state.copy())
    segments_before = len(journal.segment_paths)

    result = journal.compact(store)

    assert result.segments_removed > 0
    assert len(journal.segment_paths) == segments_before - result.segments_removed
    for name, found in needed.items():
        assert journal.tx_records(name) == found
    for content in (b"last-1", b"shared", b"open-1", b"inside a tree"):
        assert store.verify(_digest(content))
    assert store.verify(listing.digest)
    for content in (b"old-1", b"filler-0", b"never referenced"):
        assert not store.has(_digest(content))
    assert result.blobs_removed >= 8
    assert _without_seq(journal.state) == before
    assert "bk1" in journal.state.backups
    journal.close()

    for use_checkpoint in (True, False):
        with Journal.open(path, writable=False, use_checkpoint=use_checkpoint) as again:
            assert _without_seq(again.state) == before
    verify_journal(path, store)


def test_compact_twice_removes_nothing_more(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    with Journal.open(tmp_path / "journal", segment_size=500) as journal:
        for n in range(5):
            _ops(journal, store, f"t{n}", [f"c{n}".encode()])
            _commit(journal, f"t{n}")
        journal.compact(store)
        again = journal.compact(store)

    assert again.segments_removed == 0
    assert again.blobs_removed == 0


def test_compact_with_nothing_needed_keeps_only_the_state(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    with Journal.open(path, segment_size=400) as journal:
        for n in range(4):
            journal.append_many(tx_events(f"t{n}", commit=False))
            journal.append(r.Aborted(tx=f"t{n}"))
        before = _without_seq(journal.state.copy())
        journal.compact()
        assert len(journal.segment_paths) == 1
        kept = journal.segment_paths
        assert journal.compact().segments_removed == 0
        assert journal.segment_paths == kept
        journal.append(r.OpApplied(tx="t3", op=9))

    with Journal.open(path, writable=False, use_checkpoint=False) as again:
        assert _without_seq(again.state).txs.keys() == before.txs.keys()
        assert again.state.deployed_version == before.deployed_version
