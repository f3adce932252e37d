"""compute_output_metrics: a column's raw model outputs -> every registry metric that applies, on hand-worked cases."""

import numpy as np
import pytest

from multimed_hf.metrics import applicable_metrics, compute_output_metrics
from multimed_hf.tasks import get_task, list_tasks

NAN = float("nan")


def test_class_column_argmax_and_absent_rows():
    logits = np.array([[2.0, 1, 0, 0], [0, 3, 0, 0], [0, 0, 1, 0], [1, 0, 0, 0]])
    # argmax 0, 1, 2, 0 against 0, 1, 3 and one absent row: 2 of 3 right
    result = compute_output_metrics("brain_tumor", "tumor", logits, np.array([0, 1, 3, -100]))
    # F1 per class seen in either: class 0 = 1, class 1 = 1, class 2 (predicted, never true) = 0, class 3 = 0
    assert result == {"accuracy": pytest.approx(2 / 3), "macro_f1": pytest.approx(0.5)}
    assert all(type(v) is float for v in result.values())


def test_auroc_from_softmax_scores():
    # three classes, one-vs-rest on softmax scores: class 0 scores (rows 0, 1 positive): perfectly ranked, etc.
    logits = np.log(np.array([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.5, 0.1, 0.4]]))
    refs = np.array([0, 0, 1, 2])
    result = compute_output_metrics("radiographic_findings", "finding", logits, refs)
    # class 0: positives 0.7, 0.6 vs negatives 0.2, 0.5 -> 4/4; class 1: 0.5 vs 0.2, 0.3, 0.1 -> 1;
    # class 2: 0.4 vs 0.1, 0.1, 0.3 -> 1
    assert result["macro_auroc"] == pytest.approx(1.0)
    refs = np.array([0, 2, 1, 2])
    # class 0: 0.7 vs 0.6, 0.2, 0.5 -> 1; class 1: 0.5 vs 0.2, 0.3, 0.1 -> 1; class 2: {0.1, 0.4} vs {0.1, 0.3}:
    # pairs (0.1,0.1)=0.5, (0.1,0.3)=0, (0.4,0.1)=1, (0.4,0.3)=1 -> 2.5/4
    result = compute_output_metrics("radiographic_findings", "finding", logits, refs)
    assert result["macro_auroc"] == pytest.approx((1 + 1 + 0.625) / 3)
    assert result["accuracy"] == pytest.approx(2 / 4)


def test_quadratic_and_cohen_kappa_hand_worked():
    logits = np.eye(5)[[0, 1, 2, 4]]
    refs = np.array([0, 1, 3, 4])
    # quadratic: observed weighted disagreement 1/4; expected (1/16) * sum_(i in 0,1,3,4; j in 0,1,2,4) (i-j)^2 = 76/16
    result = compute_output_metrics("diabetic_retinopathy", "dr_grade", logits, refs)
    assert result == {"accuracy": pytest.approx(0.75), "quadratic_kappa": pytest.approx(1 - 4 / 76)}
    # cohen: p_o = 3/4, p_e = 3 * (1/4 * 1/4) -> (0.75 - 0.1875) / (1 - 0.1875)
    result = compute_output_metrics("motor_imagery", "movement", np.eye(6)[[0, 1, 2, 4]], refs)
    assert result == {"accuracy": pytest.approx(0.75), "cohen_kappa": pytest.approx(0.5625 / 0.8125)}


def test_label_metrics_override_the_task_metrics():
    # oct_finding lists only accuracy; dr_grade adds quadratic kappa (LabelSpec.metrics)
    assert applicable_metrics("diabetic_retinopathy", "oct_finding") == ("accuracy",)
    assert list(compute_output_metrics("diabetic_retinopathy", "oct_finding", np.eye(4), np.arange(4))) == ["accuracy"]


def _disease(rows):
    k = get_task("disease").label("diseases").num_classes
    logits, refs = np.zeros((len(rows), k)), np.full((len(rows), k), np.nan)
    for i, row in enumerate(rows):
        for j, (score, ref) in row.items():
            logits[i, j], refs[i, j] = score, ref
    return logits, refs


