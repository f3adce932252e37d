"""Which modality drove each prediction: leave-one-modality-out deltas and gradient x input; subgroup metrics."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from multimed_hf.analysis._common import (
    AnalysisError,
    AnalysisPaths,
    AnalysisRun,
    analysis_datasets,
    analysis_plan,
    check_analysis_args,
    check_plan_flags,
    headline,
    markdown_table,
    modality_matrix,
    analysis_main,
    predict_subset,
    prior_outputs,
    prediction_trainer,
    score,
    slice_predictions,
    train_run,
    write_outputs,
)

__all__ = [
    "AGE_BANDS",
    "SUBGROUP_COLUMNS",
    "AttributionOptions",
    "AttributionResult",
    "leave_one_out_deltas",
    "gradient_x_input",
    "subgroup_metrics",
    "add_attribution_columns",
    "attribution",
    "attribution_main",
]

#: Row columns that define subgroups where a task records them (bone_age: ``sex``); ages become bands.
SUBGROUP_COLUMNS = ("sex", "age")
#: Age bands in years: [0, 18), [18, 40), [40, 65), [65, inf).
AGE_BANDS = (0, 18, 40, 65)
#: ``MultiMedArguments`` fields that ``--checkpoint`` attribution reads (every other one sets up training).
PREDICTION_ARGUMENTS = frozenset({"data", "tasks", "bootstrap_samples"})
#: ``TrainingArguments`` fields that only training reads (refused with ``--checkpoint``); prediction reads the others
#: (``per_device_eval_batch_size``, ``use_cpu``, ``bf16``, the DataLoader's, ``seed`` for the bootstrap, ...).
TRAINING_ONLY_ARGUMENTS = frozenset({
    "per_device_train_batch_size", "num_train_epochs", "max_steps", "learning_rate", "lr_scheduler_type",
    "lr_scheduler_kwargs", "warmup_steps", "warmup_ratio", "optim", "optim_args", "weight_decay", "adam_beta1",
    "adam_beta2", "adam_epsilon", "optim_target_modules", "gradient_accumulation_steps",
    "average_tokens_across_devices", "max_grad_norm", "activation_checkpointing", "activation_checkpointing_kwargs",
    "gradient_checkpointing", "gradient_checkpointing_kwargs", "torch_empty_cache_steps", "auto_find_batch_size",
    "logging_strategy", "logging_steps", "logging_first_step", "logging_nan_inf_filter", "eval_strategy",
    "eval_steps", "eval_delay", "eval_on_start", "save_only_model", "save_strategy", "save_steps",
    "save_on_each_node", "save_total_limit", "enable_jit_checkpoint", "push_to_hub", "hub_model_id", "hub_strategy",
    "hub_private_repo", "hub_always_push", "hub_revision", "load_best_model_at_end", "metric_for_best_model",
    "greater_is_better", "ignore_data_skip", "restore_callback_states_from_checkpoint", "data_seed",
    "dataloader_drop_last", "length_column_name", "ddp_find_unused_parameters", "ddp_bucket_cap_mb",
    "ddp_broadcast_buffers", "ddp_static_graph", "resume_from_checkpoint", "do_train",
})


@dataclass
class AttributionOptions:
    """``multimed attribution`` options beside the training flags."""

    split: str = field(default="test", metadata={"help": "the split whose predictions are attributed"})
    checkpoint: str | None = field(default=None, metadata={
        "help": "attribute this saved run (a folder) instead of training one"})
    subgroups: list[str] = field(default_factory=lambda: list(SUBGROUP_COLUMNS), metadata={
        "help": "row columns scored per value where the task records them (age is banded)", "nargs": "+"})
    batch_size: int = field(default=16, metadata={"help": "rows per gradient x input batch"})

    def __post_init__(self):
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise AnalysisError(f"--batch_size {self.batch_size!r}: expected an integer >= 1 (rows per gradient x "
                                f"input batch)")

    def check_arguments(self, args, training_args, given: set[str] | None = None) -> None:
        """With ``--checkpoint`` nothing is trained: refuse the training flags given (``given``: the flags set on
        the command line; from Python, None, nothing is checked)."""
        if not self.checkpoint or not given:
            return
        from multimed_hf.training.arguments import MultiMedArguments

        ours = set(MultiMedArguments.__dataclass_fields__) - PREDICTION_ARGUMENTS
        training = [name for name in sorted(given) if name in ours or name in TRAINING_ONLY_ARGUMENTS]
        if training:
            raise AnalysisError(f"--{training[0]} with --checkpoint {self.checkpoint}: the saved run is attributed "
                                f"as it is (its model and processor), nothing is trained, so it would change nothing; "
                                f"leave it out (or leave out --checkpoint to train a model)")


@dataclass
class AttributionResult:
    rows: Any  # DataFrame per row: sample_id, <column>_prediction, loo_delta_<m>, grad_x_input_<m>, top modalities
    subgroups: Any  # DataFrame: column, group, label, metric, value, ci_low, ci_high, n
    predictions_path: Path | None = None
    paths: AnalysisPaths | None = None


def _probabilities(kind: str, logits: np.ndarray) -> np.ndarray:
    if kind == "class":
        z = logits - logits.max(1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(1, keepdims=True)
    if kind == "multilabel":
        return 1 / (1 + np.exp(-logits))
    return logits


def _change(kind: str, full: np.ndarray, without: np.ndarray) -> np.ndarray:
    """Per row: how much the prediction moved when the modality went: the predicted class's probability (classes),
    mean absolute change of the names' probabilities (multilabel), the value (regression, in label units)."""
    if kind == "class":
        p, q = _probabilities(kind, full), _probabilities(kind, without)
        chosen = p.argmax(1)
        return p[np.arange(len(p)), chosen] - q[np.arange(len(q)), chosen]
    if kind == "multilabel":
        return np.abs(_probabilities(kind, full) - _probabilities(kind, without)).mean(1)
    if kind == "regression":
        return full.astype(np.float64) - without.astype(np.float64)
    raise AnalysisError(f"attribution covers class, multilabel and regression outputs, not {kind!r}")


