"""Transactions on real trees: apply, commit, roll back, refuse, idempotence."""

from __future__ import annotations

import errno
import os
import stat

import pytest
from txdeploy import Deployment

from engine import transaction
from engine.errors import BadInputError, RefusedError, RolledBackError
from engine.ops import (
    DuplicatePathError,
    MissingSourceError,
    MissingTreeError,
    Op,
    OverlappingOpsError,
    WrongKindError,
)
from engine.paths import LinkTargetEscapeError, RootPathError, SymlinkInPathError
from engine.placement import DIFFERENT, compare, redo_all, undo_all
from engine.recovery import intents_of
from journal.verify import DanglingBlobError, verify_journal


@pytest.fixture
def dep(tmp_path):
    dep = Deployment.create(tmp_path)
    dep.write("a.txt", "old a\n")
    dep.write("b.txt", "old b\n", 0o600)
    dep.write("conf/x.conf", "x = 1\n")
    (dep.tree / "conf" / "empty" / "deeper").mkdir(parents=True)
    os.chmod(dep.tree / "conf" / "empty", 0o700)
    os.symlink("x.conf", dep.tree / "conf" / "current")
    dep.write("data/user.db", "user data\n")
    dep.write("bin/run.sh", "#!/bin/sh\n", 0o644)
    yield dep
    dep.journal.close()


def every_kind(dep: Deployment) -> list[Op]:
    dep.write("a.txt", "new a\n", staged=True)
    dep.write("web/index.html", "<p>new</p>\n", staged=True)
    (dep.staging / "web" / "img").mkdir()
    blob = dep.store.put_bytes(b"from the store\n").digest
    return [
        Op.put_file("a.txt", source=dep.staging / "a.txt", mode=0o640),
        Op.put_file("lib/new/deep.txt", blob=blob, mode=0o644),
        Op.delete_file("b.txt"),
        Op.delete_tree("conf"),
        Op.replace_dir("web", source=dep.staging / "web"),
        Op.make_dir("cache", 0o700),
        Op.set_mode("bin/run.sh", 0o755),
        Op.make_symlink("latest", "web/index.html"),
    ]


def run(dep: Deployment, ops: list[Op], version: str = "2"):
    tx = dep.begin(from_version="1", to_version=version)
    tx.plan(ops)
    tx.check_space()
    tx.prepare()
    tx.apply()
    return tx


def test_commit_every_kind_gives_new_tree(dep):
    old = dep.snapshot()
    tx = run(dep, every_kind(dep))
    tx.commit(version="2")

    tree = dep.snapshot()
    assert tree["a.txt"][1] == 0o640 and tree["a.txt"] != old["a.txt"]
    assert tree["lib/new/deep.txt"][0] == "file"
    assert tree["lib"] == ("dir", 0o755)
    for gone in ("b.txt", "conf", "conf/x.conf", "conf/empty/deeper"):
        assert gone not in tree
    assert tree["web/img"] == ("dir", 0o755)
    assert tree["cache"] == ("dir", 0o700)
    assert tree["bin/run.sh"][1] == 0o755
    assert tree["latest"] == ("symlink", "web/index.html")
    assert tree["data/user.db"] == old["data/user.db"]
    assert dep.journal.state.txs[tx.id].status == "committed"
    assert dep.journal.state.deployed_version == "2"
    assert not (dep.root / ".updock" / "txn" / tx.id).exists()


def test_roll_back_every_kind_restores_old_tree_exactly(dep):
    old = dep.snapshot()
    tx = run(dep, every_kind(dep))
    assert dep.snapshot() != old

    tx.roll_back("health gate failed")

    assert dep.snapshot() == old
    assert dep.events(tx.id)[-1] == "RolledBack"
    assert not list(dep.tree.rglob(".updock-*"))


