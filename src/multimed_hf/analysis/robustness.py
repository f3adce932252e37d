"""Robustness: scores under per-modality input corruption and missing-modality rates, MultiBench's summaries."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from multimed_hf.analysis._common import (
    AnalysisError,
    AnalysisPaths,
    analysis_datasets,
    analysis_plan,
    check_analysis_args,
    check_plan_flags,
    headline,
    headline_value,
    markdown_table,
    modality_matrix,
    analysis_main,
    predict_subset,
    prior_outputs,
    refuse_resume_path,
    train_run,
    write_outputs,
)
from multimed_hf.tasks import IMAGE_MODALITIES

__all__ = [
    "CORRUPTIONS",
    "RobustnessOptions",
    "RobustnessResult",
    "CorruptingCollator",
    "corrupt",
    "relative_robustness",
    "effective_robustness",
    "robustness",
    "robustness_main",
]

#: What "corruption level" means per modality (level 0 leaves the input as it is, 1 is the strongest):
#: images: Gaussian noise of sd = level in normalised pixel units (a mean/std 0.5 processor maps the pixel range to
#: [-1, 1]); EEG: Gaussian noise of sd = level in per-channel sd units (the processor z-scores each channel: level 1
#: is 0 dB SNR); expression: each gene's value set to 0 with probability = level (dropout, scRNA-seq's own noise);
#: text / DNA / protein: each real token (attention mask 1, not the first or last) swapped for another real token of
#: the batch with probability = level (substitutions, DNA's point mutations).
CORRUPTIONS = {
    "image": "Gaussian pixel noise, sd = level (normalised units)",
    "eeg": "Gaussian noise, sd = level x the channel's sd (level 1 = 0 dB SNR)",
    "scrna": "dropout: each gene's value zeroed with probability = level",
    "tokens": "substitution: each token swapped for another of the batch with probability = level",
}


def _kind(modality: str) -> str:
    if modality in IMAGE_MODALITIES:
        return "image"
    if modality in ("eeg", "scrna"):
        return modality
    if modality in ("text", "dna", "protein"):
        return "tokens"
    raise AnalysisError(f"no corruption is defined for modality {modality!r}")


def corrupt(modality: str, tensors: Mapping[str, torch.Tensor], level: float,
            generator: torch.Generator) -> dict[str, torch.Tensor]:
    """``tensors`` (one modality's batch inputs, ``MODEL_INPUTS.md``) corrupted at ``level`` in [0, 1] the way
    ``CORRUPTIONS`` says for the modality; level 0 returns them unchanged."""
    if not 0 <= level <= 1:
        raise AnalysisError(f"corruption level {level}: expected a value in [0, 1]")
    out = dict(tensors)
    if level == 0:
        return out
    kind = _kind(modality)
    if kind == "image":
        x = out["pixel_values"]
        out["pixel_values"] = x + level * torch.randn(x.shape, generator=generator, dtype=x.dtype)
    elif kind == "eeg":
        x = out["values"]
        out["values"] = x + level * torch.randn(x.shape, generator=generator, dtype=x.dtype)
    elif kind == "scrna":
        x = out["values"]
        out["values"] = x * (torch.rand(x.shape, generator=generator) >= level).to(x.dtype)
    else:
        ids = out["input_ids"].clone()
        mask = out.get("attention_mask", torch.ones_like(ids)).bool().clone()
        lengths = mask.sum(1)
        mask[:, 0] = False  # the first and last real tokens are the special ones ([CLS] / [SEP] / <eos>)
        mask[torch.arange(len(ids)), (lengths - 1).clamp(min=0)] = False
        pool = ids[mask]
        swap = mask & (torch.rand(ids.shape, generator=generator) < level)
        if len(pool) and swap.any():
            ids[swap] = pool[torch.randint(len(pool), (int(swap.sum()),), generator=generator)]
        out["input_ids"] = ids
    return out


class CorruptingCollator:
    """A batch collator that corrupts one modality's inputs at one level after the base collator made the batch
    (deterministic: its own generator, seeded)."""

    def __init__(self, base: Callable, modality: str, level: float, seed: int = 0):
        self.base, self.modality, self.level = base, modality, float(level)
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, items):
        batch = self.base(items)
        if self.modality in batch["inputs"]:
            batch["inputs"][self.modality] = corrupt(self.modality, batch["inputs"][self.modality], self.level,
                                                     self.generator)
        return batch


def relative_robustness(levels: Sequence[float], values: Sequence[float]) -> float:
    """MultiBench's relative robustness: the area under the score-vs-imperfection curve (trapezoids), the levels
    scaled to [0, 1] (MultiBench: 11 levels 0.0-1.0, steps of 0.1)."""
    levels, values = np.asarray(levels, dtype=float), np.asarray(values, dtype=float)
    span = levels.max() - levels.min()
    if len(levels) < 2 or span == 0:
        return float("nan")
    x = (levels - levels.min()) / span
    return float(np.sum((values[1:] + values[:-1]) * np.diff(x) / 2))


def effective_robustness(values: Sequence[float], baseline: Sequence[float]) -> float:
    """MultiBench's effective robustness: sum over levels of the curve minus the baseline's curve shifted to the
    same clean score, f_i - (b_i + f_0 - b_0) (MultiBench's baseline is late fusion; here it is the same model
    trained without modality dropout). Positive: it loses less than the baseline as imperfection grows."""
    f, b = np.asarray(values, dtype=float), np.asarray(baseline, dtype=float)
    if f.shape != b.shape:
        raise AnalysisError(f"effective robustness: curves of {len(f)} and {len(b)} levels")
    return float(np.sum((f - f[0]) - (b - b[0])))


@dataclass
class RobustnessOptions:
    """``multimed robustness`` options beside the training flags."""

    levels: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0], metadata={
        "help": "corruption levels in [0, 1] (see CORRUPTIONS)", "nargs": "+"})
    missing_rates: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0], metadata={
        "help": "fractions of the rows holding a modality that lose it at test time", "nargs": "+"})
    modality_dropouts: list[float] = field(default_factory=lambda: [0.0, 0.3], metadata={
        "help": "modality dropout of the training runs compared (the first is the baseline)", "nargs": "+"})
    modalities: list[str] | None = field(default=None, metadata={
        "help": "the modalities perturbed (default: those the task's training rows hold)", "nargs": "+"})
    split: str = field(default="test", metadata={"help": "the split scored"})
    corruption_seed: int = field(default=0, metadata={"help": "seed of the noise and of the rows made missing"})

    def __post_init__(self):
        for name in ("levels", "missing_rates"):
            values = list(getattr(self, name))
            if not values or any(not 0 <= v <= 1 for v in values):
                raise AnalysisError(f"--{name} {values}: expected one or more values in [0, 1]")
            if 0 not in values:  # the summary's clean score and both robustness scores are measured from 0
                raise AnalysisError(f"--{name} {values}: give 0 among them: the summary's clean score and both "
                                    f"robustness scores are measured from the unperturbed level 0")
            repeated = sorted({v for v in values if values.count(v) > 1})
            if repeated:
                raise AnalysisError(f"--{name} {values}: {repeated} repeated; give each level once")
        dropouts = list(self.modality_dropouts)
        if not dropouts or any(not 0 <= d < 1 for d in dropouts):
            raise AnalysisError(f"--modality_dropouts {dropouts}: expected one or more values in [0, 1)")
        repeated = sorted({d for d in dropouts if dropouts.count(d) > 1})
        if repeated:
            raise AnalysisError(f"--modality_dropouts {dropouts}: {repeated} repeated; each value trains one model "
                                f"(runs/dropout-<value>), give it once")

    def check_arguments(self, args, training_args, given: set[str] | None = None) -> None:
        """``--modality_dropout`` is replaced by each of ``--modality_dropouts`` (refused); a resume path is refused
        where several models are trained."""
        if args.modality_dropout:
            raise AnalysisError(f"--modality_dropout {args.modality_dropout}: robustness trains one model per value "
                                f"of --modality_dropouts {list(self.modality_dropouts)}, each replacing it, so it "
                                f"would change nothing; give --modality_dropouts 0 {args.modality_dropout:g} instead")
        if len(self.modality_dropouts) > 1:
            refuse_resume_path(training_args, f"robustness trains one model per value of --modality_dropouts "
                                              f"{list(self.modality_dropouts)}")


@dataclass
class RobustnessResult:
    curves: Any  # DataFrame: dropout, perturbation, modality, level, metric, value, ci_low, ci_high, n
    summary: Any  # DataFrame: dropout, perturbation, modality, clean, relative_robustness, effective_robustness
    clean: dict  # dropout -> clean headline score
    paths: AnalysisPaths | None = None


def _curve_records(predictions, split, bootstrap, seed, **keys) -> list[dict]:
    """A curve point's records; a per-context correlation scores a context of constant predictions 0, as combos
    does (``score_constant_as_zero``): the contexts left with no modality at a high missing rate stay in the mean."""
    from multimed_hf.analysis.combos import score_constant_as_zero

    return [{**keys, "label": r["label"], "metric": r["metric"], "value": r["value"], "ci_low": r["ci_low"],
             "ci_high": r["ci_high"], "n": r["n"]} for r in score_constant_as_zero(predictions, split, bootstrap,
                                                                                    seed)]


def robustness(args, training_args, *, options: RobustnessOptions | None = None,
               output_dir: str | Path | None = None, datasets: Mapping[str, Any] | None = None,
               train_fn: Callable | None = None) -> RobustnessResult:
    """For each modality dropout of ``options.modality_dropouts``: train a model on ``args.tasks[0]``, then score
    ``options.split`` with each modality corrupted at each level and with each modality missing from a growing
    fraction of its rows (presence masks; rows left with nothing get the empty predictor); summarise each curve
    by MultiBench's relative and effective robustness. Writes ``robustness.csv`` (curves), ``robustness.md``,
    ``robustness.png`` and ``robustness_summary.csv``."""
    import pandas as pd

    from multimed_hf.training.families import present_modalities

    options = options or RobustnessOptions()
    check_analysis_args(args, training_args, options)
    if len(args.tasks) != 1:
        raise AnalysisError(f"robustness takes one task, got {args.tasks}")
    task = args.tasks[0]
    every = list(present_modalities(task, args.data))
    perturbed = list(options.modalities or every)
    unread = [m for m in perturbed if m not in every]
    if unread:
        raise AnalysisError(f"--modalities {perturbed}: task {task!r}'s training rows in {args.data!r} hold "
                            f"{every}, and the model reads only those, so {unread} cannot be perturbed; name some "
                            f"of {every}")
    for m in perturbed:
        _kind(m)
    dropped = [d for d in options.modality_dropouts if d > 0]
    if len(every) < 2 and dropped:
        raise AnalysisError(f"--modality_dropouts {list(options.modality_dropouts)}: task {task!r} reads one "
                            f"modality ({every}), and modality dropout never drops a row's last one, so {dropped} "
                            f"would train the same model as 0; give --modality_dropouts 0")
    check_plan_flags(args, [analysis_plan(args, task, every, "dropout")])
    output_dir = Path(output_dir or training_args.output_dir)
    data = dict(datasets) if datasets is not None else analysis_datasets(args.data, task, every)
    if options.split not in data:
        raise AnalysisError(f"task {task!r} has no {options.split!r} split")
    test = data[options.split]
    present = modality_matrix(test, task, every)
    draws = np.random.default_rng(options.corruption_seed).random(len(test))  # nested missing rows across rates
    boot, seed = args.bootstrap_samples, training_args.seed
    records, clean = [], {}
    for dropout in options.modality_dropouts:
        run = train_run(args, training_args, task=task, datasets=data, modalities=every,
                        output_dir=output_dir / "runs" / f"dropout-{dropout:g}", modality_dropout=dropout,
                        train_fn=train_fn)
        reference = run.trainer.predict_task(task, test, split=options.split)
        clean[dropout] = headline_value(_curve_records(reference, options.split, 0, seed), task)["value"]
        prior = prior_outputs(task, data["train"], run.model.config.heads[task], args.max_train_samples)
        base_collator = run.trainer.data_collator
        for m in perturbed:
            for level in options.levels:
                run.trainer.data_collator = CorruptingCollator(base_collator, m, level, options.corruption_seed)
                try:
                    predictions = run.trainer.predict_task(task, test, split=options.split)
                finally:
                    run.trainer.data_collator = base_collator
                records += _curve_records(predictions, options.split, boot, seed, dropout=dropout,
                                          perturbation="corruption", modality=m, level=level)
            without = predict_subset(run, test, [o for o in every if o != m], prior, reference, split=options.split)
            has = present[:, every.index(m)]
            for rate in options.missing_rates:
                lost = np.flatnonzero(has & (draws < rate))
                predictions = _mixed(reference, without, lost)
                records += _curve_records(predictions, options.split, boot, seed, dropout=dropout,
                                          perturbation="missing", modality=m, level=rate)
    curves = pd.DataFrame.from_records(records)
    summary = _summary(curves, task, options)
    result = RobustnessResult(curves=curves, summary=summary, clean=clean)
    result.paths = write_outputs(curves, output_dir, "robustness", _markdown(task, result, options),
                                 lambda fig: _figure(fig, task, curves, perturbed, options))
    summary.to_csv(output_dir / "robustness_summary.csv", index=False)
    return result


def _mixed(reference, without, rows: np.ndarray):
    import dataclasses

    outputs = {c: v.copy() for c, v in reference.outputs.items()}
    for c in outputs:
        outputs[c][rows] = without.outputs[c][rows]
    return dataclasses.replace(reference, outputs=outputs, loss=None)


def _headline_rows(curves, task):
    column, metric = headline(task)
    single = curves["label"].isna() if "label" in curves else True
    return curves[(curves["metric"] == metric) & (single | (curves["label"] == column))]


def _summary(curves, task, options: RobustnessOptions):
    import pandas as pd

    head = _headline_rows(curves, task)
    baseline_dropout = options.modality_dropouts[0]
    rows = []
    for (dropout, perturbation, modality), part in head.groupby(["dropout", "perturbation", "modality"], sort=False):
        part = part.sort_values("level")
        base = head[(head["dropout"] == baseline_dropout) & (head["perturbation"] == perturbation)
                    & (head["modality"] == modality)].sort_values("level")
        rows.append({"dropout": dropout, "perturbation": perturbation, "modality": modality,
                     "metric": part["metric"].iloc[0], "clean": float(part["value"].iloc[0]),
                     "relative_robustness": relative_robustness(part["level"], part["value"]),
                     "effective_robustness": effective_robustness(part["value"], base["value"])})
    return pd.DataFrame.from_records(rows)


def _markdown(task, result: RobustnessResult, options: RobustnessOptions) -> str:
    column, metric = headline(task)
    lines = [f"# Robustness: {task}", "",
             f"Headline `{column}` {metric} on the {options.split} split. Corruption per modality: "
             + "; ".join(f"{k}: {v}" for k, v in CORRUPTIONS.items()) + ". Missing: that fraction of the rows "
             "holding the modality lose it at test time (presence masks; the same rows at every larger rate). A "
             "per-context correlation scores a context of constant predictions 0 (as combos), so every level and "
             "rate averages the same contexts.",
             "", "Relative robustness: area under the curve over levels scaled to [0, 1] (MultiBench). Effective "
             f"robustness: sum of the curve minus the modality-dropout {options.modality_dropouts[0]:g} model's curve "
             "shifted to the same clean score (MultiBench uses late fusion as that baseline).", "",
             markdown_table(result.summary), ""]
    return "\n".join(lines)


def _figure(fig, task, curves, modalities, options: RobustnessOptions) -> None:
    head = _headline_rows(curves, task)
    axes = fig.subplots(2, len(modalities), squeeze=False, sharey=True)
    for i, perturbation in enumerate(("corruption", "missing")):
        for j, m in enumerate(modalities):
            ax = axes[i][j]
            for dropout in options.modality_dropouts:
                part = head[(head["perturbation"] == perturbation) & (head["modality"] == m)
                            & (head["dropout"] == dropout)].sort_values("level")
                ax.plot(part["level"], part["value"], marker="o", label=f"modality dropout {dropout:g}")
                ax.fill_between(part["level"], part["ci_low"].astype(float), part["ci_high"].astype(float),
                                alpha=0.15)
            ax.set_title(f"{m}: {perturbation}", fontsize=9)
            ax.set_xlabel("corruption level" if perturbation == "corruption" else "missing rate", fontsize=8)
    axes[0][0].set_ylabel(head["metric"].iloc[0] if len(head) else "")
    axes[1][0].set_ylabel(head["metric"].iloc[0] if len(head) else "")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"Robustness: {task}")


def robustness_main(argv: Sequence[str] | None = None) -> int:
    """``multimed robustness --data DIR --task T --output_dir OUT`` + every training flag."""
    return analysis_main("robustness", argv, RobustnessOptions, robustness, single_task=True)
