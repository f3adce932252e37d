"""From a built folder and task names to a trainable model: processor, vocabularies, target statistics, config."""

from __future__ import annotations

import contextlib
import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from multimed_hf.tasks import IMAGE_MODALITIES, get_task
from multimed_hf.training.encoder_presets import (
    DataFacts,
    EncoderChoice,
    choose_encoders,
    pretrained_id,
    small_text_tokenizer,
    standardizes_expression,
)
from multimed_hf.training.loading import column_values, load_task_data, read_gene_panels, rows_with_modality

__all__ = [
    "Assembly",
    "AssemblyError",
    "HubLoadError",
    "assemble",
    "assemble_processor",
    "expression_processor_from_data",
    "eeg_processor_from_data",
    "regression_statistics",
    "fit_vocabularies",
    "select_rows",
    "loading_from_hub",
]

logger = logging.getLogger(__name__)

#: Rows read to settle processor facts (gene panels, EEG channel sets, value scales) from a streamed split.
STREAMED_FACT_ROWS = 2000
#: Library size the expression rows are scaled to when the training rows hold raw counts (scanpy's default).
COUNTS_TARGET_SUM = 1e4


class AssemblyError(ValueError):
    """Data and encoders that cannot be put together into a trainable model."""


class HubLoadError(AssemblyError):
    """A Hub encoder, tokenizer or image processor that could not be fetched (no internet, not cached, a typo)."""


#: What to do when a Hub encoder cannot be fetched.
HUB_ENCODER_ADVICE = ("`--encoders hub` (the default) fetches the paper's pretrained encoders: run where "
                      "huggingface.co is reachable, fetch them beforehand into the cache this run reads (`hf download "
                      "ID`; HF_HOME), or train offline with `--encoders small`")


@contextlib.contextmanager
def loading_from_hub(what: str, source: str, advice: str = HUB_ENCODER_ADVICE):
    """Turn the ``OSError`` of a failed ``from_pretrained(source)`` into a ``HubLoadError`` that names what was
    loaded, transformers' reason and ``advice``."""
    try:
        yield
    except OSError as err:
        reason = str(err).strip().splitlines()[0].rstrip(".") if str(err).strip() else type(err).__name__
        raise HubLoadError(f"{what} {source!r} could not be loaded from the Hub or the local cache: {reason}. "
                           f"{advice}") from err


@contextlib.contextmanager
def _overriding(modality: str, settings: Mapping[str, Any], advice: str = ""):
    """Turn a processor's refusal of ``--processor_overrides`` settings (its constructor's checks) into an
    ``AssemblyError`` naming the flag and the settings."""
    try:
        yield
    except AssemblyError:
        raise
    except (ValueError, TypeError) as err:  # ProcessorError included
        raise AssemblyError(f"--processor_overrides {{{modality!r}: {dict(settings)!r}}}: {err}{advice}") from err


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


def _scrna_columns(task: str) -> tuple[str, str]:
    """(indices column, values column) of a task's scrna input."""
    cols = [c for c in get_task(task).inputs if c.modality == "scrna"]
    return (next(c.name for c in cols if c.dtype == "list_int32"),
            next(c.name for c in cols if c.dtype == "list_float32"))


def _union_panels(panels_by_task: Mapping[str, Mapping[str, Sequence[str]]]) -> dict[str, list[str]]:
    """Every task's ``gene_panels.json`` panels in one map; one id naming two gene lists raises."""
    merged: dict[str, list[str]] = {}
    for task, panels in panels_by_task.items():
        for panel, genes in panels.items():
            if panel in merged and list(merged[panel]) != list(genes):
                raise AssemblyError(f"gene panel {panel!r} names different gene lists in the gene_panels.json assets "
                                    f"of tasks sharing the scrna encoder ({sorted(panels_by_task)}, seen again in "
                                    f"{task!r}); panel ids must identify one gene list")
            merged[panel] = list(genes)
    return merged


