"""``updock services status|start|stop|restart``: the compose services by hand.

These commands go through the same ``engine.services.Services`` the upgrade
uses: the same project name, the same stop timeout, the same health gate.
``status`` only reads; the others take the deployment's lock (so they never
race an upgrade), recover anything a crash left unfinished, and journal
their steps.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import msgspec
from cyclopts import Parameter

from cli import exitcodes
from cli.apps import services_app
from cli.session import Session, open_deployment
from engine.config import load_config
from engine.dockerapi import HealthGateFailedError
from engine.services import Services, ServiceStatus

_json = msgspec.json.Encoder()
ProjectOption = Annotated[str | None, Parameter(name=["--project", "-p"])]


def _services(session: Session, project: str | None) -> Services:
    return Services(session.root, session.config, session.journal, project_name=project)


@contextmanager
def _opened(root: Path, project: str | None) -> Iterator[Services]:
    """The deployment's services, under its lock, after automatic recovery."""
    with open_deployment(root, services=lambda s: _services(s, project)) as session:
        yield _services(session, project)


@services_app.command(name="status")
def status_command(
    *, root: Path = Path("."), project: ProjectOption = None, json: bool = False
) -> int:
    """Show each compose service with its containers' state and health.

    Parameters
    ----------
    root
        The deployment root (the folder holding config.toml).
    project
        Compose project name; by default from config.toml, COMPOSE_PROJECT_NAME,
        the compose file, or its folder.
    json
        Print one JSON object per service.
    """
    services = Services(root, load_config(root), project_name=project)
    statuses = services.status()
    if json:
        for status in statuses:
            print(_json.encode(status).decode())
        return exitcodes.OK
    print(f"project {services.project.name} ({services.compose_file})")
    rows = [["SERVICE", "CONTAINER", "STATE", "HEALTH", "RESTARTS"]]
    rows += [row for status in statuses for row in _status_rows(status)]
    _print_columns(rows)
    return exitcodes.OK


def _status_rows(status: ServiceStatus) -> list[list[str]]:
    if not status.containers:
        return [[status.name, "-", "no container", "-", "-"]]
    rows = []
    for c in status.containers:
        state = c.status if c.status != "exited" else f"exited ({c.exit_code})"
        health = (c.health or "none") if c.status == "running" else "-"
        rows.append([status.name, c.name, state, health, str(c.restart_count)])
    return rows


def _print_columns(rows: list[list[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(
                cell.ljust(w) for cell, w in zip(row, widths, strict=True)
            ).rstrip()
        )


def _start(services: Services, wait: bool) -> None:
    """``up -d``, then (with ``wait``) the health gate, each verdict printed.

    Raises:
        HealthGateFailedError: a service did not pass, named with its reason.
    """
    services.start(None)
    if not wait:
        return
    result = services.gate(None)
    for verdict in result.services:
        mark = "ok  " if verdict.passed else "FAIL"
        print(f"{mark} {verdict.service}: {verdict.reason}")
    print(
        f"health gate {'passed' if result.passed else 'failed'} "
        f"in {result.seconds:.1f}s"
    )
    if not result.passed:
        raise HealthGateFailedError(services.project.name, result.services)


@services_app.command(name="start")
def start_command(
    *,
    root: Path = Path("."),
    project: ProjectOption = None,
    wait: bool = True,
) -> int:
    """Start the services (compose up -d) and wait until they pass the health gate.

    Parameters
    ----------
    root
        The deployment root (the folder holding config.toml).
    project
        Compose project name (see 'services status').
    wait
        Wait for the health gate; --no-wait returns once compose has started them.
    """
    with _opened(root, project) as services:
        _start(services, wait)
    return exitcodes.OK


@services_app.command(name="stop")
def stop_command(*, root: Path = Path("."), project: ProjectOption = None) -> int:
    """Stop the services, in reverse dependency order, with the stop timeout.

    Parameters
    ----------
    root
        The deployment root (the folder holding config.toml).
    project
        Compose project name (see 'services status').
    """
    with _opened(root, project) as services:
        stopped = services.stop(None)
    names = ", ".join(stopped.services) if stopped and stopped.services else "none"
    print(f"stopped: {names}")
    return exitcodes.OK


@services_app.command(name="restart")
def restart_command(
    *,
    root: Path = Path("."),
    project: ProjectOption = None,
    wait: bool = True,
) -> int:
    """Stop, then start the services and wait for the health gate.

    Parameters
    ----------
    root
        The deployment root (the folder holding config.toml).
    project
        Compose project name (see 'services status').
    wait
        Wait for the health gate; --no-wait returns once compose has started them.
    """
    with _opened(root, project) as services:
        services.stop(None)
        _start(services, wait)
    return exitcodes.OK
