"""``multimed train`` / ``evaluate`` arguments: our dataclass beside ``TrainingArguments`` (HfArgumentParser)."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

__all__ = [
    "MultiMedArguments",
    "EvaluateArguments",
    "TRAINING_DEFAULTS",
    "ENCODER_TRAINING_DEFAULTS",
    "training_defaults",
    "training_preset",
    "has_accelerator",
    "task_modalities",
    "make_training_arguments",
    "parse_train_args",
    "parse_evaluate_args",
    "refuse_lone_processes",
    "VARIANT_FLAGS",
    "variant_options",
    "check_variant_flags",
    "check_run_flags",
    "check_counts",
    "refuse_remove_unused_columns",
    "refuse_domain_specific_encoders",
    "refuse_script_switches",
    "SCRIPT_SWITCHES",
    "set_by_user",
    "flags_named",
    "check_eval_splits",
    "check_class_texts",
    "json_argument",
    "overrides_read",
    "teachers_of",
    "held_out_classes",
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
    "hub_strategy": "end",  # --push_to_hub uploads the run once, at the end (transformers: at every save)
    "logging_steps": 10,
    "remove_unused_columns": False,
    "report_to": "none",
}
#: Changes per encoder preset (our choices, not the paper's): pretrained Hub encoders are fine-tuned gentler and
#: shorter (lr 1e-3 makes a pretrained ViT forget its weights within an epoch); random-init encoders train longer
#: (scanpy's real pbmc68k cells, small unimodal model, seeds 42/0/1/2: test accuracy 0.916/0.888/0.879/0.888 at 40
#: epochs; 20 epochs gave 0.832-0.925, mean 0.888). The small ones also decay their weights harder (AdamW, decoupled):
#: on the same cells, 20 seeds, validation / test accuracy 0.881 / 0.885 at weight decay 1 against 0.868 / 0.877 at
#: 0.01, and 0.883 / 0.890 with the expression encoder's input dropout 0.3 (encoder_presets._expression) against
#: scikit-learn's logistic regression at 0.911 / 0.888; brain_tumor on the bundled sample generator (40 images per
#: class, small ViT, 3 seeds) moved from 0.44 / 0.60 to 0.52 / 0.56 (21 / 42 rows: within noise). They smooth the
#: labels of single-label class outputs by 0.05 (``label_smoothing_factor``; a run without such an output trains
#: unsmoothed, ``training.run``): on the same cells, 20 seeds, validation / test 0.888 / 0.901 (at or above the
#: regression on 19 of 20 test seeds, sd 0.011) against 0.883 / 0.890 unsmoothed; 0.025: 0.881 / 0.896, 0.1:
#: 0.877 / 0.901, 0.2: 0.880 / 0.899 (chosen on validation, where the differences are within a cell: 0.008).
ENCODER_TRAINING_DEFAULTS: dict[str, dict[str, Any]] = {
    "hub": {"learning_rate": 1e-4, "num_train_epochs": 5},
    "small": {"num_train_epochs": 40, "weight_decay": 1.0, "label_smoothing_factor": 0.05},
    "domain_specific": {"num_train_epochs": 40},
}


def task_modalities(tasks: Sequence[str] | None) -> tuple[str, ...] | None:
    """The modalities ``tasks`` read, from the task registry; ``None`` where one is not a registered task name
    (``all``, a typo: the run's own checks name it later)."""
    from multimed_hf.tasks import get_task, list_tasks

    known = set(list_tasks(include_extras=True))
    if not tasks or any(t not in known for t in tasks):
        return None
    return tuple(dict.fromkeys(m for t in tasks for m in get_task(t).modalities))


def training_preset(family: str = "unimodal", encoders: str = "hub",
                    modalities: Sequence[str] | None = None) -> str:
    """The ``ENCODER_TRAINING_DEFAULTS`` key a run trains under: ``domain_specific`` for that family whatever
    ``encoders`` says, and for ``hub`` runs that read no modality with pretrained Hub weights (``modalities``:
    scRNA-seq and EEG have our own encoders, random-init, so cell_type and motor_imagery train from scratch; at the
    fine-tuning defaults, lr 1e-4 for 5 epochs, cell_type on scanpy's real pbmc68k cells stayed near the majority
    class: 0.39 test accuracy, against 0.71-0.73 at the from-scratch ones, 3 seeds); else ``encoders``."""
    if str(family).split("+")[0] == "domain_specific":
        return "domain_specific"
    if encoders == "hub" and modalities:
        from multimed_hf.training.encoder_presets import hub_encoder_ids

        if not any(hub_encoder_ids(modalities).values()):
            return "domain_specific"
    return encoders


def training_defaults(family: str = "unimodal", encoders: str = "hub",
                      modalities: Sequence[str] | None = None) -> dict[str, Any]:
    """Our ``TrainingArguments`` defaults for a family, encoder preset and the modalities the run reads
    (``training_preset``)."""
    preset = ENCODER_TRAINING_DEFAULTS.get(training_preset(family, encoders, modalities), {})
    return {**TRAINING_DEFAULTS, **preset, "dataloader_pin_memory": has_accelerator()}


def has_accelerator() -> bool:
    """Pinned host memory only helps copies to an accelerator; on a CPU-only machine torch warns about it at every
    DataLoader the Trainer makes, so our defaults ask for it only where there is one."""
    import torch

    return bool(torch.accelerator.is_available())


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
                "encoder specs; not for domain_specific, which trains its own small models (multimed train refuses it there; a "
                "benchmark grid applies it to the other families)"})
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
                                                                    "probability in training, never a row's last "
                                                                    "one (of n, each goes with p - p**n / n)"})
    sampling: str = field(default="proportional", metadata={
        "help": "task sampling: proportional | temperature | uniform | round_robin"})
    sampling_temperature: float = field(default=2.0, metadata={"help": "T of temperature sampling"})
    sampling_size_cap: int | None = field(default=None, metadata={"help": "cap on a task's size in sampling"})
    task_lockstep: bool = field(default=False, metadata={
        "help": "every process trains the same task in each step (rounds of one batch per process of one task); "
                "turned on by itself under --fsdp with several tasks"})
    task_batch_sizes: str | None = field(default=None, metadata={
        "help": 'per-task train batch sizes as JSON, e.g. \'{"cell_type": 256}\''})
    loss_weighting: str = field(default="static", metadata={"help": "static | uncertainty"})
    max_train_samples: int | None = field(default=None, metadata={
        "help": "keep N training rows per task, drawn at random once (the same rows in every run; a run of one "
                "modality's rows keeps those among the N) and kept in order (with --streaming: the first N of each "
                "process's shard)"})
    max_eval_samples: int | None = field(default=None, metadata={
        "help": "keep N evaluation rows per task, drawn at random once (the same rows in every run; a run of one "
                "modality's rows keeps those among the N; with --streaming: the first N of each split holding what "
                "the run reads)"})
    eval_splits: list[str] = field(default_factory=lambda: ["validation", "test"], metadata={
        "help": "splits evaluated after training (metrics and predictions)", "nargs": "+"})
    bootstrap_samples: int = field(default=1000, metadata={"help": "bootstrap resamples of the metrics' CIs"})
    processor_overrides: str | None = field(default=None, metadata={
        "help": 'processor settings as JSON, e.g. \'{"dna": {"crop_center": 7000}}\''})
    uint8_images: bool | None = field(default=None, metadata={
        "help": "true | false: training images travel from the DataLoader workers as uint8 and are rescaled and "
                "normalised on the device (MultiMedTrainer uint8_images: a quarter of the bytes, the same pixel "
                "values); default: on when training on a CUDA device"})
    draft_images: bool = field(default=False, metadata={
        "help": "decode JPEGs at the smallest reduced scale (1/2, 1/4, 1/8) that keeps the encoder's input size "
                "(Pillow's draft mode: ImageProcessor draft_size), then resize as usual: a large JPEG costs a "
                "fraction of a full decode, for pixels close to but not equal to the full decode's; saved with the "
                "processor, so evaluation and prediction decode alike"})
    # balancing and distillation variants (--family <family>+miles|+ogm_ge|+gblend|+mind); unset = the package's
    # default, whose value and source are documented beside the constant in training/balancing
    miles_threshold: float | None = field(default=None, metadata={
        "help": "+miles: tau, the spread of utilisation rates above which the dominant modality's encoder is slowed "
                "(default 0.1: balancing.miles.MILES_THRESHOLD)"})
    miles_factor: float | None = field(default=None, metadata={
        "help": "+miles: mu (0 < mu < 1), the factor on the dominant encoder's learning rate (default 0.5: "
                "balancing.miles.MILES_FACTOR)"})
    miles_every_n_steps: int | None = field(default=None, metadata={
        "help": "+miles: measure utilisation every N steps (default: at each epoch's end)"})
    ogm_alpha: float | None = field(default=None, metadata={
        "help": "+ogm_ge: alpha of k = 1 - tanh(alpha * rho) (default 0.1: balancing.ogm_ge.OGM_ALPHA, the "
                "OGM-GE code's README)"})
    ogm_window: list[float] | None = field(default=None, metadata={
        "help": "+ogm_ge: START END, the fractions of training during which gradients are modulated (default 0 0.5: "
                "balancing.ogm_ge.OGM_WINDOW, the OGM-GE code's epochs 0-50 of 100)", "nargs": 2})
    ogm_noise: bool = field(default=True, metadata={
        "help": "+ogm_ge: add the generalisation-enhancement Gaussian noise (GE); false: OGM alone"})
    gblend_probe_steps: int | None = field(default=None, metadata={
        "help": "+gblend: optimizer steps of each probe run (default 50: balancing.gblend.GBLEND_PROBE_STEPS)"})
    gblend_max_rows: int | None = field(default=None, metadata={
        "help": "+gblend: rows per split measured before and after a probe (default 256)"})
    mind_temperature: float | None = field(default=None, metadata={
        "help": "+mind: distillation temperature T (default 2.0: balancing.mind.MIND_TEMPERATURE)"})
    mind_weight: float | None = field(default=None, metadata={
        "help": "+mind: weight of the distillation terms beside the task losses (default 1.0: "
                "balancing.mind.MIND_WEIGHT)"})
    teachers: list[str] | None = field(default=None, metadata={
        "help": "+mind: the unimodal teachers as MODALITY=PATH (a saved run folder or Hub id, e.g. a Table 1 "
                "unimodal run; repeat a modality for an ensemble) or TASK:MODALITY=PATH for one task's teachers",
        "nargs": "+"})
    # contrastive alignment for zero-shot transfer by label text (multimed fewshot CHECKPOINT --shots 0)
    align_label_text: bool = field(default=False, metadata={
        "help": "train with contrastive alignment: every class-labelled task gets a label_text head that scores a "
                "row's fused embedding against the text encoder's embeddings of its class names (CLIP-style), so "
                "held-out classes can be predicted zero-shot (multimed fewshot CHECKPOINT --shots 0)"})
    holdout_classes: list[str] | None = field(default=None, metadata={
        "help": "with --align_label_text: TASK:ClassA,ClassB ... classes whose rows never reach training and whose "
                "texts are never encoded (zero-shot targets)", "nargs": "+"})
    class_texts: str | None = field(default=None, metadata={
        "help": 'with --align_label_text: class descriptions as JSON (or a JSON file), '
                '\'{"brain_tumor": {"glioma": "a glial tumour"}}\'; default: the class names'})
    align_pairs: str | None = field(default=None, metadata={
        "help": "with --align_label_text: an image-caption config of --data (pmc_pairs) whose training pairs are "
                "trained with a symmetric InfoNCE beside the tasks"})
    align_temperature: float = field(default=0.07, metadata={
        "help": "temperature of the image-caption InfoNCE (CLIP's initial value)"})
    align_pair_weight: float = field(default=1.0, metadata={"help": "weight of the image-caption loss"})
    max_align_pairs: int | None = field(default=None, metadata={
        "help": "keep the first N image-caption training pairs"})

    def __post_init__(self):
        from multimed_hf.training.families import parse_family

        parse_family(self.family)
        self.tasks = list(dict.fromkeys(self.tasks))
        if self.class_texts is not None and not isinstance(self.class_texts, dict):
            self.class_texts = json_argument("class_texts", self.class_texts)
        if self.teachers is not None:
            teachers_of(self.teachers)  # a malformed entry fails at parse time
        if self.holdout_classes is not None:
            held_out_classes(self.holdout_classes)
        alignment_only = [name for name, given in (("holdout_classes", self.holdout_classes),
                                                   ("class_texts", self.class_texts),
                                                   ("align_pairs", self.align_pairs)) if given]
        if alignment_only and not self.align_label_text:
            raise ValueError(f"--{alignment_only[0]} belongs to contrastive alignment: add --align_label_text "
                             f"(held-out classes are predicted through the label_text heads it trains)")
        pair_only = [f"{name} {getattr(self, name)}" for name in ("align_temperature", "align_pair_weight",
                                                                   "max_align_pairs") if set_by_user(self, name)]
        if pair_only and not self.align_pairs:
            raise ValueError(f"--{pair_only[0]}: it sets the image-caption loss, which only --align_pairs CONFIG "
                             f"trains (with --align_label_text); add --align_pairs pmc_pairs or leave it out")
        if self.task_batch_sizes is not None and not isinstance(self.task_batch_sizes, dict):
            self.task_batch_sizes = json_argument("task_batch_sizes", self.task_batch_sizes)
        if self.processor_overrides is not None and not isinstance(self.processor_overrides, dict):
            self.processor_overrides = json_argument("processor_overrides", self.processor_overrides)
        check_counts(self, hidden_size=1, max_train_samples=1, max_eval_samples=1, bootstrap_samples=0,
                      max_align_pairs=1, sampling_size_cap=1)
        if set_by_user(self, "sampling_temperature") and self.sampling != "temperature":
            raise ValueError(f"--sampling_temperature {self.sampling_temperature}: it is the T of --sampling "
                             f"temperature, and --sampling is {self.sampling!r}; add --sampling temperature or leave "
                             f"it out")
        if self.sampling_size_cap is not None and self.sampling in ("uniform", "round_robin"):
            raise ValueError(f"--sampling_size_cap {self.sampling_size_cap}: --sampling {self.sampling} gives every "
                             f"task the same number of batches whatever its size, so a cap on sizes changes nothing; "
                             f"use it with --sampling proportional or temperature")
        check_eval_splits("eval_splits", self.eval_splits)
        if self.class_texts:
            check_class_texts(self.class_texts)
        if self.fusion == "early" and self.encoders in ("hub", "small", "domain_specific"):
            raise ValueError(f"--fusion early: one transformer reads every modality's input embeddings, and "
                             f"--encoders {self.encoders} gives whole encoders per modality; give --encoders FILE.json "
                             f"with an input embedder per modality (kinds patch_embed, token_embed, expression_embed, "
                             f"eeg_embed: multimed_hf.configuration_multimed.DEFAULT_EMBEDDERS), or use --fusion "
                             f"intermediate or late")


