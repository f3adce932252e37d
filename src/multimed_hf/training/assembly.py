"""From a built folder and task names to a trainable model: processor, vocabularies, target statistics, config."""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from multimed_hf.tasks import IMAGE_MODALITIES, get_task
from multimed_hf.training.encoder_presets import (
    DataFacts,
    EncoderChoice,
    choose_encoders,
    small_text_tokenizer,
)
from multimed_hf.training.loading import column_values, load_task_data, read_gene_panels, rows_with_modality

__all__ = [
    "Assembly",
    "AssemblyError",
    "assemble",
    "assemble_processor",
    "expression_processor_from_data",
    "eeg_processor_from_data",
    "regression_statistics",
    "fit_vocabularies",
    "select_rows",
]

logger = logging.getLogger(__name__)

#: Rows read to settle processor facts (gene panels, EEG channel sets, value scales) from a streamed split.
STREAMED_FACT_ROWS = 2000
#: Library size the expression rows are scaled to when the training rows hold raw counts (scanpy's default).
COUNTS_TARGET_SUM = 1e4


class AssemblyError(ValueError):
    """Data and encoders that cannot be put together into a trainable model."""


@dataclass
class Assembly:
    """Everything a run trains and evaluates with, built from the data and the chosen encoders."""

    processor: Any  # MultiMedProcessor
    config: Any  # MultiMedConfig
    model: Any | None  # MultiMedModel (None when build_model=False)
    datasets: dict[str, dict[str, Any]]  # task -> split -> rows (filtered to the plan's modality where one is set)
    modalities: dict[str, list[str]]  # task -> modalities read
    encoders: EncoderChoice
    facts: DataFacts
    notes: list[str] = field(default_factory=list)  # choices made from the data, for run_info.json


# ---------------------------------------------------------------------- per-modality processors from the rows
def _value_scale(values: Sequence[Sequence[float]]) -> tuple[float | None, bool, str]:
    """(normalize_total, log1p, why) from the training rows' stored expression values."""
    flat = np.concatenate([np.asarray(v, dtype=np.float64) for v in values if v]) if any(values) else np.zeros(0)
    if flat.size == 0:
        return None, True, "no expression values in the training rows: log1p"
    integer = float(np.mean(flat == np.round(flat)))
    if integer >= 0.99:
        return COUNTS_TARGET_SUM, True, (f"{integer:.0%} of the training values are integers (counts): scaled to "
                                         f"{COUNTS_TARGET_SUM:g} per row, then log1p")
    if flat.max() > 30:
        return None, True, f"non-integer values up to {flat.max():.3g} (linear scale): log1p"
    return None, False, f"non-integer values up to {flat.max():.3g} (already log scale): used as stored"


def expression_processor_from_data(train, task: str, panels: Mapping[str, Sequence[str]], *,
                                   limit: int | None = None):
    """An ``ExpressionProcessor`` whose recorded gene order is the union of the panels the training rows use (the
    panel of most rows first, then each further panel's new genes), and whose scaling follows the stored values:
    counts are library-size normalised and log1p-transformed, log-scale values (scanpy's ``.raw``) kept as stored.
    A config whose rows mix the two gets the scaling of most rows (noted)."""
    from multimed_hf.processors.expression import ExpressionProcessor

    spec = get_task(task)
    cols = [c for c in spec.inputs if c.modality == "scrna"]
    value_col = next(c.name for c in cols if c.dtype == "list_float32")
    seen = column_values(train, ["gene_panel", value_col], limit)
    used = Counter(p for p in seen["gene_panel"] if p is not None)
    missing = sorted(set(used) - set(panels))
    if missing:
        raise AssemblyError(f"task {task!r}: training rows use gene panels {missing} that no gene_panels.json asset "
                            f"of the data lists (known: {sorted(panels)})")
    if not used:
        raise AssemblyError(f"task {task!r}: no training row has expression values, so no gene order can be fixed")
    genes: list[str] = []
    known: set[str] = set()
    for panel, _ in used.most_common():
        for gene in panels[panel]:
            if gene not in known:
                known.add(gene)
                genes.append(gene)
    by_panel: dict[str, list] = {}
    for panel, values in zip(seen["gene_panel"], seen[value_col]):
        if panel is not None and len(by_panel.setdefault(panel, [])) < 200:
            by_panel[panel].append(values)
    scales = {p: _value_scale(v) for p, v in by_panel.items()}
    chosen = max(scales, key=lambda p: used[p])
    total, log1p, why = scales[chosen]
    notes = [f"{task}: scrna gene order = union of {len(used)} panel(s), {len(genes)} genes; scaling: {why}"]
    if len({s[:2] for s in scales.values()}) > 1:
        notes.append(f"{task}: WARNING the training rows' panels differ in scale ({ {p: s[2] for p, s in scales.items()} });"
                     f" the scaling of the panel of most rows was used for all")
    processor = ExpressionProcessor(genes=genes, panels={p: panels[p] for p in used}, normalize_total=total,
                                    log1p=log1p)
    for panel, gene_list in panels.items():  # validation/test rows may use panels training did not
        if panel not in processor.panels:
            processor.add_panel(panel, gene_list)
    return processor, notes


