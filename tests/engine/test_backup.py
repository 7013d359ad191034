"""Backups: named as the existing client names them, holding paths relative
to the project folder, recorded in the journal with a correct sha256, size
and file count, never listed while partial, and restored by a journaled,
recoverable transaction."""

from __future__ import annotations

import os
import re
import shutil
import tarfile
from collections import Counter
from pathlib import Path

import pytest
from deploykit import (
    build_demo_release,
    decision_point,
    explain,
    file_sha256,
    in_parallel,
    json_lines,
    killed,
    make_demo_deployment,
    position,
    snapshot,
    updock,
    verify_deployment_journal,
)

from cli import exitcodes
from journal import Journal
from journal.records import BackupCreated

NAME = re.compile(
    r"^backup_(pre-upgrade|manual)_v(\d+\.\d+\.\d+\.\d+)_"
    r"\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}(-\d+)?\.tar\.gz$"
)


@pytest.fixture
def root(tmp_path):
    """The demo deployment with an .env, config/ and two user-data folders."""
    root = make_demo_deployment(tmp_path / "deployment")
    (root / "docker" / "upload" / "2024").mkdir(parents=True)
    (root / "docker" / "upload" / "2024" / "photo.png").write_bytes(b"\x89PNG" * 100)
    (root / "docker" / "upload" / "empty").mkdir()
    return root


def run(root, *args: str, env: dict | None = None):
    return updock(*args, "--root", str(root), env=env)


def create(root, env: dict | None = None):
    return run(root, "backup", "create", env=env)


def listed(root) -> list[dict]:
    result = run(root, "backup", "list", "--json")
    assert result.returncode == exitcodes.OK, explain(result)
    doc = json_lines(result.stdout)[-1]
    assert doc["success"] is True and doc["error"] is None
    return doc["backups"]


def members(path: Path) -> list[str]:
    with tarfile.open(path) as archive:
        return archive.getnames()


def test_backup_create_names_records_and_holds_project_paths(root):
    result = create(root)
    assert result.returncode == exitcodes.OK, explain(result)

    (row,) = listed(root)
    path = Path(row["file_path"])
    assert path.parent == root / "backups"
    assert NAME.match(path.name), path.name
    assert row["backup_type"] == "Manual" and row["service_version"] == "1.0.0.0"
    assert row["backup_id"] == path.name.removesuffix(".tar.gz")
    assert row["file_size"] == path.stat().st_size and row["file_exists"]
    assert row["sha256"] == file_sha256(path)
    names = members(path)
    assert row["files"] == len(names)
    assert {
        "docker-compose.yml",
        ".env",
        "config",
        "config/app.conf",
        "config/legacy.conf",
        "data",
        "data/customers.csv",
        "upload",
        "upload/2024/photo.png",
        "upload/empty",
        ".updock-root/config.toml",
    } <= set(names)
    assert not any(n.startswith(("/", "docker/", "..")) for n in names), names
    assert not any(n.startswith(("app", "front")) for n in names), names


def test_backup_recorded_in_journal_matches_archive(root):
    assert create(root).returncode == exitcodes.OK
    (row,) = listed(root)
    path = Path(row["file_path"])

    with Journal.open(root / ".updock" / "journal", writable=False) as journal:
        (record,) = [e for _, e in journal.records() if isinstance(e, BackupCreated)]

    assert record.backup_id == row["backup_id"] and record.kind == "manual"
    assert record.path == f"backups/{path.name}"
    assert record.sha256 == file_sha256(path)
    assert record.size == path.stat().st_size
    assert record.files == len(members(path))
    status = run(root, "status", "--no-services", "--json")
    (shown,) = json_lines(status.stdout)[-1]["backups"]
    assert (shown["id"], shown["sha256"], shown["present"]) == (
        record.backup_id,
        record.sha256,
        True,
    )


def test_pre_upgrade_backup_holds_the_old_configuration(root, tmp_path):
    release = build_demo_release(tmp_path / "release")
    old_compose = (root / "docker" / "docker-compose.yml").read_bytes()
    result = run(
        root,
        "upgrade",
        "apply",
        "--manifest",
        str(release.manifest_path),
        "--yes",
        "--no-services",
        "--json",
    )
    assert result.returncode == exitcodes.OK, explain(result)
    final = json_lines(result.stdout)[-1]

    (row,) = listed(root)
    assert row["backup_id"] == final["backup"] and row["backup_type"] == "PreUpgrade"
    assert Path(row["file_path"]).name.startswith("backup_pre-upgrade_v1.0.0.0_")
    with tarfile.open(row["file_path"]) as archive:
        assert archive.extractfile("docker-compose.yml").read() == old_compose
        assert "config/legacy.conf" in archive.getnames()


