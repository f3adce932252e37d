"""BlendAvg's aggregate_train on hand-built Flower replies: module-wise holders, score weights, FedAvg on ties."""

import math

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, Metadata, MetricRecord, RecordDict

from multimed_hf.federated.modules import group_keys, module_of
from multimed_hf.federated.strategy import UNIFORM_KEY, BlendAvg, StrategyError, blend_weights, make_strategy


def reply(node, arrays, examples, score=None, name=None):
    """A train reply from node ``node`` as the server receives it (metadata set by hand: no Flower run here)."""
    metrics = {"num-examples": examples, "train-loss": 1.0 / node, UNIFORM_KEY: 1}
    if score is not None:
        metrics["val-score"] = score
    content = RecordDict({"arrays": ArrayRecord({k: Array(np.asarray(v, dtype=np.float32)) for k, v in arrays.items()}),
                          "metrics": MetricRecord(metrics),
                          "report": ConfigRecord({"client": name or f"c{node}"})})
    metadata = Metadata(run_id=1, message_id=f"m{node}", src_node_id=node, dst_node_id=0, reply_to_message_id="i",
                        group_id="1", created_at=0.0, ttl=60.0, message_type="train")
    return Message(content=content, metadata=metadata)


def test_module_names_follow_the_model_children():
    assert module_of("encoders.dna.embeddings.word_embeddings.weight") == "encoders.dna"
    assert module_of("projections.scrna.weight") == "projections.scrna"
    assert module_of("fusion.linear.weight") == module_of("fusion.bias") == "fusion"
    assert module_of("heads.med_vqa.outputs.answer.weight") == "heads.med_vqa"
    assert list(group_keys(["heads.a.w", "fusion.b", "heads.a.b"])) == ["heads.a", "fusion"]


def test_equal_scores_give_fedavg_weights():
    replies = [reply(1, {"fusion.w": [1.0, 2.0]}, 10, 0.7), reply(2, {"fusion.w": [4.0, 8.0]}, 30, 0.7)]
    arrays, metrics = BlendAvg().aggregate_train(1, replies)
    expected = (10 * np.array([1.0, 2.0]) + 30 * np.array([4.0, 8.0])) / 40
    np.testing.assert_allclose(arrays["fusion.w"].numpy(), expected, rtol=1e-6)
    assert metrics["train-loss"] == pytest.approx((10 * 1.0 + 30 * 0.5) / 40)
    # and Flower's own FedAvg agrees on the same replies
    fedavg_arrays, _ = make_strategy("fedavg", num_clients=2).aggregate_train(1, replies)
    np.testing.assert_allclose(fedavg_arrays["fusion.w"].numpy(), expected, rtol=1e-6)


def test_unequal_scores_weight_by_score_and_zero_score_gets_nothing():
    replies = [reply(1, {"heads.t.w": [1.0]}, 10, 0.75), reply(2, {"heads.t.w": [5.0]}, 90, 0.25)]
    arrays, _ = BlendAvg().aggregate_train(1, replies)
    assert arrays["heads.t.w"].numpy()[0] == pytest.approx(0.75 * 1.0 + 0.25 * 5.0)
    replies = [reply(1, {"heads.t.w": [1.0]}, 10, 0.0), reply(2, {"heads.t.w": [5.0]}, 10, 0.4),
               reply(3, {"heads.t.w": [9.0]}, 10, 0.2)]
    strategy = BlendAvg()
    arrays, _ = strategy.aggregate_train(1, replies)
    assert strategy.last_weights["heads.t"]["c1"] == 0.0
    assert arrays["heads.t.w"].numpy()[0] == pytest.approx((0.4 * 5.0 + 0.2 * 9.0) / 0.6)
    # a negative score is clipped to 0 by the default "linear" weighting
    assert blend_weights({"a": -0.3, "b": 0.6}, {"a": 5, "b": 5}) == {"a": 0.0, "b": 1.0}


def test_a_module_is_averaged_only_over_its_holders():
    replies = [
        reply(1, {"encoders.dna.w": [2.0, 2.0], "fusion.w": [1.0]}, 10, 0.5),
        reply(2, {"encoders.scrna.w": [7.0], "fusion.w": [3.0]}, 10, 0.5),
        reply(3, {"encoders.dna.w": [4.0, 6.0], "encoders.scrna.w": [1.0], "fusion.w": [5.0]}, 30, 0.5),
    ]
    strategy = BlendAvg()
    strategy.global_arrays = ArrayRecord({"encoders.dna.w": Array(np.zeros(2, np.float32)),
                                          "encoders.scrna.w": Array(np.zeros(1, np.float32)),
                                          "fusion.w": Array(np.zeros(1, np.float32)),
                                          "heads.t.w": Array(np.full(1, 9.0, np.float32))})
    arrays, _ = strategy.aggregate_train(1, replies)
    np.testing.assert_allclose(arrays["encoders.dna.w"].numpy(), (10 * np.array([2.0, 2.0]) + 30 * np.array([4.0, 6.0])) / 40)
    assert arrays["encoders.scrna.w"].numpy()[0] == pytest.approx((10 * 7.0 + 30 * 1.0) / 40)
    assert arrays["fusion.w"].numpy()[0] == pytest.approx((10 * 1 + 10 * 3 + 30 * 5) / 50)
    assert arrays["heads.t.w"].numpy()[0] == 9.0  # nobody trained it: the global value stays
    assert set(strategy.last_weights["encoders.dna"]) == {"c1", "c3"}
    assert set(strategy.last_weights["encoders.scrna"]) == {"c2", "c3"}