@dataclass
class EvaluateArguments:
    """``multimed evaluate CHECKPOINT --data DIR``: which checkpoint, data and splits."""

    checkpoint: str = field(metadata={"help": "a saved run folder or a Hub model id"})
    data: str = field(metadata={"help": "a built MultiMed folder or a Hub dataset id"})
    tasks: list[str] | None = field(default=None, metadata={"help": "tasks (default: every head of the model)",
                                                            "nargs": "+"})
    split: list[str] = field(default_factory=lambda: ["test"], metadata={"help": "splits to evaluate", "nargs": "+"})
    streaming: bool = field(default=False, metadata={"help": "stream the data"})
    max_eval_samples: int | None = field(default=None, metadata={
        "help": "keep N rows per task, drawn at random once (the rows multimed train --max_eval_samples N scores; "
                "with --streaming: the first N of each split)"})
    bootstrap_samples: int = field(default=1000, metadata={"help": "bootstrap resamples of the metrics' CIs"})

    def __post_init__(self):
        check_counts(self, max_eval_samples=1, bootstrap_samples=0)


def flags_named(parser, argv: Sequence[str], dests: Sequence[str] | None = None) -> set[str]:
    """The options named in ``argv`` whatever their values (``dests``; default: all of ``parser``'s): ``argv`` parsed
    again with every default set to a marker. ``parser`` is changed (its defaults): give a fresh one."""
    unset = object()
    dests = [a.dest for a in parser._actions if a.dest != "help"] if dests is None else list(dests)
    parser.set_defaults(**{dest: unset for dest in dests})
    namespace, _ = parser.parse_known_args(list(argv))
    return {k for k, v in vars(namespace).items() if k in dests and v is not unset}