def test_disease_top1_among_known_names_and_auroc():
    logits, refs = _disease([
        {0: (1.0, 1), 1: (2.0, 0), 2: (5.0, NAN)},  # top-1 among known {0, 1} is 1, a known negative: wrong
        {0: (0.0, 0), 2: (3.0, 1)},  # top-1 among known {0, 2} is 2: right
        {0: (4.0, NAN)},  # nothing known: left out
        {0: (-1.0, 1)},  # top-1 among known {0} is 0: right
    ])
    result = compute_output_metrics("disease", "diseases", logits, refs)
    assert result["accuracy"] == pytest.approx(2 / 3)
    # name 0: positives (1.0, -1.0) vs negative 0.0 -> 1 of 2 pairs; names 1 and 2 have one known class only
    assert result["macro_auroc"] == pytest.approx(0.5)
    # a known-label mask narrows what is known: row 1 then knows only name 0 (a negative) and drops out
    mask = np.isfinite(refs)
    mask[1, 2] = False
    assert compute_output_metrics("disease", "diseases", logits, refs, mask=mask)["accuracy"] == pytest.approx(1 / 2)


def test_disease_scores_rank_by_logit_beyond_where_a_sigmoid_rounds_to_one():
    # before: both logits 40 and 50 went through a sigmoid to 1.0 exactly, and the tie took the first name (a known
    # negative): top-1 wrong although the positive scored highest
    logits, refs = _disease([{0: (40.0, 0), 1: (50.0, 1), 2: (-5.0, 0)}, {0: (60.0, 1), 1: (45.0, 0)}])
    result = compute_output_metrics("disease", "diseases", logits, refs)
    assert result["accuracy"] == 1.0
    logits[0, 1] = np.inf  # an infinite logit stays the highest
    assert compute_output_metrics("disease", "diseases", logits, refs)["accuracy"] == 1.0


def test_an_infinite_logit_takes_its_rows_probability():
    # before: softmax read inf - inf as NaN and the AUROC refused the whole evaluation ("predictions: 5 value(s) are
    # NaN or inf"), naming nothing the user passed
    logits = np.random.default_rng(0).normal(size=(6, 5))
    logits[0, 1] = np.inf
    refs = np.array([1, 0, 2, 1, 0, 2])
    result = compute_output_metrics("radiographic_findings", "finding", logits, refs)
    finite = logits.copy()
    finite[0, 1] = 1e6  # the same order: row 0 all on class 1
    assert result == pytest.approx(compute_output_metrics("radiographic_findings", "finding", finite, refs))


def test_bone_age_months_are_binned_for_accuracy():
    # bins [0,60) [60,108) [108,144) [144,180) [180,inf): 30 -> 0 vs 50 -> 0 right; 70 -> 1 vs 130 -> 2 wrong
    result = compute_output_metrics("bone_age", "bone_age_months", np.array([30.0, 70, 200]),
                                    np.array([50.0, 130, NAN]))
    assert result == {"accuracy": pytest.approx(0.5), "mae": pytest.approx((20 + 60) / 2)}
    # the bin column takes the class metrics only: MAE does not apply to class indices
    result = compute_output_metrics("bone_age", "bone_age_bin", np.eye(5)[[0, 1, 2]], np.array([0, 2, -100]))
    assert result == {"accuracy": pytest.approx(0.5)}


def test_expression_correlations_with_groups_cut_to_present_rows():
    outputs = np.array([1.0, 2, 3, 4, 9, 1, 2, 3])
    refs = np.array([1.0, 3, 2, 4, NAN, 3, 2, 1])
    groups = np.array(["a", "a", "a", "a", "a", "b", "b", "b"])
    # group a (NaN row dropped): r of (1,2,3,4) with (1,3,2,4) = 0.8; group b: r = -1; mean -0.1
    result = compute_output_metrics("expression_prediction", "log_expression", outputs, refs, groups=groups)
    assert result["pearson"] == pytest.approx((0.8 - 1) / 2)
    assert result["spearman"] == pytest.approx((0.8 - 1) / 2)


def test_vqa_string_metrics_read_the_vocabulary():
    names = ["yes", "no", "left lung"]
    logits = np.eye(3)[[0, 1, 2, 0]]
    refs = np.array([0, 1, 1, -100])  # the last answer was outside the vocabulary: absent
    result = compute_output_metrics("med_vqa", "answer", logits, refs, names=names,
                                    answer_types=["closed", "closed", "open", "open"])
    # closed: yes/yes, no/no -> 1.0; open: "left lung" vs "no" -> 0 exact, 0 token F1
    assert result == {"vqa_accuracy": 1.0, "exact_match": 0.0, "token_f1": 0.0}
    only_closed = compute_output_metrics("med_vqa", "answer", logits[:2], refs[:2], names=names,
                                         answer_types=["closed", "closed"])
    assert only_closed["vqa_accuracy"] == 1.0 and np.isnan(only_closed["exact_match"])
    with pytest.raises(TypeError, match="need names="):
        compute_output_metrics("med_vqa", "answer", logits, refs)