def eeg_processor_from_data(train, task: str, *, limit: int | None = None):
    """An ``EEGProcessor`` over the union of the training rows' channel sets (by normalised name, the most common
    set's order first; channels a row lacks are zero-filled), resampled to the lowest training sampling rate (never
    upsampling), epochs cut or padded to the longest training epoch at that rate."""
    from multimed_hf.processors.eeg import EEGProcessor, normalize_channel_name

    spec = get_task(task)
    signal = next(c.name for c in spec.inputs if c.modality == "eeg")
    seen = column_values(train, ["channel_names", "sfreq"], limit)
    sets = Counter(tuple(names) for names in seen["channel_names"] if names)
    if not sets:
        raise AssemblyError(f"task {task!r}: no training row names its EEG channels")
    channels, keys = [], set()
    for names, _ in sets.most_common():
        for name in names:
            if normalize_channel_name(name) not in keys:
                keys.add(normalize_channel_name(name))
                channels.append(name)
    rates = [float(r) for r in seen["sfreq"] if r]
    sfreq = min(rates)
    lengths = _epoch_lengths(train, signal, limit)
    n_times = int(max(math.ceil(n * sfreq / r) for n, r in zip(lengths, rates)))
    h_freq = min(40.0, 0.45 * sfreq)
    processor = EEGProcessor(channels, sfreq=sfreq, l_freq=min(4.0, h_freq / 2), h_freq=h_freq, n_times=n_times,
                             missing_channels="zero")
    note = (f"{task}: EEG = union of {len(sets)} channel set(s) ({len(channels)} channels, absent ones zero-filled), "
            f"resampled to {sfreq:g} Hz (lowest training rate), {n_times} samples per epoch")
    return processor, [note]


def _epoch_lengths(train, column: str, limit: int | None) -> list[int]:
    data = getattr(train, "data", None)
    if data is not None and hasattr(train, "select"):
        import pyarrow.compute as pc

        table = getattr(data, "table", data)
        col = table.column(column)
        if limit is not None:
            col = col.slice(0, limit)
        return pc.list_value_length(pc.list_element(col, 0)).to_pylist()
    return [len(v[0]) for v in column_values(train, [column], limit)[column]]


# ---------------------------------------------------------------------- labels
def regression_statistics(train_by_task: Mapping[str, Any]) -> dict[str, tuple[float, float]]:
    """Label column -> (mean, std) over the training rows that have a value, for every regression label."""
    stats = {}
    for task, train in train_by_task.items():
        for label in get_task(task).labels:
            if label.kind != "regression":
                continue
            values = np.array([v for v in column_values(train, [label.name])[label.name] if v is not None],
                              dtype=np.float64)
            values = values[np.isfinite(values)]
            if values.size == 0:
                raise AssemblyError(f"task {task!r}: no training row has a value of {label.name!r}")
            std = float(values.std())
            stats[label.name] = (float(values.mean()), std if std > 0 else 1.0)
    return stats


def fit_vocabularies(processor, train_by_task: Mapping[str, Any]) -> dict[str, list[str]]:
    """Fit the processor's vocabularies on the training rows of every task with free-text labels (only those)."""
    fitted = {}
    for task, train in train_by_task.items():
        if any(label.kind == "text" for label in get_task(task).labels):
            fitted.update(processor.fit_vocabularies(train, task))
    return fitted


# ---------------------------------------------------------------------- the processor
def _image_processor(source: str | None, size: int):
    from transformers import AutoImageProcessor

    from multimed_hf.processors.image import ImageProcessor, default_image_processor

    inner = AutoImageProcessor.from_pretrained(source) if source else default_image_processor(size)
    return ImageProcessor(inner)


def _tokenizer(source: str | None, modality: str, train_texts):
    if source:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(source)
    if modality == "text":
        return small_text_tokenizer(train_texts)
    return None  # the processor's own (k-mers / ESM-2 alphabet)


def _texts(train_by_task: Mapping[str, Any], modality: str):
    def texts():
        for task, train in train_by_task.items():
            for column in [c.name for c in get_task(task).inputs if c.modality == modality]:
                yield from (t for t in column_values(train, [column])[column] if t)
    return texts


