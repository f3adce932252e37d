"""``--clients clients.yaml``: each client's configs, splits and held modalities; and Flower's DP clipping option.

The simulations run in a subprocess under a timeout that guards against the known simulation hang (not a speed
assertion).
"""

import json
import sys

import numpy as np
import pytest
from datasets import load_dataset

from multimed_hf.federated.clients_file import ClientsFileError, clients_from_file
from multimed_hf.federated.partition import FederationPlan, load_client_data

from _federated_helpers import TINY, clients_root, run_guarded

TASK = "expression_prediction"
GUARD_SECONDS = 600
CLIENTS = f"""
data: multimed
clients:
  - name: clinic
    tasks:
      {TASK}:
        modalities: [scrna]
        train: "train[:50%]"
        validation: "validation[:50%]"
  - name: genome-centre
    tasks:
      {TASK}:
        modalities: [dna]
        train: "train[50%:]"
        validation: "validation[50%:]"
        fragments: "train[:50%]"
"""


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return clients_root(tmp_path_factory.mktemp("fed_clients"), CLIENTS)


def test_a_clients_file_makes_the_clients_it_names(root, tmp_path):
    plan = clients_from_file(root / "clients.yaml", tmp_path)
    assert [(c.name, c.kind) for c in FederationPlan.load(tmp_path).clients] == [("clinic", "partial"),
                                                                                  ("genome-centre", "partial")]
    train = load_dataset(str(root / "multimed"), TASK, split="train")
    half = len(train) // 2
    clinic = load_client_data(plan.client_dir("clinic"))[TASK]
    genome = load_client_data(plan.client_dir("genome-centre"))[TASK]
    assert set(clinic) == {"train", "validation"} and set(genome) == {"train", "validation", "fragments"}
    # held modalities only; labels kept on labelled rows
    assert all(r["promoter"] is None and r["profile_indices"] is not None and r["log_expression"] is not None
               for r in clinic["train"])
    assert all(r["profile_indices"] is None and r["promoter"] is not None for r in genome["train"])
    assert sorted(genome["train"]["sample_id"]) == sorted(train.select(range(half, len(train)))["sample_id"])
    # the clinic holds the first half's rows that have a profile (whole-blood rows have none: dropped)
    first = train.select(range(half))
    with_profile = [r["sample_id"] for r in first if r["profile_indices"] is not None]
    assert 0 < len(with_profile) < half and sorted(clinic["train"]["sample_id"]) == sorted(with_profile)
    # the fragments: the first half's DNA, without labels; the clinic's patients among them
    fragments = list(genome["fragments"])
    assert sorted(r["sample_id"] for r in fragments) == sorted(first["sample_id"])
    assert all(r["log_expression"] is None and r["promoter"] is not None and r["profile_indices"] is None
               for r in fragments)
    assert plan.clients[1].fragments == {TASK: half} and plan.clients[0].rows[TASK]["train"] == len(with_profile)


def test_a_clients_file_client_left_without_rows_is_warned(root, tmp_path, caplog):
    # before: only a --partition warned; a clients file's client with an empty split trained nothing, unsaid
    validation = load_dataset(str(root / "multimed"), TASK, split="validation")
    i = next(i for i, p in enumerate(validation["profile_indices"]) if p is None)  # a row without a profile
    empty = CLIENTS.replace('validation: "validation[:50%]"', f'validation: "validation[{i}:{i + 1}]"')
    (root / "clients-empty.yaml").write_text(empty)  # beside the data it names
    with caplog.at_level("WARNING", logger="multimed_hf.federated.partition"):
        plan = clients_from_file(root / "clients-empty.yaml", tmp_path / "fed")
    assert plan.clients[0].rows[TASK]["validation"] == 0
    assert f"clinic: {TASK} validation" in caplog.text and "hold no row" in caplog.text
    assert "the file's slices and modalities decide their rows" in caplog.text and "--seed" not in caplog.text


@pytest.mark.parametrize("text, message", [
    ("clients: []", "non-empty list under 'clients'"),
    (f"data: multimed\nclients:\n  - name: a\n    tasks: {{{TASK}: {{modalities: [xray]}}}}", "not modalities of"),
    (f"data: multimed\nclients:\n  - name: a\n    tasks: {{{TASK}: {{rows: 3}}}}",
     r"a\.expression_prediction: unknown "),
    (f"data: multimed\nclients:\n  - {{name: a, tasks: {{{TASK}: {{}}}}}}\n  - {{name: a, tasks: {{{TASK}: {{}}}}}}",
     "repeated"),
    (f"clients:\n  - {{name: a, tasks: {{{TASK}: {{}}}}}}", "no 'data'"),
    (f"data: multimed\nclients:\n  - {{name: a, tasks: {{{TASK}: {{train: 'nosuch'}}}}}}",
     "cannot load split 'nosuch'"),
])
def test_a_bad_clients_file_names_the_field(root, tmp_path, text, message):
    path = root / f"bad_{abs(hash(text))}.yaml"
    path.write_text(text)
    with pytest.raises(ClientsFileError, match=message):
        clients_from_file(path, tmp_path)


