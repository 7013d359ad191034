"""An httpx transport that reads up to 1 MiB per socket read.

httpcore asks the socket for 64 KiB at a time. For a package of hundreds of
megabytes the per-read work in httpcore and h11 then costs more CPU than the
sha256 and the disk write together: on this project's 2-core test machine a
500 MB download used about 1.8 s of CPU with 64 KiB reads and 0.9 s with
1 MiB reads (bench/download_bench.py measures the result against curl).

The wider reads go through httpcore's public ``NetworkBackend`` interface:
the backend below wraps the standard synchronous one and raises the size of
every read; h11 takes any amount of data per ``receive_data`` call. The
transport around it mirrors ``httpx.HTTPTransport`` for direct connections
(proxies from the environment keep httpx's own transports, mounted by the
client), and turns httpcore's exceptions into httpx's, so that
``engine.download`` translates one family only.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Iterable, Iterator

import httpcore
import httpx

READ_BYTES = 1 << 20

_ERRORS: tuple[tuple[type[Exception], type[httpx.HTTPError]], ...] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.ProtocolError, httpx.ProtocolError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
)


@contextlib.contextmanager
def _httpx_errors() -> Iterator[None]:
    try:
        yield
    except (httpcore.TimeoutException, httpcore.NetworkError) as exc:
        raise _mapped(exc) from exc
    except (httpcore.ProtocolError, httpcore.UnsupportedProtocol) as exc:
        raise _mapped(exc) from exc


def _mapped(exc: Exception) -> httpx.HTTPError:
    for core, mapped in _ERRORS:
        if isinstance(exc, core):
            return mapped(str(exc))
    return httpx.TransportError(str(exc))


class _WideStream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max(max_bytes, READ_BYTES), timeout)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, timeout)

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        return _WideStream(self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> object:
        return self._inner.get_extra_info(info)


class _WideBackend(httpcore.NetworkBackend):
    def __init__(self) -> None:
        self._inner = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable | None = None,
    ) -> httpcore.NetworkStream:
        inner = self._inner.connect_tcp(
            host, port, timeout, local_address, socket_options
        )
        return _WideStream(inner)

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable | None = None,
    ) -> httpcore.NetworkStream:
        return _WideStream(
            self._inner.connect_unix_socket(path, timeout, socket_options)
        )

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class _Body(httpx.SyncByteStream):
    def __init__(self, stream: Iterable[bytes]) -> None:
        self._stream = stream

    def __iter__(self) -> Iterator[bytes]:
        with _httpx_errors():
            yield from self._stream

    def close(self) -> None:
        close = getattr(self._stream, "close", None)
        if close is not None:
            with _httpx_errors():
                close()


class WideReadTransport(httpx.BaseTransport):
    """Direct HTTP/1.1 connections reading up to ``READ_BYTES`` at a time.

    Plain ``http`` and ``https`` requests go through two connection pools;
    the second, and its TLS context (loading the CA bundle costs tens of
    milliseconds), is made on the first ``https`` request.
    """

    def __init__(self, verify: ssl.SSLContext | str | bool = True) -> None:
        self._verify = verify
        self._pools: dict[bool, httpcore.ConnectionPool] = {}

    def _pool_for(self, url: httpx.URL) -> httpcore.ConnectionPool:
        tls = url.scheme == "https"
        if tls not in self._pools:
            context = httpx.create_ssl_context(verify=self._verify) if tls else None
            self._pools[tls] = httpcore.ConnectionPool(
                ssl_context=context, network_backend=_WideBackend()
            )
        return self._pools[tls]

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with _httpx_errors():
            response = self._pool_for(request.url).handle_request(core_request)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_Body(response.stream),
            extensions=response.extensions,
        )

    def close(self) -> None:
        for pool in self._pools.values():
            pool.close()
