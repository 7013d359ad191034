"""Restoring a backup: a journaled, recoverable transaction like an upgrade.

The archive is checked against the sha256 the journal recorded, unpacked
(symlinks and modes as archived, unsafe members refused) into a staging
folder, and put in place by one transaction between a services stop and
start. A failed health gate rolls the restore back.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from engine.backup import (
    BackupNotFoundError,
    restore_ops,
    unpack_backup,
    verify_backup,
)
from engine.config import DeploymentConfig
from engine.errors import IntegrityError, RolledBackError
from engine.services import Services
from engine.transaction import Transaction
from engine.upgrade import remove_stale_staging
from journal import BlobStore, Journal

logger = logging.getLogger(__name__)


class BackupDamagedError(IntegrityError):
    def __init__(self, backup_id: str, path: Path) -> None:
        super().__init__(
            f"backup {backup_id} at {path} is missing or does not match its "
            "recorded sha256"
        )
        self.backup_id = backup_id
        self.path = path
        self.hint = "choose another backup ('updock backup list')"


class RestoreRolledBackError(RolledBackError):
    def __init__(self, tx: str, cause: BaseException) -> None:
        super().__init__(f"restore {tx} failed and was rolled back: {cause}", cause)
        self.tx = tx


@dataclass(frozen=True)
class RestoreResult:
    backup_id: str
    tx: str
    ops: int


def restore_backup(
    config: DeploymentConfig,
    journal: Journal,
    store: BlobStore,
    services: Services,
    backup_id: str,
    *,
    with_data: bool = False,
) -> RestoreResult:
    """Put a backup back in place as one transaction.

    Raises:
        BackupNotFoundError: the journal lists no such usable backup.
        BackupDamagedError: the archive is gone or altered.
        RestoreRolledBackError: failed after the first change; rolled back.
    """
    info = journal.state.backups.get(backup_id)
    if info is None:
        raise BackupNotFoundError(backup_id)
    if not verify_backup(config, Path(info.path), info.sha256):
        raise BackupDamagedError(backup_id, config.root / info.path)
    services.preflight()
    remove_stale_staging(config)

    tx = Transaction.begin(
        journal,
        store,
        config.tree,
        kind="restore",
        from_version=journal.state.deployed_version or config.version,
        to_version=info.version,
        strategy="backup",
    )
    staging = config.state_dir / "staging" / tx.id
    staging.parent.mkdir(parents=True, exist_ok=True)
    try:
        unpack_backup(config.root / info.path, staging)
        tx.plan(restore_ops(staging, config.user_data, with_data))
        tx.check_space()
    except BaseException as exc:
        tx.abort(f"{type(exc).__name__}: {exc}")
        shutil.rmtree(staging, ignore_errors=True)
        raise
    try:
        services.stop(tx.id)
        tx.prepare()
        tx.apply()
        services.start(tx.id)
        gate = services.gate(tx.id, "upgrade")
        if not gate.passed:
            raise RuntimeError(f"health gate failed: {gate.failed()}")
    except Exception as exc:
        services.stop(tx.id)
        if tx.phase != "ended":
            tx.roll_back(f"{type(exc).__name__}: {exc}")
        services.start(tx.id)
        shutil.rmtree(staging, ignore_errors=True)
        raise RestoreRolledBackError(tx.id, exc) from exc
    tx.decide()
    tx.commit(version=info.version)
    shutil.rmtree(staging, ignore_errors=True)
    logger.info("backup %s restored by transaction %s", backup_id, tx.id)
    return RestoreResult(backup_id, tx.id, len(tx.planned))
