"""Model FLOPs utilisation (MFU) of ViT-B/16 training in bf16 through our stack, without and with the real loader.

Two measurements, each printed as images/s, achieved TFLOP/s and MFU against the device's peak:

1. model: ``MultiMedModel`` (a brain_tumor head over a ViT-B/16 encoder, random init from its config: nothing is
   downloaded) in a bare loop: forward, backward and an AdamW step under bf16 autocast on one batch already on the
   device. What the model itself can reach.
2. trainer + real loader: ``train_model`` (``MultiMedTrainer``, ``--bf16``) on a built brain_tumor-layout config of
   generated JPEGs, read through load_dataset -> processor -> DataLoader with N workers -> collate, the same model.
   What a user gets. Its ratio to 1 is what the Trainer and the loader cost; a loader that cannot keep up shows as
   a low ratio.

FLOPs per image come from torch's ``FlopCounterMode`` over one forward and backward (matrix products,
convolutions, attention): the usual model FLOPs, nothing recomputed counted. The peak is ``--peak-tflops``; by
default the dense bf16 peak of an H100 / H200 (989.4 TFLOP/s, SXM) where the device's name says so, else none and
no MFU is printed. The issue's goal: MFU >= 40% on an H100 (about 3,750 images/s for ViT-B/16 at 224 px).

    python benchmarks/bench_mfu.py                                   # the GPU machine
    python benchmarks/bench_mfu.py --compile all                     # ... and under torch.compile (both timed)
    python benchmarks/bench_mfu.py --profile                         # ... and the costliest ops of a few steps
    python benchmarks/bench_mfu.py --tiny --device cpu               # the script itself, in seconds (tests)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

__all__ = ["main", "flops_per_image", "peak_tflops"]

#: Dense bf16 peaks (TFLOP/s) by a word of the device name: H100 and H200 SXM (the H100 PCIe is lower: pass
#: --peak-tflops 756).
PEAKS = {"H100": 989.4, "H200": 989.4}
TINY = {"hidden": 64, "layers": 2, "heads": 2, "image_size": 32, "patch": 8, "batch": 8, "steps": 4, "warmup": 2,
        "images": 48, "source_size": 40, "workers": 0}


def peak_tflops(device: torch.device, given: float | None) -> float | None:
    """``given``, else the table's peak for a CUDA device whose name holds one of ``PEAKS``' words, else None."""
    if given is not None:
        return given
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for word, peak in PEAKS.items() if word in name), None)


def vit_config(args):
    from transformers import AutoConfig

    return AutoConfig.for_model("vit", hidden_size=args.hidden, num_hidden_layers=args.layers,
                                num_attention_heads=args.heads, intermediate_size=4 * args.hidden,
                                image_size=args.image_size, patch_size=args.patch)


def build_model(args):
    from multimed_hf.configuration_multimed import MultiMedConfig
    from multimed_hf.modeling_multimed import MultiMedModel

    torch.manual_seed(0)
    config = MultiMedConfig.from_tasks(["brain_tumor"], encoders={"mri": vit_config(args)}, hidden_size=args.hidden)
    return MultiMedModel(config)


def _step_inputs(args, device):
    pixels = torch.randn(args.batch, 3, args.image_size, args.image_size, device=device)
    return {"task": "brain_tumor", "inputs": {"mri": {"pixel_values": pixels}},
            "presence": {"mri": torch.ones(args.batch, dtype=torch.bool, device=device)},
            "labels": {"tumor": torch.randint(0, 4, (args.batch,), device=device)}}


def _autocast(device, bf16: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)


def flops_per_image(model, args, device, bf16: bool) -> float:
    """Model FLOPs of one training step (forward + backward) per image, counted by torch."""
    from torch.utils.flop_counter import FlopCounterMode

    batch = _step_inputs(args, device)
    counter = FlopCounterMode(display=False)
    with counter:
        with _autocast(device, bf16):
            loss = model(**batch).loss
        loss.backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / args.batch


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_model(model, args, device, bf16: bool) -> float:
    """Images/s of the bare loop: median step time after warm-up."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    batch = _step_inputs(args, device)
    times = []
    for step in range(args.warmup + args.steps):
        _sync(device)
        start = time.perf_counter()
        with _autocast(device, bf16):
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        _sync(device)
        if step >= args.warmup:
            times.append(time.perf_counter() - start)
    return args.batch / statistics.median(times)


