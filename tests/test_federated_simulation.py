"""A two-round BlendFL simulation on Flower's engine (Ray): paired + fragmented + partial clients on tiny models.

Run in a subprocess under a timeout that guards against the known simulation hang (a raising client can stall
Flower's simulation); the timeout is a guard, not a speed assertion.

The data: the expression sample with 120 genes (the default 40 give a 6-gene validation split whose mean sits 0.8
target sd below the training mean; there, whether the global loss beats the random initial model's depends on the
seed). The run uses the federation's own defaults (``LocalConfig``, ``VerticalSettings``, hidden size 64). By hand,
3 rounds, central validation loss by round (0 = initial model), seeds 0 / 1 / 2:
    blendavg  10.04 1.35 1.23 1.28 | 1.70 1.34 1.23 1.43 | 3.56 1.21 1.18 1.16
    fedavg    10.04 1.21 1.16 1.38 | 1.70 1.60 1.25 1.59 | 3.56 1.50 1.29 1.27
    fedprox   the same as fedavg to 2 decimals (mu 0.01)
(BlendAvg's vertical phase makes its curve vary by a few hundredths from run to run.)
"""

import json
import sys

import pytest

pytest.importorskip("ray", reason="Flower's simulation engine needs flwr[simulation] (ray)")

from datasets import load_dataset  # noqa: E402

from dataset_scripts.sample_sources.tcga_promoters import FOLDER, make_tcga_promoters  # noqa: E402
from multimed_hf.api import build_dataset  # noqa: E402
from multimed_hf.modeling_multimed import MultiMedModel  # noqa: E402

from _federated_helpers import run_guarded  # noqa: E402

TASK = "expression_prediction"
GUARD_SECONDS = 900
GENES = 120
TINY = {"processor_overrides": {"dna": {"max_length": 48, "truncation_side": "center", "crop_center": 7000}}}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fl_sim")
    source = make_tcga_promoters(tmp / "src" / FOLDER, genes=GENES, bad_files=False)
    build_dataset(TASK, [source], tmp / "multimed", progress=False)
    out = tmp / "out"
    cmd = [sys.executable, "-m", "multimed_hf.federated.simulation", "--data", str(tmp / "multimed"), "--tasks", TASK,
           "--partition", "paired=1,fragmented=1,partial=1", "--rounds", "2",
           "--vertical-steps", "1", "--score-key", "val-inv-loss", "--compare", "fedavg", "--output-dir", str(out),
           "--assemble", json.dumps(TINY), "--timeout", "300"]
    run_guarded(cmd, GUARD_SECONDS)
    return tmp / "multimed", out


def _report(out, name):
    return json.loads((out / name / "report.json").read_text())


def test_two_rounds_improve_the_global_validation_loss(run):
    _, out = run
    for name in ("blendavg", "fedavg"):
        curve = {g["round"]: g["metrics"]["val-loss"] for g in _report(out, name)["global"] if g["source"] == "central"}
        assert sorted(curve) == [0, 1, 2]
        assert curve[2] < curve[0], (name, curve)
    assert (out / "convergence.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    final = MultiMedModel.from_pretrained(out / "blendavg" / "model")
    assert TASK in final.config.heads


def test_each_client_sends_only_the_units_it_trained(run):
    _, out = run
    records = _report(out, "blendavg")["records"]
    train = {(r["round"], r["client"]): r for r in records if r["phase"] == "train"}
    assert {c for _, c in train} == {"paired-0", "fragmented-0", "partial-0"}
    for (round_, client), r in train.items():
        assert r["metrics"]["num-examples"] > 0 and r["bytes_from_client"] > 0
        if client == "partial-0":  # never collected scRNA-seq: never trains or sends its encoder
            assert not any(m.endswith(".scrna") for m in r["modules"])
            assert "encoders.dna" in r["modules"]
    weights = _report(out, "blendavg")["weights"]
    assert all("partial-0" not in w["weights"] for w in weights if w["unit"] == "encoders.scrna")
    # vertical steps ran between the fragmented client and the holder of its patients' DNA
    phases = {(r["phase"], r["client"]) for r in records}
    assert {("vertical-embed", "partial-0"), ("vertical-train", "fragmented-0"),
            ("vertical-backward", "partial-0")} <= phases
    # the FedAvg baseline sends every parameter, BlendAvg's partial client fewer
    keys = set(MultiMedModel.from_pretrained(out / "fedavg" / "model").state_dict())
    for name, partial_sends_all in (("fedavg", True), ("blendavg", False)):
        for line in (out / name / "messages.jsonl").read_text().splitlines():
            m = json.loads(line)
            if m["phase"] == "train" and m["direction"] == "from_client" and (name == "fedavg" or m["client"] == "partial-0"):
                assert (set(m["records"]["arrays"]["arrays"]) == keys) == partial_sends_all


def test_messages_carry_only_weights_embeddings_gradients_metrics_and_digests(run):
    data, out = run
    model = MultiMedModel.from_pretrained(out / "blendavg" / "model")
    keys = set(model.state_dict())
    sample_ids = {r["sample_id"] for split in ("train", "validation") for r in load_dataset(str(data), TASK, split=split)}
    messages = [json.loads(line) for line in (out / "blendavg" / "messages.jsonl").read_text().splitlines()]
    assert {m["phase"] for m in messages} >= {"link", "train", "vertical-embed", "vertical-train", "evaluate"}
    # every message names its client as the reports do, the first round's requests too (not by node id)
    assert {m["client"] for m in messages} == {"paired-0", "fragmented-0", "partial-0"}
    for message in messages:
        for name, record in message["records"].items():
            if record["kind"] == "ArrayRecord":
                for key, (shape, dtype) in record["arrays"].items():
                    if key.startswith(("embedding.", "gradient.")):
                        assert len(shape) == 2 and shape[1] == model.config.hidden_size, (key, shape)
                    else:
                        assert key in keys, key
                    assert dtype.startswith(("float", "int")), (key, dtype)
            elif record["kind"] == "MetricRecord":
                assert all(isinstance(v, (int, float)) or v is None for v in record["metrics"].values())
            else:
                assert record["kind"] == "ConfigRecord"
                for value in record["config"].values():
                    for item in value if isinstance(value, list) else [value]:
                        assert not (isinstance(item, str) and any(s in item for s in sample_ids)), (name, item)
    digests = [v for m in messages for r in m["records"].values() if r["kind"] == "ConfigRecord"
               for k, v in r["config"].items() if k == "ids"]
    assert digests and all(len(d) == 32 for ids in digests for d in ids)
