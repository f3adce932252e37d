"""One client's local work: a few MultiMedTrainer steps on its rows, and evaluation on its validation rows.

The ClientApp calls these through one small interface, ``LocalTrainer`` (model, ``{task: Dataset}``, processor,
``LocalConfig``, ``global_state=``) -> ``LocalResult``, so the loop can be swapped with
``make_client_app(local_trainer=...)`` without touching the apps.

``train_local`` is our Trainer path (``multimed_hf.training.trainer.MultiMedTrainer`` with ``max_steps`` =
``local-steps``, the client's datasets and our task sampler), so a client trains through the same code as a
centralised run: AdamW over the per-modality parameter groups, gradient clipping, a warm-up then decay schedule,
the SuperNode's GPU when it has one. FedProx's proximal term (mu / 2 * ||w - w_global||^2, Li et al. 2020) is
added to the loss by a ``compute_loss`` override (``ProximalTrainer``); the units a client trained are read by a
callback just before each optimizer step.

Local settings belong to the federation, not to the centralised defaults (``training/arguments.py``: lr 1e-3,
40 epochs): the server sends them every round (``LocalConfig``; ConfigRecord keys with dashes). Why these
defaults: a fresh optimizer starts every round, and its first AdamW step moves every parameter by about the
learning rate whatever its gradient; on the expression sample (small encoders, hidden 64) one plain step moved the
predictions by about 15 target standard deviations at lr 1e-3 and 3.5 at 1e-4, and the plain loop this replaces
(lr 3e-3, no warm-up) left the global validation loss above the initial model's. So each round warms up over
``warmup`` of its steps, decays linearly (``scheduler``) and clips gradients at ``max-grad-norm`` 1, and the rate
is 1e-4: on the 120-gene expression sample (FedAvg, 10 steps, 2 rounds) the global validation loss ended below
the initial model's for 6 of 6 seeds at 1e-4, 4 of 5 at 1e-3.

Choices where BlendFL is silent: a fresh optimizer and schedule each round (no optimizer state crosses rounds or
leaves the client); tasks share batches proportionally to their rows (``TaskSampling``); a *unit*
(``modules.module_of``) counts as trained when one of its parameters received a non-zero gradient, which is what
the client then sends under BlendAvg; the validation score is the registry's headline metric of each label column
(``applicable_metrics(...)[0]``: Pearson for expression, accuracy for classes, closed VQA accuracy ...) averaged
over the client's columns, NaN when undefined; clients also report ``val-inv-loss`` = 1 / (1 + validation loss),
which BlendAvg can weight by instead (``score_key``). Evaluation is a plain no-grad pass (``evaluate_local``): it
must give one headline number per client and run on the server's central check too, where no Trainer is built.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, field, fields
from typing import Callable, Mapping

import numpy as np

from multimed_hf.federated.modules import module_of

__all__ = ["LocalConfig", "LocalResult", "LocalTrainer", "train_local", "evaluate_local", "proximal_term",
           "ProximalTrainer", "LocalConfigError"]


class LocalConfigError(ValueError):
    """A local training setting that cannot be used."""


@dataclass
class LocalConfig:
    """Local training settings of one round; the server sends them in the train message's ConfigRecord (keys with
    dashes: ``local-steps``, ``batch-size``, ``lr``, ``weight-decay``, ``warmup``, ``scheduler``,
    ``max-grad-norm``, ``proximal-mu``, ``seed``). ``warmup``: a fraction of ``local_steps`` (< 1) or a number of
    steps; ``scheduler``: a ``transformers`` scheduler name (``linear``, ``cosine``, ``constant_with_warmup``)."""

    local_steps: int = 10
    batch_size: int = 16
    lr: float = 1e-4
    weight_decay: float = 0.0
    warmup: float = 0.3
    scheduler: str = "linear"
    max_grad_norm: float = 1.0
    proximal_mu: float = 0.0
    seed: int = 0

    def __post_init__(self):
        if self.local_steps < 1 or self.batch_size < 1:
            raise LocalConfigError(f"local-steps={self.local_steps}, batch-size={self.batch_size}: both must be >= 1")
        if not self.lr > 0 or self.weight_decay < 0 or self.proximal_mu < 0 or self.warmup < 0:
            raise LocalConfigError(f"lr={self.lr}, weight-decay={self.weight_decay}, proximal-mu={self.proximal_mu}, "
                                   f"warmup={self.warmup}: expected lr > 0 and the others >= 0")

    @classmethod
    def from_record(cls, record: Mapping | None, **overrides) -> "LocalConfig":
        values = {}
        for f in fields(cls):
            key = f.name.replace("_", "-")
            if record is not None and key in record:
                values[f.name] = type(getattr(cls, f.name))(record[key])
        values.update(overrides)
        return cls(**values)

    def to_record(self) -> dict:
        return {f.name.replace("_", "-"): getattr(self, f.name) for f in fields(self)}


@dataclass
class LocalResult:
    """What local training reports: metrics (plain floats) and the units that received gradients."""

    metrics: dict[str, float]
    trained: set[str] = field(default_factory=set)


LocalTrainer = Callable[..., LocalResult]


def proximal_term(model, reference: Mapping) -> "torch.Tensor":
    """sum ||w - w_global||^2 over trainable parameters (FedProx, Li et al. 2020), ``reference`` = global values."""
    total = None
    for name, p in model.named_parameters():
        if p.requires_grad and name in reference:
            term = (p - reference[name]).pow(2).sum()
            total = term if total is None else total + term
    return total


def _trainer_classes():
    """``ProximalTrainer`` and the trained-units callback (built on first use: importing this module loads no
    transformers)."""
    from transformers import TrainerCallback

    from multimed_hf.training.trainer import MultiMedTrainer

    class ProximalTrainer(MultiMedTrainer):
        """``MultiMedTrainer`` whose training loss adds FedProx's ``proximal_mu / 2 * ||w - w_global||^2``
        (``reference``: the parameters received this round; ``proximal_mu`` 0 = the plain Trainer)."""

        def __init__(self, *args, proximal_mu: float = 0.0, reference: Mapping | None = None, **kwargs):
            super().__init__(*args, **kwargs)
            if proximal_mu > 0 and reference is None:
                raise LocalConfigError("proximal-mu > 0 (FedProx) needs global_state, the parameters received this "
                                       "round")
            self.proximal_mu = float(proximal_mu)
            self.reference = dict(reference or {})

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            out = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            if not (self.proximal_mu > 0 and model.training):
                return out
            loss, outputs = out if return_outputs else (out, None)
            device = loss.device
            self.reference = {k: v.to(device) for k, v in self.reference.items()}
            term = proximal_term(model, self.reference)
            loss = loss + self.proximal_mu / 2 * term if term is not None else loss
            return (loss, outputs) if return_outputs else loss

    class TrainedUnits(TrainerCallback):
        """Collects the units (``module_of``) holding a parameter with a non-zero gradient before each step."""

        def __init__(self):
            self.units: set[str] = set()

        def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
            for name, p in model.named_parameters():
                if p.grad is not None and bool(p.grad.detach().abs().sum() > 0):
                    self.units.add(module_of(name))

    return ProximalTrainer, TrainedUnits


def __getattr__(name: str):
    if name == "ProximalTrainer":
        return _trainer_classes()[0]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def train_local(model, datasets: Mapping, processor, config: LocalConfig, *, global_state: Mapping | None = None,
                ) -> LocalResult:
    """``config.local_steps`` optimizer steps of ``MultiMedTrainer`` over ``datasets`` (``{task: Dataset}`` of
    labelled rows). ``global_state`` (the received parameters) is needed when ``config.proximal_mu > 0``. Nothing
    is written to disk (no checkpoint, no log folder)."""
    from transformers import PrinterCallback, TrainingArguments

    from multimed_hf.training.sampling import TaskSampling

    datasets = {t: ds for t, ds in sorted(datasets.items()) if ds is not None and len(ds)}
    if not datasets:
        return LocalResult({"num-examples": 0, "train-loss": float("nan")})
    proximal, units = _trainer_classes()
    reference = None
    if config.proximal_mu > 0 and global_state is not None:
        reference = {k: v.detach().clone() for k, v in global_state.items()}
    callback = units()
    with tempfile.TemporaryDirectory(prefix="multimed-client-") as scratch:
        args = TrainingArguments(
            output_dir=scratch, max_steps=config.local_steps, per_device_train_batch_size=config.batch_size,
            learning_rate=config.lr, weight_decay=config.weight_decay, lr_scheduler_type=config.scheduler,
            warmup_steps=config.warmup, max_grad_norm=config.max_grad_norm, seed=config.seed,
            data_seed=config.seed, save_strategy="no", eval_strategy="no", logging_strategy="no",
            report_to="none", disable_tqdm=True, dataloader_pin_memory=False)
        trainer = proximal(model=model, args=args, train_datasets=datasets, processor=processor,
                           sampling=TaskSampling(), callbacks=[callback], proximal_mu=config.proximal_mu,
                           reference=reference)
        trainer.remove_callback(PrinterCallback)  # disable_tqdm's stand-in prints every log line
        output = trainer.train()
    n = sum(len(ds) for ds in datasets.values())
    return LocalResult({"num-examples": n, "train-loss": float(output.training_loss)}, callback.units)


def _to_device(value, device):
    if hasattr(value, "to"):
        return value.to(device)
    if isinstance(value, Mapping):
        return {k: _to_device(v, device) for k, v in value.items()}
    return value


def _loaders(datasets: Mapping, processor, batch_size: int, heads: Mapping):
    """One loader per task, reading the modalities the model's head for it reads (as training does)."""
    from torch.utils.data import DataLoader

    out = {}
    for task, ds in sorted(datasets.items()):
        if ds is None or len(ds) == 0:
            continue
        read = processor.transform(task, modalities=heads[task]["modalities"] if task in heads else None)
        out[task] = DataLoader(ds.with_transform(read), batch_size=batch_size, shuffle=False,
                               collate_fn=processor.collate)
    return out


