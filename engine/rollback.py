"""Undoing committed transactions, and the operator's manual replay.

A committed transaction is never "uncommitted": it is undone by a *new*
transaction whose operations put back the old one's pre-images, journaled
and recoverable like any other (and undoable in turn). The pre-images are
in the blob store because compaction keeps every blob the last committed
transaction references.

``replay_forward`` and ``replay_back`` are the manual levers behind ``updock
journal replay``: they refuse what would be unsafe, with the reason.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from engine.errors import RefusedError, RolledBackError
from engine.ops import MAKE_DIR, SET_MODE, Op
from engine.paths import parents_of
from engine.placement import SAME, Workspace, compare, default_work_dir
from engine.recovery import (
    RecoveryOutcome,
    ServicesHook,
    intents_of,
    recover_tx,
)
from engine.transaction import Transaction
from journal import BlobError, BlobStore, Journal
from journal.journal import image_blobs
from journal.records import ABSENT, DIR, FILE, SYMLINK, TREE, ImageRef, OpIntended
from journal.state import COMMITTED, UNFINISHED

logger = logging.getLogger(__name__)

Hook = Callable[[Transaction], None]


class UnknownTransactionError(RefusedError):
    def __init__(self, tx: str) -> None:
        super().__init__(f"the journal holds no transaction {tx!r}")
        self.tx = tx
        self.hint = "run 'updock journal inspect' to list the transactions"


class ReplayRefusedError(RefusedError):
    """A manual replay or undo would be unsafe; ``reason`` says why."""

    def __init__(self, tx: str, action: str, reason: str) -> None:
        super().__init__(f"refusing to {action} transaction {tx}: {reason}")
        self.tx = tx
        self.reason = reason


class NothingToUndoError(RefusedError):
    hint = "nothing to do: 'updock journal inspect' lists what was recorded"

    def __init__(self) -> None:
        super().__init__("nothing to undo: no upgrade has been committed here")


class UndoRolledBackError(RolledBackError):
    def __init__(self, tx: str, undone: str, exc: BaseException) -> None:
        super().__init__(
            f"undoing transaction {undone} (as {tx}) failed: {exc}; its changes were "
            "rolled back",
            exc,
        )
        self.tx = tx


@dataclass(frozen=True)
class UndoOutcome:
    """A committed transaction undone by a new one."""

    undone: str
    tx: str
    ops: int
    version: str | None

    def describe(self) -> str:
        to = f"; version {self.version} is deployed again" if self.version else ""
        return (
            f"transaction {self.undone} undone by transaction {self.tx} "
            f"({self.ops} operations){to}"
        )


def undo_ops(intents: list[OpIntended]) -> list[Op]:
    """Operations that put back the pre-images of ``intents``, last first."""
    return [_restore_op(intent) for intent in reversed(intents)]


def _restore_op(intent: OpIntended) -> Op:
    pre = intent.pre
    if intent.kind == SET_MODE:
        return Op.set_mode(intent.path, pre.mode)
    if pre.kind == ABSENT:
        folder = intent.post.kind in (DIR, TREE) or intent.kind == MAKE_DIR
        return Op.delete_tree(intent.path) if folder else Op.delete_file(intent.path)
    if pre.kind == FILE:
        return Op.put_file(intent.path, blob=pre.blob, mode=pre.mode)
    if pre.kind == SYMLINK:
        return Op.make_symlink(intent.path, pre.target or "", restoring=True)
    if pre.kind == DIR:
        return Op.make_dir(intent.path, pre.mode)
    return Op.replace_dir(intent.path, listing=pre.blob, restoring=True)


def undo_last_commit(
    journal: Journal,
    store: BlobStore,
    tree_root: Path,
    *,
    before_apply: Hook | None = None,
    after_apply: Hook | None = None,
    work_dir: Path | None = None,
) -> UndoOutcome:
    """Undo the last committed transaction with a new ``rollback`` transaction.

    Args:
        journal: The journal, open for writing (lock held, recovery done).
        store: The blob store.
        tree_root: The tree.
        before_apply: Called once the undo is prepared, before any file
            changes (the pipeline stops services here); raising aborts.
        after_apply: Called once the files are back (start services, health
            gate); raising rolls the undo back.
        work_dir: The transactions' work folder.

    Returns:
        What was undone, and by which transaction.

    Raises:
        ReplayRefusedError: nothing is committed, a transaction is
            unfinished, or a pre-image is missing from the store.
        UndoRolledBackError: ``after_apply`` failed; the undo was undone.
        RolledBackError, InsufficientSpaceError: from the transaction.
    """
    last = journal.state.last_committed_tx
    if last is None:
        raise NothingToUndoError()
    return undo_commit(
        journal,
        store,
        tree_root,
        last,
        before_apply=before_apply,
        after_apply=after_apply,
        work_dir=work_dir,
    )


def undo_commit(
    journal: Journal,
    store: BlobStore,
    tree_root: Path,
    tx: str,
    *,
    before_apply: Hook | None = None,
    after_apply: Hook | None = None,
    work_dir: Path | None = None,
) -> UndoOutcome:
    """Undo committed transaction ``tx`` (see ``undo_last_commit``).

    Raises:
        ReplayRefusedError: as ``undo_last_commit``, and when a transaction
            committed after ``tx`` changed any of the same paths.
    """
    state = _known(journal, tx)
    _refuse_unless(state.status == COMMITTED, tx, "undo", f"it is {state.status}")
    _refuse_unfinished(journal, tx)
    intents = intents_of(journal.tx_records(tx))
    _refuse_missing_blobs(store, tx, "undo", [i.pre for i in intents])
    _refuse_later_overlap(journal, tx, intents)
    _warn_drift(store, Path(tree_root), tx, intents, work_dir)

    undo = Transaction.begin(
        journal,
        store,
        tree_root,
        kind="rollback",
        from_version=journal.state.deployed_version,
        to_version=state.from_version,
        work_dir=work_dir,
    )
    with undo:
        undo.plan(undo_ops(intents))
        undo.check_space()
        undo.prepare()
        if before_apply is not None:
            before_apply(undo)
        undo.apply()
        if after_apply is not None:
            try:
                after_apply(undo)
            except Exception as exc:
                undo.roll_back(f"after the undo: {exc}")
                raise UndoRolledBackError(undo.id, tx, exc) from exc
        undo.commit(version=state.from_version)
    logger.info("transaction %s undone by transaction %s", tx, undo.id)
    return UndoOutcome(tx, undo.id, len(undo.planned), state.from_version)


def replay_forward(
    journal: Journal,
    store: BlobStore,
    tree_root: Path,
    tx: str,
    *,
    services: ServicesHook | None = None,
    work_dir: Path | None = None,
) -> RecoveryOutcome:
    """Finish an unfinished transaction by rolling it forward.

    Raises:
        ReplayRefusedError: the transaction has ended, not all its
            operations were journaled (it stopped before its last batch), or
            a post-image is missing from the store.
    """
    state = _known(journal, tx)
    _refuse_unless(
        state.status in UNFINISHED,
        tx,
        "roll forward",
        f"it has already ended ({state.status})",
    )
    intents = intents_of(journal.tx_records(tx))
    planned = max((intent.planned for intent in intents), default=0)
    _refuse_unless(
        bool(intents) and len(intents) >= planned,
        tx,
        "roll forward",
        f"only {len(intents)} of its {planned or 'unknown number of'} operations "
        "were journaled; the rest of its plan is not recorded",
    )
    _refuse_missing_blobs(store, tx, "roll forward", [i.post for i in intents])
    return recover_tx(
        journal,
        store,
        tree_root,
        tx,
        direction="forward",
        services=services,
        work_dir=work_dir,
    )


def replay_back(
    journal: Journal,
    store: BlobStore,
    tree_root: Path,
    tx: str,
    *,
    services: ServicesHook | None = None,
    work_dir: Path | None = None,
) -> RecoveryOutcome | UndoOutcome:
    """Undo a transaction: roll it back when unfinished (even once decided),
    or undo it with a new transaction when committed.

    Raises:
        ReplayRefusedError: it was rolled back or aborted already, a
            pre-image is missing, or (committed) a later committed
            transaction changed the same paths.
    """
    state = _known(journal, tx)
    if state.status == COMMITTED:
        return undo_commit(journal, store, tree_root, tx, work_dir=work_dir)
    _refuse_unless(
        state.status in UNFINISHED,
        tx,
        "roll back",
        f"it has already ended ({state.status}); nothing to undo",
    )
    intents = intents_of(journal.tx_records(tx))
    _refuse_missing_blobs(store, tx, "roll back", [i.pre for i in intents])
    return recover_tx(
        journal,
        store,
        tree_root,
        tx,
        direction="back",
        services=services,
        work_dir=work_dir,
    )


# -- refusals ------------------------------------------------------------------


def _known(journal: Journal, tx: str):
    state = journal.state.txs.get(tx)
    if state is None:
        raise UnknownTransactionError(tx)
    return state


def _refuse_unless(condition: bool, tx: str, action: str, reason: str) -> None:
    if not condition:
        raise ReplayRefusedError(tx, action, reason)


def _refuse_unfinished(journal: Journal, tx: str) -> None:
    for other in journal.state.unfinished():
        raise ReplayRefusedError(
            tx,
            "undo",
            f"transaction {other.tx} is unfinished; run 'updock recover' first",
        )


def _refuse_missing_blobs(
    store: BlobStore, tx: str, action: str, images: list[ImageRef]
) -> None:
    for image in images:
        try:
            digests = image_blobs(image, store)
        except BlobError as exc:
            raise ReplayRefusedError(
                tx, action, f"a stored image is unusable: {exc}"
            ) from exc
        for digest in digests:
            if not store.has(digest):
                raise ReplayRefusedError(
                    tx,
                    action,
                    f"blob {digest} ({image.kind} image) is missing from the store",
                )


def _refuse_later_overlap(journal: Journal, tx: str, intents: list[OpIntended]) -> None:
    """Refuse when a transaction committed after ``tx`` touched its paths:
    putting ``tx``'s pre-images back would silently drop that later change."""
    mine = {intent.path for intent in intents}
    above_mine = {parent for path in mine for parent in parents_of(path)}
    first = journal.state.txs[tx].first_seq
    for later in journal.state.txs.values():
        if later.status != COMMITTED or later.first_seq <= first:
            continue
        for intent in intents_of(journal.tx_records(later.tx)):
            path = intent.path
            if (
                path in mine
                or path in above_mine
                or mine.intersection(parents_of(path))
            ):
                raise ReplayRefusedError(
                    tx,
                    "undo",
                    f"transaction {later.tx}, committed later, changed {path!r}, "
                    "which this one changed too; undo that one first",
                )


def _warn_drift(
    store: BlobStore,
    tree: Path,
    tx: str,
    intents: list[OpIntended],
    work_dir: Path | None,
) -> None:
    """Log paths changed by hand since ``tx``: the undo replaces them anyway
    (and captures them as its own pre-images, so it can be undone too)."""
    ws = Workspace(tree, store, tx, (work_dir or default_work_dir(store)) / tx)
    for intent in intents:
        if compare(ws, tree / intent.path, intent.post) != SAME:
            logger.warning(
                "%s changed since transaction %s; the undo replaces it", intent.path, tx
            )
