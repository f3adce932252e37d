"""Macro AUROC: one-vs-rest for classes, per label for multi-label references with unknowns (left out)."""

import datasets

import evaluate

from multimed_hf.metrics.classification import auroc_per_class
from multimed_hf.metrics.classification import macro_auroc
from multimed_hf.metrics.evaluate_module import RefuseEmptyInput

_DESCRIPTION = """
The area under the ROC curve (AUROC) is the probability that a random positive sample scores higher than a random
negative one (ties count half). Macro AUROC is its unweighted mean over classes or labels:

- binary: one score per sample and 0/1 references;
- multi-class: one row of class scores per sample and class indices: each class against the rest (one-vs-rest);
- multi-label: one row of scores and one row of 0/1 references per sample, NaN (or None, or `ignore_index`) where a
  label is unknown for that sample. Unknown entries are left out per label, never read as negatives
  (TorchXRayVision's convention for merged chest X-ray sources).

A class or label whose known references hold only one class has no AUROC: it is skipped, reported under
`skipped` (and in a warning), and left out of the mean. Binary and multi-label scores may be logits or
probabilities: only their order within a label matters. Multi-class one-vs-rest compares the samples' scores of
each class, which takes probabilities (as scikit-learn's `multi_class="ovr"`): rows that are not probabilities (a
value outside [0, 1], or a row not summing to 1 within rounding: 0.005 a class, which rounded or half-precision
probabilities keep) are read as logits and turned into probabilities with a softmax (with a warning where the values
lie in [0, 1]).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `float`, or `list` of `list` of `float`): scores, one per sample (binary) or one row of
        class / label scores per sample.
    references (`list` of `int`, or `list` of `list` of `float`): class indices (None or `ignore_index` where
        absent), or multi-label 0/1 rows with NaN for unknown.
    ignore_index (`int` or `None`): the reference value that marks an absent label. Defaults to -100.

Returns:
    auroc (`float`): mean AUROC over the classes where it is defined, from 0.0 to 1.0 (0.5 is chance; higher is
        better).
    per_class (`list` of `float`): AUROC of each class or label, NaN where skipped.
    skipped (`list` of `int`): the indices of the skipped classes or labels.

Examples:

    Three classes, one-vs-rest, from logits (a softmax first; class AUROCs 0.8333, 1.0 and 1.0):

    >>> auroc = evaluate.load("metrics/auroc")  # a local folder: run from the repository root
    >>> scores = [[2.0, 0.1, 0.3], [0.2, 1.5, 0.1], [0.1, 0.2, 3.0], [1.0, 1.6, 0.0], [0.3, 0.1, 0.5]]
    >>> result = auroc.compute(predictions=scores, references=[0, 1, 2, 0, 2])
    >>> round(result["auroc"], 4), result["skipped"]
    (0.9444, [])

    Multi-label with unknown labels (NaN); the third label has no known negative, so it is skipped:

    >>> nan = float("nan")
    >>> result = auroc.compute(
    ...     predictions=[[0.9, 0.2, 0.5], [0.1, 0.8, 0.5], [0.7, 0.3, 0.5], [0.4, 0.6, 0.5]],
    ...     references=[[1, 0, nan], [0, 1, 1], [1, nan, nan], [0, 0, 1]],
    ... )
    >>> result["auroc"], result["skipped"]
    (1.0, [2])
"""

_CITATION = """
@article{hanley1982meaning,
  title={The meaning and use of the area under a receiver operating characteristic (ROC) curve},
  author={Hanley, James A. and McNeil, Barbara J.},
  journal={Radiology},
  volume={143},
  number={1},
  pages={29--36},
  year={1982}
}
@inproceedings{cohen2022torchxrayvision,
  title={{TorchXRayVision}: A library of chest {X}-ray datasets and models},
  author={Cohen, Joseph Paul and Viviano, Joseph D. and Bertin, Paul and Morrison, Paul and Torabian, Parsa and
          Guarrera, Matteo and Lungren, Matthew P. and Chaudhari, Akshay and Brooks, Rupert and Hashir, Mohammad
          and Bertrand, Hadrien},
  booktitle={Medical Imaging with Deep Learning},
  year={2022}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Auroc(RefuseEmptyInput, evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features({
                    "predictions": datasets.List(datasets.Value("float64")),
                    "references": datasets.Value("float64"),
                }),
                datasets.Features({
                    "predictions": datasets.List(datasets.Value("float64")),
                    "references": datasets.List(datasets.Value("float64")),
                }),
                datasets.Features({"predictions": datasets.Value("float64"), "references": datasets.Value("float64")}),
            ],
            reference_urls=["https://scikit-learn.org/stable/modules/generated/sklearn.metrics.roc_auc_score.html"],
        )

    def _compute(self, predictions, references, ignore_index=-100):
        per_class = auroc_per_class(predictions, references, ignore_index=ignore_index)
        return {
            "auroc": macro_auroc(predictions, references, ignore_index=ignore_index),
            "per_class": [float(x) for x in per_class],
            "skipped": [i for i, x in enumerate(per_class) if x != x],
        }
