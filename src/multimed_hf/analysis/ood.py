"""Out-of-distribution generalisation (the paper's Fig. 2): hold out one group (organ, tissue, cell type) at a time."""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from multimed_hf.analysis._common import (
    AnalysisError,
    slice_predictions,
    AnalysisPaths,
    analysis_datasets,
    analysis_plan,
    check_analysis_args,
    check_plan_flags,
    headline,
    markdown_table,
    analysis_main,
    refuse_resume_path,
    train_run,
    write_outputs,
)
from multimed_hf.tasks import get_task

__all__ = ["OODOptions", "OODResult", "group_column_values", "resolve_group_column", "ood_metrics", "ood", "ood_main",
           "NO_GROUP", "NO_TEST_ROWS", "FALLBACK_COLUMNS"]

#: What rows whose group column is empty are called (they are never held out; they stay in training).
NO_GROUP = "(no group)"
SCORED = "scored"
TOO_SMALL = "too small"
UNSEEN = "not scorable: its classes were never seen in training (closed-set head)"
NO_LABELS = "no labelled rows"
#: ``--in_distribution``: a group none of whose rows is in the test split (the reference model scores test rows)
NO_TEST_ROWS = "no test rows"
#: What ood.md says under its table where a score is undefined for a group (a "–" cell)
UNDEFINED_NOTE = ("–: undefined for that group's scored rows: specificity where they hold one class (no row of "
                  "another class to reject), a multilabel accuracy where no row knows two names, sensitivity or "
                  "specificity where no name is known positive or negative, Pearson r where the values or the "
                  "predictions are constant (or one row).")


@dataclass
class OODOptions:
    """``multimed ood`` options beside the training flags."""

    group: str = field(default="organ", metadata={
        "help": "the column whose values are held out one at a time: organ (tissue where no row records an organ), "
                "tissue, cell_type (a label column: each held-out class is reported as unscorable by a closed-set "
                "head), or any column of the rows"})
    groups: list[str] | None = field(default=None, metadata={"help": "hold out only these groups", "nargs": "+"})
    label: str | None = field(default=None, metadata={"help": "the label column scored (default: the headline)"})
    min_group_rows: int = field(default=10, metadata={
        "help": "a held-out group with fewer labelled rows is listed as too small, not scored"})
    in_distribution: bool = field(default=False, metadata={
        "help": "also train one model on every group and score it on each group's test rows (the reference)"})

    def check_arguments(self, args, training_args, given: set[str] | None = None) -> None:
        """A resume path is refused: every held-out group trains its own model."""
        refuse_resume_path(training_args, "ood trains one model per held-out group")


@dataclass
class OODResult:
    table: Any  # pandas DataFrame: task, group, setting, status, rows, scored, unseen, metric, value, ci_low, ci_high
    predicted_as: dict  # (task, group) -> Counter of predicted names for rows of classes never seen in training
    paths: AnalysisPaths | None = None
    training_ids: dict = field(default_factory=dict)  # (task, group) -> sample ids the held-out model trained on
    #: (task, group, setting) -> the multilabel names present in the held-out rows but never positive in training
    #: (their entries are not scored: a closed-set head never learnt them)
    unseen_names: dict = field(default_factory=dict)
    #: The column the groups were read from: ``group`` or, for ``organ`` where no row records one, ``tissue``
    group_columns: dict = field(default_factory=dict)  # task -> column


#: A grouping column's stand-in where a config records none of it (cell_type keeps tissue where no organ is given).
FALLBACK_COLUMNS = {"organ": "tissue"}


def resolve_group_column(datasets: Mapping[str, Any], column: str) -> str:
    """``column``, or its stand-in (``FALLBACK_COLUMNS``) where no row of any split records ``column`` (absent, or
    None everywhere) and the rows have the stand-in."""
    from multimed_hf.training.loading import column_values

    fallback = FALLBACK_COLUMNS.get(column)
    if fallback is None:
        return column
    names = {n for ds in datasets.values() for n in (getattr(ds, "column_names", None) or [])}
    if column in names and any(v is not None for ds in datasets.values() if column in ds.column_names
                               for v in column_values(ds, [column])[column]):
        return column
    return fallback if fallback in names else column


