"""Fixtures of the journal tests; sample events live in journal_samples.py."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# Test modules import journal_samples (pytest's importlib mode does not put
# test folders on sys.path).
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture
def journal_dir(tmp_path: Path) -> Path:
    return tmp_path / ".updock" / "journal"
