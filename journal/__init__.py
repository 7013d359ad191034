"""updock's journal: the durable, checksummed event log every change goes through.

Layout of ``<root>/.updock``::

    lock                 the writer lock (flock) and its holder's pid
    journal/00000001.seg segments of records, numbered from 1
    journal/checkpoint   pointer to the newest checkpoint record
    blobs/ab/cdef...     content-addressed pre-images and post-images

Record format
-------------
A segment starts with a 32-byte header: magic ``UPDKJRNL``, format version,
header size, the journal's random 32-bit salt (the same in all its
segments), the segment's index and the sequence number of its first record,
and a crc32 of those bytes. Records follow back to back, each a 20-byte
frame and a payload:

    crc32 (u32) | length (u32, top bit END) | seq (u64) | index (u32) | payload

The crc32 covers everything after it in the record and is seeded with the
salt, so a record of another journal never validates here. Sequence numbers
start at 1 and rise by one across segments. ``index`` is the record's
position within its write (one ``append`` or ``append_many``) and END marks
the write's last record: a reader accepts a write only once it has read its
END record. The payload is one event of ``journal.records`` encoded with
msgspec as msgpack, tagged by ``type``. Segments are preallocated with zeros
in 1 MiB steps; zeros after the last record are a clean end.

A bad record in the last write of the last segment (nothing valid after it,
or only records of that same write) is a torn tail: an interrupted write. A
writable open truncates it and logs a WARNING naming the offset and the
bytes dropped. A bad record followed by a valid record of a later write, a
missing sequence number, or a bad record in an older segment is corruption:
``CorruptRecordError`` with the segment and offset. A damaged header raises
``SegmentHeaderError`` before anything is read.

Every segment after the first begins with a ``Checkpoint`` record: a
snapshot of the folded ``State``. The ``checkpoint`` pointer file (magic,
salt, segment, offset, seq, crc32; replaced atomically) names the newest
checkpoint, so opening reads that snapshot and replays only the records
after it. Checkpoints are also written every ``checkpoint_every`` records
(once at least as many bytes as the last snapshot have followed it).

Durability: what is on stable storage when each call returns
------------------------------------------------------------
- ``Journal.append(event)``: the record, written with one ``pwrite`` and one
  ``fsync`` of the segment (fsync rather than fdatasync: the file grows, and
  its new size is metadata the record needs).
- ``Journal.append_many(events)``: all the records, with one write and one
  fsync. A crash before it returns keeps all of the batch or none of it.
- ``Journal.checkpoint()``: the checkpoint record (fsync'd) and the pointer
  (temporary file fsync'd, renamed, directory fsync'd).
- A new segment: written whole under a temporary name, fsync'd, renamed,
  and its directory fsync'd, before any append goes into it. Removals by
  ``compact`` are each followed by a directory fsync, oldest first.
- ``BlobStore.put_path`` / ``put_stream`` with ``sync=True``: the blob's
  content and its name (blob fsync'd, renamed, folder fsync'd). With
  ``sync=False``, nothing until the caller's ``fsio.syncfs``.
- ``WriterLock``: nothing on disk matters; the kernel holds the lock and
  drops it when the process dies.

Schema evolution
----------------
- A field added to an event or to ``State`` has a default, so records and
  snapshots written by an older updock still decode.
- Fields are never removed, renamed or retyped; an event kind's tag is
  never reused for another meaning.
- A record of a kind this version does not know (written by a newer updock)
  decodes to ``UnknownEvent``: replay counts it in ``State.unknown_records``
  and skips it; ``journal inspect`` and ``journal verify`` report it.
- A change of the framing or header bumps ``FORMAT_VERSION``; a segment of
  another version fails with ``SegmentHeaderError`` instead of being misread.
"""

from journal.blobs import BlobInfo, BlobStore, TreeEntry
from journal.errors import (
    BlobCorruptError,
    BlobError,
    BlobMissingError,
    CorruptRecordError,
    JournalError,
    LockedError,
    SegmentHeaderError,
)
from journal.journal import (
    Compaction,
    Journal,
    JournalNotFoundError,
    JournalUnwritableError,
)
from journal.lock import WriterLock
from journal.state import BackupInfo, RecoveryInfo, State, TxState, fold, replay

__all__ = [
    "BackupInfo",
    "BlobCorruptError",
    "BlobError",
    "BlobInfo",
    "BlobMissingError",
    "BlobStore",
    "Compaction",
    "CorruptRecordError",
    "Journal",
    "JournalError",
    "JournalNotFoundError",
    "JournalUnwritableError",
    "LockedError",
    "RecoveryInfo",
    "SegmentHeaderError",
    "State",
    "TreeEntry",
    "TxState",
    "WriterLock",
    "fold",
    "replay",
]
