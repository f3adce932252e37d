"""Modality combinations (Fig. 3): every subset scored in `mask` and `retrain` modes; exact Shapley values."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

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
    analysis_main,
    predict_subset,
    prior_outputs,
    prior_predictions,
    refuse_resume_path,
    score,
    train_run,
    write_outputs,
)

__all__ = [
    "COMBO_MODES",
    "CORRELATION_METRICS",
    "CombosOptions",
    "CombosResult",
    "modality_subsets",
    "shapley_values",
    "subset_name",
    "constant_contexts_as_zero",
    "score_constant_as_zero",
    "combos",
    "combos_main",
]

#: ``mask``: one model over every modality, the others masked out at test time through the presence masks;
#: ``retrain``: one model per subset, trained and tested on that subset alone.
COMBO_MODES = ("mask", "retrain")
EMPTY = "(none)"


@dataclass
class CombosOptions:
    """``multimed combos`` options beside the training flags."""

    modes: list[str] = field(default_factory=lambda: ["mask"], metadata={
        "help": "mask (one model, modalities masked out at test time) and/or retrain (a model per subset)",
        "nargs": "+"})
    modalities: list[str] | None = field(default=None, metadata={
        "help": "the modalities combined (default: those the task's training rows hold)", "nargs": "+"})
    max_order: int | None = field(default=None, metadata={
        "help": "evaluate subsets of at most this many modalities (and the full set); exact Shapley values need "
                "every subset"})
    max_subsets: int = field(default=63, metadata={
        "help": "budget: refuse a power set larger than this (use --max_order)"})
    split: str = field(default="test", metadata={"help": "the split every subset is scored on"})

    def __post_init__(self):
        modes = list(self.modes)
        unknown = sorted(set(modes) - set(COMBO_MODES))
        if unknown or not modes:
            raise AnalysisError(f"--modes {modes}: expected some of {COMBO_MODES}")
        if len(set(modes)) != len(modes):
            raise AnalysisError(f"--modes {modes}: a mode repeated would score every subset again; give each once")
        for name in ("max_order", "max_subsets"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise AnalysisError(f"--{name} {value!r}: expected an integer >= 1")

    def check_arguments(self, args, training_args, given: set[str] | None = None) -> None:
        """A resume path is refused where several models are trained (``retrain``: one per subset)."""
        if "retrain" in self.modes:
            refuse_resume_path(training_args, "--modes retrain trains one model per modality subset")


@dataclass
class CombosResult:
    """The subset table (every metric, with CIs), the Shapley values per mode, the best subset per mode, files."""

    table: Any  # pandas DataFrame: mode, subset, size, metric, value, ci_low, ci_high, n, rows_read, run
    shapley: Any  # pandas DataFrame: mode, modality, shapley, metric, complete
    best: dict[str, str]
    paths: AnalysisPaths | None = None
    trainings: int = 0


def subset_name(subset: Sequence[str]) -> str:
    return "+".join(subset) if subset else EMPTY


def modality_subsets(modalities: Sequence[str], max_order: int | None = None,
                     max_subsets: int | None = None) -> list[tuple[str, ...]]:
    """Every non-empty subset of ``modalities`` by size (singles, pairs, ..., all); ``max_order`` keeps those of
    at most that size plus the full set; more than ``max_subsets`` raises."""
    modalities = list(dict.fromkeys(modalities))
    order = len(modalities) if max_order is None else max(1, min(max_order, len(modalities)))
    subsets = [s for k in range(1, order + 1) for s in itertools.combinations(modalities, k)]
    if tuple(modalities) not in subsets:
        subsets.append(tuple(modalities))
    if max_subsets is not None and len(subsets) > max_subsets:
        raise AnalysisError(f"{len(subsets)} modality subsets of {modalities} exceed the budget max_subsets="
                            f"{max_subsets}; raise it or limit the order with max_order")
    return subsets


def shapley_values(values: Mapping[frozenset, float], modalities: Sequence[str]) -> dict[str, float]:
    """Exact Shapley values of ``modalities`` from a complete subset table ``{frozenset(subset): v}`` that includes
    the empty set: phi_i = sum over S without i of |S|! (n - |S| - 1)! / n! * (v(S + i) - v(S)). They sum to
    v(all) - v(empty) (efficiency)."""
    modalities = list(modalities)
    n = len(modalities)
    missing = [subset_name(sorted(s)) for k in range(n + 1) for s in map(frozenset, itertools.combinations(
        modalities, k)) if s not in values]
    if missing:
        raise AnalysisError(f"exact Shapley values need every subset of {modalities}; missing {missing[:5]}"
                            + (" ..." if len(missing) > 5 else ""))
    phi = {}
    for m in modalities:
        others = [o for o in modalities if o != m]
        total = 0.0
        for k in range(n):
            weight = math.factorial(k) * math.factorial(n - k - 1) / math.factorial(n)
            for s in itertools.combinations(others, k):
                s = frozenset(s)
                total += weight * (values[s | {m}] - values[s])
        phi[m] = total
    return phi


def _value(records, task) -> float:
    """The headline value among a subset's records (NaN where undefined)."""
    found = headline_value(records, task)
    return float("nan") if found is None or found["value"] is None else float(found["value"])


