"""The health gate: is the version just started really running?

The existing client counted a health timeout as success, was satisfied by any
one running container, and could never call a service without a HEALTHCHECK
healthy. The gate here polls the engine's real container state until every
service is judged or the deadline passes, and names each service and why.

Rules, per container of a service (all of a service's containers must pass):

- running with a healthcheck: passes when ``healthy``. ``starting`` and
  ``unhealthy`` are waited on until the deadline, so a service that fails its
  check a few times and then recovers within the deadline passes.
- running without a healthcheck: passes once it has run ``stable_s`` seconds
  since its last (re)start. A restart starts the window again.
- exited with code 0 and a restart policy that leaves it exited (``no``,
  compose's default, or ``on-failure``): a one-shot service that completed;
  passes.
- exited non-zero with restart policy ``no``: fails at once; the engine will
  not restart it.
- restarting, or exited while its policy restarts it, or created and not
  started: waited on; it fails at the deadline.

The gate ends as soon as every service passed, or as soon as one failed for
good (no point waiting: the upgrade is rolled back either way); services not
judged by then are reported as undecided, with their last state.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

import msgspec

from engine.dockerapi import ContainerState
from journal.records import ServiceVerdict

logger = logging.getLogger(__name__)

PASSED = "passed"
FAILED = "failed"
WAITING = "waiting"

# Restart policies under which an exited container stays exited.
STAYS_EXITED_ON_SUCCESS = ("", "no", "on-failure")


class HealthLimits(msgspec.Struct, frozen=True, kw_only=True):
    """How long the gate waits, in seconds (``[health]`` in config.toml).

    Attributes:
        deadline_s: how long every service has to pass.
        stable_s: how long a service without a healthcheck must run without
            a restart to pass.
        poll_s: time between two looks at the engine.
        stop_timeout_s: how long a stopping container gets after SIGTERM.
    """

    deadline_s: float = 180.0
    stable_s: float = 10.0
    poll_s: float = 1.0
    stop_timeout_s: int = 30

    @classmethod
    def from_mapping(cls, values: dict) -> HealthLimits:
        """Limits from a config table; unknown keys are ignored, types checked.

        Raises:
            msgspec.ValidationError: a value has the wrong type.
        """
        known = {k: v for k, v in values.items() if k in cls.__struct_fields__}
        return msgspec.convert(known, cls, strict=False)


class GateResult(msgspec.Struct, frozen=True):
    """The gate's verdict: ``passed``, each service's verdict, time taken.

    A ``GateResult`` is true exactly when the gate passed. ``error`` is set
    when the services could not even be looked at (recovery only).
    """

    passed: bool
    services: list[ServiceVerdict]
    seconds: float = 0.0
    error: str = ""

    def __bool__(self) -> bool:
        return self.passed

    def failed(self) -> list[ServiceVerdict]:
        return [v for v in self.services if not v.passed]


def judge_container(c: ContainerState, now: float, stable_s: float) -> tuple[str, str]:
    """One container's standing: (PASSED, FAILED or WAITING, reason).

    Args:
        c: the container's state.
        now: the current time, epoch seconds (same clock as ``started_at``).
        stable_s: the stable window for containers without a healthcheck.
    """
    policy = c.restart_policy or "no"
    if c.status == "running" and c.health is not None:
        if c.health == "healthy":
            return PASSED, "healthy"
        reason = f"health {c.health}"
        if c.restart_count:
            reason += f", {c.restart_count} restarts"
        if c.failing_streak:
            reason += f", failing streak {c.failing_streak}"
        if c.health_output:
            reason += f", last probe said: {c.health_output}"
        return WAITING, reason
    if c.status == "running":
        ran = now - c.started_at if c.started_at else 0.0
        if ran >= stable_s:
            return PASSED, f"running {ran:.0f}s without a restart (no healthcheck)"
        restarts = f", {c.restart_count} restarts" if c.restart_count else ""
        return WAITING, f"running {ran:.0f}s of a {stable_s:g}s stable window{restarts}"
    if c.status in ("exited", "dead"):
        if c.exit_code == 0 and policy in STAYS_EXITED_ON_SUCCESS:
            return PASSED, "completed (exit code 0)"
        if policy == "no":
            return FAILED, f"exited with code {c.exit_code}"
        return WAITING, f"exited with code {c.exit_code} (restart policy {policy})"
    if c.status == "restarting":
        return WAITING, (
            f"restarting after exit code {c.exit_code} ({c.restart_count} restarts)"
        )
    return WAITING, c.status


def judge_service(
    name: str, containers: Sequence[ContainerState], now: float, stable_s: float
) -> tuple[str, str]:
    """A service's standing from all its containers (see ``judge_container``)."""
    if not containers:
        return WAITING, "no container"
    results = [judge_container(c, now, stable_s) for c in containers]
    for wanted in (FAILED, WAITING):
        for (standing, reason), c in zip(results, containers, strict=True):
            if standing == wanted:
                return standing, _with_name(reason, c, len(containers))
    return PASSED, results[0][1]