def _kind_of(head_spec, column: str) -> str:
    return next(o["kind"] for o in head_spec["outputs"] if o["name"] == column)


def leave_one_out_deltas(run: AnalysisRun, dataset, reference, prior, column: str, *, split=None) -> np.ndarray:
    """``[rows, modalities]``: the change of each row's prediction of ``column`` when one modality is masked out
    through the presence masks (one model, no retraining; a row left with no modality gets the empty predictor).
    Exactly 0 where the row does not hold the modality."""
    kind = _kind_of(reference.head_spec, column)
    present = modality_matrix(dataset, run.task, run.modalities)
    deltas = np.zeros((len(dataset), len(run.modalities)))
    for j, m in enumerate(run.modalities):
        rows = np.flatnonzero(present[:, j])
        if len(rows) == 0:
            continue
        without = predict_subset(run, dataset, [o for o in run.modalities if o != m], prior, reference, split=split)
        deltas[rows, j] = _change(kind, reference.outputs[column][rows], without.outputs[column][rows])
    return deltas


def _embedding_of(model, modality: str):
    """The token embedding module that the encoder of ``modality`` reads through (None when it has none)."""
    encoder = model.encoders[model.encoder_of[modality]] if hasattr(model, "encoders") else None
    inner = getattr(encoder, "model", None)
    getter = getattr(inner, "get_input_embeddings", None)
    if getter is None:
        return None
    try:
        return getter()
    except NotImplementedError:  # transformers' vision models (ResNet: domain_specific's images) read pixels only
        return None


