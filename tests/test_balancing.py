"""Modality balancing: auxiliary heads, utilisation rates, MILES, OGM-GE, G-Blend and the family variants, on a tiny
two-modality med_vqa task (X-ray + question) where the image alone says the answer."""

import math

import pytest
import torch
from transformers import TrainerCallback, TrainingArguments

from balancing_tiny import MODALITIES, TASK, vqa_config, vqa_model, vqa_processor, vqa_rows
from multimed_hf.configuration_multimed import MultiMedConfig
from multimed_hf.modeling_multimed import MultiMedModel
from multimed_hf.training.balancing import (
    BalancingError,
    GBlendWeighting,
    MILESCallback,
    OGMGECallback,
    OGMGEWeighting,
    Utilisation,
    balancing_from_variant,
    estimate_gblend_weights,
    gblend_weights,
    modality_utilisation,
    ogm_coefficients,
    register_balancing_variants,
    restrict_batch,
)
from multimed_hf.training.balancing.miles import MILES_FACTOR, MILES_THRESHOLD
from multimed_hf.training.balancing.ogm_ge import OGM_ALPHA
from multimed_hf.training.loss_weighting import get_loss_weighting
from multimed_hf.training.trainer import MultiMedTrainer

READ = {TASK: MODALITIES}


@pytest.fixture(scope="module")
def processor():
    return vqa_processor()


@pytest.fixture(scope="module")
def image_task():
    """The image alone is predictive; the question's words are random."""
    return {"train": {TASK: vqa_rows(48, seed=0)}, "validation": {TASK: vqa_rows(32, seed=1, prefix="v")}}


def _args(tmp_path, **kwargs):
    defaults = dict(output_dir=str(tmp_path), max_steps=6, per_device_train_batch_size=8, learning_rate=5e-3,
                    report_to=[], use_cpu=True, save_strategy="no", disable_tqdm=True, log_level="error",
                    logging_strategy="no")
    return TrainingArguments(**{**defaults, **kwargs})


def _batch(processor, rows):
    return processor([dict(r) for r in rows], TASK, modalities=MODALITIES)


# ---------------------------------------------------------------------- the model's auxiliary heads
def test_auxiliary_heads_predict_per_modality_save_load_and_take_modality_weights(tmp_path, processor):
    rows = vqa_rows(5, seed=3)
    batch = _batch(processor, rows)
    plain = vqa_model().eval()
    assert plain(**batch).modality_logits is None and set(plain(**batch).losses) == {"answer"}

    model = vqa_model(auxiliary_heads=True, loss_weights={TASK: {"fused": 1.0, "xray": 0.5, "text": 2.0}}).eval()
    out = model(**batch)
    assert set(out.modality_logits) == {"xray", "text"} and out.modality_logits["xray"]["answer"].shape == (5, 2)
    assert set(out.losses) == {"answer", "xray/answer", "text/answer"}
    expected = out.losses["answer"] + 0.5 * out.losses["xray/answer"] + 2.0 * out.losses["text/answer"]
    assert float(out.loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-6)
    # a modality's head reads only its modality: other questions leave the X-ray head's prediction as it was
    other = {**batch, "inputs": {**batch["inputs"], "text": _batch(processor, vqa_rows(5, seed=11))["inputs"]["text"]}}
    assert torch.allclose(model(**other).modality_logits["xray"]["answer"], out.modality_logits["xray"]["answer"])
    assert not torch.allclose(model(**other).modality_logits["text"]["answer"], out.modality_logits["text"]["answer"])

    model.save_pretrained(tmp_path)
    again = MultiMedModel.from_pretrained(tmp_path).eval()
    assert again.config.auxiliary_heads is True and again.config.modality_heads
    for m in MODALITIES:
        assert torch.allclose(again(**batch).modality_logits[m]["answer"], out.modality_logits[m]["answer"])
    assert MultiMedConfig.from_dict(model.config.to_dict()).auxiliary_heads is True

    with pytest.raises(ValueError, match="apply only to late fusion or auxiliary_heads=True"):
        vqa_config(loss_weights={TASK: {"xray": 0.5}})
    with pytest.raises(ValueError, match="auxiliary_heads=True needs per-modality features"):
        MultiMedConfig(encoders={"xray": {"kind": "patch_embed", "config": {"patch_size": 4}}},
                       heads=vqa_config(["xray"]).heads, fusion="early", auxiliary_heads=True, hidden_size=16,
                       fusion_num_heads=2)
    late = vqa_config(fusion="late", auxiliary_heads=True)
    assert late.modality_heads and "late_weights" in dict(MultiMedModel(late).heads[TASK].named_parameters())
    # the uncertainty weighting learns one variance per modality head too
    assert len(get_loss_weighting("uncertainty", model.config).keys) == 3


