"""The task batch sampler: quotas per strategy, one task per batch, the same schedule on every rank, resume."""

from collections import Counter

import pytest
import torch
from torch.utils.data import DataLoader

from multimed_hf.training.data import MultiTaskCollator, MultiTaskDataset
from multimed_hf.training.sampling import SAMPLING_STRATEGIES, SamplingError, TaskBatchSampler, TaskSampling

SIZES = {"a": 100, "b": 20, "c": 5}  # batch size 5: one pass = 20 + 4 + 1 = 25 batches


def _sampler(strategy="proportional", sizes=SIZES, batch_size=5, **kwargs):
    sampling_keys = {"temperature", "size_cap", "batch_sizes", "seed", "drop_last"}
    sampling = TaskSampling(strategy, **{k: v for k, v in kwargs.items() if k in sampling_keys})
    rest = {k: v for k, v in kwargs.items() if k not in sampling_keys}
    return TaskBatchSampler(sizes, sampling, batch_size=batch_size, **rest)


def _task_of(index, sizes=SIZES):
    start = 0
    for task, n in sizes.items():
        if start <= index < start + n:
            return task
        start += n
    raise AssertionError(index)


@pytest.mark.parametrize("strategy,kwargs,expected", [
    ("proportional", {}, {"a": 20, "b": 4, "c": 1}),  # one pass over each task
    # cap 20: weights 20, 20, 5 of 25 batches -> 11.1, 11.1, 2.8 -> largest remainder 11, 11, 3
    ("proportional", {"size_cap": 20}, {"a": 11, "b": 11, "c": 3}),
    # T=2: weights 10, 4.47, 2.24 -> 14.96, 6.69, 3.35 of 25 -> 15, 7, 3
    ("temperature", {"temperature": 2.0}, {"a": 15, "b": 7, "c": 3}),
    # T=2 with cap 20: weights 4.47, 4.47, 2.24 -> 10, 10, 5
    ("temperature", {"temperature": 2.0, "size_cap": 20}, {"a": 10, "b": 10, "c": 5}),
    ("uniform", {}, {"a": 9, "b": 8, "c": 8}),
    ("round_robin", {}, {"a": 9, "b": 8, "c": 8}),
])
def test_each_strategy_gives_each_task_its_share_of_batches(strategy, kwargs, expected):
    sampler = _sampler(strategy, **kwargs)
    for epoch in (0, 1):
        schedule = sampler.schedule(epoch)
        assert len(schedule) == 25
        counts = Counter(task for task, _ in schedule)
        assert dict(counts) == expected
        for task, batch in schedule:  # every batch holds rows of its task only
            assert {_task_of(i) for i in batch} == {task}


def test_temperature_one_is_proportional_and_a_high_temperature_is_uniform():
    prop = Counter(t for t, _ in _sampler("proportional", size_cap=1000).schedule())
    assert Counter(t for t, _ in _sampler("temperature", temperature=1.0).schedule()) == prop
    assert Counter(t for t, _ in _sampler("temperature", temperature=1e6).schedule()) == \
        Counter(t for t, _ in _sampler("uniform").schedule())



def test_shares_are_of_rows_where_tasks_take_different_batch_sizes():
    # before: the shares went to batches, so temperature 1 gave task a (100 rows, batches of 32) 5 of 11 batches,
    # 160 rows, where its own pass (proportional) is 4 batches
    batch = {"a": 32, "c": 2}
    prop = Counter(t for t, _ in _sampler("proportional", batch_sizes=batch).schedule())
    assert prop == {"a": 4, "b": 4, "c": 3}
    assert Counter(t for t, _ in _sampler("temperature", temperature=1.0, batch_sizes=batch).schedule()) == prop
    assert Counter(t for t, _ in _sampler("proportional", size_cap=1000, batch_sizes=batch).schedule()) == prop
    # cap 20: rows 20, 20, 5 -> batches 20/32, 20/5, 5/2 of 11 -> 0.96, 6.16, 3.85 -> 1, 6, 4
    assert Counter(t for t, _ in _sampler("proportional", size_cap=20, batch_sizes=batch).schedule()) == \
        {"a": 1, "b": 6, "c": 4}

@pytest.mark.parametrize("sampling", [TaskSampling("proportional", size_cap=1000), TaskSampling("temperature",
                                                                                             temperature=1.0)])
def test_a_task_whose_share_rounds_to_zero_still_gets_a_batch_each_epoch(sampling):
    # before: 3 rows beside 1,000 got 0 of 33 batches in every epoch: never trained, silently, yet scored
    sampler = TaskBatchSampler({"A": 1000, "B": 3}, sampling, batch_size=32)
    assert sampler.quotas() == {"A": 32, "B": 1}
    assert Counter(task for task, _ in sampler.schedule(0)) == {"A": 32, "B": 1}


def test_proportional_sees_every_row_once_per_epoch_and_shuffles_between_epochs():
    sampler = _sampler("proportional", seed=3)
    rows = [i for _, batch in sampler.schedule(0) for i in batch]
    assert sorted(rows) == list(range(sum(SIZES.values())))
    assert sampler.schedule(0) != sampler.schedule(1)
    assert sampler.schedule(0) == _sampler("proportional", seed=3).schedule(0)  # reproducible
    assert sampler.schedule(0) != _sampler("proportional", seed=4).schedule(0)


