"""Verified, resumable package downloads into the deployment's cache.

The one adapter between updock and httpx: every httpx exception is translated
here into a ``DownloadError`` subclass.

How a package gets onto the disk:

1. A cached file at ``<cache>/<version>/<full|patch>/<arch>/<sha256>/<name>``
   is reused only when its content hashes to the manifest's digest, and never
   with ``force=True``. A package without a digest (the existing server's
   ``external``) is downloaded every time, and only when the deployment does
   not require signatures.
2. Bytes stream into ``<name>.part`` beside the final name, hashed as they
   arrive (written and hashed on two more threads while the next bytes
   are received). An existing ``.part`` is resumed with ``Range: bytes=N-`` and its
   bytes are hashed first; the resume is kept only when the server answers
   206 with a ``Content-Range`` starting at N (and a total matching the
   manifest's size, when known). A 200 means the server ignored the range:
   the part is truncated and the transfer starts from zero. A 206 from any
   other offset discards the part and starts again.
3. ``Accept-Encoding: identity`` and ``iter_raw``: the bytes hashed are the
   bytes the server stored, never a decoded form.
4. Connect and read timeouts bound a stalled server; transient failures
   (network errors, timeouts, a body cut short, 408/429/5xx) are retried with
   exponential backoff, resuming from what already arrived. Integrity
   failures (digest or size mismatch) and other statuses are not retried.
5. The part is fsync'd, its size and digest checked, then renamed to the final
   name and the folder fsync'd. A mismatching part is deleted, so a corrupt
   file is never left under a final name nor resumed.

Local paths and ``file:`` URLs are copied the same way, without HTTP.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import re
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import httpx

from engine.errors import DownloadError, IntegrityError
from engine.progress import Progress, ProgressEvent
from engine.transport import WideReadTransport
from journal import fsio

logger = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)", re.IGNORECASE)
_TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


class HttpStatusError(DownloadError):
    """The server answered with a status that is not a success."""

    def __init__(self, url: str, status: int) -> None:
        super().__init__(f"GET {url}: the server answered HTTP {status}")
        self.url = url
        self.status = status
        self.transient = status in _TRANSIENT_STATUS


class TransferError(DownloadError):
    """The connection failed, stalled past the read timeout, or broke off."""

    def __init__(self, url: str, problem: str) -> None:
        super().__init__(f"GET {url}: {problem}")
        self.url = url
        self.problem = problem


class TransferTimeoutError(TransferError, TimeoutError):
    """No byte arrived within the connect or read timeout."""


class TooLargeError(DownloadError):
    """The body is larger than the configured cap."""

    def __init__(self, url: str, limit: int) -> None:
        super().__init__(f"{url} is larger than the {limit} byte limit")
        self.url = url
        self.limit = limit


class SourceMissingError(DownloadError, FileNotFoundError):
    """A local package path or ``file:`` URL does not exist."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"package {path} does not exist")
        self.path = path


class SizeMismatchError(IntegrityError):
    """The bytes received are not as many as the manifest promised."""

    def __init__(self, url: str, expected: int, actual: int) -> None:
        super().__init__(f"{url}: expected {expected} bytes, received {actual}")
        self.url = url
        self.expected = expected
        self.actual = actual


class HashMismatchError(IntegrityError):
    """The bytes received do not hash to the manifest's sha256."""

    def __init__(self, url: str, expected: str, actual: str) -> None:
        super().__init__(f"{url}: sha256 is {actual}, the manifest says {expected}")
        self.url = url
        self.expected = expected
        self.actual = actual


class UnverifiableDownloadError(IntegrityError):
    """The manifest gives no digest and the deployment requires signatures."""

    hint = "publish the package with a sha256 and a signature in the manifest"

    def __init__(self, url: str) -> None:
        super().__init__(f"{url} has no sha256 in the manifest and cannot be verified")
        self.url = url


@dataclass(frozen=True)
class DownloadPolicy:
    """Limits and patience of a transfer."""

    max_bytes: int = 10 * 1024**3
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    retries: int = 4
    backoff: float = 0.5
    max_backoff: float = 8.0


@dataclass(frozen=True)
class Fetched:
    """A verified file in the cache.

    Attributes:
        resumed_from: bytes kept from an earlier partial transfer.
        reused: the file was already cached and verified; nothing moved.
    """

    path: Path
    sha256: str
    size: int
    resumed_from: int
    reused: bool
    seconds: float


