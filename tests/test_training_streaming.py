"""Streamed training (`--streaming`): per-task IterableDatasets from a local folder loaded with streaming=True,
interleaved into one-task batches by the sampling strategy, deterministic per seed and rank, sharded per process."""

import json
import os
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from datasets import load_dataset
from datasets.distributed import split_dataset_by_node
from torch.utils.data import DataLoader
from transformers import TrainingArguments

from multimed_hf.training.data import IterableMultiTaskDataset, MultiTaskCollator, is_streamed, streamed_size
from multimed_hf.training.sampling import TaskSampling
from multimed_hf.training.trainer import MultiMedTrainer

sys.path.insert(0, str(Path(__file__).parent))
from training_tiny import brain_tumor, diabetic_retinopathy, tiny_model, tiny_processor  # noqa: E402

TASKS = ("brain_tumor", "diabetic_retinopathy")
SIZES = {"brain_tumor": 24, "diabetic_retinopathy": 12}
WORKER = Path(__file__).with_name("training_stream_worker.py")
#: one shard at a time into the shuffle buffer: datasets pauses 5 s after every interleaved pass (arrow#45214)
QUICK = {"shuffle_input_shards": 1}


def write_stream_folder(root: Path) -> Path:
    """Each task's training rows as two parquet shards in its own folder (what a built config holds)."""
    make = {"brain_tumor": brain_tumor, "diabetic_retinopathy": diabetic_retinopathy}
    for task, n in SIZES.items():
        folder = root / task
        folder.mkdir(parents=True, exist_ok=True)
        rows = make[task](n)
        for i in range(2):
            rows.shard(2, i, contiguous=True).to_parquet(folder / f"train-{i:05d}-of-00002.parquet")
    return root


def streams(root: Path, rank: int = 0, world_size: int = 1) -> dict:
    out = {t: load_dataset(str(root / t), split="train", streaming=True) for t in TASKS}
    if world_size > 1:
        out = {t: split_dataset_by_node(d, rank=rank, world_size=world_size) for t, d in out.items()}
    return out


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_stream_folder(tmp_path_factory.mktemp("streams"))


def _ids(dataset, n: int) -> list[tuple[str, list[str]]]:
    it = iter(dataset)
    batches = [next(it) for _ in range(n)]
    it.close()
    return [(b[0]["task"], [item["sample_id"] for item in b]) for b in batches]


def _stream(folder, seed=0, rank=0, world_size=1, strategy="uniform", **kwargs):
    return IterableMultiTaskDataset(streams(folder, rank, world_size), tiny_processor(),
                                    sampling=TaskSampling(strategy), batch_size=4, seed=seed, rank=rank,
                                    sizes=SIZES, **{**QUICK, **kwargs})


def test_streamed_datasets_are_recognised(folder):
    stream = streams(folder)["brain_tumor"]
    assert is_streamed(stream) and not is_streamed(brain_tumor(2))
    assert streamed_size(stream) is None  # a folder of parquet files records no split sizes


def test_every_batch_holds_one_task_with_its_batch_size(folder):
    data = IterableMultiTaskDataset(streams(folder), tiny_processor(), sampling=TaskSampling(
        "uniform", batch_sizes={"diabetic_retinopathy": 3}), batch_size=4, sizes=SIZES, **QUICK)
    for task, ids in _ids(data, 12):
        assert len(ids) == (3 if task == "diabetic_retinopathy" else 4)
        assert all(i.startswith("bt-" if task == "brain_tumor" else "dr-") for i in ids)


def test_the_stream_is_deterministic_per_seed_and_rank(folder):
    first = _ids(_stream(folder, seed=3), 10)
    assert _ids(_stream(folder, seed=3), 10) == first
    assert _ids(_stream(folder, seed=4), 10) != first
    assert _ids(_stream(folder, seed=3, rank=1), 10) != first
    epoch = _stream(folder, seed=3)
    epoch.set_epoch(1)
    assert _ids(epoch, 10) != first


