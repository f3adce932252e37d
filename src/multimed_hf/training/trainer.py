"""MultiMedTrainer: the stock Trainer over task batches, with per-task losses, per-task evaluation and predictions."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from functools import partial
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_utils import get_last_checkpoint, seed_worker, speed_metrics

from multimed_hf.tasks import IMAGE_MODALITIES
from multimed_hf.training.data import (
    ROW_INDEX,
    IterableMultiTaskDataset,
    MultiTaskCollator,
    MultiTaskDataset,
    is_streamed,
)
from multimed_hf.training.loss_weighting import LossWeighting, get_loss_weighting
from multimed_hf.training.predictions import (
    TaskPredictions,
    collect_batch,
    metadata_columns,
    stack_rows,
    warn_cut_chains,
    whole_chains,
)
from multimed_hf.training.sampling import TaskBatchSampler, TaskSampling

__all__ = ["MultiMedTrainer", "TaskPredictions", "LOSS_WEIGHTING_NAME", "modality_param_groups",
           "refused_arguments", "uint8_image_processor", "prediction_arguments"]

logger = logging.getLogger(__name__)

#: File the learned parameters of a loss weighting are saved to, beside the model's weights.
LOSS_WEIGHTING_NAME = "loss_weighting.safetensors"


# ---------------------------------------------------------------------- optimizer groups
def _multimed_core(model: nn.Module) -> nn.Module | None:
    """The MultiMedModel inside ``model`` (itself, or under a PEFT / DDP wrapper)."""
    for module in model.modules():
        if isinstance(getattr(module, "encoders", None), nn.ModuleDict) and hasattr(module, "encoder_of"):
            return module
    return None


def modality_param_groups(model: nn.Module, weight_decay: float, decay_names: Sequence[str]) -> list[dict]:
    """One optimizer group per modality encoder (``name="encoder:<m>"``, ``modalities``: the modalities that read
    it), then ``"other"`` (projections, fusion, heads); with ``weight_decay > 0`` the parameters outside
    ``decay_names`` (biases, norms) go to twin groups ``"<name>:no_decay"``. Frozen parameters are left out."""
    core = _multimed_core(model)
    owner: dict[int, str] = {}
    readers: dict[str, list[str]] = {}
    if core is not None:
        for key, encoder in core.encoders.items():
            readers[key] = sorted(m for m, e in core.encoder_of.items() if e == key)
            for p in encoder.parameters():
                owner[id(p)] = key
    decay = set(decay_names)
    buckets: dict[tuple[str, bool], list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        key = owner.get(id(p))
        group = f"encoder:{key}" if key is not None else "other"
        decays = name in decay or weight_decay == 0
        buckets.setdefault((group, decays), []).append(p)
    order = [f"encoder:{k}" for k in readers] + ["other"]
    groups = []
    for group in order:
        for decays in (True, False):
            params = buckets.get((group, decays))
            if not params:
                continue
            key = group.split(":", 1)[1] if group != "other" else None
            groups.append({
                "params": params,
                "weight_decay": weight_decay if decays else 0.0,
                "name": group if decays else f"{group}:no_decay",
                "modalities": readers.get(key, []),
            })
    return groups


def uint8_image_processor(processor):
    """A copy of the `MultiMedProcessor` ``processor`` whose `ImageProcessor`s give 8-bit images as uint8
    ``pixel_values`` (``output_uint8``); ``processor`` itself where it has no image processor to change."""
    import copy

    from multimed_hf.processors.image import ImageProcessor

    changed = {}
    for key, proc in processor.processors.items():
        if isinstance(proc, ImageProcessor) and not proc.output_uint8:
            changed[key] = copy.copy(proc)
            changed[key].output_uint8 = True
    if not changed:
        return processor
    transport = copy.copy(processor)  # its caches start empty (__getstate__)
    transport.processors = {**processor.processors, **changed}
    return transport


#: ``Trainer`` keyword arguments that MultiMedTrainer replaces (they would be skipped silently), and what to use.
_REPLACED_KWARGS = {
    "compute_metrics": "evaluation computes each task's registry metrics (eval_<task>_<metric>, "
                       "MultiMedTrainer.evaluate); score other metrics from predict_task's TaskPredictions",
    "preprocess_logits_for_metrics": "evaluation computes each task's registry metrics from the heads' outputs; "
                                     "score other metrics from predict_task's TaskPredictions",
    "compute_loss_func": "the loss is the model heads' losses combined by the loss weighting: pass loss_weighting= "
                         "(a LossWeighting or a registered name)",
}

_METRICS_PATH = ("evaluation computes each task's registry metrics over all its rows (MultiMedTrainer.evaluate), "
                 "not through compute_metrics")


def _smooth_labels(config, factor: float, tasks: Sequence[str]) -> None:
    """``--label_smoothing_factor``: set ``config.label_smoothing`` (applied by the heads to every single-label class
    output, as Trainer's label smoother does to a model's logits); where none of ``tasks`` has one, a warning and the
    config unchanged (Trainer's own rule for a multi-label model)."""
    if not 0 < factor < 1:
        raise ValueError(f"label_smoothing_factor={factor}: expected a value between 0 and 1")
    smoothed = [name for name in config.smoothed_outputs() if name.split("/")[0] in tasks]
    if not smoothed:  # as Trainer does for a multi-label model: warned, trained without it
        logger.warning("label_smoothing_factor=%s: label smoothing applies to single-label class outputs and the "
                       "tasks trained (%s) have none (multilabel, regression and coordinate outputs are not "
                       "smoothed): not applied", factor, list(tasks))
        return
    if config.label_smoothing and config.label_smoothing != factor:
        logger.info("label_smoothing_factor=%s replaces the model config's label_smoothing=%s", factor,
                    config.label_smoothing)
    config.label_smoothing = float(factor)
    logger.info("label smoothing %s on %s", factor, ", ".join(smoothed))


def refused_arguments(args: TrainingArguments) -> list[str]:
    """Why each ``TrainingArguments`` flag set in ``args`` that MultiMedTrainer cannot honour does not apply, and
    what to use instead (empty when every flag given works): under it these would be skipped silently or crash
    obscurely."""
    refused = []
    flag = partial(getattr, args)  # fields that older transformers 5.x lack count as unset
    if flag("train_sampling_strategy", "random") != "random":
        refused.append(f"train_sampling_strategy={args.train_sampling_strategy!r}: batches are drawn by the task "
                       "batch sampler (every batch holds one task, rows shuffled within their task), which replaces "
                       "Trainer's sampler; choose how tasks share the batches with --sampling proportional|"
                       "temperature|uniform|round_robin (TaskSampling.strategy)")
    if flag("neftune_noise_alpha", None) is not None:
        refused.append(f"neftune_noise_alpha={args.neftune_noise_alpha}: NEFTune adds noise to a model's one token "
                       "embedding (get_input_embeddings) and MultiMedModel has none (each modality's encoder reads "
                       "its own inputs); leave it unset (--modality_dropout regularises across modalities)")
    if flag("use_liger_kernel", False):
        refused.append("use_liger_kernel=True: Liger patches a model by its model_type (Llama, Qwen, ...) and has no "
                       "kernels for MultiMedModel ('multimed'), so nothing would be patched; leave it off")
    if flag("include_num_input_tokens_seen", "no") not in ("no", False):
        refused.append(f"include_num_input_tokens_seen={args.include_num_input_tokens_seen!r}: MultiMedModel's "
                       "inputs are a dict of modalities, not one token tensor, so Trainer would count 0 tokens; "
                       "leave it 'no' (train_samples_per_second counts rows)")
    if flag("label_names", None) is not None and list(args.label_names) != ["labels"]:
        refused.append(f"label_names={args.label_names}: a task's label columns come from the task registry and "
                       "travel in the batch's 'labels' dict; leave it unset")
    if flag("batch_eval_metrics", False):
        refused.append(f"batch_eval_metrics=True: {_METRICS_PATH}; leave it off")
    if flag("include_for_metrics", None):
        refused.append(f"include_for_metrics={args.include_for_metrics}: {_METRICS_PATH}; leave it empty (per-task "
                       "losses are reported as eval_<task>_loss)")
    if not flag("eval_do_concat_batches", True):
        refused.append(f"eval_do_concat_batches=False: {_METRICS_PATH}; leave it True")
    if flag("max_steps", -1) == 0:
        refused.append("max_steps=0: Trainer reads 0 as neither a step count nor unset and trains one step over "
                       "--num_train_epochs' schedule; give a positive number of steps, or -1 to train by epochs")
    for name in ("per_device_train_batch_size", "per_device_eval_batch_size"):
        if flag(name, 1) < 1:
            refused.append(f"{name}={getattr(args, name)}: a batch holds at least one row; give a positive number")
    return refused


class _SyncLossWeighting(TrainerCallback):
    """A learned loss weighting lives outside the model: average its gradients over processes before each
    optimizer step (DDP does the model's) and clear them after it (Trainer's ``model.zero_grad()`` does not)."""

    def __init__(self, weighting: nn.Module):
        self.weighting = weighting

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return
        world = torch.distributed.get_world_size()
        if world < 2:
            return
        for p in self.weighting.parameters():
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            torch.distributed.all_reduce(p.grad)
            p.grad.div_(world)

    def on_optimizer_step(self, args, state, control, **kwargs):
        self.weighting.zero_grad(set_to_none=True)


class _StreamLoader(DataLoader):
    """A DataLoader over an `IterableMultiTaskDataset` whose ``set_epoch`` (called by Trainer) reaches the stream."""

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)


