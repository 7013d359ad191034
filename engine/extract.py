"""Safe extraction of zip and tar.gz packages into a fresh staging folder.

Nothing here touches the deployment: a package is unpacked into a staging
folder of its own, checked, and only then handed to the planner. Python
3.11.7's ``tarfile.data_filter`` predates the 2025 fixes to it
(CVE-2025-4517 and its siblings), so every tar member goes through that filter
*and* through updock's own, stricter allowlist; zip members go through the
same allowlist:

- only regular files and directories. Symbolic and hard links are refused,
  whatever their target: a package never needs them, and refusing them all
  closes every "plant a link, then write through it" path;
- no absolute names, no ``..`` component, no backslash or NUL;
- no device, FIFO, socket or other special member; no setuid or setgid bit;
- no member that names the staging folder itself as a file;
- no name twice, and no name that is a file in one member and a directory in
  another (overlapping entries);
- zip: no entries whose data overlap (the "overlapped zip bomb", CPython
  gh-109858), no encrypted entries, and every entry must produce exactly the
  size its header states;
- caps on the number of entries, the bytes written and the ratio of bytes
  written to the archive's size. They are enforced while streaming, on the
  bytes actually written, never on sizes read from headers.

Modes: a file keeps ``mode & 0o777`` from the tar header or from the zip
entry's Unix attributes when present; otherwise files get 0644 and
directories 0755. Files are created with ``O_EXCL | O_NOFOLLOW``.

Layout: when every member sits under one top-level ``docker/`` folder, that
prefix is removed, so packages with and without it stage the same way. zip
entries matching the existing client's junk list (``__MACOSX``, ``.DS_Store``,
``._*``, ``.git/`` ...) are skipped.
"""

from __future__ import annotations

import errno
import gzip
import logging
import os
import shutil
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING

from engine.errors import BadInputError, InsufficientSpaceError
from engine.manifest import normalize_relpath
from engine.paths import THROUGH_LINK_HINT
from journal import fsio

if TYPE_CHECKING:
    from engine.manifest import Operations

logger = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20
PREFIX = "docker"
DEFAULT_FILE_MODE = 0o644
DEFAULT_DIR_MODE = 0o755
_JUNK_DIRS = frozenset({"__MACOSX", ".git", ".vscode", ".idea", ".vs"})
_JUNK_NAMES = frozenset({".DS_Store", ".gitignore", ".gitattributes", ".gitmodules"})
_JUNK_SUFFIXES = (".tmp", ".temp", ".bak")
_ZIP_LOCAL_HEADER = 30
_NO_LINKS = "is a link; packages may not hold links"
_NO_SPECIAL = "is a device, FIFO or special file"
_CORRUPT = (
    tarfile.TarError,
    zipfile.BadZipFile,
    EOFError,
    zlib.error,
    gzip.BadGzipFile,
)
_MAX_TAR_PADDING = 1 << 20


class ArchiveError(BadInputError):
    """A package cannot be staged; nothing was changed."""


class UnknownArchiveError(ArchiveError):
    def __init__(self, archive: Path) -> None:
        super().__init__(f"{archive} is neither a zip nor a gzip'd tar archive")
        self.archive = archive


class CorruptArchiveError(ArchiveError):
    """The archive is truncated or damaged."""

    def __init__(self, archive: Path, problem: str) -> None:
        super().__init__(f"{archive} is damaged: {problem}")
        self.archive = archive
        self.problem = problem


class UnsafeMemberError(ArchiveError):
    """A member breaks the allowlist in this module's docstring."""

    def __init__(self, archive: Path, member: str, problem: str) -> None:
        super().__init__(f"{archive}: member {member!r} {problem}")
        self.archive = archive
        self.member = member
        self.problem = problem


class ArchiveLimitError(ArchiveError):
    """An extraction cap was reached (a decompression bomb, or a package
    larger than allowed)."""

    def __init__(self, archive: Path, problem: str) -> None:
        super().__init__(f"{archive}: {problem}; extraction stopped")
        self.archive = archive
        self.problem = problem


