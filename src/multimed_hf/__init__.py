"""multimed_hf: MultiMed (Mo & Liang, 2024) as Hugging Face datasets, evaluate metrics and a transformers model."""

from multimed_hf.tasks import get_source, get_task, list_tasks, register_task

__version__ = "0.1.0"
__all__ = ["get_task", "list_tasks", "register_task", "get_source", "__version__"]
