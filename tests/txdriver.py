"""A transaction of every kind of operation on a small real tree, for crash tests.

Usage (the parent test builds the world in-process with ``build_world``)::

    python tests/txdriver.py run ROOT [--observe LOG]
    python tests/txdriver.py recover ROOT [--observe LOG]
    python tests/txdriver.py apply ROOT SPEC.json

``run`` plans, prepares, applies and commits the transaction ``world_ops``
describes (a pipeline step event is journaled between apply and commit, as
the upgrade pipeline does); ``recover`` opens the deployment the way every
command does (lock, journal, automatic recovery); ``apply`` runs the
transaction a JSON spec lists and exits with the code ``updock`` would.
With ``--observe``, every write and sync that goes through ``journal.fsio``
is logged to LOG (one JSON object per line, with the file's device, inode
and size), so a test can throw away what was never synced.

The world: 80 files to modify or delete, 40 new files (in a new folder),
10 files from stored blobs, 5 folders replaced by staged trees and 5 deleted
(nested, with empty folders, symlinks and odd modes), 20 new folders, 20
mode changes, 20 symlinks, and a ``swap_tree`` of the remaining top-level
entries with the others preserved: 209 operations in all.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import sys
from pathlib import Path

if __name__ == "__main__":
    # Run as a script, sys.path[0] is tests/, whose journal/ folder would
    # shadow the journal package: import from the repository root instead.
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from engine.ops import Op
from journal import BlobStore

# Small batches, so that crash tests cross batch boundaries (four batches).
BATCH_OPS = 64
PRESERVED = frozenset(
    {
        "files",
        "new",
        "blobbed",
        "trees",
        "gone",
        "made",
        "modes",
        "links",
        "data",
        "keep",
    }
)


def tree_of(root: Path) -> Path:
    return root / "docker"


def staging_of(root: Path) -> Path:
    return root / ".updock" / "staging" / "pkg"


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.chmod(path, mode)


def _nested(top: Path, label: str, seed: int) -> None:
    """A small nested tree: files, an empty folder, a symlink, odd modes."""
    _write(top / "a" / "x.txt", f"{label} x {seed}\n" * (seed + 1))
    _write(top / "a" / "b" / "y.txt", f"{label} y {seed}\n", 0o600)
    _write(top / f"only-{label}-{seed}.txt", f"{label} only {seed}\n")
    (top / "empty" / f"deep{seed % 2}").mkdir(parents=True)
    os.symlink("a/x.txt", top / "ln")
    os.chmod(top / "a" / "b", 0o750)


def build_world(root: Path) -> None:
    """Create the deployment's tree, the staged package and the stored blobs."""
    tree, staged = tree_of(root), staging_of(root)
    for i in range(80):
        _write(
            tree / "files" / f"f{i:03}.txt",
            f"old file {i}\n" * (i % 7 + 1),
            0o600 if i % 5 == 0 else 0o644,
        )
    for i in range(60):
        _write(staged / "files" / f"f{i:03}.txt", f"new file {i}\n" * (i % 5 + 1))
    for i in range(40):
        _write(
            staged / "new" / f"n{i:03}.txt",
            f"new {i}\n",
            0o755 if i % 4 == 0 else 0o644,
        )
    for i in range(5):
        _write(tree / "blobbed" / f"b{i}.txt", f"old blobbed {i}\n")
    for k in range(5):
        _nested(tree / "trees" / f"t{k}", "old", k)
        _nested(staged / "trees" / f"t{k}", "new", k + 10)
        _nested(tree / "gone" / f"g{k}", "gone", k)
    (tree / "keep" / "inner").mkdir(parents=True)
    for i in range(20):
        path = tree / "modes" / f"s{i:02}"
        if i % 10 == 9:
            path.mkdir(parents=True)
        else:
            _write(path, f"mode {i}\n")
    for i in range(10):
        _write(tree / "links" / f"l{i:02}", f"was a file {i}\n")
    _write(tree / "data" / "user.db", "user data, never touched\n")
    _build_top(tree, staged / "top")
    store = BlobStore(root / ".updock" / "blobs")
    for i in range(10):
        store.put_bytes(f"blob content {i}\n".encode())


