"""TaskPredictions' bootstrap: a metric's warnings come from the point estimate, not once per resample."""

import warnings

import numpy as np

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
