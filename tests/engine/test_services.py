"""The services facade on a real deployment folder, journal and engine."""

from __future__ import annotations

import signal
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
from dockerfixtures import (  # noqa: F401 - fixtures
    compose_factory,
    docker_engine,
    free_port,
    image_factory,
    web_service,
)

from engine.dockerapi import EngineUnreachableError, ImageLoadError
from engine.services import Services
from journal import Journal
from journal import records as r

TX = "tx-services-1"
HTTPD = 'CMD ["httpd", "-f", "-p", "80", "-h", "/www"]'


class Deployment:
    """A deployment root: config.toml, docker/ with a compose file serving
    docker/front/ from image ``<repo>:1.0``, and a journal with one open tx."""

    def __init__(self, tmp_path, compose_factory, image_factory) -> None:
        self.root = tmp_path / "deploy"
        self.repo = f"updock-test/svc{uuid.uuid4().hex[:8]}"
        self.images = image_factory
        self.v1 = image_factory.build(f"{self.repo}:1.0", HTTPD)
        self.port = free_port()
        web = web_service(self.port, image=f"{self.repo}:1.0")
        del web["command"]
        self.project = f"updocktest{uuid.uuid4().hex[:10]}"
        compose_file = compose_factory.write(
            {"web": web}, files={"front/index.html": "one\n"}, folder="deploy/docker"
        )
        compose_factory.adopt(compose_file, self.project)
        (self.root / "config.toml").write_text(
            f'[docker]\nproject_name = "{self.project}"\n\n'
            "[health]\ndeadline_s = 6\nstable_s = 2\npoll_s = 0.2\nstop_timeout_s = 2\n"
        )
        self.journal = Journal.open(self.root / ".updock" / "journal")
        self.journal.append(r.TxBegun(tx=TX, kind="upgrade"))

    def services(self, **kwargs) -> Services:
        return Services(self.root, journal=self.journal, **kwargs)

    def package(self, *dockerfile_lines: str) -> Path:
        """A staged package whose images/app-amd64.tar holds a new ``<repo>:1.0``."""
        staged = self.root.parent / f"staged-{uuid.uuid4().hex[:6]}"
        (staged / "images").mkdir(parents=True)
        suffixed = f"{self.repo}:1.0-amd64"
        self.images.build(suffixed, *dockerfile_lines)
        self.images.save(suffixed, staged / "images" / "app-amd64.tar")
        self.images.engine.remove_tag(suffixed)
        return staged

    def serve(self, text: str) -> None:
        """Stand-in for the file transaction: replace front/index.html."""
        (self.root / "docker" / "front" / "index.html").write_text(text)

    def page(self) -> str:
        return httpx.get(f"http://127.0.0.1:{self.port}/", timeout=5).text

    def steps(self) -> list[str]:
        return [type(e).__name__ for _, e in self.journal.tx_records(TX)]

    def image_id(self) -> str | None:
        return self.images.engine.image_id(f"{self.repo}:1.0")


@pytest.fixture
def deployment(tmp_path, image_factory, compose_factory):
    # compose_factory comes last so its teardown (containers) runs first.
    deployment = Deployment(tmp_path, compose_factory, image_factory)
    yield deployment
    deployment.journal.close()


@pytest.mark.docker
def test_upgrade_steps_run_in_order_and_are_journaled(deployment):
    services = deployment.services()
    services.start(None)
    assert services.gate(None)
    staged = deployment.package(HTTPD, 'LABEL version="2"')

    services.preflight()
    loaded = services.load_images(TX, staged)
    stopped = services.stop(TX)
    deployment.serve("two\n")
    services.start(TX)
    verdict = services.gate(TX, "upgrade")
    services.cleanup_images(TX)

    assert verdict.passed, verdict.services
    assert deployment.page() == "two\n"
    assert loaded.previous == {f"{deployment.repo}:1.0": deployment.v1}
    assert stopped.services == ["web"]
    assert deployment.image_id() != deployment.v1
    assert deployment.steps() == [
        "TxBegun",
        "ImagesLoaded",
        "ServicesStopping",
        "ServicesStopped",
        "ServicesStarted",
        "HealthVerdict",
    ]
    assert deployment.journal.state.txs[TX].services_stopped is False
    assert not [t for t in deployment.images.engine.tags() if "updock-prev" in t]


@pytest.mark.docker
def test_broken_image_tar_fails_before_any_service_stops(deployment):
    services = deployment.services()
    services.start(None)
    staged = deployment.root.parent / "staged-broken"
    (staged / "images").mkdir(parents=True)
    (staged / "images" / "app-amd64.tar").write_bytes(b"not a tar" * 1000)

    with pytest.raises(ImageLoadError):
        services.load_images(TX, staged)

    assert services.project.running_services() == ["web"]
    assert deployment.steps() == ["TxBegun"]
    assert deployment.image_id() == deployment.v1