def gradient_x_input(model, processor, task: str, dataset, modalities: Sequence[str], column: str, *,
                     batch_size: int = 16) -> np.ndarray:
    """``[rows, modalities]``: sum over each modality's inputs of |gradient x input| of the row's predicted output
    of ``column`` (the predicted class's logit; the value for regression; the largest name logit for multilabel).
    Pixels, EEG samples and expression values are the inputs; token sequences are taken at their token embeddings.
    0 where the row does not hold the modality."""
    from multimed_hf.training.data import ROW_INDEX, MultiTaskCollator, MultiTaskDataset

    modalities = list(modalities)
    data = MultiTaskDataset({task: dataset}, processor, modalities={task: modalities}, labels=False)
    collate = MultiTaskCollator(processor)
    device = next(model.parameters()).device
    kind = _kind_of(model.config.heads[task], column)
    out = np.zeros((len(data), len(modalities)))
    was_training = model.training
    model.eval()
    captured: dict[int, list] = {}
    hooks = []
    for m in modalities:
        embedding = _embedding_of(model, m)
        if embedding is not None and id(embedding) not in captured:
            captured[id(embedding)] = []

            def keep(module, args, output, store=captured[id(embedding)]):
                output.retain_grad()
                store.append(output)

            hooks.append(embedding.register_forward_hook(keep))
    try:
        for start in range(0, len(data), batch_size):
            batch = collate(data.__getitems__(list(range(start, min(start + batch_size, len(data))))))
            batch.pop(ROW_INDEX)
            inputs, leaves = {}, {}
            for m, tensors in batch["inputs"].items():
                inputs[m] = {}
                for key, value in tensors.items():
                    value = value.to(device)
                    if value.is_floating_point():
                        value = value.detach().requires_grad_(True)
                        leaves[m] = value
                    inputs[m][key] = value
            presence = {m: p.to(device) for m, p in batch["presence"].items()}
            for store in captured.values():
                store.clear()
            with torch.enable_grad():
                output = model(task=task, inputs=inputs, presence=presence)
                logits = output.logits[column]
                if kind == "class":
                    target = logits.gather(1, logits.argmax(1, keepdim=True)).sum()
                elif kind == "multilabel":
                    target = logits.max(1).values.sum()
                else:
                    target = logits.sum()
                model.zero_grad(set_to_none=True)
                target.backward()
            order = [m for m in model.config.heads[task]["modalities"] if m in inputs]
            embedded = {}
            for m in order:  # the model encodes modalities in its head's order: match the captured embeddings
                embedding = _embedding_of(model, m)
                if embedding is not None and m not in leaves and captured[id(embedding)]:
                    embedded[m] = captured[id(embedding)].pop(0)
            for j, m in enumerate(modalities):
                if m not in inputs:
                    continue
                x = leaves.get(m, embedded.get(m))
                if x is None or x.grad is None:
                    continue
                value = (x.grad * x).abs().reshape(len(x), -1).sum(1).detach().float().cpu().numpy()
                rows = presence[m].nonzero().flatten().cpu().numpy()
                out[start + rows, j] = value
    finally:
        for hook in hooks:
            hook.remove()
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return out


def _band(value) -> str | None:
    if value is None:
        return None
    try:
        age = float(value)
    except (TypeError, ValueError):
        return str(value)
    edges = list(AGE_BANDS)
    for low, high in zip(edges, edges[1:] + [None]):
        if high is None or age < high:
            return f"{low}+" if high is None else f"{low}-{high - 1}"
    return None


def subgroup_metrics(predictions, dataset, columns: Sequence[str], split: str, *, bootstrap: int = 1000,
                     seed: int = 0) -> list[dict]:
    """Metric records per value of each of ``columns`` that the rows record (``age`` in ``AGE_BANDS``); columns
    the dataset lacks are skipped (the caller lists them)."""
    from multimed_hf.training.loading import column_values

    records = []
    order = np.asarray(predictions.row_indices if predictions.row_indices is not None else np.arange(len(dataset)))
    for name in columns:
        if name not in dataset.column_names:
            continue
        raw = column_values(dataset, [name])[name]
        values = [(_band(raw[i]) if name == "age" else (None if raw[i] is None else str(raw[i]))) for i in order]
        for group in sorted({v for v in values if v is not None}):
            rows = np.flatnonzero([v == group for v in values])
            for r in score(slice_predictions(predictions, rows), split, bootstrap, seed):
                records.append({"column": name, "group": group, **{k: r[k] for k in (
                    "label", "metric", "value", "ci_low", "ci_high", "n")}})
    return records


