"""The small expression preset and its training defaults: input dropout / noise in training only, weight decay 1."""

import pytest
import torch

from benchmarks.pbmc68k_vs_logistic import parse_settings, seed_interval
from multimed_hf.encoders_expression import ExpressionEncoder
from multimed_hf.training.arguments import (
    TRAINING_DEFAULTS,
    make_training_arguments,
    parse_train_args,
    training_defaults,
)
from multimed_hf.training.encoder_presets import DataFacts, choose_encoders

GENES = 40


def _encoder(**kwargs) -> ExpressionEncoder:
    torch.manual_seed(0)
    return ExpressionEncoder(num_genes=GENES, patch_size=GENES, hidden_size=16, num_layers=1, num_heads=2,
                             intermediate_size=32, dropout=0.0, **kwargs)


@pytest.mark.parametrize("option", [{"input_noise": 0.5}, {"input_dropout": 0.3}])
def test_value_augmentation_acts_in_training_only(option):
    plain, augmented = _encoder(), _encoder(**option)
    augmented.load_state_dict(plain.state_dict())
    values = torch.rand(8, GENES) * 3
    plain.eval(), augmented.eval()
    with torch.no_grad():  # evaluation: the same function as without the option
        torch.testing.assert_close(augmented(values)[0], plain(values)[0])
    plain.train(), augmented.train()
    with torch.no_grad():
        torch.manual_seed(1)
        first = augmented(values)[0]
        torch.manual_seed(2)
        second = augmented(values)[0]
        reference = plain(values)[0]
    assert not torch.allclose(first, reference)  # training: the values were perturbed
    assert not torch.allclose(first, second)  # afresh at each call


def test_input_noise_has_the_given_spread():
    encoder = _encoder(input_noise=0.5).train()
    seen = []
    encoder.value_embed.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    values = torch.zeros(64, GENES)
    encoder(values)
    noise = seen[0].reshape(-1)
    assert noise.std().item() == pytest.approx(0.5, rel=0.1)
    assert noise.mean().item() == pytest.approx(0.0, abs=0.05)
    with pytest.raises(ValueError, match="input_noise=-0.1"):
        ExpressionEncoder(num_genes=GENES, input_noise=-0.1)


def test_small_expression_preset_drops_gene_values_in_training():
    choice = choose_encoders("small", ["scrna"], DataFacts(num_genes=GENES))
    spec = choice.specs["scrna"]
    assert spec["kind"] == "expression"
    assert spec["config"]["input_dropout"] == 0.3
    encoder = ExpressionEncoder(**spec["config"])
    assert encoder.input_dropout.p == 0.3 and encoder.input_noise == 0.0
    domain = choose_encoders("domain_specific", ["scrna"], DataFacts(num_genes=GENES)).specs["scrna"]
    assert "input_dropout" not in domain["config"]  # the domain-specific MLP keeps its own settings


def test_small_encoders_train_with_weight_decay_one_and_a_flag_still_wins(tmp_path):
    assert training_defaults("unimodal", "small")["weight_decay"] == 1.0
    assert training_defaults("multimodal_multitask", "small")["weight_decay"] == 1.0
    assert training_defaults("unimodal", "hub")["weight_decay"] == TRAINING_DEFAULTS["weight_decay"] == 0.01
    assert training_defaults("domain_specific", "small")["weight_decay"] == 0.01
    assert make_training_arguments(tmp_path, encoders="small").weight_decay == 1.0
    common = ["--data", str(tmp_path), "--tasks", "cell_type", "--output_dir", str(tmp_path)]
    _, args = parse_train_args([*common, "--encoders", "small"])
    assert args.weight_decay == 1.0
    _, args = parse_train_args([*common, "--encoders", "small", "--weight_decay", "0.1"])
    assert args.weight_decay == 0.1
    _, args = parse_train_args([*common, "--encoders", "hub"])
    assert args.weight_decay == 0.01


def test_benchmark_settings_parse_as_json_values():
    assert parse_settings(["weight_decay=0.3", "per_device_train_batch_size=16", "lr_scheduler_type=linear",
                           "eval_splits=[\"validation\"]"]) == {
        "weight_decay": 0.3, "per_device_train_batch_size": 16, "lr_scheduler_type": "linear",
        "eval_splits": ["validation"]}
    assert parse_settings([]) == {}
    with pytest.raises(ValueError, match="expected KEY=VALUE"):
        parse_settings(["weight_decay"])


def test_seed_interval_is_the_student_t_interval_of_the_mean_difference():
    # three seeds' differences: mean 0.01, sd 0.02, t(0.975, 2 df) = 4.3027
    low, high = seed_interval([0.01, 0.03, -0.01])
    half = 4.302653 * 0.02 / 3 ** 0.5
    assert low == pytest.approx(0.01 - half, abs=1e-6) and high == pytest.approx(0.01 + half, abs=1e-6)
    narrow = seed_interval([0.01, 0.03, -0.01] * 4)  # more seeds of the same spread: a narrower interval
    assert narrow[1] - narrow[0] < high - low