@dataclass(frozen=True)
class _Expected:
    sha256: str | None
    size: int | None
    limit: int


class _Retry(Exception):
    """Internal: a transient failure; the wrapped error is raised when the
    retries run out."""

    def __init__(self, error: DownloadError) -> None:
        super().__init__(str(error))
        self.error = error


class _Progress:
    """Reports one transfer as ``ProgressEvent``s of step ``download``.

    Byte counts go out as ``bytes`` events about once per MiB; ``data.event``
    names the moments that are not plain progress: ``start``, ``retry``,
    ``restart`` (the part was discarded), ``reused`` (a verified cached
    file) and ``done``.
    """

    def __init__(self, url: str, total: int | None, callback: Progress | None) -> None:
        self.url = url
        self.total = total
        self.callback = callback

    def emit(self, kind: str, received: int, message: str = "") -> None:
        if self.callback is None:
            return
        data = None if kind == "progress" else {"event": kind, "message": message}
        event = ProgressEvent(
            "bytes", "download", self.url, received, self.total, data=data
        )
        self.callback(event)


def _write_all(fd: int, chunk: bytes) -> None:
    view = memoryview(chunk)
    while view:
        view = view[os.write(fd, view) :]


# -- public entry points ------------------------------------------------------


def cache_path(
    cache_dir: Path,
    version: str,
    kind: str,
    arch: str | None,
    sha256: str | None,
    url: str,
) -> Path:
    """Where a package lives in the cache: keyed by version, kind, arch and
    digest, so a different build or content never reuses another's file."""
    name = Path(unquote(urlsplit(url).path)).name
    if name in ("", ".", ".."):
        name = "package"
    key = sha256 or "unverified"
    return Path(cache_dir) / version / kind / (arch or "any") / key / name


def fetch_package(
    url: str,
    *,
    cache_dir: Path,
    version: str,
    kind: str,
    arch: str | None,
    sha256: str | None,
    size: int | None = None,
    require_hash: bool = True,
    force: bool = False,
    progress: Progress | None = None,
    policy: DownloadPolicy = DownloadPolicy(),
) -> Fetched:
    """Bring one package into the cache, verified.

    Args:
        url: http(s) URL, ``file:`` URL or local path.
        sha256: the manifest's digest; None when it has none.
        require_hash: refuse a package without a digest (signatures are
            required); otherwise download it with a WARNING.
        force: download again even when a verified copy is cached.

    Raises:
        UnverifiableDownloadError: no digest and ``require_hash``.
        HashMismatchError, SizeMismatchError: the bytes are not the promised ones.
        DownloadError: the server or network failed (after retries).
    """
    if sha256 is None:
        if require_hash:
            raise UnverifiableDownloadError(url)
        logger.warning("%s has no sha256 in the manifest; it is not verified", url)

    dest = cache_path(cache_dir, version, kind, arch, sha256, url)
    if force:
        _discard(dest)
        _discard(_part_of(dest))
    elif sha256 is not None and dest.exists():
        reused = _reuse_cached(dest, sha256, url, progress)
        if reused is not None:
            return reused

    dest.parent.mkdir(parents=True, exist_ok=True)
    return download_file(
        url, dest, sha256=sha256, size=size, progress=progress, policy=policy
    )


def download_file(
    url: str,
    dest: Path,
    *,
    sha256: str | None,
    size: int | None = None,
    progress: Progress | None = None,
    policy: DownloadPolicy = DownloadPolicy(),
) -> Fetched:
    """Fetch ``url`` into ``dest`` through ``dest.part`` (see module docstring).

    Raises:
        HashMismatchError, SizeMismatchError, DownloadError.
    """
    limit = min(size, policy.max_bytes) if size else policy.max_bytes
    expected = _Expected(sha256.lower() if sha256 else None, size, limit)
    started = time.monotonic()
    scheme = urlsplit(url).scheme.lower()
    if scheme in ("http", "https"):
        result = _with_retries(url, dest, expected, policy, progress)
    else:
        result = _copy_local(_local_source(url), dest, expected, progress)
    return Fetched(
        dest, result[0], result[1], result[2], False, time.monotonic() - started
    )


