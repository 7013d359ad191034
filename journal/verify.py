"""A full, read-only check of a journal and the blobs its records reference.

Checked, in record order, stopping at the first problem:

- every segment header (magic, version, salt, index, checksum);
- every record's checksum and the continuity of sequence numbers, within
  and across segments;
- every payload decodes (records of unknown kinds are counted, not errors);
- every blob an ``OpIntended`` pre-image or post-image references exists and
  hashes to its name; a tree image's listing and every blob it names too.
  Exceptions: a pre-image the transaction owned (``pre_owned``) is checked
  only when the transaction committed or decided to (a rollback moves such
  a blob back into the tree), and a post-image it owned (``post_owned``)
  only while it is unfinished (its end removes the blob: the tree holds
  the content);
- the state the newest checkpoint gives equals the state of replaying every
  record (a wrong snapshot would silently change what recovery does).

A torn tail is not an error: it is what a crash leaves and the next writing
command truncates. It is reported in the result.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import NamedTuple

from journal import records
from journal.blobs import BlobStore
from journal.errors import BlobError, CorruptRecordError
from journal.journal import Journal, Located, TornTail
from journal.state import COMMITTED, DECIDED, UNFINISHED

# Transactions whose owned pre-images must stay in the store: a committed
# one may still be undone as a whole (``updock upgrade rollback``).
_KEEPS_PRE = (COMMITTED, DECIDED)


class DanglingBlobError(BlobError):
    """A record references a blob that is missing or does not hash right."""

    def __init__(self, path: Path, offset: int, what: str, cause: BlobError) -> None:
        super().__init__(f"journal segment {path} at offset {offset}: {what}: {cause}")
        self.path = path
        self.offset = offset
        self.what = what
        self.cause = cause


class VerifyResult(NamedTuple):
    segments: int
    records: int
    first_seq: int
    last_seq: int
    blobs_checked: int
    unknown_kinds: dict[str, int]
    torn_tail: TornTail | None


def verify_journal(directory: Path, blobs: BlobStore | None) -> VerifyResult:
    """Check the journal in ``directory`` (and its blobs, when given).

    Returns:
        What was checked.

    Raises:
        JournalNotFoundError: there is no journal.
        SegmentHeaderError: a segment header is damaged.
        CorruptRecordError: a record is damaged, missing or undecodable, or
            the checkpoint disagrees with a full replay.
        DanglingBlobError: a referenced blob is missing or corrupt.
    """
    journal = Journal.open(directory, writable=False)
    keeps_pre = {
        tx for tx, state in journal.state.txs.items() if state.status in _KEEPS_PRE
    }
    keeps_post = {
        tx for tx, state in journal.state.txs.items() if state.status in UNFINISHED
    }
    checked: set[str] = set()
    unknown: Counter[str] = Counter()
    count, first = 0, None
    for located in journal.scan():
        count += 1
        first = located.seq if first is None else first
        event = located.event
        if isinstance(event, records.UnknownEvent):
            unknown[event.type] += 1
        elif type(event) is records.OpIntended and blobs is not None:
            with_pre = not event.pre_owned or event.tx in keeps_pre
            with_post = not event.post_owned or event.tx in keeps_post
            _check_images(located, event, blobs, checked, with_pre, with_post)

    _check_checkpoint(journal, directory)
    return VerifyResult(
        segments=len(journal.segment_paths),
        records=count,
        first_seq=first or 0,
        last_seq=journal.last_seq,
        blobs_checked=len(checked),
        unknown_kinds=dict(unknown),
        torn_tail=journal.torn_tail,
    )


def _check_images(
    located: Located,
    op: records.OpIntended,
    blobs: BlobStore,
    checked: set[str],
    with_pre: bool,
    with_post: bool,
) -> None:
    path, offset = located.path, located.offset
    sides = [("pre-image", op.pre)] if with_pre else []
    sides += [("post-image", op.post)] if with_post else []
    for side, image in sides:
        if image.blob is None:
            continue
        what = f"{side} of op {op.op} of {op.tx} ({op.path})"
        try:
            _check_blob(image.blob, blobs, checked)
            if image.kind == records.TREE:
                for entry in blobs.read_tree_listing(image.blob):
                    if entry.blob is not None:
                        _check_blob(entry.blob, blobs, checked)
        except BlobError as exc:
            raise DanglingBlobError(path, offset, what, exc) from exc


def _check_blob(digest: str, blobs: BlobStore, checked: set[str]) -> None:
    if digest not in checked:
        blobs.verify(digest)
        checked.add(digest)


def _check_checkpoint(journal: Journal, directory: Path) -> None:
    replayed = Journal.open(directory, writable=False, use_checkpoint=False)
    if replayed.last_seq != journal.last_seq:
        return  # a writer appended meanwhile; the two reads saw different tails
    if replayed.state != journal.state:
        raise CorruptRecordError(
            directory / "checkpoint",
            0,
            "the newest checkpoint's state differs from a replay of every record",
        )
