"""Loader speed: a config built by ``multimed build`` read into training batches, against the raw decode loop.

    python benchmarks/bench_loader.py [--images 512] [--size 512] [--workers 0 2] [--batch-size 64]
    python benchmarks/bench_loader.py --size 256 --batch-size 256 --workers 8 16 --sides ours ours+uint8 \\
        --rounds 3 --repeats 1                     # float32 against uint8 batches, as bench_mfu's loader reads

The images are JPEGs generated in the brain_tumor layout and built with ``build_dataset``. Every side turns the
same JPEG bytes into the same 224 x 224 ``pixel_values`` with the same ``ImageProcessor``:
  raw           the bytes of the source files, PIL decode + image processor, batches stacked, one process
  draft         the same with ``ImageProcessor(draft_size=224)``: JPEGs decoded at a reduced scale (Pillow ``draft``)
  ours          load_dataset(built folder) -> MultiTaskDataset -> DataLoader(N workers) -> MultiTaskCollator
  ours+draft    ours with the draft decode (``multimed train --draft_images``: MultiTaskDataset then reads the image
                column undecoded, so that the processor decodes at the reduced scale)
  ours+uint8    ours with the processor MultiMedTrainer trains with on CUDA (``uint8_images``): batches of uint8
                pixel values, rescaled and normalised on ``--device`` by ``ImageProcessor.normalize``
  ours+draft+uint8  both (``--draft_images --uint8_images``)
On ``--device cuda`` the DataLoader sides pin their batches (as the Trainer's loader does) and copy them to the
device; the clock stops after the device is done. ``--rounds N``: each worker makes N + 1 batches
(rows drawn with replacement), the clock starts once every worker has made its first (their start); else one pass
over the rows, all timed.
Printed per side: images/s (median of --repeats passes), its ratio to the first side, the main process's CPU
seconds per second of the pass (``main busy``: pin-memory thread included; near 1 or above, the main process is
what limits), and what it means against a ViT-B/16 step on an H100 (~3,750 images/s at 40% MFU).
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

VIT_B16_H100 = 3750  # images/s a ViT-B/16 training step consumes on one H100 at ~40% MFU
SIDES = ("raw", "draft", "ours", "ours+draft", "ours+uint8", "ours+draft+uint8")


def raw_loop(datas: list[bytes], image_processor, batch_size: int) -> tuple[float, float]:
    import torch
    from PIL import Image

    start, cpu = time.perf_counter(), time.process_time()
    n = 0
    for i in range(0, len(datas), batch_size):
        arrays = [image_processor(Image.open(io.BytesIO(d)))["pixel_values"] for d in datas[i:i + batch_size]]
        n += torch.from_numpy(np.stack(arrays)).shape[0]
    wall = time.perf_counter() - start
    return n / wall, (time.process_time() - cpu) / wall


def _to_device(pixels, image, device):
    """A batch's pixel values where the model reads them: on ``device``, uint8 ones normalised there."""
    import torch

    if device.type != "cpu":
        pixels = pixels.to(device, non_blocking=True)
    return image.normalize(pixels) if pixels.dtype == torch.uint8 else pixels


def ours(dataset, processor, rows_processor, batch_size: int, workers: int, device, rounds: int | None
         ) -> tuple[float, float]:
    """(images/s, main-process CPU seconds per second) of the DataLoader path; ``rows_processor`` reads the rows,
    ``processor`` collates (as MultiMedTrainer does)."""
    import torch
    from torch.utils.data import DataLoader, RandomSampler

    from multimed_hf.training.data import MultiTaskCollator, MultiTaskDataset

    rows = MultiTaskDataset({"brain_tumor": dataset}, rows_processor)
    makers = max(1, workers)
    sampler = None if rounds is None else RandomSampler(rows, replacement=True,
                                                        num_samples=makers * (rounds + 1) * batch_size,
                                                        generator=torch.Generator().manual_seed(0))
    loader = DataLoader(rows, batch_size=batch_size, sampler=sampler, num_workers=workers,
                        collate_fn=MultiTaskCollator(processor), pin_memory=device.type == "cuda")
    image = processor.processor_for("mri")
    batches_in = iter(loader)
    for _ in range(0 if rounds is None else makers):  # the workers' start: each one's first batch
        _to_device(next(batches_in)["inputs"]["mri"]["pixel_values"], image, device)
    _sync(device)
    start, cpu = time.perf_counter(), time.process_time()
    n = 0
    for batch in batches_in:
        n += _to_device(batch["inputs"]["mri"]["pixel_values"], image, device).shape[0]
    _sync(device)
    wall = time.perf_counter() - start
    return n / wall, (time.process_time() - cpu) / wall


