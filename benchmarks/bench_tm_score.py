"""TM-score throughput: pairs/s of our batched search (numpy, torch CPU, torch CUDA) against tmtools' TM-align.

    python benchmarks/bench_tm_score.py --pairs 200
    python benchmarks/bench_tm_score.py --pairs 50 --structures 7ok9 --device cuda

The pairs are noisy, rigidly moved copies of the real chains that tmtools ships (2gtl: 140-149 residues; 7ok9:
462-525). The baseline is tmtools' ``tm_align`` with ``alignment=(seq, seq)``: the reference program's TM-score
search on the same fixed residue correspondence, one pair at a time in C++. Both sides run on ``--threads`` CPU
threads (1 by default: tmtools uses one). The largest |TM-score difference| to tmtools is printed as a check.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def _pairs(structures, n_pairs, seed):
    import numpy as np
    from tmtools.io import get_residue_data, get_structure
    from tmtools.testing import get_pdb_path

    chains = []
    for name in structures:
        for chain in get_structure(get_pdb_path(name))[0]:
            ca, seq = get_residue_data(chain)
            if len(ca) >= 100:
                chains.append((ca, seq))
    rng = np.random.default_rng(seed)
    preds, refs, seqs = [], [], []
    for i in range(n_pairs):
        ca, seq = chains[i % len(chains)]
        q = rng.normal(size=4)
        w, x, y, z = q / np.linalg.norm(q)
        rot = np.array([
            [w * w + x * x - y * y - z * z, 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), w * w - x * x + y * y - z * z, 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), w * w - x * x - y * y + z * z],
        ])
        noisy = ca + rng.normal(scale=rng.uniform(0.3, 2.0), size=ca.shape)
        preds.append(np.ascontiguousarray(noisy @ rot.T + rng.normal(scale=20.0, size=3)))
        refs.append(np.ascontiguousarray(ca))
        seqs.append(seq)
    return preds, refs, seqs


def _best_time(fn, repeats):
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=200, help="structure pairs to score")
    parser.add_argument("--structures", nargs="+", default=["2gtl"], choices=["2gtl", "7ok9"])
    parser.add_argument("--device", default=None, help="torch device for the GPU run (default: cuda if present)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for numpy / torch (tmtools uses 1)")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)  # before numpy loads its BLAS

    import numpy as np
    import tmtools

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from multimed_hf.metrics.structure import structure_scores

    preds, refs, seqs = _pairs(args.structures, args.pairs, args.seed)
    lengths = [len(r) for r in refs]
    print(f"{len(preds)} pairs from {' '.join(args.structures)}, {min(lengths)}-{max(lengths)} residues, "
          f"{args.threads} CPU thread(s), best of {args.repeats}")

    def baseline():
        pairs = zip(preds, refs, seqs)
        return np.array([tmtools.tm_align(p, r, s, s, alignment=(s, s)).tm_norm_chain2 for p, r, s in pairs])

    runs = [("tmtools tm_align, fixed alignment", baseline)]
    runs.append(("ours, numpy float64", lambda: structure_scores(preds, refs)["tm_score"]))
    runs.append(("ours, numpy float32", lambda: structure_scores(preds, refs, dtype=np.float32)["tm_score"]))
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        torch.set_num_threads(args.threads)
        def on_cpu():
            return structure_scores(preds, refs, backend="torch", device="cpu")["tm_score"]

        runs.append(("ours, torch CPU float32", on_cpu))
        device = args.device or ("cuda" if torch.cuda.is_available() else None)
        if device is not None and device != "cpu":
            def on_gpu(dtype):
                def run():
                    out = structure_scores(preds, refs, backend="torch", device=device, dtype=dtype)["tm_score"]
                    torch.cuda.synchronize()
                    return out
                return run
            structure_scores(preds[:2], refs[:2], backend="torch", device=device)  # CUDA start-up, not timed
            runs.append((f"ours, torch {device} float32", on_gpu(torch.float32)))
            runs.append((f"ours, torch {device} float64", on_gpu(torch.float64)))
    structure_scores(preds[:2], refs[:2])  # warm-up, not timed

    reference = None
    print(f"{'method':40s} {'pairs/s':>9s} {'ms/pair':>9s} {'vs tmtools':>11s} {'max |dTM|':>10s}")
    for label, fn in runs:
        seconds, scores = _best_time(fn, args.repeats)
        if reference is None:
            reference, base = scores, seconds
        diff = float(np.max(np.abs(np.asarray(scores) - reference)))
        print(f"{label:40s} {len(preds) / seconds:9.1f} {seconds / len(preds) * 1e3:9.2f} "
              f"{base / seconds:10.1f}x {diff:10.1e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
