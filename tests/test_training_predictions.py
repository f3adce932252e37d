"""TaskPredictions' bootstrap: a metric's warnings come from the point estimate, not once per resample."""

import warnings

import numpy as np
import pandas as pd
import pytest

from multimed_hf.training.predictions import TaskPredictions


def _finding_predictions() -> TaskPredictions:
    # radiographic_findings scores macro_auroc, which warns for a class with one reference value; class 2 never occurs
    rng = np.random.default_rng(0)
    references = np.array([0, 1] * 10)
    return TaskPredictions(task="radiographic_findings", sample_ids=[f"r{i}" for i in range(20)],
                           outputs={"finding": rng.normal(size=(20, 3)).astype(np.float32)},
                           references={"finding": references}, masks={}, head_spec={})


def test_bootstrap_is_silent_where_the_point_estimate_warns():
    predictions = _finding_predictions()
    with warnings.catch_warnings(record=True) as point:
        warnings.simplefilter("always")
        metrics = predictions.metrics()
    assert any("macro_auroc" in str(w.message) for w in point)  # the point estimate says it once
    with warnings.catch_warnings(record=True) as resampled:
        warnings.simplefilter("always")
        intervals = predictions.bootstrap(n=20)
    assert not [w for w in resampled if issubclass(w.category, UserWarning)]
    low, high = intervals["finding"]["accuracy"]
    assert 0.0 <= low <= metrics["finding"]["accuracy"] <= high <= 1.0


def test_a_free_text_label_outside_the_vocabulary_is_scored_wrong_through_predict_task(tmp_path):
    # before: MultiMedTrainer.predict_task kept no label texts, so a test answer the training split never had was
    # absent from every metric (and its n)
    from transformers import TrainingArguments

    from balancing_tiny import MODALITIES, TASK, vqa_model, vqa_processor, vqa_rows
    from multimed_hf.training.trainer import MultiMedTrainer

    rows = vqa_rows(6, seed=1).map(lambda r, i: {"answer": "left lung" if i < 2 else r["answer"],
                                                   "answer_type": "open" if i < 2 else "closed"}, with_indices=True)
    trainer = MultiMedTrainer(model=vqa_model(), processor=vqa_processor(), args=TrainingArguments(
        output_dir=str(tmp_path), use_cpu=True, report_to=[], per_device_eval_batch_size=4))
    predictions = trainer.predict_task(TASK, rows, split="test", modalities=MODALITIES)
    assert predictions.metadata["answer"][:2] == ["left lung", "left lung"]
    assert (predictions.references["answer"][:2] == -100).all() and predictions.scored_rows("answer").all()
    metrics = predictions.metrics()["answer"]
    assert metrics["exact_match"] == 0.0  # "yes" / "no" never match "left lung": scored, not left out
    intervals = predictions.bootstrap(n=5)["answer"]
    assert intervals["exact_match"] == (0.0, 0.0)


def test_metric_records_count_the_rows_scored():
    # before: n counted the encoded references, so rows scored as unseen (wrong) were missing from it
    from multimed_hf.training.outputs import metric_records

    predictions = TaskPredictions(task="cell_type", sample_ids=list("abcd"),
                                  outputs={"cell_type": np.eye(2, dtype=np.float32)[[0, 1, 0, 0]]},
                                  references={"cell_type": np.array([0, 0, -100, -100])}, masks={},
                                  head_spec={"outputs": [{"name": "cell_type", "kind": "class", "names": ["x", "y"]}]},
                                  metadata={"cell_type": ["x", "x", "z", None]})
    records = {r["metric"]: r for r in metric_records(predictions, "test", bootstrap_samples=0)}
    assert records["accuracy"]["n"] == 3 and records["accuracy"]["value"] == 1 / 3


