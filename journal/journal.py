"""The journal: an append-only, fsync'd, checksummed log of events.

A journal is a directory of segment files (see ``journal.segments``) and a
checkpoint pointer. Records carry consecutive sequence numbers starting at 1.

Opening, in order:

1. every segment header is checked (a damaged one fails at once);
2. the pointer file names the newest checkpoint record (segment, offset,
   seq); its snapshot becomes the starting state. Without a usable pointer,
   replay starts at the first segment;
3. the records after the starting point are read, checked and folded. Only
   these are read: with a checkpoint in the last segment, a writable open
   scans part of that segment and nothing else;
4. a torn tail of the last segment is truncated (writable) with a WARNING.

Invariant: every segment but one that starts at seq 1 begins with a
``Checkpoint`` record. A new segment is written whole, header and checkpoint
together, under a temporary name and renamed into place. So whole segments
can be removed from the front of the journal (compaction) and a replay from
the first remaining segment still starts from a complete state.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import struct
import time
import zlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import msgspec

from journal import fsio, records, segments
from journal.blobs import BlobStore
from journal.crashpoints import crashpoint
from journal.errors import CorruptRecordError, JournalError, SegmentHeaderError
from journal.segments import FrameScanner, SegmentHeader
from journal.state import State, decode_snapshot, encode_snapshot, event_tx

logger = logging.getLogger(__name__)

DEFAULT_SEGMENT_SIZE = 16 * 1024 * 1024
DEFAULT_CHECKPOINT_EVERY = 10_000
POINTER_NAME = "checkpoint"
_CHUNK = 4096  # records decoded per call of the replay loop

_POINTER = struct.Struct("<8sIIQQI")
_POINTER_MAGIC = b"UPDKCKPT"


class JournalNotFoundError(JournalError, FileNotFoundError):
    """A journal opened read-only does not exist (yet)."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"no journal at {path}")
        self.path = path


class JournalUnwritableError(JournalError):
    """An append to a journal that is read-only, closed or failed."""

    def __init__(self, path: Path, why: str) -> None:
        super().__init__(f"journal {path} cannot be written: {why}")
        self.path = path
        self.why = why


class Located(NamedTuple):
    """A record with its place on disk."""

    seq: int
    path: Path
    offset: int
    event: Any


class TornTail(NamedTuple):
    """Bytes at the end of the last segment that hold no valid record."""

    path: Path
    offset: int
    size: int


class Compaction(NamedTuple):
    """What ``Journal.compact`` removed."""

    segments_removed: int
    blobs_removed: int
    bytes_freed: int


class _Pointer(NamedTuple):
    salt: int
    index: int
    offset: int
    seq: int


class _Segment(NamedTuple):
    index: int
    path: Path
    header: SegmentHeader


