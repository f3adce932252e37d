"""Mean absolute error (bone age in months)."""

import datasets

import evaluate

from multimed_hf.metrics.regression import mae

_DESCRIPTION = """
The mean absolute error is the mean of |prediction - reference| over the samples, in the unit of the target.
It is the headline figure of the RSNA Pediatric Bone Age Challenge (months), and MultiMed's bone_age task reports
it beside accuracy on the fixed age bins.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `float`): predicted values (e.g. bone age in months).
    references (`list` of `float`): reference values, in the same unit.

Returns:
    mae (`float`): mean absolute error, from 0.0 (perfect) upwards, unbounded, in the unit of the inputs (lower is
        better).

Examples:

    >>> mae_metric = evaluate.load("metrics/mae")  # a local folder: run from the repository root
    >>> mae_metric.compute(predictions=[120.0, 96.5, 30.0], references=[126.0, 96.5, 33.0])
    {'mae': 3.0}
"""

_CITATION = """
@article{halabi2019rsna,
  title={The {RSNA} Pediatric Bone Age Machine Learning Challenge},
  author={Halabi, Safwan S. and Prevedello, Luciano M. and Kalpathy-Cramer, Jayashree and others},
  journal={Radiology},
  volume={290},
  number={2},
  pages={498--503},
  year={2019}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Mae(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({
                "predictions": datasets.Value("float64"),
                "references": datasets.Value("float64"),
            }),
            reference_urls=[
                "https://scikit-learn.org/stable/modules/generated/sklearn.metrics.mean_absolute_error.html"
            ],
        )

    def _compute(self, predictions, references):
        return {"mae": mae(predictions, references)}
