"""Lockstep over streamed tasks (issue 15, FSDP with --streaming): two simulated processes (``rank`` 0/1 of 2, each
task's stream sharded with ``split_dataset_by_node`` over in-memory IterableDatasets of unequal shards), with 0 and 2
DataLoader workers, yield the same task at every batch index; quotas per cycle, refills, set_epoch, resume; and the
real ``multimed train --streaming --fsdp`` in 2 gloo processes runs the same task on both ranks in every step."""

import json
import os
from collections import Counter

import numpy as np
import pytest
from datasets import IterableDataset
from datasets.distributed import split_dataset_by_node
from torch.utils.data import DataLoader

from multimed_hf.training.data import IterableMultiTaskDataset
from multimed_hf.training.sampling import SAMPLING_STRATEGIES, SamplingError, TaskSampling
from tests.test_fsdp2 import HERE, _torchrun, two_task_dir  # noqa: F401  (two_task_dir: brain_tumor + cell_type)

#: rows per shard: "a" has 4 shards (divisible by 2 processes: each process reads whole shards, 0+2 = 14 rows and
#: 1+3 = 6 rows), "b" has 3 (not divisible: each process reads every other row of every shard, 6 rows each)
SHARDS = {"a": [9, 2, 5, 4], "b": [3, 4, 5]}
SIZES = {t: sum(s) for t, s in SHARDS.items()}  # the whole splits: 20 and 12 rows
BATCH_SIZES = {"a": 2, "b": 3}
WORLD = 2


def _generate(shards, prefix):
    for shard in shards:
        for i in shard:
            yield {"sample_id": f"{prefix}-{i}"}


def _stream(task: str) -> IterableDataset:
    """A task's rows ``<task>-0 ...`` in shards of the sizes of ``SHARDS[task]`` (one shard per list of gen_kwargs)."""
    bounds = np.cumsum([0, *SHARDS[task]])
    shards = [list(range(start, stop)) for start, stop in zip(bounds[:-1], bounds[1:])]
    return IterableDataset.from_generator(_generate, gen_kwargs={"shards": shards, "prefix": task})


class EchoProcessor:
    """Stands in for MultiMedProcessor: a row becomes its task and sample id (the order of the rows is under test
    here, not their processing; the trainer test below runs the real processor)."""

    def preprocess(self, row, task, labels, modalities):
        return {"task": task, "sample_id": row["sample_id"]}


def _dataset(rank: int, strategy: str = "proportional", *, lockstep: bool = True, seed: int = 0, sizes=SIZES,
             shuffle_buffer_size: int = 100, **sampling) -> IterableMultiTaskDataset:
    streams = {t: split_dataset_by_node(_stream(t), rank=rank, world_size=WORLD) for t in SHARDS}
    return IterableMultiTaskDataset(
        streams, EchoProcessor(), sampling=TaskSampling(strategy, lockstep=lockstep, batch_sizes=BATCH_SIZES,
                                                        **sampling),
        sizes=sizes, seed=seed, rank=rank, world_size=WORLD, shuffle_buffer_size=shuffle_buffer_size,
        shuffle_input_shards=1)


def _batch(items):
    return items[0]["task"], [item["sample_id"] for item in items]


def _read(dataset, n: int, workers: int = 0) -> list[tuple[str, list[str]]]:
    """The first ``n`` batches, through a DataLoader as the trainer reads them, as (task, sample ids)."""
    batches = []
    for batch in DataLoader(dataset, batch_size=None, num_workers=workers, collate_fn=_batch):
        batches.append(batch)
        if len(batches) == n:
            break
    return batches


def _tasks(batches):
    return [task for task, _ in batches]


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("strategy", SAMPLING_STRATEGIES)
def test_both_processes_yield_the_same_task_at_every_batch(strategy, workers):
    ranks = [_read(_dataset(rank, strategy), 30, workers) for rank in range(WORLD)]
    assert _tasks(ranks[0]) == _tasks(ranks[1])
    assert set(_tasks(ranks[0])) == set(SHARDS)
    for batches in ranks:
        for task, ids in batches:
            assert len(ids) == BATCH_SIZES[task] and all(i.startswith(f"{task}-") for i in ids)
    # one sequence for any number of DataLoader workers (worker w makes its batches w, w + W, ...)
    assert _tasks(ranks[0]) == _tasks(_read(_dataset(0, strategy), 30, 2 - workers))


def test_without_lockstep_each_process_draws_its_own_tasks():
    free = [_tasks(_read(_dataset(rank, lockstep=False), 30)) for rank in range(WORLD)]
    assert free[0] != free[1]



