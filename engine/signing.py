"""Ed25519 keys and signatures for releases (the ``cryptography`` library).

Files written by ``generate_keypair``:

- ``<name>.key``: the private key, PKCS#8 PEM without a passphrase, mode 0600;
- ``<name>.pub``: the public key as one line of base64 (the 32 raw bytes), the
  same text an operator puts in ``config.toml`` under ``[signing] public_key``.

What is signed (the message) is decided by the callers in ``engine.manifest``:
a package signature covers the ASCII of the package's lowercase sha256 hex
digest, a manifest signature covers the manifest's canonical JSON. A signature
travels as base64 of the 64 raw bytes; hex is accepted on reading too.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from engine.errors import BadInputError, IntegrityError, RefusedError
from journal import fsio

logger = logging.getLogger(__name__)

SIGNATURE_BYTES = 64
PUBLIC_KEY_BYTES = 32


class KeyFormatError(BadInputError):
    """A key file or configured key cannot be read as an ed25519 key."""

    def __init__(self, source: str, problem: str) -> None:
        super().__init__(f"signing key {source}: {problem}")
        self.source = source
        self.problem = problem


class KeyExistsError(RefusedError, FileExistsError):
    """A key file is already there; keys are never overwritten."""

    hint = "choose another --out folder or --name, or move the old keys away"

    def __init__(self, path: Path) -> None:
        super().__init__(f"{path} exists; refusing to overwrite a key")
        self.path = path


class SignatureError(IntegrityError):
    """A signature is missing, malformed or does not verify."""


class MissingSignatureError(SignatureError):
    """The deployment trusts a key and the signed object carries no signature."""

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} is not signed, and this deployment requires it")
        self.what = what


class MalformedSignatureError(SignatureError):
    """The signature text is neither base64 nor hex of 64 bytes."""

    def __init__(self, what: str) -> None:
        super().__init__(f"the signature of {what} is not 64 bytes of base64 or hex")
        self.what = what


class BadSignatureError(SignatureError):
    """The signature does not verify with the trusted public key."""

    def __init__(self, what: str) -> None:
        super().__init__(
            f"the signature of {what} does not verify with the trusted key"
        )
        self.what = what


def generate_keypair(out_dir: Path, name: str = "updock-signing") -> tuple[Path, Path]:
    """Write a new key pair into ``out_dir`` (created when missing).

    Returns:
        The private key path (mode 0600) and the public key path.

    Raises:
        KeyExistsError: a key of that name is already there (never overwritten).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    private_path = out_dir / f"{name}.key"
    public_path = out_dir / f"{name}.pub"
    for path in (private_path, public_path):
        if path.exists():
            raise KeyExistsError(path)

    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fsio.write_atomic(private_path, pem, mode=0o600)
    os.chmod(private_path, 0o600)
    fsio.write_atomic(public_path, (public_key_text(key.public_key()) + "\n").encode())
    logger.info("wrote key pair %s and %s", private_path, public_path)
    return private_path, public_path


def public_key_text(key: Ed25519PublicKey) -> str:
    """The one-line base64 form of a public key."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """Read a PKCS#8 PEM ed25519 private key.

    Raises:
        KeyFormatError: unreadable, encrypted, or not an ed25519 key.
    """
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), None)
    except (OSError, ValueError, TypeError) as exc:
        raise KeyFormatError(str(path), str(exc)) from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFormatError(str(path), "not an ed25519 private key")
    return key


def load_public_key(text: str) -> Ed25519PublicKey:
    """Read a public key given inline or as a file path.

    ``text`` may be base64 or hex of the 32 raw bytes, a PEM
    SubjectPublicKeyInfo, or the path of a file holding any of these.

    Raises:
        KeyFormatError: none of these forms.
    """
    source = text.strip()
    if "BEGIN PUBLIC KEY" not in source and _looks_like_path(source):
        try:
            source = Path(source).read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise KeyFormatError(text, f"cannot be read: {exc}") from exc
    if "BEGIN PUBLIC KEY" in source:
        return _pem_public_key(source, text)
    raw = _decode_bytes(source, PUBLIC_KEY_BYTES)
    if raw is None:
        raise KeyFormatError(text, "not 32 bytes of base64 or hex, nor PEM")
    return Ed25519PublicKey.from_public_bytes(raw)


def sign(key: Ed25519PrivateKey, message: bytes) -> str:
    """Sign ``message``; returns the base64 text of the signature."""
    return base64.b64encode(key.sign(message)).decode("ascii")


def verify(
    key: Ed25519PublicKey, signature: str | None, message: bytes, what: str
) -> None:
    """Check ``signature`` (base64 or hex text) over ``message``.

    Args:
        what: names the signed object in error messages.

    Raises:
        MissingSignatureError: ``signature`` is None or empty.
        MalformedSignatureError: not 64 bytes of base64 or hex.
        BadSignatureError: it does not verify.
    """
    if not signature:
        raise MissingSignatureError(what)
    raw = _decode_bytes(signature.strip(), SIGNATURE_BYTES)
    if raw is None:
        raise MalformedSignatureError(what)
    try:
        key.verify(raw, message)
    except InvalidSignature as exc:
        raise BadSignatureError(what) from exc


def _decode_bytes(text: str, length: int) -> bytes | None:
    """Hex or base64 (standard or URL-safe, padding optional) of ``length``
    bytes; None otherwise."""
    if len(text) == 2 * length:
        try:
            return bytes.fromhex(text)
        except ValueError:
            pass
    padded = text + "=" * (-len(text) % 4)
    for decoder in (base64.b64decode, base64.urlsafe_b64decode):
        try:
            raw = decoder(padded.encode("ascii"))
        except (binascii.Error, ValueError, UnicodeEncodeError):
            continue
        if len(raw) == length:
            return raw
    return None


def _looks_like_path(text: str) -> bool:
    try:
        return Path(text).is_file()
    except OSError:
        return False


def _pem_public_key(pem: str, source: str) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(pem.encode("ascii"))
    except (ValueError, TypeError) as exc:
        raise KeyFormatError(source, str(exc)) from exc
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFormatError(source, "not an ed25519 public key")
    return key
