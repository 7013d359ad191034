"""Transactions: many file operations on a tree, all or nothing.

Commit protocol
---------------
A transaction moves a tree from an old state to a new one so that a crash
at any instant leaves, after recovery, exactly the old tree or exactly the
new one. Its steps, each ending in a durable state a crash may stop in:

1. ``begin``: a ``TxBegun`` record.
2. ``plan``: every path is checked (``engine.ops``, ``engine.paths``);
   nothing is written. ``check_space``: every filesystem that will be
   written (blob store and journal, staging, tree) has room, with a margin.
3. ``prepare``: stage. Each staged file is hashed and hard-linked into the
   blob store (content the store holds already is not linked again); a
   staged folder becomes a tree listing whose files are stored as private
   copies. No staged byte is written twice. One ``syncfs(2)`` per
   filesystem makes every staged byte and blob durable at once, instead
   of one fsync per file (dpkg's per-file fsync turned a 5 s install into
   76 s). Then the first batch (below) is captured and journaled: for a
   transaction of one batch, as most are, every intent is in the journal
   when ``prepare`` returns.
4. Batches, of at most ``BATCH_OPS`` operations and ``BATCH_BYTES`` of
   pre-images each, are captured and journaled one at a time, each just
   before it is applied:
   - list the batch's paths in ``<state>/txn/<tx>/capturing`` (replaced
     atomically, fsync'd): after a crash before the intents, recovery finds
     there the tree files that were linked into the store;
   - capture the batch's pre-images: each file about to be replaced or
     deleted is hashed and hard-linked into the store (a folder: all its
     files plus a listing). Linking, unlike a copy, costs no data write;
     the tree's file is then replaced by rename, never written in place, so
     the store's name keeps the old bytes and becomes the only one. A file
     whose pre-image equals its post-image (it stays) finds its blob stored
     already and is not linked;
   - one ``syncfs`` makes the links durable, then the batch's
     ``OpIntended`` records (path, pre-image, post-image, and how many
     operations the transaction has in all) go to the journal in one group
     commit. From here recovery can undo the batch.
   ``apply`` puts each post-image in place with ``rename(2)``: the staged
   file or folder itself when it is on the tree's filesystem, else a copy
   of the blob at a scratch name beside the target, renamed over it. A
   replaced folder moves out of the tree into ``<state>/txn/<tx>/`` with
   one rename. Then one ``syncfs`` per filesystem makes every rename, and
   so every touched folder, durable, and the ``OpApplied`` records follow
   in one group commit.
5. ``decide``: ``CommitDecided``, the point of no return. The upgrade
   pipeline journals its own steps (services started, health verdict)
   between ``apply`` and ``decide``.
6. ``commit``: the replaced folders are removed and so are the store's
   names of the staged files (one ``syncfs``), then ``Committed``.

Shared inodes: no deployed file keeps its inode shared with a blob once
the transaction has ended, or an edit in place of the file would silently
change the stored image. A staged file linked into the store shares its
inode with the tree once placed, until the transaction ends: the commit
(or a rollback) then removes the store's name, the tree holding the
content (``release_posts``). Pre-images are links only until their file
is replaced. A rollback moves a pre-image the transaction linked in back
into the tree by rename (no byte written), else copies it; it removes
such blobs of files it never replaced, which batching bounds to one
batch, and gives any other blob still sharing an inode a private copy
(``engine.placement``). After a crash between a batch's capture and its
intents, recovery finds that batch's links through the list of paths
above and unshares them; and the store never trusts a blob with a second
name (``engine.trees``).

Where the point of no return lies, and why: after the placement, not
before it. The health gate runs on the placed files, and when it fails the
file change must still be undoable, so placement cannot be past the point
of no return. And the two images are not equally safe: pre-images are made
durable in the store before the first change, whereas post-images may
still live only in a staging folder that a crash or a cleanup can empty.
Before ``CommitDecided`` recovery rolls back; after it, recovery rolls
forward: it finishes the cleanup and redoes, from the stored post-image,
any operation whose result is not on disk (``engine.placement``).

Durability calls per transaction do not grow with the number of files:
four journal fsyncs (begun, applied, decided, committed) plus one per
batch of intents, two per batch for its list of paths, and one ``syncfs``
per filesystem after staging, one per batch, one after applying (a
rollback adds one or two). Every call goes through ``journal.fsio``.

A failure while applying (ENOSPC, EACCES, EROFS, EBUSY, any error) rolls
every operation back at once and raises ``PlacementFailedError`` (a
``RolledBackError``) naming the path and the errno; if undoing fails too,
``RollbackIncompleteError`` carries both errors, and the transaction stays
open for the next recovery. A crash (or Ctrl-C) leaves it to recovery.

Crash points (``journal.crashpoints``) mark each durable step:
``tx.begun``, ``tx.prepare.staged``, ``tx.prepare.synced``,
``tx.prepare.captured`` and ``tx.prepare.journaled`` (first batch),
``tx.apply.captured`` and ``tx.apply.intents`` (later batches),
``tx.apply.op`` (after each operation), ``tx.apply.synced``,
``tx.apply.journaled``, ``tx.decided``,
``tx.finish.cleaned``, ``tx.committed``, and when rolling back
``tx.undo.op``, ``tx.undo.unshared``, ``tx.undo.synced``,
``tx.rolled_back``, ``tx.abort.unshared``, ``tx.aborted``.
"""

