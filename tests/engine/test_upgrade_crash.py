"""Kill ``updock upgrade apply`` with SIGKILL at every durable step of the
whole pipeline (download, staging, backup, apply, commit, cleanup) and during
the download itself; the next command recovers, and:

- the project folder is exactly the old or exactly the new release (whole
  tree: paths, contents, modes, empty folders), the old one when the kill
  came before the commit decision reached the journal, the new one after;
- ``status`` reports nothing awaiting recovery and the matching version;
- ``backup list --json`` lists only whole archives (each hashes to its
  recorded sha256);
- the journal verifies, every record and blob (``journal verify``'s check,
  run in the test's process to keep the file fast);
- a following ``upgrade apply`` succeeds and leaves exactly the new tree, no
  staging folder, no partial backup and no partial download behind.

Steps are discovered by running once with ``UPDOCK_CRASH_LOG``; the journal's
own append steps (hit once per record) are sampled with a stride, every
other step is killed at every hit. The demo example keeps each run small.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from deploykit import (
    DEMO,
    DEMO_NEW,
    DEMO_OLD,
    build_demo_release,
    decision_point,
    demo_release_tree,
    differences,
    explain,
    file_sha256,
    in_parallel,
    json_lines,
    killed,
    make_demo_deployment,
    position,
    snapshot,
    spawn,
    updock,
    verify_deployment_journal,
    wait_for,
)
from httpserver import MisbehavingServer

from cli import exitcodes
from engine.release import build_release

JOURNAL_STRIDE = 3
PIPELINE_STEPS = {
    "tx.begun",
    "upgrade.downloaded",
    "upgrade.staged",
    "backup.written",
    "backup.renamed",
    "upgrade.backed_up",
    "tx.prepare.journaled",
    "tx.apply.op",
    "tx.apply.synced",
    "tx.decided",
    "upgrade.config_recorded",
    "tx.committed",
}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The demo release, the old and new trees, and the steps of one run."""
    base = tmp_path_factory.mktemp("crash-world")
    release = build_demo_release(base / "release")
    probe = make_demo_deployment(base / "probe")
    old = snapshot(probe / "docker")
    log = base / "steps.log"
    result = updock(
        *apply_args(probe, release.manifest_path, "patch"),
        env={"UPDOCK_CRASH_LOG": str(log)},
    )
    assert result.returncode == exitcodes.OK, explain(result)
    new = snapshot(demo_release_tree(base))
    assert snapshot(probe / "docker") == new
    return {
        "manifest": release.manifest_path,
        "old": old,
        "new": new,
        "steps": log.read_text().split(),
    }


def apply_args(root: Path, manifest: Path, strategy: str = "auto") -> list[str]:
    return [
        "upgrade",
        "apply",
        "--root",
        str(root),
        "--manifest",
        str(manifest),
        "--strategy",
        strategy,
        "--yes",
        "--no-services",
    ]


def targets(steps: list[str]) -> list[str]:
    """``name#N`` for every hit of every step; the journal's append steps
    every ``JOURNAL_STRIDE`` hits, plus the first, the last, and the append
    of the commit decision (the boundary between old and new)."""
    decided = steps.index("tx.decided")
    chosen = []
    for name, count in Counter(steps).items():
        hits = list(range(1, count + 1))
        if name.startswith("journal.append."):
            boundary = steps[:decided].count(name)
            hits = sorted(set(hits[::JOURNAL_STRIDE]) | {count, boundary})
        chosen += [f"{name}#{n}" for n in hits]
    return chosen


def status_json(root: Path) -> dict:
    result = updock("status", "--root", str(root), "--no-services", "--json")
    assert result.returncode == exitcodes.OK, explain(result)
    return json_lines(result.stdout)[-1]


def check_backups(root: Path) -> list[dict]:
    """Every listed backup is a whole archive matching its record."""
    result = updock("backup", "list", "--root", str(root), "--json")
    assert result.returncode == exitcodes.OK, explain(result)
    listed = json_lines(result.stdout)[-1]["backups"]
    for row in listed:
        path = Path(row["file_path"])
        assert row["file_exists"] and path.stat().st_size == row["file_size"], row
        assert file_sha256(path) == row["sha256"], f"{path} does not match its record"
        assert not path.name.startswith("."), row
    return listed


