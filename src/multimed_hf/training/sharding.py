"""FSDP2 for MultiMedModel: the blocks to shard (``_no_split_modules``), ``fully_shard`` by them, what got sharded."""

from __future__ import annotations

from typing import Any

from torch import nn

__all__ = ["shard_block_classes", "fully_shard_blocks", "sharding_info", "check_fsdp_batches",
           "FSDPLayoutError"]


class FSDPLayoutError(ValueError):
    """A run that FSDP cannot shard as asked: ranks would run different modules in the same step."""


def _root(model: nn.Module) -> nn.Module:
    """The module that carries ``_no_split_modules`` (``model``, or the model under a PEFT / DDP wrapper)."""
    for module in model.modules():
        if getattr(module, "_no_split_modules", None) is not None:
            return module
    return model


def shard_block_classes(model: nn.Module) -> list[str]:
    """The class names of ``model._no_split_modules`` that ``model`` really instantiates (sorted): its fusion
    ``TransformerBlock`` and its Hub encoders' layers (``ViTLayer``, ``BertLayer``, ...). Each instance becomes one
    FSDP unit; a name the model does not hold is left out (accelerate refuses a name it cannot find)."""
    names = set(getattr(_root(model), "_no_split_modules", None) or ())
    present = {type(m).__name__ for m in model.modules()}
    return sorted(names & present)


def fully_shard_blocks(model: nn.Module, *, mesh=None, reshard_after_forward: bool = True, mp_policy=None,
                       offload_policy=None) -> list[str]:
    """Shard ``model`` in place with torch's FSDP2 ``fully_shard``: every module of ``shard_block_classes(model)``
    (innermost first), then the root (projections, fusion, heads and what is left). Needs an initialised process
    group (any backend; gloo on CPU). Returns the qualified names of the sharded blocks (``""`` is the root).

    Every rank must then run the same modules in each step (``check_fsdp_batches``): a block runs an all-gather in
    its forward, and the gradients of the parameters used are reduce-scattered together at the end of backward."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, OffloadPolicy, fully_shard

    kwargs = {"mesh": mesh, "reshard_after_forward": reshard_after_forward,
              "mp_policy": mp_policy or MixedPrecisionPolicy(), "offload_policy": offload_policy or OffloadPolicy()}
    classes = set(shard_block_classes(model))
    blocks = [(name, m) for name, m in model.named_modules() if name and type(m).__name__ in classes]
    for name, module in sorted(blocks, key=lambda item: -item[0].count(".")):  # children before their parents
        fully_shard(module, **kwargs)
    fully_shard(model, **kwargs)
    return [name for name, _ in blocks] + [""]


def sharding_info(model: nn.Module) -> dict[str, Any]:
    """How ``model`` is sharded, for ``run_info.json``: ``fsdp2`` (the root is an ``FSDPModule``), the FSDP units
    (qualified names, ``""`` the root), the parameters held as ``DTensor`` shards out of all, and the mesh size.
    The units are resharded first (``FSDPModule.reshard``): a root kept unsharded after its last forward (accelerate
    prepares the root with ``reshard_after_forward=False``) holds plain tensors until then."""
    from torch.distributed.fsdp import FSDPModule
    from torch.distributed.tensor import DTensor

    modules = [(name, m) for name, m in model.named_modules() if isinstance(m, FSDPModule)]
    for _, module in modules:
        module.reshard()
    params = list(model.parameters())
    dtensors = [p for p in params if isinstance(p, DTensor)]
    units = [name for name, _ in modules]
    mesh = dtensors[0].device_mesh.size() if dtensors else 1
    return {"fsdp2": isinstance(model, FSDPModule), "fsdp_units": units, "dtensor_parameters": len(dtensors),
            "parameters": len(params), "mesh_size": int(mesh)}


def check_fsdp_batches(tasks_modalities: dict[str, tuple[str, ...]], world_size: int, *,
                       lockstep: bool = False) -> None:
    """Refuse a sharded run whose ranks could run different modules in one step: with FSDP every rank must call
    every block's forward together (all-gather) and produce gradients for the same parameters (reduce-scatter of
    the used ones only: a mismatch hangs or mixes tensors).

    Several tasks are fine with ``lockstep`` (`TaskSampling.lockstep`: every rank trains the same task in each step,
    which the trainer turns on under FSDP), refused without it (ranks would hold different tasks, heads and
    encoders). A task whose rows may hold different modalities is always refused: a rank whose batch lacks one of
    them skips that encoder, which no task schedule can prevent.

    Args:
        tasks_modalities: task -> the modalities its rows may hold.
        world_size: the processes sharing the model (nothing is refused below 2).
        lockstep: the task batch sampler (or the lockstep stream) gives every rank the same task in each step.
    """
    if world_size < 2:
        return
    if len(tasks_modalities) > 1 and not lockstep:
        raise FSDPLayoutError(
            f"FSDP over {world_size} processes with several tasks {sorted(tasks_modalities)} without lockstep "
            f"sampling: ranks would train different tasks in one step, so their heads and encoders differ and FSDP's "
            f"collectives would not match; turn lockstep sampling on (TaskSampling(lockstep=True), --task_lockstep; "
            f"the trainer does so under FSDP, streamed data too), which gives every rank the same task in each step, "
            f"or train several tasks with DDP")
    for task, modalities in tasks_modalities.items():
        if len(modalities) > 1:
            raise FSDPLayoutError(
                f"FSDP over {world_size} processes for task {task!r} reading modalities {list(modalities)}: its rows "
                f"may lack one of them, and a rank whose batch does skips that encoder, so FSDP's collectives would "
                f"not match; shard runs in which every task reads one modality (e.g. --family unimodal or "
                f"unimodal_multitask), or use DDP")
