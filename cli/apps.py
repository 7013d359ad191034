"""The cyclopts applications every command module attaches its commands to.

Ctrl-C is not left to cyclopts (which would exit 130 silently): it reaches
``cli.commandline``, which says what became of the interrupted command.
"""

from __future__ import annotations

import cyclopts

app = cyclopts.App(
    name="updock",
    help="Crash-safe upgrades of docker-compose deployments.",
    version="0.1.0",
    version_flags=["--version"],
    suppress_keyboard_interrupt=False,
)
app.meta.suppress_keyboard_interrupt = False
journal_app = cyclopts.App(name="journal", help="Read, verify and replay the journal.")
upgrade_app = cyclopts.App(name="upgrade", help="Check for, apply and undo upgrades.")
release_app = cyclopts.App(name="release", help="Build and sign releases.")
services_app = cyclopts.App(name="services", help="Control the compose services.")
backup_app = cyclopts.App(name="backup", help="Create, list and restore backups.")

for _sub in (journal_app, upgrade_app, release_app, services_app, backup_app):
    app.command(_sub)
