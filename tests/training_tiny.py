"""Tiny in-memory task datasets, model and processor for the training tests (fast on 2 CPU cores)."""

from __future__ import annotations

import numpy as np
import torch
from datasets import ClassLabel, Dataset, Features, Image, Value
from PIL import Image as PILImage
from transformers import AutoConfig, ViTImageProcessor

from multimed_hf.configuration_multimed import MultiMedConfig
from multimed_hf.modeling_multimed import MultiMedModel
from multimed_hf.processing_multimed import MultiMedProcessor
from multimed_hf.processors.image import ImageProcessor
from multimed_hf.tasks import get_task

SIDE = 8


def _image(level: int, rng: np.random.Generator) -> PILImage.Image:
    """A small RGB image whose brightness says the class (so a tiny model can learn it)."""
    base = 40 + 50 * level
    pixels = np.clip(base + rng.normal(0, 12, size=(SIDE, SIDE, 3)), 0, 255).astype(np.uint8)
    return PILImage.fromarray(pixels)


def brain_tumor(n: int, seed: int = 0, prefix: str = "bt") -> Dataset:
    """Rows of the brain_tumor task: one MRI image each, four classes."""
    rng = np.random.default_rng(seed)
    names = list(get_task("brain_tumor").label("tumor").names)
    labels = [int(i % len(names)) for i in range(n)]
    features = Features({"sample_id": Value("string"), "image": Image(), "modality": Value("string"),
                         "tumor": ClassLabel(names=names)})
    return Dataset.from_dict({"sample_id": [f"{prefix}-{i}" for i in range(n)],
                              "image": [_image(y, rng) for y in labels], "modality": ["mri"] * n,
                              "tumor": labels}, features=features)


def diabetic_retinopathy(n: int, seed: int = 1, prefix: str = "dr") -> Dataset:
    """Rows of diabetic_retinopathy: OCT rows (oct_finding) and fundus rows (dr_grade), two label columns."""
    rng = np.random.default_rng(seed)
    spec = get_task("diabetic_retinopathy")
    oct_names, grades = list(spec.label("oct_finding").names), list(spec.label("dr_grade").names)
    modality = ["oct" if i % 2 == 0 else "fundus" for i in range(n)]
    oct_label = [int(i % len(oct_names)) if m == "oct" else None for i, m in enumerate(modality)]
    grade = [int(i % len(grades)) if m == "fundus" else None for i, m in enumerate(modality)]
    images = [_image(o if o is not None else g, rng) for o, g in zip(oct_label, grade)]
    features = Features({"sample_id": Value("string"), "image": Image(), "modality": Value("string"),
                         "oct_finding": ClassLabel(names=oct_names), "dr_grade": ClassLabel(names=grades),
                         "patient_id": Value("string"), "eye": Value("string")})
    return Dataset.from_dict({"sample_id": [f"{prefix}-{i}" for i in range(n)], "image": images,
                              "modality": modality, "oct_finding": oct_label, "dr_grade": grade,
                              "patient_id": [f"p{i // 2}" for i in range(n)], "eye": ["left"] * n},
                             features=features)


DATASETS = {"brain_tumor": brain_tumor, "diabetic_retinopathy": diabetic_retinopathy}


def tiny_model(tasks, seed: int = 0, **config) -> MultiMedModel:
    vit = AutoConfig.for_model("vit", hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=24, image_size=SIDE, patch_size=4)
    encoders = {m: vit for m in ("mri", "oct", "fundus")}
    torch.manual_seed(seed)
    return MultiMedModel(MultiMedConfig.from_tasks(list(tasks), encoders=encoders, hidden_size=16, **config))


def tiny_processor() -> MultiMedProcessor:
    image = ViTImageProcessor(size={"height": SIDE, "width": SIDE}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    return MultiMedProcessor(processors={"image": ImageProcessor(image)})


def weights_digest(model: torch.nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().float().numpy().copy() for k, v in model.state_dict().items()}