def _sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def check_uint8(dataset, processor, rows_processor, device, count: int = 64) -> str:
    """How far the uint8 path (normalised on ``device``) is from the float32 path over ``count`` rows."""
    from multimed_hf.training.data import MultiTaskCollator, MultiTaskDataset

    indices = list(range(min(count, len(dataset))))
    collate = MultiTaskCollator(processor)
    old = collate(MultiTaskDataset({"brain_tumor": dataset}, processor).__getitems__(indices))
    new = collate(MultiTaskDataset({"brain_tumor": dataset}, rows_processor).__getitems__(indices))
    a = old["inputs"]["mri"]["pixel_values"]
    b = new["inputs"]["mri"]["pixel_values"]
    b = _to_device(b, processor.processor_for("mri"), device).cpu()
    diff = float((a - b).abs().max())
    return (f"uint8 path ({new['inputs']['mri']['pixel_values'].dtype} batches, normalised on {device}) against "
            f"the float32 path over {len(indices)} images: max |difference| {diff:.3g}"
            + (" (bitwise equal)" if bool((a == b).all()) else ""))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--size", type=int, default=512, help="side of the generated JPEGs")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sides", nargs="+", choices=SIDES, default=["raw", "draft", "ours", "ours+draft"])
    parser.add_argument("--rounds", type=int, default=None, help="timed batches per worker and pass (see above)")
    parser.add_argument("--device", default=None, help="where batches go (default: cuda where there is one)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of this process (default 1, as DataLoader workers get: two threads of "
                             "the one-process side thrashed on the shared 2-core machine, 5-11x slower)")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from datasets import Image as ImageFeature
    from datasets import load_dataset

    from dataset_scripts.sample_sources.brain_tumor_mri import make_brain_tumor_mri
    from multimed_hf.api import build_dataset
    from multimed_hf.processing_multimed import MultiMedProcessor
    from multimed_hf.processors.image import ImageProcessor, default_image_processor
    from multimed_hf.training.trainer import uint8_image_processor

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    full = ImageProcessor(default_image_processor(224))
    draft = ImageProcessor(default_image_processor(224), draft_size=224)
    plain = MultiMedProcessor(processors={"image": full})
    drafted = MultiMedProcessor(processors={"image": draft})
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        per_class = max(1, args.images // 4 * 4 // 5)
        root = make_brain_tumor_mri(tmp / "src", train_per_class=per_class,
                                    test_per_class=max(1, args.images // 4 - per_class), size=args.size,
                                    bad_files=False)
        build_dataset("brain_tumor", [root], tmp / "multimed", progress=False)
        dataset = load_dataset(str(tmp / "multimed"), "brain_tumor", split="train",
                               cache_dir=str(tmp / "hf_cache"))
        undecoded = dataset.cast_column("image", ImageFeature(decode=False))
        datas = [cell["bytes"] for cell in undecoded["image"]]
        runs = {}
        if "raw" in args.sides:
            runs["raw loop: PIL decode + image processor, 1 process"] = lambda: raw_loop(datas, full, args.batch_size)
        if "draft" in args.sides:
            runs["raw loop + draft decode, 1 process"] = lambda: raw_loop(datas, draft, args.batch_size)
        sides = {"ours": ("ours: built config -> DataLoader", dataset, plain, plain),
                 "ours+draft": ("ours + draft decode", dataset, drafted, drafted),
                 "ours+uint8": ("ours, uint8 batches normalised on the device", dataset, plain,
                                uint8_image_processor(plain)),
                 "ours+draft+uint8": ("ours + draft decode, uint8 batches", dataset, drafted,
                                      uint8_image_processor(drafted))}
        for w in args.workers:
            for side, (label, data, proc, rows_proc) in sides.items():
                if side in args.sides:
                    runs[f"{label}, {w} workers"] = (
                        lambda w=w, data=data, proc=proc, rows_proc=rows_proc:
                        ours(data, proc, rows_proc, args.batch_size, w, device, args.rounds))
        results = {name: [] for name in runs}
        for _ in range(args.repeats):
            for name, run in runs.items():
                results[name].append(run())
                print(f"  pass: {name}: {results[name][-1][0]:,.1f} images/s, main busy {results[name][-1][1]:.2f}",
                      flush=True)
        check = check_uint8(dataset, plain, uint8_image_processor(plain), device) if "ours+uint8" in args.sides \
            else None
    rates = {name: statistics.median(r[0] for r in rs) for name, rs in results.items()}
    busy = {name: statistics.median(r[1] for r in rs) for name, rs in results.items()}
    first = next(iter(rates.values()))
    width = max(map(len, rates))
    drawn = f"{args.rounds} timed batches per worker" if args.rounds else "one pass"
    print(f"{len(datas)} JPEGs of {args.size}x{args.size} -> 224x224, batch {args.batch_size}, {drawn}, batches to "
          f"{device}; median of {args.repeats}")
    for name, rate in rates.items():
        workers = int(name.split(", ")[-1].split()[0]) if "workers" in name else 1
        per_worker = rate / max(1, workers)
        print(f"{name:<{width}} {rate:8.1f} images/s  {rate / first:5.2f}x first; main busy {busy[name]:4.2f}; "
              f"{VIT_B16_H100 / per_worker:5.0f} workers to feed a ViT-B/16 on an H100 at this rate per worker")
    for w in args.workers:
        old, new = (f"{sides[s][0]}, {w} workers" for s in ("ours", "ours+uint8"))
        if old in rates and new in rates:
            print(f"{w} workers: uint8 batches {rates[new]:,.1f} images/s against float32 {rates[old]:,.1f}: "
                  f"{rates[new] / rates[old]:.2f}x")
    if check:
        print(check)
    return 0


if __name__ == "__main__":
    sys.exit(main())
