"""DNA sequence: overlapping k-mers (DNABERT's convention) looked up in a transformers tokenizer's vocabulary."""

from __future__ import annotations

import itertools

from multimed_hf.processors.base import ProcessorError, TokenizedProcessor

__all__ = ["DnaProcessor", "kmer_vocabulary", "kmer_tokenizer", "TRUNCATION_SIDES"]

#: Which part of a sequence too long for ``max_length`` is kept.
TRUNCATION_SIDES = ("right", "left", "center")
KMER_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def kmer_vocabulary(k: int = 6) -> list[str]:
    """DNABERT-style vocabulary: ``[PAD] [UNK] [CLS] [SEP] [MASK]`` then every k-mer of A/C/G/T in lexicographic
    order (4**k + 5 tokens: 4,101 for k = 6). DNABERT's own vocab.txt orders its k-mers differently: to use its
    weights, load its tokenizer instead (``AutoTokenizer.from_pretrained("zhihan1996/DNA_bert_6")``)."""
    if not 1 <= k <= 8:
        raise ProcessorError(f"k={k}: expected 1..8 (4**k k-mers)")
    return list(KMER_SPECIAL_TOKENS) + ["".join(p) for p in itertools.product("ACGT", repeat=k)]


def kmer_tokenizer(k: int = 6):
    """A transformers ``BertTokenizer`` over ``kmer_vocabulary(k)``, saved and loaded like any tokenizer."""
    from transformers import BertTokenizer

    vocab = {token: i for i, token in enumerate(kmer_vocabulary(k))}
    return BertTokenizer(vocab=vocab, do_lower_case=False, tokenize_chinese_chars=False, model_max_length=512)


class DnaProcessor(TokenizedProcessor):
    """One DNA sequence -> ``[CLS]`` + one token per k-mer (stride ``stride``) + ``[SEP]``.

    The sequence is upper-cased, whitespace inside it (FASTA line breaks) dropped; a k-mer with any letter other
    than A/C/G/T (``N``, IUPAC codes) becomes the tokenizer's unknown token. A sequence longer than
    ``max_length - 2`` k-mers is cut before k-merising: ``truncation_side`` keeps its start (``"right"`` cuts the
    right end), its end (``"left"``) or a window centred on ``crop_center`` (a nucleotide position; default the
    middle). In Xpresso's 10,500-nt promoter windows the TSS is at position 7,000: ``truncation_side="center",
    crop_center=7000`` keeps the TSS.
    """

    def __init__(self, tokenizer=None, k: int = 6, stride: int = 1, max_length: int = 512,
                 truncation_side: str = "right", crop_center: int | None = None, pad_to_multiple_of: int | None = None):
        if truncation_side not in TRUNCATION_SIDES:
            raise ProcessorError(f"truncation_side={truncation_side!r}: expected one of {TRUNCATION_SIDES}")
        if stride < 1 or max_length < 3:
            raise ProcessorError(f"stride={stride}, max_length={max_length}: expected stride >= 1, max_length >= 3")
        self.tokenizer = tokenizer if tokenizer is not None else kmer_tokenizer(k)
        vocab = self.tokenizer.get_vocab()
        if "A" * k not in vocab or "T" * k not in vocab:
            raise ProcessorError(f"the tokenizer's vocabulary has no {'A' * k!r}: not a {k}-mer vocabulary")
        self.cls_id = _first_id(self.tokenizer, ("cls_token_id", "bos_token_id"))
        self.sep_id = _first_id(self.tokenizer, ("sep_token_id", "eos_token_id"))
        self.k, self.stride, self.max_length = int(k), int(stride), int(max_length)
        self.truncation_side, self.crop_center = truncation_side, crop_center
        self.pad_to_multiple_of = pad_to_multiple_of

    def crop(self, sequence: str) -> str:
        """The part of ``sequence`` that fits ``max_length`` tokens."""
        keep = (self.max_length - 3) * self.stride + self.k  # nucleotides spanned by max_length - 2 k-mers
        if len(sequence) <= keep:
            return sequence
        if self.truncation_side == "right":
            return sequence[:keep]
        if self.truncation_side == "left":
            return sequence[-keep:]
        center = len(sequence) // 2 if self.crop_center is None else self.crop_center
        start = min(max(center - keep // 2, 0), len(sequence) - keep)
        return sequence[start:start + keep]

    def kmers(self, sequence: str) -> list[str]:
        """The overlapping k-mers of the (cropped, upper-cased) sequence."""
        sequence = self.crop("".join(sequence.split()).upper())  # FASTA line breaks dropped
        if len(sequence) < self.k:
            raise ProcessorError(f"a DNA sequence of {len(sequence)} nt is shorter than k={self.k}")
        return [sequence[i:i + self.k] for i in range(0, len(sequence) - self.k + 1, self.stride)]

    def __call__(self, sequence: str) -> dict:
        """Token ids of one sequence."""
        if not isinstance(sequence, str):
            raise ProcessorError(f"expected a DNA sequence as str, got {type(sequence).__name__}")
        ids = self.tokenizer.convert_tokens_to_ids(self.kmers(sequence))
        return {"input_ids": [self.cls_id, *ids, self.sep_id]}

    def to_dict(self) -> dict:
        return {"k": self.k, "stride": self.stride, "max_length": self.max_length,
                "truncation_side": self.truncation_side, "crop_center": self.crop_center,
                "pad_to_multiple_of": self.pad_to_multiple_of}



def _first_id(tokenizer, names: tuple[str, ...]) -> int:
    for name in names:
        value = getattr(tokenizer, name, None)
        if value is not None:
            return value
    raise ProcessorError(f"the tokenizer {type(tokenizer).__name__} has none of {names}")