class PatchContentError(BadInputError):
    """A patch operation names a path that is unsafe or not in the package."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"patch path {path!r} {problem}")
        self.path = path
        self.problem = problem


class UnpackSpaceError(InsufficientSpaceError):
    """The disk filled up while a package was unpacked into staging."""

    def __init__(self, archive: Path, staging: Path, written: int) -> None:
        super().__init__(
            f"no space left on the filesystem of {staging.parent} while unpacking "
            f"{archive.name} ({written} bytes unpacked so far); nothing was changed"
        )
        self.path = staging.parent
        self.written = written


class DeployedLinkError(PatchContentError):
    """A patch path lies beneath a symbolic link of the deployment: the
    deployment, not the package, has to change."""

    hint = THROUGH_LINK_HINT

    def __init__(self, path: str, link: Path) -> None:
        super().__init__(path, f"passes through the symbolic link {link}")
        self.link = link


@dataclass(frozen=True)
class ExtractLimits:
    """Caps enforced while streaming. The ratio is checked once
    ``ratio_floor`` bytes were written, so small text-only packages pass."""

    max_entries: int = 200_000
    max_total_bytes: int = 32 * 1024**3
    max_ratio: float = 200.0
    ratio_floor: int = 64 * 1024**2


@dataclass(frozen=True)
class StagedFile:
    size: int
    mode: int


@dataclass(frozen=True)
class Staged:
    """What a package put into its staging folder (paths relative to root)."""

    root: Path
    files: dict[str, StagedFile]
    dirs: dict[str, int]
    total_bytes: int


@dataclass
class _Member:
    name: str
    is_dir: bool
    mode: int | None
    declared_size: int
    stream: IO[bytes] | None = None
    crc: int | None = None


@dataclass
class _Writer:
    """Places members under the staging root and keeps the running totals."""

    archive: Path
    root: Path
    limits: ExtractLimits
    byte_budget: int
    files: dict[str, StagedFile] = field(default_factory=dict)
    dirs: dict[str, int] = field(default_factory=dict)
    explicit_dirs: set[str] = field(default_factory=set)
    entries: int = 0
    written: int = 0


def is_junk(name: str) -> bool:
    """The existing client's list of names never installed from a zip."""
    parts = [part for part in name.split("/") if part]
    if not parts:
        return False
    if any(part in _JUNK_DIRS for part in parts):
        return True
    base = parts[-1]
    return base in _JUNK_NAMES or base.startswith("._") or base.endswith(_JUNK_SUFFIXES)


def stage_package(
    archive: Path,
    staging: Path,
    *,
    limits: ExtractLimits = ExtractLimits(),
    sync: bool = True,
) -> Staged:
    """Unpack ``archive`` into the new folder ``staging``.

    Args:
        archive: a zip or tar.gz file (told apart by content, not name).
        staging: must not exist; its parent must.
        sync: make the staged files durable (one ``syncfs``) before returning.

    Returns:
        The listing of what was staged.

    Raises:
        ArchiveError: unknown format, damaged, unsafe member or cap reached;
            the staging folder is removed.
        FileExistsError: ``staging`` already exists.
    """
    archive = Path(archive)
    staging = Path(staging)
    staging.mkdir(mode=0o700)
    budget = max(int(limits.max_ratio * archive.stat().st_size), limits.ratio_floor)
    writer = _Writer(archive, staging, limits, budget)
    try:
        _unpack(writer)
        staged = _strip_prefix(writer)
        _apply_dir_modes(staged)
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise UnpackSpaceError(archive, staging, writer.written) from exc
        raise
    if sync:
        fsio.syncfs(staged.root)
    logger.info(
        "staged %s: %d files, %d bytes", archive, len(staged.files), staged.total_bytes
    )
    return staged


def _unpack(writer: _Writer) -> None:
    """Place every member; translate the archive libraries' errors (raised
    while listing members or while streaming their data) in one place."""
    archive = writer.archive
    try:
        for member in _members(archive, writer.root, writer.limits):
            _place(writer, member)
    except tarfile.FilterError as exc:
        problem = f"is refused by tarfile's data filter ({type(exc).__name__})"
        raise UnsafeMemberError(archive, exc.tarinfo.name, problem) from exc
    except _CORRUPT as exc:
        raise CorruptArchiveError(archive, str(exc) or type(exc).__name__) from exc
    except (zipfile.LargeZipFile, NotImplementedError) as exc:
        raise CorruptArchiveError(archive, f"unsupported feature: {exc}") from exc


