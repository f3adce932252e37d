"""The task registry: the single source of truth about MultiMed's eleven tasks and their public sources."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

__all__ = [
    "ColumnSpec",
    "LabelSpec",
    "SourceSpec",
    "TaskSpec",
    "UnknownTaskError",
    "register_task",
    "get_task",
    "list_tasks",
    "get_source",
    "register_label_kind",
    "unregister_label_kind",
    "MODALITIES",
    "IMAGE_MODALITIES",
    "LABEL_KINDS",
]

#: Every modality MultiMed knows, in the paper's order (plus fundus photographs and VQA text); ``"figure"`` is a
#: scientific figure of any kind (PMC: micrographs, plots, scans, diagrams), read by the ``pmc_pairs`` extra.
MODALITIES = (
    "text", "oct", "fundus", "xray", "ct", "mri", "pathology", "mammography",
    "eeg", "dna", "scrna", "protein", "figure",
)
IMAGE_MODALITIES = ("oct", "fundus", "xray", "ct", "mri", "pathology", "mammography", "figure")

#: Column dtypes the data layer knows how to type (see ``multimed_hf.data.features``).
COLUMN_DTYPES = (
    "image", "string", "bool", "int32", "int64", "float32", "float64",
    "list_int32", "list_float32", "list_string", "array2d_float32", "coords_float32", "json",
)
_LABEL_KINDS: dict[str, str] = {}
#: The label kinds a ``LabelSpec`` may name, each with what its value is (a read-only view of the table
#: ``register_label_kind`` adds to; each layer keeps its own table of how a kind behaves, e.g.
#: ``multimed_hf.data.label_kinds``, ``multimed_hf.output_kinds``, ``multimed_hf.metrics.output_metrics``).
LABEL_KINDS: Mapping[str, str] = MappingProxyType(_LABEL_KINDS)
PROBLEM_TYPES = (
    "single_label_classification", "multi_label_classification", "regression", "structure", "vqa",
    # image-text pairs: the pairing is the supervision (in-batch captions are the negatives), no label column
    "contrastive",
)


def register_label_kind(name: str, description: str) -> str:
    """Let ``LabelSpec``s name the label kind ``name`` (its value described in a few words); a name already taken
    raises ``ValueError``. The kind's behaviour is one entry in each layer's own table."""
    if not isinstance(name, str) or not name.isidentifier():
        raise TypeError(f"register_label_kind: expected a label kind name (an identifier), got {name!r}")
    if name in _LABEL_KINDS:
        raise ValueError(f"label kind {name!r} is already registered ({_LABEL_KINDS[name]})")
    _LABEL_KINDS[name] = description
    return name


def unregister_label_kind(name: str) -> None:
    """Remove the label kind ``name`` (for tests and plug-ins that add one for a while); labels already made keep it."""
    if name not in _LABEL_KINDS:
        raise ValueError(f"label kind {name!r} is not registered; the label kinds are {tuple(_LABEL_KINDS)}")
    del _LABEL_KINDS[name]


for _name, _description in (
    ("class", "one class name of a fixed list"),
    ("multilabel", "the class names present, of a fixed list; the rest absent or unknown"),
    ("regression", "one real number"),
    ("text", "free text; classified over a vocabulary fitted per build"),
    ("coords", "per-residue 3D coordinates (L x 3) following one modality's residues"),
):
    register_label_kind(_name, _description)
del _name, _description


class UnknownTaskError(KeyError, ValueError):
    """A task or source name that the registry does not hold."""

    def __str__(self):  # KeyError quotes its message; show it plainly
        return str(self.args[0])


@dataclass(frozen=True)
class ColumnSpec:
    """One typed input or metadata column of a task's dataset config."""

    name: str
    dtype: str
    description: str = ""
    #: The modality this column feeds; ``"image"`` columns take theirs from the row's ``modality`` column.
    modality: str = ""
    #: A sequence column: the position an encoder's window of it centres on where the sequence is longer than the
    #: encoder reads (the TSS of a promoter window); None: its middle.
    crop_center: int | None = None

    def __post_init__(self):
        if self.modality and self.modality not in (*MODALITIES, "image"):
            raise ValueError(f"column {self.name!r}: modality {self.modality!r} is not one of {MODALITIES}")
        if self.dtype not in COLUMN_DTYPES:
            raise ValueError(f"column {self.name!r}: dtype {self.dtype!r} is not one of {COLUMN_DTYPES}")


