"""``updock recover`` and ``updock journal replay``: finish or undo what a
crash interrupted, automatically or in the direction the operator chooses."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import msgspec

from cli import exitcodes
from cli.apps import app, journal_app
from cli.session import Session, open_deployment
from engine.errors import BadInputError
from engine.rollback import replay_back, replay_forward

_json = msgspec.json.Encoder()


class ReplayOptionError(BadInputError):
    hint = "give exactly one of --forward TX or --back TX"

    def __init__(self) -> None:
        super().__init__("journal replay needs exactly one of --forward or --back")


def _services(session: Session, no_services: bool):
    """The Docker layer's recovery hook for this deployment."""
    from engine.services import Services

    return Services(session.root, session.config, session.journal, no_services)


@app.command(name="recover")
def recover_command(
    *, root: Path = Path("."), no_services: bool = False, json: bool = False
) -> int:
    """Finish or undo every transaction a crash left unfinished.

    Every updock command does this first on its own; this command does
    only that, and says what it did. A transaction that had not reached its
    commit decision is rolled back; one that had is rolled forward.

    Parameters
    ----------
    root
        The deployment root (the folder holding config.toml and .updock/).
    no_services
        Leave Docker alone: restore files only.
    json
        Print one JSON object per recovered transaction.
    """
    with open_deployment(root, recover=False) as session:
        outcomes = session.recover(_services(session, no_services))
    for outcome in outcomes:
        if json:
            data = asdict(outcome) | {"services": None}
            print(_json.encode(data).decode())
        else:
            print(outcome.describe())
    if not outcomes and not json:
        print("nothing to recover: every transaction has ended")
    return exitcodes.OK


@journal_app.command(name="replay")
def replay_command(
    *,
    forward: str | None = None,
    back: str | None = None,
    root: Path = Path("."),
    no_services: bool = False,
) -> int:
    """Roll one transaction forward or back by hand.

    --forward TX finishes an unfinished transaction (refused when it has
    ended or a post-image is missing from the store). --back TX rolls an
    unfinished transaction back, even one past its commit decision, or
    undoes a committed one with a new transaction (refused when a later
    committed transaction changed the same paths, or a pre-image is
    missing); that undo changes files only: restart the services after it
    ('updock services restart'), or use 'updock upgrade rollback' for the last
    upgrade. Automatic recovery does not run first, so the choice is yours.

    Parameters
    ----------
    forward
        The id of the transaction to roll forward.
    back
        The id of the transaction to roll back or undo.
    root
        The deployment root.
    no_services
        Leave Docker alone: change files only.
    """
    if (forward is None) == (back is None):
        raise ReplayOptionError()
    with open_deployment(root, recover=False) as session:
        hook = _services(session, no_services)
        args = (session.journal, session.store, session.tree)
        if forward is not None:
            outcome = replay_forward(*args, forward, services=hook)
        else:
            outcome = replay_back(*args, back or "", services=hook)
    print(outcome.describe())
    return exitcodes.OK
