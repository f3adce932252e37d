"""benchmarks/bench_mfu.py runs end to end (a tiny ViT on CPU) and counts model FLOPs sensibly; its timings are
not judged here (speed is measured on the GPU machine, never in tests)."""

import argparse
import re

import pytest
import torch

from benchmarks.bench_mfu import build_model, flops_per_image, main, peak_tflops


def _flops(layers: int) -> float:
    args = argparse.Namespace(hidden=32, layers=layers, heads=2, image_size=32, patch=8, batch=2)
    return flops_per_image(build_model(args).train(), args, torch.device("cpu"), bf16=False)


def test_model_flops_grow_by_the_same_amount_per_layer():
    one, two, four = _flops(1), _flops(2), _flops(4)
    assert one > 0 and two > one
    assert four - two == pytest.approx(2 * (two - one), rel=1e-6)


def test_the_peak_is_given_or_known_by_name():
    assert peak_tflops(torch.device("cpu"), None) is None
    assert peak_tflops(torch.device("cpu"), 12.5) == 12.5


def test_the_script_prints_both_measurements(capsys):
    assert main(["--tiny", "--device", "cpu", "--peak-tflops", "1", "--batches", "float32", "uint8",
                 "uint8+draft"]) == 0
    out = capsys.readouterr().out
    assert "model FLOPs per image" in out
    assert "model alone" in out and "train_model + real loader" in out and "ratio to the model alone" in out
    assert "float32 batches" in out and "uint8 batches" in out and "uint8+draft batches" in out
    assert len(re.findall(r"MFU \d+\.\d%", out)) == 7 and "MFU n/a" not in out


def test_the_profile_lists_the_steps_ops(capsys):
    assert main(["--tiny", "--device", "cpu", "--skip-loader", "--profile"]) == 0
    out = capsys.readouterr().out
    assert "profile of 3 steps of the model alone" in out
    assert "aten::" in out and "Self CPU" in out  # torch.profiler's table, one row per op