def fetch_bytes(url: str, *, max_bytes: int, timeout: float = 30.0) -> bytes:
    """GET a small document (a manifest) into memory, with retries.

    Raises:
        TooLargeError: more than ``max_bytes``.
        DownloadError: the server or network failed.
    """
    policy = DownloadPolicy(max_bytes=max_bytes, read_timeout=timeout)
    attempt = 0
    while True:
        try:
            return _get_small(url, policy)
        except _Retry as retry:
            attempt += 1
            if attempt > policy.retries:
                raise retry.error from retry.error.__cause__
            _back_off(policy, attempt, url, retry.error)


def file_sha256(path: Path) -> str:
    """The sha256 hex digest of a file, read in 1 MiB chunks."""
    hasher = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            hasher.update(chunk)
    return hasher.hexdigest()


# -- HTTP ---------------------------------------------------------------------


def _client(policy: DownloadPolicy) -> httpx.Client:
    timeout = httpx.Timeout(
        connect=policy.connect_timeout,
        read=policy.read_timeout,
        write=policy.read_timeout,
        pool=policy.connect_timeout,
    )
    headers = {"Accept-Encoding": "identity", "User-Agent": "updock"}
    return httpx.Client(
        transport=WideReadTransport(),
        timeout=timeout,
        headers=headers,
        follow_redirects=True,
    )


def _with_retries(url, dest, expected, policy, progress) -> tuple[str, int, int]:
    attempt = 0
    with _client(policy) as client:
        while True:
            try:
                return _attempt(client, url, dest, expected, progress)
            except _Retry as retry:
                attempt += 1
                if attempt > policy.retries:
                    raise retry.error from retry.error.__cause__
                _back_off(policy, attempt, url, retry.error, progress)


def _back_off(policy, attempt, url, error, progress=None) -> None:
    delay = min(policy.backoff * 2 ** (attempt - 1), policy.max_backoff)
    logger.warning(
        "%s; retry %d of %d in %.1f s", error, attempt, policy.retries, delay
    )
    _Progress(url, None, progress).emit("retry", 0, str(error))
    time.sleep(delay)


def _attempt(client, url, dest, expected, progress) -> tuple[str, int, int]:
    """One GET; returns (sha256, size, resumed_from) of the placed file."""
    part = _part_of(dest)
    report = _Progress(url, expected.size, progress)
    hasher, offset = _resume_state(part, expected)
    if expected.size is not None and offset == expected.size:
        return _finish_resumed(part, dest, hasher, offset, expected, report)

    headers = {"Range": f"bytes={offset}-"} if offset else {}
    try:
        with client.stream("GET", url, headers=headers) as response:
            offset, hasher = _accept_response(
                response, url, part, offset, hasher, expected, report
            )
            received = _stream_body(
                response, url, part, offset, hasher, expected, report
            )
    except httpx.TimeoutException as exc:
        raise _Retry(TransferTimeoutError(url, f"timed out ({exc})")) from exc
    except httpx.TransportError as exc:
        raise _Retry(TransferError(url, f"transfer failed: {exc}")) from exc
    except httpx.HTTPError as exc:
        raise TransferError(url, str(exc)) from exc
    return _finish_resumed(part, dest, hasher, received, expected, report, offset)


def _finish_resumed(part, dest, hasher, size, expected, report, resumed_from=None):
    """Finish a transfer; a digest mismatch after a resume may come from a
    stale part, so it is retried once more from zero (the part is gone)."""
    resumed_from = size if resumed_from is None else resumed_from
    try:
        return _finish(part, dest, hasher, size, expected, report, resumed_from)
    except HashMismatchError as exc:
        if resumed_from:
            raise _Retry(exc) from exc
        raise


