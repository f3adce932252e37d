"""TrainingArguments flags under MultiMedTrainer: each one either works as in stock Trainer or is refused at
construction with the reason and what to use instead, never skipped silently (tiny model, a few CPU steps)."""

import math

import pytest
from torch.utils.data import DataLoader
from transformers import TrainingArguments

import multimed_hf.training.trainer as trainer_module
from multimed_hf.training.arguments import make_training_arguments, parse_train_args
from multimed_hf.training.loss_weighting import StaticWeighting
from multimed_hf.training.sampling import TaskSampling
from multimed_hf.training.trainer import MultiMedTrainer, refused_arguments
from training_tiny import brain_tumor, tiny_model, tiny_processor


def _args(tmp_path, **kwargs):
    defaults = dict(output_dir=str(tmp_path), max_steps=3, per_device_train_batch_size=4, learning_rate=3e-3,
                    report_to=[], use_cpu=True, save_strategy="no", disable_tqdm=True, log_level="error")
    return TrainingArguments(**{**defaults, **kwargs})


def _trainer(tmp_path, trainer_class=MultiMedTrainer, train=None, sampling=None, trainer_kwargs=None, **kwargs):
    return trainer_class(model=tiny_model(["brain_tumor"]), args=_args(tmp_path, **kwargs),
                         train_datasets={"brain_tumor": brain_tumor(12) if train is None else train},
                         eval_datasets={"brain_tumor": brain_tumor(6, seed=3, prefix="bte")},
                         processor=tiny_processor(), sampling=sampling, **(trainer_kwargs or {}))


# ---------------------------------------------------------------------- refused flags
REFUSED = {  # flag values that stock Trainer honours and ours cannot; before, each was skipped or crashed obscurely
    "train_sampling_strategy": ({"train_sampling_strategy": "group_by_length"}, "task batch sampler.*--sampling"),
    "train_sampling_strategy_sequential": ({"train_sampling_strategy": "sequential"}, "--sampling proportional"),
    "neftune_noise_alpha": ({"neftune_noise_alpha": 5.0}, "neftune_noise_alpha=5.0: NEFTune.*token embedding"),
    "use_liger_kernel": ({"use_liger_kernel": True}, "use_liger_kernel=True: Liger.*model_type"),
    "include_num_input_tokens_seen": ({"include_num_input_tokens_seen": "all"}, "count 0 tokens"),
    "label_names": ({"label_names": ["tumor"]}, r"label_names=\['tumor'\]: .*task registry"),
    "batch_eval_metrics": ({"batch_eval_metrics": True}, "batch_eval_metrics=True: evaluation computes each task's "
                                                         "registry metrics"),
    "include_for_metrics": ({"include_for_metrics": ["inputs"]}, r"include_for_metrics=\['inputs'\]: evaluation"),
    "eval_do_concat_batches": ({"eval_do_concat_batches": False}, "eval_do_concat_batches=False: evaluation"),
}


@pytest.mark.parametrize("flag", list(REFUSED))
def test_a_flag_that_cannot_apply_is_refused_with_what_to_use_instead(tmp_path, flag):
    kwargs, match = REFUSED[flag]
    with pytest.raises(ValueError, match=match):
        _trainer(tmp_path, **kwargs)


def test_every_refused_flag_is_named_at_once(tmp_path):
    with pytest.raises(ValueError) as err:
        _trainer(tmp_path, neftune_noise_alpha=5.0, batch_eval_metrics=True, use_liger_kernel=True)
    named = [line.split("=")[0] for line in str(err.value).splitlines()[1:]]
    assert named == ["- neftune_noise_alpha", "- use_liger_kernel", "- batch_eval_metrics"]


def test_the_defaults_of_trainer_and_of_multimed_train_are_not_refused(tmp_path):
    assert refused_arguments(TrainingArguments(output_dir=str(tmp_path), report_to=[])) == []
    assert refused_arguments(make_training_arguments(tmp_path, encoders="small")) == []
    assert refused_arguments(_args(tmp_path, label_names=["labels"], train_sampling_strategy="random")) == []


@pytest.mark.parametrize("key", ["compute_metrics", "preprocess_logits_for_metrics", "compute_loss_func"])
def test_trainer_hooks_that_the_trainer_replaces_are_refused(tmp_path, key):
    with pytest.raises(TypeError, match=f"does not take {key}: "):
        _trainer(tmp_path, trainer_kwargs={key: lambda *a, **k: 1 / 0})