def set_by_user(args, name: str) -> bool:
    """Whether field ``name`` of the dataclass ``args`` differs from its default (was set by the user)."""
    spec = args.__dataclass_fields__[name]
    default = spec.default_factory() if spec.default_factory is not dataclasses.MISSING else spec.default
    return getattr(args, name) != default


def check_counts(args, **minimum: int) -> None:
    """Refuse a count below its minimum (``max_eval_samples 0`` would score nothing; ``bootstrap_samples -1``
    failed only after training; ``hidden_size 0`` silently meant the preset's size)."""
    for name, low in minimum.items():
        value = getattr(args, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
            what = "0 (no CI) or more" if low == 0 else f"an integer >= {low}"
            raise ValueError(f"--{name} {value!r}: expected {what}")


def refuse_remove_unused_columns(training_args, command: str, error: type[ValueError] = ValueError) -> None:
    """Our commands default ``--remove_unused_columns`` to False, so True was asked for: refused (``error``), as
    the trainer would turn it off again."""
    if training_args.remove_unused_columns:
        raise error(f"--remove_unused_columns True: MultiMedTrainer reads every column of a task's rows through the "
                    f"processor (with_transform), so it keeps them all; leave it False (the default of {command})")


def refuse_domain_specific_encoders(args, named, error: type[ValueError] = ValueError,
                                    families: Sequence[str] | None = None) -> None:
    """``--encoders`` named on the command line (``named``) where every family run (``families``; default
    ``[args.family]``) is ``domain_specific``, which trains its own small models whatever it says: refused
    (``error``)."""
    families = [args.family] if families is None else list(families)
    if "encoders" in named and families and all(str(f).split("+")[0] == "domain_specific" for f in families):
        which = "family domain_specific" if len(families) == 1 else "every family given is domain_specific, which"
        raise error(f"--encoders {args.encoders}: {which} trains its own small models from scratch "
                    f"(a small ResNet for images, an LSTM for EEG, an MLP for expression, small transformers for "
                    f"sequences) whatever --encoders says, so it would change nothing; leave it out")


#: ``TrainingArguments`` switches of transformers' example scripts (``run_*.py`` skip training, evaluation or
#: prediction by them) that ``Trainer`` never reads.
SCRIPT_SWITCHES = ("do_train", "do_eval", "do_predict")


#: ``TrainingArguments`` flags that only training reads: a command that trains nothing refuses them (they would
#: change nothing): ``multimed evaluate``, a zero-shot-only ``multimed fewshot``.
TRAINING_ONLY_FLAGS = (
    "learning_rate", "weight_decay", "num_train_epochs", "max_steps", "per_device_train_batch_size",
    "gradient_accumulation_steps", "auto_find_batch_size", "lr_scheduler_type", "lr_scheduler_kwargs",
    "warmup_steps", "warmup_ratio", "optim", "optim_args", "optim_target_modules", "adam_beta1", "adam_beta2",
    "adam_epsilon", "max_grad_norm", "gradient_checkpointing", "gradient_checkpointing_kwargs", "save_strategy",
    "save_steps", "save_total_limit", "save_only_model", "data_seed",
)
#: What ``multimed evaluate`` refuses beside ``TRAINING_ONLY_FLAGS``: it smooths no loss and pushes nothing.
_NOT_EVALUATE_FLAGS = ("label_smoothing_factor", "push_to_hub", "hub_model_id", "hub_strategy", "hub_private_repo",
                       "resume_from_checkpoint")


def refuse_evaluate_flags(named, error: type[ValueError] = ValueError) -> None:
    """``multimed evaluate`` trains and uploads nothing: a training flag or a Hub push named on its command line
    (``named``) would change nothing; refused (``error``), naming what to do instead."""
    flags = [name for name in (*TRAINING_ONLY_FLAGS, *_NOT_EVALUATE_FLAGS) if name in named]
    if not flags:
        return
    if flags[0] in ("push_to_hub", "hub_model_id", "hub_strategy", "hub_private_repo"):
        raise error(f"--{flags[0]}: multimed evaluate uploads nothing (its results stay in --output_dir); upload that "
                    f"folder with huggingface_hub (`hf upload REPO OUT`), or train with --push_to_hub")
    raise error(f"--{flags[0]}: multimed evaluate trains nothing, so it would change nothing; leave it out")


def refuse_script_switches(named, does: str, error: type[ValueError] = ValueError) -> None:
    """``--do_train/--do_eval/--do_predict`` named on the command line (``named``): our commands always do what
    ``does`` says, whatever they say, so one would change nothing (``--do_eval`` alone would not skip training as in
    transformers' examples): refused (``error``)."""
    switches = [name for name in SCRIPT_SWITCHES if name in named]
    if switches:
        raise error(f"--{switches[0]}: a switch of transformers' example scripts that Trainer never reads; {does}, "
                    f"whatever it says; leave it out")


def check_eval_splits(flag: str, splits) -> None:
    """Training evaluates the splits a run loads (``training.loading.SPLITS``); any other name was never scored."""
    from multimed_hf.training.loading import SPLITS

    unknown = [s for s in splits or () if s not in SPLITS]
    if unknown:
        raise ValueError(f"--{flag} {list(splits)}: {unknown} is not a split a run loads; expected some of "
                         f"{list(SPLITS)}")


def check_class_texts(class_texts: Mapping[str, Any]) -> None:
    """``--class_texts`` must name registered tasks and, where the registry lists them, their classes (a misspelt
    class silently kept its name as its text); classes of free-text labels come from the data and are not checked
    here."""
    from multimed_hf.tasks import UnknownTaskError, get_task

    for task, texts in class_texts.items():
        try:
            labels = get_task(task).labels
        except UnknownTaskError as err:
            raise ValueError(f"--class_texts: {err}") from None
        if not isinstance(texts, Mapping):
            raise ValueError(f"--class_texts[{task!r}]: expected an object class -> text, got "
                             f"{type(texts).__name__}")
        if any(label.kind == "text" for label in labels):  # a vocabulary fitted on the training rows
            continue
        names = [n for label in labels for n in (label.names or ())]
        unknown = sorted(set(texts) - set(names))
        if unknown:
            raise ValueError(f"--class_texts[{task!r}]: {unknown} are not classes of {task!r}; its classes: {names}")


#: Variant -> (``MultiMedArguments`` field, the variant's option name); ``variant_options`` maps them.
VARIANT_FLAGS: dict[str, tuple[tuple[str, str], ...]] = {
    "miles": (("miles_threshold", "threshold"), ("miles_factor", "factor"), ("miles_every_n_steps", "every_n_steps")),
    "ogm_ge": (("ogm_alpha", "alpha"), ("ogm_window", "window")),
    "gblend": (("gblend_probe_steps", "probe_steps"), ("gblend_max_rows", "max_rows")),
    "mind": (("mind_temperature", "temperature"), ("mind_weight", "weight"), ("teachers", "teachers")),
}


def teachers_of(entries) -> dict:
    """``--teachers`` entries -> ``{modality: [path, ...]}`` (or ``{task: {modality: [...]}}`` where every entry
    names its task as ``TASK:MODALITY=PATH``); a mapping is returned as it is."""
    if isinstance(entries, dict):
        return entries
    flat: dict[str, list[str]] = {}
    nested: dict[str, dict[str, list[str]]] = {}
    for entry in entries:
        key, sep, path = str(entry).partition("=")
        if not sep or not key or not path:
            raise ValueError(f"--teachers {entry!r}: expected MODALITY=PATH or TASK:MODALITY=PATH (a saved run "
                             f"folder, e.g. a Table 1 unimodal run)")
        task, colon, modality = key.rpartition(":")
        if colon:
            nested.setdefault(task, {}).setdefault(modality, []).append(path)
        else:
            flat.setdefault(modality, []).append(path)
    if flat and nested:
        raise ValueError(f"--teachers {list(entries)}: give every entry as MODALITY=PATH, or every one as "
                         f"TASK:MODALITY=PATH, not both")
    return nested or flat


def held_out_classes(entries) -> dict[str, list[str]]:
    """``--holdout_classes TASK:ClassA,ClassB ...`` -> ``{task: [classes]}`` (a mapping is returned as it is)."""
    if isinstance(entries, dict):
        return {t: list(c) for t, c in entries.items()}
    out: dict[str, list[str]] = {}
    for entry in entries:
        task, sep, names = str(entry).partition(":")
        classes = [c.strip() for c in names.split(",") if c.strip()]
        if not sep or not task or not classes:
            raise ValueError(f"--holdout_classes {entry!r}: expected TASK:ClassA,ClassB (class names as the "
                             f"registry spells them)")
        out.setdefault(task, []).extend(c for c in classes if c not in out.get(task, []))
    return out


def variant_options(args: "MultiMedArguments", variant: str) -> dict[str, Any]:
    """The options of balancing ``variant`` given on the command line (unset flags are left out, so the
    package's defaults apply)."""
    options = {option: getattr(args, name) for name, option in VARIANT_FLAGS.get(variant, ())
               if getattr(args, name) is not None}
    if "window" in options:
        options["window"] = tuple(float(x) for x in options["window"])
    if "teachers" in options:
        options["teachers"] = teachers_of(options["teachers"])
    if variant == "ogm_ge" and not args.ogm_noise:
        options["noise"] = False
    return options


def check_variant_flags(args: "MultiMedArguments", families) -> None:
    """Refuse a variant's flag when none of ``families`` carries the variant (it would be silently ignored)."""
    from multimed_hf.training.families import parse_family

    carried = {v for family in families for v in parse_family(family)[1]}
    for variant, flags in VARIANT_FLAGS.items():
        given = [name for name, _ in flags if getattr(args, name) is not None]
        if variant == "ogm_ge" and not args.ogm_noise:
            given.append("ogm_noise")
        if given and variant not in carried:
            raise ValueError(f"--{given[0]} is an option of the +{variant} variant, but no family given carries it "
                             f"({list(families)}); e.g. --family multimodal_multitask+{variant}")


def overrides_read(overrides: Mapping[str, Any] | None, modalities: Sequence[str]) -> dict[str, Any]:
    """The ``--processor_overrides`` entries for ``modalities`` (``"image"`` stands for every image modality)."""
    from multimed_hf.tasks import IMAGE_MODALITIES

    images = any(m in IMAGE_MODALITIES for m in modalities)
    return {m: v for m, v in (overrides or {}).items() if m in modalities or (m == "image" and images)}


def check_run_flags(args: "MultiMedArguments", tasks: Sequence[str]) -> None:
    """Refuse flags that name tasks or modalities ``tasks`` (the command's, ``all`` resolved) do not train or read:
    ``--task_batch_sizes`` / ``--class_texts`` / ``--holdout_classes`` keys, ``--processor_overrides`` modalities,
    ``--uint8_images true`` / ``--draft_images`` without an image modality. Each was silently ignored before. A
    flag that fits some of a family's runs and not others is applied where it fits (``training.run``)."""
    from multimed_hf.tasks import IMAGE_MODALITIES

    tasks = list(dict.fromkeys(tasks))
    keyed = {"task_batch_sizes": args.task_batch_sizes, "class_texts": args.class_texts,
             "holdout_classes": held_out_classes(args.holdout_classes) if args.holdout_classes else None}
    for flag, given in keyed.items():
        untrained = [t for t in given or {} if t not in tasks]
        if untrained:
            raise ValueError(f"--{flag} names tasks {untrained} that this run does not train (--tasks {tasks}); "
                             f"name only tasks of --tasks")
    modalities = task_modalities(tasks)
    if modalities is None:  # an unknown task: the run's own checks name it
        return
    images = [m for m in modalities if m in IMAGE_MODALITIES]
    read = overrides_read(args.processor_overrides, modalities)
    unread = [m for m in args.processor_overrides or {} if m not in read]
    if unread:
        raise ValueError(f"--processor_overrides names modalities {unread} that none of --tasks {tasks} reads "
                         f"(they read {list(modalities)}; 'image' stands for every image modality)")
    if not images:
        for flag, on in (("uint8_images", args.uint8_images), ("draft_images", args.draft_images)):
            if on:
                raise ValueError(f"--{flag} true changes how images are decoded or carried, but --tasks {tasks} read "
                                 f"no image modality ({list(modalities)}); leave it out")


def json_argument(name: str, value: str) -> dict:
    """The JSON object given to flag ``--name``, inline or as a file's path; ``ValueError`` naming the flag else."""
    text = Path(value).read_text() if Path(value).is_file() else value
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"--{name}: expected JSON (or a JSON file), got {value!r} ({err})") from None
    if not isinstance(parsed, dict):
        raise ValueError(f"--{name}: expected a JSON object, got {type(parsed).__name__}")
    return parsed


