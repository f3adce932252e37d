"""Several tasks' datasets as one indexable dataset, and the collator that makes one task's batch with row ids."""

from __future__ import annotations

import bisect
from typing import Any, Mapping, Sequence

import torch
from torch.utils.data import Dataset

__all__ = ["MultiTaskDataset", "MultiTaskCollator", "ROW_INDEX"]

#: The batch key carrying each row's index in its `MultiTaskDataset` (de-duplicates distributed evaluation).
ROW_INDEX = "row_index"


class MultiTaskDataset(Dataset):
    """Tasks' row datasets laid end to end: index ``i`` is row ``i - offsets[task]`` of ``task``.

    Rows are read raw and preprocessed when they are read (``MultiMedProcessor.preprocess``), as
    ``Dataset.with_transform`` would: images are decoded per batch, never converted with ``with_format("torch")``.
    A batch of indices is read with one ``datasets`` call (``__getitems__``).

    Args:
        datasets: task -> its rows (a ``datasets.Dataset`` with ``sample_id`` and the registry's columns).
        processor: the `MultiMedProcessor` that turns a row into model inputs.
        modalities: task -> the modalities read (a family may read fewer than the task has); default all.
        labels: encode the label columns (``False`` for data without labels).
    """

    def __init__(self, datasets: Mapping[str, Any], processor, *, modalities: Mapping[str, Sequence[str]] | None = None,
                 labels: bool = True):
        if not datasets:
            raise ValueError("MultiTaskDataset: datasets is empty; give {task: dataset}")
        unknown = sorted(set(modalities or {}) - set(datasets))
        if unknown:
            raise ValueError(f"MultiTaskDataset: modalities names tasks {unknown} that have no dataset; tasks: "
                             f"{list(datasets)}")
        self.datasets = dict(datasets)
        self.processor = processor
        self.modalities = {t: tuple(m) for t, m in (modalities or {}).items()}
        self.labels = bool(labels)
        self.tasks = list(self.datasets)
        self.sizes = {t: len(d) for t, d in self.datasets.items()}
        self.offsets: dict[str, int] = {}
        start = 0
        for t in self.tasks:
            self.offsets[t] = start
            start += self.sizes[t]
        self._starts = list(self.offsets.values())
        self._length = start

    def __len__(self) -> int:
        return self._length

    def locate(self, index: int) -> tuple[str, int]:
        """(task, row index within the task's dataset) of a global index."""
        if not -self._length <= index < self._length:
            raise IndexError(f"index {index} is out of range for a MultiTaskDataset of {self._length} rows")
        index = index % self._length
        position = bisect.bisect_right(self._starts, index) - 1
        task = self.tasks[position]
        return task, index - self.offsets[task]

    def task_of(self, index: int) -> str:
        return self.locate(index)[0]

    def _item(self, row: Mapping[str, Any], task: str, index: int) -> dict:
        item = self.processor.preprocess(row, task, self.labels, self.modalities.get(task))
        item[ROW_INDEX] = index
        return item

    def __getitem__(self, index: int) -> dict:
        task, local = self.locate(int(index))
        return self._item(self.datasets[task][local], task, int(index))

    def __getitems__(self, indices: Sequence[int]) -> list[dict]:
        """Rows of a batch, read task by task with one ``datasets`` call each (the DataLoader's batched fetch)."""
        located = [self.locate(int(i)) for i in indices]
        items: list[dict | None] = [None] * len(located)
        by_task: dict[str, list[int]] = {}
        for position, (task, _) in enumerate(located):
            by_task.setdefault(task, []).append(position)
        for task, positions in by_task.items():
            columns = self.datasets[task][[located[p][1] for p in positions]]
            names = list(columns)
            for k, p in enumerate(positions):
                row = {name: columns[name][k] for name in names}
                items[p] = self._item(row, task, int(indices[p]))
        return items


class MultiTaskCollator:
    """Preprocessed rows of one task -> ``processor.collate``'s batch plus ``row_index`` (LongTensor [B]).

    Keys come in the order ``labels``, ``presence``, ``row_index``, ``task``, ``inputs``: Trainer takes the batch
    size from the first tensor it finds, which must span every row (``inputs[m]`` holds only rows with ``m``).
    """

    def __init__(self, processor):
        self.processor = processor

    def __call__(self, items: Sequence[dict]) -> dict:
        batch = self.processor.collate(items)
        ordered: dict[str, Any] = {}
        if "labels" in batch:
            ordered["labels"] = batch["labels"]
        ordered["presence"] = batch["presence"]
        ordered[ROW_INDEX] = torch.tensor([item[ROW_INDEX] for item in items], dtype=torch.long)
        ordered["task"] = batch["task"]
        ordered["inputs"] = batch["inputs"]
        return ordered
