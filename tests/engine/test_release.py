"""``updock release build`` on real input (two published source trees of
``requests``): the patch applied to the old tree and the full package each
stage exactly the new tree.

The plan is applied with plain shutil here: the transaction engine has its
own tests; this file checks what the release carries.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

from engine.download import fetch_package
from engine.extract import check_patch_package, is_junk, stage_package
from engine.manifest import (
    load_manifest,
    verify_manifest_signature,
    verify_package_signature,
)
from engine.patchplan import Plan, plan_full, plan_patch
from engine.release import build_release
from engine.signing import load_public_key
from engine.versions import Version, decide
from realinput import NEW_VERSION, OLD_VERSION, release_trees  # noqa: F401

REPO = Path(__file__).resolve().parents[2]


def updock(*args: object) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "cli.main", *map(str, args)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    return result


def listing(root: Path) -> dict[str, tuple]:
    """Every path under ``root`` (junk names left out): kind, mode, digest."""
    found = {}
    for folder, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(folder) / name
            relpath = path.relative_to(root).as_posix()
            if is_junk(relpath):
                continue
            info = os.lstat(path)
            mode = stat.S_IMODE(info.st_mode)
            if stat.S_ISDIR(info.st_mode):
                found[relpath] = ("dir", mode)
            else:
                found[relpath] = (
                    "file",
                    mode,
                    hashlib.sha256(path.read_bytes()).hexdigest(),
                )
    return found


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def apply_plan(plan: Plan, staged: Path, tree: Path) -> None:
    """Apply a patch plan with plain file operations."""
    for change in plan.changes:
        target = tree / change.path
        if change.kind in ("delete_file", "delete_tree"):
            remove(target)
            continue
        remove(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        if change.kind == "replace_dir":
            shutil.copytree(staged / change.source, target)
        else:
            shutil.copy2(staged / change.source, target)
        os.chmod(target, change.mode)


def build_signed(old: Path, new: Path, tmp_path: Path) -> tuple[Path, Path]:
    updock("release", "keygen", "--out", tmp_path / "keys")
    out = tmp_path / "release"
    updock(
        "release",
        "build",
        "--from",
        old,
        "--to",
        new,
        "--version",
        NEW_VERSION,
        "--from-version",
        OLD_VERSION,
        "--out",
        out,
        "--sign-key",
        tmp_path / "keys" / "updock-signing.key",
    )
    return out / "manifest.json", tmp_path / "keys" / "updock-signing.pub"


def fetch_and_stage(package, manifest, key, tmp_path: Path, name: str):
    fetched = fetch_package(
        package.url,
        cache_dir=tmp_path / "cache",
        version=manifest.version,
        kind=package.kind,
        arch=package.arch,
        sha256=package.sha256,
        size=package.size,
    )
    verify_package_signature(package, fetched.sha256, key)
    return stage_package(fetched.path, tmp_path / name)


def test_release_build_real_trees_patch_and_full_reproduce_new_tree(
    release_trees, tmp_path
):
    old, new = release_trees
    manifest_path, public_path = build_signed(old, new, tmp_path)
    manifest = load_manifest(manifest_path)
    key = load_public_key(str(public_path))
    verify_manifest_signature(manifest, key)
    current = Version.parse(OLD_VERSION)

    patch = decide(current, manifest, "x86_64", strategy="patch").package
    staged = fetch_and_stage(patch, manifest, key, tmp_path, "staged-patch")
    tree = tmp_path / "tree"
    shutil.copytree(old, tree)
    assert listing(tree) != listing(new)
    check_patch_package(staged.root, patch.operations, tree_root=tree)
    apply_plan(plan_patch(staged, patch.operations), staged.root, tree)
    assert listing(tree) == listing(new)

    assert decide(current, manifest, "x86_64").action == "patch"
    decision = decide(current, manifest, "x86_64", strategy="full")
    assert decision.action == "full"
    staged_full = fetch_and_stage(
        decision.package, manifest, key, tmp_path, "staged-full"
    )
    assert plan_full(staged_full).changes[0].kind == "swap_tree"
    assert listing(staged_full.root) == listing(new)


def test_release_build_real_trees_lists_moves_as_whole_directories(
    release_trees, tmp_path
):
    old, new = release_trees

    built = build_release(old, new, NEW_VERSION, OLD_VERSION, tmp_path / "out")

    ops = built.diff
    assert "src" in ops.replace_dirs and "requests" in ops.delete_dirs
    assert not any(path.startswith("src/") for path in ops.replace_files)
    assert built.patch_path.stat().st_size < built.full_path.stat().st_size * 2


def test_release_build_is_reproducible(release_trees, tmp_path):
    old, new = release_trees

    first = build_release(old, new, NEW_VERSION, OLD_VERSION, tmp_path / "a")
    second = build_release(old, new, NEW_VERSION, OLD_VERSION, tmp_path / "b")

    assert first.full_path.read_bytes() == second.full_path.read_bytes()
    assert first.patch_path.read_bytes() == second.patch_path.read_bytes()