def test_redo_and_undo_twice_give_same_tree(dep):
    """Every operation tells from the disk whether it already ran."""
    old = dep.snapshot()
    tx = run(dep, every_kind(dep))
    new = dep.snapshot()
    intents = intents_of(dep.journal.tx_records(tx.id))
    ws = tx._ws

    assert redo_all(ws, intents, "test.redo") == 0
    assert dep.snapshot() == new
    assert undo_all(ws, intents, "test.undo") > 0
    assert dep.snapshot() == old
    assert undo_all(ws, intents, "test.undo") == 0
    assert dep.snapshot() == old
    assert redo_all(ws, intents, "test.redo") > 0
    assert dep.snapshot() == new
    assert redo_all(ws, intents, "test.redo") == 0
    assert dep.snapshot() == new


def test_restore_never_shares_an_inode_between_paths(dep):
    """Two files with the same content come back as two inodes."""
    dep.write("twin1", "same\n", 0o600)
    dep.write("twin2", "same\n", 0o644)
    old = dep.snapshot()
    tx = run(dep, [Op.delete_file("twin1"), Op.delete_file("twin2")])
    tx.roll_back("test")

    assert dep.snapshot() == old
    one, two = os.stat(dep.tree / "twin1"), os.stat(dep.tree / "twin2")
    assert one.st_ino != two.st_ino
    os.chmod(dep.tree / "twin1", 0o400)
    assert stat.S_IMODE(os.stat(dep.tree / "twin2").st_mode) == 0o644


def test_swap_tree_replaces_all_but_preserved_entries(dep):
    top = dep.staging / "top"
    dep.write("top/a.txt", "swapped a\n", staged=True)
    dep.write("top/web/index.html", "swapped\n", staged=True)
    (top / "data").mkdir()
    dep.write("top/data/shipped-default", "must not land\n", staged=True)
    old = dep.snapshot()

    tx = run(dep, [Op.swap_tree(top, preserve={"data"})])
    tx.commit()

    tree = dep.snapshot()
    assert sorted(k for k in tree if "/" not in k and k) == ["a.txt", "data", "web"]
    assert tree["data/user.db"] == old["data/user.db"]
    assert "data/shipped-default" not in tree


def test_make_dir_on_existing_folder_keeps_content(dep):
    tx = run(dep, [Op.make_dir("conf", 0o750)])
    tx.commit()
    assert stat.S_IMODE(os.stat(dep.tree / "conf").st_mode) == 0o750
    assert (dep.tree / "conf" / "x.conf").read_text() == "x = 1\n"


def test_unchanged_file_is_left_alone(dep):
    dep.write("a.txt", "old a\n", staged=True)
    before = os.stat(dep.tree / "a.txt").st_ino
    tx = run(dep, [Op.put_file("a.txt", source=dep.staging / "a.txt")])
    tx.commit()
    assert os.stat(dep.tree / "a.txt").st_ino == before


@pytest.mark.parametrize(
    ("make_ops", "error"),
    [
        (lambda d: [Op.delete_file("/etc/passwd")], BadInputError),
        (lambda d: [Op.delete_file("../outside")], BadInputError),
        (lambda d: [Op.delete_tree(".")], RootPathError),
        (lambda d: [Op.make_symlink("l", "../../etc")], LinkTargetEscapeError),
        (
            lambda d: [Op.delete_file("a.txt"), Op.delete_file("a.txt")],
            DuplicatePathError,
        ),
        (
            lambda d: [Op.delete_tree("conf"), Op.make_dir("conf/sub")],
            OverlappingOpsError,
        ),
        (lambda d: [Op.delete_file("conf")], WrongKindError),
        (lambda d: [Op.set_mode("missing", 0o600)], WrongKindError),
        (
            lambda d: [Op.put_file("n", source=d.staging / "nothing")],
            MissingSourceError,
        ),
        (lambda d: [Op.put_file("n", blob="0" * 64)], MissingSourceError),
        (lambda d: [Op.delete_file("conf/current/x")], BadInputError),
    ],
)
def test_plan_refuses_before_any_change(dep, make_ops, error):
    old = dep.snapshot()
    tx = dep.begin()
    with pytest.raises(error):
        tx.plan(make_ops(dep))
    assert dep.snapshot() == old
    assert dep.journal.state.txs[tx.id].status == "aborted"


