"""PEFT adapters over a trained MultiMed model: target modules per encoder family, a task head in modules_to_save,
adapter folders that save, load (also over a remote-code base) and push with a card naming base, task, k and seed."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from torch import nn

from multimed_hf.tasks import MODALITIES

__all__ = [
    "encoded_modalities",
    "AdapterError",
    "AdapterSettings",
    "ADAPTER_METHODS",
    "TARGETS_BY_FAMILY",
    "ADAPTER_INFO",
    "multimed_core",
    "default_targets",
    "head_spec_for",
    "prepare_head",
    "peft_config",
    "attach_adapter",
    "save_adapter",
    "load_adapter",
    "push_adapter",
    "adapter_card",
]

#: The file of an adapter folder that says what the adapter is for (task, k, seed, base, the head spec it carries).
ADAPTER_INFO = "multimed_adapter.json"

#: Leaf names of the linear layers adapted by default, per encoder family (``config.model_type`` of a transformers
#: encoder; ``"multimed"``: our own transformer blocks, in the fusion, the expression encoder and early fusion).
#: transformers 5 names ViT's attention ``q_proj``/``k_proj``/``v_proj``/``o_proj``; BERT-family models and ESM keep
#: ``query``/``key``/``value``; timm's ViT fuses ``qkv``. LoRA's usual choice: the query and value maps.
TARGETS_BY_FAMILY: Mapping[str, tuple[str, ...]] = {
    "vit": ("q_proj", "v_proj"),
    "deit": ("q_proj", "v_proj"),
    "dinov2": ("q_proj", "v_proj"),
    "bert": ("query", "value"),
    "roberta": ("query", "value"),
    "esm": ("query", "value"),
    "timm_wrapper": ("qkv",),
    "multimed": ("qkv",),
}
#: Leaf names tried for an encoder family not in ``TARGETS_BY_FAMILY``.
FALLBACK_TARGETS = ("q_proj", "v_proj", "query", "value", "qkv")

#: PEFT methods by name -> (config class name, the keyword that takes the rank).
ADAPTER_METHODS: Mapping[str, tuple[str, str | None]] = {
    "lora": ("LoraConfig", "r"),
    "loha": ("LoHaConfig", "r"),
    "lokr": ("LoKrConfig", "r"),
    "ia3": ("IA3Config", None),
}


class AdapterError(ValueError):
    """An adapter that cannot be made or loaded: unknown method, no target module, a base without the encoders."""


@dataclass
class AdapterSettings:
    """How a few-shot adapter is made: ``method`` (``ADAPTER_METHODS``), ``rank`` and ``alpha`` (LoRA's scaling,
    default 2 x rank), ``dropout``, and ``targets``: leaf names of the linear layers to adapt (default: per encoder
    family, ``TARGETS_BY_FAMILY``); heads are never targets (the task's head is trained whole, ``modules_to_save``)."""

    method: str = "lora"
    rank: int = 8
    alpha: float | None = None
    dropout: float = 0.0
    targets: Sequence[str] | None = None

    def __post_init__(self):
        if self.method not in ADAPTER_METHODS:
            raise AdapterError(f"adapter method {self.method!r} is not one of {tuple(ADAPTER_METHODS)}")
        if int(self.rank) < 1:
            raise AdapterError(f"adapter rank {self.rank}: expected >= 1")


def multimed_core(model: nn.Module) -> nn.Module:
    """The ``MultiMedModel`` inside ``model`` (itself or under a PEFT wrapper)."""
    for module in model.modules():
        if isinstance(getattr(module, "encoders", None), nn.ModuleDict) and hasattr(module, "add_head"):
            return module
    raise AdapterError(f"{type(model).__name__} holds no MultiMedModel")


def _family(encoder: nn.Module) -> str:
    inner = getattr(encoder, "model", None)
    config = getattr(inner, "config", None)
    return getattr(config, "model_type", None) or "multimed"


def _read_modalities(core, task: str | None) -> set[str] | None:
    """The modalities a task's head reads (a ``label_text`` output also reads its texts' encoder); None: all."""
    if task is None or task not in core.config.heads:
        return None
    head = core.config.heads[task]
    return set(head["modalities"]) | {o.get("modality", "text") for o in head["outputs"] if o["kind"] == "label_text"}


def default_targets(model: nn.Module, targets: Sequence[str] | None = None, task: str | None = None, *,
                    modalities: Sequence[str] | None = None) -> list[str]:
    """Full names of the linear layers an adapter targets: in every encoder that ``task``'s head reads (all without a
    task; ``modalities``: those modalities' encoders instead), the leaf names of its family (``TARGETS_BY_FAMILY``,
    or ``targets`` when given: each must name a linear layer there), and in our own fusion blocks; never inside
    ``heads``. Encoders without such layers (an LSTM) get no adapter and stay frozen."""
    core = multimed_core(model)
    names: list[str] = []
    wanted_by_part: list[tuple[str, nn.Module, tuple[str, ...]]] = []
    read = set(modalities) if modalities is not None else _read_modalities(core, task)
    keys = None if read is None else {core.encoder_of[m] for m in read if m in core.encoder_of}
    for key, encoder in core.encoders.items():
        if keys is not None and key not in keys:
            continue
        leaves = tuple(targets) if targets else TARGETS_BY_FAMILY.get(_family(encoder), FALLBACK_TARGETS)
        wanted_by_part.append((f"encoders.{key}", encoder, leaves))
    for part in ("fusion", "early"):
        module = getattr(core, part, None)
        if module is not None:
            wanted_by_part.append((part, module, tuple(targets) if targets else TARGETS_BY_FAMILY["multimed"]))
    seen_leaves = set()
    unread = set(MODALITIES) - read if read is not None else set()
    for prefix, module, leaves in wanted_by_part:
        for name, sub in module.named_modules():
            if prefix in ("fusion", "early") and unread & set(name.split(".")):
                continue  # the fusion's layer of a modality the head does not read: no row passes through it
            # a layer an earlier adapter wrapped holds its linear as ``base_layer`` (PEFT's tuner layers)
            linear = isinstance(sub, nn.Linear) or isinstance(getattr(sub, "base_layer", None), nn.Linear)
            if linear and not any(part.startswith(("lora_", "base_layer", "hada_", "lokr_", "ia3_"))
                                  for part in name.split(".")):
                leaf = name.rsplit(".", 1)[-1]
                seen_leaves.add(leaf)
                if leaf in leaves:
                    names.append(f"{prefix}.{name}")
    where = "the model's encoders or fusion" if read is None else f"the encoders of {sorted(read)} or the fusion"
    if not names:
        raise AdapterError(f"no linear layer named {list(targets or FALLBACK_TARGETS)} in {where}; its linear layers "
                           f"are named {sorted(seen_leaves)}")
    unmatched = [t for t in targets or () if t not in seen_leaves]
    if unmatched:  # the others would be adapted alone, unsaid
        raise AdapterError(f"no linear layer named {unmatched} in {where}; its linear layers are named "
                           f"{sorted(seen_leaves)}")
    return names


def encoded_modalities(config, task: str) -> list[str]:
    """The modalities of ``task`` that a model of ``config`` encodes: what a head adapted to it reads."""
    from multimed_hf.tasks import get_task

    return [m for m in get_task(task).modalities if m in config.encoders]


def head_spec_for(model: nn.Module, task: str, *, processor=None, train=None,
                  regression_stats: Mapping[str, tuple[float, float]] | None = None) -> dict:
    """The head spec ``task`` needs over ``model``'s encoders: the registry's label columns, the task's modalities that
    the model encodes, free-text labels over the processor's vocabulary (fitted on ``train`` when missing)."""
    from multimed_hf.output_kinds import kind_for_label
    from multimed_hf.tasks import get_task

    spec = get_task(task)
    core = multimed_core(model)
    modalities = encoded_modalities(core.config, task)
    if not modalities:
        raise AdapterError(f"task {task!r} reads {list(spec.modalities)}; the base model encodes "
                           f"{sorted(core.config.encoders)}: few-shot adapters cannot add an encoder")
    vocabularies: dict[str, list] = {}
    if any(label.kind == "text" for label in spec.labels):
        if processor is None:
            raise AdapterError(f"task {task!r} has free-text labels: give the processor (its vocabulary)")
        missing = [label.name for label in spec.labels if label.kind == "text"
                   and label.name not in processor.vocabularies and task not in processor.vocabularies]
        if missing and train is not None:
            processor.fit_vocabularies(train, task)
        vocabularies = dict(processor.vocabularies)
    outputs = [kind_for_label(label.kind).from_label(label, task=task, modalities=modalities,
                                                     vocabularies=vocabularies,
                                                     regression_stats=dict(regression_stats or {}))
               for label in spec.labels]
    return {"modalities": modalities, "outputs": outputs, "problem_type": spec.problem_type}


def _same_head(a: Mapping, b: Mapping) -> bool:
    keys = ("name", "kind", "names")
    return (list(a["modalities"]) == list(b["modalities"])
            and [{k: o.get(k) for k in keys} for o in a["outputs"]] == [{k: o.get(k) for k in keys}
                                                                      for o in b["outputs"]])


def prepare_head(model: nn.Module, task: str, spec: dict) -> dict | None:
    """Make ``model`` hold the head ``spec`` for ``task``: kept when the base's head has the same columns, classes and
    modalities (returns None: the adapter needs no spec); else a new head replaces or joins the base's (returns the
    spec, which the adapter folder carries)."""
    core = multimed_core(model)
    current = core.config.heads.get(task)
    if current is not None and _same_head(current, spec):
        return None
    core.add_head(task, spec, replace=current is not None)
    return core.config.heads[task]


def peft_config(model: nn.Module, task: str, settings: AdapterSettings | None = None, *,
                base_id: str | None = None):
    """The PEFT config of a few-shot adapter: ``settings``' method over ``default_targets`` and the task's head in
    ``modules_to_save`` as ``heads.<task>`` (naming the ``heads`` ModuleDict itself raises in PEFT); ``task_type``
    stays None (a custom model)."""
    import peft

    settings = settings or AdapterSettings()
    class_name, rank_key = ADAPTER_METHODS[settings.method]
    kwargs: dict[str, Any] = {"target_modules": default_targets(model, settings.targets, task),
                              "modules_to_save": [f"heads.{task}"], "task_type": None}
    if rank_key is not None:
        kwargs[rank_key] = int(settings.rank)
    if settings.method == "lora":
        kwargs["lora_alpha"] = settings.alpha if settings.alpha is not None else 2 * int(settings.rank)
        kwargs["lora_dropout"] = settings.dropout
    elif settings.method == "ia3":
        kwargs["feedforward_modules"] = []
    config = getattr(peft, class_name)(**kwargs)
    if base_id is not None:
        config.base_model_name_or_path = base_id
    return config


def attach_adapter(model: nn.Module, task: str, settings: AdapterSettings | None = None, *,
                   adapter_name: str = "default", base_id: str | None = None):
    """``model`` with a new trainable adapter named ``adapter_name`` for ``task`` (a ``PeftModel``; every base
    parameter frozen, the task's head trained as a copy). A ``PeftModel`` gets one more adapter, made active."""
    import peft

    if isinstance(model, peft.PeftModel):
        model.add_adapter(adapter_name, peft_config(model, task, settings, base_id=base_id))
        model.set_adapter(adapter_name)
        return model
    return peft.get_peft_model(model, peft_config(model, task, settings, base_id=base_id), adapter_name=adapter_name)


def adapter_card(info: Mapping[str, Any]):
    """The adapter's ``huggingface_hub.ModelCard``: base model, task, k, seed, support counts and how to load it."""
    from huggingface_hub import ModelCard, ModelCardData

    local = _local_base(info)
    base = (f"the local MultiMed checkpoint `{info['base_model']}`" if local and info.get("base_model") else
            info.get("base_model") or "(a local MultiMed checkpoint)")
    data = ModelCardData(library_name="peft", base_model=None if local else info.get("base_model"),
                         tags=["multimed", "few-shot", info.get("method", "lora"), str(info["task"])])
    head = ("The adapter carries the head's spec (`multimed_adapter.json`: `head_spec`); add that head to the base "
            "before loading (below)." if info.get("head_spec") else "The base model's own head for the task is "
            "adapted (a trained copy is saved with the adapter).")
    load_new_head = ("local = Path(adapter) / \"multimed_adapter.json\"  # else the Hub repository's\n"
                     "info = json.loads((local if local.exists() else Path(hf_hub_download(adapter, "
                     "\"multimed_adapter.json\"))).read_text())\n"
                     "if info[\"head_spec\"]:\n    base.add_head(info[\"task\"], info[\"head_spec\"], replace=True)\n")
    counts = ", ".join(f"{k}: {v}" for k, v in (info.get("support_counts") or {}).items())
    under = (info.get("support") or {}).get("short") or {}
    short = f"; under k: {', '.join(under)}" if under else ""
    read = (info.get("support") or {}).get("read_modalities")
    drawn = (f"the training split's rows holding {', '.join(read)} (the modalities the base encodes)" if read else
             "the training split")
    targets = info.get("target_modules", [])
    scored = _metrics_heading(info)
    reads = list((info.get("head_spec") or {}).get("modalities") or read or [])
    partial = bool(reads) and set(reads) < set(_task_modalities(info["task"]))
    inputs = (f"\nThe adapted head reads {', '.join(reads)} of the task's modalities: build its batches with the "
              f"base's processor for those, `MultiMedProcessor.from_pretrained(BASE).transform(\"{info['task']}\", "
              f"modalities={reads!r})` (the others have no encoder in the base).\n" if partial else "")
    where = " and ".join(name for name, prefix in (("the encoders'", "encoders."), ("the fusion block's", "fusion."),
                                                   ("the early-fusion encoder's", "early."))
                         if any(t.startswith(prefix) for t in targets)) or "the model's"
    text = f"""---
{data.to_yaml()}
---

# MultiMed few-shot adapter: `{info['task']}`, k = {info['k']}, seed {info['seed']}

A PEFT `{info.get('method', 'lora')}` adapter (rank {info.get('rank')}) over **{base}**, trained on a {info['k']}-shot
support set of task `{info['task']}` (whole groups drawn with seed {info['seed']} from {drawn} until
every class had at least {info['k']} example{'s' if info['k'] != 1 else ''} or the split ran out; real counts: \
{counts or 'n/a'}{short}).
Target modules: {where} linear layers ({', '.join(sorted({t.rsplit('.', 1)[-1] for t in targets}))});
the head `heads.{info['task']}` is trained whole. {head}

```python
import json
from pathlib import Path

from huggingface_hub import hf_hub_download
from transformers import AutoModel
from peft import PeftModel

base = AutoModel.from_pretrained("{info.get('base_model') or 'BASE'}", trust_remote_code=True)
adapter = "ADAPTER"  # this repo id or folder
{load_new_head}model = PeftModel.from_pretrained(base, adapter, adapter_name="{info.get('adapter_name', 'default')}")
```
{inputs}
{scored}: {json.dumps(info.get('metrics') or {}, sort_keys=True)}
"""
    return ModelCard(text)


def _task_modalities(task: str) -> tuple[str, ...]:
    """The registry's modalities of ``task`` (none for a task it does not know, e.g. a user's own)."""
    from multimed_hf.tasks import get_task

    try:
        return tuple(get_task(task).modalities)
    except (KeyError, ValueError):
        return ()


def _metrics_heading(info: Mapping[str, Any]) -> str:
    """The card's heading of the metrics: the split they were scored on (``eval_split``), or that it is not
    recorded (an adapter saved before it was)."""
    split = info.get("eval_split")
    if not split:
        return f"Metrics (`{info['task']}`, split not recorded)"
    return f"{str(split).capitalize()} metrics (`{info['task']}`, {split} split)"


def _local_base(info: Mapping[str, Any]) -> bool:
    """Whether an adapter's base is a local checkpoint (``base_local``, recorded by ``save_adapter``; an absolute
    path, which no Hub id is; or a path that exists here), not a Hub model id."""
    base = info.get("base_model")
    return bool(info.get("base_local")) or (base is not None and (Path(str(base)).is_absolute()
                                                                  or Path(str(base)).exists()))


def _peft_model(model):
    import peft

    if not isinstance(model, peft.PeftModel):
        raise AdapterError(f"expected a PeftModel (attach_adapter / load_adapter), got {type(model).__name__}")
    return model


def save_adapter(model, directory: str | os.PathLike, *, task: str, k: int, seed: int,
                 head_spec: Mapping | None = None, adapter_name: str | None = None, base_id: str | None = None,
                 settings: AdapterSettings | None = None, support: Mapping[str, Any] | None = None,
                 metrics: Mapping[str, Any] | None = None, training: Mapping[str, Any] | None = None,
                 eval_split: str | None = None) -> Path:
    """Write one adapter of ``model`` (a ``PeftModel``) into ``directory``: PEFT's ``adapter_config.json`` and
    ``adapter_model.safetensors`` (LoRA weights and the trained head), ``multimed_adapter.json`` (task, k, seed,
    base, the head spec for a head the base lacks, support counts, ``metrics`` and the split they were scored on,
    ``eval_split``; ``training``: how it was trained, e.g. processes, batch, steps) and a README.md card. Without
    ``base_id``, a base loaded from a local folder is recorded by its absolute path and marked ``base_local`` (a
    relative path read as a Hub id from another directory, and ``push_adapter`` uploaded it as one)."""
    model = _peft_model(model)
    name = adapter_name or model.active_adapter
    directory = Path(directory)
    config = model.peft_config[name]
    local = False
    if base_id is not None:
        config.base_model_name_or_path = base_id
    elif config.base_model_name_or_path and Path(str(config.base_model_name_or_path)).exists():
        config.base_model_name_or_path = str(Path(str(config.base_model_name_or_path)).resolve())
        local = True
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp, selected_adapters=[name])
        source = Path(tmp) / name if name != "default" else Path(tmp)
        directory.mkdir(parents=True, exist_ok=True)
        for path in source.iterdir():
            if path.is_file() and path.name != "README.md":
                (directory / path.name).write_bytes(path.read_bytes())
    settings = settings or AdapterSettings()
    info = {"task": task, "k": int(k), "seed": int(seed), "base_model": config.base_model_name_or_path,
            "base_local": local, "adapter_name": name, "method": settings.method, "rank": settings.rank,
            "target_modules": sorted(config.target_modules) if config.target_modules else [],
            "head_spec": dict(head_spec) if head_spec else None,
            "support_counts": dict((support or {}).get("counts") or {}), "support": dict(support or {}),
            "metrics": dict(metrics or {}), "eval_split": eval_split, "training": dict(training or {})}
    (directory / ADAPTER_INFO).write_text(json.dumps(info, indent=2, sort_keys=True, default=str) + "\n")
    adapter_card(info).save(str(directory / "README.md"))
    return directory


