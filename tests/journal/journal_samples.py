"""Sample events and journals shared by the journal tests."""

from __future__ import annotations

from journal import records as r

DIGEST_A = "a" * 64
DIGEST_B = "b" * 64


def every_event() -> list[r.Event]:
    """One event of each kind, every field set away from its default."""
    pre = r.ImageRef(kind=r.FILE, blob=DIGEST_A, size=10, mode=0o644)
    post = r.ImageRef(kind=r.SYMLINK, target="../x", mode=0o777)
    verdict = r.ServiceVerdict(service="web", passed=False, reason="unhealthy")
    return [
        r.TxBegun(
            at=1.5, tx="t1", kind="upgrade", from_version="1.0", to_version="1.1",
            host="h", pid=42, user="root", strategy="patch",
        ),
        r.OpIntended(at=2.0, tx="t1", op=0, kind="put_file", path="a/b", pre=pre,
                     post=post),
        r.OpApplied(at=2.5, tx="t1", op=0),
        r.DownloadVerified(at=3.0, tx="t1", url="http://127.0.0.1/p", sha256=DIGEST_B,
                           size=99, seconds=1.25, resumed_from=7),
        r.PackageStaged(at=3.5, tx="t1", path="/s", files=3, size=100, seconds=0.5),
        r.BackupCreated(at=4.0, tx="t1", backup_id="bk1", path="/b/x.tar.gz",
                        kind="pre-upgrade", version="1.0", sha256=DIGEST_A, size=5,
                        files=2, seconds=0.1),
        r.BackupRemoved(at=4.5, backup_id="bk0"),
        r.ServicesStopping(at=4.8, tx="t1", project="p", services=["web", "db"]),
        r.ServicesStopped(at=5.0, tx="t1", project="p", services=["web", "db"],
                          seconds=2.0),
        r.ImagesLoaded(at=5.5, tx="t1", images=["web:1.1"],
                       previous={"web:latest": "sha256:1"},
                       kept_tags={"web:latest": "updock-keep:1"}, seconds=3.0),
        r.ServicesStarted(at=6.0, tx="t1", project="p", services=["web"], seconds=1.0),
        r.HealthVerdict(at=6.5, tx="t1", passed=False, phase="rollback",
                        services=[verdict], seconds=4.0),
        r.ManifestAccepted(at=7.0, tx="t1", version="1.1", url="http://127.0.0.1/m",
                           signed=True),
        r.CommitDecided(at=7.5, tx="t1"),
        r.Committed(at=8.0, tx="t1", version="1.1"),
        r.RolledBack(at=8.5, tx="t2", reason="health"),
        r.Aborted(at=9.0, tx="t3", reason="no space"),
        r.RecoveryStarted(at=9.5, tx="t2", direction="back", pid=7),
        r.RecoveryFinished(at=10.0, tx="t2", direction="back", outcome="rolled back"),
        r.Checkpoint(at=10.5, upto=3, state=b"\x80"),
    ]


def tx_events(tx: str, ops: int = 2, *, commit: bool = True, at: float = 100.0):
    """A whole transaction's events: begin, ops intended and applied, commit."""
    events: list[r.Event] = [
        r.TxBegun(at=at, tx=tx, kind="upgrade", from_version="1", to_version="2")
    ]
    for op in range(ops):
        events.append(r.OpIntended(at=at + 1, tx=tx, op=op, kind="put_file",
                                   path=f"f{op}"))
        events.append(r.OpApplied(at=at + 2, tx=tx, op=op))
    if commit:
        events.append(r.CommitDecided(at=at + 3, tx=tx))
        events.append(r.Committed(at=at + 4, tx=tx, version="2"))
    return events