def _sequence_tokenizers(modalities: Sequence[str], encoders: str, train_by_task) -> dict[str, Any]:
    """Tokenizers for text / DNA / protein matching the encoders (Hub ids for ``hub``)."""
    from multimed_hf.training.encoder_presets import tokenizer_sources

    sources = tokenizer_sources(encoders, modalities)
    return {m: _tokenizer(sources.get(m), m, _texts(train_by_task, m)) for m in modalities
            if m in ("text", "dna", "protein")}


def assemble_processor(train_by_task: Mapping[str, Any], modalities: Mapping[str, Sequence[str]], choice: EncoderChoice,
                       tokenizers: Mapping[str, Any], panels: Mapping[str, Mapping[str, Sequence[str]]],
                       modality_processors: Mapping[str, Any] | None = None):
    """A ``MultiMedProcessor`` with one processor per modality read (images sized for their encoders, tokenizers of
    the encoders) and vocabularies fitted on the training rows."""
    from multimed_hf.processing_multimed import MultiMedProcessor
    from multimed_hf.processors.dna import DnaProcessor, kmer_tokenizer
    from multimed_hf.processors.protein import ProteinProcessor
    from multimed_hf.processors.text import TextProcessor

    needed = list(dict.fromkeys(m for ms in modalities.values() for m in ms))
    procs: dict[str, Any] = dict(modality_processors or {})
    images = [m for m in needed if m in IMAGE_MODALITIES]
    kinds = {(choice.image_processors.get(m), choice.image_sizes.get(m, 224)) for m in images}
    if len(kinds) == 1:
        procs["image"] = _image_processor(*kinds.pop())
    else:
        for m in images:
            procs[m] = _image_processor(choice.image_processors.get(m), choice.image_sizes.get(m, 224))
    lengths = choice.max_lengths
    if "text" in needed:
        procs["text"] = TextProcessor(tokenizers["text"], max_length=lengths.get("text", 512))
    if "dna" in needed:
        tok = tokenizers.get("dna") or kmer_tokenizer(choice.dna_k)
        procs["dna"] = DnaProcessor(tok, k=choice.dna_k, max_length=lengths.get("dna", 512), truncation_side="center")
    if "protein" in needed:
        procs["protein"] = ProteinProcessor(tokenizers.get("protein"), max_length=lengths.get("protein", 1024))
    missing = [m for m in needed if m not in procs and not (m in IMAGE_MODALITIES and "image" in procs)]
    if missing:
        raise AssemblyError(f"no processor was assembled for modalities {missing}")
    processor = MultiMedProcessor(processors=procs)
    fit_vocabularies(processor, train_by_task)
    return processor


def _data_processors(train_by_task, modalities, panels, limit):
    """Expression and EEG processors (their sizes decide the encoders'): from the training rows of every task."""
    procs, notes = {}, []
    for modality, build in (("scrna", expression_processor_from_data), ("eeg", eeg_processor_from_data)):
        tasks = [t for t, ms in modalities.items() if modality in ms]
        if not tasks:
            continue
        if modality == "scrna":
            made = [build(train_by_task[t], t, panels[t], limit=limit) for t in tasks]
        else:
            made = [build(train_by_task[t], t, limit=limit) for t in tasks]
        first = made[0][0]
        for other, _ in made[1:]:
            if other.to_dict() != first.to_dict():
                raise AssemblyError(f"tasks {tasks} read {modality!r} from differently shaped data (gene panels or "
                                    f"channel sets differ); one model has one {modality} encoder: train them apart")
        procs[modality] = first
        notes += [n for _, ns in made[:1] for n in ns]
    return procs, notes


def select_rows(datasets: Mapping[str, Mapping[str, Any]], row_modality: Mapping[str, str | None]):
    """Each task's splits restricted to the rows holding its plan's modality (``None``: all rows)."""
    out = {}
    for task, splits in datasets.items():
        m = row_modality.get(task)
        out[task] = {s: ds if m is None else rows_with_modality(ds, task, m) for s, ds in splits.items()}
    return out


