"""``multimed train`` / ``evaluate`` arguments: our dataclass beside ``TrainingArguments`` (HfArgumentParser)."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

__all__ = [
    "MultiMedArguments",
    "EvaluateArguments",
    "TRAINING_DEFAULTS",
    "ENCODER_TRAINING_DEFAULTS",
    "training_defaults",
    "make_training_arguments",
    "parse_train_args",
    "parse_evaluate_args",
]

#: TrainingArguments defaults of our commands (the flags still override them): the paper's optimiser, AdamW at
#: lr 1e-3 with decay (cosine after a 5% warm-up), weight decay 0.01, enough epochs for small from-scratch encoders
#: to learn, evaluation and a checkpoint per epoch (the last one kept), a log line every 10 steps.
TRAINING_DEFAULTS: dict[str, Any] = {
    "learning_rate": 1e-3,
    "weight_decay": 0.01,
    "lr_scheduler_type": "cosine",
    "warmup_steps": 0.05,
    "num_train_epochs": 20,
    "per_device_train_batch_size": 32,
    "per_device_eval_batch_size": 64,
    "eval_strategy": "epoch",
    "save_strategy": "epoch",
    "save_total_limit": 1,
    "logging_steps": 10,
    "remove_unused_columns": False,
    "report_to": "none",
}
#: Changes per encoder preset (our choices, not the paper's): pretrained Hub encoders are fine-tuned gentler and
#: shorter (lr 1e-3 makes a pretrained ViT forget its weights within an epoch); random-init encoders train longer
#: (scanpy's real pbmc68k cells, small unimodal model, seeds 42/0/1/2: test accuracy 0.916/0.888/0.879/0.888 at 40
#: epochs; 20 epochs gave 0.832-0.925, mean 0.888).
ENCODER_TRAINING_DEFAULTS: dict[str, dict[str, Any]] = {
    "hub": {"learning_rate": 1e-4, "num_train_epochs": 5},
    "small": {"num_train_epochs": 40},
    "domain_specific": {"num_train_epochs": 40},
}


def training_defaults(family: str = "unimodal", encoders: str = "hub") -> dict[str, Any]:
    """Our ``TrainingArguments`` defaults for a family and encoder preset (``domain_specific`` trains from scratch
    whatever ``encoders`` says)."""
    preset = "domain_specific" if str(family).split("+")[0] == "domain_specific" else encoders
    return {**TRAINING_DEFAULTS, **ENCODER_TRAINING_DEFAULTS.get(preset, {})}


@dataclass
class MultiMedArguments:
    """What to train: the data, the tasks, the family and encoders, and how tasks are sampled and weighted."""

    data: str = field(metadata={"help": "a built MultiMed folder (multimed build / dataset_scripts/build_all.py) or "
                                        "a Hub dataset id (ORG/multimed)"})
    tasks: list[str] = field(metadata={"help": "task names (multimed list)", "nargs": "+"})
    family: str = field(default="unimodal", metadata={
        "help": "domain_specific | unimodal | unimodal_multitask | multimodal | multimodal_multitask, optionally "
                "with variants after '+'"})
    encoders: str = field(default="hub", metadata={
        "help": "hub (the paper's Hub encoders), small (small random-init encoders: offline, CPU) or a JSON file of "
                "encoder specs; domain_specific ignores it"})
    plan: str | None = field(default=None, metadata={
        "help": "run only this plan of the family (names: multimed train ... --list_plans); default: every plan, "
                "each in OUTPUT_DIR/<plan> when there are several"})
    list_plans: bool = field(default=False, metadata={"help": "print the family's plans for the tasks and exit"})
    streaming: bool = field(default=False, metadata={
        "help": "stream the data (load_dataset(..., streaming=True)), sharded per process; needs --max_steps"})
    fusion: str = field(default="intermediate", metadata={"help": "early | intermediate | late"})
    fusion_method: str | None = field(default=None, metadata={"help": "the fusion family's function (default: its "
                                                                         "first)"})
    hidden_size: int | None = field(default=None, metadata={"help": "shared size (default: the encoder preset's)"})
    modality_dropout: float = field(default=0.0, metadata={"help": "drop each present modality of a row with this "
                                                                    "probability in training"})
    sampling: str = field(default="proportional", metadata={
        "help": "task sampling: proportional | temperature | uniform | round_robin"})
    sampling_temperature: float = field(default=2.0, metadata={"help": "T of temperature sampling"})
    sampling_size_cap: int | None = field(default=None, metadata={"help": "cap on a task's size in sampling"})
    task_batch_sizes: str | None = field(default=None, metadata={
        "help": 'per-task train batch sizes as JSON, e.g. \'{"cell_type": 256}\''})
    loss_weighting: str = field(default="static", metadata={"help": "static | uncertainty"})
    max_train_samples: int | None = field(default=None, metadata={"help": "keep the first N training rows per task"})
    max_eval_samples: int | None = field(default=None, metadata={"help": "keep the first N evaluation rows per task"})
    eval_splits: list[str] = field(default_factory=lambda: ["validation", "test"], metadata={
        "help": "splits evaluated after training (metrics and predictions)", "nargs": "+"})
    bootstrap_samples: int = field(default=1000, metadata={"help": "bootstrap resamples of the metrics' CIs"})
    processor_overrides: str | None = field(default=None, metadata={
        "help": 'processor settings as JSON, e.g. \'{"dna": {"crop_center": 7000}}\''})

    def __post_init__(self):
        from multimed_hf.training.families import parse_family

        parse_family(self.family)
        self.tasks = list(dict.fromkeys(self.tasks))
        if self.task_batch_sizes is not None and not isinstance(self.task_batch_sizes, dict):
            self.task_batch_sizes = _json_arg("task_batch_sizes", self.task_batch_sizes)
        if self.processor_overrides is not None and not isinstance(self.processor_overrides, dict):
            self.processor_overrides = _json_arg("processor_overrides", self.processor_overrides)


@dataclass
class EvaluateArguments:
    """``multimed evaluate CHECKPOINT --data DIR``: which checkpoint, data and splits."""

    checkpoint: str = field(metadata={"help": "a saved run folder or a Hub model id"})
    data: str = field(metadata={"help": "a built MultiMed folder or a Hub dataset id"})
    tasks: list[str] | None = field(default=None, metadata={"help": "tasks (default: every head of the model)",
                                                            "nargs": "+"})
    split: list[str] = field(default_factory=lambda: ["test"], metadata={"help": "splits to evaluate", "nargs": "+"})
    streaming: bool = field(default=False, metadata={"help": "stream the data"})
    max_eval_samples: int | None = field(default=None, metadata={"help": "keep the first N rows per task"})
    bootstrap_samples: int = field(default=1000, metadata={"help": "bootstrap resamples of the metrics' CIs"})


def _json_arg(name: str, value: str) -> dict:
    text = Path(value).read_text() if Path(value).is_file() else value
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"--{name}: expected JSON (or a JSON file), got {value!r} ({err})") from None
    if not isinstance(parsed, dict):
        raise ValueError(f"--{name}: expected a JSON object, got {type(parsed).__name__}")
    return parsed


def make_training_arguments(output_dir: str | Path, *, family: str = "unimodal", encoders: str = "hub",
                            **overrides):
    """``TrainingArguments`` with our defaults for the family and encoders, then ``overrides``."""
    from transformers import TrainingArguments

    return TrainingArguments(output_dir=str(output_dir), **{**training_defaults(family, encoders), **overrides})


def _parser(first):
    from transformers import HfArgumentParser, TrainingArguments

    return HfArgumentParser((first, TrainingArguments))


def parse_train_args(argv: Sequence[str] | None = None):
    """``(MultiMedArguments, TrainingArguments)`` from the command line (or one ``.json`` file), as transformers'
    examples parse: every ``TrainingArguments`` flag works; unset ones take ``training_defaults(family, encoders)``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser(MultiMedArguments)
    if len(argv) == 1 and argv[0].endswith(".json"):
        given = json.loads(Path(argv[0]).read_text())
        defaults = training_defaults(given.get("family", "unimodal"), given.get("encoders", "hub"))
        return parser.parse_dict({**defaults, **given})
    probe, _ = parser.parse_known_args(argv)  # the family and encoders decide the defaults of the rest
    parser.set_defaults(**training_defaults(probe.family, probe.encoders))
    return parser.parse_args_into_dataclasses(argv)


def parse_evaluate_args(argv: Sequence[str] | None = None):
    """``(EvaluateArguments, TrainingArguments)``; the checkpoint may come first, positionally."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and not argv[0].startswith("-") and not argv[0].endswith(".json"):
        argv = ["--checkpoint", argv[0], *argv[1:]]
    parser = _parser(EvaluateArguments)
    parser.set_defaults(per_device_eval_batch_size=TRAINING_DEFAULTS["per_device_eval_batch_size"],
                        remove_unused_columns=False, report_to="none")
    if len(argv) == 1 and argv[0].endswith(".json"):
        return parser.parse_json_file(argv[0])
    return parser.parse_args_into_dataclasses(argv)
