"""Zero-shot transfer as a training option of ``multimed train`` (issue 17): ``--align_label_text`` with
``--holdout_classes`` and ``--align_pairs pmc_pairs``; the held-out classes' rows never reach the run (asserted on the
ids the processor read), and ``multimed fewshot CHECKPOINT --shots 0`` then predicts them above chance, on a
single-label task (brain_tumor) and on a multilabel one (disease), in the tiny synthetic world of zeroshot_tiny."""

from __future__ import annotations

import json

import pandas as pd
import pytest

import balancing_tiny as bt
import zeroshot_tiny as zt
from multimed_hf.fewshot.run import fewshot_main
from multimed_hf.processing_multimed import MultiMedProcessor
from multimed_hf.training.arguments import parse_train_args
from multimed_hf.training.run import train_main

#: Enough to align the tiny world (measured: held-out accuracy 1.0 after 45 and 60 steps, 0.5 = chance after 30).
STEPS = "50"
TINY = ["--family", "unimodal", "--encoders", "small", "--hidden_size", "32", "--max_steps", STEPS,
        "--learning_rate", "5e-3", "--warmup_steps", "0", "--per_device_train_batch_size", "16",
        "--eval_strategy", "no", "--save_strategy", "no", "--logging_steps", "25", "--disable_tqdm", "true",
        "--bootstrap_samples", "0", "--seed", "0", "--report_to", "none"]


def _pairs():
    # the pairs cover every (brightness, colour) in other words than the class texts, as PMC figures cover the
    # diseases a held-out class names; the task's own rows of the held-out classes are never read
    return zt.pair_rows(64, 2, [(b, c) for b in zt.LEVELS for c in zt.COLOURS])


def _spy(monkeypatch) -> list:
    read = []
    original = MultiMedProcessor.preprocess

    def spy(self, row, task, *args, **kwargs):
        read.append((task, row.get("sample_id")))
        return original(self, row, task, *args, **kwargs)

    monkeypatch.setattr(MultiMedProcessor, "preprocess", spy)
    return read


def _zero_shot(checkpoint, data, task, out) -> pd.DataFrame:
    assert fewshot_main([str(checkpoint), "--data", data, "--task", task, "--shots", "0", "--output_dir", str(out),
                         "--bootstrap_samples", "0", "--report_to", "none"]) == 0
    return pd.read_csv(out / "table2.csv")


def _held_ids(dataset, column, held) -> set[str]:
    names = dataset.features[column]
    inner = getattr(names, "feature", names)
    ids = set()
    for sid, value in zip(dataset["sample_id"], dataset[column]):
        values = value if isinstance(value, list) else [value]
        if {inner.int2str(v) for v in values} & set(held):
            ids.add(sid)
    return ids


def test_held_out_classes_never_reach_the_run_and_are_predicted_zero_shot(tmp_path, monkeypatch):
    held = ["meningioma", "pituitary"]
    splits = {"train": zt.tumour_rows(48, 0, "tr"), "validation": zt.tumour_rows(16, 3, "va"),
              "test": zt.tumour_rows(40, 1, "te")}
    data = bt.write_built_folder(tmp_path / "multimed", {"brain_tumor": splits, "pmc_pairs": {"train": _pairs()}})
    out = tmp_path / "run"
    read = _spy(monkeypatch)
    code = train_main(["--data", data, "--tasks", "brain_tumor", "--align_label_text", "--holdout_classes",
                       f"brain_tumor:{','.join(held)}", "--class_texts", json.dumps({"brain_tumor": zt.CLASS_TEXTS}),
                       "--align_pairs", "pmc_pairs", "--output_dir", str(out), *TINY])
    monkeypatch.undo()
    assert code == 0
    held_ids = set().union(*(_held_ids(ds, "tumor", held) for ds in splits.values()))
    assert len(held_ids) == 24 + 8 + 20
    seen_train = {s for s in splits["train"]["sample_id"]} - held_ids
    tumour_ids = {sid for task, sid in read if task == "brain_tumor"}
    assert not tumour_ids & held_ids  # not trained on, not even evaluated by the run
    assert seen_train <= tumour_ids  # every seen training row was read
    assert {task for task, _ in read} == {"brain_tumor", "pmc_pairs"}

    alignment = json.loads((out / "alignment.json").read_text())
    assert alignment["held_out"] == {"brain_tumor": held} and alignment["removed_rows"] == {"brain_tumor": 24}
    assert alignment["pairs"] == 64 and alignment["pair_config"] == "pmc_pairs"
    info = json.loads((out / "run_info.json").read_text())
    assert info["alignment"]["label_text_tasks"] == ["brain_tumor"]
    config = json.loads((out / "config.json").read_text())
    assert config["fusion_method"] == "mean" and {"text", "figure"} <= set(config["encoders"])
    assert config["heads"]["brain_tumor"]["outputs"][0]["active"] == ["glioma", "no_tumor"]
    card = (out / "README.md").read_text()
    assert "Held out of training" in card and "meningioma, pituitary" in card
    # multimed evaluate scores the checkpoint as the run did, without the held-out classes' rows (before, sweep E4:
    # it scored them too, always wrong, and reported half the run's accuracy)
    from multimed_hf.training.run import evaluate_checkpoint

    evaluated = evaluate_checkpoint(str(out), data, ["test"], tmp_path / "evaluated", bootstrap_samples=0)
    ran = json.loads((out / "all_results.json").read_text())
    assert evaluated.metrics["test_brain_tumor_accuracy"] == ran["test_brain_tumor_accuracy"]
    scored = pd.read_parquet(tmp_path / "evaluated" / "predictions" / "brain_tumor-test.parquet")
    assert len(scored) == 20 and not set(scored["sample_id"]) & held_ids
    # the training split too (before: its held-out rows were scored, the split taken as the run's training rows)
    evaluate_checkpoint(str(out), data, ["train"], tmp_path / "evaluated_train", bootstrap_samples=0)
    scored = pd.read_parquet(tmp_path / "evaluated_train" / "predictions" / "brain_tumor-train.parquet")
    assert len(scored) == 24 and not set(scored["sample_id"]) & held_ids

    table = _zero_shot(out, data, "brain_tumor", tmp_path / "table2")
    accuracy = table[(table["family"] == "zero_shot") & (table["metric"] == "accuracy")]
    assert len(accuracy) == 1 and accuracy["n"].iloc[0] == 20  # the test rows of the two held-out classes
    assert accuracy["value"].iloc[0] > 0.5 + 0.2  # chance among the two held-out classes is 0.5
    # --max_eval_samples keeps N rows of the held-out classes (before: N test rows, then those
    # of the held-out classes among them: 2 or 0 rows)
    assert fewshot_main([str(out), "--data", data, "--task", "brain_tumor", "--shots", "0", "--output_dir",
                         str(tmp_path / "capped"), "--max_eval_samples", "4", "--bootstrap_samples", "0",
                         "--report_to", "none"]) == 0
    capped = pd.read_csv(tmp_path / "capped" / "table2.csv")
    assert capped[(capped["family"] == "zero_shot") & (capped["metric"] == "accuracy")]["n"].iloc[0] == 4