def test_multilabel_accuracy_counts_the_rows_with_a_known_positive():
    # before: n was every row with a known name (4), while top-1 accuracy leaves out rows with no known positive (2)
    from multimed_hf.tasks import get_task
    from multimed_hf.training.outputs import metric_records

    names = list(get_task("disease").label("diseases").names)
    references = np.full((4, len(names)), np.nan, dtype=np.float32)
    references[0, 0] = references[1, 1] = 1
    references[1, 2] = 0  # row 1 scores its known negative highest: wrong
    references[2:, :3] = 0  # known negatives only
    outputs = np.zeros((4, len(names)), dtype=np.float32)
    outputs[0, 0] = outputs[1, 2] = 5
    predictions = TaskPredictions(task="disease", sample_ids=list("abcd"), outputs={"diseases": outputs},
                                  references={"diseases": references}, masks={},
                                  head_spec={"outputs": [{"name": "diseases", "kind": "multilabel", "names": names}]})
    records = {r["metric"]: r for r in metric_records(predictions, "test", bootstrap_samples=0)}
    assert (records["accuracy"]["n"], records["accuracy"]["value"]) == (2, 0.5)
    assert all(r["n"] == 4 for name, r in records.items() if name != "accuracy")


def test_a_structure_with_fewer_than_3_observed_residues_is_not_counted():
    # before: n counted every row with an observed residue (3) while the TM-score leaves out rows under 3 residues (2)
    from multimed_hf.training.outputs import metric_records

    rng = np.random.default_rng(0)
    references = rng.normal(scale=5.0, size=(3, 6, 3)).astype(np.float32)
    mask = np.zeros((3, 6), dtype=bool)
    mask[0, :6] = mask[1, :4] = mask[2, :2] = True  # row 2: two residues, no superposition defined
    predictions = TaskPredictions(task="protein_structure", sample_ids=list("abc"), outputs={"ca_coords": references},
                                  references={"ca_coords": references}, masks={"ca_coords": mask},
                                  head_spec={"outputs": [{"name": "ca_coords", "kind": "coords"}]})
    records = {r["metric"]: r for r in metric_records(predictions, "test", bootstrap_samples=0)}
    assert records["tm_score"]["n"] == 2 and records["tm_score"]["value"] == pytest.approx(1.0)


def test_a_label_text_head_over_a_multilabel_column_names_its_top1_among_the_rows_known_names(tmp_path):
    # before: the zero-shot (label-text) head over disease took the top-1 over all 38 names (every MRI row read
    # bacterial_pneumonia, a name its source does not define), so the file disagreed with the accuracy reported
    from datasets import Dataset, Features, List, ClassLabel, Value

    from multimed_hf.tasks import get_task
    from multimed_hf.training.outputs import metric_records, write_predictions

    names = list(get_task("disease").label("diseases").names)
    references = np.full((2, len(names)), np.nan, dtype=np.float32)
    references[:, :3] = [[1, 0, 0], [0, 1, 0]]  # both rows' source knows the first three names
    outputs = np.zeros((2, len(names)), dtype=np.float32)
    outputs[:, -1] = 9.0  # a name no row's source defines scores highest
    outputs[0, 0] = outputs[1, 2] = 3.0
    spec = {"name": "diseases", "kind": "label_text", "names": names, "active": names, "multilabel": True}
    predictions = TaskPredictions(task="disease", sample_ids=["a", "b"], outputs={"diseases": outputs},
                                  references={"diseases": references}, masks={}, head_spec={"outputs": [spec]})
    rows = Dataset.from_dict({"sample_id": ["a", "b"], "diseases": [[0], [1]]}, features=Features(
        {"sample_id": Value("string"), "diseases": List(ClassLabel(names=names))}))
    table = pd.read_parquet(write_predictions(predictions, rows, tmp_path / "zs.parquet"))
    assert table["diseases_top1_prediction"].tolist() == [names[0], names[2]]
    accuracy = next(r for r in metric_records(predictions, "test", bootstrap_samples=0) if r["metric"] == "accuracy")
    assert (accuracy["value"], accuracy["n"]) == (0.5, 2)