def _local(adapter: str | os.PathLike, **hub_kwargs) -> Path:
    """A local folder of the adapter: itself, or a Hub repo's snapshot (``snapshot_download``)."""
    if Path(adapter).is_dir():
        return Path(adapter)
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(str(adapter), **hub_kwargs))


def load_adapter(base, adapter: str | os.PathLike, *, adapter_name: str | None = None, is_trainable: bool = False,
                 **hub_kwargs):
    """Load an adapter folder (or Hub repo) over ``base``: a ``MultiMedModel`` (then a new ``PeftModel``) or a
    ``PeftModel`` that already holds adapters (then one more, switchable with ``set_adapter``). A head the base lacks
    is added first from the adapter's ``head_spec``. Returns the ``PeftModel``, the loaded adapter active."""
    import peft

    adapter = _local(adapter, **hub_kwargs)
    path = adapter / ADAPTER_INFO
    if not path.is_file():
        raise AdapterError(f"{str(adapter)!r} holds no {ADAPTER_INFO}: not a MultiMed adapter (save_adapter writes it)")
    info = json.loads(path.read_text())
    name = adapter_name or f"{info['task']}_{info['k']}shot_seed{info['seed']}"
    if info.get("head_spec"):
        multimed_core(base).add_head(info["task"], info["head_spec"], replace=True)
    if isinstance(base, peft.PeftModel):
        base.load_adapter(str(adapter), adapter_name=name, is_trainable=is_trainable)
        base.set_adapter(name)
        return base
    return peft.PeftModel.from_pretrained(base, str(adapter), adapter_name=name, is_trainable=is_trainable)


