"""A small deployment for transaction tests: a tree, a staging folder, the
journal and the blob store, as ``<root>/.updock`` lays them out."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from txdriver import snapshot

from engine.transaction import Transaction
from journal import BlobStore, Journal


@dataclass
class Deployment:
    root: Path
    tree: Path
    staging: Path
    journal: Journal
    store: BlobStore

    @classmethod
    def create(cls, root: Path) -> Deployment:
        tree, state = root / "docker", root / ".updock"
        tree.mkdir(parents=True)
        (state / "staging").mkdir(parents=True)
        journal = Journal.open(state / "journal")
        return cls(root, tree, state / "staging", journal, BlobStore(state / "blobs"))

    def begin(self, **kwargs) -> Transaction:
        kwargs.setdefault("kind", "upgrade")
        return Transaction.begin(self.journal, self.store, self.tree, **kwargs)

    def write(
        self, relpath: str, text: str, mode: int = 0o644, *, staged: bool = False
    ) -> Path:
        path = (self.staging if staged else self.tree) / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        os.chmod(path, mode)
        return path

    def snapshot(self) -> dict:
        return snapshot(self.tree)

    def reopen(self) -> None:
        """Close and reopen the journal, as a new process would."""
        self.journal.close()
        self.journal = Journal.open(self.root / ".updock" / "journal")

    def events(self, tx: str) -> list[str]:
        return [type(event).__name__ for _, event in self.journal.tx_records(tx)]
