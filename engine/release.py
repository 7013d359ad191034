"""The producer side: build a release (patch, full package, manifest) from two
trees, so operators publish with the same tool that installs.

``build_release`` compares the old and the new project folder:

- a file that is new, or whose content or permission bits changed, goes to
  ``replace.files``;
- a directory that is new as a whole (its parent existed before) goes to
  ``replace.directories`` with everything under it;
- a file or directory that is gone goes to ``delete.files`` or
  ``delete.directories`` (only the outermost removed directory is listed).

Names the extractor skips in zips (``is_junk``: ``.git/``, ``.DS_Store`` ...)
are left out of both trees, so every package stages to the same tree.
Symbolic links and special files are refused: packages carry only regular
files and directories.

Outputs in ``out_dir``: the patch (a zip with a ``docker/`` prefix, as the
existing client expects), the full package (a tar.gz with a ``docker/``
prefix), and ``manifest.json`` in the enhanced shape, with both architectures
pointing at the same packages and a legacy ``packages.full`` for old readers.
Packages are reproducible: fixed timestamps, sorted members, no owner names.
With a signing key, every package and the manifest are signed (see
``engine.manifest`` for what is signed).
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import stat
import tarfile
import zipfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from engine.download import CHUNK_BYTES, file_sha256
from engine.errors import BadInputError
from engine.extract import PREFIX, is_junk
from engine.manifest import package_signature, sign_document
from engine.versions import ARCHES, Version
from journal import fsio

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


class TreeError(BadInputError):
    """A release tree holds something a package cannot carry."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path} {problem}")
        self.path = path
        self.problem = problem


@dataclass(frozen=True)
class TreeEntry:
    is_dir: bool
    mode: int
    size: int = 0
    sha256: str = ""


@dataclass(frozen=True)
class TreeDiff:
    """Sorted operation lists, paths relative to the project folder."""

    replace_files: list[str]
    replace_dirs: list[str]
    delete_files: list[str]
    delete_dirs: list[str]

    def operations(self) -> dict:
        """The manifest's ``operations`` object."""
        return {
            "replace": {"files": self.replace_files, "directories": self.replace_dirs},
            "delete": {"files": self.delete_files, "directories": self.delete_dirs},
        }


@dataclass(frozen=True)
class BuiltRelease:
    manifest_path: Path
    full_path: Path
    patch_path: Path
    manifest: dict
    diff: TreeDiff


def scan_tree(root: Path) -> dict[str, TreeEntry]:
    """List a project folder: relative path -> entry (junk names left out).

    Raises:
        TreeError: the root is not a directory, or holds a link or special file.
    """
    root = Path(root)
    if not root.is_dir():
        raise TreeError(root, "is not a directory")
    entries: dict[str, TreeEntry] = {}
    for folder, dirnames, filenames in os.walk(root):
        base = Path(folder)
        for name in sorted(dirnames + filenames):
            path = base / name
            relpath = path.relative_to(root).as_posix()
            if is_junk(relpath):
                if name in dirnames:
                    dirnames.remove(name)
                continue
            entries[relpath] = _entry(path)
    return entries


def _entry(path: Path) -> TreeEntry:
    info = os.lstat(path)
    if stat.S_ISDIR(info.st_mode):
        return TreeEntry(True, stat.S_IMODE(info.st_mode) & 0o777)
    if stat.S_ISREG(info.st_mode):
        mode = stat.S_IMODE(info.st_mode) & 0o777
        return TreeEntry(False, mode, info.st_size, file_sha256(path))
    if stat.S_ISLNK(info.st_mode):
        raise TreeError(path, "is a symbolic link; packages carry no links")
    raise TreeError(path, "is a device, FIFO or socket")