#: Metrics of a regression column that are a mean of correlations, one per context (``TaskPredictions.metadata``'s
#: ``context``; the whole split where the rows record none): combos scores them with ``constant_contexts_as_zero``.
CORRELATION_METRICS = ("pearson", "spearman")


def _spread(values: np.ndarray, groups: np.ndarray, n: int) -> np.ndarray:
    """Max - min of ``values`` within each of the ``n`` groups (``groups``: each value's group index)."""
    low, high = np.full(n, np.inf), np.full(n, -np.inf)
    np.minimum.at(low, groups, values)
    np.maximum.at(high, groups, values)
    return high - low


def constant_contexts_as_zero(outputs, references, contexts, metric: str = "pearson") -> float:
    """The mean of the per-context correlations (``metric``: pearson or spearman, as Table 1's), where a context
    whose predictions are constant and references vary scores 0 instead of being left out (its r is undefined).

    Rows holding none of a subset's modalities get the empty predictor, a constant: left out, such a context
    would drop from that subset's mean only (scrna alone averaged the 3 contexts that hold a profile, the empty
    set counted as 0), so the subsets' values and the Shapley inputs would stand on different bases. Contexts of
    one row or constant references stay out, as they do in every subset. ``contexts``: one key per row, all of one
    type (None: one context). NaN where no context is defined."""
    from multimed_hf.metrics.regression import correlations

    outputs, references = np.asarray(outputs, dtype=np.float64), np.asarray(references, dtype=np.float64)
    if len(outputs) == 0:
        return float("nan")
    keys = np.zeros(len(outputs), dtype=np.int64) if contexts is None else np.unique(
        np.asarray(contexts), return_inverse=True)[1].reshape(-1)  # 0 .. n-1, as correlations orders its groups
    n = int(keys.max()) + 1
    with np.errstate(invalid="ignore", divide="ignore"):
        r = correlations(outputs, references, method=metric, groups=keys)
    flat = (_spread(outputs, keys, n) == 0) & (_spread(references, keys, n) > 0) & (np.bincount(keys) > 1)
    r = np.where(np.isnan(r) & flat, 0.0, r)
    defined = r[~np.isnan(r)]
    return float(defined.mean()) if defined.size else float("nan")


def _correlation_record(record: dict, predictions, column: str, bootstrap: int, seed: int, alpha: float = 0.05):
    """``record`` (a correlation metric of ``column``) with its value and percentile bootstrap CI recomputed by
    ``constant_contexts_as_zero`` over the same rows and resamples as ``TaskPredictions.bootstrap``."""
    from multimed_hf.training.predictions import PER_ROW_METRIC_COLUMNS

    rows = np.flatnonzero(predictions.scored_rows(column))
    outputs = np.asarray(predictions.outputs[column], dtype=np.float64)[rows]
    references = np.asarray(predictions.references[column], dtype=np.float64)[rows]
    contexts = predictions.metadata.get(PER_ROW_METRIC_COLUMNS["groups"])
    if contexts is not None:  # each row's context as an index (the resamples below: no string comparisons)
        contexts = np.unique(np.asarray([str(contexts[i]) for i in rows]), return_inverse=True)[1].reshape(-1)
    metric = record["metric"]
    value = constant_contexts_as_zero(outputs, references, contexts, metric)
    low = high = float("nan")
    if bootstrap and len(rows):
        draws = np.random.default_rng(seed).integers(0, len(rows), size=(bootstrap, len(rows)))
        samples = np.array([constant_contexts_as_zero(outputs[d], references[d], None if contexts is None
                                                      else contexts[d], metric) for d in draws])
        if np.isfinite(samples).any():
            low, high = (float(np.nanpercentile(samples, q)) for q in (100 * alpha / 2, 100 * (1 - alpha / 2)))
    undefined = {k: None if math.isnan(v) else v for k, v in (("value", value), ("ci_low", low), ("ci_high", high))}
    return {**record, **undefined}  # NaN as None, as metric_records writes them