from __future__ import annotations

import errno
import getpass
import logging
import os
import secrets
import socket
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Self

from engine.capture import capture_posts, capture_pres
from engine.errors import (
    BadInputError,
    InsufficientSpaceError,
    RefusedError,
    RollbackFailedError,
    RolledBackError,
)
from engine.ops import MAKE_DIR, MAKE_SYMLINK, PUT_FILE, Op, PlannedOp, plan_ops
from engine.placement import (
    Workspace,
    default_work_dir,
    discard_work_dir,
    realize,
    remove_scratch,
    sync_filesystems,
    note_capturing,
    release_posts,
    undo_all,
    unshare_pre_images,
)
from engine.progress import Progress, ProgressEvent
from engine.space import SpaceNeed, check_free_space, filesystem_id
from journal import BlobStore, Journal
from journal.crashpoints import crashpoint
from journal.records import (
    Aborted,
    CommitDecided,
    Committed,
    OpApplied,
    RolledBack,
    TxBegun,
)

__all__ = ["Op", "Transaction"]

logger = logging.getLogger(__name__)

BEGUN, PLANNED, PREPARED, APPLYING, APPLIED, DECIDED, ENDED = (
    "begun",
    "planned",
    "prepared",
    "applying",
    "applied",
    "decided",
    "ended",
)
# Bytes of journal per operation, and of listing per tree entry, for the
# space check (a generous estimate of msgpack records).
_JOURNAL_BYTES_PER_OP = 1024
_LISTING_BYTES_PER_ENTRY = 256
_PROGRESS_EVERY = 256
# A batch of operations gets its pre-images captured and its intents
# journaled together, before any of it is applied. Bounded so that a
# rollback half-way has at most one batch of captured, never-replaced files
# to unshare (see the module doc).
BATCH_OPS = 4096
BATCH_BYTES = 256 * 1024 * 1024
# Operations that create something in the tree (content, folder or link).
_CREATES = (PUT_FILE, "replace_dir", MAKE_DIR, MAKE_SYMLINK)


class WrongPhaseError(RefusedError):
    def __init__(self, tx: str, action: str, phase: str) -> None:
        super().__init__(f"transaction {tx}: cannot {action} when {phase}")
        self.tx = tx
        self.phase = phase


class PrepareFailedError(RolledBackError):
    """Staging or capturing failed; the tree was not changed."""

    def __init__(self, tx: str, exc: OSError) -> None:
        super().__init__(
            f"transaction {tx}: preparing failed at {exc.filename}: "
            f"[Errno {exc.errno}] {exc.strerror}; nothing was changed",
            exc,
        )
        self.tx = tx
        self.path = exc.filename
        self.errno = exc.errno


