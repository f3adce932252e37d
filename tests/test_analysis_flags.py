"""The analysis commands (`multimed attribution|combos|ood|robustness`) refuse every flag they would silently ignore or
fail on far from it, naming the flag, why it changes nothing and what to use instead, before any training; as
`multimed train` does. Most cases are refused at parse time; those that depend on the task's modalities or splits
are refused by the analysis function before it trains (a train_fn that fails if called proves it)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from analysis_tiny import TASK, quick_args, trio_rows, trio_splits, trio_task
from balancing_tiny import write_built_folder
from multimed_hf.analysis import (
    AnalysisError,
    AttributionOptions,
    CombosOptions,
    OODOptions,
    RobustnessOptions,
    attribution,
    combos,
    ood,
    robustness,
)
from multimed_hf.analysis._common import ANALYSIS_FAMILY, analysis_plan, check_plan_flags, parse_analysis_args
from multimed_hf.cli import main

OPTIONS = {"attribution": AttributionOptions, "combos": CombosOptions, "ood": OODOptions,
           "robustness": RobustnessOptions}


def _parse(command, *flags, task="bone_age"):
    return parse_analysis_args(["--data", "multimed", "--task", task, "--output_dir", "out", *flags],
                               OPTIONS[command], single_task=command != "ood", prog=f"multimed {command}")


def _no_training(*args, **kwargs):
    raise AssertionError("a model was trained: the flag was not refused before training")


# ---------------------------------------------------------------------- refused at parse time, every command
@pytest.mark.parametrize("command", sorted(OPTIONS))
@pytest.mark.parametrize("flags, match", [
    # before: each analysis builds its own runs; --plan and --list_plans were never read (the run went on in full)
    (["--plan", "bone_age"], r"--plan bone_age: it picks one of `multimed train`'s runs.*leave it out"),
    (["--list_plans"], r"--list_plans prints `multimed train`'s runs.*would run in full"),
    # before: train_run set eval_splits=[]; the analysis scores its own rows
    (["--eval_splits", "validation"], r"--eval_splits \['validation'\]: an analysis scores its own rows"),
    # before: every split was loaded whole anyway (and a stream cannot be sliced by group or modality)
    (["--streaming", "--max_steps", "3"], r"--streaming: the analyses pick rows .*random access"),
    # before: one model per task was trained, whatever the family said
    (["--family", "multimodal_multitask"], r"--family multimodal_multitask: an analysis trains one model per task.*"
                                           r"use --family multimodal"),
    (["--family", "unimodal_multitask+miles"], r"use --family unimodal\+miles"),
    # before: domain_specific trained its own small models and --encoders was never read
    (["--family", "domain_specific", "--encoders", "small"], r"--encoders small: family domain_specific trains its "
                                                              r"own small models"),
    # before: transformers' script switches were parsed and never read
    (["--do_eval"], r"--do_eval: a switch of transformers' example scripts.*an analysis trains and scores its own"),
    # before: it capped only the validation evaluated in training, and there was none
    (["--max_eval_samples", "5", "--eval_strategy", "no"], r"--max_eval_samples 5: it caps the validation rows "
                                                           r"evaluated during training, and --eval_strategy is 'no'"),
    # before: a variant's options without the variant were kept and never read (check_variant_flags)
    (["--miles_factor", "0.3"], r"--miles_factor is an option of the \+miles variant"),
    (["--ogm_noise", "false"], r"--ogm_noise is an option of the \+ogm_ge variant"),
    # before: keys of tasks not analysed, modalities the task does not read (check_run_flags)
    (["--task_batch_sizes", '{"brain_tumor": 8}'], r"--task_batch_sizes names tasks \['brain_tumor'\] that this run "
                                                   r"does not train"),
    (["--processor_overrides", '{"dna": {"crop_center": 70}}'], r"--processor_overrides names modalities \['dna'\]"),
    # before: the trainer refused them only after the data was read (refused_arguments)
    (["--neftune_noise_alpha", "5"], r"TrainingArguments that MultiMedTrainer cannot honour:\n- "
                                     r"neftune_noise_alpha=5.0"),
    # before: MultiMedTrainer turned it off again, silently
    (["--remove_unused_columns", "true"], r"--remove_unused_columns True: MultiMedTrainer reads every column"),
])
def test_flags_of_multimed_train_the_analyses_do_not_use_are_refused(command, flags, match):
    with pytest.raises(ValueError, match=match):
        _parse(command, *flags)


@pytest.mark.parametrize("command", sorted(OPTIONS))
def test_help_says_which_listed_flags_are_refused(command, capsys):
    # before: --help listed every flag of multimed train and TrainingArguments, those refused among them, unsaid
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    refused = text[text.index("Listed above but refused here"):]
    for flag in ("--plan", "--list_plans", "--eval_splits", "--streaming", "*_multitask --family", "--do_eval",
                 "--remove_unused_columns True", "--max_eval_samples with --eval_strategy no",
                 "--encoders with --family domain_specific", "--neftune_noise_alpha"):
        assert flag in refused, flag


@pytest.mark.parametrize("command", sorted(OPTIONS))
def test_an_image_only_flag_is_refused_for_a_task_without_images(command):
    # before: --draft_images on cell_type (expression) was accepted and read by no processor
    with pytest.raises(ValueError, match=r"--draft_images true changes how images are decoded.*read no image"):
        _parse(command, "--draft_images", task="cell_type")
    with pytest.raises(ValueError, match=r"--processor_overrides names modalities \['image'\]"):
        _parse(command, "--processor_overrides", '{"image": {"draft_size": 64}}', task="cell_type")


def test_the_analyses_default_to_the_family_they_train():
    """Each analysis trains one model per task over every modality its rows hold: the multimodal family's run (before,
    the default said unimodal); what the flags still accept keeps working."""
    args, options, training_args = _parse("robustness", "--encoders", "small", "--max_steps", "3", "--seed", "5",
                                          "--modality_dropouts", "0", "0.5", "--resume_from_checkpoint", "true",
                                          "--processor_overrides", '{"image": {"draft_size": 64}}')
    assert args.family == ANALYSIS_FAMILY == "multimodal"
    assert (training_args.max_steps, training_args.seed, training_args.learning_rate) == (3, 5, 1e-3)
    assert options.modality_dropouts == [0.0, 0.5] and args.processor_overrides == {"image": {"draft_size": 64}}


def test_the_command_line_prints_the_refusal_naming_the_command(capsys):
    assert main(["combos", "--data", "multimed", "--task", "med_vqa", "--output_dir", "out", "--plan", "x"]) == 2
    assert capsys.readouterr().err.startswith("multimed combos: error: --plan x: it picks one of")


def test_a_json_file_is_checked_like_the_flags(tmp_path):
    path = tmp_path / "args.json"
    path.write_text(json.dumps({"data": "multimed", "task": "bone_age", "output_dir": "out", "eval_splits": ["test"]}))
    with pytest.raises(ValueError, match=r"--eval_splits \['test'\]: an analysis scores its own rows \(--split test\)"):
        parse_analysis_args([str(path)], AttributionOptions, single_task=True)
    path.write_text(json.dumps({"data": "multimed", "task": "bone_age", "output_dir": "out", "checkpoint": "run",
                                "max_steps": 7}))
    with pytest.raises(ValueError, match=r"--max_steps with --checkpoint run: .*nothing is trained"):
        parse_analysis_args([str(path)], AttributionOptions, single_task=True)


# ---------------------------------------------------------------------- each command's own options
@pytest.mark.parametrize("flags, match", [
    # before: every run's dropout was replaced by one of --modality_dropouts
    (["--modality_dropout", "0.3"], r"--modality_dropout 0.3: robustness trains one model per value of "
                                    r"--modality_dropouts \[0.0, 0.3\].*give --modality_dropouts 0 0.3 instead"),
    # before: the same run trained twice into one folder, its curves listed twice
    (["--modality_dropouts", "0", "0.3", "0.3"], r"\[0.3\] repeated"),
    (["--modality_dropouts", "1.0"], r"--modality_dropouts \[1.0\]: expected one or more values in \[0, 1\)"),
    (["--levels", "2"], r"--levels \[2.0\]: expected one or more values in \[0, 1\]"),
    # before: "clean" in the summary was the lowest level's score, and both robustness scores measured from it
    (["--levels", "0.5", "1"], r"--levels \[0.5, 1.0\]: give 0 among them"),
    (["--missing_rates", "0.5", "1"], r"--missing_rates \[0.5, 1.0\]: give 0 among them"),
    (["--levels", "0", "0.5", "0.5"], r"--levels \[0.0, 0.5, 0.5\]: \[0.5\] repeated"),
    # before: every model resumed from that one checkpoint
    (["--resume_from_checkpoint", "runs/x/checkpoint-5"], r"--resume_from_checkpoint runs/x/checkpoint-5: robustness "
                                                          r"trains one model per value of --modality_dropouts"),
])
def test_robustness_options(flags, match):
    with pytest.raises(ValueError, match=match):
        _parse("robustness", *flags)


@pytest.mark.parametrize("command, flags, match", [
    # before: the second pass scored every subset again, the table listed each twice
    ("combos", ["--modes", "mask", "mask"], r"--modes \['mask', 'mask'\]: a mode repeated"),
    # before: max(1, 0) silently meant 1
    ("combos", ["--max_order", "0"], r"--max_order 0: expected an integer >= 1"),
    ("combos", ["--modes", "retrain", "--resume_from_checkpoint", "ck"], r"--modes retrain trains one model per "
                                                                         r"modality subset"),
    ("ood", ["--resume_from_checkpoint", "ck"], r"--resume_from_checkpoint ck: ood trains one model per held-out"),
    # before (sweep C5): every held-out group's model pushed into one repository, each over the one before
    ("ood", ["--push_to_hub", "--hub_model_id", "me/ood"], r"--push_to_hub: ood trains one model per held-out"),
    ("combos", ["--modes", "retrain", "--push_to_hub"], r"--push_to_hub: --modes retrain trains one model per "),
    # before: range(0, n, 0) failed after training with "range() arg 3 must not be zero"
    ("attribution", ["--batch_size", "0"], r"--batch_size 0: expected an integer >= 1"),
])
def test_options_of_one_command(command, flags, match):
    with pytest.raises(ValueError, match=match):
        _parse(command, *flags)


def test_a_resume_path_is_kept_where_one_model_is_trained():
    assert _parse("combos", "--modes", "mask", "--resume_from_checkpoint", "ck")[2].resume_from_checkpoint == "ck"
    assert _parse("combos", "--modes", "mask", "--push_to_hub")[2].push_to_hub
    assert _parse("attribution", "--resume_from_checkpoint", "ck")[2].resume_from_checkpoint == "ck"


@pytest.mark.parametrize("flags", [
    ["--learning_rate", "0.1"], ["--max_steps", "3"], ["--eval_strategy", "no"], ["--encoders", "small"],
    ["--family", "domain_specific"], ["--modality_dropout", "0.2"], ["--max_train_samples", "5"],
    ["--uint8_images", "true"],
])
def test_attributing_a_checkpoint_refuses_the_training_flags(flags):
    # before: with --checkpoint nothing was trained, and every one of these was silently dropped
    with pytest.raises(ValueError, match=rf"{flags[0]} with --checkpoint run: the saved run is attributed as it is"):
        _parse("attribution", "--checkpoint", "run", *flags)


def test_attributing_a_checkpoint_keeps_the_prediction_flags():
    args, options, training_args = _parse("attribution", "--checkpoint", "run", "--per_device_eval_batch_size", "4",
                                          "--seed", "3", "--bootstrap_samples", "5", "--use_cpu", "--split", "test")
    assert options.checkpoint == "run" and training_args.per_device_eval_batch_size == 4
    assert (training_args.seed, args.bootstrap_samples, training_args.use_cpu) == (3, 5, True)


# ---------------------------------------------------------------------- refused by the function, before training
def test_a_unimodal_family_is_refused_where_the_task_has_several_modalities(tmp_path):
    with trio_task():
        args, targs = quick_args(tmp_path)
        args = dataclasses.replace(args, family="unimodal")
        # before: a model over all three modalities was trained and recorded as family 'unimodal'
        with pytest.raises(AnalysisError, match=r"--family unimodal: the analysis reads every modality task "
                                                r"'zz_trio'.*\['mri', 'eeg', 'text'\].*use --family multimodal"):
            attribution(args, targs, datasets=trio_splits(8, 4), train_fn=_no_training)
    # a task of one modality: unimodal is what is trained
    args = dataclasses.replace(args, tasks=["bone_age"])
    check_plan_flags(args, [analysis_plan(args, "bone_age", ("xray",), "model")])


@pytest.mark.parametrize("flags, match", [
    # before: train_model only warned (a plan handed to it), and trained as if the flag were absent
    ({"modality_dropout": 0.2}, r"--modality_dropout changes none of the analysis' runs \(--modality_dropout 0.2 "
                                r"drops modalities of rows holding several.*reads one modality per task"),
    ({"sampling": "uniform"}, r"--sampling changes none of the analysis' runs \(--sampling uniform shares batches "
                              r"out between tasks"),
])
def test_a_flag_that_changes_no_run_of_the_analysis_is_refused(tmp_path, flags, match):
    args, targs = quick_args(tmp_path, **flags)
    args = dataclasses.replace(args, tasks=["bone_age"])  # one modality, one task
    with pytest.raises(AnalysisError, match=match):
        attribution(args, targs, train_fn=_no_training)
    with pytest.raises(AnalysisError, match=match):
        ood(args, targs, options=OODOptions(group="sex"), train_fn=_no_training)


def test_robustness_refuses_modality_dropout_for_a_task_of_one_modality(tmp_path):
    args, targs = quick_args(tmp_path)
    args = dataclasses.replace(args, tasks=["bone_age"])
    # before: the 0.3 run trained the same model as the 0 run and was reported as its own curve
    with pytest.raises(AnalysisError, match=r"--modality_dropouts \[0.0, 0.3\]: task 'bone_age' reads one modality "
                                            r"\(\['xray'\]\).*give --modality_dropouts 0"):
        robustness(args, targs, train_fn=_no_training)


def test_perturbed_and_combined_modalities_must_be_held_by_the_rows(tmp_path):
    splits = trio_splits(8, 4)
    splits["train"] = splits["train"].map(lambda r: {"text": None})  # no training row holds the text
    with trio_task():
        data = write_built_folder(tmp_path / "trio-without-training-text", {TASK: splits})
        args, targs = quick_args(tmp_path / "out")
        args = dataclasses.replace(args, data=data)
        # before: the model was trained first, then `every.index('text')` failed: "'text' is not in list"
        with pytest.raises(AnalysisError, match=r"--modalities \['text'\]: task 'zz_trio''s training rows in .* hold "
                                                r"\['mri', 'eeg'\].*cannot be perturbed"):
            robustness(args, targs, options=RobustnessOptions(modalities=["text"], modality_dropouts=[0.0]),
                       train_fn=_no_training)
        # before: a model reading a modality no training row holds was trained and scored
        with pytest.raises(AnalysisError, match=r"--modalities \['mri', 'text'\]: .*\['text'\] cannot be combined"):
            combos(args, targs, options=CombosOptions(modalities=["mri", "text"]), train_fn=_no_training)


def test_in_distribution_needs_a_test_split(tmp_path):
    splits = {"train": trio_rows(12, 0, "tr"), "validation": trio_rows(6, 1, "va")}
    with trio_task():
        args, targs = quick_args(tmp_path)
        # before: the reference model was trained, then nothing was scored in distribution, silently
        with pytest.raises(AnalysisError, match=r"--in_distribution scores .* tasks \['zz_trio'\] have no test split"):
            ood(args, targs, options=OODOptions(group="site", in_distribution=True), datasets={TASK: splits},
                train_fn=_no_training)


class _Stop(Exception):
    """Raised by the recording train_fn: the test needs the run's arguments, not a model."""


