"""MIND: unimodal teachers' soft predictions cached as dataset columns, distilled into a multi-head student's
modality heads (tiny med_vqa task: teachers trained on many clean rows, the student on few noisy ones)."""

import math

import numpy as np
import pytest
import torch
from transformers import TrainingArguments

from balancing_tiny import MODALITIES, TASK, vqa_config, vqa_model, vqa_processor, vqa_rows
from multimed_hf.training.balancing import (
    BalancingError,
    MINDWeighting,
    add_teacher_columns,
    balancing_from_variant,
    size_and_speed,
    soft_targets_from_columns,
    task_batches,
    teacher_soft_targets,
)
from multimed_hf.training.balancing.mind import MIND_TEMPERATURE, distillation_term, rows_holding, teacher_column
from multimed_hf.training.trainer import MultiMedTrainer

READ = {TASK: MODALITIES}


def _args(tmp_path, steps, seed=0):
    return TrainingArguments(output_dir=str(tmp_path), max_steps=steps, per_device_train_batch_size=8,
                             learning_rate=5e-3, report_to=[], use_cpu=True, save_strategy="no", disable_tqdm=True,
                             log_level="error", logging_strategy="no", seed=seed)


@pytest.fixture(scope="module")
def processor():
    return vqa_processor()


@pytest.fixture(scope="module")
def teachers(processor, tmp_path_factory):
    """One unimodal teacher per modality, wider than the student, trained on 96 clean rows."""
    rows = {TASK: vqa_rows(96, seed=5, prefix="t")}
    out = {}
    for m in MODALITIES:
        teacher = vqa_model([m], width=24, hidden_size=24, seed=3)
        MultiMedTrainer(model=teacher, args=_args(tmp_path_factory.mktemp(m), 15), train_datasets=rows,
                        processor=processor, modalities={TASK: [m]}).train()
        out[m] = [(teacher.eval(), processor)]
    return out


def _without_xray(rows, every=4):
    """Rows where every ``every``-th image is a CT slice: those rows hold no X-ray (the student reads xray + text)."""
    return rows.map(lambda r, i: {"modality": "ct" if i % every == 1 else r["modality"]}, with_indices=True)


def test_teacher_predictions_are_cached_as_columns_with_absent_rows(processor, teachers):
    rows = _without_xray(vqa_rows(12, seed=2))
    assert rows_holding(TASK, rows, "xray").tolist() == [i % 4 != 1 for i in range(12)]
    assert rows_holding(TASK, rows, "text").all()
    targets = teacher_soft_targets(teachers, TASK, rows, processor=processor)
    xray = targets["xray"]["answer"]
    assert xray.shape == (12, 2) and np.isnan(xray[1]).all() and not np.isnan(xray[0]).any()
    assert np.allclose(xray[~np.isnan(xray[:, 0])].sum(1), 1.0, atol=1e-5)  # probabilities at T
    with torch.no_grad():  # the cache holds the teacher's softmax(logits / T) of each row that has the X-ray
        teacher = teachers["xray"][0][0]
        batch = processor([dict(rows[0])], TASK, modalities=["xray"])
        expected = torch.softmax(teacher(**batch).logits["answer"] / MIND_TEMPERATURE, -1)[0].numpy()
    assert np.allclose(xray[0], expected, atol=1e-5)

    stored = add_teacher_columns(rows, targets)
    assert {teacher_column(m, "answer") for m in MODALITIES} <= set(stored.column_names)
    assert stored[1][teacher_column("xray", "answer")] is None
    config = vqa_config(auxiliary_heads=True)
    back = soft_targets_from_columns(stored, config, TASK)
    for m in MODALITIES:
        assert np.allclose(back[m]["answer"].numpy(), targets[m]["answer"], equal_nan=True)


