"""The model card MultiMedModel.push_to_hub writes: tasks, modalities, encoders, fusion, training data and metrics."""

from huggingface_hub import ModelCard, ModelCardData

from .output_kinds import kind_of

__all__ = ["build_model_card"]

_EQUATION = {"early": "eq. 2", "intermediate": "eqs. 3 and 6", "late": "eq. 4"}
_OPEN_VQA = (
    "Closed answers are classified over the answer vocabulary the head was built with. Open answers are handled as "
    "retrieval over that same vocabulary: the head scores every answer seen when it was built, so an answer outside "
    "it cannot be produced. Free-text generation is not part of this model."
)


def _encoder_row(modality: str, spec: dict) -> str:
    kind = spec["kind"]
    if kind == "auto":
        cfg = spec.get("config") or {}
        if cfg.get("model_type") == "timm_wrapper":
            arch = f"timm `{cfg.get('architecture')}` (transformers' timm wrapper)"
        else:
            arch = f"transformers `{cfg.get('model_type', 'from the Hub id')}`"
        weights = f"`{spec['pretrained']}`" if spec.get("pretrained") else "random init"
        return f"| {modality} | {arch} | {weights} | {spec.get('pooling', 'auto')} |"
    if kind == "shared":
        return f"| {modality} | shares the encoder of `{spec['with']}` | - | - |"
    args = ", ".join(f"{k}={v}" for k, v in sorted(spec.get("config", {}).items()))
    return f"| {modality} | multimed_hf `{kind}` ({args}) | random init | - |"


def _output_text(out: dict) -> str:
    return kind_of(out).describe(out)


def _training_lines(training: dict) -> list[str]:
    """The card's "Training options" section: a balancing / distillation variant and contrastive alignment."""
    lines = ["", "## Training options", ""]
    balancing = training.get("balancing")
    if balancing:
        options = ", ".join(f"{k}={v}" for k, v in sorted((balancing.get("options") or {}).items())) or \
            "the package's defaults (training/balancing documents each value and its source)"
        lines.append(f"- `+{balancing['variant']}`: {balancing.get('description', '')}. Options: {options}.")
    alignment = training.get("alignment")
    if alignment:
        held = alignment.get("held_out") or {}
        lines.append("- Contrastive alignment by label text: the tasks "
                     f"{', '.join(alignment.get('label_text_tasks', []))} score classes by the cosine similarity of "
                     "the fused features to the text encoder's embeddings of the class texts (`label_text` heads)"
                     + (f"; {alignment['pairs']} image-caption pairs trained with a symmetric InfoNCE"
                        if alignment.get("pairs") else "") + ".")
        if held:
            lines.append("- Held out of training (rows never trained on, texts never encoded; predict them zero-shot "
                         "with `multimed fewshot CHECKPOINT --shots 0`): "
                         + "; ".join(f"{t}: {', '.join(c)}" for t, c in held.items()) + ".")
    return lines if len(lines) > 3 else []


