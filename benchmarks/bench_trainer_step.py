"""Step time of MultiMedTrainer vs a bare PyTorch loop over the same model, data loader and batches.

Both sides read the same rows through the same `MultiTaskDataset` + `TaskBatchSampler` + collator, run forward,
backward, gradient clipping (max norm 1, the Trainer's default), the optimizer the Trainer picks from its arguments
(same class and settings) and a linear schedule; the Trainer adds what it adds (accelerate's loader and model
wrapping, callbacks, per-task loss logs, loss weighting, logging). Runs alternate between the sides. Printed:
steady-state step times (per-step wall times after warm-up, from step-end timestamps: median, and the fastest step,
which is robust to load from other processes) and whole runs timed with ``torch.utils.benchmark.Timer`` (set-up
included), each with the speed ratio bare / Trainer (goal >= 0.9).
"""

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from datasets import ClassLabel, Dataset, Features, Image, Value
from PIL import Image as PILImage
from torch.utils import benchmark
from torch.utils.data import DataLoader
from transformers import AutoConfig, TrainerCallback, TrainingArguments, ViTImageProcessor, get_scheduler

from multimed_hf.configuration_multimed import MultiMedConfig
from multimed_hf.modeling_multimed import MultiMedModel
from multimed_hf.processing_multimed import MultiMedProcessor
from multimed_hf.processors.image import ImageProcessor
from multimed_hf.tasks import get_task
from multimed_hf.training.data import ROW_INDEX, MultiTaskCollator, MultiTaskDataset
from multimed_hf.training.sampling import TaskBatchSampler, TaskSampling
from multimed_hf.training.trainer import MultiMedTrainer

__all__ = ["main"]


def _rows(task: str, n: int, side: int, seed: int) -> Dataset:
    """In-memory rows of an image task (PNG-encoded images, decoded when read, as from a built config)."""
    rng = np.random.default_rng(seed)
    spec = get_task(task)
    images = [PILImage.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)) for _ in range(n)]
    columns = {"sample_id": [f"{task}-{i}" for i in range(n)], "image": images}
    features = {"sample_id": Value("string"), "image": Image(), "modality": Value("string")}
    if task == "brain_tumor":
        columns.update(modality=["mri"] * n, tumor=rng.integers(0, 4, n).tolist())
        features["tumor"] = ClassLabel(names=list(spec.label("tumor").names))
    else:
        modality = ["oct" if i % 2 == 0 else "fundus" for i in range(n)]
        columns.update(modality=modality,
                       oct_finding=[int(rng.integers(0, 4)) if m == "oct" else None for m in modality],
                       dr_grade=[int(rng.integers(0, 5)) if m == "fundus" else None for m in modality])
        features["oct_finding"] = ClassLabel(names=list(spec.label("oct_finding").names))
        features["dr_grade"] = ClassLabel(names=list(spec.label("dr_grade").names))
    return Dataset.from_dict(columns, features=Features(features))


