"""The health gate: rules on container states, then real containers."""

from __future__ import annotations

import pytest
from dockerfixtures import (
    BASE_IMAGE,
    QUICK_LIMITS,
    compose_factory,  # noqa: F401 - fixture
    docker_engine,  # noqa: F401 - fixture
    free_port,
    web_service,
)

from engine.dockerapi import ContainerState
from engine.health import (
    FAILED,
    PASSED,
    WAITING,
    GateResult,
    HealthGate,
    HealthLimits,
    judge_container,
    judge_service,
)
from journal.records import ServiceVerdict

NOW = 1_000_000.0


def state(**fields) -> ContainerState:
    defaults = dict(id="c1", name="p-web-1", service="web", status="running")
    return ContainerState(**{**defaults, **fields})


@pytest.mark.parametrize(
    ("fields", "standing", "words"),
    [
        (dict(health="healthy"), PASSED, "healthy"),
        (dict(health="starting"), WAITING, "starting"),
        (
            dict(health="unhealthy", failing_streak=2, health_output="refused"),
            WAITING,
            "failing streak 2, last probe said: refused",
        ),
        (dict(started_at=NOW - 11), PASSED, "no healthcheck"),
        (dict(started_at=NOW - 3), WAITING, "stable window"),
        (dict(status="exited", exit_code=0), PASSED, "completed"),
        (
            dict(status="exited", exit_code=0, restart_policy="on-failure"),
            PASSED,
            "completed",
        ),
        (dict(status="exited", exit_code=3), FAILED, "exited with code 3"),
        (
            dict(status="exited", exit_code=0, restart_policy="always"),
            WAITING,
            "restart policy always",
        ),
        (
            dict(status="exited", exit_code=1, restart_policy="on-failure"),
            WAITING,
            "exited with code 1",
        ),
        (
            dict(status="restarting", exit_code=1, restart_count=4),
            WAITING,
            "4 restarts",
        ),
        (dict(status="created"), WAITING, "created"),
    ],
)
def test_judge_container_applies_the_rules(fields, standing, words):
    got, reason = judge_container(state(**fields), NOW, stable_s=10)
    assert got == standing
    assert words in reason


def test_judge_service_needs_every_container():
    healthy = state(health="healthy")
    starting = state(id="c2", name="p-web-2", health="starting")

    assert judge_service("web", [], NOW, 10) == (WAITING, "no container")
    assert judge_service("web", [healthy], NOW, 10) == (PASSED, "healthy")
    assert judge_service("web", [healthy, starting], NOW, 10) == (
        WAITING,
        "p-web-2: health starting",
    )


