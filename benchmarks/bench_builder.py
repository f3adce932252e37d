"""Builder throughput: files/s of ``multimed build`` against a plain decode-and-write loop on the same images.

    python benchmarks/bench_builder.py --images 1200 [--num-proc 1 2 16] [--repeats 5] [--writers]

The baseline decodes each JPEG fully with PIL and writes its bytes to Parquet with pyarrow, nothing else, in one
process. The builder also validates, hashes (sha256 + two perceptual hashes), caches, groups, splits and writes the
manifest and card. A third loop, the plain one plus the builder's per-file checks and hashes
(``read_image_file``) and nothing else, shows how much of the gap is that per-file work. Each side runs
``--repeats`` times alternately; medians are printed, as wall time and as CPU
time of this process and its workers (on a shared machine wall time is what other jobs leave over; CPU time is
the work). ``--num-proc N`` is judged against N times the one-process build (goal >= 0.8 x N).

Where the time of ``--num-proc N`` goes: for the largest N asked, the main process's CPU by phase (reading: what
it does per file while workers read; grouping; splits; shards: digesting what workers encoded, which workers also
write, a shard a task; manifest and card), the workers' CPU, and the start of a pool of N processes; from them
Amdahl's estimate of each N on a machine of N free cores (serial = the main process's CPU, parallel = the workers'
CPU / N), next to the measured speed-up: the two part where fixed or serial costs (or a busy machine) weigh. The
estimate counts a shard's writing as parallel work, which it is only across shards: a split of one shard (a small
build) is written by one worker, while the next splits are encoded. A second estimate counts the overlap: the main
process's reading and shards (+ manifest, which a worker writes meanwhile) phases run while the workers do the
rest of that phase's work (num_proc=1's CPU for the phase less the main process's part), N cores shared by both, so
each takes max(main, (main + rest) / N); the rest of the main process's CPU (grouping, splits, card, set-up) is
serial. CPU times come from
``getrusage`` (microseconds; ``os.times`` counts 10 ms ticks). Run with another checkout's ``src`` first on
``PYTHONPATH`` to time it with this script (phases it lacks count as other). ``--subset K`` (default 8) also
builds every K-th file: from the two sizes each num_proc's wall time splits into a fixed part and a part per file,
and the per-file part's speed-up is what a build of many more files tends to (fixed costs no longer weigh).

``--writers`` times the shard writer alone on the builder's own rows: datasets' ``ParquetWriter`` (row groups of
100 images, content-defined pages, page index; what ``push_to_hub`` writes) against ``pq.write_table`` (the writer
before commit 109133b).
"""

from __future__ import annotations

import argparse
import io
import multiprocessing
import os
import resource
import shutil
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
    """The plain loop with each file checked as the builder checks it (``read_image_file``: a decode of every
    entropy-coded block, at the reduced DCT scale the hashes need, size and flat checks, sha256, perceptual hashes)
    and nothing else: no cache, manifest, grouping or splits. Its ratio to the plain loop is the most any build that
    checks and hashes every file as ours does can reach in one process."""
    rows = []
    for path in sorted(root.rglob("*.jpg")):
        relpath = path.relative_to(root).as_posix()
        read_image_file(path, relpath)
        rows.append({"image": {"bytes": path.read_bytes(), "path": relpath}})
    pq.write_table(pa.Table.from_pylist(rows), out / "validated.parquet")
    return len(rows)


def _cpu() -> float:
    """CPU seconds of this process and its finished children (worker processes)."""
    return sum(_cpu_split())


def _cpu_split() -> tuple[float, float]:
    """CPU seconds of this process (all its threads) and of its finished children, apart (``getrusage``: to the
    microsecond, where ``os.times`` counts clock ticks of 10 ms)."""
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, children.ru_utime + children.ru_stime


def timed(fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), _cpu()
    fn()
    return time.perf_counter() - wall, _cpu() - cpu


#: The build's phases as functions of ``multimed_hf.data.build``, for the main process's CPU by phase.
PHASES = {"_read_all": "reading (main process)", "_group": "grouping (duplicates)", "_assign": "splits",
          "_write_source": "shards", "write_manifest_lines": "manifest", "write_manifest": "manifest",
          "write_readme": "card"}  # (none a function the build hands its workers: they take it by name)


#: Phases whose main-process work overlaps the workers' (reading: storing what they read; shards: digesting what
#: they encoded, while one of them writes the manifest, where the build has it do so).
OVERLAPPED = (("reading (main process)",), ("shards", "manifest"))


