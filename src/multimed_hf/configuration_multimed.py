"""MultiMedConfig: one encoder spec per modality, one head spec per task, the fusion and the loss weights."""

import copy
import difflib
import json
import math
from typing import Any

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

# OUTPUT_KINDS: what a head predicts per label column, the output kind table read live (``register_output_kind``
# adds one); a registry "text" label becomes "class" over a vocabulary.
from .output_kinds import OUTPUT_KINDS, get_output_kind, kind_for_label, kind_of
from .label_text import LABEL_TEXT  # noqa: F401  (registers the "label_text" output kind: zero-shot heads)

__all__ = [
    "MultiMedConfig",
    "DEFAULT_ENCODERS",
    "DEFAULT_EMBEDDERS",
    "FUSION_KINDS",
    "FUSION_METHODS",
    "ENCODER_KINDS",
    "EMBEDDER_KINDS",
    "OUTPUT_KINDS",
    "normalize_encoder_spec",
    "timm_encoder_spec",
]

#: The paper's three fusion families (section 4.3): eq. 2 early, eq. 3/6 intermediate, eq. 4 late.
FUSION_KINDS = ("early", "intermediate", "late")
#: The fusion functions of each family; the first is the default.
FUSION_METHODS = {
    "early": ("concat",),  # phi of eq. 2: every modality's input tokens concatenated into one shared encoder
    "intermediate": ("concat", "mean", "gated", "attention"),  # psi of eq. 3 / phi of eq. 6
    "late": ("weighted_mean", "vote"),  # omega of eq. 4
}
#: Per-modality encoders (intermediate and late fusion).
ENCODER_KINDS = ("auto", "eeg_lstm", "eeg_tcn", "expression", "mlp", "shared")
#: Per-modality input embedders (early fusion): raw inputs -> tokens of the shared size.
EMBEDDER_KINDS = ("patch_embed", "token_embed", "expression_embed", "eeg_embed", "shared")
POOLINGS = ("auto", "cls", "mean", "pooler")
FUSION_TOKENS = ("pooled", "sequence")
#: The loss-weight key of the prediction made from all of a task's modalities (lambda_t).
FUSED = "fused"

_VIT = "google/vit-base-patch16-224-in21k"


def _hub(name: str, pooling: str = "auto") -> dict:
    return {"kind": "auto", "pretrained": name, "config": None, "pooling": pooling, "trust_remote_code": False}


#: Defaults per modality, following the paper's section 5: ViT for imaging, a BERT-family text encoder, DNABERT
#: (k-mer tokens) for genomic sequence, an attention model for scRNA-seq, ESM-2 for protein, an LSTM for EEG.
#: Hub ids need ``MultiMedModel.from_encoders_pretrained`` (it fetches their configs and weights). Every imaging
#: modality of the task registry (``multimed_hf.tasks.IMAGE_MODALITIES``) takes the image entry.
_IMAGE_ENCODER = _hub(_VIT)
_OTHER_ENCODERS = {
    "text": _hub("microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract-fulltext"),
    "dna": _hub("zhihan1996/DNA_bert_6"),
    "protein": _hub("facebook/esm2_t12_35M_UR50D"),
    "scrna": {"kind": "expression", "config": {"num_genes": 2000}},
    "eeg": {"kind": "eeg_lstm", "config": {"num_channels": 64}},
}

#: Early-fusion input embedders per modality; token vocabularies are those of the default encoders' tokenizers
#: (BiomedBERT 30,522 word pieces, DNABERT-6 4,101 6-mers, ESM-2 33 residues), which the processor uses.
_IMAGE_EMBEDDER = {"kind": "patch_embed", "config": {"num_channels": 3, "patch_size": 16}}
_OTHER_EMBEDDERS = {
    "text": {"kind": "token_embed", "config": {"vocab_size": 30522, "pad_token_id": 0}},
    "dna": {"kind": "token_embed", "config": {"vocab_size": 4101, "pad_token_id": 0}},
    "protein": {"kind": "token_embed", "config": {"vocab_size": 33, "pad_token_id": 1}},
    "scrna": {"kind": "expression_embed", "config": {"num_genes": 2000, "patch_size": 16}},
    "eeg": {"kind": "eeg_embed", "config": {"num_channels": 64, "patch_size": 16}},
}


