"""Lockstep task sampling (issue 15, FSDP): rounds of one batch per process of one task, so every process trains
the same task in each step; quotas in rounds, determinism, resume, drop_last, len, and no change with one process."""

import math
from collections import Counter

import pytest

from multimed_hf.training.sampling import SAMPLING_STRATEGIES, SamplingError, TaskBatchSampler, TaskSampling
from tests.test_training_sampler import SIZES, _task_of  # batch size 5: one pass = 20 + 4 + 1 = 25 batches


def _samplers(replicas, strategy="proportional", sizes=SIZES, batch_size=5, lockstep=True, **sampling):
    """One sampler per rank of ``replicas`` processes, with the same settings."""
    settings = TaskSampling(strategy, lockstep=lockstep, **sampling)
    return [TaskBatchSampler(sizes, settings, batch_size=batch_size, num_replicas=replicas, rank=r, seed=3)
            for r in range(replicas)]


@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("replicas", [2, 3])
@pytest.mark.parametrize("strategy", SAMPLING_STRATEGIES)
def test_every_step_gives_every_rank_the_same_task(strategy, replicas, drop_last):
    samplers = _samplers(replicas, strategy, drop_last=drop_last, batch_sizes={"b": 3})
    for epoch in (0, 1):
        for s in samplers:
            s.set_epoch(epoch)
        local = [list(s) for s in samplers]
        assert len({len(batches) for batches in local}) == 1 and len(local[0]) == len(samplers[0])
        for step in zip(*local):
            tasks = {_task_of(i) for batch in step for i in batch}
            assert len(tasks) == 1, (epoch, step)
            if drop_last:  # else a pass's smaller last batch may meet a full one
                assert len({len(batch) for batch in step}) == 1
        # the ranks' batches, step by step, are the global schedule's rounds
        flat = [batch for step in zip(*local) for batch in step]
        assert flat == [batch for _, batch in samplers[0].schedule(epoch)]
        if drop_last:
            assert all(len(batch) == (3 if _task_of(batch[0]) == "b" else 5) for batch in flat)


@pytest.mark.parametrize("strategy,kwargs,replicas,rounds", [
    # the strategy's quota of batches (test_training_sampler.py works them out), rounded up to whole rounds
    ("proportional", {}, 2, {"a": 10, "b": 2, "c": 1}),  # 20, 4, 1 batches
    ("proportional", {}, 3, {"a": 7, "b": 2, "c": 1}),
    ("proportional", {"size_cap": 20}, 2, {"a": 6, "b": 6, "c": 2}),  # 11, 11, 3
    ("temperature", {"temperature": 2.0}, 2, {"a": 8, "b": 4, "c": 2}),  # 15, 7, 3
    ("uniform", {}, 2, {"a": 5, "b": 4, "c": 4}),  # 9, 8, 8
    ("round_robin", {}, 4, {"a": 3, "b": 2, "c": 2}),  # 9, 8, 8
])
def test_each_task_gets_its_quota_in_whole_rounds(strategy, kwargs, replicas, rounds):
    sampler = _samplers(replicas, strategy, **kwargs)[0]
    assert sampler.rounds() == rounds
    assert sampler.quotas() == {t: r * replicas for t, r in rounds.items()}
    schedule = sampler.schedule()
    assert Counter(t for t, _ in schedule) == Counter(sampler.quotas())
    # the schedule is a sequence of rounds: replicas consecutive batches of one task
    for start in range(0, len(schedule), replicas):
        assert len({t for t, _ in schedule[start:start + replicas]}) == 1
    assert len(sampler) == sum(rounds.values()) == len(list(sampler))


def test_round_robin_cycles_through_the_tasks_round_by_round():
    schedule = _samplers(2, "round_robin", sizes={"a": 30, "b": 30, "c": 30})[0].schedule()  # 6 batches each
    rounds = [schedule[i][0] for i in range(0, len(schedule), 2)]
    assert rounds == ["a", "b", "c"] * 3


def test_proportional_lockstep_still_sees_every_row_each_epoch():
    sampler = _samplers(3)[0]
    for epoch in (0, 1):
        seen = {i for _, batch in sampler.schedule(epoch) for i in batch}
        assert seen == set(range(sum(SIZES.values())))
    # the rows of a round within one pass over its task are split between the ranks: disjoint in each step
    local = [list(s) for s in _samplers(2)]  # 2 processes: the 20 batches of "a" are 10 rounds of one pass
    for step in zip(*local):
        if _task_of(step[0][0]) == "a":
            rows = [i for batch in step for i in batch]
            assert len(rows) == len(set(rows))


