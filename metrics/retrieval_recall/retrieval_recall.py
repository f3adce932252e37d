"""Recall@K for cross-modal retrieval (image-caption pairs) from rows of similarity scores."""

import datasets

import evaluate

from multimed_hf.metrics.retrieval import recall_at_k

_DESCRIPTION = """
Recall@K is the fraction of queries whose true candidate ranks among the K best-scoring candidates. For image-text
retrieval a query is an image and the candidates are captions (image-to-text), or the other way round; each
prediction is one query's row of similarity scores over all candidates. A query's rank counts the other candidates
scoring at least as high as its true one, so ties count against the query. MultiMed's pmc_pairs extra config
(PMC-OA image-caption pairs) reports recall@1 and recall@5, as PMC-CLIP does for retrieval.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `list` of `float`): per query, its similarity scores over all candidates (queries x
        candidates; pass the transposed matrix for the other direction).
    references (`list` of `int`): per query, the index of its true candidate (for a batch of pairs, 0..N-1).
    ks (`list` of `int`, optional): the cut-offs K; default [1, 5].

Returns:
    recall_at_K (`float`) for each K: the fraction of queries whose true candidate ranks in the top K, from 0.0 to
        1.0 (higher is better).

Examples:

    >>> recall = evaluate.load("metrics/retrieval_recall")  # a local folder: run from the repository root
    >>> recall.compute(predictions=[[0.9, 0.1, 0.3], [0.8, 0.7, 0.2], [0.1, 0.2, 0.2]], references=[0, 1, 2], ks=[1, 2])
    {'recall_at_1': 0.3333333333333333, 'recall_at_2': 1.0}
"""

_CITATION = """
@inproceedings{lin2023pmcclip,
  title={{PMC-CLIP}: Contrastive Language-Image Pre-training using Biomedical Documents},
  author={Lin, Weixiong and Zhao, Ziheng and Zhang, Xiaoman and Wu, Chaoyi and Zhang, Ya and Wang, Yanfeng and Xie, Weidi},
  booktitle={Medical Image Computing and Computer Assisted Intervention (MICCAI)},
  year={2023}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class RetrievalRecall(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({
                "predictions": datasets.List(datasets.Value("float64")),
                "references": datasets.Value("int64"),
            }),
            reference_urls=["https://arxiv.org/abs/2303.07240"],
        )

    def _compute(self, predictions, references, ks=None):
        cut_offs = [1, 5] if ks is None else list(ks)
        return {f"recall_at_{k}": recall_at_k(predictions, references, k=k) for k in cut_offs}
