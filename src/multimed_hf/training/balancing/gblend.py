"""G-Blend: loss weights of the fused and per-modality heads from overfitting-to-generalisation ratios of probe runs."""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import tempfile
from typing import Mapping, Sequence

import numpy as np
import torch
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from multimed_hf.configuration_multimed import FUSED
from multimed_hf.training.balancing.batches import BalancingError, has_labels, task_batches, unwrap_model
from multimed_hf.training.balancing.utilisation import multimodal_tasks
from multimed_hf.training.loss_weighting import LossWeighting, register_loss_weighting

__all__ = ["GBLEND_PROBE_STEPS", "gblend_weights", "head_losses", "estimate_gblend_weights", "GBlendWeighting"]

logger = logging.getLogger(__name__)

#: Optimizer steps of each probe run (the interval n between the two measurements). Gradient-Blending (Wang, Tran
#: & Feiszli, CVPR 2020) measures over a training interval ("super-epoch" in its online form) whose length is a
#: per-dataset choice; the stored copies we could search did not give one for our scale, so 50 steps is our choice.
GBLEND_PROBE_STEPS = 50
#: Floor of the squared overfitting change (a head whose gap did not move would otherwise take all the weight);
#: the value of the public re-implementation in timeseriesAI/tsai (tsai/callback/gblend.py), our choice to follow.
GBLEND_EPS = 1e-8


def gblend_weights(before: Mapping[str, tuple[float, float]], after: Mapping[str, tuple[float, float]],
                   eps: float = GBLEND_EPS) -> dict[str, float]:
    """Gradient-Blending weights from each head's (train loss, validation loss) before and after a probe interval.

    For head k: generalisation gain G_k = L^V_before - L^V_after (clipped at 0: a head that got worse on held-out rows
    earns no weight), overfitting O = L^V - L^T and its change dO_k = O_after - O_before; the weight is proportional to
    G_k / dO_k^2 (Wang, Tran & Feiszli, CVPR 2020: w*_k proportional to <grad L*, v_k> / sigma_k^2, approximated by
    G / O^2; OGR = dO / dG). Normalised to sum to 1 (the paper's normaliser Z only rescales the blended loss, which
    the learning rate absorbs); when every gain is 0 the weights are uniform."""
    keys = list(before)
    if not keys or set(keys) != set(after):
        raise BalancingError(f"gblend_weights: before and after must name the same heads, got {sorted(before)} and "
                             f"{sorted(after)}")
    raw = {}
    for k in keys:
        (t0, v0), (t1, v1) = before[k], after[k]
        values = (t0, v0, t1, v1)
        if not all(math.isfinite(float(x)) for x in values):
            raise BalancingError(f"gblend_weights: head {k!r} has a non-finite loss {values}")
        gain = max(0.0, float(v0) - float(v1))
        delta_o = (float(v1) - float(t1)) - (float(v0) - float(t0))
        raw[k] = gain / max(eps, delta_o ** 2)
    total = sum(raw.values())
    if not total > 0:
        return {k: 1.0 / len(keys) for k in keys}
    return {k: v / total for k, v in raw.items()}


def _head_key(name: str) -> str:
    return name.split("/", 1)[0] if "/" in name else FUSED


@torch.no_grad()
def head_losses(model, processor, datasets: Mapping[str, object], *, modalities: Mapping[str, Sequence[str]] | None =
                None, batch_size: int = 32, max_rows: int | None = 256) -> dict[str, dict[str, float]]:
    """Task -> head (``"fused"`` or a modality) -> the head's mean loss over the task's rows (the first
    ``max_rows``), the mean over label columns; the model in eval mode, weighted by rows per batch."""
    core = unwrap_model(model)
    device = next(core.parameters()).device
    was_training = core.training
    core.eval()
    out: dict[str, dict[str, float]] = {}
    try:
        for task, dataset in datasets.items():
            if not has_labels(task, dataset):
                raise BalancingError(f"head_losses: the {task!r} rows have no labels")
            if max_rows is not None and len(dataset) > max_rows:
                dataset = dataset.select(range(max_rows))
            sums: dict[str, dict[str, float]] = {}
            counts: dict[str, dict[str, float]] = {}
            read = (modalities or {}).get(task)
            for rows, batch in task_batches(processor, task, dataset, batch_size=batch_size, modalities=read,
                                            device=device):
                output = core(**batch)
                for name, value in (output.losses or {}).items():
                    key, column = _head_key(name), name.split("/", 1)[-1]
                    sums.setdefault(key, {}).setdefault(column, 0.0)
                    counts.setdefault(key, {}).setdefault(column, 0.0)
                    sums[key][column] += float(value) * len(rows)
                    counts[key][column] += len(rows)
            out[task] = {k: float(np.mean([sums[k][c] / counts[k][c] for c in sums[k]])) for k in sums}
    finally:
        core.train(was_training)
    return out


