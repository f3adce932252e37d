"""Free text (clinical notes, questions): any transformers tokenizer, truncated and right-padded."""

from __future__ import annotations

from multimed_hf.processors.base import ProcessorError, TokenizedProcessor

__all__ = ["TextProcessor"]


class TextProcessor(TokenizedProcessor):
    """One text -> ``input_ids`` and ``attention_mask`` (token type ids are left out: the batch contract has none).

    ``tokenizer`` is any transformers tokenizer (``AutoTokenizer.from_pretrained(<folder or Hub id>)``); ``None``
    or blank text counts as absent. Batches are right-padded to their longest row.
    """

    def __init__(self, tokenizer, max_length: int = 512, pad_to_multiple_of: int | None = None):
        if tokenizer is None or not hasattr(tokenizer, "convert_tokens_to_ids"):
            raise ProcessorError(f"TextProcessor needs a transformers tokenizer, got {type(tokenizer).__name__}")
        if tokenizer.pad_token_id is None:
            raise ProcessorError(f"the tokenizer {type(tokenizer).__name__} has no pad token; set one "
                                 f"(tokenizer.pad_token = ...) before wrapping it")
        if max_length < 2:
            raise ProcessorError(f"max_length={max_length}: expected at least 2 (room for the special tokens)")
        self.tokenizer = tokenizer
        self.max_length = int(max_length)
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, text: str) -> dict:
        """Token ids of one text, truncated to ``max_length``."""
        if not isinstance(text, str):
            raise ProcessorError(f"expected text as str, got {type(text).__name__}")
        out = self.tokenizer(text, truncation=True, max_length=self.max_length, return_token_type_ids=False,
                             return_attention_mask=False)
        return {"input_ids": list(out["input_ids"])}

    def to_dict(self) -> dict:
        return {"max_length": self.max_length, "pad_to_multiple_of": self.pad_to_multiple_of}
