"""Peak memory of a one-process build as the number of files grows: the same image size at two file counts, each
build in its own process (so each peak is its own), peak resident memory (VmHWM) printed at both sizes with the
growth per added file (the slope: ~0 when nothing is kept per file).

    python benchmarks/bench_build_memory.py [--files 5000 20000] [--size 64] [--src-root DIR ...]

``--src-root`` runs the builds with another checkout's ``src`` (e.g. an older commit unpacked with
``git archive HEAD src | tar -x -C /tmp/old``; repeatable, the first is the baseline), to print the same figures
for it beside ours and the ratio of the slopes. Small images make the per-file state visible: the image bytes go
through shards of bounded size either way.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _peak_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def _build(source: str, out: str) -> dict:
    from multimed_hf.api import build_dataset

    base = _peak_mb()
    start = time.perf_counter()
    report = build_dataset("brain_tumor", [source], out, progress=False)
    return {"files": sum(s.files_seen for s in report.sources), "seconds": time.perf_counter() - start,
            "peak_mb": _peak_mb(), "baseline_mb": base}


def _in_subprocess(src_root: Path, source: Path, out: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": f"{src_root}{os.pathsep}{ROOT}"}
    result = subprocess.run([sys.executable, __file__, "--phase", str(source), str(out)], check=True,
                            capture_output=True, text=True, env=env)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, nargs=2, default=[5000, 20000], metavar=("SMALL", "LARGE"))
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    parser.add_argument("--src-root", type=Path, action="append", default=None,
                        help="a checkout's src/ to measure (repeatable; default: this one's)")
    parser.add_argument("--phase", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.phase:
        print(json.dumps(_build(*args.phase)))
        return 0
    sys.path.insert(0, str(ROOT))
    from dataset_scripts.sample_sources.brain_tumor_mri import make_brain_tumor_mri

    roots = args.src_root or [ROOT / "src"]
    slopes = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sources = {}
        for n in args.files:
            per_class = max(1, n // 4 * 4 // 5)
            sources[n] = make_brain_tumor_mri(tmp / f"src{n}", train_per_class=per_class,
                                              test_per_class=max(1, n // 4 - per_class), size=args.size,
                                              bad_files=False)
        for k, src_root in enumerate(roots):
            results = {n: _in_subprocess(src_root, sources[n], tmp / f"out-{n}-{k}") for n in args.files}
            (small, a), (large, b) = results.items()
            per_file = (b["peak_mb"] - a["peak_mb"]) * 2**20 / (b["files"] - a["files"])
            slopes[src_root] = per_file
            print(f"{src_root}: {args.size}x{args.size} JPEGs")
            for n, r in results.items():
                print(f"  {r['files']:>7,} files: peak RSS {r['peak_mb']:7.1f} MB (baseline after imports "
                      f"{r['baseline_mb']:.0f} MB), {r['files'] / r['seconds']:6.0f} files/s")
            print(f"  slope: {per_file:,.0f} bytes of peak memory per added file "
                  f"({(b['peak_mb'] - a['peak_mb']):+.1f} MB for {b['files'] - a['files']:,} more files)")
    if len(roots) > 1:
        base, *others = roots
        for other in others:
            ratio = slopes[base] / slopes[other] if slopes[other] > 0 else float("inf")
            print(f"slope {base}: {slopes[base]:,.0f} B/file vs {other}: {slopes[other]:,.0f} B/file "
                  f"({ratio:.1f}x less per file)" if slopes[other] > 0 else
                  f"slope {base}: {slopes[base]:,.0f} B/file vs {other}: {slopes[other]:,.0f} B/file (flat)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