def prediction_arguments(args: TrainingArguments) -> TrainingArguments:
    """``args`` for a trainer that only predicts (``predict_task``): no evaluation or checkpoint schedule, which
    ``Trainer`` refuses without an eval set (a run's default evaluates every epoch), and no label smoothing to set
    (the model keeps the one it was trained with; a task without class outputs warned once per model)."""
    return dataclasses.replace(args, eval_strategy="no", save_strategy="no", load_best_model_at_end=False,
                               label_smoothing_factor=0.0)


# ---------------------------------------------------------------------- the trainer
class MultiMedTrainer(Trainer):
    """`transformers.Trainer` over `MultiMedModel` with one task per batch.

    What it changes, and only that: the training data loader (a `TaskBatchSampler` over a `MultiTaskDataset`,
    rank-aware, resumable), the loss (a `LossWeighting`; ``loss_<task>`` logged beside ``loss``, averaged over
    processes), evaluation (per task of ``eval_datasets``: ``eval_<task>_<metric>``, each row once), the optimizer's
    parameter groups (one per modality encoder), and saving (the processor and a learned loss weighting go with the
    model; a model sharded by FSDP2 under its own class). It sets ``remove_unused_columns=False`` and, unless given,
    ``ddp_find_unused_parameters=True``: ranks train different tasks and rows lack modalities, so some parameters get
    no gradient in a step. FSDP (``--fsdp``) needs every rank to run the same modules in a step: with several tasks
    the trainer turns on lockstep sampling (`TaskSampling.lockstep`: every rank trains the same task in each step,
    streamed data too: `IterableMultiTaskDataset`), and it refuses a task whose rows may lack one of its
    modalities (`training.sharding.check_fsdp_batches`). ``TrainingArguments`` flags that cannot apply here
    (``train_sampling_strategy``, NEFTune, ``compute_metrics``'s options, ...) are refused
    at construction with the reason and what to use instead (`refused_arguments`), never skipped silently; per-task
    batch sizes shrink with ``auto_find_batch_size`` as the default one does; ``label_smoothing_factor`` becomes the
    model config's ``label_smoothing`` (the heads smooth every single-label class loss; with a warning where no
    trained task has one, as Trainer does for a multi-label model).

    Args:
        model: a `MultiMedModel` (or a PEFT model over one).
        args: `TrainingArguments` (bf16, gradient accumulation, gradient checkpointing, ... as usual).
        train_datasets / eval_datasets: task -> its rows (``datasets.Dataset`` with ``sample_id``).
        processor: the `MultiMedProcessor` (saved with every checkpoint).
        sampling: how batches are shared out between tasks (`TaskSampling`); default proportional.
        loss_weighting: a `LossWeighting` or a registered name (``"static"``, ``"uncertainty"``); default static.
        modalities: task -> the modalities read (default: all the task's modalities).
        streaming_options: settings of the interleaved stream when train_datasets are streamed
            (`IterableMultiTaskDataset`: ``shuffle_buffer_size``, ``shuffle_input_shards``, ``sizes``).
        uint8_images: the training rows' 8-bit images travel as uint8 pixel values (`ImageProcessor`'s
            ``output_uint8``, on a copy of the processor: the one saved is unchanged), a quarter of the float32
            bytes from the DataLoader workers to the device, where `_prepare_inputs` rescales and normalises them
            with the modality's `ImageProcessor.normalize`: the same pixel values as the float32 path. Default
            (None): on where training runs on a CUDA device. A collator of your own that alters the training
            batches' ``pixel_values`` sees uint8 values then: set it False.
        trainer_kwargs: anything else `Trainer` takes (``callbacks``, ``optimizers``, ``data_collator``, ...).
    """

    def __init__(self, model=None, args: TrainingArguments | None = None,
                 train_datasets: Mapping[str, Any] | None = None, eval_datasets: Mapping[str, Any] | None = None,
                 processor=None, sampling: TaskSampling | None = None,
                 loss_weighting: LossWeighting | str | None = None,
                 modalities: Mapping[str, Sequence[str]] | None = None,
                 streaming_options: Mapping[str, Any] | None = None, uint8_images: bool | None = None,
                 **trainer_kwargs):
        for key in ("train_dataset", "eval_dataset"):
            if key in trainer_kwargs:
                raise TypeError(f"MultiMedTrainer takes {key.split('_')[0]}_datasets={{task: dataset}}, not {key}")
        for key, instead in _REPLACED_KWARGS.items():
            if trainer_kwargs.get(key) is not None:
                raise TypeError(f"MultiMedTrainer does not take {key}: {instead}")
        if model is None:
            raise ValueError("MultiMedTrainer needs a model (a MultiMedModel)")
        if (train_datasets or eval_datasets) and processor is None:
            raise ValueError("MultiMedTrainer: processor is None; give the MultiMedProcessor that reads the datasets")
        if sampling is not None and not isinstance(sampling, TaskSampling):
            raise TypeError(f"sampling: expected a TaskSampling, got {type(sampling).__name__}")
        args = args if args is not None else TrainingArguments(output_dir="trainer_output")
        self.processor = processor
        self.sampling = sampling if sampling is not None else TaskSampling()
        if args.dataloader_drop_last and not self.sampling.drop_last:  # the task batch sampler's, not DataLoader's
            self.sampling = dataclasses.replace(self.sampling, drop_last=True)
        self.modalities = {t: tuple(m) for t, m in (modalities or {}).items()}
        self.streaming_options = dict(streaming_options or {})
        heads = model.config.heads
        tasks = list(train_datasets or {}) + list(eval_datasets or {})
        missing = sorted({t for t in tasks if t not in heads})
        if missing:
            raise ValueError(f"datasets name tasks {missing} that the model has no head for (heads: {list(heads)})")
        refused = refused_arguments(args)
        if refused:
            raise ValueError("TrainingArguments that MultiMedTrainer cannot honour:\n- " + "\n- ".join(refused))
        if getattr(args, "label_smoothing_factor", 0):
            _smooth_labels(model.config, args.label_smoothing_factor, list(train_datasets or heads))
        args.remove_unused_columns = False
        if args.ddp_find_unused_parameters is None:
            args.ddp_find_unused_parameters = True
        elif not args.ddp_find_unused_parameters and (len(train_datasets or {}) > 1 or any(
                len(self.modalities.get(t, heads[t]["modalities"])) > 1 for t in train_datasets or {})):
            raise ValueError("ddp_find_unused_parameters=False: with several tasks or modalities some parameters get "
                             "no gradient in a step (other ranks' tasks, absent modalities) and DDP fails; leave it "
                             "unset or set it True")
        if any(is_streamed(d) for d in (eval_datasets or {}).values()):
            raise TypeError("eval_datasets: streamed (Iterable) datasets cannot be evaluated row by row across "
                            "processes; give datasets.Dataset evaluation splits (training.loading.materialize)")
        self.uint8_images = args.device.type == "cuda" if uint8_images is None else bool(uint8_images)
        rows = uint8_image_processor(processor) if self.uint8_images and processor is not None else processor
        streamed = bool(train_datasets) and any(is_streamed(d) for d in train_datasets.values())
        if streamed:
            train_dataset = self._streamed_train_dataset(train_datasets, rows, args)
        else:
            train_dataset = (MultiTaskDataset(train_datasets, rows, modalities=self._subset(train_datasets))
                             if train_datasets else None)
        if processor is not None:
            trainer_kwargs.setdefault("data_collator", MultiTaskCollator(processor))
            trainer_kwargs.setdefault("processing_class", processor)
        super().__init__(model=model, args=args, train_dataset=train_dataset,
                         eval_dataset=dict(eval_datasets) if eval_datasets else None, **trainer_kwargs)
        self.label_smoother = None  # the model's heads smooth their own losses (MultiMedConfig.label_smoothing)
        if loss_weighting is None or isinstance(loss_weighting, str):
            loss_weighting = get_loss_weighting(loss_weighting or "static", model.config)
        if not isinstance(loss_weighting, LossWeighting):
            raise TypeError(f"loss_weighting: expected a LossWeighting or a registered name, got "
                            f"{type(loss_weighting).__name__}")
        self.loss_weighting = loss_weighting.to(self.args.device)
        if any(True for _ in self.loss_weighting.parameters()):
            self.add_callback(_SyncLossWeighting(self.loss_weighting))
        if self.is_fsdp_enabled and train_datasets:
            from multimed_hf.training.sharding import check_fsdp_batches

            if len(train_datasets) > 1 and not self.sampling.lockstep:
                self.sampling = dataclasses.replace(self.sampling, lockstep=True)
                if streamed:  # the stream reads its sampling when iterated
                    self.train_dataset.sampling = self.sampling
                logger.info("FSDP with %d tasks: lockstep task sampling on (every process trains the same task in "
                            "each step)", len(train_datasets))
            check_fsdp_batches({t: self.modalities.get(t, tuple(heads[t]["modalities"])) for t in train_datasets},
                               self.args.world_size, lockstep=self.sampling.lockstep)
        in_order = getattr(args, "dataloader_in_order", True)
        if self.sampling.lockstep and not in_order and args.dataloader_num_workers > 1:
            raise ValueError("dataloader_in_order=False with lockstep task sampling: every process must train the "
                             "same task in each step, and batches taken from the workers out of order break that "
                             "(FSDP would hang); leave it True, or use at most one dataloader worker")
        self.train_batch_sampler: TaskBatchSampler | None = None
        self._log_sums: dict[str, torch.Tensor] = {}
        self._log_counts: dict[str, torch.Tensor] = {}

    def _subset(self, datasets: Mapping[str, Any]) -> dict[str, tuple]:
        return {t: m for t, m in self.modalities.items() if t in datasets}

    def _streamed_train_dataset(self, train_datasets: Mapping[str, Any], processor,
                                args: TrainingArguments) -> IterableMultiTaskDataset:
        """Streamed training sets (``load_dataset(..., streaming=True)``, sharded per process) as one interleaved
        stream of one-task batches; tasks given as ``datasets.Dataset`` join as streams."""
        datasets = {t: d if is_streamed(d) else d.to_iterable_dataset() for t, d in train_datasets.items()}
        return IterableMultiTaskDataset(
            datasets, processor, sampling=self.sampling, batch_size=args.train_batch_size,
            seed=args.data_seed if args.data_seed is not None else args.seed, rank=args.process_index,
            world_size=max(1, args.world_size), modalities=self._subset(datasets), **self.streaming_options)

    # ------------------------------------------------------------------ training data
    def get_train_dataloader(self) -> DataLoader:
        """Task batches from a rank-aware `TaskBatchSampler` (accelerate's re-sharding neutralised)."""
        if self.train_dataset is None:
            raise ValueError("MultiMedTrainer: training requires train_datasets")
        args = self.args
        if isinstance(self.train_dataset, IterableMultiTaskDataset):
            return self._streamed_train_dataloader()
        seed = args.data_seed if args.data_seed is not None else args.seed
        sampling = dataclasses.replace(self.sampling, batch_sizes=self._task_batch_sizes(self.sampling.batch_sizes))
        sampler = TaskBatchSampler(self.train_dataset.sizes, sampling, batch_size=self._train_batch_size,
                                   num_replicas=max(1, args.world_size), rank=args.process_index, seed=seed)
        self.train_batch_sampler = sampler
        loader = DataLoader(
            self.train_dataset, batch_sampler=sampler, collate_fn=self.data_collator,
            num_workers=args.dataloader_num_workers, pin_memory=args.dataloader_pin_memory,
            persistent_workers=args.dataloader_persistent_workers,
            multiprocessing_context=args.dataloader_multiprocessing_context,
            prefetch_factor=args.dataloader_prefetch_factor, in_order=args.dataloader_in_order,
            worker_init_fn=partial(seed_worker, num_workers=args.dataloader_num_workers, rank=args.process_index),
        )
        dataloader = self.accelerator.prepare(loader)
        # the sampler already gives this process its share: make accelerate's BatchSamplerShard a passthrough
        shard = getattr(dataloader, "batch_sampler", None)
        if shard is not None and getattr(shard, "batch_sampler", None) is sampler:
            shard.num_processes, shard.process_index = 1, 0
        return dataloader

    def _task_batch_sizes(self, sizes: Mapping[str, int]) -> dict[str, int]:
        """Per-task batch sizes ``sizes`` (set for ``args.train_batch_size``) scaled as ``auto_find_batch_size`` has
        scaled the default one (``_train_batch_size``, lowered after each out-of-memory error)."""
        full, now = self.args.train_batch_size, self._train_batch_size
        if now is None or now == full:
            return dict(sizes)
        return {t: max(1, b * now // full) for t, b in sizes.items()}

    def _streamed_train_dataloader(self) -> DataLoader:
        """Batches straight from the interleaved stream, not prepared by accelerate (its default for an iterable
        dataset, dispatching process 0's batches, would undo the per-process shards); Trainer moves them to the
        device. ``set_epoch`` reaches the stream. With ``dataloader_in_order=False`` (refused under lockstep) workers'
        batches come as they are ready: a resumed run then skips as many batches, not necessarily the same ones."""
        args = self.args
        workers = args.dataloader_num_workers
        self.train_dataset.batch_sizes = self._task_batch_sizes(
            {t: self.sampling.batch_size_of(t, args.train_batch_size) for t in self.train_dataset.batch_sizes})
        return _StreamLoader(
            self.train_dataset, batch_size=None, collate_fn=self.data_collator, num_workers=workers,
            pin_memory=args.dataloader_pin_memory, persistent_workers=args.dataloader_persistent_workers,
            multiprocessing_context=args.dataloader_multiprocessing_context,
            prefetch_factor=args.dataloader_prefetch_factor,
            in_order=getattr(args, "dataloader_in_order", True),
            worker_init_fn=partial(seed_worker, num_workers=workers, rank=args.process_index),
        )

    def get_resumed_dataloader(self, dataloader: DataLoader, num_batches: int) -> DataLoader:
        """Resume mid-epoch inside the sampler (its epoch is set right after this), not by re-wrapping the loader."""
        if isinstance(self.train_dataset, IterableMultiTaskDataset):
            self.train_dataset.skip_batches(num_batches)  # rows read again, not preprocessed
            return dataloader
        if self.train_batch_sampler is not None:
            self.train_batch_sampler.skip_batches(num_batches)
            return dataloader
        return super().get_resumed_dataloader(dataloader, num_batches)

    def _prepare_inputs(self, inputs: dict) -> dict:
        """`Trainer._prepare_inputs` (the batch on the device), then uint8 ``pixel_values`` (``uint8_images``)
        rescaled and normalised there by their modality's `ImageProcessor.normalize`."""
        inputs = super()._prepare_inputs(inputs)
        modalities = inputs.get("inputs")
        if self.processor is None or not isinstance(modalities, Mapping):
            return inputs
        normalized = {}
        for m, tensors in modalities.items():
            values = tensors.get("pixel_values") if isinstance(tensors, Mapping) else None
            if isinstance(values, torch.Tensor) and values.dtype == torch.uint8 and m in IMAGE_MODALITIES:
                tensors = {**tensors, "pixel_values": self.processor.processor_for(m).normalize(values)}
            normalized[m] = tensors
        return {**inputs, "inputs": normalized}

    # ------------------------------------------------------------------ loss and its logs
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        row_index = inputs.get(ROW_INDEX)
        inputs = {k: v for k, v in inputs.items() if k != ROW_INDEX}
        outputs = model(**inputs)
        if self.loss_weighting.reads_batch:  # balancing / distillation weightings read labels and row ids too
            loss, logs = self.loss_weighting.combine(inputs["task"], outputs,
                                                     batch={**inputs, "rows": self._task_rows(
                                                         inputs["task"], row_index if model.training else None)})
        else:
            loss, logs = self.loss_weighting.combine(inputs["task"], outputs)
        if model.training:  # NaN / inf values left out of the per-task logs with logging_nan_inf_filter, as from loss
            for key, value in logs.items():
                value = value.detach().float()
                count = torch.isfinite(value).float() if self.args.logging_nan_inf_filter else torch.ones_like(value)
                value = torch.where(count > 0, value, torch.zeros_like(value))
                self._log_sums[key] = self._log_sums[key] + value if key in self._log_sums else value
                self._log_counts[key] = self._log_counts[key] + count if key in self._log_counts else count
        return (loss, outputs) if return_outputs else loss

    def _task_rows(self, task: str, row_index: torch.Tensor | None) -> torch.Tensor | None:
        """Row ids of a training batch -> each row's index in its task's training dataset (None when unknown)."""
        if row_index is None or self.train_dataset is None or task not in self.train_dataset.offsets:
            return None
        return row_index - self.train_dataset.offsets[task]

    def _reduced_task_logs(self) -> dict[str, float]:
        """Per-task values since the last log, averaged over every process's batches (a collective when
        distributed: every process calls it at the same logging step)."""
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized() and \
            torch.distributed.get_world_size() > 1
        keys = sorted(self._log_sums)
        if distributed:
            gathered: list = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(gathered, keys)
            keys = sorted(set().union(*gathered))
        if not keys:
            return {}
        device = self.args.device
        sums = torch.stack([self._log_sums[k].to(device) if k in self._log_sums else torch.zeros((), device=device)
                            for k in keys])
        counts = torch.stack([torch.as_tensor(self._log_counts.get(k, 0), dtype=torch.float32).to(device)
                              for k in keys])
        if distributed:
            both = torch.cat([sums, counts])
            torch.distributed.all_reduce(both)
            sums, counts = both[:len(keys)], both[len(keys):]
        self._log_sums, self._log_counts = {}, {}
        values = (sums / counts.clamp(min=1)).tolist()
        return {k: round(v, 6) for k, v, c in zip(keys, values, counts.tolist()) if c > 0}

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:  # a training log: every process is here at the same step
            logs = {**logs, **self._reduced_task_logs()}
        super().log(logs, start_time)

    # ------------------------------------------------------------------ optimizer
    def create_optimizer(self, model=None) -> torch.optim.Optimizer:
        """The optimizer over named groups: ``encoder:<m>`` per modality encoder, ``other``, and
        ``loss_weighting`` for a learned weighting (scale a modality's rate through the scheduler's ``base_lrs``)."""
        if self.optimizer is not None:
            return self.optimizer
        opt_model = self.model if model is None else model
        if self.optimizer_cls_and_kwargs is not None:
            optimizer_cls, optimizer_kwargs = self.optimizer_cls_and_kwargs
        else:
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
        extra = list(self.loss_weighting.parameters())
        special = isinstance(optimizer_cls, type) is False or any(
            k in optimizer_kwargs for k in ("params", "model", "optimizer_dict"))
        if special:  # factories and layer-wise optimizers build their own groups
            super().create_optimizer(model)
        else:
            groups = modality_param_groups(opt_model, self.args.weight_decay,
                                           self.get_decay_parameter_names(opt_model))
            self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        if extra:
            self.optimizer.add_param_group({"params": extra, "weight_decay": 0.0, "name": "loss_weighting",
                                            "modalities": []})
        return self.optimizer

    # ------------------------------------------------------------------ saving and resuming
    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        super().save_model(output_dir, _internal_call)
        state = self.loss_weighting.state_dict()
        if state and self.args.should_save:
            from safetensors.torch import save_file

            output_dir = output_dir if output_dir is not None else self.args.output_dir
            os.makedirs(output_dir, exist_ok=True)
            save_file({k: v.detach().cpu().contiguous() for k, v in state.items()},
                      os.path.join(output_dir, LOSS_WEIGHTING_NAME))

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """`Trainer._save`; a model sharded by FSDP2 is saved under its own class, not ``FSDP<class>``: FSDP2 swaps
        the module's class in place, and ``save_pretrained`` would write ``auto_map`` to that class (``AutoModel:
        _fsdp_init.FSDPMultiMedModel``) and copy torch's FSDP files instead of our model code."""
        from torch.distributed.fsdp import FSDPModule

        sharded = type(self.model)
        if not isinstance(self.model, FSDPModule):
            return super()._save(output_dir, state_dict)
        plain = next(c for c in sharded.__mro__[1:] if not issubclass(c, FSDPModule))
        self.model.__class__ = plain  # what fully_shard swapped in; no forward runs while saving
        try:
            super()._save(output_dir, state_dict)
        finally:
            self.model.__class__ = sharded

    def init_hf_repo(self, token: str | None = None, private: bool | None = None) -> None:
        """``Trainer.init_hf_repo`` (``--push_to_hub`` creates the Hub repository before training), with a Hub that
        cannot be reached (no network, a bad endpoint or token) reported as one ``ValueError`` naming the
        repository, not the HTTP client's traceback."""
        try:
            super().init_hf_repo(token=token, private=private)
        except Exception as err:  # the Hub client's connection and HTTP errors: no common base class to name
            from multimed_hf.hub_upload import is_hub_error

            if not is_hub_error(err):
                raise
            repo = self.args.hub_model_id or os.path.basename(os.path.abspath(self.args.output_dir))
            raise ValueError(f"--push_to_hub: the Hub repository {repo!r} could not be created ({type(err).__name__}: "
                             f"{err}); check the network, HF_ENDPOINT and your token, or leave --push_to_hub out") \
                from err

    def create_model_card(self, *args, **kwargs) -> None:
        """The MultiMed model card (``model_card.build_model_card``: tasks, modalities, encoders, fusion) where the
        output folder has none yet, in place of ``Trainer``'s generic one ("fine-tuned version of [] on an unknown
        dataset"); a card already there (``train_model`` writes one with the run's data and metrics) is kept."""
        from multimed_hf.model_card import build_model_card

        path = os.path.join(self.args.output_dir, "README.md")
        if self.is_world_process_zero() and not os.path.isfile(path):
            build_model_card(self.model.config).save(path)

    def _converted_load(self, model: nn.Module, checkpoint: str) -> bool:
        """Load a checkpoint's weights through ``from_pretrained``'s key conversion; False where it does not apply.

        transformers 5 writes checkpoints in the Hub's key format (``save_original_format=True``: a ViT encoder's
        ``layers.0.attention.q_proj`` is saved as ``encoder.layer.0.attention.attention.query``), but
        ``Trainer._load_from_checkpoint`` / ``_load_best_model`` load them with a bare ``load_state_dict``: every
        converted key is missed and training resumes from the random init (huggingface/transformers#48805, open).
        """
        from transformers import PreTrainedModel

        weights = os.path.join(checkpoint, "model.safetensors")
        plain = (isinstance(model, PreTrainedModel) and not self.is_fsdp_enabled and not self.is_deepspeed_enabled
                 and not hasattr(model, "peft_config"))
        if not (plain and os.path.isfile(weights) and os.path.isfile(os.path.join(checkpoint, "config.json"))):
            return False
        reloaded = type(model).from_pretrained(checkpoint, dtype=next(model.parameters()).dtype)
        model.load_state_dict(reloaded.state_dict(), strict=True)
        return True

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        if not self._converted_load(self.model if model is None else model, resume_from_checkpoint):
            super()._load_from_checkpoint(resume_from_checkpoint, model)

    def _finalize_training(self, trial, num_train_samples, start_time):
        """`Trainer._finalize_training` with the loss since the last log averaged over the processes, as every logged
        loss is: transformers adds this process's own, so ``train_loss`` was rank 0's batches for that stretch (in a
        multitask run another mix of tasks than the other ranks')."""
        tr_loss = getattr(self, "_tr_loss", None)
        if isinstance(tr_loss, torch.Tensor) and self.args.world_size > 1:
            from transformers.trainer_pt_utils import nested_gather

            self._tr_loss = nested_gather(tr_loss, self.args.parallel_mode).mean()
        return super()._finalize_training(trial, num_train_samples, start_time)

    def _load_best_model(self) -> None:
        """`Trainer._load_best_model`, and the learned loss weighting of that checkpoint with it (saved beside the
        model afterwards, it was the last step's)."""
        if not self._converted_load(self.model, self.state.best_model_checkpoint):
            super()._load_best_model()
        self._load_loss_weighting(self.state.best_model_checkpoint)

    def _load_loss_weighting(self, checkpoint: str | os.PathLike) -> None:
        """The learned loss weighting saved in ``checkpoint``, where there is one."""
        path = os.path.join(checkpoint, LOSS_WEIGHTING_NAME)
        if os.path.isfile(path):
            from safetensors.torch import load_file

            # read on the CPU and copied into the weighting where it lives: under torchrun with --use_cpu the
            # device is "cpu:0", a name safetensors refuses
            self.loss_weighting.load_state_dict(load_file(path))

    def train(self, resume_from_checkpoint: str | bool | None = None, trial=None, ignore_keys_for_eval=None,
              **kwargs):
        """`Trainer.train`; resuming also restores a learned loss weighting saved in the checkpoint."""
        checkpoint = resume_from_checkpoint
        if checkpoint is True or (isinstance(checkpoint, str) and not checkpoint):
            checkpoint = get_last_checkpoint(self.args.output_dir)
        if isinstance(checkpoint, (str, os.PathLike)):
            self._load_loss_weighting(checkpoint)
            resume_from_checkpoint = checkpoint
        return super().train(resume_from_checkpoint=resume_from_checkpoint, trial=trial,
                             ignore_keys_for_eval=ignore_keys_for_eval, **kwargs)

    # ------------------------------------------------------------------ prediction and evaluation
    def _eval_model(self) -> nn.Module:
        """The model to run without gradient (prepared as `Trainer.evaluation_loop` does)."""
        model = self._wrap_model(self.model, training=False)
        if len(self.accelerator._models) == 0 and model is self.model:
            model = (self.accelerator.prepare(model)
                     if self.is_deepspeed_enabled or (self.is_fsdp_enabled and not self.args.torch_compile)
                     else self.accelerator.prepare_model(model, evaluation_mode=True))
            if self.is_fsdp_enabled:
                self.model = model
            if model is not self.model:
                self.model_wrapped = model
        if not self.is_in_train:
            if self.args.fp16_full_eval:
                model = model.to(dtype=torch.float16, device=self.args.device)
            elif self.args.bf16_full_eval:
                model = model.to(dtype=torch.bfloat16, device=self.args.device)
        return model

    def _eval_batches(self, num_rows: int, batch_size: int) -> list[tuple[list[int], bool]]:
        """This process's batches (sequential rows, every ``world``-th batch), padded with repeats so every
        process runs as many forward passes; each flagged whether it is padding."""
        world, rank = max(1, self.args.world_size), self.args.process_index
        batches = [list(range(i, min(i + batch_size, num_rows))) for i in range(0, num_rows, batch_size)]
        total = math.ceil(len(batches) / world) * world
        flagged = [(batches[i % len(batches)], i >= len(batches)) for i in range(total)] if batches else []
        return flagged[rank::world]

    def predict_task(self, task: str, dataset, split: str | None = None, *, batch_size: int | None = None,
                     modalities: Sequence[str] | None = None) -> TaskPredictions:
        """The model's predictions for every row of ``dataset`` (rows of ``task``), gathered from all processes,
        each row once (padding rows dropped by row index), with the labels where the dataset has them.

        ``modalities`` reads only these of the task's modalities (the others are absent through the presence masks:
        a test-time modality mask); default: the trainer's ``modalities[task]``, else all."""
        from multimed_hf.tasks import get_task

        heads = self.model.config.heads
        if task not in heads:
            raise ValueError(f"predict_task({task!r}): the model has no head for it (heads: {list(heads)})")
        label_names = [label.name for label in get_task(task).labels]
        has_labels = all(name in dataset.column_names for name in label_names)
        read = {task: tuple(modalities)} if modalities is not None else self._subset({task: None})
        data = MultiTaskDataset({task: dataset}, self.processor, modalities=read, labels=has_labels)
        batches = self._eval_batches(len(data), batch_size or self.args.eval_batch_size)
        flags = iter([pad for _, pad in batches])
        # in order (the padding flags follow the batches); a loader per call, so workers do not persist across calls
        loader = DataLoader(data, batch_sampler=[b for b, _ in batches], collate_fn=self.data_collator,
                            num_workers=self.args.dataloader_num_workers, pin_memory=self.args.dataloader_pin_memory,
                            prefetch_factor=self.args.dataloader_prefetch_factor,
                            multiprocessing_context=self.args.dataloader_multiprocessing_context)
        model = self._eval_model()
        model.eval()
        rows, outputs, references, masks = [], {}, {}, {}
        loss_sum, loss_rows = 0.0, 0
        for batch in loader:
            padding = next(flags)
            batch = self._prepare_inputs(batch)
            index = batch.pop(ROW_INDEX)
            with torch.no_grad(), self.autocast_smart_context_manager():
                out = model(**batch)
            if padding:
                continue
            rows.append(index.cpu().numpy())
            collect_batch(out.logits, batch.get("labels"), outputs, references, masks)
            if out.loss is not None:
                loss_sum += float(out.loss) * len(index)
                loss_rows += len(index)
        payload = {"rows": rows, "outputs": outputs, "references": references, "masks": masks,
                   "loss": (loss_sum, loss_rows)}
        parts = [payload]
        if self.args.world_size > 1 and torch.distributed.is_initialized():
            parts = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(parts, payload)
        order = np.concatenate([r for p in parts for r in p["rows"]]) if len(data) else np.zeros(0, dtype=np.int64)
        unique, first = np.unique(order, return_index=True)  # sorted by row index, each row once

        def merged(key: str, fill_float: float = math.nan) -> dict[str, np.ndarray]:
            columns = list(dict.fromkeys(c for p in parts for c in p[key]))
            return {c: stack_rows([a for p in parts for a in p[key].get(c, [])], fill_float)[first] for c in columns}

        loss_sum = sum(p["loss"][0] for p in parts)
        loss_rows = sum(p["loss"][1] for p in parts)
        ids = list(dataset["sample_id"]) if "sample_id" in dataset.column_names else [str(i) for i in range(len(data))]
        metadata = {c: [values[int(i)] for i in unique] for c in metadata_columns(task)
                    if c in dataset.column_names for values in [list(dataset[c])]}
        predictions = TaskPredictions(
            task=task, sample_ids=[ids[int(i)] for i in unique], outputs=merged("outputs", 0.0),
            references=merged("references"), masks=merged("masks"), head_spec=heads[task], split=split,
            row_indices=unique, loss=loss_sum / loss_rows if loss_rows else None, metadata=metadata,
        )
        if has_labels:
            warn_cut_chains(task, split, whole_chains(predictions, dataset))
        return predictions

    def evaluate(self, eval_dataset=None, ignore_keys: list[str] | None = None,
                 metric_key_prefix: str = "eval") -> dict[str, float]:
        """Per task of the eval sets: ``<prefix>_<task>_<metric>`` (``<prefix>_<task>_<column>_<metric>`` where the
        task has several label columns) from the registry metrics, ``<prefix>_<task>_loss``, and ``<prefix>_loss``
        (the mean over tasks); with ``prediction_loss_only`` the losses alone. ``eval_dataset``: {task: dataset}, one
        task's name, or None (the trainer's)."""
        sets = self.eval_dataset if eval_dataset is None else eval_dataset
        if isinstance(eval_dataset, str):
            sets = {eval_dataset: self.eval_dataset[eval_dataset]}
        if not isinstance(sets, Mapping) or not sets:
            raise ValueError("evaluate: give eval_datasets={task: dataset} (to the trainer or here)")
        self._memory_tracker.start()
        start = time.time()
        metrics: dict[str, float] = {}
        losses, rows = [], 0
        for task, dataset in sets.items():
            predictions = self.predict_task(task, dataset)
            rows += len(predictions)
            if predictions.loss is not None:
                metrics[f"{metric_key_prefix}_{task}_loss"] = predictions.loss
                losses.append(predictions.loss)
            per_column = predictions.metrics() if predictions.references and not self.args.prediction_loss_only \
                else {}
            several = len(predictions.head_spec["outputs"]) > 1
            for column, values in per_column.items():
                for name, value in values.items():
                    key = f"{metric_key_prefix}_{task}_{column}_{name}" if several else \
                        f"{metric_key_prefix}_{task}_{name}"
                    metrics[key] = float(value)
        if losses:
            metrics[f"{metric_key_prefix}_loss"] = float(np.mean(losses))
        metrics.update(speed_metrics(metric_key_prefix, start, num_samples=rows))
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        self._memory_tracker.stop_and_update_metrics(metrics)
        return metrics