def test_restrict_batch_masks_modalities_through_the_presence_masks(processor):
    rows = vqa_rows(4, seed=2)
    rows = rows.map(lambda r, i: {"modality": "ct" if i == 1 else r["modality"]}, with_indices=True)  # no X-ray
    batch = _batch(processor, rows)
    assert batch["presence"]["xray"].tolist() == [True, False, True, True]
    only_xray, kept = restrict_batch(batch, ["xray"])
    assert kept.tolist() == [True, False, True, True]
    assert not only_xray["presence"]["text"].any() and "text" not in only_xray["inputs"]
    assert torch.equal(only_xray["inputs"]["xray"]["pixel_values"], batch["inputs"]["xray"]["pixel_values"])
    assert only_xray["labels"]["answer"].tolist() == batch["labels"]["answer"][kept].tolist()
    only_text, kept = restrict_batch(batch, ["text"])
    assert kept.all() and only_text["inputs"]["text"]["input_ids"].shape[0] == 4
    assert restrict_batch(batch, ["ct"])[0] is None


# ---------------------------------------------------------------------- utilisation and MILES
class LearningRates(TrainerCallback):
    """Each optimizer group's learning rate after every step (the rate the next step uses)."""

    def __init__(self):
        self.steps = []

    def on_step_end(self, args, state, control, optimizer=None, **kwargs):
        self.steps.append((state.global_step, {g["name"]: g["lr"] for g in optimizer.param_groups}))


def test_miles_slows_only_the_dominant_encoder_and_the_rate_survives_the_scheduler(tmp_path, processor, image_task):
    miles = MILESCallback(processor, image_task["validation"], modalities=READ, every_n_steps=10)
    rates = LearningRates()
    trainer = MultiMedTrainer(model=vqa_model(), args=_args(tmp_path, max_steps=20, lr_scheduler_type="linear"),
                              train_datasets=image_task["train"], processor=processor, modalities=READ,
                              callbacks=[miles, rates])
    trainer.train()
    first = miles.history[0]["utilisation"][TASK]
    assert miles.history[0]["step"] == 10
    assert first.rates["xray"] > first.rates["text"] and first.spread() > MILES_THRESHOLD  # the image dominates
    assert first.score_all["xray"] > first.score_without["xray"]  # masking the image costs accuracy
    logged = [h for h in trainer.state.log_history if f"utilisation_{TASK}_xray" in h]
    assert [h["step"] for h in logged] == [10, 20] and logged[0]["miles_scale_xray"] == MILES_FACTOR
    assert logged[0][f"utilisation_{TASK}_text"] == pytest.approx(first.rates["text"])

    names = [g["name"] for g in trainer.optimizer.param_groups]
    base = trainer.args.learning_rate
    assert trainer.lr_scheduler.base_lrs[names.index("encoder:xray")] == pytest.approx(MILES_FACTOR * base)
    assert trainer.lr_scheduler.base_lrs[names.index("encoder:text")] == pytest.approx(base)
    assert trainer.lr_scheduler.base_lrs[names.index("other")] == pytest.approx(base)
    for step, lr in rates.steps:
        if step < 10 or step == trainer.state.max_steps:
            continue
        ratio = MILES_FACTOR if step >= 10 else 1.0  # lowered at step 10, kept through every later scheduler step
        assert lr["encoder:xray"] == pytest.approx(ratio * lr["other"]), step
        assert lr["encoder:text"] == pytest.approx(lr["other"]), step
    before = [lr for step, lr in rates.steps if step < 10]
    assert all(lr["encoder:xray"] == pytest.approx(lr["other"]) for lr in before)


