"""Our own flags (``multimed train`` / ``evaluate`` / ``benchmark``): each one either acts as its help says or is
refused with the flag, what was seen and what to use instead; where it fits some runs of a family or benchmark grid
and not others, it is applied where it fits and the others log one warning line. Never silently ignored."""

from __future__ import annotations

import json
import logging
import re

import pytest

import balancing_tiny as bt
from multimed_hf.training.arguments import parse_evaluate_args, parse_train_args
from multimed_hf.training.benchmark import BenchmarkError, _parse, benchmark_main, run_benchmark
from multimed_hf.training.families import plan_runs
from multimed_hf.training.run import RunError, evaluate_checkpoint, train_main, train_model
from training_tiny import brain_tumor, diabetic_retinopathy, tiny_model, tiny_processor

QUICK = ["--encoders", "small", "--hidden_size", "16", "--max_steps", "1", "--per_device_train_batch_size", "4",
         "--eval_strategy", "no", "--save_strategy", "no", "--disable_tqdm", "true", "--bootstrap_samples", "0",
         "--report_to", "none", "--use_cpu", "true", "--dataloader_num_workers", "0"]


@pytest.fixture(scope="module")
def bt_dir(tmp_path_factory):
    """brain_tumor (MRI only), with train and test splits only (no validation)."""
    return bt.write_built_folder(tmp_path_factory.mktemp("flags") / "multimed", {"brain_tumor": {
        "train": brain_tumor(8), "test": brain_tumor(4, seed=2, prefix="te")}})


@pytest.fixture(scope="module")
def vqa_dir(tmp_path_factory):
    """med_vqa rows holding an X-ray and a question (two modalities)."""
    return bt.write_built_folder(tmp_path_factory.mktemp("flags-vqa") / "multimed", {"med_vqa": {
        "train": bt.vqa_rows(8), "validation": bt.vqa_rows(4, seed=1, prefix="v"),
        "test": bt.vqa_rows(4, seed=2, prefix="t")}})


def _train(*flags, data="multimed", tasks=("brain_tumor",)):
    return parse_train_args(["--data", data, "--tasks", *tasks, "--output_dir", "out", *flags])


# ---------------------------------------------------------------------- refused at parse time
@pytest.mark.parametrize("flags, match", [
    # before: T was read only by temperature sampling, so under --sampling proportional it did nothing
    (["--sampling_temperature", "5"], r"--sampling_temperature 5.0: .*--sampling is 'proportional'.*--sampling "
                                      r"temperature"),
    # before: uniform and round_robin give every task the same batches; the cap on sizes was never read
    (["--sampling", "uniform", "--sampling_size_cap", "10"], r"--sampling_size_cap 10: --sampling uniform .*changes "
                                                             r"nothing"),
    # before: the InfoNCE settings of the image-caption pairs were kept and never used without --align_pairs
    (["--align_label_text", "--align_temperature", "0.2"], r"--align_temperature 0.2: .*only --align_pairs"),
    (["--align_label_text", "--max_align_pairs", "5"], r"--max_align_pairs 5: .*--align_pairs"),
    # before: domain_specific trained its own small models and the encoders asked for were never read
    (["--family", "domain_specific", "--encoders", "small"], r"--encoders small: family domain_specific trains its "
                                                              r"own small models"),
    (["--family", "domain_specific+miles", "--encoders", "hub"], r"--encoders hub: family domain_specific"),
    # before: transformers' script switches were parsed and never read (--do_eval alone still trained)
    (["--do_eval"], r"--do_eval: a switch of transformers' example scripts.*multimed train always trains"),
    (["--do_train", "--do_predict"], r"--do_train: a switch .*multimed evaluate CHECKPOINT"),
    # before: a split no run loads was silently scored nowhere
    (["--eval_splits", "tset"], r"--eval_splits \['tset'\]: \['tset'\] is not a split.*'validation', 'test'"),
    # before: a misspelt class kept its name as its text
    (["--align_label_text", "--class_texts", '{"brain_tumor": {"gliomaa": "a glial tumour"}}'],
     r"--class_texts\['brain_tumor'\]: \['gliomaa'\] are not classes.*'glioma'"),
    # before: every preset's encoders failed under early fusion after the data had loaded
    (["--fusion", "early", "--encoders", "small"], r"--fusion early: .*--encoders small gives whole encoders .*"
                                                   r"--encoders FILE.json with an input embedder per modality"),
    (["--fusion", "early"], r"--fusion early: .*--encoders hub"),
])
def test_flags_that_would_do_nothing_are_refused_at_parse_time(flags, match):
    with pytest.raises(ValueError, match=match):
        _train(*flags)


@pytest.mark.parametrize("flag, value, expected", [
    ("hidden_size", "0", "an integer >= 1"),  # before: 0 silently meant the preset's size (`hidden_size or preset`)
    ("max_train_samples", "0", "an integer >= 1"),  # before: an empty training split, failing far from the flag
    ("max_eval_samples", "-1", "an integer >= 1"),
    ("bootstrap_samples", "-5", "0 \\(no CI\\) or more"),  # before: accepted, then raised after training
])
def test_counts_below_their_minimum_are_refused(flag, value, expected):
    with pytest.raises(ValueError, match=f"--{flag} {value}: expected {expected}"):
        _train(f"--{flag}", value)


def test_evaluate_counts_below_their_minimum_are_refused():
    with pytest.raises(ValueError, match="--max_eval_samples 0: expected an integer >= 1"):
        parse_evaluate_args(["ckpt", "--data", "multimed", "--output_dir", "o", "--max_eval_samples", "0"])


@pytest.mark.parametrize("flags, match", [
    # before: accepted, exit 0, nothing changed (evaluate trains nothing)
    (["--learning_rate", "0.1"], r"--learning_rate: multimed evaluate trains nothing"),
    (["--label_smoothing_factor", "0.1"], r"--label_smoothing_factor: multimed evaluate trains nothing"),
    # before: the Hub repository was created and nothing uploaded (exit 0)
    (["--push_to_hub", "--hub_model_id", "me/ev"], r"--push_to_hub: multimed evaluate uploads nothing .*hf upload"),
])
def test_evaluate_refuses_what_it_would_not_do(flags, match):
    with pytest.raises(ValueError, match=match):
        parse_evaluate_args(["ckpt", "--data", "multimed", "--output_dir", "o", *flags])
    assert parse_evaluate_args(["ckpt", "--data", "multimed", "--output_dir", "o", "--per_device_eval_batch_size",
                                "4"])[1].per_device_eval_batch_size == 4


