"""Upgrades of a real compose deployment on a real Docker engine, end to end
through the ``updock`` command.

Each test builds its own releases (compose file, a ``front/`` folder served
by busybox httpd on 127.0.0.1, and image tars where a release ships an
image), installs release 1, starts it, upgrades it by patch with
``updock upgrade apply``, and then looks at what really runs: the page an
HTTP client reads, the containers and image tags in the engine, the
deployed tree (whole: every path, mode and content hash) and the journal.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest
from deploykit import assert_same_tree, explain, killed, snapshot
from dockerfixtures import (  # noqa: F401 - fixtures
    compose_factory,
    docker_engine,
    free_port,
    image_factory,
)
from upgradefixtures_docker import (  # noqa: F401 - fixture
    ARCH,
    HTTPD,
    NEW,
    OLD,
    docker_deployment_fixture,
    final_result,
)

from cli import exitcodes

pytestmark = pytest.mark.docker

SERVICE_STEPS = (
    "images_loaded",
    "services_stopping",
    "services_stopped",
    "op_applied",
    "services_started",
    "health_verdict",
    "committed",
)


def web_release(d, name: str, tag: str, page: str, **web_extra) -> Path:
    """A release tree whose web service runs ``<repo>:<tag>`` and serves
    ``page`` as index.html."""
    return d.tree(
        name,
        {"web": d.web(tag, **web_extra)},
        {"front/index.html": page, "front/about.html": "about\n"},
    )


def installed_and_serving(d, tree, page: str) -> None:
    d.install(tree)
    d.start()
    assert d.wait_page(page) == page


def test_upgrade_patch_serves_new_content_and_journals_service_steps(
    docker_deployment,
):
    d = docker_deployment
    d.build("1.0", HTTPD)
    old = web_release(d, "r1", "1.0", "release one\n")
    new = web_release(d, "r2", "2.0", "release two\n")
    (new / "front" / "news.html").write_text("new in two\n", encoding="utf-8")
    new_id = d.pack(new, "web", "2.0", HTTPD, 'LABEL release="2"')
    manifest = d.release(old, new)
    installed_and_serving(d, old, "release one\n")

    result = d.apply(manifest)

    assert result.returncode == exitcodes.OK, explain(result)
    final = final_result(result)
    assert (final["outcome"], final["action"], final["target"]) == (
        "committed",
        "patch",
        NEW,
    )
    assert d.page() == "release two\n"
    assert d.page("news.html") == "new in two\n"
    assert d.containers()["web"].image_id == new_id == d.image_id("2.0")
    assert d.image_id(f"2.0-{ARCH}") == new_id
    assert d.kept_tags() == []
    assert_same_tree(d.tree_snapshot(), snapshot(new), "deployed tree")

    events = d.tx_events(final["tx"])
    kinds = [e["type"] for e in events]
    positions = [kinds.index(step) for step in SERVICE_STEPS]
    assert positions == sorted(positions), kinds
    by_kind = {e["type"]: e for e in events}
    for step in ("images_loaded", "services_stopped", "services_started"):
        assert by_kind[step]["seconds"] > 0, by_kind[step]
    verdict = by_kind["health_verdict"]
    assert verdict["passed"] and verdict.get("phase", "upgrade") == "upgrade"
    assert verdict["seconds"] > 0
    assert [(v["service"], v["passed"]) for v in verdict["services"]] == [("web", True)]
    assert by_kind["images_loaded"]["previous"] == {d.ref("1.0"): d.image_id("1.0")}
    assert d.ref("2.0") in by_kind["images_loaded"]["images"]
    assert by_kind["services_stopped"]["services"] == ["web"]
    offsets = [e["offset"] for e in events]
    assert offsets == sorted(offsets)

    table = d.updock("journal", "inspect", "--tx", final["tx"])
    assert table.returncode == exitcodes.OK, explain(table)
    timed = [line.split() for line in table.stdout.splitlines()]
    shown = {cols[2] for cols in timed if len(cols) > 2 and cols[0].startswith("+")}
    assert set(SERVICE_STEPS) <= shown, table.stdout


@pytest.mark.parametrize("broken", ["image", "command"])
def test_upgrade_never_healthy_rolls_back_to_old_content_and_tags(
    docker_deployment, broken
):
    """Release 2 ships a new image under the tag release 1 runs; either that
    image serves nothing (``image``) or the new compose file runs httpd on
    the wrong port (``command``): the wget check never passes."""
    d = docker_deployment
    old_id = d.build("stable", HTTPD)
    old = web_release(d, "r1", "stable", "release one\n")
    if broken == "image":
        new = web_release(d, "r2", "stable", "release two\n")
        d.pack(new, "web", "stable", 'CMD ["sleep", "3600"]')
    else:
        wrong_port = ["httpd", "-f", "-p", "81", "-h", "/www"]
        new = web_release(d, "r2", "stable", "release two\n", command=wrong_port)
        d.pack(new, "web", "stable", HTTPD, 'LABEL release="2"')
    manifest = d.release(old, new)
    installed_and_serving(d, old, "release one\n")

    result = d.apply(manifest)

    assert result.returncode == exitcodes.ROLLED_BACK, explain(result)
    error = final_result(result)["error"]
    assert "rolled back" in error and "web FAILED" in error, error
    assert "web FAILED" in result.stderr, explain(result)
    assert d.page() == "release one\n"
    assert d.image_id("stable") == old_id
    assert d.containers()["web"].image_id == old_id
    assert d.repo_tags() == {d.ref("stable")}
    assert_same_tree(d.tree_snapshot(), snapshot(old), "tree after the rollback")

    (tx,) = d.transactions()
    assert tx["status"] == "rolled_back", tx
    verdicts = [e for e in d.tx_events(tx["tx"]) if e["type"] == "health_verdict"]
    assert [(v.get("phase", "upgrade"), v["passed"]) for v in verdicts] == [
        ("upgrade", False),
        ("rollback", True),
    ]
    assert d.status()["pending_recovery"] == []


# Fails its check twice (a probe counter kept in the container), then serves.
# ``$$`` is compose's escape for a literal ``$``.
FLAKY_PROBE = (
    "n=$$(( $$(cat /tmp/probes 2>/dev/null || echo 0) + 1 )); "
    "echo $$n > /tmp/probes; "
    "[ $$n -gt 2 ] && wget -q -O /dev/null http://127.0.0.1:80/"
)


def mixed_release(d, name: str, release: str, ports: dict[str, int]) -> Path:
    """A one-shot init service, a slow service without a healthcheck that
    waits for it, and a service whose check fails twice before it passes.
    ``release`` goes into every service's environment, so an upgrade
    recreates every container."""
    common = {
        "image": "updock-test/busybox:base",
        "init": True,
        "environment": {"RELEASE": release},
    }
    serve = ["httpd", "-f", "-p", "80", "-h", "/www"]
    services = {
        "init": {**common, "command": ["sh", "-c", "echo prepared $$RELEASE"]},
        "slow": {
            **common,
            "command": ["sh", "-c", "sleep 3 && exec " + " ".join(serve)],
            "volumes": ["./front:/www:ro"],
            "ports": [f"127.0.0.1:{ports['slow']}:80"],
            "depends_on": {"init": {"condition": "service_completed_successfully"}},
        },
        "flaky": {
            **common,
            "command": serve,
            "volumes": ["./front:/www:ro"],
            "ports": [f"127.0.0.1:{ports['flaky']}:80"],
            "healthcheck": {
                "test": ["CMD-SHELL", FLAKY_PROBE],
                "interval": "1s",
                "timeout": "2s",
                "retries": 1,
            },
        },
    }
    return d.tree(name, services, {"front/index.html": f"release {release}\n"})


def test_upgrade_one_shot_slow_and_flaky_services_commit(docker_deployment):
    d = docker_deployment
    ports = {"slow": free_port(), "flaky": free_port()}
    old = mixed_release(d, "r1", "1", ports)
    new = mixed_release(d, "r2", "2", ports)
    manifest = d.release(old, new)
    d.install(old)
    d.start()
    flaky_before = d.containers()["flaky"].id

    result = d.apply(manifest)

    assert result.returncode == exitcodes.OK, explain(result)
    final = final_result(result)
    assert final["outcome"] == "committed"
    events = d.tx_events(final["tx"])
    kinds = [e["type"] for e in events]
    assert "rolled_back" not in kinds and kinds[-1] == "committed", kinds
    (verdict,) = [e for e in events if e["type"] == "health_verdict"]
    reasons = {v["service"]: (v["passed"], v["reason"]) for v in verdict["services"]}
    assert reasons["init"] == (True, "completed (exit code 0)"), reasons
    assert reasons["slow"][0] and "no healthcheck" in reasons["slow"][1], reasons
    assert reasons["flaky"] == (True, "healthy"), reasons

    containers = d.containers()
    assert (containers["init"].status, containers["init"].exit_code) == ("exited", 0)
    flaky = containers["flaky"]
    assert flaky.id != flaky_before  # recreated: its probe count began at 0
    probes = d.engine.client.containers.get(flaky.id).exec_run(["cat", "/tmp/probes"])
    assert int(probes.output) >= 3, probes
    assert d.wait_page("release 2\n", port=ports["slow"]) == "release 2\n"
    assert d.page(port=ports["flaky"]) == "release 2\n"
    assert_same_tree(d.tree_snapshot(), snapshot(new), "deployed tree")


@pytest.mark.parametrize(
    "step",
    [
        "services.stopped",
        "tx.apply.journaled",
        "services.started",
    ],
)
def test_upgrade_killed_while_services_down_recovers_old_release(
    docker_deployment, step
):
    """SIGKILL at ``step``, between the stop and the health gate; the next
    ``updock status`` rolls the files back, restores the image tag, and
    brings release 1 up again."""
    d = docker_deployment
    old_id = d.build("stable", HTTPD)
    old = web_release(d, "r1", "stable", "release one\n")
    new = web_release(d, "r2", "stable", "release two\n")
    new_id = d.pack(new, "web", "stable", HTTPD, 'LABEL release="2"')
    manifest = d.release(old, new)
    installed_and_serving(d, old, "release one\n")

    crashed = d.apply(manifest, env={"UPDOCK_CRASH_AT": step})

    assert killed(crashed), explain(crashed)
    at_crash = d.containers()["web"]
    if step == "services.started":
        assert (at_crash.status, at_crash.image_id) == ("running", new_id)
    else:
        assert at_crash.status == "exited", at_crash
    status = d.status()
    assert status["pending_recovery"] == [], status
    assert status["last_recovery"]["direction"] == "back", status
    assert status["version"] == OLD, status
    assert d.wait_page("release one\n") == "release one\n"
    web = d.containers()["web"]
    assert (web.status, web.image_id) == ("running", old_id)
    assert d.image_id("stable") == old_id
    assert d.repo_tags() == {d.ref("stable")}
    assert_same_tree(d.tree_snapshot(), snapshot(old), "tree after recovery")


def corrupt_last_layer(tar_path) -> None:
    """Overwrite bytes in the middle of the image's last layer: the archive
    stays well formed, the layer no longer matches its digest."""
    with tarfile.open(tar_path) as archive:
        manifest = json.load(archive.extractfile("manifest.json"))
        layer = archive.getmember(manifest[0]["Layers"][-1])
    with open(tar_path, "r+b") as out:
        out.seek(layer.offset_data + layer.size // 2)
        out.write(b"\xff" * 64)


def cut_in_half(tar_path) -> None:
    data = tar_path.read_bytes()
    tar_path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("damage", [cut_in_half, corrupt_last_layer])
def test_upgrade_broken_image_tar_fails_before_services_stop(docker_deployment, damage):
    """Release 2 ships two image tars, ``aux`` (good, loaded first) and
    ``web`` (damaged): the upgrade fails while loading, nothing was stopped,
    and the engine's tags are as they were."""
    d = docker_deployment
    old_id = d.build("stable", HTTPD)
    old = web_release(d, "r1", "stable", "release one\n")
    new = web_release(d, "r2", "stable", "release two\n")
    d.pack(new, "aux", "aux", 'CMD ["sleep", "3600"]')
    d.pack(new, "web", "stable", HTTPD, "RUN echo two > /release")
    damage(new / "images" / f"web-{ARCH}.tar")
    manifest = d.release(old, new)
    installed_and_serving(d, old, "release one\n")
    running = d.containers()["web"]

    result = d.apply(manifest)

    assert result.returncode in (exitcodes.SERVICES, exitcodes.BAD_INPUT), explain(
        result
    )
    assert f"web-{ARCH}.tar" in final_result(result)["error"]
    assert "--no-services" not in result.stderr, explain(result)
    web = d.containers()["web"]
    assert (web.id, web.started_at, web.status) == (
        running.id,
        running.started_at,
        "running",
    )
    assert d.page() == "release one\n"
    assert_same_tree(d.tree_snapshot(), snapshot(old), "tree after the failed upgrade")
    assert d.image_id("stable") == old_id
    assert d.repo_tags() == {d.ref("stable")}

    (tx,) = d.transactions()
    assert tx["status"] == "aborted", tx
    kinds = {e["type"] for e in d.tx_events(tx["tx"])}
    assert not kinds & {"services_stopping", "services_stopped", "op_applied"}, kinds


