"""Loader speed: a config built by ``multimed build`` read into training batches, against the raw decode loop.

    python benchmarks/bench_loader.py [--images 512] [--size 512] [--workers 0 2] [--batch-size 64]

The images are JPEGs generated in the brain_tumor layout and built with ``build_dataset``. Every side turns the
same JPEG bytes into the same 224 x 224 ``pixel_values`` with the same ``ImageProcessor``:
  raw loop      the bytes of the source files, PIL decode + image processor, batches stacked, one process
  ours          load_dataset(built folder) -> MultiTaskDataset -> DataLoader(N workers) -> MultiTaskCollator
  ours + draft  the same with the image column left undecoded and ``ImageProcessor(draft_size=224)``: JPEGs
                decoded at a reduced scale (Pillow ``draft``) before the same resize
Images/s per side (median of --repeats passes) and the ratios; and what it means against a ViT-B/16 step on an
H100 (~3,750 images/s at 40% MFU): the workers it would take at the measured rate per worker.
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


def raw_loop(datas: list[bytes], image_processor, batch_size: int) -> float:
    import torch
    from PIL import Image

    start = time.perf_counter()
    n = 0
    for i in range(0, len(datas), batch_size):
        arrays = [image_processor(Image.open(io.BytesIO(d)))["pixel_values"] for d in datas[i:i + batch_size]]
        n += torch.from_numpy(np.stack(arrays)).shape[0]
    return n / (time.perf_counter() - start)


def ours(dataset, processor, batch_size: int, workers: int) -> float:
    from torch.utils.data import DataLoader

    from multimed_hf.training.data import MultiTaskCollator, MultiTaskDataset

    rows = MultiTaskDataset({"brain_tumor": dataset}, processor)
    loader = DataLoader(rows, batch_size=batch_size, num_workers=workers, collate_fn=MultiTaskCollator(processor))
    start = time.perf_counter()
    n = sum(batch["inputs"]["mri"]["pixel_values"].shape[0] for batch in loader)
    return n / (time.perf_counter() - start)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--size", type=int, default=512, help="side of the generated JPEGs")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    from datasets import Image as ImageFeature
    from datasets import load_dataset

    from dataset_scripts.sample_sources.brain_tumor_mri import make_brain_tumor_mri
    from multimed_hf.api import build_dataset
    from multimed_hf.processing_multimed import MultiMedProcessor
    from multimed_hf.processors.image import ImageProcessor, default_image_processor

    full = ImageProcessor(default_image_processor(224))
    draft = ImageProcessor(default_image_processor(224), draft_size=224)
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
        runs = {"raw loop: PIL decode + image processor, 1 process": lambda: raw_loop(datas, full, args.batch_size),
                "raw loop + draft decode, 1 process": lambda: raw_loop(datas, draft, args.batch_size)}
        for w in args.workers:
            runs[f"ours: built config -> DataLoader, {w} workers"] = (
                lambda w=w: ours(dataset, MultiMedProcessor(processors={"image": full}), args.batch_size, w))
            runs[f"ours + draft decode, {w} workers"] = (
                lambda w=w: ours(undecoded, MultiMedProcessor(processors={"image": draft}), args.batch_size, w))
        results = {name: [] for name in runs}
        for _ in range(args.repeats):
            for name, run in runs.items():
                results[name].append(run())
    rates = {name: statistics.median(r) for name, r in results.items()}
    raw = next(iter(rates.values()))
    width = max(map(len, rates))
    print(f"{len(datas)} JPEGs of {args.size}x{args.size} -> 224x224, batch {args.batch_size}, "
          f"median of {args.repeats}")
    for name, rate in rates.items():
        workers = int(name.split(", ")[-1].split()[0]) if "workers" in name else 1
        per_worker = rate / max(1, workers)
        print(f"{name:<{width}} {rate:8.1f} images/s  {rate / raw:5.2f}x raw loop; "
              f"{VIT_B16_H100 / per_worker:5.0f} workers to feed a ViT-B/16 on an H100 at this rate per worker")
    return 0


if __name__ == "__main__":
    sys.exit(main())