def test_free_text_cell_type_scores_indices():
    result = compute_output_metrics("cell_type", "cell_type", np.eye(3)[[0, 1, 2]], np.array([0, 1, 1]))
    # F1: class 0 = 1, class 1 = 2/3 (one of two found, no false positive), class 2 = 0
    assert result == {"accuracy": pytest.approx(2 / 3), "macro_f1": pytest.approx((1 + 2 / 3 + 0) / 3)}


def test_free_text_rows_outside_the_vocabulary_count_as_wrong_with_their_texts():
    # before: a test row whose cell type or answer the training split never had was encoded absent and left out,
    # which raised the scores (the model cannot name it: it is wrong)
    logits = np.eye(2)[[0, 1, 0, 1, 0]]  # predicts a, b, a, b, a over the vocabulary ["a", "b"]
    refs = np.array([0, 1, -100, -100, -100])
    texts = ["a", "b", "c", "d ", None]  # c and d are not in the vocabulary; the last row has no label
    without = compute_output_metrics("cell_type", "cell_type", logits, refs)
    assert without["accuracy"] == 1.0
    result = compute_output_metrics("cell_type", "cell_type", logits, refs, reference_texts=texts)
    # 2 of 4 right; F1 over a, b (each 2/3: right once, predicted twice) and the unseen c, d (0 each)
    assert result == {"accuracy": pytest.approx(2 / 4), "macro_f1": pytest.approx((2 / 3 + 2 / 3) / 4)}
    # the string metrics compare with the row's own text: an open answer outside the vocabulary is scored
    names = ["yes", "no"]
    vqa = compute_output_metrics("med_vqa", "answer", np.eye(2)[[0, 1, 1]], np.array([0, -100, -100]),
                                 names=names, answer_types=["closed", "open", "open"],
                                 reference_texts=["yes", "No", "left lung"])
    assert vqa == {"vqa_accuracy": 1.0, "exact_match": 0.5, "token_f1": 0.5}  # "no" matches "No" normalised
    with pytest.raises(ValueError, match="reference_texts has 2 entries for 3 rows"):
        compute_output_metrics("cell_type", "cell_type", np.eye(3), np.array([0, 1, 2]), reference_texts=["a", "b"])
    with pytest.raises(TypeError, match=r"options \['reference_texts'\] are read by none"):
        compute_output_metrics("brain_tumor", "tumor", np.eye(4), np.arange(4), reference_texts=list("abcd"))


def test_coords_padding_does_not_count_unless_residues_say_so():
    rng = np.random.default_rng(0)
    coords = rng.normal(size=(2, 12, 3)) * 5
    mask = np.ones((2, 12), bool)
    mask[1, 8:] = False  # row 1: 8 residues scored, then padding
    outputs = coords.copy()
    outputs[1, 8:] = 99.0  # whatever the model says past the chain
    result = compute_output_metrics("protein_structure", "ca_coords", outputs, coords, mask=mask)
    assert result == {"tm_score": pytest.approx(1.0), "rmsd": pytest.approx(0.0, abs=1e-5),
                      "gdt_ts": pytest.approx(1.0)}
    # chain 1's reference has 10 residues, 2 of them unpredicted (masked): they score 0 but count in L -> 8/10
    residues = np.ones((2, 12), bool)
    residues[1, 10:] = False
    result = compute_output_metrics("protein_structure", "ca_coords", outputs, coords, mask=mask, residues=residues)
    assert result["tm_score"] == pytest.approx((1 + 0.8) / 2)
    assert result["gdt_ts"] == pytest.approx((1 + 0.8) / 2)


def test_residues_the_reference_did_not_observe_count_at_neither_end():
    # before: L ran to the last observed residue, so unobserved N-terminal residues counted in it and C-terminal
    # ones did not: a perfect prediction scored 0.875 or 1.0 by which end 5 of 40 residues were missing
    coords = np.random.default_rng(1).normal(size=(40, 3)) * 8
    for unobserved in (slice(0, 5), slice(35, 40), slice(18, 23)):
        observed = np.ones(40, bool)
        observed[unobserved] = False
        reference = np.where(observed[:, None], coords, 0.0)
        result = compute_output_metrics("protein_structure", "ca_coords", coords[None], reference[None],
                                        mask=observed[None], residues=observed[None])
        assert result["tm_score"] == pytest.approx(1.0) and result["gdt_ts"] == pytest.approx(1.0)


