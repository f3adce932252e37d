"""The base of the per-modality processors: a pure per-row transform, batch padding and JSON settings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = [
    "ModalityProcessor",
    "ProcessorError",
    "MissingColumnError",
    "MissingProcessorError",
    "UnsupportedImageError",
    "PROCESSOR_CONFIG_FILE",
    "processor_class",
    "load_modality_processor",
]

#: The settings file every per-modality processor writes into its own folder.
PROCESSOR_CONFIG_FILE = "modality_processor.json"

_CLASSES: dict[str, type] = {}


class ProcessorError(ValueError):
    """A row, or a setting, that a processor cannot turn into model inputs."""


class MissingColumnError(ProcessorError):
    """A row lacks a column that its task needs."""


class MissingProcessorError(ProcessorError):
    """A task reads a modality that no processor was configured for."""


class UnsupportedImageError(TypeError):
    """An image of a mode (or a Python type) the image processor does not read."""


class ModalityProcessor:
    """Base of the per-modality processors.

    A subclass implements ``__call__`` (its modality's natural input -> numpy arrays, pure), ``from_row`` (the row's
    columns -> ``__call__``, or ``None`` where the row lacks the modality), ``collate`` (rows -> tensors) and
    ``to_dict`` (JSON settings). Subclasses register themselves by class name for ``load_modality_processor``.
    """

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        known = _CLASSES.get(cls.__name__)
        if known is not None and known.__qualname__ != cls.__qualname__:
            raise ValueError(f"a processor class named {cls.__name__!r} is already registered ({known!r})")
        _CLASSES[cls.__name__] = cls

    # ------------------------------------------------------------------ per row
    def columns(self, specs: Sequence) -> tuple[str, ...]:
        """Names of the row columns this processor reads, given the registry columns feeding its modality."""
        return tuple(spec.name for spec in specs)

    def from_row(self, values: Mapping[str, Any], specs: Sequence) -> dict | None:
        """This modality's arrays for one row (``values`` holds ``self.columns(specs)``); ``None`` = absent."""
        raise NotImplementedError

    def collate(self, items: Sequence[dict]) -> dict:
        """The modality's tensors for the rows that have it, in the given order."""
        raise NotImplementedError

    # ------------------------------------------------------------------ settings
    def to_dict(self) -> dict:
        """JSON-serialisable settings (artifacts such as tokenizers are saved beside them)."""
        raise NotImplementedError

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``modality_processor.json`` (and any artifact) into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self._save_artifacts(directory)
        settings = {"processor_class": type(self).__name__, **self.to_dict()}
        (directory / PROCESSOR_CONFIG_FILE).write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n")
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> "ModalityProcessor":
        """The processor saved in ``directory`` by ``save_pretrained``."""
        directory = Path(directory)
        settings = _read_settings(directory)
        name = settings.pop("processor_class", None)
        if name != cls.__name__:
            raise ProcessorError(f"{directory / PROCESSOR_CONFIG_FILE}: processor_class is {name!r}, expected "
                                 f"{cls.__name__!r}; load it with load_modality_processor()")
        return cls._from_settings(settings, directory)

    def with_settings(self, **changes) -> "ModalityProcessor":
        """A new processor of this class whose settings (``to_dict``) are this one's with ``changes`` applied, built
        through the constructor as ``from_pretrained`` builds one: the settings are checked and whatever derives
        from them (channel keys, filters, gene maps) follows. Artifacts (tokenizer, wrapped image processor, gene
        statistics) are this one's. Setting an attribute by hand checks nothing and leaves derived state stale."""
        settings = self.to_dict()
        unknown = [key for key in changes if key not in settings]
        if unknown:
            raise ProcessorError(f"{type(self).__name__} has no setting {unknown[0]!r}; its settings are "
                                 f"{sorted(settings)}")
        return self._rebuild({**settings, **changes})

    def _rebuild(self, settings: dict) -> "ModalityProcessor":
        """Hook: a processor of this class from ``settings`` (``to_dict`` form) and this one's artifacts."""
        return type(self)(**settings)

    def _save_artifacts(self, directory: Path) -> None:
        """Hook: write files other than the JSON settings."""

    @classmethod
    def _from_settings(cls, settings: dict, directory: Path) -> "ModalityProcessor":
        return cls(**settings)

    def __repr__(self) -> str:
        shown = {k: v for k, v in self.to_dict().items() if not isinstance(v, (list, dict)) or len(v) <= 8}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in sorted(shown.items()))})"


class TokenizedProcessor(ModalityProcessor):
    """A processor whose rows become token ids through a transformers tokenizer (text, DNA k-mers, proteins):
    a blank or absent value is absent, batches are right-padded, the tokenizer is saved beside the settings.
    Subclasses implement ``__call__`` (one value -> ``{"input_ids": [...]}``) and ``to_dict``."""

    tokenizer: Any
    pad_to_multiple_of: int | None

    def from_row(self, values: Mapping[str, Any], specs: Sequence) -> dict | None:
        value = values[specs[0].name]
        return None if value is None or not str(value).strip() else self(value)

    def collate(self, items: Sequence[dict]) -> dict:
        """Right-pad the rows' ``input_ids`` with the tokenizer's own ``pad``: ``input_ids`` and ``attention_mask``
        as LongTensor[n, T] (T the longest row, rounded up to ``pad_to_multiple_of``)."""
        import torch

        # NumPy out, then one zero-copy hand-over: torch.tensor over nested lists costs ~2x the whole pad
        padded = self.tokenizer.pad({"input_ids": [list(item["input_ids"]) for item in items]}, padding="longest",
                                    pad_to_multiple_of=self.pad_to_multiple_of, padding_side="right",
                                    return_attention_mask=True, return_tensors="np")
        return {key: torch.from_numpy(np.asarray(padded[key], dtype=np.int64))
                for key in ("input_ids", "attention_mask")}

    def _rebuild(self, settings: dict) -> "TokenizedProcessor":
        return type(self)(tokenizer=self.tokenizer, **settings)

    def _save_artifacts(self, directory: Path) -> None:
        self.tokenizer.save_pretrained(directory)

    @classmethod
    def _from_settings(cls, settings: dict, directory: Path) -> "TokenizedProcessor":
        from transformers import AutoTokenizer

        return cls(tokenizer=AutoTokenizer.from_pretrained(directory), **settings)


def _read_settings(directory: Path) -> dict:
    path = directory / PROCESSOR_CONFIG_FILE
    if not path.is_file():
        raise ProcessorError(f"{path} does not exist: not a folder written by a processor's save_pretrained()")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ProcessorError(f"{path}: not valid JSON ({err})") from None


def processor_class(name: str) -> type:
    """The registered per-modality processor class called ``name``."""
    try:
        return _CLASSES[name]
    except KeyError:
        raise ProcessorError(f"unknown processor class {name!r}; known: {sorted(_CLASSES)} (import the module "
                             f"that defines it first)") from None


def load_modality_processor(directory: str | Path) -> ModalityProcessor:
    """Load whichever per-modality processor ``directory`` holds (its class is named in its settings)."""
    directory = Path(directory)
    name = _read_settings(directory).get("processor_class")
    return processor_class(name).from_pretrained(directory)
