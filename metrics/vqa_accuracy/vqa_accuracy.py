"""Medical VQA: closed-question accuracy, open-question exact match and token F1."""

import datasets

import evaluate

from multimed_hf.metrics.vqa import vqa_scores

_DESCRIPTION = """
Medical VQA sets (VQA-RAD, SLAKE) split questions into closed ones (yes/no or a fixed choice) and open ones (free
text). Each answer and reference is first normalised as in SQuAD: lowercased, punctuation and the articles a/an/the
removed, whitespace collapsed. Then:

- vqa_accuracy: on closed questions, the fraction whose answer matches the reference exactly;
- exact_match: on open questions, the same exact match;
- token_f1: on open questions, the mean F1 of the tokens shared by answer and reference (partial credit).

A score whose question type does not occur in the inputs is NaN.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `str`): the predicted answers.
    references (`list` of `str`): the reference answers.
    answer_types (`list` of `str`): "closed" or "open" per question (any case; VQA-RAD and SLAKE write CLOSED/OPEN).

Returns:
    vqa_accuracy (`float`): closed-question accuracy, from 0.0 to 1.0 (higher is better).
    exact_match (`float`): open-question exact match, from 0.0 to 1.0 (higher is better).
    token_f1 (`float`): open-question token F1, from 0.0 to 1.0 (higher is better).

Examples:

    >>> vqa = evaluate.load("metrics/vqa_accuracy")  # a local folder: run from the repository root
    >>> vqa.compute(
    ...     predictions=["Yes", "no", "The left lung.", "right upper lobe"],
    ...     references=["yes", "yes", "left lung", "right lower lobe"],
    ...     answer_types=["CLOSED", "CLOSED", "OPEN", "OPEN"],
    ... )
    {'vqa_accuracy': 0.5, 'exact_match': 0.5, 'token_f1': 0.8333333333333333}
"""

_CITATION = """
@inproceedings{rajpurkar2016squad,
  title={{SQuAD}: 100,000+ Questions for Machine Comprehension of Text},
  author={Rajpurkar, Pranav and Zhang, Jian and Lopyrev, Konstantin and Liang, Percy},
  booktitle={Proceedings of the 2016 Conference on Empirical Methods in Natural Language Processing},
  pages={2383--2392},
  year={2016}
}
@article{lau2018dataset,
  title={A dataset of clinically generated visual questions and answers about radiology images},
  author={Lau, Jason J. and Gayen, Soumya and Ben Abacha, Asma and Demner-Fushman, Dina},
  journal={Scientific Data},
  volume={5},
  pages={180251},
  year={2018}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class VqaAccuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({
                "predictions": datasets.Value("string"),
                "references": datasets.Value("string"),
                "answer_types": datasets.Value("string"),
            }),
            reference_urls=["https://rajpurkar.github.io/SQuAD-explorer/"],
        )

    def _compute(self, predictions, references, answer_types):
        return vqa_scores(predictions, references, answer_types)
