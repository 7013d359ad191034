"""Backups of a deployment: durable tar.gz archives, listed only once whole.

An archive is named as the existing client names them,
``backup_<kind>_v<version>_<UTC YYYY-MM-DD_HH-MM-SS>.tar.gz`` with kind
``pre-upgrade`` or ``manual``, and holds, with paths relative to the compose
project folder so they restore where they came from:

- the compose file, ``.env`` and the ``config/`` folder of the project;
- the deployment's ``config.toml``, stored as ``.updock-root/config.toml``;
- every user-data folder that exists (``data/``, ``upload/``, ...).

It is written under a hidden ``.partial`` name, fsync'd, renamed and the
folder fsync'd; only then is a ``BackupCreated`` record (sha256, size, file
count) appended to the journal. The journal is the list of usable backups: a
partial archive left by a crash is never in it, and the next backup run
deletes such leftovers (the writer lock guarantees nobody is writing them).
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import posixpath
import tarfile
import time
import zlib
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO

from engine.config import DeploymentConfig
from engine.errors import BadInputError, IntegrityError
from engine.ops import Op
from journal import fsio
from journal.crashpoints import crashpoint
from journal.records import BackupCreated

logger = logging.getLogger(__name__)

ROOT_PREFIX = ".updock-root"
PARTIAL_SUFFIX = ".partial"


class BackupUnreadableError(IntegrityError):
    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"backup archive {path} cannot be restored: {problem}")
        self.path = path
        self.problem = problem
        self.hint = "choose another backup ('updock backup list')"


class BackupNotFoundError(BadInputError):
    def __init__(self, backup_id: str) -> None:
        super().__init__(f"no usable backup named {backup_id!r}")
        self.backup_id = backup_id
        self.hint = "run 'updock backup list' to see the usable backups"


@dataclass(frozen=True)
class BackupResult:
    backup_id: str
    path: Path
    sha256: str
    size: int
    files: int


class _HashingWriter:
    """A write-only file object that hashes and counts what passes through."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self.raw.write(data)

    def flush(self) -> None:
        self.raw.flush()


def backup_sources(config: DeploymentConfig) -> list[tuple[Path, str]]:
    """The (source path, name in archive) pairs a backup holds, existing only."""
    tree = config.tree
    names = [".env", "config"]
    if config.compose_file is not None:
        compose = (config.root / config.compose_file).resolve()
        if compose.parent == tree.resolve():
            names.insert(0, compose.name)
    names += list(config.user_data)
    sources = [(tree / name, name) for name in names if os.path.lexists(tree / name)]
    if config.config_path.exists():
        sources.append((config.config_path, f"{ROOT_PREFIX}/config.toml"))
    return sources


def _archive_name(kind: str, version: str, directory: Path) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d_%H-%M-%S")
    name = f"backup_{kind}_v{version}_{stamp}.tar.gz"
    serial = 2
    while (directory / name).exists():
        name = f"backup_{kind}_v{version}_{stamp}-{serial}.tar.gz"
        serial += 1
    return name


def remove_partial_backups(directory: Path) -> list[Path]:
    """Delete archives a crashed run left half-written; returns what went."""
    removed = []
    if directory.is_dir():
        for path in directory.glob(f".backup_*{PARTIAL_SUFFIX}"):
            path.unlink()
            removed.append(path)
            logger.warning("removed partial backup %s left by an interrupted run", path)
    if removed:
        fsio.fsync_dir(directory)
    return removed


def create_backup(
    config: DeploymentConfig, kind: str, version: str, tx: str | None = None
) -> tuple[BackupResult, BackupCreated]:
    """Write a backup archive durably.

    Args:
        config: the deployment.
        kind: ``pre-upgrade`` or ``manual``.
        version: the installed version, for the archive's name.
        tx: the transaction the backup belongs to, if any.

    Returns:
        The result and the ``BackupCreated`` event for the caller to journal.

    Raises:
        OSError: the archive could not be written (nothing is listed then).
    """
    started = time.monotonic()
    directory = config.root / config.backup_dir
    directory.mkdir(parents=True, exist_ok=True)
    remove_partial_backups(directory)
    name = _archive_name(kind, version, directory)
    final = directory / name
    partial = directory / f".{name}{PARTIAL_SUFFIX}"

    files = 0
    with open(partial, "wb") as raw:
        writer = _HashingWriter(raw)
        with tarfile.open(fileobj=writer, mode="w:gz", compresslevel=6) as archive:
            for source, arcname in backup_sources(config):
                files += _add(archive, source, arcname)
        raw.flush()
        fsio.note_write(partial)
        crashpoint("backup.written")
        fsio.fsync_fd(raw.fileno(), partial)
    os.replace(partial, final)
    fsio.fsync_dir(directory)
    crashpoint("backup.renamed")

    backup_id = name.removesuffix(".tar.gz")
    result = BackupResult(
        backup_id, final, writer.digest.hexdigest(), writer.size, files
    )
    event = BackupCreated(
        at=time.time(),
        tx=tx,
        backup_id=backup_id,
        path=str(final.relative_to(config.root)),
        kind=kind,
        version=version,
        sha256=result.sha256,
        size=result.size,
        files=files,
        seconds=time.monotonic() - started,
    )
    logger.info("backup %s written: %d files, %d bytes", backup_id, files, writer.size)
    return result, event