def _resume_state(part: Path, expected: _Expected):
    """Hash what an earlier attempt left; drop a part that cannot be a prefix."""
    hasher = hashlib.sha256()
    try:
        offset = part.stat().st_size
    except FileNotFoundError:
        return hasher, 0
    if offset > expected.limit or (
        expected.size is not None and offset > expected.size
    ):
        _discard(part)
        return hasher, 0
    with open(part, "rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            hasher.update(chunk)
    return hasher, offset


def _accept_response(response, url, part, offset, hasher, expected, report):
    """Decide from status and headers whether the body resumes, restarts or
    fails; returns the offset the body starts at and the hasher to feed."""
    status = response.status_code
    if status == 206 and offset:
        if _range_matches(response.headers.get("content-range"), offset, expected.size):
            logger.info("resuming %s at byte %d", url, offset)
            _check_length(response, url, offset, expected)
            return offset, hasher
        _discard(part)
        report.emit("restart", 0, "206 from another offset; starting again")
        raise _Retry(TransferError(url, "the server resumed from the wrong offset"))
    if status == 200:
        if offset:
            logger.info("%s ignored the range request; starting again from zero", url)
            report.emit("restart", 0, "range ignored; starting again")
        _check_length(response, url, 0, expected)
        return 0, hashlib.sha256()
    if status == 416 and offset:
        _discard(part)
        raise _Retry(TransferError(url, "the server refused the resume range"))
    error = HttpStatusError(url, status)
    raise _Retry(error) if error.transient else error


def _range_matches(header: str | None, offset: int, size: int | None) -> bool:
    match = _CONTENT_RANGE.fullmatch((header or "").strip())
    if match is None or int(match.group(1)) != offset:
        return False
    total = match.group(3)
    return size is None or total == "*" or int(total) == size


def _check_length(response, url, offset, expected) -> None:
    length = response.headers.get("content-length")
    if length is None or not length.isdigit():
        return
    total = offset + int(length)
    if total > expected.limit:
        raise TooLargeError(url, expected.limit)


def _stream_body(response, url, part, offset, hasher, expected, report) -> int:
    # iter_raw() without a chunk size hands over each socket read as it
    # arrives, and WideReadTransport makes those reads 1 MiB; httpx's own
    # re-chunking (iter_raw(CHUNK_BYTES)) would copy every byte once more
    # through a BytesIO.
    return _write_part(response.iter_raw(), url, part, offset, hasher, expected, report)


def _write_part(pieces, url, part, offset, hasher, expected, report) -> int:
    """Append ``pieces`` to ``part`` from ``offset``, hashed; fsync it.

    Bytes that arrived before a failure stay in the part, so a retry resumes
    right after them. Returns the part's size.
    """
    received = offset
    reported = offset
    too_big = None
    report.emit("start", received)
    append = os.O_APPEND if offset else os.O_TRUNC
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | append, 0o644)
    try:
        with _PieceSink(fd, hasher, offset) as writer:
            for piece in pieces:
                if received + len(piece) > expected.limit:
                    too_big = _limit_error(url, expected, received + len(piece))
                    break
                writer.put(piece)
                received += len(piece)
                if received - reported >= CHUNK_BYTES:
                    reported = received
                    report.emit("progress", received)
        if too_big is not None:
            _discard(part)
            raise too_big
        fsio.note_write(part)
        fsio.fsync_fd(fd, part)
    finally:
        os.close(fd)
    return received


class _PieceSink:
    """Writes pieces to the part on one thread and hashes them on another.

    The socket is read while earlier pieces are written and hashed:
    ``os.write`` and ``hashlib`` release the GIL, so receiving, writing and
    hashing proceed at once and hashing costs no throughput. Every
    ``_WRITEBACK_BYTES`` the kernel is asked to start writing what came
    (``fsio.start_writeback``), so the disk works during the transfer and
    the final fsync is short. At most ``_QUEUED`` pieces wait per thread,
    which bounds memory when the disk is slower than the network. Leaving
    the ``with`` block waits until every piece is written and hashed; a
    write error (a full disk) is raised there, or at the next ``put``.
    """

    _QUEUED = 8
    _WRITEBACK_BYTES = 32 << 20

    def __init__(self, fd: int, hasher, offset: int) -> None:
        self._fd = fd
        self._written = self._flushed = offset
        self._workers = [
            _Worker("download-writer", self._write, self._QUEUED),
            _Worker("download-hasher", hasher.update, self._QUEUED),
        ]

    def __enter__(self) -> _PieceSink:
        for worker in self._workers:
            worker.start()
        return self

    def put(self, piece: bytes) -> None:
        for worker in self._workers:
            worker.put(piece)

    def _write(self, piece: bytes) -> None:
        _write_all(self._fd, piece)
        self._written += len(piece)
        if self._written - self._flushed >= self._WRITEBACK_BYTES:
            fsio.start_writeback(self._fd, self._flushed, self._written - self._flushed)
            self._flushed = self._written

    def __exit__(self, exc_type, exc, tb) -> None:
        errors = [worker.finish() for worker in self._workers]
        failed = next((error for error in errors if error is not None), None)
        if exc is None and failed is not None:
            raise failed


