"""Shared helpers of the upgrade, backup and status tests: deployment roots
built from real files, releases made by the release builder, the ``updock``
command run as a child process, and whole-tree snapshots.

A snapshot maps every path under a folder (the folder itself excluded) to
what a rollback must bring back: the kind, the permission bits, and the
content's sha256 or the link's target. Two trees are equal when their
snapshots are.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from engine.release import BuiltRelease, build_release
from journal import BlobStore
from journal.verify import verify_journal

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "examples" / "demo"
UPDOCK = REPO / ".venv" / "bin" / "updock"
WORKERS = max(2, min(4, os.cpu_count() or 2))

# The demo's releases, as the release builder versions them.
DEMO_OLD = "1.0.0.0"
DEMO_NEW = "1.1.0.0"

# Where updock keeps its own state, caches and backups; the rest of a
# deployment root is what an operator owns.
STATE_NAMES = frozenset({".updock", "cacheDuckData", "backups"})


def updock_argv() -> list[str]:
    """The command line that runs updock: the installed console script when
    the venv has one, the module otherwise."""
    if UPDOCK.exists():
        return [str(UPDOCK)]
    return [sys.executable, "-m", "cli.main"]


def updock(
    *args: str,
    env: dict[str, str] | None = None,
    timeout: float = 120,
    stdin: int | None = subprocess.DEVNULL,
) -> subprocess.CompletedProcess:
    """Run ``updock ARGS`` to its end, without a terminal, output captured.

    Crash switches inherited from the test's own environment are dropped;
    pass them in ``env`` for this one run.
    """
    return subprocess.run(
        [*updock_argv(), *args],
        env=child_env(env),
        cwd=REPO,
        stdin=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def spawn(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start ``updock ARGS`` without waiting (output captured as text)."""
    return subprocess.Popen(
        [*updock_argv(), *args],
        env=child_env(env),
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("UPDOCK_")}
    env.update(extra or {})
    return env


def killed(result: subprocess.CompletedProcess | subprocess.Popen) -> bool:
    return result.returncode == -signal.SIGKILL


def explain(result: subprocess.CompletedProcess) -> str:
    """The end of a child's output, for assertion messages."""
    return (
        f"exit {result.returncode}\n--- stdout\n{result.stdout[-3000:]}"
        f"\n--- stderr\n{result.stderr[-3000:]}"
    )


def json_lines(text: str) -> list[dict]:
    """Every line of ``text`` parsed as JSON (each must parse)."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# -- trees ---------------------------------------------------------------------


def snapshot(top: Path, skip: Iterable[str] = ()) -> dict[str, tuple]:
    """Every path under ``top``: (kind, mode[, sha256 or link target]).

    Top-level names in ``skip`` are left out with everything under them.
    """
    top = Path(top)
    skipped = set(skip)
    found: dict[str, tuple] = {}
    for folder, dirnames, filenames in os.walk(top):
        base = Path(folder)
        if base == top:
            dirnames[:] = [name for name in dirnames if name not in skipped]
            filenames = [name for name in filenames if name not in skipped]
        for name in dirnames + filenames:
            path = base / name
            found[path.relative_to(top).as_posix()] = _entry(path)
    return found


def _entry(path: Path) -> tuple:
    info = os.lstat(path)
    mode = stat.S_IMODE(info.st_mode)
    if stat.S_ISLNK(info.st_mode):
        return ("symlink", os.readlink(path))
    if stat.S_ISDIR(info.st_mode):
        return ("dir", mode)
    if stat.S_ISREG(info.st_mode):
        return ("file", mode, hashlib.sha256(path.read_bytes()).hexdigest())
    return ("special", mode)


def differences(found: dict, expected: dict, limit: int = 12) -> list[str]:
    """The paths where two snapshots differ, with both sides, for messages."""
    keys = sorted(
        k for k in found.keys() | expected.keys() if found.get(k) != expected.get(k)
    )
    return [f"{k}: {found.get(k)} != {expected.get(k)}" for k in keys[:limit]]


def assert_same_tree(found: dict, expected: dict, what: str) -> None:
    assert found == expected, f"{what} differs: {differences(found, expected)}"


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# -- deployments and releases ----------------------------------------------------


def make_deployment(
    root: Path,
    tree: Path,
    version: str,
    *,
    user_data: dict[str, bytes] | None = None,
    extra_config: str = "",
) -> Path:
    """A deployment root as the existing client lays it out: ``config.toml``
    recording ``version`` and ``docker/`` holding a copy of ``tree`` plus the
    ``user_data`` files (paths relative to ``docker/``)."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(tree, root / "docker", symlinks=True)
    for relpath, data in (user_data or {}).items():
        path = root / "docker" / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (root / "config.toml").write_text(
        "# written by the tests, in the existing client's shape\n"
        f'[versions]\ndocker_service = "{version}"\n\n'
        '[docker]\ncompose_file = "./docker/docker-compose.yml"\n\n'
        '[backup]\nstorage_dir = "./backups"\n\n'
        '[cache]\ndownload_dir = "./cacheDuckData/download"\n' + extra_config,
        encoding="utf-8",
    )
    return root


