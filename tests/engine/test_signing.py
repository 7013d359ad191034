"""ed25519 key files and the accepted public key forms."""

from __future__ import annotations

import base64
import stat

import pytest
from cryptography.hazmat.primitives import serialization

from engine.signing import (
    BadSignatureError,
    KeyExistsError,
    KeyFormatError,
    MalformedSignatureError,
    generate_keypair,
    load_private_key,
    load_public_key,
    sign,
    verify,
)


def test_generate_keypair_private_key_is_owner_only(tmp_path):
    private_path, public_path = generate_keypair(tmp_path / "keys")

    assert stat.S_IMODE(private_path.stat().st_mode) == 0o600
    assert len(base64.b64decode(public_path.read_text().strip())) == 32
    with pytest.raises(KeyExistsError):
        generate_keypair(tmp_path / "keys")


def test_load_public_key_forms(tmp_path):
    private_path, public_path = generate_keypair(tmp_path)
    key = load_private_key(private_path)
    raw = key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    pem = (
        key.public_key()
        .public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        .decode()
    )
    (tmp_path / "key.pem").write_text(pem)
    signature = sign(key, b"message")

    for text in (
        str(public_path),
        public_path.read_text(),
        raw.hex(),
        pem,
        str(tmp_path / "key.pem"),
        base64.urlsafe_b64encode(raw).decode(),
    ):
        verify(load_public_key(text), signature, b"message", "test")


def test_verify_signature_encodings_and_failures(tmp_path):
    key = load_private_key(generate_keypair(tmp_path)[0])
    public = key.public_key()
    raw = base64.b64decode(sign(key, b"m"))

    verify(public, raw.hex(), b"m", "test")
    with pytest.raises(BadSignatureError):
        verify(public, raw.hex(), b"other", "test")
    with pytest.raises(MalformedSignatureError):
        verify(public, "c2lnLXg4Ng==", b"m", "test")


def test_load_keys_refuse_garbage(tmp_path):
    with pytest.raises(KeyFormatError):
        load_public_key("not a key")
    (tmp_path / "bad.key").write_text(
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
    )
    with pytest.raises(KeyFormatError):
        load_private_key(tmp_path / "bad.key")
