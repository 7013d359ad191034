"""Journal events: one tagged union of msgspec Structs.

Every record payload in a segment is one of the events below, encoded with
msgpack. The tag (field ``type``) names the event kind.

Schema evolution:

- A field added to an existing event must have a default, so that records
  written by an older updock still decode.
- A field is never removed or renamed, and its type never changes; a new field
  is added instead.
- An event kind is never reused for another meaning; a new kind gets a new tag.
- A record whose tag this version does not know (written by a newer updock)
  decodes to ``UnknownEvent``: it is reported by ``journal inspect`` and
  ``journal verify`` and skipped by replay, never crashed on.
"""

from __future__ import annotations

from typing import Literal

import msgspec

# Kinds of a pre-image or post-image reference.
ABSENT = "absent"
FILE = "file"
DIR = "dir"
SYMLINK = "symlink"
TREE = "tree"


class Event(
    msgspec.Struct, tag_field="type", kw_only=True, frozen=True, omit_defaults=True
):
    """Base of every journal event; ``at`` is the wall-clock time (epoch s)."""

    at: float = 0.0


class ImageRef(msgspec.Struct, frozen=True, omit_defaults=True):
    """What a path holds before (pre-image) or after (post-image) an operation.

    ``kind`` is one of ``absent``, ``file`` (``blob`` is the content's sha256),
    ``dir`` (an empty or kept directory; only ``mode`` matters), ``symlink``
    (``target`` is the link text) or ``tree`` (a whole subtree; ``blob`` names
    a tree listing stored in the blob store).
    """

    kind: str = ABSENT
    blob: str | None = None
    size: int = 0
    mode: int = 0
    target: str | None = None


class TxBegun(Event, tag="tx_begun"):
    tx: str
    kind: str
    from_version: str | None = None
    to_version: str | None = None
    host: str = ""
    pid: int = 0
    user: str = ""
    strategy: str | None = None


class OpIntended(Event, tag="op_intended"):
    """An operation about to run, with everything needed to redo or undo it.

    ``planned`` is how many operations the transaction has in all (0 when
    unknown): intents are journaled in batches, so a transaction stopped
    half-way may have journaled fewer.

    ``pre_owned``: the pre-image's blob is the captured file itself, hard
    linked into the store by this transaction (no earlier record names it).
    Rolling back may then move that blob back into the tree, by rename,
    instead of copying it; the blob leaves the store, and a verify of a
    rolled-back or aborted transaction does not look for it.

    ``post_owned``: the post-image's blob is the staged file itself, hard
    linked into the store by this transaction. The staged file moves into
    the tree; when the transaction ends, the store's name is removed (the
    tree holds the content), so a verify looks for such a blob only while
    the transaction is unfinished.
    """

    tx: str
    op: int
    kind: str
    path: str
    pre: ImageRef = ImageRef()
    post: ImageRef = ImageRef()
    planned: int = 0
    pre_owned: bool = False
    post_owned: bool = False


class OpApplied(Event, tag="op_applied"):
    tx: str
    op: int


class DownloadVerified(Event, tag="download_verified"):
    tx: str
    url: str
    sha256: str
    size: int
    seconds: float = 0.0
    resumed_from: int = 0


class PackageStaged(Event, tag="package_staged"):
    tx: str
    path: str
    files: int
    size: int
    seconds: float = 0.0


class BackupCreated(Event, tag="backup_created"):
    tx: str | None
    backup_id: str
    path: str
    kind: str
    version: str
    sha256: str
    size: int
    files: int
    seconds: float = 0.0


class BackupRemoved(Event, tag="backup_removed"):
    backup_id: str


class ServicesStopping(Event, tag="services_stopping"):
    """Intent, journaled before a stop: a crash during the stop still leaves
    a record that services may be down, so recovery brings them back up."""

    tx: str | None
    project: str
    services: list[str] = []


class ServicesStopped(Event, tag="services_stopped"):
    tx: str | None
    project: str
    services: list[str] = []
    seconds: float = 0.0