@pytest.mark.parametrize("flag, value", [
    ("--task_batch_sizes", '{"cell_type": 256}'),  # before: a batch size of a task not trained was ignored
    ("--class_texts", '{"cell_type": {"B cell": "a B lymphocyte"}}'),
])
def test_task_keyed_flags_must_name_tasks_of_the_run(flag, value):
    extra = ["--align_label_text"] if flag == "--class_texts" else []
    with pytest.raises(ValueError, match=rf"{flag} names tasks \['cell_type'\] that this run does not train"):
        _train(flag, value, *extra)
    args, _ = _train(flag, value, *extra, tasks=("brain_tumor", "cell_type"))  # named among --tasks: fine
    assert "cell_type" in getattr(args, flag[2:])


def test_processor_overrides_must_name_a_modality_the_tasks_read():
    # before: train applied the override to a processor the run has not (MissingProcessorError naming no flag)
    with pytest.raises(ValueError, match=r"--processor_overrides names modalities \['dna'\] that none of --tasks "
                                         r"\['brain_tumor'\] reads \(they read \['mri'\]"):
        _train("--processor_overrides", '{"dna": {"max_length": 64}}')
    args, _ = _train("--processor_overrides", '{"image": {"draft_size": 64}}')  # 'image': every image modality
    assert args.processor_overrides == {"image": {"draft_size": 64}}


@pytest.mark.parametrize("flag", ["--uint8_images", "--draft_images"])
def test_image_flags_need_a_task_that_reads_images(flag):
    # before: the processor had no image processor to change, and the flag did nothing
    with pytest.raises(ValueError, match=rf"{flag} true .* --tasks \['cell_type'\] read no image modality"):
        _train(flag, "true", tasks=("cell_type",))
    _train(flag, "false", tasks=("cell_type",))  # saying off is fine


def test_benchmark_refuses_seed_that_each_run_overwrites(capsys):
    # before: --seed was parsed, then every run's seed was replaced by one of --seeds
    argv = ["--data", "multimed", "--tasks", "brain_tumor", "--output_dir", "r", "--seed", "7"]
    with pytest.raises(BenchmarkError, match="--seed would be overwritten by every run of the grid; use --seeds"):
        _parse(argv)
    # the command says so in one line (it printed _parse's traceback)
    assert benchmark_main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("multimed benchmark: error: --seed would be overwritten") and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_benchmark_refuses_encoders_where_every_family_is_domain_specific():
    # before: --encoders was accepted and every run of the grid trained its own small models whatever it said
    base = ["--data", "multimed", "--tasks", "brain_tumor", "--output_dir", "r", "--encoders", "small"]
    with pytest.raises(BenchmarkError, match="--encoders small: every family given is domain_specific"):
        _parse([*base, "--families", "domain_specific", "domain_specific+miles"])
    with pytest.raises(BenchmarkError, match="--encoders small: family domain_specific trains"):
        _parse([*base, "--families", "domain_specific"])
    assert _parse([*base, "--families", "domain_specific", "unimodal"])[1].encoders == "small"  # unimodal reads it
    assert _parse([*base[:-2], "--families", "domain_specific"])[1].encoders == "hub"  # not named: fine


def test_benchmark_and_evaluate_refuse_script_switches(tmp_path):
    # before: --do_train/--do_eval/--do_predict were parsed and never read
    with pytest.raises(BenchmarkError, match=r"--do_predict: a switch .*multimed benchmark trains every run"):
        _parse(["--data", "multimed", "--tasks", "brain_tumor", "--output_dir", "r", "--do_predict"])
    with pytest.raises(ValueError, match=r"--do_eval: a switch .*multimed evaluate scores the checkpoint on --split"):
        parse_evaluate_args(["run", "--data", "multimed", "--output_dir", "out", "--do_eval", "true"])
    spec = tmp_path / "evaluate.json"
    spec.write_text(json.dumps({"checkpoint": "run", "data": "multimed", "output_dir": "out", "do_predict": True}))
    with pytest.raises(ValueError, match=r"--do_predict: a switch"):
        parse_evaluate_args([str(spec)])
    assert parse_evaluate_args(["run", "--data", "multimed", "--output_dir", "out"])[0].checkpoint == "run"


def test_train_on_a_missing_data_folder_says_so(tmp_path, capsys):
    # before: datasets' FileNotFoundError traceback
    assert train_main(["--data", str(tmp_path / "nowhere"), "--tasks", "brain_tumor", "--output_dir",
                       str(tmp_path / "run"), *QUICK]) == 2
    err = capsys.readouterr().err
    assert err.startswith("multimed train: error: cannot load config 'brain_tumor' from ")
    assert "nowhere' (no such folder; a built MultiMed folder, from `multimed build`, or a Hub dataset id" in err


def test_benchmark_checks_task_keyed_flags_against_its_tasks(tmp_path, capsys):
    assert benchmark_main(["--data", str(tmp_path), "--tasks", "brain_tumor", "--families", "unimodal", "--seeds",
                           "0", "--output_dir", str(tmp_path / "r"), "--task_batch_sizes", '{"cell_type": 8}']) == 2
    assert re.search(r"^multimed benchmark: error: --task_batch_sizes names tasks \['cell_type'\]",
                     capsys.readouterr().err)