def profile_steps(model, args, device, bf16: bool, steps: int = 3, rows: int = 15) -> str:
    """torch.profiler's table of ``steps`` bare-loop steps (after two untimed ones), the ops that took the device
    longest first (on a CPU, its time): where the time that MFU does not count goes."""
    from torch.profiler import ProfilerActivity, profile

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    batch = _step_inputs(args, device)

    def step():
        with _autocast(device, bf16):
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(2):
        step()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    _sync(device)
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        _sync(device)
    key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=rows)


def build_images(args, root: Path) -> Path:
    """A brain_tumor-layout config of ``args.images`` generated JPEGs (``args.source_size`` px), built."""
    from dataset_scripts.sample_sources.brain_tumor_mri import make_brain_tumor_mri
    from multimed_hf.api import build_dataset

    per_class = max(2, args.images // 4)
    source = make_brain_tumor_mri(root / "src", train_per_class=per_class - max(1, per_class // 5),
                                  test_per_class=max(1, per_class // 5), size=args.source_size, bad_files=False)
    build_dataset("brain_tumor", [source], root / "multimed", progress=False, num_proc=max(1, args.workers))
    return root / "multimed"


def time_trainer(args, device, data: Path, work: Path, bf16: bool, compiled: bool = False,
                 uint8_images: bool = False, draft_images: bool = False) -> tuple[float, float]:
    """Images/s of ``train_model`` on the built config from step-end stamps after warm-up: at the median step, and
    over all timed steps (the steps that open an epoch wait for the workers' first batches: with few steps per epoch
    they weigh more than in a real run). Full batches only (``dataloader_drop_last``): every timed step is
    ``args.batch`` images (an epoch's short last batch counted as a full one overstated images/s by ~9% at 4,096
    images, batch 256), and compiled, a short batch would recompile. ``compiled``: the Trainer's ``torch_compile``;
    ``uint8_images``: batches travel as uint8, normalised on the device;
    ``draft_images``: JPEGs decoded at a reduced scale (``--draft_images``)."""
    from transformers import TrainerCallback

    from multimed_hf.training.run import train_model

    class Clock(TrainerCallback):
        def __init__(self):
            self.stamps = []

        def on_step_end(self, *_, **__):
            _sync(device)
            self.stamps.append(time.perf_counter())

    spec = work / "encoders.json"
    spec.write_text(json.dumps({"encoders": {"mri": {"kind": "auto", "config": vit_config(args).to_dict()}},
                                "hidden_size": args.hidden}))
    clock = Clock()
    train_model(data=str(data), tasks=["brain_tumor"], family="unimodal", encoders=str(spec),
                output_dir=str(work / "run"), max_steps=args.warmup + args.steps,
                per_device_train_batch_size=args.batch, bf16=bf16, use_cpu=device.type == "cpu",
                dataloader_num_workers=args.workers, dataloader_persistent_workers=args.workers > 0,
                learning_rate=1e-4, torch_compile=compiled, dataloader_drop_last=True,
                uint8_images=uint8_images, draft_images=draft_images, eval_strategy="no",
                save_strategy="no", logging_strategy="no", disable_tqdm=True, eval_splits=[], bootstrap_samples=0,
                callbacks=[clock])
    stamps = clock.stamps[max(args.warmup - 1, 0):]
    steps = [b - a for a, b in zip(stamps, stamps[1:])]
    return args.batch / statistics.median(steps), args.batch * len(steps) / sum(steps)


def _line(label: str, images_per_s: float, flops: float, peak: float | None) -> str:
    achieved = images_per_s * flops / 1e12
    mfu = f"MFU {100 * achieved / peak:.1f}%" if peak else "MFU n/a (no peak: give --peak-tflops)"
    return f"{label}: {images_per_s:,.1f} images/s, {achieved:,.2f} TFLOP/s, {mfu}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--image-size", dest="image_size", type=int, default=224)
    parser.add_argument("--patch", type=int, default=16)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20, help="timed steps of each measurement")
    parser.add_argument("--warmup", type=int, default=8, help="steps before timing (kernels picked, workers up)")
    parser.add_argument("--images", type=int, default=4096, help="generated JPEGs for the real loader")
    parser.add_argument("--source-size", dest="source_size", type=int, default=256, help="their side in pixels")
    parser.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 1), help="DataLoader workers")
    parser.add_argument("--no-bf16", dest="bf16", action="store_false", help="float32 instead of bf16 autocast")
    parser.add_argument("--peak-tflops", dest="peak", type=float, default=None)
    parser.add_argument("--compile", choices=["none", "model", "all"], default="none",
                        help="model: also the model alone under torch.compile; all: and the Trainer with torch_compile")
    parser.add_argument("--batches", nargs="+", choices=["float32", "uint8", "uint8+draft"],
                        default=["float32", "uint8"],
                        help="how training batches travel to the device: float32 pixel values, or uint8 normalised "
                             "on the device (the default on CUDA), also from JPEGs decoded at a reduced scale "
                             "(--draft_images); each is timed")
    parser.add_argument("--profile", action="store_true",
                        help="also torch.profiler's table of a few steps of the model alone, the costliest ops first")
    parser.add_argument("--skip-loader", action="store_true", help="measure the model alone")
    parser.add_argument("--tiny", action="store_true", help="a tiny ViT and a few steps: the script itself, on CPU")
    args = parser.parse_args(argv)
    if args.tiny:
        for key, value in TINY.items():
            setattr(args, key, value)
    device = torch.device(args.device)
    bf16 = args.bf16 and (device.type == "cuda" or args.tiny)
    peak = peak_tflops(device, args.peak)
    model = build_model(args).to(device).train()
    flops = flops_per_image(model, args, device, bf16)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device {name}; peak {peak if peak else 'unknown'} TFLOP/s (bf16 dense); ViT {args.hidden} x "
          f"{args.layers} layers, {args.heads} heads, image {args.image_size}, patch {args.patch}; batch "
          f"{args.batch}; {'bf16 autocast' if bf16 else 'float32'}; {args.steps} timed steps after {args.warmup}")
    print(f"model FLOPs per image, forward + backward: {flops / 1e9:,.3f} GFLOP")
    alone = time_model(model, args, device, bf16)
    print(_line("model alone (MultiMedModel in a bare loop, batch on the device)", alone, flops, peak))
    if args.profile:
        print(f"profile of 3 steps of the model alone (eager), by {'device' if device.type == 'cuda' else 'CPU'} "
              f"time:\n{profile_steps(model, args, device, bf16)}")
    if args.compile != "none":
        start = time.perf_counter()
        compiled = time_model(torch.compile(model), args, device, bf16)
        print(_line(f"model alone, torch.compile (compile and warm-up {time.perf_counter() - start:.0f} s)", compiled,
                    flops, peak) + f"; ratio to eager {compiled / alone:.2f}")
        alone = compiled
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    if not args.skip_loader:
        with tempfile.TemporaryDirectory(prefix="bench_mfu_") as tmp:
            data = build_images(args, Path(tmp))
            versus = f"ratio to the model alone{' compiled' if args.compile != 'none' else ''}"
            for transfer in args.batches:
                median, overall = time_trainer(args, device, data, Path(tmp), bf16, compiled=args.compile == "all",
                                               uint8_images=transfer.startswith("uint8"),
                                               draft_images=transfer.endswith("draft"))
                label = (f"train_model{' --torch_compile' if args.compile == 'all' else ''} + real loader, "
                         f"{transfer} batches ({args.workers} workers, {args.source_size}-px JPEGs)")
                print(_line(f"{label}, median step", median, flops, peak) + f"; {versus} {median / alone:.2f}")
                print(_line(f"{label}, all timed steps", overall, flops, peak) + f"; {versus} {overall / alone:.2f}")
    print("goal: MFU >= 40% on an H100; the loader must not be the bottleneck (ratio near 1)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
