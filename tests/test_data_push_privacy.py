"""`multimed push` of a folder holding non-redistributable sources (the registry's own ``redistributable=False``),
through the fake Hub: a left-out source leaves no trace in the upload (no shard, no manifest line, no build_info
entry), a config with no source left is not pushed nor named by the card, and the pushed card's split counts are
the rows on the Hub."""

import json
import re

import pytest
from datasets import load_dataset
from huggingface_hub import DatasetCard

from dataset_scripts.sample_sources import sample_generators
from multimed_hf.api import build_dataset
from multimed_hf.data.push import left_out_sources, push_dataset
from multimed_hf.data.splits import SPLITS
from multimed_hf.tasks import get_task

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

LEFT_OUT = {"aptos2019", "rsna_bone_age"}  # redistributable=False in the registry


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """brain_tumor (pushed whole), diabetic_retinopathy (oct2017 pushed, aptos2019 left out) and bone_age (its one
    source left out)."""
    tmp = tmp_path_factory.mktemp("privacy")
    generators = sample_generators()
    out = tmp / "multimed"
    build_dataset("brain_tumor", [generators["Brain-Tumor-MRI-Dataset"](tmp / "bt")], out, progress=False)
    build_dataset("diabetic_retinopathy", [generators["OCT2017"](tmp / "oct"),
                                           generators["aptos2019-blindness-detection"](tmp / "aptos")],
                  out, progress=False)
    build_dataset("bone_age", [generators["rsna-bone-age"](tmp / "ba")], out, progress=False)
    for name in LEFT_OUT:
        assert not get_task("diabetic_retinopathy" if name == "aptos2019" else "bone_age").source(name).redistributable
    return out


def _manifest(data: bytes) -> list[dict]:
    return [json.loads(line) for line in data.decode().splitlines() if line.strip()]


def test_no_left_out_source_line_in_the_pushed_manifest_or_build_info(built, fake_hub):
    report = push_dataset(built, "org/multimed", token=fake_hub.token)
    assert set(report.left_out) == LEFT_OUT
    files = fake_hub.files("org/multimed")
    local = _manifest((built / "diabetic_retinopathy" / "manifest.jsonl").read_bytes())
    assert {e["source"] for e in local} == {"oct2017", "aptos2019"}
    pushed = _manifest(files["diabetic_retinopathy/manifest.jsonl"])
    assert {e["source"] for e in pushed} == {"oct2017"}
    assert pushed == [e for e in local if e["source"] == "oct2017"]  # the pushed source's lines, as built
    identifiers = {v for e in local if e["source"] == "aptos2019" and e["sample_id"]  # a sample's (not 'train.csv')
                   for v in (e["sample_id"], e["source_path"], e["group"]) if v}
    assert identifiers
    for path, data in files.items():
        if path.endswith((".jsonl", ".json", ".md")):
            text = data.decode()
            assert not [i for i in identifiers if i in text], f"{path} names a left-out source's files"
    info = json.loads(files["diabetic_retinopathy/build_info.json"])
    assert [s["name"] for s in info["sources"]] == ["oct2017"]
    assert info["left_out"] == ["aptos2019"]
    assert not any(w.startswith("aptos2019:") for w in info["warnings"])
    (oct_info,) = info["sources"]
    assert info["splits"] == oct_info["splits"]
    assert info["counts"] == {k: v for k, v in oct_info["counts"].items() if v}
    assert files["brain_tumor/manifest.jsonl"] == (built / "brain_tumor" / "manifest.jsonl").read_bytes()
    assert files["brain_tumor/build_info.json"] == (built / "brain_tumor" / "build_info.json").read_bytes()


def test_a_config_with_no_pushed_source_is_not_pushed_nor_in_the_card(built, fake_hub):
    push_dataset(built, "org/multimed", token=fake_hub.token)
    files = fake_hub.files("org/multimed")
    assert not [path for path in files if path.startswith("bone_age/")]
    card = DatasetCard(files["README.md"].decode())
    assert [c["config_name"] for c in card.data.to_dict()["configs"]] == ["brain_tumor", "diabetic_retinopathy"]
    assert "## `bone_age`" not in card.text
    assert "- `rsna_bone_age`: its licence" in card.text  # named, with the reason, under "Left out of this copy"


def test_the_pushed_cards_split_counts_are_the_rows_on_the_hub(built, fake_hub):
    push_dataset(built, "org/multimed", token=fake_hub.token)
    text = fake_hub.files("org/multimed")["README.md"].decode()
    sections = dict(re.findall(r"^## `(\w+)`: .*?\n(.*?)(?=^## |\Z)", text, flags=re.M | re.S))
    assert set(sections) == {"brain_tumor", "diabetic_retinopathy"}
    local_dr = json.loads((built / "diabetic_retinopathy" / "build_info.json").read_text())["splits"]
    for config, section in sections.items():
        table = {split: int(n) for split, n in re.findall(r"^\| (\w+) \| (\d+) \|$", section, flags=re.M)
                 if split in SPLITS}
        remote = load_dataset("org/multimed", config)
        assert table == {split: remote[split].num_rows if split in remote else 0 for split in SPLITS}, config
        kept = int(re.search(r"Build: kept (\d+) samples", section).group(1))
        assert kept == sum(table.values()), config
    assert sum(local_dr.values()) > sum(
        load_dataset("org/multimed", "diabetic_retinopathy")[s].num_rows for s in SPLITS)  # aptos2019 was there
    assert "*Left out of this repository*: its licence" in sections["diabetic_retinopathy"]
    # the command is the config's own: a source of several configs (APTOS: diabetic_retinopathy and disease) named
    # the last config built in every section
    assert "with `multimed build diabetic_retinopathy --source DIR`" in sections["diabetic_retinopathy"]
    assert all("multimed build" not in reason for reason in left_out_sources(built).values())
