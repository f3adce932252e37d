"""The metric math against scipy / scikit-learn and hand-worked cases; streaming; bad input; the task registry."""

import subprocess
import sys

import numpy as np
import pytest
from scipy import stats
from scipy.special import softmax
from sklearn import metrics as skm

import multimed_hf.metrics as M
from multimed_hf.metrics.output_metrics import (
    LABEL_METRICS,
    RETRIEVAL_METRICS,
    SCORE_METRICS,
    STRING_METRICS,
    STRUCTURE_METRICS,
    VALUE_METRICS,
)
from multimed_hf.tasks import get_task, list_tasks

RNG_SEED = 20240823


@pytest.fixture
def rng():
    return np.random.default_rng(RNG_SEED)


# ---------------------------------------------------------------------------------------------------------------
# the registry


def test_every_task_metric_is_registered():
    named = {metric for task in list_tasks() for metric in get_task(task).metrics}
    missing = sorted(named - set(M.METRICS))
    assert not missing, f"metrics named by the task registry but absent from METRICS: {missing}"
    assert "balanced_accuracy" in M.METRICS


def test_registry_is_read_only_and_callable():
    with pytest.raises(TypeError):
        M.METRICS["new"] = len
    for name, fn in M.METRICS.items():
        assert callable(fn) and M.get_metric(name) is fn


def test_unknown_metric_suggests_close_names():
    with pytest.raises(ValueError, match=r"unknown metric 'acuracy'; did you mean 'accuracy'"):
        M.get_metric("acuracy")
    with pytest.raises(KeyError, match="known metrics: accuracy"):
        M.get_metric("zzz")


def test_import_pulls_in_no_torch():
    code = "import sys, multimed_hf.metrics; assert 'torch' not in sys.modules, 'torch was imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------------------------------------------------------
# classification against scikit-learn


def _labels(rng, n=200, k=4):
    refs = rng.integers(0, k, n)
    scores = rng.normal(size=(n, k)) + 1.5 * np.eye(k)[refs]  # informative but imperfect
    return scores, refs


def test_label_metrics_hand_worked():
    # refs 0 0 1 1 2, preds 0 1 1 1 0: right 3 of 5
    preds, refs = [0, 1, 1, 1, 0], [0, 0, 1, 1, 2]
    assert M.accuracy(preds, refs) == pytest.approx(3 / 5)
    # recall per class: 0 -> 1/2, 1 -> 2/2, 2 -> 0/1
    assert M.balanced_accuracy(preds, refs) == pytest.approx((0.5 + 1 + 0) / 3)
    # F1 per class: 0: P 1/2 R 1/2 -> 1/2; 1: P 2/3 R 1 -> 4/5; 2: 0
    assert M.macro_f1(preds, refs) == pytest.approx((0.5 + 0.8 + 0) / 3)
    # p_o = 3/5; marginals refs (2, 2, 1)/5, preds (2, 3, 0)/5 -> p_e = (4 + 6 + 0) / 25
    assert M.cohen_kappa(preds, refs) == pytest.approx((3 / 5 - 10 / 25) / (1 - 10 / 25))
    # quadratic: observed sum of (i-j)^2 = 1 (0->1) + 4 (2->0) = 5 over 5 rows; expected sum over marginals:
    # sum_ij r_i p_j (i-j)^2 / 25 = (2*3*1 + 2*2*1 + 1*2*4 + 1*3*1) / 25 = 21 / 25
    assert M.quadratic_kappa(preds, refs) == pytest.approx(1 - (5 / 5) / (21 / 25))
    # AUROC, binary scores: positives 0.8, 0.4 vs negatives 0.5, 0.1 -> pairs won 1 + 1 + 0 + 1 of 4
    assert M.macro_auroc([0.8, 0.5, 0.4, 0.1], [1, 0, 1, 0]) == pytest.approx(3 / 4)
    assert M.mae([1.0, 5.0, 2.0], [2.0, 2.0, 2.0]) == pytest.approx((1 + 3 + 0) / 3)


def test_label_metrics_match_sklearn(rng):
    scores, refs = _labels(rng)
    preds = scores.argmax(1)
    assert M.accuracy(preds, refs) == pytest.approx(skm.accuracy_score(refs, preds))
    assert M.accuracy(scores, refs) == pytest.approx(skm.accuracy_score(refs, preds))  # argmax of scores
    assert M.balanced_accuracy(scores, refs) == pytest.approx(skm.balanced_accuracy_score(refs, preds))
    assert M.macro_f1(preds, refs) == pytest.approx(skm.f1_score(refs, preds, average="macro"))
    for weights in (None, "linear", "quadratic"):
        want = skm.cohen_kappa_score(refs, preds, weights=weights)
        assert M.cohen_kappa(preds, refs, weights=weights) == pytest.approx(want)
    assert M.quadratic_kappa(preds, refs) == pytest.approx(skm.cohen_kappa_score(refs, preds, weights="quadratic"))


