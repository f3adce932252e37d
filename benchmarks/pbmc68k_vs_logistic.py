"""Real data, honestly compared: scanpy's real pbmc68k_reduced cells (a cell_type config built from that file
alone), ``multimed train --tasks cell_type --family unimodal --encoders small`` with the command's defaults against
a scikit-learn LogisticRegression fitted on the same training rows and gene panel (on the run's values, and on
per-gene standardised values). Prints both per seed, on the test and the validation split (choose variants on
validation, report test), on how many seeds ours reaches the logistic regression, and the mean difference with a
95% interval over the seeds.

    python benchmarks/pbmc68k_vs_logistic.py [--seeds 42 0 1 2 3] [--out /tmp/pbmc68k]
    python benchmarks/pbmc68k_vs_logistic.py --seeds 42 $(seq 0 18) --set weight_decay=0.01   # a variant
"""

from __future__ import annotations

import argparse
import json
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


def parse_settings(pairs) -> dict:
    """``["weight_decay=0.1", ...]`` -> ``{"weight_decay": 0.1}`` (values read as JSON where they parse, else text):
    ``train_model`` keywords that replace the command's defaults, to measure a variant."""
    settings = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--set {pair!r}: expected KEY=VALUE, a train_model keyword (e.g. weight_decay=0.1)")
        try:
            settings[key] = json.loads(value)
        except json.JSONDecodeError:
            settings[key] = value
    return settings


def compare(data: Path, seeds=(42,), work: Path | None = None, settings: dict | None = None) -> dict:
    """``{"logistic": accuracy, "ours": {seed: accuracy}, ...}`` on the test split, and the same under
    ``logistic_validation`` / ``ours_validation`` on the validation split; ``settings`` go to ``train_model``."""
    from multimed_hf.training.baselines import logistic_regression_baseline
    from multimed_hf.training.loading import load_task_data
    from multimed_hf.training.run import train_model

    logistic = logistic_regression_baseline(data, "cell_type")
    standardized = logistic_regression_baseline(data, "cell_type", standardize=True)
    splits = load_task_data(data, ["cell_type"], splits=("train", "validation"))["cell_type"]
    # the same fit (same training rows, deterministic lbfgs), scored on the validation rows
    validation = logistic_regression_baseline(data, "cell_type",
                                              datasets={"train": splits["train"], "test": splits["validation"]})
    ours, ours_validation = {}, {}
    for seed in seeds:
        run = train_model(**{"data": str(data), "tasks": ["cell_type"], "family": "unimodal", "encoders": "small",
                             "output_dir": str((work or data.parent) / f"run-seed{seed}"), "seed": seed,
                             "disable_tqdm": True, "eval_strategy": "no", "save_strategy": "no",
                             "logging_strategy": "no", "bootstrap_samples": 0, **(settings or {})})
        ours[seed] = run.metrics["test_cell_type_accuracy"]
        ours_validation[seed] = run.metrics["validation_cell_type_accuracy"]
    return {"logistic": logistic.accuracy, "logistic_standardized": standardized.accuracy,
            "logistic_validation": validation.accuracy, "n_train": logistic.n_train, "n_test": logistic.n_test,
            "n_validation": validation.n_test, "genes": logistic.num_features, "ours": ours,
            "ours_validation": ours_validation}


def _sd(values) -> float:
    return float(values.std(ddof=1)) if len(values) > 1 else 0.0


def seed_interval(differences, level: float = 0.95) -> tuple[float, float]:
    """Student-t interval of the mean of per-seed differences (ours - logistic)."""
    import numpy as np
    from scipy import stats

    differences = np.asarray(differences, dtype=float)
    half = stats.t.ppf(0.5 + level / 2, len(differences) - 1) * stats.sem(differences)
    return float(differences.mean() - half), float(differences.mean() + half)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 0, 1, 2, 3])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--set", dest="settings", metavar="KEY=VALUE", action="append", default=[],
                        help="a train_model keyword replacing the command's default (repeatable), e.g. "
                             "weight_decay=0.1; default: none, the command's defaults")
    args = parser.parse_args(argv)
    settings = parse_settings(args.settings)
    import numpy as np
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        result = compare(build_pbmc68k(out), args.seeds, out, settings)
    ours = np.array(list(result["ours"].values()))
    ours_validation = np.array(list(result["ours_validation"].values()))
    n, n_val = result["n_test"], result["n_validation"]
    print(f"pbmc68k_reduced (real cells): {result['n_train']} training cells, {n_val} validation cells, {n} test "
          f"cells, {result['genes']} genes" + (f"; settings {settings}" if settings else ""))
    print(f"logistic regression (scikit-learn, C=1) on the run's values: test accuracy {result['logistic']:.3f} "
          f"({round(result['logistic'] * n)}/{n}), validation {result['logistic_validation']:.3f} "
          f"({round(result['logistic_validation'] * n_val)}/{n_val})")
    print(f"logistic regression on per-gene standardised values: test accuracy "
          f"{result['logistic_standardized']:.3f} ({round(result['logistic_standardized'] * n)}/{n})")
    for seed, acc in result["ours"].items():
        verdict = ">=" if acc >= result["logistic"] else "<"
        val = result["ours_validation"][seed]
        print(f"multimed unimodal, small encoders, seed {seed}: test accuracy {acc:.3f} ({round(acc * n)}/{n}), "
              f"{verdict} logistic; validation {val:.3f} ({round(val * n_val)}/{n_val})")
    at_least = int(np.sum(ours >= result["logistic"]))
    val_at_least = int(np.sum(ours_validation >= result["logistic_validation"]))
    print(f"multimed mean +- sd over {len(ours)} seeds: test {ours.mean():.3f} +- {_sd(ours):.3f} (ratio to logistic "
          f"{ours.mean() / result['logistic']:.3f}); >= logistic on {at_least} of {len(ours)} seeds; one test cell "
          f"is {1 / n:.3f}")
    if len(ours) > 1:
        low, high = seed_interval(ours - result["logistic"])
        print(f"ours - logistic on test: {ours.mean() - result['logistic']:+.3f}, 95% interval over seeds "
              f"{low:+.3f} to {high:+.3f} (Student t; the regression is deterministic, so this is the seeds' spread, "
              f"not the test rows')")
    print(f"validation {ours_validation.mean():.3f} +- {_sd(ours_validation):.3f} against logistic "
          f"{result['logistic_validation']:.3f} (ratio {ours_validation.mean() / result['logistic_validation']:.3f}); "
          f">= logistic on {val_at_least} of {len(ours)} seeds; one validation cell is {1 / n_val:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
