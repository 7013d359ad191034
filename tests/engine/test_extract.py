"""Staging packages: layouts, modes, junk, and patch pre-checks.

(Hostile archives are in test_hostile.py.)"""

from __future__ import annotations

import os
import stat

import pytest

from engine.extract import (
    ArchiveLimitError,
    ExtractLimits,
    PatchContentError,
    UnknownArchiveError,
    check_patch_package,
    stage_package,
)
from engine.manifest import FileSet, Operations
from hostile import tar_gz, tar_member, zip_bytes

REG = stat.S_IFREG


def write(tmp_path, data: bytes, name="pkg") -> object:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_stage_package_zip_with_docker_prefix_strips_it(tmp_path):
    data = zip_bytes(
        [
            ("docker/", b"", stat.S_IFDIR | 0o755),
            ("docker/run.sh", b"#!/bin/sh\n", REG | 0o755),
            ("docker/conf/app.ini", b"x=1\n", REG | 0o640),
            ("docker/plain.txt", b"no unix mode", None),
        ]
    )

    staged = stage_package(write(tmp_path, data), tmp_path / "stage")

    assert sorted(staged.files) == ["conf/app.ini", "plain.txt", "run.sh"]
    assert staged.dirs == {"conf": 0o755}
    assert staged.total_bytes == 10 + 4 + 12
    assert stat.S_IMODE(os.stat(tmp_path / "stage/run.sh").st_mode) == 0o755
    assert stat.S_IMODE(os.stat(tmp_path / "stage/conf/app.ini").st_mode) == 0o640
    assert stat.S_IMODE(os.stat(tmp_path / "stage/plain.txt").st_mode) == 0o644
    assert not (tmp_path / "stage.unwrap").exists()


def test_stage_package_tar_without_prefix_keeps_layout_and_modes(tmp_path):
    data = tar_gz(
        [
            tar_member("./", kind=b"5", mode=0o755),
            tar_member("./bin/tool", b"\x7fELF", mode=0o700),
            tar_member("./private", kind=b"5", mode=0o700),
            tar_member("./docker-compose.yml", b"services: {}\n"),
        ]
    )

    staged = stage_package(write(tmp_path, data), tmp_path / "stage")

    assert sorted(staged.files) == ["bin/tool", "docker-compose.yml"]
    assert staged.dirs == {"bin": 0o755, "private": 0o700}
    assert stat.S_IMODE(os.stat(tmp_path / "stage/bin/tool").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(tmp_path / "stage/private").st_mode) == 0o700


def test_stage_package_zip_skips_junk_entries(tmp_path):
    data = zip_bytes(
        [
            ("docker/app.py", b"ok", REG | 0o644),
            ("__MACOSX/docker/._app.py", b"junk", REG | 0o644),
            ("docker/.DS_Store", b"junk", REG | 0o644),
            ("docker/.git/config", b"junk", REG | 0o644),
            ("docker/notes.bak", b"junk", REG | 0o644),
            ("docker/.env", b"KEEP=1", REG | 0o600),
        ]
    )

    staged = stage_package(write(tmp_path, data), tmp_path / "stage")

    assert sorted(staged.files) == [".env", "app.py"]


def test_stage_package_refuses_unknown_format_and_leaves_nothing(tmp_path):
    with pytest.raises(UnknownArchiveError):
        stage_package(write(tmp_path, b"just text"), tmp_path / "stage")
    assert not (tmp_path / "stage").exists()


def test_stage_package_entry_cap(tmp_path):
    data = zip_bytes([(f"docker/f{i}", b"", REG | 0o644) for i in range(20)])

    with pytest.raises(ArchiveLimitError):
        stage_package(
            write(tmp_path, data),
            tmp_path / "stage",
            limits=ExtractLimits(max_entries=10),
        )
    assert not (tmp_path / "stage").exists()


def test_stage_package_total_size_cap_counts_written_bytes(tmp_path):
    data = tar_gz([tar_member("a.bin", os.urandom(300_000))])
    limits = ExtractLimits(max_total_bytes=100_000)

    with pytest.raises(ArchiveLimitError):
        stage_package(write(tmp_path, data), tmp_path / "stage", limits=limits)


def ops(replace_files=(), replace_dirs=(), delete_files=(), delete_dirs=()):
    return Operations(
        replace=FileSet(list(replace_files), list(replace_dirs)),
        delete=FileSet(list(delete_files), list(delete_dirs)),
    )


def test_check_patch_package_accepts_complete_package(tmp_path):
    (tmp_path / "stage/app/web").mkdir(parents=True)
    (tmp_path / "stage/app/server.py").write_text("x")

    check_patch_package(
        tmp_path / "stage",
        ops(["app/server.py"], ["app/web/"], ["gone.txt"], ["old/"]),
        tree_root=tmp_path / "tree",
    )


@pytest.mark.parametrize(
    "operations",
    [
        ops(replace_files=["app/web"]),
        ops(replace_dirs=["app/server.py"]),
        ops(delete_files=["a/../../x"]),
        ops(delete_dirs=["."]),
    ],
)
def test_check_patch_package_refuses(tmp_path, operations):
    (tmp_path / "stage/app/web").mkdir(parents=True)
    (tmp_path / "stage/app/server.py").write_text("x")

    with pytest.raises(PatchContentError):
        check_patch_package(tmp_path / "stage", operations)
