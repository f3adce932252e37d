"""One process of a distributed streamed MultiMedTrainer run (launched by torchrun from test_training_streaming.py).

Streams each task's training rows from a local folder (``load_dataset(..., streaming=True)``), shards them with
``split_dataset_by_node``, trains a tiny 2-task model and writes what the test checks to ``<out>/rank<k>.json``.
"""

import argparse
import hashlib
import json
import os
import sys

import torch
from transformers import TrainingArguments

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from test_training_streaming import QUICK, SIZES, streams  # noqa: E402
from training_tiny import tiny_model, tiny_processor  # noqa: E402

from multimed_hf.training.data import MultiTaskCollator  # noqa: E402
from multimed_hf.training.sampling import TaskSampling  # noqa: E402
from multimed_hf.training.trainer import MultiMedTrainer  # noqa: E402

TASKS = ["brain_tumor", "diabetic_retinopathy"]


class RecordingCollator(MultiTaskCollator):
    """Keeps the sample ids of every training batch this process collated."""

    def __init__(self, processor):
        super().__init__(processor)
        self.sample_ids = []

    def __call__(self, items):
        self.sample_ids += [item["sample_id"] for item in items]
        return super().__call__(items)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    training_args = TrainingArguments(
        output_dir=os.path.join(args.out, "run"), max_steps=args.steps, per_device_train_batch_size=3,
        learning_rate=3e-3, logging_steps=2, report_to=[], use_cpu=True, save_strategy="no", disable_tqdm=True,
        log_level="error", seed=0,
    )
    rank, world = training_args.process_index, training_args.world_size
    from pathlib import Path

    processor = tiny_processor()
    collator = RecordingCollator(processor)
    trainer = MultiMedTrainer(model=tiny_model(TASKS), args=training_args, processor=processor,
                              train_datasets=streams(Path(args.data), rank, world), sampling=TaskSampling("uniform"),
                              streaming_options={**QUICK, "sizes": SIZES}, data_collator=collator)
    trainer.train()
    digest = hashlib.sha256()
    for name, value in sorted(trainer.model.state_dict().items()):
        digest.update(name.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    record = {
        "rank": rank, "world_size": world,
        "process_group_size": torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1,
        "digest": digest.hexdigest(), "sample_ids": collator.sample_ids,
        "log_history": trainer.state.log_history,
    }
    with open(os.path.join(args.out, f"rank{rank}.json"), "w") as f:
        json.dump(record, f)
    if torch.distributed.is_initialized():  # gloo's threads end here, not in interpreter teardown (an abort)
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
