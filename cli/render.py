"""Rendering of engine progress events: rich on a terminal, plain lines
elsewhere, JSON lines with ``--json``."""

from __future__ import annotations

import sys
import time
from typing import Any

import msgspec
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from engine.progress import ProgressEvent

STEP_TITLES = {
    "manifest": "read manifest",
    "download": "download and verify",
    "stage": "stage package",
    "backup": "pre-upgrade backup",
    "images": "load images",
    "stop": "stop services",
    "apply": "apply files",
    "start": "start services",
    "health": "health gate",
    "commit": "commit",
    "rollback": "roll back",
    "cleanup": "clean up",
    "restore": "restore backup",
}


class JsonRenderer:
    """One JSON object per line on stdout, for scripts and ``jq``."""

    def __init__(self) -> None:
        self._encoder = msgspec.json.Encoder()

    def __call__(self, event: ProgressEvent) -> None:
        self.emit({"event": event.kind, **msgspec.to_builtins(event)})

    def emit(self, obj: dict[str, Any]) -> None:
        sys.stdout.write(self._encoder.encode(obj).decode() + "\n")
        sys.stdout.flush()

    def pause(self) -> None:
        pass

    def close(self) -> None:
        pass


class PlainRenderer:
    """Log-style lines on stderr, a byte counter at most every 5 seconds."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}

    def __call__(self, event: ProgressEvent) -> None:
        title = STEP_TITLES.get(event.step, event.step)
        if event.kind == "step_started":
            self._line(f"{title}: started {event.detail}".rstrip())
        elif event.kind == "step_finished":
            self._line(f"{title}: done in {event.seconds:.2f}s {event.detail}".rstrip())
        elif event.kind == "step_failed":
            self._line(f"{title}: FAILED after {event.seconds:.2f}s: {event.detail}")
        elif event.kind == "bytes":
            now = time.monotonic()
            if (
                now - self._last.get(event.step, 0.0) >= 5.0
                or event.done == event.total
            ):
                self._last[event.step] = now
                total = f"/{event.total}" if event.total else ""
                self._line(f"{title}: {event.done}{total} {event.unit}")

    @staticmethod
    def _line(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    def pause(self) -> None:
        pass

    def close(self) -> None:
        pass


class RichRenderer:
    """A step list, each step ticked off with its duration, and progress bars
    with speed and time left for byte and file counts."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self._progress = Progress(
            SpinnerColumn(finished_text="[green]done[/]"),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self._tasks: dict[str, TaskID] = {}
        self._live = False

    def __call__(self, event: ProgressEvent) -> None:
        if event.kind == "plan":
            return  # printed as text by the command, before its question
        if not self._live:
            self._progress.start()
            self._live = True
        title = STEP_TITLES.get(event.step, event.step)
        task = self._tasks.get(event.step)
        if event.kind == "step_started" or task is None:
            task = self._progress.add_task(title, total=None)
            self._tasks[event.step] = task
        if event.kind == "bytes":
            self._progress.update(task, completed=event.done, total=event.total)
        elif event.kind == "step_finished":
            total = self._progress.tasks[task].total or 1
            self._progress.update(
                task,
                description=f"{title} ({event.seconds:.2f}s) {event.detail}".rstrip(),
                total=total,
                completed=total,
            )
        elif event.kind == "step_failed":
            self._progress.update(
                task, description=f"[red]{title} FAILED[/] ({event.seconds:.2f}s)"
            )
            self._progress.stop_task(task)

    def pause(self) -> None:
        """Stop redrawing (before a question); the next event resumes."""
        if self._live:
            self._progress.stop()
            self._live = False

    def close(self) -> None:
        self.pause()


def make_renderer(as_json: bool) -> JsonRenderer | PlainRenderer | RichRenderer:
    """The renderer for this terminal and these options."""
    if as_json:
        return JsonRenderer()
    if sys.stderr.isatty():
        return RichRenderer()
    return PlainRenderer()
