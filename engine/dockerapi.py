"""The one adapter between updock and Docker: the SDK and the compose CLI.

Everything that talks to the Docker engine (through the ``docker`` SDK) or
runs a compose command (as a subprocess) goes through this module, and every
foreign failure is translated here, with ``raise ... from exc``, into one of
the ``ServicesError`` subclasses below::

    ServicesError
    +-- EngineUnreachableError   no Docker engine answers
    +-- ComposeNotFoundError     neither ``docker compose`` nor ``docker-compose``
    +-- ComposeCommandError      a compose command exited non-zero
    +-- ComposeTimeoutError      a compose command ran past its deadline
    +-- ComposeFileError         the compose file is missing or unreadable
    +-- DockerApiError           the engine refused or failed a request
    +-- ImageLoadError           an image tar is broken or the engine rejects it
    +-- HealthGateFailedError    services did not become healthy

The rest of the services layer (``compose``, ``images``, ``health``,
``services``) works on the plain values defined here (``ContainerState``) and
never sees a ``docker`` or ``subprocess`` exception.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import subprocess
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path

import docker
import docker.errors
import msgspec
import requests.exceptions

from engine.errors import ServicesError

logger = logging.getLogger(__name__)

PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
ONEOFF_LABEL = "com.docker.compose.oneoff"

# How much of a failing command's stderr an error message carries.
STDERR_TAIL_CHARS = 2000
NO_SERVICES_HINT = (
    "start the Docker engine (dockerd), or pass --no-services to change files only"
)


class EngineUnreachableError(ServicesError):
    """No Docker engine answers on the configured socket or host."""

    hint = NO_SERVICES_HINT

    def __init__(self, detail: str) -> None:
        super().__init__(f"the Docker engine cannot be reached: {detail}")
        self.detail = detail


class ComposeNotFoundError(ServicesError):
    """Neither the ``docker compose`` plugin nor ``docker-compose`` runs."""

    hint = (
        "install the docker compose plugin or docker-compose, or pass "
        "--no-services to change files only"
    )

    def __init__(self, tried: Sequence[str]) -> None:
        super().__init__("no compose command found (tried: " + "; ".join(tried) + ")")
        self.tried = list(tried)


class ComposeCommandError(ServicesError):
    """A compose command exited with a non-zero status."""

    def __init__(self, argv: Sequence[str], returncode: int, stderr: str) -> None:
        tail = stderr.strip()[-STDERR_TAIL_CHARS:]
        super().__init__(
            f"'{' '.join(argv)}' failed with exit status {returncode}: {tail}"
        )
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr


class ComposeTimeoutError(ServicesError, TimeoutError):
    """A compose command did not finish before its deadline and was killed."""

    def __init__(self, argv: Sequence[str], seconds: float) -> None:
        super().__init__(f"'{' '.join(argv)}' did not finish within {seconds:g}s")
        self.argv = list(argv)
        self.seconds = seconds


class ComposeFileError(ServicesError):
    """The compose file is missing, unreadable or not a compose document."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"compose file {path}: {problem}")
        self.path = path
        self.problem = problem


class DockerApiError(ServicesError):
    """The Docker engine refused or failed a request."""

    def __init__(self, action: str, detail: str) -> None:
        super().__init__(f"Docker engine failed to {action}: {detail}")
        self.action = action
        self.detail = detail


class ImageLoadError(ServicesError):
    """An image tar cannot be loaded; nothing was stopped or changed."""

    # Not the family's hint: --no-services would install files that need
    # the image this tar failed to provide.
    hint = (
        "the package's image tar is damaged or was rejected; nothing was "
        "stopped or changed: get a package with a good image tar"
    )

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"image tar {path} cannot be loaded: {problem}")
        self.path = path
        self.problem = problem


class HealthGateFailedError(ServicesError):
    """Services did not pass the health gate; ``verdicts`` says why, each."""

    def __init__(self, project: str, verdicts: Sequence) -> None:
        failed = [f"{v.service}: {v.reason}" for v in verdicts if not v.passed]
        super().__init__(
            f"services of project {project} are not healthy: " + "; ".join(failed)
        )
        self.project = project
        self.verdicts = list(verdicts)


class ContainerState(msgspec.Struct, frozen=True):
    """What the engine reports about one container of a compose service.

    ``health`` is None when the container has no healthcheck (neither from
    the compose file nor from its image), else ``starting``, ``healthy`` or
    ``unhealthy``. ``started_at`` is epoch seconds, None when never started.
    """

    id: str
    name: str
    service: str
    status: str
    exit_code: int = 0
    started_at: float | None = None
    restart_count: int = 0
    restart_policy: str = "no"
    health: str | None = None
    failing_streak: int = 0
    health_output: str = ""
    image_id: str = ""


