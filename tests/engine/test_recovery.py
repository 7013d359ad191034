"""Recovery, manual replay and the undo of a committed transaction."""

from __future__ import annotations

import logging
import os

import pytest
import txdriver
from deploykit import updock
from txcrash import driver, killed
from txdeploy import Deployment

from cli import exitcodes
from cli.session import open_deployment
from engine.errors import RolledBackError
from engine.ops import Op
from engine.recovery import recover
from engine.rollback import (
    NothingToUndoError,
    ReplayRefusedError,
    replay_back,
    replay_forward,
    undo_commit,
    undo_last_commit,
)
from journal import BlobStore, Journal


@pytest.fixture
def dep(tmp_path):
    dep = Deployment.create(tmp_path)
    dep.write("app.yml", "version: 1\n")
    dep.write("conf/a.conf", "a = 1\n", 0o600)
    (dep.tree / "conf" / "empty").mkdir()
    os.symlink("a.conf", dep.tree / "conf" / "link")
    yield dep
    dep.journal.close()


def upgrade_ops(dep: Deployment, n: int = 2) -> list[Op]:
    dep.write(f"v{n}/app.yml", f"version: {n}\n", staged=True)
    dep.write(f"v{n}/conf/b.conf", f"b = {n}\n", staged=True)
    return [
        Op.put_file("app.yml", source=dep.staging / f"v{n}" / "app.yml"),
        Op.replace_dir("conf", source=dep.staging / f"v{n}" / "conf"),
        Op.make_dir(f"new{n}"),
    ]


def applied(dep: Deployment, n: int = 2):
    tx = dep.begin(from_version=str(n - 1), to_version=str(n))
    tx.plan(upgrade_ops(dep, n))
    tx.prepare()
    tx.apply()
    return tx


def test_recover_rolls_back_transaction_without_decision(dep):
    old = dep.snapshot()
    tx = applied(dep)
    dep.reopen()

    outcomes = recover(dep.journal, dep.store, dep.tree)

    assert [(o.tx, o.direction) for o in outcomes] == [(tx.id, "back")]
    assert dep.snapshot() == old
    assert dep.events(tx.id)[-3:] == [
        "RecoveryStarted",
        "RolledBack",
        "RecoveryFinished",
    ]
    assert recover(dep.journal, dep.store, dep.tree) == []


def test_recover_rolls_forward_decided_transaction(dep):
    """A decided transaction whose placed file went missing is redone from
    the stored post-image."""
    tx = applied(dep)
    tx.decide()
    new = dep.snapshot()
    os.unlink(dep.tree / "app.yml")
    dep.reopen()

    (outcome,) = recover(dep.journal, dep.store, dep.tree)

    assert (outcome.direction, outcome.changed) == ("forward", 1)
    assert dep.snapshot() == new
    assert dep.journal.state.txs[tx.id].status == "committed"
    assert dep.journal.state.deployed_version == "2"


def test_recover_calls_services_hook_once_files_are_back(dep):
    old = dep.snapshot()
    tx = applied(dep)
    dep.reopen()
    seen = []

    class Hook:
        def recover(self, tx_state, direction=None):
            seen.append((tx_state.tx, direction, dep.snapshot() == old))

    recover(dep.journal, dep.store, dep.tree, Hook())
    assert seen == [(tx.id, "back", True)]


def test_session_recovers_with_warning_naming_transaction(dep, caplog):
    tx = applied(dep)
    dep.journal.close()
    with caplog.at_level(logging.WARNING), open_deployment(dep.root) as session:
        assert [o.tx for o in session.recovered] == [tx.id]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(tx.id in message and "rolled back" in message for message in warnings)
    dep.reopen()


def test_recover_command_prints_what_it_did(dep):
    tx = applied(dep)
    dep.journal.close()
    first = updock("recover", "--root", str(dep.root), "--no-services")
    assert first.returncode == 0, first.stderr
    assert tx.id in first.stdout and "rolled back" in first.stdout
    again = updock("recover", "--root", str(dep.root), "--no-services")
    assert "nothing to recover" in again.stdout
    dep.reopen()


