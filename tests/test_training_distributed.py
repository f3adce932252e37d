"""Real 2-process training on CPU (gloo): one machine with 2 processes, and 2 "machines" on loopback.

Each run launches tests/training_ddp_worker.py with torchrun; the workers write what they saw to rank<k>.json.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

WORKER = Path(__file__).with_name("training_ddp_worker.py")
TIMEOUT = 240  # guards against a hung rendezvous; not a speed check


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict:
    env = dict(os.environ)
    env.update(CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1", TOKENIZERS_PARALLELISM="false")
    return env


def _torchrun(*options: str, out: Path, worker: tuple = ()) -> subprocess.Popen:
    command = [sys.executable, "-m", "torch.distributed.run", *options, "--master_addr", "127.0.0.1",
               str(WORKER), "--out", str(out), *worker]
    return subprocess.Popen(command, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait(*processes: subprocess.Popen) -> None:
    logs = []
    for process in processes:
        try:
            logs.append(process.communicate(timeout=TIMEOUT)[0])
        except subprocess.TimeoutExpired:
            for p in processes:
                p.kill()
            pytest.fail("the distributed run did not finish in time")
    for process, log in zip(processes, logs):
        assert process.returncode == 0, log[-4000:]


def _check_run(out: Path) -> None:
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    for r, record in enumerate(ranks):
        assert record["rank"] == r
        assert record["world_size"] == 2 and record["process_group_size"] == 2  # really two processes
    # the same weights (and learned loss weights) on both ranks after training
    assert ranks[0]["digest"] == ranks[1]["digest"]
    assert ranks[0]["log_variances"] == ranks[1]["log_variances"]
    assert any(v != 0 for v in ranks[0]["log_variances"])

    # one schedule computed apart; each rank took its own batches of it
    assert ranks[0]["schedule"] == ranks[1]["schedule"]
    schedule = ranks[0]["schedule"]
    padded = schedule + schedule[: len(schedule) % 2]
    for r in (0, 1):
        assert ranks[r]["local_schedule"] == padded[r::2]
    seen = [[tuple(b[2]) for b in record["batches"]] for record in ranks]
    assert seen[0] != seen[1]
    assert [list(b) for b in seen[0]] == [b[1] for b in ranks[0]["local_schedule"][: len(seen[0])]]

    # per-task losses: the mean over both ranks' batches of the logging window, the same on both ranks
    logs = [[h for h in record["log_history"] if "loss" in h] for record in ranks]
    assert logs[0] == logs[1] and [h["step"] for h in logs[0]] == [2, 4]
    batches = ranks[0]["batches"] + ranks[1]["batches"]
    for log in logs[0]:
        window = [b for b in batches if log["step"] - 2 <= b[0] < log["step"]]
        for task in ("brain_tumor", "diabetic_retinopathy"):
            losses = [b[3] for b in window if b[1] == task]
            if losses:
                assert log[f"loss_{task}"] == pytest.approx(np.mean(losses), rel=1e-4)
            else:
                assert f"loss_{task}" not in log
    assert {b[1] for b in batches} == {"brain_tumor", "diabetic_retinopathy"}

    # evaluation: every row once (9 rows in batches of 2 leave rank 1 a padding batch), the same on both ranks
    for record in ranks:
        for task, predicted in record["predictions"].items():
            assert predicted["sample_ids"] == record["eval_ids"][task]
            assert predicted["rows"] == list(range(record["eval_sizes"][task]))
    assert ranks[0]["metrics"].keys() == ranks[1]["metrics"].keys()
    for key, value in ranks[0]["metrics"].items():
        if not key.endswith(("_runtime", "_per_second")):
            assert ranks[1]["metrics"][key] == pytest.approx(value, nan_ok=True), key


def test_two_processes_on_one_machine_train_as_one(tmp_path):
    _wait(_torchrun("--nnodes", "1", "--nproc_per_node", "2", "--master_port", str(_free_port()), out=tmp_path))
    _check_run(tmp_path)


def test_two_machines_on_loopback_train_as_one(tmp_path):
    port = str(_free_port())
    machines = [_torchrun("--nnodes", "2", "--nproc_per_node", "1", "--node_rank", str(rank), "--master_port", port,
                          out=tmp_path) for rank in (0, 1)]
    _wait(*machines)
    _check_run(tmp_path)


def test_torchrun_without_use_cpu_on_a_cpu_machine_is_refused(tmp_path):
    # before: without a GPU transformers left each process alone: both trained the whole run into one --output_dir
    # at once, and run_info.json said world_size 1
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
               "--master_port", str(_free_port()), "-m", "multimed_hf.cli", "train", "--data", str(tmp_path / "data"),
               "--tasks", "brain_tumor", "--output_dir", str(tmp_path / "run"), "--max_steps", "1"]
    done = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode != 0
    # one error per process (counted in the text: two processes' lines can interleave in one stderr pipe)
    errors = done.stderr.count("multimed train: error: launched as 2 processes (WORLD_SIZE=2)")
    assert errors == 2 and done.stderr.count("add --use_cpu") == 2, done.stderr[-3000:]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("command, flags, says", [
    ("fewshot", ["CKPT", "--task", "brain_tumor", "--shots", "5"], "add --use_cpu"),
    # the analyses write their files from every process: refused under torchrun, --use_cpu or not (before: with it,
    # attribution read its predictions file while the other process rewrote it)
    ("ood", ["--tasks", "disease", "--group", "organ"], "trains and scores its models in one process"),
    ("attribution", ["--tasks", "brain_tumor", "--use_cpu"], "run it without torchrun or accelerate launch"),
])
def test_fewshot_and_the_analyses_refuse_torchrun_without_use_cpu_too(tmp_path, command, flags, says):
    # before: only train, evaluate and benchmark refused; fewshot and the analyses ran the whole job once per process
    # into one folder (two writers appending to table2.csv)
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
              "--master_port", str(_free_port()), "-m", "multimed_hf.cli", command, *flags, "--data",
              str(tmp_path / "data"), "--output_dir", str(tmp_path / "run"), "--max_steps", "1"]
    done = subprocess.run(launch, env=_env(), capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode != 0
    errors = done.stderr.count(f"multimed {command}: error: launched as 2 processes (WORLD_SIZE=2)")
    assert errors == 2 and done.stderr.count(says) == 2, done.stderr[-3000:]
    assert not (tmp_path / "run").exists()


def test_train_loss_is_the_mean_over_processes_of_the_steps_after_the_last_log(tmp_path):
    # before: transformers added this process's own loss of the steps after the last log, so train_loss was rank
    # 0's batches for that stretch (the ranks disagreed; in a multitask run, another mix of tasks)
    _wait(_torchrun("--nnodes", "1", "--nproc_per_node", "2", "--master_port", str(_free_port()), out=tmp_path,
                    worker=("--steps", "3", "--logging_steps", "2")))
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["train_loss"] == pytest.approx(ranks[1]["train_loss"], rel=1e-6)
    assert ranks[0]["train_loss"] > 0
