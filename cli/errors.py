"""The one place that turns exceptions into exit codes and operator messages."""

from __future__ import annotations

import errno
import logging

from cli import exitcodes
from engine import errors as engine_errors
from journal import errors as journal_errors

logger = logging.getLogger(__name__)

# Most specific first: the first family an exception belongs to wins.
EXIT_CODES: tuple[tuple[type[BaseException], int], ...] = (
    (engine_errors.RollbackFailedError, exitcodes.ROLLBACK_FAILED),
    (engine_errors.RolledBackError, exitcodes.ROLLED_BACK),
    (engine_errors.InsufficientSpaceError, exitcodes.NO_SPACE),
    (engine_errors.IntegrityError, exitcodes.INTEGRITY),
    (engine_errors.BadInputError, exitcodes.BAD_INPUT),
    (engine_errors.DownloadError, exitcodes.DOWNLOAD),
    (engine_errors.ServicesError, exitcodes.SERVICES),
    (engine_errors.RefusedError, exitcodes.REFUSED),
    (journal_errors.LockedError, exitcodes.LOCKED),
    (journal_errors.CorruptRecordError, exitcodes.JOURNAL_CORRUPT),
    (journal_errors.SegmentHeaderError, exitcodes.JOURNAL_CORRUPT),
    (journal_errors.BlobError, exitcodes.JOURNAL_CORRUPT),
    (KeyboardInterrupt, exitcodes.INTERRUPTED),
)

# What to do next, by exit code, when the error itself carries no hint.
HINTS: dict[int, str] = {
    exitcodes.BAD_INPUT: "fix the input named above; the deployment was not changed",
    exitcodes.INTEGRITY: (
        "do not install this release; check its source and signatures; "
        "the deployment was not changed"
    ),
    exitcodes.LOCKED: "wait for the other updock command to finish, then retry",
    exitcodes.ROLLED_BACK: (
        "the deployment is back on its previous release; fix the cause named "
        "above and retry"
    ),
    exitcodes.JOURNAL_CORRUPT: (
        "do not change the deployment; keep a copy of .updock/ and run "
        "'updock journal verify' for details"
    ),
    exitcodes.NO_SPACE: "free space on the filesystem named above, then retry",
    exitcodes.DOWNLOAD: "check the server and the network, then retry",
    exitcodes.SERVICES: (
        "check that the Docker engine runs and compose is installed, or pass "
        "--no-services to change files only"
    ),
    exitcodes.ROLLBACK_FAILED: (
        "the deployment needs attention: run 'updock status' and "
        "'updock journal inspect' and fix the paths named above"
    ),
}


def exit_code_for(exc: BaseException) -> int:
    """The exit code of an exception, ``INTERNAL`` when it is not one of ours."""
    for family, code in EXIT_CODES:
        if isinstance(exc, family):
            return code
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return exitcodes.NO_SPACE
    return exitcodes.INTERNAL


def describe(exc: BaseException) -> tuple[int, str]:
    """The exit code and the operator message (error and next step) of ``exc``."""
    code = exit_code_for(exc)
    if code == exitcodes.INTERRUPTED:
        hint = getattr(exc, "hint", None) or (
            "any updock command first finishes or undoes what was left "
            "unfinished ('updock status' shows it)"
        )
        return code, f"{str(exc) or 'interrupted'}\nnext: {hint}"
    if code == exitcodes.INTERNAL:
        logger.debug("unexpected error", exc_info=exc)
        return code, (
            f"internal error: {type(exc).__name__}: {exc}\n"
            "next: run again with --verbose and report the traceback"
        )
    hint = getattr(exc, "hint", "") or HINTS.get(code, "")
    message = f"error: {exc}"
    if hint:
        message += f"\nnext: {hint}"
    return code, message