def timed_build(run) -> tuple[float, float, float, dict[str, float]]:
    """``run()`` (a build): wall seconds, main-process CPU, workers' CPU and the main process's CPU by phase."""
    import multimed_hf.data.build as build

    phases: dict[str, float] = {}
    originals = {name: getattr(build, name) for name in PHASES if hasattr(build, name)}  # (an older checkout's)

    def wrap(name, fn):
        def timed_phase(*args, **kwargs):
            start = time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                phases[PHASES[name]] = phases.get(PHASES[name], 0.0) + time.process_time() - start
        return timed_phase

    for name, fn in originals.items():
        setattr(build, name, wrap(name, fn))
    try:
        (main0, kids0), wall = _cpu_split(), time.perf_counter()
        run()
        wall, (main1, kids1) = time.perf_counter() - wall, _cpu_split()
    finally:
        for name, fn in originals.items():
            setattr(build, name, fn)
    return wall, main1 - main0, kids1 - kids0, phases


def pool_start(num_proc: int, repeats: int) -> float:
    """Median seconds to start the build's pool of ``num_proc`` worker processes and have each run a task."""
    from concurrent.futures import ProcessPoolExecutor

    from multimed_hf.data import engines

    context = getattr(engines, "_pool_context", multiprocessing.get_context)()
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        with ProcessPoolExecutor(num_proc, mp_context=context) as pool:
            for future in [pool.submit(os.getpid) for _ in range(num_proc)]:
                future.result()
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


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


def subset(root: Path, to: Path, every: int) -> Path:
    """Every ``every``-th image of ``root`` (sorted; its other files all) copied to ``to``, stamps kept."""
    images = sorted(root.rglob("*.jpg"))[::every]
    for path in images + [p for p in root.rglob("*") if p.is_file() and p.suffix != ".jpg"]:
        target = to / path.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    return to


def fixed_and_per_file(n: int, m: int, walls: dict[int, float], small: dict[int, float]) -> None:
    """Each num_proc's wall time as ``fixed + files x per file`` from builds of ``m`` and ``n`` files, and the
    speed-up of the per-file part alone: what a build of many more files tends to."""
    if n <= m:
        return
    costs = {}
    for k in walls:
        per_file = (walls[k] - small[k]) / (n - m)
        costs[k] = (walls[k] - n * per_file, per_file)
    print(f"fixed vs per-file cost (builds of {m} and {n} files, wall): " + "; ".join(
        f"num_proc={k}: {fixed:.2f} s + {per_file * 1e6:.0f} us a file" for k, (fixed, per_file) in costs.items()
    ))
    if 1 in costs:
        print("  per-file speed-up over num_proc=1 (what many more files tend to): " + "; ".join(
            f"N={k}: {costs[1][1] / per_file:.2f}x = {costs[1][1] / per_file / k:.2f} x N"
            for k, (_, per_file) in costs.items() if k > 1 and per_file > 0
        ))


