"""Balanced accuracy (mean per-class recall), with absent references left out."""

import datasets

import evaluate

from multimed_hf.metrics.classification import balanced_accuracy
from multimed_hf.metrics.evaluate_module import RefuseEmptyInput

_DESCRIPTION = """
Balanced accuracy is the mean of the per-class recalls over the classes present in the references:
(1/K) * sum_k TP_k / (TP_k + FN_k). Unlike plain accuracy it does not reward always predicting the majority
class, which matters for the imbalanced medical sets (e.g. few viral pneumonias, few proliferative DR grades).

References that are absent (`ignore_index`, -100 by default, or None) are left out, never read as a wrong answer.
Predictions may be class labels or one row of class scores per sample (its argmax is the predicted class).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`, or `list` of `list` of `float`): predicted labels, or class scores per sample.
    references (`list` of `int`): reference labels (None or `ignore_index` where absent).
    ignore_index (`int` or `None`): the reference value that marks an absent label. Defaults to -100.

Returns:
    balanced_accuracy (`float`): mean per-class recall, from 0.0 to 1.0 (higher is better; 1/K for a constant
        guess among K classes).

Examples:

    One class of three predicted right in two of its two samples, one in one of two, one in neither of one:

    >>> balanced_accuracy_metric = evaluate.load("metrics/balanced_accuracy")  # run from the repository root
    >>> balanced_accuracy_metric.compute(predictions=[0, 0, 1, 0, 1, -5], references=[0, 0, 1, 1, 2, -100])
    {'balanced_accuracy': 0.5}

    Class scores (the argmax is the prediction):

    >>> balanced_accuracy_metric.compute(predictions=[[0.9, 0.1], [0.8, 0.2], [0.6, 0.4]], references=[0, 0, 1])
    {'balanced_accuracy': 0.5}
"""

_CITATION = """
@inproceedings{brodersen2010balanced,
  title={The Balanced Accuracy and Its Posterior Distribution},
  author={Brodersen, Kay Henning and Ong, Cheng Soon and Stephan, Klaas Enno and Buhmann, Joachim M.},
  booktitle={20th International Conference on Pattern Recognition},
  pages={3121--3124},
  year={2010}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class BalancedAccuracy(RefuseEmptyInput, evaluate.Metric):
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
            reference_urls=[
                "https://scikit-learn.org/stable/modules/generated/sklearn.metrics.balanced_accuracy_score.html"
            ],
        )

    def _compute(self, predictions, references, ignore_index=-100):
        return {"balanced_accuracy": balanced_accuracy(predictions, references, ignore_index=ignore_index)}
