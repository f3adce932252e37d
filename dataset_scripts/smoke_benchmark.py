"""The main job on the bundled samples: build them, then `multimed benchmark` over all five families and every built
task, briefly (small random-init encoders, CPU, one seed, a few steps), printing Table 1 beside the paper's.

    python dataset_scripts/smoke_benchmark.py                          # builds ./multimed, writes ./report
    python dataset_scripts/smoke_benchmark.py --skip-build --seeds 0 1 2 --max_steps 20   # more: flags go on

A smoke run on synthetic samples (plus scanpy's real pbmc68k cells), not a reproduction: it shows that every
family and task trains, evaluates and lands in the report (table1.csv / .md / .png), not how well they do.
Every flag after the script's own goes to `multimed benchmark` and overrides the settings below.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from dataset_scripts import build_all  # noqa: E402
from multimed_hf import cli  # noqa: E402

#: Tiny settings: enough for every run to take optimiser steps, be evaluated and be written, on 2 CPU cores.
SMOKE_SETTINGS = (
    "--families", "domain_specific", "unimodal", "unimodal_multitask", "multimodal", "multimodal_multitask",
    "--seeds", "0",
    "--encoders", "small",
    "--use_cpu",
    "--max_steps", "2",
    "--per_device_train_batch_size", "8",
    "--per_device_eval_batch_size", "32",
    "--max_train_samples", "32",
    "--max_eval_samples", "32",
    "--eval_splits", "test",
    "--bootstrap_samples", "10",
    "--eval_strategy", "no",
    "--save_strategy", "no",
    "--logging_steps", "1",
    "--disable_tqdm", "true",
    "--dataloader_num_workers", "0",
)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("multimed"), help="the built folder (default: multimed)")
    parser.add_argument("--report", type=Path, default=Path("report"), help="the report folder (default: report)")
    parser.add_argument("--skip-build", action="store_true", help="reuse the folder --out built before")
    args, benchmark_flags = parser.parse_known_args(argv)
    start = time.perf_counter()
    if not args.skip_build:
        build_all.main(["--out", str(args.out)])
    built = time.perf_counter()
    code = cli.main(["benchmark", "--data", str(args.out), "--tasks", "all", "--output_dir", str(args.report),
                     *SMOKE_SETTINGS, *benchmark_flags])
    done = time.perf_counter()
    print(f"smoke benchmark: {done - start:.0f} s wall ({built - start:.0f} s building the samples, "
          f"{done - built:.0f} s training and evaluating)")
    failed = failed_runs(args.report / "table1.csv")
    if failed:  # a smoke run exists to show that every cell runs: one failed cell fails it
        print(f"smoke benchmark FAILED: {len(failed)} run(s) raised: " + "; ".join(failed), file=sys.stderr)
        return 1
    return code


def failed_runs(table: Path) -> list[str]:
    """``"<family> x <task> (seed k): <error>"`` for each run that recorded an error in ``table`` (table1.csv)."""
    from multimed_hf.training.report import read_records

    if not table.is_file():
        return [f"{table} was not written"]
    failed = {f"{r['family']} x {r['task']} (seed {r['seed']}): {r['error']}" for r in read_records(table) if r["error"]}
    return sorted(failed)


if __name__ == "__main__":
    sys.exit(main())
