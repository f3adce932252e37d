"""Zero-shot by label text on a tiny synthetic world: held-out classes' rows never reach training (asserted on the
ids the processor read) and the aligned model beats chance on them; the label_text head's mechanics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import TrainingArguments

import zeroshot_tiny as zt
from multimed_hf.fewshot.zeroshot import (
    AlignmentSettings,
    ZeroShotError,
    read_alignment,
    train_alignment,
    use_label_text,
    zero_shot_classes,
    zero_shot_predict,
)
from multimed_hf.label_text import INACTIVE_LOGIT
from multimed_hf.modeling_multimed import MultiMedModel
from multimed_hf.tasks import get_task

HELD_OUT = ["meningioma", "pituitary"]


def _args(path, steps):
    return TrainingArguments(output_dir=str(path), max_steps=steps, per_device_train_batch_size=16,
                             learning_rate=5e-3, report_to=[], save_strategy="no", use_cpu=True, seed=0,
                             disable_tqdm=True, logging_steps=1000)


def test_held_out_classes_never_reach_training_and_zero_shot_beats_chance(tmp_path, monkeypatch):
    processor = zt.processor()
    model = zt.model(processor)
    train, test = zt.tumour_rows(48, 0, "tr"), zt.tumour_rows(40, 1, "te")
    # the pairs cover every (brightness, colour), in other words than the class texts, as PMC figures cover the
    # diseases a held-out class names; the task's own rows of the held-out classes are never read
    pairs = zt.pair_rows(64, 2, [(b, c) for b in zt.LEVELS for c in zt.COLOURS])
    read = []
    original = type(processor).preprocess

    def spy(self, row, task, *args, **kwargs):
        read.append((task, row.get("sample_id")))
        return original(self, row, task, *args, **kwargs)

    monkeypatch.setattr(type(processor), "preprocess", spy)
    settings = AlignmentSettings(held_out={"brain_tumor": HELD_OUT}, class_texts={"brain_tumor": zt.CLASS_TEXTS})
    result = train_alignment(model, processor, _args(tmp_path / "aligned", 60), {"brain_tumor": train},
                             settings=settings, pairs=pairs)
    monkeypatch.setattr(type(processor), "preprocess", original)
    names = train.features["tumor"].names
    held_ids = {sid for sid, y in zip(train["sample_id"], train["tumor"]) if names[y] in HELD_OUT}
    assert set(result.removed_ids["brain_tumor"]) == held_ids and len(held_ids) == 24
    trained_ids = {sid for task, sid in read if task == "brain_tumor"}
    assert trained_ids and not trained_ids & held_ids  # no held-out row was ever preprocessed for training
    assert {task for task, _ in read} == {"brain_tumor", "pmc_pairs"}
    assert read_alignment(tmp_path / "aligned")["held_out"] == {"brain_tumor": HELD_OUT}

    reloaded = MultiMedModel.from_pretrained(tmp_path / "aligned").eval()
    head = reloaded.config.heads["brain_tumor"]["outputs"][0]
    assert head["kind"] == "label_text" and head["active"] == ["glioma", "no_tumor"]
    classes = zero_shot_classes(reloaded, "brain_tumor", read_alignment(tmp_path / "aligned"))
    assert classes == HELD_OUT
    predictions, rows = zero_shot_predict(reloaded, processor, "brain_tumor", test, classes=classes,
                                          training_args=_args(tmp_path / "zs", 1), texts=zt.CLASS_TEXTS)
    assert {names[y] for y in rows["tumor"]} == set(HELD_OUT) and len(rows) == 20
    logits = predictions.outputs["tumor"]
    assert (logits[:, [names.index(n) for n in names if n not in HELD_OUT]] == INACTIVE_LOGIT).all()
    accuracy = predictions.metrics()["tumor"]["accuracy"]
    assert accuracy > 0.5 + 0.2, accuracy  # chance among the two held-out classes is 0.5


def test_label_text_head_scores_only_active_classes_and_survives_a_round_trip(tmp_path):
    processor = zt.processor()
    model = zt.model(processor).eval()
    spec = use_label_text(model, "brain_tumor", processor, texts=zt.CLASS_TEXTS, active=["glioma", "no_tumor"])
    assert model.heads["brain_tumor"].specs["tumor"]["kind"] == "label_text"
    batch = processor(zt.tumour_rows(6, 0, "x")[:6], "brain_tumor")
    with torch.no_grad():
        before = model(task="brain_tumor", inputs=batch["inputs"], presence=batch["presence"]).logits["tumor"]
    assert (before[:, [1, 3]] == INACTIVE_LOGIT).all() and (before[:, [0, 2]].abs() < 100).all()
    model.save_pretrained(tmp_path / "m")
    loaded = MultiMedModel.from_pretrained(tmp_path / "m").eval()
    with torch.no_grad():
        after = loaded(task="brain_tumor", inputs=batch["inputs"], presence=batch["presence"]).logits["tumor"]
    assert torch.equal(before, after) and loaded.config.heads["brain_tumor"]["outputs"][0]["texts"] == spec[
        "outputs"][0]["texts"]
    # switching the active set keeps the learned temperature and changes which classes are scored
    use_label_text(loaded, "brain_tumor", processor, texts=zt.CLASS_TEXTS, active=["meningioma", "pituitary"])
    with torch.no_grad():
        switched = loaded(task="brain_tumor", inputs=batch["inputs"], presence=batch["presence"]).logits["tumor"]
    assert (switched[:, [0, 2]] == INACTIVE_LOGIT).all() and (switched[:, [1, 3]].abs() < 100).all()


def test_label_smoothing_spreads_over_the_active_classes_only():
    # before: the cross-entropy ran over every class, the inactive ones at -1e4, so label smoothing 0.05 put mass on
    # them and added about 100 to an alignment run's loss (pbmc68k cells, 2 of 10 classes held out)
    import torch.nn.functional as F

    from multimed_hf.output_kinds import get_output_kind

    kind = get_output_kind("label_text")
    out = {"names": ["a", "b", "c", "d"], "active": ["a", "c", "d"], "multilabel": False}
    logits = torch.tensor([[2.0, INACTIVE_LOGIT, 0.5, -1.0], [0.1, INACTIVE_LOGIT, 1.5, 0.3]])
    target = torch.tensor([0, 2])
    active = logits[:, [0, 2, 3]]
    for smoothing in (0.0, 0.1):
        loss = kind.loss(out, logits, target, label_smoothing=smoothing)
        assert loss == pytest.approx(float(F.cross_entropy(active, torch.tensor([0, 1]), label_smoothing=smoothing)))
    assert kind.loss(out, logits, torch.tensor([1, -100])) is None  # an inactive class's row teaches nothing


def test_regression_and_fully_trained_tasks_are_not_zero_shot():
    processor = zt.processor()
    model = zt.model(processor)
    with pytest.raises(ZeroShotError, match="no class names"):
        use_label_text(model, "bone_age", processor)
    with pytest.raises(ZeroShotError, match="not zero-shot"):
        zero_shot_classes(model, "brain_tumor", None)


def test_a_never_trained_tasks_zero_shot_leaves_out_classes_the_base_trained_by_the_same_text(caplog):
    # before: zero-shot on disease over a base aligned on brain_tumor scored all 38 names, glioma among them, which
    # the base trained by the same text on the training twins of the same images
    from datasets import Dataset

    processor = zt.processor()
    model = zt.model(processor)
    use_label_text(model, "brain_tumor", processor, active=["glioma", "no_tumor"])  # as alignment leaves it
    with caplog.at_level("WARNING", logger="multimed_hf.fewshot.zeroshot"):
        classes = zero_shot_classes(model, "disease", {"label_text_tasks": ["brain_tumor"]}, Dataset.from_dict({}))
    names = list(get_task("disease").label("diseases").names)
    assert "glioma" not in classes and "meningioma" in classes and len(classes) == len(names) - 1
    assert "classes ['glioma'] are left out" in caplog.text


def test_the_classes_left_out_follow_the_texts_the_evaluation_scores_with(caplog):
    # before: the texts came from alignment.json alone, not fewshot --class_texts: a class scored by the very text
    # the base trained was kept, and one given another text was dropped with a false warning
    from datasets import Dataset

    processor = zt.processor()
    model = zt.model(processor)
    use_label_text(model, "brain_tumor", processor, active=["glioma", "no_tumor"],
                   texts={"glioma": "an MRI of a glioma", "no_tumor": "no tumour"})
    empty = Dataset.from_dict({})
    assert "glioma" in zero_shot_classes(model, "disease", {}, empty)  # "glioma" is not the text trained
    trained_text = zero_shot_classes(model, "disease", {}, empty, texts={"glioma": "An MRI of a  glioma"})
    assert "glioma" not in trained_text


def test_a_hub_checkpoints_alignment_is_read_from_its_repository(fake_hub, tmp_path):
    # before: alignment.json was looked for in a local folder only: a Hub base with held-out classes read as one
    # trained on all of them
    from huggingface_hub import HfApi

    api = HfApi(endpoint=fake_hub.endpoint, token=fake_hub.token)
    api.create_repo("org/aligned")
    api.upload_file(path_or_fileobj=b'{"held_out": {"brain_tumor": ["meningioma"]}}', path_in_repo="alignment.json",
                    repo_id="org/aligned")
    api.create_repo("org/plain")
    api.upload_file(path_or_fileobj=b"{}", path_in_repo="config.json", repo_id="org/plain")
    assert read_alignment("org/aligned") == {"held_out": {"brain_tumor": ["meningioma"]}}
    assert read_alignment("org/plain") is None and read_alignment(tmp_path) is None


def test_a_hub_alignment_out_of_reach_is_not_read_as_absent(monkeypatch):
    # before: offline and not cached (LocalEntryNotFoundError, a subclass of EntryNotFoundError) read as "no
    # alignment.json": an aligned base was called not trained for zero-shot
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    def offline(*args, **kwargs):
        raise LocalEntryNotFoundError("not in the cache and offline")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    with pytest.raises(ZeroShotError, match=r"'org/aligned': whether it has an alignment.json is unknown .*where it "
                                            r"was trained with label-text alignment, fetch it .*hf download"):
        read_alignment("org/aligned")
    # where an earlier online look found none (the cache's no-exist marker): absent, as online
    from huggingface_hub.file_download import _CACHED_NO_EXIST

    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *args, **kwargs: _CACHED_NO_EXIST)
    assert read_alignment("org/plain") is None


def test_zero_shot_chance_is_what_the_accuracy_chooses_among():
    # before: 1 / len(classes): a multilabel disease row chooses among its ~4 known names, not the task's 38, so a
    # below-chance 21% read as 7x chance (chance 3%)
    from types import SimpleNamespace

    from multimed_hf.fewshot.zeroshot import zero_shot_chance

    names = ["a", "b", "c", "d", "e", "f"]
    nan = float("nan")
    multilabel = SimpleNamespace(head_spec={"outputs": [{"name": "diseases", "names": names, "multilabel": True}]},
                                 references={"diseases": np.array([[1, 0, 0, 0, nan, nan],    # 1 of 4 known
                                                                   [1, 1, nan, nan, nan, nan],  # 2 of 2
                                                                   [0, 0, 0, 0, nan, nan]])})  # no known positive
    assert zero_shot_chance(multilabel, names) == pytest.approx((1 / 4 + 2 / 2) / 2)
    assert zero_shot_chance(multilabel, ["a", "c"]) == pytest.approx((1 / 2 + 1 / 1) / 2)
    single = SimpleNamespace(head_spec={"outputs": [{"name": "tumor", "names": names}]}, references={})
    assert zero_shot_chance(single, ["a", "b"]) == 0.5


def test_zero_shot_reports_what_a_constant_guess_scores_beside_chance():
    # before: "chance 50%" beside 88.9%, which naming CD19+ B for every one of 18 rows (16 of them CD19+ B) scores
    from types import SimpleNamespace

    from multimed_hf.fewshot.zeroshot import zero_shot_majority

    names = ["a", "b", "c"]
    single = SimpleNamespace(head_spec={"outputs": [{"name": "cell_type", "names": names}]},
                             references={"cell_type": np.array([1] * 16 + [2] * 2)})
    assert zero_shot_majority(single, ["b", "c"]) == pytest.approx(16 / 18)
    nan = float("nan")
    multilabel = SimpleNamespace(head_spec={"outputs": [{"name": "diseases", "names": names, "multilabel": True}]},
                                 references={"diseases": np.array([[1, 0, nan], [1, 1, nan], [0, 1, 0], [0, 0, 0]])})
    assert zero_shot_majority(multilabel, names) == pytest.approx(2 / 3)  # a or b: 2 of the 3 rows with a positive


def test_a_held_out_class_a_split_lacks_leaves_that_split_whole():
    # before: train --holdout_classes "cell_type:B cell" crashed when the validation split held no B cell ("not
    # among its classes", listing that split's); rare classes are the natural zero-shot ones
    from datasets import Dataset

    from multimed_hf.fewshot.zeroshot import hold_out
    from multimed_hf.training.run import _without_held_out

    validation = Dataset.from_dict({"sample_id": ["v1", "v2"], "cell_type": ["T cell", "NK cell"]})
    with pytest.raises(ZeroShotError, match="not among its classes"):
        hold_out(validation, "cell_type", ["B cell"])
    kept, removed = hold_out(validation, "cell_type", ["B cell"], check=False)
    assert len(kept) == 2 and removed == []
    train = Dataset.from_dict({"sample_id": ["t1"], "cell_type": ["T cell"]})
    data = _without_held_out({"cell_type": {"train": train, "validation": validation}}, {"cell_type": ["B cell"]},
                             {"cell_type": train})
    assert len(data["cell_type"]["validation"]) == 2