def test_round_robin_cycles_through_the_tasks_in_order():
    order = [t for t, _ in _sampler("round_robin").schedule()]
    assert order[:6] == ["a", "b", "c", "a", "b", "c"]
    assert order[-1] == "a"  # the remainder batch goes to the first task


def test_small_tasks_repeat_their_rows_in_whole_shuffles():
    schedule = _sampler("uniform", seed=0).schedule(0)
    rows_c = [i for t, batch in schedule if t == "c" for i in batch]
    assert len(rows_c) == 8 * 5  # 8 batches of task c (5 rows): 8 whole shuffles
    for k in range(8):
        assert sorted(rows_c[5 * k:5 * k + 5]) == list(range(120, 125))


def test_per_task_batch_sizes():
    sampler = _sampler("proportional", batch_sizes={"a": 32, "c": 2})
    sizes = {}
    for task, batch in sampler.schedule():
        sizes.setdefault(task, []).append(len(batch))
    assert sorted(sizes["a"]) == [4, 32, 32, 32] and sorted(sizes["b"]) == [5] * 4 and sorted(sizes["c"]) == [1, 2, 2]
    dropped = _sampler("proportional", batch_sizes={"a": 32, "c": 2}, drop_last=True)
    assert {len(b) for t, b in dropped.schedule() if t == "a"} == {32}


@pytest.mark.parametrize("strategy", SAMPLING_STRATEGIES)
@pytest.mark.parametrize("drop_last", [False, True])
def test_ranks_compute_one_schedule_and_take_disjoint_shards(strategy, drop_last):
    ranks = [_sampler(strategy, num_replicas=2, rank=r, seed=7, drop_last=drop_last) for r in (0, 1)]
    for epoch in (0, 2):
        for s in ranks:
            s.set_epoch(epoch)
        assert ranks[0].schedule() == ranks[1].schedule()  # computed apart, no communication
        local = [list(s) for s in ranks]
        assert len(local[0]) == len(local[1]) == len(ranks[0])  # every rank steps as often
        glob = ranks[0].schedule()
        assert len(local[0]) * 2 == (len(glob) - len(glob) % 2 if drop_last else len(glob) + len(glob) % 2)
        # interleaved, the shards give back the global schedule (padded from its start when odd)
        interleaved = [b for pair in zip(*local) for b in pair]
        assert interleaved[:len(glob)] == [b for _, b in glob][:len(interleaved)]
        if strategy == "proportional" and not drop_last:
            rows0 = [i for b in local[0] for i in b]
            rows1 = [i for b in local[1][: len(glob) - len(local[0])] for i in b]  # rank 1 less its padding
            assert not set(rows0) & set(rows1)  # the ranks' shards share no row within the epoch's pass
            assert sorted(rows0 + rows1) == list(range(125))


@pytest.mark.parametrize("replicas", [1, 2, 3])
@pytest.mark.parametrize("drop_last", [False, True])
def test_length_is_what_iteration_yields(replicas, drop_last):
    for rank in range(replicas):
        s = _sampler("temperature", num_replicas=replicas, rank=rank, drop_last=drop_last)
        assert len(list(s)) == len(s)


def test_skip_batches_resumes_on_the_same_batches_once():
    sampler = _sampler("temperature", num_replicas=2, rank=1, seed=11)
    sampler.set_epoch(3)
    full = list(sampler)
    sampler.skip_batches(5)
    assert list(sampler) == full[5:]
    assert list(sampler) == full  # the skip applies to one pass only


def test_settings_are_checked_with_clear_messages():
    with pytest.raises(SamplingError, match="did you mean 'temperature'"):
        TaskSampling("temprature")
    with pytest.raises(SamplingError, match="temperature"):
        TaskSampling("temperature", temperature=0)
    with pytest.raises(SamplingError, match="batch_sizes\\['a'\\]"):
        TaskSampling(batch_sizes={"a": 0})
    with pytest.raises(SamplingError, match="task 'c' has 5 rows, fewer than its batch size 8"):
        _sampler(batch_size=8, drop_last=True)
    with pytest.raises(SamplingError, match="names tasks \\['z'\\]"):
        _sampler(batch_sizes={"z": 4})


def test_a_loader_over_the_multitask_dataset_gives_one_task_per_batch_with_row_ids():
    from training_tiny import brain_tumor, diabetic_retinopathy, tiny_processor

    processor = tiny_processor()
    data = MultiTaskDataset({"brain_tumor": brain_tumor(7), "diabetic_retinopathy": diabetic_retinopathy(6)},
                            processor)
    assert len(data) == 13 and data.offsets == {"brain_tumor": 0, "diabetic_retinopathy": 7}
    assert data.locate(9) == ("diabetic_retinopathy", 2) and data[9]["sample_id"] == "dr-2"
    sampler = TaskBatchSampler(data.sizes, TaskSampling("proportional", seed=0), batch_size=3)
    loader = DataLoader(data, batch_sampler=sampler, collate_fn=MultiTaskCollator(processor))
    seen = []
    for batch in loader:
        assert list(batch)[:2] == ["labels", "presence"]  # Trainer reads the batch size from the first tensor
        rows = batch["row_index"].tolist()
        seen += rows
        assert {data.task_of(i) for i in rows} == {batch["task"]}
        presence = torch.stack(list(batch["presence"].values()), 1)
        assert presence.any(1).all()
    assert sorted(seen) == list(range(13))
