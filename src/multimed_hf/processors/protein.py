"""Protein sequence: one token per residue in ESM-2's alphabet, between ``<cls>`` and ``<eos>``."""

from __future__ import annotations

import tempfile
from pathlib import Path

from multimed_hf.processors.base import ProcessorError, TokenizedProcessor

__all__ = ["ProteinProcessor", "ESM2_ALPHABET", "esm_tokenizer"]

#: ESM-2's 33 tokens in id order (facebook/esm2_* vocab.txt): ``<pad>`` is 1, residues start at 4.
ESM2_ALPHABET = (
    "<cls>", "<pad>", "<eos>", "<unk>",
    "L", "A", "G", "V", "S", "E", "R", "T", "I", "D", "P", "K", "Q", "N", "F", "Y", "M", "H", "W", "C",
    "X", "B", "U", "Z", "O", ".", "-", "<null_1>", "<mask>",
)


def esm_tokenizer(max_length: int = 1024):
    """A transformers ``EsmTokenizer`` over ``ESM2_ALPHABET`` (the vocab file is written to a temporary folder,
    read, and removed)."""
    from transformers import EsmTokenizer

    with tempfile.TemporaryDirectory() as folder:
        vocab = Path(folder) / "vocab.txt"
        vocab.write_text("\n".join(ESM2_ALPHABET) + "\n")
        return EsmTokenizer(vocab_file=str(vocab), model_max_length=max_length)


class ProteinProcessor(TokenizedProcessor):
    """One amino-acid sequence -> ``<cls>`` + one token per residue + ``<eos>``, so residue ``i`` is token ``i + 1``
    (what the coordinate labels are aligned to). The sequence is upper-cased, whitespace inside it dropped; a letter
    outside the tokenizer's vocabulary becomes ``<unk>``. Sequences longer than ``max_length - 2`` residues keep
    their first residues."""

    def __init__(self, tokenizer=None, max_length: int = 1024, pad_to_multiple_of: int | None = None):
        if max_length < 3:
            raise ProcessorError(f"max_length={max_length}: expected at least 3")
        self.tokenizer = tokenizer if tokenizer is not None else esm_tokenizer(max_length)
        for name in ("cls_token_id", "eos_token_id", "pad_token_id", "unk_token_id"):
            if getattr(self.tokenizer, name, None) is None:
                raise ProcessorError(f"the protein tokenizer {type(self.tokenizer).__name__} has no {name}")
        self.max_length = int(max_length)
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, sequence: str) -> dict:
        """Token ids of one sequence; ``num_residues`` is how many residues were kept."""
        if not isinstance(sequence, str):
            raise ProcessorError(f"expected a protein sequence as str, got {type(sequence).__name__}")
        residues = list("".join(sequence.split()).upper())[: self.max_length - 2]  # FASTA line breaks dropped
        ids = self.tokenizer.convert_tokens_to_ids(residues)
        tok = self.tokenizer
        return {"input_ids": [tok.cls_token_id, *ids, tok.eos_token_id], "num_residues": len(residues)}

    def to_dict(self) -> dict:
        return {"max_length": self.max_length, "pad_to_multiple_of": self.pad_to_multiple_of}
