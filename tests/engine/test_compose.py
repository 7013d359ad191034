"""Compose projects against a real engine and compose CLI."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from dockerfixtures import (
    BASE_IMAGE,
    QUICK_LIMITS,
    compose_factory,  # noqa: F401 - fixture
    docker_engine,  # noqa: F401 - fixture
    free_port,
    web_service,
)

from engine.compose import (
    ComposeProject,
    ServiceSpec,
    detect_compose_cli,
    normalise_project_name,
    resolve_project_name,
)
from engine.dockerapi import (
    ComposeCommandError,
    ComposeNotFoundError,
    DockerEngine,
    EngineUnreachableError,
)
from engine.health import HealthGate


def test_resolve_project_name_follows_compose_order(tmp_path, monkeypatch):
    monkeypatch.delenv("COMPOSE_PROJECT_NAME", raising=False)
    folder = tmp_path / "My_Docker"
    folder.mkdir()
    compose_file = folder / "docker-compose.yml"
    compose_file.write_text("services: {}\n")
    assert resolve_project_name(compose_file) == "my_docker"

    compose_file.write_text("name: Named\nservices: {}\n")
    assert resolve_project_name(compose_file) == "named"

    (folder / ".env").write_text("# comment\nCOMPOSE_PROJECT_NAME='FromDotEnv'\n")
    assert resolve_project_name(compose_file) == "fromdotenv"

    monkeypatch.setenv("COMPOSE_PROJECT_NAME", "from-env")
    assert resolve_project_name(compose_file) == "from-env"
    assert resolve_project_name(compose_file, configured="Shop") == "shop"
    assert resolve_project_name(compose_file, "cli.name", "Shop") == "cliname"


def test_normalise_project_name_keeps_compose_characters():
    assert normalise_project_name("-My App_1.2-") == "myapp_12-"
    assert normalise_project_name("...") == ""


def test_detect_compose_cli_without_any_raises_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    detect_compose_cli.cache_clear()
    try:
        with pytest.raises(ComposeNotFoundError) as caught:
            detect_compose_cli()
    finally:
        detect_compose_cli.cache_clear()
    assert "docker compose" in str(caught.value)
    assert "docker-compose" in str(caught.value)
    assert "--no-services" in caught.value.hint


def test_connect_without_engine_raises_unreachable_with_hint(tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-such.sock")
    with pytest.raises(EngineUnreachableError) as caught:
        DockerEngine.connect(timeout_s=5)
    assert "--no-services" in caught.value.hint


@pytest.mark.docker
def test_services_read_restart_and_healthcheck_after_env_interpolation(
    compose_factory,
):
    project = compose_factory.make(
        {
            "web": web_service(free_port(), image="${WEB_IMAGE}", restart="always"),
            "init": {"image": BASE_IMAGE, "command": ["true"], "restart": "no"},
            "plain": {
                "image": BASE_IMAGE,
                "healthcheck": {"disable": True},
                "depends_on": ["init"],
            },
            "extra": {"image": BASE_IMAGE, "profiles": ["debug"]},
        },
        files={"front/index.html": "hello\n"},
        env={"WEB_IMAGE": "updock-test/busybox:base"},
    )

    specs = {s.name: s for s in project.services()}

    assert specs == {
        "web": ServiceSpec("web", BASE_IMAGE, "always", True, ()),
        "init": ServiceSpec("init", BASE_IMAGE, "no", None, ()),
        "plain": ServiceSpec("plain", BASE_IMAGE, "no", False, ("init",)),
    }
    assert project.image_refs() == [BASE_IMAGE]


@pytest.mark.docker
def test_config_is_read_again_after_the_compose_file_changes(compose_factory):
    project = compose_factory.make({"a": {"image": BASE_IMAGE}})
    assert [s.name for s in project.services()] == ["a"]

    compose_factory.write(
        {"a": {"image": BASE_IMAGE}, "b": {"image": BASE_IMAGE}},
        folder=project.folder.name,
    )

    assert [s.name for s in project.services()] == ["a", "b"]


@pytest.mark.docker
def test_up_serves_front_folder_and_passes_gate(compose_factory):
    port = free_port()
    project = compose_factory.make(
        {"web": web_service(port)}, files={"front/index.html": "release one\n"}
    )

    project.up()
    result = HealthGate(project.containers, ["web"], QUICK_LIMITS).run()

    assert result.passed, result.services
    assert result.services[0].reason == "healthy"
    assert httpx.get(f"http://127.0.0.1:{port}/").text == "release one\n"


@pytest.mark.docker
def test_containers_are_found_by_labels_not_names(compose_factory, docker_engine):
    project = compose_factory.make(
        {
            "web": web_service(free_port()),
            "side": {"image": BASE_IMAGE, "init": True, "command": ["sleep", "300"]},
        },
        files={"front/index.html": "x\n"},
    )
    project.up()
    decoy = docker_engine.client.containers.run(
        BASE_IMAGE,
        ["sleep", "300"],
        name=f"{project.name}-web-9",
        detach=True,
        init=True,
    )
    try:
        found = project.containers()
    finally:
        decoy.remove(force=True)

    assert sorted(c.service for c in found) == ["side", "web"]
    assert all(c.status == "running" for c in found)
    assert project.running_services() == ["side", "web"]


@pytest.mark.docker
def test_stop_then_up_brings_the_same_services_back(compose_factory):
    port = free_port()
    project = compose_factory.make(
        {"web": web_service(port)}, files={"front/index.html": "v\n"}
    )
    project.up()

    project.stop(timeout_s=2)
    stopped = project.containers()
    project.up()
    result = HealthGate(project.containers, ["web"], QUICK_LIMITS).run()

    assert [c.status for c in stopped] == ["exited"]
    assert project.running_services() == ["web"]
    assert result.passed, result.services


@pytest.mark.docker
def test_down_removes_containers(compose_factory):
    project = compose_factory.make(
        {"side": {"image": BASE_IMAGE, "init": True, "command": ["sleep", "300"]}}
    )
    project.up()

    project.down(timeout_s=1)

    assert project.containers() == []


@pytest.mark.docker
def test_compose_rejecting_the_file_raises_with_its_message(compose_factory):
    project = compose_factory.make({"bad": {"image": BASE_IMAGE, "restart": 5}})

    with pytest.raises(ComposeCommandError) as caught:
        project.services()

    assert caught.value.returncode != 0
    assert "restart" in str(caught.value)


@pytest.mark.docker
def test_top_level_name_on_compose_v1_gets_a_hint(compose_factory):
    compose_file = compose_factory.write({"a": {"image": BASE_IMAGE}})
    compose_file.write_text("name: shop\n" + compose_file.read_text())
    project = compose_factory.adopt(compose_file, "updocktestnamed")
    if project.cli.is_v2:
        pytest.skip("compose v2 accepts a top-level name")

    with pytest.raises(ComposeCommandError) as caught:
        project.config()

    assert "project_name" in caught.value.hint


def test_compose_project_without_file_reports_it(tmp_path):
    project = ComposeProject(Path(tmp_path / "docker-compose.yml"), "x")
    assert not project.exists()