def add_attribution_columns(predictions_path: str | Path, rows) -> Path:
    """Add the attribution columns of ``rows`` (a DataFrame with ``sample_id``) beside a predictions parquet file
    (``predictions/<task>-<split>.parquet``), matched by ``sample_id``; the file's own metadata (what its
    ``<column>_scores`` score: ``predictions_score_names``) is kept."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from multimed_hf.training.outputs import SCORES_METADATA_KEY

    path = Path(predictions_path)
    table = pd.read_parquet(path)
    extra = [c for c in rows.columns if c.startswith(("loo_delta_", "grad_x_input_", "top_modality"))]
    merged = table.drop(columns=[c for c in extra if c in table.columns]).merge(
        rows[["sample_id", *extra]], on="sample_id", how="left")
    if len(merged) != len(table):
        raise AnalysisError(f"{path}: sample ids repeat; cannot add attribution columns row by row")
    kept = {k: v for k, v in (pq.read_schema(path).metadata or {}).items() if k == SCORES_METADATA_KEY.encode()}
    out = pa.Table.from_pandas(merged, preserve_index=False)
    pq.write_table(out.replace_schema_metadata({**(out.schema.metadata or {}), **kept}), path)
    return path


def _load_run(checkpoint: str, task: str, training_args, data: Mapping[str, Any]) -> AnalysisRun:
    from multimed_hf.modeling_multimed import MultiMedModel
    from multimed_hf.processing_multimed import MultiMedProcessor

    model = MultiMedModel.from_pretrained(checkpoint)
    processor = MultiMedProcessor.from_pretrained(checkpoint)
    if task not in model.config.heads:
        raise AnalysisError(f"checkpoint {checkpoint!r} has no head for task {task!r} (heads: "
                            f"{list(model.config.heads)})")
    modalities = tuple(model.config.heads[task]["modalities"])
    trainer = prediction_trainer(model, processor, training_args, task, modalities)
    return AnalysisRun(task=task, model=model, processor=processor, trainer=trainer, datasets=dict(data),
                       modalities=modalities, output_dir=Path(checkpoint))


def attribution(args, training_args, *, options: AttributionOptions | None = None,
                output_dir: str | Path | None = None, datasets: Mapping[str, Any] | None = None,
                train_fn: Callable | None = None) -> AttributionResult:
    """Train a model on ``args.tasks[0]`` (or load ``options.checkpoint``), predict ``options.split``, and
    attribute each prediction of the headline label column to the modalities: leave-one-modality-out deltas
    (presence masks) and gradient x input. Writes ``predictions/<task>-<split>.parquet`` with the attribution
    columns beside the predictions, ``attribution.csv`` (per row), ``attribution_subgroups.csv`` (metrics per
    sex / age band where the task records them), ``attribution.md`` and ``attribution.png``."""
    import pandas as pd

    from multimed_hf.training.families import present_modalities
    from multimed_hf.training.outputs import PREDICTIONS_FOLDER, write_predictions

    options = options or AttributionOptions()
    check_analysis_args(args, training_args, options)
    if len(args.tasks) != 1:
        raise AnalysisError(f"attribution takes one task, got {args.tasks}")
    task = args.tasks[0]
    output_dir = Path(output_dir or training_args.output_dir)
    modalities = list(present_modalities(task, args.data))
    if not options.checkpoint:
        check_plan_flags(args, [analysis_plan(args, task, modalities, "model")])
    data = dict(datasets) if datasets is not None else analysis_datasets(args.data, task, modalities)
    if options.split not in data:
        raise AnalysisError(f"task {task!r} has no {options.split!r} split")
    if options.checkpoint:
        run = _load_run(options.checkpoint, task, training_args, data)
    else:
        run = train_run(args, training_args, task=task, datasets=data, modalities=modalities,
                        output_dir=output_dir / "runs" / "model", train_fn=train_fn)
    dataset = data[options.split]
    keep = np.flatnonzero(modality_matrix(dataset, task, run.modalities).any(1))
    dataset = dataset if len(keep) == len(dataset) else dataset.select(keep)
    column = headline(task)[0]
    reference = run.trainer.predict_task(task, dataset, split=options.split)
    prior = prior_outputs(task, data["train"], run.model.config.heads[task], args.max_train_samples)
    deltas = leave_one_out_deltas(run, dataset, reference, prior, column, split=options.split)
    gxi = gradient_x_input(run.model, run.processor, task, dataset, run.modalities, column,
                           batch_size=options.batch_size)
    predictions_path = write_predictions(reference, dataset, output_dir / PREDICTIONS_FOLDER /
                                         f"{task}-{options.split}.parquet")
    rows = pd.read_parquet(predictions_path)
    for j, m in enumerate(run.modalities):
        rows[f"loo_delta_{m}"] = deltas[:, j]
        rows[f"grad_x_input_{m}"] = gxi[:, j]
    names = np.array(run.modalities)
    rows["top_modality_loo"] = np.where(np.abs(deltas).max(1) > 0, names[np.abs(deltas).argmax(1)], None)
    rows["top_modality_grad_x_input"] = np.where(gxi.max(1) > 0, names[gxi.argmax(1)], None)
    add_attribution_columns(predictions_path, rows)
    subgroups = pd.DataFrame.from_records(subgroup_metrics(
        reference, dataset, options.subgroups, options.split, bootstrap=args.bootstrap_samples,
        seed=training_args.seed), columns=["column", "group", "label", "metric", "value", "ci_low", "ci_high", "n"])
    subgroups.to_csv(output_dir / "attribution_subgroups.csv", index=False)
    recorded = [c for c in options.subgroups if c in dataset.column_names]
    result = AttributionResult(rows=rows, subgroups=subgroups, predictions_path=predictions_path)
    held = modality_matrix(dataset, task, run.modalities)  # the rows holding each modality
    result.paths = write_outputs(rows, output_dir, "attribution",
                                 _markdown(task, column, run.modalities, rows, subgroups, options, recorded, held),
                                 lambda fig: _figure(fig, task, run.modalities, rows, subgroups, held))
    return result


def _mean_abs_delta(rows, modalities, held) -> list[float]:
    """Each modality's mean |leave-one-out delta| over the rows holding it (``held``: rows x modalities): a row
    without it has no delta to average (its 0 would make a modality held by fewer rows look less important)."""
    return [float(rows[f"loo_delta_{m}"].abs()[held[:, j]].mean()) if held[:, j].any() else float("nan")
            for j, m in enumerate(modalities)]


def _mean_share(rows, modalities, held) -> list[float]:
    """Each modality's mean share of a row's summed gradient x input, over the rows holding it (as
    ``_mean_abs_delta``: a row without it, whose share is 0, would halve a modality held by half the rows); rows
    whose sum is 0 have no share."""
    total = rows[[f"grad_x_input_{m}" for m in modalities]].sum(1).replace(0, np.nan)
    return [float((rows[f"grad_x_input_{m}"] / total)[held[:, j]].mean()) if held[:, j].any() else float("nan")
            for j, m in enumerate(modalities)]


def _markdown(task, column, modalities, rows, subgroups, options, recorded, held) -> str:
    import pandas as pd

    summary = pd.DataFrame({
        "modality": list(modalities),
        "rows holding it": [int(held[:, j].sum()) for j in range(len(modalities))],
        "mean abs LOO delta (over them)": _mean_abs_delta(rows, modalities, held),
        "top by LOO (rows)": [int((rows["top_modality_loo"] == m).sum()) for m in modalities],
        "mean grad x input share (over them)": _mean_share(rows, modalities, held),
        "top by grad x input (rows)": [int((rows["top_modality_grad_x_input"] == m).sum()) for m in modalities],
    })
    lines = [f"# Attribution per prediction: {task} ({options.split})", "",
             f"Per row, for `{column}`: the change of the prediction when one modality is masked out through the "
             "presence masks (leave-one-modality-out; the predicted class's probability, or the value), and "
             "gradient x input summed over the modality's inputs (token embeddings for sequences). Both are 0 "
             "where the row lacks the modality. The columns are in the predictions parquet beside each prediction. "
             "Gradient x input magnitudes depend on each input's units: compare them across rows, not across "
             "modalities; the leave-one-out delta is on one scale for all.",
             "", markdown_table(summary), ""]
    missing = [c for c in options.subgroups if c not in recorded]
    if len(subgroups):
        lines += ["## Subgroups", "", markdown_table(subgroups), ""]
    if missing:
        lines.append(f"Not recorded by {task!r}'s rows (no subgroup metrics): {', '.join(missing)}.")
    return "\n".join(lines)


def _figure(fig, task, modalities, rows, subgroups, held) -> None:
    axes = fig.subplots(1, 2 if len(subgroups) else 1, squeeze=False)[0]
    ax = axes[0]
    x = np.arange(len(modalities))
    loo = _mean_abs_delta(rows, modalities, held)
    share = _mean_share(rows, modalities, held)
    # two units: the delta is in the prediction's own (e.g. months), the share a fraction: one axis each
    deltas = ax.bar(x - 0.2, loo, 0.4, color="C0", label="mean |leave-one-out delta|, rows holding it (left axis)")
    ax.set_ylabel("mean |leave-one-out delta|", fontsize=8)
    right = ax.twinx()
    shares = right.bar(x + 0.2, share, 0.4, color="C1", label="mean grad x input share, rows holding it (right axis)")
    top = max([v for v in loo if np.isfinite(v)], default=0.0)
    ax.set_ylim(0, 1.35 * top if top > 0 else 1.0)  # headroom for the legend above the bars
    right.set_ylim(0, 1.35)
    right.set_yticks([0, 0.25, 0.5, 0.75, 1.0])
    right.set_ylabel("grad x input share", fontsize=8)
    ax.set_xticks(x, modalities)
    right.legend(handles=[deltas, shares], fontsize=7, loc="upper center")  # on the twin: drawn above its bars
    ax.set_title("Which modality drove the predictions", fontsize=9)
    if len(subgroups):
        ax = axes[1]
        # one label's one metric (a task with several label columns scores each: bone_age's months and bins)
        label, metric = subgroups["label"].iloc[0], subgroups["metric"].iloc[0]
        first = subgroups[(subgroups["label"] == label) & (subgroups["metric"] == metric)]
        labels = [f"{c}={g}" for c, g in zip(first["column"], first["group"])]
        values = first["value"].to_numpy(dtype=float)
        errors = np.nan_to_num(np.vstack([values - first["ci_low"].to_numpy(dtype=float),
                                          first["ci_high"].to_numpy(dtype=float) - values]).clip(min=0))
        ax.bar(np.arange(len(labels)), values, yerr=errors, capsize=3)
        ax.set_xticks(np.arange(len(labels)), labels, rotation=30, ha="right")
        ax.set_title(f"{metric} per subgroup" + (f" ({label})" if subgroups["label"].nunique() > 1 else ""),
                     fontsize=9)
    fig.suptitle(f"Attribution: {task}")


def attribution_main(argv: Sequence[str] | None = None) -> int:
    """``multimed attribution --data DIR --task T --output_dir OUT [--checkpoint RUN]`` + every training flag."""
    return analysis_main("attribution", argv, AttributionOptions, attribution, single_task=True)