@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("strategy", SAMPLING_STRATEGIES)
def test_one_process_lockstep_changes_nothing(strategy, drop_last):
    on, = _samplers(1, strategy, drop_last=drop_last, lockstep=True)
    off, = _samplers(1, strategy, drop_last=drop_last, lockstep=False)
    for epoch in (0, 1):
        assert on.schedule(epoch) == off.schedule(epoch)
        on.set_epoch(epoch)
        off.set_epoch(epoch)
        assert list(on) == list(off) and len(on) == len(off)


def test_the_schedule_depends_on_seed_and_epoch_only():
    first, again = _samplers(2)[1], _samplers(2)[1]
    assert list(first) == list(again)
    first.set_epoch(1)
    again.set_epoch(1)
    assert list(first) == list(again)
    assert first.local_schedule(0) != first.local_schedule(1)
    other = TaskBatchSampler(SIZES, TaskSampling(lockstep=True), batch_size=5, num_replicas=2, rank=1, seed=4)
    assert other.local_schedule(0) != first.local_schedule(0)


def test_resume_skips_to_the_same_batches_and_stays_in_lockstep():
    full = [list(s) for s in _samplers(2, "temperature")]
    resumed = _samplers(2, "temperature")
    for s in resumed:
        s.skip_batches(4)
    after = [list(s) for s in resumed]
    assert after == [batches[4:] for batches in full]
    for step in zip(*after):
        assert len({_task_of(batch[0]) for batch in step}) == 1
    assert [list(s) for s in resumed] == full  # the skip applies to one pass only


def test_lockstep_with_drop_last_fills_rounds_where_the_epoch_is_shorter_than_the_processes():
    with pytest.raises(SamplingError, match="fewer than the 4 processes"):
        _samplers(4, sizes={"a": 5}, lockstep=False, drop_last=True)
    samplers = _samplers(4, sizes={"a": 5, "b": 10}, drop_last=True)  # 1 + 2 batches, 4 processes
    assert samplers[0].rounds() == {"a": 1, "b": 1}
    local = [list(s) for s in samplers]
    assert all(len(batches) == 2 for batches in local)
    assert all(len(batch) == 5 for batches in local for batch in batches)


def test_lockstep_must_be_a_bool():
    with pytest.raises(SamplingError, match=r"TaskSampling.lockstep='yes': expected True or False"):
        TaskSampling(lockstep="yes")


def test_lockstep_epochs_are_at_most_one_round_per_task_longer():
    for replicas in (2, 3, 5):
        on, off = _samplers(replicas)[0], _samplers(replicas, lockstep=False)[0]
        assert len(off) <= len(on) <= math.ceil(on.num_global_batches / replicas) + len(SIZES)


def test_the_command_line_flag_reaches_the_run_s_sampling():
    from multimed_hf.training.arguments import parse_train_args
    from multimed_hf.training.families import RunPlan
    from multimed_hf.training.run import _sampling

    common = ["--data", "d", "--tasks", "brain_tumor", "cell_type", "--output_dir", "out", "--use_cpu"]
    plan = RunPlan("all", "multimodal_multitask", ("brain_tumor", "cell_type"),
                   {"brain_tumor": ("mri",), "cell_type": ("scrna",)})
    assert _sampling(parse_train_args([*common, "--task_lockstep"])[0], plan).lockstep is True
    assert _sampling(parse_train_args(common)[0], plan).lockstep is False


def test_the_trainer_passes_lockstep_to_streamed_tasks(tmp_path):
    # streamed lockstep itself: tests/test_streaming_lockstep.py
    from training_tiny import brain_tumor, tiny_model, tiny_processor
    from transformers import TrainingArguments

    from multimed_hf.training.trainer import MultiMedTrainer

    model = tiny_model(["brain_tumor"])
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, max_steps=1, report_to="none")
    streamed = {"brain_tumor": brain_tumor(4).to_iterable_dataset()}
    trainer = MultiMedTrainer(model=model, args=args, processor=tiny_processor(), train_datasets=streamed,
                              sampling=TaskSampling(lockstep=True))
    assert trainer.train_dataset.lockstep is True
    trainer = MultiMedTrainer(model=model, args=args, processor=tiny_processor(), train_datasets=streamed,
                              sampling=TaskSampling())
    assert trainer.sampling.lockstep is False and trainer.train_dataset.lockstep is False