def test_replay_back_rolls_back_even_a_decided_transaction(dep):
    old = dep.snapshot()
    tx = applied(dep)
    tx.decide()
    dep.reopen()
    outcome = replay_back(dep.journal, dep.store, dep.tree, tx.id)
    assert outcome.direction == "back"
    assert dep.snapshot() == old
    assert dep.journal.state.txs[tx.id].status == "rolled_back"


def test_replay_forward_finishes_open_transaction(dep):
    tx = applied(dep)
    new = dep.snapshot()
    dep.reopen()
    replay_forward(dep.journal, dep.store, dep.tree, tx.id)
    assert dep.snapshot() == new
    assert dep.journal.state.txs[tx.id].status == "committed"


def test_replay_forward_refuses_ended_transaction(dep):
    tx = applied(dep)
    tx.commit()
    with pytest.raises(ReplayRefusedError) as caught:
        replay_forward(dep.journal, dep.store, dep.tree, tx.id)
    assert "already ended" in str(caught.value)


def test_replay_forward_refuses_missing_post_image(dep):
    tx = applied(dep)
    post = next(p.post.blob for p in tx.planned if p.path == "app.yml")
    dep.store.remove(post)
    with pytest.raises(ReplayRefusedError) as caught:
        replay_forward(dep.journal, dep.store, dep.tree, tx.id)
    assert post in str(caught.value)


def test_replay_forward_refuses_transaction_stopped_between_batches(tmp_path):
    """Killed after its first batch of intents: the rest of the plan is not
    in the journal, so rolling forward would install part of the change."""
    txdriver.build_world(tmp_path)
    assert killed(driver("run", tmp_path, crash_at="tx.prepare.journaled"))
    state = tmp_path / ".updock"
    with Journal.open(state / "journal") as journal:
        (tx,) = [t.tx for t in journal.state.unfinished()]
        with pytest.raises(ReplayRefusedError) as caught:
            replay_forward(journal, BlobStore(state / "blobs"), tmp_path / "docker", tx)
    assert f"only {txdriver.BATCH_OPS} of its" in str(caught.value)


def test_replay_command_refuses_with_refused_exit_code(dep):
    tx = applied(dep)
    tx.commit()
    dep.journal.close()
    result = updock("journal", "replay", "--forward", tx.id, "--root", str(dep.root))
    assert result.returncode == exitcodes.REFUSED
    assert "already ended" in result.stderr
    dep.reopen()


def test_replay_command_rolls_back_by_hand(dep):
    old = dep.snapshot()
    tx = applied(dep)
    tx.decide()
    dep.journal.close()
    result = updock(
        "journal", "replay", "--back", tx.id, "--root", str(dep.root), "--no-services"
    )
    assert result.returncode == 0, result.stderr
    assert dep.snapshot() == old
    dep.reopen()


def test_undo_last_commit_restores_previous_tree_as_new_transaction(dep):
    old = dep.snapshot()
    first = applied(dep)
    first.commit(version="2")
    new = dep.snapshot()

    outcome = undo_last_commit(dep.journal, dep.store, dep.tree)

    assert dep.snapshot() == old
    state = dep.journal.state
    assert state.txs[outcome.tx].kind == "rollback"
    assert state.deployed_version == "1"
    assert state.last_committed_tx == outcome.tx
    undo_last_commit(dep.journal, dep.store, dep.tree)
    assert dep.snapshot() == new


def test_undo_commit_refuses_when_later_commit_touched_same_paths(dep):
    first = applied(dep, 2)
    first.commit(version="2")
    second = applied(dep, 3)
    second.commit(version="3")
    with pytest.raises(ReplayRefusedError) as caught:
        undo_commit(dep.journal, dep.store, dep.tree, first.id)
    assert second.id in str(caught.value)


def test_undo_with_failing_gate_undoes_the_undo(dep):
    first = applied(dep)
    first.commit(version="2")
    new = dep.snapshot()

    def gate(tx):
        raise RuntimeError("old version unhealthy")

    with pytest.raises(RolledBackError):
        undo_last_commit(dep.journal, dep.store, dep.tree, after_apply=gate)
    assert dep.snapshot() == new
    assert dep.journal.state.last_committed_tx == first.id


def test_undo_last_commit_refuses_when_nothing_committed(dep):
    with pytest.raises(NothingToUndoError) as caught:
        undo_last_commit(dep.journal, dep.store, dep.tree)
    assert "nothing to undo" in str(caught.value)