@pytest.mark.docker
def test_failed_gate_rolls_back_to_old_image_and_content(deployment):
    services = deployment.services()
    services.start(None)
    staged = deployment.package('CMD ["sleep", "300"]')  # never serves: unhealthy

    services.load_images(TX, staged)
    services.stop(TX)
    deployment.serve("two\n")
    services.start(TX)
    upgrade = services.gate(TX, "upgrade")
    services.stop(TX)
    deployment.serve("one\n")
    restored = services.restore_images(TX)
    services.start(TX)
    rollback = services.gate(TX, "rollback")
    stayed = services.cleanup_images(TX, rolled_back=True)

    assert not upgrade
    assert "unhealthy" in upgrade.services[0].reason or "starting" in (
        upgrade.services[0].reason
    )
    assert rollback.passed, rollback.services
    assert restored == [f"{deployment.repo}:1.0"]
    assert deployment.image_id() == deployment.v1
    assert deployment.page() == "one\n"
    assert stayed == []
    assert _repo_tags(deployment) == [f"{deployment.repo}:1.0"]
    verdicts = [
        e
        for _, e in deployment.journal.tx_records(TX)
        if isinstance(e, r.HealthVerdict)
    ]
    assert [(v.phase, v.passed) for v in verdicts] == [
        ("upgrade", False),
        ("rollback", True),
    ]


CRASH_SCRIPT = """
import sys
from pathlib import Path
from engine.services import Services
from journal import Journal

root, tx, step = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
journal = Journal.open(root / ".updock" / "journal")
services = Services(root, journal=journal)
if step == "load":
    services.load_images(tx, Path(sys.argv[4]))
services.stop(tx)
"""


def _crash_at(deployment, crashpoint: str, step: str, *extra: str) -> None:
    """Run a services step in a child process that SIGKILLs itself at
    ``crashpoint``; the test's journal is closed meanwhile (one writer)."""
    deployment.journal.close()
    env = {"UPDOCK_CRASH_AT": crashpoint, "PATH": "/usr/local/bin:/usr/bin:/bin"}
    child = subprocess.run(
        [sys.executable, "-c", CRASH_SCRIPT, str(deployment.root), TX, step, *extra],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    deployment.journal = Journal.open(deployment.root / ".updock" / "journal")


@pytest.mark.docker
def test_recover_after_kill_between_stop_and_start_brings_services_back(deployment):
    deployment.services().start(None)

    _crash_at(deployment, "services.stopped", "stop")
    stopped = deployment.services().project.running_services()
    tx_state = deployment.journal.state.txs[TX]
    verdict = deployment.services().recover(tx_state)

    assert stopped == []
    assert verdict.passed, verdict.services
    assert deployment.page() == "one\n"
    assert deployment.steps()[-3:] == [
        "ServicesStopped",
        "ServicesStarted",
        "HealthVerdict",
    ]


@pytest.mark.docker
def test_recover_after_kill_during_stop_still_brings_services_back(deployment):
    deployment.services().start(None)

    _crash_at(deployment, "services.stop.intended", "stop")
    deployment.services().project.stop(timeout_s=1)  # the stop half done
    verdict = deployment.services().recover(deployment.journal.state.txs[TX])

    assert verdict.passed, verdict.services
    assert deployment.services().project.running_services() == ["web"]


@pytest.mark.docker
def test_recover_back_after_kill_before_images_journaled_restores_tags(deployment):
    deployment.services().start(None)
    staged = deployment.package(HTTPD, 'LABEL version="2"')

    _crash_at(deployment, "services.images.loaded", "load", str(staged))
    moved = deployment.image_id()
    verdict = deployment.services().recover(deployment.journal.state.txs[TX], "back")

    assert moved != deployment.v1
    assert verdict is None  # no stop was reached: services were never touched
    assert deployment.image_id() == deployment.v1
    assert not [t for t in deployment.images.engine.tags() if "updock-prev" in t]


def test_preflight_without_engine_raises_unreachable_unless_no_services(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-such.sock")
    (tmp_path / "docker").mkdir()
    (tmp_path / "docker" / "docker-compose.yml").write_text("services: {}\n")

    with pytest.raises(EngineUnreachableError) as caught:
        Services(tmp_path).preflight()
    Services(tmp_path, no_services=True).preflight()

    assert "--no-services" in caught.value.hint


def test_services_without_compose_file_do_nothing(tmp_path):
    (tmp_path / "docker").mkdir()  # a project folder without a compose file
    services = Services(tmp_path)

    services.preflight()

    assert services.stop("tx") is None
    assert services.start("tx") is None
    assert services.gate("tx").passed


@pytest.mark.docker
def test_status_lists_each_service_with_its_containers(deployment):
    services = deployment.services()
    services.start(None)
    services.gate(None)

    status = services.status()

    assert [s.name for s in status] == ["web"]
    assert status[0].healthcheck is True
    assert [(c.status, c.health) for c in status[0].containers] == [
        ("running", "healthy")
    ]


def _repo_tags(deployment) -> list[str]:
    prefix = deployment.repo + ":"
    return sorted(t for t in deployment.images.engine.tags() if t.startswith(prefix))


@pytest.mark.docker
def test_stop_with_broken_compose_file_stops_containers_through_engine(deployment):
    services = deployment.services()
    services.start(None)
    compose_file = deployment.root / "docker" / "docker-compose.yml"
    compose_file.write_text("services: [this is not a compose file\n")

    stopped = services.stop(TX)

    assert stopped.services == ["web"]
    assert services.project.running_services() == []
    assert deployment.steps()[-2:] == ["ServicesStopping", "ServicesStopped"]


@pytest.mark.docker
def test_cleanup_after_abort_restores_tags_the_load_moved(deployment):
    services = deployment.services()
    staged = deployment.package(HTTPD, 'LABEL version="2"')
    services.load_images(TX, staged)
    moved = deployment.image_id()

    stayed = services.cleanup_images(TX, rolled_back=True)

    assert moved != deployment.v1
    assert stayed == []
    assert _repo_tags(deployment) == [f"{deployment.repo}:1.0"]
    assert deployment.image_id() == deployment.v1
