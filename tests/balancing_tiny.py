"""A tiny two-modality task for the balancing and distillation tests: med_vqa rows holding an X-ray and a question.

The answer ("yes" / "no") is written in the image (bright = yes) and, where asked, in the question too; otherwise the
question's words are drawn at random, so the image alone is predictive.
"""

from __future__ import annotations

import numpy as np
import torch
from datasets import Dataset, Features
from PIL import Image as PILImage
from transformers import AutoConfig, BertTokenizer, ViTImageProcessor

from multimed_hf.configuration_multimed import MultiMedConfig
from multimed_hf.data.features import task_features
from multimed_hf.modeling_multimed import MultiMedModel
from multimed_hf.processing_multimed import MultiMedProcessor
from multimed_hf.processors.image import ImageProcessor
from multimed_hf.processors.text import TextProcessor
from multimed_hf.tasks import get_task

TASK = "med_vqa"
MODALITIES = ["xray", "text"]
ANSWERS = ["yes", "no"]
SIDE = 8
WORDS = ["is", "there", "a", "lesion", "here", "left", "right", "lung", "shown", "seen"]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
#: Words that say the answer in the question (only when ``text_says_answer``).
ANSWER_WORDS = {0: "bright", 1: "dark"}


def tokenizer() -> BertTokenizer:
    vocab = {t: i for i, t in enumerate(SPECIAL + WORDS + list(ANSWER_WORDS.values()))}
    return BertTokenizer(vocab=vocab, do_lower_case=True, model_max_length=16)


def vqa_rows(n: int, seed: int = 0, *, image_says_answer: bool = True, text_says_answer: bool = False,
             flip: float = 0.0, prefix: str = "q") -> Dataset:
    """``n`` med_vqa rows (X-ray + question, closed answers). ``flip``: the share of labels drawn at random."""
    rng = np.random.default_rng(seed)
    answers = rng.integers(0, 2, size=n)
    labels = np.where(rng.random(n) < flip, rng.integers(0, 2, size=n), answers)
    images, questions = [], []
    for a in answers:
        level = (220 if a == 0 else 35) if image_says_answer else int(rng.integers(35, 221))
        pixels = np.clip(level + rng.normal(0, 10, size=(SIDE, SIDE, 3)), 0, 255).astype(np.uint8)
        images.append(PILImage.fromarray(pixels))
        words = list(rng.choice(WORDS, size=4))
        if text_says_answer:
            words[int(rng.integers(0, 4))] = ANSWER_WORDS[int(a)]
        questions.append(" ".join(words))
    data = {
        "sample_id": [f"{prefix}-{i}" for i in range(n)], "image": images, "modality": ["xray"] * n,
        "question": questions, "answer": [ANSWERS[int(y)] for y in labels], "answer_type": ["closed"] * n,
        "question_type": ["presence"] * n, "organ": ["chest"] * n, "language": ["en"] * n,
    }
    features = task_features(get_task(TASK))
    return Dataset.from_dict(data, features=Features({k: features[k] for k in data}))


def encoders(width: int = 16) -> dict:
    vit = AutoConfig.for_model("vit", hidden_size=width, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=width + 8, image_size=SIDE, patch_size=4)
    bert = AutoConfig.for_model("bert", vocab_size=len(SPECIAL) + len(WORDS) + 2, hidden_size=width,
                                num_hidden_layers=1, num_attention_heads=2, intermediate_size=width + 8,
                                max_position_embeddings=32)
    return {"xray": vit, "text": bert}


def vqa_config(modalities=MODALITIES, width: int = 16, hidden_size: int = 16, **config) -> MultiMedConfig:
    chosen = {m: e for m, e in encoders(width).items() if m in modalities}
    return MultiMedConfig.from_tasks([TASK], encoders=chosen, hidden_size=hidden_size, fusion_num_heads=2,
                                     vocabularies={"answer": ANSWERS}, modalities={TASK: list(modalities)},
                                     dropout=0.0, **config)


def vqa_model(modalities=MODALITIES, seed: int = 0, **config) -> MultiMedModel:
    torch.manual_seed(seed)
    return MultiMedModel(vqa_config(modalities, **config))


def vqa_processor() -> MultiMedProcessor:
    image = ViTImageProcessor(size={"height": SIDE, "width": SIDE}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    return MultiMedProcessor(processors={"image": ImageProcessor(image), "text": TextProcessor(tokenizer(), 12)},
                             vocabularies={"answer": ANSWERS})


def write_built_folder(root, datasets) -> str:
    """A folder ``load_dataset(root, task)`` reads like a built MultiMed folder: ``{task: {split: Dataset}}`` as
    Parquet shards under ``<task>/`` and the README's ``configs:`` and ``dataset_info:`` (features) naming them (no
    build_info.json: no sources)."""
    from pathlib import Path

    from datasets.info import DatasetInfo, DatasetInfosDict
    from huggingface_hub import DatasetCardData

    root = Path(root)
    configs, infos = [], {}
    for task, splits in datasets.items():
        files = []
        for split, dataset in splits.items():
            (root / task).mkdir(parents=True, exist_ok=True)
            dataset.to_parquet(str(root / task / f"{split}-00000.parquet"))
            files.append({"split": split, "path": f"{task}/{split}-*.parquet"})
        configs.append({"config_name": task, "data_files": files})
        infos[task] = DatasetInfo(features=next(iter(splits.values())).features, config_name=task)
    card = DatasetCardData(configs=configs)
    DatasetInfosDict(infos).to_dataset_card_data(card)
    (root / "README.md").write_text(f"---\n{card.to_yaml()}\n---\n")
    return str(root)