def test_balanced_utilisation_leaves_every_rate_and_balance_restores_the_slowed_one(tmp_path, processor, image_task):
    trainer = MultiMedTrainer(model=vqa_model(), args=_args(tmp_path, max_steps=10), processor=processor,
                              train_datasets=image_task["train"], modalities=READ)
    trainer.create_optimizer_and_scheduler(num_training_steps=10)
    optimizer, scheduler = trainer.optimizer, trainer.lr_scheduler
    miles = MILESCallback(processor, image_task["validation"], modalities=READ)
    original = list(scheduler.base_lrs)
    current = [g["lr"] for g in optimizer.param_groups]

    def result(xray, text):
        return {TASK: Utilisation(TASK, {"answer": "vqa_accuracy"}, rates={"xray": xray, "text": text})}

    for balanced in (result(0.30, 0.25), result(0.0, 0.0), result(0.6, 0.5 + MILES_THRESHOLD), result(0.4, math.nan)):
        miles.on_utilisation(balanced, model=trainer.model, optimizer=optimizer, lr_scheduler=scheduler)
        assert scheduler.base_lrs == original and [g["lr"] for g in optimizer.param_groups] == current
        assert set(miles.scales.values()) == {1.0}

    names = [g["name"] for g in optimizer.param_groups]
    miles.on_utilisation(result(0.1, 0.5), model=trainer.model, optimizer=optimizer, lr_scheduler=scheduler)
    assert miles.scales == {"xray": 1.0, "text": MILES_FACTOR}  # the dominant one is the question here
    assert scheduler.base_lrs[names.index("encoder:text")] == pytest.approx(MILES_FACTOR * original[0])
    assert optimizer.param_groups[names.index("encoder:text")]["lr"] == pytest.approx(MILES_FACTOR * current[0])
    miles.on_utilisation(result(0.1, 0.5), model=trainer.model, optimizer=optimizer, lr_scheduler=scheduler)
    # measured again: not compounded
    assert scheduler.base_lrs[names.index("encoder:text")] == pytest.approx(MILES_FACTOR * original[0])
    miles.on_utilisation(result(0.3, 0.3), model=trainer.model, optimizer=optimizer, lr_scheduler=scheduler)
    assert scheduler.base_lrs == pytest.approx(original) and [g["lr"] for g in optimizer.param_groups] == \
        pytest.approx(current)

    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer)
    with pytest.raises(BalancingError, match="has no base_lrs"):
        miles.apply({"xray": 0.5}, optimizer, plateau)
    with pytest.raises(BalancingError, match="0 < mu < 1"):
        MILESCallback(processor, image_task["validation"], factor=1.5)


def test_utilisation_is_the_share_of_the_score_lost_with_the_modality_masked(processor, image_task):
    model = vqa_model().eval()
    result = modality_utilisation(model, processor, TASK, image_task["validation"][TASK], modalities=MODALITIES,
                                  metric="exact_match")
    assert result.metric == {"answer": "exact_match"} and result.rows == {"xray": 32, "text": 32}
    for m in MODALITIES:
        if result.score_all[m] > 0:
            assert result.rates[m] == pytest.approx((result.score_all[m] - result.score_without[m])
                                                    / result.score_all[m])
    with pytest.raises(BalancingError, match="two or more modalities"):
        modality_utilisation(model, processor, TASK, image_task["validation"][TASK], modalities=["xray"])


# ---------------------------------------------------------------------- OGM-GE
def test_ogm_coefficient_is_not_one_when_the_scores_differ():
    k = ogm_coefficients({"xray": 0.9, "text": 0.45}, alpha=OGM_ALPHA)
    assert k["xray"] == pytest.approx(1 - math.tanh(OGM_ALPHA * 2.0)) and k["xray"] < 1  # rho = 0.9 / 0.45
    assert k["text"] == 1.0
    swapped = ogm_coefficients({"xray": 0.45, "text": 0.9}, alpha=0.8)
    assert swapped["text"] == pytest.approx(1 - math.tanh(0.8 * 2.0)) and swapped["xray"] == 1.0
    assert ogm_coefficients({"xray": 0.7, "text": 0.7}) == {"xray": 1.0, "text": 1.0}
    three = ogm_coefficients({"a": 0.9, "b": 0.2, "c": 0.5})  # rho_m = s_m / mean of the others' scores
    assert three["a"] == pytest.approx(1 - math.tanh(OGM_ALPHA * 0.9 / 0.35)) and three["b"] == 1.0
    assert three["c"] == 1.0  # rho_c = 0.5 / 0.55 < 1
    assert ogm_coefficients({"xray": 0.9, "text": math.nan}) == {"xray": 1.0, "text": 1.0}
    with pytest.raises(BalancingError, match="alpha"):
        ogm_coefficients({"xray": 0.9}, alpha=0)