def _defaults(early: bool) -> dict:
    """``DEFAULT_EMBEDDERS`` (early fusion) or ``DEFAULT_ENCODERS``: the imaging entry for each of the registry's
    imaging modalities, then the others. Needs the package (a copy saved as remote code never builds defaults)."""
    try:
        from multimed_hf.tasks import IMAGE_MODALITIES
    except ImportError as err:  # in a copy saved for trust_remote_code without the package
        raise ImportError("the default encoders follow the task registry's modalities: install multimed_hf") from err
    image, others = (_IMAGE_EMBEDDER, _OTHER_EMBEDDERS) if early else (_IMAGE_ENCODER, _OTHER_ENCODERS)
    return copy.deepcopy({**{m: image for m in IMAGE_MODALITIES}, **others})


def __getattr__(name: str):
    # DEFAULT_ENCODERS / DEFAULT_EMBEDDERS are made on first use (PEP 562): they read the task registry, which a
    # copy of this file saved as remote code cannot import
    if name in ("DEFAULT_ENCODERS", "DEFAULT_EMBEDDERS"):
        value = globals()[name] = _defaults(early=name == "DEFAULT_EMBEDDERS")
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def timm_encoder_spec(architecture: str, pretrained: str | None = None, **model_args) -> dict:
    """An encoder spec for a timm architecture through transformers' timm wrapper (``TimmWrapperConfig``).

    ``pretrained`` is a Hub id of timm weights (``"timm/vit_base_patch16_224.augreg_in21k"``), loaded by
    ``MultiMedModel.from_encoders_pretrained``; ``model_args`` go to ``timm.create_model`` (e.g. ``img_size=64``).
    """
    from transformers import TimmWrapperConfig

    config = TimmWrapperConfig(architecture=architecture, model_args=model_args or None)
    return {"kind": "auto", "pretrained": pretrained, "config": config.to_dict(), "pooling": "pooler",
            "trust_remote_code": False}


def normalize_encoder_spec(modality: str, spec: Any) -> dict:
    """The canonical dict form of one encoder (or early-fusion embedder) spec.

    Accepted forms: a Hub id (``str``), an encoder config (``PreTrainedConfig``, random init), a config dict with a
    ``model_type``, or a dict with a ``kind`` among ``ENCODER_KINDS`` / ``EMBEDDER_KINDS``.
    """
    spec = _normalize_encoder_spec(modality, spec)
    try:  # the form config.json gives back (integer keys become strings), so a round trip is the identity
        return json.loads(json.dumps(spec))
    except TypeError as err:
        raise TypeError(f"encoders[{modality!r}]: the spec must be JSON-serialisable: {err}") from None


def _normalize_encoder_spec(modality: str, spec: Any) -> dict:
    if isinstance(spec, str):
        return _hub(spec)
    if isinstance(spec, PreTrainedConfig):
        return {"kind": "auto", "pretrained": None, "config": spec.to_dict(), "pooling": "auto",
                "trust_remote_code": False}
    if not isinstance(spec, dict):
        raise TypeError(
            f"encoders[{modality!r}]: expected a Hub id, a PreTrainedConfig or a spec dict, got {type(spec).__name__}"
        )
    spec = copy.deepcopy(spec)
    if "kind" not in spec:
        if "model_type" not in spec:
            raise ValueError(
                f"encoders[{modality!r}]: a spec dict needs a 'kind' (one of {ENCODER_KINDS + EMBEDDER_KINDS[:-1]}) "
                f"or a 'model_type' (a transformers config dict); got keys {sorted(spec)}"
            )
        spec = {"kind": "auto", "config": spec}
    kind = spec["kind"]
    if kind not in ENCODER_KINDS + EMBEDDER_KINDS:
        raise ValueError(
            f"encoders[{modality!r}]: kind {kind!r} is not one of {ENCODER_KINDS + EMBEDDER_KINDS[:-1]}"
            + _suggest(kind, ENCODER_KINDS + EMBEDDER_KINDS)
        )
    if kind == "auto":
        spec.setdefault("pretrained", None)
        spec.setdefault("config", None)
        spec.setdefault("pooling", "auto")
        spec.setdefault("trust_remote_code", False)
        if spec["config"] is None and not spec["pretrained"]:
            raise ValueError(f"encoders[{modality!r}]: an 'auto' spec needs a 'config' dict or a 'pretrained' Hub id")
        if spec["config"] is not None and "model_type" not in spec["config"]:
            raise ValueError(f"encoders[{modality!r}]: the encoder config dict has no 'model_type'")
        if spec["pooling"] not in POOLINGS:
            raise ValueError(f"encoders[{modality!r}]: pooling {spec['pooling']!r} is not one of {POOLINGS}")
    elif kind == "shared":
        if not isinstance(spec.get("with"), str):
            raise ValueError(f"encoders[{modality!r}]: a 'shared' spec names the modality it shares with: 'with'")
    else:
        spec["config"] = dict(spec.get("config") or {})
    return spec


