"""Progress events: how long-running engine work reports to whoever shows it.

The engine never prints. It calls a ``Progress`` callback with small events;
``cli/`` renders them as a rich step list with progress bars on a terminal,
as plain log lines elsewhere, or as JSON lines with ``--json``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import msgspec

Kind = Literal["step_started", "step_finished", "step_failed", "bytes", "plan"]


class ProgressEvent(msgspec.Struct, frozen=True, omit_defaults=True):
    """One thing that happened.

    ``step`` names the pipeline step (``download``, ``stage``, ``apply`` ...).
    For ``bytes`` events ``done`` and ``total`` count units of work (bytes, or
    files for extraction and placement; ``unit`` says which).
    """

    kind: Kind
    step: str
    detail: str = ""
    done: int = 0
    total: int | None = None
    unit: str = "bytes"
    seconds: float = 0.0
    data: dict | None = None


Progress = Callable[[ProgressEvent], None]


def ignore(_event: ProgressEvent) -> None:
    """A ``Progress`` that drops every event."""
