"""Turn a staged package and its manifest entry into planned file changes.

Pure: reads only the staging listing and the operations, changes nothing.
The transaction engine turns each ``PlannedChange`` into its own ops.

Patch semantics (paths are relative to the compose project folder, ``docker/``
by default):

- ``replace.files``: each file is put in place from the package.
- ``replace.directories``: each directory is replaced as a whole by the
  package's directory of the same path. Matching is by whole path components:
  replacing ``front`` never touches ``frontend``.
- ``delete.files`` / ``delete.directories``: removed (a missing path is not an
  error for the engine to raise).
- A path listed both to replace and to delete, or deleted inside a replaced
  directory, ends up replaced; a WARNING says so. (The existing client deleted
  such paths after installing them; its own sample manifests list paths on
  both sides, meaning "remove the old copy first".)
- User-data folders (by default the existing client's list: ``upload``,
  ``project_workspace``, ``project_zips``, ``project_nginx``, ``project_init``,
  ``uv_cache``, ``data``) are matched at the top of the project folder only,
  so ``app/web/data/x.json`` is an ordinary path. An operation on or under a
  user-data folder is skipped and reported, never applied.
- Order: deletes first, then replaced directories, then files, so a file
  replaced inside a deleted directory survives. ``put_file`` and
  ``replace_dir`` expect the engine to create missing parent directories and
  to replace whatever is at the path (a file, or a whole directory tree: a
  release can turn a directory into a file and back).

A full package becomes one ``swap_tree`` of the whole project folder that
keeps the deployed user-data folders.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from engine.config import DEFAULT_USER_DATA
from engine.extract import PatchContentError, Staged, op_relpath
from engine.manifest import Operations

logger = logging.getLogger(__name__)

ChangeKind = Literal[
    "put_file", "replace_dir", "delete_file", "delete_tree", "swap_tree"
]


@dataclass(frozen=True)
class PlannedChange:
    """One change to the project folder.

    Attributes:
        kind: what to do.
        path: relative to the project folder; ``""`` for ``swap_tree``.
        source: relative to the staging root; None for deletes.
        mode: permission bits of the file or directory put in place.
        preserve: top-level names ``swap_tree`` keeps from the deployment.
    """

    kind: ChangeKind
    path: str
    source: str | None = None
    mode: int | None = None
    preserve: frozenset[str] = frozenset()


@dataclass(frozen=True)
class SkippedPath:
    path: str
    reason: str


@dataclass(frozen=True)
class Plan:
    kind: Literal["patch", "full"]
    changes: tuple[PlannedChange, ...]
    skipped: tuple[SkippedPath, ...] = ()
    warnings: tuple[str, ...] = ()


def plan_full(staged: Staged, user_data: Iterable[str] = DEFAULT_USER_DATA) -> Plan:
    """Plan a full package: swap the whole project folder, keeping user data."""
    keep = frozenset(user_data)
    tops = {path.split("/")[0] for path in [*staged.files, *staged.dirs]}
    skipped = tuple(
        SkippedPath(name, "user data: the deployed folder is kept")
        for name in sorted(tops & keep)
    )
    change = PlannedChange("swap_tree", "", "", None, keep)
    return Plan("full", (change,), skipped)


def plan_patch(
    staged: Staged,
    operations: Operations,
    user_data: Iterable[str] = DEFAULT_USER_DATA,
) -> Plan:
    """Plan a patch with the semantics in this module's docstring.

    Raises:
        PatchContentError: an unsafe path, or a replaced path missing from
            the package.
    """
    keep = frozenset(user_data)
    skipped: list[SkippedPath] = []
    warnings: list[str] = []

    def wanted(paths: Iterable[str]) -> list[str]:
        return _without_user_data(_unique(paths), keep, skipped)

    replace = operations.replace
    delete = operations.delete
    replace_dirs = _outermost(wanted(replace.directories if replace else ()))
    replace_files = [
        path
        for path in wanted(replace.files if replace else ())
        if not _under_any(path, replace_dirs)
    ]
    replaced = replace_dirs + replace_files
    deletes = [
        (kind, path)
        for kind, paths in (
            ("delete_file", delete.files if delete else ()),
            ("delete_tree", delete.directories if delete else ()),
        )
        for path in wanted(paths)
        if not _kept_by_replace(path, replaced, warnings)
    ]

    changes = [PlannedChange(kind, path) for kind, path in deletes]
    changes += [_replace_dir(staged, path) for path in replace_dirs]
    changes += [_put_file(staged, path) for path in replace_files]
    return Plan("patch", tuple(changes), tuple(skipped), tuple(warnings))


def _unique(paths: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for path in paths:
        seen.setdefault(op_relpath(path), None)
    return list(seen)


def _without_user_data(
    paths: list[str], keep: frozenset[str], skipped: list[SkippedPath]
) -> list[str]:
    kept = []
    for path in paths:
        top = path.split("/")[0]
        if top in keep:
            reason = f"inside the user-data folder {top!r}, never replaced or deleted"
            logger.warning("skipping patch path %s: %s", path, reason)
            skipped.append(SkippedPath(path, reason))
        else:
            kept.append(path)
    return kept


def _is_under(path: str, folder: str) -> bool:
    """True when ``path`` is ``folder`` or inside it, by whole components."""
    return path == folder or path.startswith(folder + "/")


def _under_any(path: str, folders: list[str]) -> bool:
    return any(_is_under(path, folder) for folder in folders)


def _outermost(folders: list[str]) -> list[str]:
    return [
        folder
        for folder in folders
        if not any(other != folder and _is_under(folder, other) for other in folders)
    ]


def _kept_by_replace(path: str, replaced: list[str], warnings: list[str]) -> bool:
    if not _under_any(path, replaced):
        return False
    message = f"{path} is listed to replace and to delete; it is replaced"
    logger.warning("%s", message)
    warnings.append(message)
    return True


def _replace_dir(staged: Staged, path: str) -> PlannedChange:
    mode = staged.dirs.get(path)
    if mode is None:
        raise PatchContentError(path, "is listed to replace but the package lacks it")
    return PlannedChange("replace_dir", path, path, mode)


def _put_file(staged: Staged, path: str) -> PlannedChange:
    entry = staged.files.get(path)
    if entry is None:
        raise PatchContentError(path, "is listed to replace but the package lacks it")
    return PlannedChange("put_file", path, path, entry.mode)
