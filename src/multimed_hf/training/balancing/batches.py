"""One task's rows as model batches, a batch with modalities masked out through its presence masks, and devices."""

from __future__ import annotations

from typing import Any, Iterator, Mapping, Sequence

import torch
from torch.utils.data import DataLoader

from multimed_hf.training.data import ROW_INDEX, MultiTaskCollator, MultiTaskDataset

__all__ = ["BalancingError", "task_batches", "restrict_batch", "to_device", "has_labels", "unwrap_model"]


class BalancingError(ValueError):
    """A balancing or distillation option that cannot apply to the model, tasks or data it was given."""


def has_labels(task: str, dataset) -> bool:
    """Whether ``dataset`` holds every label column of ``task``."""
    from multimed_hf.tasks import get_task

    return all(label.name in dataset.column_names for label in get_task(task).labels)


def task_batches(processor, task: str, dataset, *, batch_size: int = 32, modalities: Sequence[str] | None = None,
                 labels: bool | None = None, device: torch.device | str | None = None) -> Iterator[tuple]:
    """``(rows, batch)`` for consecutive rows of ``dataset`` (a task's ``datasets.Dataset``): ``rows`` the rows'
    indices in ``dataset`` (LongTensor [B]), ``batch`` the model's keyword arguments (``task``, ``inputs``,
    ``presence`` and, where the dataset has them, ``labels``), on ``device``."""
    if batch_size < 1:
        raise BalancingError(f"batch_size={batch_size}: expected a positive number of rows")
    labels = has_labels(task, dataset) if labels is None else labels
    data = MultiTaskDataset({task: dataset}, processor, labels=labels,
                            modalities={task: tuple(modalities)} if modalities is not None else None)
    chunks = [list(range(i, min(i + batch_size, len(data)))) for i in range(0, len(data), batch_size)]
    for batch in DataLoader(data, batch_sampler=chunks, collate_fn=MultiTaskCollator(processor)):
        rows = batch.pop(ROW_INDEX)
        yield rows, to_device(batch, device)


def to_device(value: Any, device) -> Any:
    """Tensors of a nested batch moved to ``device`` (``None``: left where they are)."""
    if device is None:
        return value
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, Mapping):
        return {k: to_device(v, device) for k, v in value.items()}
    return value


def restrict_batch(batch: Mapping[str, Any], keep: Sequence[str]) -> tuple[dict | None, torch.Tensor]:
    """The batch reading only the modalities in ``keep`` (the others absent through the presence masks, their
    inputs dropped), without the rows left with none: ``(batch or None when no row is left, kept [B] bool)``.

    No model is changed: this is the test-time modality mask of the utilisation rate and of a unimodal teacher."""
    presence = batch["presence"]
    size = next(iter(presence.values())).shape[0]
    device = next(iter(presence.values())).device
    kept = torch.zeros(size, dtype=torch.bool, device=device)
    for m in keep:
        if m in presence:
            kept |= presence[m].bool()
    if not bool(kept.any()):
        return None, kept
    inputs, new_presence = {}, {}
    for m, mask in presence.items():
        mask = mask.bool()
        if m not in keep:
            new_presence[m] = torch.zeros(int(kept.sum()), dtype=torch.bool, device=device)
            continue
        new_presence[m] = mask[kept]
        if m in batch["inputs"] and bool(new_presence[m].any()):
            selected = kept[mask]  # of the rows holding m, those kept
            inputs[m] = {k: v[selected] for k, v in batch["inputs"][m].items()}
    out = {"task": batch["task"], "inputs": inputs, "presence": new_presence}
    if batch.get("labels") is not None:
        out["labels"] = {k: v[kept] for k, v in batch["labels"].items()}
    return out, kept


def unwrap_model(model):
    """The module itself under DDP / accelerate wrappers (``.module``)."""
    while hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
        model = model.module
    return model
