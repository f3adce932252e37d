"""MultiMed's analyses: out-of-distribution groups (Fig. 2), modality combinations (Fig. 3), robustness, attribution.

Each analysis is a Python function (``ood``, ``combos``, ``robustness``, ``attribution``) and a command entry
(``<name>_main(argv)``, parsed like ``multimed train``) that writes CSV + Markdown + a figure under ``--output_dir``.
The names below are imported on first use, so ``import multimed_hf.analysis`` loads neither torch nor transformers.
"""

from __future__ import annotations

from multimed_hf._lazy import lazy_attributes

#: Public name -> the module (inside this package) that defines it.
_LAZY = {
    "AnalysisError": "._common",
    "AnalysisPaths": "._common",
    "ood": ".ood",
    "ood_main": ".ood",
    "OODOptions": ".ood",
    "OODResult": ".ood",
    "ood_metrics": ".ood",
    "combos": ".combos",
    "combos_main": ".combos",
    "CombosOptions": ".combos",
    "CombosResult": ".combos",
    "COMBO_MODES": ".combos",
    "modality_subsets": ".combos",
    "shapley_values": ".combos",
    "robustness": ".robustness",
    "robustness_main": ".robustness",
    "RobustnessOptions": ".robustness",
    "RobustnessResult": ".robustness",
    "CORRUPTIONS": ".robustness",
    "corrupt": ".robustness",
    "relative_robustness": ".robustness",
    "effective_robustness": ".robustness",
    "attribution": ".attribution",
    "attribution_main": ".attribution",
    "AttributionOptions": ".attribution",
    "AttributionResult": ".attribution",
    "leave_one_out_deltas": ".attribution",
    "gradient_x_input": ".attribution",
    "subgroup_metrics": ".attribution",
    "add_attribution_columns": ".attribution",
}

__all__ = sorted(_LAZY)


__getattr__, __dir__ = lazy_attributes(globals(), _LAZY)