def evaluate_local(model, datasets: Mapping, processor, *, batch_size: int = 32) -> dict[str, float]:
    """``val-loss`` (row-weighted mean of the model's loss), ``val-score`` (mean headline metric over label columns,
    higher is better), ``val-inv-loss`` (1 / (1 + val-loss): a bounded higher-is-better score defined for every
    task, steadier than a correlation on a handful of rows) and ``num-val-examples`` on ``{task: Dataset}``; per
    task ``val-loss/<task>`` too. Each column's headline is scored as a run scores it (``TaskPredictions.metrics``:
    Pearson per context then the mean, VQA accuracy on the closed questions, unseen free-text labels wrong)."""
    import torch

    from multimed_hf.metrics import applicable_metrics
    from multimed_hf.training.predictions import (
        TaskPredictions,
        collect_batch,
        metadata_columns,
        stack_rows,
        whole_chains,
    )

    loaders = _loaders(datasets, processor, batch_size, model.config.heads)
    device = next(model.parameters()).device
    model.eval()
    loss_sum, rows, scores, out = 0.0, 0, [], {}
    with torch.no_grad():
        for task, loader in loaders.items():
            outputs, references, masks = {}, {}, {}
            task_loss, task_rows = 0.0, 0
            for batch in loader:
                batch = _to_device(batch, device)
                result = model(**batch)
                size = len(next(iter(batch["presence"].values())))
                if result.loss is not None and math.isfinite(float(result.loss)):
                    task_loss += float(result.loss) * size
                    task_rows += size
                collect_batch(result.logits, batch.get("labels"), outputs, references, masks)
            out[f"val-loss/{task}"] = task_loss / task_rows if task_rows else float("nan")
            loss_sum, rows = loss_sum + task_loss, rows + task_rows
            dataset = datasets[task]
            predictions = TaskPredictions(
                task=task, sample_ids=list(range(len(dataset))),
                outputs={c: stack_rows(v, 0.0) for c, v in outputs.items()},
                references={c: stack_rows(v) for c, v in references.items() if c in outputs},
                masks={c: stack_rows(v) for c, v in masks.items()}, head_spec=model.config.heads[task],
                metadata={c: list(dataset[c]) for c in metadata_columns(task) if c in dataset.column_names})
            whole_chains(predictions, dataset)
            for column, values in predictions.metrics().items():
                value = values.get(applicable_metrics(task, column)[0])
                if value is not None and math.isfinite(value):
                    scores.append(float(value))
    loss = loss_sum / rows if rows else float("nan")
    out.update({"val-loss": loss, "val-score": float(np.mean(scores)) if scores else float("nan"),
                "val-inv-loss": 1.0 / (1.0 + loss) if math.isfinite(loss) else float("nan"), "num-val-examples": rows})
    return out
