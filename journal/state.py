"""The deployment's state, folded from journal events.

``fold(state, seq, event)`` is the whole meaning of the journal: the state
after a record is a function of the state before it and the record, and of
nothing else (no clock, no file system, no environment). Replaying the
records from the start, or from a checkpoint's snapshot, therefore gives the
same state.

``fold`` and ``replay`` are pure: they never modify the state they are
given. The journal itself keeps one private state and advances it in place
with ``advance`` (the same rules, without the copy), because copying a state
of thousands of transactions for each of a million records would make
replay quadratic.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import msgspec

from journal import records as r

OPEN = "open"
DECIDED = "decided"
COMMITTED = "committed"
ROLLED_BACK = "rolled_back"
ABORTED = "aborted"
UNFINISHED = (OPEN, DECIDED)


class TxState(msgspec.Struct, kw_only=True):
    """What the journal says about one transaction.

    ``ops`` is the number of operations intended (highest op index + 1) and
    ``applied`` the number applied, in op order (highest applied index + 1).
    ``services_stopped`` is true from a ``ServicesStopping`` (services may be
    going down) or ``ServicesStopped`` to the next ``ServicesStarted`` of the
    transaction.
    """

    tx: str
    kind: str
    from_version: str | None = None
    to_version: str | None = None
    strategy: str | None = None
    status: str = OPEN
    began_at: float = 0.0
    ended_at: float | None = None
    first_seq: int = 0
    last_seq: int = 0
    ops: int = 0
    applied: int = 0
    services_stopped: bool = False
    version: str | None = None
    reason: str = ""


class BackupInfo(msgspec.Struct, kw_only=True):
    """A usable backup archive, as journaled by ``BackupCreated``."""

    backup_id: str
    path: str
    kind: str
    version: str
    sha256: str
    size: int
    files: int
    created_at: float = 0.0
    tx: str | None = None


class RecoveryInfo(msgspec.Struct, kw_only=True):
    """The last recovery run: which transaction, which way, how it ended."""

    tx: str
    direction: str
    started_at: float = 0.0
    finished_at: float | None = None
    outcome: str | None = None
    pid: int = 0


class State(msgspec.Struct, kw_only=True):
    """The folded state of a deployment's journal as of record ``seq``.

    ``deployed_version`` is the version of the last ``Committed`` event that
    carries one (a rollback transaction commits the version it restored,
    None when that version was unknown).
    ``unknown_records`` counts records of kinds this version does not know.
    New fields must have defaults: snapshots written by an older updock are
    decoded into this class.
    """

    seq: int = 0
    deployed_version: str | None = None
    last_committed_tx: str | None = None
    txs: dict[str, TxState] = {}
    backups: dict[str, BackupInfo] = {}
    last_recovery: RecoveryInfo | None = None
    manifest_high_water: str | None = None
    unknown_records: int = 0

    def unfinished(self) -> list[TxState]:
        """Transactions still open or decided, oldest first."""
        found = [tx for tx in self.txs.values() if tx.status in UNFINISHED]
        return sorted(found, key=lambda tx: tx.first_seq)

    def copy(self) -> State:
        """A deep copy, sharing nothing with this state."""
        return decode_snapshot(encode_snapshot(self))

    def advance(self, seq: int, event: Any) -> None:
        """Fold one record into this state, in place (see the module doc)."""
        _HANDLERS.get(type(event), _touch)(self, seq, event)
        self.seq = seq

    def advance_many(self, first_seq: int, events: Iterable[Any]) -> None:
        """Fold consecutive records (``first_seq`` and on), in place."""
        handler_of, seq = _HANDLERS.get, first_seq - 1
        for seq, event in enumerate(events, first_seq):
            handler_of(type(event), _touch)(self, seq, event)
        if seq >= first_seq:
            self.seq = seq


def fold(state: State, seq: int, event: Any) -> State:
    """The state after record ``seq`` holding ``event``.

    Args:
        state: The state before the record; it is not modified.
        seq: The record's sequence number.
        event: The decoded event (``UnknownEvent`` is counted, not applied).

    Returns:
        A new state.
    """
    after = state.copy()
    after.advance(seq, event)
    return after


def replay(items: Iterable[tuple[int, Any]], start: State | None = None) -> State:
    """Fold many records, in order, starting from ``start`` (left unchanged).

    Args:
        items: ``(seq, event)`` pairs in journal order.
        start: The state before the first record; empty when None.

    Returns:
        The state after the last record.
    """
    state = start.copy() if start is not None else State()
    advance = state.advance
    for seq, event in items:
        advance(seq, event)
    return state


_snapshot_encoder = msgspec.msgpack.Encoder()
_snapshot_decoder = msgspec.msgpack.Decoder(State)


def encode_snapshot(state: State) -> bytes:
    """The snapshot bytes a ``Checkpoint`` record carries."""
    return _snapshot_encoder.encode(state)


def decode_snapshot(data: bytes) -> State:
    """The state a ``Checkpoint`` snapshot holds.

    Raises:
        msgspec.DecodeError: the snapshot is not a state.
    """
    return _snapshot_decoder.decode(data)


class _TxField(msgspec.Struct):
    tx: str | None = None


_tx_field_decoder = msgspec.msgpack.Decoder(_TxField)


def event_tx(event: Any) -> str | None:
    """The transaction an event belongs to, also for events of unknown kinds
    (whose ``tx`` field is read from the raw payload when it has one)."""
    if type(event) is r.UnknownEvent:
        try:
            return _tx_field_decoder.decode(event.raw).tx
        except msgspec.DecodeError:
            return None
    return getattr(event, "tx", None)


def _tx_begun(state: State, seq: int, e: r.TxBegun) -> None:
    state.txs[e.tx] = TxState(
        tx=e.tx,
        kind=e.kind,
        from_version=e.from_version,
        to_version=e.to_version,
        strategy=e.strategy,
        began_at=e.at,
        first_seq=seq,
        last_seq=seq,
    )


def _touch(state: State, seq: int, e: Any) -> TxState | None:
    """Note a record of the event's transaction (if it names a known one)."""
    tx = state.txs.get(getattr(e, "tx", None) or "")
    if tx is not None:
        tx.last_seq = seq
    return tx