class _StepClock(TrainerCallback):
    def __init__(self):
        self.stamps = []

    def on_step_end(self, args, state, control, **kwargs):
        self.stamps.append(time.perf_counter())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hidden", type=int, default=128, help="ViT hidden size")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rows", type=int, default=160, help="rows per task")
    parser.add_argument("--steps", type=int, default=24, help="optimizer steps per run")
    parser.add_argument("--warmup", type=int, default=4, help="steps of each run left out of the step times")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each side, alternating")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default 1 on CPU: on a shared machine two OpenMP threads waiting for "
                             "each other made steps 50x slower, drowning the comparison)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    threads = args.threads if args.threads is not None else 1 if device.type == "cpu" else torch.get_num_threads()
    torch.set_num_threads(threads)
    tasks = ["brain_tumor", "diabetic_retinopathy"]
    vit = AutoConfig.for_model("vit", hidden_size=args.hidden, num_hidden_layers=args.layers, num_attention_heads=4,
                               intermediate_size=4 * args.hidden, image_size=args.image_size, patch_size=8)
    torch.manual_seed(0)
    initial = MultiMedModel(MultiMedConfig.from_tasks(tasks, encoders={m: vit for m in ("mri", "oct", "fundus")},
                                                      hidden_size=args.hidden, dropout=0.0))
    image = ViTImageProcessor(size={"height": args.image_size, "width": args.image_size}, image_mean=[0.5] * 3,
                              image_std=[0.5] * 3)
    processor = MultiMedProcessor(processors={"image": ImageProcessor(image)})
    train = {t: _rows(t, args.rows, args.image_size, seed=i) for i, t in enumerate(tasks)}
    sampling = TaskSampling("proportional", seed=0)
    lr = 1e-3
    work = Path(tempfile.mkdtemp(prefix="bench_trainer_"))

    training_args = TrainingArguments(
        output_dir=str(work), max_steps=args.steps, per_device_train_batch_size=args.batch, learning_rate=lr,
        lr_scheduler_type="linear", max_grad_norm=1.0, logging_steps=args.steps, save_strategy="no",
        report_to=[], disable_tqdm=True, log_level="error", use_cpu=device.type == "cpu", seed=0)
    optimizer_cls, optimizer_kwargs = MultiMedTrainer.get_optimizer_cls_and_kwargs(training_args)
    stamps = {}

    def trainer_run():
        clock = _StepClock()
        trainer = MultiMedTrainer(model=copy.deepcopy(initial), args=training_args, train_datasets=train,
                                  processor=processor, sampling=sampling, callbacks=[clock])
        trainer.train()
        stamps["trainer"] = clock.stamps

    def bare_run():
        model = copy.deepcopy(initial).to(device).train()
        data = MultiTaskDataset(train, processor)
        sampler = TaskBatchSampler(data.sizes, sampling, batch_size=args.batch)
        loader = DataLoader(data, batch_sampler=sampler, collate_fn=MultiTaskCollator(processor))
        optimizer = optimizer_cls(model.parameters(), **optimizer_kwargs)
        schedule = get_scheduler("linear", optimizer, num_warmup_steps=0, num_training_steps=args.steps)
        times, step, epoch = [], 0, 0
        while step < args.steps:
            sampler.set_epoch(epoch)
            for batch in loader:
                batch.pop(ROW_INDEX)
                batch = {k: _to(v, device) for k, v in batch.items()}
                loss = model(**batch).loss
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                schedule.step()
                optimizer.zero_grad()
                if device.type == "cuda":
                    torch.cuda.synchronize()
                times.append(time.perf_counter())
                step += 1
                if step == args.steps:
                    break
            epoch += 1
        stamps["bare"] = times

    step_times = {"bare": [], "trainer": []}
    whole = {"bare": [], "trainer": []}
    for _ in range(args.repeats):  # alternate, so drifting machine load hits both alike
        for name, run in (("bare", bare_run), ("trainer", trainer_run)):
            timer = benchmark.Timer(stmt="run()", globals={"run": run}, num_threads=torch.get_num_threads(),
                                    label="whole run", description=name)
            whole[name].append(timer.timeit(1).median)
            step_times[name] += list(np.diff(stamps[name][args.warmup:]))
    print(f"device {device}, torch threads {torch.get_num_threads()}, ViT {args.hidden} x {args.layers} layers, image "
          f"{args.image_size}, batch {args.batch}, 2 tasks, {args.steps} steps per run, {args.repeats} runs per side, "
          f"optimizer {optimizer_cls.__name__} {dict((k, v) for k, v in optimizer_kwargs.items() if k != 'lr')}")
    print(f"{'':<36} {'bare loop':>10} {'MultiMedTrainer':>16} {'speed ratio (bare/ours)':>24}")
    rows = [("step time, median after warm-up ms", statistics.median, 1e3, step_times),
            ("step time, fastest ms", min, 1e3, step_times),
            ("whole run incl. set-up (Timer) s", statistics.median, 1.0, whole)]
    for label, summary, scale, table in rows:
        bare, ours = summary(table["bare"]) * scale, summary(table["trainer"]) * scale
        print(f"{label:<36} {bare:10.2f} {ours:16.2f} {bare / ours:24.3f}")
    print("goal: speed ratio >= 0.9", file=sys.stderr)


def _to(value, device):
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {k: _to(v, device) for k, v in value.items()}
    return value


if __name__ == "__main__":
    main()
