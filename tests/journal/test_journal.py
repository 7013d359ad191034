"""The journal on real files: round trips, torn tails, corruption, rotation."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
from journal_samples import every_event, tx_events

from journal import records as r
from journal import segments
from journal.errors import CorruptRecordError, SegmentHeaderError
from journal.journal import Journal, JournalNotFoundError, JournalUnwritableError


def _record_span(journal_dir: Path, seq: int) -> tuple[Path, int, int]:
    """(segment, start, end) of record ``seq``: where its bytes lie."""
    with Journal.open(journal_dir, writable=False) as journal:
        located = [loc for loc in journal.scan() if loc.seq in (seq, seq + 1)]
    path, start = located[0].path, located[0].offset
    payload = r.encode(located[0].event)
    return path, start, start + segments.FRAME_SIZE + len(payload)


def _fill(journal_dir: Path, count: int) -> list[r.Event]:
    events = [r.OpApplied(at=float(n), tx="t", op=n) for n in range(count)]
    with Journal.open(journal_dir) as journal:
        for event in events:
            journal.append(event)
    return events


def test_append_every_event_kind_round_trips(journal_dir: Path) -> None:
    events = every_event()
    assert {type(e) for e in events} == set(r.EVENT_TYPES.values())

    with Journal.open(journal_dir) as journal:
        seqs = [journal.append(event) for event in events[:5]]
        seqs += journal.append_many(events[5:])
    with Journal.open(journal_dir, writable=False) as journal:
        read = list(journal.records())

    assert seqs == list(range(1, len(events) + 1))
    assert read == list(zip(seqs, events))


def test_records_since_starts_at_that_seq(journal_dir: Path) -> None:
    events = _fill(journal_dir, 10)

    with Journal.open(journal_dir, writable=False) as journal:
        assert list(journal.records(since=7)) == [(7, events[6]), (8, events[7]),
                                                  (9, events[8]), (10, events[9])]
        assert journal.last_seq == 10


def test_reopen_continues_the_sequence(journal_dir: Path) -> None:
    _fill(journal_dir, 3)

    with Journal.open(journal_dir) as journal:
        seq = journal.append(r.OpApplied(tx="t", op=99))

    assert seq == 4


def test_open_read_only_missing_journal_raises(journal_dir: Path) -> None:
    with pytest.raises(JournalNotFoundError):
        Journal.open(journal_dir, writable=False)
    assert not journal_dir.exists()


def test_append_read_only_or_closed_raises(journal_dir: Path) -> None:
    _fill(journal_dir, 1)
    reader = Journal.open(journal_dir, writable=False)
    writer = Journal.open(journal_dir)
    writer.close()

    with pytest.raises(JournalUnwritableError, match="read-only"):
        reader.append(r.OpApplied(tx="t", op=1))
    with pytest.raises(JournalUnwritableError, match="closed"):
        writer.append(r.OpApplied(tx="t", op=1))


@pytest.mark.parametrize("zeros_after", [False, True], ids=["cut", "zero-filled"])
def test_open_torn_last_record_drops_it_at_every_offset(
    journal_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture,
    zeros_after: bool,
) -> None:
    """Cut the last record at every byte: either the file ends there, or the
    rest of the record reads as zeros (the preallocated space)."""
    events = _fill(journal_dir, 5)
    segment, start, end = _record_span(journal_dir, 5)
    original = segment.read_bytes()

    for cut in range(start + 1, end):
        damaged = tmp_path / "damaged"
        shutil.rmtree(damaged, ignore_errors=True)
        shutil.copytree(journal_dir, damaged)
        data = original[:cut] + (bytes(len(original) - cut) if zeros_after else b"")
        (damaged / segment.name).write_bytes(data)
        caplog.clear()

        # Zero-filling the record's own trailing zeros leaves it whole.
        intact = zeros_after and not original[cut:end].strip(b"\0")
        kept = 5 if intact else 4
        with caplog.at_level(logging.WARNING), Journal.open(damaged) as journal:
            assert list(journal.records()) == list(enumerate(events[:kept], 1))
            assert journal.append(r.OpApplied(tx="t", op=7)) == kept + 1

        torn = b"" if intact else original[start:cut].rstrip(b"\0")
        warned = [m for m in caplog.messages if "torn tail" in m]
        assert len(warned) == (1 if torn else 0)
        if torn:
            assert f"{len(torn)} bytes at offset {start}" in warned[0]
        with Journal.open(damaged, writable=False) as journal:
            assert [seq for seq, _ in journal.records()] == list(range(1, kept + 2))


def test_open_torn_tail_read_only_leaves_file_alone(journal_dir: Path) -> None:
    _fill(journal_dir, 3)
    segment, start, end = _record_span(journal_dir, 3)
    data = segment.read_bytes()[: end - 2]
    segment.write_bytes(data)

    with Journal.open(journal_dir, writable=False) as journal:
        assert journal.last_seq == 2
        assert journal.torn_tail is not None
        assert journal.torn_tail.offset == start

    assert segment.read_bytes() == data


def test_open_flipped_byte_in_middle_record_raises_with_its_offset(
    journal_dir: Path,
) -> None:
    _fill(journal_dir, 5)
    segment, start, end = _record_span(journal_dir, 3)
    original = segment.read_bytes()

    for position in range(start, end):
        damaged = bytearray(original)
        damaged[position] ^= 0x40
        segment.write_bytes(bytes(damaged))

        for writable in (False, True):
            with pytest.raises(CorruptRecordError) as caught:
                Journal.open(journal_dir, writable=writable)
            assert caught.value.offset == start
            assert str(start) in str(caught.value)

    segment.write_bytes(original)


def test_records_flipped_byte_raises_while_iterating(journal_dir: Path) -> None:
    _fill(journal_dir, 5)
    with Journal.open(journal_dir) as journal:
        journal.checkpoint()
        segment, start, _ = _record_span(journal_dir, 2)
        damaged = bytearray(segment.read_bytes())
        damaged[start + segments.FRAME_SIZE] ^= 0xFF
        segment.write_bytes(bytes(damaged))

        with pytest.raises(CorruptRecordError) as caught:
            list(journal.records())

    assert caught.value.offset == start


@pytest.mark.parametrize("position", range(segments.HEADER_SIZE))
def test_open_damaged_header_fails_fast(journal_dir: Path, position: int) -> None:
    _fill(journal_dir, 2)
    segment = journal_dir / segments.segment_name(1)
    damaged = bytearray(segment.read_bytes())
    damaged[position] ^= 0x01
    segment.write_bytes(bytes(damaged))

    for writable in (False, True):
        with pytest.raises(SegmentHeaderError) as caught:
            Journal.open(journal_dir, writable=writable)
        assert caught.value.path == segment


def test_open_truncated_header_fails_fast(journal_dir: Path) -> None:
    _fill(journal_dir, 1)
    segment = journal_dir / segments.segment_name(1)
    segment.write_bytes(segment.read_bytes()[:10])

    with pytest.raises(SegmentHeaderError, match="only 10 of 32 bytes"):
        Journal.open(journal_dir)


def test_open_segment_of_another_journal_fails(journal_dir: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    for directory in (journal_dir, other):
        with Journal.open(directory, segment_size=300) as journal:
            for n in range(4):
                journal.append_many(tx_events(f"t{n}", 3))
    shutil.copy(other / segments.segment_name(2), journal_dir / segments.segment_name(2))

    with pytest.raises(SegmentHeaderError, match="another journal"):
        Journal.open(journal_dir, writable=False)


def test_open_missing_middle_segment_fails(journal_dir: Path) -> None:
    with Journal.open(journal_dir, segment_size=200) as journal:
        for n in range(6):
            journal.append_many(tx_events(f"t{n}", 3))
        assert len(journal.segment_paths) >= 3
    (journal_dir / segments.segment_name(2)).unlink()

    with pytest.raises(SegmentHeaderError, match="segment 2 is missing"):
        Journal.open(journal_dir, writable=False)


def test_append_rotates_segments_each_starting_with_a_checkpoint(
    journal_dir: Path,
) -> None:
    events = []
    with Journal.open(journal_dir, segment_size=500) as journal:
        for n in range(10):
            batch = tx_events(f"t{n}", 3)
            events += batch
            journal.append_many(batch)
        paths = journal.segment_paths
        state = journal.state.copy()

    assert len(paths) > 3
    with Journal.open(journal_dir, writable=False, use_checkpoint=False) as journal:
        found = list(journal.scan())
        assert journal.state == state
    starts = [loc for loc in found if loc.offset == segments.HEADER_SIZE]
    assert [loc.path for loc in starts] == paths
    assert all(type(loc.event) is r.Checkpoint for loc in starts[1:])
    plain = [loc.event for loc in found if type(loc.event) is not r.Checkpoint]
    assert plain == events
    assert [loc.seq for loc in found] == list(range(1, len(found) + 1))


def test_open_record_bigger_than_segment_size_stays_whole(journal_dir: Path) -> None:
    big = r.PackageStaged(tx="t", path="x" * 5000, files=1, size=1)

    with Journal.open(journal_dir, segment_size=1000) as journal:
        journal.append(r.OpApplied(tx="t", op=0))
        journal.append(big)
        journal.append(r.OpApplied(tx="t", op=1))
    with Journal.open(journal_dir) as journal:
        kept = [e for _, e in journal.records() if type(e) is not r.Checkpoint]

    assert kept == [r.OpApplied(tx="t", op=0), big, r.OpApplied(tx="t", op=1)]


def test_open_removes_leftover_temporary_segment(journal_dir: Path) -> None:
    _fill(journal_dir, 2)
    leftover = journal_dir / ".00000002.seg.tmp"
    leftover.write_bytes(b"half a segment")

    with Journal.open(journal_dir) as journal:
        assert journal.last_seq == 2

    assert not leftover.exists()


class FutureEvent(r.Event, tag="future_event"):
    """An event kind a newer updock might write."""

    tx: str
    detail: str = ""


def test_open_unknown_record_kind_is_reported_not_crashed_on(journal_dir: Path) -> None:
    with Journal.open(journal_dir) as journal:
        journal.append_many(tx_events("t1", 1, commit=False))
        journal.append(FutureEvent(tx="t1", detail="from the future"))
        journal.append(r.Committed(tx="t1", version="2"))

    with Journal.open(journal_dir) as journal:
        unknown = [e for _, e in journal.records() if type(e) is r.UnknownEvent]
        assert [e.type for e in unknown] == ["future_event"]
        assert journal.state.unknown_records == 1
        assert journal.state.deployed_version == "2"
        kinds = [type(e).__name__ for _, e in journal.tx_records("t1")]
        assert "UnknownEvent" in kinds


def _batch_spans(journal_dir: Path) -> list[tuple[int, int]]:
    """(start, end) of every record of the first segment, in order."""
    with Journal.open(journal_dir, writable=False) as journal:
        located = list(journal.scan())
    return [
        (loc.offset, loc.offset + segments.FRAME_SIZE + len(r.encode(loc.event)))
        for loc in located
    ]


def test_open_group_commit_with_a_lost_page_drops_the_whole_batch(
    journal_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Pages of one write reach the disk in any order: a zeroed first record
    with its batch-mates intact is a torn write, not corruption."""
    with Journal.open(journal_dir) as journal:
        for n in range(3):
            journal.append(r.OpApplied(tx="t", op=n))
        journal.append_many([r.OpApplied(tx="t", op=n) for n in range(10, 15)])
    spans = _batch_spans(journal_dir)
    segment = journal_dir / segments.segment_name(1)
    data = bytearray(segment.read_bytes())
    start, end = spans[3]
    data[start:end] = bytes(end - start)
    segment.write_bytes(bytes(data))

    with caplog.at_level(logging.WARNING), Journal.open(journal_dir) as journal:
        assert journal.last_seq == 3
    assert any(f"at offset {start}" in m for m in caplog.messages)


def test_open_group_commit_without_its_end_record_drops_it(journal_dir: Path) -> None:
    with Journal.open(journal_dir) as journal:
        journal.append(r.OpApplied(tx="t", op=0))
        journal.append_many([r.OpApplied(tx="t", op=n) for n in range(1, 6)])
    spans = _batch_spans(journal_dir)
    segment = journal_dir / segments.segment_name(1)
    segment.write_bytes(segment.read_bytes()[: spans[-1][0]])

    with Journal.open(journal_dir) as journal:
        assert [seq for seq, _ in journal.records()] == [1]


def test_open_bad_record_of_a_batch_followed_by_later_write_raises(
    journal_dir: Path,
) -> None:
    with Journal.open(journal_dir) as journal:
        journal.append_many([r.OpApplied(tx="t", op=n) for n in range(4)])
        journal.append(r.OpApplied(tx="t", op=9))
    spans = _batch_spans(journal_dir)
    segment = journal_dir / segments.segment_name(1)
    data = bytearray(segment.read_bytes())
    data[spans[1][0] + 7] ^= 0x10
    segment.write_bytes(bytes(data))

    with pytest.raises(CorruptRecordError) as caught:
        Journal.open(journal_dir)
    assert caught.value.offset == spans[1][0]
