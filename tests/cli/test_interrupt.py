"""Ctrl-C at any moment of startup: one line, exit code 130, no traceback."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest
from deploykit import make_demo_deployment, updock_argv

from cli import exitcodes


@pytest.mark.parametrize("delay", [0.05, 0.1, 0.2, 0.3, 0.5, 0.8])
def test_interrupt_during_startup_prints_no_traceback(tmp_path, delay):
    root = make_demo_deployment(tmp_path / "deployment")
    child = subprocess.Popen(
        [*updock_argv(), "status", "--no-services", "--root", str(root)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(delay)
    child.send_signal(signal.SIGINT)
    _out, err = child.communicate(timeout=60)
    assert "Traceback" not in err, err
    # Interrupted (130), killed by the signal before Python could handle it,
    # or finished first (0).
    assert child.returncode in (exitcodes.INTERRUPTED, -signal.SIGINT, exitcodes.OK), err
    if child.returncode == exitcodes.INTERRUPTED:
        assert len(err.strip().splitlines()) == 1, err