def test_no_present_reference_gives_nan():
    result = compute_output_metrics("radiographic_findings", "severity", np.zeros((3, 5)), np.full(3, -100))
    assert list(result) == ["accuracy", "macro_auroc"] and all(np.isnan(v) for v in result.values())


@pytest.mark.parametrize("call, error, message", [
    (lambda: compute_output_metrics("brain_tumor", "tumor", np.zeros((2, 4)), np.array([0, 7])), ValueError,
     r"task 'brain_tumor', column 'tumor': references hold \[7\.0\]; expected class indices in \[0, 4\)"),
    (lambda: compute_output_metrics("brain_tumor", "tumor", np.zeros(2), np.array([0, 1])), ValueError,
     r"expected logits \[N, K\] and class indices \[N\]"),
    (lambda: compute_output_metrics("brain_tumor", "tumor", np.zeros((2, 4)), np.array([0])), ValueError,
     "outputs have 2 rows, references 1"),
    (lambda: compute_output_metrics("brain_tumor", "tumour", np.zeros((2, 4)), np.array([0, 1])), KeyError,
     "has no label column 'tumour'"),
    (lambda: compute_output_metrics("brain_tumor", "tumor", np.zeros((2, 4)), np.array([0, 1]), residues=[[1], [1]]),
     TypeError, r"options \['residues'\] are read by none of the metrics"),
])
def test_bad_input_names_the_column(call, error, message):
    with pytest.raises(error, match=message):
        call()


def _random_column(task, label, rng, n=24):
    """Outputs and references of one label column as the model and the processor give them."""
    if label.kind == "coords":
        refs = rng.normal(size=(n // 6, 10, 3)) * 5
        return refs + rng.normal(size=refs.shape), refs, {"mask": np.ones(refs.shape[:2], bool)}
    if label.kind == "regression":
        refs = rng.uniform(0, 200, n)
        return refs + rng.normal(size=n) * 10, refs, {}
    k = label.num_classes or 4
    refs = np.arange(n) % k
    logits = rng.normal(size=(n, k)) + 2 * np.eye(k)[refs]
    if label.kind == "multilabel":
        multi = np.eye(k)[refs]
        multi[rng.random((n, k)) < 0.2] = np.nan
        multi[np.arange(n), refs] = 1.0
        return logits, multi, {}
    options = {"names": [f"answer {i}" for i in range(k)]} if label.kind == "text" and task.problem_type == "vqa" else {}
    return logits, refs, options


@pytest.mark.parametrize("task_column", [(t, label.name) for t in list_tasks(include_extras=True)
                                         for label in get_task(t).labels])
def test_every_registry_column_gives_its_metrics(task_column):
    task, column = task_column
    spec = get_task(task)
    label = spec.label(column)
    outputs, refs, options = _random_column(spec, label, np.random.default_rng(1))
    result = compute_output_metrics(task, column, outputs, refs, **options)
    assert list(result) == list(applicable_metrics(task, column))
    assert result and all(type(v) is float and np.isfinite(v) for v in result.values()), result


@pytest.mark.parametrize("task", [t for t in list_tasks(include_extras=True) if get_task(t).labels])
def test_every_registry_metric_applies_to_some_column(task):
    spec = get_task(task)
    scored = {m for label in spec.labels for m in applicable_metrics(task, label.name)}
    assert scored == set(spec.metrics), f"{task}: registry metrics no column scores: {set(spec.metrics) - scored}"


def test_nan_logits_are_refused_not_read_as_class_0():
    # before: argmax over NaN picked class 0, so a diverged model scored the share of class 0 (brain_tumor accuracy
    # 0.214, exit 0, no warning); regression and coordinates already refused NaN
    from multimed_hf.metrics import compute_output_metrics

    for task, column in (("brain_tumor", "tumor"), ("cell_type", "cell_type")):
        logits = np.zeros((4, 4))
        logits[2, 1] = np.nan
        with pytest.raises(ValueError, match=rf"task '{task}', column '{column}': 1 of 4 scored row\(s\) have NaN"):
            compute_output_metrics(task, column, logits, [0, 1, 2, 3],
                                   **({"names": ["a", "b", "c", "d"]} if task == "cell_type" else {}))
    logits = np.full((3, 4), np.nan)
    logits[:2] = np.eye(4)[[0, 1]]
    # a row without a label is not scored: its logits are not read
    assert compute_output_metrics("brain_tumor", "tumor", logits, [0, 1, -100])["accuracy"] == 1.0
    logits[2] = -np.inf
    with pytest.raises(ValueError, match="none finite"):
        compute_output_metrics("brain_tumor", "tumor", logits, [0, 1, 2])
