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