def test_missing_scores_and_bad_weightings():
    # a holder without a score takes the mean weight of the scored ones
    w = blend_weights({"a": 0.2, "b": 0.6, "c": float("nan")}, {"a": 1, "b": 1, "c": 1})
    assert w["c"] == pytest.approx(0.4 / 1.2) and w["b"] == pytest.approx(0.6 / 1.2)
    # no score at all: FedAvg
    assert blend_weights({}, {"a": 1, "b": 3}) == {"a": 0.25, "b": 0.75}
    # the pluggable function, and examples folded in
    w = blend_weights({"a": 1.0, "b": 2.0}, {"a": 3, "b": 1}, lambda s: s ** 2, by_examples=True)
    assert w["a"] == pytest.approx(3 / 7)
    with pytest.raises(StrategyError, match="weights must be finite and >= 0"):
        blend_weights({"a": 1.0, "b": 2.0}, {"a": 1, "b": 1}, lambda s: -s)
    with pytest.raises(StrategyError, match="expected a callable or one of"):
        BlendAvg(score_weight="cubic")
    bad = reply(1, {"fusion.w": [1.0]}, 10, 0.5)
    del bad.content["metrics"]["num-examples"]
    with pytest.raises(StrategyError, match="lacks 'num-examples'"):
        BlendAvg().aggregate_train(1, [bad, reply(2, {"fusion.w": [1.0]}, 10, 0.5)])
    assert math.isclose(sum(blend_weights({"a": 0.9, "b": 0.1}, {"a": 1, "b": 1}).values()), 1.0)


def test_dp_wraps_the_baselines_and_clips_each_update_but_refuses_blendavg():
    from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping

    with pytest.raises(StrategyError, match="BlendAvg replies carry only the units"):
        make_strategy("blendavg", num_clients=2, dp_noise_multiplier=1.0)
    with pytest.raises(StrategyError, match="expected one of"):
        make_strategy("fedavg", num_clients=2, dp_noise_multiplier=1.0, dp_clipping="both")
    dp = make_strategy("fedavg", num_clients=2, dp_noise_multiplier=0.0, dp_clipping_norm=1.0)
    assert isinstance(dp, DifferentialPrivacyServerSideFixedClipping)
    dp.current_arrays = ArrayRecord({"fusion.w": Array(np.zeros(2, np.float32))})
    # updates of norm 5 and 0.5: the first is scaled to norm 1, the second kept; then FedAvg (equal examples)
    arrays, _ = dp.aggregate_train(1, [reply(1, {"fusion.w": [3.0, 4.0]}, 10), reply(2, {"fusion.w": [0.3, 0.4]}, 10)])
    np.testing.assert_allclose(arrays["fusion.w"].numpy(), ([0.6, 0.8] + np.array([0.3, 0.4])) / 2, rtol=1e-5)
    # before: the clipped updates were averaged by rows (10 and 30 here, 1/4 and 3/4), so one client's share of the
    # aggregate (3/4 C) outgrew what the noise Z C / K is calibrated to (C / 2): uniform under DP, rows without it
    for clipping in ("server", "client"):
        dp = make_strategy("fedavg", num_clients=2, dp_noise_multiplier=0.0, dp_clipping=clipping)
        dp.current_arrays = ArrayRecord({"fusion.w": Array(np.zeros(2, np.float32))})
        replies = [reply(1, {"fusion.w": [0.6, 0.8]}, 10), reply(2, {"fusion.w": [0.0, 0.2]}, 30)]
        arrays, _ = dp.aggregate_train(1, replies)
        np.testing.assert_allclose(arrays["fusion.w"].numpy(), [0.3, 0.5], rtol=1e-5)
    plain = make_strategy("fedavg", num_clients=2)
    plain.current_arrays = ArrayRecord({"fusion.w": Array(np.zeros(2, np.float32))})
    arrays, _ = plain.aggregate_train(1, [reply(1, {"fusion.w": [0.6, 0.8]}, 10),
                                          reply(2, {"fusion.w": [0.0, 0.2]}, 30)])
    np.testing.assert_allclose(arrays["fusion.w"].numpy(), [0.15, 0.35], rtol=1e-5)
