"""Manifest reading: the existing client's shapes, updock's extensions,
signatures, freshness, and errors that name the JSON path."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from engine.manifest import (
    ManifestError,
    ManifestExpiredError,
    ManifestRollbackError,
    check_freshness,
    load_manifest,
    package_signature,
    parse_manifest,
    sign_document,
    verify_manifest_signature,
    verify_package_signature,
)
from engine.signing import BadSignatureError, MissingSignatureError
from httpserver import MisbehavingServer

FIXTURES = Path(__file__).parent / "fixtures" / "manifests"
DIGEST = "a1b2c3d4e5f60718293a4b5c6d7e8f90112233445566778899aabbccddeeff00"


def doc_bytes(doc: dict) -> bytes:
    return json.dumps(doc).encode()


def test_load_manifest_legacy_shape_uses_packages_full():
    manifest = load_manifest(FIXTURES / "legacy.json")

    assert not manifest.enhanced
    assert manifest.version == "4.7.2.0"
    full = manifest.full_for("x86_64")
    assert full.url == "https://downloads.example.net/stack/4.7.2/stack.zip"
    assert full.sha256 is None and full.size is None and full.signature is None
    assert manifest.patch_for("x86_64") is None


def test_load_manifest_example_a_platforms_per_arch():
    manifest = load_manifest(FIXTURES / "example_a.json")

    assert manifest.enhanced
    assert manifest.full_for("x86_64").url.endswith("stack-amd64.zip")
    assert manifest.full_for("aarch64").url.endswith("stack-arm64.zip")
    assert manifest.full_for("aarch64").signature == "Zm9yLWFybQ=="
    assert manifest.patches == {}


def test_load_manifest_example_b_patch_with_prefixed_uppercase_hash():
    manifest = load_manifest(FIXTURES / "example_b.json")

    patch = manifest.patch_for("x86_64")
    assert patch.sha256 == DIGEST
    assert patch.operations.replace.directories == ["frontend/dist/"]
    assert patch.operations.delete.files == ["conf/legacy.ini"]
    assert patch.from_version is None
    assert manifest.patch_for("aarch64") is None


def test_load_manifest_example_c_lone_patch_key_is_enhanced():
    manifest = load_manifest(FIXTURES / "example_c.json")

    patch = manifest.patch_for("aarch64")
    assert manifest.enhanced and manifest.full == {}
    assert patch.operations.replace is None
    assert patch.operations.delete.files == ["scripts/old-migrate.sh"]
    assert len(patch.sha256) == 64


def test_manifest_missing_platform_arch_falls_back_to_packages_full():
    doc = json.loads((FIXTURES / "example_a.json").read_text())
    doc["platforms"]["aarch64"] = None

    manifest = parse_manifest(doc_bytes(doc))

    assert manifest.full_for("aarch64").url.endswith("/any.zip")


def test_manifest_relative_urls_resolve_against_the_manifest(tmp_path):
    doc = {"version": "1.0.0", "packages": {"full": {"url": "pkg/full.zip"}}}
    (tmp_path / "manifest.json").write_bytes(doc_bytes(doc))

    local = load_manifest(tmp_path / "manifest.json")
    with MisbehavingServer({"rel/manifest.json": doc_bytes(doc)}) as server:
        remote = load_manifest(server.url("rel/manifest.json"))

    assert local.full_for("x86_64").url == str(tmp_path / "pkg" / "full.zip")
    assert remote.full_for("x86_64").url == server.url("rel/pkg/full.zip")


def test_manifest_extensions_parse():
    doc = {
        "version": "v2.0.1.4",
        "expires": "2040-01-01T00:00:00Z",
        "platforms": {"x86_64": {"url": "a.zip", "sha256": DIGEST, "size": 9}},
        "patch": {
            "x86_64": {
                "url": "p.zip",
                "hash": DIGEST,
                "size": 3,
                "from_version": "2.0.1.3",
                "operations": {"replace": {"files": ["a"], "directories": []}},
            }
        },
    }

    manifest = parse_manifest(doc_bytes(doc))

    assert manifest.version == "2.0.1.4"
    assert manifest.expires == datetime(2040, 1, 1, tzinfo=timezone.utc)
    assert manifest.full_for("x86_64").size == 9
    assert manifest.patch_for("x86_64").from_version == "2.0.1.3"


@pytest.mark.parametrize(
    ("edit", "json_path"),
    [
        (lambda d: d.pop("version"), "$"),
        (lambda d: d["platforms"]["x86_64"].update(url=7), "$.platforms.x86_64.url"),
        (lambda d: d["platforms"]["x86_64"].update(size=-1), "$.platforms.x86_64.size"),
        (
            lambda d: d["platforms"]["x86_64"].update(sha256="md5:00"),
            "$.platforms.x86_64.sha256",
        ),
        (lambda d: d.update(release_date="yesterday"), "$.release_date"),
        (lambda d: d.update(expires="2040-01-01T00:00:00"), "$.expires"),
        (lambda d: d.update(platforms={"x86_64": None}), "$.platforms"),
        (lambda d: d.update(version="1.2.3.4.5"), "$.version"),
    ],
)
def test_parse_manifest_error_names_json_path(edit, json_path):
    doc = {"version": "1.0.0", "platforms": {"x86_64": {"url": "a.zip"}}}
    edit(doc)

    with pytest.raises(ManifestError) as caught:
        parse_manifest(doc_bytes(doc), source="test.json")

    assert caught.value.json_path == json_path
    assert f"test.json: {json_path}: " in str(caught.value)


def test_manifest_signature_round_trip_and_tamper():
    key = Ed25519PrivateKey.generate()
    doc = {"version": "1.0.0", "platforms": {"x86_64": {"url": "a.zip"}}, "x": "é"}

    signed = sign_document(doc, key)
    verify_manifest_signature(parse_manifest(doc_bytes(signed)), key.public_key())

    reordered = json.dumps(dict(reversed(list(signed.items()))), indent=4)
    verify_manifest_signature(parse_manifest(reordered.encode()), key.public_key())
    signed["version"] = "1.0.1"
    with pytest.raises(BadSignatureError):
        verify_manifest_signature(parse_manifest(doc_bytes(signed)), key.public_key())
    with pytest.raises(MissingSignatureError):
        verify_manifest_signature(parse_manifest(doc_bytes(doc)), key.public_key())


def test_package_signature_covers_the_digest():
    key = Ed25519PrivateKey.generate()
    doc = {
        "version": "1.0.0",
        "platforms": {
            "x86_64": {
                "url": "a",
                "sha256": DIGEST,
                "signature": package_signature(DIGEST, key),
            }
        },
    }
    package = parse_manifest(doc_bytes(doc)).full_for("x86_64")

    verify_package_signature(package, DIGEST, key.public_key())
    with pytest.raises(BadSignatureError):
        verify_package_signature(package, "0" * 64, key.public_key())


def test_check_freshness_refuses_older_and_expired():
    doc = {"version": "1.0.0.3", "packages": {"full": {"url": "a"}}}
    manifest = parse_manifest(doc_bytes(doc))

    check_freshness(manifest, None)
    check_freshness(manifest, "1.0.0.3")
    check_freshness(manifest, "1.0.0.9", allow_older=True)
    with pytest.raises(ManifestRollbackError):
        check_freshness(manifest, "1.0.0.4")

    doc["expires"] = "2030-01-01T00:00:00Z"
    expiring = parse_manifest(doc_bytes(doc))
    check_freshness(expiring, None, now=datetime(2029, 12, 31, tzinfo=timezone.utc))
    with pytest.raises(ManifestExpiredError):
        check_freshness(expiring, None, now=datetime(2030, 1, 2, tzinfo=timezone.utc))