def test_without_lockstep_a_tasks_chance_is_its_share_of_rows_over_its_batch_size():
    # before: rows 20 : 12 went to batches, so "a" (batches of 2) got 62% of the batches where its pass is 10 of 14
    weights = _dataset(0, "proportional", lockstep=False).weights()
    assert weights == pytest.approx({"a": 20 / 2, "b": 12 / 3})
    weights = _dataset(0, "temperature", lockstep=False, temperature=2.0).weights()
    assert weights == pytest.approx({"a": 20 ** 0.5 / 2, "b": 12 ** 0.5 / 3})

@pytest.mark.parametrize("strategy, quotas", [
    # batches per process per cycle = the map-style lockstep sampler's rounds: a = 20 rows / 2 processes / 2 rows,
    # b = 12 / 2 / 3; uniform: 10 + 4 = 14 batches shared 7 + 7, per process ceil(7 / 2) = 4 each;
    # temperature (T=2): 14 batches in proportion of rows sqrt(20) : sqrt(12) over batch sizes 2 : 3 -> 9.23, 4.77
    # -> 9 and 5 -> 5 and 3 rounds
    ("proportional", {"a": 5, "b": 2}),
    ("uniform", {"a": 4, "b": 4}),
    ("round_robin", {"a": 4, "b": 4}),
    ("temperature", {"a": 5, "b": 3}),
])
def test_every_cycle_holds_each_tasks_quota(strategy, quotas):
    dataset = _dataset(0, strategy)
    assert dataset.cycle_quotas() == quotas
    cycle = sum(quotas.values())
    tasks = _tasks(_read(dataset, 3 * cycle))
    cycles = [tasks[k * cycle:(k + 1) * cycle] for k in range(3)]
    for k, one in enumerate(cycles):
        assert Counter(one) == Counter(quotas), k
    if strategy == "round_robin":
        assert cycles[0] == ["a", "b"] * 4
    else:  # each cycle's order is drawn anew
        assert len({tuple(one) for one in cycles}) > 1


def test_a_process_with_fewer_rows_restarts_its_shard_and_one_with_more_reads_on():
    # no shuffling: process 0 reads a's shards 0 and 2 (rows 0-8, 11-15), process 1 shards 1 and 3 (9-10, 16-19)
    ranks = [_read(_dataset(rank, shuffle_buffer_size=0), 14) for rank in range(WORLD)]  # two cycles of 7 batches
    a = [[i for task, ids in batches if task == "a" for i in ids] for batches in ranks]
    first = [f"a-{i}" for i in [*range(9), *range(11, 16)]]
    second = [f"a-{i}" for i in (9, 10, 16, 17, 18, 19)]
    assert a[0] == first + first[:6]  # 10 rows per cycle: 4 of its 14 rows open the second cycle, then a restart
    assert a[1] == (second * 4)[:20]  # 6 rows: the shortfall is refilled from the start of its shard, each cycle
    b = [[i for task, ids in batches if task == "b" for i in ids][:6] for batches in ranks]  # the first cycle
    assert b[0] == [f"b-{i}" for i in range(0, 12, 2)]  # 3 shards: every other row of every shard
    assert b[1] == [f"b-{i}" for i in range(1, 12, 2)]


def test_unknown_sizes_give_every_task_one_batch_per_cycle(caplog):
    with caplog.at_level("WARNING"):
        ranks = [_read(_dataset(rank, sizes=None), 12) for rank in range(WORLD)]
    assert "lockstep cycles give every task one batch" in caplog.text
    assert _tasks(ranks[0]) == _tasks(ranks[1])
    for k in range(0, 12, 2):
        assert sorted(_tasks(ranks[0])[k:k + 2]) == ["a", "b"]


def test_set_epoch_changes_the_order_alike_on_every_process():
    def order(rank, epoch):
        dataset = _dataset(rank, "uniform")
        dataset.set_epoch(epoch)
        return _tasks(_read(dataset, 24))

    assert order(0, 0) == order(1, 0)
    assert order(0, 1) == order(1, 1)
    assert order(0, 1) != order(0, 0)
    assert _tasks(_read(_dataset(0, "uniform", seed=1), 24)) != order(0, 0)


@pytest.mark.parametrize("workers, skip", [(0, 5), (2, 6), (2, 5)])
def test_resume_by_skip_batches_continues_the_same_sequence(workers, skip):
    whole = [_read(_dataset(rank), 20, workers) for rank in range(WORLD)]
    resumed = []
    for rank in range(WORLD):
        dataset = _dataset(rank)
        dataset.skip_batches(skip)
        resumed.append(_read(dataset, 20 - skip, workers))
    for rank in range(WORLD):
        assert _tasks(resumed[rank]) == _tasks(whole[rank])[skip:]
        if skip % max(workers, 1) == 0:  # the DataLoader restarts at worker 0: the same worker makes each batch
            assert resumed[rank] == whole[rank][skip:]
    assert _tasks(resumed[0]) == _tasks(resumed[1])


