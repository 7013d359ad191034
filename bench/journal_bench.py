"""Journal throughput beside SQLite, replay speed, and open time.

Measured in one run, in one temporary folder (in .cache/, on the same
filesystem as the repository, not tmpfs):

- appends per second with one fsync per record (``Journal.append``), beside
  SQLite (stdlib sqlite3, journal_mode=WAL, synchronous=FULL, one INSERT per
  transaction) storing the same events, encoded the same way. The two
  alternate in short rounds so a busy machine slows both alike; the ratio
  is the median of the per-round ratios;
- appends per second with group commits of 100 records (``append_many``),
  beside SQLite with 100 INSERTs per transaction;
- replay speed over a journal of 1,000,000 records (a realistic mix:
  transactions of 100 file operations, intended and applied): an open that
  decodes and folds every record, ignoring checkpoints;
- open time of that journal for writing, as a command opens it: from its
  newest automatic checkpoint.

Goals: per-record appends at least as fast as SQLite's, group commits at
least 20 times per-record appends, replay at least 300,000 records/s, open
with a checkpoint under 0.2 s.

Usage: .venv/bin/python bench/journal_bench.py [--records 1000000] [--rounds 11]
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from journal import records as r
from journal.journal import Journal

REPO = Path(__file__).resolve().parent.parent


def transaction(n: int, ops: int = 100) -> list[r.Event]:
    """The events of one upgrade transaction of ``ops`` file operations."""
    tx, at = f"tx-{n:06d}", 1.7e9 + n
    events: list[r.Event] = [
        r.TxBegun(
            at=at,
            tx=tx,
            kind="upgrade",
            from_version="1.4.2",
            to_version="1.5.0",
            host="host",
            pid=4242,
            user="root",
        )
    ]
    for op in range(ops):
        digest = hashlib.sha256(f"{n}/{op}".encode()).hexdigest()
        events.append(
            r.OpIntended(
                at=at,
                tx=tx,
                op=op,
                kind="put_file",
                path=f"docker/app/file{op}.conf",
                pre=r.ImageRef(kind=r.FILE, blob=digest, size=2048, mode=0o644),
                post=r.ImageRef(kind=r.FILE, blob=digest, size=2100, mode=0o644),
            )
        )
    events += [r.OpApplied(at=at, tx=tx, op=op) for op in range(ops)]
    events += [
        r.CommitDecided(at=at, tx=tx),
        r.Committed(at=at, tx=tx, version="1.5.0"),
    ]
    return events


class SqliteLog:
    """The peer: one table of payloads, WAL, synchronous=FULL."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("CREATE TABLE log (seq INTEGER PRIMARY KEY, payload BLOB)")

    def insert(self, payloads: list[bytes]) -> None:
        self.db.execute("BEGIN")
        self.db.executemany(
            "INSERT INTO log (payload) VALUES (?)", [(p,) for p in payloads]
        )
        self.db.execute("COMMIT")


def rate(step: Callable[[], int], seconds: float) -> float:
    """Records per second of ``step`` (which returns records written)."""
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        done += step()
    return done / (time.perf_counter() - start)


def alternate(
    rounds: int, seconds: float, ours: Callable[[], int], peer: Callable[[], int]
) -> tuple[float, float, float]:
    """Median rates of ours and the peer, measured in alternating rounds, and
    the median of the per-round ratios (each pair ran back to back, so a
    change of load between rounds does not skew it)."""
    mine, theirs = [], []
    for _ in range(rounds):
        mine.append(rate(ours, seconds))
        theirs.append(rate(peer, seconds))
    ratios = [a / b for a, b in zip(mine, theirs)]
    return statistics.median(mine), statistics.median(theirs), statistics.median(ratios)


