"""The vertical phase links a labelled row only to fragments of a modality it lacks (sweep J3 F5); a federation
records how it ran: ``<strategy>/run_info.json`` and a card in ``<strategy>/model/`` (sweep J3 F3).

The clients: a clinic that collected both modalities (some of its rows lack scRNA-seq, as whole-blood rows do in
the sample) and a genome centre holding the DNA of the clinic's patients. Before, the clinic's rows lacking scRNA
were linked to that DNA, the clinic read them with "the head's modalities minus DNA" (nothing) and the whole
federation failed in round 1. The simulation runs in a subprocess under a guard against the known simulation hang
(not a speed assertion).
"""

import json
import logging
import sys

import pytest
from datasets import load_dataset

from multimed_hf.federated.vertical import find_pairs

from _federated_helpers import TINY, clients_root, run_guarded

TASK = "expression_prediction"
GUARD_SECONDS = 600
CLIENTS = f"""
data: multimed
clients:
  - name: clinic
    tasks:
      {TASK}: {{train: "train[:50%]", validation: "validation[:50%]"}}
  - name: genome-centre
    tasks:
      {TASK}: {{modalities: [dna], train: "train[50%:]", validation: "validation[50%:]", fragments: "train[:50%]"}}
"""


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return clients_root(tmp_path_factory.mktemp("fed_fixes_p"), CLIENTS)


def test_find_pairs_links_a_row_only_for_the_modalities_it_lacks(caplog):
    links = {"clinic": {"labelled": {TASK: ["a", "b", "c"]}, "lacking": {TASK: ["scrna", "dna", "dna scrna"]}},
             "lab": {"fragments": {TASK: ["a", "b", "c", "z"]}, "modalities": {TASK: ["dna", "scrna"]}}}
    pairs = find_pairs(links)
    # each row gets only what it lacks; rows lacking different modalities make separate pairs
    assert sorted((p["ids"], p["modalities"]) for p in pairs) == [(["a"], ["scrna"]), (["b"], ["dna"]),
                                                                   (["c"], ["dna", "scrna"])]
    assert {(p["label_client"], p["fragment_client"], p["task"]) for p in pairs} == {("clinic", "lab", TASK)}
    # the fragments hold DNA only: the rows that hold DNA already are left out, said once, naming both clients
    links["lab"]["modalities"][TASK] = ["dna"]
    with caplog.at_level(logging.WARNING, logger="multimed_hf.federated.vertical"):
        pairs = find_pairs(links)
    assert [(p["ids"], p["modalities"]) for p in pairs] == [(["b", "c"], ["dna"])]
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1 and "1 of the 3 rows of clinic's" in warned[0] and "lab's fragments" in warned[0]
    # nothing to add at all: no pair, and the warning says the two clients exchange nothing
    links["clinic"]["lacking"][TASK] = ["scrna", "scrna", "scrna"]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="multimed_hf.federated.vertical"):
        assert find_pairs(links) == []
    assert "clinic and lab exchange nothing" in caplog.text and "(dna)" in caplog.text
    # fragments holding none of the task's modalities are not sent to embed nothing (a crash)
    del links["lab"]["modalities"]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="multimed_hf.federated.vertical"):
        assert find_pairs(links) == []
    assert "those fragments hold none of the task's modalities" in caplog.text


def test_find_pairs_reads_what_each_fragment_holds():
    # before: a fragment's modalities were those every fragment held: med_vqa's fragments (each image of one kind:
    # x-ray, CT or MRI) held none in common, and the vertical phase was skipped with a warning
    links = {"clinic": {"labelled": {"med_vqa": ["a", "b", "c", "d"]},
                        "lacking": {"med_vqa": ["xray ct mri", "xray ct mri", "xray ct mri", "ct mri"]}},
             "hospital": {"fragments": {"med_vqa": ["a", "b", "c", "d"]},
                          "holds": {"med_vqa": ["xray", "ct", "xray", "xray"]}}}
    assert sorted((p["ids"], p["modalities"]) for p in find_pairs(links)) == [(["a", "c"], ["xray"]),
                                                                               (["b"], ["ct"])]
    links["hospital"]["holds"]["med_vqa"] = ["xray"]
    with pytest.raises(ValueError, match="4 fragment digests of 'med_vqa' but 1 'holds' entries"):
        find_pairs(links)