def push_adapter(adapter_dir: str | os.PathLike, repo_id: str, *, base_id: str | None = None,
                 token: bool | str | None = None, private: bool | None = None, commit_message: str | None = None):
    """Upload a saved adapter folder to ``repo_id`` in one commit (the package's one upload path), with
    ``base_model_name_or_path`` set to the base's Hub id (``base_id``, or the one the folder names)."""
    from multimed_hf.hub_upload import folder_files, upload_files

    adapter_dir = Path(adapter_dir)
    files: dict[str, Any] = dict(folder_files(adapter_dir))
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    info = json.loads((adapter_dir / ADAPTER_INFO).read_text())
    given = base_id is not None
    base_id = base_id if given else config.get("base_model_name_or_path")
    # a local base recorded by save_adapter (base_local) is refused wherever this runs, not only where it exists
    if not base_id or _local_base({"base_model": base_id, "base_local": not given and info.get("base_local")}):
        raise AdapterError(f"push_adapter: base_model_name_or_path is {base_id!r}, a local path; give base_id= (the "
                           f"base model's Hub id) so the adapter names a base others can load")
    config["base_model_name_or_path"] = base_id
    info["base_model"], info["base_local"] = base_id, False
    files["adapter_config.json"] = (json.dumps(config, indent=2, sort_keys=True) + "\n").encode()
    files[ADAPTER_INFO] = (json.dumps(info, indent=2, sort_keys=True, default=str) + "\n").encode()
    files["README.md"] = str(adapter_card(info)).encode()
    return upload_files(repo_id, files, repo_type="model", token=token, private=private,
                        commit_message=commit_message or f"Upload MultiMed {info['k']}-shot adapter for "
                                                         f"{info['task']}")
