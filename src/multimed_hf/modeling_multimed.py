"""MultiMedModel: per-modality encoders -> projections -> fusion over presence masks -> task heads (paper eqs. 2-7)."""

import copy
import difflib
import os
import tempfile
from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput, logging

from .blocks import TransformerBlock, masked_mean, residue_mask, scatter_rows
from .configuration_multimed import FUSED, MultiMedConfig, _normalize_head
from .encoders import HubEncoder, build_encoder, config_from_dict
from .fusion import EarlyFusion, IntermediateFusion, combine_late
from .heads import TaskHead
from .label_text import label_text_embeddings
from .hub_upload import folder_files, upload_files
from .model_card import build_model_card
from .output_kinds import decode_outputs, kind_of

logger = logging.get_logger(__name__)

__all__ = ["MultiMedOutput", "MultiMedPreTrainedModel", "MultiMedModel", "decode_outputs"]


@dataclass
class MultiMedOutput(ModelOutput):
    """What `MultiMedModel` returns; read fields by name. B = rows, M = the task's modalities in head order.

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*, when `labels` are given):
            sum over label columns of lambda-weighted losses (eq. 5).
        logits (`dict[str, torch.Tensor]`):
            label column -> prediction over all rows: class / multilabel logits `[B, K]`, regression value in the
            label's units `[B]`, C-alpha coordinates in Angstrom `[B, L, 3]`.
        losses (`dict[str, torch.Tensor]`, *optional*):
            unweighted loss of each label column with a label in the batch; late fusion adds `"{modality}/{column}"`.
        fused_features (`torch.FloatTensor` of shape `[B, H]`): the fused representation h of eq. 6 (late fusion:
            the mean of the present modalities' features).
        modality_features (`torch.FloatTensor` of shape `[B, M, H]`): each modality's projected feature, zeros
            where absent (early fusion: the mean of its segment of the shared encoder's output).
        presence (`torch.BoolTensor` of shape `[B, M]`): which modality each row had (after modality dropout).
        modality_logits (`dict[str, dict[str, torch.Tensor]]`, *optional*, late fusion or `auxiliary_heads`):
            modality -> column -> that modality's own prediction y^(m) (eq. 4; under intermediate fusion, its
            auxiliary head's), zeros in rows without it.
    """

    loss: torch.FloatTensor | None = None
    logits: dict | None = None
    losses: dict | None = None
    fused_features: torch.FloatTensor | None = None
    modality_features: torch.FloatTensor | None = None
    presence: torch.BoolTensor | None = None
    modality_logits: dict | None = None


class MultiMedPreTrainedModel(PreTrainedModel):
    config_class = MultiMedConfig
    base_model_prefix = "multimed"
    # Trainer's flop and token counters call `batch[main_input_name].numel()`; our principal input, `inputs`, is a dict
    # of modalities, so this names no batch key and those counters read 0 (a real key would crash every step).
    main_input_name = "multimodal_inputs"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _supports_sdpa = True

    def _set_gradient_checkpointing(self, enable: bool = True, *args, **kwargs):
        """transformers' switch over every module that can checkpoint; where none can (the domain-specific models,
        EEG-only or MLP-only ones: no transformer layer), a warning that nothing is checkpointed, not transformers'
        "not compatible" error."""
        if enable and not any(hasattr(module, "gradient_checkpointing") for module in self.modules()):
            encoders = sorted({type(encoder).__name__ for encoder in getattr(self, "encoders", {}).values()})
            logger.warning("activation checkpointing: nothing to checkpoint in this model (its encoders %s have no "
                           "transformer layers); it trains as without it", ", ".join(encoders))
            return
        super()._set_gradient_checkpointing(enable, *args, **kwargs)

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """``PreTrainedModel.from_pretrained``, then the encoders ``config.frozen_encoders`` names frozen again
        (loading re-creates every parameter, each requiring grad, after ``__init__`` froze them)."""
        loaded = super().from_pretrained(*args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded
        if getattr(model.config, "frozen_encoders", None) and hasattr(model, "freeze_encoders"):
            model.freeze_encoders(*model.config.frozen_encoders)
        return loaded

    @torch.no_grad()
    def _init_weights(self, module):
        """Standard layers as transformers does; every Parameter our modules add is named in `extra_parameters`;
        the wrapper's chain of plain linear maps (projection -> fusion -> head output) gets Glorot init."""
        if isinstance(module, nn.Linear) and getattr(module, "_glorot_init", False):
            # no normalisation sits between these layers: N(0, 0.02) would shrink the signal about tenfold per
            # layer at small widths and starve the encoders of gradient (seen: a tiny ViT stalled at 53% train
            # accuracy behind the wrapper while the same ViT alone fitted its batch)
            init.xavier_uniform_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)
            return
        super()._init_weights(module)
        for name, how in getattr(module, "extra_parameters", {}).items():
            param = getattr(module, name, None)
            if param is None:
                continue
            if how == "zeros":
                init.zeros_(param)
            else:
                init.normal_(param, mean=0.0, std=self.config.initializer_range)