@dataclass(frozen=True)
class LabelSpec:
    """One label column: its kind, canonical class names (for classes) and meaning."""

    name: str
    kind: str
    names: tuple[str, ...] = ()
    description: str = ""
    #: For a regression label with a fixed binning (bone age): bin edges, and the bin column's name.
    bins: tuple[float, ...] = ()
    #: The task's metrics that apply to this label; empty means all of them.
    metrics: tuple[str, ...] = ()
    #: A coarser label column this one refines (breast_cancer: subtype -> malignancy), and each class's parent
    #: class there, as ``((class, parent class), ...)``; the builders check a sample's two labels against it.
    parent_label: str = ""
    parent_of: tuple[tuple[str, str], ...] = ()
    #: For a per-residue label (coords): the modality whose residues (one token each) its rows follow.
    residue_modality: str = ""

    def __post_init__(self):
        if self.kind not in LABEL_KINDS:
            raise ValueError(f"label {self.name!r}: kind {self.kind!r} is not one of {tuple(LABEL_KINDS)}")
        if self.kind in ("class", "multilabel") and not self.names:
            raise ValueError(f"label {self.name!r}: a {self.kind} label needs its canonical class names")
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"label {self.name!r}: class names repeat: {self.names}")
        if self.residue_modality and self.residue_modality not in MODALITIES:
            raise ValueError(f"label {self.name!r}: residue_modality {self.residue_modality!r} is not one of "
                             f"{MODALITIES}")

    @property
    def num_classes(self) -> int:
        return len(self.names)

    @property
    def parents(self) -> dict[str, str]:
        """``{class: its class in parent_label}`` (empty without a hierarchy)."""
        return dict(self.parent_of)


@dataclass(frozen=True)
class SourceSpec:
    """One public source behind a task: the facts a card states; its builder holds the reading code."""

    name: str
    title: str
    modality: str
    citation: str
    license: str
    redistributable: bool
    homepage: str
    layout: str
    grouping: str
    #: Known releases and their file counts, e.g. ``{"v2 (Mendeley/Kaggle)": 84484}``; informs, never enforces.
    expected_files: Mapping[str, int] = field(default_factory=dict)
    #: Per label column, the publisher's names mapped to the canonical names.
    label_map: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    notes: str = ""
    #: The organ every record of this source shows, where the source states it (a lower-case UBERON-style name,
    #: as CELLxGENE's ``tissue_general`` names organs: brain, eye, lung, breast, blood); None where the source
    #: states none or its records differ (their files then say, e.g. cellxgene's ``tissue_general``). The builders
    #: of a config with an ``organ`` column fill it from here for such sources.
    organ: str | None = None
    #: Where the source records each subject's age, in words (the field its builder reads); "" where it records
    #: none. A config with an ``age`` column holds it in years for these sources, None for the others.
    age: str = ""
    #: For a redistributable source whose folder may hold other files (a user's own .h5ad beside scanpy's), the
    #: names of the files its licence covers, as ``fnmatch`` patterns matched case-blind (the names its builder
    #: takes for the publisher's file): a build whose samples come from any other file is not pushed
    #: (``data.push.left_out_sources``); empty where every file of the layout is the publisher's.
    licensed_files: tuple[str, ...] = ()
    #: Files a source's rows carry data of, that the user brings and whose terms are their own (``fnmatch``
    #: patterns, case-blind): a build that read one is not pushed (TCGA promoters' pseudo-bulk profiles of a user's
    #: .h5ad).
    own_terms_files: tuple[str, ...] = ()

    @property
    def redistribution(self) -> str:
        """Whether a build of this source may be pushed, in words: what its licence covers where not every file."""
        if not self.redistributable:
            return "not redistributable"
        named = lambda patterns: ", ".join(f"`{p}`" for p in patterns)  # noqa: E731  (Markdown on the card)
        limits = ([f"the files named {named(self.licensed_files)} only"] if self.licensed_files else []) + (
            [f"not a build that read a file of yours, {named(self.own_terms_files)}, whose terms are its own"]
            if self.own_terms_files else [])
        return "redistributable" + (f": {'; '.join(limits)}" if limits else "")

    def __post_init__(self):
        if self.modality not in MODALITIES:
            raise ValueError(f"source {self.name!r}: modality {self.modality!r} is not one of {MODALITIES}")
        if self.organ is not None and (not isinstance(self.organ, str) or not self.organ.strip()
                                       or self.organ != self.organ.strip().lower()):
            raise ValueError(f"source {self.name!r}: organ {self.organ!r} must be None or a lower-case organ name "
                             f"(e.g. 'lung')")
        object.__setattr__(self, "expected_files", MappingProxyType(dict(self.expected_files)))
        object.__setattr__(
            self, "label_map", MappingProxyType({k: MappingProxyType(dict(v)) for k, v in self.label_map.items()})
        )


