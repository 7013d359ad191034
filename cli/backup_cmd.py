"""``updock backup create``, ``backup list`` and ``backup restore``."""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated

import msgspec
from cyclopts import Parameter
from rich.console import Console
from rich.prompt import Confirm

from cli import exitcodes
from cli.apps import backup_app
from cli.session import open_deployment, open_read_only
from engine.backup import create_backup
from engine.config import load_config
from engine.restore import restore_backup
from engine.services import Services
from engine.upgrade import NotConfirmedError, installed_version
from journal import JournalNotFoundError, State

_out = Console(highlight=False, soft_wrap=True)
_err = Console(stderr=True, highlight=False, soft_wrap=True)


def _hook(no_services: bool):
    return lambda s: Services(s.root, s.config, s.journal, no_services)


@backup_app.command(name="create")
def create(*, root: Path = Path("."), no_services: bool = False) -> int:
    """Write a manual backup of the compose file, .env, config/ and the
    user-data folders (listed only once it is whole and durable).

    Parameters
    ----------
    root
        The deployment root.
    no_services
        When recovering first, leave Docker alone.
    """
    with open_deployment(root, services=_hook(no_services)) as session:
        version = installed_version(session.config, session.journal.state) or "0.0.0.0"
        result, event = create_backup(session.config, "manual", version)
        session.journal.append(event)
    _out.print(f"backup {result.backup_id}: {result.files} files, {result.size} bytes")
    return exitcodes.OK


@backup_app.command(name="list")
def list_backups(*, root: Path = Path("."), json: bool = False) -> int:
    """List the usable backups (partial or failed ones never appear).

    Parameters
    ----------
    root
        The deployment root.
    json
        Print the existing client's JSON shape: {success, error, backups}.
    """
    config = load_config(root)
    try:
        with open_read_only(root) as session:
            state = session.journal.state
    except JournalNotFoundError:
        state = State()
    rows = []
    for number, info in enumerate(
        sorted(state.backups.values(), key=lambda b: b.created_at), start=1
    ):
        path = config.root / info.path
        rows.append(
            {
                "id": number,
                "backup_id": info.backup_id,
                "backup_type": "PreUpgrade" if info.kind == "pre-upgrade" else "Manual",
                "created_at": datetime.fromtimestamp(
                    info.created_at, timezone.utc
                ).strftime("%Y-%m-%d %H:%M:%S"),
                "service_version": info.version,
                "file_path": str(path),
                "file_size": info.size,
                "file_exists": path.is_file(),
                "sha256": info.sha256,
                "files": info.files,
            }
        )
    if json:
        doc = {"success": True, "error": None, "backups": rows}
        print(msgspec.json.encode(doc).decode())
        return exitcodes.OK
    if not rows:
        _out.print("no backups")
    for row in rows:
        flag = "" if row["file_exists"] else "  MISSING"
        _out.print(
            f"{row['backup_id']}  {row['backup_type']}  v{row['service_version']}  "
            f"{row['created_at']}  {row['file_size']} bytes{flag}"
        )
    return exitcodes.OK


@backup_app.command(name="restore")
def restore(
    backup_id: str,
    *,
    root: Path = Path("."),
    data: bool = False,
    yes: Annotated[bool, Parameter(name=["--yes", "-y"])] = False,
    no_services: bool = False,
) -> int:
    """Restore a backup, as one recoverable transaction.

    The compose file, .env and config/ come back; with --data the user-data
    folders too. Services are stopped before and health-checked after; a
    failure rolls the restore back.

    Parameters
    ----------
    backup_id
        The backup's id, as 'updock backup list' shows it.
    root
        The deployment root.
    data
        Restore the user-data folders as well (replacing the current data).
    yes
        Do not ask for confirmation.
    no_services
        Change files only.
    """
    if not yes:
        if not sys.stdin.isatty():
            raise NotConfirmedError("no terminal to ask on and no --yes")
        what = "configuration and data" if data else "configuration"
        if not Confirm.ask(f"Restore the {what} of {backup_id}?", console=_err):
            raise NotConfirmedError("the operator said no")
    with open_deployment(root, services=_hook(no_services)) as session:
        services = Services(session.root, session.config, session.journal, no_services)
        result = restore_backup(
            session.config,
            session.journal,
            session.store,
            services,
            backup_id,
            with_data=data,
        )
    _out.print(
        f"backup {result.backup_id} restored by transaction {result.tx} "
        f"({result.ops} operations)"
    )
    return exitcodes.OK
