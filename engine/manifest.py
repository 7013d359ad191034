"""Release manifests: both JSON shapes of the existing client, plus updock's
signed extensions.

Shapes. A manifest is *enhanced* when its root has a ``platforms`` or a
``patch`` key (the existing client looked at ``platforms`` only and silently
lost a lone ``patch``); otherwise it is *legacy* and needs ``packages.full``.
Unknown keys are ignored everywhere. A full package comes from
``platforms.<arch>``, falling back to ``packages.full`` when that arch is
absent; a patch comes from ``patch.<arch>``.

Hashes. ``hash`` or ``sha256`` fields hold a sha256 hex digest, bare or with a
``sha256:`` prefix; ``external`` or an empty string means "no hash" (the
existing server's sentinel for externally hosted packages). A ``size`` of 0
means unknown.

updock's optional extensions, all ignored by the existing client:

- ``patch.<arch>.from_version``: the one installed version a patch applies to;
- ``sha256`` and ``size`` on ``platforms.<arch>``;
- ``signature`` on every package: ed25519 over the ASCII of the package's
  lowercase sha256 hex digest, as base64 (hex accepted);
- ``signature`` at the root: ed25519 over the manifest's canonical JSON
  without the root ``signature`` key. Canonical JSON here is Python's
  ``json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
  allow_nan=False)`` in UTF-8. The document is parsed once (duplicate keys
  refused) and both the signature check and the typed decoding work on that
  one parse, so no second parser can read the bytes differently;
- ``expires``: an RFC 3339 time after which the manifest is refused.

Relative package URLs resolve against the manifest's own location (its URL,
or the folder holding the manifest file).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Generic, Literal, TypeVar
from urllib.parse import unquote, urljoin, urlsplit

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from engine import signing
from engine.errors import BadInputError, IntegrityError
from engine.versions import ARCHES, BadVersionError, Version

logger = logging.getLogger(__name__)

MAX_MANIFEST_BYTES = 4 * 1024 * 1024
NO_HASH = ("", "external")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_URL_SCHEMES = ("http", "https", "file")


class ManifestError(BadInputError):
    """A manifest is not valid JSON, or a field is missing, mistyped or wrong.

    Attributes:
        source: where the manifest came from.
        json_path: the failing field, as ``$.patch.x86_64.url``.
        problem: what is wrong with it.
    """

    def __init__(self, source: str, json_path: str, problem: str) -> None:
        super().__init__(f"manifest {source}: {json_path}: {problem}")
        self.source = source
        self.json_path = json_path
        self.problem = problem


class ManifestRollbackError(IntegrityError):
    """The manifest is older than one accepted before: a rollback attack or a
    stale mirror."""

    hint = "check the manifest source; an older release needs --allow-downgrade"

    def __init__(self, version: str, high_water: str) -> None:
        super().__init__(
            f"manifest version {version} is older than {high_water}, "
            "which this deployment already accepted"
        )
        self.version = version
        self.high_water = high_water


class ManifestExpiredError(IntegrityError):
    """The manifest's ``expires`` time has passed."""

    def __init__(self, version: str, expires: datetime) -> None:
        super().__init__(f"manifest {version} expired at {expires.isoformat()}")
        self.version = version
        self.expires = expires


# -- the JSON shapes, as msgspec decodes them --------------------------------

_Size = Annotated[int, msgspec.Meta(ge=0)]
_T = TypeVar("_T")


class FileSet(msgspec.Struct, frozen=True):
    """Files and directories of one patch operation (both keys required,
    as in the existing client)."""

    files: list[str]
    directories: list[str]


class Operations(msgspec.Struct, frozen=True):
    """A patch's ``operations``: paths relative to the project folder."""

    replace: FileSet | None = None
    delete: FileSet | None = None


class _FullPackage(msgspec.Struct):
    url: str
    hash: str | None = None
    sha256: str | None = None
    signature: str | None = None
    size: _Size | None = None


class _PatchPackage(_FullPackage, kw_only=True):
    operations: Operations
    notes: str | None = None
    from_version: str | None = None


class _LegacyPackages(msgspec.Struct):
    full: _FullPackage
    patch: _FullPackage | None = None


class _PerArch(msgspec.Struct, Generic[_T]):
    x86_64: _T | None = None
    aarch64: _T | None = None


class _Document(msgspec.Struct):
    version: str
    release_date: str = ""
    release_notes: str = ""
    packages: _LegacyPackages | None = None
    platforms: _PerArch[_FullPackage] | None = None
    patch: _PerArch[_PatchPackage] | None = None
    expires: str | None = None
    signature: str | None = None


