"""One process of a 2-process FSDP2 run on CPU (gloo), launched by torchrun from test_fsdp2.py.

Shards a tiny two-task MultiMedModel (brain_tumor on MRI, diabetic_retinopathy on its OCT rows) with
``fully_shard_blocks`` (one FSDP unit per ``_no_split_modules`` block) and trains it a few SGD steps of two
micro-batches each (gradient accumulation, gradient sync off on the first as accelerate's ``no_sync`` does), in
lockstep: every rank trains the same task in each micro-batch, on its half of the global batch; the tasks of a step
may differ, so a step's first micro-batch can use units that its last one does not. An unsharded copy trains on the
whole batches in the same process; both runs' losses and weights (the sharded ones gathered) go to
``<out>/rank<k>.json``.
"""

import argparse
import copy
import json
import os
import sys

import torch
import torch.distributed as dist

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from training_tiny import brain_tumor, diabetic_retinopathy, tiny_model, tiny_processor  # noqa: E402

from multimed_hf.training.data import ROW_INDEX, MultiTaskCollator, MultiTaskDataset  # noqa: E402
from multimed_hf.training.sharding import fully_shard_blocks, sharding_info  # noqa: E402

TASKS = ("brain_tumor", "diabetic_retinopathy")
#: The tasks of each optimizer step's micro-batches: a unit used only by a first micro-batch (the MRI encoder in
#: step 0, the OCT encoder in step 1) must still get its accumulated gradient reduced at the step's end.
STEP_TASKS = (("brain_tumor", "diabetic_retinopathy"), ("diabetic_retinopathy", "brain_tumor"),
              ("brain_tumor", "brain_tumor"))


def batches(rows: int, batch_size: int):
    """The global micro-batches of ``STEP_TASKS``, ``batch_size`` rows each (the same in every process)."""
    oct_rows = diabetic_retinopathy(2 * rows).filter(lambda row: row["modality"] == "oct")  # one modality
    data = MultiTaskDataset({"brain_tumor": brain_tumor(rows), "diabetic_retinopathy": oct_rows}, tiny_processor(),
                            modalities={"diabetic_retinopathy": ("oct",)})
    collate = MultiTaskCollator(data.processor)
    generator = torch.Generator().manual_seed(1)
    out = []
    for tasks in STEP_TASKS:
        step = []
        for task in tasks:
            index = (torch.randperm(data.sizes[task], generator=generator)[:batch_size] + data.offsets[task]).tolist()
            step.append((index, collate([data[i] for i in index])))
        out.append(step)
    return data, collate, out


def train(model, optimizer, steps, sharded: bool):
    """SGD steps over micro-batches (loss / micro-batches, gradients summed); the micro-batches' losses."""
    losses = []
    for micro_batches in steps:
        for i, batch in enumerate(micro_batches):
            if sharded:  # what accelerate's no_sync does for FSDP2 on all but the last micro-batch
                model.set_requires_gradient_sync(i == len(micro_batches) - 1)
            batch = {k: v for k, v in batch.items() if k != ROW_INDEX}
            loss = model(**batch).loss
            (loss / len(micro_batches)).backward()
            losses.append(float(loss.detach()))
        optimizer.step()
        optimizer.zero_grad()
    return losses


def sgd(model):
    return torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)


def full_weights(model) -> dict[str, list]:
    from torch.distributed.tensor import DTensor

    return {name: (p.full_tensor() if isinstance(p, DTensor) else p).detach().flatten().tolist()
            for name, p in model.named_parameters()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    batch_size = 4 * world
    data, collate, steps = batches(16, batch_size)
    # fusion_method="attention": the fusion's TransformerBlock is a block too; the fundus encoder is built but never
    # run (diabetic_retinopathy reads OCT only here), so its blocks are sharded and stay unused on every rank
    model = tiny_model(TASKS, dropout=0.0, fusion_method="attention")
    reference = copy.deepcopy(model)
    units = fully_shard_blocks(model)
    info = sharding_info(model)
    shards = {name: list(p.to_local().shape) for name, p in model.named_parameters()}
    # each rank: its own share of the rows of every global batch; FSDP averages the gradients over ranks
    local = [[collate([data[i] for i in index[rank::world]]) for index, _ in step] for step in steps]
    # SGD, not Adam: the key biases get an exactly-zero gradient (softmax ignores them), i.e. rounding noise that
    # Adam's normalisation blows up to lr-sized steps (2e-4 apart after 3 steps at lr 1e-2, here)
    sharded_losses = train(model, sgd(model), local, sharded=True)
    reference_losses = train(reference, sgd(reference), [[b for _, b in step] for step in steps], sharded=False)
    record = {
        "rank": rank, "world_size": world, "units": units, "info": info, "shards": shards,
        "full_shapes": {name: list(p.shape) for name, p in reference.named_parameters()},
        "sharded_losses": sharded_losses, "reference_losses": reference_losses,
        "weights": full_weights(model), "reference_weights": full_weights(reference),
        "rows": [index[rank::world] for step in steps for index, _ in step],
        "tasks": [data.task_of(index[0]) for step in steps for index, _ in step],
    }
    with open(os.path.join(args.out, f"rank{rank}.json"), "w") as handle:
        json.dump(record, handle)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
