"""Several tasks' datasets as one dataset (indexable, or streamed and interleaved), and the collator that makes one
task's batch with row ids."""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import logging
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset

__all__ = ["MultiTaskDataset", "IterableMultiTaskDataset", "MultiTaskCollator", "ROW_INDEX", "is_streamed",
           "streamed_size", "undecoded_images", "decodes_at_draft_scale", "draft_decode"]

logger = logging.getLogger(__name__)

#: The batch key carrying each row's index in its `MultiTaskDataset` (de-duplicates distributed evaluation).
ROW_INDEX = "row_index"


def decodes_at_draft_scale(processor) -> bool:
    """Whether one of ``processor``'s image processors decodes JPEGs at a reduced scale (``draft_size``)."""
    from multimed_hf.processors.image import ImageProcessor

    procs = getattr(processor, "processors", None) or {}
    return any(isinstance(p, ImageProcessor) and p.draft_size is not None for p in procs.values())


def draft_decode(processor) -> dict[str, int]:
    """Set every image processor of ``processor`` to decode JPEGs at the smallest reduced scale that keeps the size
    it resizes to (``draft_size`` = `output_side`, Pillow's draft mode); returns key -> draft size."""
    from multimed_hf.processors.image import ImageProcessor, output_side

    sizes = {}
    for key, proc in (getattr(processor, "processors", None) or {}).items():
        if isinstance(proc, ImageProcessor):
            side = output_side(proc.image_processor)
            if side is None:
                raise ValueError(f"draft decode: the {key!r} image processor ({type(proc.image_processor).__name__}) "
                                 "names no output size; set its draft_size with --processor_overrides instead")
            proc.draft_size = sizes[key] = side
    return sizes


def undecoded_images(dataset, processor):
    """``dataset`` with its image columns read undecoded (``datasets.Image(decode=False)``: the file's bytes) where
    ``processor`` decodes images at a reduced scale (`decodes_at_draft_scale`): datasets would decode them fully
    first, and a decoded image has no reduced scale left. The image processor then decodes them as
    ``datasets.Image`` does (EXIF orientation included), at the draft scale. ``dataset`` itself otherwise."""
    from datasets import Image

    features = getattr(dataset, "features", None)
    if not features or not decodes_at_draft_scale(processor):
        return dataset
    for name, feature in features.items():
        if isinstance(feature, Image) and feature.decode:
            dataset = dataset.cast_column(name, Image(decode=False))
    return dataset


