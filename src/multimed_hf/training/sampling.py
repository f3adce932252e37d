"""Task batch sampling: every batch holds one task, one schedule per (seed, epoch) alike on every process."""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from typing import Iterator, Mapping

import numpy as np
from torch.utils.data import Sampler

__all__ = ["SAMPLING_STRATEGIES", "SamplingError", "TaskSampling", "TaskBatchSampler", "round_order"]

#: How batches are shared out between tasks (see `TaskSampling`).
SAMPLING_STRATEGIES = ("proportional", "temperature", "uniform", "round_robin")


class SamplingError(ValueError):
    """A task-sampling setting or a task's size that cannot give batches."""


@dataclass
class TaskSampling:
    """How the task batch sampler shares batches out between tasks.

    An epoch has as many batches as one pass over every task's rows (``sum_t ceil(n_t / b_t)``, ``floor`` with
    ``drop_last``); the strategy decides how many of them each task gets:

    - ``"proportional"``: each task its own pass (every row once per epoch); with ``size_cap``, rows in
      proportion to ``min(n_t, size_cap)`` (T5's examples-proportional mixing with a cap).
    - ``"temperature"``: rows in proportion to ``min(n_t, size_cap) ** (1 / temperature)`` (T=1: proportional;
      large T: the same number of rows for every task).
    - ``"uniform"``: the same number of batches for every task.
    - ``"round_robin"``: as uniform, in a fixed cycle over the tasks instead of a shuffled order.

    Proportional and temperature shares are of rows: a task's batches are its share over its batch size
    (``batch_sizes``), so a task with larger batches gets fewer of them, as in its own pass.

    A task's quota is exact (largest remainder), the order of the batches is shuffled from ``(seed, epoch)``, and a
    task's rows come from successive shuffles of its rows (a small task repeats, a large one is partly seen), each
    shuffle cut into batches with a smaller last batch unless ``drop_last``.

    With ``lockstep``, the schedule is made of *rounds*: ``num_replicas`` consecutive batches of one task, so that in
    every step all processes train the same task (on different rows), as FSDP needs (every rank must run the same
    sharded modules in a step). A task's quota becomes ``ceil(quota / num_replicas)`` rounds (the batches that fill
    its last round come from its next shuffle: every row of a proportional task is still seen each epoch), the
    rounds' order is shuffled from ``(seed, epoch)`` (``round_robin``: cycled), and the frequencies above hold in
    rounds. With one process, lockstep changes nothing.

    Args:
        strategy: one of ``SAMPLING_STRATEGIES``.
        temperature: T of temperature sampling (> 0).
        size_cap: rows counted at most per task when weighting tasks (proportional and temperature).
        batch_sizes: rows per batch of each task (e.g. images 64, genomics 256); other tasks take the default
            (``TrainingArguments.per_device_train_batch_size``).
        seed: the schedule's seed; ``None`` takes ``TrainingArguments.data_seed``, else ``seed``.
        drop_last: drop the smaller last batch of each pass over a task, and the schedule's tail that does not fill
            one batch per process (with ``lockstep`` there is no such tail: every round fills all processes).
        lockstep: every process trains the same task in each step (rounds of ``num_replicas`` batches of one task);
            the trainer turns it on for FSDP with several tasks.
    """

    strategy: str = "proportional"
    temperature: float = 2.0
    size_cap: int | None = None
    batch_sizes: dict[str, int] | None = field(default=None)
    seed: int | None = None
    drop_last: bool = False
    lockstep: bool = False

    def __post_init__(self):
        if self.strategy not in SAMPLING_STRATEGIES:
            close = difflib.get_close_matches(str(self.strategy), SAMPLING_STRATEGIES, n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise SamplingError(f"TaskSampling.strategy={self.strategy!r} is not one of {SAMPLING_STRATEGIES}{hint}")
        if not (isinstance(self.temperature, (int, float)) and math.isfinite(self.temperature)
                and self.temperature > 0):
            raise SamplingError(f"TaskSampling.temperature={self.temperature!r}: expected a finite number > 0")
        if self.size_cap is not None and (not isinstance(self.size_cap, int) or self.size_cap < 1):
            raise SamplingError(f"TaskSampling.size_cap={self.size_cap!r}: expected a positive integer or None")
        if not isinstance(self.lockstep, bool):
            raise SamplingError(f"TaskSampling.lockstep={self.lockstep!r}: expected True or False")
        self.batch_sizes = dict(self.batch_sizes or {})
        for task, size in self.batch_sizes.items():
            if isinstance(size, bool) or not isinstance(size, int) or size < 1:
                raise SamplingError(f"TaskSampling.batch_sizes[{task!r}]={size!r}: expected a positive integer")

    def batch_size_of(self, task: str, default: int) -> int:
        """Rows per batch of ``task``."""
        return self.batch_sizes.get(task, default)

    def weights(self, sizes: Mapping[str, int]) -> dict[str, float]:
        """Relative share per task before quotas are rounded: of rows for proportional and temperature (the
        sampler divides by each task's batch size), of batches for round_robin and uniform (equal)."""
        cap = self.size_cap if self.size_cap is not None else math.inf
        if self.strategy in ("uniform", "round_robin"):
            return {t: 1.0 for t in sizes}
        power = 1.0 if self.strategy == "proportional" else 1.0 / self.temperature
        return {t: float(min(n, cap)) ** power for t, n in sizes.items()}


def round_order(rounds: Mapping[str, int], strategy: str, rng: np.random.Generator) -> list[str]:
    """The task of each round, ``rounds[t]`` of task ``t``: shuffled with ``rng``, or for ``round_robin`` cycled
    over the tasks in their order (``rng`` unused)."""
    if strategy == "round_robin":
        order, left = [], dict(rounds)
        while any(left.values()):
            for t in rounds:
                if left[t]:
                    order.append(t)
                    left[t] -= 1
        return order
    order = [t for t, n in rounds.items() for _ in range(n)]
    return [order[i] for i in rng.permutation(len(order))]


def _quotas(weights: Mapping[str, float], total: int) -> dict[str, int]:
    """``total`` split in proportion to ``weights`` (largest remainder; ties go to the earlier task), every task with
    weight at least one batch where ``total`` allows: a deterministic quota that rounds to 0 would leave the task
    untrained in every epoch (T5's mixing draws it now and then), so each such batch is taken from the task with the
    most."""
    tasks = list(weights)
    norm = sum(weights.values())
    exact = [total * weights[t] / norm for t in tasks]
    counts = [math.floor(x) for x in exact]
    order = sorted(range(len(tasks)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[: total - sum(counts)]:
        counts[i] += 1
    for i in range(len(tasks)):
        if counts[i] == 0 and weights[tasks[i]] > 0:
            donor = max(range(len(tasks)), key=lambda k: (counts[k], -k))
            if counts[donor] > 1:
                counts[donor] -= 1
                counts[i] = 1
    return dict(zip(tasks, counts))


class TaskBatchSampler(Sampler[list[int]]):
    """Batches of global row indices over a `MultiTaskDataset` (tasks laid end to end), each batch one task.

    The whole schedule is a function of ``(seed, epoch)``: every process computes the same one without
    communication and takes batches ``rank, rank + num_replicas, ...`` of it (the pattern of transformers'
    ``BatchRebalanceSampler``); the tail is padded from the schedule's start so that every process gets the same
    number of batches (or cut, with ``drop_last``). ``set_epoch`` picks the epoch; ``skip_batches(n)`` makes the
    next pass start after this process's first ``n`` batches (the Trainer's resume), landing on exactly the batches
    an uninterrupted run would have seen.

    With ``sampling.lockstep`` the schedule is a sequence of rounds of ``num_replicas`` batches of one task (no
    padding needed), so the processes' ``k``-th batches are always of the same task (and size, with ``drop_last``),
    in every micro-batch of a gradient-accumulation step too.

    Args:
        task_sizes: task -> number of rows, in the dataset's order (``MultiTaskDataset.sizes``).
        sampling: the strategy and its settings (`TaskSampling`).
        batch_size: rows per batch of tasks without their own size in ``sampling.batch_sizes``.
        num_replicas / rank: data-parallel processes and this one's index.
        seed: used when ``sampling.seed`` is None.
    """

    def __init__(self, task_sizes: Mapping[str, int], sampling: TaskSampling | None = None, *, batch_size: int = 8,
                 num_replicas: int = 1, rank: int = 0, seed: int = 0):
        sampling = sampling if sampling is not None else TaskSampling()
        if not isinstance(sampling, TaskSampling):
            raise TypeError(f"sampling: expected a TaskSampling, got {type(sampling).__name__}")
        if not task_sizes:
            raise SamplingError("task_sizes is empty: give at least one task with rows")
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise SamplingError(f"rank={rank}, num_replicas={num_replicas}: expected 0 <= rank < num_replicas")
        if batch_size < 1:
            raise SamplingError(f"batch_size={batch_size}: expected a positive integer")
        unknown = sorted(set(sampling.batch_sizes) - set(task_sizes))
        if unknown:
            raise SamplingError(f"TaskSampling.batch_sizes names tasks {unknown} that have no training rows; tasks: "
                                f"{list(task_sizes)}")
        self.task_sizes = {str(t): int(n) for t, n in task_sizes.items()}
        self.sampling = sampling
        self.batch_sizes = {t: sampling.batch_size_of(t, batch_size) for t in self.task_sizes}
        for t, n in self.task_sizes.items():
            if n < 1:
                raise SamplingError(f"task {t!r} has no rows to sample")
            if sampling.drop_last and n < self.batch_sizes[t]:
                raise SamplingError(f"task {t!r} has {n} rows, fewer than its batch size {self.batch_sizes[t]}, and "
                                    f"drop_last=True would drop them all; lower its batch size or set drop_last=False")
        self.offsets = dict(zip(self.task_sizes, np.cumsum([0, *self.task_sizes.values()])[:-1].tolist()))
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)
        self.seed = int(sampling.seed if sampling.seed is not None else seed)
        self.epoch = 0
        self._skip = 0
        split = math.floor if sampling.drop_last else math.ceil
        self.batches_per_pass = {t: split(n / self.batch_sizes[t]) for t, n in self.task_sizes.items()}
        self.num_global_batches = sum(self.batches_per_pass.values())
        if sampling.drop_last and not sampling.lockstep and self.num_global_batches < self.num_replicas:
            raise SamplingError(f"an epoch has {self.num_global_batches} batches, fewer than the {self.num_replicas} "
                                f"processes, and drop_last=True would drop them all")

    # ------------------------------------------------------------------ the schedule
    @property
    def round_size(self) -> int:
        """Consecutive batches of one task in the global schedule: ``num_replicas`` with lockstep, else 1."""
        return self.num_replicas if self.sampling.lockstep else 1

    def rounds(self) -> dict[str, int]:
        """Rounds (``round_size`` batches of one task) of each task in one epoch: the strategy's quota of batches,
        rounded up to whole rounds with lockstep."""
        if self.sampling.strategy == "proportional" and self.sampling.size_cap is None:
            quotas = dict(self.batches_per_pass)
        else:  # shares of rows, so batches in proportion to a task's share over its batch size
            weights = self.sampling.weights(self.task_sizes)
            if self.sampling.strategy in ("proportional", "temperature"):
                weights = {t: w / self.batch_sizes[t] for t, w in weights.items()}
            quotas = _quotas(weights, self.num_global_batches)
        return {t: math.ceil(q / self.round_size) for t, q in quotas.items()}

    def quotas(self) -> dict[str, int]:
        """Batches of each task in one epoch's global schedule (before padding to the processes)."""
        return {t: r * self.round_size for t, r in self.rounds().items()}

    def schedule(self, epoch: int | None = None) -> list[tuple[str, list[int]]]:
        """The epoch's global schedule, ``(task, global row indices)`` per batch, as every process computes it
        (rounds of ``round_size`` batches of one task, in an order shuffled from ``(seed, epoch)``)."""
        epoch = self.epoch if epoch is None else int(epoch)
        tasks = list(self.task_sizes)
        streams = np.random.SeedSequence([self.seed, epoch]).spawn(len(tasks) + 1)
        rounds = self.rounds()
        per_task = {t: self._task_batches(t, rounds[t] * self.round_size, np.random.default_rng(streams[i + 1]))
                    for i, t in enumerate(tasks)}
        order = round_order({t: rounds[t] for t in tasks}, self.sampling.strategy, np.random.default_rng(streams[0]))
        taken = {t: 0 for t in tasks}
        schedule = []
        for t in order:  # one round: round_size batches of task t
            schedule.extend((t, batch) for batch in per_task[t][taken[t]:taken[t] + self.round_size])
            taken[t] += self.round_size
        return schedule

    def _task_batches(self, task: str, count: int, rng: np.random.Generator) -> list[list[int]]:
        """``count`` batches of one task: successive shuffles of its rows, each cut into batches."""
        n, size, offset = self.task_sizes[task], self.batch_sizes[task], self.offsets[task]
        batches: list[list[int]] = []
        while len(batches) < count:
            order = (rng.permutation(n) + offset).tolist()
            stop = n - n % size if self.sampling.drop_last else n
            batches.extend(order[i:i + size] for i in range(0, stop, size))
        return batches[:count]

    def local_schedule(self, epoch: int | None = None) -> list[tuple[str, list[int]]]:
        """This process's share of the epoch's schedule (padded or cut so that every process has as many)."""
        schedule = self.schedule(epoch)
        if len(schedule) % self.num_replicas:
            if self.sampling.drop_last:
                schedule = schedule[: len(schedule) - len(schedule) % self.num_replicas]
            else:
                pad = self.num_replicas - len(schedule) % self.num_replicas
                schedule = schedule + (schedule * math.ceil(pad / len(schedule)))[:pad]
        return schedule[self.rank::self.num_replicas]

    # ------------------------------------------------------------------ Sampler API
    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def skip_batches(self, num_batches: int) -> None:
        """Make the next pass start after this process's first ``num_batches`` batches of the current epoch."""
        if num_batches < 0:
            raise SamplingError(f"skip_batches({num_batches}): expected a count >= 0")
        self._skip = int(num_batches)

    def __len__(self) -> int:
        if self.sampling.lockstep:  # one batch per process in every round
            return sum(self.rounds().values())
        whole, rest = divmod(self.num_global_batches, self.num_replicas)
        return whole + (1 if rest and not self.sampling.drop_last else 0)

    def __iter__(self) -> Iterator[list[int]]:
        skip, self._skip = self._skip, 0
        for _, batch in self.local_schedule()[skip:]:
            yield batch
