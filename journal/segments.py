"""Segment files: the on-disk framing of journal records.

A segment is a header followed by records, back to back::

    header (32 bytes, little-endian)
        magic        8s   b"UPDKJRNL"
        version      u16  FORMAT_VERSION
        header size  u16  32
        salt         u32  random, the same in every segment of one journal
        index        u32  the segment's number, also in its file name
        first seq    u64  sequence number of the segment's first record
        checksum     u32  crc32 of the 28 bytes before it

    record (20-byte frame + payload)
        checksum     u32  crc32 of everything after it in the record
                          (length, seq, index, payload), seeded with the salt
        length       u32  payload bytes; the top bit (END) marks the last
                          record of one write
        seq          u64  sequence number, one more than the record before
        index        u32  position of the record in its write (0: first)
        payload           a msgpack-encoded event (journal.records)

One write (one ``append`` or one ``append_many``) is a run of records whose
last carries the END mark, like SQLite's WAL commit frame: a reader accepts
a write's records only once it has read its END record, so a group commit
cut short by a crash vanishes whole.

A bad record is a torn tail when it belongs to the last write of the last
segment: nothing valid follows it, or what follows belongs to the same write
(its index says the write began at or before the bad record) and no other
write comes after. Anything else (a valid record of a later write after the
bad one, or a bad record in an older segment) is corruption, and
``CorruptRecordError`` names its offset. To tell the two apart the reader
searches the bytes after a bad record for a valid frame; after a crash only
the last write can be damaged, so the search is short. A damaged record
inside the last write looks exactly like an interrupted write and is dropped
as one (with the WARNING): every earlier write is safe.

Segments are preallocated: the writer extends a segment by ``PREALLOCATE``
bytes of zeros at a time, in the same write as the record that needs them.
Most appends then overwrite bytes the file already has, so the fsync that
makes them durable does not also have to commit a new file size, which is
what makes appending cost about as much as SQLite's WAL (whose file is
reused in place). Zeros after the last record are the clean end of a
segment, not a torn tail; the salt is chosen so that a frame of zeros never
passes its checksum.

Seeding the checksum with the journal's salt (as SQLite's WAL does with its
salts) means a record copied from another journal, or left over from an
older one, never passes as valid here.

"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator
from itertools import count
from pathlib import Path
from typing import NamedTuple

from journal import fsio
from journal.errors import CorruptRecordError, SegmentHeaderError

MAGIC = b"UPDKJRNL"
FORMAT_VERSION = 1
SUFFIX = ".seg"

_HEADER = struct.Struct("<8sHHIIQI")
HEADER_SIZE = _HEADER.size
_FRAME = struct.Struct("<IIQI")
FRAME_SIZE = _FRAME.size
MAX_PAYLOAD = 64 * 1024 * 1024
END = 0x8000_0000
_LENGTH = END - 1
_ZEROS = bytes(64 * 1024)
PREALLOCATE = 1024 * 1024

_READ_CHUNK = 4 * 1024 * 1024


class SegmentHeader(NamedTuple):
    salt: int
    index: int
    first_seq: int


def new_salt() -> int:
    """A random salt under which a frame of zeros fails its checksum."""
    while True:
        salt = int.from_bytes(os.urandom(4), "little")
        if zlib.crc32(bytes(FRAME_SIZE - 4), salt) != 0:
            return salt


def padding(end: int, adding: int, allocated: int) -> bytes:
    """Zeros to write after ``adding`` bytes at ``end`` so the file keeps
    ``PREALLOCATE``-sized room ahead (empty when there is room already)."""
    stop = end + adding
    if stop <= allocated:
        return b""
    target = (stop // PREALLOCATE + 1) * PREALLOCATE
    return bytes(target - stop)


def segment_name(index: int) -> str:
    """The file name of segment number ``index``."""
    return f"{index:08d}{SUFFIX}"


def list_segments(directory: Path) -> list[tuple[int, Path]]:
    """The ``(index, path)`` of every segment file in ``directory``, in order."""
    found = []
    for entry in os.scandir(directory):
        stem, dot, ext = entry.name.partition(".")
        if dot and "." + ext == SUFFIX and stem.isdigit():
            found.append((int(stem), Path(entry.path)))
    found.sort()
    return found


def encode_header(header: SegmentHeader) -> bytes:
    """The 32 header bytes of a segment."""
    fields = (MAGIC, FORMAT_VERSION, HEADER_SIZE, *header)
    head = _HEADER.pack(*fields, 0)[:-4]
    return head + struct.pack("<I", zlib.crc32(head))


def decode_header(path: Path, data: bytes) -> SegmentHeader:
    """Check and decode the header bytes read from the segment at ``path``.

    Raises:
        SegmentHeaderError: short, foreign, of another version, or damaged.
    """
    if len(data) < HEADER_SIZE:
        raise SegmentHeaderError(path, f"only {len(data)} of {HEADER_SIZE} bytes")
    magic, version, size, salt, index, first_seq, crc = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise SegmentHeaderError(path, "not an updock journal segment (bad magic)")
    if zlib.crc32(data[: HEADER_SIZE - 4]) != crc:
        raise SegmentHeaderError(path, "header checksum mismatch")
    if version != FORMAT_VERSION or size != HEADER_SIZE:
        raise SegmentHeaderError(
            path, f"format version {version}, this updock reads {FORMAT_VERSION}"
        )
    return SegmentHeader(salt, index, first_seq)


def read_header(path: Path) -> SegmentHeader:
    """Read and check the header of the segment at ``path``."""
    with open(path, "rb") as file:
        return decode_header(path, file.read(HEADER_SIZE))


def frames(first_seq: int, payloads: list[bytes], salt: int) -> bytes:
    """The records of one write, ready to be written: the last carries END."""
    last = len(payloads) - 1
    parts = []
    for index, payload in enumerate(payloads):
        mark = END if index == last else 0
        body = _FRAME.pack(0, len(payload) | mark, first_seq + index, index)[4:]
        body += payload
        parts.append(struct.pack("<I", zlib.crc32(body, salt)) + body)
    return b"".join(parts)


def frame(seq: int, payload: bytes, salt: int) -> bytes:
    """One record that is a write of its own."""
    body = _FRAME.pack(0, len(payload) | END, seq, 0)[4:] + payload
    return struct.pack("<I", zlib.crc32(body, salt)) + body


def read_frame(data: bytes, salt: int, seq: int) -> memoryview | None:
    """The payload of the frame at the start of ``data`` if it is a valid,
    complete write of one record carrying ``seq``; None otherwise."""
    if len(data) < FRAME_SIZE:
        return None
    crc, word, found, _index = _FRAME.unpack_from(data)
    stop = FRAME_SIZE + (word & _LENGTH)
    view = memoryview(data)
    if stop > len(data) or zlib.crc32(view[4:stop], salt) != crc:
        return None
    if found != seq or not word & END:
        return None
    return view[FRAME_SIZE:stop]


def create_segment(
    directory: Path, header: SegmentHeader, records: bytes = b""
) -> Path:
    """Durably create a segment holding ``header`` and the framed ``records``.

    The file is written (with its preallocated zeros) and fsync'd under a
    temporary name and renamed into place, then the directory is fsync'd: a
    segment appears whole, with its first records, or not at all.

    Returns:
        The segment's path.
    """
    path = directory / segment_name(header.index)
    tmp = directory / f".{path.name}.tmp"
    data = encode_header(header) + records
    data += padding(0, len(data), 0)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        write_all(fd, data, 0, tmp)
        fsio.fsync_fd(fd, tmp)
    finally:
        os.close(fd)
    os.rename(tmp, path)
    fsio.fsync_dir(directory)
    return path


def write_all(fd: int, data: bytes, offset: int, path: Path) -> None:
    """Write all of ``data`` at ``offset``: one ``pwrite`` unless it falls short."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written
    fsio.note_write(path)


