"""The services facade the upgrade pipeline, recovery and the CLI call.

One ``Services`` object stands for the compose project of one deployment.
An upgrade calls it in this order, around the file transaction::

    services = Services(root, config, journal, no_services=opts.no_services)
    services.preflight()                      # before anything changes
    services.load_images(tx.id, staged_dir)   # before any service stops
    services.stop(tx.id)
    tx.apply(...)
    services.start(tx.id)
    if not services.gate(tx.id, "upgrade"):   # a false GateResult: failed
        services.stop(tx.id)
        tx.roll_back(...)
        services.restore_images(tx.id)
        services.start(tx.id)
        services.gate(tx.id, "rollback")
        services.cleanup_images(tx.id, rolled_back=True)
    ...
    tx.commit(...)
    services.cleanup_images(tx.id)

Every step is journaled with the transaction id, before or after the Docker
action as recovery needs it:

- ``ImagesLoaded`` after the images are loaded (the kept tags in the engine
  cover a crash before it, see ``engine.images``);
- ``ServicesStopping`` before a stop and ``ServicesStopped`` after it, so a
  crash in the middle of a stop is still known;
- ``ServicesStarted`` after ``up -d``; ``HealthVerdict`` after each gate.

``recover(tx_state)`` is the hook crash recovery calls once it has rolled a
transaction's files back or forward: it restores image tags when rolling
back, and brings the services up again when the transaction had reached a
stop. With ``no_services`` every method does nothing (and says so at DEBUG).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import msgspec

from engine import images
from engine.compose import ComposeProject, ServiceSpec, resolve_project_name
from engine.config import ConfigError, DeploymentConfig, load_config
from engine.dockerapi import (
    ComposeCommandError,
    ComposeFileError,
    ContainerState,
    DockerEngine,
    EngineUnreachableError,
)
from engine.errors import ServicesError
from engine.health import GateResult, HealthGate, HealthLimits
from journal.crashpoints import crashpoint
from journal.records import (
    HealthVerdict,
    ImagesLoaded,
    ServicesStarted,
    ServicesStopped,
    ServicesStopping,
)

logger = logging.getLogger(__name__)

FORWARD_STATUSES = ("decided", "committed")


class ServiceStatus(msgspec.Struct, frozen=True):
    """One service of the compose file and its containers, for display."""

    name: str
    restart: str
    healthcheck: bool | None
    containers: list[ContainerState]


class Services:
    """The compose services of one deployment (see the module doc).

    Args:
        root: the deployment root.
        config: the deployment's config; read from ``root`` when None.
        journal: where steps are journaled; None journals nothing (read-only
            use, such as ``services status``).
        no_services: leave Docker alone entirely (``--no-services``).
        project_name: an explicit compose project name (``-p``).
        engine: an engine connection to use instead of connecting on demand.
        limits: health and stop limits; from ``[health]`` in config.toml
            when None.

    Raises:
        ConfigError: a ``[health]`` value has the wrong type.
    """

    def __init__(
        self,
        root: Path,
        config: DeploymentConfig | None = None,
        journal=None,
        no_services: bool = False,
        *,
        project_name: str | None = None,
        engine: DockerEngine | None = None,
        limits: HealthLimits | None = None,
    ) -> None:
        self.root = Path(root)
        self.config = config or load_config(self.root)
        self.journal = journal
        self.no_services = no_services
        self.limits = limits or _limits(self.config)
        compose_file = self.config.compose_file or Path("docker/docker-compose.yml")
        self.compose_file = self.config.root / compose_file
        self._project_name = project_name
        self._engine = engine
        self._project: ComposeProject | None = None

    @property
    def project(self) -> ComposeProject:
        """The compose project (its name is resolved once, on first use)."""
        if self._project is None:
            name = resolve_project_name(
                self.compose_file, self._project_name, self.config.project_name
            )
            self._project = ComposeProject(self.compose_file, name, engine=self._engine)
        return self._project

    @property
    def active(self) -> bool:
        """Whether there is anything to drive: services on and a compose file."""
        if self.no_services:
            logger.debug("services left alone (--no-services)")
            return False
        if not self.compose_file.is_file():
            logger.debug("no compose file at %s: no services", self.compose_file)
            return False
        return True

    def preflight(self) -> None:
        """Check, before anything changes, that the services can be driven.

        The engine must answer, a compose command must exist, and compose
        must accept the compose file. Nothing is checked with
        ``no_services`` or when the deployment has no compose file.

        Raises:
            EngineUnreachableError: no Docker engine answers (hint: pass
                --no-services).
            ComposeNotFoundError: no compose command.
            ComposeCommandError: compose rejects the compose file.
        """
        if not self.active:
            return
        project = self.project
        project.connect()
        project.config()
        logger.debug("services preflight passed for project %s", project.name)

    def load_images(self, tx: str, staged_dir: Path) -> ImagesLoaded | None:
        """Load the package's image tars; keep the tags they may move.

        Call before any service stops. Tars are taken from
        ``<staged_dir>/images/`` (or ``<staged_dir>/docker/images/``); tars
        for another architecture are skipped.

        Args:
            tx: the transaction id.
            staged_dir: the staged package tree.

        Returns:
            The journaled ``ImagesLoaded`` event; None with ``no_services``.

        Raises:
            ImageLoadError: a tar is broken or rejected; no tag was changed.
        """
        if self.no_services:
            return None
        began = time.monotonic()
        tars, skipped = images.select_image_tars(
            _images_dir(Path(staged_dir)), images.host_arch(self.config.arch)
        )
        for path in skipped:
            logger.info("skipping %s: built for another architecture", path.name)
        if not tars:
            result = images.ImageLoad()
        else:
            refs = self.project.image_refs() if self.project.exists() else []
            result = images.load_images(self.project.engine, tars, refs, tx)
        crashpoint("services.images.loaded")
        event = ImagesLoaded(
            tx=tx,
            images=result.loaded,
            previous=result.previous,
            kept_tags=result.kept,
            seconds=time.monotonic() - began,
            at=time.time(),
        )
        self._record(event)
        return event

    def stop(self, tx: str | None) -> ServicesStopped | None:
        """Stop every service (reverse dependency order, with the stop timeout).

        Journals ``ServicesStopping`` before and ``ServicesStopped`` after.
        When compose cannot act (the compose file is broken or gone, as it
        may be in the middle of a rollback), the project's containers are
        stopped directly through the engine, found by their project label.

        Returns:
            The ``ServicesStopped`` event; None when there is nothing to drive.

        Raises:
            ServicesError: the engine failed.
        """
        if self.no_services:
            return None
        if not self.compose_file.is_file() and not self._has_running_containers():
            return None
        project = self.project
        running = project.running_services()
        self._record(
            ServicesStopping(
                tx=tx, project=project.name, services=running, at=time.time()
            )
        )
        crashpoint("services.stop.intended")
        began = time.monotonic()
        self._stop_project()
        event = ServicesStopped(
            tx=tx,
            project=project.name,
            services=running,
            seconds=time.monotonic() - began,
            at=time.time(),
        )
        self._record(event)
        crashpoint("services.stopped")
        logger.info(
            "stopped services of %s: %s", project.name, ", ".join(running) or "none"
        )
        return event

    def _stop_project(self) -> None:
        project = self.project
        timeout_s = self.limits.stop_timeout_s
        try:
            project.stop(timeout_s=timeout_s)
        except (ComposeCommandError, ComposeFileError) as exc:
            logger.warning(
                "compose cannot stop project %s (%s); stopping its containers "
                "through the engine",
                project.name,
                exc,
            )
            project.engine.stop_containers(project.name, timeout_s)

    def _has_running_containers(self) -> bool:
        """Whether the project has running containers (False without engine)."""
        try:
            return bool(self.project.running_services())
        except EngineUnreachableError:
            return False

    def start(self, tx: str | None) -> ServicesStarted | None:
        """``up -d`` the compose file as it is now; journal ``ServicesStarted``.

        Returns:
            The event; None when there is nothing to drive.

        Raises:
            ComposeCommandError: ``up`` failed (for example a dependency's
                healthcheck failed while compose waited on it).
        """
        if not self.active:
            return None
        project = self.project
        project.connect()  # a clear EngineUnreachableError, not compose's traceback
        began = time.monotonic()
        project.up()
        event = ServicesStarted(
            tx=tx,
            project=project.name,
            services=[s.name for s in project.services()],
            seconds=time.monotonic() - began,
            at=time.time(),
        )
        self._record(event)
        crashpoint("services.started")
        logger.info("started services of %s", project.name)
        return event

    def gate(self, tx: str | None, phase: str = "upgrade") -> GateResult:
        """Wait until every service is healthy, completed or stable, or fails.

        Args:
            tx: the transaction id (the verdict is journaled when given).
            phase: ``upgrade`` or ``rollback``, recorded with the verdict.

        Returns:
            The verdict, true when passed; ``.services`` names each service
            and why. Passes at once when there is nothing to drive.
        """
        if not self.active:
            return GateResult(passed=True, services=[])
        project = self.project
        names = [s.name for s in project.services()]
        result = HealthGate(project.containers, names, self.limits).run()
        if tx is not None:
            self._record(
                HealthVerdict(
                    tx=tx,
                    passed=result.passed,
                    phase=phase,
                    services=result.services,
                    seconds=result.seconds,
                    at=time.time(),
                )
            )
        crashpoint("services.gate.judged")
        return result

    def restore_images(self, tx: str) -> list[str]:
        """Point the tags ``tx`` moved back at their previous images.

        Uses the transaction's ``ImagesLoaded`` record, or the kept tags in
        the engine when a crash came before that record. Call after the new
        containers are stopped and before ``start``; call
        ``cleanup_images(tx, rolled_back=True)`` once the old version runs.
        Safe to call again.

        Returns:
            The tags moved back.

        Raises:
            ImageRestoreError: some tags could not be restored.
        """
        if self.no_services:
            return []
        previous, _, _ = self._kept_images(tx)
        if not previous:
            return []
        return images.restore_images(self.project.engine, previous)

    def cleanup_images(self, tx: str, *, rolled_back: bool = False) -> list[str]:
        """Remove the tags kept for ``tx``, after its commit or its rollback.

        After a commit the old images lose their kept tag (and go, when
        nothing else names or uses them). After a rollback or an abort
        (``rolled_back=True``, once the old version runs again) the moved
        tags are first restored (a no-op when ``restore_images`` already
        did it), then the tags the load created go too. A tag whose image a
        container still uses stays.

        Returns:
            The tags that stayed.

        Raises:
            ImageRestoreError: rolling back, some tags could not be restored.
        """
        if self.no_services:
            return []
        previous, kept, created = self._kept_images(tx)
        doomed = [*kept.values(), *(created if rolled_back else ())]
        if not doomed:
            return []
        if rolled_back:
            images.restore_images(self.project.engine, previous)
        stayed = images.remove_tags(self.project.engine, doomed)
        if stayed:
            logger.info(
                "transaction %s: image tags still in use kept: %s",
                tx,
                ", ".join(stayed),
            )
        return stayed

    def recover(self, tx_state, direction: str | None = None) -> GateResult | None:
        """Bring services in line with files just rolled back or forward.

        Called by crash recovery after the transaction's files are restored.
        Rolling back, the image tags the transaction moved are restored. If
        the transaction had reached a stop, the services are brought up
        again (stopped first, unless the new version had already been
        started and the transaction rolls forward) and health-gated. Safe to
        call again for the same transaction.

        A Docker failure here does not raise: the files are already
        consistent, so it is logged as a WARNING (with the next step) and
        returned as a failed result whose ``error`` says what happened.

        Args:
            tx_state: the transaction's ``TxState`` (``tx``, ``status``).
            direction: ``forward`` or ``back``; from ``tx_state.status``
                (decided or committed: forward) when None.

        Returns:
            The gate's verdict when services were brought up (or a failed
            result when Docker failed), else None.
        """
        tx = tx_state.tx
        if self.no_services:
            logger.warning("transaction %s: services not recovered (--no-services)", tx)
            return None
        forward = (direction or _direction(tx_state)) == "forward"
        events = [e for _, e in self.journal.tx_records(tx)] if self.journal else []
        try:
            return self._recover(tx, events, forward)
        except ServicesError as exc:
            logger.warning(
                "transaction %s: services could not be brought back: %s; next: "
                "once Docker works, run 'updock services start'",
                tx,
                exc,
            )
            return GateResult(passed=False, services=[], error=str(exc))

    def _recover(self, tx: str, events: list, forward: bool) -> GateResult | None:
        if not forward:
            self.restore_images(tx)
        steps = [e for e in events if isinstance(e, _SERVICE_STEPS)]
        if not steps or not self.active:
            self.cleanup_images(tx, rolled_back=not forward)
            return None

        project = self.project
        if not (forward and isinstance(steps[-1], ServicesStarted)):
            self._stop_project()
        self.start(tx)
        result = self.gate(tx, "upgrade" if forward else "rollback")
        self.cleanup_images(tx, rolled_back=not forward)
        logger.warning(
            "transaction %s: services of %s brought up again after rolling %s; "
            "health gate %s",
            tx,
            project.name,
            "forward" if forward else "back",
            "passed" if result.passed else "FAILED",
        )
        return result

    def _engine_answers(self) -> bool:
        """Whether the engine answers; a crash may have left kept tags there.

        Without an ``ImagesLoaded`` record only the engine knows whether the
        transaction kept tags; if it does not answer now, they stay (a
        double fault: the crash, then no engine at recovery).
        """
        try:
            self.project.connect()
        except EngineUnreachableError:
            logger.debug("engine unreachable: kept image tags not looked for")
            return False
        return True

    def status(self) -> list[ServiceStatus]:
        """Each service of the compose file with its containers' state.

        Containers of services no longer in the compose file are listed too,
        under their service label.
        """
        project = self.project
        containers = project.containers()
        specs = {s.name: s for s in project.services()}
        for c in containers:
            specs.setdefault(c.service, ServiceSpec(name=c.service, restart="?"))
        return [
            ServiceStatus(
                name=name,
                restart=spec.restart,
                healthcheck=spec.healthcheck,
                containers=[c for c in containers if c.service == name],
            )
            for name, spec in specs.items()
        ]

    def _kept_images(self, tx: str) -> tuple[dict[str, str], dict[str, str], list[str]]:
        """(previous ids, kept tags, tags created) of ``tx``'s image load.

        From the transaction's ``ImagesLoaded`` record; without one (a crash
        before it was journaled, or no load at all), from the kept tags the
        engine holds, if it answers.
        """
        records = self.journal.tx_records(tx) if self.journal else []
        loads = [e for _, e in records if isinstance(e, ImagesLoaded)]
        if loads:
            last = loads[-1]
            created = images.created_tags(last.images, last.previous)
            return dict(last.previous), dict(last.kept_tags), created
        if not self.active or not self._engine_answers():
            return {}, {}, []
        found = images.find_kept(self.project.engine, tx)
        previous = {ref: image_id for ref, (_, image_id) in found.items()}
        kept = {ref: kept_ref for ref, (kept_ref, _) in found.items()}
        return previous, kept, []

    def _record(self, event) -> None:
        if self.journal is not None:
            self.journal.append(event)


_SERVICE_STEPS = (ServicesStopping, ServicesStopped, ServicesStarted)


def _direction(tx_state) -> str:
    return "forward" if tx_state.status in FORWARD_STATUSES else "back"


def _images_dir(staged_dir: Path) -> Path:
    for candidate in (staged_dir / "images", staged_dir / "docker" / "images"):
        if candidate.is_dir():
            return candidate
    return staged_dir / "images"


def _limits(config: DeploymentConfig) -> HealthLimits:
    try:
        return HealthLimits.from_mapping(config.health or {})
    except msgspec.ValidationError as exc:
        raise ConfigError(config.config_path, f"[health]: {exc}") from exc
