"""MultiMed's analyses: out-of-distribution groups (Fig. 2), modality combinations (Fig. 3), robustness, attribution.

Each analysis is a Python function (``ood``, ``combos``, ``robustness``, ``attribution``) and a command entry
(``<name>_main(argv)``, parsed like ``multimed train``) that writes CSV + Markdown + a figure under ``--output_dir``.
The names below are imported on first use, so ``import multimed_hf.analysis`` loads neither torch nor transformers.
"""

from __future__ import annotations

import importlib

#: Public name -> the module (inside this package) that defines it.
_LAZY = {
    "AnalysisError": "_common",
    "AnalysisPaths": "_common",
    "ood": "ood",
    "ood_main": "ood",
    "OODOptions": "ood",
    "OODResult": "ood",
    "ood_metrics": "ood",
    "combos": "combos",
    "combos_main": "combos",
    "CombosOptions": "combos",
    "CombosResult": "combos",
    "COMBO_MODES": "combos",
    "modality_subsets": "combos",
    "shapley_values": "combos",
    "robustness": "robustness",
    "robustness_main": "robustness",
    "RobustnessOptions": "robustness",
    "RobustnessResult": "robustness",
    "CORRUPTIONS": "robustness",
    "corrupt": "robustness",
    "relative_robustness": "robustness",
    "effective_robustness": "robustness",
    "attribution": "attribution",
    "attribution_main": "attribution",
    "AttributionOptions": "attribution",
    "AttributionResult": "attribution",
    "leave_one_out_deltas": "attribution",
    "gradient_x_input": "attribution",
    "subgroup_metrics": "attribution",
    "add_attribution_columns": "attribution",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(f"{__name__}.{_LAZY[name]}")
    # importing a submodule sets the package attribute of its name (``combos`` the module): the function wins
    for public, where in _LAZY.items():
        if where == _LAZY[name]:
            globals()[public] = getattr(module, public)
    return globals()[name]


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