def read_segment(path: Path, start: int = 0) -> bytes:
    """The bytes of a segment file from offset ``start`` to its end."""
    with open(path, "rb", buffering=0) as file:
        file.seek(start)
        size = os.fstat(file.fileno()).st_size - start
        chunks = []
        while size > 0:
            chunk = file.read(min(size, _READ_CHUNK))
            if not chunk:
                break
            chunks.append(chunk)
            size -= len(chunk)
        return b"".join(chunks)


class FrameScanner:
    """Reads and checks the records of one segment's bytes.

    ``scan()`` walks the frames in one tight loop (replay speed rests on it)
    and keeps, for every record of a complete write, its file offset and
    its payload (a memoryview into the segment's bytes); the i-th record's
    seq is ``first_seq + i``. Afterwards ``end`` is the offset just past the
    last complete write and ``expected_seq`` the seq that would come next;
    ``torn_at`` is None or the offset where a torn tail begins, and
    ``torn_size`` how many bytes it holds before the preallocated zeros.

    Args:
        path: The segment's path, for error messages.
        data: The segment's bytes from offset ``base`` on.
        base: The file offset of ``data[0]``.
        salt: The journal's salt.
        expected_seq: The seq the first record must carry.
    """

    def __init__(
        self, path: Path, data: bytes, base: int, salt: int, expected_seq: int
    ) -> None:
        self.path = path
        self.data = data
        self.base = base
        self.salt = salt
        self.first_seq = expected_seq
        self.expected_seq = expected_seq
        self.offsets: list[int] = []
        self.payloads: list[memoryview] = []
        self.end = base
        self.torn_at: int | None = None
        self.torn_size = 0

    def scan(self) -> FrameScanner:
        """Check every frame; returns self.

        Raises:
            CorruptRecordError: a bad record followed by a valid record of a
                later write, or a valid record out of sequence.
        """
        data, salt, base = self.data, self.salt, self.base
        view = memoryview(data)
        size = len(data)
        unpack, crc32, head = _FRAME.unpack_from, zlib.crc32, FRAME_SIZE
        offsets, payloads = self.offsets, self.payloads
        add_offset, add_payload = offsets.append, payloads.append
        expected = self.first_seq
        pos = committed = complete = 0
        while size - pos >= head:
            crc, word, seq, _index = unpack(data, pos)
            stop = pos + head + (word & _LENGTH)
            if stop > size or crc32(view[pos + 4 : stop], salt) != crc:
                break
            if seq != expected:
                raise CorruptRecordError(
                    self.path,
                    base + pos,
                    f"record has sequence {seq} where {expected} was expected",
                )
            expected += 1
            add_offset(base + pos)
            add_payload(view[pos + head : stop])
            if word & END:
                committed, complete = stop, len(offsets)
            pos = stop

        # Records after the last END belong to an unfinished write: drop them.
        del offsets[complete:], payloads[complete:]
        self.end = base + committed
        self.expected_seq = self.first_seq + complete
        self._classify_tail(committed, pos, expected)
        return self

    def __iter__(self) -> Iterator[tuple[int, int, memoryview]]:
        """``(seq, offset, payload)`` of each record (scans first)."""
        self.scan()
        return zip(count(self.first_seq), self.offsets, self.payloads)

    def _classify_tail(self, committed: int, bad: int, bad_seq: int) -> None:
        """Decide what the bytes after the last complete write are: zeros (a
        clean end), a torn last write, or corruption (see the module doc)."""
        extent = _nonzero_end(self.data, committed)
        if extent == committed:
            return
        if bad < extent:
            self._check_nothing_later(bad, bad_seq, extent)
        self.torn_at = self.base + committed
        self.torn_size = extent - committed

    def _check_nothing_later(self, bad: int, bad_seq: int, extent: int) -> None:
        found = find_valid_frame(self.data, bad + 1, extent, self.salt, bad_seq + 1)
        if found is None:
            return
        _crc, _word, seq, index = _FRAME.unpack_from(self.data, found)
        if seq - index > bad_seq or _later_write_follows(self.data, found, self.salt):
            raise CorruptRecordError(
                self.path,
                self.base + bad,
                f"bad record (checksum or length) followed by a valid record "
                f"of a later write at offset {self.base + found}",
            )