def test_plan_refuses_writing_through_symlinked_folder(dep, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, dep.tree / "escape")
    dep.write("evil", "x", staged=True)
    tx = dep.begin()
    with pytest.raises(SymlinkInPathError) as caught:
        tx.plan([Op.put_file("escape/evil", source=dep.staging / "evil")])
    assert "escape/evil" in str(caught.value)
    assert list(outside.iterdir()) == []


def test_plan_refuses_staged_symlink_leaving_tree(dep):
    (dep.staging / "pkg").mkdir()
    os.symlink("../../../../etc/passwd", dep.staging / "pkg" / "passwd")
    tx = dep.begin()
    with pytest.raises(LinkTargetEscapeError):
        tx.plan([Op.replace_dir("pkg", source=dep.staging / "pkg")])


def test_plan_refuses_fifo_in_tree(dep):
    os.mkfifo(dep.tree / "conf" / "pipe")
    tx = dep.begin()
    with pytest.raises(BadInputError) as caught:
        tx.plan([Op.delete_tree("conf")])
    assert "pipe" in str(caught.value)


def test_apply_failure_rolls_back_and_names_path_and_errno(dep, monkeypatch):
    """A fault injected into rename(2) at the third placement; the real
    errno cases (full disk, read-only mount, busy mount point) are in
    test_disk_full.py, which needs root to mount filesystems."""
    old = dep.snapshot()
    tx = dep.begin()
    tx.plan(every_kind(dep))
    tx.prepare()
    real_rename, calls = os.rename, []

    def failing_rename(src, dst, *args, **kwargs):
        calls.append(dst)
        if len(calls) == 3:
            raise OSError(errno.EIO, "Input/output error", str(dst))
        return real_rename(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "rename", failing_rename)
    with pytest.raises(RolledBackError) as caught:
        tx.apply()
    monkeypatch.undo()

    message = str(caught.value)
    assert "EIO" in message and "[Errno 5]" in message and str(calls[2]) in message
    assert dep.snapshot() == old
    assert dep.journal.state.txs[tx.id].status == "rolled_back"


def test_decided_transaction_refuses_roll_back(dep):
    tx = run(dep, every_kind(dep))
    tx.decide()
    with pytest.raises(RefusedError):
        tx.roll_back("too late")
    tx.commit()


def test_exception_inside_with_block_rolls_back(dep):
    old = dep.snapshot()
    with pytest.raises(RuntimeError), dep.begin() as tx:
        tx.plan(every_kind(dep))
        tx.prepare()
        tx.apply()
        raise RuntimeError("services did not come up")
    assert dep.snapshot() == old
    assert dep.journal.state.txs[tx.id].status == "rolled_back"


def test_abort_after_prepare_changes_nothing(dep):
    old = dep.snapshot()
    tx = dep.begin()
    tx.plan(every_kind(dep))
    tx.prepare()
    tx.abort("dry run")
    assert dep.snapshot() == old
    assert dep.events(tx.id)[-1] == "Aborted"


def test_prepare_journals_intents_of_a_single_batch(dep):
    tx = dep.begin()
    planned = tx.plan(every_kind(dep))
    tx.prepare()
    intents = intents_of(dep.journal.tx_records(tx.id))
    assert [i.path for i in intents] == [p.path for p in planned]
    assert {i.planned for i in intents} == {len(planned)}
    by_path = {i.path: i for i in intents}
    assert by_path["conf"].pre.kind == "tree" and by_path["conf"].post.kind == "absent"
    assert by_path["b.txt"].pre.mode == 0o600 and by_path["b.txt"].pre.blob
    assert by_path["lib"].kind == "make_dir"
    for digest in (by_path["a.txt"].pre.blob, by_path["a.txt"].post.blob):
        dep.store.verify(digest)


