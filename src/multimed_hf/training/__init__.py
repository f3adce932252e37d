"""Training, evaluation and the paper's Table 1: orchestration over Trainer and accelerate, no modality code.

The names below are imported on first use, so ``import multimed_hf.training`` loads neither torch nor transformers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from multimed_hf._lazy import lazy_attributes

#: Public name -> the module (inside this package) that defines it.
_LAZY = {
    # a run: assemble, train, evaluate, write every output
    "train_model": ".run",
    "evaluate_checkpoint": ".run",
    "train_main": ".run",
    "evaluate_main": ".run",
    "RunResult": ".run",
    "MultiMedArguments": ".arguments",
    "EvaluateArguments": ".arguments",
    "assemble": ".assembly",
    "Assembly": ".assembly",
    "choose_encoders": ".encoder_presets",
    "FAMILIES": ".families",
    "RunPlan": ".families",
    "plan_runs": ".families",
    "unplanned": ".families",
    "parse_family": ".families",
    "register_family_variant": ".families",
    "logistic_regression_baseline": ".baselines",
    # the mechanics
    "MultiMedTrainer": ".trainer",
    "TaskPredictions": ".predictions",
    "TaskSampling": ".sampling",
    "TaskBatchSampler": ".sampling",
    "SAMPLING_STRATEGIES": ".sampling",
    "MultiTaskDataset": ".data",
    "MultiTaskCollator": ".data",
    "IterableMultiTaskDataset": ".data",
    "load_task_data": ".loading",
    "materialize": ".loading",
    "LossWeighting": ".loss_weighting",
    "StaticWeighting": ".loss_weighting",
    "UncertaintyWeighting": ".loss_weighting",
    "LOSS_WEIGHTINGS": ".loss_weighting",
    "get_loss_weighting": ".loss_weighting",
    "register_loss_weighting": ".loss_weighting",
    # balancing and distillation (issue 19): "<family>+miles" and friends
    "balancing_from_variant": ".balancing",
    "register_balancing_variants": ".balancing",
    "BalancingVariant": ".balancing",
    "variant_options": ".arguments",
    # the benchmark and its report
    "run_benchmark": ".benchmark",
    "benchmark_main": ".benchmark",
    "BenchmarkArguments": ".benchmark",
    "write_table1": ".report",
    "write_table": ".report",
    "read_records": ".report",
    "CORRELATION_METRICS": ".report",
    "ReportPaths": ".report",
    "TABLE1": ".paper",
    "TABLE2": ".paper",
    "paper_value": ".paper",
}

__all__ = list(_LAZY)

if TYPE_CHECKING:  # for type checkers and IDEs; never run
    from .arguments import EvaluateArguments, MultiMedArguments, variant_options
    from .assembly import Assembly, assemble
    from .balancing import BalancingVariant, balancing_from_variant, register_balancing_variants
    from .baselines import logistic_regression_baseline
    from .benchmark import BenchmarkArguments, benchmark_main, run_benchmark
    from .data import IterableMultiTaskDataset, MultiTaskCollator, MultiTaskDataset
    from .encoder_presets import choose_encoders
    from .families import FAMILIES, RunPlan, parse_family, plan_runs, register_family_variant, unplanned
    from .loading import load_task_data, materialize
    from .loss_weighting import (LOSS_WEIGHTINGS, LossWeighting, StaticWeighting, UncertaintyWeighting,
                                 get_loss_weighting, register_loss_weighting)
    from .paper import TABLE1, TABLE2, paper_value
    from .predictions import TaskPredictions
    from .report import CORRELATION_METRICS, ReportPaths, read_records, write_table, write_table1
    from .run import RunResult, evaluate_checkpoint, evaluate_main, train_main, train_model
    from .sampling import SAMPLING_STRATEGIES, TaskBatchSampler, TaskSampling
    from .trainer import MultiMedTrainer


__getattr__, __dir__ = lazy_attributes(globals(), _LAZY)