def make_training_arguments(output_dir: str | Path, *, family: str = "unimodal", encoders: str = "hub",
                            modalities: Sequence[str] | None = None, **overrides):
    """``TrainingArguments`` with our defaults for the family, encoders and modalities read, then ``overrides``."""
    from transformers import TrainingArguments

    defaults = training_defaults(family, encoders, modalities)
    return TrainingArguments(output_dir=str(output_dir), **{**defaults, **overrides})


def _defaults_epilog(family: str, encoders: str) -> str:
    """What ``--help`` says of its defaults: those of the family and encoders named, and how the others differ."""
    presets = "; ".join(f"{name}: " + ", ".join(f"{k} {v}" for k, v in changes.items())
                        for name, changes in ENCODER_TRAINING_DEFAULTS.items())
    base = ", ".join(f"{k} {TRAINING_DEFAULTS[k]}" for k in ("learning_rate", "num_train_epochs", "weight_decay"))
    return (f"The defaults shown are those of --family {family} --encoders {encoders} and the --tasks given; a run's "
            f"training defaults depend on --family, --encoders and the tasks' modalities (a --encoders hub run of "
            f"tasks with no pretrained Hub encoder, e.g. cell_type, trains as domain_specific). Over the base ({base}) "
            f"each preset changes: {presets}.")


