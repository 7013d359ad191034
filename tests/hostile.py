"""Hostile and broken releases, one builder per fault, for table-driven tests.

Each ``HostileCase`` writes a release (a manifest and its package) into a
folder and says which error family updock must answer with. The same cases
serve the engine tests (``run_release_checks`` runs updock's checks in the
pipeline's order) and the command-line tests (point ``upgrade`` at
``release.manifest`` for a deployment made by ``make_deployment``, with the
journal's high-water mark set to ``release.high_water`` and
``[signing] public_key`` to ``release.public_key``).

Classes covered (the hostile-input classes of the project's field notes):
``..`` and absolute names; symlinks and hard links pointing outside; a link
planted and then written through; devices and FIFOs; setuid bits; overlapping
zip entries and duplicate names; lying size fields; decompression bombs;
truncated archives; listed files missing from the archive; a member that
replaces the destination itself; operation paths escaping the deployment; a
patch for another base version; an older validly signed manifest (rollback);
an expired manifest; bad signatures; hash mismatches; missing or mistyped
fields.
"""

from __future__ import annotations

import copy
import gzip
import hashlib
import io
import json
import os
import random
import stat
import struct
import tarfile
import uuid
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from engine.download import fetch_package
from engine.errors import BadInputError, EngineError, IntegrityError
from engine.extract import check_patch_package, stage_package
from engine.manifest import (
    check_freshness,
    load_manifest,
    package_signature,
    sign_document,
    verify_manifest_signature,
    verify_package_signature,
)
from engine.patchplan import plan_full, plan_patch
from engine.signing import load_public_key, public_key_text
from engine.versions import Version, decide

BASE_VERSION = "1.0.0.0"
PATCH_VERSION = "1.0.0.1"
FULL_VERSION = "1.1.0.0"
GOOD_OPS = {"replace": {"files": ["app/server.py"], "directories": []}}
SERVER_PY = b"print('new server')\n"

DEPLOYMENT_FILES = {
    "docker-compose.yml": b"services:\n  app:\n    image: demo:1.0\n",
    "app/server.py": b"print('old server')\n",
    "app/web/index.html": b"<h1>old</h1>\n",
    "config/site.conf": b"listen 8080\n",
    "data/db.sqlite": b"user rows\n",
    "upload/photo.png": b"\x89PNG user upload\n",
}


@dataclass
class HostileRelease:
    """A release written to disk, and how to present it to updock."""

    manifest: Path
    family: type[EngineError]
    current_version: str = BASE_VERSION
    strategy: str = "auto"
    public_key: str | None = None
    high_water: str | None = None
    tree_setup: Callable[[Path], None] | None = None


@dataclass(frozen=True)
class HostileCase:
    name: str
    fault: str
    build: Callable[[Path], HostileRelease]

    def __repr__(self) -> str:
        return self.name


# -- the deployment and its fingerprint ---------------------------------------