def test_out_of_order_workers_are_refused_under_lockstep_sampling(tmp_path):
    with pytest.raises(ValueError, match="dataloader_in_order=False with lockstep"):
        _trainer(tmp_path, sampling=TaskSampling(lockstep=True), dataloader_in_order=False, dataloader_num_workers=2)
    for rows in (brain_tumor(12), brain_tumor(12).to_iterable_dataset()):  # no lockstep: taken, streamed too
        trainer = _trainer(tmp_path, train=rows, dataloader_in_order=False, dataloader_num_workers=2)
        loader = trainer.get_train_dataloader()
        assert getattr(loader, "base_dataloader", loader).in_order is False


def test_remove_unused_columns_given_on_the_command_line_is_refused(tmp_path):
    argv = ["--data", str(tmp_path / "multimed"), "--tasks", "brain_tumor", "--output_dir", str(tmp_path)]
    _, training_args = parse_train_args(argv)
    assert training_args.remove_unused_columns is False
    with pytest.raises(ValueError, match="--remove_unused_columns True: .*leave it False"):
        parse_train_args([*argv, "--remove_unused_columns", "True"])


# ---------------------------------------------------------------------- flags made to work
def test_prediction_loss_only_evaluates_the_losses_alone(tmp_path):
    full = _trainer(tmp_path).evaluate()
    losses = _trainer(tmp_path, prediction_loss_only=True).evaluate()
    assert "eval_brain_tumor_accuracy" in full
    assert not any(k.endswith(("accuracy", "macro_f1")) for k in losses)
    assert losses["eval_brain_tumor_loss"] == pytest.approx(full["eval_brain_tumor_loss"])
    assert losses["eval_loss"] == pytest.approx(full["eval_loss"])


class _OutOfMemoryAbove2(MultiMedTrainer):
    """Raises the CPU allocator's out-of-memory error for a batch of more than 2 rows (records every batch size)."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        rows = len(inputs["labels"]["tumor"])
        self.sizes = [*getattr(self, "sizes", []), rows]
        if rows > 2:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 bytes")
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)


@pytest.mark.parametrize("streamed", [False, True], ids=["map", "streamed"])
def test_auto_find_batch_size_shrinks_per_task_batch_sizes_too(tmp_path, streamed):
    rows = brain_tumor(12)
    trainer = _trainer(tmp_path, trainer_class=_OutOfMemoryAbove2, auto_find_batch_size=True,
                       train=rows.to_iterable_dataset() if streamed else rows,
                       sampling=TaskSampling(batch_sizes={"brain_tumor": 8}))
    trainer.train()  # before: the per-task size stayed 8 and the search ended in "No executable batch size found"
    assert trainer.state.global_step == 3
    assert trainer.sizes[0] == 8 and all(b <= 2 for b in trainer.sizes[-3:])
    assert trainer.sizes == sorted(trainer.sizes, reverse=True)


def test_evaluation_loaders_take_the_worker_settings(tmp_path, monkeypatch):
    made = []

    class Recorded(DataLoader):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(trainer_module, "DataLoader", Recorded)
    trainer = _trainer(tmp_path, dataloader_num_workers=1, dataloader_prefetch_factor=3,
                       dataloader_multiprocessing_context="fork")
    predictions = trainer.predict_task("brain_tumor", brain_tumor(6, seed=3, prefix="bte"))
    assert len(predictions) == 6
    assert made[-1].prefetch_factor == 3 and made[-1].num_workers == 1
    assert made[-1].multiprocessing_context.get_start_method() == "fork"


class _NaNEverySecondBatch(StaticWeighting):
    """The static weighting, whose logged per-task loss is NaN for every second batch (the loss itself is not)."""

    calls = 0

    def combine(self, task, outputs, **kwargs):
        loss, logs = super().combine(task, outputs, **kwargs)
        type(self).calls += 1
        return loss, {k: v * float("nan") if self.calls % 2 == 0 else v for k, v in logs.items()}


@pytest.mark.parametrize("nan_filter", [True, False])
def test_logging_nan_inf_filter_reaches_the_per_task_losses(tmp_path, nan_filter):
    trainer = _trainer(tmp_path, logging_steps=2, max_steps=4, logging_nan_inf_filter=nan_filter,
                       trainer_kwargs={"loss_weighting": _NaNEverySecondBatch(tiny_model(["brain_tumor"]).config)})
    trainer.train()
    logged = [h["loss_brain_tumor"] for h in trainer.state.log_history if "loss_brain_tumor" in h]
    assert len(logged) == 2
    # filtered: the mean of each logging window's finite batch (its first); unfiltered: NaN, as the flag says
    assert all(math.isfinite(v) for v in logged) if nan_filter else all(math.isnan(v) for v in logged)
