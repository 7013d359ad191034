"""``updock status``: where the deployment stands."""

from __future__ import annotations

from pathlib import Path

import msgspec
from rich.console import Console

from cli import exitcodes
from cli.apps import app
from cli.session import open_deployment
from engine.config import load_config
from engine.services import Services
from engine.status import StatusReport, build_status

_out = Console(highlight=False, soft_wrap=True)


@app.command(name="status")
def status(*, root: Path = Path("."), no_services: bool = False, json: bool = False) -> int:
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
        def hook(session):
            return Services(session.root, session.config, session.journal, no_services)

        with open_deployment(root, services=hook) as session:
            report = build_status(session.config, session.journal, session.store)
    if json:
        print(msgspec.json.encode(report.to_builtins()).decode())
    else:
        _print(report)
    return exitcodes.OK


def _print(report: StatusReport) -> None:
    _out.print(f"version:  {report.version or 'unknown'} (from {report.version_source})")
    last = report.last_tx
    if last:
        _out.print(
            f"last transaction: {last['tx']} {last['kind']} "
            f"{last['from']} -> {last['to']}: {last['status']}"
            + (f" ({last['reason']})" if last["reason"] else "")
        )
    else:
        _out.print("last transaction: none")
    if report.pending:
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
    if report.drift:
        _out.print(f"drift: {len(report.drift)} installed paths differ from the journal:")
        for item in report.drift:
            _out.print(f"  {item.problem}: {item.path}")
    else:
        _out.print(f"drift: none ({report.drift_checked} installed paths checked)")