def test_upgrade_without_engine_refused_unless_no_services(docker_deployment, tmp_path):
    """DOCKER_HOST names a socket nobody listens on, for the child only."""
    d = docker_deployment
    old = web_release(d, "r1", "stable", "release one\n")
    new = web_release(d, "r2", "stable", "release two\n")
    manifest = d.release(old, new)
    d.install(old)
    config_before = (d.root / "config.toml").read_bytes()
    no_engine = {"DOCKER_HOST": f"unix://{tmp_path / 'no-engine' / 'docker.sock'}"}

    refused = d.apply(manifest, env=no_engine)

    assert refused.returncode == exitcodes.SERVICES, explain(refused)
    assert "Docker engine cannot be reached" in refused.stderr, explain(refused)
    assert "--no-services" in refused.stderr, explain(refused)
    assert_same_tree(d.tree_snapshot(), snapshot(old), "tree after the refusal")
    assert (d.root / "config.toml").read_bytes() == config_before
    assert d.transactions() == []
    backups_or_downloads = [
        path.relative_to(d.root).as_posix()
        for top in ("backups", "cacheDuckData")
        for path in (d.root / top).rglob("*")
        if path.is_file()
    ]
    assert backups_or_downloads == []

    files_only = d.apply(manifest, "--no-services", env=no_engine)

    assert files_only.returncode == exitcodes.OK, explain(files_only)
    assert final_result(files_only)["outcome"] == "committed"
    assert_same_tree(d.tree_snapshot(), snapshot(new), "tree after --no-services")
    assert d.status()["version"] == NEW
