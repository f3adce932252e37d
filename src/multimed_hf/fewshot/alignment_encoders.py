"""The encoders contrastive alignment adds to an assembled run: a text encoder for class texts and captions, and the
image-caption pairs' ``figure`` modality sharing an imaging encoder."""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

from multimed_hf.fewshot.zeroshot import ZeroShotError, class_text
from multimed_hf.tasks import IMAGE_MODALITIES, get_task

__all__ = ["PAIR_MODALITY", "alignment_texts", "add_alignment_encoders"]

#: The image modality of the ``pmc_pairs`` config (registry: ``figure``, a scientific figure of any kind).
PAIR_MODALITY = "figure"


def alignment_texts(tasks: Sequence[str], class_texts: Mapping[str, Mapping[str, str]] | None = None,
                    captions: Iterable[str] = ()) -> list[str]:
    """The texts the text encoder will read: every class text of ``tasks`` (the registry's class names, or the
    ``class_texts`` given) and the captions of the image-caption pairs (a small tokenizer is trained on them when
    no pretrained one is installed)."""
    texts = []
    for task in tasks:
        given = dict((class_texts or {}).get(task, {}))
        for label in get_task(task).labels:
            texts += [given.get(n, class_text(n)) for n in (label.names or ())]
    return texts + [c for c in captions if c]


def _text_encoder(encoders: str, facts, texts: Sequence[str]):
    from multimed_hf.processors.text import TextProcessor
    from multimed_hf.training.encoder_presets import choose_encoders, small_text_tokenizer, tokenizer_sources

    source = tokenizer_sources(encoders, ["text"]).get("text")
    if source:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(source)
    else:
        tokenizer = small_text_tokenizer(lambda: iter(texts))
    choice = choose_encoders(encoders, ["text"], facts, {"text": len(tokenizer)})
    processor = TextProcessor(tokenizer, max_length=choice.max_lengths.get("text", 512))
    return choice.specs["text"], processor, choice.pretrained


def add_alignment_encoders(assembly, encoders: str, *, texts: Sequence[str] = (), pairs: bool = False) -> Any:
    """``assembly`` (``training.assembly.assemble(..., build_model=False)``) with what alignment needs, and its model
    built: a ``text`` encoder (the ``encoders`` preset's: a pretrained Hub text encoder and its tokenizer for
    ``hub``, a small random-init BERT for ``small``) when no task of the run reads text, and with ``pairs`` the
    ``figure`` modality of image-caption pairs sharing the encoder of the run's first imaging modality (captions go
    through the same text encoder). Returns the same ``Assembly``, its config and model replaced."""
    from multimed_hf.configuration_multimed import MultiMedConfig
    from multimed_hf.modeling_multimed import MultiMedModel

    if assembly.model is not None:
        raise ZeroShotError("add_alignment_encoders: assemble the run with build_model=False (the encoders are added "
                            "before the model is built)")
    config, processor = assembly.config, assembly.processor
    if config.fusion == "early":
        raise ZeroShotError("contrastive alignment scores the fused features against text embeddings in the shared "
                            "space, which early fusion (one encoder over every modality) does not have; use "
                            "--fusion intermediate or late")
    specs = dict(config.encoders)
    pretrained = bool(assembly.encoders.pretrained)
    if "text" not in specs:
        specs["text"], processor.processors["text"], text_pretrained = _text_encoder(encoders, assembly.facts, texts)
        pretrained = pretrained or text_pretrained
    if pairs and PAIR_MODALITY not in specs:
        images = [m for ms in assembly.modalities.values() for m in ms if m in IMAGE_MODALITIES]
        if not images:
            raise ZeroShotError(f"image-caption pairs train an imaging encoder against the text encoder, but no task "
                                f"of this run reads an image (modalities: {assembly.modalities})")
        shared = images[0]
        specs[PAIR_MODALITY] = {"kind": "shared", "with": config.encoders[shared].get("with", shared)
                                if config.encoders[shared]["kind"] == "shared" else shared}
        if PAIR_MODALITY not in processor.processors and "image" not in processor.processors:
            processor.processors[PAIR_MODALITY] = processor.processor_for(shared)
    values = config.to_dict()
    values["encoders"] = specs
    config = MultiMedConfig.from_dict(values)
    assembly.config = config
    assembly.model = MultiMedModel.from_encoders_pretrained(config) if pretrained else MultiMedModel(config)
    return assembly