def test_each_pass_reads_every_row_once_in_a_new_order(folder):
    data = _stream(folder, strategy="round_robin", shuffle_buffer_size=100)  # buffer > rows: a full shuffle
    batches = _ids(data, 24)  # brain_tumor: 24 rows in batches of 4 = one pass per 6 of its batches
    tumor = [ids for task, ids in batches if task == "brain_tumor"]
    passes = [sum(tumor[k * 6:(k + 1) * 6], []) for k in range(2)]
    for ids in passes:
        assert sorted(ids) == sorted(f"bt-{i}" for i in range(24))
    assert passes[0] != passes[1]
    assert [t for t, _ in batches[:4]] == ["brain_tumor", "diabetic_retinopathy"] * 2


@pytest.mark.parametrize("strategy, expected", [("proportional", 2 / 3), ("uniform", 1 / 2),
                                                ("temperature", 24 ** 0.5 / (24 ** 0.5 + 12 ** 0.5))])
def test_tasks_come_with_the_strategys_weights(folder, strategy, expected):
    data = _stream(folder, strategy=strategy, shuffle_buffer_size=0)
    counts = Counter(task for task in _task_order(data, 2000))
    assert counts["brain_tumor"] / 2000 == pytest.approx(expected, abs=0.035)


def _task_order(data, n):
    order = data._order((0, 1))
    return [next(order) for _ in range(n)]


def test_unknown_sizes_fall_back_to_equal_weights(folder, caplog):
    data = IterableMultiTaskDataset(streams(folder), tiny_processor(), sampling=TaskSampling("proportional"),
                                    batch_size=4, **QUICK)
    with caplog.at_level("WARNING"):
        assert data.weights() == {"brain_tumor": 1.0, "diabetic_retinopathy": 1.0}
    assert "record no size" in caplog.text


def test_processes_read_disjoint_shards(folder):
    seen = []
    for rank in (0, 1):
        data = _stream(folder, rank=rank, world_size=2, strategy="round_robin", shuffle_buffer_size=100)
        tumor = [ids for task, ids in _ids(data, 6) if task == "brain_tumor"]  # 3 batches = one pass of 12 rows
        seen.append(sum(tumor, []))
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == sorted(f"bt-{i}" for i in range(24))


def test_skipping_batches_lands_where_the_uninterrupted_stream_is(folder):
    whole = _ids(_stream(folder, seed=7), 12)
    resumed = _stream(folder, seed=7)
    resumed.skip_batches(5)
    assert _ids(resumed, 7) == whole[5:]


def _sample_ids(items):
    return items[0]["task"], [item["sample_id"] for item in items]


def test_dataloader_workers_read_their_own_shards(folder):
    data = _stream(folder, seed=1)
    loader = DataLoader(data, batch_size=None, num_workers=2, collate_fn=_sample_ids)
    batches = []
    for batch in loader:  # workers alternate: each reads one of the two shards of every task
        batches.append(batch)
        if len(batches) == 6:
            break
    tumor = sum((ids for task, ids in batches if task == "brain_tumor"), [])
    assert tumor and len(tumor) == len(set(tumor))  # at most 3 batches per worker: within one pass of its shard
    by_worker = [sum((ids for task, ids in batches[w::2] if task == "brain_tumor"), []) for w in (0, 1)]
    shards = [{f"bt-{i}" for i in range(12)}, {f"bt-{i}" for i in range(12, 24)}]
    for ids in by_worker:
        assert any(set(ids) <= shard for shard in shards)


def test_settings_naming_unknown_tasks_are_refused(folder):
    with pytest.raises(ValueError, match="settings name tasks \\['cell_type'\\]"):
        IterableMultiTaskDataset(streams(folder), tiny_processor(), sizes={"cell_type": 3})