def _with_name(reason: str, c: ContainerState, count: int) -> str:
    return f"{c.name}: {reason}" if count > 1 else reason


class HealthGate:
    """Polls the project's containers until every service is judged.

    Args:
        containers: returns the project's current containers (one engine
            look per call), for example ``ComposeProject.containers``.
        services: names of the services to judge.
        limits: the deadline, stable window and poll interval.
        clock: monotonic seconds, for the deadline.
        wall: epoch seconds, compared with container start times.
        sleep: waits between two polls.
    """

    def __init__(
        self,
        containers: Callable[[], list[ContainerState]],
        services: Sequence[str],
        limits: HealthLimits,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.containers = containers
        self.services = list(services)
        self.limits = limits
        self.clock = clock
        self.wall = wall
        self.sleep = sleep

    def run(self) -> GateResult:
        """Poll until all passed, one failed, or the deadline; return the verdict."""
        started = self.clock()
        deadline = started + self.limits.deadline_s
        while True:
            standings = self.look()
            over = self.clock() >= deadline
            if _decided(standings.values()) or over:
                break
            logger.debug("health gate waiting: %s", _summary(standings))
            self.sleep(min(self.limits.poll_s, max(0.0, deadline - self.clock())))
        elapsed = self.clock() - started
        verdicts = [self._verdict(n, s, over) for n, s in standings.items()]
        passed = all(v.passed for v in verdicts)
        logger.info(
            "health gate %s after %.1fs: %s",
            "passed" if passed else "failed",
            elapsed,
            _summary(standings),
        )
        return GateResult(passed=passed, services=verdicts, seconds=elapsed)

    def look(self) -> dict[str, tuple[str, str]]:
        """Each service's current standing, from one look at the engine."""
        by_service: dict[str, list[ContainerState]] = {s: [] for s in self.services}
        for c in self.containers():
            if c.service in by_service:
                by_service[c.service].append(c)
        now = self.wall()
        return {
            name: judge_service(name, found, now, self.limits.stable_s)
            for name, found in by_service.items()
        }

    def _verdict(
        self, name: str, standing: tuple[str, str], over: bool
    ) -> ServiceVerdict:
        state, reason = standing
        if state == WAITING and over:
            reason = f"{reason}; not passed within {self.limits.deadline_s:g}s"
        elif state == WAITING:
            reason = f"undecided when the gate stopped: {reason}"
        return ServiceVerdict(service=name, passed=state == PASSED, reason=reason)


def _decided(standings) -> bool:
    states = [s for s, _ in standings]
    return FAILED in states or all(s == PASSED for s in states)


def _summary(standings: dict[str, tuple[str, str]]) -> str:
    return (
        "; ".join(f"{n} {s} ({r})" for n, (s, r) in standings.items()) or "no services"
    )
