"""Benchmark: a whole patch upgrade of a real release pair beside rsync.

The release pair is two published versions of Django's source tree (sdists
from PyPI, cached in ``.cache/releases/``). ``release build`` makes the patch
package; each round then upgrades a fresh copy of the old deployment with the
whole pipeline (manifest, strategy, package copied from a local folder and
verified, staging, pre-upgrade backup, journaled file transaction, commit,
cleanup; ``--no-services``), in this process so that interpreter start-up is
not counted, and syncs another fresh copy of the old tree to the new one with
``rsync -a --delete`` (which neither journals nor fsyncs), once with its
size-and-mtime quick check (the sdists' mtimes differ, so it copies nearly
every file) and once with ``--checksum`` (it then copies only what changed,
as the patch does, but reads every file). Rounds alternate so that all see
the same machine load; the ratio is taken against the faster rsync median.

Goal: the pipeline after the download at most 2 times rsync.

Run: ``.venv/bin/python bench/upgrade_bench.py [--rounds N]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from engine.config import load_config  # noqa: E402
from engine.progress import ProgressEvent  # noqa: E402
from engine.release import build_release  # noqa: E402
from engine.upgrade import UpgradeOptions, apply_upgrade  # noqa: E402
from journal import BlobStore, Journal, WriterLock  # noqa: E402
from realinput import extract_sdist, sdist  # noqa: E402

PROJECT = "Django"
OLD_SDIST, NEW_SDIST = "4.2", "4.2.1"  # as PyPI names the files
OLD, NEW = "4.2.0", "4.2.1"
GOAL = 2.0
COMPOSE = "services:\n  app:\n    image: busybox\n"
CONFIG = """[versions]
docker_service = "{version}"
"""


class StepClock:
    """Collects the duration of each pipeline step from progress events."""

    def __init__(self) -> None:
        self.steps: dict[str, float] = {}

    def __call__(self, event: ProgressEvent) -> None:
        if event.kind == "step_finished":
            self.steps[event.step] = self.steps.get(event.step, 0.0) + event.seconds


def deployment(base: Path, tree: Path, name: str) -> Path:
    root = base / name
    shutil.copytree(tree, root / "docker", symlinks=True)
    (root / "config.toml").write_text(CONFIG.format(version=OLD))
    return root


def run_updock(root: Path, manifest: Path) -> tuple[float, dict[str, float]]:
    config = load_config(root)
    clock = StepClock()
    with WriterLock(config.state_dir / "lock"):
        journal = Journal.open(config.state_dir / "journal", writable=True)
        try:
            started = time.perf_counter()
            result = apply_upgrade(
                config,
                journal,
                BlobStore(config.state_dir / "blobs"),
                UpgradeOptions(manifest=str(manifest), no_services=True),
                confirm=lambda plan: True,
                progress=clock,
            )
            seconds = time.perf_counter() - started
        finally:
            journal.close()
    if result.outcome != "committed" or result.plan.action != "patch":
        raise SystemExit(f"unexpected outcome: {result.outcome} {result.plan.action}")
    return seconds, clock.steps


def run_rsync(target: Path, new_tree: Path, *extra: str) -> float:
    started = time.perf_counter()
    command = ["rsync", "-a", "--delete", *extra, f"{new_tree}/", f"{target}/"]
    subprocess.run(command, check=True)
    return time.perf_counter() - started


def same_tree(a: Path, b: Path) -> bool:
    result = subprocess.run(["diff", "-r", "--no-dereference", str(a), str(b)],
                            capture_output=True)
    return result.returncode == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if shutil.which("rsync") is None:
        raise SystemExit("rsync is not installed (apt-get install rsync)")

    cache = REPO / ".cache"
    cache.mkdir(exist_ok=True)
    base = Path(tempfile.mkdtemp(prefix="upgrade-bench-", dir=cache))
    try:
        old = extract_sdist(sdist(PROJECT, OLD_SDIST), base / "old")
        new = extract_sdist(sdist(PROJECT, NEW_SDIST), base / "new")
        for tree in (old, new):  # a compose project has its compose file
            (tree / "docker-compose.yml").write_text(COMPOSE)
        built = build_release(old, new, NEW, OLD, base / "release")
        files = sum(1 for _ in new.rglob("*"))
        print(f"release pair: {PROJECT} {OLD} -> {NEW} ({files} paths in the new tree)")
        print(f"patch: {built.patch_path.stat().st_size} bytes, "
              f"{len(built.diff.replace_files)} files and "
              f"{len(built.diff.replace_dirs)} folders replaced, "
              f"{len(built.diff.delete_files)} files deleted")
        print(f"load average at the start: {os.getloadavg()[0]:.2f}")

        updock_total, updock_after = [], []
        rsync_times: dict[str, list[float]] = {"plain": [], "checksum": []}
        for number in range(1, args.rounds + 1):
            root = deployment(base, old, f"updock-{number}")
            seconds, steps = run_updock(root, built.manifest_path)
            after = seconds - steps.get("download", 0.0)
            if not same_tree(root / "docker", new):
                raise SystemExit("updock's deployed tree differs from the new release")
            updock_total.append(seconds)
            updock_after.append(after)
            for variant, extra in (("plain", ()), ("checksum", ("--checksum",))):
                target = base / f"rsync-{variant}-{number}"
                shutil.copytree(old, target, symlinks=True)
                rsync_times[variant].append(run_rsync(target, new, *extra))
            detail = "  ".join(f"{k} {v:.3f}" for k, v in steps.items())
            print(f"round {number}: updock {seconds:.3f} s (after download "
                  f"{after:.3f} s)  rsync {rsync_times['plain'][-1]:.3f} s  "
                  f"rsync --checksum {rsync_times['checksum'][-1]:.3f} s   "
                  f"steps: {detail}")

        median_after = statistics.median(updock_after)
        medians = {k: statistics.median(v) for k, v in rsync_times.items()}
        median_rsync = min(medians.values())
        ratio = median_after / median_rsync
        print(f"updock whole pipeline, median      : {statistics.median(updock_total):.3f} s")
        print(f"updock after the download, median  : {median_after:.3f} s")
        print(f"rsync -a --delete, median          : {medians['plain']:.3f} s")
        print(f"rsync -a --delete --checksum, med. : {medians['checksum']:.3f} s")
        print(f"ratio updock/faster rsync (after download): {ratio:.2f}  "
              f"(goal <= {GOAL}: {'met' if ratio <= GOAL else 'not met'})")
        print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
