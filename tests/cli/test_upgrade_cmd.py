"""``updock upgrade check`` and ``upgrade apply`` run as real commands.

What must change nothing is checked on the whole deployment root (every
path, content and mode, updock's own folder included); bad and hostile
releases are refused with the right exit code and leave the deployment
byte for byte as it was.
"""

from __future__ import annotations

import json
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from deploykit import (
    DEMO_NEW,
    DEMO_OLD,
    build_demo_release,
    demo_release_tree,
    explain,
    in_parallel,
    json_lines,
    make_demo_deployment,
    serve_demo_release,
    snapshot,
    spawn,
    updock,
    wait_for,
)
from hostile import CASES, good_patch_zip, make_deployment, tree_digest, write_release
from httpserver import MisbehavingServer

from cli import exitcodes
from engine.errors import IntegrityError
from journal import Journal
from journal.records import ManifestAccepted


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return build_demo_release(tmp_path_factory.mktemp("demo-release"))


@pytest.fixture
def root(tmp_path):
    return make_demo_deployment(tmp_path / "deployment")


def run(root, *args: str, **kwargs):
    return updock(*args, "--root", str(root), **kwargs)


def apply(root, manifest, *extra: str):
    return run(root, "upgrade", "apply", "--manifest", str(manifest), *extra)


def installed(root, release) -> None:
    result = apply(root, release.manifest_path, "--yes", "--no-services")
    assert result.returncode == exitcodes.OK, explain(result)


# -- nothing changes ------------------------------------------------------------


def test_dry_run_never_upgraded_changes_nothing(root, release):
    before = snapshot(root)

    result = apply(root, release.manifest_path, "--dry-run")

    assert result.returncode == exitcodes.OK, explain(result)
    assert "dry run" in result.stderr and "nothing changed" in result.stderr
    assert not (root / ".updock").exists()
    assert snapshot(root) == before


def test_dry_run_json_reports_plan_and_changes_nothing(root, release):
    before = snapshot(root)

    result = apply(root, release.manifest_path, "--dry-run", "--json")

    assert result.returncode == exitcodes.OK, explain(result)
    lines = json_lines(result.stdout)
    final = lines[-1]
    assert final["event"] == "result" and final["outcome"] == "dry-run", final
    assert (final["current"], final["target"]) == (DEMO_OLD, DEMO_NEW)
    assert final["space_needed"] > 0 and final["changes"]
    assert any(
        line["event"] == "step_finished" and line["step"] == "download"
        for line in lines
    )
    assert snapshot(root) == before


def test_dry_run_after_upgrades_changes_nothing(root, release):
    installed(root, release)
    undo = run(root, "upgrade", "rollback", "--yes", "--no-services")
    assert undo.returncode == exitcodes.OK, explain(undo)
    before = snapshot(root)

    result = apply(root, release.manifest_path, "--dry-run")

    assert result.returncode == exitcodes.OK, explain(result)
    assert snapshot(root) == before


@pytest.mark.parametrize(
    "command",
    [["upgrade", "check"], ["upgrade", "apply", "--check"]],
    ids=["check", "apply-check"],
)
def test_check_upgrade_available_exits_20_and_changes_nothing(root, release, command):
    before = snapshot(root)

    result = run(root, *command, "--manifest", str(release.manifest_path))

    assert result.returncode == exitcodes.UPGRADE_AVAILABLE == 20, explain(result)
    assert "an upgrade is available" in result.stderr
    assert snapshot(root) == before


def test_check_up_to_date_exits_0_and_changes_nothing(root, release):
    installed(root, release)
    before = snapshot(root)

    for command in (["upgrade", "check"], ["upgrade", "apply", "--check"]):
        result = run(root, *command, "--manifest", str(release.manifest_path))
        assert result.returncode == exitcodes.OK, explain(result)
        assert "up to date" in result.stderr
    as_json = run(
        root, "upgrade", "check", "--json", "--manifest", str(release.manifest_path)
    )

    assert json_lines(as_json.stdout)[-1]["exit_code"] == exitcodes.OK
    assert snapshot(root) == before


def test_apply_without_terminal_or_yes_refused_changes_nothing(root, release):
    before = snapshot(root)

    result = apply(root, release.manifest_path, "--no-services")

    assert result.returncode == exitcodes.REFUSED, explain(result)
    assert "no terminal to ask on and no --yes" in result.stderr
    assert "--yes" in result.stderr.splitlines()[-1]  # the next step
    assert snapshot(root) == before


def test_apply_without_yes_up_to_date_exits_0(root, release):
    installed(root, release)
    before = snapshot(root)

    result = apply(root, release.manifest_path, "--no-services")

    assert result.returncode == exitcodes.OK, explain(result)
    assert snapshot(root) == before


# -- output -------------------------------------------------------------------


def test_apply_json_prints_json_lines_and_final_result(root, release):
    result = apply(root, release.manifest_path, "--yes", "--no-services", "--json")

    assert result.returncode == exitcodes.OK, explain(result)
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    final = lines[-1]
    assert final["event"] == "result" and final["outcome"] == "committed", final
    assert final["exit_code"] == 0 and final["tx"] and final["backup"]
    finished = {line["step"] for line in lines if line["event"] == "step_finished"}
    assert {"manifest", "download", "stage", "backup", "apply", "commit"} <= finished
    assert snapshot(root / "docker") == snapshot(demo_release_tree(root.parent))