def expression_processor_from_data(train_by_task: Mapping[str, Any],
                                   panels_by_task: Mapping[str, Mapping[str, Sequence[str]]], *,
                                   limit: int | None = None, standardize: bool = False,
                                   settings: Mapping[str, Any] | None = None):
    """One ``ExpressionProcessor`` for every task in ``train_by_task`` that reads scrna (one model has one scrna
    encoder, whose input size is the processor's gene count).

    Its recorded gene order is the union of the gene panels the training rows of all those tasks use (the panel of
    most rows first, then each further panel's new genes): each task's rows are mapped into it by gene name, genes
    a row's panel does not measure are absent. Each panel's rows are scaled as their stored values need (counts:
    library-size normalised and log1p-transformed; log-scale values such as scanpy's ``.raw``: kept as stored), so
    raw counts of one source and log values of another end up on one scale; panels no training row uses (only in
    validation/test) take the scaling of the panel of most rows. ``settings`` (``--processor_overrides``) replace
    these choices through the processor's constructor (``with_settings``), before ``standardize`` fits a per-gene
    standardisation on the training rows (``ExpressionProcessor.fit_standardization``), so it fits what is fed."""
    from multimed_hf.processors.expression import ExpressionProcessor

    tasks = list(train_by_task)
    seen, used = {}, Counter()
    for task in tasks:
        index_col, value_col = _scrna_columns(task)
        seen[task] = column_values(train_by_task[task], ["gene_panel", index_col, value_col], limit)
        task_used = Counter(p for p in seen[task]["gene_panel"] if p is not None)
        missing = sorted(set(task_used) - set(panels_by_task[task]))
        if missing:
            raise AssemblyError(f"task {task!r}: training rows use gene panels {missing} that no gene_panels.json "
                                f"asset of the data lists (known: {sorted(panels_by_task[task])})")
        if not task_used:
            raise AssemblyError(f"task {task!r}: no training row has expression values, so no gene order can be "
                                f"fixed")
        used.update(task_used)
    panels = _union_panels(panels_by_task)
    genes: list[str] = []
    known: set[str] = set()
    for panel, _ in used.most_common():
        for gene in panels[panel]:
            if gene not in known:
                known.add(gene)
                genes.append(gene)
    by_panel: dict[str, list] = {}
    for task in tasks:
        value_col = _scrna_columns(task)[1]
        for panel, values in zip(seen[task]["gene_panel"], seen[task][value_col]):
            if panel is not None and len(by_panel.setdefault(panel, [])) < 200:
                by_panel[panel].append(values)
    scales = {p: _value_scale(v) for p, v in by_panel.items()}
    chosen = max(scales, key=lambda p: used[p])
    total, log1p, why = scales[chosen]
    who = f"{tasks[0]}" if len(tasks) == 1 else f"{', '.join(tasks)} (one shared scrna encoder)"
    notes = [f"{who}: scrna gene order = union of {len(used)} panel(s), {len(genes)} genes"]
    notes += [f"  panel {p} ({used[p]} training rows): {scales[p][2]}" for p in sorted(scales, key=lambda p: -used[p])]
    processor = ExpressionProcessor(genes=genes, panels={p: panels[p] for p in used}, normalize_total=total,
                                    log1p=log1p)
    for panel, (p_total, p_log1p, _) in scales.items():
        if (p_total, p_log1p) != (total, log1p):
            processor.set_panel_scaling(panel, normalize_total=p_total, log1p=p_log1p)
    for panel, gene_list in panels.items():  # validation/test rows may use panels training did not
        if panel not in processor.panels:
            processor.add_panel(panel, gene_list)
    if settings:
        with _overriding("scrna", settings):
            processor = processor.with_settings(**settings)
        notes.append(f"{who}: scrna settings {sorted(settings)} from --processor_overrides")
    if standardize:
        rows = ((i, v, p) for task in tasks for i, v, p in zip(*(seen[task][c] for c in (*_scrna_columns(task),
                                                                                         "gene_panel")))
                if i is not None and v is not None and p is not None)
        n = processor.fit_standardization(rows)
        notes.append(f"{who}: scrna values standardised per gene (mean and std over {n} training rows)")
    return processor, notes