def test_intents_are_journaled_batch_by_batch(dep, monkeypatch):
    monkeypatch.setattr(transaction, "BATCH_OPS", 3)
    batches, append_many = [], dep.journal.append_many

    def recording(events):
        batches.append([type(e).__name__ for e in events])
        return append_many(events)

    monkeypatch.setattr(dep.journal, "append_many", recording)
    tx = dep.begin()
    planned = tx.plan(every_kind(dep))
    tx.prepare()
    assert [len(b) for b in batches] == [3]
    tx.apply()
    sizes = [len(b) for b in batches if b[0] == "OpIntended"]
    assert sizes == [3] * (len(planned) // 3) + [len(planned) % 3] * (
        len(planned) % 3 > 0
    )
    assert len(intents_of(dep.journal.tx_records(tx.id))) == len(planned)


def shared_inodes(dep: Deployment) -> list[str]:
    """Deployed files whose inode is also a blob's."""
    store = {
        (info.st_dev, info.st_ino)
        for path in dep.store.root.rglob("*")
        if path.is_file() and (info := path.stat())
    }
    return [
        str(path.relative_to(dep.tree))
        for path in dep.tree.rglob("*")
        if path.is_file()
        and not path.is_symlink()
        and (path.stat().st_dev, path.stat().st_ino) in store
    ]


@pytest.mark.parametrize("ending", ["commit", "roll_back", "abort"])
def test_transaction_end_leaves_no_file_sharing_inode_with_store(dep, ending):
    """An edit in place of a deployed file must never reach a stored image."""
    dep.write("same.txt", "unchanged\n")
    dep.write("same.txt", "unchanged\n", staged=True)
    dep.write("moved-from.txt", "moved\n")
    for name, text in (("twin1", "twin\n"), ("twin2", "twin\n"), ("moved-to", "moved\n")):
        dep.write(name, text, staged=True)
    ops = [
        *every_kind(dep),
        Op.put_file("same.txt", source=dep.staging / "same.txt"),
        Op.put_file("twin1", source=dep.staging / "twin1"),
        Op.put_file("twin2", source=dep.staging / "twin2"),
        Op.put_file("moved-to", source=dep.staging / "moved-to"),
        Op.delete_file("moved-from.txt"),
    ]
    tx = dep.begin()
    tx.plan(ops)
    tx.prepare()
    if ending == "abort":
        tx.abort("test")
    else:
        tx.apply()
        getattr(tx, ending)(*(() if ending == "commit" else ("test",)))
    assert shared_inodes(dep) == []


def test_edit_in_place_after_commit_is_drift_not_a_changed_image(dep):
    tx = run(dep, every_kind(dep))
    tx.commit()
    with open(dep.tree / "a.txt", "a") as file:
        file.write("edited by hand\n")

    post = next(p.post for p in tx.planned if p.path == "a.txt")
    assert compare(tx._ws, dep.tree / "a.txt", post) == DIFFERENT
    verify_journal(dep.root / ".updock" / "journal", dep.store)


def test_plan_refuses_missing_tree(tmp_path):
    dep = Deployment.create(tmp_path)
    dep.tree.rmdir()
    tx = dep.begin()
    with pytest.raises(MissingTreeError):
        tx.plan([Op.make_dir("a")])
    assert not dep.tree.exists()
    dep.journal.close()