def test_apply_json_failure_ends_with_failed_result(root, tmp_path):
    manifest = tmp_path / "broken.json"
    manifest.write_text("{not json", encoding="utf-8")

    result = apply(root, manifest, "--yes", "--no-services", "--json")

    assert result.returncode == exitcodes.BAD_INPUT, explain(result)
    final = json_lines(result.stdout)[-1]
    assert final["event"] == "result" and final["outcome"] == "failed"
    assert final["exit_code"] == exitcodes.BAD_INPUT and final["error"]


# -- two at once ----------------------------------------------------------------


def test_apply_twice_at_once_second_exits_locked_naming_holder(root, tmp_path):
    with MisbehavingServer() as server:
        # The first transfer stalls half way until released: the first run
        # holds the lock, downloading, while the second one starts.
        slow = serve_demo_release(server, tmp_path / "served", "stall")
        first = spawn(
            "upgrade",
            "apply",
            "--root",
            str(root),
            "--manifest",
            str(slow.manifest_path),
            "--yes",
            "--no-services",
        )
        try:
            wait_for(lambda: server.requests, "the first run's download request")

            second = apply(root, slow.manifest_path, "--yes", "--no-services")

            assert second.returncode == exitcodes.LOCKED, explain(second)
            assert str(first.pid) in second.stderr, second.stderr
            server.released.set()
            out, err = first.communicate(timeout=120)
        finally:
            first.kill()
            first.wait()
    assert first.returncode == exitcodes.OK, err
    assert snapshot(root / "docker") == snapshot(demo_release_tree(tmp_path))


# -- bad and hostile input ------------------------------------------------------


def test_apply_package_hash_mismatch_exits_integrity_tree_unchanged(
    root, release, tmp_path
):
    doc = json.loads(release.manifest_path.read_text())
    for entry in [*doc["platforms"].values(), doc["packages"]["full"]]:
        entry["url"] = str(release.full_path)
        entry["sha256" if "sha256" in entry else "hash"] = "sha256:" + "ab" * 32
    doc.pop("patch")
    manifest = tmp_path / "bad-hash.json"
    manifest.write_text(json.dumps(doc), encoding="utf-8")
    before = snapshot(root, skip={".updock", "cacheDuckData"})

    result = apply(root, manifest, "--yes", "--no-services")

    assert result.returncode == exitcodes.INTEGRITY, explain(result)
    assert snapshot(root, skip={".updock", "cacheDuckData"}) == before
    assert list((root / "cacheDuckData").rglob("*.tar.gz")) == []


@pytest.mark.parametrize(
    "text",
    ['{"version": "1.1.0"}', "[1, 2", '{"version": 7, "platforms": {}}'],
    ids=["no-package", "not-json", "mistyped"],
)
def test_apply_malformed_manifest_exits_bad_input(root, tmp_path, text):
    manifest = tmp_path / "manifest.json"
    manifest.write_text(text, encoding="utf-8")
    before = snapshot(root, skip={".updock"})

    result = apply(root, manifest, "--yes", "--no-services")

    assert result.returncode == exitcodes.BAD_INPUT, explain(result)
    assert result.stderr.startswith("error: ") or "\nerror: " in result.stderr
    assert snapshot(root, skip={".updock"}) == before


HOSTILE_SKIP = frozenset({".updock", "cacheDuckData"})


def _hostile_deployment(case, folder):
    """The hostile module's deployment, set up as the case asks: its trusted
    key in config.toml, its high-water mark in the journal."""
    hostile = case.build(folder / "release")
    root = make_deployment(folder / "deployment")
    if hostile.public_key:
        with open(root / "config.toml", "a", encoding="utf-8") as config:
            config.write(f'\n[signing]\npublic_key = "{hostile.public_key}"\n')
    if hostile.high_water:
        with Journal.open(root / ".updock" / "journal", writable=True) as journal:
            journal.append(
                ManifestAccepted(at=time.time(), tx=None, version=hostile.high_water)
            )
    if hostile.tree_setup is not None:
        hostile.tree_setup(root)
    return hostile, root


def test_apply_hostile_releases_refused_tree_unchanged(tmp_path):
    def one(index, case):
        hostile, root = _hostile_deployment(case, tmp_path / f"case{index}")
        before = tree_digest(root, HOSTILE_SKIP)
        result = apply(
            root,
            hostile.manifest,
            "--yes",
            "--no-services",
            "--strategy",
            hostile.strategy,
        )
        integrity = issubclass(hostile.family, IntegrityError)
        wanted = exitcodes.INTEGRITY if integrity else exitcodes.BAD_INPUT
        problems = []
        if result.returncode != wanted:
            problems.append(f"{case.name}: {explain(result)}")
        if tree_digest(root, HOSTILE_SKIP) != before:
            problems.append(f"{case.name}: the deployment changed")
        return problems

    problems = [p for found in in_parallel(one, CASES) for p in found]
    assert problems == [], "\n".join(problems)


