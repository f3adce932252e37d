"""Families, run plans, arguments and one run's files (issue 15), on the bundled samples with small encoders."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from multimed_hf.api import build_dataset
from multimed_hf.training.arguments import TRAINING_DEFAULTS, parse_evaluate_args, parse_train_args
from multimed_hf.training.families import FAMILIES, FamilyError, parse_family, plan_runs, unplanned
from multimed_hf.training.run import RunError, evaluate_checkpoint, train_main, train_model

QUICK = dict(max_steps=12, per_device_train_batch_size=16, eval_strategy="no", save_strategy="no",
             logging_strategy="no", disable_tqdm=True, bootstrap_samples=50, seed=0)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """brain_tumor, diabetic_retinopathy (rows hold OCT or fundus), disease and cell_type from the samples."""
    from dataset_scripts.sample_sources import sample_generators

    tmp = tmp_path_factory.mktemp("run")
    make = sample_generators()
    out = tmp / "multimed"
    build_dataset("brain_tumor", [make["Brain-Tumor-MRI-Dataset"](tmp / "bt")], out, progress=False)
    build_dataset("diabetic_retinopathy", [make["OCT2017"](tmp / "oct"), make["aptos2019-blindness-detection"]
                                           (tmp / "aptos")], out, progress=False)
    build_dataset("cell_type", [make["pbmc68k_reduced"](tmp / "pbmc")], out, progress=False)
    return out


@pytest.fixture(scope="module")
def pbmc_dir(tmp_path_factory):
    """A cell_type config built from scanpy's real pbmc68k_reduced file alone."""
    from dataset_scripts.sample_sources.pbmc68k_reduced import DATA, REAL_FILE

    tmp = tmp_path_factory.mktemp("pbmc")
    (tmp / "src").mkdir()
    shutil.copyfile(DATA / REAL_FILE, tmp / "src" / REAL_FILE)
    build_dataset("cell_type", [tmp / "src"], tmp / "multimed", progress=False)
    return tmp / "multimed"


# ---------------------------------------------------------------------- families
def test_family_names_and_variants():
    assert parse_family("multimodal") == ("multimodal", ())
    with pytest.raises(FamilyError, match="did you mean 'multimodal'"):
        parse_family("multimodel")
    with pytest.raises(FamilyError, match="unknown variant.*'ogm'.*known variants: gblend, miles, mind, ogm_ge"):
        parse_family("multimodal_multitask+ogm")
    assert parse_family("multimodal_multitask+miles") == ("multimodal_multitask", ("miles",))  # registered on need


