"""``updock services ...`` run as a real command against a real engine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
from dockerfixtures import (  # noqa: F401 - fixtures
    BASE_IMAGE,
    compose_factory,
    docker_engine,
    free_port,
    web_service,
)

from cli import exitcodes


def updock(
    root: Path, *args: str, env: dict | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args, "--root", str(root)],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, **(env or {})},
    )


def deployment(compose_factory, services: dict) -> Path:
    """A deployment root whose docker/ holds ``services`` and a front/ page."""
    name = f"updocktest{uuid.uuid4().hex[:10]}"
    compose_file = compose_factory.write(
        services, files={"front/index.html": "hello\n"}, folder="deploy/docker"
    )
    compose_factory.adopt(compose_file, name)
    root = compose_file.parent.parent
    (root / "config.toml").write_text(
        f'[docker]\nproject_name = "{name}"\n\n'
        "[health]\ndeadline_s = 5\nstable_s = 1\npoll_s = 0.2\nstop_timeout_s = 2\n"
    )
    return root


@pytest.mark.docker
def test_services_commands_start_show_stop_and_restart(compose_factory):
    port = free_port()
    root = deployment(
        compose_factory,
        {
            "web": web_service(port),
            "init": {"image": BASE_IMAGE, "command": ["true"], "restart": "no"},
        },
    )

    started = updock(root, "services", "start")
    page = httpx.get(f"http://127.0.0.1:{port}/").text
    shown = updock(root, "services", "status", "--json")
    stopped = updock(root, "services", "stop")
    after_stop = updock(root, "services", "status")
    restarted = updock(root, "services", "restart")

    assert started.returncode == exitcodes.OK, started.stderr
    assert "ok   web: healthy" in started.stdout
    assert "ok   init: completed (exit code 0)" in started.stdout
    assert page == "hello\n"
    states = {
        s["name"]: [(c["status"], c["health"]) for c in s["containers"]]
        for s in map(json.loads, shown.stdout.splitlines())
    }
    assert states == {"web": [("running", "healthy")], "init": [("exited", None)]}
    assert stopped.stdout.strip() == "stopped: web"
    assert "running" not in after_stop.stdout
    assert restarted.returncode == exitcodes.OK, restarted.stderr
    assert "health gate passed" in restarted.stdout


@pytest.mark.docker
def test_services_start_fails_naming_the_unhealthy_service(compose_factory):
    sick = web_service(
        free_port(),
        healthcheck={"test": ["CMD", "false"], "interval": "1s", "retries": 1},
    )
    root = deployment(compose_factory, {"sick": sick})

    started = updock(root, "services", "start")

    assert started.returncode == exitcodes.SERVICES
    assert "FAIL sick: health unhealthy" in started.stdout
    assert "sick" in started.stderr


def test_services_start_without_engine_exits_with_services_code(tmp_path):
    (tmp_path / "docker").mkdir()
    (tmp_path / "docker" / "docker-compose.yml").write_text(
        f"services:\n  a:\n    image: {BASE_IMAGE}\n"
    )

    started = updock(
        tmp_path,
        "services",
        "start",
        env={"DOCKER_HOST": f"unix://{tmp_path}/no-such.sock"},
    )

    assert started.returncode == exitcodes.SERVICES
    assert "Docker engine cannot be reached" in started.stderr
    assert "Traceback" not in started.stderr