def test_ignored_references_are_left_out(rng):
    scores, refs = _labels(rng)
    preds = scores.argmax(1)
    absent = rng.random(len(refs)) < 0.3
    masked = np.where(absent, -100, refs)
    keep = ~absent
    assert M.accuracy(preds, masked) == pytest.approx(skm.accuracy_score(refs[keep], preds[keep]))
    assert M.macro_f1(preds, masked) == pytest.approx(skm.f1_score(refs[keep], preds[keep], average="macro"))
    with_none = [None if a else int(r) for a, r in zip(absent, refs)]
    assert M.balanced_accuracy(preds, with_none) == pytest.approx(
        skm.balanced_accuracy_score(refs[keep], preds[keep])
    )
    with_nan = np.where(absent, np.nan, refs.astype(float))
    assert M.cohen_kappa(preds, with_nan) == pytest.approx(skm.cohen_kappa_score(refs[keep], preds[keep]))
    # ignore_index=None: -100 becomes an ordinary (wrong) class, None is still absent
    assert M.accuracy([1, 2], [1, -100], ignore_index=None) == 0.5
    assert M.accuracy([1, 2], [1, None], ignore_index=None) == 1.0


def test_hand_worked_classification():
    assert M.accuracy([0, 1, 2, 2], [0, 1, 1, -100]) == pytest.approx(2 / 3)
    # class 0: recall 1; class 1: 1/2; class 2: 0
    assert M.balanced_accuracy([0, 0, 1, 0, 1], [0, 0, 1, 1, 2]) == pytest.approx(0.5)
    # class 0: F1 1; class 1: P 1, R 1/2 -> 2/3; class 2: P 1/2, R 1 -> 2/3
    assert M.macro_f1([0, 0, 1, 2, 2], [0, 0, 1, 1, 2]) == pytest.approx(7 / 9)
    # p_o = 3/4, p_e = 1/2
    assert M.cohen_kappa([0, 1, 1, 1], [0, 1, 0, 1]) == pytest.approx(0.5)
    # quadratic, grades 0..4: sum O*w = 4/16; sum E*w = 90/16/4 -> kappa = 1 - 8/45
    assert M.quadratic_kappa([0, 1, 4, 4], [0, 1, 2, 4]) == pytest.approx(37 / 45)
    # string labels (cell types)
    assert M.macro_f1(["b", "t", "t"], ["b", "t", "nk"]) == pytest.approx((1 + 2 / 3 + 0) / 3)


def test_weighted_kappa_uses_grade_distances():
    preds, refs = [0, 4, 4, 1], [0, 1, 4, 4]  # grades 2 and 3 never occur
    ours = M.quadratic_kappa(preds, refs)
    assert ours == pytest.approx(skm.cohen_kappa_score(refs, preds, weights="quadratic", labels=range(5)))
    assert ours != pytest.approx(skm.cohen_kappa_score(refs, preds, weights="quadratic"))  # index distances
    with pytest.raises(ValueError, match="labels: weights='quadratic' needs ordered labels"):
        M.cohen_kappa(["a", "b"], ["b", "a"], weights="quadratic")
    order = ["lo", "mid", "hi"]
    want = skm.cohen_kappa_score(["lo", "mid"], ["lo", "hi"], weights="quadratic", labels=order)
    assert M.cohen_kappa(["lo", "hi"], ["lo", "mid"], weights="quadratic", labels=order) == pytest.approx(want)


def test_multiclass_auroc_matches_sklearn_ovr(rng):
    scores, refs = _labels(rng)
    probs = softmax(scores, axis=1)
    assert M.macro_auroc(probs, refs) == pytest.approx(skm.roc_auc_score(refs, probs, multi_class="ovr"))
    # logits: turned into probabilities first, as sklearn's ovr needs (before: each logit column's raw order, which
    # a softmax changes: another number than the training path's, which scores softmax outputs)
    assert M.macro_auroc(scores, refs) == pytest.approx(skm.roc_auc_score(refs, probs, multi_class="ovr"))
    per_class = M.auroc_per_class(scores, refs)
    for c in range(scores.shape[1]):
        assert per_class[c] == pytest.approx(skm.roc_auc_score(refs == c, probs[:, c]))