def test_cached_teacher_predictions_give_the_same_loss_as_live_teachers(tmp_path, processor, teachers):
    rows = add_teacher_columns(_without_xray(vqa_rows(16, seed=4)),
                               teacher_soft_targets(teachers, TASK, _without_xray(vqa_rows(16, seed=4)),
                                                    processor=processor))
    student = vqa_model(auxiliary_heads=True, seed=1)
    cached = MINDWeighting(student.config, {TASK: soft_targets_from_columns(rows, student.config, TASK)})
    live = MINDWeighting(student.config, live_teachers={m: [t for t, _ in ts] for m, ts in teachers.items()})
    trainer = MultiMedTrainer(model=student, args=_args(tmp_path, 4), train_datasets={TASK: rows},
                              processor=processor, modalities=READ, loss_weighting=cached)
    checked = 0
    for batch in trainer.get_train_dataloader():
        inputs = {k: v for k, v in batch.items() if k != "row_index"}
        output = student.eval()(**inputs)
        context = {**inputs, "rows": trainer._task_rows(TASK, batch["row_index"])}
        loss_cached, logs = cached.combine(TASK, output, batch=context)
        loss_live, _ = live.combine(TASK, output, batch=context)
        assert float(logs[f"distill_{TASK}"]) > 0
        assert float(loss_cached.detach()) == pytest.approx(float(loss_live.detach()), rel=1e-5)
        assert float(loss_cached.detach()) > float(output.loss.detach())
        checked += 1
    assert checked == 2
    with pytest.raises(BalancingError, match="training row ids"):
        cached.combine(TASK, output, batch={**inputs, "rows": None})
    with pytest.raises(BalancingError, match="auxiliary_heads=True"):
        MINDWeighting(vqa_config(), {TASK: {}})
    with pytest.raises(BalancingError, match="one of the two"):
        MINDWeighting(student.config)


def test_distillation_terms_by_hand():
    student = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    teacher = torch.tensor([[0.5, 0.5], [0.2, 0.8]])
    valid = torch.tensor([True, True])
    T = 2.0
    log_q = torch.log_softmax(student / T, -1)
    kl = (teacher * (teacher.log() - log_q)).sum(1).mean() * T ** 2
    assert float(distillation_term("class", {}, student, teacher, valid, T)) == pytest.approx(float(kl), rel=1e-6)
    # multilabel: soft BCE over the names the teacher scored and the label knows (NaN masks)
    target = torch.tensor([[0.9, float("nan")], [0.1, 0.4]])
    known = torch.tensor([[True, True], [True, False]])
    p = torch.sigmoid(student / T)
    first = p[[0, 1], [0, 0]]  # the entries scored: row 0 name 0, row 1 name 0
    bce = -(torch.tensor([0.9, 0.1]) * first.log() + torch.tensor([0.1, 0.9]) * (1 - first).log())
    value = distillation_term("multilabel", {}, student, target, valid, T, known)
    assert float(value) == pytest.approx(float(bce.mean() * T ** 2), rel=1e-5)
    regression = distillation_term("regression", {"target_std": 2.0}, torch.tensor([1.0, 3.0]),
                                   torch.tensor([0.0, 3.0]), valid, T)
    assert float(regression) == pytest.approx(((1 / 2) ** 2 + 0) / 2)
    assert distillation_term("class", {}, student, teacher, torch.tensor([False, False]), T) is None


@torch.no_grad()
def _agreement(model, processor, rows, reference) -> float:
    """1 - mean total-variation distance between each modality head's answer probabilities and its teachers'."""
    model.eval()
    probs = {m: [] for m in MODALITIES}
    for _, batch in task_batches(processor, TASK, rows, modalities=MODALITIES):
        out = model(**batch)
        for m in MODALITIES:
            probs[m].append(torch.softmax(out.modality_logits[m]["answer"], -1).numpy())
    distances = [0.5 * np.abs(np.concatenate(probs[m]) - reference[m]["answer"]).sum(1).mean() for m in MODALITIES]
    return 1.0 - float(np.mean(distances))