def eeg_processor_from_data(train_by_task: Mapping[str, Any], *, limit: int | None = None,
                            settings: Mapping[str, Any] | None = None):
    """One ``EEGProcessor`` for every task in ``train_by_task`` that reads EEG: the union of their training rows'
    channel sets (by normalised name, the most common set's order first; channels a row lacks are zero-filled),
    resampled to the lowest training sampling rate (never upsampling), epochs cut or padded to the longest training
    epoch at that rate. ``settings`` (``--processor_overrides``) replace these choices, and what follows from them
    is derived from the given values (a given ``sfreq``: the epoch length and filter edges at that rate); the
    constructor checks the result."""
    from multimed_hf.processors.eeg import EEGProcessor, normalize_channel_name

    sets, lengths = Counter(), []
    for task, train in train_by_task.items():
        signal = next(c.name for c in get_task(task).inputs if c.modality == "eeg")
        seen = column_values(train, ["channel_names", "sfreq"], limit)
        # rows without the EEG modality (a mixed config's other rows) have no epoch: skipped, row by row
        rows = [(tuple(names), n, float(rate)) for names, rate, n in
                zip(seen["channel_names"], seen["sfreq"], _epoch_lengths(train, signal, limit)) if names and rate and n]
        if not rows:
            raise AssemblyError(f"task {task!r}: no training row has an EEG epoch ({signal!r}) with its channel "
                                f"names and sampling rate ('channel_names', 'sfreq')")
        sets.update(names for names, _, _ in rows)
        lengths += [(n, rate) for _, n, rate in rows]
    channels, keys = [], set()
    for names, _ in sets.most_common():
        for name in names:
            if normalize_channel_name(name) not in keys:
                keys.add(normalize_channel_name(name))
                channels.append(name)
    settings = dict(settings or {})
    with _overriding("eeg", settings):
        channels = settings.get("channels", channels)
        sfreq = settings.get("sfreq", min(rate for _, rate in lengths))
        n_times = settings.get("n_times", int(max(math.ceil(n * sfreq / r) for n, r in lengths)))
        h_freq = settings.get("h_freq", min(40.0, 0.45 * sfreq))
        l_freq = settings.get("l_freq", 4.0 if h_freq is None else min(4.0, h_freq / 2))
        processor = EEGProcessor(channels, sfreq=sfreq, l_freq=l_freq, h_freq=h_freq, n_times=n_times,
                                 missing_channels=settings.get("missing_channels", "zero"))
        processor = processor.with_settings(**settings)  # the rest (and unknown keys refused)
    who = ", ".join(train_by_task)
    note = (f"{who}: EEG = union of {len(sets)} channel set(s) ({len(channels)} channels, absent ones zero-filled), "
            f"resampled to {sfreq:g} Hz (lowest training rate), {n_times} samples per epoch")
    if settings:
        note = (f"{who}: EEG {len(processor.channels)} channels at {processor.sfreq:g} Hz, {processor.n_times} "
                f"samples per epoch, with settings {sorted(settings)} from --processor_overrides (training rows: "
                f"{len(sets)} channel set(s))")
    return processor, [note]


def _epoch_lengths(train, column: str, limit: int | None) -> list[int | None]:
    """Samples per epoch of each row (its first channel's length), None for a row without an epoch; the rows are
    the dataset's own (a select / filter honoured), without decoding the arrays."""
    data = getattr(train, "data", None)
    if data is not None and hasattr(train, "select"):
        import pyarrow.compute as pc

        col = getattr(data, "table", data).column(column)
        indices = getattr(train, "_indices", None)  # a select / filter: its rows, in its order (this column only)
        if indices is not None:
            rows = indices.column(0)
            col = col.take(rows if limit is None else rows.slice(0, limit))
        elif limit is not None:
            col = col.slice(0, limit)
        has = pc.fill_null(pc.greater(pc.list_value_length(col), 0), False)
        firsts = iter(pc.list_value_length(pc.list_element(pc.filter(col, has), 0)).to_pylist())
        return [next(firsts) if h else None for h in has.to_pylist()]
    return [len(v[0]) if v else None for v in column_values(train, [column], limit)[column]]


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

    if not source:
        return ImageProcessor(default_image_processor(size))
    with loading_from_hub("the image processor of", source):
        return ImageProcessor(AutoImageProcessor.from_pretrained(source))


def _tokenizer(source: str | None, modality: str, train_texts):
    if source:
        from transformers import AutoTokenizer

        with loading_from_hub(f"the {modality} tokenizer of", source):
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


def _crop_center(tasks: Iterable[str], modality: str) -> int | None:
    """Where the window of a ``modality`` sequence longer than its encoder reads centres: the registry's
    ``ColumnSpec.crop_center`` of the tasks' columns of that modality (the promoter's TSS), None (the middle) where
    none or several differ."""
    centres = {c.crop_center for t in tasks for c in get_task(t).inputs if c.modality == modality}
    return centres.pop() if len(centres) == 1 else None


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
        procs["dna"] = DnaProcessor(tok, k=choice.dna_k, max_length=lengths.get("dna", 512), truncation_side="center",
                                    crop_center=_crop_center(train_by_task, "dna"))
    if "protein" in needed:
        procs["protein"] = ProteinProcessor(tokenizers.get("protein"), max_length=lengths.get("protein", 1024))
    missing = [m for m in needed if m not in procs and not (m in IMAGE_MODALITIES and "image" in procs)]
    if missing:
        raise AssemblyError(f"no processor was assembled for modalities {missing}")
    processor = MultiMedProcessor(processors=procs)
    fit_vocabularies(processor, train_by_task)
    return processor