def score_constant_as_zero(predictions, split, bootstrap, seed) -> list[dict]:
    """``score``'s metric records, where a correlation of a regression column (``CORRELATION_METRICS``) scores a
    context of constant predictions 0 (``constant_contexts_as_zero``): the same contexts in every subset, rate or
    level (left out, a context the model can no longer predict would leave the mean)."""
    from multimed_hf.tasks import get_task

    labels = get_task(predictions.task).labels
    out = []
    for r in score(predictions, split, bootstrap, seed):
        column = r["label"] or labels[0].name
        if r["metric"] in CORRELATION_METRICS and predictions.head_kind(column) == "regression":
            r = _correlation_record(r, predictions, column, bootstrap, seed)
        out.append(r)
    return out


def _records(predictions, mode: str, subset, split, run_dir, rows_read, bootstrap, seed) -> list[dict]:
    """The subset's metric records (``score_constant_as_zero``: in every subset alike)."""
    out = []
    for r in score_constant_as_zero(predictions, split, bootstrap, seed):
        out.append({"mode": mode, "subset": subset_name(subset), "size": len(subset), "label": r["label"],
                    "metric": r["metric"], "value": r["value"], "ci_low": r["ci_low"], "ci_high": r["ci_high"],
                    "n": r["n"], "rows_read": rows_read, "run": run_dir})
    return out


#: What the best combination reads where no subset scores above the empty predictor.
NO_BEST = "(none): no subset scores above the empty predictor"


def _best_subset(values: Mapping[frozenset, float], read: Mapping[frozenset, int], modalities) -> str:
    """The subset with the highest headline value (the smaller one on a tie) among those that read a row of the
    split and score above the empty predictor (a subset that reads none scores as the empty predictor does: it
    would be named best for what it never saw); ``NO_BEST`` where none does."""
    empty = values[frozenset()]
    scored = {k: v for k, v in values.items() if k and read.get(k) and not math.isnan(v) and not v <= empty}
    if not scored:
        return NO_BEST
    return subset_name([m for m in modalities if m in max(scored, key=lambda k: (scored[k], -len(k)))])


def _check_variant(args, task: str, subsets, modes: Sequence[str], train_rows: Callable | None = None) -> None:
    """Before any training: the ``+variant`` of ``args.family`` (miles, ogm_ge, gblend, mind) checked for each
    subset model it would train as ``train_model`` checks it (``check_plan``: the model reads two or more
    modalities; ``check_rows``: a training row, among those ``--max_train_samples`` draws, holds two of them).
    ``train_rows(subset)``: the training rows of that subset's model (None: ``check_plan`` only, before the splits
    are loaded). Refused otherwise, naming what to use (before: refused after the full model had trained, on the
    first one-modality subset of ``--modes retrain``)."""
    from multimed_hf.training.balancing import BalancingError
    from multimed_hf.training.families import parse_family
    from multimed_hf.training.loading import sample_rows
    from multimed_hf.training.run import RunError, _balancing

    base, variants = parse_family(args.family)
    if not variants:
        return
    full = max(subsets, key=len)
    for subset in sorted(subsets, key=len, reverse=True):  # as trained: the full set first
        plan = analysis_plan(args, task, subset, subset_name(subset))
        try:
            balancing = _balancing(args, plan)
            if balancing is None:  # a variant that balances nothing
                return
            balancing.check_plan(plan.modalities)
            if train_rows is not None:
                balancing.check_rows(sample_rows({task: train_rows(subset)}, args.max_train_samples),
                                     plan.modalities)
        except (BalancingError, RunError) as err:
            if subset == full:
                raise AnalysisError(f"--family {args.family}: {err}") from err
            raise AnalysisError(
                f"--family {args.family} --modes {' '.join(modes)}: retrain mode trains one model per modality "
                f"subset, and on subset {subset_name(subset)!r}: {err}. Nothing was trained; use --modes mask (one "
                f"model over every modality, trained with +{'+'.join(variants)}), or --family {base} to retrain "
                f"each subset without it") from err


