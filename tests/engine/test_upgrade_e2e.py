"""End to end on real input: three published source trees of ``requests``
(2.31.0, 2.32.0, 2.32.3, sdists from PyPI cached under ``.cache/``) as three
releases of one deployment. The deployment is upgraded by patch, then by
full package, each time through the ``updock`` command; the deployed tree
must equal the release tree exactly (every path, content, mode, empty
folder), the user data must be untouched byte for byte, the journal must
show every step with its time, and ``upgrade rollback`` must bring back the
previous tree exactly.

The releases carry the published version numbers (2.31.0.0, 2.32.0.0,
2.32.3.0): the patch to 2.32.0.0 names 2.31.0.0 as its ``from_version``, so
it applies across the base versions.
"""

from __future__ import annotations

import os
import shutil

import pytest
from deploykit import (
    DEMO,
    assert_same_tree,
    build_demo_release,
    explain,
    json_lines,
    make_demo_deployment,
    make_deployment,
    snapshot,
    updock,
)
from realinput import PROJECT, extract_sdist, sdist

from cli import exitcodes
from engine.release import build_release

V_A, V_B, V_C = "2.31.0.0", "2.32.0.0", "2.32.3.0"
REAL = {V_A: "2.31.0", V_B: "2.32.0", V_C: "2.32.3"}
USER_DATA = {
    "data/db.sqlite": bytes(range(256)) * 64,
    "data/uploads/photo.png": b"\x89PNG user upload\n",
    "data/notes.txt": b"kept across upgrades\n",
}
STEPS = (
    "tx_begun",
    "download_verified",
    "package_staged",
    "backup_created",
    "op_intended",
    "op_applied",
    "commit_decided",
    "committed",
)


@pytest.fixture(scope="module")
def release_trees(tmp_path_factory) -> dict[str, object]:
    """version -> release tree: the published source tree, plus a compose
    file naming the version, an empty folder and, from the second release
    on, an executable script (so modes and empty folders are compared
    too)."""
    base = tmp_path_factory.mktemp("requests-releases")
    trees = {}
    for version, real in REAL.items():
        top = extract_sdist(sdist(PROJECT, real), base / f"sdist-{real}")
        tree = base / f"release-{version}"
        shutil.copytree(top, tree)
        (tree / "docker-compose.yml").write_text(
            f"services:\n  web:\n    image: requests-demo:{real}\n", encoding="utf-8"
        )
        (tree / "logs" / version).mkdir(parents=True)
        if version != V_A:
            script = tree / "bin" / "serve.sh"
            script.parent.mkdir()
            script.write_text(f"#!/bin/sh\necho {real}\n", encoding="utf-8")
            os.chmod(script, 0o755 if version == V_B else 0o750)
        trees[version] = tree
    return trees


@pytest.fixture(scope="module")
def releases(release_trees, tmp_path_factory) -> dict[str, object]:
    """version -> manifest path, built by the release builder."""
    out = tmp_path_factory.mktemp("requests-published")
    return {
        V_B: build_release(
            release_trees[V_A], release_trees[V_B], V_B, V_A, out / V_B
        ).manifest_path,
        V_C: build_release(
            release_trees[V_B], release_trees[V_C], V_C, V_B, out / V_C
        ).manifest_path,
    }


@pytest.fixture
def deployment(tmp_path, release_trees):
    return make_deployment(
        tmp_path / "deployment", release_trees[V_A], V_A, user_data=USER_DATA
    )


def apply(root, manifest, *extra: str) -> dict:
    """``upgrade apply --json``; returns the final result object."""
    result = updock(
        "upgrade",
        "apply",
        "--root",
        str(root),
        "--manifest",
        str(manifest),
        "--yes",
        "--no-services",
        "--json",
        *extra,
        timeout=300,
    )
    assert result.returncode == exitcodes.OK, explain(result)
    lines = json_lines(result.stdout)
    final = lines[-1]
    assert final["event"] == "result" and final["outcome"] == "committed", final
    return final


def rollback(root) -> None:
    result = updock(
        "upgrade", "rollback", "--root", str(root), "--yes", "--no-services"
    )
    assert result.returncode == exitcodes.OK, explain(result)