class ImagesLoaded(Event, tag="images_loaded"):
    """Images loaded from a package; ``previous`` maps each tag to the image id
    it named before, kept under ``kept_tags`` so a rollback can restore it."""

    tx: str
    images: list[str] = []
    previous: dict[str, str] = {}
    kept_tags: dict[str, str] = {}
    seconds: float = 0.0


class ServicesStarted(Event, tag="services_started"):
    tx: str | None
    project: str
    services: list[str] = []
    seconds: float = 0.0


class ServiceVerdict(msgspec.Struct, frozen=True):
    service: str
    passed: bool
    reason: str


class HealthVerdict(Event, tag="health_verdict"):
    tx: str
    passed: bool
    phase: Literal["upgrade", "rollback"] = "upgrade"
    services: list[ServiceVerdict] = []
    seconds: float = 0.0


class ManifestAccepted(Event, tag="manifest_accepted"):
    """The high-water mark against manifest rollback attacks."""

    tx: str | None
    version: str
    url: str = ""
    signed: bool = False


class CommitDecided(Event, tag="commit_decided"):
    """The point of no return: from here recovery rolls forward."""

    tx: str


class Committed(Event, tag="committed"):
    tx: str
    version: str | None = None


class RolledBack(Event, tag="rolled_back"):
    tx: str
    reason: str = ""


class Aborted(Event, tag="aborted"):
    """Ended before any deployed byte changed."""

    tx: str
    reason: str = ""


class RecoveryStarted(Event, tag="recovery_started"):
    tx: str
    direction: Literal["forward", "back"]
    pid: int = 0


class RecoveryFinished(Event, tag="recovery_finished"):
    tx: str
    direction: Literal["forward", "back"]
    outcome: str = "ok"


class Checkpoint(Event, tag="checkpoint"):
    """A snapshot of the folded state as of record ``upto`` (inclusive).

    ``state`` is the msgpack encoding of ``journal.state.State``.
    """

    upto: int
    state: bytes


class UnknownEvent(msgspec.Struct, frozen=True):
    """A record of a kind this version does not know (see schema evolution)."""

    type: str
    raw: bytes


AnyEvent = (
    TxBegun
    | OpIntended
    | OpApplied
    | DownloadVerified
    | PackageStaged
    | BackupCreated
    | BackupRemoved
    | ServicesStopping
    | ServicesStopped
    | ImagesLoaded
    | ServicesStarted
    | HealthVerdict
    | ManifestAccepted
    | CommitDecided
    | Committed
    | RolledBack
    | Aborted
    | RecoveryStarted
    | RecoveryFinished
    | Checkpoint
)

EVENT_TYPES: dict[str, type] = {
    cls.__struct_config__.tag: cls for cls in AnyEvent.__args__  # type: ignore[attr-defined]
}

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(AnyEvent)


class _TagOnly(msgspec.Struct):
    type: str = ""


_tag_decoder = msgspec.msgpack.Decoder(_TagOnly)


def encode(event: Event) -> bytes:
    """Encode an event as a record payload."""
    return _encoder.encode(event)


def decode(payload: bytes | memoryview) -> Event | UnknownEvent:
    """Decode a record payload.

    Raises:
        msgspec.DecodeError: the payload is not a valid event of a known kind
            and not a well-formed record of an unknown kind either.
    """
    try:
        return _decoder.decode(payload)
    except msgspec.ValidationError:
        tag = _tag_decoder.decode(payload).type
        if tag and tag not in EVENT_TYPES:
            return UnknownEvent(type=tag, raw=bytes(payload))
        raise


def to_builtins(event: Event | UnknownEvent) -> dict:
    """A JSON-ready dict of an event, with its tag under ``type``."""
    if isinstance(event, UnknownEvent):
        return {"type": event.type, "unknown": True, "size": len(event.raw)}
    data = msgspec.to_builtins(event)
    data["type"] = event.__struct_config__.tag
    return data