@dataclass(frozen=True)
class TaskSpec:
    """One MultiMed task, as ``../shared/TASKS.md`` defines it."""

    name: str
    title: str
    sample: str
    modalities: tuple[str, ...]
    problem_type: str
    labels: tuple[LabelSpec, ...]
    metrics: tuple[str, ...]
    grouping_key: str
    inputs: tuple[ColumnSpec, ...]
    metadata: tuple[ColumnSpec, ...] = ()
    sources: tuple[SourceSpec, ...] = ()
    #: Near duplicates: two images whose normalised DCT hash (64 bits) differs in at most this many bits...
    near_duplicate_distance: int = 10
    #: ... and whose wavelet hash (64 bits) differs in at most this many (both must agree; see data/images.py).
    near_duplicate_second_distance: int = 6
    #: Train/validation/test fractions where the publisher has no split (by a hash of the group id).
    split_fractions: tuple[float, float, float] = (0.70, 0.15, 0.15)
    #: Where the publisher has a test split: fraction of the training groups that become validation.
    validation_fraction: float = 0.15
    notes: str = ""
    #: An optional config beside the eleven tasks, e.g. ``pmc_pairs``: ``list_tasks()`` leaves it out unless asked.
    extra: bool = False

    def __post_init__(self):
        for m in self.modalities:
            if m not in MODALITIES:
                raise ValueError(f"task {self.name!r}: modality {m!r} is not one of {MODALITIES}")
        if self.problem_type not in PROBLEM_TYPES:
            raise ValueError(f"task {self.name!r}: problem_type {self.problem_type!r} is not one of {PROBLEM_TYPES}")
        if self.problem_type == "contrastive":
            if self.labels:
                raise ValueError(
                    f"task {self.name!r}: a contrastive task takes its supervision from the pairing and has no label "
                    f"columns; got {[label.name for label in self.labels]}"
                )
            paired = [c.name for c in self.inputs if c.modality]
            if len(paired) != 2:
                raise ValueError(
                    f"task {self.name!r}: a contrastive task pairs exactly two input columns that feed a modality; "
                    f"got {paired}"
                )
        elif not self.labels:
            raise ValueError(f"task {self.name!r}: a {self.problem_type} task needs at least one label column")
        if abs(sum(self.split_fractions) - 1.0) > 1e-9:
            raise ValueError(f"task {self.name!r}: split_fractions {self.split_fractions} do not sum to 1")
        names = [c.name for c in (*self.inputs, *self.labels, *self.metadata)]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"task {self.name!r}: column names repeat: {dupes}")
        for label in self.labels:
            if label.residue_modality and label.residue_modality not in self.modalities:
                raise ValueError(
                    f"task {self.name!r}, label {label.name!r}: residue_modality {label.residue_modality!r} is not "
                    f"among the task's modalities {self.modalities}"
                )
            if label.parent_label:
                parent = self.label(label.parent_label)
                if set(label.parents) != set(label.names) or not set(label.parents.values()) <= set(parent.names):
                    raise ValueError(
                        f"task {self.name!r}, label {label.name!r}: parent_of must give each of {label.names} a "
                        f"class of {parent.name!r} {parent.names}; got {label.parents}"
                    )
            stray = sorted(set(label.metrics) - set(self.metrics))
            if stray:
                raise ValueError(
                    f"task {self.name!r}, label {label.name!r}: metrics {stray} are not among the task's {self.metrics}"
                )
        seen = set()
        for s in self.sources:
            if s.name in seen:
                raise ValueError(f"task {self.name!r}: source {s.name!r} is listed twice")
            seen.add(s.name)
            for column, mapping in s.label_map.items():
                label = self.label(column)
                if label.kind in ("class", "multilabel"):
                    bad = sorted(set(mapping.values()) - set(label.names))
                    if bad:
                        raise ValueError(
                            f"task {self.name!r}, source {s.name!r}: label_map[{column!r}] maps to {bad}, "
                            f"which are not among the canonical names {label.names}"
                        )

    def label(self, name: str) -> LabelSpec:
        for label in self.labels:
            if label.name == name:
                return label
        raise UnknownTaskError(
            f"task {self.name!r} has no label column {name!r}; its label columns are {[l.name for l in self.labels]}"
        )

    def source(self, name: str) -> SourceSpec:
        for source in self.sources:
            if source.name == name:
                return source
        raise UnknownTaskError(
            f"task {self.name!r} has no source {name!r}; its sources are {[s.name for s in self.sources]}"
            + _suggest(name, [s.name for s in self.sources])
        )

    @property
    def label_names(self) -> tuple[str, ...]:
        return tuple(label.name for label in self.labels)