def group_column_values(dataset, task: str, column: str) -> list:
    """Each row's value of the grouping column (``None`` stays ``None``); a config without it raises, naming what
    the registry and builders must add."""
    names = getattr(dataset, "column_names", None) or []
    if column not in names:
        spec = get_task(task)
        raise AnalysisError(
            f"task {task!r}: its rows have no column {column!r} to group by (columns: {sorted(names)}). The "
            f"registry entry of {task!r} (metadata, now {[c.name for c in spec.metadata]}) and its builders must "
            f"record {column!r} for each source that can state it, then rebuild")
    values = _label_values(dataset, column)  # class indices as their names
    return [None if v is None or (isinstance(v, str) and not v.strip()) else str(v) for v in values]


def _label_values(dataset, column: str) -> list:
    from multimed_hf.training.loading import column_values

    values = column_values(dataset, [column])[column]
    feature = dataset.features[column]
    names = getattr(feature, "names", None)
    return [None if v is None or (isinstance(v, int) and v < 0) else names[v] if names and isinstance(v, int)
            else v for v in values]


def _classification(pred: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """Accuracy and macro one-vs-rest sensitivity / specificity over the classes present in the references."""
    classes = np.unique(ref)
    sens = [float(np.mean(pred[ref == c] == c)) for c in classes]
    spec = [float(np.mean(pred[ref != c] != c)) for c in classes if np.any(ref != c)]
    return {"accuracy": float(np.mean(pred == ref)), "sensitivity": float(np.mean(sens)),
            "specificity": float(np.mean(spec)) if spec else float("nan")}


def _multilabel(logits: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """Accuracy as the task's (top-1 among the row's known names: ``metrics.accuracy``), over the rows with at
    least two known names: with one (a held-out organ's rows keep only ``normal`` once its diseases are hidden),
    top-1 is right whatever the model says, so such rows are left out of it (NaN where no row has two);
    sensitivity and specificity per name at logit 0, macro over the names."""
    from multimed_hf.metrics.classification import accuracy

    known = ~np.isnan(ref)
    pred = logits > 0
    truth = np.nan_to_num(ref) > 0.5
    sens = [np.mean(pred[known[:, k] & truth[:, k], k]) for k in range(ref.shape[1]) if
            np.any(known[:, k] & truth[:, k])]
    spec = [np.mean(~pred[known[:, k] & ~truth[:, k], k]) for k in range(ref.shape[1]) if
            np.any(known[:, k] & ~truth[:, k])]
    decisive = (known.sum(1) >= 2) & (truth & known).any(1)
    top1 = accuracy(logits[decisive], ref[decisive]) if decisive.any() else float("nan")
    return {"accuracy": float(top1),
            "sensitivity": float(np.mean(sens)) if sens else float("nan"),
            "specificity": float(np.mean(spec)) if spec else float("nan")}


def _pearson(pred: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    if len(ref) < 2 or np.std(ref) == 0 or np.std(pred) == 0:
        return {"pearson": float("nan")}
    return {"pearson": float(np.corrcoef(pred, ref)[0, 1])}


def ood_metrics(kind: str, outputs: np.ndarray, references: np.ndarray) -> dict[str, float]:
    """The scores of Fig. 2 for one label column's rows: accuracy, sensitivity and specificity (macro
    one-vs-rest for several classes; per name for multilabel, whose accuracy is the task's top-1 among the known
    names) for classes, Pearson r over all the rows (pooled, not per context) for regression."""
    if kind == "class":
        return _classification(outputs.argmax(1), references)
    if kind == "multilabel":
        return _multilabel(outputs, references)
    if kind == "regression":
        return _pearson(outputs.astype(np.float64), references.astype(np.float64))
    raise AnalysisError(f"out-of-distribution scores cover class, multilabel and regression labels, not {kind!r}")


def _bootstrap(kind, outputs, references, n, seed, alpha=0.05) -> dict[str, tuple[float, float]]:
    if n <= 0 or len(references) == 0:
        return {}
    rng = np.random.default_rng(seed)
    draws = [ood_metrics(kind, outputs[i], references[i]) for i in rng.integers(0, len(references),
                                                                                  (n, len(references)))]
    out = {}
    for metric in draws[0]:
        values = np.array([d[metric] for d in draws], dtype=float)
        out[metric] = ((float(np.nanpercentile(values, 100 * alpha / 2)), float(np.nanpercentile(
            values, 100 * (1 - alpha / 2)))) if np.isfinite(values).any() else (float("nan"), float("nan")))
    return out


def _scored_rows(predictions, column: str, kind: str) -> np.ndarray:
    ref = predictions.references[column]
    if kind in ("class",):
        return np.flatnonzero(ref != -100)
    if kind == "multilabel":
        return np.flatnonzero(~np.isnan(ref).all(1))
    return np.flatnonzero(~np.isnan(ref))


def _score_group(predictions, column, kind, bootstrap, seed) -> dict[str, tuple[float, float, float]]:
    rows = _scored_rows(predictions, column, kind)
    out, ref = predictions.outputs[column][rows], predictions.references[column][rows]
    values = ood_metrics(kind, out, ref)
    cis = _bootstrap(kind, out, ref, bootstrap, seed)
    return {m: (v, *cis.get(m, (float("nan"), float("nan")))) for m, v in values.items()}


def _trained_rows(run, max_train_samples: int | None):
    """The training rows ``run`` (an ``AnalysisRun``) learnt from: its training split, or with
    ``--max_train_samples N`` the N rows ``train_model`` drew from it (``sample_rows``, from the rows the run was
    given: the held-out group's left out). A class (or multilabel name) only in the other rows was never seen."""
    from multimed_hf.training.loading import sample_rows

    return sample_rows({run.task: run.datasets["train"]}, max_train_samples)[run.task]


def _positive_names(dataset, column: str) -> set[str]:
    """The names of a multilabel column that are positive in at least one row of ``dataset``."""
    from multimed_hf.training.loading import column_values

    names = dataset.features[column].feature.names
    return {names[i] for row in column_values(dataset, [column])[column] if row for i in row}


def _hide_unseen_names(predictions, column: str, seen: set[str]):
    """``predictions`` with the entries of names never positive in training made unknown (NaN) and without the rows
    whose positive names are all such names (the closed-set head cannot name them: listed, not scored on their
    negatives alone, as a class row of an unseen class is not), the names hidden that some row holds as positive,
    and a mask of the rows holding one (over ``predictions``' rows)."""
    names = next(o["names"] for o in predictions.head_spec["outputs"] if o["name"] == column)
    ref = np.array(predictions.references[column], dtype=float, copy=True)
    hidden = [k for k, name in enumerate(names) if name not in seen]
    positive = np.nan_to_num(ref[:, hidden]) > 0.5
    ref[:, hidden] = np.nan
    present = [names[k] for k, any_row in zip(hidden, positive.any(0)) if any_row]
    masked = dataclasses.replace(predictions, references={**predictions.references, column: ref})
    nameable = ~positive.any(1) | (np.nan_to_num(ref) > 0.5).any(1)
    return slice_predictions(masked, np.flatnonzero(nameable)), present, positive.any(1)


def _predicted_names(predictions, column, rows) -> Counter:
    names = next(o["names"] for o in predictions.head_spec["outputs"] if o["name"] == column)
    return Counter(names[i] for i in predictions.outputs[column][rows].argmax(1))


def ood(args, training_args, *, options: OODOptions | None = None, output_dir: str | Path | None = None,
        datasets: Mapping[str, Mapping[str, Any]] | None = None, train_fn: Callable | None = None) -> OODResult:
    """For each task of ``args.tasks`` and each group of ``options.group``: train on every other group's training
    (and validation) rows, score the held-out group's rows of every split. Groups with fewer than
    ``min_group_rows`` labelled rows are listed as too small; rows of classes the held-out model never saw are
    counted and listed with what they were predicted as, never scored. Writes ``ood.csv`` / ``.md`` / ``.png``."""
    import pandas as pd

    from multimed_hf.training.families import present_modalities

    options = options or OODOptions()
    check_analysis_args(args, training_args, options)
    output_dir = Path(output_dir or training_args.output_dir)
    rows_out, predicted_as, training_ids, unseen_names, group_columns = [], {}, {}, {}, {}
    check_plan_flags(args, [analysis_plan(args, task, present_modalities(task, args.data), task)
                            for task in args.tasks])
    pools = {task: _pool(task, args, options, datasets) for task in args.tasks}  # every refusal before training
    if options.in_distribution:
        untested = [task for task, pool in pools.items() if "test" not in pool["data"]]
        if untested:
            raise AnalysisError(f"--in_distribution scores the model trained on every group on each group's test "
                                f"rows, and tasks {untested} have no test split in {args.data!r}; leave it out or "
                                f"build their test split")
    for task, pool_of in pools.items():
        column, kind, modalities, data = (pool_of[k] for k in ("column", "kind", "modalities", "data"))
        group_column = group_columns[task] = pool_of["group_column"]
        groups_of, pool, pool_groups, pool_labels, chosen = (pool_of[k] for k in (
            "groups_of", "pool", "pool_groups", "pool_labels", "chosen"))
        base = {"task": task, "label": column, "group_column": group_column}
        rows_out += [{**base, "group": NO_GROUP, "setting": "kept in training", "status": "never held out",
                      "rows": sum(g is None for g in pool_groups)}] if None in pool_groups else []
        reference, seen_all, names_all = None, None, None
        score_kind = "class" if kind == "text" else kind
        if options.in_distribution:
            train = {s: ds for s, ds in data.items() if s in ("train", "validation")}
            reference = train_run(args, training_args, task=task, datasets=train, modalities=modalities,
                                  output_dir=output_dir / "runs" / task / "all-groups", train_fn=train_fn,
                                  rows=f"every `{group_column}` group (ood's in-distribution reference)")
            learnt = _trained_rows(reference, args.max_train_samples)
            seen_all = set(_label_values(learnt, column)) if pool_labels is not None else None
            names_all = _positive_names(learnt, column) if kind == "multilabel" else None
        for group in chosen:
            held = np.array([g == group for g in pool_groups])
            info = {**base, "group": group, "rows": int(held.sum())}
            if held.sum() < options.min_group_rows:
                rows_out.append({**info, "setting": "out-of-distribution", "status": TOO_SMALL})
                continue
            train = {s: ds.select(np.flatnonzero([g != group for g in groups_of[s]])) for s, ds in data.items()
                     if s in ("train", "validation")}
            held_out = pool.select(np.flatnonzero(held))
            trained_ids = set(train["train"]["sample_id"]) | set(train.get("validation", {"sample_id": []})
                                                                   ["sample_id"])
            if trained_ids & set(held_out["sample_id"]):
                raise AnalysisError(f"task {task!r}, group {group!r}: held-out rows are among the training rows "
                                    f"(sample ids repeat across splits)")
            training_ids[(task, group)] = trained_ids
            run = train_run(args, training_args, task=task, datasets=train, modalities=modalities,
                            output_dir=output_dir / "runs" / task / f"without-{_safe(group)}", train_fn=train_fn,
                            rows=f"every `{group_column}` group but {group!r} (held out by ood)")
            learnt = _trained_rows(run, args.max_train_samples)  # --max_train_samples: only the N rows drawn
            seen = set(_label_values(learnt, column)) if pool_labels is not None else None
            seen_names = _positive_names(learnt, column) if kind == "multilabel" else None
            evaluations = [("out-of-distribution", held_out, run, seen, seen_names)]
            no_test_rows = False  # --in_distribution, and the group has no test row: listed, not skipped
            if reference is not None and "test" in data:
                test_rows = np.flatnonzero([g == group for g in groups_of["test"]])
                if len(test_rows):
                    evaluations.append(("in-distribution", data["test"].select(test_rows), reference, seen_all,
                                        names_all))
                no_test_rows = not len(test_rows)
            for setting, rows, model_run, known, known_names in evaluations:
                preds = model_run.trainer.predict_task(task, rows)
                labels = _label_values(rows, column) if known is not None else None
                unseen = np.array([v is not None and v not in known for v in labels]) if labels is not None \
                    else np.zeros(len(preds), dtype=bool)
                if unseen.any():
                    predicted_as[(task, group, setting)] = _predicted_names(preds, column, np.flatnonzero(unseen))
                scored = slice_predictions(preds, np.flatnonzero(~unseen))
                if known_names is not None:  # multilabel: names never positive in training are not scored
                    scored, hidden, unseen = _hide_unseen_names(scored, column, known_names)
                    if hidden:
                        unseen_names[(task, group, setting)] = hidden
                n_scored = len(_scored_rows(scored, column, score_kind))
                common = {**info, "setting": setting, "rows": len(preds), "scored": n_scored,
                          "unseen": int(unseen.sum())}
                if n_scored == 0:
                    rows_out.append({**common, "status": UNSEEN if unseen.any() else NO_LABELS})
                    continue
                if setting == "out-of-distribution" and n_scored < options.min_group_rows:
                    rows_out.append({**common, "status": TOO_SMALL})
                    continue
                metrics = _score_group(scored, column, score_kind, args.bootstrap_samples, training_args.seed)
                for metric, (value, low, high) in metrics.items():
                    rows_out.append({**common, "status": SCORED, "metric": metric, "value": value, "ci_low": low,
                                     "ci_high": high})
            if no_test_rows:
                rows_out.append({**info, "setting": "in-distribution", "status": NO_TEST_ROWS, "rows": 0})
    columns = ["task", "label", "group_column", "group", "setting", "status", "rows", "scored", "unseen", "metric",
               "value", "ci_low", "ci_high"]
    table = pd.DataFrame.from_records(rows_out).reindex(columns=columns)
    result = OODResult(table=table, predicted_as=predicted_as, training_ids=training_ids,
                       unseen_names=unseen_names, group_columns=group_columns)
    result.paths = write_outputs(table, output_dir, "ood", _markdown(result, options),
                                 lambda fig: _figure(fig, table, options))
    return result


def _pool(task: str, args, options: OODOptions, datasets) -> dict[str, Any]:
    """A task's label column and kind, modalities, splits, grouping column and groups (each split's and pooled),
    the groups held out; what cannot be analysed raises here, before any training."""
    from datasets import concatenate_datasets

    from multimed_hf.training.families import present_modalities

    column = options.label or headline(task)[0]
    kind = get_task(task).label(column).kind
    if kind not in ("class", "text", "multilabel", "regression"):
        raise AnalysisError(f"task {task!r}: out-of-distribution scores cover class, multilabel and regression "
                            f"labels; {column!r} is {kind!r}")
    modalities = present_modalities(task, args.data)
    data = dict(datasets[task]) if datasets is not None else analysis_datasets(args.data, task, modalities)
    group_column = resolve_group_column(data, options.group)
    groups_of = {s: group_column_values(ds, task, group_column) for s, ds in data.items()}
    pool = concatenate_datasets([data[s] for s in data])
    pool_groups = [g for s in data for g in groups_of[s]]
    pool_labels = _label_values(pool, column) if kind in ("class", "text") else None
    counts = Counter(g for g in pool_groups if g is not None)
    chosen = options.groups or sorted(counts)
    unknown = sorted(set(chosen) - set(counts))
    if unknown:
        raise AnalysisError(f"task {task!r}: groups {unknown} do not occur in column {group_column!r} (its "
                            f"groups: {sorted(counts)})")
    return {"column": column, "kind": kind, "modalities": modalities, "data": data, "group_column": group_column,
            "groups_of": groups_of, "pool": pool, "pool_groups": pool_groups, "pool_labels": pool_labels,
            "chosen": chosen}


def _safe(name: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9_.]+", "_", name)


def _markdown(result: OODResult, options: OODOptions) -> str:
    table = result.table
    lines = [f"# Out-of-distribution generalisation: one `{options.group}` held out at a time", "",
             "Each held-out group's rows (every split) are scored by a model trained on the other groups' training "
             "and validation rows. Sensitivity and specificity are macro one-vs-rest over the classes present; "
             "a multilabel task's accuracy is top-1 among a row's known names, over the rows that know at least two "
             "(with one, top-1 is right whatever the model says; NaN where none does); regression reports Pearson r "
             "pooled over the rows. CIs: percentile bootstrap over rows.", ""]
    scored = table[table["status"] == SCORED]
    if len(scored):
        # not pivot_table: it drops a metric undefined for every group shown, and a group with no defined score
        wide = scored.astype({"scored": int}).set_index(["task", "group", "setting", "scored", "metric"])["value"]
        wide = wide.unstack("metric").reindex(columns=list(dict.fromkeys(scored["metric"])))
        lines += [markdown_table(wide.reset_index()), ""]
        if wide.isna().to_numpy().any():
            lines += [UNDEFINED_NOTE, ""]
    other = table[table["status"] != SCORED]
    if len(other):
        lines += ["Groups not scored (listed, not skipped):", ""]
        lines += [markdown_table(other[["task", "group", "setting", "status", "rows", "unseen"]]), ""]
    for (task, group, setting), counts in result.predicted_as.items():
        top = ", ".join(f"{name} {n}" for name, n in counts.most_common(3))
        lines.append(f"- {task}, {group} ({setting}): rows of classes unseen in training were predicted as {top}")
    for (task, group, setting), names in result.unseen_names.items():
        lines.append(f"- {task}, {group} ({setting}): {', '.join(names)} never positive in training: a closed-set "
                     f"head cannot score them, so their entries are left out of the scores")
    for task, column in result.group_columns.items():
        if column != options.group:
            lines.append(f"- {task}: no row records `{options.group}`; the groups are its `{column}` values")
    return "\n".join(lines)


def _figure(fig, table, options: OODOptions) -> None:
    scored = table[table["status"] == SCORED]
    ax = fig.subplots()
    if scored.empty:
        ax.text(0.5, 0.5, "no group could be scored (see ood.md)", ha="center", va="center")
        ax.axis("off")
        return
    metrics = list(dict.fromkeys(scored["metric"]))
    keys = list(dict.fromkeys(zip(scored["task"], scored["group"])))
    settings = list(dict.fromkeys(scored["setting"]))
    bars = len(metrics) * len(settings)
    width = 0.8 / bars
    for k, (setting, metric) in enumerate((s, m) for s in settings for m in metrics):
        part = scored[(scored["metric"] == metric) & (scored["setting"] == setting)].set_index(["task", "group"])
        values = np.array([part["value"].get(key, np.nan) for key in keys], dtype=float)
        low = np.array([part["ci_low"].get(key, np.nan) for key in keys], dtype=float)
        high = np.array([part["ci_high"].get(key, np.nan) for key in keys], dtype=float)
        errors = np.nan_to_num(np.vstack([values - low, high - values]).clip(min=0))
        ax.bar(np.arange(len(keys)) + k * width, values, width, yerr=errors, capsize=2,
               label=f"{metric}" + (f" ({setting})" if len(settings) > 1 else ""),
               hatch="//" if setting == "in-distribution" else None)
    counts = scored.drop_duplicates(["task", "group", "setting"]).set_index(["task", "group", "setting"])["scored"]
    ax.set_xticks(np.arange(len(keys)) + width * (bars - 1) / 2,
                  [(f"{g}" if len({t for t, _ in keys}) == 1 else f"{t}\n{g}") + "\n" + _row_counts(counts, t, g)
                   for t, g in keys])
    ax.set_ylabel("score on the held-out group")
    ax.set_ylim(min(0.0, float(np.nanmin(scored["value"])) - 0.05), 1.05)
    ax.set_xlabel(f"held-out {options.group}")
    ax.legend(fontsize=8, ncol=2)
    ax.set_title("Out-of-distribution generalisation")


def _row_counts(counts, task: str, group: str) -> str:
    """A bar group's label line: the rows scored in each setting (``n=``; ``in-dist. n=`` beside it)."""
    said = [f"{'in-dist. ' if setting == 'in-distribution' else ''}n={int(counts[(task, group, setting)])}"
            for setting in ("out-of-distribution", "in-distribution") if (task, group, setting) in counts.index]
    return ", ".join(said)


def ood_main(argv: Sequence[str] | None = None) -> int:
    """``multimed ood --data DIR --tasks T ... --group organ|tissue|cell_type --output_dir OUT`` + training flags."""
    return analysis_main("ood", argv, OODOptions, ood)