def test_multiclass_auroc_reads_rounded_and_half_precision_probabilities_as_given(rng):
    # before: rows a rounding left summing to 0.999 or 1.001 were softmaxed as logits: each class's ranking changed
    # (AUROC up to 0.04 off the one of the probabilities given)
    scores, refs = _labels(rng)
    probs = softmax(2 * scores, axis=1)
    for given in (np.round(probs, 3), probs.astype(np.float16)):
        want = np.mean([skm.roc_auc_score(refs == c, given[:, c].astype(float)) for c in range(given.shape[1])])
        assert np.abs(given.astype(float).sum(1) - 1).max() > 1e-6
        assert M.macro_auroc(given, refs) == pytest.approx(want)
    sigmoid = 1 / (1 + np.exp(-scores))  # per-class scores in [0, 1], rows far from 1: logits, said
    with pytest.warns(UserWarning, match="rows do not sum to 1 .* read as logits"):
        M.macro_auroc(sigmoid, refs)


def test_binary_auroc():
    assert M.macro_auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    assert M.macro_auroc([0.1, 0.4, 0.35, 0.8, 0.9], [0, 0, 1, 1, -100]) == pytest.approx(0.75)


def test_multilabel_auroc_leaves_unknown_out(rng):
    n, k = 300, 5
    truth = (rng.random((n, k)) < 0.4).astype(float)
    scores = rng.normal(size=(n, k)) + truth
    refs = truth.copy()
    refs[rng.random((n, k)) < 0.3] = np.nan
    want = [skm.roc_auc_score(refs[~np.isnan(refs[:, c]), c], scores[~np.isnan(refs[:, c]), c]) for c in range(k)]
    np.testing.assert_allclose(M.auroc_per_class(scores, refs), want)
    assert M.macro_auroc(scores, refs) == pytest.approx(np.mean(want))
    as_ignore = np.where(np.isnan(refs), -100, refs)
    assert M.macro_auroc(scores, as_ignore) == pytest.approx(np.mean(want))
    # reading unknown as negative would give another number
    assert M.macro_auroc(scores, np.nan_to_num(refs)) != pytest.approx(np.mean(want))


def test_multilabel_scores_may_be_nan_where_the_reference_is_unknown():
    # before: a predictions file's <column>_scores (NaN for the names a row's source does not define) were refused
    nan = np.nan
    scores = [[0.9, nan, 0.1], [0.2, 0.7, nan], [0.4, 0.3, nan], [0.1, nan, 0.8]]
    refs = [[1, nan, 0], [0, 1, nan], [1, 0, nan], [0, nan, 1]]
    filled = np.nan_to_num(np.array(scores), nan=0.5)  # any value there: never read
    assert M.accuracy(scores, refs) == M.accuracy(filled, refs) == 1.0
    assert M.macro_auroc(scores, refs) == pytest.approx(M.macro_auroc(filled, refs))
    with pytest.raises(ValueError, match=r"predictions: 1 score\(s\) are NaN where the reference is known, the "
                                         r"first at index \(0, 0\)"):
        M.accuracy([[nan, 0.1, 0.1]], [[1, 0, nan]])


def test_auroc_skips_and_reports_single_class_labels():
    nan = np.nan
    scores = [[0.9, 0.2, 0.5], [0.1, 0.8, 0.5], [0.7, 0.3, 0.5], [0.4, 0.6, 0.5]]
    refs = [[1, 0, nan], [0, 1, 1], [1, nan, nan], [0, 0, 1]]
    per_class = M.auroc_per_class(scores, refs)
    assert per_class[:2].tolist() == [1.0, 1.0] and np.isnan(per_class[2])
    with pytest.warns(UserWarning, match=r"skipped class\(es\) \[2\]"):
        assert M.macro_auroc(scores, refs) == 1.0
    with pytest.warns(UserWarning, match=r"skipped class\(es\) \[2\]"):  # a class absent from the references
        M.macro_auroc([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0]], [0, 1])
    with pytest.raises(ValueError, match="references: no class has both positive and negative"):
        M.macro_auroc([[0.5], [0.6]], [[1.0], [1.0]])


def test_multilabel_top1_accuracy():
    nan = np.nan
    scores = [[0.9, 0.8, 0.1], [0.2, 0.1, 0.7], [0.3, 0.3, 0.9], [0.5, 0.6, 0.4]]
    # row 0: top known is label 1 (positive); row 1: top is 2 (negative); row 2: no known positive, left out;
    # row 3: label 1 unknown, top known is 0 (positive)
    refs = [[nan, 1, 0], [1, 0, 0], [0, 0, nan], [1, nan, 0]]
    assert M.accuracy(scores, refs) == pytest.approx(2 / 3)


