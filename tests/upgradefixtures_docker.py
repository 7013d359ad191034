"""A compose deployment on the real Docker engine, upgraded through the
``updock`` command.

A release tree holds ``docker-compose.yml`` and a ``front/`` folder that a
busybox httpd serves on 127.0.0.1; when a release ships an image, its tree
holds ``images/<name>-<arch>.tar`` as the existing client ships them (a
``docker save`` of ``<repo>:<tag>-<arch>``, for the host's architecture).
Releases are built with ``updock release build`` and installed with
``updock upgrade apply``, both run as child processes.

Every deployment has its own image repository and compose project name, so
tests can run side by side; the ``docker_deployment`` fixture removes the
project's containers and networks, then every tag of the repository.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import pytest
import yaml
from deploykit import explain, json_lines, snapshot, updock
from dockerfixtures import free_port, web_service

from cli import exitcodes
from engine.dockerapi import ContainerState
from engine.images import host_arch

OLD = "1.0.0.0"
NEW = "1.1.0.0"
ARCH = host_arch()
HTTPD = 'CMD ["httpd", "-f", "-p", "80", "-h", "/www"]'

# Short limits: a failing gate costs seconds; a good one passes in about two.
HEALTH = {"deadline_s": 10, "stable_s": 2, "poll_s": 0.2, "stop_timeout_s": 2}
SERVE_DEADLINE_S = 20.0  # how long a page may take to appear once started
UPGRADE_TIMEOUT_S = 240  # the whole ``upgrade apply`` child, failures included


class DockerDeployment:
    """One deployment root under ``tmp_path`` and the releases built for it.

    Attributes:
        repo: the image repository every image of this deployment uses.
        project: the compose project name (``[docker] project_name``).
        port: the web service's published port on 127.0.0.1.
        root: the deployment root (``config.toml``, ``docker/``).
    """

    def __init__(self, tmp_path: Path, images, compose) -> None:
        unique = uuid.uuid4().hex[:10]
        self.base = tmp_path
        self.images = images  # dockerfixtures.ImageFactory
        self.engine = images.engine
        self.compose = compose  # dockerfixtures.ComposeFactory
        self.repo = f"updock-test/upgrade{unique}"
        self.project = f"updocktest{unique}"
        self.port = free_port()
        self.root = tmp_path / "deployment"

    # -- images -----------------------------------------------------------------

    def ref(self, tag: str) -> str:
        return f"{self.repo}:{tag}"

    def build(self, tag: str, *dockerfile_lines: str) -> str:
        """Build ``<repo>:<tag>`` in the engine; return its id."""
        return self.images.build(self.ref(tag), *dockerfile_lines)

    def pack(self, tree: Path, name: str, tag: str, *dockerfile_lines: str) -> str:
        """Ship ``<repo>:<tag>`` in ``tree/images/<name>-<arch>.tar``.

        The image is built as ``<repo>:<tag>-<arch>``, saved, and removed
        from the engine again, so only the upgrade's load brings it back.

        Returns:
            The image's id.
        """
        suffixed = self.ref(f"{tag}-{ARCH}")
        image_id = self.images.build(suffixed, *dockerfile_lines)
        folder = tree / "images"
        folder.mkdir(exist_ok=True)
        self.images.save(suffixed, folder / f"{name}-{ARCH}.tar")
        self.engine.remove_tag(suffixed)
        return image_id

    def image_id(self, tag: str) -> str | None:
        return self.engine.image_id(self.ref(tag))

    def kept_tags(self) -> list[str]:
        """Tags of this repository an upgrade keeps old images under."""
        return [t for t in self.engine.tags() if t.startswith(f"{self.repo}:updock-")]

    def repo_tags(self) -> set[str]:
        return {t for t in self.engine.tags() if t.startswith(f"{self.repo}:")}

    # -- trees and releases -------------------------------------------------------

    def web(self, tag: str, **extra) -> dict:
        """The web service: image ``<repo>:<tag>`` (its CMD runs httpd) serving
        ``./front`` on ``port``, with a wget healthcheck."""
        service = web_service(self.port, image=self.ref(tag))
        del service["command"]
        service.update(extra)
        return service

    def tree(self, name: str, services: dict, files: dict[str, str]) -> Path:
        """A release tree: ``docker-compose.yml`` of ``services`` and ``files``."""
        tree = self.base / "releases" / name
        tree.mkdir(parents=True)
        document = yaml.safe_dump({"services": services}, sort_keys=False)
        (tree / "docker-compose.yml").write_text(document, encoding="utf-8")
        for relpath, text in files.items():
            path = tree / relpath
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        return tree

    def release(self, old: Path, new: Path, version: str = NEW) -> Path:
        """``updock release build`` from ``old`` to ``new``; the manifest's path.

        The patch names ``OLD`` as the only version it applies to.
        """
        out = self.base / "published" / version
        result = updock(
            "release",
            "build",
            "--from",
            str(old),
            "--to",
            str(new),
            "--version",
            version,
            "--from-version",
            OLD,
            "--out",
            str(out),
        )
        assert result.returncode == exitcodes.OK, explain(result)
        return out / "manifest.json"

    def install(self, tree: Path, version: str = OLD) -> Path:
        """Deploy ``tree`` at ``version`` (files only; see ``start``)."""
        shutil.copytree(tree, self.root / "docker")
        health = "".join(f"{key} = {value}\n" for key, value in HEALTH.items())
        (self.root / "config.toml").write_text(
            f'[versions]\ndocker_service = "{version}"\n\n'
            '[docker]\ncompose_file = "./docker/docker-compose.yml"\n'
            f'project_name = "{self.project}"\n\n'
            '[backup]\nstorage_dir = "./backups"\n\n'
            '[cache]\ndownload_dir = "./cacheDuckData/download"\n\n'
            f"[health]\n{health}",
            encoding="utf-8",
        )
        self.compose.adopt(self.root / "docker" / "docker-compose.yml", self.project)
        return self.root

    def tree_snapshot(self) -> dict[str, tuple]:
        return snapshot(self.root / "docker")

    # -- the updock command -------------------------------------------------------

    def updock(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess:
        return updock(
            *args, "--root", str(self.root), env=env, timeout=UPGRADE_TIMEOUT_S
        )

    def start(self) -> None:
        """``updock services start``: up, and through the health gate."""
        result = self.updock("services", "start")
        assert result.returncode == exitcodes.OK, explain(result)

    def apply(
        self, manifest: Path, *extra: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess:
        """``upgrade apply --yes --json`` by patch, to its end."""
        return self.updock(
            "upgrade",
            "apply",
            "--manifest",
            str(manifest),
            "--strategy",
            "patch",
            "--yes",
            "--json",
            *extra,
            env=env,
        )

    def tx_events(self, tx: str) -> list[dict]:
        """``journal inspect --tx TX --json``: the transaction's events."""
        result = self.updock("journal", "inspect", "--tx", tx, "--json")
        assert result.returncode == exitcodes.OK, explain(result)
        return json_lines(result.stdout)

    def transactions(self) -> list[dict]:
        """``journal inspect --json``: one object per transaction."""
        result = self.updock("journal", "inspect", "--json")
        assert result.returncode == exitcodes.OK, explain(result)
        return json_lines(result.stdout)

    def status(self) -> dict:
        """``updock status --json`` (which first recovers a crashed upgrade)."""
        result = self.updock("status", "--json")
        assert result.returncode == exitcodes.OK, explain(result)
        return json_lines(result.stdout)[-1]

    # -- what runs ----------------------------------------------------------------

    def containers(self) -> dict[str, ContainerState]:
        """The project's containers by service (one container each here)."""
        found = self.engine.project_containers(self.project)
        return {c.service: c for c in found}

    def page(self, path: str = "index.html", port: int | None = None) -> str:
        url = f"http://127.0.0.1:{port or self.port}/{path}"
        return httpx.get(url, timeout=5).raise_for_status().text

    def wait_page(self, expected: str, path: str = "index.html", port=None) -> str:
        """Poll until the page reads ``expected``; return what was last read.

        A service without a healthcheck passes the gate once it runs, which
        can be before its server listens.
        """
        deadline = time.monotonic() + SERVE_DEADLINE_S
        seen = ""
        while time.monotonic() < deadline:
            try:
                seen = self.page(path, port)
            except httpx.HTTPError as exc:
                seen = f"error: {exc!r}"
            if seen == expected:
                return seen
            time.sleep(0.2)
        return seen


def final_result(result: subprocess.CompletedProcess) -> dict:
    """The last JSON line of an ``upgrade apply --json``: the result object."""
    lines = json_lines(result.stdout)
    assert lines and lines[-1].get("event") == "result", explain(result)
    return lines[-1]


@pytest.fixture(name="docker_deployment")
def docker_deployment_fixture(tmp_path, image_factory, compose_factory):
    """A ``DockerDeployment``; import this function, and ``compose_factory``,
    ``docker_engine`` and ``image_factory`` from ``dockerfixtures``, into a
    test module to use it."""
    # compose_factory is set up last, so its teardown (the containers) runs
    # before image_factory's (the tags).
    return DockerDeployment(tmp_path, image_factory, compose_factory)