def diff_trees(old: dict[str, TreeEntry], new: dict[str, TreeEntry]) -> TreeDiff:
    """Compute the patch operations that turn ``old`` into ``new``."""
    new_dirs = _outermost_dirs(new, old)
    gone_dirs = _outermost_dirs(old, new)
    replace_files = [
        path
        for path, entry in new.items()
        if not entry.is_dir
        and not _under(path, new_dirs)
        and _changed(old.get(path), entry)
    ]
    delete_files = [
        path
        for path, entry in old.items()
        if not entry.is_dir
        and path not in new
        and not _under(path, gone_dirs)
        and not _under(path, new_dirs)
    ]
    return TreeDiff(
        sorted(replace_files), sorted(new_dirs), sorted(delete_files), sorted(gone_dirs)
    )


def _outermost_dirs(
    tree: dict[str, TreeEntry], other: dict[str, TreeEntry]
) -> list[str]:
    """Directories of ``tree`` that are not directories in ``other`` while
    their parent is (or they sit at the top)."""
    found = []
    for path, entry in tree.items():
        if not entry.is_dir or _is_dir(other.get(path)):
            continue
        parent = path.rpartition("/")[0]
        if not parent or _is_dir(other.get(parent)):
            found.append(path)
    return found


def _is_dir(entry: TreeEntry | None) -> bool:
    return entry is not None and entry.is_dir


def _under(path: str, folders: list[str]) -> bool:
    return any(path == folder or path.startswith(folder + "/") for folder in folders)


def _changed(before: TreeEntry | None, after: TreeEntry) -> bool:
    if before is None or before.is_dir:
        return True
    return (before.sha256, before.mode) != (after.sha256, after.mode)


def build_release(
    old_tree: Path,
    new_tree: Path,
    version: str,
    from_version: str | None,
    out_dir: Path,
    sign_key: Ed25519PrivateKey | None = None,
    base_url: str | None = None,
    *,
    release_notes: str = "",
    expires: datetime | None = None,
) -> BuiltRelease:
    """Write the patch, the full package and the manifest into ``out_dir``.

    Args:
        version: the new tree's version.
        from_version: the only version the patch applies to; None makes it
            apply to any lower build of the same base (the existing rule).
        base_url: where the files will be published; package URLs are this
            plus the file name. Without it they are file names relative to
            the manifest.

    Raises:
        TreeError: a tree holds a link or special file.
        BadVersionError: a version does not follow the grammar.
    """
    target = Version.parse(version)
    source = Version.parse(from_version) if from_version else None
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    new_entries = scan_tree(new_tree)
    diff = diff_trees(scan_tree(old_tree), new_entries)

    patch_name = (
        f"updock-{target}-patch" + (f"-from-{source}" if source else "") + ".zip"
    )
    full_path = write_full_package(
        Path(new_tree), new_entries, out_dir / f"updock-{target}-full.tar.gz"
    )
    patch_path = write_patch_package(
        Path(new_tree), new_entries, diff, out_dir / patch_name
    )

    doc = _manifest_document(
        target,
        source,
        diff,
        full_path,
        patch_path,
        sign_key,
        base_url,
        release_notes,
        expires,
    )
    manifest_path = out_dir / MANIFEST_NAME
    text = json.dumps(doc, indent=2, ensure_ascii=False, sort_keys=False) + "\n"
    fsio.write_atomic(manifest_path, text.encode("utf-8"))
    logger.info(
        "built release %s: %d files to replace, %d directories to replace, "
        "%d files and %d directories to delete",
        target,
        len(diff.replace_files),
        len(diff.replace_dirs),
        len(diff.delete_files),
        len(diff.delete_dirs),
    )
    return BuiltRelease(manifest_path, full_path, patch_path, doc, diff)


