"""A journal writer for crash tests, run as a child process.

Usage: python crash_child.py JOURNAL_DIR BLOB_DIR TRANSACTIONS

Opens the journal, prints ``ready <last_seq>``, then writes transactions
(begin, ops, commit) with single appends and group commits, checkpoints and
compacts every few transactions, and prints each sequence number on its own
line only after the call that wrote it returned. Transactions: 0 means
forever (the parent kills it).
"""

from __future__ import annotations

import sys
from itertools import count
from pathlib import Path

from journal import records as r
from journal.blobs import BlobStore
from journal.journal import Journal


def main() -> None:
    journal_dir, blob_dir, limit = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    store = BlobStore(blob_dir)
    journal = Journal.open(journal_dir, segment_size=2048, checkpoint_every=40)
    print("ready", journal.last_seq, flush=True)

    run = journal.last_seq
    for n in count():
        if limit and n >= limit:
            break
        tx = f"tx{run}.{n}"
        blob = store.put_bytes(f"pre-image {run}.{n}".encode())
        store.put_bytes(f"unreferenced {run}.{n}".encode())
        report(journal.append(r.TxBegun(tx=tx, kind="upgrade", to_version=str(n))))
        pre = r.ImageRef(kind=r.FILE, blob=blob.digest, size=blob.size)
        intents = [
            r.OpIntended(tx=tx, op=op, kind="put_file", path=f"f{op}", pre=pre)
            for op in range(3)
        ]
        report(*journal.append_many(intents))
        for op in range(3):
            report(journal.append(r.OpApplied(tx=tx, op=op)))
        decided = [r.CommitDecided(tx=tx), r.Committed(tx=tx, version=str(n))]
        report(*journal.append_many(decided))
        if n % 4 == 3:
            journal.compact(store)
    journal.close()
    print("done", flush=True)


def report(*seqs: int) -> None:
    for seq in seqs:
        print(seq, flush=True)


if __name__ == "__main__":
    main()
