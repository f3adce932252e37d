"""Fixes of sweep H2's findings on the analyses: each model's training defaults are its own run's, combos scores
a context of constant predictions alike in every subset, an analysis refuses a folder of earlier runs, and ood lists
a group with no test rows in distribution."""

from __future__ import annotations

import json

import numpy as np
import pytest

from analysis_tiny import TASK, quick_args, trio_rows, trio_splits, trio_task
from balancing_tiny import write_built_folder
from multimed_hf.analysis import CombosOptions, OODOptions, ood
from multimed_hf.analysis._common import parse_analysis_args, train_run
from multimed_hf.cli import main


class _Stop(Exception):
    """Raised by the recording train_fn: the tests need the run's TrainingArguments, not a model."""


def _trained_with(args, training_args, task, modalities):
    """The ``TrainingArguments`` ``train_run`` hands to training for ``task`` reading ``modalities``."""
    seen = {}

    def recording(run_args, targs, **kwargs):
        seen["targs"] = targs
        raise _Stop

    with pytest.raises(_Stop):
        train_run(args, training_args, task=task, datasets={}, modalities=modalities, output_dir="out/runs/x",
                  train_fn=recording)
    targs = seen["targs"]
    return targs.learning_rate, targs.num_train_epochs, targs.weight_decay


def _parse(*flags, options=OODOptions, single_task=False):
    return parse_analysis_args(["--data", "multimed", "--output_dir", "out", "--use_cpu", *flags], options,
                               single_task=single_task)


# ---------------------------------------------------------------------- 1. each model's own training defaults
def test_each_task_trains_at_the_defaults_of_the_modalities_it_reads():
    # before: the defaults came from every --tasks' modalities at once: disease's images have Hub weights, so
    # cell_type's held-out models (scRNA-seq, our own random-init encoder) trained at lr 1e-4 for 5 epochs, where
    # `ood --tasks cell_type` and `multimed train` train them from scratch at lr 1e-3 for 40 epochs
    args, _, targs = _parse("--tasks", "disease", "cell_type", "--encoders", "hub")
    alone = _parse("--tasks", "cell_type", "--encoders", "hub")
    assert _trained_with(args, targs, "cell_type", ("scrna",)) == (1e-3, 40, 0.01)
    assert _trained_with(*alone[::2], "cell_type", ("scrna",)) == (1e-3, 40, 0.01)
    assert _trained_with(args, targs, "disease", ("xray", "text")) == (1e-4, 5, 0.01)
    assert (targs.learning_rate, targs.num_train_epochs) == (1e-4, 5)  # the parse itself is unchanged


def test_the_flags_named_still_win_over_a_runs_defaults():
    args, _, targs = _parse("--tasks", "disease", "cell_type", "--learning_rate", "0.01", "--num_train_epochs", "5")
    assert _trained_with(args, targs, "cell_type", ("scrna",)) == (0.01, 5, 0.01)  # 5 named: kept, as is 0.01
    args, _, targs = _parse("--tasks", "cell_type", "disease", "--weight_decay", "0.3")
    assert _trained_with(args, targs, "cell_type", ("scrna",)) == (1e-3, 40, 0.3)
    assert _trained_with(args, targs, "disease", ("mri",)) == (1e-4, 5, 0.3)


def test_a_combos_subset_trains_at_the_defaults_of_the_modalities_it_reads(tmp_path):
    # retrain mode: the scRNA-seq subset alone reads no Hub encoder, so it trains from scratch as `multimed train`
    # and the benchmark's unimodal scrna run do; the DNA runs fine-tune
    path = tmp_path / "args.json"
    path.write_text(json.dumps({"data": "multimed", "task": "expression_prediction", "output_dir": "out",
                                "modes": ["mask", "retrain"], "weight_decay": 0.2}))
    args, _, targs = parse_analysis_args([str(path)], CombosOptions, single_task=True)
    assert _trained_with(args, targs, "expression_prediction", ("dna", "scrna")) == (1e-4, 5, 0.2)
    assert _trained_with(args, targs, "expression_prediction", ("scrna",)) == (1e-3, 40, 0.2)


def test_training_arguments_built_in_python_are_used_as_given(tmp_path):
    with trio_task():
        args, targs = quick_args(tmp_path, learning_rate=0.02, num_train_epochs=2)
        args.encoders = "hub"
        assert _trained_with(args, targs, "cell_type", ("scrna",)) == (0.02, 2, 0.0)


# ---------------------------------------------------------------------- 2. combos: one basis for every subset
def _expression_predictions(outputs, references, contexts):
    from multimed_hf.training.predictions import TaskPredictions

    n = len(references)
    return TaskPredictions(task="expression_prediction", sample_ids=[str(i) for i in range(n)],
                           outputs={"log_expression": np.asarray(outputs, dtype=np.float32)},
                           references={"log_expression": np.asarray(references, dtype=np.float32)}, masks={},
                           head_spec={"outputs": [{"name": "log_expression", "kind": "regression"}]},
                           metadata={"context": list(contexts)})


