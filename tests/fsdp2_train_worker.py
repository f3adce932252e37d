"""One process of ``multimed train`` under FSDP2 on CPU (gloo), launched by torchrun from test_fsdp2.py.

accelerate 1.16 turns FSDP on only for accelerator devices: ``AcceleratorState.__init__`` sets ``DistributedType.FSDP``
and keeps the plugin for ``MULTI_GPU``/``MULTI_XPU``/... but not for ``MULTI_CPU`` (accelerate/state.py, the branch
around line 971), so on a CPU box Trainer falls back to DDP. This worker does for ``MULTI_CPU`` what that branch does
for a GPU (the state's type and plugin, and PartialState's type as line 998 does), then runs the real command: every
step after that (accelerate's ``fsdp2_prepare_model``, backward, clipping, the full-state-dict save, our evaluation)
is the code a GPU run goes through.

It also records the task of every training micro-batch this process ran, in order, to ``$FSDP2_TASK_LOG/rank<k>.json``
(the test compares the ranks: under FSDP every rank must train the same task in each micro-batch).
"""

import json
import os
import sys

from accelerate.state import PartialState
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

from multimed_hf.training.run import train_main
from multimed_hf.training.trainer import MultiMedTrainer

_create = MultiMedTrainer.create_accelerator_and_postprocess
_training_step = MultiMedTrainer.training_step
TASKS_RUN: list[str] = []


def create_accelerator_with_fsdp_on_cpu(self) -> None:
    _create(self)
    state = self.accelerator.state
    if self.args.fsdp_plugin_args is not None and state.distributed_type == DistributedType.MULTI_CPU:
        state.fsdp_plugin = FullyShardedDataParallelPlugin(**self.args.fsdp_plugin_args)
        state.distributed_type = DistributedType.FSDP
        PartialState._shared_state["distributed_type"] = DistributedType.FSDP
        self.is_fsdp_enabled = True


def recording_training_step(self, model, inputs, *args, **kwargs):
    TASKS_RUN.append(inputs["task"])
    return _training_step(self, model, inputs, *args, **kwargs)


if __name__ == "__main__":
    MultiMedTrainer.create_accelerator_and_postprocess = create_accelerator_with_fsdp_on_cpu
    MultiMedTrainer.training_step = recording_training_step
    code = train_main(sys.argv[1:])
    if os.environ.get("FSDP2_TASK_LOG"):
        with open(os.path.join(os.environ["FSDP2_TASK_LOG"], f"rank{os.environ['RANK']}.json"), "w") as handle:
            json.dump(TASKS_RUN, handle)
    sys.exit(code)
