"""What ``updock status`` reports: version, last transaction, pending
recovery, backups, and drift between the deployed files and the journal.

Drift: the journal knows what updock installed. For every path a committed
transaction changed, the last post-image is what should be on disk (a tree
post-image expands to every entry of its listing). A path that differs was
changed by hand (or by something else) since; it is listed, never touched.
Files updock never installed are not judged.

While another command holds the deployment's lock, its transaction is in
progress rather than awaiting recovery: the report names the holder's pid
and judges no drift, since files are changing under it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from engine.config import DeploymentConfig
from engine.placement import DIFFERENT, MODE_ONLY, Workspace, compare
from engine.recovery import RecoveryOutcome, intents_of
from journal import BlobError, BlobStore, Journal, State
from journal.records import ABSENT, TREE, ImageRef
from journal.state import COMMITTED

MAX_DRIFT_LISTED = 200


@dataclass(frozen=True)
class Drift:
    path: str
    problem: str  # "changed", "mode changed", "missing", "present" (was deleted)


@dataclass
class StatusReport:
    version: str | None
    version_source: str
    last_tx: dict | None
    pending: list[dict]
    last_recovery: dict | None
    backups: list[dict]
    drift: list[Drift] = field(default_factory=list)
    drift_checked: int = 0
    recovered_now: list[dict] = field(default_factory=list)
    busy_pid: int | None = None
    busy: bool = False

    def to_builtins(self) -> dict:
        return {
            "version": self.version,
            "version_source": self.version_source,
            "last_transaction": self.last_tx,
            "pending_recovery": [] if self.busy else self.pending,
            "in_progress": self.pending if self.busy else [],
            "lock_holder_pid": self.busy_pid,
            "recovered_now": self.recovered_now,
            "last_recovery": self.last_recovery,
            "backups": self.backups,
            "drift": [{"path": d.path, "problem": d.problem} for d in self.drift],
            "drift_checked": self.drift_checked,
        }


def build_status(
    config: DeploymentConfig,
    journal: Journal | None,
    store: BlobStore | None,
    *,
    recovered: Iterable[RecoveryOutcome] = (),
    busy: bool = False,
    busy_pid: int | None = None,
) -> StatusReport:
    """Gather the status of a deployment.

    Args:
        config: the deployment.
        journal: its journal; None when updock never changed it.
        store: its blob store; None skips the drift check.
        recovered: what this command's own recovery just did.
        busy: another command holds the lock (``busy_pid``, when known):
            unfinished transactions are in progress, and drift is not judged.
    """
    state = journal.state if journal is not None else State()
    version = state.deployed_version or config.version
    source = "journal" if state.deployed_version else "config.toml"
    report = StatusReport(
        version=version,
        version_source=source,
        last_tx=_last_tx(state),
        pending=[_tx_summary(tx) for tx in state.unfinished()],
        last_recovery=_recovery(state),
        backups=_backups(config, state),
        recovered_now=[
            {
                "tx": o.tx,
                "kind": o.kind,
                "direction": o.direction,
                "summary": o.describe(),
            }
            for o in recovered
        ],
        busy_pid=busy_pid,
        busy=busy,
    )
    if journal is not None and store is not None and not busy:
        expected = installed_images(journal)
        report.drift_checked = len(expected)
        report.drift = find_drift(config.tree, store, expected)
    return report


def _tx_summary(tx) -> dict:
    return {
        "tx": tx.tx,
        "kind": tx.kind,
        "from": tx.from_version,
        "to": tx.to_version,
        "status": tx.status,
        "began": _iso(tx.began_at),
        "ended": _iso(tx.ended_at) if tx.ended_at else None,
        "ops": tx.ops,
        "reason": tx.reason or None,
    }


def _last_tx(state: State) -> dict | None:
    if not state.txs:
        return None
    last = max(state.txs.values(), key=lambda tx: tx.first_seq)
    return _tx_summary(last)


def _recovery(state: State) -> dict | None:
    info = state.last_recovery
    if info is None:
        return None
    return {
        "tx": info.tx,
        "direction": info.direction,
        "at": _iso(info.started_at),
        "outcome": info.outcome,
    }


def _backups(config: DeploymentConfig, state: State) -> list[dict]:
    rows = []
    for info in sorted(state.backups.values(), key=lambda b: b.created_at):
        path = config.root / info.path
        rows.append(
            {
                "id": info.backup_id,
                "kind": info.kind,
                "version": info.version,
                "created": _iso(info.created_at),
                "path": info.path,
                "size": info.size,
                "files": info.files,
                "sha256": info.sha256,
                "present": path.is_file() and path.stat().st_size == info.size,
            }
        )
    return rows


def _iso(moment: float | None) -> str | None:
    if not moment:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(moment))


def installed_images(journal: Journal) -> dict[str, ImageRef]:
    """The last post-image of every path a committed transaction changed."""
    expected: dict[str, ImageRef] = {}
    committed = sorted(
        (tx for tx in journal.state.txs.values() if tx.status == COMMITTED),
        key=lambda tx: tx.first_seq,
    )
    for tx in committed:
        for intent in intents_of(journal.tx_records(tx.tx)):
            if not intent.path:
                continue
            for path in [p for p in expected if p.startswith(intent.path + "/")]:
                del expected[path]
            expected[intent.path] = intent.post
    return expected


def find_drift(
    tree: Path, store: BlobStore, expected: dict[str, ImageRef]
) -> list[Drift]:
    """Every installed path whose disk content differs from the journal's."""
    ws = Workspace(tree, store, "status", tree)
    drift: list[Drift] = []
    for path, image in sorted(expected.items()):
        for relpath, entry in _expand(ws, path, image):
            problem = _judge(ws, tree / relpath, entry)
            if problem:
                drift.append(Drift(relpath, problem))
            if len(drift) >= MAX_DRIFT_LISTED:
                return drift
    return drift


def _expand(ws: Workspace, path: str, image: ImageRef):
    if image.kind != TREE:
        yield path, image
        return
    try:
        listing = ws.listing(image.blob or "")
    except BlobError:
        yield path, image
        return
    yield path, ImageRef(kind="dir", mode=_top_mode(listing))
    for entry in listing:
        if entry.relpath in ("", "."):
            continue
        ref = ImageRef(
            kind=entry.kind, blob=entry.blob, mode=entry.mode, target=entry.target
        )
        yield f"{path}/{entry.relpath}", ref


def _top_mode(listing) -> int:
    for entry in listing:
        if entry.relpath in ("", "."):
            return entry.mode
    return 0o755


def _judge(ws: Workspace, path: Path, image: ImageRef) -> str:
    exists = os.path.lexists(path)
    if image.kind == ABSENT:
        return "present (was deleted)" if exists else ""
    if not exists:
        return "missing"
    verdict = compare(ws, path, image)
    if verdict == DIFFERENT:
        return "changed"
    if verdict == MODE_ONLY:
        return "mode changed"
    return ""