# The two kinds most records are: written out without _touch, for replay speed.
def _op_intended(state: State, seq: int, e: r.OpIntended) -> None:
    tx = state.txs.get(e.tx)
    if tx is not None:
        tx.last_seq = seq
        if e.op >= tx.ops:
            tx.ops = e.op + 1


def _op_applied(state: State, seq: int, e: r.OpApplied) -> None:
    tx = state.txs.get(e.tx)
    if tx is not None:
        tx.last_seq = seq
        if e.op >= tx.applied:
            tx.applied = e.op + 1


def _services_stopped(state: State, seq: int, e: Any) -> None:
    tx = _touch(state, seq, e)
    if tx is not None:
        tx.services_stopped = True


def _services_started(state: State, seq: int, e: r.ServicesStarted) -> None:
    tx = _touch(state, seq, e)
    if tx is not None:
        tx.services_stopped = False


def _end(state: State, seq: int, e: Any, status: str) -> TxState | None:
    tx = _touch(state, seq, e)
    if tx is not None:
        tx.status = status
        tx.ended_at = e.at
    return tx


def _commit_decided(state: State, seq: int, e: r.CommitDecided) -> None:
    tx = _touch(state, seq, e)
    if tx is not None and tx.status == OPEN:
        tx.status = DECIDED


def _committed(state: State, seq: int, e: r.Committed) -> None:
    tx = _end(state, seq, e, COMMITTED)
    if tx is not None:
        tx.version = e.version
    state.last_committed_tx = e.tx
    # A rollback to a release of unknown version makes the version unknown.
    if e.version is not None or (tx is not None and tx.kind == "rollback"):
        state.deployed_version = e.version


def _rolled_back(state: State, seq: int, e: r.RolledBack) -> None:
    tx = _end(state, seq, e, ROLLED_BACK)
    if tx is not None:
        tx.reason = e.reason


def _aborted(state: State, seq: int, e: r.Aborted) -> None:
    tx = _end(state, seq, e, ABORTED)
    if tx is not None:
        tx.reason = e.reason


def _backup_created(state: State, seq: int, e: r.BackupCreated) -> None:
    _touch(state, seq, e)
    state.backups[e.backup_id] = BackupInfo(
        backup_id=e.backup_id,
        path=e.path,
        kind=e.kind,
        version=e.version,
        sha256=e.sha256,
        size=e.size,
        files=e.files,
        created_at=e.at,
        tx=e.tx,
    )


def _backup_removed(state: State, seq: int, e: r.BackupRemoved) -> None:
    state.backups.pop(e.backup_id, None)


def _manifest_accepted(state: State, seq: int, e: r.ManifestAccepted) -> None:
    _touch(state, seq, e)
    state.manifest_high_water = e.version


def _recovery_started(state: State, seq: int, e: r.RecoveryStarted) -> None:
    _touch(state, seq, e)
    state.last_recovery = RecoveryInfo(
        tx=e.tx, direction=e.direction, started_at=e.at, pid=e.pid
    )


def _recovery_finished(state: State, seq: int, e: r.RecoveryFinished) -> None:
    _touch(state, seq, e)
    last = state.last_recovery
    if last is None or last.tx != e.tx:
        last = state.last_recovery = RecoveryInfo(tx=e.tx, direction=e.direction)
    last.finished_at = e.at
    last.outcome = e.outcome


def _checkpoint(state: State, seq: int, e: r.Checkpoint) -> None:
    """A snapshot changes nothing: it only restates what came before it."""


def _unknown(state: State, seq: int, e: r.UnknownEvent) -> None:
    state.unknown_records += 1
    tx = state.txs.get(event_tx(e) or "")
    if tx is not None:
        tx.last_seq = seq


_HANDLERS: dict[type, Callable[[State, int, Any], None]] = {
    r.TxBegun: _tx_begun,
    r.OpIntended: _op_intended,
    r.OpApplied: _op_applied,
    r.ServicesStopping: _services_stopped,
    r.ServicesStopped: _services_stopped,
    r.ServicesStarted: _services_started,
    r.CommitDecided: _commit_decided,
    r.Committed: _committed,
    r.RolledBack: _rolled_back,
    r.Aborted: _aborted,
    r.BackupCreated: _backup_created,
    r.BackupRemoved: _backup_removed,
    r.ManifestAccepted: _manifest_accepted,
    r.RecoveryStarted: _recovery_started,
    r.RecoveryFinished: _recovery_finished,
    r.Checkpoint: _checkpoint,
    r.UnknownEvent: _unknown,
}