def test_trainer_trains_on_streamed_tasks(folder, tmp_path):
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=6, per_device_train_batch_size=4,
                             learning_rate=3e-3, logging_steps=3, report_to=[], use_cpu=True, save_strategy="no",
                             disable_tqdm=True, seed=0)
    model = tiny_model(TASKS)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = MultiMedTrainer(model=model, args=args, processor=tiny_processor(), train_datasets=streams(folder),
                              sampling=TaskSampling("uniform"), streaming_options={**QUICK, "sizes": SIZES})
    assert isinstance(trainer.train_dataset, IterableMultiTaskDataset)
    result = trainer.train()
    assert result.global_step == 6
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert [h["step"] for h in logs] == [3, 6]
    assert any(k.startswith("loss_") for h in logs for k in h)
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_trainer_needs_max_steps_and_materialised_eval_sets(folder, tmp_path):
    args = TrainingArguments(output_dir=str(tmp_path), num_train_epochs=1, report_to=[], use_cpu=True,
                             save_strategy="no", disable_tqdm=True)
    with pytest.raises(ValueError, match="max_steps"):
        MultiMedTrainer(model=tiny_model(TASKS), args=args, processor=tiny_processor(),
                        train_datasets=streams(folder), streaming_options=QUICK)
    with pytest.raises(TypeError, match="materialize"):
        MultiMedTrainer(model=tiny_model(TASKS), args=args, processor=tiny_processor(),
                        eval_datasets=streams(folder))


def test_streamed_resume_ends_in_the_same_weights(folder, tmp_path):
    def run(out, steps, resume=None):
        args = TrainingArguments(output_dir=str(out), max_steps=6, per_device_train_batch_size=4,
                                 learning_rate=3e-3, report_to=[], use_cpu=True, save_strategy="steps",
                                 save_steps=3, disable_tqdm=True, seed=0, logging_strategy="no")
        trainer = MultiMedTrainer(model=tiny_model(TASKS), args=args, processor=tiny_processor(),
                                  train_datasets=streams(folder), sampling=TaskSampling("uniform"),
                                  streaming_options={**QUICK, "sizes": SIZES})
        if steps < 6:  # stop after the checkpoint of step 3, as an interrupted job would
            from transformers import TrainerCallback

            class Stop(TrainerCallback):
                def on_step_end(self, args, state, control, **kwargs):
                    control.should_training_stop = state.global_step >= steps

            trainer.add_callback(Stop())
        trainer.train(resume_from_checkpoint=resume)
        return trainer.model.state_dict()

    whole = run(tmp_path / "whole", 6)
    run(tmp_path / "cut", 3)
    resumed = run(tmp_path / "cut", 6, resume=str(tmp_path / "cut" / "checkpoint-3"))
    for key, value in whole.items():
        assert torch.equal(value, resumed[key]), key


# ---------------------------------------------------------------------- two processes
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_train_on_their_own_shards(folder, tmp_path):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
               "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), str(WORKER), "--data", str(folder),
               "--out", str(tmp_path)]
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    except subprocess.TimeoutExpired:
        pytest.fail("the distributed streamed run did not finish in time")
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["rank"] for r in ranks] == [0, 1]
    assert all(r["world_size"] == 2 and r["process_group_size"] == 2 for r in ranks)  # really two processes
    assert ranks[0]["digest"] == ranks[1]["digest"]  # the same weights after training
    assert all(r["sample_ids"] for r in ranks)
    for task, prefix in (("brain_tumor", "bt-"), ("diabetic_retinopathy", "dr-")):
        # a pass over the task's stream gives each process one of its two shard files: disjoint halves of the rows
        half = SIZES[task] // 2
        shards = [{f"{prefix}{i}" for i in range(half)}, {f"{prefix}{i}" for i in range(half, 2 * half)}]
        first = [[i for i in r["sample_ids"] if i.startswith(prefix)][:half] for r in ranks]
        assert not set(first[0]) & set(first[1])
        for ids in first:
            assert any(set(ids) <= shard for shard in shards)
    logs = [[h for h in r["log_history"] if "loss" in h] for r in ranks]
    assert logs[0] == logs[1]  # losses averaged over both processes
