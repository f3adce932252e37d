"""Conditional utilisation rate of each modality (score with all modalities vs. with one masked), as a callback."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import torch
from transformers import TrainerCallback

from multimed_hf.training.balancing.batches import BalancingError, has_labels, restrict_batch, task_batches, \
    unwrap_model
from multimed_hf.training.predictions import TaskPredictions, metadata_columns

__all__ = ["Utilisation", "modality_utilisation", "UtilisationCallback", "headline_metric", "multimodal_tasks"]


def headline_metric(task: str, column: str) -> str:
    """The first registry metric that scores ``column`` of ``task`` (the paper's, where it reports one)."""
    from multimed_hf.metrics.output_metrics import applicable_metrics

    names = applicable_metrics(task, column)
    if not names:
        raise BalancingError(f"task {task!r}, column {column!r}: no registry metric scores it")
    return names[0]


def multimodal_tasks(config, modalities: Mapping[str, Sequence[str]] | None = None) -> dict[str, list[str]]:
    """Task -> its modalities, for the model's tasks that read two or more (``modalities`` narrows a task)."""
    out = {}
    for task, head in config.heads.items():
        read = list((modalities or {}).get(task, head["modalities"]))
        if len(read) >= 2:
            out[task] = read
    return out


@dataclass
class Utilisation:
    """One task's conditional utilisation rates on one dataset.

    ``rates[m]`` = (score(all) - score(all without m)) / score(all): the share of the model's score lost when m is
    masked (Wu, Jastrzebski, Cho & Geras, "Characterizing and overcoming the greedy nature of learning in
    multi-modal deep neural networks", ICML 2022, define it with accuracy; MILES, arXiv 2510.17394, balances with
    it). ``score_all[m]`` and ``score_without[m]`` are computed on the rows that hold m and another modality (the
    only rows where masking m changes the input); NaN where no such row exists or score(all) <= 0 (undefined).
    """

    task: str
    metric: dict  # label column -> the metric scored
    score_all: dict = field(default_factory=dict)
    score_without: dict = field(default_factory=dict)
    rates: dict = field(default_factory=dict)
    rows: dict = field(default_factory=dict)

    def spread(self) -> float:
        """max_m u_m - min_m u_m over the modalities with a defined rate (NaN if fewer than two)."""
        values = [v for v in self.rates.values() if math.isfinite(v)]
        return max(values) - min(values) if len(values) >= 2 else math.nan

    def dominant(self) -> str | None:
        """The modality with the highest defined rate."""
        values = {m: v for m, v in self.rates.items() if math.isfinite(v)}
        return max(values, key=values.get) if values else None

    def logs(self, prefix: str = "utilisation") -> dict[str, float]:
        return {f"{prefix}_{self.task}_{m}": float(v) for m, v in self.rates.items()}


def _score(task: str, head_spec: dict, outputs: dict, references: dict, metadata: dict, metric: dict) -> float:
    """Mean over labelled columns of each column's metric (registry metric functions through TaskPredictions)."""
    n = len(next(iter(references.values()))) if references else 0
    predictions = TaskPredictions(task=task, sample_ids=[str(i) for i in range(n)], outputs=outputs,
                                  references=references, masks={}, head_spec=head_spec, metadata=metadata)
    values = [v[metric[c]] for c, v in predictions.metrics().items() if c in metric]
    values = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return float(np.mean(values)) if values else math.nan


@torch.no_grad()
def modality_utilisation(model, processor, task: str, dataset, *, modalities: Sequence[str] | None = None,
                         batch_size: int = 32, metric: str | Mapping[str, str] | None = None) -> Utilisation:
    """The conditional utilisation rate of each modality of ``task`` on ``dataset`` (rows with labels).

    One pass over the rows: each batch is predicted with all its modalities, then once per modality m with m masked
    through the presence masks (``restrict_batch``: no second model). ``metric``: one metric name for every label
    column, or column -> name; default each column's headline registry metric (a score where higher is better:
    accuracy, Pearson, VQA accuracy, ...). Several label columns: the mean of their scores.
    """
    core = unwrap_model(model)
    spec = core.config.heads.get(task)
    if spec is None:
        raise BalancingError(f"modality_utilisation: the model has no head for task {task!r}")
    read = list(modalities or spec["modalities"])
    if len(read) < 2:
        raise BalancingError(f"modality_utilisation: task {task!r} reads {read}; a utilisation rate needs two or "
                             f"more modalities")
    if not has_labels(task, dataset):
        raise BalancingError(f"modality_utilisation: the {task!r} rows have no labels; give a labelled split")
    columns = [o["name"] for o in spec["outputs"]]
    if metric is None or isinstance(metric, str):
        metric = {c: metric or headline_metric(task, c) for c in columns}
    metric = {c: metric[c] for c in columns if c in metric}
    device = next(core.parameters()).device
    was_training = core.training
    core.eval()
    full: dict[str, list] = {}
    masked: dict[str, dict[str, list]] = {m: {} for m in read}
    refs: dict[str, list] = {}
    eligible: dict[str, list] = {m: [] for m in read}
    row_ids = []
    try:
        for rows, batch in task_batches(processor, task, dataset, batch_size=batch_size, modalities=read,
                                        device=device):
            out = core(**batch)
            row_ids.append(rows.numpy())
            for c in columns:
                full.setdefault(c, []).append(out.logits[c].float().cpu().numpy())
                refs.setdefault(c, []).append(_numpy(batch["labels"][c]))
            presence = torch.stack([batch["presence"][m].bool() for m in read], 1)
            for j, m in enumerate(read):
                others = [k for k in read if k != m]
                sub, kept = restrict_batch(batch, others)
                eligible[m].append((presence[:, j] & kept).cpu().numpy())
                sub_out = core(**sub) if sub is not None else None
                where = np.flatnonzero(kept.cpu().numpy())
                for c in columns:
                    values = np.zeros_like(full[c][-1])
                    if sub_out is not None:
                        values[where] = sub_out.logits[c].float().cpu().numpy()
                    masked[m].setdefault(c, []).append(values)
    finally:
        core.train(was_training)
    order = np.concatenate(row_ids) if row_ids else np.zeros(0, dtype=np.int64)
    full = {c: np.concatenate(v) for c, v in full.items()}
    refs = {c: np.concatenate(v) for c, v in refs.items()}
    metadata_all = {source: list(dataset[source]) for source in metadata_columns(task)
                    if source in dataset.column_names}
    result = Utilisation(task=task, metric=dict(metric))
    for m in read:
        rows_m = np.flatnonzero(np.concatenate(eligible[m])) if eligible[m] else np.zeros(0, dtype=np.int64)
        result.rows[m] = int(len(rows_m))
        if not len(rows_m):
            result.score_all[m] = result.score_without[m] = result.rates[m] = math.nan
            continue
        metadata = {k: [v[int(i)] for i in order[rows_m]] for k, v in metadata_all.items()}
        ref = {c: r[rows_m] for c, r in refs.items()}
        s_all = _score(task, spec, {c: v[rows_m] for c, v in full.items()}, ref, metadata, metric)
        s_without = _score(task, spec, {c: np.concatenate(v)[rows_m] for c, v in masked[m].items()}, ref, metadata,
                           metric)
        result.score_all[m], result.score_without[m] = s_all, s_without
        result.rates[m] = (s_all - s_without) / s_all if math.isfinite(s_all) and s_all > 0 else math.nan
    return result


def _numpy(value: torch.Tensor) -> np.ndarray:
    value = value.cpu()
    return value.numpy() if value.dtype == torch.long else value.float().numpy()


class UtilisationCallback(TrainerCallback):
    """Measures every multimodal task's utilisation rates on its validation rows, each epoch (``every_n_steps``
    None) or every N optimizer steps, and logs ``utilisation_<task>_<modality>`` into ``state.log_history``.

    Every process computes the rates over all the rows (the same numbers everywhere; they are averaged over
    processes all the same, so a decision taken on them is the same on every rank). Subclasses act on them in
    `on_utilisation`.

    Args:
        processor: the `MultiMedProcessor` reading the rows.
        eval_datasets: task -> its validation rows (with labels).
        modalities: task -> the modalities the model reads (default: the head's).
        every_n_steps: measure every N steps instead of at each epoch's end.
        batch_size: rows per forward pass.
        metric: one metric name, or None for each column's headline metric.
    """

    def __init__(self, processor, eval_datasets: Mapping[str, object], *,
                 modalities: Mapping[str, Sequence[str]] | None = None, every_n_steps: int | None = None,
                 batch_size: int = 32, metric: str | None = None):
        if not eval_datasets:
            raise BalancingError("utilisation needs validation rows: give eval_datasets={task: dataset}")
        if every_n_steps is not None and every_n_steps < 1:
            raise BalancingError(f"every_n_steps={every_n_steps}: expected a positive number of steps or None")
        self.processor = processor
        self.eval_datasets = dict(eval_datasets)
        self.modalities = {t: list(m) for t, m in (modalities or {}).items()}
        self.every_n_steps = every_n_steps
        self.batch_size = batch_size
        self.metric = metric
        self.history: list[dict] = []  # {"step", "utilisation": {task: Utilisation}}
        self.latest: dict[str, Utilisation] = {}

    def tasks(self, model) -> dict[str, list[str]]:
        """The tasks measured: those with validation rows that read two or more modalities."""
        found = multimodal_tasks(unwrap_model(model).config, self.modalities)
        return {t: m for t, m in found.items() if t in self.eval_datasets}

    def measure(self, model) -> dict[str, Utilisation]:
        """Every measured task's `Utilisation` (averaged over processes when distributed)."""
        results = {task: modality_utilisation(model, self.processor, task, self.eval_datasets[task],
                                              modalities=read, batch_size=self.batch_size, metric=self.metric)
                   for task, read in self.tasks(model).items()}
        if torch.distributed.is_available() and torch.distributed.is_initialized() and \
                torch.distributed.get_world_size() > 1:
            keys = [(t, m) for t, u in sorted(results.items()) for m in sorted(u.rates)]
            values = torch.tensor([results[t].rates[m] for t, m in keys], dtype=torch.float64,
                                  device=next(unwrap_model(model).parameters()).device)
            torch.distributed.all_reduce(values)
            values /= torch.distributed.get_world_size()
            for (t, m), v in zip(keys, values.tolist()):
                results[t].rates[m] = v
        return results

    def _run(self, state, model, **kwargs) -> None:
        results = self.measure(model)
        self.latest = results
        logs = {k: v for u in results.values() for k, v in u.logs().items()}
        self.history.append({"step": state.global_step, "utilisation": results})
        if logs:
            state.log_history.append({**logs, "epoch": state.epoch, "step": state.global_step})
        self.on_utilisation(results, state=state, model=model, **kwargs)

    def on_utilisation(self, results: Mapping[str, Utilisation], **kwargs) -> None:
        """Called with each new measurement (``state``, ``model``, ``optimizer``, ``lr_scheduler`` in kwargs)."""

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.every_n_steps is not None and state.global_step % self.every_n_steps == 0:
            self._run(state, model, **kwargs)

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        if self.every_n_steps is None:
            self._run(state, model, **kwargs)
