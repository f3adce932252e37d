"""Accuracy, with absent references left out and top-1 accuracy for multi-label references with unknowns."""

import datasets

import evaluate

from multimed_hf.metrics.classification import accuracy
from multimed_hf.metrics.evaluate_module import RefuseEmptyInput

_DESCRIPTION = """
Accuracy is the fraction of samples whose predicted class equals the reference class:
(number correct) / (number scored). It is the figure the MultiMed paper reports for its classification tasks.

References that are absent (`ignore_index`, -100 by default, or None) are left out, never read as a wrong answer.
Predictions may be class labels or one row of class scores per sample (its argmax is the predicted class).
For multi-label references (one 0/1 entry per label, NaN where the label is unknown for that sample, as in
TorchXRayVision), it is top-1 accuracy: the highest-scoring known label must be a positive; samples with no
known positive are left out.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`, or `list` of `list` of `float`): predicted labels, or class scores per sample
        (logits or probabilities; the argmax is taken).
    references (`list` of `int`, or `list` of `list` of `float`): reference labels (None or `ignore_index` where
        absent), or multi-label 0/1 rows with NaN for unknown labels.
    ignore_index (`int` or `None`): the reference value that marks an absent label. Defaults to -100.

Returns:
    accuracy (`float`): fraction correct among the scored samples, from 0.0 to 1.0 (higher is better).

Examples:

    Labels, with one absent reference left out:

    >>> accuracy_metric = evaluate.load("metrics/accuracy")  # a local folder: run from the repository root
    >>> accuracy_metric.compute(predictions=[0, 1, 2, 2], references=[0, 1, 1, -100])
    {'accuracy': 0.6666666666666666}

    Class scores (the argmax is the prediction):

    >>> accuracy_metric.compute(predictions=[[0.1, 0.9], [2.0, -1.0], [0.3, 0.4]], references=[1, 0, 0])
    {'accuracy': 0.6666666666666666}

    Multi-label references with unknown labels (NaN): top-1 among the known labels:

    >>> nan = float("nan")
    >>> accuracy_metric.compute(
    ...     predictions=[[0.9, 0.8, 0.1], [0.2, 0.1, 0.7]],
    ...     references=[[nan, 1.0, 0.0], [1.0, 0.0, 0.0]],
    ... )
    {'accuracy': 0.5}
"""

_CITATION = """
@article{mo2024multimed,
  title={MultiMed: Massively Multimodal and Multitask Medical Understanding},
  author={Mo, Shentong and Liang, Paul Pu},
  journal={arXiv preprint arXiv:2408.12682},
  year={2024}
}
@article{pedregosa2011scikit,
  title={Scikit-learn: Machine Learning in {P}ython},
  author={Pedregosa, F. and Varoquaux, G. and Gramfort, A. and Michel, V. and Thirion, B. and Grisel, O. and
          Blondel, M. and Prettenhofer, P. and Weiss, R. and Dubourg, V. and others},
  journal={Journal of Machine Learning Research},
  volume={12},
  pages={2825--2830},
  year={2011}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Accuracy(RefuseEmptyInput, evaluate.Metric):
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
                datasets.Features({
                    "predictions": datasets.List(datasets.Value("float64")),
                    "references": datasets.List(datasets.Value("float64")),
                }),
            ],
            reference_urls=["https://scikit-learn.org/stable/modules/generated/sklearn.metrics.accuracy_score.html"],
        )

    def _compute(self, predictions, references, ignore_index=-100):
        return {"accuracy": accuracy(predictions, references, ignore_index=ignore_index)}