def check_deployed(root, tree, what: str) -> None:
    """The project folder is exactly ``tree`` plus the untouched user data."""
    assert_same_tree(snapshot(root / "docker", skip={"data"}), snapshot(tree), what)
    for relpath, data in USER_DATA.items():
        assert (root / "docker" / relpath).read_bytes() == data, relpath


def status(root) -> dict:
    result = updock("status", "--root", str(root), "--no-services", "--json")
    assert result.returncode == exitcodes.OK, explain(result)
    return json_lines(result.stdout)[-1]


def tx_events(root, tx: str) -> list[dict]:
    result = updock("journal", "inspect", "--root", str(root), "--tx", tx, "--json")
    assert result.returncode == exitcodes.OK, explain(result)
    return json_lines(result.stdout)


def check_journaled_steps(root, tx: str) -> None:
    events = tx_events(root, tx)
    kinds = [event["type"] for event in events]
    for step in STEPS:
        assert step in kinds, f"{step} missing from {tx}: {kinds}"
    assert kinds.index("download_verified") < kinds.index("op_intended")
    assert kinds.index("backup_created") < kinds.index("op_applied")
    assert kinds[-1] == "committed"
    times = [event["at"] for event in events]
    offsets = [event["offset"] for event in events]
    assert times == sorted(times) and offsets == sorted(offsets)
    assert offsets[0] == 0 and all(isinstance(t, float) for t in times)


def test_upgrade_patch_then_full_real_releases_deploy_exact_trees(
    deployment, release_trees, releases
):
    data_before = snapshot(deployment / "docker" / "data")

    patch = apply(deployment, releases[V_B])
    assert (patch["action"], patch["current"], patch["target"]) == ("patch", V_A, V_B)
    check_deployed(deployment, release_trees[V_B], "after the patch")
    check_journaled_steps(deployment, patch["tx"])

    full = apply(deployment, releases[V_C], "--strategy", "full")
    assert (full["action"], full["current"], full["target"]) == ("full", V_B, V_C)
    check_deployed(deployment, release_trees[V_C], "after the full package")
    check_journaled_steps(deployment, full["tx"])

    assert snapshot(deployment / "docker" / "data") == data_before
    report = status(deployment)
    assert (report["version"], report["version_source"]) == (V_C, "journal")
    assert report["drift"] == [] and report["pending_recovery"] == []
    assert f'docker_service = "{V_C}"' in (deployment / "config.toml").read_text()
    verify = updock("journal", "verify", "--root", str(deployment))
    assert verify.returncode == exitcodes.OK, explain(verify)


def test_upgrade_rollback_after_patch_and_after_full_restores_previous_tree(
    deployment, release_trees, releases
):
    apply(deployment, releases[V_B])
    rollback(deployment)
    check_deployed(deployment, release_trees[V_A], "after undoing the patch")
    assert status(deployment)["version"] == V_A

    apply(deployment, releases[V_B])
    apply(deployment, releases[V_C], "--strategy", "full")
    rollback(deployment)
    check_deployed(deployment, release_trees[V_B], "after undoing the full package")
    assert status(deployment)["version"] == V_B
    assert f'docker_service = "{V_B}"' in (deployment / "config.toml").read_text()


# -- hand edits between upgrades ------------------------------------------------


def test_rollback_after_same_size_hand_edit_and_reupgrade_restores_tree(tmp_path):
    """An operator edits an installed file in place (same size: a digit in a
    setting), undoes the upgrade, installs it again, then installs the next
    release and undoes that: the tree of the re-installed release must come
    back. (The installed file's inode must not be the journal's own copy of
    its content, or the edit reaches the journal.)"""
    root = make_demo_deployment(tmp_path / "deployment")
    v3 = tmp_path / "v3"
    shutil.copytree(DEMO / "v2", v3)
    (v3 / "front" / "index.html").write_text("<h1>third release</h1>\n")
    second = build_demo_release(tmp_path / "second").manifest_path
    third = build_release(DEMO / "v2", v3, "1.2.0", "1.1.0", tmp_path / "third")
    apply(root, second)
    page = root / "docker" / "front" / "index.html"
    with open(page, "r+b") as stream:
        stream.write(b"X")

    rollback(root)
    apply(root, second)
    installed = snapshot(root / "docker")
    apply(root, third.manifest_path)
    rollback(root)

    assert_same_tree(snapshot(root / "docker"), installed, "after undoing the third")