@pytest.mark.parametrize("step", ["backup.written", "backup.renamed"])
def test_backup_killed_before_journaled_never_listed(root, step):
    crashed = create(root, env={"UPDOCK_CRASH_AT": step})
    assert killed(crashed), explain(crashed)
    left = sorted(p.name for p in (root / "backups").iterdir())
    assert left, "the killed run wrote nothing"

    assert listed(root) == []

    again = create(root)
    assert again.returncode == exitcodes.OK, explain(again)
    rows = listed(root)
    assert (
        len(rows) == 1 and file_sha256(Path(rows[0]["file_path"])) == rows[0]["sha256"]
    )
    partial = [
        p.name for p in (root / "backups").iterdir() if p.name.endswith(".partial")
    ]
    assert partial == []


# -- restore -------------------------------------------------------------------


def _edit_deployment(root: Path) -> None:
    """What an operator might do after a backup: configuration and data."""
    docker = root / "docker"
    (docker / "config" / "app.conf").write_text("edited by hand\n")
    (docker / "config" / "legacy.conf").unlink()
    (docker / "config" / "extra.conf").write_text("added later\n")
    (docker / ".env").write_text("EDITED=1\n")
    (docker / "data" / "customers.csv").write_text("new rows\n")
    (docker / "upload" / "2024" / "photo.png").unlink()


def _restore(root, backup_id: str, *extra: str, env: dict | None = None):
    return run(
        root, "backup", "restore", backup_id, "--yes", "--no-services", *extra, env=env
    )


def test_backup_restore_brings_back_configuration_not_data(root):
    assert create(root).returncode == exitcodes.OK
    (row,) = listed(root)
    at_backup = snapshot(root / "docker")
    _edit_deployment(root)
    edited = snapshot(root / "docker")

    result = _restore(root, row["backup_id"])

    assert result.returncode == exitcodes.OK, explain(result)
    found = snapshot(root / "docker")
    user_data = ("data", "upload")
    for path in set(found) | set(at_backup) | set(edited):
        expected = edited if path.split("/")[0] in user_data else at_backup
        assert found.get(path) == expected.get(path), path
    _check_restore_journaled(root)


def test_backup_restore_with_data_brings_back_everything(root):
    assert create(root).returncode == exitcodes.OK
    (row,) = listed(root)
    at_backup = snapshot(root / "docker")
    _edit_deployment(root)

    result = _restore(root, row["backup_id"], "--data")

    assert result.returncode == exitcodes.OK, explain(result)
    assert snapshot(root / "docker") == at_backup
    _check_restore_journaled(root)


def test_backup_restore_keeps_symlinks_and_modes(root):
    docker = root / "docker"
    (docker / "config" / "current.conf").symlink_to("app.conf")
    (docker / "data" / "shared").mkdir()
    os.chmod(docker / "data" / "shared", 0o2775)
    (docker / "data" / "shared" / "rows.csv").write_text("group-writable\n")
    os.chmod(docker / "data" / "shared" / "rows.csv", 0o664)
    (docker / "data" / "shared" / "latest").symlink_to("rows.csv")
    assert create(root).returncode == exitcodes.OK
    (row,) = listed(root)
    at_backup = snapshot(docker)
    _edit_deployment(root)
    (docker / "config" / "current.conf").unlink()
    shutil.rmtree(docker / "data" / "shared")

    result = _restore(root, row["backup_id"], "--data")

    assert result.returncode == exitcodes.OK, explain(result)
    assert snapshot(docker) == at_backup


def _check_restore_journaled(root: Path) -> None:
    result = run(root, "journal", "inspect", "--json", "--kind", "restore")
    (tx,) = json_lines(result.stdout)
    assert tx["status"] == "committed" and tx["ops"] > 0, tx
    events = json_lines(
        run(root, "journal", "inspect", "--json", "--tx", tx["tx"]).stdout
    )
    kinds = [event["type"] for event in events]
    assert kinds[0] == "tx_begun" and kinds[-1] == "committed", kinds
    assert "op_intended" in kinds and "op_applied" in kinds


def test_backup_restore_unknown_id_exits_bad_input(root):
    before = snapshot(root / "docker")

    result = _restore(root, "backup_manual_v1.0.0.0_2000-01-01_00-00-00")

    assert result.returncode == exitcodes.BAD_INPUT, explain(result)
    assert "backup list" in result.stderr
    assert snapshot(root / "docker") == before


def test_backup_restore_damaged_archive_exits_integrity(root):
    assert create(root).returncode == exitcodes.OK
    (row,) = listed(root)
    with open(row["file_path"], "r+b") as archive:
        archive.seek(40)
        archive.write(b"\0\0\0\0")
    _edit_deployment(root)
    before = snapshot(root / "docker")

    result = _restore(root, row["backup_id"], "--data")

    assert result.returncode == exitcodes.INTEGRITY, explain(result)
    assert snapshot(root / "docker") == before


