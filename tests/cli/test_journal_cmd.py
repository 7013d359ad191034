"""``updock journal inspect`` and ``updock journal verify``, run as the real command."""

from __future__ import annotations

import json
import subprocess
from datetime import datetime
from pathlib import Path

import pytest

from cli import exitcodes
from journal import records as r
from journal.blobs import BlobStore
from journal.journal import Journal
from journal.lock import WriterLock

REPO = Path(__file__).resolve().parents[2]
UPDOCK = REPO / ".venv" / "bin" / "updock"
T0 = datetime(2025, 3, 1, 12, 0, 0).timestamp()


class FutureEvent(r.Event, tag="future_event"):
    """An event kind a newer updock might write."""

    tx: str


def updock(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(UPDOCK), *args], capture_output=True, text=True, timeout=60, cwd=REPO,
        check=False,
    )


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A deployment root whose journal holds three transactions: an upgrade
    committed with one file op (its pre-image in the blob store), a rollback
    transaction still open, and an aborted upgrade a day later."""
    store = BlobStore(tmp_path / ".updock" / "blobs")
    blob = store.put_bytes(b"old content")
    pre = r.ImageRef(kind=r.FILE, blob=blob.digest, size=blob.size, mode=0o644)
    with Journal.open(tmp_path / ".updock" / "journal") as journal:
        journal.append_many([
            r.TxBegun(at=T0, tx="up-1", kind="upgrade", from_version="1.0",
                      to_version="1.1"),
            r.OpIntended(at=T0 + 1, tx="up-1", op=0, kind="put_file",
                         path="docker/app.conf", pre=pre),
            r.OpApplied(at=T0 + 2, tx="up-1", op=0),
            r.CommitDecided(at=T0 + 3, tx="up-1"),
            r.Committed(at=T0 + 4.5, tx="up-1", version="1.1"),
        ])
        journal.append(r.TxBegun(at=T0 + 60, tx="rb-2", kind="rollback",
                                 from_version="1.1", to_version="1.0"))
        journal.append(r.TxBegun(at=T0 + 86400, tx="up-3", kind="upgrade",
                                 from_version="1.0", to_version="2.0"))
        journal.append(r.Aborted(at=T0 + 86401, tx="up-3", reason="no space"))
    return tmp_path


def _segment(root: Path) -> Path:
    return root / ".updock" / "journal" / "00000001.seg"


def test_inspect_lists_one_line_per_transaction(root: Path) -> None:
    result = updock("journal", "inspect", "--root", str(root))

    assert result.returncode == exitcodes.OK, result.stderr
    header, *lines = result.stdout.splitlines()
    assert header.split() == ["TX", "KIND", "VERSIONS", "STARTED", "DURATION",
                              "OUTCOME", "OPS"]
    assert [line.split()[0] for line in lines] == ["up-1", "rb-2", "up-3"]
    assert lines[0].split() == ["up-1", "upgrade", "1.0", "->", "1.1",
                                "2025-03-01", "12:00:00", "4.5s", "committed", "1"]
    assert "unfinished (open)" in lines[1]
    assert lines[2].split()[-2:] == ["aborted", "0"]


def test_inspect_tx_lists_every_event_with_time_offsets(root: Path) -> None:
    result = updock("journal", "inspect", "--root", str(root), "--tx", "up-1")

    assert result.returncode == exitcodes.OK, result.stderr
    lines = [line.split() for line in result.stdout.splitlines()]
    assert [line[2] for line in lines] == [
        "tx_begun", "op_intended", "op_applied", "commit_decided", "committed"]
    assert [line[0] for line in lines] == [
        "+0.000s", "+1.000s", "+2.000s", "+3.000s", "+4.500s"]
    assert [int(line[1]) for line in lines] == [1, 2, 3, 4, 5]
    assert "path=docker/app.conf" in lines[1]


def test_inspect_json_lines_are_read_by_jq(root: Path) -> None:
    summary = updock("journal", "inspect", "--root", str(root), "--json")
    events = updock("journal", "inspect", "--root", str(root), "--tx", "up-1", "--json")
    picked = subprocess.run(
        ["jq", "-r", "select(.status == \"committed\") | .tx"],
        input=summary.stdout, capture_output=True, text=True, check=True,
    )

    assert picked.stdout.split() == ["up-1"]
    rows = [json.loads(line) for line in summary.stdout.splitlines()]
    assert [(row["tx"], row["duration"]) for row in rows] == [
        ("up-1", 4.5), ("rb-2", None), ("up-3", 1.0)]
    found = [json.loads(line) for line in events.stdout.splitlines()]
    assert [(e["seq"], e["type"], e["offset"]) for e in found][-1] == (
        5, "committed", 4.5)
    assert found[1]["pre"]["kind"] == "file"


def test_inspect_filters_since_kind_and_limit(root: Path) -> None:
    def listed(*args: str) -> list[str]:
        result = updock("journal", "inspect", "--root", str(root), *args)
        assert result.returncode == exitcodes.OK, result.stderr
        return [line.split()[0] for line in result.stdout.splitlines()[1:]]

    assert listed("--since", "6") == ["rb-2", "up-3"]
    assert listed("--since", "2025-03-02T00:00") == ["up-3"]
    assert listed("--kind", "rollback") == ["rb-2"]
    assert listed("--kind", "upgrade", "--limit", "1") == ["up-3"]
    events = updock("journal", "inspect", "--root", str(root), "--tx", "up-1",
                    "--kind", "op_applied")
    assert [line.split()[2] for line in events.stdout.splitlines()] == ["op_applied"]


def test_inspect_bad_since_exits_bad_input(root: Path) -> None:
    result = updock("journal", "inspect", "--root", str(root), "--since", "yesterday")

    assert result.returncode == exitcodes.BAD_INPUT
    assert "yesterday" in result.stderr


def test_inspect_missing_journal_or_tx_exits_bad_input(root: Path, tmp_path: Path) -> None:
    missing = updock("journal", "inspect", "--root", str(tmp_path / "nowhere"))
    unknown = updock("journal", "inspect", "--root", str(root), "--tx", "nope")

    assert missing.returncode == exitcodes.BAD_INPUT
    assert "no journal at" in missing.stderr
    assert unknown.returncode == exitcodes.BAD_INPUT
    assert "nope" in unknown.stderr


def test_inspect_and_verify_need_no_lock(root: Path) -> None:
    with WriterLock(root / ".updock" / "lock"):
        inspected = updock("journal", "inspect", "--root", str(root))
        verified = updock("journal", "verify", "--root", str(root))

    assert inspected.returncode == verified.returncode == exitcodes.OK


def test_verify_healthy_journal_exits_ok(root: Path) -> None:
    result = updock("journal", "verify", "--root", str(root))

    assert result.returncode == exitcodes.OK, result.stderr
    assert "journal OK: 1 segments, 8 records (seq 1..8), 1 blobs checked" in result.stdout


def test_verify_missing_blob_exits_journal_corrupt_naming_offset(root: Path) -> None:
    store = BlobStore(root / ".updock" / "blobs")
    (digest,) = store.digests()
    store.remove(digest)

    result = updock("journal", "verify", "--root", str(root))

    assert result.returncode == exitcodes.JOURNAL_CORRUPT
    assert f"offset {_op_offset(root)}" in result.stderr
    assert digest in result.stderr and "missing" in result.stderr


def test_verify_corrupt_blob_exits_journal_corrupt(root: Path) -> None:
    store = BlobStore(root / ".updock" / "blobs")
    (digest,) = store.digests()
    path = store.path_of(digest)
    path.chmod(0o644)
    path.write_bytes(b"new content")

    result = updock("journal", "verify", "--root", str(root))

    assert result.returncode == exitcodes.JOURNAL_CORRUPT
    assert "corrupt" in result.stderr and f"offset {_op_offset(root)}" in result.stderr


def test_verify_corrupt_record_exits_journal_corrupt_naming_offset(root: Path) -> None:
    offset = _op_offset(root)
    segment = _segment(root)
    data = bytearray(segment.read_bytes())
    data[offset + 30] ^= 0x55
    segment.write_bytes(bytes(data))

    verified = updock("journal", "verify", "--root", str(root))
    inspected = updock("journal", "inspect", "--root", str(root))

    assert verified.returncode == exitcodes.JOURNAL_CORRUPT
    assert f"corrupt at offset {offset}" in verified.stderr
    assert inspected.returncode == exitcodes.JOURNAL_CORRUPT


def test_verify_and_inspect_report_unknown_kinds_and_torn_tail(root: Path) -> None:
    with Journal.open(root / ".updock" / "journal") as journal:
        journal.append(FutureEvent(tx="rb-2"))
        journal.append(r.OpApplied(tx="rb-2", op=0))
    with Journal.open(root / ".updock" / "journal", writable=False) as journal:
        last = list(journal.scan())[-1].offset
    segment = _segment(root)
    segment.write_bytes(segment.read_bytes()[: last + 5])

    verified = updock("journal", "verify", "--root", str(root))
    inspected = updock("journal", "inspect", "--root", str(root))
    events = updock("journal", "inspect", "--root", str(root), "--tx", "rb-2")

    assert verified.returncode == exitcodes.OK, verified.stderr
    assert "1 records of unknown kind 'future_event'" in verified.stdout
    assert f"torn tail of 5 bytes at {segment}:{last}" in verified.stdout
    assert inspected.returncode == exitcodes.OK
    assert "1 records of kinds this updock does not know" in inspected.stderr
    assert "future_event" in events.stdout


def _op_offset(root: Path) -> int:
    with Journal.open(root / ".updock" / "journal", writable=False) as journal:
        return next(loc.offset for loc in journal.scan() if loc.seq == 2)


def test_inspect_before_any_change_says_nothing_is_recorded_yet(tmp_path):
    from deploykit import make_demo_deployment, updock

    root = make_demo_deployment(tmp_path / "deployment")
    result = updock("journal", "inspect", "--root", str(root))
    assert result.returncode == 3
    assert "nothing to read until updock first changes this deployment" in result.stderr
