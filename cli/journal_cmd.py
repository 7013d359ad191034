"""``updock journal inspect`` and ``updock journal verify``: read-only, no lock."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec

from cli import exitcodes
from cli.apps import journal_app
from engine.errors import BadInputError
from journal import records
from journal.blobs import BlobStore
from journal.journal import Journal, JournalNotFoundError
from journal.state import TxState
from journal.verify import verify_journal

OUTCOMES = {
    "open": "unfinished (open)",
    "decided": "unfinished (decided)",
    "committed": "committed",
    "rolled_back": "rolled back",
    "aborted": "aborted",
}
_json = msgspec.json.Encoder()


class NoJournalError(BadInputError):
    hint = (
        "nothing to read until updock first changes this deployment; if this "
        "is the wrong folder, pass --root with the deployment root"
    )

    def __init__(self, path: Path) -> None:
        super().__init__(f"no journal at {path}: nothing recorded there yet")
        self.path = path


class SinceFormatError(BadInputError):
    hint = "give a sequence number (1234) or a date/time (2025-03-01T12:00)"

    def __init__(self, text: str) -> None:
        super().__init__(
            f"--since {text!r} is neither a sequence number nor an ISO date/time"
        )
        self.text = text


class UnknownTransactionError(BadInputError):
    hint = "run 'updock journal inspect' to list the transactions"

    def __init__(self, tx: str) -> None:
        super().__init__(f"the journal holds no transaction {tx!r}")
        self.tx = tx


def journal_dir(root: Path) -> Path:
    return root / ".updock" / "journal"


def open_journal(root: Path) -> Journal:
    """The deployment's journal, read-only (no lock: a writer may be busy)."""
    try:
        return Journal.open(journal_dir(root), writable=False)
    except JournalNotFoundError as exc:
        raise NoJournalError(exc.path) from exc


@journal_app.command(name="inspect")
def inspect(
    *,
    root: Path = Path("."),
    tx: str | None = None,
    since: str | None = None,
    kind: str | None = None,
    limit: int | None = None,
    json: bool = False,
) -> int:
    """List the transactions the journal records, one line each.

    Columns: id, kind, versions, start, duration, outcome, operations.
    With --tx, list every event of one transaction instead, with the time
    since its start.

    Parameters
    ----------
    root
        The deployment root (holds .updock/).
    tx
        Show the full event list of this transaction.
    since
        Only what started at or after this ISO date/time (local time unless
        it has an offset) or this record sequence number.
    kind
        Only transactions of this kind (upgrade, rollback, ...); with --tx,
        only events of this type (op_intended, committed, ...).
    limit
        Show only the last N lines.
    json
        Print JSON lines (one object per line) for scripts and jq.
    """
    journal = open_journal(root)
    bound = _parse_since(since)
    if tx is not None:
        return _show_events(journal, tx, bound, kind, limit, json)

    txs = [t for t in journal.state.txs.values() if _tx_matches(t, bound, kind)]
    txs.sort(key=lambda t: t.first_seq)
    if limit is not None:
        txs = txs[-limit:] if limit > 0 else []
    if json:
        for t in txs:
            _emit({**msgspec.to_builtins(t), "duration": _duration(t)})
    else:
        _print_table(
            ["TX", "KIND", "VERSIONS", "STARTED", "DURATION", "OUTCOME", "OPS"],
            [_tx_row(t) for t in txs],
        )
    if journal.state.unknown_records:
        print(
            f"note: {journal.state.unknown_records} records of kinds this updock "
            "does not know (written by a newer version?) were skipped",
            file=sys.stderr,
        )
    return exitcodes.OK


@journal_app.command(name="verify")
def verify(*, root: Path = Path(".")) -> int:
    """Check the journal: headers, checksums, sequence continuity, referenced
    blobs (present and hashing right) and the checkpoint.

    Exits with JOURNAL_CORRUPT (7) naming the first bad segment and offset.

    Parameters
    ----------
    root
        The deployment root (holds .updock/).
    """
    blobs = BlobStore(root / ".updock" / "blobs")
    try:
        result = verify_journal(journal_dir(root), blobs)
    except JournalNotFoundError as exc:
        raise NoJournalError(exc.path) from exc

    print(
        f"journal OK: {result.segments} segments, {result.records} records "
        f"(seq {result.first_seq}..{result.last_seq}), "
        f"{result.blobs_checked} blobs checked"
    )
    for kind, count in sorted(result.unknown_kinds.items()):
        print(
            f"note: {count} records of unknown kind {kind!r} "
            "(written by a newer updock?)"
        )
    if result.torn_tail is not None:
        torn = result.torn_tail
        print(
            f"note: torn tail of {torn.size} bytes at {torn.path}:{torn.offset} "
            "(an interrupted write; the next writing command drops it)"
        )
    return exitcodes.OK