class MultiTaskDataset(Dataset):
    """Tasks' row datasets laid end to end: index ``i`` is row ``i - offsets[task]`` of ``task``.

    Rows are read raw and preprocessed when they are read (``MultiMedProcessor.preprocess``), as
    ``Dataset.with_transform`` would: images are decoded per batch, never converted with ``with_format("torch")``
    (by the image processor, at its draft scale, where it has one: `undecoded_images`). A batch of indices is read
    with one ``datasets`` call (``__getitems__``).

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
        self.datasets = {t: undecoded_images(d, processor) for t, d in datasets.items()}
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


def is_streamed(dataset) -> bool:
    """Whether ``dataset`` is read as a stream (``datasets.IterableDataset`` or a torch ``IterableDataset``), i.e.
    has no random access."""
    if isinstance(dataset, IterableDataset):
        return True
    try:
        from datasets import IterableDataset as HFIterableDataset
    except ImportError:  # pragma: no cover - datasets is a dependency
        return False
    return isinstance(dataset, HFIterableDataset)


def streamed_size(dataset) -> int | None:
    """Rows of a streamed split as its dataset info records them (the whole split, before filters, ``take`` or
    sharding across processes); ``None`` when unknown."""
    info = getattr(dataset, "info", None)
    splits = getattr(info, "splits", None) or {}
    split = getattr(dataset, "split", None)
    entry = splits.get(str(split)) if split is not None else None
    size = getattr(entry, "num_examples", None)
    return int(size) if size else None


class IterableMultiTaskDataset(IterableDataset):
    """Streamed tasks' rows (``datasets.IterableDataset`` per task, e.g. ``load_dataset(..., streaming=True)``
    sharded per process with ``split_dataset_by_node``) interleaved into one endless stream of one-task batches.

    Each item is one batch: a list of preprocessed rows of one task (use a ``DataLoader`` with ``batch_size=None``
    and `MultiTaskCollator`). Which task the next batch comes from is drawn with the sampling strategy's weights
    (``TaskSampling.weights`` over the tasks' sizes; ``round_robin`` cycles), from a generator seeded with
    ``(seed, epoch, rank, worker)``: the stream is the same for the same seed, epoch, process and DataLoader worker.
    A task's rows are read in passes over its stream, each pass shuffled (``IterableDataset.shuffle`` with a shuffle
    buffer) with a seed of ``(seed, epoch, task, pass)`` shared by every process, so the processes' shards of one
    pass are disjoint; a batch that reaches the end of a pass is filled from the next one. The stream never ends:
    train with ``max_steps``.

    With ``sampling.lockstep`` (FSDP, ``--task_lockstep``) every process yields the same task at the same batch
    index, without communication:

    - the tasks come in *cycles* drawn from ``(seed, epoch, cycle)`` only (not the rank, not the DataLoader worker):
      each cycle holds every task's quota, the batches a process gets of it in one epoch of the map-style lockstep
      sampler (`TaskBatchSampler.rounds` over the whole splits' sizes and ``world_size``: about
      ``ceil(n_t / world_size / b_t)`` for proportional), in an order shuffled per cycle (``round_robin``: cycled).
      A task whose size is unknown (no ``sizes`` entry, no recorded split size) makes every quota 1 (equal weights,
      logged), as the free stream falls back to equal weights;
    - DataLoader workers share one sequence: worker ``w`` of ``W`` makes the batches ``w, w + W, ...`` of it, which
      the DataLoader's round robin puts back in order, so the sequence is the same for any ``num_workers``;
    - shards of unequal sizes: a task's rows are read in passes that never end (each process restarts its own
      shard, reshuffled, whenever it runs out), so no process's stream ends before another's; a process with fewer
      rows re-reads them sooner. A process or worker with *no* rows of a task cannot make its batches: that raises
      (give every task at least processes x workers shards, or fewer workers);
    - ``skip_batches(n)`` skips the sequence's first ``n`` batches in every process alike (same tasks after it; the
      same rows too when ``n`` is a multiple of the workers: the DataLoader restarts at worker 0);
    - ``set_epoch`` changes every cycle's order, alike in every process (the Trainer calls it on every process).

    Args:
        datasets: task -> its streamed rows (with ``sample_id`` and the registry's columns).
        processor: the `MultiMedProcessor` that turns a row into model inputs.
        sampling: a `TaskSampling` (strategy, temperature, size cap, per-task batch sizes); default proportional.
        batch_size: rows per batch of tasks without their own size in ``sampling.batch_sizes``.
        sizes: task -> rows, for the strategy's weights; default the splits' recorded sizes (`streamed_size`); a
            task whose size is unknown makes ``proportional`` / ``temperature`` fall back to equal weights (logged).
        seed: the seed of the stream (``sampling.seed`` wins when set).
        rank: this process's index (the processes' streams differ; their datasets should be sharded per process).
        world_size: the processes sharing the data (lockstep quotas are per process: the split's size / world_size).
        modalities: task -> the modalities read (default all).
        shuffle_buffer_size: rows held by each task's shuffle buffer (0: no shuffling).
        shuffle_input_shards: shards of a task feeding its buffer at a time (``IterableDataset.shuffle``'s
            ``max_buffer_input_shards``): several mix sources that sit in separate shards; 1 avoids the pause
            ``datasets`` makes at the end of each interleaved pass (small data read in many passes).
        labels: encode the label columns.
    """

    def __init__(self, datasets: Mapping[str, Any], processor, *, sampling=None, batch_size: int = 8,
                 sizes: Mapping[str, int] | None = None, seed: int = 0, rank: int = 0, world_size: int = 1,
                 modalities: Mapping[str, Sequence[str]] | None = None, shuffle_buffer_size: int = 1000,
                 shuffle_input_shards: int = 10, labels: bool = True):
        from multimed_hf.training.sampling import SamplingError, TaskSampling

        if not datasets:
            raise ValueError("IterableMultiTaskDataset: datasets is empty; give {task: streamed dataset}")
        sampling = sampling if sampling is not None else TaskSampling()
        if not isinstance(sampling, TaskSampling):
            raise TypeError(f"sampling: expected a TaskSampling, got {type(sampling).__name__}")
        if batch_size < 1:
            raise SamplingError(f"batch_size={batch_size}: expected a positive integer")
        unknown = sorted((set(sampling.batch_sizes) | set(modalities or {}) | set(sizes or {})) - set(datasets))
        if unknown:
            raise ValueError(f"IterableMultiTaskDataset: settings name tasks {unknown} that have no dataset; tasks: "
                             f"{list(datasets)}")
        if world_size < 1:
            raise ValueError(f"IterableMultiTaskDataset: world_size={world_size}: expected a positive number of "
                             f"processes")
        if shuffle_buffer_size < 0:
            raise ValueError(f"shuffle_buffer_size={shuffle_buffer_size}: expected 0 (no shuffling) or more rows")
        if shuffle_input_shards < 1:
            raise ValueError(f"shuffle_input_shards={shuffle_input_shards}: expected a positive number of shards")
        self.datasets = dict(datasets)
        self.processor = processor
        self.sampling = sampling
        self.tasks = list(self.datasets)
        self.batch_sizes = {t: sampling.batch_size_of(t, batch_size) for t in self.tasks}
        self.sizes = {t: (sizes or {}).get(t) or streamed_size(d) for t, d in self.datasets.items()}
        self.datasets = {t: undecoded_images(d, processor) for t, d in self.datasets.items()}
        self.seed = int(sampling.seed if sampling.seed is not None else seed)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.modalities = {t: tuple(m) for t, m in (modalities or {}).items()}
        self.shuffle_buffer_size = int(shuffle_buffer_size)
        self.shuffle_input_shards = int(shuffle_input_shards)
        self.labels = bool(labels)
        self.offsets: dict[str, int] = {}  # no global row index (MultiMedTrainer._task_rows gives None)
        self.epoch = 0
        self._skip = 0

    def weights(self) -> dict[str, float]:
        """Relative chance of each task for the next batch: proportional and temperature shares are of rows, so a
        task's chance is its share over its batch size (as `TaskBatchSampler` counts batches)."""
        if self.sampling.strategy in ("proportional", "temperature") and any(n is None for n in self.sizes.values()):
            unknown = [t for t, n in self.sizes.items() if n is None]
            logger.warning("streamed tasks %s record no size: %s sampling falls back to equal weights", unknown,
                           self.sampling.strategy)
            return {t: 1.0 for t in self.tasks}
        weights = self.sampling.weights({t: int(n) for t, n in self.sizes.items()})
        if self.sampling.strategy in ("proportional", "temperature"):
            weights = {t: w / self.batch_sizes[t] for t, w in weights.items()}
        return weights

    @property
    def lockstep(self) -> bool:
        """Whether every process yields the same task at the same batch index (``sampling.lockstep``)."""
        return bool(self.sampling.lockstep)

    def cycle_quotas(self) -> dict[str, int]:
        """Lockstep: batches of each task in one cycle of the sequence, in every process: its batches per process in
        one epoch of the map-style lockstep sampler (`TaskBatchSampler.rounds` over the splits' sizes and
        ``world_size``); all 1 when a task's size is unknown (logged)."""
        from multimed_hf.training.sampling import TaskBatchSampler

        unknown = [t for t, n in self.sizes.items() if n is None]
        if unknown:
            logger.warning("streamed tasks %s record no size: lockstep cycles give every task one batch (equal "
                           "weights, not %s); give their sizes (streaming_options sizes) for the strategy's quotas",
                           unknown, self.sampling.strategy)
            return {t: 1 for t in self.tasks}
        settings = dataclasses.replace(self.sampling, batch_sizes=self.batch_sizes, lockstep=True, drop_last=False)
        sampler = TaskBatchSampler({t: int(n) for t, n in self.sizes.items()}, settings, batch_size=1,
                                   num_replicas=self.world_size, seed=self.seed)
        return sampler.rounds()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def skip_batches(self, num_batches: int) -> None:
        """Make the next pass start after its first ``num_batches`` batches (the Trainer's resume), reading their
        rows from the streams without preprocessing them."""
        if num_batches < 0:
            raise ValueError(f"skip_batches({num_batches}): expected a count >= 0")
        self._skip = int(num_batches)

    def _rows(self, task: str, index: int) -> Iterator[dict | None]:
        """The task's rows, pass after pass; ``None`` marks a pass that held no row (for this process/worker)."""
        dataset = self.datasets[task]
        passes = 0
        while True:
            data = dataset
            if self.shuffle_buffer_size:
                state = np.random.SeedSequence([self.seed, self.epoch, index, passes]).generate_state(1)[0]
                data = dataset.shuffle(seed=int(state), buffer_size=self.shuffle_buffer_size,
                                       max_buffer_input_shards=self.shuffle_input_shards)
            empty = True
            for row in data:
                empty = False
                yield row
            if empty:
                yield None
                return
            passes += 1

    def _order(self, worker: tuple[int, int]) -> Iterator[str]:
        """The endless sequence of the batches' tasks without lockstep (drawn per process and worker)."""
        if self.sampling.strategy == "round_robin":
            while True:
                yield from self.tasks
        weights = self.weights()
        p = np.array([weights[t] for t in self.tasks], dtype=np.float64)
        p = p / p.sum()
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, self.epoch, self.rank, *worker]))
        while True:
            for i in rng.choice(len(self.tasks), size=1024, p=p):
                yield self.tasks[int(i)]

    def _lockstep_order(self) -> Iterator[str]:
        """Lockstep: the endless sequence of the batches' tasks, cycle after cycle, alike in every process and
        worker (drawn from ``(seed, epoch, cycle)``)."""
        from multimed_hf.training.sampling import round_order

        quotas = self.cycle_quotas()
        quotas = {t: quotas[t] for t in self.tasks}  # in the tasks' order: round_robin cycles it
        for cycle in itertools.count():
            rng = np.random.default_rng(np.random.SeedSequence([self.seed, self.epoch, cycle]))
            yield from round_order(quotas, self.sampling.strategy, rng)

    def __iter__(self) -> Iterator[list[dict]]:
        info = torch.utils.data.get_worker_info()
        worker = (info.id, info.num_workers) if info is not None else (0, 1)
        skip, self._skip = self._skip, 0
        streams = {t: self._rows(t, i) for i, t in enumerate(self.tasks)}
        try:
            if self.lockstep:
                yield from self._lockstep_batches(streams, worker, skip)
            else:
                skip = len(range(worker[0], skip, worker[1]))  # batches of a DataLoader's workers alternate
                yield from self._batches(streams, worker, skip)
        finally:  # a DataLoader that stops reading closes the task streams (and their readers) now
            for stream in streams.values():
                stream.close()

    def _take(self, streams: Mapping[str, Iterator], task: str) -> list[dict]:
        """The task's next batch of rows (fewer when its stream holds none in this process/worker)."""
        rows = []
        while len(rows) < self.batch_sizes[task]:
            row = next(streams[task])
            if row is None:
                break
            rows.append(row)
        return rows

    def _preprocess(self, rows: Sequence[dict], task: str, counts: dict[str, int]) -> list[dict]:
        items = []
        for row in rows:
            item = self.processor.preprocess(row, task, self.labels, self.modalities.get(task))
            item[ROW_INDEX] = counts[task]  # position in this process's stream of the task
            counts[task] += 1
            items.append(item)
        return items

    def _lockstep_batches(self, streams: Mapping[str, Iterator], worker: tuple[int, int],
                          skip: int) -> Iterator[list[dict]]:
        """Worker ``w`` of ``W``: batches ``w, w + W, ...`` of the shared sequence after its first ``skip``
        (whose rows, of this worker's share ``g % W == w``, are read and dropped, as the uninterrupted run read
        them)."""
        from multimed_hf.training.sampling import SamplingError

        index, workers = worker
        counts = {t: 0 for t in self.tasks}
        for position, task in enumerate(self._lockstep_order()):
            skipped = position < skip
            if (position if skipped else position - skip) % workers != index:
                continue
            rows = self._take(streams, task)
            if len(rows) < self.batch_sizes[task]:
                raise SamplingError(
                    f"lockstep: task {task!r} has no rows in the stream of process {self.rank} (DataLoader worker "
                    f"{index} of {workers}), so it cannot make its batch at position {position} of the sequence "
                    f"every process shares; every process and worker must read rows of every task: give the task at "
                    f"least {self.world_size * workers} shards (processes x workers; split_dataset_by_node gives "
                    f"a process whole shards when their number divides by the processes, and a DataLoader worker "
                    f"gets whole shards), or fewer dataloader workers")
            if skipped:
                counts[task] += len(rows)
                continue
            yield self._preprocess(rows, task, counts)

    def _batches(self, streams: Mapping[str, Iterator], worker: tuple[int, int], skip: int) -> Iterator[list[dict]]:
        live = set(self.tasks)
        counts = {t: 0 for t in self.tasks}
        for task in self._order(worker):
            if task not in live:
                if not live:
                    return
                continue
            rows = self._take(streams, task)
            if len(rows) < self.batch_sizes[task]:
                live.discard(task)
                logger.warning("task %r has no rows in this process's stream (rank %d, worker %d): left out",
                               task, self.rank, worker[0])
                if not live:
                    return
                continue
            if skip:
                skip -= 1
                counts[task] += len(rows)
                continue
            yield self._preprocess(rows, task, counts)


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