class StagingSpaceError(InsufficientSpaceError):
    """The disk filled up while staging, before any change to the tree."""

    def __init__(self, tx: str, exc: OSError) -> None:
        where = exc.filename or "the blob store or the staging folder"
        super().__init__(
            f"transaction {tx}: no space left on the filesystem of {where} "
            "while staging; nothing was changed"
        )
        self.tx = tx
        self.path = exc.filename


class PlacementFailedError(RolledBackError):
    """An operation failed while applying; every change was rolled back."""

    def __init__(self, tx: str, planned: PlannedOp, exc: BaseException) -> None:
        code = getattr(exc, "errno", None)
        name = errno.errorcode.get(code, "") if code else ""
        detail = (
            f"{name} [Errno {code}] {getattr(exc, 'strerror', '')}"
            if code
            else str(exc)
        )
        where = getattr(exc, "filename", None) or planned.path
        if getattr(exc, "filename2", None):
            where = f"{where} -> {exc.filename2}"
        super().__init__(
            f"transaction {tx}: {planned.kind} {planned.path!r} failed: "
            f"{detail.strip()} (at {where}); every change was rolled back",
            exc,
        )
        self.tx = tx
        self.path = planned.path
        self.errno = code


class RollbackIncompleteError(RollbackFailedError):
    """A change failed and undoing it failed too."""

    hint = "free the resource named above, then run 'updock recover'"

    def __init__(
        self, tx: str, cause: BaseException, rollback_error: BaseException
    ) -> None:
        super().__init__(f"transaction {tx} failed", cause, rollback_error)
        self.tx = tx


