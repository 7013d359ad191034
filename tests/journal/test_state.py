"""The fold from events to the deployment's state."""

from __future__ import annotations

from journal_samples import every_event, tx_events

from journal import records as r
from journal.state import State, fold, replay


def _numbered(events):
    return list(enumerate(events, 1))


def test_fold_leaves_its_input_unchanged() -> None:
    before = replay(_numbered(tx_events("t1", commit=False)))
    copy = before.copy()

    after = fold(before, 99, r.Committed(tx="t1", version="2"))

    assert before == copy
    assert after.txs["t1"].status == "committed"
    assert after.seq == 99


def test_replay_commit_sets_deployed_version_and_last_committed() -> None:
    state = replay(_numbered(tx_events("t1") + tx_events("t2", commit=False)))

    assert state.deployed_version == "2"
    assert state.last_committed_tx == "t1"
    assert [tx.tx for tx in state.unfinished()] == ["t2"]
    tx = state.txs["t1"]
    assert (tx.status, tx.ops, tx.applied, tx.first_seq, tx.last_seq) == (
        "committed", 2, 2, 1, 7)
    assert tx.ended_at == 104.0


def test_replay_rollback_transaction_commits_the_version_it_restored() -> None:
    events = [
        r.TxBegun(tx="up", kind="upgrade", from_version="1", to_version="2"),
        r.Committed(tx="up", version="2"),
        r.TxBegun(tx="back", kind="rollback", from_version="2", to_version="1"),
        r.Committed(tx="back", version="1"),
        r.TxBegun(tx="fail", kind="upgrade", from_version="1", to_version="3"),
        r.RolledBack(tx="fail", reason="health"),
        r.TxBegun(tx="noop", kind="upgrade"),
        r.Committed(tx="noop"),
    ]
    state = replay(_numbered(events))

    assert state.deployed_version == "1"
    assert state.last_committed_tx == "noop"
    assert state.txs["fail"].status == "rolled_back"
    assert state.txs["fail"].reason == "health"
    assert state.unfinished() == []


def test_replay_decided_transaction_is_unfinished_until_committed() -> None:
    events = tx_events("t1", commit=False) + [r.CommitDecided(tx="t1")]
    state = replay(_numbered(events))

    assert state.txs["t1"].status == "decided"
    assert state.unfinished() == [state.txs["t1"]]


def test_replay_services_stopped_until_started() -> None:
    begun = r.TxBegun(tx="t", kind="upgrade")
    stopping = replay(_numbered([begun, r.ServicesStopping(tx="t", project="p")]))
    stopped = replay(_numbered([begun, r.ServicesStopped(tx="t", project="p")]))
    started = replay(_numbered([begun, r.ServicesStopped(tx="t", project="p"),
                                r.ServicesStarted(tx="t", project="p")]))

    assert stopping.txs["t"].services_stopped
    assert stopped.txs["t"].services_stopped
    assert not started.txs["t"].services_stopped


def test_replay_backups_recovery_and_manifest_high_water() -> None:
    state = replay(_numbered(every_event()))

    assert list(state.backups) == ["bk1"]
    assert state.backups["bk1"].sha256 == "a" * 64
    assert state.manifest_high_water == "1.1"
    recovery = state.last_recovery
    assert (recovery.tx, recovery.direction, recovery.outcome) == (
        "t2", "back", "rolled back")
    assert recovery.finished_at == 10.0

    removed = fold(state, 100, r.BackupRemoved(backup_id="bk1"))
    assert removed.backups == {}


def test_replay_unknown_event_is_counted_and_skipped() -> None:
    unknown = r.UnknownEvent(type="future", raw=b"\x81\xa4type\xa6future")
    state = replay(_numbered([r.TxBegun(tx="t", kind="upgrade"), unknown]))

    assert state.unknown_records == 1
    assert state.txs["t"].status == "open"


def test_snapshot_copy_equals_original() -> None:
    state = replay(_numbered(every_event() + tx_events("t9")))

    assert state.copy() == state
    assert state.copy() is not state
    assert State() == State()
