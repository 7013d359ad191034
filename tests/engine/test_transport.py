"""The wide-read transport over plain HTTP and over TLS, on 127.0.0.1."""

from __future__ import annotations

import contextlib
import datetime
import http.server
import ipaddress
import ssl
import threading

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from engine.transport import READ_BYTES, WideReadTransport

BODY = bytes(range(256)) * (3 * READ_BYTES // 256 + 7)


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, *args) -> None:
        pass


def _self_signed(folder):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@contextlib.contextmanager
def _serving(tmp_path, scheme):
    """A server on 127.0.0.1; yields its URL and, for TLS, a client context
    that trusts its certificate."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    trust = None
    if scheme == "https":
        cert, key = _self_signed(tmp_path)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        trust = ssl.create_default_context(cafile=str(cert))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"{scheme}://127.0.0.1:{server.server_address[1]}/pkg", trust
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_body_arrives_whole_in_wide_reads(tmp_path, scheme):
    with _serving(tmp_path, scheme) as (url, trust):
        transport = WideReadTransport(verify=trust or True)
        with httpx.Client(transport=transport) as client:
            response = client.get(url)
    assert response.status_code == 200
    assert response.content == BODY


def test_tls_refuses_an_untrusted_certificate(tmp_path):
    with _serving(tmp_path, "https") as (url, _trust):
        with httpx.Client(transport=WideReadTransport()) as client:
            with pytest.raises(httpx.ConnectError):
                client.get(url)