def test_a_worker_without_rows_of_a_task_is_refused_rather_than_parting_the_sequences():
    # one shard of "c": with 2 DataLoader workers the second reads none of it, and cannot make c's batches
    streams = {"a": _stream("a"), "c": IterableDataset.from_generator(
        _generate, gen_kwargs={"shards": [list(range(4))], "prefix": "c"})}
    dataset = IterableMultiTaskDataset(streams, EchoProcessor(), sampling=TaskSampling("round_robin", lockstep=True),
                                       batch_size=2, rank=0, world_size=1, shuffle_input_shards=1)
    with pytest.raises(SamplingError, match=r"task 'c' has no rows in the stream of process 0 \(DataLoader worker 1 "
                                            r"of 2\).*at least 2 shards"):
        _read(dataset, 8, workers=2)
    assert _tasks(_read(dataset, 4)) == ["a", "c"] * 2  # without workers it has the rows


def test_world_size_must_be_positive():
    with pytest.raises(ValueError, match=r"world_size=0: expected a positive number of processes"):
        IterableMultiTaskDataset({"a": _stream("a")}, EchoProcessor(), world_size=0)


# ---------------------------------------------------------------------- the trainer
def test_the_trainer_trains_streamed_tasks_in_lockstep(tmp_path):
    import torch
    from training_tiny import brain_tumor, diabetic_retinopathy, tiny_model, tiny_processor
    from transformers import TrainingArguments

    from multimed_hf.training.trainer import MultiMedTrainer

    tasks = ["brain_tumor", "diabetic_retinopathy"]
    model = tiny_model(tasks)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, max_steps=4, per_device_train_batch_size=2,
                             report_to="none", save_strategy="no", disable_tqdm=True, logging_steps=2)
    streamed = {"brain_tumor": brain_tumor(8).to_iterable_dataset(num_shards=2),
                "diabetic_retinopathy": diabetic_retinopathy(6).to_iterable_dataset(num_shards=2)}
    trainer = MultiMedTrainer(model=model, args=args, processor=tiny_processor(), train_datasets=streamed,
                              sampling=TaskSampling("round_robin", lockstep=True),
                              streaming_options={"sizes": {"brain_tumor": 8, "diabetic_retinopathy": 6},
                                                 "shuffle_input_shards": 1})
    assert trainer.train_dataset.lockstep and trainer.train_dataset.world_size == 1
    assert trainer.train_dataset.cycle_quotas() == {"brain_tumor": 4, "diabetic_retinopathy": 3}
    assert trainer.train().global_step == 4
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert all("loss_brain_tumor" in h and "loss_diabetic_retinopathy" in h for h in logged)
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


# ---------------------------------------------------------------------- two real processes
def test_multimed_train_streaming_under_fsdp2_trains_the_same_task_on_both_ranks(two_task_dir, tmp_path):
    """``multimed train --streaming --fsdp`` over two tasks in 2 gloo processes (tests/fsdp2_train_worker.py turns on
    accelerate's FSDP state for CPU processes, as test_fsdp2.py does): the trainer turns lockstep on by itself (it
    refused streamed tasks under FSDP before) and both ranks run the same task in every micro-batch."""
    out, task_log = tmp_path / "run", tmp_path / "tasks"
    task_log.mkdir()
    # uniform: 37 batches of each task per cycle (a built folder records its split sizes: 28 and 560 rows), in an
    # order drawn per cycle; without lockstep each rank would draw its own
    command = ["--data", str(two_task_dir), "--tasks", "brain_tumor", "cell_type", "--family", "multimodal_multitask",
               "--encoders", "small", "--output_dir", str(out), "--use_cpu", "--fsdp", "--fsdp_config",
               '{"version": 2}', "--streaming", "--sampling", "uniform", "--max_steps", "4",
               "--gradient_accumulation_steps", "2", "--per_device_train_batch_size", "4", "--eval_strategy", "no",
               "--save_strategy", "no", "--logging_steps", "4", "--disable_tqdm", "true", "--max_eval_samples", "8",
               "--eval_splits", "test", "--bootstrap_samples", "5", "--seed", "0"]
    os.environ["FSDP2_TASK_LOG"] = str(task_log)
    try:
        _torchrun(HERE / "fsdp2_train_worker.py", *command)
    finally:
        del os.environ["FSDP2_TASK_LOG"]
    info = json.loads((out / "run_info.json").read_text())
    assert info["world_size"] == 2 and info["sharding"]["fsdp2"] and info["sharding"]["mesh_size"] == 2
    ran = [json.loads((task_log / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ran[0] == ran[1] and len(ran[0]) == 8  # every micro-batch (4 steps x 2): one task on both ranks
    assert set(ran[0]) == {"brain_tumor", "cell_type"}
    logged = [h for h in json.loads((out / "trainer_state.json").read_text())["log_history"] if "loss" in h]
    assert logged and all("loss_brain_tumor" in h and "loss_cell_type" in h for h in logged)
