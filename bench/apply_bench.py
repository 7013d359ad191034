"""Applying a change to a tree: updock's transaction beside rsync and a naive loop.

The tree: 10,000 small files (200 B to 4 KB, in 100 folders) and 20 files of
50 MB, deterministic content. The change: every third small file modified,
every third deleted, 3,333 files added (half in new folders), and 10 of the
big files replaced: about 10,000 operations. It is prepared as a staged
folder holding the new and changed files (updock's patch input, and the
naive loop's) and as a full new tree (rsync's input).

Measured in one run, each on a fresh copy of the same tree, after ``sync``
so no method pays for another's writeback, page cache warm:

- updock: stage + prepare + apply + commit of one ``Transaction``, in a
  child process (its ``ru_maxrss`` is the peak memory);
- ``rsync -a --delete newtree/ tree/`` (not crash-safe: no fsync at all);
- a naive loop writing, fsyncing and renaming one file at a time;
- recovery after a SIGKILL halfway through apply (``tx.apply.op#N``).

Goals: updock at most 1.5 times rsync, at least 3 times faster than the
naive loop, recovery under 2 s, peak memory under 150 MB.

Each figure is the best of ``--rounds`` rounds, the methods interleaved so
that a busy machine slows them alike.

Usage: .venv/bin/python bench/apply_bench.py [--small 10000] [--big 20] [--big-mb 50]
       [--rounds 3]
Data goes to a temporary folder in .cache/ (same filesystem as the
repository, not tmpfs), removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MB = 1024 * 1024


# -- data ----------------------------------------------------------------------


def _small(rng: random.Random) -> bytes:
    return rng.randbytes(200 + rng.randrange(3800))


def _big(path: Path, seed: int, megabytes: int) -> None:
    rng = random.Random(seed)
    block = rng.randbytes(MB)
    with open(path, "wb") as out:
        out.writelines(
            index.to_bytes(8, "little") + seed.to_bytes(8, "little") + block[16:]
            for index in range(megabytes)
        )


def generate(base: Path, small: int, big: int, big_mb: int) -> list[list[str]]:
    """Write master/tree, master/newtree and master/patch; return the change
    as ``[kind, path]`` pairs (``put`` or ``delete``)."""
    tree, newtree, patch = base / "tree", base / "newtree", base / "patch"
    rng = random.Random(1)
    change: list[list[str]] = []
    for i in range(small):
        rel = f"d{i % 100:03}/f{i:05}.txt"
        _put(tree / rel, _small(rng))
        if i % 3 == 0:
            data = _small(rng)
            _put(patch / rel, data)
            change.append(["put", rel])
        elif i % 3 == 1:
            change.append(["delete", rel])
    for i in range(small // 3):
        rel = f"d{i % 100:03}/new{i:05}.txt" if i % 2 else f"n{i // 200:03}/g{i:05}.txt"
        _put(patch / rel, _small(rng))
        change.append(["put", rel])
    (tree / "big").mkdir()
    (patch / "big").mkdir()
    for i in range(big):
        _big(tree / "big" / f"b{i:02}.bin", i, big_mb)
        if i < big // 2:
            _big(patch / "big" / f"b{i:02}.bin", 1000 + i, big_mb)
            change.append(["put", f"big/b{i:02}.bin"])
    subprocess.run(["cp", "-al", str(tree), str(newtree)], check=True)
    for kind, rel in change:
        target = newtree / rel
        if target.exists():
            target.unlink()
        if kind == "put":
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(patch / rel, target)
    return change


def _put(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def fresh_copy(master: Path, run: Path, with_patch: bool) -> None:
    """A copy of the tree (a real one: hard links would give the old files a
    second name, which changes how updock restores them) and, when asked,
    of the patch (updock moves staged files into place)."""
    run.mkdir()
    subprocess.run(["cp", "-a", str(master / "tree"), str(run / "docker")], check=True)
    if with_patch:
        (run / ".updock").mkdir()
        subprocess.run(
            ["cp", "-a", str(master / "patch"), str(run / ".updock" / "staging")],
            check=True,
        )
    os.sync()


# -- children --------------------------------------------------------------------


def child_apply(root: Path, change: list[list[str]]) -> dict:
    from engine.ops import Op
    from engine.transaction import Transaction
    from journal import BlobStore, Journal, WriterLock

    state, staging = root / ".updock", root / ".updock" / "staging"
    started = time.perf_counter()
    with WriterLock(state / "lock"), Journal.open(state / "journal") as journal:
        store = BlobStore(state / "blobs")
        tx = Transaction.begin(journal, store, root / "docker", kind="upgrade")
        ops = [
            Op.put_file(rel, source=staging / rel)
            if kind == "put"
            else Op.delete_file(rel)
            for kind, rel in change
        ]
        tx.plan(ops)
        tx.check_space()
        planned = time.perf_counter()
        tx.prepare()
        prepared = time.perf_counter()
        tx.apply()
        applied = time.perf_counter()
        tx.commit(version="2")
    done = time.perf_counter()
    return {
        "seconds": done - started,
        "plan": planned - started,
        "prepare": prepared - planned,
        "apply": applied - prepared,
        "commit": done - applied,
        "ops": len(tx.planned),
    }


def child_recover(root: Path) -> dict:
    from engine.recovery import recover
    from journal import BlobStore, Journal, WriterLock

    state = root / ".updock"
    started = time.perf_counter()
    with WriterLock(state / "lock"), Journal.open(state / "journal") as journal:
        outcomes = recover(journal, BlobStore(state / "blobs"), root / "docker")
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "changed": sum(o.changed for o in outcomes)}


def child_naive(root: Path, patch: Path, change: list[list[str]]) -> dict:
    """Write, fsync and rename one file at a time (deletions: unlink)."""
    tree = root / "docker"
    started = time.perf_counter()
    for kind, rel in change:
        target = tree / rel
        if kind == "delete":
            target.unlink()
            continue
        target.parent.mkdir(exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        with open(patch / rel, "rb") as source, open(tmp, "wb") as out:
            shutil.copyfileobj(source, out, MB)
            out.flush()
            os.fsync(out.fileno())
        os.rename(tmp, target)
    return {"seconds": time.perf_counter() - started}


def child_main(argv: list[str]) -> None:
    mode, root = argv[0], Path(argv[1])
    change = json.loads((root.parent / "change.json").read_text())
    if mode == "apply":
        result = child_apply(root, change)
    elif mode == "recover":
        result = child_recover(root)
    else:
        result = child_naive(root, root.parent / "master" / "patch", change)
    result["peak_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps(result))


# -- parent ------------------------------------------------------------------------


def run_child(
    mode: str, root: Path, crash_at: str | None = None
) -> tuple[dict | None, float]:
    env = dict(os.environ)
    env.pop("UPDOCK_CRASH_AT", None)
    if crash_at:
        env["UPDOCK_CRASH_AT"] = crash_at
    started = time.perf_counter()
    child = subprocess.run(
        [sys.executable, __file__, "--child", mode, str(root)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - started
    if crash_at and child.returncode == -signal.SIGKILL:
        return None, wall
    if child.returncode != 0:
        raise RuntimeError(f"{mode} child failed ({child.returncode}):\n{child.stderr}")
    return json.loads(child.stdout.strip().splitlines()[-1]), wall


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--big", type=int, default=20)
    parser.add_argument("--big-mb", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    (REPO / ".cache").mkdir(exist_ok=True)
    base = Path(tempfile.mkdtemp(prefix="apply-bench-", dir=REPO / ".cache"))
    try:
        bench(base, args)
    finally:
        shutil.rmtree(base)


def bench(base: Path, args: argparse.Namespace) -> None:
    started = time.perf_counter()
    change = generate(base / "master", args.small, args.big, args.big_mb)
    (base / "change.json").write_text(json.dumps(change))
    puts = sum(1 for kind, _ in change if kind == "put")
    print(f"data in {base}, generated in {time.perf_counter() - started:.1f} s")
    print(
        f"tree: {args.small} small files + {args.big} x {args.big_mb} MB; change: "
        f"{puts} files written, {len(change) - puts} deleted; best of {args.rounds} "
        "rounds, methods interleaved"
    )

    best: dict[str, tuple] = {}
    for round_number in range(args.rounds):
        for name, measure in (
            ("updock", measure_updock),
            ("rsync", measure_rsync),
            ("naive", measure_naive),
            ("recovery", measure_recovery),
        ):
            run = base / f"{name}{round_number}"
            figure = measure(base, run)
            print(f"  round {round_number + 1} {name}: {figure[0]:.2f} s")
            if name not in best or figure[0] < best[name][0]:
                best[name] = figure
            shutil.rmtree(run)
    report(best)


def measure_updock(base: Path, run: Path) -> tuple:
    fresh_copy(base / "master", run, with_patch=True)
    result, wall = run_child("apply", run)
    return result["seconds"], result, wall


def measure_rsync(base: Path, run: Path) -> tuple:
    fresh_copy(base / "master", run, with_patch=False)
    begun = time.perf_counter()
    subprocess.run(
        [
            "rsync",
            "-a",
            "--delete",
            f"{base / 'master' / 'newtree'}/",
            f"{run / 'docker'}/",
        ],
        check=True,
    )
    return (time.perf_counter() - begun,)


def measure_naive(base: Path, run: Path) -> tuple:
    fresh_copy(base / "master", run, with_patch=False)
    result, _ = run_child("naive", run)
    return (result["seconds"],)


def measure_recovery(base: Path, run: Path) -> tuple:
    fresh_copy(base / "master", run, with_patch=True)
    ops = len(json.loads((base / "change.json").read_text()))
    half = ops // 2
    run_child("apply", run, crash_at=f"tx.apply.op#{half}")
    os.sync()
    result, wall = run_child("recover", run)
    return result["seconds"], result, wall, half


def report(best: dict[str, tuple]) -> None:
    seconds, updock, updock_wall = best["updock"]
    rsync, naive = best["rsync"][0], best["naive"][0]
    recovery, recovered, recovery_wall, half = best["recovery"]
    peak_mb = updock["peak_kib"] / 1024
    print(
        f"updock apply: {seconds:.2f} s for {updock['ops']} operations (plan "
        f"{updock['plan']:.2f}, prepare {updock['prepare']:.2f}, apply "
        f"{updock['apply']:.2f}, commit {updock['commit']:.2f}; child process "
        f"{updock_wall:.2f} s with interpreter start)"
    )
    print(f"rsync -a --delete: {rsync:.2f} s")
    print(f"naive write+fsync+rename loop: {naive:.2f} s")
    print(
        f"recovery after SIGKILL at tx.apply.op#{half}: {recovery:.2f} s "
        f"({recovered['changed']} operations undone; "
        f"child process {recovery_wall:.2f} s)"
    )
    print(f"peak memory (ru_maxrss of the apply child): {peak_mb:.1f} MB")
    to_rsync, vs_naive = seconds / rsync, naive / seconds
    print(f"updock / rsync = {to_rsync:.2f} (goal <= 1.5): {verdict(to_rsync <= 1.5)}")
    print(f"naive / updock = {vs_naive:.2f} (goal >= 3): {verdict(vs_naive >= 3)}")
    print(
        f"recovery {recovery:.2f} s (goal < 2 s): {verdict(recovery < 2)}; "
        f"recovery / rsync = {recovery / rsync:.2f} (both mostly create files: "
        "the ratio shows what a busy disk does to the absolute figure)"
    )
    print(f"peak memory {peak_mb:.1f} MB (goal < 150 MB): {verdict(peak_mb < 150)}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child_main(sys.argv[2:])
    else:
        main()
