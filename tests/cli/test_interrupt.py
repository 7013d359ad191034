"""Ctrl-C: at any moment of startup, exit code 130 and no traceback; in the
middle of an upgrade, the upgrade is rolled back before the command exits."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
from deploykit import (
    build_demo_release,
    explain,
    json_lines,
    make_demo_deployment,
    snapshot,
    updock,
    updock_argv,
)

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
        assert err.strip().splitlines()[0].startswith("interrupted"), err


def test_interrupt_during_apply_rolls_back_before_exiting(tmp_path):
    root = make_demo_deployment(tmp_path / "deployment")
    release = build_demo_release(tmp_path / "release")
    before = snapshot(root / "docker")
    env = {"UPDOCK_CRASH_AT": "tx.apply.op#3", "UPDOCK_CRASH_SIGNAL": "INT"}

    result = subprocess.run(
        [*updock_argv(), "upgrade", "apply", "--root", str(root), "--manifest",
         str(release.manifest_path), "--yes", "--no-services"],
        env={**os.environ, **env}, capture_output=True, text=True, timeout=120,
    )

    assert result.returncode == exitcodes.INTERRUPTED, explain(result)
    assert "was rolled back: the previous release is in place" in result.stderr
    assert "next:" in result.stderr and "Traceback" not in result.stderr
    assert snapshot(root / "docker") == before
    status = updock("status", "--no-services", "--json", "--root", str(root))
    assert json_lines(status.stdout)[-1]["pending_recovery"] == []
    assert snapshot(root / "docker") == before