def test_a_run_folder_holding_checkpoints_is_not_trained_again_in_silence(bt_dir, tmp_path, capsys):
    # before: training restarted from step 0 and overwrote the earlier run's checkpoints without a word
    earlier = tmp_path / "run" / "checkpoint-3"
    earlier.mkdir(parents=True)
    (earlier / "trainer_state.json").write_text("{}")
    code = train_main(["--data", bt_dir, "--tasks", "brain_tumor", "--family", "unimodal", "--output_dir",
                       str(tmp_path / "run"), *QUICK])
    assert code == 2
    err = capsys.readouterr().err
    assert "holds an earlier run's checkpoints (last: checkpoint-3)" in err
    assert "--resume_from_checkpoint true" in err and "another --output_dir" in err
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_a_finished_run_folder_without_checkpoints_is_not_trained_over(bt_dir, tmp_path, capsys):
    # before: a second run into the folder of a finished one (--save_strategy no) overwrote its model and results,
    # and left the first run's files it did not write (another task's predictions) beside its own
    out = tmp_path / "run"
    assert train_main(["--data", bt_dir, "--tasks", "brain_tumor", "--family", "unimodal", "--output_dir", str(out),
                       *QUICK]) == 0
    model = (out / "model.safetensors").read_bytes()
    capsys.readouterr()
    assert train_main(["--data", bt_dir, "--tasks", "brain_tumor", "--family", "unimodal", "--output_dir", str(out),
                       *QUICK, "--seed", "1"]) == 2
    err = capsys.readouterr().err
    assert "holds an earlier run or evaluation (run_info.json, no checkpoint to resume from)" in err
    assert "another --output_dir" in err and (out / "model.safetensors").read_bytes() == model
    # nor resumed from nothing (sweep K12: trained again from scratch over it, a warning alone)
    assert train_main(["--data", bt_dir, "--tasks", "brain_tumor", "--family", "unimodal", "--output_dir", str(out),
                       *QUICK, "--resume_from_checkpoint", "true"]) == 2
    assert "holds a finished run or evaluation (run_info.json) and no checkpoint" in capsys.readouterr().err
    assert (out / "model.safetensors").read_bytes() == model


def test_evaluation_during_training_without_a_validation_split_is_refused_by_us(bt_dir, tmp_path, capsys):
    # before: a warning that the split "is scored for the others" (there were none), then transformers' error about
    # eval_dataset after the data and model were assembled
    quick = [a if a != "no" or QUICK[i - 1] != "--eval_strategy" else "epoch" for i, a in enumerate(QUICK)]
    code = train_main(["--data", bt_dir, "--tasks", "brain_tumor", "--family", "unimodal", "--output_dir",
                       str(tmp_path / "run"), *quick])
    assert code == 2
    err = capsys.readouterr().err
    assert "--eval_strategy epoch evaluates on each task's validation split during training, and none of tasks " \
           "['brain_tumor'] has one" in err and "pass --eval_strategy no" in err
    assert not (tmp_path / "run" / "model.safetensors").exists()


# ---------------------------------------------------------------------- refused / warned per plan
def test_modality_dropout_on_a_one_modality_run_is_refused(bt_dir, tmp_path, capsys):
    # before: dropout never drops a row's last modality, so a unimodal run trained exactly as without it
    code = train_main(["--data", bt_dir, "--tasks", "brain_tumor", "--family", "unimodal", "--output_dir",
                       str(tmp_path / "run"), "--modality_dropout", "0.3", *QUICK])
    assert code == 2
    err = capsys.readouterr().err
    assert "--modality_dropout 0.3" in err and "reads one modality per task" in err and "leave it out" in err
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_modality_dropout_where_every_row_holds_one_modality_is_refused(tmp_path, capsys):
    # before: diabetic_retinopathy's rows are an OCT scan or a fundus photograph each, so the multimodal run (two
    # modalities read) never dropped anything and trained exactly as without it
    data = bt.write_built_folder(tmp_path / "dr" / "multimed", {"diabetic_retinopathy": {
        "train": diabetic_retinopathy(8), "test": diabetic_retinopathy(4, seed=2, prefix="te")}})
    code = train_main(["--data", data, "--tasks", "diabetic_retinopathy", "--family", "multimodal", "--output_dir",
                       str(tmp_path / "run"), "--modality_dropout", "0.3", *QUICK])
    assert code == 2
    err = capsys.readouterr().err
    assert "--modality_dropout 0.3" in err and "no training row of plan" in err and "each row has one" in err
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_modality_dropout_trains_where_rows_hold_several_modalities(vqa_dir, tmp_path):
    run = train_model(data=vqa_dir, tasks=["med_vqa"], family="multimodal", encoders="small", modality_dropout=0.3,
                      hidden_size=16, eval_splits=["test"], bootstrap_samples=0, output_dir=str(tmp_path / "run"),
                      max_steps=1, per_device_train_batch_size=4, eval_strategy="no", save_strategy="no",
                      use_cpu=True, disable_tqdm=True, dataloader_num_workers=0)
    assert json.loads((run.output_dir / "config.json").read_text())["modality_dropout"] == 0.3


def test_task_sampling_with_one_task_is_refused_in_python_too(bt_dir, tmp_path):
    with pytest.raises(RunError, match="--sampling round_robin shares batches out between tasks, and plan "
                                       "'brain_tumor-mri' .* trains one task: it would change nothing"):
        train_model(data=bt_dir, tasks=["brain_tumor"], family="unimodal", encoders="small", sampling="round_robin",
                    output_dir=str(tmp_path / "run"), max_steps=1)


def test_a_benchmark_flag_that_fits_no_run_is_refused_before_training(bt_dir, tmp_path):
    trained = []
    with pytest.raises(BenchmarkError, match="--modality_dropout changes no run of the grid"):
        run_benchmark(bt_dir, ["brain_tumor"], ["unimodal", "domain_specific"], [0], tmp_path / "r",
                      run_options={"modality_dropout": 0.2}, train_fn=lambda *a, **k: trained.append(a),
                      progress=False)
    assert trained == []


