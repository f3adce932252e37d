"""The MultiMed paper's Table 1 and Table 2 numbers as data, in percent as printed, with where each came from.

Source: Mo & Liang, "MultiMed: Massively Multimodal and Multitask Medical Understanding", arXiv:2408.12682 (2024),
as transcribed in ``../shared/reference/multimed_paper.txt`` (section 4.4 for Table 1, section 5.3 for Table 2).
Every number below is copied from the tables' rows, never from the prose.

How the paper prints them, and what is ambiguous (read before comparing):

- Every column of both tables is headed "(%, ↑)", the Pearson (``Exp.``) and TM-score (``Struc.``) columns too:
  the paper prints Pearson r and TM-score multiplied by 100 (e.g. 72.35 for r = 0.7235). So "the paper's scale" is
  percent for every column, and ``paper_value`` here is always that printed percentage.
- The rows of Table 1 are labelled "Domain-specific", "Unimodal", "Unimodal multi-task", "Multimodal" and
  "Multimodal multi-task"; we key them by the family names of ``training.families`` (``TABLE1_ROW_LABELS``).
- The prose of section 5.2 does not follow those labels consistently. It writes "from 45.39% (unimodal) to 61.89%"
  (disease) and "49.35% (unimodal) to 69.38%" (MedVQA), and for brain tumour, cell type, expression and structure
  quotes 54.27, 55.72, 53.25 and 35.15 as the starting points: all of these are the Domain-specific row's
  numbers, so the prose calls the domain-specific row "unimodal". But for diabetic retinopathy it writes
  "57.86% to 67.86%", and 57.86 is the Unimodal row's number (Domain-specific prints 49.23). We take every number
  from the rows as labelled and ignore the prose.
- The paper reports the mean over three seeds with no spread, and does not say which label column a multi-label
  task's column scores: ``Cancer.`` (benign/malignant or the 8 subtypes), ``Retino.`` (OCT finding or fundus grade),
  ``Radio.`` (Kermany findings, CC-CCII or MosMedData severity), ``MedVQA`` (closed, open or all questions),
  ``Age.`` (a regression task printed as a percentage: accuracy on age bins, as ``TASKS.md`` reads it) and
  ``Disea.`` (a multi-label task: top-1 accuracy, as ``TASKS.md`` reads it). We place each number beside the
  registry's headline (first label column, first metric); that pairing is our reading, not the paper's statement.
- The paper prints distinct Multimodal numbers for tasks whose data have one modality (brain tumour MRI, bone age
  X-ray, motor imagery EEG, cell type scRNA-seq, protein structure), without saying what the second modality was.
  Our tables keep the paper's number there and say that our multimodal run is the unimodal one.
- Table 2's first two rows repeat Table 1's Multimodal and Multimodal multi-task numbers for the same three tasks
  (checked equal); its expression column is again Pearson r x 100 although the prose calls all three "accuracies".
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Mapping

__all__ = [
    "PAPER",
    "TABLE1",
    "TABLE1_COLUMNS",
    "TABLE1_ROW_LABELS",
    "TABLE2",
    "TABLE2_COLUMNS",
    "TABLE2_ROW_LABELS",
    "paper_value",
]

#: The paper every number here comes from.
PAPER = "Mo & Liang, MultiMed, arXiv:2408.12682 (2024)"

#: Table 1's column headers as printed, per registry task, in the paper's column order.
TABLE1_COLUMNS: Mapping[str, str] = MappingProxyType({
    "disease": "Disea.",
    "brain_tumor": "Tumor.",
    "breast_cancer": "Cancer.",
    "radiographic_findings": "Radio.",
    "diabetic_retinopathy": "Retino.",
    "bone_age": "Age.",
    "motor_imagery": "Motor.",
    "cell_type": "Cell.",
    "expression_prediction": "Exp.",
    "protein_structure": "Struc.",
    "med_vqa": "MedVQA",
})

#: Table 1's row labels as printed, per family name.
TABLE1_ROW_LABELS: Mapping[str, str] = MappingProxyType({
    "domain_specific": "Domain-specific",
    "unimodal": "Unimodal",
    "unimodal_multitask": "Unimodal multi-task",
    "multimodal": "Multimodal",
    "multimodal_multitask": "Multimodal multi-task",
})


def _row(values: tuple[float, ...], columns: Mapping[str, str]) -> Mapping[str, float]:
    if len(values) != len(columns):  # a transcription slip must not shift a column
        raise ValueError(f"paper row: {len(values)} numbers for {len(columns)} columns {list(columns.values())}")
    return MappingProxyType(dict(zip(columns, values)))


#: Table 1 (section 4.4 of the paper): family -> task -> mean test score over three seeds, percent as printed
#: (accuracy; Pearson r x 100 for ``expression_prediction``; TM-score x 100 for ``protein_structure``).
#: Each tuple is one printed row, left to right in ``TABLE1_COLUMNS`` order.
TABLE1: Mapping[str, Mapping[str, float]] = MappingProxyType({
    # "Domain-specific  45.39 54.27 43.78 54.73 49.23 33.15 36.82 55.72 53.25 35.15 49.35"
    "domain_specific": _row((45.39, 54.27, 43.78, 54.73, 49.23, 33.15, 36.82, 55.72, 53.25, 35.15, 49.35),
                            TABLE1_COLUMNS),
    # "Unimodal  52.32 63.16 52.75 62.03 57.86 40.23 42.15 63.25 60.78 43.16 56.32"
    "unimodal": _row((52.32, 63.16, 52.75, 62.03, 57.86, 40.23, 42.15, 63.25, 60.78, 43.16, 56.32), TABLE1_COLUMNS),
    # "Unimodal multi-task  55.21 66.85 54.35 65.15 59.21 43.15 44.67 65.83 64.29 45.37 58.79"
    "unimodal_multitask": _row((55.21, 66.85, 54.35, 65.15, 59.21, 43.15, 44.67, 65.83, 64.29, 45.37, 58.79),
                               TABLE1_COLUMNS),
    # "Multimodal  57.56 69.23 56.32 68.07 62.38 45.27 47.85 67.29 66.16 47.65 62.16"
    "multimodal": _row((57.56, 69.23, 56.32, 68.07, 62.38, 45.27, 47.85, 67.29, 66.16, 47.65, 62.16), TABLE1_COLUMNS),
    # "Multimodal multi-task  61.89 73.52 61.37 73.29 67.86 49.78 53.21 71.15 72.35 53.28 69.38"
    "multimodal_multitask": _row((61.89, 73.52, 61.37, 73.29, 67.86, 49.78, 53.21, 71.15, 72.35, 53.28, 69.38),
                                 TABLE1_COLUMNS),
})

#: Table 2's column headers as printed, per registry task.
TABLE2_COLUMNS: Mapping[str, str] = MappingProxyType({
    "disease": "Disea cls.",
    "cell_type": "Cell cls.",
    "expression_prediction": "Expre pred.",
})

#: Table 2's row labels as printed, per row key (the ``family`` values the few-shot report writes).
TABLE2_ROW_LABELS: Mapping[str, str] = MappingProxyType({
    "multimodal": "Multimodal",
    "multimodal_multitask": "Multimodal multi-task",
    "zero_shot": "zero-shot",
    "5_shot": "5-shot",
    "10_shot": "10-shot",
    "20_shot": "20-shot",
})

#: Table 2 (section 5.3 of the paper): row -> task -> percent as printed (Pearson r x 100 for expression).
TABLE2: Mapping[str, Mapping[str, float]] = MappingProxyType({
    "multimodal": _row((57.56, 67.29, 66.16), TABLE2_COLUMNS),            # "Multimodal  57.56 67.29 66.16"
    "multimodal_multitask": _row((61.89, 71.15, 72.35), TABLE2_COLUMNS),  # "Multimodal multi-task  61.89 71.15 72.35"
    "zero_shot": _row((53.78, 60.21, 58.65), TABLE2_COLUMNS),             # "zero-shot  53.78 60.21 58.65"
    "5_shot": _row((55.13, 62.58, 60.72), TABLE2_COLUMNS),                # "5-shot  55.13 62.58 60.72"
    "10_shot": _row((56.35, 65.36, 63.25), TABLE2_COLUMNS),               # "10-shot  56.35 65.36 63.25"
    "20_shot": _row((57.28, 66.83, 65.43), TABLE2_COLUMNS),               # "20-shot  57.28 66.83 65.43"
})


def paper_value(table: Mapping[str, Mapping[str, float]], family: str, task: str) -> float | None:
    """The paper's printed number for ``family`` x ``task`` in ``table`` (``TABLE1`` or ``TABLE2``), or None where it
    prints none. A variant such as ``multimodal_multitask+miles`` has none: the paper ran no balancing."""
    return table.get(family, {}).get(task)