def _build_top(tree: Path, top: Path) -> None:
    _write(tree / "app.yml", "services: {old: {}}\n")
    _write(tree / ".env", "SAME=1\n")
    _write(tree / "web" / "index.html", "<p>old</p>\n")
    (tree / "web" / "assets").mkdir()
    _write(tree / "old-only" / "gone.txt", "removed by the swap\n")
    _write(top / "app.yml", "services: {new: {}}\n", 0o640)
    _write(top / ".env", "SAME=1\n")
    _write(top / "web" / "index.html", "<p>new</p>\n")
    (top / "web" / "img").mkdir()
    _write(top / "new-only" / "added.txt", "added by the swap\n")
    os.symlink("app.yml", top / "link-top")


def world_ops(root: Path) -> list[Op]:
    """The 200-odd operations of the world's transaction, in order."""
    staged = staging_of(root)
    ops = [
        Op.put_file(
            f"files/f{i:03}.txt",
            source=staged / "files" / f"f{i:03}.txt",
            mode=0o644 if i % 3 else 0o600,
        )
        for i in range(60)
    ]
    ops += [Op.delete_file(f"files/f{i:03}.txt") for i in range(60, 80)]
    ops += [
        Op.put_file(
            f"new/n{i:03}.txt",
            source=staged / "new" / f"n{i:03}.txt",
            mode=0o755 if i % 4 == 0 else 0o644,
        )
        for i in range(40)
    ]
    ops += [
        Op.put_file(
            f"blobbed/b{i}.txt", blob=_digest(f"blob content {i}\n"), mode=0o644
        )
        for i in range(10)
    ]
    ops += [
        Op.replace_dir(f"trees/t{k}", source=staged / "trees" / f"t{k}")
        for k in range(5)
    ]
    ops += [Op.delete_tree(f"gone/g{k}") for k in range(5)]
    ops += [
        Op.make_dir(f"made/m{i:02}", 0o700 if i % 3 == 0 else 0o755) for i in range(20)
    ]
    ops.append(Op.make_dir("keep", 0o700))
    ops += [
        Op.set_mode(f"modes/s{i:02}", 0o700 if i % 10 == 9 else 0o600)
        for i in range(20)
    ]
    ops += [
        Op.make_symlink(f"links/l{i:02}", f"../files/f{i:03}.txt") for i in range(20)
    ]
    ops.append(Op.swap_tree(staged / "top", preserve=PRESERVED))
    return ops


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def snapshot(tree: Path) -> dict[str, tuple]:
    """Every path under ``tree``: kind, mode, content hash or link target."""
    found: dict[str, tuple] = {"": ("dir", stat.S_IMODE(os.lstat(tree).st_mode))}
    for folder, dirs, files in os.walk(tree):
        for name in dirs + files:
            path = Path(folder) / name
            info = os.lstat(path)
            rel = str(path.relative_to(tree))
            if stat.S_ISLNK(info.st_mode):
                found[rel] = ("symlink", os.readlink(path))
            elif stat.S_ISDIR(info.st_mode):
                found[rel] = ("dir", stat.S_IMODE(info.st_mode))
            else:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                found[rel] = ("file", stat.S_IMODE(info.st_mode), digest)
    return found