class _Worker:
    """A thread applying ``handle`` to each queued piece, in order. After a
    failure it drops the rest (still taking them, so ``put`` never blocks
    for good); ``put`` and ``finish`` then raise or return the error."""

    def __init__(self, name: str, handle, queued: int) -> None:
        self._handle = handle
        self._pieces: queue.Queue[bytes | None] = queue.Queue(queued)
        self._error: Exception | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def put(self, piece: bytes) -> None:
        if self._error is not None:
            raise self._error
        self._pieces.put(piece)

    def finish(self) -> Exception | None:
        self._pieces.put(None)
        self._thread.join()
        return self._error

    def _run(self) -> None:
        while (piece := self._pieces.get()) is not None:
            if self._error is not None:
                continue
            try:
                self._handle(piece)
            except Exception as exc:  # noqa: BLE001 - handed to the caller
                self._error = exc


def _limit_error(url: str, expected: _Expected, received: int) -> DownloadError:
    if expected.size is not None and expected.limit == expected.size:
        return SizeMismatchError(url, expected.size, received)
    return TooLargeError(url, expected.limit)


def _get_small(url: str, policy: DownloadPolicy) -> bytes:
    body = bytearray()
    try:
        with _client(policy) as client, client.stream("GET", url) as response:
            if response.status_code != 200:
                error = HttpStatusError(url, response.status_code)
                raise _Retry(error) if error.transient else error
            for chunk in response.iter_raw(CHUNK_BYTES):
                body += chunk
                if len(body) > policy.max_bytes:
                    raise TooLargeError(url, policy.max_bytes)
    except httpx.TimeoutException as exc:
        raise _Retry(TransferTimeoutError(url, f"timed out ({exc})")) from exc
    except httpx.TransportError as exc:
        raise _Retry(TransferError(url, f"transfer failed: {exc}")) from exc
    except httpx.HTTPError as exc:
        raise TransferError(url, str(exc)) from exc
    return bytes(body)


# -- local sources, finishing, cache ------------------------------------------


def _local_source(url: str) -> Path:
    parts = urlsplit(url)
    if parts.scheme.lower() == "file":
        return Path(unquote(parts.path))
    return Path(url)


def _copy_local(source: Path, dest: Path, expected, progress) -> tuple[str, int, int]:
    part = _part_of(dest)
    report = _Progress(str(source), expected.size, progress)
    hasher = hashlib.sha256()
    try:
        src = open(source, "rb")
    except FileNotFoundError as exc:
        raise SourceMissingError(source) from exc
    with src:
        pieces = iter(lambda: src.read(CHUNK_BYTES), b"")
        size = _write_part(pieces, str(source), part, 0, hasher, expected, report)
    return _finish(part, dest, hasher, size, expected, report, resumed_from=0)


def _finish(part, dest, hasher, size, expected, report, resumed_from):
    """Check size and digest of the synced part, then rename it into place.

    Returns (sha256, size, resumed_from).
    """
    url = report.url
    digest = hasher.hexdigest()
    if expected.size is not None and size != expected.size:
        _discard(part)
        raise SizeMismatchError(url, expected.size, size)
    if expected.sha256 is not None and digest != expected.sha256:
        _discard(part)
        raise HashMismatchError(url, expected.sha256, digest)

    os.replace(part, dest)
    fsio.fsync_dir(dest.parent)
    logger.info("fetched %s (%d bytes, sha256 %s)", url, size, digest)
    report.emit("done", size)
    return digest, size, resumed_from


def _reuse_cached(dest: Path, sha256: str, url: str, progress) -> Fetched | None:
    started = time.monotonic()
    digest = file_sha256(dest)
    if digest != sha256.lower():
        logger.warning("cached %s does not match the manifest; fetching again", dest)
        _discard(dest)
        return None
    size = dest.stat().st_size
    logger.info("using cached %s (sha256 verified)", dest)
    _Progress(url, size, progress).emit("reused", size)
    return Fetched(dest, digest, size, 0, True, time.monotonic() - started)


def _part_of(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def _discard(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
        return
    try:
        path.unlink()
    except FileNotFoundError:
        pass