def build_model_card(config, repo_id: str | None = None, training_data=None, metrics: dict | None = None,
                     tags: list[str] | None = None, training: dict | None = None,
                     metrics_split: str | None = None, metrics_rows: str | None = None) -> ModelCard:
    """A Hub model card for a MultiMedModel's config.

    Args:
        repo_id: where the model goes, for the usage snippet.
        training_data: what it was trained on: dataset ids (``"ORG/multimed"``), or dicts with ``name`` and any of
            ``config``, ``split``, ``num_rows``.
        metrics: ``{task: {metric: value}}`` measured on held-out data; listed as given (``metrics_split``: the split
            they were measured on, said above them; ``metrics_rows``: which of its rows, where not all).
        training: the run's training options as ``run_info.json`` records them: ``{"balancing": {"variant",
            "description", "options"}, "alignment": {"label_text_tasks", "held_out", "pairs"}}`` (either optional).
    """
    data = [d if isinstance(d, dict) else {"name": str(d)} for d in (training_data or [])]
    metrics = metrics or {}
    # what this model is (a unimodal single-task run was tagged multimodal and multitask on the Hub)
    multimodal = len({m for head in config.heads.values() for m in head["modalities"]}) > 1
    multitask = len(config.heads) > 1
    kind = ["multimodal" if multimodal else "single-modality", "multitask" if multitask else "single-task"]
    card_data = ModelCardData(
        library_name="transformers",
        tags=sorted({"multimed", "medical", "custom_code", *(k for k in kind if "-" not in k), *(tags or [])}),
        datasets=sorted({d["name"] for d in data}) or None,
        metrics=sorted({name for values in metrics.values() for name in values}) or None,
        base_model=sorted({s["pretrained"] for s in config.encoders.values()
                           if s["kind"] == "auto" and s.get("pretrained")}) or None,
    )
    lines = [
        f"# {repo_id or 'MultiMed model'}",
        "",
        f"A {kind[0]}, {kind[1]} model for the MultiMed benchmark (Mo & Liang, 2024, *MultiMed: Massively "
        "Multimodal and Multitask Medical Understanding*), built with `multimed_hf`: per-modality encoders, "
        "projections to a shared size, fusion over the modalities each sample has, one head per task.",
        "",
        "## Tasks",
        "",
        "| task | modalities | outputs |",
        "|---|---|---|",
    ]
    for task, head in config.heads.items():
        outputs = "; ".join(_output_text(o) for o in head["outputs"])
        lines.append(f"| {task} | {', '.join(head['modalities'])} | {outputs} |")
    lines += ["", "## Modalities and encoders", "", "| modality | encoder | weights | pooling |", "|---|---|---|---|"]
    lines += [_encoder_row(m, s) for m, s in config.encoders.items()]
    lines += [
        "",
        "## Fusion",
        "",
        f"{config.fusion.capitalize()} fusion ({_EQUATION[config.fusion]} of the paper), `{config.fusion_method}`; "
        f"shared size {config.hidden_size}. A per-sample presence mask flows through the fusion: a modality a "
        f"sample lacks is not encoded and contributes nothing."
        + (f" Modality dropout in training: {config.modality_dropout}." if config.modality_dropout else ""),
        "",
        "Loss per batch (eq. 5): the sum over the task's label columns of each column's loss (labels -100 / NaN "
        "ignored), times lambda_t (`fused`)"
        + (", plus each modality's own prediction's loss times lambda_(t,m)." if config.modality_heads else ".")
        + (f" Single-label class losses use label smoothing {config.label_smoothing}." if config.label_smoothing
           else ""),
    ]
    if config.fusion == "intermediate" and getattr(config, "auxiliary_heads", False):
        lines += ["", "Auxiliary per-modality heads: beside the fused head, every task has one output layer per "
                  "modality reading only that modality's projected features (the multi-head joint fusion of MIND, "
                  "Guerra-Manzanares & Shamout, TMLR 2025), so a sample with one modality is predicted without "
                  "imputation; `MultiMedOutput.modality_logits` holds their predictions."]
    if config.loss_weights:
        lines += ["", "| task | weights |", "|---|---|"]
        lines += [f"| {t} | {', '.join(f'{k}={v}' for k, v in w.items())} |" for t, w in config.loss_weights.items()]
    if any(o.get("from_text") for h in config.heads.values() for o in h["outputs"]):
        lines += ["", "## Free-text labels", "", _OPEN_VQA]
    if training:
        lines += _training_lines(training)
    lines += ["", "## Training data", ""]
    if data:
        for d in data:
            extra = ", ".join(f"{k}: {v}" for k, v in d.items() if k != "name")
            lines.append(f"- `{d['name']}`" + (f" ({extra})" if extra else ""))
    else:
        lines.append("Not recorded: this checkpoint was saved without training-data information.")
    lines += ["", "## Metrics", ""]
    if metrics:
        if metrics_split:
            lines += [f"Measured on the `{metrics_split}` split" + (f" ({metrics_rows})." if metrics_rows else "."), ""]
        lines += ["| task | metric | value |", "|---|---|---|"]
        for task, values in metrics.items():
            lines += [f"| {task} | {name} | {value:.4g} |" if isinstance(value, float) else
                      f"| {task} | {name} | {value} |" for name, value in values.items()]
    else:
        lines.append("Not evaluated: no metrics were given when this card was written.")
    lines += [
        "",
        "## Usage",
        "",
        "```python",
        "from transformers import AutoModel",
        "",
        f"model = AutoModel.from_pretrained({(repo_id or 'PATH')!r}, trust_remote_code=True)",
        "out = model(task=..., inputs={modality: tensors}, presence={modality: bool_mask})",
        "```",
        "",
        "The batch layout is `multimed_hf`'s MODEL_INPUTS contract; `MultiMedProcessor` produces it.",
    ]
    return ModelCard(f"---\n{card_data.to_yaml()}\n---\n\n" + "\n".join(lines) + "\n")