def combos(args, training_args, *, options: CombosOptions | None = None, output_dir: str | Path | None = None,
           datasets: Mapping[str, Any] | None = None, train_fn: Callable | None = None) -> CombosResult:
    """Score every modality subset of ``args.tasks[0]`` on ``options.split`` in the modes asked for, and the
    exact Shapley value of each modality (from the headline metric), with v(empty) the empty predictor's score
    (majority class / training mean: the model refuses rows without any modality, and such rows get it in every
    mode). Writes ``combos.csv`` / ``.md`` / ``.png`` under ``output_dir`` (default ``training_args.output_dir``)
    and one run folder per trained model under ``runs/``."""
    import pandas as pd

    from multimed_hf.analysis._common import modality_matrix
    from multimed_hf.training.families import present_modalities

    options = options or CombosOptions()
    check_analysis_args(args, training_args, options)
    if len(args.tasks) != 1:
        raise AnalysisError(f"combos takes one task, got {args.tasks}")
    task = args.tasks[0]
    unknown = sorted(set(options.modes) - set(COMBO_MODES))
    if unknown or not options.modes:
        raise AnalysisError(f"modes {options.modes}: expected some of {COMBO_MODES}")
    available = list(present_modalities(task, args.data))
    modalities = list(dict.fromkeys(options.modalities or available))
    unread = [m for m in modalities if m not in available]
    if unread:
        raise AnalysisError(f"--modalities {modalities}: task {task!r}'s training rows in {args.data!r} hold "
                            f"{available}, so {unread} cannot be combined (no model learns them); name some of "
                            f"{available}")
    if len(modalities) < 2:
        raise AnalysisError(f"task {task!r} has {len(modalities)} modality ({modalities}) in {args.data!r}: "
                            f"combinations need at least two")
    subsets = modality_subsets(modalities, options.max_order, options.max_subsets)
    trained = [s for s in subsets if len(s) == len(modalities) or "retrain" in options.modes]
    check_plan_flags(args, [analysis_plan(args, task, s, subset_name(s)) for s in trained])
    _check_variant(args, task, trained, options.modes)  # the modalities each model reads, before loading the splits
    complete = len(subsets) == 2 ** len(modalities) - 1
    output_dir = Path(output_dir or training_args.output_dir)
    data = dict(datasets) if datasets is not None else analysis_datasets(args.data, task, modalities)
    if options.split not in data:
        raise AnalysisError(f"task {task!r} has no {options.split!r} split in {args.data!r}")

    def subset_rows(subset, splits=tuple(data)):
        """``data``'s ``splits`` cut to the rows holding one of ``subset`` (every row for the full set)."""
        if len(subset) == len(modalities):
            return {s: data[s] for s in splits}
        return {s: data[s].select(np.flatnonzero(modality_matrix(data[s], task, subset).any(1))) for s in splits}

    _check_variant(args, task, trained, options.modes, lambda subset: subset_rows(subset, ["train"])["train"])
    boot, seed = args.bootstrap_samples, training_args.seed
    records: list[dict] = []
    trainings = 0
    column, metric = headline(task)
    value_of: dict[str, dict[frozenset, float]] = {}

    def train(subset, name):
        nonlocal trainings
        trainings += 1
        rows = subset_rows(subset)
        said = f"the rows holding {' or '.join(subset)} (combos)" if len(subset) < len(modalities) else None
        return train_run(args, training_args, task=task, datasets=rows, modalities=subset,
                         output_dir=output_dir / "runs" / name, train_fn=train_fn, rows=said)

    test = data[options.split]
    present = modality_matrix(test, task, modalities)
    everything = tuple(modalities)
    full = None  # the model over every modality: mask mode's only model, retrain mode's full subset
    read: dict[frozenset, int] = {}  # each subset's rows read on the split (the same in every mode)
    for mode in options.modes:
        values: dict[frozenset, float] = {}
        if full is None:
            full = train(everything, subset_name(everything))
        reference = full.trainer.predict_task(task, test, split=options.split)
        prior = prior_outputs(task, data["train"], full.model.config.heads[task], args.max_train_samples)
        recs = _records(prior_predictions(reference, prior), mode, (), options.split, None, 0, boot, seed)
        empty = _value(recs, task)
        if math.isnan(empty):  # a correlation of the constant empty predictor is undefined: it explains nothing
            empty = 0.0
            for r in recs:
                r["value"] = 0.0 if r["value"] is None else r["value"]
        records += recs
        values[frozenset()] = empty
        for subset in sorted(subsets, key=len, reverse=True):  # the full set first: it is the reference
            if subset == everything:
                run, predictions = full, reference
            else:
                run = full if mode == "mask" else train(subset, f"retrain-{subset_name(subset)}")
                predictions = predict_subset(run, test, subset, prior, reference, split=options.split)
            rows_read = int(present[:, [modalities.index(m) for m in subset]].any(1).sum())
            recs = _records(predictions, mode, subset, options.split, str(run.output_dir), rows_read, boot, seed)
            records += recs
            values[frozenset(subset)] = _value(recs, task)
            read[frozenset(subset)] = rows_read
        value_of[mode] = values
    table = pd.DataFrame.from_records(records)
    shapley_rows, best = [], {}
    for mode, values in value_of.items():
        best[mode] = _best_subset(values, read, modalities)
        phi = shapley_values(values, modalities) if complete else {m: math.nan for m in modalities}
        for m in modalities:
            shapley_rows.append({"mode": mode, "modality": m, "shapley": phi[m], "metric": metric, "label": column,
                                 "complete": complete})
    shapley = pd.DataFrame.from_records(shapley_rows)
    result = CombosResult(table=table, shapley=shapley, best=best, trainings=trainings)
    result.paths = write_outputs(table, output_dir, "combos", _markdown(task, modalities, result, value_of, column,
                                                                         metric, complete),
                                 lambda fig: _figure(fig, task, modalities, value_of, shapley, metric))
    shapley.to_csv(output_dir / "combos_shapley.csv", index=False)
    return result


