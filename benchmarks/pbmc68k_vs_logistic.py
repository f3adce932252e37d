"""Real data, honestly compared: scanpy's real pbmc68k_reduced cells (a cell_type config built from that file
alone), ``multimed train --tasks cell_type --family unimodal --encoders small`` with the command's defaults against
a scikit-learn LogisticRegression fitted on the same training rows and gene panel (on the run's values, and on
per-gene standardised values). Prints both per seed, and on how many seeds ours reaches the logistic regression.

    python benchmarks/pbmc68k_vs_logistic.py [--seeds 42 0 1 2 3] [--out /tmp/pbmc68k]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # dataset_scripts, when run as a script


def build_pbmc68k(out: Path) -> Path:
    """Build the cell_type config from scanpy's real pbmc68k_reduced file alone into ``out``."""
    from dataset_scripts.sample_sources.pbmc68k_reduced import DATA, REAL_FILE
    from multimed_hf.api import build_dataset

    source = out / "source"
    source.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(DATA / REAL_FILE, source / REAL_FILE)
    build_dataset("cell_type", [source], out / "multimed", progress=False)
    return out / "multimed"


def compare(data: Path, seeds=(42,), work: Path | None = None) -> dict:
    """``{"logistic": accuracy, "ours": {seed: accuracy}}`` on the test split."""
    from multimed_hf.training.baselines import logistic_regression_baseline
    from multimed_hf.training.run import train_model

    logistic = logistic_regression_baseline(data, "cell_type")
    standardized = logistic_regression_baseline(data, "cell_type", standardize=True)
    ours = {}
    for seed in seeds:
        run = train_model(data=str(data), tasks=["cell_type"], family="unimodal", encoders="small",
                          output_dir=str((work or data.parent) / f"run-seed{seed}"), seed=seed, disable_tqdm=True,
                          eval_strategy="no", save_strategy="no", logging_strategy="no", bootstrap_samples=0)
        ours[seed] = run.metrics["test_cell_type_accuracy"]
    return {"logistic": logistic.accuracy, "logistic_standardized": standardized.accuracy,
            "n_train": logistic.n_train, "n_test": logistic.n_test, "genes": logistic.num_features, "ours": ours}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 0, 1, 2, 3])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    import numpy as np
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        result = compare(build_pbmc68k(out), args.seeds, out)
    ours = np.array(list(result["ours"].values()))
    print(f"pbmc68k_reduced (real cells): {result['n_train']} training cells, {result['n_test']} test cells, "
          f"{result['genes']} genes")
    n = result["n_test"]
    print(f"logistic regression (scikit-learn, C=1) on the run's values: test accuracy {result['logistic']:.3f} "
          f"({round(result['logistic'] * n)}/{n})")
    print(f"logistic regression on per-gene standardised values: test accuracy "
          f"{result['logistic_standardized']:.3f} ({round(result['logistic_standardized'] * n)}/{n})")
    for seed, acc in result["ours"].items():
        verdict = ">=" if acc >= result["logistic"] else "<"
        print(f"multimed unimodal, small encoders, seed {seed}: test accuracy {acc:.3f} ({round(acc * n)}/{n}), "
              f"{verdict} logistic")
    at_least = int(np.sum(ours >= result["logistic"]))
    print(f"multimed mean +- sd over {len(ours)} seeds: {ours.mean():.3f} +- {ours.std(ddof=1) if len(ours) > 1 else 0:.3f}"
          f" (ratio to logistic {ours.mean() / result['logistic']:.3f}); >= logistic on {at_least} of {len(ours)} "
          f"seeds; one test cell is {1 / n:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
