"""Hostile and broken releases are refused with the right error family, and
the deployment is byte-for-byte what it was (whole-tree digest)."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from engine.errors import BadInputError, IntegrityError
from hostile import (
    CASES,
    HostileRelease,
    good_full_tar,
    good_patch_zip,
    make_deployment,
    run_release_checks,
    tree_digest,
    write_release,
)

# The cache and updock's state folder are where a refused release may leave
# a verified download or an emptied staging folder; the deployment is the rest.
SKIP = frozenset({"cacheDuckData", ".updock"})
FAULT_CLASSES = {
    "../ and absolute names",
    "symlinks and hard links outside",
    "link planted then written through",
    "devices and FIFOs",
    "setuid bits",
    "overlapping zip entries, duplicate names",
    "lying size fields",
    "decompression bombs",
    "truncated archives",
    "listed files missing from the archive",
    "member replacing the destination itself",
    "operation paths escaping the deployment",
    "patch for another base version",
    "older validly signed manifest (rollback)",
    "expired manifest",
    "bad signature",
    "hash mismatch",
    "missing or mistyped fields",
}


def prepare(case_build, tmp_path) -> tuple[HostileRelease, object]:
    root = make_deployment(tmp_path / "deployment")
    release = case_build(tmp_path / "release")
    if release.tree_setup is not None:
        release.tree_setup(root)
    return release, root


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_release_checks_hostile_input_refused_tree_unchanged(case, tmp_path):
    release, root = prepare(case.build, tmp_path)
    before = tree_digest(root, SKIP)

    with pytest.raises((BadInputError, IntegrityError)) as caught:
        run_release_checks(release, root)

    assert isinstance(caught.value, release.family), repr(caught.value)
    other = IntegrityError if release.family is BadInputError else BadInputError
    assert not isinstance(caught.value, other)
    assert tree_digest(root, SKIP) == before


def test_hostile_cases_cover_every_fault_class():
    assert {case.fault for case in CASES} == FAULT_CLASSES
    assert len({case.name for case in CASES}) == len(CASES)


@pytest.mark.parametrize(
    "build",
    [
        lambda folder: write_release(folder, good_patch_zip()),
        lambda folder: write_release(folder, good_full_tar(), kind="full"),
        lambda folder: write_release(
            folder, good_patch_zip(), key=Ed25519PrivateKey.generate()
        ),
    ],
    ids=["patch", "full", "signed_patch"],
)
def test_release_checks_good_release_passes(build, tmp_path):
    release, root = prepare(build, tmp_path)
    before = tree_digest(root, SKIP)

    run_release_checks(release, root)

    assert tree_digest(root, SKIP) == before