class Transaction:
    """A journaled set of file operations on one tree; see the module doc.

    Use ``Transaction.begin``, then ``plan``, ``check_space`` (optional:
    ``prepare`` runs it when skipped), ``prepare``, ``apply``, ``commit``;
    ``roll_back`` or ``abort`` to give up. As a context manager, an
    exception rolls back (or aborts) whatever was not committed.
    """

    def __init__(
        self, journal: Journal, store: BlobStore, tree: Path, tx: str, work_dir: Path
    ) -> None:
        self.id = tx
        self.tree = Path(tree)
        self._journal = journal
        self._store = store
        self._ws = Workspace(self.tree, store, tx, work_dir / tx)
        self._planned: list[PlannedOp] = []
        self._phase = BEGUN
        self._space_checked = False
        self._batches: list[list[PlannedOp]] = []
        self._captured = 0  # ops whose pre-image is captured (a prefix)
        self._journaled = 0  # ops whose intent is journaled (a prefix)

    # -- starting ------------------------------------------------------------

    @classmethod
    def begin(
        cls,
        journal: Journal,
        store: BlobStore,
        tree_root: Path,
        *,
        kind: str = "upgrade",
        from_version: str | None = None,
        to_version: str | None = None,
        strategy: str | None = None,
        work_dir: Path | None = None,
    ) -> Transaction:
        """Start a transaction: journal ``TxBegun``.

        Args:
            journal: The deployment's journal, open for writing.
            store: The deployment's blob store.
            tree_root: The tree the operations change.
            kind: What the transaction is (``upgrade``, ``rollback``, ...).
            from_version: The version deployed before.
            to_version: The version it installs.
            strategy: ``full`` or ``patch``, for the record.
            work_dir: Where replaced folders go (default ``<store>/../txn``).

        Returns:
            The transaction, in phase ``begun``.
        """
        tx = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)
        work = work_dir if work_dir is not None else default_work_dir(store)
        journal.append(
            TxBegun(
                tx=tx,
                kind=kind,
                from_version=from_version,
                to_version=to_version,
                host=socket.gethostname(),
                pid=os.getpid(),
                user=_user(),
                strategy=strategy,
                at=time.time(),
            )
        )
        crashpoint("tx.begun")
        logger.info("transaction %s (%s) begun", tx, kind)
        return cls(journal, store, tree_root, tx, work)

    @property
    def phase(self) -> str:
        return self._phase

    @property
    def planned(self) -> list[PlannedOp]:
        """The planned operations (with their images once prepared)."""
        return list(self._planned)

    def plan(self, ops: Iterable[Op]) -> list[PlannedOp]:
        """Check every operation and number them; nothing changes on disk.

        Raises:
            BadInputError: a subclass naming the path and the broken rule;
                the transaction is aborted.
        """
        self._require(BEGUN, "plan")
        try:
            self._planned = plan_ops(self.tree, self._store, ops)
        except BadInputError as exc:
            self.abort(f"plan refused: {exc}")
            raise
        self._phase = PLANNED
        logger.debug(
            "transaction %s: %d operations planned", self.id, len(self._planned)
        )
        return self.planned

    def check_space(self, extra_paths: Iterable[Path | tuple[Path, int]] = ()) -> None:
        """Refuse when a filesystem to be written lacks room (margin included).

        Args:
            extra_paths: Further paths the caller will write, each a path (it
                must keep the margin free) or ``(path, bytes)``.

        Raises:
            InsufficientSpaceError: names the filesystem, the bytes needed
                and the bytes free; the transaction is aborted.
        """
        self._require(PLANNED, "check space")
        needs = self._space_needs()
        for extra in extra_paths:
            path, size = extra if isinstance(extra, tuple) else (extra, 0)
            needs.append(SpaceNeed(Path(path), size))
        try:
            check_free_space(needs)
        except InsufficientSpaceError as exc:
            self.abort(f"not enough space: {exc}")
            raise
        self._space_checked = True

    def _space_needs(self) -> list[SpaceNeed]:
        """Bytes and inodes the store's and the tree's filesystems receive.

        Linking and renaming write no data; only content crossing
        filesystems is copied: a staged file on another filesystem than the
        store is copied in, and placed by link from there when the store
        shares the tree's filesystem. Placing a blob already linked
        elsewhere copies it; that is counted only for operations whose
        content is a blob (a rare case otherwise, left to the failure path).
        Staging filesystems receive nothing but must keep their margin.
        """
        store_root, tree = self._store.root, self.tree
        store_fs, tree_fs = filesystem_id(store_root), filesystem_id(tree)
        staging_fs: dict[Path, int] = {}
        store = SpaceNeed(store_root, _JOURNAL_BYTES_PER_OP * len(self._planned))
        into_tree = SpaceNeed(tree)
        for planned in self._planned:
            entries = len(planned.pre_walk or ()) + len(planned.post_walk or ())
            store.add(_LISTING_BYTES_PER_ENTRY * entries)
            if store_fs != tree_fs:
                store.add(planned.pre_bytes, entries or 1)
            if planned.kind not in _CREATES:
                continue
            if planned.source is None:
                into_tree.add(planned.post_bytes, entries or 1)
                continue
            parent = planned.source.parent
            if parent not in staging_fs:
                staging_fs[parent] = filesystem_id(parent)
            if staging_fs[parent] != store_fs:
                store.add(planned.post_bytes, entries or 1)
            if staging_fs[parent] != tree_fs and store_fs != tree_fs:
                into_tree.add(planned.post_bytes, entries or 1)
        return [store, into_tree, *(SpaceNeed(parent) for parent in staging_fs)]

    # -- prepare -------------------------------------------------------------

    def prepare(self, progress: Progress | None = None) -> None:
        """Stage every post-image durably; capture the first batch's
        pre-images and journal its intents (for most transactions, all).

        Raises:
            InsufficientSpaceError: the space check (run here when the caller
                did not) refused, or the disk filled while staging.
            PrepareFailedError: another error while staging; nothing changed.
            BadInputError: a file changed while it was being stored.
        """
        if self._phase == PLANNED and not self._space_checked:
            self.check_space()
        self._require(PLANNED, "prepare")
        started = time.monotonic()
        self._batches = list(_batches(self._planned))
        try:
            capture_posts(self._store, self._planned)
            crashpoint("tx.prepare.staged")
            sync_filesystems(self._filesystems())
            crashpoint("tx.prepare.synced")
            if self._batches:
                self._journal_batch(self._batches[0], "tx.prepare")
        except BadInputError as exc:
            self._phase = PREPARED
            self._abort_quietly(f"prepare refused: {exc}")
            raise
        except OSError as exc:
            self._phase = PREPARED
            self._abort_quietly(f"prepare failed: {exc}")
            if exc.errno == errno.ENOSPC:
                raise StagingSpaceError(self.id, exc) from exc
            raise PrepareFailedError(self.id, exc) from exc
        self._phase = PREPARED
        _report(progress, "stage", len(self._planned), time.monotonic() - started)

    def _filesystems(self) -> list[Path]:
        sources = {p.source.parent for p in self._planned if p.source is not None}
        return [self._store.root, self.tree, self._ws.work_dir.parent, *sorted(sources)]

    # -- apply ---------------------------------------------------------------

    def apply(self, progress: Progress | None = None) -> None:
        """Capture pre-images and journal intents, batch by batch, putting
        each batch's post-images in place; then make it all durable.

        Raises:
            PlacementFailedError: an operation failed; all were rolled back.
            RollbackIncompleteError: rolling back failed as well.
        """
        self._require(PREPARED, "apply")
        self._phase = APPLYING
        started, total = time.monotonic(), len(self._planned)
        current = None
        try:
            for index, batch in enumerate(self._batches):
                current = batch[0]
                if index > 0:
                    self._journal_batch(batch, "tx.apply")
                for current in batch:
                    self._place(current)
                    if progress is not None and current.op % _PROGRESS_EVERY == 0:
                        event = ProgressEvent(
                            "bytes", "apply", done=current.op, total=total, unit="files"
                        )
                        progress(event)
            sync_filesystems(self._filesystems())
            crashpoint("tx.apply.synced")
            now = time.time()
            self._journal.append_many(
                [OpApplied(tx=self.id, op=p.op, at=now) for p in self._planned]
            )
            crashpoint("tx.apply.journaled")
        except Exception as exc:  # noqa: BLE001 - any failure rolls back
            self._fail(exc, current)
        self._phase = APPLIED
        _report(progress, "apply", total, time.monotonic() - started)
        logger.info("transaction %s: %d operations applied", self.id, total)

    def _journal_batch(self, batch: list[PlannedOp], step: str) -> None:
        """Capture a batch's pre-images durably, then journal its intents.

        Crash points: ``<step>.captured``, then ``tx.prepare.journaled`` for
        the first batch, ``tx.apply.intents`` for the others.
        """
        note_capturing(self._ws, [planned.path for planned in batch])
        self._captured = batch[-1].op + 1
        capture_pres(self._store, self.tree, batch)
        sync_filesystems([self._store.root, self.tree])
        crashpoint(f"{step}.captured")
        now, count = time.time(), len(self._planned)
        self._journal.append_many([p.record(self.id, count, now) for p in batch])
        self._journaled = self._captured
        crashpoint(
            "tx.prepare.journaled" if step == "tx.prepare" else "tx.apply.intents"
        )

    def _place(self, planned: PlannedOp) -> None:
        realize(
            self._ws, planned, planned.post, source=planned.staged(), known=planned.pre
        )
        crashpoint("tx.apply.op")

    def _fail(self, exc: Exception, current: PlannedOp | None) -> None:
        failed = current or self._planned[-1]
        logger.error(
            "transaction %s: %s %s failed: %s", self.id, failed.kind, failed.path, exc
        )
        try:
            self._undo(f"{failed.kind} {failed.path} failed: {exc}")
        except Exception as rollback_exc:  # noqa: BLE001 - reported with the cause
            raise RollbackIncompleteError(self.id, exc, rollback_exc) from exc
        raise PlacementFailedError(self.id, failed, exc) from exc

    # -- ending --------------------------------------------------------------

    def decide(self) -> None:
        """Journal ``CommitDecided``: from here recovery rolls forward."""
        self._require(APPLIED, "decide")
        self._journal.append(CommitDecided(tx=self.id, at=time.time()))
        crashpoint("tx.decided")
        self._phase = DECIDED

    def commit(self, version: str | None = None) -> None:
        """Decide (unless done), remove replaced folders, journal ``Committed``.

        Args:
            version: The version now deployed (recorded in the journal).
        """
        if self._phase == APPLIED:
            self.decide()
        self._require(DECIDED, "commit")
        discard_work_dir(self._ws)
        if release_posts(self._ws, self._planned):
            sync_filesystems([self._store.root])
        crashpoint("tx.finish.cleaned")
        self._journal.append(Committed(tx=self.id, version=version, at=time.time()))
        crashpoint("tx.committed")
        self._phase = ENDED
        logger.info("transaction %s committed", self.id)

    def roll_back(self, reason: str) -> None:
        """Undo every operation and journal ``RolledBack``.

        Before ``apply`` nothing has changed: this is an ``abort``.

        Raises:
            WrongPhaseError: the commit was decided already.
        """
        if self._phase in (BEGUN, PLANNED, PREPARED):
            self.abort(reason)
            return
        self._require((APPLYING, APPLIED), "roll back")
        self._undo(reason)

    def _undo(self, reason: str) -> None:
        journaled = self._planned[: self._journaled]
        undo_all(self._ws, journaled, "tx.undo.op")
        captured = self._planned[: self._captured]
        unshare_pre_images(self._ws, captured, "tx.undo.unshared")
        release_posts(self._ws, self._planned)
        remove_scratch(self._ws, journaled)
        sync_filesystems(self._filesystems())
        crashpoint("tx.undo.synced")
        discard_work_dir(self._ws)
        self._journal.append(RolledBack(tx=self.id, reason=reason, at=time.time()))
        crashpoint("tx.rolled_back")
        self._phase = ENDED
        logger.warning("transaction %s rolled back: %s", self.id, reason)

    def abort(self, reason: str) -> None:
        """Journal ``Aborted``: the transaction ends before changing anything."""
        self._require((BEGUN, PLANNED, PREPARED), "abort")
        if self._captured:
            captured = self._planned[: self._captured]
            unshare_pre_images(self._ws, captured, "tx.abort.unshared")
        if self._captured or release_posts(self._ws, self._planned):
            sync_filesystems(self._filesystems())
        discard_work_dir(self._ws)
        self._journal.append(Aborted(tx=self.id, reason=reason, at=time.time()))
        crashpoint("tx.aborted")
        self._phase = ENDED
        logger.info("transaction %s aborted: %s", self.id, reason)

    def _abort_quietly(self, reason: str) -> None:
        """Abort, keeping the original error when the journal fails too."""
        try:
            self.abort(reason)
        except Exception as exc:  # noqa: BLE001 - recovery will end it
            logger.error(
                "transaction %s: could not journal the abort: %s", self.id, exc
            )

    def _require(self, phases: str | tuple[str, ...], action: str) -> None:
        if self._phase not in (phases if isinstance(phases, tuple) else (phases,)):
            raise WrongPhaseError(self.id, action, self._phase)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is None or self._phase in (ENDED, DECIDED):
            return
        if isinstance(exc, (KeyboardInterrupt, RolledBackError, RollbackFailedError)):
            return
        try:
            self.roll_back(f"{type(exc).__name__}: {exc}")
        except Exception as rollback_exc:  # noqa: BLE001 - keep both
            raise RollbackIncompleteError(self.id, exc, rollback_exc) from exc


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def _report(progress: Progress | None, step: str, count: int, seconds: float) -> None:
    if progress is not None:
        progress(
            ProgressEvent(
                "step_finished", step, done=count, unit="files", seconds=seconds
            )
        )


# -- capturing images --------------------------------------------------------


def _batches(planned: list[PlannedOp]) -> Iterator[list[PlannedOp]]:
    """Consecutive batches of at most ``BATCH_OPS`` operations and, unless a
    single operation is larger, ``BATCH_BYTES`` of pre-image content."""
    batch: list[PlannedOp] = []
    size = 0
    for op in planned:
        if batch and (len(batch) >= BATCH_OPS or size + op.pre_bytes > BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(op)
        size += op.pre_bytes
    if batch:
        yield batch
