"""Version grammar, architecture names and the patch-or-full decision."""

from __future__ import annotations

import json

import pytest

from engine.manifest import parse_manifest
from engine.versions import (
    BadVersionError,
    DowngradeRefusedError,
    NoPackageError,
    PatchNotApplicableError,
    UnknownVersionError,
    UnsupportedArchError,
    Version,
    decide,
    detect_arch,
)


@pytest.mark.parametrize(
    ("text", "printed"),
    [
        ("1.2.3", "1.2.3.0"),
        ("v1.2.3.4", "1.2.3.4"),
        ("V0.0.1", "0.0.1.0"),
        ("4294967295.0.0.1", "4294967295.0.0.1"),
    ],
)
def test_version_parse_prints_four_parts(text, printed):
    assert str(Version.parse(text)) == printed


@pytest.mark.parametrize(
    "text",
    [
        "",
        "1.2",
        "1.2.3.4.5",
        " 1.2.3",
        "1.2.3-rc1",
        "1.2.x",
        "4294967296.0.0",
        "vv1.2.3",
    ],
)
def test_version_parse_refuses_other_forms(text):
    with pytest.raises(BadVersionError):
        Version.parse(text)


def test_version_orders_as_tuples_and_has_a_base():
    assert Version.parse("1.2.3.9") < Version.parse("1.2.4") < Version.parse("1.10.0")
    assert Version.parse("1.2.3.7").base == Version.parse("1.2.3")
    assert Version.parse("1.2.3").short() == "1.2.3"


@pytest.mark.parametrize(
    ("name", "arch"),
    [
        ("x86_64", "x86_64"),
        ("AMD64", "x86_64"),
        ("aarch64", "aarch64"),
        ("arm64", "aarch64"),
    ],
)
def test_detect_arch_aliases(name, arch):
    assert detect_arch(name) == arch


def test_detect_arch_host_and_unsupported():
    assert detect_arch() in ("x86_64", "aarch64")
    with pytest.raises(UnsupportedArchError):
        detect_arch("riscv64")


def manifest(version="1.2.3.4", patch=True, from_version=None, platforms=True):
    doc = {"version": version}
    if platforms:
        doc["platforms"] = {
            "x86_64": {"url": "full.zip"},
            "aarch64": {"url": "full.zip"},
        }
    if patch:
        entry = {"url": "patch.zip", "operations": {}}
        if from_version:
            entry["from_version"] = from_version
        doc["patch"] = {"x86_64": entry}
    return parse_manifest(json.dumps(doc).encode())


@pytest.mark.parametrize(
    ("current", "kwargs", "action"),
    [
        ("1.2.3.4", {}, "none"),
        ("1.2.3.0", {}, "patch"),
        ("1.2.3.1", {}, "patch"),
        ("1.2.3.1", {"from_version": "1.2.3.1"}, "patch"),
        ("1.2.3.2", {"from_version": "1.2.3.1"}, "full"),
        ("1.2.3.0", {"patch": False}, "full"),
        ("1.2.2.9", {}, "full"),
        ("1.1.0", {}, "full"),
        ("1.1.0", {"from_version": "1.1.0"}, "patch"),
        ("1.1.0", {"from_version": "1.1.1"}, "full"),
    ],
)
def test_decide_auto(current, kwargs, action):
    decision = decide(Version.parse(current), manifest(**kwargs), "x86_64")

    assert decision.action == action
    assert decision.target == Version.parse("1.2.3.4")
    assert (decision.package is None) == (action == "none")


def test_decide_patch_missing_for_this_arch_falls_back_to_full():
    decision = decide(Version.parse("1.2.3.0"), manifest(), "aarch64")
    assert decision.action == "full"


def test_decide_older_server_refused_unless_allowed():
    older = manifest(version="1.2.0")
    with pytest.raises(DowngradeRefusedError):
        decide(Version.parse("1.2.3.4"), older, "x86_64")
    with pytest.raises(DowngradeRefusedError):
        decide(Version.parse("1.2.3.4"), older, "x86_64", strategy="full")

    decision = decide(Version.parse("1.2.3.4"), older, "x86_64", allow_downgrade=True)
    assert decision.action == "full" and decision.downgrade


def test_decide_forced_strategies():
    current = Version.parse("1.2.3.4")
    assert decide(current, manifest(), "x86_64", strategy="full").action == "full"
    assert (
        decide(Version.parse("1.2.3.1"), manifest(), "x86_64", strategy="patch").action
        == "patch"
    )
    with pytest.raises(PatchNotApplicableError):
        decide(Version.parse("1.1.0"), manifest(), "x86_64", strategy="patch")
    with pytest.raises(PatchNotApplicableError):
        decide(
            Version.parse("1.2.3.1"), manifest(patch=False), "x86_64", strategy="patch"
        )


def test_decide_missing_tree_needs_full():
    current = Version.parse("1.2.3.0")
    assert decide(current, manifest(), "x86_64", tree_present=False).action == "full"
    assert decide(None, manifest(), "x86_64", tree_present=False).action == "full"
    with pytest.raises(NoPackageError):
        decide(None, manifest(platforms=False), "x86_64", tree_present=False)


def test_decide_deployed_release_of_unknown_version_refused_unless_full():
    """Guessing would install blind and leave no version to roll back to."""
    with pytest.raises(UnknownVersionError) as caught:
        decide(None, manifest(), "x86_64")
    assert "config.toml" in caught.value.hint and "--strategy full" in caught.value.hint
    assert decide(None, manifest(), "x86_64", strategy="full").action == "full"
