"""A tiny synthetic zero-shot world: images whose colour and brightness are two attributes, classes and captions that
describe them in words, a tiny ViT + tiny BERT model with a shared image encoder for figures."""

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
from multimed_hf.processors.text import TextProcessor
from multimed_hf.tasks import get_task
from multimed_hf.training.encoder_presets import small_text_tokenizer

SIDE = 8
COLOURS = {"red": 0, "green": 1, "blue": 2}
LEVELS = {"dark": 0.35, "bright": 1.0}
#: brain_tumor's classes as (brightness, colour): two attributes, so a held-out class is a new pair of seen words.
CLASS_ATTRIBUTES = {"glioma": ("dark", "red"), "meningioma": ("bright", "red"), "no_tumor": ("bright", "blue"),
                    "pituitary": ("dark", "blue")}
CLASS_TEXTS = {name: f"{b} {c}" for name, (b, c) in CLASS_ATTRIBUTES.items()}


def image(brightness: str, colour: str, rng: np.random.Generator) -> PILImage.Image:
    """Left half: the colour (one channel lit); right half: the brightness (a grey level): each attribute has its own
    patches, so an unseen pair of attributes is a new combination of seen patches."""
    pixels = np.full((SIDE, SIDE, 3), 30.0)
    pixels[:, : SIDE // 2, COLOURS[colour]] = 220.0
    pixels[:, SIDE // 2:, :] = 255 * LEVELS[brightness]
    pixels = np.clip(pixels + rng.normal(0, 10, size=pixels.shape), 0, 255).astype(np.uint8)
    return PILImage.fromarray(pixels)


def tumour_rows(n: int, seed: int, prefix: str) -> Dataset:
    rng = np.random.default_rng(seed)
    names = list(get_task("brain_tumor").label("tumor").names)
    labels = [i % len(names) for i in range(n)]
    features = Features({"sample_id": Value("string"), "image": Image(), "modality": Value("string"),
                         "tumor": ClassLabel(names=names), "group_id": Value("string")})
    return Dataset.from_dict({
        "sample_id": [f"{prefix}-{i}" for i in range(n)],
        "image": [image(*CLASS_ATTRIBUTES[names[y]], rng) for y in labels], "modality": ["mri"] * n,
        "tumor": labels, "group_id": [f"{prefix}-g{i // 2}" for i in range(n)]}, features=features)


def pair_rows(n: int, seed: int, combos) -> Dataset:
    """Image-caption pairs (``pmc_pairs`` rows) over the (brightness, colour) ``combos``, captions worded apart
    from the class texts."""
    rng = np.random.default_rng(seed)
    combos = list(combos)
    chosen = [combos[i % len(combos)] for i in range(n)]
    features = Features({"sample_id": Value("string"), "image": Image(), "modality": Value("string"),
                         "caption": Value("string")})
    return Dataset.from_dict({
        "sample_id": [f"pair-{i}" for i in range(n)], "image": [image(b, c, rng) for b, c in chosen],
        "modality": ["figure"] * n, "caption": [f"a {c} figure , {b}" for b, c in chosen]}, features=features)


def processor() -> MultiMedProcessor:
    vision = ViTImageProcessor(size={"height": SIDE, "width": SIDE}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    tokenizer = small_text_tokenizer(lambda: list(CLASS_TEXTS.values()))
    return MultiMedProcessor(processors={"image": ImageProcessor(vision), "text": TextProcessor(tokenizer,
                                                                                               max_length=12)})


def model(processor: MultiMedProcessor, seed: int = 0) -> MultiMedModel:
    vit = AutoConfig.for_model("vit", hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=48, image_size=SIDE, patch_size=4)
    bert = AutoConfig.for_model("bert", hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=48, vocab_size=len(processor.processor_for("text").tokenizer),
                                max_position_embeddings=16)
    encoders = {"mri": vit, "figure": {"kind": "shared", "with": "mri"}, "text": {"kind": "auto", "config":
                                                                                    bert.to_dict(),
                                                                                    "pooling": "mean"}}
    torch.manual_seed(seed)
    config = MultiMedConfig.from_tasks(["brain_tumor"], encoders=encoders, hidden_size=32, fusion_method="mean",
                                       fusion_num_heads=2, dropout=0.0)
    return MultiMedModel(config)


#: disease (a multilabel task) in the same world: four of its names, each row one present, drawn like brain_tumor's.
DISEASE_ATTRIBUTES = {"glioma": ("dark", "red"), "meningioma": ("bright", "red"), "normal": ("bright", "blue"),
                      "pituitary_tumor": ("dark", "blue")}
DISEASE_TEXTS = {name: f"{b} {c}" for name, (b, c) in DISEASE_ATTRIBUTES.items()}


def disease_rows(n: int, seed: int, prefix: str) -> Dataset:
    """Rows of the multilabel ``disease`` task: an MRI image, one present name among ``DISEASE_ATTRIBUTES`` and those
    four names known for the row's source (``label_mask``; the other 34 are unknown, neither present nor absent)."""
    from multimed_hf.data.features import task_features

    rng = np.random.default_rng(seed)
    names = list(DISEASE_ATTRIBUTES)
    chosen = [names[i % len(names)] for i in range(n)]
    features = task_features(get_task("disease"))
    data = {"sample_id": [f"{prefix}-{i}" for i in range(n)], "source": ["tiny"] * n,
            "group_id": [f"{prefix}-g{i}" for i in range(n)],
            "image": [image(*DISEASE_ATTRIBUTES[c], rng) for c in chosen], "text": [None] * n, "modality": ["mri"] * n,
            "diseases": [[c] for c in chosen], "label_mask": [names] * n}
    return Dataset.from_dict(data, features=Features({k: features[k] for k in data}))