def test_ogm_ge_modulates_the_dominant_encoders_gradient_on_a_real_step(tmp_path, processor, image_task):
    model = vqa_model(auxiliary_heads=True, seed=4)
    weighting = OGMGEWeighting(model.config)
    callback = OGMGECallback(weighting, noise=False, window=(0.0, 1.0))
    trainer = MultiMedTrainer(model=model, args=_args(tmp_path, max_steps=4), train_datasets=image_task["train"],
                              processor=processor, modalities=READ, loss_weighting=weighting, callbacks=[callback])
    trainer.create_optimizer_and_scheduler(num_training_steps=4)
    inputs = next(iter(trainer.get_train_dataloader()))
    with torch.no_grad():  # the batch's scores, by hand: mean softmax probability of the true answer per modality
        out = model.eval()(**{k: v for k, v in inputs.items() if k != "row_index"})
    expected = {m: float(torch.softmax(out.modality_logits[m]["answer"], -1)
                         .gather(1, inputs["labels"]["answer"][:, None]).mean()) for m in MODALITIES}
    assert expected["xray"] != expected["text"]
    model.eval()  # no dropout: the step's scores are the ones computed above
    trainer.compute_loss(model, inputs).backward()
    assert {m: s / n for m, (s, n) in weighting.pending.items()} == pytest.approx(expected, rel=1e-5)
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    callback.on_pre_optimizer_step(trainer.args, trainer.state, trainer.control, model=model,
                                   optimizer=trainer.optimizer)
    k = ogm_coefficients(expected)
    assert min(k.values()) < 1  # the scores differ: one encoder is slowed
    for name, p in model.named_parameters():
        if name not in grads:
            continue
        factor = k["xray"] if name.startswith("encoders.xray.") else k["text"] if name.startswith("encoders.text.") \
            else 1.0
        assert torch.allclose(p.grad, factor * grads[name], rtol=1e-5, atol=1e-8), name
    assert callback.history[-1]["coefficients"] == pytest.approx(k)

    # GE: the same seed and step add the same noise (every process agrees), of the gradient's own scale
    noisy = [OGMGECallback(weighting, seed=7, window=(0.0, 1.0)) for _ in range(2)]
    results = []
    for cb in noisy:
        for n, p in model.named_parameters():
            if n in grads:
                p.grad = grads[n].clone()
        weighting.pending = {m: [expected[m], 1] for m in MODALITIES}
        cb.on_pre_optimizer_step(trainer.args, trainer.state, trainer.control, model=model,
                                 optimizer=trainer.optimizer)
        results.append({n: p.grad.clone() for n, p in model.named_parameters() if n in grads})
    weight = "encoders.text.model.embeddings.word_embeddings.weight"
    assert torch.equal(results[0][weight], results[1][weight])
    standardised = []  # each encoder parameter's noise over its gradient's std: N(0, 1) when pooled
    for name in grads:
        if name.startswith("encoders.") and grads[name].numel() > 1 and float(grads[name].std()) > 1e-5:
            factor = k["xray"] if name.startswith("encoders.xray.") else k["text"]
            standardised.append(((results[0][name] - factor * grads[name]) / grads[name].std()).flatten())
    pooled = torch.cat(standardised)
    assert len(pooled) > 1000 and float(pooled.std()) == pytest.approx(1.0, abs=0.05)
    assert abs(float(pooled.mean())) < 0.05
    assert torch.equal(results[0]["heads.med_vqa.outputs.answer.weight"], grads["heads.med_vqa.outputs.answer.weight"])


