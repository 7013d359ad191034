"""Patch semantics: order, overlaps, whole-component matching, user data."""

from __future__ import annotations

import pytest

from engine.extract import PatchContentError, Staged, StagedFile
from engine.manifest import FileSet, Operations
from engine.patchplan import PlannedChange, plan_full, plan_patch


def staged(files=(), dirs=()) -> Staged:
    return Staged(
        root=None,
        files={path: StagedFile(1, 0o640) for path in files},
        dirs={path: 0o750 for path in dirs},
        total_bytes=len(files),
    )


def ops(replace_files=(), replace_dirs=(), delete_files=(), delete_dirs=()):
    return Operations(
        replace=FileSet(list(replace_files), list(replace_dirs)),
        delete=FileSet(list(delete_files), list(delete_dirs)),
    )


def test_plan_patch_orders_deletes_then_dirs_then_files():
    plan = plan_patch(
        staged(["conf/a.ini", "web/index.html"], ["web"]),
        ops(["conf/a.ini"], ["web/"], ["old.txt"], ["legacy/"]),
    )

    assert plan.changes == (
        PlannedChange("delete_file", "old.txt"),
        PlannedChange("delete_tree", "legacy"),
        PlannedChange("replace_dir", "web", "web", 0o750),
        PlannedChange("put_file", "conf/a.ini", "conf/a.ini", 0o640),
    )


def test_plan_patch_path_in_replace_and_delete_ends_up_replaced():
    plan = plan_patch(
        staged(["conf/a.ini", "web/x.js"], ["web"]),
        ops(["conf/a.ini"], ["web"], ["conf/a.ini", "web/x.js"], ["web/"]),
    )

    assert [c.kind for c in plan.changes] == ["replace_dir", "put_file"]
    assert len(plan.warnings) == 3


def test_plan_patch_replaced_dir_matches_whole_components():
    plan = plan_patch(
        staged(["front/a.js", "frontend/b.js"], ["front"]),
        ops(["frontend/b.js"], ["front"], ["frontend-old.txt"]),
    )

    assert [(c.kind, c.path) for c in plan.changes] == [
        ("delete_file", "frontend-old.txt"),
        ("replace_dir", "front"),
        ("put_file", "frontend/b.js"),
    ]


def test_plan_patch_nested_replacements_collapse_to_outermost():
    plan = plan_patch(
        staged(["web/a/b.js"], ["web", "web/a"]),
        ops(["web/a/b.js"], ["web/a", "web"]),
    )

    assert [(c.kind, c.path) for c in plan.changes] == [("replace_dir", "web")]


def test_plan_patch_user_data_skipped_at_top_level_only():
    plan = plan_patch(
        staged(["data/seed.sql", "app/web/data/x.json"]),
        ops(
            ["data/seed.sql", "app/web/data/x.json"], [], ["upload/a.png"], ["uv_cache"]
        ),
    )

    assert [(c.kind, c.path) for c in plan.changes] == [
        ("put_file", "app/web/data/x.json")
    ]
    assert [s.path for s in plan.skipped] == [
        "data/seed.sql",
        "upload/a.png",
        "uv_cache",
    ]


def test_plan_patch_custom_user_data_list():
    plan = plan_patch(staged(["data/x"]), ops(["data/x"]), user_data=["media"])
    assert [c.path for c in plan.changes] == ["data/x"]


def test_plan_patch_missing_from_package_refused():
    with pytest.raises(PatchContentError):
        plan_patch(staged([]), ops(["app/x"]))
    with pytest.raises(PatchContentError):
        plan_patch(staged([]), ops(replace_dirs=["../x"]))


def test_plan_full_swaps_tree_keeping_user_data():
    plan = plan_full(staged(["app/x", "data/initial.sql"], ["app", "data"]))

    (change,) = plan.changes
    assert change.kind == "swap_tree" and change.path == ""
    assert {"data", "upload", "uv_cache"} <= change.preserve
    assert [s.path for s in plan.skipped] == ["data"]