def test_a_flag_that_fits_some_runs_is_applied_there_and_warned_for_the_others(vqa_dir, tmp_path, caplog):
    # unimodal over med_vqa: one run reads the X-ray, one the question; a text override belongs to the second only
    # (before: the X-ray run failed, its processor has no text processor to change)
    plans = {p.name: p for p in plan_runs("unimodal", ["med_vqa"], vqa_dir)}
    assert set(plans) == {"med_vqa-xray", "med_vqa-text"}
    seen = {}
    for name in ("med_vqa-xray", "med_vqa-text"):
        with caplog.at_level(logging.WARNING, logger="multimed_hf.training.run"):
            caplog.clear()
            train_model(data=vqa_dir, tasks=["med_vqa"], family="unimodal", encoders="small", plan=plans[name],
                        processor_overrides={"text": {"max_length": 7}}, hidden_size=16, eval_splits=["test"],
                        bootstrap_samples=0, output_dir=str(tmp_path / name), max_steps=1,
                        per_device_train_batch_size=4, eval_strategy="no", save_strategy="no", use_cpu=True,
                        disable_tqdm=True, dataloader_num_workers=0,
                        on_assembly=lambda a, name=name: seen.setdefault(name, a.processor))
            warned = [r.getMessage() for r in caplog.records if "processor_overrides" in r.getMessage()]
        assert seen[name].processors.get("text") is None or seen[name].processors["text"].max_length == 7
        if name == "med_vqa-xray":
            assert len(warned) == 1 and "not applied to this run" in warned[0] and "['text']" in warned[0]
        else:
            assert warned == [] and seen[name].processors["text"].max_length == 7


def test_streaming_refuses_variants_that_read_whole_splits(vqa_dir, tmp_path):
    # before: +gblend failed deep in its probe runs (TypeError: IterableDataset has no len())
    with pytest.raises(RunError, match=r"--streaming with family 'multimodal\+gblend': \+gblend reads the whole "
                                       r"training split"):
        train_model(data=vqa_dir, tasks=["med_vqa"], family="multimodal+gblend", encoders="small", streaming=True,
                    output_dir=str(tmp_path / "run"), max_steps=1)


# ---------------------------------------------------------------------- evaluation splits
def test_eval_splits_the_data_lacks_are_refused_before_training(bt_dir, tmp_path):
    # before: the run trained, then scored nothing and wrote empty metrics
    with pytest.raises(RunError, match=r"--eval_splits \['validation'\]: none of them exists for tasks "
                                       r"\['brain_tumor'\].*'train', 'test'"):
        train_model(data=bt_dir, tasks=["brain_tumor"], family="unimodal", encoders="small", hidden_size=16,
                    eval_splits=["validation"], output_dir=str(tmp_path / "run"), max_steps=1, eval_strategy="no",
                    use_cpu=True)
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_scoring_the_training_split_keeps_trainers_train_results_and_a_stream_of_it_is_refused(bt_dir, tmp_path):
    # before (sweep E4): scoring the train split rewrote train_results.json with its metrics alone (train_loss and
    # the runtime gone); under --streaming the run trained, then failed on the stream's len()
    import json

    run = tmp_path / "run"
    train_model(data=bt_dir, tasks=["brain_tumor"], family="unimodal", encoders="small", hidden_size=16,
                eval_splits=["train", "test"], output_dir=str(run), max_steps=1, eval_strategy="no", use_cpu=True,
                save_strategy="no", report_to="none", bootstrap_samples=0)
    saved = json.loads((run / "train_results.json").read_text())
    assert "train_loss" in saved and "train_runtime" in saved and "train_brain_tumor_accuracy" in saved
    with pytest.raises(RunError, match=r"--eval_splits train with --streaming"):
        train_model(data=bt_dir, tasks=["brain_tumor"], family="unimodal", encoders="small", hidden_size=16,
                    eval_splits=["train", "test"], output_dir=str(tmp_path / "stream"), max_steps=1,
                    eval_strategy="no", use_cpu=True, streaming=True)
    assert not (tmp_path / "stream" / "model.safetensors").exists()


def test_evaluate_says_which_splits_a_task_lacks(bt_dir, tmp_path, caplog):
    checkpoint = tmp_path / "ckpt"
    tiny_model(["brain_tumor"]).save_pretrained(checkpoint)
    tiny_processor().save_pretrained(checkpoint)
    with caplog.at_level(logging.WARNING, logger="multimed_hf.training.run"):
        result = evaluate_checkpoint(str(checkpoint), bt_dir, ["validation", "test"], tmp_path / "eval",
                                     bootstrap_samples=0)
    assert any(k.startswith("test_") for k in result.metrics)
    warned = [r.getMessage() for r in caplog.records]
    assert any("'brain_tumor' has no 'validation' split" in w for w in warned)  # before: only in run_info.json
    # no split asked for exists: the error lists those the data holds (`--split val` for validation)
    with pytest.raises(RunError, match=r"none of the splits \['val'\] exists .*; it holds \['test', 'train'\]"):
        evaluate_checkpoint(str(checkpoint), bt_dir, ["val"], tmp_path / "eval2", bootstrap_samples=0)


