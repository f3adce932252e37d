"""Macro F1: the unweighted mean of per-class F1, with absent references left out."""

import datasets

import evaluate

from multimed_hf.metrics.classification import macro_f1
from multimed_hf.metrics.evaluate_module import RefuseEmptyInput

_DESCRIPTION = """
Macro F1 is the unweighted mean over classes of F1 = 2 * precision * recall / (precision + recall), each class
counted once whatever its size. A class never predicted and never present scores 0 only if it is listed in
`labels`; by default the classes are those seen in the predictions or the references. Precision or recall with
a zero denominator counts as 0.

References that are absent (`ignore_index`, -100 by default, or None) are left out, never read as a wrong answer.
Predictions may be class labels or one row of class scores per sample (its argmax is the predicted class).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`, or `list` of `list` of `float`): predicted labels, or class scores per sample.
    references (`list` of `int`): reference labels (None or `ignore_index` where absent).
    labels (`list` of `int`, optional): the classes to average over. Defaults to every class seen.
    ignore_index (`int` or `None`): the reference value that marks an absent label. Defaults to -100.

Returns:
    macro_f1 (`float`): mean per-class F1, from 0.0 to 1.0 (higher is better).

Examples:

    Class 0: F1 = 1; class 1: precision 1, recall 1/2, F1 = 2/3; class 2: precision 1/2, recall 1, F1 = 2/3:

    >>> macro_f1_metric = evaluate.load("metrics/macro_f1")  # a local folder: run from the repository root
    >>> result = macro_f1_metric.compute(predictions=[0, 0, 1, 2, 2], references=[0, 0, 1, 1, 2])
    >>> round(result["macro_f1"], 4)
    0.7778

    An absent reference (None) is left out, and `labels` adds a class that never occurs (F1 0):

    >>> result = macro_f1_metric.compute(predictions=[0, 1, 1], references=[0, 1, None], labels=[0, 1, 2])
    >>> round(result["macro_f1"], 4)
    0.6667
"""

_CITATION = """
@article{sokolova2009systematic,
  title={A systematic analysis of performance measures for classification tasks},
  author={Sokolova, Marina and Lapalme, Guy},
  journal={Information Processing \\& Management},
  volume={45},
  number={4},
  pages={427--437},
  year={2009}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MacroF1(RefuseEmptyInput, evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features({"predictions": datasets.Value("float64"), "references": datasets.Value("float64")}),
                datasets.Features({
                    "predictions": datasets.List(datasets.Value("float64")),
                    "references": datasets.Value("float64"),
                }),
            ],
            reference_urls=["https://scikit-learn.org/stable/modules/generated/sklearn.metrics.f1_score.html"],
        )

    def _compute(self, predictions, references, labels=None, ignore_index=-100):
        return {"macro_f1": macro_f1(predictions, references, labels=labels, ignore_index=ignore_index)}