# ---------------------------------------------------------------------- everything
def assemble(data: str | Path, tasks: Sequence[str], *, encoders: str = "small",
             modalities: Mapping[str, Sequence[str]] | None = None,
             row_modality: Mapping[str, str | None] | None = None, datasets: Mapping[str, Mapping[str, Any]] | None = None,
             streaming: bool = False, rank: int = 0, world_size: int = 1, fusion: str = "intermediate",
             hidden_size: int | None = None, build_model: bool = True, config_kwargs: Mapping[str, Any] | None = None,
             processor_overrides: Mapping[str, Mapping[str, Any]] | None = None, **load_kwargs) -> Assembly:
    """The processor, config and model for ``tasks`` of a built folder (or Hub dataset id) ``data``.

    ``encoders``: ``"hub"`` (the paper's encoders; weights via ``from_encoders_pretrained``), ``"small"`` (small
    random-init encoders), ``"domain_specific"`` (small from-scratch models: ResNet, LSTM, MLP, 1-layer
    transformers) or a JSON file of specs (``choose_encoders``). ``modalities``: task -> modalities read (default:
    all of the task's); ``row_modality``: task -> train and evaluate only on rows holding this modality (the
    ``unimodal`` family on tasks whose rows hold one of several modalities). ``datasets`` reuses already loaded
    ``{task: {split: Dataset}}`` (e.g. a federated client's partition). ``processor_overrides``: modality ->
    settings changed on its processor after assembly (e.g. ``{"dna": {"crop_center": 7000}}``).

    Gene panels come from the data's ``gene_panels.json`` assets; EEG channel sets and sampling rates, vocabularies
    (free-text labels only) and regression statistics from the training split.
    """
    from multimed_hf.configuration_multimed import MultiMedConfig

    tasks = list(dict.fromkeys(tasks))
    chosen = {t: list((modalities or {}).get(t) or get_task(t).modalities) for t in tasks}
    for t, ms in chosen.items():
        extra = sorted(set(ms) - set(get_task(t).modalities))
        if extra:
            raise AssemblyError(f"modalities[{t!r}] = {ms}: task {t!r} reads {list(get_task(t).modalities)}")
    if datasets is None:
        datasets = load_task_data(data, tasks, streaming=streaming, rank=rank, world_size=world_size, **load_kwargs)
    datasets = select_rows({t: datasets[t] for t in tasks}, row_modality or {})
    missing = [t for t in tasks if "train" not in datasets[t]]
    if missing:
        raise AssemblyError(f"tasks {missing} have no train split in {str(data)!r}")
    train = {t: datasets[t]["train"] for t in tasks}
    limit = STREAMED_FACT_ROWS if streaming else None
    panels = {t: read_gene_panels(data, t) for t in tasks if "scrna" in chosen[t]}
    data_procs, notes = _data_processors(train, chosen, panels, limit)
    facts = DataFacts(
        num_genes=len(data_procs["scrna"].genes) if "scrna" in data_procs else None,
        eeg_channels=len(data_procs["eeg"].channels) if "eeg" in data_procs else None,
        eeg_n_times=data_procs["eeg"].n_times if "eeg" in data_procs else None,
    )
    all_modalities = list(dict.fromkeys(m for ms in chosen.values() for m in ms))
    tokenizers = _sequence_tokenizers(all_modalities, encoders, train)
    vocab_sizes = {m: len(tok) for m, tok in tokenizers.items() if tok is not None}
    if "dna" in all_modalities and "dna" not in vocab_sizes:
        from multimed_hf.processors.dna import kmer_vocabulary

        vocab_sizes["dna"] = len(kmer_vocabulary(6))
    choice = choose_encoders(encoders, all_modalities, facts, vocab_sizes)
    processor = assemble_processor(train, chosen, choice, tokenizers, panels, data_procs)
    for m, settings in (processor_overrides or {}).items():
        proc = processor.processor_for(m)
        for key, value in settings.items():
            if not hasattr(proc, key):
                raise AssemblyError(f"processor_overrides[{m!r}]: {type(proc).__name__} has no setting {key!r}")
            setattr(proc, key, value)
    stats = regression_statistics(train)
    kwargs = dict(config_kwargs or {})
    size = hidden_size or choice.hidden_size
    kwargs.setdefault("fusion_num_heads", 4 if size % 4 == 0 else 1)
    config = MultiMedConfig.from_tasks(tasks, encoders=choice.specs, hidden_size=size, fusion=fusion,
                                       vocabularies=processor.vocabularies, modalities=chosen,
                                       regression_stats=stats, **kwargs)
    model = None
    if build_model:
        from multimed_hf.modeling_multimed import MultiMedModel

        model = MultiMedModel.from_encoders_pretrained(config) if choice.pretrained else MultiMedModel(config)
    notes += [f"{column}: regression target standardised with training mean {m:.4g}, std {s:.4g}"
              for column, (m, s) in stats.items()]
    return Assembly(processor=processor, config=config, model=model, datasets=datasets, modalities=chosen,
                    encoders=choice, facts=facts, notes=notes)