def test_an_image_override_reaches_the_run_of_an_image_task(tmp_path):
    """``--processor_overrides '{"image": ...}'`` stands for every image modality (training.arguments.overrides_read),
    as in `multimed train`; before, the analyses kept only keys naming a modality exactly and dropped it."""
    seen = {}

    def recording(run_args, training_args, **kwargs):
        seen["overrides"] = run_args.processor_overrides
        raise _Stop

    with trio_task():
        args, targs = quick_args(tmp_path, processor_overrides={"image": {"draft_size": 16}})
        with pytest.raises(_Stop):
            attribution(args, targs, datasets=trio_splits(8, 4), train_fn=recording)
    assert seen["overrides"] == {"image": {"draft_size": 16}}


def test_gradient_x_input_takes_pixels_where_the_image_encoder_has_no_token_embedding():
    """``--family domain_specific`` attribution: its image encoder (a transformers ResNet) raises NotImplementedError
    from ``get_input_embeddings``; before, attribution failed there after training, now the pixels are its inputs."""
    from torch import nn
    from transformers import ResNetConfig, ResNetModel

    from multimed_hf.analysis.attribution import _embedding_of

    resnet = ResNetModel(ResNetConfig(embedding_size=8, hidden_sizes=[8], depths=[1], layer_type="basic"))
    with pytest.raises(NotImplementedError):
        resnet.get_input_embeddings()
    text = nn.Embedding(5, 3)
    model = nn.Module()
    model.encoders = nn.ModuleDict({"image": nn.Module(), "text": nn.Module()})
    model.encoders["image"].model = resnet
    model.encoders["text"].model = nn.Module()
    model.encoders["text"].model.get_input_embeddings = lambda: text
    model.encoder_of = {"mri": "image", "text": "text"}
    assert _embedding_of(model, "mri") is None
    assert _embedding_of(model, "text") is text


def test_markdown_tables_print_counts_as_whole_numbers():
    # before: a count column holding a missing value is float in pandas, and ood.md printed "61.000" rows
    import pandas as pd

    from multimed_hf.analysis._common import markdown_table

    frame = pd.DataFrame({"group": ["a", "b"], "unseen": [61, None], "value": [1.0, 0.25]})
    assert markdown_table(frame).splitlines()[2:] == ["| a | 61 | 1.000 |", "| b | – | 0.250 |"]