def test_roll_back_gives_files_their_own_inodes_back(dep):
    """An undo moves each owned pre-image back by rename: the files get
    their very inodes back, the store drops those blobs, and the journal
    still verifies (a rolled-back transaction needs no pre-image)."""
    dep.write("a.txt", "new a\n", staged=True)
    before = {name: os.stat(dep.tree / name).st_ino for name in ("a.txt", "b.txt")}
    old = dep.snapshot()
    tx = run(dep, [Op.put_file("a.txt", source=dep.staging / "a.txt"),
                   Op.delete_file("b.txt")])
    pres = [record.pre.blob for record in intents_of(dep.journal.tx_records(tx.id))]
    assert all(record.pre_owned for record in intents_of(dep.journal.tx_records(tx.id)))

    tx.roll_back("test")

    assert dep.snapshot() == old
    after = {name: os.stat(dep.tree / name).st_ino for name in ("a.txt", "b.txt")}
    assert after == before
    assert not any(dep.store.has(digest) for digest in pres)
    verify_journal(dep.root / ".updock" / "journal", dep.store)


def test_roll_back_of_twins_one_replaced_one_not(dep, monkeypatch):
    """Two files of equal content share one owned blob: when the second
    operation fails, the file never replaced keeps its inode, the replaced
    one comes back as another inode, and no tree file is left sharing an
    inode with the store."""
    dep.write("twin1", "same\n", 0o600)
    dep.write("twin2", "same\n", 0o644)
    dep.write("twin1", "changed\n", staged=True)
    old = dep.snapshot()
    second = os.stat(dep.tree / "twin2").st_ino
    real_realize = transaction.realize

    def failing(ws, record, image, **kwargs):
        if record.path == "twin2":
            raise OSError(errno.EIO, "injected", str(ws.tree / record.path))
        return real_realize(ws, record, image, **kwargs)

    monkeypatch.setattr(transaction, "realize", failing)
    with pytest.raises(RolledBackError):
        run(dep, [Op.put_file("twin1", source=dep.staging / "twin1"),
                  Op.delete_file("twin2")])

    assert dep.snapshot() == old
    one, two = os.stat(dep.tree / "twin1"), os.stat(dep.tree / "twin2")
    assert two.st_ino == second and one.st_ino != second
    assert one.st_nlink == 1 and two.st_nlink == 1
    verify_journal(dep.root / ".updock" / "journal", dep.store)


def test_verify_still_wants_committed_pre_images(dep):
    """A committed transaction may be undone later: its owned pre-images
    must stay, and a missing one is reported."""
    dep.write("a.txt", "new a\n", staged=True)
    tx = run(dep, [Op.put_file("a.txt", source=dep.staging / "a.txt")])
    tx.commit(version="2")
    (record,) = intents_of(dep.journal.tx_records(tx.id))
    assert record.pre_owned
    os.unlink(dep.store.path_of(record.pre.blob))

    with pytest.raises(DanglingBlobError):
        verify_journal(dep.root / ".updock" / "journal", dep.store)


def test_files_with_other_names_are_stored_as_copies(dep, tmp_path):
    """A file with a hard link elsewhere (outside the tree, or a twin in the
    user data) can be edited through that name after the upgrade: its
    pre-image must be a private copy, so the rollback still restores the
    old bytes and the journal still verifies."""
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    os.link(dep.tree / "a.txt", outside / "a-link")
    os.link(dep.tree / "conf" / "x.conf", dep.tree / "data" / "twin.conf")
    dep.write("a.txt", "new a\n", staged=True)
    old = dep.snapshot()
    tx = run(dep, [Op.put_file("a.txt", source=dep.staging / "a.txt"),
                   Op.delete_tree("conf")])
    intents = intents_of(dep.journal.tx_records(tx.id))
    assert not any(record.pre_owned for record in intents)
    with open(outside / "a-link", "a") as edit:
        edit.write("edited through the outside link\n")
    with open(dep.tree / "data" / "twin.conf", "a") as edit:
        edit.write("edited through the twin\n")
    verify_journal(dep.root / ".updock" / "journal", dep.store)

    tx.roll_back("test")

    restored = dep.snapshot()
    for path in ("a.txt", "conf/x.conf"):
        assert restored[path] == old[path], path
    verify_journal(dep.root / ".updock" / "journal", dep.store)
