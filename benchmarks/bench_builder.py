"""Builder throughput: files/s of ``multimed build`` against a plain decode-and-write loop on the same images.

    python benchmarks/bench_builder.py --images 1200 [--num-proc 1 2 16] [--repeats 5] [--writers]

The baseline decodes each JPEG fully with PIL and writes its bytes to Parquet with pyarrow, nothing else, in one
process. The builder also validates, hashes (sha256 + two perceptual hashes), caches, groups, splits and writes the
manifest and card. A third loop, the plain one plus the builder's per-file checks and hashes
(``read_image_file``) and nothing else, shows how much of the gap is that per-file work. Each side runs ``--repeats`` times alternately; medians are printed, as wall time and as CPU
time of this process and its workers (on a shared machine wall time is what other jobs leave over; CPU time is
the work). ``--num-proc N`` is judged against N times the one-process build (goal >= 0.8 x N).

``--writers`` times the shard writer alone on the builder's own rows: datasets' ``ParquetWriter`` (row groups of
100 images, content-defined pages, page index; what ``push_to_hub`` writes) against ``pq.write_table`` (the writer
before commit 109133b).
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dataset_scripts.sample_sources.brain_tumor_mri import make_brain_tumor_mri  # noqa: E402
from multimed_hf.api import build_dataset  # noqa: E402
from multimed_hf.data.images import read_image_file  # noqa: E402


def plain_loop(root: Path, out: Path) -> int:
    rows = []
    for path in sorted(root.rglob("*.jpg")):
        data = path.read_bytes()
        with Image.open(io.BytesIO(data)) as image:
            image.load()
        rows.append({"image": {"bytes": data, "path": path.relative_to(root).as_posix()}})
    pq.write_table(pa.Table.from_pylist(rows), out / "plain.parquet")
    return len(rows)


def validating_loop(root: Path, out: Path) -> int:
    """The plain loop with each file checked as the builder checks it (``read_image_file``: full decode, size and
    flat checks, sha256, perceptual hashes) and nothing else: no cache, manifest, grouping or splits. Its ratio to
    the plain loop is the most any build that validates and hashes every file can reach in one process."""
    rows = []
    for path in sorted(root.rglob("*.jpg")):
        relpath = path.relative_to(root).as_posix()
        read_image_file(path, relpath)
        rows.append({"image": {"bytes": path.read_bytes(), "path": relpath}})
    pq.write_table(pa.Table.from_pylist(rows), out / "validated.parquet")
    return len(rows)


def _cpu() -> float:
    """CPU seconds of this process and its finished children (worker processes)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def timed(fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), _cpu()
    fn()
    return time.perf_counter() - wall, _cpu() - cpu


def bench_writers(root: Path, tmp: Path, repeats: int) -> None:
    """The shard writer alone on the same rows: datasets' ParquetWriter vs pq.write_table."""
    from datasets.arrow_writer import ParquetWriter

    from multimed_hf.data.features import task_features
    from multimed_hf.tasks import get_task

    features = task_features(get_task("brain_tumor"))
    shard = next((tmp / "warm").rglob("train-*.parquet"))
    table = pq.read_table(shard).cast(features.arrow_schema)

    def datasets_writer():
        with ParquetWriter(path=str(tmp / "w1.parquet"), features=features) as writer:
            writer.write_table(table)
            writer.finalize()

    def pyarrow_writer():
        pq.write_table(table, tmp / "w2.parquet")

    times = {"datasets ParquetWriter": [], "pq.write_table": []}
    for _ in range(repeats):
        times["datasets ParquetWriter"].append(timed(datasets_writer))
        times["pq.write_table"].append(timed(pyarrow_writer))
    mb = table.nbytes / 2**20
    for name, runs in times.items():
        wall = statistics.median(w for w, _ in runs)
        cpu = statistics.median(c for _, c in runs)
        print(f"writer {name:24s} {mb / wall:7.1f} MB/s wall, {mb / cpu:7.1f} MB/s CPU ({table.num_rows} rows)")
    (d_wall, d_cpu), (p_wall, p_cpu) = (
        (statistics.median(w for w, _ in runs), statistics.median(c for _, c in runs)) for runs in times.values()
    )
    print(f"ParquetWriter / write_table time: {d_wall / p_wall:.2f}x wall, {d_cpu / p_cpu:.2f}x CPU; share of the "
          f"build's CPU: see the build lines above")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1200, help="about how many images to generate")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--num-proc", type=int, nargs="+", default=[1, 2], help="builder process counts to time")
    parser.add_argument("--engine", choices=("local", "ray"), default="local")
    parser.add_argument("--writers", action="store_true", help="also time the shard writers alone")
    args = parser.parse_args(argv)
    per_class = max(1, args.images // 4 * 4 // 5)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        root = make_brain_tumor_mri(
            tmp / "src", train_per_class=per_class, test_per_class=max(1, args.images // 4 - per_class),
            size=args.size, bad_files=False,
        )
        n = len(list(root.rglob("*.jpg")))
        build_dataset("brain_tumor", [root], tmp / "warm", progress=False)  # imports and page cache warm
        plain, validating, built = [], [], {k: [] for k in args.num_proc}
        for r in range(args.repeats):
            (tmp / f"p{r}").mkdir()
            plain.append(timed(lambda: plain_loop(root, tmp / f"p{r}")))
            validating.append(timed(lambda: validating_loop(root, tmp / f"p{r}")))
            for k in args.num_proc:  # a fresh folder each time: no validation cache helps
                built[k].append(timed(lambda: build_dataset(
                    "brain_tumor", [root], tmp / f"b{r}-{k}", progress=False, num_proc=k, engine=args.engine)))
        p_wall = statistics.median(w for w, _ in plain)
        p_cpu = statistics.median(c for _, c in plain)
        print(f"{n} JPEGs of {args.size}x{args.size} px, median of {args.repeats}, {os.cpu_count()} cores, "
              f"engine {args.engine}")
        print(f"plain PIL decode + pyarrow write (1 process): {n / p_wall:8.1f} files/s wall ({p_wall:.2f} s), "
              f"{n / p_cpu:8.1f} files/s CPU")
        v_wall = statistics.median(w for w, _ in validating)
        v_cpu = statistics.median(c for _, c in validating)
        print(f"plain loop + the builder's per-file checks and hashes (the ceiling of any validating build): "
              f"{n / v_wall:8.1f} files/s wall ({v_wall:.2f} s), {n / v_cpu:8.1f} files/s CPU; vs plain: "
              f"{p_wall / v_wall:.2f}x wall, {p_cpu / v_cpu:.2f}x CPU")
        one = None
        for k, runs in built.items():
            wall = statistics.median(w for w, _ in runs)
            cpu = statistics.median(c for _, c in runs)
            one = one if one is not None else wall if k == 1 else None
            line = (f"multimed build, num_proc={k}: {n / wall:8.1f} files/s wall ({wall:.2f} s), "
                    f"{n / cpu:8.1f} files/s CPU; vs plain: {p_wall / wall:.2f}x wall, {p_cpu / cpu:.2f}x CPU")
            if k == 1:
                line += " (goal >= 0.8x)"
            elif one is not None:
                line += f"; speed-up over num_proc=1: {one / wall:.2f}x = {one / wall / k:.2f} x N (goal >= 0.8 x N)"
            print(line)
        if args.writers:
            bench_writers(root, tmp, args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
