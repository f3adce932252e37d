"""Data path speed: load_dataset -> with_transform(processor) -> DataLoader(workers) -> collate, against a plain PIL
decode + the same image processor loop over the same files. Prints both (images/s) and the ratio (goal >= 0.9x).

    python benchmarks/bench_data_path.py [--images 512] [--side 256] [--workers 2] [--batch-size 32]

The images are written once as PNG files and built into an ImageFolder-style dataset with datasets' own Parquet
writer (the bytes kept as they are, as our builders do); both sides decode the same bytes and run the same
``ImageProcessor`` (a ``ViTImageProcessor`` to 224 x 224). Our side is what training reads through:
``MultiTaskDataset`` over the raw rows with ``MultiTaskCollator`` in a ``DataLoader`` with workers.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _write_images(folder: Path, n: int, side: int) -> list[Path]:
    from PIL import Image

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        base = rng.integers(0, 255, (side // 8, side // 8), dtype=np.uint8)  # smooth-ish content, PNG compresses
        image = Image.fromarray(np.kron(base, np.ones((8, 8), dtype=np.uint8))).convert("L")
        path = folder / f"img{i:05d}.png"
        image.save(path)
        paths.append(path)
    return paths


def _dataset(paths: list[Path], out: Path):
    """A brain_tumor-shaped Parquet config of these files (what a builder writes), loaded with load_dataset."""
    from datasets import Dataset, Features, Image, Value, load_dataset

    from multimed_hf.data.features import task_features
    from multimed_hf.tasks import get_task

    features = Features(task_features(get_task("brain_tumor")))
    rows = {name: [None] * len(paths) for name in features}
    rows.update(sample_id=[p.stem for p in paths], source=["bench"] * len(paths), source_path=[p.name for p in paths],
                group_id=[p.stem for p in paths], image=[{"bytes": p.read_bytes(), "path": None} for p in paths],
                modality=["mri"] * len(paths), tumor=[i % 4 for i in range(len(paths))])
    ds = Dataset.from_dict(rows, features=features)
    out.mkdir(parents=True, exist_ok=True)
    ds.to_parquet(str(out / "train-00000-of-00001.parquet"))
    del Image, Value
    return load_dataset("parquet", data_files={"train": str(out / "train-*.parquet")}, split="train")


def bench_ours(dataset, processor, batch_size: int, workers: int) -> float:
    import torch
    from torch.utils.data import DataLoader

    from multimed_hf.training.data import MultiTaskCollator, MultiTaskDataset

    rows = MultiTaskDataset({"brain_tumor": dataset}, processor)
    loader = DataLoader(rows, batch_size=batch_size, num_workers=workers, collate_fn=MultiTaskCollator(processor),
                        persistent_workers=False)
    start = time.perf_counter()
    n = 0
    for batch in loader:
        n += batch["inputs"]["mri"]["pixel_values"].shape[0]
    elapsed = time.perf_counter() - start
    del torch
    return n / elapsed


def bench_with_transform(dataset, processor, batch_size: int, workers: int) -> float:
    """The issue's literal path: ``dataset.with_transform(processor.transform(task))`` -> DataLoader -> collate."""
    from torch.utils.data import DataLoader

    loader = DataLoader(dataset.with_transform(processor.transform("brain_tumor")), batch_size=batch_size,
                        num_workers=workers, collate_fn=lambda items: processor.collate(
                            [{k: v for k, v in item.items()} for item in items]))
    start = time.perf_counter()
    n = 0
    for batch in loader:
        n += batch["inputs"]["mri"]["pixel_values"].shape[0]
    return n / (time.perf_counter() - start)


def bench_plain(paths: list[Path], image_processor, batch_size: int) -> float:
    """PIL decode + the same image processor, one process, no datasets, no DataLoader; batches stacked."""
    import torch
    from PIL import Image

    start = time.perf_counter()
    n = 0
    for i in range(0, len(paths), batch_size):
        arrays = [image_processor(Image.open(io.BytesIO(p.read_bytes())))["pixel_values"] for p in
                  paths[i:i + batch_size]]
        n += torch.from_numpy(np.stack(arrays)).shape[0]
    return n / (time.perf_counter() - start)


def bench_plain_workers(paths: list[Path], image_processor, batch_size: int, workers: int) -> float:
    """The same plain loop spread over ``workers`` processes with a torch DataLoader (the fair parallel baseline)."""
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset

    class Files(Dataset):
        def __len__(self):
            return len(paths)

        def __getitem__(self, i):
            return image_processor(Image.open(io.BytesIO(paths[i].read_bytes())))["pixel_values"]

    loader = DataLoader(Files(), batch_size=batch_size, num_workers=workers)
    start = time.perf_counter()
    n = sum(batch.shape[0] for batch in loader)
    return n / (time.perf_counter() - start)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--side", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="best of N passes per side")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of this process (default 1, as DataLoader workers get: two threads of "
                             "the one-process side thrashed on the shared 2-core machine, 5-11x slower)")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from multimed_hf.processing_multimed import MultiMedProcessor
    from multimed_hf.processors.image import ImageProcessor, default_image_processor

    image_processor = ImageProcessor(default_image_processor(224))
    processor = MultiMedProcessor(processors={"image": image_processor})
    with tempfile.TemporaryDirectory() as tmp:
        paths = _write_images(Path(tmp) / "files", args.images, args.side)
        dataset = _dataset(paths, Path(tmp) / "parquet")
        results = {}
        for name, run in (
            ("plain PIL + image processor, 1 process", lambda: bench_plain(paths, image_processor, args.batch_size)),
            (f"plain PIL + image processor, DataLoader {args.workers} workers",
             lambda: bench_plain_workers(paths, image_processor, args.batch_size, args.workers)),
            (f"ours: load_dataset -> MultiTaskDataset -> DataLoader {args.workers} workers -> collate",
             lambda: bench_ours(dataset, processor, args.batch_size, args.workers)),
            (f"with_transform(processor) -> DataLoader {args.workers} workers -> collate",
             lambda: bench_with_transform(dataset, processor, args.batch_size, args.workers)),
        ):
            results[name] = max(run() for _ in range(args.repeats))
    width = max(map(len, results))
    for name, rate in results.items():
        print(f"{name:<{width}}  {rate:8.1f} images/s")
    names = list(results)
    print(f"\nratio ours / plain loop with the same workers: {results[names[2]] / results[names[1]]:.2f}x "
          f"(goal >= 0.9x)")
    print(f"ratio ours / plain loop in one process:       {results[names[2]] / results[names[0]]:.2f}x")
    print(f"ratio with_transform / plain, same workers:    {results[names[3]] / results[names[1]]:.2f}x")
    print(f"({args.images} PNGs of {args.side}x{args.side}, batch {args.batch_size}, best of {args.repeats})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
