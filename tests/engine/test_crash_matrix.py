"""Kill a 209-operation transaction (every kind of operation) with SIGKILL at
every durable step, and at random moments, then recover in a new process:
the whole tree must be exactly the old one or exactly the new one, and the
journal must verify. The same for a kill at every step of recovery.

Steps are discovered with ``UPDOCK_CRASH_LOG``; steps hit hundreds of times
(one per operation) are sampled with a stride, every distinct step name is
covered.
"""

from __future__ import annotations

import random
import subprocess
import sys
import time

import pytest
import txdriver
from txcrash import (
    DRIVER,
    REPO,
    build_reference,
    check_recovered,
    decision_point,
    driver,
    in_parallel,
    killed,
    position,
    steps_of,
    targets,
)

APPLY_STRIDE = 7
RECOVERY_STRIDE = 23


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return build_reference(tmp_path_factory.mktemp("crash-reference"))


def _crashed_world(root, crash_at: str) -> None:
    txdriver.build_world(root)
    result = driver("run", root, crash_at=crash_at)
    assert killed(result), f"run did not die at {crash_at}: {result.stderr[-2000:]}"


def test_transaction_killed_at_every_step_recovers_old_or_new(reference, tmp_path):
    steps = reference.run_steps
    chosen = targets(steps, APPLY_STRIDE)
    decided = decision_point(steps)
    assert {
        "tx.prepare.journaled",
        "tx.apply.intents",
        "tx.decided",
        "tx.committed",
    } <= {target.partition("#")[0] for target in chosen}

    def one(index, target):
        root = tmp_path / f"run{index}"
        _crashed_world(root, target)
        result = driver("recover", root)
        assert result.returncode == 0, f"{target}: recovery failed: {result.stderr}"
        outcome = check_recovered(root, reference)
        expected = "new" if position(steps, target) >= decided else "old"
        assert outcome == expected, f"killed at {target}: got the {outcome} tree"
        return outcome

    outcomes = in_parallel(one, chosen)
    assert "old" in outcomes and "new" in outcomes


@pytest.mark.parametrize(
    ("crash_at", "outcome"),
    [("tx.apply.op#105", "old"), ("tx.decided", "new")],
    ids=["rolling-back", "rolling-forward"],
)
def test_recovery_killed_at_every_step_recovers_again(
    reference, tmp_path, crash_at, outcome
):
    probe = tmp_path / "probe"
    _crashed_world(probe, crash_at)
    log = tmp_path / "recovery.steps"
    assert driver("recover", probe, crash_log=log).returncode == 0
    steps = steps_of(log)
    chosen = targets(steps, RECOVERY_STRIDE)
    assert any(step.startswith("recovery.") for step in steps)

    def one(index, target):
        root = tmp_path / f"rec{index}"
        _crashed_world(root, crash_at)
        first = driver("recover", root, crash_at=target)
        assert killed(first), (
            f"recovery did not die at {target}: {first.stderr[-2000:]}"
        )
        second = driver("recover", root)
        assert second.returncode == 0, (
            f"{target}: second recovery failed: {second.stderr}"
        )
        assert check_recovered(root, reference) == outcome, f"killed at {target}"

    in_parallel(one, chosen)


def test_transaction_killed_at_random_moments_recovers_old_or_new(reference, tmp_path):
    """SIGKILL from a timer, anywhere in the run, Python's own steps included."""
    rng = random.Random(20240601)
    started = time.monotonic()
    root = tmp_path / "timing"
    txdriver.build_world(root)
    assert driver("run", root).returncode == 0
    duration = time.monotonic() - started

    def one(index, delay):
        root = tmp_path / f"random{index}"
        txdriver.build_world(root)
        child = subprocess.Popen(
            [sys.executable, str(DRIVER), "run", str(root)],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            child.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        result = driver("recover", root)
        assert result.returncode == 0, (
            f"recovery after {delay:.3f}s failed: {result.stderr}"
        )
        return check_recovered(root, reference)

    delays = [rng.uniform(0.05, duration) for _ in range(16)]
    outcomes = in_parallel(one, delays)
    assert set(outcomes) <= {"old", "new"}