def check_clean(root: Path) -> None:
    """No staging folder, partial backup or partial download is left."""
    staging = root / ".updock" / "staging"
    assert not staging.exists() or not os.listdir(staging), os.listdir(staging)
    backups = root / "backups"
    partial = [p.name for p in backups.iterdir() if p.name.endswith(".partial")]
    assert partial == [], partial
    parts = list((root / "cacheDuckData").rglob("*.part"))
    assert parts == [], parts


def outcome_of(root: Path, world: dict) -> str:
    found = snapshot(root / "docker")
    if found == world["old"]:
        return "old"
    if found == world["new"]:
        return "new"
    raise AssertionError(
        f"{root}: neither old nor new; against old {differences(found, world['old'])}"
        f"; against new {differences(found, world['new'])}"
    )


def recover_and_check(root: Path, world: dict, expected: str, what: str) -> None:
    """The next command recovers to ``expected``; then everything must be
    consistent and a new run must install the new release."""
    report = status_json(root)
    assert report["pending_recovery"] == [], f"{what}: {report['pending_recovery']}"
    outcome = outcome_of(root, world)
    assert outcome == expected, f"{what}: recovered to the {outcome} tree"
    version = DEMO_NEW if outcome == "new" else DEMO_OLD
    assert report["version"] == version, f"{what}: status says {report['version']}"
    config = (root / "config.toml").read_text()
    assert f'docker_service = "{version}"' in config, f"{what}: {config}"
    check_backups(root)
    verify_deployment_journal(root)

    again = updock(*apply_args(root, world["manifest"]))
    assert again.returncode == exitcodes.OK, f"{what}: next run: {explain(again)}"
    assert outcome_of(root, world) == "new", what
    check_clean(root)


def test_upgrade_killed_at_every_step_recovers_old_or_new(world, tmp_path):
    steps = world["steps"]
    chosen = targets(steps)
    assert PIPELINE_STEPS <= {target.partition("#")[0] for target in chosen}
    decided = decision_point(steps)

    def one(index: int, target: str) -> str:
        root = make_demo_deployment(tmp_path / f"case{index}")
        crashed = updock(
            *apply_args(root, world["manifest"], "patch"),
            env={"UPDOCK_CRASH_AT": target},
        )
        assert killed(crashed), f"did not die at {target}: {explain(crashed)}"
        expected = "new" if position(steps, target) >= decided else "old"
        recover_and_check(root, world, expected, f"killed at {target}")
        return expected

    outcomes = in_parallel(one, chosen)
    assert {"old", "new"} <= set(outcomes)


FULL_TARGETS = {
    "backup.written": "old",
    "tx.prepare.journaled": "old",
    "tx.apply.op#3": "old",
    "tx.decided": "new",
    "upgrade.config_recorded": "new",
}


def test_full_upgrade_killed_at_steps_recovers_old_or_new(world, tmp_path):
    """The full package's plan (whole folders replaced) at the steps that
    matter most; the patch test above covers every step."""

    def one(index: int, target: str) -> None:
        root = make_demo_deployment(tmp_path / f"case{index}")
        crashed = updock(
            *apply_args(root, world["manifest"], "full"),
            env={"UPDOCK_CRASH_AT": target},
        )
        assert killed(crashed), f"did not die at {target}: {explain(crashed)}"
        what = f"full upgrade killed at {target}"
        recover_and_check(root, world, FULL_TARGETS[target], what)

    in_parallel(one, list(FULL_TARGETS))


# -- a kill in the middle of the download ---------------------------------------

BIG = 3 * 1024 * 1024  # larger than the downloader's 1 MiB write batch


@pytest.fixture
def big_release(tmp_path):
    """A release whose full package is a few MiB of incompressible bytes, so
    a stalled transfer leaves a non-empty partial file."""
    new_tree = tmp_path / "v2-big"
    subprocess.run(["cp", "-a", str(DEMO / "v2"), str(new_tree)], check=True)
    (new_tree / "front" / "video.bin").write_bytes(os.urandom(BIG))
    return new_tree