def test_a_context_of_constant_predictions_scores_zero_in_every_subset():
    from multimed_hf.analysis.combos import _records, constant_contexts_as_zero

    references = [1, 2, 3, 4, 1, 2, 3, 4, 5, 5]
    contexts = ["B cell"] * 4 + ["liver"] * 4 + ["one value"] * 2  # the last: constant references, undefined
    model = [1, 2, 4, 3, 2, 1, 4, 3, 7, 9]  # B cell r 0.8, liver r 0.6
    scrna_alone = model[:4] + [2.5] * 6  # liver's rows hold no profile: the empty predictor (the training mean)
    assert constant_contexts_as_zero(model, references, contexts) == pytest.approx((0.8 + 0.6) / 2)
    assert constant_contexts_as_zero(scrna_alone, references, contexts) == pytest.approx((0.8 + 0) / 2)
    assert constant_contexts_as_zero([2.5] * 10, references, contexts) == 0.0
    assert constant_contexts_as_zero(scrna_alone, references, None) == pytest.approx(
        np.corrcoef(scrna_alone, references)[0, 1])  # no context recorded: the split is one
    assert np.isnan(constant_contexts_as_zero([1.0] * 4, [2.0] * 4, ["a"] * 4))  # nothing defined
    assert constant_contexts_as_zero([1, 1, 2, 3], [1, 2, 3, 4], ["a"] * 4, "spearman") == pytest.approx(
        0.9486833, abs=1e-6)

    def headline(outputs):
        recs = _records(_expression_predictions(outputs, references, contexts), "mask", ("scrna",), "test", "run",
                        4, 50, 0)
        return next(r for r in recs if r["metric"] == "pearson")

    # before: the metric's nanmean dropped liver from scrna alone (0.8), while the empty set counted as 0: the
    # subsets' values and the Shapley inputs stood on different bases
    alone = headline(scrna_alone)
    assert alone["value"] == pytest.approx(0.4) and alone["n"] == 10
    assert alone["ci_low"] <= alone["value"] <= alone["ci_high"]
    assert headline([2.5] * 10)["value"] == 0.0


def test_a_robustness_curve_point_scores_a_context_left_with_nothing_zero_as_combos():
    # before: robustness's missing-modality curve took the metric's nanmean, so at full DNA loss the contexts the
    # model could no longer predict left the mean (-0.285 where combos scored the same situation -0.142)
    from multimed_hf.analysis.robustness import _curve_records

    references = [1, 2, 3, 4, 1, 2, 3, 4]
    contexts = ["B cell"] * 4 + ["liver"] * 4
    lost = [1, 2, 4, 3] + [2.5] * 4  # liver's rows left with no modality: the training mean
    point = next(r for r in _curve_records(_expression_predictions(lost, references, contexts), "test", 0, 0,
                                           level=1.0) if r["metric"] == "pearson")
    assert point["value"] == pytest.approx(0.8 / 2) and point["level"] == 1.0


def test_without_constant_contexts_the_value_and_ci_are_table_1s():
    from multimed_hf.analysis._common import score
    from multimed_hf.analysis.combos import _records

    rng = np.random.default_rng(0)
    references = rng.normal(size=40)
    outputs = references + rng.normal(size=40)
    predictions = _expression_predictions(outputs, references, ["a", "b", "c", "d"] * 10)
    table1 = {r["metric"]: r for r in score(predictions, "test", 100, 3)}
    ours = {r["metric"]: r for r in _records(predictions, "mask", ("dna",), "test", "run", 40, 100, 3)}
    for metric in ("pearson", "spearman"):
        for key in ("value", "ci_low", "ci_high"):
            assert ours[metric][key] == pytest.approx(table1[metric][key], abs=1e-6)


def test_combos_md_states_the_convention():
    from types import SimpleNamespace

    from multimed_hf.analysis.combos import _markdown

    values = {"mask": {frozenset(): 0.0, frozenset({"dna"}): 0.1, frozenset({"scrna"}): 0.05,
                       frozenset({"dna", "scrna"}): 0.2}}
    text = _markdown("expression_prediction", ["dna", "scrna"], SimpleNamespace(best={"mask": "dna+scrna"}), values,
                     "log_expression", "pearson", False)
    assert "A context whose predictions are constant" in text and "scores 0 in every subset" in text
    text = _markdown("zz", ["dna", "scrna"], SimpleNamespace(best={"mask": "dna"}), values, "finding", "accuracy",
                     False)
    assert "constant" not in text


# ---------------------------------------------------------------------- 3. an earlier analysis' runs are refused
QUICK_FLAGS = ["--encoders", "small", "--max_steps", "2", "--per_device_train_batch_size", "8", "--use_cpu",
               "--eval_strategy", "no", "--save_strategy", "no", "--logging_strategy", "no", "--disable_tqdm", "true",
               "--report_to", "none", "--bootstrap_samples", "5"]


