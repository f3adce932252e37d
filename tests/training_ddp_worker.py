"""One process of a distributed MultiMedTrainer run (launched by torchrun from test_training_distributed.py).

Trains a tiny 2-task model, evaluates it, and writes what the test checks to ``<out>/rank<k>.json``.
"""

import argparse
import hashlib
import json
import os
import sys

import torch
from transformers import TrainingArguments

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from training_tiny import brain_tumor, diabetic_retinopathy, tiny_model, tiny_processor  # noqa: E402

from multimed_hf.training.sampling import TaskSampling  # noqa: E402
from multimed_hf.training.trainer import MultiMedTrainer  # noqa: E402

TASKS = ["brain_tumor", "diabetic_retinopathy"]


class RecordingTrainer(MultiMedTrainer):
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, outputs = super().compute_loss(model, inputs, True, num_items_in_batch)
        if model.training:
            self.batches = getattr(self, "batches", [])
            self.batches.append([self.state.global_step, inputs["task"], inputs["row_index"].tolist(),
                                 float(outputs.loss.detach())])
        return (loss, outputs) if return_outputs else loss


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--logging_steps", type=int, default=2)
    args = parser.parse_args()
    train = {"brain_tumor": brain_tumor(12), "diabetic_retinopathy": diabetic_retinopathy(10)}
    evals = {"brain_tumor": brain_tumor(7, seed=5, prefix="bte"),
             "diabetic_retinopathy": diabetic_retinopathy(9, seed=6, prefix="dre")}
    training_args = TrainingArguments(
        output_dir=os.path.join(args.out, "run"), max_steps=args.steps, per_device_train_batch_size=3,
        per_device_eval_batch_size=2, learning_rate=3e-3, logging_steps=args.logging_steps, report_to=[], use_cpu=True,
        save_strategy="no", disable_tqdm=True, log_level="error", seed=0,
    )
    trainer = RecordingTrainer(model=tiny_model(TASKS, modality_dropout=0.2), args=training_args, train_datasets=train,
                               eval_datasets=evals, processor=tiny_processor(), loss_weighting="uncertainty",
                               sampling=TaskSampling("uniform"))
    train_loss = trainer.train().training_loss
    sampler = trainer.train_batch_sampler
    predictions = {t: trainer.predict_task(t, d) for t, d in evals.items()}
    metrics = trainer.evaluate()
    digest = hashlib.sha256()
    for name, value in sorted(trainer.model.state_dict().items()):
        digest.update(name.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    rank = trainer.args.process_index
    record = {
        "rank": rank,
        "world_size": trainer.args.world_size,
        "process_group_size": torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1,
        "digest": digest.hexdigest(),
        "log_variances": trainer.loss_weighting.log_variances.detach().tolist(),
        "log_history": trainer.state.log_history,
        "batches": trainer.batches,
        "schedule": sampler.schedule(0),
        "local_schedule": sampler.local_schedule(0),
        "predictions": {t: {"sample_ids": p.sample_ids, "rows": p.row_indices.tolist()}
                        for t, p in predictions.items()},
        "eval_sizes": {t: len(d) for t, d in evals.items()},
        "eval_ids": {t: list(d["sample_id"]) for t, d in evals.items()},
        "metrics": metrics,
        "train_loss": train_loss,
    }
    with open(os.path.join(args.out, f"rank{rank}.json"), "w") as handle:
        json.dump(record, handle)


if __name__ == "__main__":
    main()
