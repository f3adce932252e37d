"""MultiMedTrainer in one process: per-task logs, optimizer groups, resume, accumulation, checkpointing, bf16,
predictions and evaluation (tiny random-init models on in-memory rows)."""

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import TrainerCallback, TrainingArguments
from transformers.modeling_layers import GradientCheckpointingLayer

import multimed_hf.metrics as metrics_module
from multimed_hf.configuration_multimed import MultiMedConfig
from multimed_hf.modeling_multimed import MultiMedModel
from multimed_hf.processing_multimed import MultiMedProcessor
from multimed_hf.training.loss_weighting import (
    LOSS_WEIGHTINGS,
    LossWeighting,
    UncertaintyWeighting,
    UnknownLossWeightingError,
    get_loss_weighting,
    register_loss_weighting,
)
from multimed_hf.training.sampling import TaskSampling
from multimed_hf.training.trainer import LOSS_WEIGHTING_NAME, MultiMedTrainer
from training_tiny import brain_tumor, diabetic_retinopathy, tiny_model, tiny_processor, weights_digest

TASKS = ["brain_tumor", "diabetic_retinopathy"]
has_output_metrics = pytest.mark.skipif(not hasattr(metrics_module, "compute_output_metrics"),
                                        reason="multimed_hf.metrics.compute_output_metrics (issue 22) not there yet")


@pytest.fixture(scope="module")
def train_sets():
    return {"brain_tumor": brain_tumor(12), "diabetic_retinopathy": diabetic_retinopathy(10)}


@pytest.fixture(scope="module")
def eval_sets():
    return {"brain_tumor": brain_tumor(7, seed=5, prefix="bte"),
            "diabetic_retinopathy": diabetic_retinopathy(9, seed=6, prefix="dre")}


def _args(tmp_path, **kwargs):
    defaults = dict(output_dir=str(tmp_path), max_steps=6, per_device_train_batch_size=4, learning_rate=3e-3,
                    logging_steps=2, report_to=[], use_cpu=True, save_strategy="no", disable_tqdm=True,
                    log_level="error")
    return TrainingArguments(**{**defaults, **kwargs})