@contextlib.contextmanager
def translating(action: str) -> Iterator[None]:
    """Translate ``docker`` SDK and transport errors raised inside the block.

    Args:
        action: what was being done, for the message ("list containers").

    Raises:
        EngineUnreachableError: the engine did not answer.
        DockerApiError: the engine answered with an error.
    """
    try:
        yield
    except docker.errors.APIError as exc:
        raise DockerApiError(action, exc.explanation or str(exc)) from exc
    except (requests.exceptions.ConnectionError, ConnectionError) as exc:
        raise EngineUnreachableError(str(exc)) from exc
    except requests.exceptions.Timeout as exc:
        raise DockerApiError(action, f"no answer in time: {exc}") from exc
    except docker.errors.DockerException as exc:
        raise EngineUnreachableError(str(exc)) from exc


class DockerEngine:
    """A connection to the Docker engine, exposing only what updock needs."""

    def __init__(self, client: docker.DockerClient) -> None:
        self.client = client

    @classmethod
    def connect(cls, timeout_s: float = 300.0) -> DockerEngine:
        """Connect to the engine named by the environment and check it answers.

        Args:
            timeout_s: socket timeout of each API request.

        Raises:
            EngineUnreachableError: no engine answers.
        """
        with translating("connect"):
            client = docker.from_env(timeout=int(timeout_s))
            client.ping()
        return cls(client)

    def close(self) -> None:
        self.client.close()

    def project_containers(self, project: str) -> list[ContainerState]:
        """Every container of a compose project, running or not.

        Containers are found by the compose project label, never by name
        (compose v1 and v2 name them differently). One-off ``run`` containers
        are left out.
        """
        with translating(f"list the containers of project {project}"):
            found = self.client.api.containers(
                all=True, filters={"label": f"{PROJECT_LABEL}={project}"}
            )
            states = []
            for summary in found:
                labels = summary.get("Labels") or {}
                if labels.get(ONEOFF_LABEL, "False") == "True":
                    continue
                try:
                    attrs = self.client.api.inspect_container(summary["Id"])
                except docker.errors.NotFound:
                    continue  # removed between the listing and the inspect
                states.append(_container_state(attrs))
        return sorted(states, key=lambda s: (s.service, s.name))

    def stop_containers(self, project: str, timeout_s: int) -> list[str]:
        """Stop a project's running containers directly (compose unusable).

        Each gets ``timeout_s`` after SIGTERM. Compose's dependency order is
        not known here, so they are stopped one after the other.

        Returns:
            The names of the containers stopped.
        """
        stopped = []
        for state in self.project_containers(project):
            if state.status not in ("running", "restarting", "paused"):
                continue
            with translating(f"stop container {state.name}"):
                self.client.api.stop(state.id, timeout=timeout_s)
            stopped.append(state.name)
        return stopped

    def image_id(self, ref: str) -> str | None:
        """The id of the image a tag (or id) names, None when there is none."""
        with translating(f"inspect image {ref}"):
            try:
                return self.client.api.inspect_image(ref)["Id"]
            except docker.errors.ImageNotFound:
                return None

    def tag(self, image_id: str, ref: str) -> None:
        """Point tag ``ref`` (``repo:tag``) at ``image_id``, moving it if needed."""
        repository, tag = split_ref(ref)
        with translating(f"tag image {image_id} as {ref}"):
            self.client.api.tag(image_id, repository, tag, force=True)

    def remove_tag(self, ref: str) -> bool:
        """Remove tag ``ref``; the image goes too when nothing names or uses it.

        The engine refuses to remove the last tag of an image a container
        (even a stopped one) still uses: that tag stays, and the result is
        False. Compose v1 needs a stopped container's image to recreate it,
        so such an image must not be deleted. A tag already gone is removed.
        """
        with translating(f"remove tag {ref}"):
            try:
                self.client.api.remove_image(ref, force=False, noprune=False)
            except docker.errors.ImageNotFound:
                logger.debug("tag %s was already gone", ref)
            except docker.errors.APIError as exc:
                if exc.status_code != 409:
                    raise
                logger.info("tag %s stays: %s", ref, exc.explanation)
                return False
        return True

    def tags(self) -> dict[str, str]:
        """Every tag the engine holds, with the id of its image."""
        with translating("list images"):
            images = self.client.api.images()
        return {
            ref: image["Id"]
            for image in images
            for ref in image.get("RepoTags") or ()
            if ref != "<none>:<none>"
        }

    def load(self, path: Path) -> list[str]:
        """Load one image tar, streamed from disk; return the names it loaded.

        The names are tags (``repo:tag``), or image ids for an untagged image.

        Raises:
            ImageLoadError: the engine rejected the tar.
        """
        loaded = []
        with path.open("rb") as stream, translating(f"load {path}"):
            try:
                for chunk in self.client.api.load_image(stream, quiet=True):
                    if "errorDetail" in chunk or "error" in chunk:
                        detail = chunk.get("errorDetail") or {}
                        message = detail.get("message") or chunk.get("error")
                        raise ImageLoadError(path, str(message))
                    match = _LOADED.search(chunk.get("stream", ""))
                    if match:
                        loaded.append(match.group(2).strip())
            except docker.errors.APIError as exc:
                raise ImageLoadError(path, exc.explanation or str(exc)) from exc
            except requests.exceptions.ConnectionError as exc:
                # The engine may hang up while the tar is still being sent
                # when it rejects the tar; it is only unreachable if the
                # ping fails too.
                self.client.ping()
                raise ImageLoadError(path, f"the engine hung up: {exc}") from exc
        if not loaded:
            raise ImageLoadError(path, "the engine reported no image loaded")
        return loaded