class _OneHead(LossWeighting):
    """A probe run's loss: only one head's terms (the fused prediction's, or one modality's own)."""

    def __init__(self, config, key: str):
        super().__init__(config)
        self.key = key

    def combine(self, task, output):
        losses = output.losses or {}
        total = output.loss * 0.0  # keeps the graph when the batch has no term of this head
        for name, value in losses.items():
            if _head_key(name) == self.key:
                total = total + value
        return total, self.task_logs(task, output)


def estimate_gblend_weights(model, processor, train_datasets: Mapping[str, object],
                            eval_datasets: Mapping[str, object], training_args, *,
                            modalities: Mapping[str, Sequence[str]] | None = None,
                            probe_steps: int = GBLEND_PROBE_STEPS, max_rows: int | None = 256,
                            batch_size: int | None = None) -> dict[str, dict[str, float]]:
    """Offline G-Blend: task -> head -> weight, from one short probe run per head.

    Each probe trains a copy of ``model`` for ``probe_steps`` steps (``MultiMedTrainer`` with ``training_args``'
    optimizer settings, saving and evaluating nothing) on one head's loss alone: the fused head's (the naive
    multimodal model), or one modality's own head (a unimodal model of that modality: its head reads only that
    modality's features). The heads' train and validation losses before and after give `gblend_weights`. The paper
    trains separate unimodal networks; here they share the student's architecture, which is what the blended loss
    then trains. The validation rows stand in for the paper's held-out training subset V."""
    from multimed_hf.training.trainer import MultiMedTrainer

    core = unwrap_model(model)
    if not core.config.modality_heads:
        raise BalancingError("G-Blend weights each modality's own head: set auxiliary_heads=True in the model config "
                             "(intermediate fusion) or use late fusion")
    tasks = multimodal_tasks(core.config, modalities)
    tasks = {t: m for t, m in tasks.items() if t in train_datasets and t in eval_datasets}
    if not tasks:
        raise BalancingError(f"G-Blend needs a task that reads two or more modalities with train and validation "
                             f"rows; the model's tasks: {list(core.config.heads)}")
    if probe_steps < 1:
        raise BalancingError(f"probe_steps={probe_steps}: expected at least one step")
    keys = [FUSED] + sorted({m for read in tasks.values() for m in read})
    train_rows = {t: train_datasets[t] for t in tasks}
    eval_rows = {t: eval_datasets[t] for t in tasks}
    size = batch_size or training_args.per_device_eval_batch_size

    def measure(m):
        train = head_losses(m, processor, train_rows, modalities=modalities, batch_size=size, max_rows=max_rows)
        val = head_losses(m, processor, eval_rows, modalities=modalities, batch_size=size, max_rows=max_rows)
        return train, val

    train0, val0 = measure(model)
    after: dict[str, dict[str, tuple]] = {t: {} for t in tasks}
    for key in keys:
        probe = copy.deepcopy(core)
        with tempfile.TemporaryDirectory() as tmp:
            args = dataclasses.replace(training_args, output_dir=tmp, max_steps=probe_steps, save_strategy="no",
                                       eval_strategy="no", logging_strategy="no", report_to=[],
                                       load_best_model_at_end=False, push_to_hub=False)
            trainer = MultiMedTrainer(model=probe, args=args, train_datasets=train_rows, processor=processor,
                                      modalities=modalities, loss_weighting=_OneHead(probe.config, key))
            for quiet in (PrinterCallback, ProgressCallback):  # a probe prints nothing
                trainer.remove_callback(quiet)
            trainer.train()
        train1, val1 = measure(probe)
        for task in tasks:
            if key in train1.get(task, {}) and key in val1.get(task, {}):
                after[task][key] = (train1[task][key], val1[task][key])
        del trainer, probe
    weights = {}
    for task in tasks:
        heads = [k for k in keys if k in after[task] and k in train0[task] and k in val0[task]]
        if not heads:
            raise BalancingError(f"G-Blend: no head of task {task!r} had a loss on both its labelled training and "
                                 "validation rows")
        unmeasured = [k for k in [FUSED, *tasks[task]] if k not in heads]
        if unmeasured:
            logger.warning("G-Blend: task %r's head(s) %s have no loss on its labelled training or validation rows "
                           "(no row holds that modality), so their weight is 0: the blended loss does not train "
                           "them", task, unmeasured)
        weights[task] = _fused_head_trained(task, gblend_weights(
            {k: (train0[task][k], val0[task][k]) for k in heads}, {k: after[task][k] for k in heads}))
    return weights