def _data_processors(train_by_task, modalities, panels, limit, standardize_expression: bool = False,
                     overrides: Mapping[str, Mapping[str, Any]] | None = None):
    """Expression and EEG processors (their sizes decide the encoders'): one per modality, from the training rows of
    every task that reads it (tasks sharing a modality share its processor and encoder), with their
    ``--processor_overrides`` settings applied as they are made (so the encoders are sized for them)."""
    procs, notes = {}, []
    overrides = overrides or {}
    scrna = {t: train_by_task[t] for t, ms in modalities.items() if "scrna" in ms}
    if scrna:
        procs["scrna"], made = expression_processor_from_data(scrna, {t: panels[t] for t in scrna}, limit=limit,
                                                              standardize=standardize_expression,
                                                              settings=overrides.get("scrna"))
        notes += made
    eeg = {t: train_by_task[t] for t, ms in modalities.items() if "eeg" in ms}
    if eeg:
        procs["eeg"], made = eeg_processor_from_data(eeg, limit=limit, settings=overrides.get("eeg"))
        notes += made
    return procs, notes


#: Modalities whose processors are made from the training rows (``_data_processors``), overrides included.
DATA_MODALITIES = ("scrna", "eeg")


def _apply_overrides(processor, overrides: Mapping[str, Mapping[str, Any]], choice: EncoderChoice):
    """``(processor, notes)``: ``processor`` with each overridden modality processor (not the data-made ones)
    rebuilt through its constructor with the merged settings (``ModalityProcessor.with_settings``): settings are
    checked, derived state follows, and what is saved is what is fed. ``"image"`` stands for every image processor;
    an image modality sharing the ``"image"`` processor gets its own. Settings the encoders cannot read (a k-mer
    size the tokenizer lacks, more tokens than the encoder's positions) are refused."""
    from multimed_hf.processing_multimed import IMAGE_KEY, MultiMedProcessor

    procs = dict(processor.processors)
    notes = []
    for m in sorted(overrides, key=lambda m: m != IMAGE_KEY):
        if m in DATA_MODALITIES and m in procs:  # applied as the processor was made from the rows
            continue
        settings = dict(overrides[m])
        limit = choice.max_lengths.get(m)
        given = settings.get("max_length")
        if limit and isinstance(given, (int, float)) and given > limit:
            raise AssemblyError(f"--processor_overrides {{{m!r}: {settings!r}}}: max_length={given} is more than "
                                f"the {m} encoder of --encoders {choice.name} reads ({limit} tokens); give "
                                f"max_length <= {limit}, or a larger max_lengths (and an encoder that reads it) in "
                                f"an --encoders JSON file")
        advice = ""
        if m == "dna" and "k" in settings:
            advice = (f"; the DNA tokenizer and encoder of --encoders {choice.name} read {choice.dna_k}-mers: leave k "
                      f"out of --processor_overrides, or give dna_k in an --encoders JSON file")
        if m == IMAGE_KEY:
            targets = {k: p for k, p in procs.items() if k == IMAGE_KEY or k in IMAGE_MODALITIES}
            if not targets:
                raise AssemblyError(f"--processor_overrides {{{m!r}: ...}}: the run reads no image modality")
        else:  # an image modality that shares the "image" processor gets its own
            current = procs.get(m) or (procs.get(IMAGE_KEY) if m in IMAGE_MODALITIES else None)
            if current is None:
                raise AssemblyError(f"--processor_overrides {{{m!r}: ...}}: the run reads no {m!r} modality "
                                    f"(its processors: {sorted(procs)})")
            targets = {m: current}
        for key, current in targets.items():
            with _overriding(m, settings, advice):
                procs[key] = current.with_settings(**settings)
        notes.append(f"{m}: processor settings {settings} from --processor_overrides")
    if not notes:
        return processor, notes
    return MultiMedProcessor(processors=procs, vocabularies=processor.vocabularies,
                             missing_modality=processor.missing_modality,
                             unknown_text_label=processor.unknown_text_label), notes


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
             processor_overrides: Mapping[str, Mapping[str, Any]] | None = None,
             standardize_expression: bool | None = None, **load_kwargs) -> Assembly:
    """The processor, config and model for ``tasks`` of a built folder (or Hub dataset id) ``data``.

    ``encoders``: ``"hub"`` (the paper's encoders; weights via ``from_encoders_pretrained``), ``"small"`` (small
    random-init encoders), ``"domain_specific"`` (small from-scratch models: ResNet, LSTM, MLP, 1-layer
    transformers) or a JSON file of specs (``choose_encoders``). ``modalities``: task -> modalities read (default:
    all of the task's); ``row_modality``: task -> train and evaluate only on rows holding this modality (the
    ``unimodal`` family on tasks whose rows hold one of several modalities). ``datasets`` reuses already loaded
    ``{task: {split: Dataset}}`` (e.g. a federated client's partition). ``streaming``: every split is an
    ``IterableDataset``; the processor's facts (gene panels, channel sets and value scales from the first
    ``STREAMED_FACT_ROWS`` training rows, vocabularies and target statistics from all of them) come from the whole
    training stream, alike on every process, and with ``world_size > 1`` the training split is then sharded per
    process (``split_dataset_by_node``); evaluation splits stay whole (every process evaluates its share of them).
    ``processor_overrides``: modality ->
    settings of its processor (e.g. ``{"dna": {"crop_center": 7000}}``; ``"image"``: every image processor), which
    is rebuilt through its constructor with them (its checks run, derived state follows; the EEG and expression
    processors take them as they are made from the rows, so their encoders are sized for them); settings a
    processor or the encoders refuse raise ``AssemblyError`` naming them.
    ``standardize_expression``: standardise scrna values per gene with training statistics (default: the encoder
    preset's choice, ``encoder_presets.standardizes_expression``).

    Tasks that share a modality share its processor and encoder: one expression processor over the union of their
    gene panels (each task's rows mapped into it by gene name), one EEG processor over the union of their channels.
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
    shard = datasets is None and streaming and world_size > 1
    if datasets is None:  # streamed: every process reads the whole streams for the facts; training rows sharded below
        datasets = load_task_data(data, tasks, streaming=streaming, **load_kwargs)
    datasets = select_rows({t: datasets[t] for t in tasks}, row_modality or {})
    missing = [t for t in tasks if "train" not in datasets[t]]
    if missing:
        raise AssemblyError(f"tasks {missing} have no train split in {str(data)!r}")
    train = {t: datasets[t]["train"] for t in tasks}
    limit = STREAMED_FACT_ROWS if streaming else None
    panels = {t: read_gene_panels(data, t) for t in tasks if "scrna" in chosen[t]}
    if standardize_expression is None:
        standardize_expression = standardizes_expression(encoders)
    data_procs, notes = _data_processors(train, chosen, panels, limit, standardize_expression, processor_overrides)
    facts = DataFacts(
        num_genes=len(data_procs["scrna"].genes) if "scrna" in data_procs else None,
        eeg_channels=len(data_procs["eeg"].channels) if "eeg" in data_procs else None,
        eeg_n_times=data_procs["eeg"].n_times if "eeg" in data_procs else None,
    )
    all_modalities = list(dict.fromkeys(m for ms in chosen.values() for m in ms))
    tokenizers = _sequence_tokenizers(all_modalities, encoders, train)
    vocab_sizes = {m: len(tok) for m, tok in tokenizers.items() if tok is not None}  # DNA k-mers: choose_encoders
    choice = choose_encoders(encoders, all_modalities, facts, vocab_sizes)
    processor = assemble_processor(train, chosen, choice, tokenizers, panels, data_procs)
    processor, made = _apply_overrides(processor, processor_overrides or {}, choice)
    notes += made
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

        if choice.pretrained:
            ids = ", ".join(sorted({pretrained_id(spec) for spec in choice.specs.values() if pretrained_id(spec)}))
            with loading_from_hub("the pretrained encoder weights of", ids):
                model = MultiMedModel.from_encoders_pretrained(config)
        else:
            model = MultiMedModel(config)
    notes += [f"{column}: regression target standardised with training mean {m:.4g}, std {s:.4g}"
              for column, (m, s) in stats.items()]
    if shard:  # the same processor and model on every process; each trains on its own shard of the training rows
        from datasets.distributed import split_dataset_by_node

        datasets = {t: {name: split_dataset_by_node(d, rank=rank, world_size=world_size) if name == "train" else d
                        for name, d in splits.items()} for t, splits in datasets.items()}
        notes.append(f"streamed training rows sharded across {world_size} processes (this one: rank {rank}); "
                     f"processor facts from the whole training streams")
    return Assembly(processor=processor, config=config, model=model, datasets=datasets, modalities=chosen,
                    encoders=choice, facts=facts, notes=notes)
