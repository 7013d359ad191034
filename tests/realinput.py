"""Real input: two published versions of a well-known project's source tree.

The sdists of ``requests`` 2.31.0 and 2.32.3 are fetched once from PyPI with
``pip download`` into ``<repo>/.cache/releases/`` (gitignored) and reused from
there; a test is skipped, saying why, when they are neither cached nor
downloadable. ``release_trees`` extracts them (tarfile's ``data`` filter) into
a session temporary folder as the old and the new tree.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / ".cache" / "releases"
PROJECT = "requests"
OLD_VERSION = "2.31.0"
NEW_VERSION = "2.32.3"


def sdist(project: str, version: str) -> Path:
    """The cached sdist of ``project==version``, downloaded when missing."""
    wanted = CACHE / f"{project}-{version}.tar.gz"
    if wanted.exists():
        return wanted
    CACHE.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--no-binary",
        ":all:",
        "--dest",
        str(CACHE),
        f"{project}=={version}",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if result.returncode != 0 or not wanted.exists():
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        pytest.skip(f"cannot fetch {project}=={version} from PyPI: {' '.join(tail)}")
    return wanted


def extract_sdist(archive: Path, dest: Path) -> Path:
    """Unpack an sdist; returns its single top-level folder."""
    dest.mkdir(parents=True)
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")
    (top,) = dest.iterdir()
    return top


@pytest.fixture(scope="session")
def release_trees(tmp_path_factory) -> tuple[Path, Path]:
    """(old tree, new tree): requests 2.31.0 and 2.32.3 source trees."""
    base = tmp_path_factory.mktemp("real-input")
    old = extract_sdist(sdist(PROJECT, OLD_VERSION), base / "old")
    new = extract_sdist(sdist(PROJECT, NEW_VERSION), base / "new")
    return old, new