@pytest.mark.parametrize("command", ["train", "evaluate", "benchmark", "fewshot"])
def test_each_command_names_itself_in_its_usage_line(command, capsys):
    from multimed_hf.fewshot.run import fewshot_main
    from multimed_hf.training.benchmark import benchmark_main
    from multimed_hf.training.run import evaluate_main

    main = {"train": train_main, "evaluate": evaluate_main, "benchmark": benchmark_main, "fewshot": fewshot_main}
    with pytest.raises(SystemExit) as stop:
        main[command](["--help"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: multimed {command} ")


def test_train_model_prints_only_when_verbose(cell_run, data_dir, tmp_path, capsys, caplog):
    import logging

    capsys.readouterr()
    with caplog.at_level(logging.INFO, logger="multimed_hf.training.run"):
        train_model(data=str(data_dir), tasks=["cell_type"], family="unimodal", encoders="small",
                    output_dir=str(tmp_path / "quiet"), **{**QUICK, "max_steps": 2, "logging_strategy": "steps",
                                                           "logging_steps": 1})
    assert capsys.readouterr().out == ""
    assert any("test metrics" in r.getMessage() for r in caplog.records)
    train_model(data=str(data_dir), tasks=["cell_type"], family="unimodal", encoders="small", verbose=True,
                output_dir=str(tmp_path / "loud"), **{**QUICK, "max_steps": 2, "logging_strategy": "steps",
                                                      "logging_steps": 1})
    printed = capsys.readouterr().out
    assert "***** test metrics *****" in printed and "'loss':" in printed


def test_plans_follow_the_family_definitions(data_dir):
    tasks = ["brain_tumor", "diabetic_retinopathy"]
    unimodal = plan_runs("unimodal", tasks, data_dir)
    assert [(p.tasks, dict(p.modalities), dict(p.row_modality)) for p in unimodal] == [
        (("brain_tumor",), {"brain_tumor": ("mri",)}, {}),
        (("diabetic_retinopathy",), {"diabetic_retinopathy": ("oct",)}, {"diabetic_retinopathy": "oct"}),
        (("diabetic_retinopathy",), {"diabetic_retinopathy": ("fundus",)}, {"diabetic_retinopathy": "fundus"}),
    ]
    multimodal = plan_runs("multimodal", tasks, data_dir)
    assert [p.tasks for p in multimodal] == [("diabetic_retinopathy",)]
    assert unplanned("multimodal", tasks, data_dir) == {"brain_tumor": "same as unimodal (one modality)"}
    assert plan_runs("unimodal_multitask", tasks, data_dir) == []  # no modality shared by two tasks
    both = plan_runs("multimodal_multitask", tasks, data_dir)
    assert len(both) == 1 and both[0].tasks == tuple(tasks)
    assert both[0].modalities["diabetic_retinopathy"] == ("oct", "fundus")
    domain = plan_runs("domain_specific", tasks, data_dir)
    assert [p.encoders_for("hub") for p in domain] == ["domain_specific"] * 2
    assert all(p.encoders_for("small") == "small" for p in unimodal)
    assert len({p.name for f in FAMILIES for p in plan_runs(f, tasks, data_dir)}) == sum(
        len(plan_runs(f, tasks, data_dir)) for f in FAMILIES) - 1  # names unique per family ("brain_tumor" twice)


def test_unimodal_multitask_groups_tasks_by_modality():
    plans = plan_runs("unimodal_multitask", ["brain_tumor", "disease", "med_vqa"])
    mri = next(p for p in plans if p.name == "mri")
    assert mri.tasks == ("brain_tumor", "disease", "med_vqa")
    assert dict(mri.row_modality) == {"disease": "mri", "med_vqa": "mri"}
    assert all(len(p.tasks) >= 2 for p in plans)
    assert "fundus" not in {p.name for p in plans}  # only disease has fundus among these


# ---------------------------------------------------------------------- arguments
def test_every_training_arguments_flag_parses_and_ours_are_defaults(tmp_path):
    args, targs = parse_train_args([
        "--data", "d", "--tasks", "brain_tumor", "--family", "unimodal", "--encoders", "small",
        "--output_dir", str(tmp_path), "--max_steps", "7", "--seed", "3", "--gradient_accumulation_steps", "2",
        "--save_steps", "5", "--report_to", "none", "--resume_from_checkpoint", "x", "--bf16", "false",
        "--task_batch_sizes", '{"brain_tumor": 8}'])
    assert (targs.max_steps, targs.seed, targs.gradient_accumulation_steps, targs.save_steps) == (7, 3, 2, 5)
    assert targs.resume_from_checkpoint == "x"
    assert targs.learning_rate == TRAINING_DEFAULTS["learning_rate"] and targs.lr_scheduler_type == "cosine"
    assert args.task_batch_sizes == {"brain_tumor": 8} and args.encoders == "small"
    _, targs = parse_train_args(["--data", "d", "--tasks", "brain_tumor", "--output_dir", str(tmp_path),
                                 "--learning_rate", "3e-4"])
    assert targs.learning_rate == 3e-4
    evaluate, _ = parse_evaluate_args(["ckpt", "--data", "d", "--split", "validation", "test", "--output_dir",
                                       str(tmp_path)])
    assert (evaluate.checkpoint, evaluate.split) == ("ckpt", ["validation", "test"])


# ---------------------------------------------------------------------- one run, end to end
@pytest.fixture(scope="module")
def cell_run(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("cell_run")
    return train_model(data=str(data_dir), tasks=["cell_type"], family="unimodal", encoders="small",
                       output_dir=str(out), **QUICK)


def test_a_run_writes_every_file(cell_run):
    out = cell_run.output_dir
    for name in ("model.safetensors", "config.json", "processor_config.json", "README.md", "all_results.json",
                 "trainer_state.json", "run_info.json", "metrics_long.json", "train_results.json",
                 "test_results.json"):
        assert (out / name).is_file(), name
    results = json.loads((out / "all_results.json").read_text())
    assert results == cell_run.metrics
    assert {"test_cell_type_accuracy", "validation_cell_type_accuracy", "train_loss"} <= set(results)
    info = json.loads((out / "run_info.json").read_text())
    assert (info["world_size"], info["tasks"], info["family"], info["seed"]) == (1, ["cell_type"], "unimodal", 0)
    assert info["encoders"]["preset"] == "small" and info["multimed_hf_version"]
    assert info["dataset_fingerprints"]["cell_type"]["sources"]
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == QUICK["max_steps"]


def test_predictions_put_labels_and_predictions_side_by_side(cell_run, data_dir):
    from datasets import load_dataset

    from multimed_hf.training.outputs import predictions_score_names

    for split in ("validation", "test"):
        table = pd.read_parquet(cell_run.output_dir / "predictions" / f"cell_type-{split}.parquet")
        rows = load_dataset(str(data_dir), "cell_type", split=split)
        assert list(table.columns) == ["sample_id", "cell_type", "cell_type_prediction", "cell_type_scores"]
        assert sorted(table["sample_id"]) == sorted(rows["sample_id"])
        truth = dict(zip(rows["sample_id"], rows["cell_type"]))
        assert [truth[s] for s in table["sample_id"]] == list(table["cell_type"])
        vocab = json.loads((cell_run.output_dir / "processor_config.json").read_text())["vocabularies"]["cell_type"]
        assert set(table["cell_type_prediction"]) <= set(vocab)
        names = predictions_score_names(cell_run.output_dir / "predictions" / f"cell_type-{split}.parquet")
        assert names == {"cell_type_scores": vocab}  # each row's probabilities: the prediction is their argmax
        scores = np.stack(table["cell_type_scores"].to_numpy())
        assert np.allclose(scores.sum(1), 1, atol=1e-5)
        assert [vocab[i] for i in scores.argmax(1)] == list(table["cell_type_prediction"])
        labelled = table.dropna(subset=["cell_type"])
        accuracy = float((labelled["cell_type"] == labelled["cell_type_prediction"]).mean())
        assert accuracy == pytest.approx(cell_run.metrics[f"{split}_cell_type_accuracy"])


def test_long_metrics_carry_bootstrap_intervals(cell_run):
    records = json.loads((cell_run.output_dir / "metrics_long.json").read_text())
    assert {(r["split"], r["metric"]) for r in records} >= {("test", "accuracy"), ("validation", "macro_f1")}
    for r in records:
        assert r["task"] == "cell_type" and r["label"] is None and r["n"] > 0
        assert r["ci_low"] <= r["value"] <= r["ci_high"]


def test_evaluating_the_checkpoint_gives_the_runs_numbers(cell_run, data_dir, tmp_path):
    result = evaluate_checkpoint(str(cell_run.output_dir), str(data_dir), ["test"], output_dir=tmp_path,
                                 bootstrap_samples=0)
    assert result.metrics["test_cell_type_accuracy"] == cell_run.metrics["test_cell_type_accuracy"]
    a = pd.read_parquet(tmp_path / "predictions" / "cell_type-test.parquet")
    b = pd.read_parquet(cell_run.output_dir / "predictions" / "cell_type-test.parquet")
    pd.testing.assert_frame_equal(a.sort_values("sample_id").reset_index(drop=True),
                                  b.sort_values("sample_id").reset_index(drop=True))


def test_max_train_samples_caps_the_streamed_sizes_the_sampler_weighs(data_dir, tmp_path, monkeypatch):
    from multimed_hf.training import run
    from multimed_hf.training.data import streamed_size
    from multimed_hf.training.loading import load_task_data

    streamed = {t: s["train"] for t, s in load_task_data(data_dir, ["brain_tumor", "cell_type"], splits=("train",),
                                                             streaming=True).items()}
    recorded = {t: streamed_size(ds) for t, ds in streamed.items()}
    assert min(recorded.values()) > 4
    # each process keeps the first N rows of its own shard: N x processes rows at most, never above the split
    assert run._capped_stream_sizes(streamed, 2, 1) == {t: 2 for t in streamed}
    assert run._capped_stream_sizes(streamed, 2, 2) == {t: 4 for t in streamed}
    assert run._capped_stream_sizes(streamed, 10 ** 6, 2) == recorded
    trainers = []

    def spy(*args, **kwargs):
        trainers.append(build(*args, **kwargs))
        return trainers[-1]

    build = run.build_trainer
    monkeypatch.setattr(run, "build_trainer", spy)
    train_model(data=str(data_dir), tasks=["brain_tumor", "cell_type"], family="multimodal_multitask",
                encoders="small", streaming=True, output_dir=str(tmp_path), max_train_samples=3,
                **{**QUICK, "max_steps": 2})
    assert trainers[0].train_dataset.sizes == {"brain_tumor": 3, "cell_type": 3}  # not the recorded splits


def test_streamed_evaluation_gives_the_local_numbers(cell_run, data_dir, tmp_path):
    streamed = evaluate_checkpoint(str(cell_run.output_dir), str(data_dir), ["test"], output_dir=tmp_path,
                                   bootstrap_samples=0, streaming=True)
    assert streamed.metrics["test_cell_type_accuracy"] == cell_run.metrics["test_cell_type_accuracy"]
    assert len(pd.read_parquet(tmp_path / "predictions" / "cell_type-test.parquet")) == \
        len(pd.read_parquet(cell_run.output_dir / "predictions" / "cell_type-test.parquet"))


def test_a_streamed_run_trains_from_the_streams_and_evaluates_whole_splits(data_dir, tmp_path):
    from datasets import load_dataset

    quick = {**QUICK, "max_steps": 4}
    with pytest.raises(RunError, match="--max_steps"):
        train_model(data=str(data_dir), tasks=["brain_tumor", "cell_type"], family="multimodal_multitask",
                    encoders="small", streaming=True, output_dir=str(tmp_path), **{**quick, "max_steps": -1})
    result = train_model(data=str(data_dir), tasks=["brain_tumor", "cell_type"], family="multimodal_multitask",
                         encoders="small", streaming=True, output_dir=str(tmp_path), **quick)
    state = json.loads((tmp_path / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    info = json.loads((tmp_path / "run_info.json").read_text())
    assert info["arguments"]["streaming"] is True
    from multimed_hf.processing_multimed import MultiMedProcessor
    from multimed_hf.training.assembly import assemble

    # the streamed run's processor is the one a local run assembles (facts from the whole training streams)
    local = assemble(data_dir, ["brain_tumor", "cell_type"], encoders="small", build_model=False).processor
    saved = MultiMedProcessor.from_pretrained(tmp_path)
    assert saved.vocabularies == local.vocabularies
    assert saved.processor_for("scrna").genes == local.processor_for("scrna").genes
    for task in ("brain_tumor", "cell_type"):
        table = pd.read_parquet(tmp_path / "predictions" / f"{task}-test.parquet")
        assert sorted(table["sample_id"]) == sorted(load_dataset(str(data_dir), task, split="test")["sample_id"])
        assert f"test_{task}_accuracy" in result.metrics


def test_train_main_runs_each_plan_into_its_folder(data_dir, tmp_path, capsys):
    code = train_main(["--data", str(data_dir), "--tasks", "diabetic_retinopathy", "--family", "unimodal",
                       "--encoders", "small", "--output_dir", str(tmp_path), "--max_steps", "2",
                       "--per_device_train_batch_size", "8", "--eval_strategy", "no", "--save_strategy", "no",
                       "--bootstrap_samples", "0", "--eval_splits", "test"])
    assert code == 0, capsys.readouterr().err
    for modality in ("oct", "fundus"):
        table = pd.read_parquet(tmp_path / f"diabetic_retinopathy-{modality}" / "predictions" /
                                "diabetic_retinopathy-test.parquet")
        assert len(table) > 0
        info = json.loads((tmp_path / f"diabetic_retinopathy-{modality}" / "run_info.json").read_text())
        assert info["modalities"] == {"diabetic_retinopathy": [modality]}
    assert train_main(["--data", str(data_dir), "--tasks", "brain_tumor", "--family", "multimodal",
                       "--output_dir", str(tmp_path)]) == 2
    assert "same as unimodal (one modality)" in capsys.readouterr().err


def test_several_plans_need_a_choice_in_python(data_dir, tmp_path):
    with pytest.raises(RunError, match="pick one with plan="):
        train_model(data=str(data_dir), tasks=["diabetic_retinopathy"], family="unimodal", encoders="small",
                    output_dir=str(tmp_path), **QUICK)


# ---------------------------------------------------------------------- real data, honestly compared
def test_real_pbmc68k_cells_match_a_logistic_regression(pbmc_dir, tmp_path):
    """With the command's defaults (no tuning), the small unimodal model is not worse than a scikit-learn logistic
    regression fitted on the same training rows and gene panel, beyond one standard error of a test accuracy
    (sqrt(p(1-p)/n), n = 107 test cells: 0.03). Measured (benchmarks/pbmc68k_vs_logistic.py): logistic 0.888
    test, 0.911 validation; ours over 20 seeds (42, 0-18) 0.890 +- 0.024 test (>= logistic on 11 of 20; seed 42,
    the default, run here: 0.869) and 0.883 +- 0.012 validation: a tie within noise, not a win; `>=` cannot be
    asserted for every seed (see encoder_presets._expression for what was tried)."""
    import torch

    from multimed_hf.training.baselines import logistic_regression_baseline

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # two shared cores: one thread is several times faster than two contending ones
    try:
        ours = train_model(data=str(pbmc_dir), tasks=["cell_type"], family="unimodal", encoders="small",
                           output_dir=str(tmp_path), disable_tqdm=True, bootstrap_samples=0, eval_strategy="no",
                           save_strategy="no", logging_strategy="no")
    finally:
        torch.set_num_threads(threads)
    logistic = logistic_regression_baseline(pbmc_dir, "cell_type")
    assert (logistic.n_train, logistic.n_test, logistic.num_features) == (470, 107, 765)
    standard_error = np.sqrt(logistic.accuracy * (1 - logistic.accuracy) / logistic.n_test)
    assert logistic.accuracy > 0.5
    assert ours.metrics["test_cell_type_accuracy"] >= logistic.accuracy - standard_error
    assert ours.metrics["train_loss"] < np.log(10)  # it learned: below the loss of a uniform guess over 10 types


def test_the_default_hub_preset_learns_cell_types_on_real_cells(pbmc_dir, tmp_path):
    """`multimed train --tasks cell_type` with no other flag: under `--encoders hub` the scRNA-seq encoder is our
    own, random-init, so the run takes the from-scratch defaults. At the fine-tuning ones (lr 1e-4, 5 epochs) it
    stayed near the majority class (0.39 test accuracy; the largest type is 33 of 107 test cells); now 0.71-0.73
    (seeds 42/0/1)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run = train_model(data=str(pbmc_dir), tasks=["cell_type"], output_dir=str(tmp_path), disable_tqdm=True,
                          bootstrap_samples=0, eval_strategy="no", save_strategy="no", logging_strategy="no")
    finally:
        torch.set_num_threads(threads)
    info = json.loads((tmp_path / "run_info.json").read_text())
    assert info["arguments"]["encoders"] == "hub"
    assert run.metrics["test_cell_type_accuracy"] > 0.6


def test_a_cpu_run_does_not_warn_about_pinned_memory(data_dir, tmp_path):
    import warnings

    import torch

    if torch.accelerator.is_available():
        pytest.skip("an accelerator is present: pinned memory is wanted")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train_model(data=str(data_dir), tasks=["brain_tumor"], family="unimodal", encoders="small",
                    output_dir=str(tmp_path / "run"), **QUICK)
        evaluate_checkpoint(str(tmp_path / "run"), data_dir, output_dir=str(tmp_path / "evaluated"),
                            bootstrap_samples=0)
    assert (tmp_path / "evaluated" / "all_results.json").is_file()
    assert not [w for w in caught if "pin_memory" in str(w.message)]


def test_max_samples_draw_rows_across_the_split_the_same_in_every_run():
    # before (sweep S): the first N rows of a split ordered by source file (one class, one source): --max_train_samples
    # 8 of brain_tumor trained on glioma alone, and --max_eval_samples scored 3 of 4 classes
    from datasets import Dataset

    from multimed_hf.training.loading import sample_rows

    split = Dataset.from_dict({"sample_id": [f"r{i:03d}" for i in range(100)], "label": sorted([0, 1, 2, 3] * 25)})
    cut = sample_rows({"t": split}, 12)["t"]
    again = sample_rows({"t": split}, 12)["t"]
    assert len(cut) == 12 and cut["sample_id"] == again["sample_id"] == sorted(cut["sample_id"])
    assert set(cut["label"]) == {0, 1, 2, 3}
    assert sample_rows({"t": split}, 500)["t"]["sample_id"] == split["sample_id"]
    # a stream (no random access): its first rows
    assert list(sample_rows({"t": split.to_iterable_dataset()}, 3)["t"]) == list(split.select(range(3)))