def test_zero_shot_on_a_multilabel_task(tmp_path, monkeypatch):
    """disease is multilabel (names present / absent / unknown per source): a row naming a held-out class as present
    is held out; zero-shot accuracy is top-1 among the row's known names, with the seen ones inactive."""
    held = ["meningioma", "pituitary_tumor"]
    splits = {"train": zt.disease_rows(48, 0, "tr"), "validation": zt.disease_rows(16, 3, "va"),
              "test": zt.disease_rows(40, 1, "te")}
    data = bt.write_built_folder(tmp_path / "multimed", {"disease": splits, "pmc_pairs": {"train": _pairs()}})
    out = tmp_path / "run"
    read = _spy(monkeypatch)
    code = train_main(["--data", data, "--tasks", "disease", "--plan", "disease-mri", "--align_label_text",
                       "--holdout_classes", f"disease:{','.join(held)}", "--class_texts",
                       json.dumps({"disease": zt.DISEASE_TEXTS}), "--align_pairs", "pmc_pairs",
                       "--output_dir", str(out), *TINY])
    monkeypatch.undo()
    assert code == 0
    held_ids = _held_ids(splits["train"], "diseases", held)
    assert len(held_ids) == 24
    disease_ids = {sid for task, sid in read if task == "disease"}
    assert disease_ids and not disease_ids & held_ids
    head = json.loads((out / "config.json").read_text())["heads"]["disease"]["outputs"][0]
    assert head["kind"] == "label_text" and head["multilabel"] is True and set(held).isdisjoint(head["active"])

    table = _zero_shot(out, data, "disease", tmp_path / "table2")
    accuracy = table[(table["family"] == "zero_shot") & (table["metric"] == "accuracy")]
    assert accuracy["n"].iloc[0] == 20 and accuracy["value"].iloc[0] > 0.5 + 0.2


def test_alignment_flags_are_checked(tmp_path):
    base = ["--data", str(tmp_path), "--tasks", "brain_tumor", "--output_dir", str(tmp_path)]
    with pytest.raises(ValueError, match="add --align_label_text"):
        parse_train_args([*base, "--holdout_classes", "brain_tumor:glioma"])
    with pytest.raises(ValueError, match="TASK:ClassA,ClassB"):
        parse_train_args([*base, "--align_label_text", "--holdout_classes", "glioma"])
    args, _ = parse_train_args([*base, "--align_label_text", "--holdout_classes", "brain_tumor:glioma,pituitary"])
    assert args.holdout_classes == ["brain_tumor:glioma,pituitary"]


def test_an_unknown_held_out_class_is_refused(tmp_path, capsys):
    data = bt.write_built_folder(tmp_path / "multimed", {"brain_tumor": {"train": zt.tumour_rows(8, 0, "tr")}})
    code = train_main(["--data", data, "--tasks", "brain_tumor", "--align_label_text", "--holdout_classes",
                       "brain_tumor:gliomaa", "--output_dir", str(tmp_path / "run"), *TINY])
    assert code == 2
    assert "held-out classes ['gliomaa'] are not among its classes" in capsys.readouterr().err


