"""MIND's student against its teachers: parameters and forward time per batch, printed side by side with the ratio.

The teachers are ensembles of unimodal models of varying sizes (one narrow and one wide ViT for the X-ray, two BERTs
for the question); the student is one multimodal model with a head per modality (``auxiliary_heads=True``) and
narrow encoders. Random-init configs (no Hub access needed): sizes and speed depend on the architecture, not on the
weights. Each model runs on its own batch of the same rows (a teacher reads only its modality). Median of
``--repeats`` timed forward passes after a warm-up, in eval mode, no gradient.
"""

import argparse
import sys

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
from multimed_hf.training.balancing.mind import size_and_speed

__all__ = ["main"]

TASK = "med_vqa"
WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(200)]


def _rows(n: int, side: int) -> Dataset:
    rng = np.random.default_rng(0)
    features = task_features(get_task(TASK))
    data = {"sample_id": [str(i) for i in range(n)],
            "image": [PILImage.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)) for _ in range(n)],
            "modality": ["xray"] * n, "question": [" ".join(rng.choice(WORDS[5:], 24)) for _ in range(n)],
            "answer": ["yes"] * n}
    return Dataset.from_dict(data, features=Features({k: features[k] for k in data}))


def _model(modalities, width: int, layers: int, side: int, **config) -> MultiMedModel:
    encoders = {
        "xray": AutoConfig.for_model("vit", hidden_size=width, num_hidden_layers=layers, num_attention_heads=4,
                                     intermediate_size=4 * width, image_size=side, patch_size=16),
        "text": AutoConfig.for_model("bert", vocab_size=len(WORDS), hidden_size=width, num_hidden_layers=layers,
                                     num_attention_heads=4, intermediate_size=4 * width, max_position_embeddings=64),
    }
    cfg = MultiMedConfig.from_tasks([TASK], encoders={m: encoders[m] for m in modalities}, hidden_size=width,
                                    vocabularies={"answer": ["yes", "no"]}, modalities={TASK: list(modalities)},
                                    fusion_num_heads=4, **config)
    return MultiMedModel(cfg).eval()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=32, help="rows per batch")
    parser.add_argument("--side", type=int, default=64, help="image side in pixels")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--teacher-widths", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--teacher-layers", type=int, default=4)
    parser.add_argument("--student-width", type=int, default=64)
    parser.add_argument("--student-layers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (the README's figures: 1)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)  # on a shared machine the ratio moved 4x with the thread count
    torch.manual_seed(0)
    image = ViTImageProcessor(size={"height": args.side, "width": args.side})
    tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(WORDS)}, model_max_length=64)
    processor = MultiMedProcessor(processors={"image": ImageProcessor(image), "text": TextProcessor(tokenizer, 32)},
                                  vocabularies={"answer": ["yes", "no"]})
    rows = [dict(r) for r in _rows(args.rows, args.side)]
    models, batches = {}, {}
    for m in ("xray", "text"):
        for width in args.teacher_widths:
            name = f"teacher_{m}_{width}"
            models[name] = _model([m], width, args.teacher_layers, args.side)
            batches[name] = processor(rows, TASK, modalities=[m])
    models["student"] = _model(["xray", "text"], args.student_width, args.student_layers, args.side,
                               auxiliary_heads=True)
    batches["student"] = processor(rows, TASK, modalities=["xray", "text"])
    report = size_and_speed(models, batches, repeats=args.repeats)
    print(f"{'model':<22}{'parameters':>14}{'ms / batch':>14}   ({args.rows} rows, {torch.get_num_threads()} threads)")
    for name, r in report.items():
        print(f"{name:<22}{r['parameters']:>14,}{1000 * r['seconds_per_batch']:>14.2f}")
    teachers = [r for n, r in report.items() if n.startswith("teacher_")]
    params = sum(r["parameters"] for r in teachers)
    seconds = sum(r["seconds_per_batch"] for r in teachers)
    student = report["student"]
    print(f"{'teachers together':<22}{params:>14,}{1000 * seconds:>14.2f}")
    print(f"student / teachers: parameters {student['parameters'] / params:.3f}, "
          f"time {student['seconds_per_batch'] / seconds:.3f}")


if __name__ == "__main__":
    sys.exit(main())
