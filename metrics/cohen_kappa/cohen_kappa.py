"""Cohen's kappa, unweighted or (linear/quadratic) weighted, with absent references left out."""

import datasets

import evaluate

from multimed_hf.metrics.classification import cohen_kappa
from multimed_hf.metrics.evaluate_module import RefuseEmptyInput

_DESCRIPTION = """
Cohen's kappa is agreement corrected for chance: kappa = (p_o - p_e) / (1 - p_e), where p_o is the observed
agreement and p_e the agreement expected from the two label distributions alone. The unweighted form is the
motor-imagery (BCI) standard. With `weights="quadratic"` disagreements are weighted by the squared distance between
grades (quadratic weighted kappa, the diabetic-retinopathy grading standard of Kaggle EyePACS and APTOS); integer
labels are then taken as the grades min..max, so a grade that never occurs still counts in the distances.

References that are absent (`ignore_index`, -100 by default, or None) are left out, never read as a wrong answer.
Predictions may be class labels or one row of class scores per sample (its argmax is the predicted class).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`, or `list` of `list` of `float`): predicted labels, or class scores per sample.
    references (`list` of `int`): reference labels (None or `ignore_index` where absent).
    weights (`str` or `None`): None (unweighted), "linear" or "quadratic". Defaults to None.
    labels (`list` of `int`, optional): the classes, in order (for weighted kappa: the grades); as in
        scikit-learn, a row whose prediction or reference is not among them is left out.
    ignore_index (`int` or `None`): the reference value that marks an absent label. Defaults to -100.

Returns:
    cohen_kappa (`float`): from -1.0 to 1.0; 1 is perfect agreement, 0 chance level, below 0 worse than chance.

Examples:

    Unweighted: p_o = 3/4, p_e = 1/2:

    >>> kappa = evaluate.load("metrics/cohen_kappa")  # a local folder: run from the repository root
    >>> kappa.compute(predictions=[0, 1, 1, 1], references=[0, 1, 0, 1])
    {'cohen_kappa': 0.5}

    Quadratic weighted, DR grades 0-4 (one grade-2 eye called 4; the absent grade is left out):

    >>> result = kappa.compute(predictions=[0, 1, 4, 4, 3], references=[0, 1, 2, 4, None], weights="quadratic")
    >>> round(result["cohen_kappa"], 4)
    0.8222
"""

_CITATION = """
@article{cohen1960coefficient,
  title={A Coefficient of Agreement for Nominal Scales},
  author={Cohen, Jacob},
  journal={Educational and Psychological Measurement},
  volume={20},
  number={1},
  pages={37--46},
  year={1960}
}
@article{cohen1968weighted,
  title={Weighted kappa: Nominal scale agreement provision for scaled disagreement or partial credit},
  author={Cohen, Jacob},
  journal={Psychological Bulletin},
  volume={70},
  number={4},
  pages={213--220},
  year={1968}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class CohenKappa(RefuseEmptyInput, evaluate.Metric):
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
            reference_urls=["https://scikit-learn.org/stable/modules/generated/sklearn.metrics.cohen_kappa_score.html"],
        )

    def _compute(self, predictions, references, weights=None, labels=None, ignore_index=-100):
        value = cohen_kappa(predictions, references, weights=weights, labels=labels, ignore_index=ignore_index)
        return {"cohen_kappa": value}
