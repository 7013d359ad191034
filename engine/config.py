"""The deployment's ``config.toml`` and the layout of a deployment root.

The file is shared with the existing client, so it is read and written with
tomlkit: every key, comment and section updock does not know survives a write
(the existing client's writer dropped its own patch-tracking keys). Keys read:

```toml
[versions]
docker_service = "1.2.3.0"        # installed version before updock's journal

[docker]
compose_file = "./docker/docker-compose.yml"
project_name = "shop"             # optional compose project name (-p)

[backup]
storage_dir = "./backups"

[cache]
download_dir = "./cacheDuckData/download"

[updates]                          # updock's own
manifest_url = "https://example.org/manifest.json"
project_dir = "docker"             # the folder upgrades change
user_data = ["upload", "data"]     # never replaced or deleted
arch = "x86_64"                    # override host detection
max_package_bytes = 10737418240

[signing]
public_key = "base64 or hex ed25519 public key"   # packages must be signed
```
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import tomlkit
from tomlkit.exceptions import TOMLKitError

from engine.errors import BadInputError
from journal import fsio

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.toml"
DEFAULT_USER_DATA = (
    "upload",
    "project_workspace",
    "project_zips",
    "project_nginx",
    "project_init",
    "uv_cache",
    "data",
)
STATE_DIR = ".updock"


class ConfigError(BadInputError):
    """``config.toml`` cannot be read or holds a wrong value."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem
        self.hint = f"fix {path} and run the command again"


class NoDeploymentError(BadInputError):
    """The root is not a deployment: no config.toml and no project folder."""

    def __init__(self, root: Path) -> None:
        super().__init__(f"{root} holds neither {CONFIG_NAME} nor a project folder")
        self.root = root
        self.hint = "pass --root with the deployment's folder (the one holding config.toml)"


@dataclass(frozen=True)
class DeploymentConfig:
    """What updock needs to know about one deployment root."""

    root: Path
    version: str | None = None
    compose_file: Path | None = None
    project_name: str | None = None
    project_dir: Path = Path("docker")
    backup_dir: Path = Path("backups")
    download_dir: Path = Path("cacheDuckData/download")
    manifest_url: str | None = None
    user_data: tuple[str, ...] = DEFAULT_USER_DATA
    arch: str | None = None
    public_key: str | None = None
    max_package_bytes: int = 10 * 1024**3
    health: dict = field(default_factory=dict)

    @property
    def tree(self) -> Path:
        """The compose project folder that upgrades change."""
        return self.root / self.project_dir

    @property
    def state_dir(self) -> Path:
        return self.root / STATE_DIR

    @property
    def config_path(self) -> Path:
        return self.root / CONFIG_NAME


def _resolve(root: Path, value: object, default: Path) -> Path:
    if value is None:
        return default
    path = Path(str(value))
    return path if path.is_absolute() else Path(os.path.normpath(path))


def load_config(root: Path) -> DeploymentConfig:
    """Read ``<root>/config.toml``; a missing file gives the defaults.

    Raises:
        ConfigError: the file is not valid TOML or a value has the wrong type.
        NoDeploymentError: neither the file nor the project folder exists.
    """
    root = Path(root).resolve()
    path = root / CONFIG_NAME
    doc = _read(path)
    versions = doc.get("versions", {})
    docker = doc.get("docker", {})
    updates = doc.get("updates", {})
    project_dir = _resolve(root, updates.get("project_dir"), Path("docker"))
    if not doc and not path.exists() and not (root / project_dir).is_dir():
        raise NoDeploymentError(root)
    if project_dir.is_absolute() or ".." in project_dir.parts or not project_dir.parts:
        raise ConfigError(
            path, "[updates] project_dir must be a folder inside the root"
        )

    compose = docker.get("compose_file")
    user_data = updates.get("user_data", list(DEFAULT_USER_DATA))
    if not isinstance(user_data, list) or not all(
        isinstance(x, str) for x in user_data
    ):
        raise ConfigError(path, "[updates] user_data must be a list of folder names")
    return DeploymentConfig(
        root=root,
        version=_str_or_none(path, versions, "docker_service"),
        compose_file=_resolve(root, compose, project_dir / "docker-compose.yml"),
        project_name=_str_or_none(path, docker, "project_name"),
        project_dir=project_dir,
        backup_dir=_resolve(
            root, doc.get("backup", {}).get("storage_dir"), Path("backups")
        ),
        download_dir=_resolve(
            root,
            doc.get("cache", {}).get("download_dir"),
            Path("cacheDuckData/download"),
        ),
        manifest_url=_str_or_none(path, updates, "manifest_url"),
        user_data=tuple(user_data),
        arch=_str_or_none(path, updates, "arch"),
        public_key=_str_or_none(path, doc.get("signing", {}), "public_key"),
        max_package_bytes=int(updates.get("max_package_bytes", 10 * 1024**3)),
        health=dict(doc.get("health", {})),
    )


def _read(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(path, f"cannot be read: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(path, f"is not UTF-8 text (byte {exc.start})") from exc
    try:
        return tomlkit.parse(text).unwrap()
    except TOMLKitError as exc:
        raise ConfigError(path, f"is not valid TOML: {exc}") from exc


def _str_or_none(path: Path, table: dict, key: str) -> str | None:
    value = table.get(key)
    if value is None or isinstance(value, str):
        return value
    raise ConfigError(path, f"{key} must be a string, not {type(value).__name__}")


def record_version(config: DeploymentConfig, version: str | None) -> None:
    """Durably write ``[versions] docker_service`` so the existing client's
    readers see the installed version (None removes it: unknown again);
    every other key is kept as it was.
    """
    path = config.config_path
    try:
        doc = tomlkit.parse(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        doc = tomlkit.document()
    versions = doc.setdefault("versions", tomlkit.table())
    if versions.get("docker_service") == version:
        return
    if version is None:
        del versions["docker_service"]
    else:
        versions["docker_service"] = version
    fsio.write_atomic(path, tomlkit.dumps(doc).encode("utf-8"))
    logger.debug("config.toml records version %s", version)
