"""Builder throughput: files/s of ``multimed build`` against a plain decode-and-write loop on the same images.

    python benchmarks/bench_builder.py --images 1200

The baseline decodes each JPEG fully with PIL and writes its bytes to Parquet with pyarrow, nothing else. The
builder also validates, hashes (sha256 + perceptual), groups, splits and writes the manifest and card.
"""

from __future__ import annotations

import argparse
import io
import os
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


def plain_loop(root: Path, out: Path) -> int:
    rows = []
    for path in sorted(root.rglob("*.jpg")):
        data = path.read_bytes()
        with Image.open(io.BytesIO(data)) as image:
            image.load()
        rows.append({"image": {"bytes": data, "path": path.relative_to(root).as_posix()}})
    pq.write_table(pa.Table.from_pylist(rows), out / "plain.parquet")
    return len(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1200, help="about how many images to generate")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--num-proc", type=int, nargs="+", default=[1, 2], help="builder process counts to time")
    args = parser.parse_args(argv)
    per_class = max(1, args.images // 4 * 4 // 5)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        root = make_brain_tumor_mri(
            tmp / "src", train_per_class=per_class, test_per_class=max(1, args.images // 4 - per_class),
            size=args.size, bad_files=False,
        )
        n = len(list(root.rglob("*.jpg")))
        plain, built = [], {k: [] for k in args.num_proc}
        for r in range(args.repeats):
            (tmp / f"p{r}").mkdir()
            start = time.perf_counter()
            plain_loop(root, tmp / f"p{r}")
            plain.append(time.perf_counter() - start)
            for k in args.num_proc:
                start = time.perf_counter()
                build_dataset("brain_tumor", [root], tmp / f"b{r}-{k}", progress=False, num_proc=k)
                built[k].append(time.perf_counter() - start)
        p = min(plain)
        print(f"{n} JPEGs of {args.size}x{args.size} px, best of {args.repeats}, {os.cpu_count()} cores")
        print(f"plain PIL decode + pyarrow write (1 process): {n / p:8.1f} files/s ({p:.2f} s)")
        for k, times in built.items():
            b = min(times)
            print(f"multimed build, num_proc={k}:               {n / b:8.1f} files/s ({b:.2f} s)  "
                  f"ratio {p / b:.2f}x (goal >= 0.8x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