def make_demo_deployment(root: Path) -> Path:
    """The shipped demo deployment at its first release (its data/ included)."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(DEMO / "v1", root / "docker", symlinks=True)
    shutil.copy2(DEMO / "config.toml", root / "config.toml")
    return root


def build_demo_release(out: Path, base_url: str | None = None) -> BuiltRelease:
    """The demo's 1.1.0 release (patch from 1.0.0 and full package)."""
    return build_release(
        DEMO / "v1", DEMO / "v2", "1.1.0", "1.0.0", out, base_url=base_url
    )


def demo_release_tree(tmp: Path) -> Path:
    """The tree a deployment holds once the demo's 1.1.0 is installed: the
    release tree plus the user data the deployment already had."""
    tree = tmp / "demo-v2-deployed"
    if not tree.exists():
        shutil.copytree(DEMO / "v2", tree, symlinks=True)
        shutil.copytree(DEMO / "v1" / "data", tree / "data", symlinks=True)
    return tree


def only_manifest_kind(release: BuiltRelease, kind: str, dest: Path) -> Path:
    """A copy of the release's manifest offering only the ``full`` package or
    only the ``patch`` (package URLs made absolute so the copy may live
    anywhere)."""
    doc = json.loads(release.manifest_path.read_text(encoding="utf-8"))
    folder = release.manifest_path.parent

    def absolute(entry: dict) -> None:
        if "://" not in entry["url"] and not Path(entry["url"]).is_absolute():
            entry["url"] = str(folder / entry["url"])

    if kind == "full":
        doc.pop("patch", None)
        for entry in doc["platforms"].values():
            absolute(entry)
        absolute(doc["packages"]["full"])
    else:
        doc.pop("platforms", None)
        doc.pop("packages", None)
        for entry in doc["patch"].values():
            absolute(entry)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(doc, indent=2), encoding="utf-8")
    return dest


def in_parallel(function: Callable, items: list) -> list:
    """Run ``function(index, item)`` for every item on a few threads (each
    mostly waits for its child processes)."""
    with ThreadPoolExecutor(WORKERS) as pool:
        return list(pool.map(function, range(len(items)), items))


def wait_for(condition: Callable[[], object], what: str, deadline: float = 60.0):
    """Poll ``condition`` until it returns something true and return that;
    fail naming ``what`` once ``deadline`` seconds have passed."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if value := condition():
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def serve_demo_release(server, folder: Path, behaviour: str = "normal") -> BuiltRelease:
    """Build the demo release with package URLs on ``server`` (a running
    ``httpserver.MisbehavingServer``) and put its packages there; the
    manifest stays a local file. ``behaviour`` applies to the first request.
    """
    release = build_demo_release(folder, base_url=server.url(""))
    server.files = {
        p.name: p.read_bytes() for p in (release.full_path, release.patch_path)
    }
    server.behaviour, server.times = behaviour, 1
    return release


# -- crash points ----------------------------------------------------------------


def position(steps: list[str], target: str) -> int:
    """Where ``name#N`` falls in a list of the steps a run passed."""
    name, _, nth = target.partition("#")
    hits = [index for index, step in enumerate(steps) if step == name]
    return hits[int(nth or 1) - 1]


def decision_point(steps: list[str]) -> int:
    """The write of the ``CommitDecided`` record: a kill from there on finds
    the decision in the journal (a killed process loses no written bytes)."""
    decided = steps.index("tx.decided")
    return max(i for i in range(decided) if steps[i] == "journal.append.after_write")


def verify_deployment_journal(root: Path) -> None:
    """``journal verify``'s whole check (records, checkpoint, every blob),
    run in the test's own process to keep crash loops fast."""
    state = Path(root) / ".updock"
    verify_journal(state / "journal", BlobStore(state / "blobs"))