def test_zero_shot_on_free_text_classes_scores_in_the_vocabulary_order(tmp_path):
    # before: the label-text head listed a free-text label's classes sorted, while the references are indices in
    # the processor's vocabulary (fitted on training, most frequent first): accuracy compared two index spaces
    # (0.00 on scanpy's pbmc68k cells while 11 of 18 predictions named the right cell type)
    import shutil

    from dataset_scripts.sample_sources.pbmc68k_reduced import DATA as PBMC_DIR, REAL_FILE
    from multimed_hf.api import build_dataset

    source = tmp_path / "pbmc68k"
    source.mkdir()
    shutil.copyfile(PBMC_DIR / REAL_FILE, source / REAL_FILE)
    data = str(tmp_path / "multimed")
    build_dataset("cell_type", [source], data, progress=False)
    held = ["CD56+ NK", "CD19+ B"]
    out = tmp_path / "run"
    quick = [a if a != STEPS else "10" for a in TINY]
    assert train_main(["--data", data, "--tasks", "cell_type", "--align_label_text", "--holdout_classes",
                       f"cell_type:{','.join(held)}", "--output_dir", str(out), *quick]) == 0
    vocabulary = MultiMedProcessor.from_pretrained(out).vocabularies["cell_type"]
    assert set(held) <= set(vocabulary) and vocabulary != sorted(vocabulary)  # two orders to confuse
    # the alignment run trained and scored its head in the same order (its seen classes' test predictions)
    assert json.loads((out / "config.json").read_text())["heads"]["cell_type"]["outputs"][0]["names"] == vocabulary
    seen = pd.read_parquet(out / "predictions" / "cell_type-test.parquet")
    assert not set(seen["cell_type"]) & set(held)
    assert json.loads((out / "all_results.json").read_text())["test_cell_type_accuracy"] == pytest.approx(
        (seen["cell_type"] == seen["cell_type_prediction"]).mean())

    table = _zero_shot(out, data, "cell_type", tmp_path / "table2")
    predictions = pd.read_parquet(tmp_path / "table2" / "runs" / "cell_type" / "zero_shot" / "seed0" / "predictions"
                                  / "cell_type-test.parquet")
    assert set(predictions["cell_type"]) <= set(held) and set(predictions["cell_type_prediction"]) <= set(held)
    accuracy = table[(table["family"] == "zero_shot") & (table["metric"] == "accuracy")]
    assert accuracy["n"].iloc[0] == len(predictions)
    assert accuracy["value"].iloc[0] == pytest.approx((predictions["cell_type"]
                                                       == predictions["cell_type_prediction"]).mean())
    # the scores and the references share one index space: each reference names its row's cell type
    from datasets import load_dataset
    from transformers import TrainingArguments

    from multimed_hf.fewshot.zeroshot import zero_shot_predict
    from multimed_hf.modeling_multimed import MultiMedModel

    scored, rows = zero_shot_predict(
        MultiMedModel.from_pretrained(out).eval(), MultiMedProcessor.from_pretrained(out), "cell_type",
        load_dataset(data, "cell_type", cache_dir=str(tmp_path / "hf"))["test"], classes=held,
        training_args=TrainingArguments(output_dir=str(tmp_path / "zs"), use_cpu=True, report_to=[]))
    names = scored.head_spec["outputs"][0]["names"]
    assert names == vocabulary
    assert [names[i] for i in scored.references["cell_type"]] == list(rows["cell_type"])


def test_a_class_held_out_of_one_task_but_trained_by_another_is_refused(tmp_path, capsys):
    # before: --holdout_classes brain_tumor:meningioma,pituitary beside disease, which trains 'meningioma' by the
    # same text on the same images: the zero-shot score was reported as held-out transfer, and nothing said so
    tumour = {"train": zt.tumour_rows(24, 0, "tr"), "test": zt.tumour_rows(8, 1, "te")}
    disease = {"train": zt.disease_rows(24, 0, "tr"), "test": zt.disease_rows(8, 1, "te")}
    data = bt.write_built_folder(tmp_path / "multimed", {"brain_tumor": tumour, "disease": disease})
    base = ["--data", data, "--tasks", "brain_tumor", "disease", "--align_label_text", "--output_dir",
            str(tmp_path / "run"), *TINY, "--family", "unimodal_multitask"]  # (TINY's --family replaced)
    assert train_main([*base, "--holdout_classes", "brain_tumor:meningioma,pituitary"]) == 2
    err = capsys.readouterr().err
    assert "task 'disease' trains 'meningioma' (as 'meningioma') by the same text" in err
    assert "would not be zero-shot" in err
    # held out of both tasks, the run goes ahead (the tiny rows' groups are their own: d-... beside tr-...)
    disease = {s: ds.map(lambda r: {"group_id": "d-" + r["group_id"]}) for s, ds in disease.items()}
    data = bt.write_built_folder(tmp_path / "both", {"brain_tumor": tumour, "disease": disease})
    base[1] = data
    assert train_main([*base, "--holdout_classes", "brain_tumor:meningioma,pituitary",
                       "disease:meningioma,pituitary_tumor"]) == 0
