"""A power cut loses what was written and never synced; recovery must still
reach exactly the old or exactly the new tree.

The child (``txdriver.py --observe LOG``) logs every write and sync that
goes through ``journal.fsio`` (with each file's device and inode, and a copy
of its content at each fsync), including the staged package's files, which
it declares written and unsynced as an extraction would leave them. It is
SIGKILLed at a crash point. The parent then models the power cut: every
file (found by inode, whatever its name now) written after its last sync
goes back to its synced content, or to empty if it was never synced. What
this model cannot express, and the test therefore does not cover: renames,
links and unlinks that the kernel had not yet made durable (they are not
observed through ``journal.fsio``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import txdriver
from txcrash import (
    build_reference,
    check_recovered,
    driver,
    in_parallel,
    killed,
    steps_of,
    targets,
)

STRIDE = 60


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return build_reference(tmp_path_factory.mktemp("lost-writes-reference"))


def mark_synced(folder: Path, log: Path) -> None:
    """Record the files in ``folder`` as synced in their present state (the
    journal of an earlier process, which the power cut does not touch)."""
    synced_dir = Path(f"{log}.synced")
    synced_dir.mkdir(exist_ok=True)
    for path in folder.iterdir():
        if path.is_file():
            info = path.stat()
            (synced_dir / f"{info.st_dev}-{info.st_ino}").write_bytes(path.read_bytes())


def unsynced_files(log: Path) -> dict[tuple[int, int], Path | None]:
    """Inodes written after their last sync, with their synced copy if any."""
    synced_dir = Path(f"{log}.synced")
    dirty: dict[tuple[int, int], Path | None] = {}
    for line in log.read_text().splitlines():
        entry = json.loads(line)
        if "ino" not in entry:
            continue
        key = (entry["dev"], entry["ino"])
        if entry["event"] == "write":
            copy = synced_dir / f"{key[0]}-{key[1]}"
            dirty[key] = copy if copy.exists() else None
        elif entry["event"] == "fsync":
            dirty.pop(key, None)
        elif entry["event"] == "syncfs":
            dirty = {k: v for k, v in dirty.items() if k[0] != entry["dev"]}
    return dirty


def cut_power(root: Path, log: Path) -> int:
    """Throw away the unsynced writes; return how many files lost data."""
    dirty = unsynced_files(log)
    lost = 0
    for folder, _dirs, files in os.walk(root):
        for name in files:
            path = Path(folder) / name
            info = os.lstat(path)
            key = (info.st_dev, info.st_ino)
            if key not in dirty:
                continue
            copy = dirty[key]
            with open(path, "r+b") as file:
                file.truncate(0)
                if copy is not None:
                    file.write(copy.read_bytes())
            lost += 1
    return lost


def test_transaction_losing_unsynced_writes_recovers_old_or_new(reference, tmp_path):
    chosen = targets(reference.run_steps, STRIDE)

    def one(index, target):
        root = tmp_path / f"cut{index}"
        txdriver.build_world(root)
        log = tmp_path / f"cut{index}.log"
        assert killed(driver("run", root, crash_at=target, observe=log)), target
        lost = cut_power(root, log)
        result = driver("recover", root)
        assert result.returncode == 0, f"{target}: recovery failed: {result.stderr}"
        return target, lost, check_recovered(root, reference)

    results = in_parallel(one, chosen)
    lost_any = {target for target, lost, _ in results if lost}
    assert "tx.prepare.staged#1" in lost_any, (
        "staged files must be lost before syncfs"
    )
    assert any(t.startswith("journal.append.after_write") for t in lost_any)
    assert {outcome for _, _, outcome in results} == {"old", "new"}


def test_recovery_losing_unsynced_writes_recovers_again(reference, tmp_path):
    """A power cut during recovery itself (after a crash mid-apply)."""
    probe = tmp_path / "probe"
    txdriver.build_world(probe)
    assert killed(driver("run", probe, crash_at="tx.apply.op#150"))
    log = tmp_path / "probe.steps"
    assert driver("recover", probe, crash_log=log).returncode == 0
    chosen = targets(steps_of(log), STRIDE)

    def one(index, target):
        root = tmp_path / f"rec{index}"
        txdriver.build_world(root)
        assert killed(driver("run", root, crash_at="tx.apply.op#150"))
        cut = tmp_path / f"rec{index}.log"
        mark_synced(root / ".updock" / "journal", cut)
        assert killed(driver("recover", root, crash_at=target, observe=cut)), target
        cut_power(root, cut)
        result = driver("recover", root)
        assert result.returncode == 0, f"{target}: recovery failed: {result.stderr}"
        assert check_recovered(root, reference) == "old", target

    in_parallel(one, chosen)