def test_a_distilled_student_agrees_with_its_teachers_more_than_one_trained_without(tmp_path, processor, teachers):
    train = vqa_rows(32, seed=0, flip=0.5)  # half the student's labels are noise; the teachers learned clean rows
    validation = vqa_rows(32, seed=9, prefix="v")
    reference = teacher_soft_targets(teachers, TASK, validation, processor=processor, temperature=1.0)
    variant = balancing_from_variant("multimodal+mind", teachers=teachers)
    scores = {}
    for name in ("static", "mind"):
        student = vqa_model(seed=1, **variant.config_kwargs("intermediate"))
        kwargs = {"loss_weighting": "static", "train_datasets": {TASK: train}}
        if name == "mind":
            kwargs = variant.trainer_kwargs(model=student, processor=processor, train_datasets={TASK: train},
                                            modalities=READ)
            assert teacher_column("xray", "answer") in kwargs["train_datasets"][TASK].column_names
        trainer = MultiMedTrainer(model=student, args=_args(tmp_path / name, 20), processor=processor,
                                  modalities=READ, train_datasets=kwargs["train_datasets"],
                                  loss_weighting=kwargs["loss_weighting"])
        trainer.train()
        scores[name] = _agreement(student, processor, validation, reference)
    assert scores["mind"] > scores["static"] + 0.02, scores

    # the student is smaller than its teachers together, and reads both modalities in one pass
    batch = next(task_batches(processor, TASK, validation, batch_size=16, modalities=MODALITIES))[1]
    report = size_and_speed({"student": student, **{f"teacher_{m}": ts[0][0] for m, ts in teachers.items()}},
                            {"student": batch, **{f"teacher_{m}": processor([dict(r) for r in validation.select(
                                range(16))], TASK, modalities=[m]) for m in MODALITIES}}, repeats=2)
    teacher_parameters = sum(v["parameters"] for k, v in report.items() if k.startswith("teacher_"))
    assert report["student"]["parameters"] < teacher_parameters
    assert all(v["seconds_per_batch"] > 0 and math.isfinite(v["seconds_per_batch"]) for v in report.values())
    with pytest.raises(BalancingError, match="needs its teachers"):
        balancing_from_variant("mind").trainer_kwargs(model=student, processor=processor,
                                                      train_datasets={TASK: train}, modalities=READ)


def test_teacher_classes_are_put_on_the_students_by_name():
    from multimed_hf.training.balancing.mind import on_student_classes

    soft = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], dtype=np.float32)  # over the teacher's a, b, c
    assert on_student_classes("class", soft, ["a", "b", "c"], ["a", "b", "c"]) is soft
    assert np.allclose(on_student_classes("class", soft, ["a", "b", "c"], ["c", "a", "b"]), soft[:, [2, 0, 1]])
    # a class the student lacks is dropped and the rest renormalised; one the teacher lacks gets 0
    moved = on_student_classes("class", soft, ["a", "b", "c"], ["b", "a", "d"])
    assert np.allclose(moved, [[0.2 / 0.9, 0.7 / 0.9, 0.0], [0.5, 0.5, 0.0]])
    # multilabel: a name the teacher lacks has no teacher value (NaN, masked in the loss)
    multi = on_student_classes("multilabel", torch.tensor(soft), ["a", "b", "c"], ["c", "x"])
    assert torch.allclose(multi[:, 0], torch.tensor([0.1, 0.8])) and torch.isnan(multi[:, 1]).all()
    with pytest.raises(BalancingError, match="none shared"):
        on_student_classes("class", soft, ["a", "b", "c"], ["x", "y"])


def test_a_teacher_whose_vocabulary_lists_the_answers_in_another_order(processor, teachers):
    # before: a teacher's probabilities were taken in its own vocabulary's order: two runs fit a free-text label's
    # vocabulary on different rows (Table 1's unimodal runs read one modality's rows), so the student learned from
    # another answer's probability
    import copy

    rows = vqa_rows(8, seed=6)
    teacher = teachers["xray"][0][0]
    reordered = copy.deepcopy(teacher)
    for out in reordered.config.heads[TASK]["outputs"]:
        out["names"] = list(reversed(out["names"]))  # the same logits, listed as ["no", "yes"]
    student = {"answer": ["yes", "no"]}
    plain = teacher_soft_targets({"xray": [(teacher, processor)]}, TASK, rows, names=student)["xray"]["answer"]
    moved = teacher_soft_targets({"xray": [(reordered, processor)]}, TASK, rows, names=student)["xray"]["answer"]
    assert not np.allclose(plain, plain[:, ::-1]) and np.allclose(moved, plain[:, ::-1])
    live = MINDWeighting(vqa_config(auxiliary_heads=True), live_teachers={"xray": [reordered]})
    batch = processor([dict(r) for r in rows], TASK, modalities=["xray", "text"])
    targets = live._live_targets(TASK, {**batch, "task": TASK})
    assert np.allclose(targets["xray"]["answer"].numpy(), plain[:, ::-1], atol=1e-5)