def test_each_vqa_metric_counts_the_questions_it_scores():
    # before: n was every row of the column (5) for closed accuracy (3 closed questions) and for the open metrics (2)
    from multimed_hf.training.outputs import metric_records

    names = ["yes", "no", "left lung"]
    predictions = TaskPredictions(task="med_vqa", sample_ids=list("abcde"),
                                  outputs={"answer": np.eye(3, dtype=np.float32)[[0, 1, 0, 2, 0]]},
                                  references={"answer": np.array([0, 0, 0, 2, 2])}, masks={},
                                  head_spec={"outputs": [{"name": "answer", "kind": "text", "names": names}]},
                                  metadata={"answer": ["yes", "yes", "yes", "left lung", "left lung"],
                                            "answer_type": ["closed", "CLOSED", "closed", "open", "open"]})
    records = {r["metric"]: r for r in metric_records(predictions, "test", bootstrap_samples=0)}
    assert (records["vqa_accuracy"]["n"], records["vqa_accuracy"]["value"]) == (3, pytest.approx(2 / 3))
    assert (records["exact_match"]["n"], records["exact_match"]["value"]) == (2, pytest.approx(1 / 2))
    assert records["token_f1"]["n"] == 2


def test_the_predictions_file_carries_what_the_metrics_read_per_row(tmp_path):
    # before (sweep E4): med_vqa's answer_type and expression prediction's context were left out of the file, so
    # its metrics recomputed from the file alone (pooled) were other numbers than the run's
    import pandas as pd
    from datasets import Dataset

    from multimed_hf.metrics import compute_output_metrics
    from multimed_hf.training.outputs import write_predictions

    values = np.array([1.0, 2.0, 3.0, 5.0, 4.0, 1.0], dtype=np.float32)
    truth = np.array([1.0, 2.5, 2.0, 1.0, 3.0, 4.0], dtype=np.float32)
    contexts = ["liver", "liver", "liver", "lung", "lung", "lung"]
    ids = list("abcdef")
    predictions = TaskPredictions(task="expression_prediction", sample_ids=ids, outputs={"log_expression": values},
                                  references={"log_expression": truth}, masks={}, metadata={"context": contexts},
                                  head_spec={"outputs": [{"name": "log_expression", "kind": "regression"}]})
    rows = Dataset.from_dict({"sample_id": ids, "log_expression": truth.tolist(), "context": contexts})
    table = pd.read_parquet(write_predictions(predictions, rows, tmp_path / "expr.parquet"))
    assert table["context"].tolist() == contexts
    predicted, reference = table["log_expression_prediction"].to_numpy(), table["log_expression"].to_numpy()
    from_file = compute_output_metrics("expression_prediction", "log_expression", predicted, reference,
                                       groups=table["context"].tolist())
    assert from_file == predictions.metrics()["log_expression"]


def test_a_chain_longer_than_the_encoder_is_scored_whole(tmp_path, caplog):
    # before: a chain past the protein processor's max_length was cut in its references too, so the residues past the
    # cut went unscored and the TM-score's L shrank (7OK9_A: 650 residues scored as its first 510)
    import logging

    import torch
    from transformers import TrainingArguments

    from dataset_scripts.sample_sources import sample_generators
    from multimed_hf.api import build_dataset
    from multimed_hf.metrics.structure import structure_scores
    from multimed_hf.training.assembly import assemble
    from multimed_hf.training.outputs import write_predictions
    from multimed_hf.training.trainer import MultiMedTrainer

    task, cut = "protein_structure", 200
    build_dataset(task, [sample_generators()["pdb"](tmp_path / "src")], tmp_path / "multimed", progress=False)
    torch.manual_seed(0)
    assembly = assemble(tmp_path / "multimed", [task], hidden_size=16,
                        processor_overrides={"protein": {"max_length": cut + 2}})
    rows = assembly.datasets[task]["test"]
    chains = [np.asarray(c, dtype=np.float32) for c in rows["ca_coords"]]
    assert any(len(c) > cut for c in chains) and any(len(c) <= cut for c in chains)
    trainer = MultiMedTrainer(model=assembly.model, processor=assembly.processor, args=TrainingArguments(
        output_dir=str(tmp_path / "run"), use_cpu=True, report_to=[], per_device_eval_batch_size=4))
    with caplog.at_level(logging.WARNING):
        predictions = trainer.predict_task(task, rows, split="test")
    longer = sum(len(c) > cut for c in chains)
    assert f"{longer} chain(s) longer than the residue encoder's input" in caplog.text
    # by hand: each whole chain's observed residues (the reference structure, as TMscore reads the deposited file:
    # L counts them), the model's positions for those within its first `cut` residues, none past them (scored 0,
    # counted in L); an unobserved residue is neither fitted nor counted, at either end (7OK9_A's 121 unobserved
    # C-terminal residues were left out of L, its unobserved N-terminal ones counted)
    outputs = predictions.outputs["ca_coords"]
    preds, refs, masks = [], [], []
    for i, (chain, residues) in enumerate(zip(chains, rows["residue_mask"])):
        observed = np.isfinite(chain).all(axis=1) & np.asarray(residues, dtype=bool)
        kept = min(len(chain), cut)
        pred = np.zeros((len(chain), 3), dtype=np.float32)
        pred[:kept] = outputs[i, :kept]
        preds.append(pred[observed])
        refs.append(chain[observed])
        masks.append((np.arange(len(chain)) < kept)[observed])
    assert any(not o[0] or not o[-1] for o in (np.asarray(r, dtype=bool) for r in rows["residue_mask"]))
    expected = structure_scores(preds, refs, masks)
    metrics = predictions.metrics()["ca_coords"]
    assert metrics["tm_score"] == pytest.approx(float(np.mean(expected["tm_score"])))
    assert metrics["gdt_ts"] == pytest.approx(float(np.mean(expected["gdt_ts"])))
    for row in range(len(chains)):  # a subgroup (select) keeps each chain's own L
        alone = predictions.select([row]).metrics()["ca_coords"]["tm_score"]
        assert alone == pytest.approx(float(expected["tm_score"][row]))
    # the predictions file: one L x 3 list per whole chain, NaN past the cut
    table = pd.read_parquet(write_predictions(predictions, rows, tmp_path / "p.parquet"))
    for chain, predicted in zip(chains, table["ca_coords_prediction"]):
        predicted = np.array([list(p) for p in predicted], dtype=float)
        assert len(predicted) == len(chain)
        assert np.isnan(predicted[cut:]).all() and np.isfinite(predicted[:cut]).all()


