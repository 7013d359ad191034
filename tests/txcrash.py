"""Parent-side helpers for the transaction crash tests (the child is
``txdriver.py``): run it, kill it at a step, list the steps, and check the
tree after recovery is exactly the old or exactly the new one."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import txdriver

from journal import BlobStore, Journal
from journal.verify import verify_journal

DRIVER = Path(__file__).resolve().parent / "txdriver.py"
REPO = DRIVER.parent.parent
WORKERS = max(2, min(4, os.cpu_count() or 2))


@dataclass(frozen=True)
class Reference:
    """The old and new trees, and the steps a run and a recovery pass."""

    old: dict
    new: dict
    run_steps: list[str]


def driver(
    command: str,
    root: Path,
    *,
    crash_at: str | None = None,
    crash_log: Path | None = None,
    observe: Path | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess:
    """Run ``txdriver.py COMMAND ROOT`` in a child process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("UPDOCK_CRASH")}
    if crash_at:
        env["UPDOCK_CRASH_AT"] = crash_at
    if crash_log:
        env["UPDOCK_CRASH_LOG"] = str(crash_log)
    argv = [sys.executable, str(DRIVER), command, str(root)]
    if observe:
        argv += ["--observe", str(observe)]
    return subprocess.run(
        argv,
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def steps_of(log: Path) -> list[str]:
    return log.read_text().split()


def targets(steps: list[str], stride: int) -> list[str]:
    """``name#N`` for every step reached; names reached more than a dozen
    times are sampled every ``stride`` hits (first and last always kept)."""
    counts = Counter(steps)
    chosen = []
    for name, count in counts.items():
        hits = range(1, count + 1)
        if count > 12:
            hits = sorted(set(range(1, count + 1, stride)) | {count})
        chosen += [f"{name}#{n}" for n in hits]
    return chosen


def position(steps: list[str], target: str) -> int:
    """Where ``name#N`` falls in the step list."""
    name, _, nth = target.partition("#")
    seen = 0
    for index, step in enumerate(steps):
        if step == name:
            seen += 1
            if seen == int(nth or 1):
                return index
    raise ValueError(f"{target} is not in the step list")


def decision_point(steps: list[str], marker: str = "tx.decided") -> int:
    """The step from which the commit decision is in the journal's file: the
    write of the ``CommitDecided`` record (a killed process loses no written
    bytes; only a power cut would)."""
    decided = steps.index(marker)
    return max(i for i in range(decided) if steps[i] == "journal.append.after_write")


def build_reference(base: Path) -> Reference:
    """Run the world's transaction once without a crash, listing its steps."""
    root = base / "reference"
    txdriver.build_world(root)
    old = txdriver.snapshot(txdriver.tree_of(root))
    log = base / "reference.steps"
    result = driver("run", root, crash_log=log)
    if result.returncode != 0:
        raise RuntimeError(f"reference run failed:\n{result.stderr}")
    return Reference(old, txdriver.snapshot(txdriver.tree_of(root)), steps_of(log))


def killed(result: subprocess.CompletedProcess) -> bool:
    return result.returncode == -signal.SIGKILL


def check_recovered(root: Path, ref: Reference) -> str:
    """Assert the tree is exactly the old or the new one, the journal
    verifies with every blob, nothing is unfinished, and no scratch or work
    folder is left. Returns ``old`` or ``new``."""
    tree = txdriver.tree_of(root)
    found = txdriver.snapshot(tree)
    if found == ref.old:
        outcome = "old"
    elif found == ref.new:
        outcome = "new"
    else:
        raise AssertionError(
            f"{root}: tree is neither old nor new: {describe_diff(found, ref)}"
        )
    state = root / ".updock"
    verify_journal(state / "journal", BlobStore(state / "blobs"))
    shared = file_inodes(tree) & file_inodes(state / "blobs")
    assert not shared, f"{root}: {len(shared)} tree files share an inode with a blob"
    with Journal.open(state / "journal", writable=False) as journal:
        unfinished = [tx.tx for tx in journal.state.unfinished()]
    assert unfinished == [], f"{root}: unfinished after recovery: {unfinished}"
    work = state / "txn"
    assert not work.exists() or not os.listdir(work), f"{root}: leftovers in {work}"
    return outcome


def file_inodes(top: Path) -> set[tuple[int, int]]:
    """The (device, inode) of every regular file under ``top``."""
    found = set()
    for folder, _dirs, files in os.walk(top):
        for name in files:
            info = os.lstat(os.path.join(folder, name))
            if stat.S_ISREG(info.st_mode):
                found.add((info.st_dev, info.st_ino))
    return found


def describe_diff(found: dict, ref: Reference) -> str:
    def delta(expected: dict) -> list[str]:
        keys = set(found) | set(expected)
        return sorted(k for k in keys if found.get(k) != expected.get(k))[:8]

    return f"differs from old at {delta(ref.old)}; from new at {delta(ref.new)}"


def in_parallel(function, items: list) -> list:
    """Run ``function(index, item)`` for every item on a few threads (each
    mostly waits for its child process)."""
    with ThreadPoolExecutor(WORKERS) as pool:
        return list(pool.map(function, range(len(items)), items))