def test_upgrade_killed_during_download_resumes_next_run(big_release, tmp_path):
    root = make_demo_deployment(tmp_path / "deployment")
    old = snapshot(root / "docker")
    with MisbehavingServer() as server:
        release = build_release(
            DEMO / "v1",
            big_release,
            "1.1.0",
            "1.0.0",
            tmp_path / "release",
            base_url=server.url(""),
        )
        server.files = {
            release.full_path.name: release.full_path.read_bytes(),
            release.patch_path.name: release.patch_path.read_bytes(),
        }
        server.behaviour, server.times = "stall", 1
        child = spawn(*apply_args(root, release.manifest_path, "full"))
        try:
            part = wait_for(
                lambda: next(
                    (
                        p
                        for p in (root / "cacheDuckData").rglob("*.part")
                        if p.stat().st_size > 0
                    ),
                    None,
                ),
                "a partial download on disk",
            )
            child.send_signal(signal.SIGKILL)
        finally:
            child.kill()
            child.communicate()
        assert killed(child)
        kept = part.stat().st_size
        server.released.set()

        report = status_json(root)
        assert report["pending_recovery"] == []
        assert snapshot(root / "docker") == old
        assert part.exists() and part.stat().st_size == kept

        again = updock(*apply_args(root, release.manifest_path, "full"))
        assert again.returncode == exitcodes.OK, explain(again)
        ranged = [r for r in server.requests if r.range == f"bytes={kept}-"]
        assert ranged and ranged[-1].status == 206, server.requests

    expected = snapshot(big_release)
    expected.update(
        {k: v for k, v in old.items() if k == "data" or k.startswith("data/")}
    )
    found = snapshot(root / "docker")
    assert found == expected, differences(found, expected)
    check_clean(root)
    check_backups(root)


# -- a kill during ``upgrade rollback`` ------------------------------------------


def test_rollback_killed_at_every_step_recovers_and_config_follows(world, tmp_path):
    """The undo is a transaction too: killed anywhere, the next command
    leaves the tree exactly upgraded or exactly undone, and ``config.toml``
    names the version the journal says is deployed (also when the kill came
    after the undo committed but before ``config.toml`` was written)."""
    template = make_demo_deployment(tmp_path / "template")
    upgraded = updock(*apply_args(template, world["manifest"]))
    assert upgraded.returncode == exitcodes.OK, explain(upgraded)
    log = tmp_path / "rollback.steps"
    probe = tmp_path / "probe"
    shutil.copytree(template, probe, symlinks=True)
    undo = updock(*rollback_args(probe), env={"UPDOCK_CRASH_LOG": str(log)})
    assert undo.returncode == exitcodes.OK, explain(undo)
    steps = log.read_text().split()
    decided = decision_point(steps)

    def one(index: int, target: str) -> str:
        root = tmp_path / f"case{index}"
        shutil.copytree(template, root, symlinks=True)
        crashed = updock(*rollback_args(root), env={"UPDOCK_CRASH_AT": target})
        assert killed(crashed), f"did not die at {target}: {explain(crashed)}"
        report = status_json(root)
        assert report["pending_recovery"] == [], target
        # Undone means the old tree is back: the rollback's "new" is "old".
        expected = "old" if position(steps, target) >= decided else "new"
        outcome = outcome_of(root, world)
        assert outcome == expected, f"rollback killed at {target}: {outcome} tree"
        version = DEMO_NEW if outcome == "new" else DEMO_OLD
        assert report["version"] == version, target
        config = (root / "config.toml").read_text()
        assert f'docker_service = "{version}"' in config, f"{target}: {config}"
        verify_deployment_journal(root)
        return outcome

    outcomes = in_parallel(one, targets(steps))
    assert set(outcomes) == {"old", "new"}


def rollback_args(root: Path) -> list[str]:
    return ["upgrade", "rollback", "--root", str(root), "--yes", "--no-services"]