def test_the_predictions_file_names_nothing_a_row_cannot_have(tmp_path):
    # before: an OCT scan's row carried a fundus grade (dr_grade_prediction "proliferative") and a brain MRI row of
    # disease 25 predicted names outside its source's known names, which the metrics treat as unknown
    import pandas as pd
    from datasets import ClassLabel, Dataset, Features, List, Value

    from multimed_hf.tasks import get_task
    from multimed_hf.training.outputs import write_predictions

    grades = list(get_task("diabetic_retinopathy").label("dr_grade").names)
    rows = Dataset.from_dict({"sample_id": ["oct", "fundus"], "dr_grade": [None, 2]},
                             features=Features({"sample_id": Value("string"), "dr_grade": ClassLabel(names=grades)}))
    predictions = TaskPredictions(task="diabetic_retinopathy", sample_ids=["oct", "fundus"],
                                  outputs={"dr_grade": np.eye(5, dtype=np.float32)[[4, 2]]},
                                  references={"dr_grade": np.array([-100, 2])}, masks={},
                                  head_spec={"outputs": [{"name": "dr_grade", "kind": "class", "names": grades}]})
    table = pd.read_parquet(write_predictions(predictions, rows, tmp_path / "dr.parquet"))
    assert table["dr_grade"].tolist() == [None, "moderate"]
    assert table["dr_grade_prediction"].tolist() == [None, "moderate"]

    names = list(get_task("disease").label("diseases").names)
    references = np.full((2, len(names)), np.nan, dtype=np.float32)
    references[0, :3] = [1, 0, 0]  # row 0's source knows three names; row 1 knows none
    outputs = np.full((2, len(names)), 5.0, dtype=np.float32)  # every name above 0.5
    rows = Dataset.from_dict({"sample_id": ["mri", "blank"], "diseases": [[0], None]}, features=Features(
        {"sample_id": Value("string"), "diseases": List(ClassLabel(names=names))}))
    predictions = TaskPredictions(task="disease", sample_ids=["mri", "blank"], outputs={"diseases": outputs},
                                  references={"diseases": references}, masks={},
                                  head_spec={"outputs": [{"name": "diseases", "kind": "multilabel", "names": names}]})
    table = pd.read_parquet(write_predictions(predictions, rows, tmp_path / "disease.parquet"))
    assert list(table["diseases_prediction"][0]) == names[:3] and table["diseases_prediction"][1] is None
    assert table["diseases_top1_prediction"][0] in names[:3] and table["diseases_top1_prediction"][1] is None


