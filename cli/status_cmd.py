"""``updock status``: where the deployment stands."""

from __future__ import annotations

from pathlib import Path

import msgspec
from rich.console import Console

from cli import exitcodes
from cli.apps import app
from cli.session import open_deployment, open_read_only
from engine.config import load_config
from engine.services import Services
from engine.status import StatusReport, build_status
from journal import LockedError

_out = Console(highlight=False, soft_wrap=True)


@app.command(name="status")
def status(
    *, root: Path = Path("."), no_services: bool = False, json: bool = False
) -> int:
    """Show the deployed version, the last transaction and its outcome, anything
    awaiting recovery, the backups, and files changed by hand since updock
    installed them (drift).

    Like every command, it first recovers what a crash left unfinished.

    Parameters
    ----------
    root
        The deployment root (the folder holding config.toml).
    no_services
        When recovering, leave Docker alone.
    json
        Print one JSON object.
    """
    config = load_config(root)
    if not (config.state_dir / "journal").exists():
        report = build_status(config, None, None)
    else:
        report = _status_of(root, no_services)
    if json:
        print(msgspec.json.encode(report.to_builtins()).decode())
    else:
        _print(report)
    return exitcodes.OK


def _status_of(root: Path, no_services: bool) -> StatusReport:
    """Recover first, as every command does; while another command holds the
    lock, report read-only what it is doing instead of failing."""

    def hook(session):
        return Services(session.root, session.config, session.journal, no_services)

    try:
        with open_deployment(root, services=hook) as session:
            return build_status(
                session.config,
                session.journal,
                session.store,
                recovered=session.recovered,
            )
    except LockedError as exc:
        with open_read_only(root) as session:
            return build_status(
                session.config,
                session.journal,
                None,
                busy=True,
                busy_pid=exc.holder_pid,
            )


def _print(report: StatusReport) -> None:
    _out.print(
        f"version:  {report.version or 'unknown'} (from {report.version_source})"
    )
    last = report.last_tx
    if last:
        _out.print(
            f"last transaction: {last['tx']} {last['kind']} "
            f"{last['from']} -> {last['to']}: {last['status']}"
            + (f" ({last['reason']})" if last["reason"] else "")
        )
    else:
        _out.print("last transaction: none")
    for outcome in report.recovered_now:
        _out.print(f"recovered now: {outcome['summary']}")
    if report.busy:
        holder = f"process {report.busy_pid}" if report.busy_pid else "another process"
        _out.print(f"busy: {holder} holds the lock")
        for tx in report.pending:
            _out.print(f"IN PROGRESS: {tx['tx']} {tx['kind']} ({tx['status']})")
    elif report.pending:
        for tx in report.pending:
            _out.print(f"AWAITING RECOVERY: {tx['tx']} ({tx['status']})")
    else:
        _out.print("awaiting recovery: nothing")
    if report.last_recovery:
        rec = report.last_recovery
        _out.print(
            f"last recovery: {rec['tx']} {rec['direction']} at {rec['at']}: "
            f"{rec['outcome']}"
        )
    _out.print(f"backups: {len(report.backups)}")
    for row in report.backups:
        flag = "" if row["present"] else "  MISSING OR DAMAGED"
        _out.print(f"  {row['id']}  {row['kind']}  {row['size']} bytes{flag}")
    if report.busy:
        _out.print("drift: not checked while another command changes the files")
    elif report.drift:
        _out.print(
            f"drift: {len(report.drift)} installed paths differ from the journal:"
        )
        for item in report.drift:
            _out.print(f"  {item.problem}: {item.path}")
    else:
        _out.print(f"drift: none ({report.drift_checked} installed paths checked)")