def _simulate(root, out, *extra):
    cmd = [sys.executable, "-m", "multimed_hf.federated.simulation", "--clients", str(root / "clients.yaml"),
           "--rounds", "1", "--output-dir", str(out), "--assemble", json.dumps(TINY), "--timeout", "300", *extra]
    run_guarded(cmd, GUARD_SECONDS)


def test_blendavg_links_the_fragments_a_clients_file_names(root, tmp_path):
    pytest.importorskip("ray", reason="Flower's simulation engine needs flwr[simulation] (ray)")
    _simulate(root, tmp_path, "--strategy", "blendavg", "--compare", "--vertical-steps", "1")
    records = json.loads((tmp_path / "blendavg" / "report.json").read_text())["records"]
    phases = {(r["phase"], r["client"]) for r in records}
    assert {("train", "clinic"), ("train", "genome-centre"), ("vertical-embed", "genome-centre"),
            ("vertical-train", "clinic"), ("vertical-backward", "genome-centre")} <= phases
    clinic = [r for r in records if r["phase"] == "train" and r["client"] == "clinic"][0]
    assert not any(m.endswith(".dna") for m in clinic["modules"])  # it holds no DNA: never trains or sends it


def test_client_side_dp_clipping_bounds_each_update(root, tmp_path):
    """FedAvg in Flower's client-side fixed-clipping wrapper, noise 0: every client clips its update to the norm
    before sending (our train handler's ``clip_when_asked``), so the global model moves by at most that norm."""
    pytest.importorskip("ray", reason="Flower's simulation engine needs flwr[simulation] (ray)")
    from multimed_hf.modeling_multimed import MultiMedModel

    norm = 1e-3
    _simulate(root, tmp_path, "--strategy", "fedavg", "--compare", "--dp-clipping", "client",
              "--dp-noise-multiplier", "0", "--dp-clipping-norm", str(norm))
    before = MultiMedModel.from_pretrained(tmp_path / "federation" / "initial").state_dict()
    after = MultiMedModel.from_pretrained(tmp_path / "fedavg" / "model").state_dict()
    moved = np.sqrt(sum(float(((after[k].double() - before[k].double()) ** 2).sum()) for k in before))
    assert 0 < moved <= norm * 1.001, moved
    sent = [json.loads(line) for line in (tmp_path / "fedavg" / "messages.jsonl").read_text().splitlines()]
    configs = [m["records"]["config"]["config"] for m in sent
               if m["phase"] == "train" and m["direction"] == "to_client"]
    assert configs and all(c["clipping_norm"] == norm for c in configs)


DEPLOYMENT = """
import sys
from pathlib import Path
from flwr.serverapp import ServerApp
from flwr.simulation import run_simulation
from multimed_hf.federated.client_app import make_client_app
from multimed_hf.federated.clients_file import clients_from_file
from multimed_hf.federated.server_app import _deployment_main
from multimed_hf.training.assembly import assemble

root, out = Path(sys.argv[1]), Path(sys.argv[2])
plan = clients_from_file(root / "clients.yaml", out / "federation")
assembly = assemble(plan.data, plan.tasks, hidden_size=16, processor_overrides=%r)
for part in (assembly.model, assembly.processor):
    part.save_pretrained(out / "federation" / "initial")
server = ServerApp()

@server.main()
def main(grid, context):  # what `flwr run --run-config` would hand the deployment ServerApp
    context.run_config.update({"model-path": str(out / "federation" / "initial"), "output-dir": str(out / "run"),
                               "num-clients": 2, "num-rounds": 1, "local-steps": 2, "vertical-steps": 1,
                               "timeout": 300.0})
    _deployment_main(grid, context)

run_simulation(server_app=server, client_app=make_client_app(out / "federation", salt="s"), num_supernodes=2,
               backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                               "init_args": {"num_cpus": 1, "include_dashboard": False}})
""" % (TINY["processor_overrides"],)


def test_the_deployment_server_app_reads_its_run_config(root, tmp_path):
    """The module-level ServerApp that ``flwr run`` starts on a SuperLink, run here on the simulation engine."""
    pytest.importorskip("ray", reason="Flower's simulation engine needs flwr[simulation] (ray)")
    run_guarded([sys.executable, "-c", DEPLOYMENT, str(root), str(tmp_path)], GUARD_SECONDS, "the deployment app")
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["strategy"] == "blendavg"
    assert {(r["phase"], r["client"]) for r in report["records"]} >= {("train", "clinic"), ("train", "genome-centre"),
                                                                      ("vertical-train", "clinic")}
    assert (tmp_path / "run" / "model" / "config.json").is_file()
    # how it ran (sweep J3 F3): the run config, the clients as they reported, versions; a card saying so
    info = json.loads((tmp_path / "run" / "run_info.json").read_text())
    assert info["settings"]["runtime"] == "Flower deployment" and info["settings"]["vertical"]["steps"] == 1
    assert info["run_config"]["num-rounds"] == 1 and info["settings"]["local"]["local-steps"] == 2
    assert [(c["name"], c["kind"]) for c in info["clients"]] == [("clinic", "partial"), ("genome-centre", "partial")]
    assert info["multimed_hf_version"] and "git_commit" in info
    card = (tmp_path / "run" / "model" / "README.md").read_text()
    assert "## Federated training" in card and "Flower deployment" in card and "| `clinic` | partial |" in card
    assert "the clients' own validation rows" in card