def _suggest(name: str, choices) -> str:
    close = difflib.get_close_matches(str(name), list(choices), n=3, cutoff=0.5)
    return f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""


def _normalize_output(task: str, out: dict) -> dict:
    out = dict(out)
    name, kind = out.get("name"), out.get("kind")
    if not isinstance(name, str) or not name:
        raise ValueError(f"heads[{task!r}]: every output needs a 'name' (its label column), got {out}")
    if not isinstance(kind, str) or kind not in OUTPUT_KINDS:
        raise ValueError(f"heads[{task!r}] output {name!r}: kind {kind!r} is not one of {tuple(OUTPUT_KINDS)}")
    return get_output_kind(kind).normalize(task, out)


def _normalize_head(task: str, head: dict) -> dict:
    if not isinstance(head, dict):
        raise TypeError(f"heads[{task!r}]: expected a dict, got {type(head).__name__}")
    modalities = list(head.get("modalities") or ())
    if not modalities or len(set(modalities)) != len(modalities):
        raise ValueError(f"heads[{task!r}]: 'modalities' must list distinct modalities, got {modalities}")
    outputs = [_normalize_output(task, o) for o in head.get("outputs") or ()]
    if not outputs:
        raise ValueError(f"heads[{task!r}]: no 'outputs'")
    names = [o["name"] for o in outputs]
    if len(set(names)) != len(names) or "coords_mask" in names:
        raise ValueError(f"heads[{task!r}]: output names must be distinct and not 'coords_mask', got {names}")
    return {"modalities": modalities, "outputs": outputs, "problem_type": head.get("problem_type")}