def _members(archive: Path, root: Path, limits: ExtractLimits) -> Iterator[_Member]:
    with open(archive, "rb") as handle:
        magic = handle.read(4)
    if magic[:2] == b"\x1f\x8b":
        yield from _tar_members(archive, root)
    elif magic in (b"PK\x03\x04", b"PK\x05\x06"):
        yield from _zip_members(archive, limits)
    else:
        raise UnknownArchiveError(archive)


# -- tar ----------------------------------------------------------------------


def _tar_members(archive: Path, root: Path) -> Iterator[_Member]:
    # gzip.GzipFile checks the gzip trailer (CRC and length), so a cut or
    # damaged stream fails at its end; tarfile's own gz reader does not.
    with gzip.open(archive, "rb") as gz, tarfile.open(fileobj=gz, mode="r:") as tar:
        for info in tar:
            yield _tar_member(archive, root, tar, info)
        _check_tar_end(archive, gz, tar.offset)


def _check_tar_end(archive: Path, gz: gzip.GzipFile, offset: int) -> None:
    """After the last member only zero blocks may follow. tarfile stops
    quietly at a damaged header (one with a lying size field, say), so any
    other byte here means members were lost."""
    gz.seek(offset)
    trailing = 0
    while chunk := gz.read(CHUNK_BYTES):
        trailing += len(chunk)
        if chunk.count(0) != len(chunk):
            raise CorruptArchiveError(archive, f"unreadable data at offset {offset}")
        if trailing > _MAX_TAR_PADDING:
            raise ArchiveLimitError(archive, "more padding than any tar writer adds")


def _tar_member(
    archive: Path, root: Path, tar: tarfile.TarFile, info: tarfile.TarInfo
) -> _Member:
    if info.issym() or info.islnk():
        raise UnsafeMemberError(archive, info.name, _NO_LINKS)
    if not (info.isreg() or info.isdir()):
        raise UnsafeMemberError(archive, info.name, _NO_SPECIAL)
    _check_mode_bits(archive, info.name, info.mode)
    tarfile.data_filter(info, str(root))
    stream = tar.extractfile(info) if info.isreg() else None
    return _Member(info.name, info.isdir(), info.mode, info.size, stream)


# -- zip ----------------------------------------------------------------------


def _zip_members(archive: Path, limits: ExtractLimits) -> Iterator[_Member]:
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        if len(infos) > limits.max_entries:
            raise ArchiveLimitError(archive, f"more than {limits.max_entries} entries")
        _check_zip_overlap(archive, infos, zf.start_dir)
        for info in infos:
            member = _zip_member(archive, info)
            if member is None:
                continue
            if not member.is_dir:
                member.stream = zf.open(info)
            yield member


def _check_zip_overlap(archive: Path, infos: list[zipfile.ZipInfo], end: int) -> None:
    """Entries' data must not overlap each other or the central directory."""
    ordered = sorted(infos, key=lambda info: info.header_offset)
    for info, following in zip(ordered, ordered[1:] + [None], strict=True):
        limit = following.header_offset if following is not None else end
        minimum = info.header_offset + _ZIP_LOCAL_HEADER + len(info.orig_filename)
        if minimum + info.compress_size > limit:
            raise UnsafeMemberError(archive, info.filename, "overlaps another entry")


def _zip_member(archive: Path, info: zipfile.ZipInfo) -> _Member | None:
    name = info.filename
    if info.flag_bits & 0x1:
        raise UnsafeMemberError(archive, name, "is encrypted")
    unix = info.external_attr >> 16 if info.create_system == 3 else 0
    kind = stat.S_IFMT(unix)
    if kind == stat.S_IFLNK:
        raise UnsafeMemberError(archive, name, _NO_LINKS)
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise UnsafeMemberError(archive, name, _NO_SPECIAL)
    _check_mode_bits(archive, name, unix)
    if is_junk(name):
        logger.debug("skipping junk entry %s of %s", name, archive)
        return None
    is_dir = name.endswith("/") or kind == stat.S_IFDIR
    mode = unix & 0o7777 if unix & 0o777 else None
    return _Member(name, is_dir, mode, info.file_size, crc=info.CRC)