def test_backup_restore_killed_at_every_step_recovers_before_or_after(root, tmp_path):
    assert create(root).returncode == exitcodes.OK
    (row,) = listed(root)
    _edit_deployment(root)
    template = tmp_path / "template"
    shutil.copytree(root, template, symlinks=True)
    before = snapshot(root / "docker")
    log = tmp_path / "restore.steps"
    probe = _restore(
        root, row["backup_id"], "--data", env={"UPDOCK_CRASH_LOG": str(log)}
    )
    assert probe.returncode == exitcodes.OK, explain(probe)
    after = snapshot(root / "docker")
    steps = log.read_text().split()
    boundary = decision_point(steps)
    chosen = [
        f"{name}#{n}"
        for name, count in Counter(steps).items()
        for n in range(1, count + 1)
    ]

    def one(index: int, target: str) -> str:
        case = tmp_path / f"case{index}"
        shutil.copytree(template, case, symlinks=True)
        crashed = _restore(
            case, row["backup_id"], "--data", env={"UPDOCK_CRASH_AT": target}
        )
        assert killed(crashed), f"{target}: {explain(crashed)}"
        status = run(case, "status", "--no-services", "--json")
        assert status.returncode == exitcodes.OK, explain(status)
        assert json_lines(status.stdout)[-1]["pending_recovery"] == []
        found = snapshot(case / "docker")
        expected = after if position(steps, target) >= boundary else before
        assert found == expected, f"killed at {target}: not the expected tree"
        verify_deployment_journal(case)
        return "after" if expected is after else "before"

    outcomes = in_parallel(one, chosen)
    assert set(outcomes) == {"before", "after"}


def test_links_pointing_outside_survive_upgrade_rollback_and_restore(root, tmp_path):
    """The operator's own symlinks may point outside the project folder (a
    file kept elsewhere, even one not there right now): an upgrade that
    removes one, its rollback and a backup restore all put it back exactly."""
    docker = root / "docker"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "legacy.conf").write_text("kept on another disk\n")
    (docker / "config" / "legacy.conf").unlink()
    (docker / "config" / "legacy.conf").symlink_to(elsewhere / "legacy.conf")
    (docker / ".env").unlink()
    (docker / ".env").symlink_to("../../elsewhere/env")
    assert create(root).returncode == exitcodes.OK
    (row,) = listed(root)
    before = snapshot(docker)
    release = build_demo_release(tmp_path / "release")
    manifest = str(release.manifest_path)

    applied = run(root, "upgrade", "apply", "--manifest", manifest, "--yes", "--no-services")
    assert applied.returncode == exitcodes.OK, explain(applied)
    assert not (docker / "config" / "legacy.conf").is_symlink()
    rolled = run(root, "upgrade", "rollback", "--yes", "--no-services")
    assert rolled.returncode == exitcodes.OK, explain(rolled)
    assert snapshot(docker) == before

    (docker / ".env").unlink()
    (docker / ".env").write_text("EDITED=1\n")
    restored = _restore(root, row["backup_id"])
    assert restored.returncode == exitcodes.OK, explain(restored)
    assert snapshot(docker) == before
    assert os.readlink(docker / ".env") == "../../elsewhere/env"
    verify_deployment_journal(root)


def _archive(path: Path, members: list[tuple[str, str, bytes | str]]) -> Path:
    """A tar.gz of (name, kind, content-or-link-target) members."""
    import io

    with tarfile.open(path, "w:gz") as tar:
        for name, kind, payload in members:
            info = tarfile.TarInfo(name)
            if kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, str(payload)
                tar.addfile(info)
            else:
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    return path


@pytest.mark.parametrize(
    "members",
    [
        [("conf", "symlink", "/tmp"), ("conf/planted", "file", b"through the link\n")],
        [("a", "symlink", "b"), ("a/x", "file", b"beneath a link inside\n")],
        [("../escape", "file", b"outside\n")],
    ],
    ids=["beneath-outside-link", "beneath-inside-link", "dot-dot"],
)
def test_backup_unpack_refuses_writing_through_links(tmp_path, members):
    from engine.backup import BackupUnreadableError, unpack_backup

    archive = _archive(tmp_path / "hostile.tar.gz", members)
    with pytest.raises(BackupUnreadableError):
        unpack_backup(archive, tmp_path / "dest")
    assert not os.path.lexists("/tmp/planted")
    assert not (tmp_path / "escape").exists()


def test_backup_unpack_keeps_a_link_pointing_outside(tmp_path):
    from engine.backup import unpack_backup

    archive = _archive(
        tmp_path / "links.tar.gz",
        [
            ("env", "symlink", "/etc/elsewhere/env"),
            ("conf/app.conf", "file", b"x=1\n"),
            ("/abs", "file", b"absolute, so made relative\n"),
        ],
    )
    unpack_backup(archive, tmp_path / "dest")
    assert os.readlink(tmp_path / "dest" / "env") == "/etc/elsewhere/env"
    assert (tmp_path / "dest" / "conf" / "app.conf").read_bytes() == b"x=1\n"
    assert (tmp_path / "dest" / "abs").is_file() and not os.path.lexists("/abs")
