"""Modality balancing (MILES, OGM-GE, G-Blend) and modality-informed distillation (MIND) as training options."""

from multimed_hf.training.balancing.batches import BalancingError, restrict_batch, task_batches
from multimed_hf.training.balancing.gblend import (
    GBlendWeighting,
    estimate_gblend_weights,
    gblend_weights,
    head_losses,
)
from multimed_hf.training.balancing.miles import MILES_FACTOR, MILES_THRESHOLD, MILESCallback
from multimed_hf.training.balancing.mind import (
    MINDWeighting,
    add_teacher_columns,
    size_and_speed,
    soft_targets_from_columns,
    teacher_soft_targets,
)
from multimed_hf.training.balancing.ogm_ge import OGM_ALPHA, OGMGECallback, OGMGEWeighting, ogm_coefficients
from multimed_hf.training.balancing.utilisation import Utilisation, UtilisationCallback, modality_utilisation
from multimed_hf.training.balancing.variants import (
    BALANCING_VARIANTS,
    BalancingVariant,
    balancing_from_variant,
    register_balancing_variants,
)

__all__ = [
    "BALANCING_VARIANTS",
    "BalancingError",
    "BalancingVariant",
    "GBlendWeighting",
    "MILESCallback",
    "MILES_FACTOR",
    "MILES_THRESHOLD",
    "MINDWeighting",
    "OGMGECallback",
    "OGMGEWeighting",
    "OGM_ALPHA",
    "Utilisation",
    "UtilisationCallback",
    "add_teacher_columns",
    "balancing_from_variant",
    "estimate_gblend_weights",
    "gblend_weights",
    "head_losses",
    "modality_utilisation",
    "ogm_coefficients",
    "register_balancing_variants",
    "restrict_batch",
    "size_and_speed",
    "soft_targets_from_columns",
    "task_batches",
    "teacher_soft_targets",
]