def _check_mode_bits(archive: Path, name: str, mode: int) -> None:
    if mode & (stat.S_ISUID | stat.S_ISGID):
        raise UnsafeMemberError(archive, name, "has the setuid or setgid bit")


# -- placing members ----------------------------------------------------------


def _place(writer: _Writer, member: _Member) -> None:
    writer.entries += 1
    if writer.entries > writer.limits.max_entries:
        raise ArchiveLimitError(
            writer.archive, f"more than {writer.limits.max_entries} entries"
        )
    try:
        relpath = normalize_relpath(member.name)
    except ValueError as exc:
        raise UnsafeMemberError(writer.archive, member.name, str(exc)) from exc

    if not relpath:
        if member.is_dir:
            return
        raise UnsafeMemberError(
            writer.archive, member.name, "would replace the staging root"
        )
    _make_parents(writer, member.name, relpath)
    if member.is_dir:
        _place_dir(writer, member, relpath)
    else:
        _place_file(writer, member, relpath)


def _make_parents(writer: _Writer, name: str, relpath: str) -> None:
    parts = relpath.split("/")
    for depth in range(1, len(parts)):
        parent = "/".join(parts[:depth])
        if parent in writer.files:
            raise UnsafeMemberError(
                writer.archive, name, f"lies under the file {parent!r}"
            )
        if parent not in writer.dirs:
            os.mkdir(writer.root / parent, 0o700)
            writer.dirs[parent] = DEFAULT_DIR_MODE


def _place_dir(writer: _Writer, member: _Member, relpath: str) -> None:
    if relpath in writer.files:
        raise UnsafeMemberError(writer.archive, member.name, "is also a file")
    if relpath in writer.explicit_dirs:
        raise UnsafeMemberError(writer.archive, member.name, "appears twice")
    if relpath not in writer.dirs:
        os.mkdir(writer.root / relpath, 0o700)
    writer.explicit_dirs.add(relpath)
    mode = member.mode & 0o777 if member.mode is not None else DEFAULT_DIR_MODE
    writer.dirs[relpath] = mode


def _place_file(writer: _Writer, member: _Member, relpath: str) -> None:
    if relpath in writer.files:
        raise UnsafeMemberError(writer.archive, member.name, "appears twice")
    if relpath in writer.dirs:
        raise UnsafeMemberError(writer.archive, member.name, "is also a directory")

    target = writer.root / relpath
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(target, flags, 0o600)
    writer.files[relpath] = StagedFile(0, DEFAULT_FILE_MODE)
    with os.fdopen(fd, "wb") as out:
        size = _copy_member(writer, member, out)
        mode = member.mode & 0o777 if member.mode is not None else DEFAULT_FILE_MODE
        os.fchmod(out.fileno(), mode)
    fsio.note_write(target)
    writer.files[relpath] = StagedFile(size, mode)


def _copy_member(writer: _Writer, member: _Member, out: IO[bytes]) -> int:
    """Copy one member's data, counting real bytes against the caps.

    zip members are also checked against their CRC: zipfile stops reading at
    the size the header states and checks the CRC only when the compressed
    stream ends, so a header that understates the size would otherwise
    truncate the file silently.
    """
    size = 0
    crc = 0
    source = member.stream
    while chunk := source.read(CHUNK_BYTES):
        size += len(chunk)
        writer.written += len(chunk)
        if size > member.declared_size:
            raise UnsafeMemberError(
                writer.archive, member.name, _lie(member, "more than")
            )
        _check_budget(writer)
        out.write(chunk)
        if member.crc is not None:
            crc = zlib.crc32(chunk, crc)
    if size != member.declared_size:
        raise UnsafeMemberError(writer.archive, member.name, _lie(member, "fewer than"))
    if member.crc is not None and crc != member.crc:
        raise UnsafeMemberError(writer.archive, member.name, "fails its CRC check")
    return size


