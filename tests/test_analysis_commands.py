"""The analysis commands (`multimed combos|ood|robustness|attribution`): parsed like `multimed train`, files written,
bad input as one error line naming the command."""

from pathlib import Path

import pytest

from analysis_tiny import TASK, trio_splits, trio_task
from balancing_tiny import write_built_folder
from multimed_hf.cli import main

QUICK_FLAGS = ["--encoders", "small", "--family", "multimodal", "--max_steps", "4", "--per_device_train_batch_size",
               "8", "--use_cpu", "--eval_strategy", "no", "--save_strategy", "no", "--logging_strategy", "no",
               "--disable_tqdm", "true", "--report_to", "none", "--bootstrap_samples", "5"]


def test_combos_command_writes_its_files_and_names_the_best_subset(tmp_path, capsys):
    with trio_task():
        data = write_built_folder(tmp_path / "data", {TASK: trio_splits(24, 12)})
        code = main(["combos", "--data", data, "--task", TASK, "--modes", "mask", "--output_dir",
                     str(tmp_path / "out"), *QUICK_FLAGS])
    out = capsys.readouterr().out
    assert code == 0
    assert "best: " in out and "wrote " in out
    written = out.split("wrote ", 1)[1].strip().split(", ")
    assert len(written) == 3 and all(Path(p).is_file() for p in written)  # csv, markdown, figure
    assert {Path(p).suffix for p in written} == {".csv", ".md", ".png"}


@pytest.mark.parametrize("command", ["combos", "robustness", "attribution"])
def test_single_task_commands_refuse_two_tasks_naming_the_command(command, tmp_path, capsys):
    code = main([command, "--data", str(tmp_path), "--tasks", "brain_tumor", "bone_age", "--output_dir",
                 str(tmp_path / "out")])
    assert code == 2
    assert f"multimed {command}: error: --tasks: this analysis takes one task" in capsys.readouterr().err


def test_analysis_usage_names_its_command(capsys):
    with pytest.raises(SystemExit):
        main(["ood", "--help"])
    assert capsys.readouterr().out.startswith("usage: multimed ood ")


@pytest.mark.parametrize("command", ["combos", "robustness", "attribution"])
def test_analysis_commands_run_with_the_training_defaults_schedule(command, tmp_path, capsys):
    # before: the run's default evaluation per epoch reached the predict-only trainer, which Trainer refused
    # ("eval_strategy ... but you didn't pass an eval_dataset") after the first model was trained
    schedule = {QUICK_FLAGS.index(flag) + k for flag in ("--eval_strategy", "--save_strategy") for k in (0, 1)}
    default_schedule = [f for i, f in enumerate(QUICK_FLAGS) if i not in schedule]
    extra = ["--modes", "mask"] if command == "combos" else []
    with trio_task():
        data = write_built_folder(tmp_path / "data", {TASK: trio_splits(24, 12)})
        code = main([command, "--data", data, "--task", TASK, "--output_dir", str(tmp_path / "out"), *extra,
                     *default_schedule])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "wrote " in captured.out