def test_help_shows_the_defaults_a_run_takes(capsys):
    # before: --help printed transformers' defaults (batch 8, 3 epochs, lr 5e-05), not the ones the run used
    from multimed_hf.training.arguments import parse_train_args, training_defaults

    for extra, encoders in (([], "hub"), (["--encoders", "small"], "small")):
        with pytest.raises(SystemExit):
            parse_train_args([*extra, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        defaults = training_defaults("unimodal", encoders, None)
        for flag in ("learning_rate", "num_train_epochs", "per_device_train_batch_size"):
            shown = re.search(rf"--{flag} \S+, --[\w-]+ \S+ .*?\(default: ([^)]+)\)", text).group(1)
            assert float(shown) == float(defaults[flag]), (encoders, flag, shown)


@pytest.mark.parametrize("command", ["evaluate", "fewshot"])
def test_usage_shows_the_checkpoint_first_as_the_readme_runs_it(command, capsys):
    # before: "usage: multimed evaluate [-h] --checkpoint CHECKPOINT ...", while README runs `multimed evaluate OUT`
    from multimed_hf.cli import main

    with pytest.raises(SystemExit):
        main([command, "--help"])
    assert capsys.readouterr().out.startswith(f"usage: multimed {command} CHECKPOINT --data DATA")


def test_a_split_with_no_defined_metric_is_said_not_a_crash(capsys):
    # before: Trainer.log_metrics got an empty dict ("max() arg is an empty sequence"): multimed train exited 2 after
    # training, the folder without run_info.json or card, and later plans of the family never trained
    from multimed_hf.training.run import _report

    class Trainer:
        def log_metrics(self, split, metrics):
            assert metrics, "log_metrics cannot print an empty table"
            print(f"{split}: {metrics}")

    _report({"validation_expression_prediction_pearson": None}, "validation", True, Trainer())
    said = capsys.readouterr().out
    assert "no metric is defined on these rows" in said and "validation_expression_prediction_pearson" in said
    _report({"validation_x_accuracy": 0.5, "validation_x_f1": None}, "validation", True, Trainer())
    assert capsys.readouterr().out == "validation: {'validation_x_accuracy': 0.5}\n"


def test_a_task_keyed_flag_applies_to_the_plans_of_its_tasks_and_leaves_the_others(caplog):
    # before: every plan got the whole mapping: a family's or grid's plans without the named task failed
    # ("TaskSampling.batch_sizes names tasks ['brain_tumor'] that have no training rows", a ZeroShotError for
    # --holdout_classes), so bone_age never trained beside brain_tumor
    from multimed_hf.training.families import RunPlan
    from multimed_hf.training.run import _alignment_settings, _sampling, plan_flag_notes

    args, _ = _train("--family", "unimodal", "--task_batch_sizes", '{"brain_tumor": 4}', "--align_label_text",
                     "--holdout_classes", "brain_tumor:meningioma", tasks=("brain_tumor", "bone_age"))
    tumour = RunPlan("brain_tumor-mri", "unimodal", ("brain_tumor",), {"brain_tumor": ("mri",)})
    age = RunPlan("bone_age-xray", "unimodal", ("bone_age",), {"bone_age": ("xray",)})
    assert _sampling(args, tumour).batch_sizes == {"brain_tumor": 4} and not _sampling(args, age).batch_sizes
    assert _alignment_settings(args, tumour).held_out == {"brain_tumor": ["meningioma"]}
    assert _alignment_settings(args, age).held_out == {}
    notes = plan_flag_notes(args, age)
    assert "task_batch_sizes" in notes and "holdout_classes" in notes and "task_batch_sizes" not in plan_flag_notes(
        args, tumour)


def test_train_says_which_tasks_its_family_has_no_run_for(tmp_path, monkeypatch, capsys):
    # before: `--family multimodal --tasks expression_prediction brain_tumor` trained expression_prediction alone
    # and never named brain_tumor (exit 0)
    from types import SimpleNamespace

    import multimed_hf.training.run as run

    trained = []
    monkeypatch.setattr(run, "train_model", lambda args, targs, plan=None, verbose=False: trained.append(plan.name)
                        or SimpleNamespace(output_dir=targs.output_dir))
    assert run.train_main(["--data", str(tmp_path / "none"), "--tasks", "expression_prediction", "brain_tumor",
                           "med_vqa", "--family", "multimodal", "--output_dir", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert trained == ["expression_prediction", "med_vqa"]
    assert "brain_tumor: no run of family 'multimodal' (same as unimodal (one modality))" in out
    # one plan left (before: brain_tumor unsaid there too)
    trained.clear()
    monkeypatch.setattr(run, "train_model", lambda args, targs, plan=None, verbose=False: trained.append(
        run.choose_plan(args).name) or SimpleNamespace(output_dir=targs.output_dir))
    assert run.train_main(["--data", str(tmp_path / "none"), "--tasks", "brain_tumor", "expression_prediction",
                           "--family", "multimodal", "--output_dir", str(tmp_path / "one")]) == 0
    assert trained == ["expression_prediction"]
    assert "brain_tumor: no run of family 'multimodal'" in capsys.readouterr().out


def test_resuming_a_checkpoint_of_other_tasks_is_refused_naming_both(tmp_path):
    # before: Trainer failed on a long list of missing and unexpected weight names
    from multimed_hf.training.run import RunError, _refuse_checkpoint_of_other_heads
    from training_tiny import tiny_model

    checkpoint = tmp_path / "run" / "checkpoint-3"
    tiny_model(["brain_tumor"]).config.save_pretrained(checkpoint)
    (checkpoint / "trainer_state.json").write_text("{}")
    other = tiny_model(["brain_tumor", "diabetic_retinopathy"]).config
    for resume in (str(checkpoint), True):
        with pytest.raises(RunError, match=r"another run's: heads for tasks \['brain_tumor'\] \(this run: "
                                           r"\['brain_tumor', 'diabetic_retinopathy'\]\).* resume with the --tasks"):
            _refuse_checkpoint_of_other_heads(resume, str(tmp_path / "run"), other)
    _refuse_checkpoint_of_other_heads(True, str(tmp_path / "run"), tiny_model(["brain_tumor"]).config)  # alike
    # the same task by another family (before: the same head keys passed, and the strict load failed)
    late = tiny_model(["brain_tumor"]).config
    late.fusion = "late"
    with pytest.raises(RunError, match=r"another run's: fusion intermediate \(this run: late\)"):
        _refuse_checkpoint_of_other_heads(True, str(tmp_path / "run"), late)


def test_resuming_from_a_run_folder_takes_its_last_checkpoint(bt_dir, tmp_path, caplog):
    # before (sweep S): Trainer took the run folder's saved model alone and restarted the optimiser, schedule and
    # random state unsaid (weights 1e-3 off the resume from its checkpoint)
    import logging
    import shutil

    import torch
    from safetensors.torch import load_file

    def train(out, steps, *flags):
        given = {**dict(zip(QUICK[::2], QUICK[1::2])), "--max_steps": str(steps), "--save_strategy": "steps",
                 "--save_steps": "2"}
        return train_main(["--data", bt_dir, "--tasks", "brain_tumor", "--family", "unimodal", "--output_dir",
                           str(out), *[x for kv in given.items() for x in kv], *flags])

    assert train(tmp_path / "run", 2) == 0  # a run folder: its saved model, and checkpoint-2
    assert (tmp_path / "run" / "checkpoint-2").is_dir() and (tmp_path / "run" / "model.safetensors").is_file()
    for name in ("a", "b"):
        shutil.copytree(tmp_path / "run", tmp_path / name)
    with caplog.at_level(logging.WARNING, logger="multimed_hf.training.run"):
        assert train(tmp_path / "a", 3, "--resume_from_checkpoint", str(tmp_path / "a")) == 0
    assert "a run folder; resuming from its last checkpoint, checkpoint-2" in caplog.text
    assert train(tmp_path / "b", 3, "--resume_from_checkpoint", str(tmp_path / "b" / "checkpoint-2")) == 0
    a, b = (load_file(tmp_path / name / "model.safetensors") for name in ("a", "b"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resuming_from_a_folder_without_optimiser_state_or_checkpoints_is_refused(bt_dir, tmp_path, capsys):
    saved = tmp_path / "saved"
    saved.mkdir()
    (saved / "trainer_state.json").write_text("{}")
    code = train_main(["--data", bt_dir, "--tasks", "brain_tumor", "--family", "unimodal", "--output_dir",
                       str(tmp_path / "run"), *QUICK, "--resume_from_checkpoint", str(saved)])
    assert code == 2
    assert f"--resume_from_checkpoint {saved}: not a checkpoint (no optimiser state" in capsys.readouterr().err


def test_data_naming_a_config_folder_a_missing_config_or_a_source_folder_says_what_to_pass(tmp_path, capsys):
    # before (sweep S): each said only "BuilderConfig 'brain_tumor' not found. Available: ['default']" (or the
    # configs there), not that --data is the built folder, nor how to build the config
    from dataset_scripts.sample_sources import sample_generators
    from multimed_hf.api import build_dataset

    source = sample_generators()["Brain-Tumor-MRI-Dataset"](tmp_path / "bt")
    build_dataset("brain_tumor", [source], tmp_path / "multimed", progress=False)
    cases = [
        (tmp_path / "multimed" / "brain_tumor", "brain_tumor",
         f"is one config's folder of the built folder '{tmp_path / 'multimed'}': pass --data {tmp_path / 'multimed'}"),
        (tmp_path / "multimed", "disease", "the built folder holds ['brain_tumor'], not 'disease': build it into the "
                                           "same folder with `multimed build disease --source DIR --out"),
        (source, "brain_tumor", "holds no built MultiMed config (a source folder? build it first: `multimed build "
                                "brain_tumor --source"),
    ]
    for data, task, says in cases:
        assert train_main(["--data", str(data), "--tasks", task, "--output_dir", str(tmp_path / "run"), *QUICK]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"multimed train: error: cannot load config '{task}' from ") and says in err, err


def test_a_resume_path_is_refused_where_the_family_trains_several_runs(tmp_path, capsys):
    # before (sweep E4): the first plan resumed from the path, the next one failed with "the checkpoint's model is
    # another run's ... resume with the --tasks, family and encoders that made it"
    from dataset_scripts.sample_sources import sample_generators
    from multimed_hf.api import build_dataset

    sources = [sample_generators()[name](tmp_path / name) for name in ("OCT2017", "aptos2019-blindness-detection")]
    build_dataset("diabetic_retinopathy", sources, tmp_path / "multimed", progress=False)
    code = train_main(["--data", str(tmp_path / "multimed"), "--tasks", "diabetic_retinopathy", "--family",
                       "unimodal", "--output_dir", str(tmp_path / "run"), *QUICK, "--resume_from_checkpoint",
                       str(tmp_path / "run" / "diabetic_retinopathy-oct" / "checkpoint-2")])
    assert code == 2
    err = capsys.readouterr().err
    assert "family 'unimodal' trains 2 runs for ['diabetic_retinopathy'] (diabetic_retinopathy-oct, " in err
    assert "give --plan NAME with it" in err and not (tmp_path / "run").exists()
    # before (sweep C5): both runs pushed to the one --hub_model_id, the fundus model over the OCT one
    code = train_main(["--data", str(tmp_path / "multimed"), "--tasks", "diabetic_retinopathy", "--family",
                       "unimodal", "--output_dir", str(tmp_path / "run"), *QUICK, "--push_to_hub", "--hub_model_id",
                       "me/dr"])
    assert code == 2
    err = capsys.readouterr().err
    assert "--hub_model_id me/dr: family 'unimodal' trains 2 runs" in err and "pushed over the one before" in err
    assert not (tmp_path / "run").exists()


def test_resuming_a_family_stopped_in_its_first_run_trains_the_runs_it_never_started(tmp_path, caplog):
    # before (sweep H4): --resume_from_checkpoint true, as the refusal advises, resumed the first run and then failed
    # on the next one's empty folder ("No valid checkpoint found"), on every later try
    from dataset_scripts.sample_sources import sample_generators
    from multimed_hf.api import build_dataset

    sources = [sample_generators()[name](tmp_path / name) for name in ("OCT2017", "aptos2019-blindness-detection")]
    build_dataset("diabetic_retinopathy", sources, tmp_path / "multimed", progress=False)
    family = ["--data", str(tmp_path / "multimed"), "--tasks", "diabetic_retinopathy", "--family", "unimodal",
              *QUICK, "--save_strategy", "steps", "--save_steps", "1"]
    first = tmp_path / "run" / "diabetic_retinopathy-oct"
    assert train_main([*family, "--plan", "diabetic_retinopathy-oct", "--output_dir", str(first)]) == 0
    assert (first / "checkpoint-1" / "trainer_state.json").is_file()
    assert train_main([*family, "--output_dir", str(tmp_path / "run")]) == 2  # refused: resume, or another folder
    assert train_main([*family, "--output_dir", str(tmp_path / "run"), "--resume_from_checkpoint", "true"]) == 0
    assert (tmp_path / "run" / "diabetic_retinopathy-fundus" / "model.safetensors").is_file()
    assert "diabetic_retinopathy-fundus holds no checkpoint; this run trains from scratch" in caplog.text


def test_capped_unimodal_runs_score_the_rows_the_other_families_score(tmp_path):
    # before (sweep H4): --max_eval_samples N drew the unimodal runs' rows among their modality's rows: the OCT and
    # fundus runs scored N rows each (2N in all), others than the N every other family scored: Table 1 not paired
    import pandas as pd

    from dataset_scripts.sample_sources import sample_generators
    from multimed_hf.api import build_dataset
    from multimed_hf.training.run import evaluate_checkpoint

    sources = [sample_generators()[name](tmp_path / name) for name in ("OCT2017", "aptos2019-blindness-detection")]
    build_dataset("diabetic_retinopathy", sources, tmp_path / "multimed", progress=False)
    common = ["--data", str(tmp_path / "multimed"), "--tasks", "diabetic_retinopathy", *QUICK,
              "--max_eval_samples", "8", "--max_train_samples", "12"]

    def scored(folder):
        return set(pd.read_parquet(folder / "predictions" / "diabetic_retinopathy-test.parquet")["sample_id"])

    assert train_main([*common, "--family", "multimodal", "--output_dir", str(tmp_path / "mm")]) == 0
    assert train_main([*common, "--family", "unimodal", "--output_dir", str(tmp_path / "uni")]) == 0
    oct_run, fundus_run = (tmp_path / "uni" / f"diabetic_retinopathy-{m}" for m in ("oct", "fundus"))
    everyone = scored(tmp_path / "mm")
    assert len(everyone) == 8 and scored(oct_run) | scored(fundus_run) == everyone
    assert scored(oct_run) and not scored(oct_run) & scored(fundus_run)
    evaluate_checkpoint(str(oct_run), str(tmp_path / "multimed"), ["test"], tmp_path / "oct-eval",
                        max_eval_samples=8, bootstrap_samples=0)
    assert scored(tmp_path / "oct-eval") == scored(oct_run)
    assert "(the oct rows among 8 drawn at random a task, --max_eval_samples)" in (oct_run / "README.md").read_text()
    # the training split scored (--eval_splits train) as other families score it: its OCT rows among the
    # --max_eval_samples drawn, not the rows drawn to train on (sweep K12), and whole without the cap
    from datasets import load_dataset

    from multimed_hf.training.loading import sample_rows

    whole = load_dataset(str(tmp_path / "multimed"), "diabetic_retinopathy", split="train",
                         cache_dir=str(tmp_path / "hf"))
    drawn = sample_rows({"t": whole}, 8)["t"]
    for cap, expected in ((["--max_eval_samples", "8"], {s for s, m in zip(drawn["sample_id"], drawn["modality"])
                                                         if m == "oct"}),
                          ([], {s for s, m in zip(whole["sample_id"], whole["modality"]) if m == "oct"})):
        out = tmp_path / f"scored-train{len(cap)}"
        flags = [f for f in common if f not in ("--max_eval_samples", "8")] + cap
        assert train_main([*flags, "--family", "unimodal", "--plan", "diabetic_retinopathy-oct", "--eval_splits",
                           "train", "--output_dir", str(out)]) == 0
        assert set(pd.read_parquet(out / "predictions" / "diabetic_retinopathy-train.parquet")["sample_id"]) == expected
    # and trained on every OCT training row without --max_train_samples (sweep E5: on the rows drawn to score it)
    flags = [f for f in common if f not in ("--max_train_samples", "12")]
    assert train_main([*flags, "--family", "unimodal", "--plan", "diabetic_retinopathy-oct", "--eval_splits",
                       "train", "test", "--output_dir", str(tmp_path / "whole-train")]) == 0
    oct_rows = sum(m == "oct" for m in whole["modality"])
    assert f"split: train, num_rows: {oct_rows})" in (tmp_path / "whole-train" / "README.md").read_text()
    # streamed: the first N rows holding the run's modality, in the run and in multimed evaluate (before, sweep C5:
    # evaluate took the split's first N rows, all OCT, then kept the fundus ones: none, and said nothing)
    streamed = tmp_path / "streamed"
    assert train_main([*common, "--family", "unimodal", "--plan", "diabetic_retinopathy-fundus", "--streaming",
                       "--output_dir", str(streamed)]) == 0
    evaluate_checkpoint(str(streamed), str(tmp_path / "multimed"), ["test"], tmp_path / "streamed-eval",
                        max_eval_samples=8, bootstrap_samples=0, streaming=True)
    assert scored(tmp_path / "streamed-eval") == scored(streamed) and len(scored(streamed)) > 0


def test_resuming_a_finished_run_keeps_it_and_more_steps_go_on_from_it(bt_dir, tmp_path, capsys):
    # before (sweep E5): resumed for 0 steps, its train_loss written over as 0.0
    given = {**dict(zip(QUICK[::2], QUICK[1::2])), "--save_strategy": "steps", "--save_steps": "1"}
    flags = [x for kv in given.items() for x in kv]
    out = tmp_path / "run"
    common = ["--data", bt_dir, "--tasks", "brain_tumor", "--family", "unimodal", "--output_dir", str(out), *flags]
    assert train_main(common) == 0
    results = (out / "all_results.json").read_bytes()
    capsys.readouterr()
    assert train_main([*common, "--resume_from_checkpoint", "true"]) == 0
    assert "finished in " in capsys.readouterr().out and (out / "all_results.json").read_bytes() == results
    assert train_main([*common, "--resume_from_checkpoint", "true", "--max_steps", "2"]) == 0
    assert (out / "checkpoint-2" / "trainer_state.json").is_file()
    # a run stopped after its last checkpoint, before its results: resumed, its checkpoint is scored as it is (sweep
    # K13: Trainer trained one step past --max_steps and wrote another train_loss)
    import safetensors.torch
    import torch

    (out / "run_info.json").unlink()
    (out / "all_results.json").unlink()
    weights = safetensors.torch.load_file(str(out / "checkpoint-2" / "model.safetensors"))
    assert train_main([*common, "--resume_from_checkpoint", "true", "--max_steps", "2"]) == 0
    assert not (out / "checkpoint-3").exists() and (out / "run_info.json").is_file()
    assert "test_brain_tumor_accuracy" in json.loads((out / "all_results.json").read_text())
    scored = safetensors.torch.load_file(str(out / "model.safetensors"))
    assert all(torch.equal(weights[k], scored[k]) for k in weights)


def test_an_incomplete_last_checkpoint_is_passed_over(tmp_path, caplog):
    # before (sweep H4): a run stopped while saving checkpoint-N left a folder without weights or state, which every
    # resume (the benchmark's --reuse_finished_runs too) took as the last checkpoint and failed on, every time
    from multimed_hf.training.run import last_checkpoint

    for step, complete in ((2, True), (4, True), (6, False), (10, False)):
        (tmp_path / f"checkpoint-{step}").mkdir()
        if complete:
            (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-x").mkdir()
    assert last_checkpoint(tmp_path) == str(tmp_path / "checkpoint-4")
    assert "checkpoint-10 is an incomplete checkpoint (no trainer_state.json" in caplog.text
    assert last_checkpoint(tmp_path / "nothing") is None


def test_evaluate_draws_its_cis_with_the_runs_seed_unless_given(tmp_path):
    # before (sweep C5): seed 42 (TrainingArguments' default) where the run drew its CIs with its --seed: the same
    # values and rows, other intervals
    import json

    from multimed_hf.training.arguments import parse_evaluate_args

    run = tmp_path / "run"
    (run / "checkpoint-2").mkdir(parents=True)
    (run / "run_info.json").write_text(json.dumps({"seed": 3}))
    assert parse_evaluate_args([str(run), "--data", "m"])[1].seed == 3
    assert parse_evaluate_args([str(run / "checkpoint-2"), "--data", "m"])[1].seed == 3
    assert parse_evaluate_args([str(run), "--data", "m", "--seed", "5"])[1].seed == 5
    assert parse_evaluate_args([str(tmp_path), "--data", "m"])[1].seed == 42  # nothing recorded


def test_evaluate_refuses_to_write_into_a_saved_run(bt_dir, tmp_path, capsys):
    # before (sweep S): `multimed evaluate RUN --output_dir RUN` overwrote the run's run_info.json, all_results.json
    # and metrics, unsaid
    from multimed_hf.training.run import evaluate_main

    run = tmp_path / "run"
    assert train_main(["--data", bt_dir, "--tasks", "brain_tumor", "--family", "unimodal", "--output_dir", str(run),
                       *QUICK]) == 0
    before = (run / "run_info.json").read_bytes()
    assert evaluate_main([str(run), "--data", bt_dir, "--output_dir", str(run), "--bootstrap_samples", "0"]) == 2
    assert f"--output_dir {run} holds a saved run" in capsys.readouterr().err
    assert (run / "run_info.json").read_bytes() == before
    assert evaluate_main([str(run), "--data", bt_dir, "--output_dir", str(tmp_path / "eval"),
                          "--bootstrap_samples", "0"]) == 0


def test_the_model_card_says_when_its_metrics_are_of_part_of_the_split(bt_dir, tmp_path):
    # before (sweep S): "Measured on the `test` split" for the 8 rows --max_eval_samples kept
    run = tmp_path / "run"
    assert train_main(["--data", bt_dir, "--tasks", "brain_tumor", "--family", "unimodal", "--output_dir", str(run),
                       *QUICK, "--max_eval_samples", "2"]) == 0
    card = (run / "README.md").read_text()
    assert "Measured on the `test` split (2 rows a task drawn at random, --max_eval_samples)." in card
    # a cap above the split's rows cuts nothing; a stream keeps its first rows (before, sweep K11: both "drawn at
    # random")
    assert train_main(["--data", bt_dir, "--tasks", "brain_tumor", "--family", "unimodal", "--output_dir",
                       str(tmp_path / "whole"), *QUICK, "--max_eval_samples", "100000"]) == 0
    assert "Measured on the `test` split." in (tmp_path / "whole" / "README.md").read_text()
    assert train_main(["--data", bt_dir, "--tasks", "brain_tumor", "--family", "unimodal", "--output_dir",
                       str(tmp_path / "streamed"), *QUICK, "--max_eval_samples", "2", "--streaming"]) == 0
    assert ("Measured on the `test` split (at most 2 rows a task, the first of each streamed split holding what it "
            "reads, --max_eval_samples).") in (tmp_path / "streamed" / "README.md").read_text()


@pytest.mark.parametrize("flag, value, says", [
    # before (sweep S): --max_steps 0 trained one step over the epochs' schedule; a batch size 0 was refused deep in
    # the sampler as "batch_size=0"
    ("--max_steps", "0", "max_steps=0: Trainer reads 0 as neither a step count nor unset"),
    ("--per_device_train_batch_size", "0", "per_device_train_batch_size=0: a batch holds at least one row"),
])
def test_counts_transformers_misreads_are_refused(bt_dir, tmp_path, capsys, flag, value, says):
    given = {**dict(zip(QUICK[::2], QUICK[1::2])), flag: value}
    assert train_main(["--data", bt_dir, "--tasks", "brain_tumor", "--family", "unimodal", "--output_dir",
                       str(tmp_path / "run"), *[x for kv in given.items() for x in kv]]) == 2
    err = capsys.readouterr().err
    assert "TrainingArguments that MultiMedTrainer cannot honour" in err and says in err
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_evaluate_without_an_output_dir_writes_beside_the_checkpoint(tmp_path, monkeypatch):
    # before (sweep S): transformers' ./trainer_output, shared by every evaluation
    from multimed_hf.training.arguments import parse_evaluate_args

    run = tmp_path / "run"
    run.mkdir()
    assert parse_evaluate_args([str(run), "--data", "multimed"])[1].output_dir == f"{run}-eval"
    assert parse_evaluate_args(["org/model", "--data", "multimed"])[1].output_dir == "model-eval"
    assert parse_evaluate_args([str(run), "--data", "d", "--output_dir", "x"])[1].output_dir == "x"
    # a checkpoint-N of a run: beside the run (before, sweep C5: RUN/checkpoint-N-eval, which Trainer's checkpoint
    # rotation took for a checkpoint and deleted when the run was resumed)
    (run / "checkpoint-6").mkdir()
    assert parse_evaluate_args([str(run / "checkpoint-6"), "--data", "m"])[1].output_dir == f"{run}-checkpoint-6-eval"
    # a checkpoint named as "." or "RUN/." (before, sweep K11: a hidden ".-eval" inside the run folder)
    assert parse_evaluate_args([f"{run}/.", "--data", "multimed"])[1].output_dir == f"{run}-eval"
    monkeypatch.chdir(run)
    assert parse_evaluate_args([".", "--data", "multimed"])[1].output_dir == f"{run.resolve()}-eval"
    assert parse_evaluate_args(["./", "--data", "multimed"])[1].output_dir == f"{run.resolve()}-eval"
