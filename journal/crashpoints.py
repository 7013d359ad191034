"""Crash points: a test switch that kills the process at a named durable step.

When the environment variable ``UPDOCK_CRASH_AT`` is unset (always, outside
tests) ``crashpoint`` is a dictionary lookup and nothing else. When it names a
step, as ``name`` or ``name#N`` for the N-th time that step is reached, the
process sends itself SIGKILL there: no cleanup handler, ``finally`` block or
buffered write runs, which is as close to a power cut as a process can get.
Setting ``UPDOCK_CRASH_LOG`` to a file path makes every step reached append its
name there, so a test can list the steps a command passes through.
``UPDOCK_CRASH_SIGNAL=INT`` sends SIGINT instead of SIGKILL: an operator's
Ctrl-C at exactly that step.
"""

from __future__ import annotations

import os
import signal

_target = os.environ.get("UPDOCK_CRASH_AT", "")
_log_path = os.environ.get("UPDOCK_CRASH_LOG", "")
_name, _, _nth = _target.partition("#")
_wanted = int(_nth) if _nth else 1
_hits: dict[str, int] = {}
_signal = signal.SIGINT if os.environ.get("UPDOCK_CRASH_SIGNAL") == "INT" else signal.SIGKILL


def crashpoint(name: str) -> None:
    """Mark a durable step; kill the process here if the test switch says so."""
    if not _target and not _log_path:
        return
    if _log_path:
        with open(_log_path, "a", encoding="utf-8") as log:
            log.write(name + "\n")
    if name != _name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] == _wanted:
        os.kill(os.getpid(), _signal)