def test_a_second_analysis_into_the_same_folder_is_refused_before_training(tmp_path, capsys):
    # before: it exited 0 after training every model again over the first one's runs, rewriting every output
    out = tmp_path / "attr"
    with trio_task():
        data = write_built_folder(tmp_path / "data", {TASK: trio_splits(16, 8)})
        argv = ["attribution", "--data", data, "--task", TASK, "--output_dir", str(out), *QUICK_FLAGS]
        assert main(argv) == 0, capsys.readouterr().err
        weights = out / "runs" / "model" / "model.safetensors"
        written = weights.stat().st_mtime_ns
        capsys.readouterr()
        assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"multimed attribution: error: {out} holds 1 run(s) of an earlier analysis under "
                          f"{out / 'runs'}, first {out / 'runs' / 'model'} (finished)")
    assert "pass another --output_dir, or remove" in err and "--resume_from_checkpoint" not in err
    assert weights.stat().st_mtime_ns == written  # not trained again


def _analysis_main(argv):
    from multimed_hf.analysis._common import analysis_main

    calls = []

    def run(args, training_args, options):
        calls.append(training_args.output_dir)
        raise _Stop

    try:
        code = analysis_main("ood", ["--data", "multimed", "--tasks", "bone_age", *argv], OODOptions, run)
    except _Stop:
        code = None
    return code, calls


def test_a_folder_of_checkpoints_is_refused_unless_told_to_resume(tmp_path, capsys):
    out = tmp_path / "ood"
    (out / "runs" / "bone_age" / "without-F" / "checkpoint-3").mkdir(parents=True)
    (out / "runs" / "bone_age" / "without-F" / "checkpoint-3" / "trainer_state.json").write_text("{}")
    code, calls = _analysis_main(["--output_dir", str(out)])
    assert code == 2 and not calls
    err = capsys.readouterr().err
    assert f"first {out / 'runs' / 'bone_age' / 'without-F'} (checkpoint-3)" in err
    assert "--resume_from_checkpoint true goes on from each run's last checkpoint" in err
    assert _analysis_main(["--output_dir", str(out), "--resume_from_checkpoint", "true"]) == (None, [str(out)])
    # a folder without earlier runs (nothing, or only the tables) is used as before
    (tmp_path / "fresh").mkdir()
    (tmp_path / "fresh" / "ood.csv").write_text("")
    assert _analysis_main(["--output_dir", str(tmp_path / "fresh")]) == (None, [str(tmp_path / "fresh")])
    assert _analysis_main(["--output_dir", str(tmp_path / "new")]) == (None, [str(tmp_path / "new")])


def test_the_python_functions_still_write_into_a_used_folder(tmp_path):
    # the notebooks call them again into one folder; only the commands refuse
    from multimed_hf.analysis import attribution

    with trio_task():
        args, targs = quick_args(tmp_path, max_steps=1)
        for _ in range(2):
            result = attribution(args, targs, datasets=trio_splits(8, 4))
    assert result.paths.csv.is_file() and (tmp_path / "runs" / "model" / "run_info.json").is_file()


# ---------------------------------------------------------------------- 4. ood: a group with no test rows is listed
def test_a_group_without_test_rows_is_listed_in_distribution(tmp_path):
    from multimed_hf.analysis.ood import NO_TEST_ROWS, SCORED

    splits = {"train": trio_rows(24, 0, "tr"), "validation": trio_rows(9, 1, "va"),
              "test": trio_rows(8, 2, "te", sites=("north", "south"))}  # east: train and validation rows only
    with trio_task():
        args, targs = quick_args(tmp_path, max_steps=1)
        result = ood(args, targs, options=OODOptions(group="site", min_group_rows=4, in_distribution=True),
                     datasets={TASK: splits})
    table = result.table
    inside = table[table["setting"] == "in-distribution"]
    # before: east got no in-distribution row and no line saying why, though ood.md lists the groups not scored
    east = inside[inside["group"] == "east"]
    assert east[["status", "rows"]].values.tolist() == [[NO_TEST_ROWS, 0]]
    assert set(inside[inside["group"] != "east"]["status"]) == {SCORED}
    assert set(table[table["setting"] == "out-of-distribution"]["group"]) == {"east", "north", "south"}
    text = result.paths.markdown.read_text()
    not_scored = text.split("Groups not scored (listed, not skipped):", 1)[1]
    assert "| zz_trio | east | in-distribution | no test rows | 0 |" in not_scored


def test_resuming_an_analysis_starts_the_runs_it_never_began_from_scratch(tmp_path):
    # before: the refusal's advice --resume_from_checkpoint true failed ("No valid checkpoint found") on every run
    # the stopped analysis had not begun; such a run now starts from scratch, a begun one resumes
    args, _, training_args = _parse("--tasks", "bone_age", "--resume_from_checkpoint", "true")
    seen = {}

    def recording(run_args, targs, **kwargs):
        seen["resume"] = targs.resume_from_checkpoint
        raise _Stop

    begun = tmp_path / "runs" / "begun"
    (begun / "checkpoint-2").mkdir(parents=True)
    (begun / "checkpoint-2" / "trainer_state.json").write_text("{}")
    for folder, expected in ((tmp_path / "runs" / "new", None), (begun, "true")):
        with pytest.raises(_Stop):
            train_run(args, training_args, task="bone_age", datasets={}, modalities=("xray",), output_dir=folder,
                      train_fn=recording)
        assert seen["resume"] == expected
