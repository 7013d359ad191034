"""Crashes: SIGKILL at random moments and at every named step, and a model of
power loss that keeps only what was fsync'd."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from journal_samples import tx_events

from journal import fsio
from journal import records as r
from journal.blobs import BlobStore
from journal.journal import Journal
from journal.verify import verify_journal

CHILD = Path(__file__).with_name("crash_child.py")
REPO = Path(__file__).resolve().parents[2]


def _start_child(root: Path, transactions: int, env: dict | None = None):
    return subprocess.Popen(
        [sys.executable, str(CHILD), str(root / "journal"), str(root / "blobs"),
         str(transactions)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, **(env or {})},
    )


def _check_after_crash(root: Path, printed: set[int]) -> int:
    """Reopen for writing (truncating a torn tail) and check everything the
    child reported durable is there, in one unbroken sequence."""
    with Journal.open(root / "journal") as journal:
        seqs = [seq for seq, _ in journal.records()]
        first = seqs[0] if seqs else 1
        assert seqs == list(range(first, journal.last_seq + 1))
        missing = {seq for seq in printed if seq >= first} - set(seqs)
        assert not missing, f"reported durable but lost: {sorted(missing)}"
        assert max(printed, default=0) <= journal.last_seq
        full = Journal.open(root / "journal", writable=False, use_checkpoint=False)
        assert full.state == journal.state
    verify_journal(root / "journal", BlobStore(root / "blobs"))
    return journal.last_seq


def test_append_sigkill_at_random_moments_loses_nothing_reported(tmp_path: Path) -> None:
    rng = random.Random(20240611)
    printed: set[int] = set()

    for _round in range(30):
        child = _start_child(tmp_path, 0)
        assert child.stdout.readline().startswith("ready")
        for _ in range(rng.randrange(0, 120)):
            printed.add(int(child.stdout.readline()))
        child.send_signal(signal.SIGKILL)
        rest, _ = child.communicate()
        printed.update(int(line) for line in rest.split())
        assert child.returncode == -signal.SIGKILL

        _check_after_crash(tmp_path, printed)

    assert len(printed) > 300


CRASH_POINTS = [
    "journal.append.before_write",
    "journal.append.after_write",
    "journal.append.after_fsync",
    "journal.rotate.segment_created",
    "journal.checkpoint.pointer_written",
    "journal.compact.segment_removed",
    "journal.compact.blob_removed",
]


@pytest.mark.parametrize("hit", [1, 3])
@pytest.mark.parametrize("point", CRASH_POINTS)
def test_append_crash_at_each_step_recovers(tmp_path: Path, point: str, hit: int) -> None:
    child = _start_child(tmp_path, 12, {"UPDOCK_CRASH_AT": f"{point}#{hit}"})
    out, _ = child.communicate(timeout=60)
    assert child.returncode == -signal.SIGKILL, f"{point}#{hit} was never reached"
    printed = {int(line) for line in out.split()[2:]}

    last = _check_after_crash(tmp_path, printed)

    child = _start_child(tmp_path, 2)
    out, _ = child.communicate(timeout=60)
    assert child.returncode == 0
    assert int(out.split()[-2]) > last


class PowerLoss:
    """A durability observer: remembers file contents as of their last fsync
    and directory entries as of their directory's last fsync, and can write
    out the files a power cut at this moment would leave."""

    def __init__(self) -> None:
        self.content: dict[int, bytes] = {}
        self.names: dict[Path, dict[str, int]] = {}

    def on_write(self, path: Path) -> None:
        """Unsynced writes are exactly what a power cut loses: ignore them."""

    def on_fsync(self, path: Path) -> None:
        self.content[os.stat(path).st_ino] = Path(path).read_bytes()

    def on_fsync_dir(self, path: Path) -> None:
        self.names[Path(path)] = {
            entry.name: entry.inode() for entry in os.scandir(path) if entry.is_file()
        }

    def on_syncfs(self, path: Path) -> None:
        raise AssertionError("the journal never needs syncfs")

    def image(self, source: Path, dest: Path) -> Path:
        """The files of directory ``source`` after a power cut, under ``dest``."""
        dest.mkdir(parents=True)
        for name, inode in self.names.get(source, {}).items():
            (dest / name).write_bytes(self.content.get(inode, b""))
        return dest


def test_append_power_loss_after_each_return_keeps_every_record(
    journal_dir: Path, tmp_path: Path
) -> None:
    model = PowerLoss()
    fsio.set_observer(model)
    try:
        journal = Journal.open(journal_dir, segment_size=600, checkpoint_every=7)
        returned: list[int] = []
        for n in range(12):
            events = tx_events(f"t{n}", 2)
            returned.append(journal.append(events[0]))
            returned += journal.append_many(events[1:4])
            returned += [journal.append(event) for event in events[4:]]
            if n % 5 == 4:
                journal.checkpoint()

            cut = model.image(journal_dir, tmp_path / f"cut{n}")
            with Journal.open(cut, writable=False) as after:
                seqs = [seq for seq, _ in after.records()]
                assert set(returned) <= set(seqs)
                assert after.state == journal.state
        journal.close()
    finally:
        fsio.set_observer(None)
    assert len(journal.segment_paths) > 3


def test_append_power_loss_model_catches_a_missing_fsync(
    journal_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The model is sharp enough: skip the segment fsync and records vanish."""
    model = PowerLoss()
    fsio.set_observer(model)
    try:
        journal = Journal.open(journal_dir)
        monkeypatch.setattr(fsio, "fsync_fd", lambda fd, path: None)
        journal.append(r.OpApplied(tx="t", op=1))
        cut = model.image(journal_dir, tmp_path / "cut")
        with Journal.open(cut, writable=False) as after:
            assert after.last_seq == 0
    finally:
        fsio.set_observer(None)
