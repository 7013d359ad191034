"""Crash recovery: finish or undo every transaction a crash left open.

Rules:

- A transaction without ``CommitDecided`` is rolled back: every pre-image is
  put back, last operation first, whether or not the operation ever ran
  (``engine.placement`` asks the disk). What the transaction created goes;
  deleted or replaced folders come back whole, empty subfolders, modes and
  symlinks included.
- A transaction with ``CommitDecided`` is rolled forward: every operation's
  post-image is checked on disk and redone from the store where missing,
  then the replaced folders are removed.
- An operator may force a direction (``journal replay``); it is journaled in
  ``RecoveryStarted``, and a later recovery of the same transaction keeps
  the direction last started, so a crash during recovery followed by
  another recovery always ends the same way.

Recovery is journaled: ``RecoveryStarted``, then ``RolledBack`` or
``Committed``, then ``RecoveryFinished``. The services hook runs after the
files are consistent and before the transaction is ended, so a crash while
services come back up is retried by the next recovery.

Crash points: ``recovery.started``, ``recovery.decided`` (forced forward),
``recovery.undo.op`` / ``recovery.redo.op`` (after each operation),
``recovery.unshared``, ``recovery.synced``, ``recovery.services``,
``recovery.ended``, ``recovery.finished``.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from engine.errors import RollbackFailedError
from engine.placement import (
    Workspace,
    default_work_dir,
    discard_work_dir,
    redo_all,
    release_posts,
    remove_scratch,
    sync_filesystems,
    undo_all,
    unshare_captured,
    unshare_pre_images,
)
from engine.trees import remove_tree
from journal import BlobStore, Journal, TxState
from journal.crashpoints import crashpoint
from journal.records import (
    CommitDecided,
    Committed,
    OpIntended,
    RecoveryFinished,
    RecoveryStarted,
    RolledBack,
)
from journal.state import DECIDED, UNFINISHED

logger = logging.getLogger(__name__)

Direction = Literal["forward", "back"]


class ServicesHook(Protocol):
    """What the Docker layer offers recovery (``engine.services.Services``)."""

    def recover(self, tx_state: TxState, direction: str | None = None) -> Any: ...


class RecoveryFailedError(RollbackFailedError):
    """Recovery could not bring a transaction's files to either end."""

    hint = "fix the cause named above, then run 'updock recover' again"

    def __init__(self, tx: str, direction: str, exc: BaseException) -> None:
        way = "rolling forward" if direction == "forward" else "rolling back"
        super().__init__(f"recovery of transaction {tx} ({way}) failed", exc, exc)
        self.tx = tx
        self.direction = direction


@dataclass(frozen=True)
class RecoveryOutcome:
    """What recovery did to one transaction."""

    tx: str
    kind: str
    direction: Direction
    ops: int
    changed: int
    version: str | None = None
    services: Any = None

    def describe(self) -> str:
        """One line for the operator, naming the transaction and the result."""
        if self.direction == "back":
            done = f"rolled back ({self.changed} of {self.ops} operations undone)"
        else:
            done = f"rolled forward ({self.changed} of {self.ops} operations redone)"
        return f"transaction {self.tx} ({self.kind}) was interrupted; {done}"


def recover(
    journal: Journal,
    store: BlobStore,
    root: Path,
    services: ServicesHook | None = None,
    *,
    work_dir: Path | None = None,
) -> list[RecoveryOutcome]:
    """Recover every unfinished transaction, oldest first.

    Args:
        journal: The journal, open for writing (the caller holds the lock).
        store: The blob store.
        root: The tree the transactions change.
        services: Brings services back in line once files are consistent.
        work_dir: The transactions' work folder (default ``<store>/../txn``).

    Returns:
        One outcome per recovered transaction (empty when all were ended).

    Raises:
        RecoveryFailedError: a transaction could not be recovered; it stays
            unfinished for the next attempt.
    """
    outcomes = [
        recover_tx(journal, store, root, state.tx, services=services, work_dir=work_dir)
        for state in journal.state.unfinished()
    ]
    sweep_work_dirs(journal, store, _work_dir(store, work_dir))
    return outcomes


