"""One compose project: its name, its services, and the compose commands.

Compose itself is driven through its command line, because the Docker SDK has
no compose logic: the ``docker compose`` v2 plugin when it answers, else the
``docker-compose`` v1 program. The choice is made once per process. The
existing client fell back to v1 only when spawning ``docker`` failed, so a
missing plugin (``docker`` present, ``compose`` unknown) broke it; here the
fallback follows whether ``docker compose version`` succeeds.

The project name is resolved the way compose resolves it, with our config in
between: an explicit ``-p`` name, ``[docker] project_name`` in config.toml,
``COMPOSE_PROJECT_NAME`` (environment, then the project's ``.env``), the
compose file's top-level ``name:``, else the compose file's folder name. The
resolved name is always passed with ``-p``, so v1 (which rejects a top-level
``name:`` key) and v2 act on the same project, and containers are found by
the ``com.docker.compose.project`` label, never by container name.

The service model comes from ``compose config``: the file after ``.env``
interpolation and defaults, exactly as compose will use it. It is read again
whenever the compose file or ``.env`` changed, since an upgrade replaces them
(the existing client parsed the file once per run and then acted on a stale
model).
"""

from __future__ import annotations

import functools
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

import msgspec
import yaml

from engine.dockerapi import (
    ComposeCommandError,
    ComposeFileError,
    ComposeNotFoundError,
    ContainerState,
    DockerEngine,
    normalise_ref,
    run_command,
)

logger = logging.getLogger(__name__)

VERSION_TIMEOUT_S = 20.0
V1_NAME_KEY_HINT = (
    "docker-compose v1 does not accept a top-level 'name:' key: remove it and "
    "set [docker] project_name in config.toml instead"
)


class ComposeCli(msgspec.Struct, frozen=True):
    """The compose command line to run: ``argv`` is its prefix."""

    argv: tuple[str, ...]
    version: str

    @property
    def is_v2(self) -> bool:
        return self.argv[:2] == ("docker", "compose")


@functools.cache
def detect_compose_cli() -> ComposeCli:
    """The compose command of this machine: v2 plugin first, else v1.

    Detected once per process (the answer is cached).

    Raises:
        ComposeNotFoundError: neither command runs.
    """
    tried = []
    for argv in (("docker", "compose"), ("docker-compose",)):
        try:
            out = run_command(
                [*argv, "version", "--short"], timeout_s=VERSION_TIMEOUT_S
            )
        except ComposeNotFoundError:
            tried.append(f"{' '.join(argv)}: not installed")
            continue
        except ComposeCommandError as exc:
            tried.append(f"{' '.join(argv)}: exit status {exc.returncode}")
            continue
        cli = ComposeCli(argv=argv, version=out.strip())
        logger.debug("compose command: %s (version %s)", " ".join(argv), cli.version)
        return cli
    raise ComposeNotFoundError(tried)


class ServiceSpec(msgspec.Struct, frozen=True):
    """One service of the resolved compose file.

    ``restart`` is the restart policy (``no`` when absent, compose's default).
    ``healthcheck`` is True or False when the compose file decides, None when
    the image's own HEALTHCHECK (if any) applies.
    """

    name: str
    image: str | None = None
    restart: str = "no"
    healthcheck: bool | None = None
    depends_on: tuple[str, ...] = ()


def normalise_project_name(name: str) -> str:
    """A project name as compose stores it in its labels.

    Compose lowercases the name and keeps only ``a-z``, ``0-9``, ``_`` and
    ``-``; it must start with a letter or digit.
    """
    cleaned = re.sub(r"[^a-z0-9_-]", "", name.lower())
    return cleaned.lstrip("_-")


def resolve_project_name(
    compose_file: Path,
    explicit: str | None = None,
    configured: str | None = None,
) -> str:
    """The compose project name of a deployment (see the module doc for the order).

    Args:
        compose_file: the compose file.
        explicit: a name given on the command line (``-p``).
        configured: ``[docker] project_name`` from config.toml.

    Raises:
        ComposeFileError: no rule gives a usable name.
    """
    candidates = (
        explicit,
        configured,
        os.environ.get("COMPOSE_PROJECT_NAME"),
        _dotenv(compose_file.parent / ".env").get("COMPOSE_PROJECT_NAME"),
        _top_level_name(compose_file),
        compose_file.resolve().parent.name,
    )
    for candidate in candidates:
        name = normalise_project_name(candidate or "")
        if name:
            return name
    raise ComposeFileError(compose_file, "no usable compose project name")