def test_the_predictions_file_keeps_each_rows_class_probabilities(tmp_path):
    # before: only the argmax / thresholded names were written; an ROC curve or a calibration plot needs scores
    import pandas as pd
    from datasets import ClassLabel, Dataset, Features, List, Value

    from multimed_hf.tasks import get_task
    from multimed_hf.training.outputs import predictions_score_names, write_predictions

    grades = list(get_task("diabetic_retinopathy").label("dr_grade").names)
    logits = np.array([[0.0, 1.0, 2.0, 3.0, 4.0], [2.0, 0.0, 0.0, 0.0, -1.0]], dtype=np.float32)
    rows = Dataset.from_dict({"sample_id": ["oct", "fundus"], "dr_grade": [None, 2]},
                             features=Features({"sample_id": Value("string"), "dr_grade": ClassLabel(names=grades)}))
    predictions = TaskPredictions(task="diabetic_retinopathy", sample_ids=["oct", "fundus"],
                                  outputs={"dr_grade": logits}, references={"dr_grade": np.array([-100, 2])},
                                  masks={}, head_spec={"outputs": [{"name": "dr_grade", "kind": "class",
                                                                    "names": grades}]})
    path = write_predictions(predictions, rows, tmp_path / "dr.parquet")
    table = pd.read_parquet(path)
    assert table["dr_grade_scores"][0] is None  # no grade for an OCT scan, no scores either
    expected = np.exp(logits[1]) / np.exp(logits[1]).sum()
    np.testing.assert_allclose(table["dr_grade_scores"][1], expected, rtol=1e-6)
    assert predictions_score_names(path) == {"dr_grade_scores": grades}

    names = list(get_task("disease").label("diseases").names)
    references = np.full((1, len(names)), np.nan, dtype=np.float32)
    references[0, :2] = [1, 0]
    outputs = np.linspace(-3, 3, len(names), dtype=np.float32)[None]
    rows = Dataset.from_dict({"sample_id": ["mri"], "diseases": [[0]]}, features=Features(
        {"sample_id": Value("string"), "diseases": List(ClassLabel(names=names))}))
    predictions = TaskPredictions(task="disease", sample_ids=["mri"], outputs={"diseases": outputs},
                                  references={"diseases": references}, masks={},
                                  head_spec={"outputs": [{"name": "diseases", "kind": "multilabel", "names": names}]})
    path = write_predictions(predictions, rows, tmp_path / "disease.parquet")
    # NaN for the names the row's source does not define: the metrics leave them out, and so does an ROC from the file
    expected = np.full(len(names), np.nan)
    expected[:2] = 1 / (1 + np.exp(-outputs[0, :2]))
    np.testing.assert_allclose(pd.read_parquet(path)["diseases_scores"][0], expected, rtol=1e-6)
    assert predictions_score_names(path) == {"diseases_scores": names}


def test_a_label_text_head_scores_its_active_classes():
    # before: a run trained with --align_label_text and every zero-shot evaluation wrote no <column>_scores
    import torch

    import multimed_hf.label_text  # noqa: F401  (registers the kind)
    from multimed_hf.output_kinds import output_scores

    names = ["glioma", "meningioma", "no_tumor", "pituitary"]
    logits = torch.tensor([[1.0, 2.0, -1e4, 0.5], [0.0, 0.0, -1e4, 3.0]])
    spec = {"outputs": [{"name": "tumor", "kind": "label_text", "names": names,
                         "active": ["glioma", "meningioma", "pituitary"]}]}
    scores = output_scores(spec, {"tumor": logits})["tumor"]
    assert np.isnan(scores[:, 2]).all()
    active = logits[:, [0, 1, 3]].softmax(-1).numpy()
    np.testing.assert_allclose(scores[:, [0, 1, 3]], active, rtol=1e-6)
    spec["outputs"][0]["multilabel"] = True
    scores = output_scores(spec, {"tumor": logits})["tumor"]
    np.testing.assert_allclose(scores[:, [0, 1, 3]], torch.sigmoid(logits[:, [0, 1, 3]]).numpy(), rtol=1e-6)
    assert np.isnan(scores[:, 2]).all()