def _lie(member: _Member, how: str) -> str:
    return f"holds {how} its stated {member.declared_size} bytes"


def _check_budget(writer: _Writer) -> None:
    limits = writer.limits
    if writer.written > limits.max_total_bytes:
        raise ArchiveLimitError(
            writer.archive, f"more than {limits.max_total_bytes} bytes"
        )
    if writer.written > writer.byte_budget:
        raise ArchiveLimitError(
            writer.archive,
            f"expands more than {limits.max_ratio:g} times its size",
        )


def _apply_dir_modes(staged: Staged) -> None:
    """Directories were created 0700 so members could be written into them;
    they get their own modes last (after the prefix is removed, since moving
    a directory needs write permission on it)."""
    for relpath, mode in staged.dirs.items():
        os.chmod(staged.root / relpath, mode)


def _strip_prefix(writer: _Writer) -> Staged:
    """Remove a lone top-level ``docker/`` folder; list what was staged."""
    root = writer.root
    tops = {relpath.split("/")[0] for relpath in [*writer.files, *writer.dirs]}
    if tops != {PREFIX} or PREFIX not in writer.dirs:
        return Staged(root, writer.files, writer.dirs, writer.written)

    holder = root.with_name(root.name + ".unwrap")
    os.rename(root, holder)
    os.rename(holder / PREFIX, root)
    os.rmdir(holder)
    cut = len(PREFIX) + 1
    files = {path[cut:]: entry for path, entry in writer.files.items()}
    dirs = {path[cut:]: mode for path, mode in writer.dirs.items() if path != PREFIX}
    return Staged(root, files, dirs, writer.written)


# -- patch checks -------------------------------------------------------------


def check_patch_package(
    staged: Path, operations: Operations, tree_root: Path | None = None
) -> None:
    """Refuse a patch before anything changes.

    Every path an operation names must normalise to a path inside the project
    folder; every file and directory to replace must be in the staged package
    (a regular file or a directory there); and, with ``tree_root``, no
    operation may reach through a symbolic link already in the deployment.

    Raises:
        PatchContentError: the first path that fails, with the reason.
    """
    staged = Path(staged)
    for side, kind, path in _operation_paths(operations):
        relpath = op_relpath(path)
        if tree_root is not None:
            _check_tree_ancestors(Path(tree_root), path, relpath)
        if side != "replace":
            continue
        found = _lstat(staged / relpath)
        wanted = stat.S_ISREG if kind == "files" else stat.S_ISDIR
        if found is None or not wanted(found.st_mode):
            what = "file" if kind == "files" else "directory"
            raise PatchContentError(
                path, f"is listed to replace but the package has no such {what}"
            )


def _operation_paths(operations: Operations) -> Iterator[tuple[str, str, str]]:
    for side in ("replace", "delete"):
        fileset = getattr(operations, side)
        if fileset is None:
            continue
        for kind in ("files", "directories"):
            for path in getattr(fileset, kind):
                yield side, kind, path


def op_relpath(path: str) -> str:
    """Normalise an operation path; it must name something inside the
    project folder.

    Raises:
        PatchContentError: absolute, ``..``, or the folder itself.
    """
    try:
        relpath = normalize_relpath(path)
    except ValueError as exc:
        raise PatchContentError(path, f"leaves the deployment: it {exc}") from exc
    if not relpath:
        raise PatchContentError(path, "names the project folder itself")
    return relpath


def _check_tree_ancestors(tree_root: Path, path: str, relpath: str) -> None:
    parts = relpath.split("/")
    for depth in range(1, len(parts)):
        ancestor = tree_root.joinpath(*parts[:depth])
        found = _lstat(ancestor)
        if found is None:
            return
        if stat.S_ISLNK(found.st_mode):
            raise DeployedLinkError(path, ancestor)
        if not stat.S_ISDIR(found.st_mode):
            raise PatchContentError(
                path, f"lies under {ancestor}, which is not a directory"
            )


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