# -- the normalised form the engine uses -------------------------------------


@dataclass(frozen=True)
class Package:
    """One downloadable package of a manifest.

    Attributes:
        kind: ``full`` or ``patch``.
        arch: ``x86_64``/``aarch64``; None for the legacy ``packages.full``.
        url: an absolute http(s) or file URL, or an absolute local path.
        sha256: lowercase hex digest, None when the manifest has none.
        size: bytes, None when unknown.
        signature: the package signature text, None when unsigned.
        json_path: where the package sits in the manifest, for messages.
    """

    kind: Literal["full", "patch"]
    arch: str | None
    url: str
    sha256: str | None
    size: int | None
    signature: str | None
    json_path: str
    from_version: str | None = None
    operations: Operations | None = None
    notes: str | None = None


@dataclass(frozen=True)
class Manifest:
    """A validated manifest.

    Attributes:
        version: the target version, printed with four parts.
        signed_bytes: the canonical JSON the root signature covers.
    """

    version: str
    release_date: str
    release_notes: str
    source: str
    enhanced: bool
    full: dict[str, Package]
    legacy_full: Package | None
    patches: dict[str, Package]
    expires: datetime | None
    signature: str | None
    signed_bytes: bytes

    def full_for(self, arch: str) -> Package | None:
        """The full package for ``arch``; ``packages.full`` as the fallback."""
        return self.full.get(arch) or self.legacy_full

    def patch_for(self, arch: str) -> Package | None:
        """The patch for ``arch``, if the manifest has one."""
        return self.patches.get(arch)

    def packages(self) -> list[Package]:
        """Every package of the manifest."""
        found = list(self.full.values()) + list(self.patches.values())
        return found + ([self.legacy_full] if self.legacy_full else [])


# -- loading ------------------------------------------------------------------


def load_manifest(
    source: str | Path, *, max_bytes: int = MAX_MANIFEST_BYTES, timeout: float = 30.0
) -> Manifest:
    """Read and validate a manifest from an http(s) URL, a file URL or a path.

    Raises:
        ManifestError: unreadable, too large, or invalid (names the field).
        DownloadError: the server or network failed (http sources).
    """
    text = str(source)
    scheme = urlsplit(text).scheme.lower()
    if scheme in ("http", "https"):
        from engine.download import fetch_bytes

        data = fetch_bytes(text, max_bytes=max_bytes, timeout=timeout)
        return parse_manifest(data, source=text)
    if "://" in text and scheme != "file":
        raise ManifestError(
            text, "$", f"cannot be read: {scheme}:// is not supported (http, https, file)"
        )

    path = local_path(text)
    try:
        with open(path, "rb") as handle:
            data = handle.read(max_bytes + 1)
    except OSError as exc:
        raise ManifestError(text, "$", f"cannot be read: {exc.strerror}") from exc
    if len(data) > max_bytes:
        raise ManifestError(text, "$", f"larger than {max_bytes} bytes")
    return parse_manifest(data, source=str(path.resolve()))


def local_path(text: str) -> Path:
    """The filesystem path of a ``file:`` URL or a plain path."""
    parts = urlsplit(text)
    if parts.scheme.lower() == "file":
        return Path(unquote(parts.path))
    return Path(text)


def parse_manifest(data: bytes, source: str = "<memory>") -> Manifest:
    """Validate manifest bytes; relative URLs resolve against ``source``.

    Raises:
        ManifestError: not JSON, or a field is missing, mistyped or wrong.
    """
    doc = _load_json(data, source)
    if not isinstance(doc, dict):
        raise ManifestError(source, "$", "expected a JSON object")
    try:
        raw = msgspec.convert(doc, _Document)
    except msgspec.ValidationError as exc:
        json_path, problem = _split_validation_message(str(exc))
        raise ManifestError(source, json_path, problem) from exc
    return _Normaliser(source, doc).manifest(raw)


def canonical_bytes(doc: dict) -> bytes:
    """The bytes a manifest signature covers: ``doc`` without its root
    ``signature``, as canonical JSON (see the module docstring)."""
    unsigned = {key: value for key, value in doc.items() if key != "signature"}
    text = json.dumps(
        unsigned,
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    )
    return text.encode("utf-8")


