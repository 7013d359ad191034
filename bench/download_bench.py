"""Download throughput and memory: updock's downloader beside curl.

A 500 MB file is served over 127.0.0.1 by ``busybox httpd`` (one server for
both clients) and fetched, in the same run and alternately, by curl and by
``engine.download.download_file`` with sha256 checking on. Each updock fetch
runs in its own subprocess so its peak resident memory (``ru_maxrss``) is its
own. Prints each run, the best and median throughput of each client, their
ratios (goal: at least 0.9 of curl) and updock's peak memory (goal: under
100 MB). On a shared 2-core machine other work moves single runs a lot: the
load average is printed beside the figures, and the median ratio is the
steadier one.

Usage: .venv/bin/python bench/download_bench.py [--mb 500] [--rounds 5]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
_CHILD = """
import json, resource, sys, time
from pathlib import Path
from engine.download import download_file
url, dest, digest, size = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
before = resource.getrusage(resource.RUSAGE_SELF)
started = time.perf_counter()
result = download_file(url, dest, sha256=digest, size=size)
seconds = time.perf_counter() - started
after = resource.getrusage(resource.RUSAGE_SELF)
cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
peak_kib = after.ru_maxrss
figures = {"seconds": seconds, "cpu": cpu, "peak_kib": peak_kib, "size": result.size}
print(json.dumps(figures))
"""


def make_file(path: Path, megabytes: int) -> str:
    block = os.urandom(1 << 20)
    hasher = hashlib.sha256()
    with open(path, "wb") as out:
        for index in range(megabytes):
            chunk = index.to_bytes(8, "little") + block[8:]
            out.write(chunk)
            hasher.update(chunk)
    return hasher.hexdigest()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"busybox httpd did not listen on 127.0.0.1:{port}")


def run_curl(url: str, dest: Path) -> tuple[float, float]:
    """Wall seconds and CPU seconds of one curl fetch."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(["curl", "-sS", "--fail", "-o", str(dest), url], check=True)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return seconds, cpu


def run_updock(url: str, dest: Path, digest: str, size: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, url, str(dest), digest, str(size)],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    return json.loads(out.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if shutil.which("busybox") is None or shutil.which("curl") is None:
        print("busybox and curl are needed", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory(prefix="updock-bench-") as scratch:
        root = Path(scratch)
        (root / "www").mkdir()
        source = root / "www" / "big.bin"
        digest = make_file(source, args.mb)
        size = source.stat().st_size
        print(f"load average at the start: {os.getloadavg()[0]:.2f} (2 cores)")
        port = free_port()
        server = subprocess.Popen(
            [
                "busybox",
                "httpd",
                "-f",
                "-p",
                f"127.0.0.1:{port}",
                "-h",
                str(root / "www"),
            ]
        )
        try:
            wait_for_port(port, time.monotonic() + 10)
            url = f"http://127.0.0.1:{port}/big.bin"
            report(run_rounds(url, root, digest, size, args.rounds), size)
        finally:
            server.terminate()
            server.wait(timeout=10)
    return 0


def run_rounds(url: str, root: Path, digest: str, size: int, rounds: int) -> dict:
    curl_times, updock_times, peaks = [], [], []
    mb = size / 1e6
    for index in range(rounds):
        curl_dest = root / f"curl-{index}.bin"
        seconds, curl_cpu = run_curl(url, curl_dest)
        curl_times.append(seconds)
        curl_dest.unlink()
        updock_dest = root / f"updock-{index}.bin"
        child = run_updock(url, updock_dest, digest, size)
        updock_dest.unlink()
        updock_times.append(child["seconds"])
        peaks.append(child["peak_kib"])
        print(
            f"round {index + 1}: curl {mb / seconds:7.1f} MB/s ({curl_cpu:.2f} s CPU)  "
            f"updock {mb / child['seconds']:7.1f} MB/s ({child['cpu']:.2f} s CPU, "
            f"sha256 on, fsync'd)   updock peak RSS {child['peak_kib'] / 1024:.1f} MiB"
        )
    return {"curl": curl_times, "updock": updock_times, "peaks": peaks}


def report(results: dict, size: int) -> None:
    mb = size / 1e6
    curl = [mb / seconds for seconds in results["curl"]]
    updock = [mb / seconds for seconds in results["updock"]]
    peak = max(results["peaks"]) / 1024
    print(f"file: {mb:.0f} MB over 127.0.0.1, server: busybox httpd")
    print(f"load average at the end: {os.getloadavg()[0]:.2f} (2 cores)")
    median_curl, median_updock = statistics.median(curl), statistics.median(updock)
    print(f"curl   best {max(curl):7.1f} MB/s   median {median_curl:7.1f} MB/s")
    print(f"updock best {max(updock):7.1f} MB/s   median {median_updock:7.1f} MB/s")
    print(
        f"ratio updock/curl: best {max(updock) / max(curl):.2f}, "
        f"median {median_updock / median_curl:.2f} (goal >= 0.90)"
    )
    print(f"updock peak RSS: {peak:.1f} MiB (goal < 100 MiB)")
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"bench process peak RSS: {own:.1f} MiB")


if __name__ == "__main__":
    sys.exit(main())
