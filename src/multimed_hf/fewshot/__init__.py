"""Few-shot PEFT adapters, zero-shot transfer by label text and the paper's Table 2 (``multimed fewshot``).

The names below are imported on first use, so ``import multimed_hf.fewshot`` loads neither torch nor peft.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from multimed_hf._lazy import lazy_attributes

#: Public name -> the module (inside this package) that defines it.
_LAZY = {
    "SupportSet": ".support",
    "SupportError": ".support",
    "sample_support": ".support",
    "check_disjoint": ".support",
    "AdapterSettings": ".adapters",
    "AdapterError": ".adapters",
    "TARGETS_BY_FAMILY": ".adapters",
    "default_targets": ".adapters",
    "head_spec_for": ".adapters",
    "prepare_head": ".adapters",
    "peft_config": ".adapters",
    "attach_adapter": ".adapters",
    "save_adapter": ".adapters",
    "load_adapter": ".adapters",
    "push_adapter": ".adapters",
    "ZeroShotError": ".zeroshot",
    "AlignmentSettings": ".zeroshot",
    "AlignmentTrainer": ".zeroshot",
    "train_alignment": ".zeroshot",
    "PreparedAlignment": ".zeroshot",
    "prepare_alignment": ".zeroshot",
    "alignment_trainer": ".zeroshot",
    "alignment_info": ".zeroshot",
    "write_alignment_info": ".zeroshot",
    "add_alignment_encoders": ".alignment_encoders",
    "alignment_texts": ".alignment_encoders",
    "use_label_text": ".zeroshot",
    "label_text_head": ".zeroshot",
    "hold_out": ".zeroshot",
    "pair_loss": ".zeroshot",
    "zero_shot_predict": ".zeroshot",
    "FewShotArguments": ".run",
    "run_fewshot": ".run",
    "write_table2": ".run",
    "fewshot_main": ".run",
}

__all__ = list(_LAZY)

if TYPE_CHECKING:  # for type checkers and IDEs; never run
    from .adapters import (TARGETS_BY_FAMILY, AdapterError, AdapterSettings, attach_adapter, default_targets,
                           head_spec_for, load_adapter, peft_config, prepare_head, push_adapter, save_adapter)
    from .run import FewShotArguments, fewshot_main, run_fewshot, write_table2
    from .support import SupportError, SupportSet, check_disjoint, sample_support
    from .alignment_encoders import add_alignment_encoders, alignment_texts
    from .zeroshot import (AlignmentSettings, AlignmentTrainer, PreparedAlignment, ZeroShotError, alignment_info,
                           alignment_trainer, hold_out, label_text_head, pair_loss, prepare_alignment,
                           train_alignment, use_label_text, write_alignment_info, zero_shot_predict)


__getattr__, __dir__ = lazy_attributes(globals(), _LAZY)