def test_torch_tensors_are_accepted():
    torch = pytest.importorskip("torch")
    scores = torch.tensor([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]], requires_grad=True)
    refs = torch.tensor([1, 0, -100])
    assert M.accuracy(scores, refs) == 1.0
    assert M.macro_auroc(scores, refs) == 1.0
    assert M.pearson(torch.arange(4.0), torch.tensor([1.0, 3.0, 2.0, 4.0])) == pytest.approx(0.8)


# ---------------------------------------------------------------------------------------------------------------
# regression against scipy


def _expression(rng, samples=40, genes=7, integer=False):
    truth = rng.normal(size=(samples, genes)) * 2 + 5
    preds = truth + rng.normal(size=truth.shape)
    if integer:  # ties, for Spearman's average ranks
        truth, preds = np.round(truth), np.round(preds)
    return preds, truth


@pytest.mark.parametrize("integer", [False, True])
def test_pearson_and_spearman_match_scipy(rng, integer):
    preds, refs = _expression(rng, integer=integer)
    genes = preds.shape[1]
    per_gene = [stats.pearsonr(preds[:, g], refs[:, g])[0] for g in range(genes)]
    per_gene_rho = [stats.spearmanr(preds[:, g], refs[:, g])[0] for g in range(genes)]
    per_sample = [stats.pearsonr(p, r)[0] for p, r in zip(preds, refs)]
    per_sample_rho = [stats.spearmanr(p, r)[0] for p, r in zip(preds, refs)]
    np.testing.assert_allclose(M.correlations(preds, refs), per_gene, rtol=1e-12)
    np.testing.assert_allclose(M.correlations(preds, refs, method="spearman"), per_gene_rho, rtol=1e-12)
    assert M.pearson(preds, refs) == pytest.approx(np.mean(per_gene), rel=1e-12)
    assert M.spearman(preds, refs) == pytest.approx(np.mean(per_gene_rho), rel=1e-12)
    assert M.pearson(preds, refs, axis="sample") == pytest.approx(np.mean(per_sample), rel=1e-12)
    assert M.spearman(preds, refs, axis="sample") == pytest.approx(np.mean(per_sample_rho), rel=1e-12)
    flat = stats.pearsonr(preds.ravel(), refs.ravel())[0]
    assert M.pearson(preds.ravel(), refs.ravel()) == pytest.approx(flat, rel=1e-12)


def test_grouped_correlation_per_context(rng):
    preds, refs = rng.normal(size=60), rng.normal(size=60)
    contexts = rng.choice(["liver", "lung", "blood"], size=60)
    want = [stats.pearsonr(preds[contexts == c], refs[contexts == c])[0] for c in ("blood", "liver", "lung")]
    np.testing.assert_allclose(M.correlations(preds, refs, groups=contexts), want, rtol=1e-12)
    assert M.pearson(preds, refs, groups=contexts) == pytest.approx(np.mean(want))