def _add(archive: tarfile.TarFile, source: Path, arcname: str) -> int:
    """Add a file or a whole tree (empty folders, links and modes kept)."""
    archive.add(source, arcname=arcname, recursive=False)
    count = 1
    if source.is_dir() and not source.is_symlink():
        for child in sorted(source.iterdir()):
            count += _add(archive, child, f"{arcname}/{child.name}")
    return count


def verify_backup(config: DeploymentConfig, path: Path, sha256: str) -> bool:
    """Whether the archive at ``path`` still hashes to ``sha256``."""
    full = config.root / path
    digest = hashlib.sha256()
    try:
        with open(full, "rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
    except FileNotFoundError:
        return False
    return digest.hexdigest() == sha256


def unpack_backup(archive: Path, dest: Path) -> None:
    """Unpack a backup archive into the new folder ``dest``.

    Unlike a release package, a backup may hold symlinks (a configuration
    file pointing at another, a folder kept on another disk) and any
    permission bits, and is restored as it was. tarfile's ``data`` filter
    still refuses absolute names, ``..``, devices and hard links leading
    outside ``dest``. A symlink may point anywhere, as the operator's did,
    but no member may lie beneath one, so nothing is ever written through a
    link. The archive's sha256 was checked against the journal before.

    Raises:
        BackupUnreadableError: the archive is damaged or holds an unsafe member.
    """
    dest.mkdir(parents=True)
    links: set[str] = set()
    try:
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(
                dest, filter=lambda member, path: _as_archived(member, path, links)
            )
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise BackupUnreadableError(archive, str(exc)) from exc


class _BeneathLinkError(tarfile.FilterError):
    def __init__(self, member: tarfile.TarInfo, link: str) -> None:
        super().__init__(f"{member.name!r} lies beneath the symlink {link!r}")
        self.tarinfo = member


def _as_archived(
    member: tarfile.TarInfo, dest: str, links: set[str]
) -> tarfile.TarInfo | None:
    """The ``data`` filter's safety checks, with the archived modes kept (the
    filter would drop group and other write bits, setgid folders ...) and
    symlinks kept whatever their target (``links`` collects them)."""
    name = posixpath.normpath(member.name)
    for link in links:
        if name.startswith(link + "/"):
            raise _BeneathLinkError(member, link)
    try:
        checked = tarfile.data_filter(member, dest)
    except (tarfile.AbsoluteLinkError, tarfile.LinkOutsideDestinationError):
        if not member.issym():
            raise
        checked = member
    if member.issym():
        links.add(name)
    if checked is None or not (member.isfile() or member.isdir()):
        return checked
    return checked.replace(mode=member.mode & 0o7777, deep=False)


def restore_ops(
    staged_root: Path, user_data: tuple[str, ...], with_data: bool
) -> list[Op]:
    """The operations that put a staged backup back into the project folder.

    The compose file, ``.env`` and ``config/`` always come back; user-data
    folders only ``with_data``. ``config.toml`` is not restored: the version
    it records follows the journal.
    """
    ops = []
    for entry in sorted(staged_root.iterdir()):
        name = entry.name
        if name == ROOT_PREFIX or (name in user_data and not with_data):
            continue
        if entry.is_symlink():
            ops.append(Op.make_symlink(name, os.readlink(entry), restoring=True))
        elif entry.is_dir():
            ops.append(Op.replace_dir(name, source=entry, restoring=True))
        elif entry.is_file():
            ops.append(
                Op.put_file(name, source=entry, mode=entry.stat().st_mode & 0o7777)
            )
    return ops