_TASKS: dict[str, TaskSpec] = {}


def _suggest(name: str, choices) -> str:
    close = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.5)
    return f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""


def register_task(spec: TaskSpec) -> TaskSpec:
    """Add a task to the registry; a name already taken raises ``ValueError``."""
    if spec.name in _TASKS:
        raise ValueError(f"task {spec.name!r} is already registered")
    _TASKS[spec.name] = spec
    return spec


def get_task(name: str) -> TaskSpec:
    """The registered task ``name``; an unknown name raises, suggesting close matches."""
    try:
        return _TASKS[name]
    except KeyError:
        raise UnknownTaskError(
            f"unknown task {name!r}{_suggest(name, _TASKS)} (known tasks: {', '.join(_TASKS)})"
        ) from None


def list_tasks(include_extras: bool = False) -> list[str]:
    """Names of the registered tasks, in registration order: the eleven MultiMed tasks, and with
    ``include_extras=True`` the optional extra configs too (``TaskSpec.extra``, e.g. ``pmc_pairs``)."""
    return [name for name, spec in _TASKS.items() if include_extras or not spec.extra]


def get_source(name: str, task: str | None = None) -> tuple[TaskSpec, SourceSpec]:
    """The task and source spec of the source called ``name`` (a source may serve several tasks, e.g. its
    images in their own task and in ``disease``: then name the ``task``)."""
    if task is not None:
        spec = get_task(task)
        return spec, spec.source(name)
    found = [(t, s) for t in _TASKS.values() for s in t.sources if s.name == name]
    if len(found) == 1:
        return found[0]
    if found:
        raise ValueError(
            f"source {name!r} serves several tasks ({', '.join(t.name for t, _ in found)}): pass task=..."
        )
    every = sorted({s.name for t in _TASKS.values() for s in t.sources})
    raise UnknownTaskError(f"unknown source {name!r}{_suggest(name, every)} (known sources: {', '.join(every)})")


from multimed_hf import _task_entries  # noqa: E402,F401  (registers the eleven tasks and the extras)
