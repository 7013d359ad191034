"""Fixtures for tests that drive a real Docker engine.

Import the fixtures a test module uses (pytest finds fixtures among a test
module's names)::

    from dockerfixtures import compose_factory, docker_engine, image_factory

``docker_engine`` runs ``scripts/docker-setup.sh`` once per session: with a
running engine it only checks the local test images; as root without an
engine it installs and starts one. When no engine can be had the Docker tests
are skipped, except in CI (``CI=true``), where they fail: CI must run them.

Everything a test creates (compose containers, networks, volumes, image tags)
is removed in the fixture's teardown.
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import uuid
from pathlib import Path

import docker.errors
import pytest
import yaml

from engine.compose import ComposeProject
from engine.dockerapi import PROJECT_LABEL, DockerEngine, ServicesError
from engine.health import HealthLimits

REPO = Path(__file__).resolve().parent.parent
SETUP_SCRIPT = REPO / "scripts" / "docker-setup.sh"
BASE_IMAGE = "updock-test/busybox:base"
BUILD_LABEL = "updock.test.build"  # on every image the tests build

# Short limits, so a failing gate costs seconds, not minutes.
QUICK_LIMITS = HealthLimits(deadline_s=30.0, stable_s=2.0, poll_s=0.2, stop_timeout_s=2)

# A busybox web server on port 80 serving /www, with a wget healthcheck.
WEB_HEALTHCHECK = {
    "test": ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:80/"],
    "interval": "1s",
    "timeout": "2s",
    "retries": 3,
}


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"Docker tests must run in CI, but: {reason}", pytrace=False)
    pytest.skip(f"no Docker engine: {reason}")


@pytest.fixture(scope="session")
def docker_engine() -> DockerEngine:
    """A connected engine, with the base test image present."""
    try:
        setup = subprocess.run(
            ["bash", str(SETUP_SCRIPT)], capture_output=True, text=True, timeout=900
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        _unavailable(f"{SETUP_SCRIPT} did not run: {exc}")
    if setup.returncode != 0:
        _unavailable(f"{SETUP_SCRIPT} failed: {setup.stderr.strip()[-500:]}")
    try:
        engine = DockerEngine.connect(timeout_s=120)
    except ServicesError as exc:
        _unavailable(str(exc))
    yield engine
    engine.close()


class ImageFactory:
    """Builds small images on the base image; removes their tags afterwards."""

    def __init__(self, engine: DockerEngine) -> None:
        self.engine = engine
        self.tags: list[str] = []

    def build(self, tag: str, *lines: str) -> str:
        """Build ``FROM`` the base image plus ``lines``; return the image id.

        A unique label makes every build a distinct image.
        """
        dockerfile = "\n".join(
            [f"FROM {BASE_IMAGE}", f'LABEL {BUILD_LABEL}="{uuid.uuid4().hex}"', *lines]
        )
        image, _ = self.engine.client.images.build(
            fileobj=io.BytesIO(dockerfile.encode()), tag=tag, rm=True, forcerm=True
        )
        self.track(tag)
        return image.id

    def track(self, *tags: str) -> None:
        """Remove these tags too at teardown."""
        self.tags.extend(tags)

    def save(self, tag: str, path: Path) -> Path:
        """``docker save`` one tag into ``path``."""
        image = self.engine.client.images.get(tag)
        with path.open("wb") as out:
            for chunk in image.save(named=tag):
                out.write(chunk)
        return path

    def cleanup(self) -> None:
        repositories = {tag.rpartition(":")[0] for tag in self.tags}
        leftovers = [
            ref
            for ref in self.engine.tags()
            if ref in self.tags or ref.rpartition(":")[0] in repositories
        ]
        for ref in leftovers:
            try:
                self.engine.client.images.remove(ref, force=True)
            except docker.errors.ImageNotFound:
                continue
        # Images untagged while a container used them linger untagged.
        self.engine.client.images.prune(
            filters={"dangling": True, "label": BUILD_LABEL}
        )


@pytest.fixture
def image_factory(docker_engine: DockerEngine):
    factory = ImageFactory(docker_engine)
    yield factory
    factory.cleanup()


class ComposeFactory:
    """Writes compose projects into a temporary folder, each with a unique name."""

    def __init__(self, tmp_path: Path, engine: DockerEngine) -> None:
        self.tmp_path = tmp_path
        self.engine = engine
        self.projects: list[ComposeProject] = []

    def write(
        self,
        services: dict,
        *,
        files: dict[str, str] | None = None,
        folder: str | None = None,
        env: dict[str, str] | None = None,
    ) -> Path:
        """Write ``docker-compose.yml`` (and ``files``) into a new folder."""
        root = self.tmp_path / (folder or f"proj{len(self.projects)}")
        root.mkdir(parents=True, exist_ok=True)
        for relpath, text in (files or {}).items():
            target = root / relpath
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        if env:
            (root / ".env").write_text("".join(f"{k}={v}\n" for k, v in env.items()))
        document = {"version": "3.8", "services": services}
        compose_file = root / "docker-compose.yml"
        compose_file.write_text(yaml.safe_dump(document, sort_keys=False))
        return compose_file

    def make(self, services: dict, **kwargs) -> ComposeProject:
        """A compose project of ``services``, named ``updocktest<random>``."""
        compose_file = self.write(services, **kwargs)
        return self.adopt(compose_file, f"updocktest{uuid.uuid4().hex[:10]}")

    def adopt(self, compose_file: Path, name: str) -> ComposeProject:
        """Tear down project ``name`` at the end of the test."""
        project = ComposeProject(
            compose_file, name, engine=self.engine, command_timeout_s=120
        )
        self.projects.append(project)
        return project

    def cleanup(self) -> None:
        for project in self.projects:
            try:
                project.down(volumes=True, timeout_s=1)
            except ServicesError:
                pass  # the compose file may be gone: remove by label below
            client = self.engine.client
            label = f"{PROJECT_LABEL}={project.name}"
            for container in client.containers.list(all=True, filters={"label": label}):
                container.remove(force=True, v=True)
            for network in client.networks.list(filters={"label": label}):
                network.remove()


@pytest.fixture
def compose_factory(tmp_path: Path, docker_engine: DockerEngine):
    factory = ComposeFactory(tmp_path, docker_engine)
    yield factory
    factory.cleanup()


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def web_service(port: int, *, image: str = BASE_IMAGE, **extra) -> dict:
    """A busybox httpd serving ``./front`` on 127.0.0.1:``port`` with a healthcheck."""
    service = {
        "image": image,
        "init": True,
        "command": ["httpd", "-f", "-p", "80", "-h", "/www"],
        "volumes": ["./front:/www:ro"],
        "ports": [f"127.0.0.1:{port}:80"],
        "healthcheck": WEB_HEALTHCHECK,
    }
    service.update(extra)
    return service