def _markdown(task, modalities, result, value_of, column, metric, complete) -> str:
    import pandas as pd

    rows = []
    subsets = sorted({k for v in value_of.values() for k in v}, key=lambda k: (len(k), [modalities.index(m)
                                                                                     for m in k]))
    for k in subsets:
        row = {"subset": subset_name([m for m in modalities if m in k]), "size": len(k)}
        for mode, values in value_of.items():
            row[mode] = values.get(k)
        rows.append(row)
    constant = (" A context whose predictions are constant (none of its rows holds the subset's modalities, or the "
                "model predicts one value there) scores 0 in every subset, the `(none)` row's constant predictor "
                "included, so every subset averages the same contexts (Table 1 leaves such a context out of its "
                "mean)." if metric in CORRELATION_METRICS else "")
    lines = [f"# Modality combinations: {task}", "",
             f"Headline: `{column}` {metric} on every row of the split; rows holding none of a subset's modalities "
             f"get the empty predictor (majority class / training mean), whose score is the `(none)` row." + constant,
             "Modes: `mask` = one model over all modalities, the others masked out at test time through the "
             "presence masks; `retrain` = one model per subset.", "",
             markdown_table(pd.DataFrame(rows)), "", "## Shapley values (exact, from the subset table)", ""]
    if complete:
        wide = result.shapley.pivot(index="modality", columns="mode", values="shapley").reset_index()
        lines += [markdown_table(wide), ""]
        for mode, values in value_of.items():
            total = sum(result.shapley[result.shapley["mode"] == mode]["shapley"])
            lines.append(f"- {mode}: sum {total:.4f} = v(all) - v(empty) = "
                         f"{values[frozenset(modalities)] - values[frozenset()]:.4f}")
    else:
        lines.append("Not computed: the subset table is incomplete (a max_order budget was set).")
    lines += ["", "## Best combination", ""] + [f"- {mode}: {name}" for mode, name in result.best.items()]
    return "\n".join(lines)


def _figure(fig, task, modalities, value_of, shapley, metric) -> None:
    modes = list(value_of)
    axes = fig.subplots(1, len(modes) + 1, squeeze=False)[0]
    n = len(modalities)
    for ax, mode in zip(axes, modes):
        grid = np.full((n, n), np.nan)
        for i, a in enumerate(modalities):
            for j, b in enumerate(modalities):
                grid[i, j] = value_of[mode].get(frozenset({a, b}), np.nan)
        image = ax.imshow(grid, cmap="viridis")
        ax.set_xticks(range(n), modalities, rotation=45, ha="right")
        ax.set_yticks(range(n), modalities)
        for i in range(n):
            for j in range(n):
                if np.isfinite(grid[i, j]):
                    ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", color="w", fontsize=8)
        full = value_of[mode].get(frozenset(modalities), np.nan)
        ax.set_title(f"{mode}: {metric}\n(diagonal: alone; all: {full:.3f})", fontsize=9)
        fig.colorbar(image, ax=ax, shrink=0.7)
    ax = axes[-1]
    width = 0.8 / len(modes)
    for k, mode in enumerate(modes):
        part = shapley[shapley["mode"] == mode].set_index("modality").reindex(modalities)
        ax.bar(np.arange(n) + k * width, part["shapley"].to_numpy(dtype=float), width, label=mode)
    ax.axhline(0, color="k", linewidth=0.6)
    ax.set_xticks(np.arange(n) + width * (len(modes) - 1) / 2, modalities, rotation=45, ha="right")
    ax.set_title(f"Shapley value ({metric})", fontsize=9)
    ax.legend(fontsize=8)
    fig.suptitle(f"Modality combinations: {task}")


def combos_main(argv: Sequence[str] | None = None) -> int:
    """``multimed combos --data DIR --task T [--modes mask retrain] --output_dir OUT`` + every training flag."""
    return analysis_main("combos", argv, CombosOptions, combos, single_task=True)
