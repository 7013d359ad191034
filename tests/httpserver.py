"""A real HTTP server on 127.0.0.1 that can misbehave on purpose.

Serves ``files`` (name -> bytes) from a ``ThreadingHTTPServer`` thread.
``behaviour`` picks how it answers; ``times`` limits a misbehaviour to the
first N requests (then it answers normally), None means every request:

- ``normal``: 200, or 206 with a correct ``Content-Range`` for a Range request;
- ``ignore_range``: always 200 with the whole body;
- ``wrong_offset``: a Range request gets 206 from 10 bytes before the offset
  asked for, with an honest ``Content-Range``;
- ``lying_offset``: 206 whose ``Content-Range`` claims the offset asked for
  while the body starts at byte 0;
- ``cut_short``: the full ``Content-Length``, half the body, then close;
- ``stall``: headers and half the body, then silence until the test ends;
- ``length_long``: ``Content-Length`` 100 bytes more than the body, then close;
- ``length_short``: ``Content-Length`` 100 bytes less than the body sent;
- ``not_found``: 404;
- ``server_error``: 503;
- ``swap``: a different body of the same size.

``requests`` records (path, Range header, status) for each request.

Usage::

    with MisbehavingServer({"pkg.zip": data}) as server:
        server.behaviour = "cut_short"; server.times = 1
        url = server.url("pkg.zip")
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_RANGE = re.compile(r"bytes=(\d+)-$")


@dataclass
class Request:
    path: str
    range: str | None
    status: int


@dataclass
class MisbehavingServer:
    files: dict[str, bytes] = field(default_factory=dict)
    behaviour: str = "normal"
    times: int | None = None
    requests: list[Request] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.released = threading.Event()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> MisbehavingServer:
        owner = self

        class Handler(_Handler):
            server_owner = owner

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            daemon=True,
        )
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.released.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def next_behaviour(self) -> str:
        """The behaviour for the request being answered (counts ``times``)."""
        with self._lock:
            if self.times is None:
                return self.behaviour
            if self.times > 0:
                self.times -= 1
                return self.behaviour
            return "normal"

    def record(self, path: str, range_header: str | None, status: int) -> None:
        with self._lock:
            self.requests.append(Request(path, range_header, status))


class _Handler(BaseHTTPRequestHandler):
    server_owner: MisbehavingServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        """Quiet: the test output is for the tests."""

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        owner = self.server_owner
        name = self.path.lstrip("/")
        body = owner.files.get(name)
        behaviour = owner.next_behaviour()
        range_header = self.headers.get("Range")
        if body is None or behaviour == "not_found":
            return self._status(404, name, range_header)
        if behaviour == "server_error":
            return self._status(503, name, range_header)
        if behaviour == "swap":
            body = bytes(255 - b for b in body)

        match = _RANGE.match(range_header or "")
        start = int(match.group(1)) if match else None
        if start is not None and behaviour != "ignore_range" and start < len(body):
            return self._partial(name, body, start, behaviour, range_header)
        owner.record(name, range_header, 200)
        self._send(200, body, behaviour, {})

    def _partial(self, name, body, start, behaviour, range_header) -> None:
        first = start
        if behaviour == "wrong_offset":
            first = max(0, start - 10)
        payload = body[first:]
        claimed = first
        if behaviour == "lying_offset":
            payload = body[: len(body) - start]
            claimed = start
        headers = {"Content-Range": f"bytes {claimed}-{len(body) - 1}/{len(body)}"}
        self.server_owner.record(name, range_header, 206)
        self._send(206, payload, behaviour, headers)

    def _status(self, status: int, name: str, range_header: str | None) -> None:
        self.server_owner.record(name, range_header, status)
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True

    def _send(self, status: int, payload: bytes, behaviour: str, headers: dict) -> None:
        length = len(payload)
        if behaviour == "length_long":
            length += 100
        elif behaviour == "length_short":
            length = max(0, length - 100)
        self.send_response(status)
        self.send_header("Content-Length", str(length))
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Connection", "close")
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.close_connection = True
        if behaviour in ("cut_short", "stall"):
            self.wfile.write(payload[: len(payload) // 2])
            self.wfile.flush()
            if behaviour == "stall":
                self.server_owner.released.wait(30)
            return
        self.wfile.write(payload)
