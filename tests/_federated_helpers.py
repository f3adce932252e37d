"""Running a federation (simulation or app) in a subprocess under a hang guard, as the federated tests do."""

import os
import signal
import subprocess

import pytest

__all__ = ["run_guarded"]


def run_guarded(cmd: list[str], guard_seconds: float, what: str = "the simulation") -> str:
    """Run ``cmd`` in its own process group and return its output (stdout and stderr together); the test fails if
    it exits non-zero (showing the log's tail) or runs past ``guard_seconds``, the guard against Flower's known
    simulation hang (a raising client can stall it), not a speed assertion: then the whole group (the run and its
    Ray workers) is killed."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        log, _ = proc.communicate(timeout=guard_seconds)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"{what} did not finish within {guard_seconds} s (hang guard)")
    assert proc.returncode == 0, log[-4000:]
    return log


#: Processor settings that keep the expression_prediction federations of the tests small.
TINY = {"processor_overrides": {"dna": {"max_length": 48, "truncation_side": "center", "crop_center": 7000}}}


def clients_root(tmp, clients: str):
    """``tmp`` holding the expression_prediction sample built as ``multimed/`` and ``clients.yaml`` (``clients``)."""
    from dataset_scripts.sample_sources import sample_generators
    from multimed_hf.api import build_dataset

    build_dataset("expression_prediction", [sample_generators()["tcga_promoters"](tmp / "src")], tmp / "multimed",
                  progress=False)
    (tmp / "clients.yaml").write_text(clients)
    return tmp
