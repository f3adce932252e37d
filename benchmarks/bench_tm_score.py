"""TM-score throughput: pairs/s of our search (numba, numpy, torch CPU, torch CUDA) against tmtools' TM-align.

    python benchmarks/bench_tm_score.py --pairs 200                      # ~150 residues, CPU
    python benchmarks/bench_tm_score.py --pairs 40 --structures 7ok9     # ~500 residues, CPU
    python benchmarks/bench_tm_score.py --device cuda --pairs 1024       # GPU pairs/s against tmtools on a CPU core

The pairs are noisy, rigidly moved copies of the real chains that tmtools ships (2gtl: 140-220 residues; 7ok9:
462-525). The baseline is tmtools' ``tm_align`` with ``alignment=(seq, seq)``: the reference program's TM-score
search on the same fixed residue correspondence, one pair at a time in C++. Both sides run on ``--threads`` CPU
threads (1 by default: tmtools uses one). Each figure is the median of ``--repeats`` runs (wall clock; the CPU
time of this process is printed beside it, steadier on a shared machine). tmtools is timed on
``--baseline-pairs`` pairs spread evenly over all (all by default; fewer for a 1,024-pair GPU run: the per-pair rate
of the whole set, whose chain lengths they span). The
largest |TM-score difference| to tmtools, over the pairs both scored, is printed as a check. The compiled (numba)
search is timed once compiled: its first call (compiling, or loading the on-disk cache) is timed apart and printed.

For a short GPU run: ``--gpu-only`` times tmtools and the torch GPU rows alone; ``--compare-old`` adds the torch
search as it was before issue #21 (``OLD_SEARCH``, written by device_wheels.sh) in the same run; ``--torch-compile`` adds the
search with its rotation solve compiled by torch.compile (float32; its compile is timed apart); ``--profile-torch``
then profiles the GPU search (benchmarks/profile_tm_search.py: ops and syncs per round, top ops, GPU-busy share).

    python benchmarks/bench_tm_score.py --device cuda --pairs 1024 --structures 2gtl 7ok9 --repeats 3 \
        --baseline-pairs 32 --gpu-only --compare-old --torch-compile --profile-torch
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


def _median_time(fn, repeats):
    """Median wall and CPU seconds of repeats runs, and the last output."""
    import numpy as np

    walls, cpus, out = [], [], None
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        out = fn()
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - start_cpu)
    return float(np.median(walls)), float(np.median(cpus)), out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=200, help="structure pairs to score")
    parser.add_argument("--structures", nargs="+", default=["2gtl"], choices=["2gtl", "7ok9"])
    parser.add_argument("--device", default=None, help="torch device for the GPU run (default: cuda if present)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for numpy / torch (tmtools uses 1)")
    parser.add_argument("--repeats", type=int, default=3, help="median of this many runs")
    parser.add_argument("--baseline-pairs", type=int, default=None,
                        help="pairs tmtools scores for its per-pair time, spread over the set (default: all; 128 "
                             "on a GPU run)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--gpu-batch", type=int, default=1024, help="pairs searched together on the GPU")
    parser.add_argument("--gpu-only", action="store_true", help="time tmtools and the torch GPU rows only")
    parser.add_argument("--compare-old", action="store_true",
                        help="also time the torch search from before issue #21 (OLD_SEARCH)")
    parser.add_argument("--torch-compile", action="store_true",
                        help="also time the GPU search with its rotation solve compiled (float32)")
    parser.add_argument("--profile-torch", action="store_true",
                        help="then profile the GPU search (and the old one with --compare-old), float32")
    args = parser.parse_args(argv)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[var] = str(args.threads)  # before numpy loads its BLAS

    import numpy as np
    import tmtools

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from multimed_hf.metrics.structure import structure_scores

    preds, refs, seqs = _pairs(args.structures, args.pairs, args.seed)
    lengths = [len(r) for r in refs]
    print(f"{len(preds)} pairs from {' '.join(args.structures)}, {min(lengths)}-{max(lengths)} residues, "
          f"{args.threads} CPU thread(s), median of {args.repeats}")
    on_gpu_run = args.device is not None and args.device != "cpu"
    n_base = min(args.baseline_pairs or (128 if on_gpu_run else len(preds)), len(preds))
    # evenly spaced over all pairs: the pairs cycle through the chains in file order, so the first ones are the short
    # 2gtl chains alone (the first 16 of 2gtl + 7ok9 ran 44 pairs/s, 128 spread over the 1,024 pairs 19)
    base_rows = np.linspace(0, len(preds) - 1, n_base).round().astype(int)
    if n_base < len(preds):
        print(f"tmtools timed on {n_base} pairs spread evenly over the {len(preds)} (its per-pair time is the "
              f"baseline)")

    def baseline():
        pairs = ((preds[i], refs[i], seqs[i]) for i in base_rows)
        return np.array([tmtools.tm_align(p, r, s, s, alignment=(s, s)).tm_norm_chain2 for p, r, s in pairs])

    runs = [("tmtools tm_align, fixed alignment", baseline)]
    try:
        if args.gpu_only:
            raise ImportError
        import numba  # noqa: F401
    except ImportError:
        if not args.gpu_only:
            print("numba is not installed: no compiled search (pip install numba)")
    else:
        start = time.perf_counter()
        structure_scores(preds[:1], refs[:1], backend="numba")
        print(f"numba first call (compile or load the cache, not timed below): {time.perf_counter() - start:.1f} s")
        runs.append(("ours, numba float64", lambda: structure_scores(preds, refs, backend="numba")["tm_score"]))
    if not args.gpu_only:
        runs.append(("ours, numpy float64", lambda: structure_scores(preds, refs, backend="numpy")["tm_score"]))
        runs.append(("ours, numpy float32",
                     lambda: structure_scores(preds, refs, backend="numpy", dtype=np.float32)["tm_score"]))
    try:
        import torch
    except ImportError:
        torch = None
    device = None
    if torch is not None:
        torch.set_num_threads(args.threads)
        def on_cpu():
            return structure_scores(preds, refs, backend="torch", device="cpu")["tm_score"]

        if not args.gpu_only:
            # (on a CPU device the torch backend runs the numpy float32 kernels: this row checks that routing)
            runs.append(("ours, torch backend on CPU (numpy float32 kernels)", on_cpu))
        device = args.device or ("cuda" if torch.cuda.is_available() else None)
        if device is not None and device != "cpu":
            from multimed_hf.metrics import structure

            def on_gpu(dtype, search=None, compiled=False):
                def run():  # the scores come back to the host: every kernel has finished
                    saved = structure.TorchSearch, structure._TORCH_COMPILE
                    structure.TorchSearch = search or saved[0]
                    structure._TORCH_COMPILE = compiled
                    try:
                        return structure_scores(preds, refs, backend="torch", device=device, dtype=dtype,
                                                batch_size=args.gpu_batch)["tm_score"]
                    finally:
                        structure.TorchSearch, structure._TORCH_COMPILE = saved
                return run
            structure_scores(preds[:2], refs[:2], backend="torch", device=device)  # CUDA start-up, not timed
            if args.compare_old:
                old = _old_search()
                for dtype in (torch.float32, torch.float64):
                    on_gpu(dtype, old)()  # warm-up, not timed
                    runs.append((f"old (pre-#21), torch {device} {str(dtype)[6:]}", on_gpu(dtype, old)))
            for dtype in (torch.float32, torch.float64):
                on_gpu(dtype)()  # warm-up, not timed
                runs.append((f"ours, torch {device} {str(dtype)[6:]}", on_gpu(dtype)))
    structure_scores(preds[:2], refs[:2], backend="numpy")  # warm-up, not timed

    header = (f"{'method':34s} {'pairs/s':>9s} {'ms/pair':>8s} {'cpu ms/pair':>11s} {'vs tmtools':>10s} "
              f"{'cpu ratio':>9s} {'max |dTM|':>9s}")
    print(header)
    base = {}

    def row(label, fn):
        wall, cpu, scores = _median_time(fn, args.repeats)
        n = n_base if not base else len(preds)
        per_pair, cpu_per_pair = wall / n, cpu / n
        if not base:
            base.update(scores=scores, wall=per_pair, cpu=cpu_per_pair)
        diff = float(np.max(np.abs(np.asarray(scores)[base_rows if len(scores) == len(preds) else slice(None)]
                                   - base["scores"])))
        print(f"{label:34s} {1 / per_pair:9.1f} {per_pair * 1e3:8.2f} {cpu_per_pair * 1e3:11.2f} "
              f"{base['wall'] / per_pair:9.1f}x {base['cpu'] / cpu_per_pair:8.1f}x {diff:9.1e}")

    for label, fn in runs:
        row(label, fn)
    if args.profile_torch and device is not None and device != "cpu":
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from profile_tm_search import profile

        from multimed_hf.metrics._tm_search import TorchSearch

        searches = ([("old (pre-#21)", _old_search())] if args.compare_old else []) + [("ours", TorchSearch)]
        for label, search in searches:
            print(f"== profile: {label}")
            profile(preds, refs, device, torch.float32, search, args.gpu_batch, top=12)
    if args.torch_compile and device is not None and device != "cpu":  # last: its compile can take a while
        start = time.perf_counter()
        try:
            on_gpu(torch.float32, compiled=True)()
        except Exception as error:  # noqa: BLE001 - a failed compile is reported, the figures above stand
            print(f"torch.compile of the rotation solve failed: {type(error).__name__}: {error}")
        else:
            print(f"compiled rotation solve: first call (compiling, not timed) {time.perf_counter() - start:.1f} s")
            print(header)
            row(f"ours, torch {device} float32 compiled", on_gpu(torch.float32, compiled=True))
    return 0


#: The torch search from before issue #21's GPU rework (commit 3fb4897), one module that benchmarks/device_wheels.sh
#: writes from git (the GPU machine has no git): timed beside ours with --compare-old.
OLD_SEARCH = Path(__file__).resolve().parents[1] / ".whl" / "tm_search_3fb4897.py"


def _old_search():
    """TorchSearch of the search from before issue #21 (``OLD_SEARCH``)."""
    if not OLD_SEARCH.is_file():
        raise SystemExit(f"--compare-old: {OLD_SEARCH} is missing; write it with: bash benchmarks/device_wheels.sh")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from profile_tm_search import load_search

    return load_search(OLD_SEARCH)


if __name__ == "__main__":
    raise SystemExit(main())
