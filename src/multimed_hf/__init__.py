"""multimed_hf: MultiMed (Mo & Liang, 2024) as Hugging Face datasets, evaluate metrics and a transformers model.

``import multimed_hf`` stays light: the public names below are imported on first use (PEP 562, the idea of
transformers' ``_LazyModule``), so the registry and the command line start without torch or transformers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from multimed_hf._lazy import lazy_attributes

__version__ = "0.1.0"

#: Public name -> the module that defines it.
_LAZY = {
    # the task registry
    "get_task": "multimed_hf.tasks",
    "list_tasks": "multimed_hf.tasks",
    "register_task": "multimed_hf.tasks",
    "get_source": "multimed_hf.tasks",
    # building, finding and pushing configs
    "build_dataset": "multimed_hf.api",
    "detect_sources": "multimed_hf.api",
    "push_dataset": "multimed_hf.data.push",
    # the model and its processor
    "MultiMedConfig": "multimed_hf.configuration_multimed",
    "MultiMedPreTrainedModel": "multimed_hf.modeling_multimed",
    "MultiMedModel": "multimed_hf.modeling_multimed",
    "MultiMedOutput": "multimed_hf.modeling_multimed",
    "MultiMedProcessor": "multimed_hf.processing_multimed",
    "decode_outputs": "multimed_hf.modeling_multimed",
    # metrics
    "compute_task_metrics": "multimed_hf.metrics",
    "compute_output_metrics": "multimed_hf.metrics",
    # training, evaluation, Table 1
    "MultiMedTrainer": "multimed_hf.training",
    "train_model": "multimed_hf.training",
    "evaluate_checkpoint": "multimed_hf.training",
    "run_benchmark": "multimed_hf.training",
    "assemble": "multimed_hf.training",
}

__all__ = ["__version__", *_LAZY]

if TYPE_CHECKING:  # for type checkers and IDEs; never run
    from multimed_hf.api import build_dataset, detect_sources
    from multimed_hf.configuration_multimed import MultiMedConfig
    from multimed_hf.data.push import push_dataset
    from multimed_hf.metrics import compute_output_metrics, compute_task_metrics
    from multimed_hf.modeling_multimed import MultiMedModel, MultiMedOutput, MultiMedPreTrainedModel, decode_outputs
    from multimed_hf.processing_multimed import MultiMedProcessor
    from multimed_hf.tasks import get_source, get_task, list_tasks, register_task
    from multimed_hf.training import MultiMedTrainer, assemble, evaluate_checkpoint, run_benchmark, train_model


__getattr__, __dir__ = lazy_attributes(globals(), _LAZY)