def test_constant_genes_are_left_out():
    preds = np.array([[1.0, 0.1, 2.0], [2.0, 0.1, 1.0], [3.0, 0.1, 0.5]])
    refs = np.array([[1.0, 5.0, 1.0], [2.0, 6.0, 2.0], [3.0, 7.0, 3.0]])
    r = M.correlations(preds, refs)
    assert np.isnan(r[1])
    assert M.pearson(preds, refs) == pytest.approx(np.nanmean(r))
    with pytest.warns(RuntimeWarning, match="every correlation is undefined"):
        assert np.isnan(M.pearson([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))


def test_hand_worked_regression():
    assert M.pearson([1.0, 2.0, 3.0, 4.0], [1.0, 3.0, 2.0, 4.0]) == pytest.approx(0.8)
    assert M.spearman([1.0, 2.0, 3.0, 4.0], [10.0, 30.0, 20.0, 40.0]) == pytest.approx(0.8)
    assert M.pearson([1.0, 2.0, 3.0], [-2.0, -4.0, -6.0]) == pytest.approx(-1.0)
    assert M.mae([120.0, 96.5, 30.0], [126.0, 96.5, 33.0]) == pytest.approx(3.0)


def test_mae_matches_sklearn(rng):
    preds, refs = rng.normal(size=50), rng.normal(size=50)
    assert M.mae(preds, refs) == pytest.approx(skm.mean_absolute_error(refs, preds))


# ---------------------------------------------------------------------------------------------------------------
# streaming


@pytest.mark.parametrize("axis", ["gene", "sample"])
def test_accumulator_equals_one_shot(rng, axis):
    preds, refs = _expression(rng, samples=53)
    preds[:, 0] += 1e6  # a large offset: the co-moment update must stay accurate
    acc = M.PearsonAccumulator(axis=axis)
    for start, stop in ((0, 1), (1, 8), (8, 30), (30, 53)):  # uneven, including a batch of one
        acc.update(preds[start:stop], refs[start:stop])
    np.testing.assert_allclose(acc.correlations(), M.correlations(preds, refs, axis=axis), rtol=1e-9)
    assert acc.compute() == pytest.approx(M.pearson(preds, refs, axis=axis), rel=1e-10)
    assert acc.count == 53


def test_accumulator_merge_and_constant_genes(rng):
    preds, refs = _expression(rng, samples=30, genes=4)
    preds[:, 2] = 3.0
    first, second = M.PearsonAccumulator(), M.PearsonAccumulator()
    first.update(preds[:12], refs[:12])
    second.update(preds[12:], refs[12:])
    first.merge(second)
    np.testing.assert_allclose(first.correlations(), M.correlations(preds, refs), rtol=1e-10)
    assert np.isnan(first.correlations()[2])
    first.reset()
    with pytest.raises(ValueError, match="no batch was added"):
        first.compute()


def test_accumulator_rejects_changing_gene_count(rng):
    acc = M.PearsonAccumulator()
    acc.update(rng.normal(size=(4, 3)), rng.normal(size=(4, 3)))
    with pytest.raises(ValueError, match="this batch has 5 genes; earlier batches had 3"):
        acc.update(rng.normal(size=(4, 5)), rng.normal(size=(4, 5)))
    with pytest.raises(ValueError, match="axis: got 'genes'"):
        M.PearsonAccumulator(axis="genes")


# ---------------------------------------------------------------------------------------------------------------
# VQA


def test_normalize_answer():
    assert M.normalize_answer("  The Left  Lung. ") == "left lung"
    assert M.normalize_answer("An X-ray, a CT") == "xray ct"
    assert M.normalize_answer("Theory") == "theory"  # articles only as whole words


def test_hand_worked_vqa():
    preds = ["Yes", "no", "The left lung.", "right upper lobe"]
    refs = ["yes", "yes", "left lung", "right lower lobe"]
    types = ["CLOSED", "CLOSED", "OPEN", "open"]
    assert M.vqa_accuracy(preds, refs, types) == 0.5
    assert M.exact_match(preds, refs, types) == 0.5
    assert M.token_f1(preds, refs, types) == pytest.approx((1 + 2 / 3) / 2)
    assert M.vqa_accuracy(["Yes."], ["yes"], normalize=False) == 0.0
    assert M.vqa_accuracy(preds, refs) == pytest.approx(0.5)  # no types: every question
    # several acceptable answers: the best counts
    assert M.token_f1(["left lower lobe"], [["left lung", "left lower lobe"]]) == 1.0
    assert M.token_f1([""], [""]) == 1.0 and M.token_f1(["a"], ["lung"]) == 0.0
    scores = M.vqa_scores(["yes"], ["yes"], ["closed"])
    assert scores["vqa_accuracy"] == 1.0 and np.isnan(scores["exact_match"]) and np.isnan(scores["token_f1"])


# ---------------------------------------------------------------------------------------------------------------
# bad input: one clear error naming the argument

#: Metrics taking one number per sample (a class label or a value), from the metric-kind table's grouping.
NUMERIC = [name for name in M.METRICS if name in LABEL_METRICS + VALUE_METRICS]
SCORES = [name for name in M.METRICS if name in SCORE_METRICS]
STRINGS = [name for name in M.METRICS if name in STRING_METRICS]


def test_every_metric_has_one_input_group():
    groups = [LABEL_METRICS, VALUE_METRICS, SCORE_METRICS, STRING_METRICS, STRUCTURE_METRICS, RETRIEVAL_METRICS]
    for name in M.METRICS:
        assert sum(name in g for g in groups) == 1, f"{name} is in {sum(name in g for g in groups)} input groups"
    assert NUMERIC and SCORES and STRINGS


@pytest.mark.parametrize("name", NUMERIC + SCORES)
def test_length_mismatch(name):
    preds = [0.2, 0.7, 0.4] if name == "macro_auroc" else [0, 1, 1]
    with pytest.raises(ValueError, match=r"predictions and references differ in (length: 3 vs 2|shape)"):
        M.get_metric(name)(preds, [0, 1])


@pytest.mark.parametrize("name", NUMERIC + SCORES)
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_predictions(name, bad):
    preds = [0.2, bad, 0.4, 0.9] if name in ("macro_auroc", "mae", "pearson", "spearman") else [0.0, bad, 1.0, 0.0]
    with pytest.raises(ValueError, match=r"predictions: .*(NaN|inf)"):
        M.get_metric(name)(preds, [0, 1, 1, 0])


@pytest.mark.parametrize("name", ["mae", "pearson", "spearman"])
def test_non_finite_references(name):
    with pytest.raises(ValueError, match=r"references: 1 value\(s\) are NaN or inf, the first at index 2"):
        M.get_metric(name)([1.0, 2.0, 3.0], [1.0, 2.0, np.nan])


@pytest.mark.parametrize("name", NUMERIC + SCORES + STRINGS)
def test_empty_input(name):
    with pytest.raises(ValueError, match=r"(predictions|references): is empty"):
        M.get_metric(name)([], [])


@pytest.mark.parametrize("name", NUMERIC + SCORES)
def test_wrong_shape(name):
    cube = np.zeros((2, 3, 4))
    with pytest.raises(ValueError, match=r"predictions: expected a .*-D array; got 3-D|predictions: expected a 1-D"):
        M.get_metric(name)(cube, [0, 1])


def test_other_bad_inputs():
    with pytest.raises(ValueError, match="references: got a 2-D"):
        M.macro_f1([[0.1, 0.9]], [[0, 1]])
    with pytest.raises(ValueError, match="predictions: holds non-integer numbers"):
        M.accuracy([0.3, 0.7], [0, 1])
    with pytest.raises(ValueError, match="references: every one of the 2 labels is absent"):
        M.accuracy([0, 1], [-100, None])
    with pytest.raises(ValueError, match=r"weights: got 'cubic'"):
        M.cohen_kappa([0, 1], [0, 1], weights="cubic")
    with pytest.raises(ValueError, match="references: labels must lie in 0..2"):
        M.macro_auroc([[0.1, 0.2, 0.7]], [3])
    with pytest.raises(ValueError, match="predictions and references differ in shape"):
        M.macro_auroc([[0.1, 0.2]], [[1.0, 0.0, 1.0]])
    with pytest.raises(ValueError, match="references: multi-label references must be 0, 1 or unknown"):
        M.macro_auroc([[0.1, 0.2]], [[2.0, 0.0]])
    with pytest.raises(ValueError, match="axis: got 'cells'"):
        M.pearson([[1.0, 2.0]], [[1.0, 2.0]], axis="cells")
    with pytest.raises(ValueError, match="predictions: a correlation needs at least 2 values"):
        M.pearson([[1.0, 2.0]], [[2.0, 1.0]])  # one sample: nothing to correlate per gene
    with pytest.raises(ValueError, match="groups: given with 2-D inputs"):
        M.pearson([[1.0, 2.0]], [[2.0, 1.0]], groups=["a"])
    with pytest.raises(ValueError, match="predictions and groups differ in length"):
        M.pearson([1.0, 2.0, 3.0], [2.0, 1.0, 3.0], groups=["a", "b"])
    with pytest.raises(TypeError, match=r"predictions\[1\]: is int 3; expected a string"):
        M.exact_match(["yes", 3], ["yes", "3"])
    with pytest.raises(TypeError, match="predictions: expected a sequence of strings; got str"):
        M.token_f1("yes", "yes")
    with pytest.raises(ValueError, match=r"answer_types\[1\]: got 'free'"):
        M.vqa_accuracy(["yes", "no"], ["yes", "no"], ["closed", "free"])
    with pytest.raises(ValueError, match="answer_types: no question is 'open'"):
        M.exact_match(["yes"], ["yes"], ["closed"])
    with pytest.raises(ValueError, match="predictions and answer_types differ in length: 2 vs 1"):
        M.token_f1(["yes", "no"], ["yes", "no"], ["open"])
    with pytest.raises(TypeError, match="predictions: got None"):
        M.mae(None, [1.0])


# ---------------------------------------------------------------------------------------------------------------
# compute_task_metrics over the task registry


def _task_inputs(task, rng, n=40):
    """Synthetic predictions, references and options for a task, by its problem type and first label."""
    label = task.labels[0]
    if task.problem_type == "vqa":
        preds = ["yes", "no", "left lung", "heart"] * (n // 4)
        refs = ["yes", "yes", "left lung", "the heart"] * (n // 4)
        return preds, refs, {"answer_types": ["closed", "closed", "open", "open"] * (n // 4)}
    if task.problem_type == "structure":
        refs = rng.normal(size=(3, 12, 3)) * 5
        return refs + rng.normal(size=refs.shape) * 0.5, refs, {}
    if task.problem_type == "regression":
        refs = rng.uniform(0, 200, n)
        return refs + rng.normal(size=n) * 10, refs, {}
    if label.kind == "text":
        names = np.array(["b_cell", "t_cell", "nk_cell"])
        refs = names[rng.integers(0, 3, n)]
        return np.where(rng.random(n) < 0.7, refs, names[0]), refs, {}
    k = label.num_classes
    n = max(n, 3 * k)  # room for every class twice
    refs = rng.integers(0, k, n)
    refs[: 2 * k] = np.repeat(np.arange(k), 2)  # every class present
    scores = rng.normal(size=(n, k)) + 2 * np.eye(k)[refs]
    if label.kind == "multilabel":
        multi = np.eye(k)[refs]
        multi[rng.random((n, k)) < 0.2] = np.nan
        multi[np.arange(n), refs] = 1.0
        return scores, multi, {}
    return scores, refs, {}


@pytest.mark.parametrize("task_name", list_tasks())
def test_compute_task_metrics_for_every_task(task_name, rng):
    task = get_task(task_name)
    preds, refs, options = _task_inputs(task, rng)
    results = M.compute_task_metrics(task_name, preds, refs, **options)
    assert list(results) == list(task.labels[0].metrics or task.metrics)
    assert all(isinstance(v, float) and np.isfinite(v) for v in results.values()), results


def test_bone_age_accuracy_is_on_the_bins():
    results = M.compute_task_metrics("bone_age", [10.0, 70.0, 200.0, -5.0], [20.0, 50.0, 190.0, 59.0])
    # bins [0,60) [60,108) ... [180,inf): 0,1,4,0 vs 0,0,4,0
    assert results == {"accuracy": pytest.approx(0.75), "mae": pytest.approx((10 + 20 + 10 + 64) / 4)}
    # the bin column takes what a run scores on it (before: the task's MAE too, over bin indices)
    assert M.compute_task_metrics("bone_age", [0, 1, 4], [0, 0, 0], label="bone_age_bin") == {
        "accuracy": pytest.approx(1 / 3)}


def test_expression_prediction_per_context(rng):
    preds, refs = rng.normal(size=40), rng.normal(size=40)
    contexts = np.repeat(["a", "b", "c", "d"], 10)
    results = M.compute_task_metrics("expression_prediction", preds, refs, groups=contexts)
    want = np.mean([stats.pearsonr(preds[contexts == c], refs[contexts == c])[0] for c in "abcd"])
    assert results["pearson"] == pytest.approx(want)


def test_structure_metrics_are_means_of_structure_scores(rng):
    from multimed_hf.metrics.structure import structure_scores

    refs = rng.normal(size=(2, 15, 3)) * 5
    preds = refs + rng.normal(size=refs.shape)
    scores = structure_scores(preds, refs)
    results = M.compute_task_metrics("protein_structure", preds, refs)
    for key in ("tm_score", "rmsd", "gdt_ts"):
        assert results[key] == pytest.approx(float(np.mean(scores[key])))
        assert M.get_metric(key)(preds, refs) == pytest.approx(results[key])


def test_compute_task_metrics_options():
    assert M.compute_task_metrics("brain_tumor", [0, 1, 2], [0, 1, -1], ignore_index=-1, metrics=["accuracy"]) == {
        "accuracy": 1.0
    }
    with pytest.raises(TypeError, match=r"options: \['answer_types'\] are accepted by none of the metrics"):
        M.compute_task_metrics("brain_tumor", [0, 1], [0, 1], answer_types=["open", "open"])
    with pytest.raises(ValueError, match="unknown task 'brain_tumour'; did you mean 'brain_tumor'"):
        M.compute_task_metrics("brain_tumour", [0], [0])
    with pytest.raises(ValueError, match="unknown metric 'f1'"):
        M.compute_task_metrics("brain_tumor", [0], [0], metrics=["f1"])


def test_a_label_gets_only_the_metrics_that_apply_to_it(rng):
    refs = np.repeat(np.arange(4), 5)
    scores = rng.normal(size=(20, 4)) + 2 * np.eye(4)[refs]
    oct_results = M.compute_task_metrics("diabetic_retinopathy", scores, refs)  # first label: oct_finding
    assert list(oct_results) == ["accuracy"], "kappa on unordered OCT classes means nothing"
    grades = np.repeat(np.arange(5), 4)
    dr = M.compute_task_metrics("diabetic_retinopathy", grades, grades, label="dr_grade")
    assert dr == {"accuracy": 1.0, "quadratic_kappa": 1.0}


@pytest.mark.parametrize("name", ["accuracy", "balanced_accuracy", "macro_f1"])
def test_a_reference_no_score_column_can_name_is_refused(name):
    # before: class 5 against scores of 2 classes, or a string label against column indices, was counted wrong
    from multimed_hf import metrics

    fn = getattr(metrics, name)
    scores = [[0.1, 0.9], [0.8, 0.2]]
    with pytest.raises(ValueError, match=r"labels must lie in 0..1 for scores of 2 classes; got 0..5"):
        fn(scores, [5, 0])
    with pytest.raises(TypeError, match="class scores need integer class indices"):
        fn(scores, ["b", "a"])
    assert fn(scores, [1, 0]) == fn([1, 0], [1, 0])  # and indices in range score as before


@pytest.mark.parametrize("scale", [1e160, 1e200, 1e-170])
def test_pearson_does_not_depend_on_the_scale(scale):
    # before: squares past ~1e154 overflowed (r read 0.0) and under ~1e-162 underflowed (read constant: NaN)
    x, y = np.array([1.0, 2, 3, 5]), np.array([1.0, 2, 4, 3])
    assert M.pearson(x * scale, y) == pytest.approx(stats.pearsonr(x, y)[0], abs=1e-12)


@pytest.mark.parametrize("scale", [1e70, 1e80, 1e99, 1e-70, 1e-80, 1e-99])
def test_pearson_of_two_rows_both_at_an_extreme_scale(scale):
    # before (sweep K10): the product of the two sums of squares overflowed past ~1e77 (r read 0.0) and underflowed
    # under ~1e-77 (NaN) where both rows were scaled, though each square alone was in range
    x, y = np.array([1.0, 2, 3, 4, 5]), np.array([1.0, 3, 2, 5, 4])
    assert M.pearson(x * scale, y * scale) == pytest.approx(stats.pearsonr(x, y)[0], abs=1e-12)


@pytest.mark.parametrize("scale", [1e70, 1e80, 1e99, 1e-70, 1e-80])
def test_the_streaming_pearson_equals_pearson_at_an_extreme_scale(scale):
    # before (sweep K11): PearsonAccumulator multiplied the two co-moments before the square root: r read 0.0 at 1e80
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 3))
    y = x + 0.1 * rng.normal(size=(50, 3))
    accumulator = M.PearsonAccumulator()
    for rows in (slice(0, 20), slice(20, 50)):
        accumulator.update(x[rows] * scale, y[rows] * scale)
    assert accumulator.compute() == pytest.approx(M.pearson(x, y), abs=1e-12)


def test_pearson_groups_must_all_be_given():
    # before: a None key failed in np.unique with "'<' not supported between 'NoneType' and 'str'"
    from multimed_hf.metrics import pearson

    for groups in (["a", None, "b", "b"], [1.0, float("nan"), 2.0, 2.0]):
        with pytest.raises(ValueError, match=r"groups: 1 key\(s\) missing \(None or NaN; first at position 1\)"):
            pearson([1, 2, 3, 4], [1, 2, 3, 5], groups=groups)


def test_task_metrics_read_class_indices_as_a_built_split_stores_them():
    # before (sweep F4): datasets' "no label" -1 and an index past the classes (7) were both scored as a class
    # (accuracy 0.667), where the processor leaves -1 out and refuses 7
    from multimed_hf.metrics import compute_task_metrics

    assert compute_task_metrics("brain_tumor", [0, 1, 2], [0, -1, 2]) == compute_task_metrics(
        "brain_tumor", [0, 1, 2], [0, None, 2]) == {"accuracy": 1.0, "macro_f1": 1.0}
    with pytest.raises(ValueError, match=r"references: class index 7 of label 'tumor' is outside \[0, 4\)"):
        compute_task_metrics("brain_tumor", [0, 1, 2], [0, 7, 2])
    with pytest.raises(ValueError, match=r"predictions: class index -1 of label 'tumor'"):
        compute_task_metrics("brain_tumor", [0, -1, 2], [0, 1, 2])


def test_macro_auroc_names_the_classes_it_skips_where_given():
    # before (sweep C5): "skipped class(es) [12, 13, 15, ...]": indices a reader of 38 disease names cannot place
    from multimed_hf.metrics import compute_output_metrics

    logits = np.array([[2.0, 0, 0, 0, 0], [0, 2.0, 0, 0, 0], [0, 0, 2.0, 0, 0], [2.0, 1.0, 0, 0, 0]])
    names = ["ct0", "ct1", "ct2", "ct3", "ct4"]
    with pytest.warns(UserWarning, match=r"skipped class\(es\) \['ct3', 'ct4'\]"):
        compute_output_metrics("radiographic_findings", "severity", logits, np.array([0, 1, 2, 0]),
                               class_names=names)
    with pytest.warns(UserWarning, match=r"skipped class\(es\) \[3, 4\]"):
        M.macro_auroc(softmax(logits, axis=1), [0, 1, 2, 0])