def make_deployment(root: Path) -> Path:
    """A deployment root at ``BASE_VERSION``: config.toml and docker/."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.toml").write_text(
        f'[versions]\ndocker_service = "{BASE_VERSION}"\n', encoding="utf-8"
    )
    for relpath, data in DEPLOYMENT_FILES.items():
        path = root / "docker" / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def tree_digest(root: Path, skip: frozenset[str] = frozenset()) -> str:
    """sha256 over every path under ``root``: kind, mode, content, link target.

    Top-level names in ``skip`` (caches, updock's state) are left out.
    """
    hasher = hashlib.sha256()
    for folder, dirnames, filenames in os.walk(root):
        base = Path(folder)
        if base == root:
            dirnames[:] = [name for name in dirnames if name not in skip]
            filenames = [name for name in filenames if name not in skip]
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            path = base / name
            info = os.lstat(path)
            rel = path.relative_to(root).as_posix()
            hasher.update(f"{rel}\0{info.st_mode:o}\0".encode())
            if stat.S_ISLNK(info.st_mode):
                hasher.update(os.readlink(path).encode())
            elif stat.S_ISREG(info.st_mode):
                hasher.update(path.read_bytes())
    return hasher.hexdigest()


def run_release_checks(release: HostileRelease, root: Path) -> None:
    """updock's checks in the upgrade pipeline's order, up to the plan.

    Raises whatever the first failing check raises.
    """
    manifest = load_manifest(release.manifest)
    check_freshness(manifest, release.high_water)
    key = load_public_key(release.public_key) if release.public_key else None
    if key is not None:
        verify_manifest_signature(manifest, key)
    current = Version.parse(release.current_version)
    decision = decide(current, manifest, "x86_64", strategy=release.strategy)
    package = decision.package
    fetched = fetch_package(
        package.url,
        cache_dir=root / "cacheDuckData" / "download",
        version=manifest.version,
        kind=package.kind,
        arch=package.arch,
        sha256=package.sha256,
        size=package.size,
        require_hash=key is not None,
    )
    if key is not None:
        verify_package_signature(package, fetched.sha256, key)
    staging = root / ".updock" / "staging" / uuid.uuid4().hex
    staging.parent.mkdir(parents=True, exist_ok=True)
    staged = stage_package(fetched.path, staging)
    if package.kind == "full":
        plan_full(staged)
        return
    check_patch_package(staged.root, package.operations, tree_root=root / "docker")
    plan_patch(staged, package.operations)


# -- archive builders ---------------------------------------------------------


def tar_member(
    name: str,
    data: bytes | None = b"",
    *,
    kind: bytes = tarfile.REGTYPE,
    mode: int = 0o644,
    linkname: str = "",
) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.linkname = linkname
    info.size = len(data) if data is not None and kind == tarfile.REGTYPE else 0
    if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        info.devmajor, info.devminor = 1, 3
    return info, data if kind == tarfile.REGTYPE else None


def tar_gz(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz", format=tarfile.GNU_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return raw.getvalue()


def zip_bytes(entries: list[tuple[str, bytes, int | None]]) -> bytes:
    """``entries``: (name, data, Unix st_mode or None)."""
    raw = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns on duplicate names
        with zipfile.ZipFile(raw, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for name, data, mode in entries:
                info = zipfile.ZipInfo(name, date_time=(2030, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                if mode is None:  # a DOS entry: no Unix mode at all
                    info.create_system, info.external_attr = 0, 0x20
                else:
                    info.create_system = 3
                    info.external_attr = mode << 16
                zf.writestr(info, data)
    return raw.getvalue()


def good_patch_zip() -> bytes:
    return zip_bytes([("docker/app/server.py", SERVER_PY, stat.S_IFREG | 0o644)])


def good_full_tar() -> bytes:
    members = [tar_member("docker", kind=tarfile.DIRTYPE, mode=0o755)]
    for relpath, data in DEPLOYMENT_FILES.items():
        members.append(tar_member(f"docker/{relpath}", data))
    return tar_gz(members)


def _central_entries(data: bytes) -> list[int]:
    """Offsets of the central directory headers of a zip."""
    found, start = [], 0
    while (index := data.find(b"PK\x01\x02", start)) != -1:
        found.append(index)
        start = index + 4
    return found


def zip_with_central_field(data: bytes, entry: int, offset: int, value: int) -> bytes:
    """Overwrite a 4-byte field of the ``entry``-th central directory header."""
    patched = bytearray(data)
    where = _central_entries(data)[entry] + offset
    patched[where : where + 4] = struct.pack("<I", value)
    return bytes(patched)


def noise(size: int, seed: int = 7) -> bytes:
    return random.Random(seed).randbytes(size)


# -- release writers ----------------------------------------------------------


def write_release(
    folder: Path,
    package: bytes,
    *,
    kind: str = "patch",
    family: type[EngineError] = BadInputError,
    operations: dict | None = None,
    version: str | None = None,
    from_version: str | None = None,
    key: Ed25519PrivateKey | None = None,
    edit: Callable[[dict], None] | None = None,
    edit_after_signing: Callable[[dict], None] | None = None,
    **release_fields,
) -> HostileRelease:
    """Write ``package`` and a manifest naming it; returns the release."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "package.bin").write_bytes(package)
    digest = hashlib.sha256(package).hexdigest()
    entry = {
        "url": "package.bin",
        "sha256" if kind == "full" else "hash": f"sha256:{digest}",
        "size": len(package),
        "signature": package_signature(digest, key) if key else "",
    }
    if kind == "patch":
        # A deep copy: edits of one case must never leak into the shared default.
        entry["operations"] = copy.deepcopy(
            operations if operations is not None else GOOD_OPS
        )
        if from_version:
            entry["from_version"] = from_version
    default_version = PATCH_VERSION if kind == "patch" else FULL_VERSION
    doc = {
        "version": version or default_version,
        "release_date": "2030-01-01T00:00:00Z",
        "release_notes": "hostile",
        "platforms" if kind == "full" else "patch": {
            "x86_64": copy.deepcopy(entry),
            "aarch64": copy.deepcopy(entry),
        },
    }
    if edit is not None:
        edit(doc)
    if key is not None:
        doc = sign_document(doc, key)
    if edit_after_signing is not None:
        edit_after_signing(doc)
    manifest = folder / "manifest.json"
    manifest.write_text(json.dumps(doc), encoding="utf-8")
    if key is not None:
        release_fields.setdefault("public_key", public_key_text(key.public_key()))
    return HostileRelease(manifest, family, **release_fields)


def write_raw_manifest(folder: Path, text: str) -> HostileRelease:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.json").write_text(text, encoding="utf-8")
    return HostileRelease(folder / "manifest.json", BadInputError)


Package = bytes | Callable[[], bytes]


def _bytes(package: Package) -> bytes:
    return package() if callable(package) else package


def _patch(package: Package, **fields) -> Callable[[Path], HostileRelease]:
    return lambda folder: write_release(folder, _bytes(package), **fields)


def _full(package: Package, **fields) -> Callable[[Path], HostileRelease]:
    return lambda folder: write_release(folder, _bytes(package), kind="full", **fields)


def _edit(path: list, value) -> Callable[[dict], None]:
    """Set ``doc[path...] = value`` (a missing value deletes the key)."""

    def apply(doc: dict) -> None:
        target = doc
        for key in path[:-1]:
            target = target[key]
        if value is _DELETE:
            del target[path[-1]]
        else:
            target[path[-1]] = value

    return apply


_DELETE = object()
_REG = stat.S_IFREG | 0o644


# -- the cases ----------------------------------------------------------------


def _tar_with(*members) -> bytes:
    return tar_gz([tar_member("docker", kind=tarfile.DIRTYPE, mode=0o755), *members])


def _lying_tar() -> bytes:
    """A tar whose first header states 100 bytes for 4000 bytes of data (with
    a recomputed checksum), so the rest of the data is read as headers."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for info, data in (
            tar_member("docker/app/server.py", noise(4000)),
            tar_member("docker/app/other.py", b"second member\n"),
        ):
            tar.addfile(info, io.BytesIO(data))
    data = bytearray(raw.getvalue())
    data[124:136] = b"%011o\0" % 100
    data[148:156] = b" " * 8
    data[148:156] = b"%06o\0 " % sum(data[:512])
    return gzip.compress(bytes(data))


class _Zeros(io.RawIOBase):
    """A readable stream of ``size`` zero bytes (bomb payloads, no memory)."""

    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        count = min(len(buffer), self.left)
        buffer[:count] = bytes(count)
        self.left -= count
        return count


def _tar_bomb(size: int = 160 * 1024 * 1024) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz", compresslevel=9) as tar:
        info = tarfile.TarInfo("docker/zeros.bin")
        info.size = size
        tar.addfile(info, io.BufferedReader(_Zeros(size)))
    return raw.getvalue()


def _zip_bomb(size: int = 160 * 1024 * 1024) -> bytes:
    raw = io.BytesIO()
    with zipfile.ZipFile(raw, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        info = zipfile.ZipInfo("docker/app/server.py", date_time=(2030, 1, 1, 0, 0, 0))
        info.compress_type = zipfile.ZIP_DEFLATED
        with zf.open(info, "w") as out:
            block = bytes(1 << 20)
            for _ in range(size >> 20):
                out.write(block)
    return raw.getvalue()


def _overlapping_zip() -> bytes:
    data = zip_bytes(
        [("docker/app/server.py", SERVER_PY, _REG), ("docker/app/extra.py", b"x", _REG)]
    )
    first_offset = struct.unpack_from("<I", data, _central_entries(data)[0] + 42)[0]
    return zip_with_central_field(data, 1, 42, first_offset)


def _outside_link(root: Path) -> None:
    outside = root / "outside"
    outside.mkdir()
    (outside / "site.conf").write_text("not the deployment's\n")
    os.symlink(outside, root / "docker" / "linked")


def _other_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def _signed(**fields) -> Callable[[Path], HostileRelease]:
    def build(folder: Path) -> HostileRelease:
        return write_release(
            folder, good_patch_zip(), key=Ed25519PrivateKey.generate(), **fields
        )

    return build


def _wrong_key_signature(doc: dict) -> None:
    doc["signature"] = sign_document(doc, _other_key())["signature"]


def _wrong_package_signature(doc: dict) -> None:
    for entry in doc["patch"].values():
        digest = entry["hash"].split(":")[1]
        entry["signature"] = package_signature(digest, _other_key())


def _cases() -> list[HostileCase]:
    integrity = IntegrityError
    names = "../ and absolute names"
    links = "symlinks and hard links outside"
    through = "link planted then written through"
    special = "devices and FIFOs"
    setuid = "setuid bits"
    overlap = "overlapping zip entries, duplicate names"
    lying = "lying size fields"
    bomb = "decompression bombs"
    cut = "truncated archives"
    missing = "listed files missing from the archive"
    root = "member replacing the destination itself"
    escape = "operation paths escaping the deployment"
    base = "patch for another base version"
    rollback = "older validly signed manifest (rollback)"
    expired = "expired manifest"
    signature = "bad signature"
    digest = "hash mismatch"
    fields = "missing or mistyped fields"
    full_ok = good_full_tar()
    return [
        HostileCase(
            "tar_dotdot_name",
            names,
            _full(_tar_with(tar_member("docker/../../evil", b"x"))),
        ),
        HostileCase(
            "tar_absolute_name",
            names,
            _full(_tar_with(tar_member("/tmp/updock-evil", b"x"))),
        ),
        HostileCase(
            "zip_dotdot_name",
            names,
            _patch(
                zip_bytes(
                    [
                        ("docker/app/server.py", SERVER_PY, _REG),
                        ("docker/../../evil.py", b"x", _REG),
                    ]
                )
            ),
        ),
        HostileCase(
            "zip_absolute_name",
            names,
            _patch(
                zip_bytes(
                    [
                        ("/tmp/updock-evil", b"x", _REG),
                        ("docker/app/server.py", SERVER_PY, _REG),
                    ]
                )
            ),
        ),
        HostileCase(
            "tar_symlink_outside",
            links,
            _full(
                _tar_with(
                    tar_member("docker/etc", kind=tarfile.SYMTYPE, linkname="/etc")
                )
            ),
        ),
        HostileCase(
            "tar_symlink_inside",
            links,
            _full(
                _tar_with(
                    tar_member("docker/alias", kind=tarfile.SYMTYPE, linkname="app")
                )
            ),
        ),
        HostileCase(
            "tar_hardlink_outside",
            links,
            _full(
                _tar_with(
                    tar_member(
                        "docker/pw", kind=tarfile.LNKTYPE, linkname="/etc/passwd"
                    )
                )
            ),
        ),
        HostileCase(
            "zip_symlink_outside",
            links,
            _patch(
                zip_bytes(
                    [("docker/app/server.py", b"/etc/passwd", stat.S_IFLNK | 0o777)]
                )
            ),
        ),
        HostileCase(
            "tar_link_then_write_through",
            through,
            _full(
                _tar_with(
                    tar_member("docker/app", kind=tarfile.SYMTYPE, linkname="/tmp"),
                    tar_member("docker/app/evil.py", b"x"),
                )
            ),
        ),
        HostileCase(
            "deployment_link_written_through",
            through,
            lambda folder: write_release(
                folder,
                zip_bytes([("docker/linked/site.conf", b"evil\n", _REG)]),
                operations={
                    "replace": {"files": ["linked/site.conf"], "directories": []}
                },
                tree_setup=_outside_link,
            ),
        ),
        HostileCase(
            "tar_char_device",
            special,
            _full(_tar_with(tar_member("docker/null", kind=tarfile.CHRTYPE))),
        ),
        HostileCase(
            "tar_fifo",
            special,
            _full(_tar_with(tar_member("docker/pipe", kind=tarfile.FIFOTYPE))),
        ),
        HostileCase(
            "zip_fifo",
            special,
            _patch(zip_bytes([("docker/app/server.py", b"", stat.S_IFIFO | 0o644)])),
        ),
        HostileCase(
            "tar_setuid_file",
            setuid,
            _full(_tar_with(tar_member("docker/app/run", b"#!/bin/sh\n", mode=0o4755))),
        ),
        HostileCase(
            "zip_setgid_file",
            setuid,
            _patch(
                zip_bytes([("docker/app/server.py", SERVER_PY, stat.S_IFREG | 0o2755)])
            ),
        ),
        HostileCase("zip_overlapping_entries", overlap, _patch(_overlapping_zip)),
        HostileCase(
            "zip_duplicate_names",
            overlap,
            _patch(
                zip_bytes(
                    [
                        ("docker/app/server.py", SERVER_PY, _REG),
                        ("docker/app/server.py", b"second\n", _REG),
                    ]
                )
            ),
        ),
        HostileCase(
            "tar_duplicate_names",
            overlap,
            _full(
                _tar_with(
                    tar_member("docker/a.txt", b"1"), tar_member("docker/a.txt", b"2")
                )
            ),
        ),
        HostileCase(
            "tar_file_and_dir_same_name",
            overlap,
            _full(
                _tar_with(
                    tar_member("docker/app", b"file"),
                    tar_member("docker/app/x", b"under a file"),
                )
            ),
        ),
        HostileCase(
            "zip_understated_size",
            lying,
            _patch(
                zip_with_central_field(
                    zip_bytes([("docker/app/server.py", noise(5000), _REG)]), 0, 24, 10
                )
            ),
        ),
        HostileCase(
            "zip_overstated_size",
            lying,
            _patch(
                zip_with_central_field(
                    zip_bytes([("docker/app/server.py", noise(5000), _REG)]),
                    0,
                    24,
                    50_000,
                )
            ),
        ),
        HostileCase("tar_understated_size", lying, _full(_lying_tar)),
        HostileCase("tar_gz_bomb", bomb, _full(_tar_bomb)),
        HostileCase("zip_bomb", bomb, _patch(_zip_bomb)),
        HostileCase("tar_gz_truncated", cut, _full(full_ok[: len(full_ok) // 2])),
        HostileCase("zip_truncated", cut, _patch(good_patch_zip()[:-30])),
        HostileCase(
            "patch_file_missing",
            missing,
            _patch(
                good_patch_zip(),
                operations={
                    "replace": {
                        "files": ["app/server.py", "app/absent.py"],
                        "directories": [],
                    }
                },
            ),
        ),
        HostileCase(
            "patch_dir_missing",
            missing,
            _patch(
                good_patch_zip(),
                operations={"replace": {"files": [], "directories": ["app/web"]}},
            ),
        ),
        HostileCase(
            "tar_member_is_root",
            root,
            _full(tar_gz([tar_member(".", b"replaces the root")])),
        ),
        HostileCase(
            "zip_prefix_is_file",
            root,
            _patch(
                zip_bytes(
                    [
                        ("docker", b"a file where the root goes", _REG),
                        ("docker/app/server.py", SERVER_PY, _REG),
                    ]
                )
            ),
        ),
        HostileCase(
            "ops_dotdot_delete",
            escape,
            _patch(
                good_patch_zip(),
                operations={"delete": {"files": ["../config.toml"], "directories": []}},
            ),
        ),
        HostileCase(
            "ops_absolute_dir",
            escape,
            _patch(
                good_patch_zip(),
                operations={"delete": {"files": [], "directories": ["/etc"]}},
            ),
        ),
        HostileCase(
            "ops_embedded_dotdot",
            escape,
            _patch(
                good_patch_zip(),
                operations={
                    "replace": {"files": ["app/../../../x"], "directories": []}
                },
            ),
        ),
        HostileCase(
            "ops_project_root",
            escape,
            _patch(
                good_patch_zip(),
                operations={"delete": {"files": [], "directories": ["./"]}},
            ),
        ),
        HostileCase(
            "patch_from_other_version",
            base,
            _patch(good_patch_zip(), from_version="1.0.0.3", strategy="patch"),
        ),
        HostileCase(
            "patch_for_other_base",
            base,
            _patch(good_patch_zip(), version="2.0.0.1", strategy="patch"),
        ),
        HostileCase(
            "signed_but_older_manifest",
            rollback,
            _signed(family=integrity, high_water="1.0.0.5"),
        ),
        HostileCase(
            "expired_manifest",
            expired,
            _patch(
                good_patch_zip(),
                family=integrity,
                edit=_edit(["expires"], "2001-01-01T00:00:00Z"),
            ),
        ),
        HostileCase(
            "manifest_signed_by_other_key",
            signature,
            _signed(family=integrity, edit_after_signing=_wrong_key_signature),
        ),
        HostileCase(
            "manifest_unsigned_key_required",
            signature,
            _signed(family=integrity, edit_after_signing=_edit(["signature"], _DELETE)),
        ),
        HostileCase(
            "manifest_changed_after_signing",
            signature,
            _signed(
                family=integrity,
                edit_after_signing=_edit(
                    ["patch", "x86_64", "operations", "delete"],
                    {"files": ["config/site.conf"], "directories": []},
                ),
            ),
        ),
        HostileCase(
            "manifest_signature_garbage",
            signature,
            _signed(
                family=integrity,
                edit_after_signing=_edit(["signature"], "not base64 at all!"),
            ),
        ),
        HostileCase(
            "package_signed_by_other_key",
            signature,
            _signed(family=integrity, edit=_wrong_package_signature),
        ),
        HostileCase(
            "package_hash_mismatch",
            digest,
            _patch(
                good_patch_zip(),
                family=integrity,
                edit=_edit(["patch", "x86_64", "hash"], "sha256:" + "ab" * 32),
            ),
        ),
        HostileCase(
            "package_size_mismatch",
            digest,
            _patch(
                good_patch_zip(),
                family=integrity,
                edit=_edit(["patch", "x86_64", "size"], 12),
            ),
        ),
        HostileCase(
            "package_external_hash_key_required",
            digest,
            _signed(
                family=integrity, edit=_edit(["patch", "x86_64", "hash"], "external")
            ),
        ),
        HostileCase(
            "manifest_missing_version",
            fields,
            _patch(good_patch_zip(), edit=_edit(["version"], _DELETE)),
        ),
        HostileCase(
            "manifest_missing_url",
            fields,
            _patch(good_patch_zip(), edit=_edit(["patch", "x86_64", "url"], _DELETE)),
        ),
        HostileCase(
            "manifest_size_is_text",
            fields,
            _patch(good_patch_zip(), edit=_edit(["patch", "x86_64", "size"], "big")),
        ),
        HostileCase(
            "manifest_files_not_a_list",
            fields,
            _patch(
                good_patch_zip(),
                operations={"replace": {"files": "app/server.py", "directories": []}},
            ),
        ),
        HostileCase(
            "manifest_operations_missing_key",
            fields,
            _patch(
                good_patch_zip(), operations={"replace": {"files": ["app/server.py"]}}
            ),
        ),
        HostileCase(
            "manifest_hash_not_hex",
            fields,
            _patch(
                good_patch_zip(), edit=_edit(["patch", "x86_64", "hash"], "sha256:xyz")
            ),
        ),
        HostileCase(
            "manifest_bad_version", fields, _patch(good_patch_zip(), version="1.2")
        ),
        HostileCase(
            "manifest_legacy_without_packages",
            fields,
            lambda folder: write_raw_manifest(
                folder, '{"version": "1.0.0.1", "release_date": "2030-01-01T00:00:00Z"}'
            ),
        ),
        HostileCase(
            "manifest_not_json",
            fields,
            lambda folder: write_raw_manifest(folder, '{"version": "1.0.0.1",'),
        ),
        HostileCase(
            "manifest_duplicate_keys",
            fields,
            lambda folder: write_raw_manifest(
                folder,
                '{"version": "1.0.0.1", "version": "9.0.0.0", '
                '"packages": {"full": {"url": "a.zip"}}}',
            ),
        ),
        HostileCase(
            "manifest_url_scheme",
            fields,
            _patch(
                good_patch_zip(),
                edit=_edit(["patch", "x86_64", "url"], "ftp://example.invalid/p.zip"),
            ),
        ),
    ]


CASES: list[HostileCase] = _cases()