class FakeClock:
    """Stands in for time so the deadline path runs without waiting."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(seconds, 0.01)


def test_gate_fails_at_deadline_naming_the_waiting_service():
    """Container states are synthetic here; the real engine is below."""
    clock = FakeClock()
    looks = iter([[state(health="starting")]] * 1000)
    gate = HealthGate(
        lambda: next(looks),
        ["web", "db"],
        HealthLimits(deadline_s=5, poll_s=1),
        clock=clock.monotonic,
        wall=lambda: NOW,
        sleep=clock.sleep,
    )

    result = gate.run()

    assert not result
    assert result.services == [
        ServiceVerdict("web", False, "health starting; not passed within 5s"),
        ServiceVerdict("db", False, "no container; not passed within 5s"),
    ]


def test_gate_stops_early_when_one_service_fails_for_good():
    """Container states are synthetic here; the real engine is below."""
    clock = FakeClock()
    crashed = state(
        id="c2", name="p-job-1", service="job", status="exited", exit_code=2
    )
    gate = HealthGate(
        lambda: [state(health="starting"), crashed],
        ["web", "job"],
        HealthLimits(deadline_s=60, poll_s=1),
        clock=clock.monotonic,
        wall=lambda: NOW,
        sleep=clock.sleep,
    )

    result = gate.run()

    assert clock.now == 0.0
    assert result == GateResult(
        passed=False,
        services=[
            ServiceVerdict(
                "web", False, "undecided when the gate stopped: health starting"
            ),
            ServiceVerdict("job", False, "exited with code 2"),
        ],
        seconds=0.0,
    )


def test_health_limits_from_mapping_ignores_unknown_keys():
    limits = HealthLimits.from_mapping({"deadline_s": 30, "stable_s": "4", "x": 1})
    assert limits == HealthLimits(deadline_s=30.0, stable_s=4.0)


def gate_for(project, limits=QUICK_LIMITS):
    names = [s.name for s in project.services()]
    return HealthGate(project.containers, names, limits).run()


@pytest.mark.docker
def test_gate_fails_naming_a_service_that_never_becomes_healthy(compose_factory):
    sick = web_service(
        free_port(),
        healthcheck={"test": ["CMD", "false"], "interval": "1s", "retries": 1},
    )
    project = compose_factory.make(
        {"web": web_service(free_port()), "sick": sick},
        files={"front/index.html": "x\n"},
    )
    project.up()

    result = gate_for(project, HealthLimits(deadline_s=5, stable_s=2, poll_s=0.2))

    verdicts = {v.service: v for v in result.services}
    assert not result.passed
    assert verdicts["web"].passed
    assert not verdicts["sick"].passed
    assert "unhealthy" in verdicts["sick"].reason
    assert "not passed within 5s" in verdicts["sick"].reason


@pytest.mark.docker
def test_gate_passes_a_one_shot_init_service_that_exits_zero(compose_factory):
    web = web_service(
        free_port(),
        depends_on={"init": {"condition": "service_completed_successfully"}},
    )
    project = compose_factory.make(
        {
            "init": {
                "image": BASE_IMAGE,
                "init": True,
                "restart": "no",
                "command": ["sh", "-c", "sleep 1; echo done > /tmp/x"],
            },
            "web": web,
        },
        files={"front/index.html": "x\n"},
    )
    project.up()

    result = gate_for(project)

    assert result.passed, result.services
    assert ServiceVerdict("init", True, "completed (exit code 0)") in result.services


@pytest.mark.docker
def test_gate_fails_a_one_shot_service_that_exits_nonzero(compose_factory):
    project = compose_factory.make(
        {"init": {"image": BASE_IMAGE, "init": True, "command": ["sh", "-c", "exit 3"]}}
    )
    project.up()

    result = gate_for(project)

    assert result.services == [ServiceVerdict("init", False, "exited with code 3")]


@pytest.mark.docker
def test_gate_passes_a_slow_starting_service_without_healthcheck(compose_factory):
    port = free_port()
    slow = web_service(
        port,
        healthcheck={"disable": True},
        command=["sh", "-c", "sleep 2; exec httpd -f -p 80 -h /www"],
    )
    project = compose_factory.make({"slow": slow}, files={"front/index.html": "x\n"})
    project.up()

    result = gate_for(project, HealthLimits(deadline_s=30, stable_s=3, poll_s=0.2))

    assert result.passed, result.services
    assert "no healthcheck" in result.services[0].reason


@pytest.mark.docker
def test_gate_passes_a_service_failing_its_check_twice_then_healthy(compose_factory):
    # The probe counts its runs in /tmp/n and fails the first two; with
    # retries 1 the engine reports the service unhealthy before it recovers.
    probe = (
        "n=$$(cat /tmp/n 2>/dev/null || echo 0); echo $$((n+1)) > /tmp/n; [ $$n -ge 2 ]"
    )
    flaky = web_service(
        free_port(),
        healthcheck={"test": ["CMD-SHELL", probe], "interval": "1s", "retries": 1},
    )
    project = compose_factory.make({"flaky": flaky}, files={"front/index.html": "x\n"})
    project.up()

    result = gate_for(project)

    container = project.containers()[0]
    assert result.passed, result.services
    assert result.services[0].reason == "healthy"
    assert container.restart_count == 0
    assert int(_exec(container.id, "cat /tmp/n", compose_factory.engine)) >= 3


@pytest.mark.docker
def test_gate_fails_a_service_that_keeps_restarting(compose_factory):
    project = compose_factory.make(
        {
            "loop": {
                "image": BASE_IMAGE,
                "init": True,
                "restart": "always",
                "command": ["sh", "-c", "sleep 0.5; exit 1"],
            }
        }
    )
    project.up()

    result = gate_for(project, HealthLimits(deadline_s=4, stable_s=2, poll_s=0.2))

    assert not result.passed
    assert "not passed within 4s" in result.services[0].reason
    assert "restart" in result.services[0].reason


def _exec(container_id: str, command: str, engine) -> str:
    container = engine.client.containers.get(container_id)
    return container.exec_run(["sh", "-c", command]).output.decode().strip()