def test_the_link_reply_says_which_modalities_each_row_lacks(root, tmp_path):
    from flwr.app import ConfigRecord, Context, Message, Metadata, RecordDict

    from multimed_hf.federated.client_app import INITIAL_MODEL_DIR, make_client_app
    from multimed_hf.federated.clients_file import clients_from_file
    from multimed_hf.federated.modules import link_id
    from multimed_hf.federated.partition import load_client_data
    from multimed_hf.training.assembly import assemble

    plan = clients_from_file(root / "clients.yaml", tmp_path)
    assembly = assemble(plan.data, plan.tasks, hidden_size=16, **TINY)
    for part in (assembly.model, assembly.processor):
        part.save_pretrained(tmp_path / INITIAL_MODEL_DIR)
    metadata = Metadata(run_id=1, message_id="m", src_node_id=0, dst_node_id=1, reply_to_message_id="",
                        group_id="0", created_at=0.0, ttl=60.0, message_type="query.link")
    message = Message(content=RecordDict({"config": ConfigRecord({"server-round": 0})}), metadata=metadata)
    context = Context(run_id=1, node_id=1, node_config={"partition-id": 0}, state=RecordDict(), run_config={})
    link = make_client_app(tmp_path, salt="s")(message, context).content.config_records["link"]
    assert link["client"] == "clinic"
    train = load_client_data(plan.client_dir("clinic"))[TASK]["train"]
    without_scrna = [link_id(r["sample_id"], "s") for r in train if r["profile_indices"] is None]
    assert 0 < len(without_scrna) < len(train)  # the clinic also holds complete rows: those are not offered
    assert list(link[f"labelled.{TASK}"]) == without_scrna
    assert list(link[f"lacking.{TASK}"]) == ["scrna"] * len(without_scrna)
    context = Context(run_id=1, node_id=2, node_config={"partition-id": 1}, state=RecordDict(), run_config={})
    link = make_client_app(tmp_path, salt="s")(message, context).content.config_records["link"]
    fragments = load_client_data(plan.client_dir("genome-centre"))[TASK]["fragments"]
    assert link["client"] == "genome-centre" and list(link[f"fragments.{TASK}"]) == [
        link_id(r["sample_id"], "s") for r in fragments]
    assert list(link[f"holds.{TASK}"]) == ["dna"] * len(fragments)  # what each fragment holds


@pytest.fixture(scope="module")
def run(root):
    pytest.importorskip("ray", reason="Flower's simulation engine needs flwr[simulation] (ray)")
    out = root / "out"
    cmd = [sys.executable, "-m", "multimed_hf.federated.simulation", "--clients", str(root / "clients.yaml"),
           "--rounds", "1", "--local-steps", "2", "--vertical-steps", "1", "--compare", "fedavg", "--output-dir",
           str(out), "--assemble", json.dumps(TINY), "--timeout", "300"]
    return out, run_guarded(cmd, GUARD_SECONDS)


def test_a_clinic_holding_both_modalities_federates(run):
    out, log = run  # before: exit 1, "round 1, vertical-train: ... has none of the modalities ['scrna']"
    assert "rows of clinic's expression_prediction linked to genome-centre's fragments take no split-learning " \
           "step: they already hold every modality those fragments hold (dna)" in log
    assert log.count("take no split-learning step") == 1  # said once, not per round or step
    report = json.loads((out / "blendavg" / "report.json").read_text())
    assert "error" not in report and not [r for r in report["records"] if r["phase"].startswith("vertical")]
    assert {(r["phase"], r["client"]) for r in report["records"]} == {
        (phase, client) for phase in ("train", "evaluate") for client in ("clinic", "genome-centre")}
    assert (out / "blendavg" / "model" / "config.json").is_file()


def test_a_federation_records_how_it_ran(root, run):
    out, _ = run  # before: no run_info.json, no card
    train = load_dataset(str(root / "multimed"), TASK, split="train")
    for name in ("blendavg", "fedavg"):
        info = json.loads((out / name / "run_info.json").read_text())
        settings = info["settings"]
        assert settings["strategy"] == name and settings["rounds"] == 1 and settings["seed"] == 0
        assert settings["local"]["local-steps"] == 2 and settings["local"]["lr"] == 1e-4
        assert settings["dp"] is None and settings["proximal_mu"] is None
        if name == "blendavg":
            assert settings["vertical"] == {"steps": 1, "batch": 8, "lr": 1e-3, "seed": 0}
            assert (settings["score_key"], settings["score_weight"]) == ("val-score", "linear")
        else:
            assert settings["vertical"] is None and settings["score_key"] is None
        clients = {c["name"]: c for c in info["clients"]}
        assert {n: c["kind"] for n, c in clients.items()} == {"clinic": "paired", "genome-centre": "partial"}
        assert clients["genome-centre"]["fragments"] == {TASK: len(train) // 2}
        assert clients["clinic"]["rows"][TASK]["train"] > 0
        args = info["arguments"]
        assert args["clients"] == str(root / "clients.yaml") and args["local_steps"] == 2 and args["num_cpus"] == 1
        assert args["partition"] is None  # a clients file, not a partition, made the clients
        assert info["model"]["hidden_size"] == 64 and info["model"]["encoders"] == "small"
        assert info["multimed_hf_version"] and "git_commit" in info and info["versions"]["torch"]
        card = (out / name / "model" / "README.md").read_text()
        assert "## Federated training" in card and "A federated model" in card and f"Strategy `{name}`" in card
        assert "1 round(s)" in card and "2 local AdamW steps" in card and "run_info.json" in card
        assert "| `clinic` | paired | expression_prediction: train" in card
        assert f"fragments {len(train) // 2} (unlabelled" in card
        assert ("Vertical (split-learning) steps" in card) == (name == "blendavg")
        assert ("none ran: no labelled row was linked" in card) == (name == "blendavg")  # (see the test above)
        assert "Measured on the `validation` split" in card
        assert "the final global model on every validation row of the configs" in card and "after round 1" in card