def _manifest_document(
    target, source, diff, full_path, patch_path, key, base_url, notes, expires
) -> dict:
    full = _package_fields(full_path, key, base_url)
    patch = _package_fields(patch_path, key, base_url)
    patch_entry = {
        "url": patch["url"],
        "hash": f"sha256:{patch['sha256']}",
        "signature": patch["signature"],
        "size": patch["size"],
        "operations": diff.operations(),
        "notes": f"patch to {target}",
    }
    if source is not None:
        patch_entry["from_version"] = str(source)
    doc = {
        "version": str(target),
        "release_date": _rfc3339(datetime.now(timezone.utc)),
        "release_notes": notes,
        "packages": {
            "full": {
                "url": full["url"],
                "hash": f"sha256:{full['sha256']}",
                "signature": full["signature"],
                "size": full["size"],
            }
        },
        "platforms": {arch: dict(full) for arch in ARCHES},
        "patch": {arch: dict(patch_entry) for arch in ARCHES},
    }
    if expires is not None:
        doc["expires"] = _rfc3339(expires)
    return sign_document(doc, key) if key is not None else doc


def _package_fields(path: Path, key, base_url: str | None) -> dict:
    digest = file_sha256(path)
    url = f"{base_url.rstrip('/')}/{path.name}" if base_url else path.name
    signature = package_signature(digest, key) if key is not None else ""
    return {
        "url": url,
        "signature": signature,
        "sha256": digest,
        "size": path.stat().st_size,
    }


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- package writers ----------------------------------------------------------


def write_full_package(root: Path, entries: dict[str, TreeEntry], dest: Path) -> Path:
    """Write every entry of the tree as a reproducible tar.gz under ``docker/``."""
    tmp = dest.with_name(dest.name + ".tmp")
    with open(tmp, "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
            with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
                tar.addfile(_tar_info(PREFIX, TreeEntry(True, 0o755)))
                for relpath in sorted(entries):
                    _add_tar_member(tar, root, relpath, entries[relpath])
        _sync_and_place(raw, tmp, dest)
    return dest


def _tar_info(name: str, entry: TreeEntry) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE if entry.is_dir else tarfile.REGTYPE
    info.mode = entry.mode
    info.size = 0 if entry.is_dir else entry.size
    info.mtime = 0
    return info


def _add_tar_member(tar: tarfile.TarFile, root: Path, relpath: str, entry: TreeEntry):
    info = _tar_info(f"{PREFIX}/{relpath}", entry)
    if entry.is_dir:
        tar.addfile(info)
        return
    with open(root / relpath, "rb") as handle:
        tar.addfile(info, handle)


def write_patch_package(
    root: Path, entries: dict[str, TreeEntry], diff: TreeDiff, dest: Path
) -> Path:
    """Write the files a patch replaces into a reproducible zip under ``docker/``."""
    names = set(diff.replace_files)
    for folder in diff.replace_dirs:
        names.update(path for path in entries if _under(path, [folder]))
    tmp = dest.with_name(dest.name + ".tmp")
    with open(tmp, "wb") as raw:
        with zipfile.ZipFile(raw, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for relpath in sorted(names):
                _add_zip_member(zf, root, relpath, entries[relpath])
        _sync_and_place(raw, tmp, dest)
    return dest


def _add_zip_member(zf: zipfile.ZipFile, root: Path, relpath: str, entry: TreeEntry):
    name = f"{PREFIX}/{relpath}" + ("/" if entry.is_dir else "")
    info = zipfile.ZipInfo(name, date_time=_ZIP_EPOCH)
    info.create_system = 3
    kind = stat.S_IFDIR if entry.is_dir else stat.S_IFREG
    info.external_attr = (kind | entry.mode) << 16 | (0x10 if entry.is_dir else 0)
    if entry.is_dir:
        zf.writestr(info, b"")
        return
    info.compress_type = zipfile.ZIP_DEFLATED
    info.file_size = entry.size
    with open(root / relpath, "rb") as src, zf.open(info, "w") as out:
        while chunk := src.read(CHUNK_BYTES):
            out.write(chunk)


def _sync_and_place(raw, tmp: Path, dest: Path) -> None:
    raw.flush()
    fsio.note_write(tmp)
    fsio.fsync_fd(raw.fileno(), tmp)
    os.replace(tmp, dest)
    fsio.fsync_dir(dest.parent)
    logger.debug("wrote %s", dest)