def _fused_head_trained(task: str, weights: dict[str, float]) -> dict[str, float]:
    """``weights`` with the fused head (the output a run is scored on) given the uniform share where its weight is 0:
    where its probe lost on validation its gain is 0 and so its weight, and the blended loss would never train the
    fusion or the head that the run reports (the others are scaled to fill the rest). Warned."""
    if FUSED not in weights or len(weights) < 2 or weights[FUSED] > 0:
        return weights
    share = 1.0 / len(weights)
    logger.warning("G-Blend: task %r's fused head got weight %.3g from its probe (its validation loss did not fall); "
                   "it is the output the run is scored on, so it keeps the uniform share %.3g", task,
                   weights[FUSED], share)
    rest = sum(w for k, w in weights.items() if k != FUSED)
    return {k: share if k == FUSED else (w * (1.0 - share) / rest if rest > 0 else (1.0 - share) / (len(weights) - 1))
            for k, w in weights.items()}


@register_loss_weighting("gblend")
class GBlendWeighting(LossWeighting):
    """The blended loss of Gradient-Blending (Wang, Tran & Feiszli, CVPR 2020): per task, the sum over label columns
    of w_fused * L(fused head) + sum_m w_m * L(modality m's own head), with fixed weights (``weights``: task -> head
    -> w, from `estimate_gblend_weights`); tasks without weights keep the config's lambdas. Logs
    ``gblend_weight_<task>_<head>`` beside the task losses."""

    def __init__(self, config, weights: Mapping[str, Mapping[str, float]] | None = None):
        super().__init__(config)
        if not getattr(config, "modality_heads", False):
            raise BalancingError("G-Blend blends each modality's own head: set auxiliary_heads=True in the model "
                                 "config (intermediate fusion) or use late fusion")
        weights = {t: dict(w) for t, w in (weights or {}).items()}
        for task, w in weights.items():
            if task not in config.heads:
                raise BalancingError(f"G-Blend weights name task {task!r}, which the model has no head for")
            unknown = sorted(set(w) - {FUSED, *config.heads[task]["modalities"]})
            if unknown:
                raise BalancingError(f"G-Blend weights of task {task!r} name heads {unknown}; its heads are "
                                     f"{[FUSED, *config.heads[task]['modalities']]}")
        self.weights = weights
        self.lambdas = {t: {k: config.loss_weight(t, k) for k in [FUSED, *h["modalities"]]}
                        for t, h in config.heads.items()}

    def combine(self, task, output):
        if output.loss is None:
            raise BalancingError(f"task {task!r}: the model returned no loss; the batch needs `labels`")
        weights = self.weights.get(task, self.lambdas[task])
        total = output.loss * 0.0
        for name, value in (output.losses or {}).items():
            total = total + weights.get(_head_key(name), 0.0) * value
        logs = self.task_logs(task, output)
        for key, w in self.weights.get(task, {}).items():
            logs[f"gblend_weight_{task}_{key}"] = torch.tensor(float(w))
        return total, logs