def _dotenv(path: Path) -> dict[str, str]:
    """The plain ``KEY=value`` lines of an env file (quotes stripped)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):
        return {}
    except OSError as exc:
        raise ComposeFileError(path, f"cannot be read: {exc.strerror}") from exc
    values = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key and not key.startswith("#"):
            values[key.strip()] = value.strip().strip("'\"")
    return values


def _top_level_name(compose_file: Path) -> str | None:
    try:
        document = _load_yaml(compose_file, compose_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ComposeFileError(compose_file, f"cannot be read: {exc.strerror}") from exc
    name = document.get("name")
    return name if isinstance(name, str) else None


def _load_yaml(path: Path, text: str) -> dict:
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ComposeFileError(path, f"is not valid YAML: {exc}") from exc
    if not isinstance(document, dict):
        raise ComposeFileError(path, "is not a compose document (not a mapping)")
    return document


class ComposeProject:
    """A compose project: the compose file, its project name, and the engine.

    Args:
        compose_file: path of the compose file; its folder is the project folder
            (where compose reads ``.env``).
        name: the project name (already resolved; see ``resolve_project_name``).
        engine: the Docker engine connection, for container state; connected
            on first use when None.
        cli: the compose command; detected on first use when None.
        command_timeout_s: deadline of each compose command other than
            ``stop``/``down`` (those add their own stop timeout).
    """

    def __init__(
        self,
        compose_file: Path,
        name: str,
        *,
        engine: DockerEngine | None = None,
        cli: ComposeCli | None = None,
        command_timeout_s: float = 600.0,
    ) -> None:
        self.compose_file = Path(compose_file).absolute()
        self.name = name
        self.command_timeout_s = command_timeout_s
        self._engine = engine
        self._cli = cli
        self._config_key: tuple | None = None
        self._config: dict = {}

    def __repr__(self) -> str:
        return f"ComposeProject({self.name!r}, {str(self.compose_file)!r})"

    @property
    def folder(self) -> Path:
        return self.compose_file.parent

    @property
    def engine(self) -> DockerEngine:
        """The engine connection, made on first use (see ``connect``)."""
        return self.connect()

    def connect(self) -> DockerEngine:
        """Connect to the engine unless connected; return the connection.

        Raises:
            EngineUnreachableError: no engine answers.
        """
        if self._engine is None:
            self._engine = DockerEngine.connect()
        return self._engine

    @property
    def cli(self) -> ComposeCli:
        if self._cli is None:
            self._cli = detect_compose_cli()
        return self._cli

    def exists(self) -> bool:
        """Whether the compose file is there (a deployment may have none)."""
        return self.compose_file.is_file()

    def run(self, args: Sequence[str], timeout_s: float | None = None) -> str:
        """Run one compose subcommand on this project; return its stdout.

        Raises:
            ComposeNotFoundError, ComposeCommandError, ComposeTimeoutError.
        """
        argv = [*self.cli.argv, "-p", self.name, "-f", str(self.compose_file), *args]
        try:
            return run_command(
                argv, cwd=self.folder, timeout_s=timeout_s or self.command_timeout_s
            )
        except ComposeCommandError as exc:
            if not self.cli.is_v2 and "'name' does not match" in exc.stderr:
                exc.hint = V1_NAME_KEY_HINT
            raise

    def config(self) -> dict:
        """The resolved compose file (``compose config``), as a mapping.

        Read again when the compose file or ``.env`` changed since last time.

        Raises:
            ComposeFileError: the compose file is missing.
            ComposeCommandError: compose rejects the file.
        """
        key = (_stat_key(self.compose_file), _stat_key(self.folder / ".env"))
        if key[0] is None:
            raise ComposeFileError(self.compose_file, "does not exist")
        if key != self._config_key:
            text = self.run(["config"], timeout_s=VERSION_TIMEOUT_S * 3)
            self._config = _load_yaml(self.compose_file, text)
            self._config_key = key
        return self._config

    def services(self) -> list[ServiceSpec]:
        """The services ``up`` starts, in file order (``compose config``).

        Services behind a profile, and services scaled to 0, are left out:
        a plain ``up`` does not start them.
        """
        specs = []
        for name, body in (self.config().get("services") or {}).items():
            body = body or {}
            if body.get("profiles") or _scale(body) == 0:
                continue
            specs.append(_service_spec(name, body))
        return specs

    def image_refs(self) -> list[str]:
        """Every image tag the project's services use, normalised (``repo:tag``)."""
        refs = {normalise_ref(s.image) for s in self.services() if s.image}
        return sorted(refs)

    def containers(self) -> list[ContainerState]:
        """The project's containers, running or not, found by label."""
        return self.engine.project_containers(self.name)

    def running_services(self) -> list[str]:
        """Names of the services with at least one running container."""
        return sorted({c.service for c in self.containers() if c.status == "running"})

    def up(self, services: Sequence[str] = (), *, remove_orphans: bool = True) -> None:
        """``up -d``: create or recreate what changed, start everything.

        Containers of services no longer in the compose file are removed
        (``--remove-orphans``), so a service an upgrade dropped stops.
        """
        args = ["up", "-d"] + (["--remove-orphans"] if remove_orphans else [])
        self.run([*args, *services])

    def stop(self, services: Sequence[str] = (), *, timeout_s: int = 30) -> None:
        """Stop services (all when empty) in reverse dependency order.

        Each container gets ``timeout_s`` to exit after SIGTERM before SIGKILL.
        """
        # Compose stops one dependency level at a time; each may use the timeout.
        levels = len(services) or len(self.services()) or 1
        deadline = self.command_timeout_s + timeout_s * levels
        self.run(["stop", "-t", str(timeout_s), *services], timeout_s=deadline)

    def down(self, *, volumes: bool = False, timeout_s: int = 30) -> None:
        """``down``: stop and remove containers and networks (volumes too)."""
        args = ["down", "-t", str(timeout_s), "--remove-orphans"]
        self.run(args + (["-v"] if volumes else []), timeout_s=self.command_timeout_s)


def _stat_key(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _scale(body: dict) -> int | None:
    replicas = (body.get("deploy") or {}).get("replicas")
    value = body.get("scale", replicas)
    return int(value) if value is not None else None


def _service_spec(name: str, body: dict) -> ServiceSpec:
    restart = body.get("restart")
    if restart is False or restart is None:
        restart = "no"  # YAML 1.1 reads an unquoted `no` as false
    check = body.get("healthcheck")
    healthcheck = None
    if isinstance(check, dict):
        test = check.get("test") or []
        disabled = check.get("disable") or test in (["NONE"], "NONE")
        healthcheck = not disabled
    depends = body.get("depends_on") or ()
    return ServiceSpec(
        name=name,
        image=body.get("image"),
        restart=str(restart),
        healthcheck=healthcheck,
        depends_on=tuple(depends),
    )