def _inside_block(linear: nn.Module, root: nn.Module) -> bool:
    """True when ``linear`` belongs to a residual transformer block under ``root`` (those keep their own init)."""
    return any(isinstance(m, TransformerBlock) and any(c is linear for c in m.modules()) for m in root.modules())


class MultiMedModel(MultiMedPreTrainedModel):
    """Encoders (one per modality, or one input embedder each under early fusion) -> linear projections to
    `hidden_size` -> fusion (early / intermediate / late, config.fusion) -> one head per task.

    The batch contract (`MODEL_INPUTS.md`): `inputs[m]` holds only the rows that have modality m, in row order of
    `presence[m]`; a modality a row lacks is never encoded and contributes nothing.
    """

    def __init__(self, config: MultiMedConfig, encoder_models: dict | None = None):
        requested_attn = config._attn_implementation  # None unless the caller asked for one
        super().__init__(config)
        encoder_models = encoder_models or {}
        hidden = config.hidden_size
        attn = self.config._attn_implementation
        self.encoder_of = {m: s["with"] if s["kind"] == "shared" else m for m, s in config.encoders.items()}
        self.encoders = nn.ModuleDict({
            m: build_encoder(m, s, hidden, requested_attn, model=encoder_models.get(m))
            for m, s in config.encoders.items() if s["kind"] != "shared"
        })
        modalities = sorted(config.encoders)  # slot order of modality embeddings: stable across save / load
        blocks = dict(num_layers=config.fusion_num_layers, num_heads=config.fusion_num_heads,
                      intermediate_size=config.fusion_intermediate_size, dropout=config.dropout,
                      attn_implementation=attn)
        if config.fusion == "early":
            self.early = EarlyFusion(modalities, hidden, **blocks)
        else:
            self.projections = nn.ModuleDict({
                m: nn.Linear(self.encoders[self.encoder_of[m]].output_dim, hidden) for m in modalities
            })
            if config.fusion == "intermediate":
                self.fusion = IntermediateFusion(config.fusion_method, modalities, hidden, **blocks)
        structure = dict(blocks, num_layers=config.structure_num_layers)
        self.heads = nn.ModuleDict({
            t: TaskHead(spec, hidden, config.dropout, structure, late=config.fusion == "late",
                        auxiliary=config.fusion == "intermediate" and config.auxiliary_heads)
            for t, spec in config.heads.items()
        })
        for part in (getattr(self, "projections", None), getattr(getattr(self, "fusion", None), "linear", None),
                     getattr(getattr(self, "fusion", None), "transform", None), self.heads):
            for module in part.modules() if part is not None else ():
                if isinstance(module, nn.Linear) and not _inside_block(module, part):
                    module._glorot_init = True
        no_split = {"TransformerBlock"}
        for encoder in self.encoders.values():
            if isinstance(encoder, HubEncoder):
                no_split.update(encoder.model._no_split_modules or ())
        self._no_split_modules = sorted(no_split)
        for m in config.frozen_encoders:
            for p in self.encoders[self.encoder_of[m]].parameters():
                p.requires_grad_(False)
        self.post_init()

    # ------------------------------------------------------------------ building with Hub weights
    @classmethod
    def from_encoders_pretrained(cls, config: MultiMedConfig, **kwargs) -> "MultiMedModel":
        """A model whose encoders carry the Hub (or local) weights their specs name in `pretrained`.

        The counterpart of `VisionTextDualEncoderModel.from_vision_text_pretrained`: each such encoder is loaded with
        `AutoModel.from_pretrained` (`kwargs` go to it: `dtype`, `attn_implementation`, `revision`,
        `local_files_only`, ...), its config is written into the returned model's config (so `save_pretrained`
        keeps it and `from_pretrained` rebuilds it without the Hub), and the projections, fusion and heads start
        from random init.
        """
        config = copy.deepcopy(config)
        models = {}
        for m, spec in config.encoders.items():
            if spec["kind"] != "auto" or not spec.get("pretrained"):
                continue
            load = dict(kwargs)
            if spec.get("trust_remote_code"):
                load["trust_remote_code"] = True
            if spec.get("config") is not None:
                load["config"] = config_from_dict(spec["config"], spec.get("trust_remote_code", False),
                                                  spec["pretrained"])
            model = None
            is_timm = (spec.get("config") or {}).get("model_type") == "timm_wrapper" or str(
                spec["pretrained"]).startswith("timm/")
            if spec.get("pooling") != "pooler" and not is_timm:
                try:
                    model = AutoModel.from_pretrained(spec["pretrained"], add_pooling_layer=False, **load)
                except TypeError as err:
                    if "add_pooling_layer" not in str(err):
                        raise
            if model is None:
                model = AutoModel.from_pretrained(spec["pretrained"], **load)
            spec["config"] = model.config.to_dict()
            models[m] = model
        if kwargs.get("attn_implementation") is not None:
            config._attn_implementation = kwargs["attn_implementation"]
        model = cls(config, encoder_models=models)
        if kwargs.get("dtype") is not None:
            model = model.to(kwargs["dtype"])
        return model

    def get_input_embeddings(self) -> None:
        """None: each modality has its own input embedding (inside its encoder), the model has no single one.
        transformers' default raises here, and accelerate's FSDP2 preparation calls it on every model."""
        return None

    def resize_token_embeddings(self, new_num_tokens: int | None = None, pad_to_multiple_of: int | None = None,
                                mean_resizing: bool = True, *, modality: str = "text"):
        """Resize the token embeddings of the encoder that reads ``modality`` (default the text one: the model has
        one vocabulary per modality, see ``get_input_embeddings``), as transformers' own method does, and record
        the new size in ``config.encoders`` so that the saved model reloads. Save the grown tokenizer with the
        processor. Returns the resized embedding."""
        if modality not in self.encoder_of:
            raise ValueError(f"resize_token_embeddings: the model has no {modality!r} encoder (its modalities: "
                             f"{sorted(self.encoder_of)})")
        key = self.encoder_of[modality]
        inner = getattr(self.encoders[key], "model", None)
        if not hasattr(inner, "resize_token_embeddings"):
            kind = type(self.encoders[key]).__name__
            raise NotImplementedError(f"resize_token_embeddings: the {modality} encoder ({kind}) has no token "
                                      f"embeddings of a transformers model to resize")
        embeddings = inner.resize_token_embeddings(new_num_tokens, pad_to_multiple_of, mean_resizing)
        spec = self.config.encoders[key]
        if isinstance(spec, dict) and isinstance(spec.get("config"), dict):
            spec["config"]["vocab_size"] = embeddings.num_embeddings  # what the encoder is rebuilt from on load
        return embeddings

    # ------------------------------------------------------------------ switches
    def freeze_encoders(self, *modalities: str) -> None:
        """Stop gradients into these modalities' encoders (all when none given); recorded in the config."""
        for m in self._modality_names(modalities):
            for p in self.encoders[self.encoder_of[m]].parameters():
                p.requires_grad_(False)
            if m not in self.config.frozen_encoders:
                self.config.frozen_encoders.append(m)

    def unfreeze_encoders(self, *modalities: str) -> None:
        """Let gradients into these modalities' encoders again (all when none given)."""
        for m in self._modality_names(modalities):
            for p in self.encoders[self.encoder_of[m]].parameters():
                p.requires_grad_(True)
        names = set(self._modality_names(modalities))
        self.config.frozen_encoders = [m for m in self.config.frozen_encoders if m not in names]

    def add_head(self, task: str, spec: dict, *, replace: bool = False) -> None:
        """Give the model a freshly initialised head for ``task`` from a head spec (the ``config.heads`` form), recorded
        in the config: a few-shot task the model was not trained on, a re-sized label set, a zero-shot ``label_text``
        head. The spec's modalities must have encoders; a task that has a head raises unless ``replace``."""
        if task in self.config.heads and not replace:
            raise ValueError(f"the model already has a head for task {task!r}; pass replace=True to replace it")
        previous = self.config.heads
        self.config.heads = dict(sorted({**previous, task: _normalize_head(task, spec)}.items()))
        try:
            self.config.validate_heads()
        except ValueError:
            self.config.heads = previous
            raise
        cfg = self.config
        structure = dict(num_layers=cfg.structure_num_layers, num_heads=cfg.fusion_num_heads,
                         intermediate_size=cfg.fusion_intermediate_size, dropout=cfg.dropout,
                         attn_implementation=cfg._attn_implementation)
        head = TaskHead(cfg.heads[task], cfg.hidden_size, cfg.dropout, structure, late=cfg.fusion == "late",
                        auxiliary=cfg.fusion == "intermediate" and bool(getattr(cfg, "auxiliary_heads", False)))
        for module in head.modules():
            if isinstance(module, nn.Linear) and not _inside_block(module, head):
                module._glorot_init = True
        head.apply(self._init_weights)
        reference = next(self.parameters())
        self.heads[task] = head.to(device=reference.device, dtype=reference.dtype)

    def set_attn_implementation(self, attn_implementation, *args, **kwargs):
        """transformers' switch (`"sdpa"`, `"eager"`, ...), applied to the encoders and to our own blocks too."""
        result = super().set_attn_implementation(attn_implementation, *args, **kwargs)
        for module in self.modules():
            if isinstance(module, TransformerBlock):
                module.attn_implementation = self.config._attn_implementation
        return result

    def _modality_names(self, modalities):
        unknown = sorted(set(modalities) - set(self.encoder_of))
        if unknown:
            raise ValueError(f"no encoder for modalities {unknown}; the model has {list(self.encoder_of)}")
        return list(modalities or self.encoder_of)

    # ------------------------------------------------------------------ input checks
    def _head_spec(self, task: str) -> dict:
        if task not in self.config.heads:
            close = difflib.get_close_matches(str(task), list(self.config.heads), n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
            raise ValueError(f"the model has no head for task {task!r}{hint} (heads: {list(self.config.heads)})")
        return self.config.heads[task]

    def _check_batch(self, task: str, spec: dict, inputs: dict, presence: dict | None, labels: dict | None):
        modalities = spec["modalities"]
        if not isinstance(inputs, dict) or not inputs:
            raise ValueError(f"task {task!r}: `inputs` must map at least one modality to its tensors, got {inputs!r}")
        for m in sorted(set(inputs) | set(presence or {})):
            held = m in inputs or bool(presence[m].any())
            if m not in modalities and held:
                raise ValueError(f"task {task!r} does not read modality {m!r}; it reads {modalities} (read the rows "
                                 f"with processor.transform(task, modalities=model.config.heads[task]['modalities']))")
        if presence is not None:  # a modality this head does not read, held by no row of the batch, is nothing to it
            presence = {m: p for m, p in presence.items() if m in modalities}
        counts = {}
        for m, tensors in inputs.items():
            if not isinstance(tensors, dict) or not tensors:
                raise ValueError(f"inputs[{m!r}] must be a dict of tensors (MODEL_INPUTS.md), got {type(tensors).__name__}")
            sizes = {k: v.shape[0] for k, v in tensors.items()}
            if len(set(sizes.values())) != 1:
                raise ValueError(f"inputs[{m!r}]: tensors disagree on the number of rows: {sizes}")
            counts[m] = next(iter(sizes.values()))
        if presence is None:
            if len(set(counts.values())) != 1:
                raise ValueError(f"task {task!r}: without `presence`, every modality must have every row, but the row "
                                 f"counts differ: {counts}; pass presence={{modality: BoolTensor[B]}}")
            batch = next(iter(counts.values()))
            device = next(iter(next(iter(inputs.values())).values())).device
            presence = {m: torch.ones(batch, dtype=torch.bool, device=device) for m in inputs}
        else:
            if not isinstance(presence, dict) or not presence:
                raise ValueError(f"task {task!r}: `presence` must map modalities to BoolTensor[B], got {presence!r}")
            lengths = {m: tuple(p.shape) for m, p in presence.items()}
            if len({s for s in lengths.values()}) != 1 or len(next(iter(lengths.values()))) != 1:
                raise ValueError(f"presence masks must all be 1-D of the batch size, got shapes {lengths}")
            batch = next(iter(lengths.values()))[0]
            presence = {m: p.bool() for m, p in presence.items()}
            for m in modalities:
                have = int(presence[m].sum()) if m in presence else 0
                if have != counts.get(m, 0):
                    raise ValueError(f"modality {m!r}: presence marks {have} of {batch} rows but inputs[{m!r}] holds "
                                     f"{counts.get(m, 0)} rows; inputs hold only the rows that have the modality")
        for m, tensors in inputs.items():
            self.encoders[self.encoder_of[m]].check_inputs(m, tensors, counts[m])
        matrix = torch.stack([presence[m] if m in presence else
                              torch.zeros(batch, dtype=torch.bool, device=next(iter(presence.values())).device)
                              for m in modalities], 1)
        for out in spec["outputs"]:
            residue = kind_of(out).residue_modality(out)
            if residue is not None and residue not in inputs:
                raise ValueError(f"task {task!r}: output {out['name']!r} is predicted from "
                                 f"{residue!r} residues, which this batch lacks")
        empty = (~matrix.any(1)).nonzero().flatten()
        if len(empty):
            raise ValueError(f"task {task!r}: rows {empty[:10].tolist()} have none of the modalities {modalities}")
        if labels is not None:
            self._check_labels(task, spec, labels, batch)
        return presence, matrix, batch

    def _check_labels(self, task, spec, labels, batch):
        outputs = {o["name"]: o for o in spec["outputs"]}
        allowed = set(outputs) | {kind_of(o).mask_key for o in outputs.values() if kind_of(o).mask_key}
        for name, value in labels.items():
            if name not in allowed:
                raise ValueError(f"task {task!r} has no label column {name!r}; its columns are {sorted(allowed)}")
            if value.shape[0] != batch:
                raise ValueError(f"labels[{name!r}] has {value.shape[0]} rows, the batch has {batch}")
            if name in outputs:
                kind_of(outputs[name]).check_labels(outputs[name], value, batch)

    def _drop_modalities(self, inputs, presence, matrix, modalities, p):
        """Modality dropout: each present modality of a row goes with probability p, never a row's last one (where
        all would go, one comes back at random: each of n goes with probability p - p**n / n)."""
        drop = (torch.rand(matrix.shape, device=matrix.device) < p) & matrix
        keep = matrix & ~drop
        lost = ~keep.any(1)
        if bool(lost.any()):  # give such rows back one of their modalities, at random
            pick = torch.rand(matrix.shape, device=matrix.device).masked_fill(~matrix, -1.0).argmax(1)
            keep[lost, pick[lost]] = True
        new_inputs, new_presence = {}, {}
        for j, m in enumerate(modalities):
            if m not in inputs:
                continue
            selected = keep[:, j][matrix[:, j]]
            new_presence[m] = keep[:, j]
            if bool(selected.any()):
                new_inputs[m] = {k: v[selected] for k, v in inputs[m].items()}
        return new_inputs, new_presence, keep

    # ------------------------------------------------------------------ forward
    def _encode(self, m: str, tensors: dict):
        encoder = self.encoders[self.encoder_of[m]]
        dtype = next(encoder.parameters()).dtype
        tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}
        if not any(p.requires_grad for p in encoder.parameters()):
            with torch.no_grad():
                return encoder(**tensors)
        return encoder(**tensors)

    def forward(
        self,
        task: str,
        inputs: dict,
        presence: dict | None = None,
        labels: dict | None = None,
        modality_dropout: float | None = None,
        return_dict: bool | None = None,
    ) -> MultiMedOutput:
        r"""
        Args:
            task (`str`): the batch's task; the model must have a head for it.
            inputs (`dict[str, dict[str, torch.Tensor]]`): modality -> its tensors, only for rows that have it.
            presence (`dict[str, torch.BoolTensor]`, *optional*): modality -> [B] mask; omitted, every modality in
                `inputs` must have every row.
            labels (`dict[str, torch.Tensor]`, *optional*): label column -> [B, ...] (-100 / NaN = absent), plus
                `coords_mask` for coordinates.
            modality_dropout (`float`, *optional*): overrides `config.modality_dropout` (training only).
            return_dict (`bool`, *optional*): `False` gives `MultiMedOutput.to_tuple()` (defaults to
                `config.return_dict`).
        """
        spec = self._head_spec(task)
        modalities = spec["modalities"]
        presence, matrix, batch = self._check_batch(task, spec, inputs, presence, labels)
        p = self.config.modality_dropout if modality_dropout is None else modality_dropout
        if self.training and p > 0:
            inputs, presence, matrix = self._drop_modalities(inputs, presence, matrix, modalities, p)
        head = self.heads[task]
        residue_of = {o["name"]: kind_of(o).residue_modality(o) for o in spec["outputs"]}
        residue_of = {column: m for column, m in residue_of.items() if m is not None}
        rows = {m: presence[m].nonzero().flatten() for m in inputs}
        encoded = {m: self._encode(m, inputs[m]) for m in modalities if m in inputs}

        if self.config.fusion == "early":
            sequences = {m: (rows[m], seq, mask) for m, (_, seq, mask) in encoded.items()}
            fused, segments = self.early(sequences, matrix, modalities, batch)
            zeros = fused.new_zeros(batch, fused.shape[-1])
            modality_features = torch.stack([masked_mean(*segments[m]) if m in segments else zeros
                                             for m in modalities], 1)
            residues = {c: (segments[r][0][:, 1:-1], residue_mask(segments[r][1])) for c, r in residue_of.items()}
        else:
            features, sequences = {}, {}
            want_seq = set(residue_of.values()) | (set(encoded) if self.config.fusion_tokens == "sequence" else set())
            for m, (pooled, seq, mask) in encoded.items():
                projection = self.projections[m]
                features[m] = (rows[m], projection(pooled))
                if m in want_seq:
                    sequences[m] = (rows[m], projection(seq), mask)
            zeros = next(iter(features.values()))[1].new_zeros(batch, self.config.hidden_size)
            modality_features = torch.stack([scatter_rows(features[m][1], rows[m], batch) if m in features else zeros
                                             for m in modalities], 1)
            if self.config.fusion == "intermediate":
                fused = self.fusion(features, matrix, modalities, batch,
                                    sequences if self.config.fusion_tokens == "sequence" else None)
            else:
                fused = masked_mean(modality_features, matrix)
            residues = {}
            for column, m in residue_of.items():
                r, seq, mask = sequences[m]
                mask = torch.ones(seq.shape[:2], dtype=torch.bool, device=seq.device) if mask is None else mask
                residues[column] = (scatter_rows(seq[:, 1:-1], r, batch), scatter_rows(residue_mask(mask), r, batch))

        residues.update(label_text_embeddings(self, spec))  # label_text outputs: class texts' embeddings
        preds = head(fused, residues)
        modality_logits, modality_preds = None, {}
        if self.config.fusion != "early" and self.config.modality_heads:
            modality_preds = {m: head(features[m][1], modality=m) for m in features}
        if self.config.fusion == "late":
            method = self.config.fusion_method
            for name, kind in head.kinds.items():
                if not kind.late:
                    continue
                ref = next(iter(modality_preds.values()))[name]
                zeros = ref.new_zeros((batch, *ref.shape[1:]))
                stacked = torch.stack([scatter_rows(modality_preds[m][name], rows[m], batch) if m in modality_preds
                                       else zeros for m in modalities], 1)
                preds[name] = combine_late(stacked, matrix, kind, method, head.late_weights)
        if modality_preds:
            modality_logits = {
                m: {n: scatter_rows(head.to_output(n, v), rows[m], batch) for n, v in mp.items()}
                for m, mp in modality_preds.items()
            }

        loss, losses = None, None
        if labels is not None:
            loss, losses = self._loss(task, head, preds, modality_preds, rows, labels, residues)
        output = MultiMedOutput(
            loss=loss,
            logits={n: head.to_output(n, v) for n, v in preds.items()},
            losses=losses,
            fused_features=fused,
            modality_features=modality_features,
            presence=matrix,
            modality_logits=modality_logits,
        )
        return_dict = self.config.return_dict if return_dict is None else return_dict
        return output if return_dict else output.to_tuple()

    def _loss(self, task, head, preds, modality_preds, rows, labels, residues):
        cfg = self.config
        total = sum(v.sum() for v in preds.values()) * 0.0  # keeps the graph when no row has a label
        losses = {}
        fused_differentiable = cfg.fusion != "late" or cfg.fusion_method == "weighted_mean"
        for name, out in head.specs.items():
            if name not in labels:
                continue
            kind, target = head.kinds[name], labels[name]
            mask = labels.get(kind.mask_key) if kind.mask_key else None
            smoothing = {"label_smoothing": cfg.label_smoothing} if cfg.label_smoothing and kind.smooths(out) else {}
            if not kind.late or fused_differentiable:
                value = kind.loss(out, preds[name], target, mask, **smoothing)
                if value is not None:
                    losses[name] = value
                    total = total + cfg.loss_weight(task, FUSED) * value
            if not kind.late:
                continue
            for m, mp in modality_preds.items():
                value = kind.loss(out, mp[name], target[rows[m]], None if mask is None else mask[rows[m]],
                                  **smoothing)
                if value is not None:
                    losses[f"{m}/{name}"] = value
                    total = total + cfg.loss_weight(task, m) * value
        return total, losses

    # ------------------------------------------------------------------ model card
    def create_model_card(self, repo_id: str | None = None, training_data=None, metrics: dict | None = None,
                          tags: list[str] | None = None):
        """The `huggingface_hub.ModelCard` for this model: tasks, modalities, encoders, fusion, data, metrics."""
        return build_model_card(self.config, repo_id=repo_id, training_data=training_data, metrics=metrics,
                                tags=tags)

    def push_to_hub(self, repo_id: str, *, training_data=None, metrics: dict | None = None,
                    commit_message: str | None = None, commit_description: str | None = None,
                    private: bool | None = None, token: bool | str | None = None, revision: str | None = None,
                    create_pr: bool = False, max_shard_size: int | str | None = "50GB",
                    tags: list[str] | None = None) -> str:
        """`PreTrainedModel.push_to_hub`'s interface, writing our model card (`create_model_card`) as README.md, in one
        commit through the package's one upload path (`hub_upload`: every file of `save_pretrained`, folders too).

        training_data: dataset ids or dicts (`name`, `config`, `split`, `num_rows`); metrics: `{task: {name: value}}`.
        """
        card = self.create_model_card(repo_id, training_data=training_data, metrics=metrics, tags=tags)
        with tempfile.TemporaryDirectory() as tmp_dir:
            self.save_pretrained(tmp_dir, max_shard_size=max_shard_size)
            card.save(os.path.join(tmp_dir, "README.md"))
            return upload_files(repo_id, folder_files(tmp_dir), repo_type="model",
                                commit_message=commit_message or "Upload MultiMedModel",
                                commit_description=commit_description, token=token, private=private,
                                revision=revision, create_pr=create_pr)


# The one place the auto classes are registered: AutoConfig / AutoModel in this process, and `auto_map` +
# copied code in every saved folder, so `AutoModel.from_pretrained(path, trust_remote_code=True)` works without
# multimed_hf installed.
MultiMedConfig.register_for_auto_class()
MultiMedModel.register_for_auto_class("AutoModel")
AutoConfig.register("multimed", MultiMedConfig, exist_ok=True)
AutoModel.register(MultiMedConfig, MultiMedModel, exist_ok=True)
