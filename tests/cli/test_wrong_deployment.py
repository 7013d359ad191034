"""Operator mistakes and broken inputs found by trying updock as a new user:
each gets its own exit code and a message naming the problem, and nothing
is changed (or created)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from cli import exitcodes
from deploykit import (
    assert_same_tree,
    build_demo_release,
    explain,
    make_demo_deployment,
    snapshot,
    updock,
)


def test_commands_on_a_folder_that_is_no_deployment_refused(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    missing = tmp_path / "missing"

    status = updock("status", "--root", str(empty))
    apply = updock(
        "upgrade", "apply", "--root", str(missing), "--manifest", "x.json", "--yes"
    )

    for result in (status, apply):
        assert result.returncode == exitcodes.BAD_INPUT, explain(result)
        assert "neither config.toml nor a project folder" in result.stderr
        assert "next: pass --root" in result.stderr
    assert list(empty.iterdir()) == []
    assert not missing.exists()


def test_config_that_is_not_text_refused(tmp_path):
    root = make_demo_deployment(tmp_path / "deployment")
    (root / "config.toml").write_bytes(b"\xff\xfe\x00 not toml")
    before = snapshot(root)

    result = updock("status", "--root", str(root))

    assert result.returncode == exitcodes.BAD_INPUT, explain(result)
    assert "is not UTF-8 text" in result.stderr
    assert_same_tree(snapshot(root), before, "after a refused status")


def _tar_gz(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.mark.parametrize(
    "files",
    [{}, {"shop/front/index.html": b"<html>wrong layout</html>\n"}],
    ids=["empty", "wrong-top-folder"],
)
def test_full_package_without_compose_file_refused(tmp_path, files):
    root = make_demo_deployment(tmp_path / "deployment")
    package = _tar_gz(files)
    folder = tmp_path / "release"
    folder.mkdir()
    (folder / "full.tar.gz").write_bytes(package)
    entry = {
        "url": "full.tar.gz",
        "sha256": hashlib.sha256(package).hexdigest(),
        "size": len(package),
        "signature": "",
    }
    manifest = {
        "version": "1.1.0",
        "release_date": "2030-01-01T00:00:00Z",
        "release_notes": "",
        "platforms": {"x86_64": entry, "aarch64": entry},
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    before = snapshot(root, skip={".updock", "cacheDuckData"})

    result = updock(
        "upgrade", "apply", "--root", str(root), "--manifest",
        str(folder / "manifest.json"), "--yes", "--no-services",
    )

    assert result.returncode == exitcodes.BAD_INPUT, explain(result)
    assert "has no docker-compose.yml" in result.stderr
    assert_same_tree(
        snapshot(root, skip={".updock", "cacheDuckData"}), before, "after refusal"
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_space_refused_after_staging_exits_no_space(tmp_path):
    """The free-space check after staging aborts the transaction itself; the
    pipeline must report that refusal (exit 8), not a failed second abort."""
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)],
                   check=True)
    try:
        release = build_demo_release(tmp_path / "release")
        root = make_demo_deployment(mount / "deployment")
        stats = os.statvfs(mount)
        free = stats.f_bavail * stats.f_frsize
        # Leave room for the download, the staging and the journal, not for
        # the margin the transaction's own check asks for.
        (mount / "filler").write_bytes(b"\0" * max(free - 5_251_072, 0))
        before = snapshot(root / "docker")

        result = updock(
            "upgrade", "apply", "--root", str(root), "--manifest",
            str(release.manifest_path), "--yes", "--no-services",
        )

        assert result.returncode == exitcodes.NO_SPACE, explain(result)
        assert "free space" in result.stderr or "space" in result.stderr
        assert "cannot abort" not in result.stderr
        assert_same_tree(snapshot(root / "docker"), before, "after a space refusal")
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
