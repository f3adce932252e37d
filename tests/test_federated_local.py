"""A client's local training on the Trainer path: only the units its rows reach are trained; FedProx's pull."""

import numpy as np
import pytest
import torch

from dataset_scripts.sample_sources import sample_generators
from multimed_hf.api import build_dataset
from multimed_hf.federated.local import LocalConfig, LocalConfigError, evaluate_local, train_local
from multimed_hf.federated.modules import module_of
from multimed_hf.federated.partition import load_client_data, partition_config
from multimed_hf.training.assembly import assemble

TASK = "expression_prediction"
TINY = {"dna": {"max_length": 24, "truncation_side": "center", "crop_center": 7000}}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fed_local")
    build_dataset(TASK, [sample_generators()["tcga_promoters"](tmp / "src")], tmp / "multimed", progress=False)
    plan = partition_config(tmp / "multimed", [TASK], "paired=1,partial=1", tmp / "fed", seed=1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        assembly = assemble(tmp / "multimed", [TASK], hidden_size=16, processor_overrides=TINY)
    return plan, assembly.model, assembly.processor


def _distance(model, state, units=None):
    return sum(float((p.detach() - state[n]).pow(2).sum()) for n, p in model.named_parameters()
               if units is None or module_of(n) in units) ** 0.5


def test_a_partial_client_trains_only_what_its_rows_reach(setup):
    plan, model, processor = setup
    start = {k: v.clone() for k, v in model.state_dict().items()}
    rows = load_client_data(plan.client_dir("partial-0"))[TASK]
    result = train_local(model, {TASK: rows["train"]}, processor, LocalConfig(local_steps=3, batch_size=8))
    assert "encoders.dna" in result.trained and not any(u.endswith(".scrna") for u in result.trained)
    assert _distance(model, start, {"encoders.scrna", "projections.scrna"}) == 0.0
    assert _distance(model, start, {"encoders.dna"}) > 0
    assert result.metrics["num-examples"] == len(rows["train"]) and result.metrics["train-loss"] > 0
    scores = evaluate_local(model, {TASK: rows["validation"]}, processor)
    assert scores["num-val-examples"] == len(rows["validation"]) and scores["val-loss"] > 0
    model.load_state_dict(start)


def test_fedprox_pulls_the_local_model_towards_the_global_one(setup):
    plan, model, processor = setup
    start = {k: v.clone() for k, v in model.state_dict().items()}
    rows = {TASK: load_client_data(plan.client_dir("paired-0"))[TASK]["train"]}
    moved = {}
    for mu in (0.0, 1e4):
        model.load_state_dict(start)
        train_local(model, rows, processor, LocalConfig(local_steps=6, batch_size=8, lr=1e-2, proximal_mu=mu),
                    global_state=start)
        moved[mu] = _distance(model, start)
    model.load_state_dict(start)
    assert 0 < moved[1e4] < 0.5 * moved[0.0], moved
    with pytest.raises(LocalConfigError, match="needs global_state"):
        train_local(model, rows, processor, LocalConfig(local_steps=1, proximal_mu=0.1))
    with pytest.raises(LocalConfigError, match="local-steps=0"):
        LocalConfig(local_steps=0)


def test_val_score_counts_a_free_text_label_outside_the_vocabulary_as_wrong(tmp_path):
    # before: the federation's val-score left out rows whose answer the vocabulary lacked, as TaskPredictions once did
    from transformers import TrainingArguments

    from balancing_tiny import MODALITIES, TASK as VQA, vqa_model, vqa_processor, vqa_rows
    from multimed_hf.training.trainer import MultiMedTrainer

    model, processor = vqa_model(), vqa_processor()
    rows = vqa_rows(8, seed=3)
    trainer = MultiMedTrainer(model=model, processor=processor, args=TrainingArguments(
        output_dir=str(tmp_path), use_cpu=True, report_to=[]))
    predicted = trainer.predict_task(VQA, rows, modalities=MODALITIES).decoded()["answer"]
    # the seen rows answered as the model answers them; two rows' answers the vocabulary never had
    rows = rows.map(lambda r, i: {"answer": "maybe" if i < 2 else predicted[i]}, with_indices=True)
    score = evaluate_local(model, {VQA: rows}, processor)["val-score"]
    reference = trainer.predict_task(VQA, rows, modalities=MODALITIES).metrics()["answer"]["vqa_accuracy"]
    assert score == pytest.approx(reference) == pytest.approx(6 / 8)


def test_val_score_is_the_runs_headline_metric_per_context(setup, tmp_path):
    # before: the Pearson r pooled over every row, where a run (and BlendAvg's paper) scores each context's r and
    # takes the mean; and integer class labels went to the metrics as floats
    from transformers import TrainingArguments

    from multimed_hf.training.trainer import MultiMedTrainer

    plan, model, processor = setup
    rows = load_client_data(plan.client_dir("paired-0"))[TASK]["validation"]
    assert len(set(rows["context"])) > 1
    trainer = MultiMedTrainer(model=model, processor=processor, args=TrainingArguments(
        output_dir=str(tmp_path), use_cpu=True, report_to=[]))
    predictions = trainer.predict_task(TASK, rows)
    (column, values), = predictions.metrics().items()
    pooled = np.corrcoef(predictions.outputs[column].ravel(), predictions.references[column].ravel())[0, 1]
    assert values["pearson"] != pytest.approx(pooled)
    assert evaluate_local(model, {TASK: rows}, processor)["val-score"] == pytest.approx(values["pearson"])