def _load_json(data: bytes, source: str) -> object:
    def refuse_duplicates(pairs: list[tuple[str, object]]) -> dict:
        result: dict = {}
        for key, value in pairs:
            if key in result:
                raise ManifestError(source, "$", f"key {key!r} appears twice")
            result[key] = value
        return result

    def refuse_constant(name: str) -> object:
        raise ManifestError(source, "$", f"{name} is not valid JSON")

    try:
        text = data.decode("utf-8")
        return json.loads(
            text, object_pairs_hook=refuse_duplicates, parse_constant=refuse_constant
        )
    except UnicodeDecodeError as exc:
        raise ManifestError(source, "$", "not UTF-8 text") from exc
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        raise ManifestError(
            source, "$", f"not valid JSON ({exc.msg} at {where})"
        ) from exc
    except RecursionError as exc:
        raise ManifestError(source, "$", "nested too deeply") from exc


def _split_validation_message(message: str) -> tuple[str, str]:
    """msgspec writes ``<problem> - at `$.a.b```; split it into (path, problem)."""
    problem, sep, where = message.rpartition(" - at `")
    if not sep:
        return "$", message
    return where.rstrip("`"), problem


class _Normaliser:
    """Checks what msgspec cannot and builds the ``Manifest``."""

    def __init__(self, source: str, doc: dict) -> None:
        self.source = source
        self.doc = doc

    def fail(self, json_path: str, problem: str) -> ManifestError:
        return ManifestError(self.source, json_path, problem)

    def manifest(self, raw: _Document) -> Manifest:
        enhanced = "platforms" in self.doc or "patch" in self.doc
        if not enhanced and raw.packages is None:
            raise self.fail(
                "$.packages", "required when the manifest has no platforms or patch"
            )
        version = self.version(raw.version, "$.version")
        self.rfc3339(raw.release_date, "$.release_date", optional=True)
        expires = self.rfc3339(raw.expires, "$.expires", optional=True)
        legacy = None
        if raw.packages is not None:
            legacy = self.full_package(raw.packages.full, None, "$.packages.full")
        return Manifest(
            version=version,
            release_date=raw.release_date,
            release_notes=raw.release_notes,
            source=self.source,
            enhanced=enhanced,
            full=self.platforms(raw.platforms),
            legacy_full=legacy,
            patches=self.patches(raw.patch),
            expires=expires,
            signature=raw.signature or None,
            signed_bytes=canonical_bytes(self.doc),
        )

    def platforms(self, raw: _PerArch[_FullPackage] | None) -> dict[str, Package]:
        if raw is None:
            return {}
        found = {}
        for arch in ARCHES:
            entry = getattr(raw, arch)
            if entry is not None:
                found[arch] = self.full_package(entry, arch, f"$.platforms.{arch}")
        if not found:
            raise self.fail("$.platforms", "no architecture has a package")
        return found

    def patches(self, raw: _PerArch[_PatchPackage] | None) -> dict[str, Package]:
        if raw is None:
            return {}
        found = {}
        for arch in ARCHES:
            entry = getattr(raw, arch)
            if entry is not None:
                found[arch] = self.patch_package(entry, arch, f"$.patch.{arch}")
        if not found:
            raise self.fail("$.patch", "no architecture has a patch")
        return found

    def full_package(self, raw, arch: str | None, where: str) -> Package:
        return Package(
            kind="full",
            arch=arch,
            url=self.url(raw.url, f"{where}.url"),
            sha256=self.digest(raw, where),
            size=raw.size or None,
            signature=raw.signature or None,
            json_path=where,
        )

    def patch_package(self, raw: _PatchPackage, arch: str, where: str) -> Package:
        from_version = None
        if raw.from_version is not None:
            from_version = self.version(raw.from_version, f"{where}.from_version")
        if raw.hash == "":
            raise self.fail(f"{where}.hash", "empty; leave the key out instead")
        return Package(
            kind="patch",
            arch=arch,
            url=self.url(raw.url, f"{where}.url"),
            sha256=self.digest(raw, where),
            size=raw.size or None,
            signature=raw.signature or None,
            json_path=where,
            from_version=from_version,
            operations=self.operations(raw.operations, f"{where}.operations"),
            notes=raw.notes,
        )

    def operations(self, ops: Operations, where: str) -> Operations:
        for side in ("replace", "delete"):
            fileset = getattr(ops, side)
            if fileset is None:
                continue
            for key in ("files", "directories"):
                for index, text in enumerate(getattr(fileset, key)):
                    self.op_path(text, f"{where}.{side}.{key}[{index}]")
        return ops

    def op_path(self, text: str, where: str) -> str:
        try:
            normal = normalize_relpath(text)
        except ValueError as exc:
            raise self.fail(where, str(exc)) from exc
        if not normal:
            raise self.fail(where, "names the project folder itself")
        return normal

    def digest(self, raw, where: str) -> str | None:
        for key in ("sha256", "hash"):
            value = getattr(raw, key)
            if value is not None and value.strip().lower() not in NO_HASH:
                return self.hex_digest(value, f"{where}.{key}")
        return None

    def hex_digest(self, value: str, where: str) -> str:
        text = value.strip()
        if text.lower().startswith("sha256:"):
            text = text[len("sha256:") :]
        text = text.lower()
        if not _HEX64.fullmatch(text):
            raise self.fail(where, f"{value!r} is not a sha256 hex digest")
        return text

    def url(self, text: str, where: str) -> str:
        if not text.strip():
            raise self.fail(where, "empty")
        scheme = urlsplit(text).scheme.lower()
        if scheme and scheme not in _URL_SCHEMES:
            raise self.fail(where, f"scheme {scheme!r} is not http, https or file")
        if scheme:
            return text
        if urlsplit(self.source).scheme.lower() in ("http", "https"):
            return urljoin(self.source, text)
        return str((local_path(self.source).parent / text).resolve())

    def version(self, text: str, where: str) -> str:
        try:
            return str(Version.parse(text))
        except BadVersionError as exc:
            raise self.fail(where, exc.problem) from exc

    def rfc3339(self, text: str | None, where: str, optional: bool) -> datetime | None:
        if optional and not text:
            return None
        try:
            moment = datetime.fromisoformat(text)
        except (TypeError, ValueError) as exc:
            raise self.fail(where, f"{text!r} is not an RFC 3339 time") from exc
        if moment.tzinfo is None:
            raise self.fail(where, f"{text!r} has no time zone")
        return moment