class RecordingTrainer(MultiMedTrainer):
    """Records each training batch's task, rows and per-task loss as the trainer computes them."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, outputs = super().compute_loss(model, inputs, True, num_items_in_batch)
        if model.training:
            self.batches = getattr(self, "batches", [])
            self.batches.append((self.state.global_step, inputs["task"], inputs["row_index"].tolist(),
                                 float(outputs.loss.detach())))
        return (loss, outputs) if return_outputs else loss


# ---------------------------------------------------------------------- logging and arguments
def test_per_task_losses_are_logged_as_the_mean_of_their_batches(tmp_path, train_sets):
    trainer = RecordingTrainer(model=tiny_model(TASKS), args=_args(tmp_path, max_steps=8, logging_steps=4),
                               train_datasets=train_sets, processor=tiny_processor())
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert [h["step"] for h in logs] == [4, 8]
    for log in logs:
        window = [b for b in trainer.batches if log["step"] - 4 <= b[0] < log["step"]]
        for task in TASKS:
            losses = [b[3] for b in window if b[1] == task]
            if losses:
                assert log[f"loss_{task}"] == pytest.approx(np.mean(losses), rel=1e-5)
            else:
                assert f"loss_{task}" not in log
    columns = {k for h in logs for k in h if k.startswith("loss_diabetic_retinopathy_")}
    assert columns == {"loss_diabetic_retinopathy_oct_finding", "loss_diabetic_retinopathy_dr_grade"}
    assert not any(k.startswith("loss_brain_tumor_") for h in logs for k in h)  # one label column: no per-column


def test_the_trainer_sets_what_multitask_training_needs(tmp_path, train_sets):
    args = _args(tmp_path, remove_unused_columns=True)
    assert args.ddp_find_unused_parameters is None
    MultiMedTrainer(model=tiny_model(TASKS), args=args, train_datasets=train_sets, processor=tiny_processor())
    assert args.remove_unused_columns is False and args.ddp_find_unused_parameters is True
    with pytest.raises(ValueError, match="ddp_find_unused_parameters=False"):
        MultiMedTrainer(model=tiny_model(TASKS), args=_args(tmp_path, ddp_find_unused_parameters=False),
                        train_datasets=train_sets, processor=tiny_processor())
    with pytest.raises(ValueError, match="\\['bone_age'\\] that the model has no head for"):
        MultiMedTrainer(model=tiny_model(TASKS), args=_args(tmp_path), processor=tiny_processor(),
                        train_datasets={"bone_age": train_sets["brain_tumor"]})
    with pytest.raises(TypeError, match="train_datasets="):
        MultiMedTrainer(model=tiny_model(TASKS), args=_args(tmp_path), train_dataset=train_sets["brain_tumor"])


def test_dataloader_drop_last_reaches_the_task_batch_sampler(tmp_path, train_sets):
    """--dataloader_drop_last drops each task's short last batch (the task batch sampler replaces DataLoader's)."""
    for drop in (False, True):
        args = _args(tmp_path, max_steps=12, dataloader_drop_last=drop)
        trainer = RecordingTrainer(model=tiny_model(TASKS), args=args, train_datasets=train_sets,
                                   processor=tiny_processor())
        trainer.train()
        sizes = {len(rows) for _, _, rows, _ in trainer.batches}
        assert sizes == ({4} if drop else {2, 4})  # 12 and 10 rows in batches of 4


def test_one_optimizer_group_per_modality_encoder(tmp_path, train_sets):
    vit = tiny_model(["brain_tumor"]).config.encoders["mri"]
    config = MultiMedConfig.from_tasks(TASKS, hidden_size=16, encoders={
        "mri": vit, "oct": vit, "fundus": {"kind": "shared", "with": "oct"}})
    model = MultiMedModel(config)
    model.freeze_encoders("mri")
    trainer = MultiMedTrainer(model=model, args=_args(tmp_path), train_datasets=train_sets,
                              processor=tiny_processor(), loss_weighting="uncertainty")
    groups = {g["name"]: g for g in trainer.create_optimizer().param_groups}
    assert list(groups) == ["encoder:oct", "other", "loss_weighting"]  # mri frozen: no group
    assert groups["encoder:oct"]["modalities"] == ["fundus", "oct"]
    assert {id(p) for p in groups["encoder:oct"]["params"]} == {id(p) for p in model.encoders["oct"].parameters()}
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    grouped = [id(p) for g in groups.values() if g["name"] != "loss_weighting" for p in g["params"]]
    assert sorted(grouped) == sorted(trainable)  # every trainable parameter in exactly one group
    assert groups["loss_weighting"]["params"] == [trainer.loss_weighting.log_variances]

    decayed = MultiMedTrainer(model=tiny_model(TASKS), args=_args(tmp_path, weight_decay=0.1),
                              train_datasets=train_sets, processor=tiny_processor())
    names = [(g["name"], g["weight_decay"]) for g in decayed.create_optimizer().param_groups]
    assert ("encoder:mri", 0.1) in names and ("encoder:mri:no_decay", 0.0) in names and ("other", 0.1) in names


def test_a_modality_rate_scaled_through_the_scheduler_survives_its_steps(tmp_path, train_sets):
    trainer = MultiMedTrainer(model=tiny_model(TASKS), args=_args(tmp_path, learning_rate=1e-3, max_steps=10),
                              train_datasets=train_sets, processor=tiny_processor())
    trainer.create_optimizer_and_scheduler(num_training_steps=10)
    names = [g["name"] for g in trainer.optimizer.param_groups]
    mri = names.index("encoder:mri")
    trainer.lr_scheduler.base_lrs[mri] *= 0.5  # what MILES does to a dominant modality
    trainer.optimizer.step()
    trainer.lr_scheduler.step()
    lrs = [g["lr"] for g in trainer.optimizer.param_groups]
    assert lrs[mri] == pytest.approx(0.5 * lrs[names.index("other")])


# ---------------------------------------------------------------------- resume, accumulation, checkpointing, bf16
def _resumable_run(tmp_path, train_sets, resume=None, stop_at=None):
    class Stop(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == stop_at:
                control.should_training_stop = True

    model = tiny_model(TASKS, seed=1 if resume else 0, modality_dropout=0.3)  # the resumed run starts elsewhere
    trainer = RecordingTrainer(
        model=model, args=_args(tmp_path, max_steps=10, save_strategy="steps", save_steps=4),
        train_datasets=train_sets, processor=tiny_processor(), loss_weighting="uncertainty",
        sampling=TaskSampling("temperature"), callbacks=[Stop()] if stop_at else None)
    trainer.train(resume_from_checkpoint=resume)
    return trainer


def test_resuming_from_a_checkpoint_ends_in_bit_identical_weights(tmp_path, train_sets):
    whole = _resumable_run(tmp_path / "whole", train_sets)
    assert len(whole.train_batch_sampler) == 6  # an epoch of 6 batches: checkpoint 4 is mid-epoch
    _resumable_run(tmp_path / "cut", train_sets, stop_at=5)  # interrupted after checkpoint-4
    resumed = _resumable_run(tmp_path / "cut", train_sets, resume=str(tmp_path / "cut" / "checkpoint-4"))
    assert resumed.state.global_step == 10
    # the sampler lands on the same batches (rest of epoch 0, then epoch 1)
    assert [b[1:3] for b in resumed.batches] == [b[1:3] for b in whole.batches[4:]]
    expected, got = weights_digest(whole.model), weights_digest(resumed.model)
    assert all(np.array_equal(expected[k], got[k]) for k in expected)
    assert torch.equal(whole.loss_weighting.log_variances, resumed.loss_weighting.log_variances)
    assert (tmp_path / "cut" / "checkpoint-4" / LOSS_WEIGHTING_NAME).is_file()
    assert MultiMedProcessor.from_pretrained(tmp_path / "cut" / "checkpoint-4").processors  # processor saved too


def test_the_best_checkpoint_brings_its_loss_weighting_back_with_its_weights(tmp_path, train_sets, eval_sets):
    # before: load_best_model_at_end restored the best checkpoint's model, while the learned loss weighting (saved
    # beside the model afterwards) stayed the last step's
    from safetensors.torch import load_file

    class FirstIsBest(TrainerCallback):  # the first evaluation is the best: loss rises from then on
        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            metrics["eval_rank"] = float(state.global_step)

    trainer = MultiMedTrainer(
        model=tiny_model(TASKS), args=_args(tmp_path, max_steps=6, eval_strategy="steps", eval_steps=2,
                                            save_strategy="steps", save_steps=2, load_best_model_at_end=True,
                                            metric_for_best_model="rank", greater_is_better=False),
        train_datasets=train_sets, eval_datasets=eval_sets, processor=tiny_processor(),
        loss_weighting="uncertainty", callbacks=[FirstIsBest()])
    trainer.train()
    assert trainer.state.best_model_checkpoint.endswith("checkpoint-2")
    best = load_file(str(Path(trainer.state.best_model_checkpoint) / LOSS_WEIGHTING_NAME))["log_variances"]
    last = load_file(str(tmp_path / "checkpoint-6" / LOSS_WEIGHTING_NAME))["log_variances"]
    assert not torch.equal(best, last)
    assert torch.equal(trainer.loss_weighting.log_variances.detach().cpu(), best)


def test_gradient_accumulation_steps_average_the_micro_batches(tmp_path, train_sets):
    model = tiny_model(TASKS, dropout=0.0)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = MultiMedTrainer(
        model=model, args=_args(tmp_path, max_steps=1, gradient_accumulation_steps=2, optim="sgd",
                                learning_rate=0.5, max_grad_norm=0.0, lr_scheduler_type="constant"),
        train_datasets=train_sets, processor=tiny_processor())
    trainer.train()
    reference = tiny_model(TASKS, dropout=0.0)
    reference.load_state_dict(start)
    reference.train()
    collate = trainer.data_collator
    for _, rows in trainer.train_batch_sampler.local_schedule(0)[:2]:  # the two micro-batches of step 1
        batch = collate(trainer.train_dataset.__getitems__(rows))
        batch.pop("row_index")
        (reference(**batch).loss / 2).backward()
    with torch.no_grad():
        for p in reference.parameters():
            if p.grad is not None:
                p -= 0.5 * p.grad
    got = trainer.model.state_dict()
    changed = 0
    for name, value in reference.state_dict().items():
        torch.testing.assert_close(got[name], value, rtol=1e-5, atol=1e-6)
        changed += not torch.equal(value, start[name])
    assert changed > 10


def test_activation_checkpointing_recomputes_layers_and_gives_the_same_weights(tmp_path, train_sets):
    results = {}
    for checkpointing in (False, True):
        model = tiny_model(TASKS, dropout=0.0)
        calls = []
        for layer in model.modules():
            if isinstance(layer, GradientCheckpointingLayer):  # hooks inside the layer (its own stay outside)
                for module in layer.modules():
                    if isinstance(module, torch.nn.Linear):
                        module.register_forward_hook(lambda *a: calls.append(1))
        trainer = MultiMedTrainer(model=model, args=_args(tmp_path, max_steps=2,
                                                          activation_checkpointing=checkpointing),
                                  train_datasets=train_sets, processor=tiny_processor())
        trainer.train()
        results[checkpointing] = (len(calls), weights_digest(model))
    assert results[True][0] > results[False][0]  # checkpointed layers ran again in backward
    assert all(np.array_equal(results[True][1][k], results[False][1][k]) for k in results[False][1])


def test_bf16_trains_under_cpu_autocast(tmp_path, train_sets):
    model = tiny_model(TASKS)
    dtypes = set()
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            module.register_forward_hook(lambda mod, inputs, output: dtypes.add(output.dtype))
    trainer = MultiMedTrainer(model=model, args=_args(tmp_path, max_steps=2, bf16=True), train_datasets=train_sets,
                              processor=tiny_processor())
    result = trainer.train()
    assert torch.bfloat16 in dtypes and np.isfinite(result.training_loss)
    assert next(model.parameters()).dtype == torch.float32  # master weights stay float32


# ---------------------------------------------------------------------- predictions and evaluation
def test_predict_task_gives_every_row_once_in_dataset_order(tmp_path, train_sets, eval_sets):
    trainer = MultiMedTrainer(model=tiny_model(TASKS), args=_args(tmp_path, per_device_eval_batch_size=4),
                              train_datasets=train_sets, processor=tiny_processor())
    data = eval_sets["diabetic_retinopathy"]
    preds = trainer.predict_task("diabetic_retinopathy", data, split="validation")
    assert preds.sample_ids == data["sample_id"] and preds.row_indices.tolist() == list(range(9))
    assert preds.split == "validation" and preds.head_spec == trainer.model.config.heads["diabetic_retinopathy"]
    assert {k: v.shape for k, v in preds.outputs.items()} == {"oct_finding": (9, 4), "dr_grade": (9, 5)}
    assert preds.references["oct_finding"].tolist() == [-100 if v is None else v for v in data["oct_finding"]]
    model = trainer.model.eval()
    with torch.no_grad():  # the same logits as the model on the processor's batch of those rows
        expected = model(**tiny_processor()(list(data.select(range(3))), "diabetic_retinopathy")).logits
    np.testing.assert_allclose(preds.outputs["dr_grade"][:3], expected["dr_grade"].numpy(), rtol=1e-5, atol=1e-6)
    assert preds.loss is not None and np.isfinite(preds.loss)

    unlabelled = data.remove_columns(["oct_finding", "dr_grade"])
    bare = trainer.predict_task("diabetic_retinopathy", unlabelled)
    assert bare.references == {} and bare.loss is None and len(bare) == 9

    # a test-time modality mask: the fundus encoder is not read, the OCT rows predict as before
    oct_rows = data.filter(lambda row: row["modality"] == "oct")
    masked = trainer.predict_task("diabetic_retinopathy", oct_rows, modalities=["oct"])
    oct_index = [i for i, m in enumerate(data["modality"]) if m == "oct"]
    np.testing.assert_allclose(masked.outputs["oct_finding"], preds.outputs["oct_finding"][oct_index], rtol=1e-5,
                               atol=1e-6)
    assert masked.labelled_columns() == ["oct_finding"]


def test_training_lowers_the_evaluation_loss(tmp_path, train_sets):
    trainer = MultiMedTrainer(model=tiny_model(TASKS), args=_args(tmp_path, max_steps=20, learning_rate=5e-3),
                              train_datasets=train_sets, processor=tiny_processor())
    before = {t: trainer.predict_task(t, d).loss for t, d in train_sets.items()}
    trainer.train()
    after = {t: trainer.predict_task(t, d).loss for t, d in train_sets.items()}
    for task in TASKS:
        assert after[task] < 0.7 * before[task], (task, before, after)


@has_output_metrics
def test_evaluate_reports_each_task_and_column_with_the_registry_metrics(tmp_path, train_sets, eval_sets):
    trainer = MultiMedTrainer(model=tiny_model(TASKS), args=_args(tmp_path), train_datasets=train_sets,
                              eval_datasets=eval_sets, processor=tiny_processor())
    result = trainer.evaluate()
    bt = trainer.predict_task("brain_tumor", eval_sets["brain_tumor"])
    expected = metrics_module.compute_output_metrics("brain_tumor", "tumor", bt.outputs["tumor"],
                                                     bt.references["tumor"], mask=None)
    for name, value in expected.items():
        assert result[f"eval_brain_tumor_{name}"] == pytest.approx(value)
    assert "eval_diabetic_retinopathy_oct_finding_accuracy" in result
    assert "eval_diabetic_retinopathy_dr_grade_accuracy" in result
    assert result["eval_loss"] == pytest.approx(np.mean([result["eval_brain_tumor_loss"],
                                                         result["eval_diabetic_retinopathy_loss"]]))
    low, high = bt.bootstrap(n=50, seed=0)["tumor"]["accuracy"]
    assert low <= expected["accuracy"] <= high


# ---------------------------------------------------------------------- loss weightings
def test_loss_weighting_registry():
    assert {"static", "uncertainty"} <= set(LOSS_WEIGHTINGS)
    config = tiny_model(TASKS).config
    with pytest.raises(UnknownLossWeightingError, match="did you mean 'uncertainty'"):
        get_loss_weighting("uncertanty", config)
    with pytest.raises(ValueError, match="already registered"):
        register_loss_weighting("static")(type("Again", (LossWeighting,), {}))


def test_uncertainty_weighting_follows_kendall_et_al(train_sets):
    model = tiny_model(TASKS)
    weighting = UncertaintyWeighting(model.config)
    with torch.no_grad():
        weighting.log_variances.copy_(torch.linspace(-1.0, 1.0, len(weighting.keys)))
    batch = tiny_processor()(list(train_sets["diabetic_retinopathy"].select(range(6))), "diabetic_retinopathy")
    output = model(**batch)
    loss, logs = weighting.combine("diabetic_retinopathy", output)
    s = {k: float(weighting.log_variances[i].detach()) for k, i in weighting.index.items()}
    expected = sum(0.5 * np.exp(-s[f"diabetic_retinopathy/fused/{c}"]) * float(output.losses[c].detach())
                   + 0.5 * s[f"diabetic_retinopathy/fused/{c}"] for c in ("oct_finding", "dr_grade"))
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-5)
    assert logs["log_variance_diabetic_retinopathy_dr_grade"] == pytest.approx(
        s["diabetic_retinopathy/fused/dr_grade"])
    loss.backward()
    assert weighting.log_variances.grad[weighting.index["diabetic_retinopathy/fused/oct_finding"]] != 0
    assert weighting.log_variances.grad[weighting.index["brain_tumor/fused/tumor"]] == 0


def test_a_learned_loss_weighting_reloads_where_the_device_is_named_cpu_0(tmp_path):
    # before: under torchrun with --use_cpu, TrainingArguments.device is cpu:0, which safetensors refuses as a
    # device name: resuming, and load_best_model_at_end, died in every process
    from types import SimpleNamespace

    from safetensors.torch import save_file

    saved = get_loss_weighting("uncertainty", tiny_model(TASKS).config)
    with torch.no_grad():
        for p in saved.parameters():
            p.add_(0.25)
    save_file(saved.state_dict(), str(tmp_path / LOSS_WEIGHTING_NAME))
    fresh = get_loss_weighting("uncertainty", tiny_model(TASKS).config)
    holder = SimpleNamespace(args=SimpleNamespace(device=torch.device("cpu", 0)), loss_weighting=fresh)
    MultiMedTrainer._load_loss_weighting(holder, tmp_path)
    for key, value in saved.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value)
