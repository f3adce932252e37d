"""A synthetic three-modality task for the analysis tests: an MRI image that carries the label, an EEG epoch and a
clinical text that carry none; some rows lack the text, some the EEG. Registered only inside ``trio_task()``."""

from __future__ import annotations

import contextlib
import dataclasses

import numpy as np
import pytest
from datasets import ClassLabel, Dataset, Features, Image, List, Value
from PIL import Image as PILImage

from multimed_hf import tasks
from multimed_hf.tasks import ColumnSpec, LabelSpec, TaskSpec

TASK = "zz_trio"
MODALITIES = ("mri", "eeg", "text")
CARRIER = "mri"
CHANNELS = ["C3", "Cz", "C4"]
SFREQ = 64.0
SIDE = 8
WORDS = ["patient", "reports", "mild", "fatigue", "headache", "since", "monday", "no", "fever", "noted", "today"]

SPEC = TaskSpec(
    name=TASK, title="synthetic trio", sample="one visit", modalities=MODALITIES,
    problem_type="single_label_classification", labels=(LabelSpec("finding", "class", ("absent", "present")),),
    metrics=("accuracy",), grouping_key="visit",
    inputs=(ColumnSpec("image", "image", modality="image"), ColumnSpec("modality", "string"),
            ColumnSpec("eeg", "array2d_float32", modality="eeg"), ColumnSpec("sfreq", "float32"),
            ColumnSpec("channel_names", "list_string"), ColumnSpec("text", "string", modality="text")),
    metadata=(ColumnSpec("site", "string"), ColumnSpec("sex", "string")),
)


@contextlib.contextmanager
def trio_task():
    """The registry with ``zz_trio`` added, restored afterwards."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tasks, "_TASKS", dict(tasks._TASKS))
        tasks.register_task(dataclasses.replace(SPEC))
        yield SPEC


def trio_rows(n: int, seed: int = 0, prefix: str = "r", sites=("north", "south", "east")) -> Dataset:
    """``n`` rows; the label is the image's brightness; every fourth row lacks the text, every seventh its EEG (the
    epoch, its sampling rate and channel names)."""
    rng = np.random.default_rng(seed)
    labels = [int(i % 2) for i in range(n)]
    images, eegs, texts = [], [], []
    for i, y in enumerate(labels):
        base = 60 + 120 * y
        pixels = np.clip(base + rng.normal(0, 10, size=(SIDE, SIDE, 3)), 0, 255).astype(np.uint8)
        images.append(PILImage.fromarray(pixels))
        eeg = rng.normal(0, 1, size=(len(CHANNELS), 64)).astype(np.float32).tolist()
        eegs.append(None if i % 7 == 5 else eeg)
        texts.append(None if i % 4 == 3 else " ".join(rng.choice(WORDS, size=6)))
    features = Features({
        "sample_id": Value("string"), "image": Image(), "modality": Value("string"),
        "eeg": List(List(Value("float32"))), "sfreq": Value("float32"), "channel_names": List(Value("string")),
        "text": Value("string"), "finding": ClassLabel(names=["absent", "present"]), "site": Value("string"),
        "sex": Value("string"),
    })
    return Dataset.from_dict({
        "sample_id": [f"{prefix}-{i}" for i in range(n)], "image": images, "modality": ["mri"] * n, "eeg": eegs,
        "sfreq": [None if e is None else SFREQ for e in eegs],
        "channel_names": [None if e is None else CHANNELS for e in eegs], "text": texts, "finding": labels,
        "site": [sites[i % len(sites)] for i in range(n)], "sex": ["F" if i % 5 < 2 else "M" for i in range(n)],
    }, features=features)


def trio_splits(n_train: int = 48, n_test: int = 24) -> dict:
    return {"train": trio_rows(n_train, 0, "tr"), "validation": trio_rows(8, 1, "va"),
            "test": trio_rows(n_test, 2, "te")}


#: Training flags small enough for 2 shared CPU cores (the small encoder preset, a few dozen steps).
QUICK = dict(max_steps=30, per_device_train_batch_size=16, learning_rate=3e-3, eval_strategy="no",
             save_strategy="no", logging_strategy="no", disable_tqdm=True, report_to="none", use_cpu=True, seed=0,
             warmup_steps=0, lr_scheduler_type="constant", weight_decay=0.0, log_level="error")


def quick_args(output_dir, **overrides):
    """``(MultiMedArguments, TrainingArguments)`` of a quick run on the synthetic task."""
    from multimed_hf.training.arguments import MultiMedArguments, make_training_arguments

    args = MultiMedArguments(data="synthetic-trio", tasks=[TASK], family="multimodal", encoders="small",
                             bootstrap_samples=20, **{k: v for k, v in overrides.items()
                                                      if k in MultiMedArguments.__dataclass_fields__})
    targs = make_training_arguments(output_dir, family="multimodal", encoders="small",
                                    **{**QUICK, **{k: v for k, v in overrides.items()
                                                   if k not in MultiMedArguments.__dataclass_fields__}})
    return args, targs
