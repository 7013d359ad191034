"""The ``updock`` command line: its top-level options and error handling."""

from __future__ import annotations

import importlib
import logging
import os
import sys
from typing import Annotated

import cyclopts
from cyclopts import Parameter

from cli import exitcodes
from cli.apps import app
from cli.errors import describe

COMMAND_MODULES = (
    "cli.journal_cmd",
    "cli.tx_cmd",
    "cli.upgrade_cmd",
    "cli.backup_cmd",
    "cli.release_cmd",
    "cli.services_cmd",
    "cli.status_cmd",
)


def _load_commands() -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(name)


def _setup_logging(verbose: bool) -> None:
    level = logging.DEBUG if verbose else logging.INFO
    if os.environ.get("UPDOCK_LOG_LEVEL"):
        level = getattr(logging, os.environ["UPDOCK_LOG_LEVEL"].upper(), level)
    logging.basicConfig(
        level=level,
        stream=sys.stderr,
        format="%(levelname)s %(message)s"
        if not verbose
        else "%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("httpx", "httpcore", "urllib3", "docker"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


@app.meta.default
def _meta(
    *tokens: Annotated[str, Parameter(show=False, allow_leading_hyphen=True)],
    verbose: Annotated[bool, Parameter(name=["--verbose", "-v"])] = False,
) -> int:
    """Crash-safe upgrades of docker-compose deployments.

    Parameters
    ----------
    verbose
        Log every step, with timestamps and tracebacks.
    """
    _setup_logging(verbose)
    result = app(tokens, exit_on_error=False, print_error=True)
    return result if isinstance(result, int) else exitcodes.OK


def run(argv: list[str]) -> int:
    """Run the command line ``argv`` and return the exit code."""
    try:
        _load_commands()
        return app.meta(argv, exit_on_error=False, print_error=True)
    except cyclopts.CycloptsError:
        return exitcodes.USAGE
    except BaseException as exc:  # noqa: BLE001 - the one top-level handler
        if isinstance(exc, SystemExit):
            raise
        code, message = describe(exc)
        logging.getLogger("updock").debug("command failed", exc_info=exc)
        print(message, file=sys.stderr)
        return code
