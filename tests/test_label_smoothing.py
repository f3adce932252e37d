"""--label_smoothing_factor: the heads smooth the cross-entropy of single-label class outputs (as Trainer's label
smoother does to a model's logits); multilabel, regression and coordinate losses are unchanged."""

import json
import logging

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoConfig, TrainingArguments

from multimed_hf.configuration_multimed import MultiMedConfig
from multimed_hf.modeling_multimed import MultiMedModel
from multimed_hf.training.trainer import MultiMedTrainer
from training_tiny import SIDE, brain_tumor, tiny_model, tiny_processor


def _args(tmp_path, **kwargs):
    defaults = dict(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=4, learning_rate=3e-3,
                    report_to=[], use_cpu=True, save_strategy="no", disable_tqdm=True, log_level="error")
    return TrainingArguments(**{**defaults, **kwargs})


def _batch(n=6, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return {"task": "brain_tumor", "labels": {"tumor": torch.arange(n) % 4},
            "inputs": {"mri": {"pixel_values": torch.randn(n, 3, SIDE, SIDE, generator=generator)}}}


def test_the_class_loss_is_the_smoothed_cross_entropy():
    model = tiny_model(["brain_tumor"], label_smoothing=0.2).eval()
    batch = _batch()
    out = model(**batch)
    logits, target = out.logits["tumor"], batch["labels"]["tumor"]
    expected = F.cross_entropy(logits, target, label_smoothing=0.2)
    # by hand: (1 - eps) * NLL of the true class + eps * the mean NLL over the classes
    logp = logits.log_softmax(-1)
    by_hand = (0.8 * -logp[torch.arange(len(target)), target] + 0.2 * -logp.mean(-1)).mean()
    assert torch.allclose(out.loss, expected) and torch.allclose(out.loss, by_hand)
    assert not torch.allclose(out.loss, F.cross_entropy(logits, target))


def test_late_fusion_modality_losses_are_smoothed_too():
    model = tiny_model(["diabetic_retinopathy"], fusion="late", label_smoothing=0.3).eval()
    plain = tiny_model(["diabetic_retinopathy"], fusion="late").eval()
    plain.load_state_dict(model.state_dict())
    n = 4
    batch = {"task": "diabetic_retinopathy", "labels": {"oct_finding": torch.tensor([0, 1, 2, 3])},
             "inputs": {"oct": {"pixel_values": torch.randn(n, 3, SIDE, SIDE)}}}
    smoothed, unsmoothed = model(**batch), plain(**batch)
    for key, value in smoothed.losses.items():
        assert not torch.allclose(value, unsmoothed.losses[key]), key
    assert set(smoothed.losses) == {"oct_finding", "oct/oct_finding"}


def _vit():
    return AutoConfig.for_model("vit", hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=24, image_size=SIDE, patch_size=4)


_MLP = {"kind": "mlp", "config": {"num_genes": 8, "hidden_size": 16, "num_layers": 1}}


def _config(tasks, **kwargs):
    return MultiMedConfig.from_tasks(tasks, encoders={"mri": _vit(), "xray": _vit(), "scrna": _MLP},
                                     hidden_size=16, modalities={"disease": ["xray"],
                                                                 "expression_prediction": ["scrna"]},
                                     regression_stats={"bone_age_months": (120.0, 40.0), "log_expression": (1.0, 2.0)},
                                     **kwargs)


def test_only_single_label_class_outputs_are_smoothed():
    config = _config(["brain_tumor", "bone_age", "disease", "expression_prediction"])
    assert config.smoothed_outputs() == ["bone_age/bone_age_bin", "brain_tumor/tumor"]
    smoothed = MultiMedModel(_config(["bone_age", "disease", "expression_prediction"], label_smoothing=0.4)).eval()
    plain = MultiMedModel(_config(["bone_age", "disease", "expression_prediction"])).eval()
    plain.load_state_dict(smoothed.state_dict())
    n = 4
    xray = {"xray": {"pixel_values": torch.randn(n, 3, SIDE, SIDE)}}
    unchanged = [
        {"task": "bone_age", "labels": {"bone_age_months": torch.tensor([100.0, 120.0, 150.0, 90.0])}, "inputs": xray},
        {"task": "disease", "labels": {"diseases": (torch.rand(n, len(config.heads["disease"]["outputs"][0]["names"]))
                                                    > 0.5).float()}, "inputs": xray},
        {"task": "expression_prediction", "labels": {"log_expression": torch.randn(n)},
         "inputs": {"scrna": {"values": torch.rand(n, 8)}}},
    ]
    for batch in unchanged:
        assert torch.equal(smoothed(**batch).loss, plain(**batch).loss), batch["task"]
    bins = {"task": "bone_age", "labels": {"bone_age_bin": torch.tensor([0, 1, 2, 0])}, "inputs": xray}
    assert not torch.allclose(smoothed(**bins).loss, plain(**bins).loss)


def test_the_config_checks_and_saves_it(tmp_path):
    with pytest.raises(ValueError, match=r"label_smoothing \(1.0\) must be in \[0, 1\)"):
        tiny_model(["brain_tumor"], label_smoothing=1.0)
    model = tiny_model(["brain_tumor"], label_smoothing=0.1)
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["label_smoothing"] == 0.1
    assert MultiMedModel.from_pretrained(tmp_path).config.label_smoothing == 0.1
    assert "label smoothing 0.1" in str(model.create_model_card())
    assert "label smoothing" not in str(tiny_model(["brain_tumor"]).create_model_card())


def test_the_trainer_flag_sets_the_model_config_and_trains(tmp_path):
    model = tiny_model(["brain_tumor"])
    trainer = MultiMedTrainer(model=model, args=_args(tmp_path, label_smoothing_factor=0.1),
                              train_datasets={"brain_tumor": brain_tumor(8)}, processor=tiny_processor())
    assert model.config.label_smoothing == 0.1 and trainer.label_smoother is None
    trainer.train()
    trainer.save_model(str(tmp_path / "saved"))
    assert json.loads((tmp_path / "saved" / "config.json").read_text())["label_smoothing"] == 0.1


def test_the_trainer_warns_where_no_trained_task_has_a_class_output(tmp_path, caplog):
    model = MultiMedModel(_config(["disease", "expression_prediction"]))
    with caplog.at_level(logging.WARNING, logger="multimed_hf.training.trainer"):
        MultiMedTrainer(model=model, args=_args(tmp_path, label_smoothing_factor=0.1))
    assert model.config.label_smoothing == 0.0
    assert any("label_smoothing_factor=0.1: label smoothing applies to single-label class outputs and the tasks "
               "trained (['disease', 'expression_prediction']) have none" in r.getMessage() for r in caplog.records)


def test_a_predict_only_trainer_leaves_the_models_smoothing_and_is_quiet(tmp_path, caplog):
    # before: the analyses' predict-only trainers took the run's label_smoothing_factor (the small preset's 0.05):
    # one warning per model on a task without class outputs, and it was set on a model trained without it
    from multimed_hf.training.trainer import prediction_arguments

    model = MultiMedModel(_config(["disease", "expression_prediction"]))
    with caplog.at_level(logging.WARNING, logger="multimed_hf.training.trainer"):
        MultiMedTrainer(model=model, args=prediction_arguments(_args(tmp_path, label_smoothing_factor=0.05)))
    assert not [r for r in caplog.records if "label_smoothing" in r.getMessage()]
    classes = tiny_model(["brain_tumor"])
    MultiMedTrainer(model=classes, args=prediction_arguments(_args(tmp_path, label_smoothing_factor=0.05)))
    assert classes.config.label_smoothing == 0.0


def test_a_plan_without_class_outputs_trains_unsmoothed(tmp_path, caplog):
    from multimed_hf.training.run import RunError, _label_smoothing_here

    args = _args(tmp_path, label_smoothing_factor=0.1)
    regression, classes = _config(["expression_prediction"]), _config(["brain_tumor"])
    with caplog.at_level(logging.WARNING, logger="multimed_hf.training.run"):
        assert _label_smoothing_here(args, classes, "brain_tumor", chosen_here=True) is args
        # the one run asked for: the flag would change nothing
        with pytest.raises(RunError, match="--label_smoothing_factor 0.1 smooths single-label class outputs, and "
                                           "plan 'expression_prediction' has none"):
            _label_smoothing_here(args, regression, "expression_prediction", chosen_here=True)
        # the preset's default: quietly left out
        quiet = _label_smoothing_here(args, regression, "expression_prediction", chosen_here=True,
                                      preset_default=0.1)
        assert caplog.records == [] and quiet.label_smoothing_factor == 0.0
        # one plan of several: applied to the others, warned here
        kept = _label_smoothing_here(args, regression, "expression_prediction", chosen_here=False)
    assert kept.label_smoothing_factor == 0.0 and args.label_smoothing_factor == 0.1
    assert [r.getMessage() for r in caplog.records] == [
        "--label_smoothing_factor 0.1 smooths single-label class outputs, and plan 'expression_prediction' has none: "
        "not applied to this run"]


def test_the_small_preset_smooths_class_labels_by_default():
    from multimed_hf.training.arguments import parse_train_args, training_defaults

    assert training_defaults("unimodal", "small")["label_smoothing_factor"] == 0.05
    assert "label_smoothing_factor" not in training_defaults("unimodal", "hub", ("mri",))
    assert "label_smoothing_factor" not in training_defaults("domain_specific", "small")
    _, targs = parse_train_args(["--data", "d", "--tasks", "cell_type", "--encoders", "small", "--output_dir", "o"])
    assert targs.label_smoothing_factor == 0.05
    _, targs = parse_train_args(["--data", "d", "--tasks", "cell_type", "--encoders", "small", "--output_dir", "o",
                                 "--label_smoothing_factor", "0"])
    assert targs.label_smoothing_factor == 0.0


def test_multimed_train_takes_the_flag_and_saves_it(tmp_path):
    import balancing_tiny as bt
    from multimed_hf.training.run import train_main

    data = bt.write_built_folder(tmp_path / "multimed", {"brain_tumor": {
        "train": brain_tumor(8), "test": brain_tumor(4, seed=2, prefix="te")}})
    out = tmp_path / "run"
    assert train_main(["--data", data, "--tasks", "brain_tumor", "--family", "unimodal", "--encoders", "small",
                       "--hidden_size", "16", "--max_steps", "1", "--per_device_train_batch_size", "4",
                       "--eval_strategy", "no", "--save_strategy", "no", "--disable_tqdm", "true",
                       "--bootstrap_samples", "0", "--report_to", "none", "--use_cpu", "true",
                       "--dataloader_num_workers", "0", "--label_smoothing_factor", "0.2",
                       "--output_dir", str(out)]) == 0
    assert json.loads((out / "config.json").read_text())["label_smoothing"] == 0.2