def normalize_relpath(text: str) -> str:
    """Normalise a path that must stay inside a folder.

    Empty and ``.`` components and a trailing ``/`` are dropped; the result
    is ``""`` when the path names the folder itself.

    Raises:
        ValueError: absolute, a ``..`` component, a backslash, a NUL, or a
            drive letter; the message says which.
    """
    if "\x00" in text:
        raise ValueError("contains a NUL character")
    if "\\" in text:
        raise ValueError("contains a backslash")
    if text.startswith("/"):
        raise ValueError("is absolute")
    if re.match(r"[A-Za-z]:", text):
        raise ValueError("starts with a drive letter")
    parts = [part for part in text.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise ValueError("has a '..' component")
    return "/".join(parts)


# -- trust checks -------------------------------------------------------------


def check_freshness(
    manifest: Manifest,
    high_water: str | None,
    *,
    now: datetime | None = None,
    allow_older: bool = False,
) -> None:
    """Refuse an expired manifest, and one older than the newest accepted.

    Args:
        high_water: the highest manifest version this deployment accepted
            (kept in the journal), or None.
        allow_older: the operator asked for an older release on purpose.

    Raises:
        ManifestExpiredError: ``expires`` is in the past.
        ManifestRollbackError: older than ``high_water``.
    """
    moment = now or datetime.now(timezone.utc)
    if manifest.expires is not None and manifest.expires <= moment:
        raise ManifestExpiredError(manifest.version, manifest.expires)
    if high_water is None or allow_older:
        return
    if Version.parse(manifest.version) < Version.parse(high_water):
        raise ManifestRollbackError(manifest.version, high_water)


def verify_manifest_signature(manifest: Manifest, key: Ed25519PublicKey) -> None:
    """Check the root signature with the trusted key.

    Raises:
        signing.SignatureError: missing, malformed or not verifying.
    """
    what = f"manifest {manifest.source}"
    signing.verify(key, manifest.signature, manifest.signed_bytes, what)


def verify_package_signature(
    package: Package, sha256_hex: str, key: Ed25519PublicKey
) -> None:
    """Check a package signature over the digest of the bytes received.

    Raises:
        signing.SignatureError: missing, malformed or not verifying.
    """
    what = f"package {package.json_path} ({package.url})"
    signing.verify(key, package.signature, sha256_hex.lower().encode("ascii"), what)


def sign_document(doc: dict, key: Ed25519PrivateKey) -> dict:
    """Return ``doc`` with a root ``signature`` over its canonical JSON."""
    signed = dict(doc)
    signed["signature"] = signing.sign(key, canonical_bytes(doc))
    return signed


def package_signature(sha256_hex: str, key: Ed25519PrivateKey) -> str:
    """The signature text of a package whose digest is ``sha256_hex``."""
    return signing.sign(key, sha256_hex.lower().encode("ascii"))
