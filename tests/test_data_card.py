"""The built folder's README.md is a huggingface_hub DatasetCard: its YAML lists the configs' shards, it reads back
with the Hub's own parser, a rebuild writes the same bytes, and left-out sources stay out of the data files."""

from huggingface_hub import DatasetCard

from multimed_hf.api import build_dataset
from multimed_hf.data.card import build_card, render_readme

TASK, SOURCE = "brain_tumor", "brain_tumor_mri"


def test_card_yaml_lists_each_splits_shards_and_reads_back(build_sample):
    built = build_sample(TASK, SOURCE)
    card = DatasetCard.load(built.out / "README.md")  # the Hub's own parser
    (config,) = card.data.to_dict()["configs"]
    fingerprint = built.report.sources[0].fingerprint
    assert config == {"config_name": TASK, "data_files": [
        {"split": split, "path": [f"{TASK}/{SOURCE}/{fingerprint}/{split}-*.parquet"]}
        for split, n in built.report.splits.items() if n
    ]}
    assert card.data.license == "other" and "medical" in card.data.tags
    assert (built.out / "README.md").read_text() == str(build_card(built.out))
    assert f"## `{TASK}`: " in card.text


def test_a_rebuild_writes_the_same_card_bytes(build_sample, tmp_path):
    built = build_sample(TASK, SOURCE)
    build_dataset(TASK, [built.root], tmp_path / "multimed", progress=False)
    assert (tmp_path / "multimed" / "README.md").read_bytes() == (built.out / "README.md").read_bytes()


def test_a_left_out_source_is_named_and_loads_nothing(build_sample):
    built = build_sample(TASK, SOURCE)
    text = render_readme(built.out, left_out={SOURCE: "not redistributable"})
    card = DatasetCard(text)
    assert card.data.to_dict()["configs"] == []  # its config has no other source: nothing to load
    assert f"- `{SOURCE}`: not redistributable" in card.text
    assert "*Left out of this repository*: not redistributable" in card.text