def amdahl(n: int, built: dict, one: float | None, repeats: int) -> None:
    """The main process's CPU by phase and the workers' at the largest num_proc, the pool's start, and Amdahl's
    estimate of every num_proc asked (serial: the main process's CPU; parallel: the workers' CPU spread over N),
    against ``one``: num_proc=1's CPU (its wall time on an idle machine)."""
    k = max(built)
    runs = built[k]
    main = statistics.median(run[1] for run in runs)
    workers = statistics.median(run[2] for run in runs)
    labels = list(dict.fromkeys(PHASES.values()))
    phases = {label: statistics.median(run[3].get(label, 0.0) for run in runs) for label in labels}
    start = pool_start(k, repeats)
    print(f"where num_proc={k}'s time goes: main process CPU {main:.3f} s ({main / n * 1e6:.0f} us a file, "
          f"{main / (main + workers):.1%} of the build's CPU), workers' CPU {workers:.3f} s "
          f"({workers / n * 1e6:.0f} us a file); starting a pool of {k} processes {start:.3f} s")
    print("  main process CPU by phase: " + ", ".join(
        f"{label} {seconds:.3f} s" for label, seconds in phases.items()
    ) + f", other {max(0.0, main - sum(phases.values())):.3f} s")
    if one is None:
        return
    estimates = []
    for cores in sorted(set(built) | {16}):
        if cores > 1:
            wall = main + workers / cores
            estimates.append(f"N={cores}: {one / wall:.2f}x = {one / wall / cores:.2f} x N")
    print(f"  Amdahl from num_proc={k}'s CPU against num_proc=1's {one:.2f} s CPU (serial = main process, parallel "
          f"= workers / N; N free cores, no overlap counted; a larger N than measured keeps the main process's CPU "
          f"of num_proc={k}): " + "; ".join(estimates))
    if 1 not in built:
        return
    # the phases whose main-process work runs while the workers run theirs: the slower of the two is the wall time
    ones = {label: statistics.median(run[3].get(label, 0.0) for run in built[1]) for label in labels}
    overlapped = []
    for group in OVERLAPPED:
        here = sum(phases[label] for label in group)
        overlapped.append((here, max(0.0, sum(ones[label] for label in group) - here)))
    serial = main - sum(here for here, _ in overlapped)
    estimates = []
    for cores in sorted(set(built) | {16}):
        if cores > 1:
            wall = serial + sum(max(here, (here + there) / cores) for here, there in overlapped)
            estimates.append(f"N={cores}: {one / wall:.2f}x = {one / wall / cores:.2f} x N")
    print(f"  with the overlap (the main process's {' and '.join('+'.join(group) for group in OVERLAPPED)} run "
          f"while the workers do the rest "
          f"of that phase's num_proc=1 CPU, on N cores shared by both: each such phase takes max(main, (main + "
          f"rest) / N); the rest of the main process's CPU, {serial / n * 1e6:.0f} us a file, is serial): "
          + "; ".join(estimates))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1200, help="about how many images to generate")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--num-proc", type=int, nargs="+", default=[1, 2], help="builder process counts to time")
    parser.add_argument("--engine", choices=("local", "ray"), default="local")
    parser.add_argument("--writers", action="store_true", help="also time the shard writers alone")
    parser.add_argument("--skip-validating", action="store_true", help="leave out the validating loop (time)")
    parser.add_argument("--subset", type=int, default=8, help="also build every SUBSET-th file (fixed vs per-file "
                        "costs from the two sizes); 0: no")
    args = parser.parse_args(argv)
    per_class = max(1, args.images // 4 * 4 // 5)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        root = make_brain_tumor_mri(
            tmp / "src", train_per_class=per_class, test_per_class=max(1, args.images // 4 - per_class),
            size=args.size, bad_files=False,
        )
        n = len(list(root.rglob("*.jpg")))
        small = subset(root, tmp / "small", args.subset) if args.subset > 1 else None
        build_dataset("brain_tumor", [root], tmp / "warm", progress=False)  # imports and page cache warm
        plain, validating, built = [], [], {k: [] for k in args.num_proc}
        built_small: dict[int, list[float]] = {k: [] for k in args.num_proc}
        for r in range(args.repeats):
            (tmp / f"p{r}").mkdir()
            plain.append(timed(lambda: plain_loop(root, tmp / f"p{r}")))
            if not args.skip_validating:
                validating.append(timed(lambda: validating_loop(root, tmp / f"p{r}")))
            for k in args.num_proc:  # a fresh folder each time: no validation cache helps
                built[k].append(timed_build(lambda: build_dataset(
                    "brain_tumor", [root], tmp / f"b{r}-{k}", progress=False, num_proc=k, engine=args.engine)))
                if small is not None:
                    built_small[k].append(timed(lambda: build_dataset(
                        "brain_tumor", [small], tmp / f"s{r}-{k}", progress=False, num_proc=k,
                        engine=args.engine))[0])
        p_wall = statistics.median(w for w, _ in plain)
        p_cpu = statistics.median(c for _, c in plain)
        print(f"{n} JPEGs of {args.size}x{args.size} px, median of {args.repeats}, {os.cpu_count()} cores, "
              f"engine {args.engine}")
        print(f"plain PIL decode + pyarrow write (1 process): {n / p_wall:8.1f} files/s wall ({p_wall:.2f} s), "
              f"{n / p_cpu:8.1f} files/s CPU")
        if validating:
            v_wall = statistics.median(w for w, _ in validating)
            v_cpu = statistics.median(c for _, c in validating)
            print(f"plain loop + the builder's per-file checks and hashes (the ceiling of any validating build): "
                  f"{n / v_wall:8.1f} files/s wall ({v_wall:.2f} s), {n / v_cpu:8.1f} files/s CPU; vs plain: "
                  f"{p_wall / v_wall:.2f}x wall, {p_cpu / v_cpu:.2f}x CPU")
        walls = {k: statistics.median(run[0] for run in runs) for k, runs in built.items()}
        one = walls.get(1)
        for k, runs in built.items():
            wall = walls[k]
            main = statistics.median(run[1] for run in runs)
            workers = statistics.median(run[2] for run in runs)
            cpu = main + workers
            line = (f"multimed build, num_proc={k}: {n / wall:8.1f} files/s wall ({wall:.2f} s), "
                    f"{n / cpu:8.1f} files/s CPU (main process {main:.2f} s, workers {workers:.2f} s); vs plain: "
                    f"{p_wall / wall:.2f}x wall, {p_cpu / cpu:.2f}x CPU")
            if k == 1:
                line += " (goal >= 0.8x)"
            elif one is not None:
                line += f"; speed-up over num_proc=1: {one / wall:.2f}x = {one / wall / k:.2f} x N (goal >= 0.8 x N)"
            print(line)
        if args.engine == "local" and max(args.num_proc) > 1:
            one_cpu = statistics.median(run[1] + run[2] for run in built[1]) if 1 in built else None
            amdahl(n, built, one_cpu, args.repeats)
        if small is not None:
            fixed_and_per_file(n, len(list(small.rglob("*.jpg"))), walls,
                               {k: statistics.median(runs) for k, runs in built_small.items()})
        if args.writers:
            bench_writers(root, tmp, args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
