"""Opening a deployment for a command: lock, journal, blob store, recovery.

Every command that may change a deployment opens it with
``open_deployment``: the writer lock (``<root>/.updock/lock``, held until
the command ends), the journal (``<root>/.updock/journal``) and the blob
store (``<root>/.updock/blobs``), then automatic recovery of anything a
crash left unfinished, with one WARNING line per recovered transaction.
Read-only commands use ``open_read_only``: no lock, no recovery, nothing
written.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.config import DeploymentConfig, load_config, record_version
from engine.recovery import RecoveryOutcome, ServicesHook, recover
from engine.transaction import Transaction
from journal import BlobStore, Journal, WriterLock

logger = logging.getLogger(__name__)

ServicesFactory = Callable[["Session"], ServicesHook | None]


@dataclass
class Session:
    """An open deployment.

    Attributes:
        config: The deployment's configuration and layout.
        journal: Its journal (writable only when the lock is held).
        store: Its blob store.
        writable: Whether the writer lock is held.
        recovered: What automatic recovery did when the session opened.
    """

    config: DeploymentConfig
    journal: Journal
    store: BlobStore
    writable: bool
    recovered: list[RecoveryOutcome] = field(default_factory=list)

    @property
    def root(self) -> Path:
        return self.config.root

    @property
    def tree(self) -> Path:
        """The compose project folder transactions change."""
        return self.config.tree

    @property
    def state_dir(self) -> Path:
        return self.config.state_dir

    def begin(self, **kwargs: Any) -> Transaction:
        """Begin a transaction on this deployment's tree (see
        ``Transaction.begin`` for the keyword arguments)."""
        return Transaction.begin(self.journal, self.store, self.tree, **kwargs)

    def recover(self, services: ServicesHook | None = None) -> list[RecoveryOutcome]:
        """Recover unfinished transactions now; see ``engine.recovery``."""
        outcomes = recover(self.journal, self.store, self.tree, services)
        deployed = self.journal.state.deployed_version
        if deployed is not None and deployed != self.config.version:
            record_version(self.config, deployed)
        self.recovered.extend(outcomes)
        return outcomes


@contextmanager
def open_deployment(
    root: Path,
    *,
    services: ServicesFactory | None = None,
    recover: bool = True,
) -> Iterator[Session]:
    """Open a deployment for writing, for the length of a ``with`` block.

    Args:
        root: The deployment root (holding ``config.toml``).
        services: Makes the services hook recovery calls once files are
            consistent (given the session); None leaves services alone.
        recover: Run automatic recovery first (``journal replay`` opens
            without it, to let the operator choose the direction).

    Yields:
        The session; the lock is released and the journal closed on exit.

    Raises:
        LockedError: another command holds the deployment.
        ConfigError: ``config.toml`` is invalid.
        CorruptRecordError, SegmentHeaderError: the journal is damaged.
        RecoveryFailedError: an unfinished transaction could not be recovered.
    """
    config = load_config(Path(root))
    state_dir = config.state_dir
    with WriterLock(state_dir / "lock"):
        journal = Journal.open(state_dir / "journal", writable=True)
        try:
            session = Session(config, journal, BlobStore(state_dir / "blobs"), True)
            if recover:
                session.recover(services(session) if services is not None else None)
            yield session
        finally:
            journal.close()


@contextmanager
def open_read_only(root: Path) -> Iterator[Session]:
    """Open a deployment to read it: no lock, no recovery, no writes.

    Raises:
        JournalNotFoundError: the deployment has no journal yet.
        ConfigError, CorruptRecordError, SegmentHeaderError: as above.
    """
    config = load_config(Path(root))
    journal = Journal.open(config.state_dir / "journal", writable=False)
    try:
        yield Session(config, journal, BlobStore(config.state_dir / "blobs"), False)
    finally:
        journal.close()