def _train_ogm_ge(tmp_path, processor, image_task, window):
    """8 steps of the multimodal+ogm_ge variant, logging every 4: ``(trainer, its OGM-GE callback)``."""
    variant = balancing_from_variant("multimodal+ogm_ge", window=window)
    model = vqa_model(**variant.config_kwargs("intermediate"))
    kwargs = variant.trainer_kwargs(model=model, processor=processor, train_datasets=image_task["train"],
                                    training_args=_args(tmp_path), modalities=READ)
    trainer = MultiMedTrainer(model=model, args=_args(tmp_path, max_steps=8, logging_strategy="steps",
                                                      logging_steps=4), processor=processor, modalities=READ,
                              train_datasets=kwargs["train_datasets"], loss_weighting=kwargs["loss_weighting"],
                              callbacks=kwargs["callbacks"])
    trainer.train()
    return trainer, kwargs["callbacks"][0]


def test_ogm_ge_variant_trains_and_logs_its_coefficients(tmp_path, processor, image_task):
    trainer, callback = _train_ogm_ge(tmp_path, processor, image_task, (0.0, 1.0))
    history = callback.history
    assert len(history) == 8 and any(h["coefficients"]["xray"] < 1 for h in history)
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert all(f"ogm_coefficient_{m}" in h for h in logs for m in MODALITIES)
    with pytest.raises(BalancingError, match="auxiliary_heads=True"):
        OGMGEWeighting(vqa_config())


def test_ogm_ge_logs_no_coefficient_outside_its_window(tmp_path, processor, image_task):
    """After the window closes nothing modulates: a later log carries no coefficient (it repeated the last one)."""
    trainer, callback = _train_ogm_ge(tmp_path, processor, image_task, (0.0, 0.3))
    assert [h["step"] for h in callback.history] == [0, 1, 2]  # progress 0, 1/8, 2/8
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert [any(k.startswith("ogm_coefficient_") for k in h) for h in logs] == [True, False]


# ---------------------------------------------------------------------- G-Blend
def test_gblend_weights_by_hand_sum_to_one():
    before = {"fused": (1.0, 1.2), "xray": (1.0, 1.1), "text": (1.0, 1.0)}
    after = {"fused": (0.2, 1.0), "xray": (0.6, 0.8), "text": (0.9, 1.05)}
    # fused: G = 0.2, dO = 0.8 - 0.2 = 0.6; xray: G = 0.3, dO = 0.2 - 0.1 = 0.1; text: got worse, G = 0
    raw = {"fused": 0.2 / 0.36, "xray": 0.3 / 0.01, "text": 0.0}
    weights = gblend_weights(before, after)
    assert sum(weights.values()) == pytest.approx(1.0)
    assert weights == pytest.approx({k: v / sum(raw.values()) for k, v in raw.items()})
    assert gblend_weights({"a": (1, 1), "b": (1, 1)}, {"a": (1, 2), "b": (0.5, 1.5)}) == {"a": 0.5, "b": 0.5}
    with pytest.raises(BalancingError, match="same heads"):
        gblend_weights(before, {"fused": (1, 1)})


def test_gblend_keeps_training_the_fused_head_where_its_probe_got_worse(caplog):
    # before: the fused head's validation loss rose during its probe, so its gain and weight were 0: the fusion and
    # the head the run is scored on got no gradient in the whole run, silently
    import logging

    from multimed_hf.training.balancing.gblend import _fused_head_trained

    raw = gblend_weights({"fused": (1.13, 1.89), "dna": (1.0, 1.2), "scrna": (1.0, 1.5)},
                         {"fused": (2.32, 2.16), "dna": (1.1, 1.3), "scrna": (0.8, 1.1)})
    assert raw["fused"] == 0 and raw["dna"] == 0 and raw["scrna"] == pytest.approx(1)
    with caplog.at_level(logging.WARNING):
        kept = _fused_head_trained("expression_prediction", raw)
    assert kept == {"fused": pytest.approx(1 / 3), "dna": 0.0, "scrna": pytest.approx(2 / 3)}
    assert "it is the output the run is scored on" in caplog.text
    trained = {"fused": 0.2, "dna": 0.3, "scrna": 0.5}
    assert _fused_head_trained("expression_prediction", trained) == trained  # a positive weight is the paper's