def measure_appends(folder: Path, rounds: int, seconds: float) -> dict[str, float]:
    """Both sides take the same events and encode them (msgpack) before
    storing: the peer is "the event log kept in SQLite"."""
    events = transaction(0, ops=50)
    cursor = {"i": 0}

    def next_events(count: int) -> list[r.Event]:
        start = cursor["i"]
        cursor["i"] = (start + count) % len(events)
        return [events[(start + k) % len(events)] for k in range(count)]

    journal = Journal.open(folder / "append-journal")
    peer = SqliteLog(folder / "append.sqlite")

    def ours_one() -> int:
        journal.append(next_events(1)[0])
        return 1

    def peer_one() -> int:
        peer.insert([r.encode(next_events(1)[0])])
        return 1

    def ours_group() -> int:
        journal.append_many(next_events(100))
        return 100

    def peer_group() -> int:
        peer.insert([r.encode(event) for event in next_events(100)])
        return 100

    one, peer_single, one_ratio = alternate(rounds, seconds, ours_one, peer_one)
    group, peer_grouped, group_ratio = alternate(
        rounds, seconds, ours_group, peer_group
    )
    journal.close()
    mean_payload = statistics.mean(len(r.encode(event)) for event in events)
    return {
        "one": one,
        "sqlite_one": peer_single,
        "one_ratio": one_ratio,
        "group": group,
        "sqlite_group": peer_grouped,
        "group_ratio": group_ratio,
        "payload": mean_payload,
    }


def build_big_journal(path: Path, count: int) -> int:
    """A journal of at least ``count`` records, default automatic checkpoints."""
    with Journal.open(path) as journal:
        n = 0
        while journal.last_seq < count:
            journal.append_many(transaction(n))
            n += 1
        return journal.last_seq


def timed(action: Callable[[], object]) -> tuple[float, float, object]:
    """(wall seconds, CPU seconds, result) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = action()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--seconds", type=float, default=0.5, help="per round")
    args = parser.parse_args()

    cache = REPO / ".cache"
    cache.mkdir(exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="journal-bench-", dir=cache))
    try:
        run(folder, args)
    finally:
        shutil.rmtree(folder)


def run(folder: Path, args: argparse.Namespace) -> None:
    print(
        f"folder: {folder} (python {sys.version.split()[0]}, "
        f"sqlite {sqlite3.sqlite_version})"
    )
    a = measure_appends(folder, args.rounds, args.seconds)
    print(
        f"payloads: {a['payload']:.0f} bytes on average; median of "
        f"{args.rounds} alternating rounds of {args.seconds:.1f} s"
    )
    print(f"append, one fsync per record : {a['one']:>10,.0f} records/s")
    print(f"sqlite, one INSERT per commit: {a['sqlite_one']:>10,.0f} records/s")
    print(f"append_many, groups of 100   : {a['group']:>10,.0f} records/s")
    print(f"sqlite, 100 INSERTs a commit : {a['sqlite_group']:>10,.0f} records/s")
    per_record = a["one_ratio"]
    grouping = a["group"] / a["one"]
    print(
        f"ratio per-record / sqlite    : {per_record:>10.2f}  (median of round ratios)"
    )
    print(f"ratio group / per-record     : {grouping:>10.1f}")
    print(
        f"ratio group / sqlite group   : {a['group_ratio']:>10.2f}  "
        "(median of round ratios)"
    )

    big = folder / "big-journal"
    wall, _cpu, total = timed(lambda: build_big_journal(big, args.records))
    size = sum(p.stat().st_size for p in big.iterdir())
    print(
        f"built {total:,} records ({size / 1e6:.0f} MB on disk, "
        f"{len(list(big.glob('*.seg')))} segments) in {wall:.1f} s"
    )

    wall, cpu, journal = timed(
        lambda: Journal.open(big, writable=False, use_checkpoint=False)
    )
    replay = total / wall
    print(
        f"open replaying every record  : {wall:>10.3f} s  "
        f"({replay:,.0f} records/s; CPU {total / cpu:,.0f} records/s)"
    )
    full_state = journal.state

    wall_cp, _cpu, journal = timed(lambda: Journal.open(big))
    journal.close()
    print(
        f"open from the checkpoint     : {wall_cp:>10.3f} s  "
        f"(writable, as a command opens it)"
    )
    same = journal.state == full_state

    print()
    print(
        f"goal per-record >= sqlite         : {per_record:.2f}x  {verdict(per_record >= 1)}"
    )
    print(
        f"goal group >= 20x per-record      : {grouping:.1f}x  {verdict(grouping >= 20)}"
    )
    print(
        f"goal replay >= 300,000 records/s  : {replay:,.0f}  {verdict(replay >= 300_000)}"
    )
    print(
        f"goal open with checkpoint < 0.2 s : {wall_cp:.3f} s  {verdict(wall_cp < 0.2)}"
    )
    print(f"state from checkpoint equals full replay: {same}")


if __name__ == "__main__":
    main()
