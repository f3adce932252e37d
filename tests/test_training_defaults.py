"""Which training defaults a run gets: per family, encoder preset and the modalities it reads."""

import pytest

from multimed_hf.training.arguments import (
    ENCODER_TRAINING_DEFAULTS,
    TRAINING_DEFAULTS,
    make_training_arguments,
    parse_train_args,
    task_modalities,
    training_defaults,
    training_preset,
)
from multimed_hf.training.run import _resolve

FROM_SCRATCH = ENCODER_TRAINING_DEFAULTS["domain_specific"]["num_train_epochs"]
FINE_TUNING = ENCODER_TRAINING_DEFAULTS["hub"]


def test_hub_runs_on_modalities_without_pretrained_weights_train_from_scratch():
    # scRNA-seq and EEG have our own encoders under `hub` (random-init): nothing to fine-tune
    assert training_preset("unimodal", "hub", ("scrna",)) == "domain_specific"
    assert training_preset("multimodal_multitask", "hub", ("scrna", "eeg")) == "domain_specific"
    # one pretrained encoder among them keeps the fine-tuning defaults
    assert training_preset("unimodal", "hub", ("mri",)) == "hub"
    assert training_preset("multimodal", "hub", ("dna", "scrna")) == "hub"
    assert training_preset("unimodal", "hub") == "hub"  # modalities unknown: as before
    # other presets are left alone
    assert training_preset("unimodal", "small", ("scrna",)) == "small"
    assert training_preset("domain_specific+miles", "hub", ("mri",)) == "domain_specific"
    scratch = training_defaults("unimodal", "hub", ("scrna",))
    assert scratch["learning_rate"] == TRAINING_DEFAULTS["learning_rate"] == 1e-3
    assert scratch["num_train_epochs"] == FROM_SCRATCH
    assert training_defaults("unimodal", "hub", ("mri",))["learning_rate"] == FINE_TUNING["learning_rate"] == 1e-4


def test_task_modalities_come_from_the_registry():
    assert task_modalities(["cell_type"]) == ("scrna",)
    assert task_modalities(["motor_imagery", "cell_type"]) == ("eeg", "scrna")
    assert set(task_modalities(["expression_prediction"])) == {"dna", "scrna"}
    assert task_modalities(["all"]) is None and task_modalities(["cel_type"]) is None and task_modalities([]) is None


@pytest.mark.parametrize("tasks, epochs, lr", [
    (["cell_type"], FROM_SCRATCH, 1e-3),
    (["motor_imagery"], FROM_SCRATCH, 1e-3),
    (["brain_tumor"], FINE_TUNING["num_train_epochs"], 1e-4),
    (["brain_tumor", "cell_type"], FINE_TUNING["num_train_epochs"], 1e-4),
])
def test_the_command_and_python_pick_defaults_from_the_tasks(tmp_path, tasks, epochs, lr):
    _, args = parse_train_args(["--data", str(tmp_path), "--tasks", *tasks, "--output_dir", str(tmp_path)])
    assert (args.num_train_epochs, args.learning_rate) == (epochs, lr)
    _, args = _resolve(None, None, {"data": str(tmp_path), "tasks": tasks, "output_dir": str(tmp_path)})
    assert (args.num_train_epochs, args.learning_rate) == (epochs, lr)


def test_a_flag_still_wins(tmp_path):
    common = ["--data", str(tmp_path), "--tasks", "cell_type", "--output_dir", str(tmp_path)]
    _, args = parse_train_args([*common, "--learning_rate", "1e-4", "--num_train_epochs", "5"])
    assert (args.num_train_epochs, args.learning_rate) == (5, 1e-4)
    assert make_training_arguments(tmp_path, modalities=("scrna",), num_train_epochs=3).num_train_epochs == 3
    assert make_training_arguments(tmp_path, modalities=("scrna",)).num_train_epochs == FROM_SCRATCH


def test_analysis_commands_parse_the_same_defaults(tmp_path):
    from multimed_hf.analysis._common import parse_analysis_args
    from multimed_hf.analysis.attribution import AttributionOptions

    _, _, args = parse_analysis_args(["--data", str(tmp_path), "--task", "cell_type", "--output_dir", str(tmp_path)],
                                     AttributionOptions)
    assert (args.num_train_epochs, args.learning_rate) == (FROM_SCRATCH, 1e-3)


def test_pinned_memory_only_where_an_accelerator_is(tmp_path):
    import torch

    assert training_defaults()["dataloader_pin_memory"] is torch.accelerator.is_available()
    _, args = parse_train_args(["--data", str(tmp_path), "--tasks", "cell_type", "--output_dir", str(tmp_path)])
    assert args.dataloader_pin_memory is torch.accelerator.is_available()
    _, args = parse_train_args(["--data", str(tmp_path), "--tasks", "cell_type", "--output_dir", str(tmp_path),
                                "--dataloader_pin_memory", "true"])
    assert args.dataloader_pin_memory is True  # a flag still wins
    from multimed_hf.fewshot.run import parse_fewshot_args  # fewshot too (it warned at every loader on CPU)

    _, args = parse_fewshot_args(["CKPT", "--data", str(tmp_path), "--task", "cell_type", "--output_dir",
                                  str(tmp_path)])
    assert args.dataloader_pin_memory is torch.accelerator.is_available()


def test_a_pushed_run_goes_up_once_at_the_end_and_help_says_whose_defaults_it_shows(tmp_path, capsys):
    # before: transformers' hub_strategy every_save made a commit of each checkpoint (no card, results or
    # predictions) before the final one; --help showed the hub preset's defaults without saying they were
    from transformers.trainer_utils import HubStrategy

    _, args = parse_train_args(["--data", str(tmp_path), "--tasks", "brain_tumor", "--output_dir", str(tmp_path)])
    assert args.hub_strategy == HubStrategy.END
    _, args = parse_train_args(["--data", str(tmp_path), "--tasks", "brain_tumor", "--output_dir", str(tmp_path),
                                "--hub_strategy", "every_save"])
    assert args.hub_strategy == HubStrategy.EVERY_SAVE
    with pytest.raises(SystemExit):
        parse_train_args(["--encoders=small", "--help"])  # the = form too
    text = " ".join(capsys.readouterr().out.split())
    assert "The defaults shown are those of --family unimodal --encoders small" in text
    assert "small: num_train_epochs 40, weight_decay 1.0, label_smoothing_factor 0.05" in text
    epochs = "--num-train-epochs NUM_TRAIN_EPOCHS Total number of training epochs to perform. (default: {})"
    assert epochs.format(40) in text
    with pytest.raises(SystemExit):  # a hub run of cell_type trains from scratch: its help says so
        parse_train_args(["--tasks", "cell_type", "--help"])
    assert epochs.format(FROM_SCRATCH) in " ".join(capsys.readouterr().out.split())