@strict
class MultiMedConfig(PreTrainedConfig):
    r"""
    Configuration of [`MultiMedModel`]: encoders -> projections to `hidden_size` -> fusion -> task heads.

    Args:
        encoders (`dict[str, dict]`):
            Modality -> encoder spec (intermediate / late fusion) or input-embedder spec (early fusion). Give a Hub id
            (`str`; weights via `MultiMedModel.from_encoders_pretrained`), a `PreTrainedConfig` (random init), a
            timm architecture (`timm_encoder_spec`), our own encoders (`{"kind": "eeg_lstm" | "eeg_tcn" |
            "expression" | "mlp", "config": {...}}`), or `{"kind": "shared", "with": "xray"}` to reuse another modality's
            encoder. Stored as dicts (`config` = the encoder config's `to_dict()`).
        heads (`dict[str, dict]`):
            Task -> `{"modalities": [...], "outputs": [{"name": label column, "kind": "class" | "multilabel" |
            "regression" | "coords", ...}], "problem_type": ...}`. `MultiMedConfig.from_tasks` builds them from
            the task registry.
        hidden_size (`int`): the shared size every modality is projected to.
        fusion (`str`): `"early"` (eq. 2), `"intermediate"` (eq. 3/6) or `"late"` (eq. 4).
        fusion_method (`str`, *optional*): early `"concat"`; intermediate `"concat"`, `"mean"`, `"gated"`,
            `"attention"`; late `"weighted_mean"`, `"vote"`. `None` picks the family's first.
        fusion_tokens (`str`): attention fusion over one pooled vector per modality (`"pooled"`) or over every
            modality's token sequence (`"sequence"`).
        fusion_num_layers / fusion_num_heads / fusion_intermediate_size: the attention fusion's (or the early shared
            encoder's) transformer blocks.
        structure_num_layers (`int`): transformer blocks over residues in a coords (protein structure) head.
        dropout (`float`): dropout in fusion and heads.
        modality_dropout (`float`): in training, each present modality of a row is dropped with this probability
            (never the last one a row has: where all would go, one is given back at random, so each of a row's n
            modalities goes with probability p - p**n / n, 0.375 for n = 2 and p = 0.5).
        loss_weights (`dict`): lambda_{t,m} of eq. 5 as `{task: {modality: w, "fused": w}}` or `{task: w}`. The
            `"fused"` weight (lambda_t, default 1) scales the loss of the prediction made from all of the task's
            present modalities; under late fusion each modality's own prediction (y^(m) of eq. 4) adds its loss
            weighted by lambda_{t,m} (default 1); with `"vote"` the combined prediction has no gradient, so only
            those per-modality losses train. A task's loss is the sum over its label columns.
        frozen_encoders (`list[str]`): modalities whose encoder is frozen (no gradient, run under `no_grad`).
        auxiliary_heads (`bool`): under intermediate fusion, give every task one extra output layer per modality
            beside the fused head (the multi-head joint fusion of MIND, Guerra-Manzanares & Shamout, TMLR 2025): each
            reads only its modality's projected feature, so a row with one modality gets a prediction without
            imputation, and its loss is weighted by lambda_(t,m) like late fusion's. Late fusion always has them.
        initializer_range (`float`): std of the normal init of new weights.
        label_smoothing (`float`): label smoothing of the cross-entropy of every single-label class output (torch's
            `cross_entropy(label_smoothing=...)`: the target mixes the true class with the uniform distribution);
            multilabel, regression and coordinate outputs have none. `MultiMedTrainer` sets it from
            `TrainingArguments.label_smoothing_factor`.
    """

    model_type = "multimed"

    encoders: dict | None = None
    heads: dict | None = None
    hidden_size: int = 256
    fusion: str = "intermediate"
    fusion_method: str | None = None
    fusion_tokens: str = "pooled"
    fusion_num_layers: int = 1
    fusion_num_heads: int = 4
    fusion_intermediate_size: int | None = None
    structure_num_layers: int = 2
    dropout: float | int = 0.1
    modality_dropout: float | int = 0.0
    loss_weights: dict | None = None
    frozen_encoders: list[str] | None = None
    initializer_range: float = 0.02
    auxiliary_heads: bool = False
    label_smoothing: float | int = 0.0

    def __post_init__(self, **kwargs):
        # Sorted: config.json is written with sorted keys, and the model's modality slots must survive a round trip.
        self.encoders = {m: normalize_encoder_spec(m, s) for m, s in sorted((self.encoders or {}).items())}
        self.heads = {t: _normalize_head(t, h) for t, h in sorted((self.heads or {}).items())}
        if self.fusion_method is None and self.fusion in FUSION_METHODS:
            self.fusion_method = FUSION_METHODS[self.fusion][0]
        if self.fusion_intermediate_size is None:
            self.fusion_intermediate_size = 4 * self.hidden_size
        self.loss_weights = {t: self._normalize_weights(t, w) for t, w in (self.loss_weights or {}).items()}
        self.frozen_encoders = list(self.frozen_encoders or [])
        super().__post_init__(**kwargs)
        # Raise plain ValueErrors now (strict would wrap them); strict re-runs these at save time.
        for check in (self.validate_fusion, self.validate_encoders, self.validate_heads, self.validate_auxiliary_heads,
                      self.validate_loss_weights):
            check()

    @staticmethod
    def _normalize_weights(task, weights):
        if isinstance(weights, (int, float)):
            return {FUSED: float(weights)}
        if not isinstance(weights, dict):
            raise TypeError(f"loss_weights[{task!r}]: expected a number or a dict, got {type(weights).__name__}")
        return {str(k): float(v) for k, v in weights.items()}

    # ------------------------------------------------------------------ validation
    def validate_fusion(self):
        if self.fusion not in FUSION_KINDS:
            raise ValueError(f"fusion {self.fusion!r} is not one of {FUSION_KINDS}" + _suggest(self.fusion, FUSION_KINDS))
        methods = FUSION_METHODS[self.fusion]
        if self.fusion_method not in methods:
            raise ValueError(f"fusion_method {self.fusion_method!r} does not go with fusion {self.fusion!r}; "
                             f"choose one of {methods}")
        if self.fusion_tokens not in FUSION_TOKENS:
            raise ValueError(f"fusion_tokens {self.fusion_tokens!r} is not one of {FUSION_TOKENS}")
        if self.fusion_tokens == "sequence" and self.fusion_method != "attention":
            raise ValueError(f"fusion_tokens='sequence' needs fusion_method='attention', got {self.fusion_method!r}")
        if self.hidden_size % self.fusion_num_heads:
            raise ValueError(f"hidden_size ({self.hidden_size}) is not a multiple of fusion_num_heads "
                             f"({self.fusion_num_heads})")
        if not 0 <= self.modality_dropout < 1 or not 0 <= self.dropout < 1:
            raise ValueError(f"modality_dropout ({self.modality_dropout}) and dropout ({self.dropout}) must be in [0, 1)")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing ({self.label_smoothing}) must be in [0, 1)")

    def validate_encoders(self):
        allowed = EMBEDDER_KINDS if self.fusion == "early" else ENCODER_KINDS
        for m, spec in self.encoders.items():
            if spec["kind"] not in allowed:
                raise ValueError(
                    f"encoders[{m!r}]: kind {spec['kind']!r} does not go with fusion {self.fusion!r}; "
                    f"{self.fusion} fusion takes kinds {allowed}"
                    + (" (input embedders: see DEFAULT_EMBEDDERS)" if self.fusion == "early" else
                       " (early fusion takes input embedders instead)")
                )
            if spec["kind"] == "shared":
                target = self.encoders.get(spec["with"])
                if target is None or target["kind"] == "shared":
                    raise ValueError(f"encoders[{m!r}] shares with {spec['with']!r}, which is not a modality with an "
                                     f"encoder of its own; modalities: {sorted(self.encoders)}")
        unknown = sorted(set(self.frozen_encoders) - set(self.encoders))
        if unknown:
            raise ValueError(f"frozen_encoders {unknown} have no encoder; encoders: {sorted(self.encoders)}")

    def validate_heads(self):
        for task, head in self.heads.items():
            missing = [m for m in head["modalities"] if m not in self.encoders]
            if missing:
                raise ValueError(f"heads[{task!r}] reads modalities {missing} that have no encoder spec; "
                                 f"encoders: {sorted(self.encoders)}")
            for out in head["outputs"]:
                kind_of(out).validate(task, out, head)

    def validate_loss_weights(self):
        for task, weights in self.loss_weights.items():
            if task not in self.heads:
                raise ValueError(f"loss_weights names task {task!r}, which has no head; heads: {sorted(self.heads)}"
                                 + _suggest(task, self.heads))
            allowed = [FUSED, *self.heads[task]["modalities"]]
            for key, value in weights.items():
                if key not in allowed:
                    raise ValueError(f"loss_weights[{task!r}]: key {key!r} is not one of {allowed}")
                if not (math.isfinite(value) and value >= 0):
                    raise ValueError(f"loss_weights[{task!r}][{key!r}] must be finite and >= 0, got {value}")
                if key != FUSED and not self.modality_heads:
                    raise ValueError(
                        f"loss_weights[{task!r}][{key!r}] = {value}: per-modality weights lambda_(t,m) apply only to "
                        f"late fusion or auxiliary_heads=True, where each modality makes its own prediction; with "
                        f"fusion {self.fusion!r} give the task weight as {{{FUSED!r}: w}} (or a number)"
                    )

    def validate_auxiliary_heads(self):
        if not isinstance(self.auxiliary_heads, bool):
            raise TypeError(f"auxiliary_heads: expected True or False, got {self.auxiliary_heads!r}")
        if self.auxiliary_heads and self.fusion == "early":
            raise ValueError("auxiliary_heads=True needs per-modality features: use fusion 'intermediate' (late fusion "
                             "has a head per modality already); early fusion encodes all modalities together")

    # ------------------------------------------------------------------ reading
    @property
    def tasks(self) -> list[str]:
        return list(self.heads)

    @property
    def modalities(self) -> list[str]:
        return list(self.encoders)

    @property
    def modality_heads(self) -> bool:
        """Whether every task has one prediction per modality beside the fused one (late fusion, or intermediate
        fusion with ``auxiliary_heads``): ``MultiMedOutput.modality_logits`` and the ``"<modality>/<column>"`` losses."""
        return self.fusion == "late" or (self.fusion == "intermediate" and bool(self.auxiliary_heads))

    def smoothed_outputs(self) -> list[str]:
        """``"<task>/<column>"`` of every output that ``label_smoothing`` applies to (single-label classes)."""
        return [f"{task}/{out['name']}" for task, head in self.heads.items() for out in head["outputs"]
                if kind_of(out).smooths(out)]

    def loss_weight(self, task: str, modality: str = FUSED) -> float:
        """lambda_{t,m} (``modality`` given) or lambda_t (``"fused"``); 1.0 unless set."""
        return self.loss_weights.get(task, {}).get(modality, 1.0)

    def id2label_for(self, task: str, column: str) -> dict[int, str]:
        """Index -> class name of one class / multilabel output."""
        for out in self.heads[task]["outputs"]:
            if out["name"] == column:
                return dict(enumerate(out.get("names") or ()))
        raise KeyError(f"task {task!r} has no output {column!r}")

    # ------------------------------------------------------------------ building from the registry
    @classmethod
    def from_tasks(
        cls,
        tasks,
        encoders: dict | None = None,
        hidden_size: int = 256,
        fusion: str = "intermediate",
        vocabularies: dict | None = None,
        modalities: dict | None = None,
        regression_stats: dict | None = None,
        **kwargs,
    ) -> "MultiMedConfig":
        """A config with one head per registered task, reading its modalities and label columns from the registry.

        Args:
            tasks: task names (``multimed_hf.tasks.list_tasks()``).
            encoders: modality -> encoder spec; modalities not given get ``DEFAULT_ENCODERS`` (``DEFAULT_EMBEDDERS``
                under early fusion).
            vocabularies: label column or task name -> answer / class vocabulary, for the registry's free-text labels
                (``cell_type``, ``med_vqa``'s ``answer``), which become classification over that vocabulary.
            modalities: task -> the subset of its modalities to read (the paper's modality-combination study).
            regression_stats: label column -> ``(mean, std)`` to standardise a regression target in the loss.
        """
        try:
            from multimed_hf.tasks import get_task
        except ImportError as err:  # in a copy saved for trust_remote_code without the package
            raise ImportError("MultiMedConfig.from_tasks reads the task registry: install multimed_hf") from err
        if isinstance(tasks, str):
            tasks = [tasks]
        vocabularies = dict(vocabularies or {})
        regression_stats = dict(regression_stats or {})
        heads = {}
        for name in tasks:
            spec = get_task(name)
            if spec.problem_type == "contrastive":
                raise ValueError(
                    f"task {name!r} is contrastive (image-caption pairs, no label column): contrastive heads are not "
                    f"implemented yet; build the config from the other tasks"
                )
            chosen = list((modalities or {}).get(name, spec.modalities))
            extra = sorted(set(chosen) - set(spec.modalities))
            if extra:
                raise ValueError(f"modalities[{name!r}] lists {extra}, which task {name!r} does not read "
                                 f"(it reads {list(spec.modalities)})")
            outputs = [kind_for_label(label.kind).from_label(label, task=name, modalities=chosen,
                                                             vocabularies=vocabularies,
                                                             regression_stats=regression_stats)
                       for label in spec.labels]
            heads[name] = {"modalities": chosen, "outputs": outputs, "problem_type": spec.problem_type}
        defaults = _defaults(early=fusion == "early")
        given = dict(encoders or {})
        needed = list(dict.fromkeys(m for h in heads.values() for m in h["modalities"]))
        for m in list(given.values()):
            if isinstance(m, dict) and m.get("kind") == "shared" and m.get("with") not in needed:
                needed.append(m["with"])
        specs = {m: given[m] if m in given else copy.deepcopy(defaults[m]) for m in needed}
        specs.update({m: s for m, s in given.items() if m not in specs})
        if len(heads) == 1:
            (task, head), = heads.items()
            problem_type = kind_of(head["outputs"][0]).problem_type if len(head["outputs"]) == 1 else None
            if problem_type is not None:
                names = head["outputs"][0]["names"]
                kwargs.setdefault("id2label", dict(enumerate(names)))
                kwargs.setdefault("label2id", {n: i for i, n in enumerate(names)})
                kwargs.setdefault("problem_type", problem_type)
        return cls(encoders=specs, heads=heads, hidden_size=hidden_size, fusion=fusion, **kwargs)