def test_gblend_probe_runs_give_weights_that_sum_to_one_and_favour_the_predictive_head(tmp_path, processor,
                                                                                      image_task):
    model = vqa_model(auxiliary_heads=True, seed=2)
    weights = estimate_gblend_weights(model, processor, image_task["train"], image_task["validation"],
                                      _args(tmp_path), modalities=READ, probe_steps=6, max_rows=32)
    assert set(weights) == {TASK} and set(weights[TASK]) == {"fused", "xray", "text"}
    assert sum(weights[TASK].values()) == pytest.approx(1.0) and min(weights[TASK].values()) >= 0
    assert weights[TASK]["xray"] > weights[TASK]["text"]  # the image generalises, the random question cannot

    blend = GBlendWeighting(model.config, weights)
    out = model.eval()(**_batch(processor, vqa_rows(6, seed=8)))
    loss, logs = blend.combine(TASK, out)
    w = weights[TASK]
    expected = w["fused"] * out.losses["answer"] + w["xray"] * out.losses["xray/answer"] + \
        w["text"] * out.losses["text/answer"]
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-6)
    assert float(logs[f"gblend_weight_{TASK}_xray"]) == pytest.approx(w["xray"])
    with pytest.raises(BalancingError, match="heads \\['audio'\\]"):
        GBlendWeighting(model.config, {TASK: {"audio": 1.0}})


def test_gblend_leaves_out_a_head_whose_modality_no_validation_row_holds(tmp_path, processor, image_task, caplog):
    # before: KeyError 'xray' (med_vqa's validation split held no X-ray question while its training split did)
    import logging

    model = vqa_model(auxiliary_heads=True, seed=2)
    questions_only = image_task["validation"][TASK].map(lambda r: {"image": None})
    with caplog.at_level(logging.WARNING):
        weights = estimate_gblend_weights(model, processor, image_task["train"], {TASK: questions_only},
                                          _args(tmp_path), modalities=READ, probe_steps=2, max_rows=16)
    assert set(weights[TASK]) == {"fused", "text"} and sum(weights[TASK].values()) == pytest.approx(1.0)
    assert "head(s) ['xray'] have no loss on its labelled training or validation rows" in caplog.text


# ---------------------------------------------------------------------- variants
def test_variants_name_their_needs_and_refuse_runs_without_two_modalities(tmp_path, processor, image_task,
                                                                         monkeypatch):
    import multimed_hf.training.families as families

    assert balancing_from_variant("multimodal_multitask+miles").name == "miles"
    with pytest.raises(BalancingError, match="did you mean 'miles'"):
        balancing_from_variant("multimodal+mile")
    assert balancing_from_variant("miles").config_kwargs("intermediate") == {}
    assert balancing_from_variant("mind").config_kwargs("intermediate") == {"auxiliary_heads": True}
    assert balancing_from_variant("gblend").config_kwargs("late") == {}
    with pytest.raises(BalancingError, match="early fusion"):
        balancing_from_variant("ogm_ge").config_kwargs("early")

    unimodal = vqa_model(["xray"])
    for name in ("miles", "ogm_ge", "gblend", "mind"):
        with pytest.raises(BalancingError, match="no task of this run reads two or more"):
            balancing_from_variant(name).check(unimodal.config)
    with pytest.raises(BalancingError, match="auxiliary_heads"):
        balancing_from_variant("gblend").check(vqa_config())
    with pytest.raises(BalancingError, match="validation rows"):
        balancing_from_variant("miles").trainer_kwargs(model=vqa_model(), processor=processor,
                                                       train_datasets=image_task["train"])
    miles = balancing_from_variant("miles", every_n_steps=5).trainer_kwargs(
        model=vqa_model(), processor=processor, train_datasets=image_task["train"],
        eval_datasets=image_task["validation"], modalities=READ)
    assert miles["loss_weighting"] is None and isinstance(miles["callbacks"][0], MILESCallback)
    assert miles["callbacks"][0].every_n_steps == 5

    monkeypatch.setattr(families, "FAMILY_VARIANTS", {})
    register_balancing_variants()
    register_balancing_variants()  # a second call changes nothing
    assert families.parse_family("multimodal_multitask+miles") == ("multimodal_multitask", ("miles",))
    assert set(families.FAMILY_VARIANTS) == {"miles", "ogm_ge", "gblend", "mind"}