def test_apply_signed_release_with_trusted_key_succeeds(tmp_path):
    """The hostile cases' good twin: a signed patch for the same deployment
    is installed (so the refusals above are not refusals of everything)."""
    key = Ed25519PrivateKey.generate()
    good = write_release(tmp_path / "release", good_patch_zip(), key=key)
    root = make_deployment(tmp_path / "deployment")
    with open(root / "config.toml", "a", encoding="utf-8") as config:
        config.write(f'\n[signing]\npublic_key = "{good.public_key}"\n')

    result = apply(root, good.manifest, "--yes", "--no-services")

    assert result.returncode == exitcodes.OK, explain(result)
    assert (
        root / "docker" / "app" / "server.py"
    ).read_bytes() == b"print('new server')\n"


def test_apply_timeout_bounds_a_stalled_server(root, release, tmp_path):
    """A server that goes silent mid-body fails the upgrade after about five
    tries of --timeout seconds each (not minutes), with the download exit
    code and the deployment as it was."""
    with MisbehavingServer() as server:
        server.files = {release.full_path.name: release.full_path.read_bytes()}
        server.behaviour = "stall"
        doc = json.loads(release.manifest_path.read_text())
        doc.pop("patch")
        for entry in [*doc["platforms"].values(), doc["packages"]["full"]]:
            entry["url"] = server.url(release.full_path.name)
        manifest = tmp_path / "stalling.json"
        manifest.write_text(json.dumps(doc), encoding="utf-8")
        before = snapshot(root, skip={".updock", "cacheDuckData"})

        started = time.monotonic()
        result = apply(root, manifest, "--yes", "--no-services", "--timeout", "0.5")
        took = time.monotonic() - started
        server.released.set()

    assert result.returncode == exitcodes.DOWNLOAD, explain(result)
    assert "timed out" in result.stderr
    assert took < 30, took
    assert snapshot(root, skip={".updock", "cacheDuckData"}) == before


@pytest.mark.parametrize("value", ["0", "-1"])
def test_apply_timeout_must_be_positive(root, release, value):
    before = snapshot(root, skip={".updock"})
    result = apply(root, release.manifest_path, "--yes", "--no-services", "--timeout", value)
    assert result.returncode == exitcodes.BAD_INPUT, explain(result)
    assert "--timeout" in result.stderr
    assert snapshot(root, skip={".updock"}) == before


def test_apply_with_unknown_installed_version_refused_then_forced_and_undone(
    root, release
):
    """Without a recorded version a deployed release is not upgraded blind;
    forced with --strategy full, its rollback makes the version unknown
    again instead of keeping the new one."""
    config = root / "config.toml"
    text = config.read_text()
    assert 'docker_service = "1.0.0.0"' in text
    config.write_text(text.replace('docker_service = "1.0.0.0"', ""))
    before = snapshot(root, skip={".updock", "cacheDuckData", "backups"})
    before_tree = snapshot(root / "docker")

    refused = apply(root, release.manifest_path, "--yes", "--no-services")
    assert refused.returncode == exitcodes.BAD_INPUT, explain(refused)
    assert "installed version is unknown" in refused.stderr
    assert "docker_service" in refused.stderr and "--strategy full" in refused.stderr
    assert snapshot(root, skip={".updock", "cacheDuckData", "backups"}) == before

    forced = apply(root, release.manifest_path, "--yes", "--no-services", "--strategy", "full")
    assert forced.returncode == exitcodes.OK, explain(forced)
    undone = run(root, "upgrade", "rollback", "--yes", "--no-services")
    assert undone.returncode == exitcodes.OK, explain(undone)
    assert snapshot(root / "docker") == before_tree
    assert "docker_service" not in config.read_text()
    again = apply(root, release.manifest_path, "--yes", "--no-services")
    assert again.returncode == exitcodes.BAD_INPUT, explain(again)


def test_rollback_with_nothing_committed_says_so(root):
    result = run(root, "upgrade", "rollback", "--yes", "--no-services")
    assert result.returncode == exitcodes.REFUSED, explain(result)
    assert "nothing to undo" in result.stderr and "\nnext: " in result.stderr


def test_manifest_of_unsupported_scheme_named(root):
    result = apply(root, "ftp://127.0.0.1/manifest.json", "--yes", "--no-services")
    assert result.returncode == exitcodes.BAD_INPUT, explain(result)
    assert "ftp:// is not supported" in result.stderr


def test_patch_through_a_deployed_symlink_names_the_deployment_fix(root, release, tmp_path):
    """The package is fine; the deployment holds a link where the patch
    writes: the next step says what to change in the deployment."""
    front = root / "docker" / "front"
    kept = tmp_path / "front-elsewhere"
    front.rename(kept)
    front.symlink_to(kept)
    before = snapshot(kept)

    result = apply(root, release.manifest_path, "--yes", "--no-services")

    assert result.returncode == exitcodes.BAD_INPUT, explain(result)
    assert "symbolic link" in result.stderr and "user_data" in result.stderr
    assert snapshot(kept) == before and front.is_symlink()
