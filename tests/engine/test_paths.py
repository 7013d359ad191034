"""Path-safety policies: each rule on its own, then against a real tree."""

from __future__ import annotations

import os

import pytest

from engine.paths import (
    AbsolutePathError,
    DiskKinds,
    EscapingPathError,
    LinkTargetEscapeError,
    ParentNotDirectoryError,
    ReservedPathError,
    RootPathError,
    SymlinkInPathError,
    UnsafePathError,
    check_link_target,
    check_parents,
    check_relative,
)


@pytest.mark.parametrize(
    ("path", "error"),
    [
        ("/etc/passwd", AbsolutePathError),
        ("../outside", EscapingPathError),
        ("a/../../outside", EscapingPathError),
        ("a/..", EscapingPathError),
        ("", RootPathError),
        (".", RootPathError),
        ("./", RootPathError),
        ("a/.updock-tx-1.tmp", ReservedPathError),
        ("nul\0byte", UnsafePathError),
    ],
)
def test_check_relative_refuses_unsafe_path(path, error):
    with pytest.raises(error) as caught:
        check_relative(path)
    assert repr(path) in str(caught.value)


def test_check_relative_normalises_dots_and_slashes():
    assert check_relative("./a//b/./c/") == "a/b/c"


def test_check_parents_refuses_symlinked_parent(tmp_path):
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "link")
    with pytest.raises(SymlinkInPathError) as caught:
        check_parents("link/file", DiskKinds(tmp_path))
    assert caught.value.link == "link"


def test_check_parents_refuses_file_parent(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ParentNotDirectoryError):
        check_parents("file/below", DiskKinds(tmp_path))


def test_check_parents_lists_missing_parents_outermost_first(tmp_path):
    (tmp_path / "a").mkdir()
    assert check_parents("a/b/c/d", DiskKinds(tmp_path)) == ["a/b", "a/b/c"]


def test_check_parents_uses_lookup_over_disk(tmp_path):
    """An earlier operation that turns a folder into a symlink counts."""
    (tmp_path / "a").mkdir()
    disk = DiskKinds(tmp_path)
    with pytest.raises(SymlinkInPathError):
        check_parents("a/x", lambda path: "symlink" if path == "a" else disk(path))


@pytest.mark.parametrize(
    ("path", "target"),
    [
        ("a", "/etc"),
        ("a", "../x"),
        ("d/e/link", "../../../x"),
        ("d/link", "x/../../.."),
    ],
)
def test_check_link_target_refuses_escape(path, target):
    with pytest.raises(LinkTargetEscapeError):
        check_link_target(path, target)


@pytest.mark.parametrize(
    ("path", "target"), [("a", "b"), ("d/link", "../top"), ("d/e/link", "../../d/f")]
)
def test_check_link_target_accepts_inside(path, target):
    check_link_target(path, target)
