"""``updock status``: version, last transaction, recovery, backups, and
drift between the deployed files and what the journal says was installed."""

from __future__ import annotations

import os

import pytest
from deploykit import (
    DEMO_NEW,
    DEMO_OLD,
    build_demo_release,
    explain,
    json_lines,
    killed,
    make_demo_deployment,
    serve_demo_release,
    snapshot,
    spawn,
    updock,
    wait_for,
)
from httpserver import MisbehavingServer

from cli import exitcodes


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return build_demo_release(tmp_path_factory.mktemp("demo-release"))


@pytest.fixture
def root(tmp_path):
    return make_demo_deployment(tmp_path / "deployment")


def run(root, *args: str, env: dict | None = None):
    return updock(*args, "--root", str(root), env=env)


def upgrade(root, manifest, env: dict | None = None):
    return run(
        root,
        "upgrade",
        "apply",
        "--manifest",
        str(manifest),
        "--yes",
        "--no-services",
        env=env,
    )


def status(root) -> tuple[str, dict]:
    """The text report and the JSON report (the text one runs first)."""
    text = run(root, "status", "--no-services")
    assert text.returncode == exitcodes.OK, explain(text)
    as_json = run(root, "status", "--no-services", "--json")
    assert as_json.returncode == exitcodes.OK, explain(as_json)
    return text.stdout, json_lines(as_json.stdout)[-1]


@pytest.fixture
def upgraded(root, release):
    result = upgrade(root, release.manifest_path)
    assert result.returncode == exitcodes.OK, explain(result)
    return root


def test_status_never_upgraded_reads_config_and_writes_nothing(root):
    before = snapshot(root)

    text, report = status(root)

    assert f"version:  {DEMO_OLD} (from config.toml)" in text
    assert "last transaction: none" in text
    assert (report["version"], report["version_source"]) == (DEMO_OLD, "config.toml")
    assert report["last_transaction"] is None and report["backups"] == []
    assert snapshot(root) == before


def test_status_after_upgrade_shows_version_transaction_and_backups(upgraded):
    text, report = status(upgraded)

    assert f"version:  {DEMO_NEW} (from journal)" in text
    last = report["last_transaction"]
    assert (last["kind"], last["from"], last["to"], last["status"]) == (
        "upgrade",
        DEMO_OLD,
        DEMO_NEW,
        "committed",
    )
    assert f"{last['tx']} upgrade {DEMO_OLD} -> {DEMO_NEW}: committed" in text
    (backup,) = report["backups"]
    assert backup["kind"] == "pre-upgrade" and backup["present"] is True
    assert backup["id"] in text
    assert "awaiting recovery: nothing" in text
    assert report["drift"] == [] and report["drift_checked"] > 0
    assert "drift: none" in text


@pytest.mark.parametrize(
    ("crash_at", "direction", "version"),
    [("tx.apply.op#2", "back", DEMO_OLD), ("tx.decided", "forward", DEMO_NEW)],
    ids=["rolled-back", "rolled-forward"],
)
def test_status_after_crash_recovers_and_reports_it(
    root, release, crash_at, direction, version
):
    crashed = upgrade(root, release.manifest_path, env={"UPDOCK_CRASH_AT": crash_at})
    assert killed(crashed), explain(crashed)

    first = run(root, "status", "--no-services", "--json")
    text, report = status(root)

    recovered = json_lines(first.stdout)[-1]["recovered_now"]
    assert [(r["kind"], r["direction"]) for r in recovered] == [("upgrade", direction)]
    tx = recovered[0]["tx"]
    assert "was interrupted" in recovered[0]["summary"]
    assert report["recovered_now"] == [] and report["pending_recovery"] == []
    assert report["last_recovery"]["tx"] == tx
    assert report["last_recovery"]["direction"] == direction
    assert f"last recovery: {tx} {direction}" in text
    assert report["version"] == version


def test_status_while_upgrade_runs_shows_it_in_progress(root, tmp_path):
    with MisbehavingServer() as server:
        slow = serve_demo_release(server, tmp_path / "served", "stall")
        child = spawn(
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
            wait_for(lambda: server.requests, "the upgrade's download request")

            result = run(root, "status", "--no-services", "--json")
            text = run(root, "status", "--no-services")

            server.released.set()
            child.communicate(timeout=120)
        finally:
            child.kill()
            child.wait()
    assert result.returncode == exitcodes.OK, explain(result)
    report = json_lines(result.stdout)[-1]
    (running,) = report["in_progress"]
    assert running["kind"] == "upgrade" and running["status"] == "open"
    assert report["lock_holder_pid"] == child.pid and report["pending_recovery"] == []
    assert f"busy: process {child.pid} holds the lock" in text.stdout
    assert child.returncode == exitcodes.OK


# -- drift ----------------------------------------------------------------------


def drift_of(root) -> dict[str, str]:
    text, report = status(root)
    found = {item["path"]: item["problem"] for item in report["drift"]}
    for path, problem in found.items():
        assert f"{problem}: {path}" in text
    return found


def test_status_drift_file_edited_in_place_listed(upgraded):
    """An edit that rewrites the file where it is (``>>``, ``write_text``, an
    editor keeping the inode) must show as drift."""
    with open(upgraded / "docker" / "front" / "index.html", "a") as page:
        page.write("<!-- edited by hand -->\n")

    assert drift_of(upgraded) == {"front/index.html": "changed"}


def test_status_drift_file_replaced_listed(upgraded):
    path = upgraded / "docker" / "config" / "app.conf"
    replacement = path.with_name("app.conf.new")
    replacement.write_text("edited by hand\n")
    os.chmod(replacement, path.stat().st_mode)
    os.replace(replacement, path)

    assert drift_of(upgraded) == {"config/app.conf": "changed"}


def test_status_drift_mode_change_listed(upgraded):
    os.chmod(upgraded / "docker" / "app" / "run.sh", 0o700)

    assert drift_of(upgraded) == {"app/run.sh": "mode changed"}


def test_status_drift_missing_and_reappeared_files_listed(upgraded):
    (upgraded / "docker" / "front" / "prices.txt").unlink()
    (upgraded / "docker" / "config" / "legacy.conf").write_text("back again\n")

    assert drift_of(upgraded) == {
        "front/prices.txt": "missing",
        "config/legacy.conf": "present (was deleted)",
    }


def test_status_drift_user_data_not_judged(upgraded):
    (upgraded / "docker" / "data" / "customers.csv").write_text("new rows\n")
    (upgraded / "docker" / "data" / "more.csv").write_text("more rows\n")

    assert drift_of(upgraded) == {}