class Journal:
    """An open journal; use ``Journal.open``.

    Durability, when each call returns:

    - ``append``: the record is written and fsync'd; after a crash it is
      there, with every record before it.
    - ``append_many``: all records, written with one write and one fsync. A
      crash *before* it returns keeps the whole batch or none of it.
    - ``checkpoint``: the snapshot record is fsync'd and the pointer replaced
      atomically (fsync'd file, rename, fsync'd directory).
    - ``compact``: each segment removal is followed by a directory fsync,
      oldest segment first, so a crash leaves a contiguous journal.
    - A new segment (rotation) is fsync'd and its directory fsync'd before
      any record goes into it.

    ``state`` is the live folded state: it advances after each append. Do
    not modify it; take ``state.copy()`` for a snapshot.
    """

    def __init__(
        self,
        directory: Path,
        *,
        writable: bool,
        salt: int,
        segment_size: int,
        checkpoint_every: int,
    ) -> None:
        self.path = directory
        self.writable = writable
        self.salt = salt
        self.segment_size = segment_size
        self.checkpoint_every = checkpoint_every
        self.state = State()
        self.torn_tail: TornTail | None = None
        self._segments: list[_Segment] = []
        self._next_seq = 1
        self._fd: int | None = None
        self._end = 0
        self._allocated = 0
        self._failed: BaseException | None = None
        self._since_checkpoint = 0
        self._bytes_since_checkpoint = 0
        self._snapshot_size = 0

    # -- opening -----------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: Path | str,
        writable: bool = True,
        *,
        segment_size: int = DEFAULT_SEGMENT_SIZE,
        checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY,
        use_checkpoint: bool = True,
    ) -> Journal:
        """Open the journal in directory ``path``, creating it when writable.

        Args:
            path: The journal directory.
            writable: Open for appending (the caller holds the writer lock).
                A torn tail is truncated, with a WARNING.
            segment_size: Bytes after which appends go to a new segment.
            checkpoint_every: Records between automatic checkpoints (0: none
                but those at segment starts); see ``_maybe_checkpoint``.
            use_checkpoint: Start from the newest checkpoint (False: replay
                every record, as a benchmark or a check would).

        Returns:
            The open journal, its state current.

        Raises:
            JournalNotFoundError: read-only and there is no journal.
            SegmentHeaderError: a segment header is damaged.
            CorruptRecordError: a bad record is followed by valid ones, or a
                sequence number is missing.
        """
        directory = Path(path)
        if writable:
            _prepare_directory(directory)
        elif not directory.is_dir() or not segments.list_segments(directory):
            raise JournalNotFoundError(directory)

        found = _load_segments(directory)
        journal = cls(
            directory,
            writable=writable,
            salt=found[0].header.salt,
            segment_size=segment_size,
            checkpoint_every=checkpoint_every,
        )
        journal._segments = found
        journal._replay(use_checkpoint)
        if writable:
            journal._open_writer()
        return journal

    def _replay(self, use_checkpoint: bool) -> None:
        pointer = self._read_pointer() if use_checkpoint else None
        start = self._start_from_pointer(pointer) if pointer else None
        if start is None:
            first = self._segments[0]
            start = (0, segments.HEADER_SIZE, first.header.first_seq)

        position, offset, expected = start
        with _collector_paused():
            for number, segment in enumerate(self._segments[position:], position):
                last = number == len(self._segments) - 1
                if number != position:
                    offset = segments.HEADER_SIZE
                    self._check_continuity(segment, expected)
                expected = self._replay_segment(segment, offset, expected, last)
        self._next_seq = expected

    def _replay_segment(
        self, segment: _Segment, offset: int, expected: int, last: bool
    ) -> int:
        data = segments.read_segment(segment.path, offset)
        scanner = FrameScanner(segment.path, data, offset, self.salt, expected)
        payloads = scanner.scan().payloads
        skip = 0
        if self.state.seq == 0 and expected != 1 and payloads:
            self._start_compacted(segment.path, scanner)
            skip = 1

        # The hot path of every open: decode a chunk of payloads in one list
        # comprehension, fold it in one call. Records of unknown kinds fail
        # the typed decoder; the chunk is then decoded one by one, where
        # records.decode makes them UnknownEvent (or names a garbled one).
        decode, advance_many = _event_decoder.decode, self.state.advance_many
        for start in range(skip, len(payloads), _CHUNK):
            chunk = payloads[start : start + _CHUNK]
            try:
                events = [decode(payload) for payload in chunk]
            except msgspec.DecodeError:
                offsets = scanner.offsets[start : start + _CHUNK]
                events = [
                    _decode_at(segment.path, at, payload)
                    for at, payload in zip(offsets, chunk)
                ]
            advance_many(expected + start, events)

        self._since_checkpoint += len(payloads) - skip
        self._bytes_since_checkpoint += scanner.end - offset
        self._end = scanner.end
        if scanner.torn_at is not None:
            self._handle_torn(segment, scanner.torn_at, scanner.torn_size, last)
        return scanner.expected_seq

    def _start_compacted(self, path: Path, scanner: FrameScanner) -> None:
        """Load the snapshot that a journal whose first records were
        compacted away starts with (its first record)."""
        seq, offset = scanner.first_seq, scanner.offsets[0]
        event = _decode_at(path, offset, scanner.payloads[0])
        if type(event) is not records.Checkpoint:
            raise CorruptRecordError(
                path,
                offset,
                f"journal starts at sequence {seq} without a checkpoint "
                "(earlier records are missing)",
            )
        self._load_snapshot(path, offset, seq, event)

    def _load_snapshot(self, path: Path, offset: int, seq: int, cp: Any) -> None:
        """Start from a checkpoint's snapshot (a segment's first record)."""
        try:
            state = decode_snapshot(cp.state)
        except msgspec.DecodeError as exc:
            raise CorruptRecordError(
                path, offset, f"checkpoint snapshot does not decode: {exc}"
            ) from exc
        state.advance(seq, cp)
        self.state = state
        self._since_checkpoint = 0
        self._bytes_since_checkpoint = 0
        self._snapshot_size = len(cp.state)

    def _handle_torn(
        self, segment: _Segment, offset: int, size: int, last: bool
    ) -> None:
        if not last:
            raise CorruptRecordError(
                segment.path, offset, "bad record at the end of an older segment"
            )
        self.torn_tail = TornTail(segment.path, offset, size)
        if not self.writable:
            logger.debug("ignoring %d torn bytes at %s:%d", size, segment.path, offset)
            return
        logger.warning(
            "journal %s: dropped a torn tail of %d bytes at offset %d "
            "(a write cut short by a crash)",
            segment.path,
            size,
            offset,
        )
        os.truncate(segment.path, offset)
        fsio.fsync_path(segment.path)

    def _check_continuity(self, segment: _Segment, expected: int) -> None:
        if segment.header.first_seq != expected:
            raise CorruptRecordError(
                segment.path,
                segments.HEADER_SIZE,
                f"segment starts at sequence {segment.header.first_seq} where "
                f"{expected} was expected (records are missing)",
            )

    def _open_writer(self) -> None:
        segment = self._segments[-1]
        self._fd = os.open(segment.path, os.O_WRONLY | os.O_CLOEXEC)
        self._allocated = os.fstat(self._fd).st_size

    # -- the checkpoint pointer --------------------------------------------

    def _read_pointer(self) -> _Pointer | None:
        try:
            data = (self.path / POINTER_NAME).read_bytes()
        except FileNotFoundError:
            return None
        if len(data) != _POINTER.size:
            logger.warning(
                "journal %s: ignoring a damaged checkpoint pointer", self.path
            )
            return None
        magic, salt, index, offset, seq, crc = _POINTER.unpack(data)
        if magic != _POINTER_MAGIC or zlib.crc32(data[:-4]) != crc or salt != self.salt:
            logger.warning(
                "journal %s: ignoring a damaged checkpoint pointer", self.path
            )
            return None
        return _Pointer(salt, index, offset, seq)

    def _start_from_pointer(self, pointer: _Pointer) -> tuple[int, int, int] | None:
        """Load the snapshot the pointer names; where replay goes on from."""
        for position, segment in enumerate(self._segments):
            if segment.index == pointer.index:
                break
        else:
            logger.warning(
                "journal %s: checkpoint pointer names a missing segment; "
                "replaying from the first segment",
                self.path,
            )
            return None

        try:
            start = self._load_pointed(position, segment, pointer)
        except CorruptRecordError as exc:
            logger.warning("journal %s: checkpoint unusable (%s)", self.path, exc)
            start = None
        if start is None:
            logger.warning(
                "journal %s: checkpoint pointer does not name a checkpoint "
                "record; replaying from the first segment",
                self.path,
            )
            self.state = State()
        return start

    def _load_pointed(
        self, position: int, segment: _Segment, pointer: _Pointer
    ) -> tuple[int, int, int] | None:
        data = segments.read_segment(segment.path, pointer.offset)
        payload = segments.read_frame(data, self.salt, pointer.seq)
        if payload is None:
            return None
        event = _decode_at(segment.path, pointer.offset, payload)
        if type(event) is not records.Checkpoint:
            return None
        self._load_snapshot(segment.path, pointer.offset, pointer.seq, event)
        after = pointer.offset + segments.FRAME_SIZE + len(payload)
        return position, after, pointer.seq + 1

    def _write_pointer(self, index: int, offset: int, seq: int) -> None:
        body = _POINTER.pack(_POINTER_MAGIC, self.salt, index, offset, seq, 0)[:-4]
        data = body + struct.pack("<I", zlib.crc32(body))
        fsio.write_atomic(self.path / POINTER_NAME, data)
        crashpoint("journal.checkpoint.pointer_written")

    # -- reading -----------------------------------------------------------

    @property
    def last_seq(self) -> int:
        """The sequence number of the last record (0 when empty)."""
        return self._next_seq - 1

    def records(self, since: int = 0) -> Iterator[tuple[int, Any]]:
        """Yield ``(seq, event)`` for every record with seq >= ``since``.

        Events of kinds this version does not know come as ``UnknownEvent``.
        Records removed by compaction are not yielded.

        Raises:
            CorruptRecordError: a record fails its checks before the tail.
        """
        for located in self.scan(since):
            yield located.seq, located.event

    def scan(self, since: int = 0) -> Iterator[Located]:
        """Like ``records``, with each record's segment path and offset.

        A torn tail of the last segment ends the iteration and is left in
        ``torn_tail``.
        """
        found = _load_segments(self.path) if not self.writable else self._segments
        start = 0
        for position, segment in enumerate(found):
            if segment.header.first_seq <= since:
                start = position
        expected = found[start].header.first_seq
        for position, segment in enumerate(found[start:], start):
            if position != start:
                self._check_continuity(segment, expected)
            data = segments.read_segment(segment.path, segments.HEADER_SIZE)
            scanner = FrameScanner(
                segment.path, data, segments.HEADER_SIZE, self.salt, expected
            )
            for seq, offset, payload in scanner:
                if seq >= since:
                    event = _decode_at(segment.path, offset, payload)
                    yield Located(seq, segment.path, offset, event)
            expected = scanner.expected_seq
            if scanner.torn_at is not None:
                if position != len(found) - 1:
                    raise CorruptRecordError(
                        segment.path,
                        scanner.torn_at,
                        "bad record at the end of an older segment",
                    )
                self.torn_tail = TornTail(
                    segment.path, scanner.torn_at, scanner.torn_size
                )

    def tx_records(self, tx_id: str) -> list[tuple[int, Any]]:
        """Every record of transaction ``tx_id``, in order ([] if unknown)."""
        tx = self.state.txs.get(tx_id)
        if tx is None:
            return []
        found = []
        for seq, event in self.records(since=tx.first_seq):
            if seq > tx.last_seq:
                break
            if event_tx(event) == tx_id:
                found.append((seq, event))
        return found

    @property
    def segment_paths(self) -> list[Path]:
        """The segment files, oldest first."""
        return [segment.path for segment in self._segments]

    # -- writing -----------------------------------------------------------

    def append(self, event: records.Event) -> int:
        """Append one event; durable when this returns.

        Returns:
            The record's sequence number.

        Raises:
            JournalUnwritableError: read-only, closed, or an earlier write
                failed (reopen the journal to go on).
            OSError: the write or fsync failed; the journal refuses further
                appends.
        """
        self._check_writable()
        data = segments.frame(self._next_seq, records.encode(event), self.salt)
        if self._segment_full(len(data)):
            self._rotate()
            data = segments.frame(self._next_seq, records.encode(event), self.salt)
        self._write(data)
        return self._appended((event,), len(data))[0]

    def append_many(self, events: Sequence[records.Event]) -> list[int]:
        """Append events with one write and one fsync (group commit).

        Returns:
            Their sequence numbers, in order.
        """
        self._check_writable()
        if not events:
            return []
        payloads = [records.encode(event) for event in events]
        size = sum(len(p) for p in payloads) + segments.FRAME_SIZE * len(payloads)
        if self._segment_full(size):
            self._rotate()

        data = segments.frames(self._next_seq, payloads, self.salt)
        self._write(data)
        return self._appended(events, len(data))

    def _appended(self, events: Sequence[records.Event], size: int) -> list[int]:
        """Fold records that just became durable; maybe checkpoint."""
        first = self._next_seq
        self.state.advance_many(first, events)
        self._next_seq = first + len(events)
        self._since_checkpoint += len(events)
        self._bytes_since_checkpoint += size
        crashpoint("journal.append.after_fsync")
        self._maybe_checkpoint()
        return list(range(first, self._next_seq))

    def _write(self, data: bytes) -> None:
        """One write and one fsync at the end of the current segment (the
        write carries the next preallocated zeros when room runs out)."""
        path = self._segments[-1].path
        pad = segments.padding(self._end, len(data), self._allocated)
        crashpoint("journal.append.before_write")
        try:
            segments.write_all(self._fd, data + pad if pad else data, self._end, path)
            crashpoint("journal.append.after_write")
            fsio.fsync_fd(self._fd, path)
        except BaseException as exc:
            # After a failed write or fsync the file's content is unknown
            # (the kernel may drop dirty pages on fsync failure); appending
            # after it could hide a hole. Refuse until the journal is reopened,
            # which truncates whatever torn bytes remain.
            self._failed = exc
            raise
        self._end += len(data)
        self._allocated = max(self._allocated, self._end + len(pad))

    def _check_writable(self) -> None:
        if not self.writable:
            raise JournalUnwritableError(self.path, "opened read-only")
        if self._fd is None:
            raise JournalUnwritableError(self.path, "closed")
        if self._failed is not None:
            raise JournalUnwritableError(
                self.path, f"an earlier write failed ({self._failed}); reopen it"
            )

    def _segment_full(self, adding: int) -> bool:
        """Whether ``adding`` bytes overflow the segment. The leading snapshot
        is not counted (approximated by the newest snapshot's size), so that a
        state larger than ``segment_size`` does not rotate on every append."""
        used = self._end - segments.HEADER_SIZE - self._snapshot_size
        return used > 0 and used + adding > self.segment_size

    def _rotate(self) -> None:
        """Start a new segment whose first record is a checkpoint."""
        current = self._segments[-1]
        seq = self._next_seq
        cp = self._checkpoint_event()
        header = SegmentHeader(self.salt, current.index + 1, seq)
        record = segments.frame(seq, records.encode(cp), self.salt)
        path = segments.create_segment(self.path, header, record)
        crashpoint("journal.rotate.segment_created")

        os.close(self._fd)
        self._fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        self._segments.append(_Segment(header.index, path, header))
        self._end = segments.HEADER_SIZE + len(record)
        self._allocated = os.fstat(self._fd).st_size
        self._after_checkpoint(seq, cp)
        self._write_pointer(header.index, segments.HEADER_SIZE, seq)
        logger.debug("journal %s: started segment %s at seq %d", self.path, path, seq)

    def checkpoint(self) -> int:
        """Append a checkpoint record and point the pointer file at it.

        Returns:
            The checkpoint record's sequence number.
        """
        self._check_writable()
        seq, offset = self._next_seq, self._end
        cp = self._checkpoint_event()
        self._write(segments.frame(seq, records.encode(cp), self.salt))
        self._after_checkpoint(seq, cp)
        self._write_pointer(self._segments[-1].index, offset, seq)
        return seq

    def _checkpoint_event(self) -> records.Checkpoint:
        snapshot = encode_snapshot(self.state)
        return records.Checkpoint(at=time.time(), upto=self.last_seq, state=snapshot)

    def _after_checkpoint(self, seq: int, cp: records.Checkpoint) -> None:
        self.state.advance(seq, cp)
        self._next_seq = seq + 1
        self._since_checkpoint = 0
        self._bytes_since_checkpoint = 0
        self._snapshot_size = len(cp.state)

    def _maybe_checkpoint(self) -> None:
        """Checkpoint after ``checkpoint_every`` records and as many bytes as
        the last snapshot: snapshots then take at most half of the journal,
        and replaying the records after one costs about as much as decoding
        it, whatever the size of the state."""
        if not self.checkpoint_every or self._since_checkpoint < self.checkpoint_every:
            return
        if self._bytes_since_checkpoint < self._snapshot_size:
            return
        self.checkpoint()

    # -- compaction --------------------------------------------------------

    def compact(self, blobs: BlobStore | None = None) -> Compaction:
        """Remove the segments and blobs that nothing still needs.

        Kept: every record from the first one of the oldest unfinished
        transaction or of the last committed transaction (its pre-images are
        what a rollback restores), whichever is older; the state itself
        (backups included) lives on in checkpoint snapshots. Then every blob
        that a kept ``OpIntended`` record references (through tree listings
        too) or that is a listed backup's content is kept; all others are
        removed. Call it with no transaction being prepared: blobs staged for
        a transaction not yet journaled would look unreferenced.

        Returns:
            What was removed.
        """
        self._check_writable()
        keep_from = self._keep_from()
        holds_more_than_its_start = self._segments[-1].header.first_seq < self.last_seq
        if keep_from == self._next_seq and holds_more_than_its_start:
            self._rotate()
        doomed = self._droppable_segments(keep_from)
        if doomed and self._read_pointer_index() < self._segments[len(doomed)].index:
            self.checkpoint()

        freed = 0
        for segment in doomed:
            freed += segment.path.stat().st_size
            os.unlink(segment.path)
            fsio.fsync_dir(self.path)
            crashpoint("journal.compact.segment_removed")
            logger.info("journal %s: removed segment %s", self.path, segment.path.name)
        self._segments = self._segments[len(doomed) :]

        removed = 0
        if blobs is not None:
            removed, blob_bytes = self._drop_blobs(blobs)
            freed += blob_bytes
        return Compaction(len(doomed), removed, freed)

    def _keep_from(self) -> int:
        state = self.state
        needed = [tx.first_seq for tx in state.unfinished()]
        last = state.txs.get(state.last_committed_tx or "")
        if last is not None:
            needed.append(last.first_seq)
        return min(needed, default=self._next_seq)

    def _droppable_segments(self, keep_from: int) -> list[_Segment]:
        """The oldest segments whose records all come before ``keep_from``."""
        doomed = []
        for segment, following in zip(self._segments, self._segments[1:]):
            if following.header.first_seq > keep_from:
                break
            doomed.append(segment)
        return doomed

    def _read_pointer_index(self) -> int:
        pointer = self._read_pointer()
        return pointer.index if pointer is not None else 0

    def _drop_blobs(self, blobs: BlobStore) -> tuple[int, int]:
        keep = referenced_blobs(self.records(), blobs)
        keep.update(backup.sha256 for backup in self.state.backups.values())
        removed = freed = 0
        for digest in blobs.digests():
            if digest in keep:
                continue
            freed += blobs.size_of(digest)
            blobs.remove(digest, sync=False)
            removed += 1
            crashpoint("journal.compact.blob_removed")
        if removed:
            blobs.sync()
            logger.info(
                "blob store %s: removed %d unreferenced blobs", blobs.root, removed
            )
        return removed, freed

    # -- closing -----------------------------------------------------------

    def close(self) -> None:
        """Close the journal; appends after this raise."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def referenced_blobs(items: Iterable[tuple[int, Any]], blobs: BlobStore) -> set[str]:
    """Digests the ``OpIntended`` records among ``items`` reference.

    A tree image references its listing and every blob the listing names.

    Raises:
        BlobMissingError, BlobCorruptError: a tree listing is unreadable.
    """
    found: set[str] = set()
    for _seq, event in items:
        if type(event) is not records.OpIntended:
            continue
        for image in (event.pre, event.post):
            found.update(image_blobs(image, blobs))
    return found


def image_blobs(image: records.ImageRef, blobs: BlobStore) -> list[str]:
    """The digests one pre-image or post-image needs (listing included)."""
    if image.blob is None:
        return []
    if image.kind != records.TREE:
        return [image.blob]
    listing = blobs.read_tree_listing(image.blob)
    return [image.blob] + [entry.blob for entry in listing if entry.blob]


_event_decoder = msgspec.msgpack.Decoder(records.AnyEvent)


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector during a replay: it allocates a
    million short-lived events and no cycles, and each collection would
    also walk the growing state (about a tenth of replay time)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _decode_at(path: Path, offset: int, payload: memoryview) -> Any:
    try:
        return records.decode(payload)
    except msgspec.DecodeError as exc:
        raise _undecodable(path, offset, exc) from exc


def _undecodable(path: Path, offset: int, exc: Exception) -> CorruptRecordError:
    return CorruptRecordError(
        path, offset, f"payload passes its checksum but does not decode: {exc}"
    )


def _prepare_directory(directory: Path) -> None:
    """Create the journal directory and first segment when missing; remove
    temporary files an interrupted segment creation or pointer write left."""
    missing = [d for d in (directory, *directory.parents) if not d.exists()]
    for folder in reversed(missing):
        folder.mkdir()
        fsio.fsync_dir(folder.parent)
    leftovers = [
        entry.path
        for entry in os.scandir(directory)
        if entry.name.startswith(".") and ".tmp" in entry.name
    ]
    for leftover in leftovers:
        os.unlink(leftover)
    if leftovers:
        fsio.fsync_dir(directory)
    if not segments.list_segments(directory):
        header = SegmentHeader(segments.new_salt(), 1, 1)
        segments.create_segment(directory, header)
        logger.info("journal %s: created", directory)


def _load_segments(directory: Path) -> list[_Segment]:
    """Every segment with its checked header; all must share one salt.

    Raises:
        SegmentHeaderError: a header is damaged, or belongs elsewhere.
    """
    found = []
    for index, path in segments.list_segments(directory):
        header = segments.read_header(path)
        if header.index != index:
            raise SegmentHeaderError(path, f"header says segment {header.index}")
        if found and header.salt != found[0].header.salt:
            raise SegmentHeaderError(path, "salt differs: from another journal")
        if found and index != found[-1].index + 1:
            raise SegmentHeaderError(path, f"segment {found[-1].index + 1} is missing")
        found.append(_Segment(index, path, header))
    return found
