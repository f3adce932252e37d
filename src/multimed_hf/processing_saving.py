"""Saving, loading and pushing MultiMedProcessor: ``processor_config.json`` plus one folder per modality processor,
beside the model's files; pushed through the package's one Hub upload path."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from multimed_hf.hub_upload import folder_files, upload_files
from multimed_hf.processors.base import ModalityProcessor, ProcessorError, load_modality_processor

__all__ = ["ProcessorSavingMixin", "PROCESSOR_CONFIG_NAME", "PROCESSORS_FOLDER", "FORMAT_VERSION"]

#: The processor's settings file, beside the model's config.json; per-modality folders go under ``processors/``.
PROCESSOR_CONFIG_NAME = "processor_config.json"
PROCESSORS_FOLDER = "processors"
FORMAT_VERSION = 1


class ProcessorSavingMixin:
    """``save_pretrained`` / ``from_pretrained`` / ``push_to_hub`` for a processor holding ``processors`` (modality
    -> ``ModalityProcessor``) and the settings of ``to_dict()``, with transformers' signatures.

    Why not the library mixins: transformers' ``ProcessorMixin`` holds a fixed set of named sub-processors
    (``image_processor``, ``tokenizer``, ...) of known classes, where ours holds any number keyed by modality.
    ``transformers.utils.PushToHubMixin`` would make importing the processor import transformers (the data path
    stays free of transformers and torch, a tested property), and its default upload goes through a private helper
    (``_upload_modified_files``) that reads one folder level, where ours nest two (``processors/text/...``).
    ``huggingface_hub.ModelHubMixin`` writes a ``config.json`` and a ``README.md`` of its own into the folder, which
    here is the model's. So the upload is the package's one Hub path (``multimed_hf.hub_upload``).
    """

    processors: dict

    def to_dict(self) -> dict:
        raise NotImplementedError

    def save_pretrained(self, save_directory: str | Path, **kwargs) -> Path:
        """Write ``processor_config.json`` and ``processors/<modality>/`` into ``save_directory`` (the model's
        folder): a processor shared by several modalities is written once. ``kwargs`` (such as ``max_shard_size``,
        which ``Trainer`` and ``push_to_hub`` pass) do not apply to processors and are ignored."""
        directory = Path(save_directory)
        directory.mkdir(parents=True, exist_ok=True)
        written: dict[int, str] = {}
        folders = {}
        for key, proc in self.processors.items():
            if id(proc) not in written:
                written[id(proc)] = f"{PROCESSORS_FOLDER}/{key}"
                proc.save_pretrained(directory / written[id(proc)])
            folders[key] = written[id(proc)]
        config = {**self.to_dict(), "processors": folders}
        (directory / PROCESSOR_CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        return directory

    def push_to_hub(self, repo_id: str, *, commit_message: str | None = None, commit_description: str | None = None,
                    private: bool | None = None, token: bool | str | None = None, revision: str | None = None,
                    create_pr: bool = False, **kwargs):
        """Upload ``save_pretrained``'s files to the Hub repo ``repo_id`` (a model repo, beside the model) in one
        commit; returns the ``CommitInfo``."""
        with tempfile.TemporaryDirectory() as folder:
            self.save_pretrained(folder)
            return upload_files(repo_id, folder_files(folder), repo_type="model",
                                commit_message=commit_message or f"Upload {type(self).__name__}",
                                commit_description=commit_description, token=token, private=private,
                                revision=revision, create_pr=create_pr)

    @classmethod
    def _settings_from_pretrained(cls, pretrained: str | Path, **hub_kwargs) -> tuple[dict, dict]:
        """The saved settings and the loaded modality processors (shared ones loaded once)."""
        directory = Path(pretrained)
        if not directory.is_dir():
            from huggingface_hub import snapshot_download

            directory = Path(snapshot_download(str(pretrained), allow_patterns=[PROCESSOR_CONFIG_NAME,
                                                                               f"{PROCESSORS_FOLDER}/**"],
                                               **hub_kwargs))
        path = directory / PROCESSOR_CONFIG_NAME
        if not path.is_file():
            raise ProcessorError(f"{path} does not exist: save the processor with save_pretrained() first")
        config = json.loads(path.read_text())
        if config.get("processor_class") != cls.__name__ or config.get("format_version") != FORMAT_VERSION:
            raise ProcessorError(f"{path}: processor_class {config.get('processor_class')!r}, format_version "
                                 f"{config.get('format_version')!r}; expected {cls.__name__!r}, {FORMAT_VERSION}")
        loaded: dict[str, ModalityProcessor] = {}
        processors = {}
        for key, folder in config.get("processors", {}).items():
            if folder not in loaded:
                loaded[folder] = load_modality_processor(directory / folder)
            processors[key] = loaded[folder]
        return config, processors
