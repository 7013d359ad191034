"""Checkpoints: a snapshot plus the records after it equals a full replay."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from journal_samples import tx_events

from journal import records as r
from journal import segments
from journal.errors import CorruptRecordError
from journal.journal import POINTER_NAME, Journal
from journal.state import replay

TXS = st.sampled_from(["a", "b", "c", "d"])
VERSIONS = st.sampled_from(["1.0", "1.1", "2.0"])
TIMES = st.floats(min_value=0, max_value=1e6, allow_nan=False)
OPS = st.integers(min_value=0, max_value=5)

EVENTS = st.one_of(
    st.builds(r.TxBegun, at=TIMES, tx=TXS, kind=st.sampled_from(["upgrade", "rollback"]),
              from_version=VERSIONS, to_version=VERSIONS),
    st.builds(r.OpIntended, at=TIMES, tx=TXS, op=OPS, kind=st.just("put_file"),
              path=st.just("f")),
    st.builds(r.OpApplied, at=TIMES, tx=TXS, op=OPS),
    st.builds(r.ServicesStopping, tx=TXS, project=st.just("p")),
    st.builds(r.ServicesStopped, tx=TXS, project=st.just("p")),
    st.builds(r.ServicesStarted, tx=TXS, project=st.just("p")),
    st.builds(r.CommitDecided, at=TIMES, tx=TXS),
    st.builds(r.Committed, at=TIMES, tx=TXS, version=st.none() | VERSIONS),
    st.builds(r.RolledBack, at=TIMES, tx=TXS, reason=st.text(max_size=5)),
    st.builds(r.Aborted, at=TIMES, tx=TXS),
    st.builds(r.BackupCreated, at=TIMES, tx=TXS, backup_id=st.sampled_from("xyz"),
              path=st.just("/b"), kind=st.just("manual"), version=VERSIONS,
              sha256=st.just("0" * 64), size=st.just(1), files=st.just(1)),
    st.builds(r.BackupRemoved, backup_id=st.sampled_from("xyz")),
    st.builds(r.ManifestAccepted, tx=TXS, version=VERSIONS),
    st.builds(r.RecoveryStarted, at=TIMES, tx=TXS,
              direction=st.sampled_from(["forward", "back"])),
    st.builds(r.RecoveryFinished, at=TIMES, tx=TXS,
              direction=st.sampled_from(["forward", "back"])),
    st.builds(r.HealthVerdict, tx=TXS, passed=st.booleans()),
)
STEPS = st.lists(
    st.one_of(
        EVENTS.map(lambda event: ("append", event)),
        st.lists(EVENTS, min_size=1, max_size=4).map(lambda es: ("append_many", es)),
        st.just(("checkpoint", None)),
        st.just(("reopen", None)),
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(steps=STEPS, segment_size=st.sampled_from([200, 2000, 1 << 20]),
       every=st.sampled_from([0, 3, 10]))
def test_open_checkpoint_plus_replay_equals_full_replay(
    steps: list, segment_size: int, every: int
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "journal"
        journal = Journal.open(path, segment_size=segment_size, checkpoint_every=every)
        for action, payload in steps:
            if action == "append":
                journal.append(payload)
            elif action == "append_many":
                journal.append_many(payload)
            elif action == "checkpoint":
                journal.checkpoint()
            else:
                journal.close()
                journal = Journal.open(path, segment_size=segment_size,
                                       checkpoint_every=every)
        live = journal.state.copy()
        journal.close()

        from_checkpoint = Journal.open(path, writable=False).state
        full = Journal.open(path, writable=False, use_checkpoint=False)
        folded = replay(full.records())

    assert from_checkpoint == full.state == folded == live


def test_open_with_checkpoint_reads_only_records_after_it(journal_dir: Path) -> None:
    """Damage a record before the checkpoint: an open that starts from the
    checkpoint never reads it; a full replay does, and fails."""
    with Journal.open(journal_dir, segment_size=400) as journal:
        for n in range(8):
            journal.append_many(tx_events(f"t{n}", 2))
        journal.checkpoint()
        journal.append_many(tx_events("last", 1))
        state = journal.state.copy()
        paths = journal.segment_paths
    first = paths[0]
    damaged = bytearray(first.read_bytes())
    damaged[segments.HEADER_SIZE + segments.FRAME_SIZE + 2] ^= 0xFF
    first.write_bytes(bytes(damaged))

    with Journal.open(journal_dir) as journal:
        assert journal.state == state
    with pytest.raises(CorruptRecordError):
        Journal.open(journal_dir, writable=False, use_checkpoint=False)


def test_open_damaged_pointer_falls_back_to_full_replay(
    journal_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with Journal.open(journal_dir) as journal:
        journal.append_many(tx_events("t1"))
        journal.checkpoint()
        journal.append_many(tx_events("t2"))
        state = journal.state.copy()
    pointer = journal_dir / POINTER_NAME
    pointer.write_bytes(pointer.read_bytes()[:-1] + b"\x00")

    with caplog.at_level(logging.WARNING), Journal.open(journal_dir) as journal:
        assert journal.state == state
    assert any("damaged checkpoint pointer" in m for m in caplog.messages)


def test_open_pointer_at_wrong_record_falls_back(
    journal_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with Journal.open(journal_dir) as journal:
        journal.append_many(tx_events("t1"))
        journal.checkpoint()
        state = journal.state.copy()
    with Journal.open(journal_dir) as journal:
        journal._write_pointer(1, segments.HEADER_SIZE, 1)  # names a TxBegun

    with caplog.at_level(logging.WARNING), Journal.open(journal_dir) as journal:
        assert journal.state == state
    assert any("does not name a checkpoint" in m for m in caplog.messages)


def test_append_writes_automatic_checkpoints(journal_dir: Path) -> None:
    with Journal.open(journal_dir, checkpoint_every=5) as journal:
        for n in range(6):
            journal.append_many(tx_events(f"t{n}", 1))
        state = journal.state.copy()

    with Journal.open(journal_dir, writable=False) as journal:
        kinds = [type(e) for _, e in journal.records()]
        assert journal.state == state
    assert kinds.count(r.Checkpoint) >= 3
