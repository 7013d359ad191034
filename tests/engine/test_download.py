"""Downloads against a real, misbehaving HTTP server on 127.0.0.1.

Every case ends with the right bytes under the final name (hash checked) or
with a clear error and no file under the final name.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os

import pytest

from engine.download import (
    DownloadPolicy,
    HashMismatchError,
    HttpStatusError,
    SizeMismatchError,
    SourceMissingError,
    TooLargeError,
    TransferError,
    TransferTimeoutError,
    UnverifiableDownloadError,
    cache_path,
    download_file,
    fetch_package,
)
from engine.errors import DownloadError, IntegrityError
from httpserver import MisbehavingServer

BODY = os.urandom(3 * 1024 * 1024 + 12345)
DIGEST = hashlib.sha256(BODY).hexdigest()
SIZE = len(BODY)
FAST = DownloadPolicy(read_timeout=2.0, connect_timeout=2.0, retries=3, backoff=0.01)


@pytest.fixture
def server():
    with MisbehavingServer({"pkg.zip": BODY}) as running:
        yield running


def fetch(server, dest, *, size=SIZE, sha256=DIGEST, policy=FAST, events=None):
    return download_file(
        server.url("pkg.zip"),
        dest,
        sha256=sha256,
        size=size,
        policy=policy,
        progress=events.append if events is not None else None,
    )


def plant_part(dest, length):
    part = dest.with_name(dest.name + ".part")
    part.write_bytes(BODY[:length])
    return part


def assert_refused(dest):
    assert not dest.exists()
    assert not dest.with_name(dest.name + ".part").exists()


def test_download_normal_server_verifies_bytes(server, tmp_path):
    events = []
    result = fetch(server, tmp_path / "pkg.zip", events=events)

    assert (tmp_path / "pkg.zip").read_bytes() == BODY
    assert result.sha256 == DIGEST and result.size == len(BODY)
    assert [r.range for r in server.requests] == [None]
    assert server.requests[0].status == 200
    assert events[-1].data == {"event": "done", "message": ""}
    assert events[-1].done == len(BODY) and events[-1].total == len(BODY)


def test_download_partial_part_resumes_with_range(server, tmp_path):
    dest = tmp_path / "pkg.zip"
    plant_part(dest, 1_000_000)

    result = fetch(server, dest)

    assert dest.read_bytes() == BODY
    assert result.resumed_from == 1_000_000
    assert [(r.range, r.status) for r in server.requests] == [("bytes=1000000-", 206)]


def test_download_range_ignored_restarts_from_zero(server, tmp_path):
    dest = tmp_path / "pkg.zip"
    plant_part(dest, 1_000_000)
    server.behaviour = "ignore_range"

    result = fetch(server, dest)

    assert dest.read_bytes() == BODY
    assert result.resumed_from == 0
    assert [(r.range, r.status) for r in server.requests] == [("bytes=1000000-", 200)]


def test_download_206_from_wrong_offset_starts_again(server, tmp_path):
    dest = tmp_path / "pkg.zip"
    plant_part(dest, 1_000_000)
    server.behaviour = "wrong_offset"

    result = fetch(server, dest)

    assert dest.read_bytes() == BODY
    assert result.resumed_from == 0
    assert [(r.range, r.status) for r in server.requests] == [
        ("bytes=1000000-", 206),
        (None, 200),
    ]


def test_download_206_lying_about_offset_caught_by_hash(server, tmp_path):
    dest = tmp_path / "pkg.zip"
    plant_part(dest, 1_000_000)
    server.behaviour = "lying_offset"

    result = fetch(server, dest)

    assert dest.read_bytes() == BODY
    assert result.resumed_from == 0
    assert [r.range for r in server.requests] == ["bytes=1000000-", None]


def test_download_body_cut_short_once_resumes(server, tmp_path):
    dest = tmp_path / "pkg.zip"
    server.behaviour, server.times = "cut_short", 1

    result = fetch(server, dest)

    assert dest.read_bytes() == BODY
    assert 0 < result.resumed_from <= len(BODY) // 2
    assert [r.status for r in server.requests] == [200, 206]


def test_download_body_always_cut_short_fails_clearly(server, tmp_path):
    dest = tmp_path / "pkg.zip"
    server.behaviour = "cut_short"

    with pytest.raises(TransferError) as caught:
        fetch(server, dest)

    assert "transfer failed" in str(caught.value)
    assert not dest.exists()
    assert len(server.requests) == FAST.retries + 1


def test_download_stalled_server_fails_within_read_timeout(server, tmp_path):
    dest = tmp_path / "pkg.zip"
    server.behaviour = "stall"
    policy = DownloadPolicy(
        read_timeout=0.3, connect_timeout=2.0, retries=1, backoff=0.01
    )

    with pytest.raises(TransferTimeoutError):
        fetch(server, dest, policy=policy)

    assert not dest.exists()
    assert len(server.requests) == 2


def test_download_content_length_longer_than_body_fails(server, tmp_path):
    dest = tmp_path / "pkg.zip"
    server.behaviour = "length_long"

    with pytest.raises(DownloadError):
        fetch(server, dest, size=None)

    assert not dest.exists()


def test_download_content_length_shorter_than_body_refused(server, tmp_path):
    dest = tmp_path / "pkg.zip"
    server.behaviour = "length_short"

    with pytest.raises(SizeMismatchError):
        fetch(server, dest)
    assert_refused(dest)

    with pytest.raises(HashMismatchError):
        fetch(server, dest, size=None)
    assert_refused(dest)


def test_download_not_found_is_not_retried(server, tmp_path):
    dest = tmp_path / "pkg.zip"
    server.behaviour = "not_found"

    with pytest.raises(HttpStatusError) as caught:
        fetch(server, dest)

    assert caught.value.status == 404
    assert len(server.requests) == 1
    assert_refused(dest)


def test_download_server_error_is_retried(server, tmp_path):
    dest = tmp_path / "pkg.zip"
    server.behaviour, server.times = "server_error", 2

    fetch(server, dest)

    assert dest.read_bytes() == BODY
    assert [r.status for r in server.requests] == [503, 503, 200]


def test_download_other_file_of_same_size_refused(server, tmp_path):
    dest = tmp_path / "pkg.zip"
    server.behaviour = "swap"

    with pytest.raises(HashMismatchError) as caught:
        fetch(server, dest)

    assert isinstance(caught.value, IntegrityError)
    assert caught.value.expected == DIGEST
    assert len(server.requests) == 1
    assert_refused(dest)


def test_download_stale_part_of_another_file_caught_and_replaced(server, tmp_path):
    dest = tmp_path / "pkg.zip"
    dest.with_name("pkg.zip.part").write_bytes(b"\0" * 1000)

    result = fetch(server, dest)

    assert dest.read_bytes() == BODY
    assert result.resumed_from == 0
    assert [r.range for r in server.requests] == ["bytes=1000-", None]


def test_download_larger_than_cap_refused(server, tmp_path):
    dest = tmp_path / "pkg.zip"
    policy = DownloadPolicy(max_bytes=1024 * 1024, retries=0)

    with pytest.raises(TooLargeError):
        fetch(server, dest, size=None, policy=policy)

    assert not dest.exists()


def test_fetch_package_cache_keyed_and_reused_only_when_verified(server, tmp_path):
    url = server.url("pkg.zip")
    args = dict(cache_dir=tmp_path, version="1.2.3.4", kind="patch", arch="x86_64")

    first = fetch_package(url, sha256=DIGEST, policy=FAST, **args)
    second = fetch_package(url, sha256=DIGEST, policy=FAST, **args)

    assert first.path == tmp_path / "1.2.3.4/patch/x86_64" / DIGEST / "pkg.zip"
    assert first.path == cache_path(tmp_path, "1.2.3.4", "patch", "x86_64", DIGEST, url)
    assert not first.reused and second.reused
    assert len(server.requests) == 1

    first.path.write_bytes(b"x" * len(BODY))
    third = fetch_package(url, sha256=DIGEST, policy=FAST, **args)
    assert not third.reused and third.path.read_bytes() == BODY

    forced = fetch_package(url, sha256=DIGEST, policy=FAST, force=True, **args)
    assert not forced.reused
    assert len(server.requests) == 3


def test_fetch_package_without_hash_needs_unsigned_deployment(server, tmp_path, caplog):
    url = server.url("pkg.zip")
    args = dict(
        cache_dir=tmp_path, version="1.0.0.0", kind="full", arch=None, sha256=None
    )

    with pytest.raises(UnverifiableDownloadError):
        fetch_package(url, require_hash=True, policy=FAST, **args)
    assert server.requests == []

    with caplog.at_level(logging.WARNING, logger="engine.download"):
        result = fetch_package(url, require_hash=False, policy=FAST, **args)
    assert result.path.read_bytes() == BODY
    assert "not verified" in caplog.text


def test_download_local_path_and_file_url_hash_checked(tmp_path):
    source = tmp_path / "source.zip"
    source.write_bytes(BODY)

    by_path = download_file(str(source), tmp_path / "a.zip", sha256=DIGEST)
    by_url = download_file(source.as_uri(), tmp_path / "b.zip", sha256=DIGEST)

    assert by_path.path.read_bytes() == BODY == by_url.path.read_bytes()
    with pytest.raises(HashMismatchError):
        download_file(str(source), tmp_path / "c.zip", sha256="0" * 64)
    assert_refused(tmp_path / "c.zip")
    with pytest.raises(SourceMissingError):
        download_file(str(tmp_path / "missing.zip"), tmp_path / "d.zip", sha256=DIGEST)


def test_write_failure_mid_transfer_is_raised_and_leaves_no_file(
    server, tmp_path, monkeypatch
):
    """A disk that fills while pieces are still arriving: the writer thread's
    error reaches the caller (the transfer neither hangs nor reports
    success) and nothing lands under the final name."""
    import engine.download as download

    real_write_all, calls = download._write_all, []

    def filling(fd, piece):
        calls.append(len(piece))
        if len(calls) > 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write_all(fd, piece)

    monkeypatch.setattr(download, "_write_all", filling)
    dest = tmp_path / "cache" / "pkg.zip"
    dest.parent.mkdir()
    with pytest.raises(OSError) as caught:
        fetch(server, dest)
    assert caught.value.errno == errno.ENOSPC
    assert not dest.exists()
    assert len(calls) > 2
