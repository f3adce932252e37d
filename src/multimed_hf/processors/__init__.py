"""Per-modality processors: images, text, DNA k-mers, protein residues, expression panels and EEG epochs."""

from multimed_hf.processors.base import (
    MissingColumnError,
    MissingProcessorError,
    ModalityProcessor,
    ProcessorError,
    UnsupportedImageError,
    load_modality_processor,
    processor_class,
)
from multimed_hf.processors.dna import DnaProcessor, kmer_tokenizer, kmer_vocabulary
from multimed_hf.processors.eeg import EEGProcessor, normalize_channel_name
from multimed_hf.processors.expression import ExpressionProcessor
from multimed_hf.processors.image import ImageProcessor, default_image_processor
from multimed_hf.processors.protein import ESM2_ALPHABET, ProteinProcessor, esm_tokenizer
from multimed_hf.processors.text import TextProcessor

__all__ = [
    "ModalityProcessor",
    "ImageProcessor",
    "TextProcessor",
    "DnaProcessor",
    "ProteinProcessor",
    "ExpressionProcessor",
    "EEGProcessor",
    "ProcessorError",
    "MissingColumnError",
    "MissingProcessorError",
    "UnsupportedImageError",
    "load_modality_processor",
    "processor_class",
    "default_image_processor",
    "kmer_tokenizer",
    "kmer_vocabulary",
    "esm_tokenizer",
    "ESM2_ALPHABET",
    "normalize_channel_name",
]