def _show_events(
    journal: Journal,
    tx_id: str,
    bound: tuple[str, float] | None,
    kind: str | None,
    limit: int | None,
    json: bool,
) -> int:
    tx = journal.state.txs.get(tx_id)
    if tx is None:
        raise UnknownTransactionError(tx_id)
    found = journal.tx_records(tx_id)
    if not found or found[0][0] != tx.first_seq:
        print(
            f"note: the first records of {tx_id} were compacted away",
            file=sys.stderr,
        )
    rows = []
    for seq, event in found:
        data = records.to_builtins(event)
        if kind is not None and data["type"] != kind:
            continue
        if _event_matches(seq, data.get("at", 0.0), bound):
            rows.append((seq, data))
    if limit is not None:
        rows = rows[-limit:] if limit > 0 else []

    for seq, data in rows:
        offset = data.get("at", 0.0) - tx.began_at if "at" in data else 0.0
        if json:
            _emit({"seq": seq, "offset": round(offset, 6), **_jsonable(data)})
        else:
            since_start = f"+{offset:.3f}s"
            line = f"{since_start:>11}  {seq:>8}  {data['type']:<18} {_details(data)}"
            print(line.rstrip())
    return exitcodes.OK


def _parse_since(since: str | None) -> tuple[str, float] | None:
    """``("seq", n)`` or ``("time", epoch seconds)`` from the --since text."""
    if since is None:
        return None
    if since.isdigit():
        return "seq", float(since)
    try:
        moment = datetime.fromisoformat(since)
    except ValueError:
        raise SinceFormatError(since) from None
    return "time", moment.timestamp()


def _tx_matches(tx: TxState, bound: tuple[str, float] | None, kind: str | None) -> bool:
    if kind is not None and tx.kind != kind:
        return False
    return _event_matches(tx.first_seq, tx.began_at, bound)


def _event_matches(seq: int, at: float, bound: tuple[str, float] | None) -> bool:
    if bound is None:
        return True
    what, value = bound
    return seq >= value if what == "seq" else at >= value


def _duration(tx: TxState) -> float | None:
    return None if tx.ended_at is None else round(tx.ended_at - tx.began_at, 3)


def _tx_row(tx: TxState) -> list[str]:
    duration = _duration(tx)
    versions = f"{tx.from_version or '-'} -> {tx.to_version or '-'}"
    return [
        tx.tx,
        tx.kind,
        versions,
        _clock(tx.began_at),
        "-" if duration is None else _span(duration),
        OUTCOMES.get(tx.status, tx.status),
        f"{tx.applied}/{tx.ops}" if tx.applied != tx.ops else str(tx.ops),
    ]


def _clock(at: float) -> str:
    return datetime.fromtimestamp(at).isoformat(sep=" ", timespec="seconds")


def _span(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}m{rest:02d}s"


def _details(data: dict[str, Any]) -> str:
    """The fields of an event, compactly: digests shortened, images inline."""
    parts = []
    for key, value in data.items():
        if key in ("type", "at", "tx"):
            continue
        if isinstance(value, dict) and "kind" in value:
            value = _image(value)
        elif isinstance(value, str) and _is_digest(value):
            value = value[:12]
        elif key == "state":
            value = f"<{len(value)} bytes>"
        parts.append(f"{key}={value}")
    return " ".join(parts)


def _is_digest(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def _image(image: dict[str, Any]) -> str:
    text = image["kind"]
    if image.get("blob"):
        text += f":{image['blob'][:12]}"
    if image.get("size"):
        text += f"({image['size']}B)"
    if image.get("target"):
        text += f"->{image['target']}"
    return text


def _jsonable(data: dict[str, Any]) -> dict[str, Any]:
    if isinstance(data.get("state"), (bytes, str)):
        data = {**data, "state": f"<{len(data['state'])} bytes>"}
    return data


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(_json.encode(obj).decode() + "\n")


def _print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