def recover_tx(
    journal: Journal,
    store: BlobStore,
    root: Path,
    tx: str,
    *,
    direction: Direction | None = None,
    services: ServicesHook | None = None,
    work_dir: Path | None = None,
) -> RecoveryOutcome:
    """Roll one unfinished transaction back or forward.

    Args:
        direction: Force a direction (manual replay); by default the one a
            previous recovery started, else forward when decided.

    Raises:
        RecoveryFailedError: the files could not be brought to either end.
    """
    state = journal.state.txs[tx]
    records = journal.tx_records(tx)
    intents = intents_of(records)
    way: Direction = direction or _direction(records, state)
    ws = Workspace(Path(root), store, tx, _work_dir(store, work_dir) / tx)
    journal.append(
        RecoveryStarted(tx=tx, direction=way, pid=os.getpid(), at=time.time())
    )
    crashpoint("recovery.started")
    if way == "forward" and state.status != DECIDED:
        journal.append(CommitDecided(tx=tx, at=time.time()))
        crashpoint("recovery.decided")

    changed = _restore_files(journal, ws, intents, way)
    result = None
    if services is not None:
        result = services.recover(journal.state.txs[tx], direction=way)
        crashpoint("recovery.services")
    discard_work_dir(ws)
    _end(journal, tx, way, state.to_version, len(intents), changed)
    outcome = RecoveryOutcome(
        tx,
        state.kind,
        way,
        len(intents),
        changed,
        state.to_version if way == "forward" else None,
        result,
    )
    logger.warning("%s", outcome.describe())
    return outcome


def _restore_files(
    journal: Journal, ws: Workspace, intents: list[OpIntended], way: Direction
) -> int:
    try:
        if way == "back":
            changed = undo_all(ws, intents, "recovery.undo.op")
            unshare_pre_images(ws, intents, "recovery.unshared")
            unshare_captured(ws, intents, "recovery.unshared")
            release_posts(ws, intents)
        else:
            changed = redo_all(ws, intents, "recovery.redo.op")
            release_posts(ws, intents)
        remove_scratch(ws, intents)
        sync_filesystems([ws.tree, ws.store.root, ws.work_dir.parent])
        crashpoint("recovery.synced")
    except Exception as exc:
        _note_failure(journal, ws.tx, way, exc)
        raise RecoveryFailedError(ws.tx, way, exc) from exc
    return changed


def _end(
    journal: Journal,
    tx: str,
    way: Direction,
    version: str | None,
    ops: int,
    changed: int,
) -> None:
    now = time.time()
    if way == "back":
        journal.append(
            RolledBack(tx=tx, reason="interrupted; rolled back by recovery", at=now)
        )
    else:
        journal.append(Committed(tx=tx, version=version, at=now))
    crashpoint("recovery.ended")
    outcome = f"ok: {changed} of {ops} operations changed"
    journal.append(
        RecoveryFinished(tx=tx, direction=way, outcome=outcome, at=time.time())
    )
    crashpoint("recovery.finished")


def _note_failure(
    journal: Journal, tx: str, way: Direction, exc: BaseException
) -> None:
    try:
        journal.append(
            RecoveryFinished(
                tx=tx, direction=way, outcome=f"failed: {exc}", at=time.time()
            )
        )
    except Exception as journal_exc:  # noqa: BLE001 - the recovery error wins
        logger.error(
            "transaction %s: could not journal the failed recovery: %s", tx, journal_exc
        )


def _direction(records: list[tuple[int, Any]], state: TxState) -> Direction:
    started = [e.direction for _, e in records if isinstance(e, RecoveryStarted)]
    if started:
        return started[-1]
    return "forward" if state.status == DECIDED else "back"


def intents_of(records: list[tuple[int, Any]]) -> list[OpIntended]:
    """The ``OpIntended`` records of a transaction, one per op, in op order."""
    by_op = {e.op: e for _, e in records if isinstance(e, OpIntended)}
    return [by_op[op] for op in sorted(by_op)]


def sweep_work_dirs(journal: Journal, store: BlobStore, work_dir: Path) -> None:
    """Remove what crashed runs left: work folders of transactions that have
    ended, and temporary copies in the blob store (the lock is held, so no
    other process is writing them)."""
    if work_dir.is_dir():
        for entry in os.scandir(work_dir):
            state = journal.state.txs.get(entry.name)
            if state is not None and state.status in UNFINISHED:
                continue
            logger.debug("removing the leftover work folder %s", entry.path)
            if entry.is_dir(follow_symlinks=False):
                remove_tree(Path(entry.path))
            else:
                os.unlink(entry.path)
    for pattern in ("*.copy", "*.unshare", "*.relink"):
        for leftover in (Path(store.root) / "tmp").glob(pattern):
            leftover.unlink()


def _work_dir(store: BlobStore, work_dir: Path | None) -> Path:
    return work_dir if work_dir is not None else default_work_dir(store)