def _later_write_follows(data: bytes, pos: int, salt: int) -> bool:
    """Whether, walking valid frames from ``pos``, a write ends and another
    valid frame comes after it."""
    view = memoryview(data)
    ended = False
    while len(data) - pos >= FRAME_SIZE:
        crc, word, _seq, _index = _FRAME.unpack_from(data, pos)
        stop = pos + FRAME_SIZE + (word & _LENGTH)
        if stop > len(data) or zlib.crc32(view[pos + 4 : stop], salt) != crc:
            return False
        if ended:
            return True
        ended = bool(word & END)
        pos = stop
    return False


def _nonzero_end(data: bytes, start: int) -> int:
    """The offset just past the last non-zero byte at or after ``start``
    (``start`` when there is none). Compares 64 KiB chunks with zeros from
    the end backwards: memcmp speed, where the preallocated tail lives."""
    stop = len(data)
    while stop > start:
        chunk_start = max(start, stop - len(_ZEROS))
        chunk = data[chunk_start:stop]
        if chunk != _ZEROS[: len(chunk)]:
            return chunk_start + len(chunk.rstrip(b"\0"))
        stop = chunk_start
    return start


def find_valid_frame(
    data: bytes, start: int, stop: int, salt: int, min_seq: int
) -> int | None:
    """The offset of the first valid frame starting in ``[start, stop)``.

    A valid frame fits in ``data``, passes its salted checksum and carries a
    sequence number of at least ``min_seq``.
    """
    view = memoryview(data)
    size = len(data)
    unpack, crc32 = _FRAME.unpack_from, zlib.crc32
    for pos in range(start, min(stop, size - FRAME_SIZE + 1)):
        crc, word, seq, _index = unpack(data, pos)
        end = pos + FRAME_SIZE + (word & _LENGTH)
        if end > size or seq < min_seq or word & _LENGTH > MAX_PAYLOAD:
            continue
        if crc32(view[pos + 4 : end], salt) == crc:
            return pos
    return None
