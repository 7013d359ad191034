"""Full disks, read-only mounts, busy mount points and permission errors,
on real filesystems: the tree stays as it was and the exit code says why.

These tests mount tmpfs filesystems and bind mounts, so they need root (CI
runs as root); elsewhere they skip and say so. Each transaction runs in a
child process (``txdriver.py apply``) that exits with the code the
``updock`` command maps its error to.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from txcrash import DRIVER, REPO
from txdriver import snapshot

from cli import exitcodes
from journal import BlobStore
from journal.verify import verify_journal

MB = 1024 * 1024

pytestmark = pytest.mark.root


def _mount(*argv: str) -> None:
    result = subprocess.run(
        ["mount", *argv], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount here ({result.stderr.strip()}); needs root")


@pytest.fixture
def mounts():
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    mounted: list[Path] = []

    def mount(target: Path, *argv: str) -> Path:
        target.mkdir(parents=True, exist_ok=True)
        _mount(*argv, str(target))
        mounted.append(target)
        return target

    yield mount
    for target in reversed(mounted):
        subprocess.run(["umount", "-l", str(target)], check=False)


def tmpfs(mount, target: Path, size: str) -> Path:
    return mount(target, "-t", "tmpfs", "-o", f"size={size}", "tmpfs")


def deployment(root: Path) -> Path:
    tree = root / "docker"
    (tree / "conf").mkdir(parents=True)
    (tree / "app.yml").write_text("version: 1\n")
    (tree / "conf" / "a.conf").write_text("a = 1\n")
    (root / ".updock").mkdir()
    return tree


def apply(
    root: Path, spec: dict, *, prefix: list[str] = ()
) -> subprocess.CompletedProcess:
    spec_path = root.parent / f"{root.name}.spec.json"
    spec_path.write_text(json.dumps(spec))
    argv = [*prefix, sys.executable, str(DRIVER), "apply", str(root), str(spec_path)]
    return subprocess.run(
        argv, cwd=REPO, capture_output=True, text=True, timeout=120, check=False
    )


def staged(folder: Path, name: str, size: int, byte: bytes = b"x") -> str:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(byte * size)
    return str(path)


def assert_unchanged(root: Path, before: dict) -> None:
    assert snapshot(root / "docker") == before
    state = root / ".updock"
    verify_journal(state / "journal", BlobStore(state / "blobs"))


def test_apply_too_big_for_disk_is_refused_before_any_change(mounts, tmp_path):
    root = tmpfs(mounts, tmp_path / "small", "8m")
    deployment(root)
    before = snapshot(root / "docker")
    big = staged(tmp_path / "staging", "big.bin", 16 * MB)

    result = apply(root, {"ops": [["put_file", "big.bin", {"source": big}]]})

    assert result.returncode == exitcodes.NO_SPACE, result.stderr
    assert str(root) in result.stderr and "free" in result.stderr
    assert_unchanged(root, before)


def test_disk_filling_during_apply_rolls_back(mounts, tmp_path):
    """The space check passes; then the disk fills (another process), and
    a placement that must copy a blob (the staged files are on another
    filesystem) fails with ENOSPC. The rollback needs no space: the deleted
    file comes back by hard link from the store."""
    root = tmpfs(mounts, tmp_path / "fills", "32m")
    deployment(root)
    before = snapshot(root / "docker")
    staging = tmp_path / "staging"
    ops = [["delete_file", "app.yml", {}], ["make_dir", "new", {}]]
    ops += [
        ["put_file", f"new/copy{i}.bin", {"source": staged(staging, f"c{i}", 3 * MB)}]
        for i in range(2)
    ]
    spec = {
        "ops": ops,
        "fill_after_prepare": {"path": str(root / "filler"), "leave": 64 * 1024},
    }

    result = apply(root, spec)

    assert result.returncode == exitcodes.ROLLED_BACK, result.stderr
    assert "ENOSPC" in result.stderr and "new/copy0.bin" in result.stderr
    assert_unchanged(root, before)


def test_read_only_mount_in_the_way_rolls_back(mounts, tmp_path):
    root = tmp_path / "ro"
    tree = deployment(root)
    before = snapshot(tree)
    mounts(tree / "conf", "--bind", str(tree / "conf"))
    _mount("-o", "remount,bind,ro", str(tree / "conf"))
    source = staged(tmp_path / "staging", "a.conf", 100, b"n")
    ops = [
        ["delete_file", "app.yml", {}],
        ["put_file", "conf/a.conf", {"source": source}],
    ]

    result = apply(root, {"ops": ops})

    assert result.returncode == exitcodes.ROLLED_BACK, result.stderr
    assert "EROFS" in result.stderr and "conf/a.conf" in result.stderr
    assert_unchanged(root, before)


def test_busy_mount_point_in_the_way_rolls_back(mounts, tmp_path):
    root = tmp_path / "busy"
    tree = deployment(root)
    tmpfs(mounts, tree / "volume", "1m")
    before = snapshot(tree)
    (tmp_path / "staging" / "volume").mkdir(parents=True)
    ops = [
        ["delete_file", "app.yml", {}],
        ["replace_dir", "volume", {"source": str(tmp_path / "staging" / "volume")}],
    ]

    result = apply(root, {"ops": ops})

    assert result.returncode == exitcodes.ROLLED_BACK, result.stderr
    assert "EBUSY" in result.stderr and "volume" in result.stderr
    assert_unchanged(root, before)


def test_permission_denied_rolls_back(mounts, tmp_path):
    """Root ignores mode bits, so the child runs without CAP_DAC_OVERRIDE
    (``setpriv``) and a folder of mode 0555 really refuses it."""
    root = tmp_path / "denied"
    tree = deployment(root)
    (tree / "locked").mkdir(mode=0o555)
    os.chmod(tree / "locked", 0o555)
    before = snapshot(tree)
    source = staged(tmp_path / "staging", "x", 10)
    ops = [["delete_file", "app.yml", {}], ["put_file", "locked/x", {"source": source}]]
    drop = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]

    result = apply(root, {"ops": ops}, prefix=drop)

    assert result.returncode == exitcodes.ROLLED_BACK, result.stderr
    assert "EACCES" in result.stderr and "locked/x" in result.stderr
    assert_unchanged(root, before)


def test_package_too_big_to_unpack_names_the_filesystem(mounts, tmp_path):
    """A disk that fills while a package is unpacked: the error is a space
    error (exit 8) naming where, and no staging folder is left behind."""
    import zipfile

    from cli.errors import describe
    from engine.extract import UnpackSpaceError, stage_package

    small = tmpfs(mounts, tmp_path / "small", "2m")
    archive = tmp_path / "big.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as package:
        package.writestr("docker/video.bin", os.urandom(3 * MB))

    with pytest.raises(UnpackSpaceError) as caught:
        stage_package(archive, small / "staging")

    code, message = describe(caught.value)
    assert code == exitcodes.NO_SPACE
    assert str(small) in message and "big.zip" in message
    assert not (small / "staging").exists()
