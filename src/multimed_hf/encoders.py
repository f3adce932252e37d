"""Encoder adapters: any transformers (or timm-wrapped) model, or one of our own encoders, as (pooled, tokens, mask)."""

import inspect

from torch import nn
from transformers import AutoConfig, AutoModel, PreTrainedModel

from .encoders_early import EMBEDDERS
from .encoders_eeg import EEGLSTMEncoder, EEGTCNEncoder
from .encoders_expression import ExpressionEncoder, ExpressionMLPEncoder

__all__ = ["HubEncoder", "build_encoder", "config_from_dict", "OWN_ENCODERS"]

#: Our own encoders, by spec kind.
OWN_ENCODERS = {"eeg_lstm": EEGLSTMEncoder, "eeg_tcn": EEGTCNEncoder, "expression": ExpressionEncoder,
                "mlp": ExpressionMLPEncoder, **EMBEDDERS}


def config_from_dict(config: dict, trust_remote_code: bool = False, pretrained: str | None = None):
    """Rebuild an encoder config kept as ``to_dict()`` (``AutoConfig.for_model``)."""
    config = dict(config)
    model_type = config.pop("model_type")
    if trust_remote_code:  # the class lives in the Hub repo's code: fetch (or read from cache) its config class
        return AutoConfig.from_pretrained(pretrained, trust_remote_code=True, **config)
    return AutoConfig.for_model(model_type, **config)


class HubEncoder(nn.Module):
    """A transformers model (``AutoModel``: ViT, BERT, ESM-2, DNABERT, timm wrapper, ...) giving pooled + token features.

    ``pooling``: ``"cls"`` (first token), ``"mean"`` (over ``attention_mask``), ``"pooler"`` (the model's
    ``pooler_output``) or ``"auto"`` (timm: pooler; with an attention mask: mean; else cls).
    """

    def __init__(self, model: PreTrainedModel, pooling: str = "auto"):
        super().__init__()
        self.model = model
        self.pooling = pooling
        config = model.config
        self.is_timm = config.model_type == "timm_wrapper"
        if self.is_timm:
            self.output_dim = model.timm_model.num_features
        elif getattr(config, "hidden_size", None):
            self.output_dim = config.hidden_size
        elif getattr(config, "hidden_sizes", None):
            self.output_dim = config.hidden_sizes[-1]
        else:
            raise ValueError(f"cannot tell the feature size of a {type(model).__name__}: its config has no "
                             f"hidden_size; give the spec an explicit 'output_dim'")
        params = inspect.signature(model.forward).parameters
        self.accepts = {n for n, p in params.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)} - {"self"}
        self.num_channels = getattr(config, "num_channels", None)

    def check_inputs(self, modality: str, inputs: dict, n: int) -> None:
        unknown = sorted(set(inputs) - self.accepts)
        if unknown:
            raise ValueError(f"inputs[{modality!r}]: {type(self.model).__name__} takes no {unknown}; it takes "
                             f"{sorted(k for k in self.accepts if k.endswith(('_ids', '_values', '_mask')))}")
        if "pixel_values" in inputs:
            pv = inputs["pixel_values"]
            if pv.ndim != 4 or (self.num_channels and pv.shape[1] != self.num_channels):
                raise ValueError(f"inputs[{modality!r}]['pixel_values']: expected [n, {self.num_channels or 'C'}, H, W], "
                                 f"got shape {list(pv.shape)}")
        if "input_ids" in inputs:
            ids, mask = inputs["input_ids"], inputs.get("attention_mask")
            if ids.ndim != 2 or (mask is not None and mask.shape != ids.shape):
                raise ValueError(f"inputs[{modality!r}]: expected input_ids [n, T] and attention_mask of the same "
                                 f"shape, got {list(ids.shape)} and {None if mask is None else list(mask.shape)}")

    def forward(self, **inputs):
        out = self.model(**inputs, return_dict=True)
        seq = out.last_hidden_state
        if seq.ndim == 4:  # convolutional maps [n, C, h, w] -> tokens
            seq = seq.flatten(2).transpose(1, 2)
        mask = inputs.get("attention_mask")
        mask = None if mask is None else mask.bool()
        pooling = self.pooling
        if pooling == "auto":
            pooling = "pooler" if self.is_timm else "mean" if mask is not None else "cls"
        if pooling == "pooler":
            pooled = out.pooler_output
        elif pooling == "cls":
            pooled = seq[:, 0]
        elif mask is None:
            pooled = seq.mean(1)
        else:
            w = mask.to(seq.dtype).unsqueeze(-1)
            pooled = (seq * w).sum(1) / w.sum(1).clamp(min=1.0)
        return pooled, seq, mask


def _build_auto_model(spec: dict, attn_implementation: str | None):
    config = config_from_dict(spec["config"], spec.get("trust_remote_code", False), spec.get("pretrained"))
    kwargs = {"trust_remote_code": True} if spec.get("trust_remote_code") else {}
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    if spec.get("pooling") != "pooler" and config.model_type != "timm_wrapper":
        try:  # BERT / ViT / ESM: leave out the unused pooler (no parameters without gradients)
            return AutoModel.from_config(config, add_pooling_layer=False, **kwargs)
        except TypeError as err:
            if "add_pooling_layer" not in str(err):
                raise
    return AutoModel.from_config(config, **kwargs)


def build_encoder(modality: str, spec: dict, hidden_size: int, attn_implementation: str | None = None,
                  model: PreTrainedModel | None = None) -> nn.Module:
    """The encoder (or early-fusion embedder) module of one normalized spec.

    ``model`` is an already built transformers model (``from_encoders_pretrained`` passes the loaded one).
    """
    kind = spec["kind"]
    if kind == "auto":
        if model is None:
            if spec.get("config") is None:
                raise ValueError(
                    f"encoders[{modality!r}] names the Hub id {spec.get('pretrained')!r} but holds no encoder config: "
                    f"build the model with MultiMedModel.from_encoders_pretrained(config), which fetches the config and "
                    f"weights, or give the spec a 'config' (AutoConfig.for_model(...).to_dict()) for random init"
                )
            model = _build_auto_model(spec, attn_implementation)
        encoder = HubEncoder(model, spec.get("pooling", "auto"))
        if spec.get("output_dim"):
            encoder.output_dim = int(spec["output_dim"])
        return encoder
    cls = OWN_ENCODERS[kind]
    kwargs = dict(spec["config"])
    params = inspect.signature(cls.__init__).parameters
    if "hidden_size" in params and kind in ("patch_embed", "token_embed", "expression_embed", "eeg_embed"):
        kwargs["hidden_size"] = hidden_size  # embedders give tokens of the shared size
    if "attn_implementation" in params and attn_implementation is not None:
        kwargs.setdefault("attn_implementation", attn_implementation)
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        raise ValueError(f"encoders[{modality!r}]: {cls.__name__} takes no {unknown}; it takes "
                         f"{sorted(p for p in params if p != 'self')}")
    return cls(**kwargs)