_LOADED = re.compile(r"(^Loaded image ID: |^Loaded image: )(.+)$", re.MULTILINE)


def split_ref(ref: str) -> tuple[str, str]:
    """Split ``repo[:tag]`` into repository and tag (``latest`` when absent).

    A colon before the last slash belongs to a registry port, not a tag.
    """
    name, _, tag = ref.rpartition(":")
    if not name or "/" in tag:
        return ref, "latest"
    return name, tag


def normalise_ref(ref: str) -> str:
    """A tag spelled the way the engine lists it (``RepoTags``).

    ``nginx``, ``nginx:latest`` and ``docker.io/library/nginx:latest`` name
    the same tag; the engine lists it as ``nginx:latest``.
    """
    repository, tag = split_ref(ref)
    for prefix in ("docker.io/", "index.docker.io/"):
        repository = repository.removeprefix(prefix)
    if repository.startswith("library/") and repository.count("/") == 1:
        repository = repository.removeprefix("library/")
    return f"{repository}:{tag}"


def _container_state(attrs: dict) -> ContainerState:
    state = attrs.get("State") or {}
    host = attrs.get("HostConfig") or {}
    config = attrs.get("Config") or {}
    labels = config.get("Labels") or {}
    health = state.get("Health")
    test = (config.get("Healthcheck") or {}).get("Test") or []
    has_check = bool(health) and bool(test) and test[0] != "NONE"
    log = (health or {}).get("Log") or []
    return ContainerState(
        id=attrs["Id"],
        name=attrs.get("Name", "").lstrip("/"),
        service=labels.get(SERVICE_LABEL, ""),
        status=state.get("Status", "unknown"),
        exit_code=int(state.get("ExitCode") or 0),
        started_at=_epoch(state.get("StartedAt")),
        restart_count=int(attrs.get("RestartCount") or 0),
        restart_policy=((host.get("RestartPolicy") or {}).get("Name") or "no"),
        health=health.get("Status") if has_check else None,
        failing_streak=int((health or {}).get("FailingStreak") or 0),
        health_output=(log[-1].get("Output") or "").strip()[-200:] if log else "",
        image_id=attrs.get("Image", ""),
    )


def _epoch(stamp: str | None) -> float | None:
    """Epoch seconds of an engine timestamp; None for the zero time."""
    if not stamp or stamp.startswith("0001-01-01"):
        return None
    # The engine writes nanoseconds; datetime takes at most microseconds.
    stamp = re.sub(r"(\.\d{6})\d+", r"\1", stamp)
    return datetime.fromisoformat(stamp).timestamp()


def run_command(
    argv: Sequence[str],
    *,
    cwd: Path | None = None,
    timeout_s: float,
    env: dict[str, str] | None = None,
) -> str:
    """Run a compose (or docker CLI) command; return its standard output.

    Args:
        argv: the command and its arguments.
        cwd: working folder.
        timeout_s: the command is killed (SIGKILL) when it runs longer.
        env: extra environment variables, on top of this process's.

    Raises:
        ComposeNotFoundError: the program does not exist.
        ComposeTimeoutError: it ran past ``timeout_s``.
        ComposeCommandError: it exited non-zero.
    """
    logger.debug("running %s (cwd %s)", " ".join(argv), cwd)
    try:
        done = subprocess.run(
            list(argv),
            cwd=cwd,
            env={**os.environ, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except FileNotFoundError as exc:
        raise ComposeNotFoundError([argv[0]]) from exc
    except subprocess.TimeoutExpired as exc:
        raise ComposeTimeoutError(argv, timeout_s) from exc
    if done.returncode != 0:
        raise ComposeCommandError(argv, done.returncode, done.stderr)
    return done.stdout
