"""Pearson r and Spearman rho per gene or per sample, averaged as MultiMed reports them."""

import datasets

import evaluate

from multimed_hf.metrics.regression import pearson
from multimed_hf.metrics.regression import spearman
from multimed_hf.metrics.evaluate_module import RefuseEmptyInput

_DESCRIPTION = """
Pearson's r is the covariance of predictions and references divided by the product of their standard deviations;
Spearman's rho is Pearson's r of their ranks (ties get their average rank). For expression prediction the inputs
are matrices, one row (example) per sample / context and one column per gene:

- `axis="gene"` (default): one correlation per gene, over the samples, then the mean over genes;
- `axis="sample"`: one correlation per sample, over the genes, then the mean over samples (MultiMed's
  "Pearson r across genes per context, then mean").

A gene (or sample) whose predictions or references are constant has no correlation: it is left out of the mean
(the result is NaN if none is left). With one number per example the result is the single correlation over all
examples. `add_batch` then `compute` gives the same number as one `compute` on everything; for training loops,
`multimed_hf.metrics.PearsonAccumulator` streams per-gene statistics without keeping the batches.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `list` of `float`, or `list` of `float`): one row of predicted values per sample (one
        value per gene), or one value per example.
    references (`list` of `list` of `float`, or `list` of `float`): the reference values, in the same layout.
    axis (`str`): "gene" or "sample", for row inputs. Defaults to "gene".

Returns:
    pearson (`float`): mean Pearson r, from -1.0 to 1.0 (1 is a perfect linear relation; higher is better).
    spearman (`float`): mean Spearman rho, from -1.0 to 1.0 (1 is a perfect monotone relation; higher is better).

Examples:

    Three samples (rows) of three genes; per gene (columns), r = 1.0, 0.655 and 0.961:

    >>> pearson_metric = evaluate.load("metrics/pearson")  # a local folder: run from the repository root
    >>> predictions = [[1.0, 2.0, 3.0], [2.0, 1.0, 4.0], [3.0, 3.0, 5.0]]
    >>> references = [[1.5, 2.5, 2.0], [2.5, 1.0, 5.0], [3.5, 2.0, 6.0]]
    >>> result = pearson_metric.compute(predictions=predictions, references=references)
    >>> round(result["pearson"], 4), round(result["spearman"], 4)
    (0.8718, 0.8333)

    The same data per sample (each row correlated over its three genes):

    >>> result = pearson_metric.compute(predictions=predictions, references=references, axis="sample")
    >>> round(result["pearson"], 4), round(result["spearman"], 4)
    (0.8092, 0.7887)

    One value per example: a single correlation.

    >>> pearson_metric.compute(predictions=[1.0, 2.0, 3.0, 4.0], references=[1.0, 3.0, 2.0, 4.0])
    {'pearson': 0.8, 'spearman': 0.8}
"""

_CITATION = """
@article{mo2024multimed,
  title={MultiMed: Massively Multimodal and Multitask Medical Understanding},
  author={Mo, Shentong and Liang, Paul Pu},
  journal={arXiv preprint arXiv:2408.12682},
  year={2024}
}
@article{pearson1895note,
  title={Note on Regression and Inheritance in the Case of Two Parents},
  author={Pearson, Karl},
  journal={Proceedings of the Royal Society of London},
  volume={58},
  pages={240--242},
  year={1895}
}
@article{spearman1904proof,
  title={The Proof and Measurement of Association between Two Things},
  author={Spearman, Charles},
  journal={The American Journal of Psychology},
  volume={15},
  number={1},
  pages={72--101},
  year={1904}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Pearson(RefuseEmptyInput, evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features({
                    "predictions": datasets.List(datasets.Value("float64")),
                    "references": datasets.List(datasets.Value("float64")),
                }),
                datasets.Features({
                    "predictions": datasets.Value("float64"),
                    "references": datasets.Value("float64"),
                }),
            ],
            reference_urls=[
                "https://docs.scipy.org/doc/scipy/reference/generated/scipy.stats.pearsonr.html",
                "https://docs.scipy.org/doc/scipy/reference/generated/scipy.stats.spearmanr.html",
            ],
        )

    def _compute(self, predictions, references, axis="gene"):
        return {
            "pearson": pearson(predictions, references, axis=axis),
            "spearman": spearman(predictions, references, axis=axis),
        }
