"""Errors raised by the engine, by family.

Every engine error derives from ``EngineError``. The families below are what
callers (and ``cli/``'s exit-code table) tell apart; modules define their own
subclasses, named after the failure, under one of these families::

    EngineError
    +-- BadInputError        a manifest, package, option or config is invalid
    +-- IntegrityError       a hash, size or signature does not match; a
    |                        manifest is older than one already accepted, or
    |                        expired
    +-- DownloadError        the server or the network failed
    +-- InsufficientSpaceError  not enough free space; nothing was changed
    +-- ServicesError        Docker or compose failed, or is unreachable
    +-- RefusedError         a request is unsafe or impossible in this state
    +-- RolledBackError      a change failed and was rolled back
    +-- RollbackFailedError  a change failed and so did its rollback
"""

from __future__ import annotations


class EngineError(Exception):
    """Root of every error the engine raises on purpose."""

    hint: str = ""


class BadInputError(EngineError):
    """A manifest, package, option or configuration value is invalid."""


class IntegrityError(EngineError):
    """Content does not match what was promised (hash, size, signature)."""


class DownloadError(EngineError):
    """A transfer failed: HTTP status, network error, timeout, short body."""


class InsufficientSpaceError(EngineError, OSError):
    """A filesystem has too little free space for the planned change."""


class ServicesError(EngineError):
    """Docker or compose failed or cannot be reached."""


class RefusedError(EngineError):
    """The request is unsafe or impossible in the current state."""


class RolledBackError(EngineError):
    """A change failed part-way and every change was undone.

    Attributes:
        cause: the original failure.
    """

    def __init__(self, message: str, cause: BaseException | None = None) -> None:
        super().__init__(message)
        self.cause = cause


class RollbackFailedError(EngineError):
    """A change failed and undoing it failed too; both errors are kept.

    Attributes:
        cause: the original failure.
        rollback_error: the failure of the rollback.
    """

    def __init__(
        self, message: str, cause: BaseException, rollback_error: BaseException
    ) -> None:
        super().__init__(f"{message}: {cause}; rollback failed too: {rollback_error}")
        self.cause = cause
        self.rollback_error = rollback_error
