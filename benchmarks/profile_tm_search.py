"""Where the torch TM-score search spends its time: torch.profiler over one structure_scores call.

    python benchmarks/profile_tm_search.py --device cuda --pairs 1024 --structures 2gtl 7ok9
    python benchmarks/profile_tm_search.py --device cpu --pairs 16            # the GPU code path on a CPU
    python benchmarks/profile_tm_search.py --device cuda --old .whl/tm_search_3fb4897.py   # an older search

Prints the search rounds, the torch ops (all, and those that are not views: about the kernel launches on a GPU) and
host syncs per round, the top ops by self CPU time and by device time, and the device-busy share of the wall time
(the sum of the device events' times over the profiled wall time: near 1 when the GPU is the bottleneck, near 0
when the host is). Syncs are counted as the ops that read a
device value back (item, nonzero, unique, equal) on a CPU, as the synchronising CUDA runtime calls on a GPU.
The pairs are those of bench_tm_score.py. ``--old FILE`` profiles the TorchSearch class of another copy of
_tm_search.py (e.g. the pre-issue-21 search that benchmarks/device_wheels.sh writes to .whl/).
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SYNC_OPS = ("aten::_local_scalar_dense", "aten::nonzero", "aten::_unique2", "aten::unique_dim", "aten::equal",
            "aten::unique_consecutive", "aten::is_nonzero")
SYNC_RUNTIME = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize")
VIEW_OPS = {"aten::select", "aten::slice", "aten::view", "aten::alias", "aten::as_strided", "aten::unsqueeze",
            "aten::squeeze", "aten::transpose", "aten::permute", "aten::expand", "aten::t", "aten::detach",
            "aten::_unsafe_view", "aten::unbind", "aten::numpy_T", "aten::lift_fresh", "aten::result_type"}


def load_search(path):
    """TorchSearch of the _tm_search module at path (None: the current one)."""
    if path is None:
        from multimed_hf.metrics._tm_search import TorchSearch
        return TorchSearch
    spec = importlib.util.spec_from_file_location("tm_search_profiled", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)

    class Search(module.TorchSearch):
        def __init__(self, device, dtype, chunk=None, compile_solve=False):  # an older search may not compile
            super().__init__(device, dtype, chunk)

    return Search


def profile(preds, refs, device, dtype, search_class, batch_size, compile_=False, top=15, chunk=None):
    """Profile one structure_scores call with search_class on device; prints the figures."""
    import torch
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    from multimed_hf.metrics import structure

    rounds = [0]

    class Counted(search_class):
        def __init__(self, *args, **kwargs):
            if compile_:
                kwargs["compile_solve"] = True
            if chunk:
                kwargs["chunk"] = chunk
            super().__init__(*args, **kwargs)

        def coefficients(self, stats):
            rounds[0] += 1
            return super().coefficients(stats)

    saved = structure.TorchSearch, structure._TORCH_KERNELS_ON_CPU
    structure.TorchSearch, structure._TORCH_KERNELS_ON_CPU = Counted, True
    on_cuda = torch.device(device).type == "cuda"
    try:
        def run():
            return structure.structure_scores(preds, refs, backend="torch", device=device, dtype=dtype,
                                              batch_size=batch_size)

        run()  # warm-up: allocator, kernels, compilation
        rounds[0] = 0
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_cuda else [])
        with torch_profile(activities=activities) as prof:
            start = time.perf_counter()
            run()
            if on_cuda:
                torch.cuda.synchronize()
            wall = time.perf_counter() - start
    finally:
        structure.TorchSearch, structure._TORCH_KERNELS_ON_CPU = saved
    events = prof.events()
    top_level = [e for e in events if e.cpu_parent is None and e.name.startswith("aten::")]
    names = collections.Counter(e.name for e in events)
    sync_ops = {n: names[n] for n in SYNC_OPS if names[n]}
    sync_calls = {n: names[n] for n in SYNC_RUNTIME if names[n]}
    syncs = sum(sync_calls.values()) if on_cuda else sum(sync_ops.values())  # on CUDA each read-back waits once
    n_rounds = max(rounds[0], 1)
    print(f"{device} {str(dtype).replace('torch.', '')}: {len(preds)} pairs, {rounds[0]} search rounds, "
          f"wall {wall * 1e3:.1f} ms under the profiler, {len(preds) / wall:.1f} pairs/s")
    compute = [e for e in top_level if e.name not in VIEW_OPS]  # views launch nothing on a GPU
    print(f"  torch ops (top level) {len(top_level)}: {len(top_level) / n_rounds:.0f} per round, of which "
          f"{len(compute) / n_rounds:.0f} not views; host syncs {syncs}: {syncs / n_rounds:.1f} per round")
    print(f"  read-back ops {sync_ops}; synchronising CUDA calls {sync_calls}")
    if on_cuda:
        from torch.autograd import DeviceType

        launches = names["cudaLaunchKernel"] + names["cuLaunchKernel"] + names["cuLaunchKernelEx"]
        device_events = [e for e in events if e.device_type == DeviceType.CUDA]
        busy = sum(e.time_range.elapsed_us() for e in device_events) / 1e6  # one stream: kernels do not overlap
        print(f"  kernel launches {launches} ({launches / n_rounds:.0f} per round); {len(device_events)} device "
              f"events, device busy {busy * 1e3:.1f} ms of {wall * 1e3:.1f} ms wall = {busy / wall:.0%}")
    table = prof.key_averages()
    print(table.table(sort_by="self_cpu_time_total", row_limit=top, max_name_column_width=40))
    if on_cuda:
        print(table.table(sort_by="self_device_time_total", row_limit=top, max_name_column_width=40))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default=None, help="torch device (default: cuda if present, else cpu)")
    parser.add_argument("--pairs", type=int, default=1024)
    parser.add_argument("--structures", nargs="+", default=["2gtl", "7ok9"], choices=["2gtl", "7ok9"])
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--batch", type=int, default=1024, help="pairs searched together")
    parser.add_argument("--old", default=None, help="also profile the TorchSearch of this copy of _tm_search.py")
    parser.add_argument("--compile", action="store_true", help="also profile the torch.compile'd rotation solve")
    parser.add_argument("--chunk", type=int, default=None,
                        help="elements per chunk (default: the search's own; 268435456 mimics a GPU on a CPU)")
    parser.add_argument("--top", type=int, default=15, help="rows of each op table")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT / "src"))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import torch
    from bench_tm_score import _pairs

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        torch.set_num_threads(1)
    preds, refs, _ = _pairs(args.structures, args.pairs, args.seed)
    dtype = getattr(torch, args.dtype)
    runs = [("current search", None, False)]
    if args.old:
        runs.insert(0, (f"old search ({args.old})", args.old, False))
    if args.compile:
        runs.append(("current search, compiled rotation solve", None, True))
    for label, path, compile_ in runs:
        print(f"== {label}")
        profile(preds, refs, device, dtype, load_search(path), args.batch, compile_, args.top, args.chunk)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