def _parser(first, prog: str | None = None):
    from transformers import HfArgumentParser, TrainingArguments

    return HfArgumentParser((first, TrainingArguments), prog=prog)


def parse_train_args(argv: Sequence[str] | None = None, *, prog: str = "multimed train"):
    """``(MultiMedArguments, TrainingArguments)`` from the command line (or one ``.json`` file), as transformers'
    examples parse: every ``TrainingArguments`` flag works; unset ones take ``training_defaults(family, encoders,
    task_modalities(tasks))``.
    A balancing variant's flag without that variant in ``--family`` is refused, and so are ``--encoders`` with
    ``--family domain_specific`` (its own models) and ``--remove_unused_columns True`` (the trainer keeps every
    column). ``prog``: the usage line's command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser(MultiMedArguments, prog)
    if len(argv) == 1 and argv[0].endswith(".json"):
        given = json.loads(Path(argv[0]).read_text())
        defaults = training_defaults(given.get("family", "unimodal"), given.get("encoders", "hub"),
                                     task_modalities(given.get("tasks")))
        args, training_args = parser.parse_dict({**defaults, **given})
        named = set(given)
    else:
        if any(a in ("-h", "--help") for a in argv):  # --help shows the defaults of the run its other flags name
            probe = _parser(MultiMedArguments)
            for action in probe._actions:
                action.required = False  # `--help` alone names no --data
            known, _ = probe.parse_known_args([a for a in argv if a not in ("-h", "--help")])
            parser.set_defaults(**training_defaults(known.family, known.encoders, task_modalities(known.tasks)))
            parser.epilog = _defaults_epilog(known.family, known.encoders)
        probe, _ = parser.parse_known_args(argv)  # the family, encoders and tasks decide the defaults of the rest
        parser.set_defaults(**training_defaults(probe.family, probe.encoders, task_modalities(probe.tasks)))
        args, training_args = parser.parse_args_into_dataclasses(argv)
        named = flags_named(_parser(MultiMedArguments), argv)
    refuse_domain_specific_encoders(args, named)
    refuse_script_switches(named, "multimed train always trains, then scores --eval_splits (to score a saved model: "
                                  "multimed evaluate CHECKPOINT --split ...)")
    check_variant_flags(args, [args.family])
    check_run_flags(args, args.tasks)
    refuse_remove_unused_columns(training_args, "multimed train")
    refuse_lone_processes(training_args)
    return args, training_args


def refuse_lone_processes(training_args, error=ValueError) -> None:
    """Under ``torchrun`` (``WORLD_SIZE`` > 1) on a machine whose processes have no GPU, transformers leaves each
    process on its own (accelerate's state is not distributed without ``--use_cpu``): every one would train or score
    the whole run into the same ``--output_dir`` at once. Refused, naming ``--use_cpu`` (gloo)."""
    launched = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if launched > 1 and training_args.world_size == 1:
        raise error(f"launched as {launched} processes (WORLD_SIZE={launched}), but each would run alone "
                    f"(no GPU for them: transformers does not distribute CPU processes unless told), every one the "
                    f"whole run into the same --output_dir; add --use_cpu for data parallelism on CPUs (gloo), or "
                    f"run one process")


def refuse_several_processes(prog: str, error=ValueError, *,
                             does: str = "trains and scores its models in one process") -> None:
    """Commands that run in one process (the analyses, ``multimed build``, ``multimed federate``): under
    ``torchrun`` / ``accelerate launch`` (``WORLD_SIZE`` > 1) every process would run the whole command and write
    the same files at once. Refused, before any data is read."""
    launched = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if launched > 1:
        raise error(f"launched as {launched} processes (WORLD_SIZE={launched}): {prog} {does} (every process would "
                    f"write the same files); run it without torchrun or accelerate launch")


def parse_evaluate_args(argv: Sequence[str] | None = None, *, prog: str = "multimed evaluate"):
    """``(EvaluateArguments, TrainingArguments)``; the checkpoint may come first, positionally."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and not argv[0].startswith("-") and not argv[0].endswith(".json"):
        argv = ["--checkpoint", argv[0], *argv[1:]]
    parser = _parser(EvaluateArguments, prog)
    parser.usage = (f"{prog} CHECKPOINT --data DATA [--tasks T ...] [--split S ...] [--output_dir OUT] "
                    "[TrainingArguments flags]\n(CHECKPOINT: a run folder or Hub id; also --checkpoint CHECKPOINT)")
    parser.set_defaults(per_device_eval_batch_size=TRAINING_DEFAULTS["per_device_eval_batch_size"],
                        remove_unused_columns=False, report_to="none", dataloader_pin_memory=has_accelerator())
    for action in parser._actions:  # argparse's only handle on a parsed dataclass field's help
        if action.dest == "output_dir":
            action.help = ("where the results, metrics with CIs and predictions are written (default: CHECKPOINT-eval "
                           "beside a local checkpoint folder, RUN-checkpoint-N-eval for a checkpoint-N of RUN, "
                           "NAME-eval for a Hub id org/NAME)")
        elif action.dest == "seed":
            action.help = ("seed of the bootstrap CIs: where not given, the run's --seed (from its run_info.json) "
                           "where it records one, else this default")
    if len(argv) == 1 and argv[0].endswith(".json"):
        named = set(json.loads(Path(argv[0]).read_text()))
        parsed = parser.parse_json_file(argv[0])
    else:
        parsed = parser.parse_args_into_dataclasses(argv)  # first: --help prints this parser's usage
        named = flags_named(_parser(EvaluateArguments), argv)
    refuse_script_switches(named, "multimed evaluate scores the checkpoint on --split")
    refuse_evaluate_flags(named)
    refuse_lone_processes(parsed[1])
    if "output_dir" not in named:  # not transformers' ./trainer_output, which every evaluation would share
        parsed[1].output_dir = default_evaluation_dir(str(parsed[0].checkpoint))
    if "seed" not in named and run_seed(str(parsed[0].checkpoint)) is not None:  # the run's CIs, drawn alike
        parsed[1].seed = run_seed(str(parsed[0].checkpoint))
    return parsed


def default_evaluation_dir(checkpoint: str) -> str:
    """Where ``multimed evaluate CHECKPOINT`` writes without ``--output_dir``: beside a local checkpoint folder
    (``runs/mm`` -> ``runs/mm-eval``; ``.`` or ``runs/mm/.`` named by the folder they are, never a hidden ``.-eval``
    inside it), or ``NAME-eval`` for a Hub id ``org/NAME``."""
    local = Path(checkpoint).expanduser()
    if not local.exists():
        return checkpoint.rstrip("/").rsplit("/", 1)[-1] + "-eval"
    local = Path(os.path.normpath(local))
    if local.name in ("", ".."):  # "." or "..": the folder's own name
        local = local.resolve()
    if re.fullmatch(r"checkpoint-\d+", local.name):  # RUN-checkpoint-N-eval beside the run: inside it, Trainer's
        return f"{local.parent}-{local.name}-eval"     # rotation takes checkpoint-N-eval for a checkpoint, deletes it
    return f"{local}-eval"


def run_seed(checkpoint: str) -> int | None:
    """The ``--seed`` a local run folder (or one of its ``checkpoint-N``) was trained with, from its
    ``run_info.json``; None where none is recorded."""
    local = Path(checkpoint).expanduser()
    for folder in (local, local.parent):
        path = folder / "run_info.json"
        if path.is_file():
            try:
                seed = json.loads(path.read_text()).get("seed")
            except (OSError, ValueError, AttributeError):
                return None
            return seed if isinstance(seed, int) else None
    return None