class LogObserver:
    """Logs every durability call to a file, flushed at once (SIGKILL-proof).

    At each fsync it also keeps a copy of the file's content as synced, in
    ``<log>.synced/<dev>-<ino>``, so a test can put a file written again
    afterwards (a journal segment) back to its synced state.
    """

    def __init__(self, log: Path) -> None:
        self._fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._synced = Path(f"{log}.synced")
        self._synced.mkdir(exist_ok=True)

    def _log(self, event: str, path: Path) -> None:
        try:
            info = os.stat(path)
            entry = {
                "event": event,
                "path": str(path),
                "dev": info.st_dev,
                "ino": info.st_ino,
                "size": info.st_size,
            }
        except FileNotFoundError:
            entry = {"event": event, "path": str(path)}
        os.write(self._fd, (json.dumps(entry) + "\n").encode())

    def on_write(self, path: Path) -> None:
        self._log("write", path)

    def on_fsync(self, path: Path) -> None:
        info = os.stat(path)
        shutil.copyfile(path, self._synced / f"{info.st_dev}-{info.st_ino}")
        self._log("fsync", path)

    def on_fsync_dir(self, path: Path) -> None:
        self._log("fsync_dir", path)

    def on_syncfs(self, path: Path) -> None:
        self._log("syncfs", path)


def run(root: Path) -> None:
    from engine import transaction
    from engine.transaction import Transaction

    transaction.BATCH_OPS = BATCH_OPS
    from journal import Journal, WriterLock
    from journal.records import HealthVerdict

    state = root / ".updock"
    with WriterLock(state / "lock"), Journal.open(state / "journal") as journal:
        store = BlobStore(state / "blobs")
        _note_staged_writes(root)
        tx = Transaction.begin(
            journal,
            store,
            tree_of(root),
            kind="upgrade",
            from_version="1.0",
            to_version="2.0",
            strategy="patch",
        )
        tx.plan(world_ops(root))
        tx.check_space()
        tx.prepare()
        tx.apply()
        journal.append(HealthVerdict(tx=tx.id, passed=True))
        tx.commit(version="2.0")


def apply_spec(root: Path, spec_path: Path) -> int:
    """Run the transaction a JSON spec describes; return the exit code the
    ``updock`` command maps its error to (0 when committed).

    The spec: ``{"ops": [[kind, path, {keyword arguments}], ...],
    "fill_after_prepare": {"path": P, "leave": BYTES}}``; the second key,
    optional, fills P's filesystem once the transaction is prepared.
    """
    from cli.errors import describe
    from engine.transaction import Transaction
    from journal import Journal

    spec = json.loads(spec_path.read_text())
    state = root / ".updock"
    with Journal.open(state / "journal") as journal:
        store = BlobStore(state / "blobs")
        try:
            tx = Transaction.begin(journal, store, tree_of(root))
            tx.plan(
                [_spec_op(kind, path, kwargs) for kind, path, kwargs in spec["ops"]]
            )
            tx.check_space()
            tx.prepare()
            if "fill_after_prepare" in spec:
                _fill(
                    Path(spec["fill_after_prepare"]["path"]),
                    spec["fill_after_prepare"]["leave"],
                )
            tx.apply()
            tx.commit()
        except Exception as exc:  # noqa: BLE001 - mapped as the command does
            code, message = describe(exc)
            print(message, file=sys.stderr)
            return code
    return 0


def _spec_op(kind: str, path: str, kwargs: dict) -> Op:
    if "source" in kwargs:
        kwargs = {**kwargs, "source": Path(kwargs["source"])}
    return getattr(Op, kind)(path, **kwargs)


def _fill(path: Path, leave: int) -> None:
    """Fill the filesystem of ``path`` until ``leave`` bytes remain free."""
    info = os.statvfs(path.parent)
    size = max(0, info.f_bavail * info.f_frsize - leave)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.posix_fallocate(fd, 0, size)
    finally:
        os.close(fd)


def _note_staged_writes(root: Path) -> None:
    """The package was just extracted: its files are written, not synced."""
    from journal import fsio

    for folder, _dirs, files in os.walk(staging_of(root)):
        for name in files:
            fsio.note_write(Path(folder) / name)


def recover(root: Path) -> None:
    from cli.session import open_deployment

    with open_deployment(root):
        pass


def main(argv: list[str]) -> int:
    command, root = argv[0], Path(argv[1])
    if command == "apply":
        return apply_spec(root, Path(argv[2]))
    if "--observe" in argv:
        from journal import fsio

        fsio.set_observer(LogObserver(Path(argv[argv.index("--observe") + 1])))
    {"run": run, "recover": recover}[command](root)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
