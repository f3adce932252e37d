"""Few-shot PEFT adapters on tiny models: only adapter and head weights train, adapters reload bit-identically (also
over the remote-code base without the package), switch, disable to the base, and push with their card."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from transformers import TrainingArguments

from multimed_hf.fewshot.adapters import (
    ADAPTER_INFO,
    AdapterError,
    AdapterSettings,
    attach_adapter,
    default_targets,
    head_spec_for,
    load_adapter,
    peft_config,
    prepare_head,
    push_adapter,
    save_adapter,
)
from multimed_hf.modeling_multimed import MultiMedModel
from multimed_hf.training.trainer import MultiMedTrainer
from training_tiny import brain_tumor, diabetic_retinopathy, tiny_model, tiny_processor, weights_digest


def _args(tmp_path, steps=6, seed=0):
    return TrainingArguments(output_dir=str(tmp_path / "run"), max_steps=steps, per_device_train_batch_size=4,
                             learning_rate=5e-2, report_to=[], save_strategy="no", use_cpu=True, seed=seed,
                             disable_tqdm=True, logging_steps=100)


def _logits(model, task, rows):
    batch = tiny_processor()(rows, task)
    model.eval()
    with torch.no_grad():
        out = model(task=task, inputs=batch["inputs"], presence=batch["presence"])
    return {k: v.clone() for k, v in out.logits.items()}


def _adapted(tmp_path, task, rows, *, seed=0, name="default", model=None, steps=6):
    """Train a LoRA adapter for ``task`` on ``rows`` over ``model`` (a brain_tumor base by default)."""
    base = model if model is not None else tiny_model(["brain_tumor"], seed=0)
    core = base.base_model.model if hasattr(base, "peft_config") else base
    carried = prepare_head(core, task, head_spec_for(core, task))
    torch.manual_seed(seed)
    peft_model = attach_adapter(base, task, AdapterSettings(rank=4), adapter_name=name)
    trainer = MultiMedTrainer(model=peft_model, args=_args(tmp_path / name, steps, seed), processor=tiny_processor(),
                              train_datasets={task: rows})
    trainer.train()
    return peft_model, carried


def test_targets_follow_each_encoder_family_and_skip_heads():
    model = tiny_model(["brain_tumor"])
    names = default_targets(model, task="brain_tumor")
    assert names and all(n.startswith("encoders.mri.") for n in names)
    assert {n.rsplit(".", 1)[-1] for n in names} == {"q_proj", "v_proj"}  # transformers 5 ViT
    assert default_targets(model, ["fc1"], task="brain_tumor")[0].endswith("fc1")
    with pytest.raises(AdapterError, match="no linear layer named"):
        default_targets(model, ["query"], task="brain_tumor")  # a BERT name in a ViT-only model
    config = peft_config(model, "brain_tumor")
    assert config.modules_to_save == ["heads.brain_tumor"] and config.task_type is None
    with pytest.raises(AdapterError, match="not one of"):
        AdapterSettings(method="prefix")


def test_only_adapter_and_head_weights_change_and_base_stays_bit_identical(tmp_path):
    base = tiny_model(["brain_tumor"], seed=0)
    before = weights_digest(base)
    peft_model, _ = _adapted(tmp_path, "brain_tumor", brain_tumor(16), model=base)
    after = {k.replace("base_model.model.", "", 1): v for k, v in weights_digest(peft_model).items()}
    changed = set()
    for key, value in after.items():
        if "lora_" in key or ".modules_to_save." in key:
            continue
        plain = key.replace(".original_module", "").replace(".base_layer", "")
        assert plain in before, key
        assert (value == before[plain]).all(), f"base tensor {plain} changed"
        changed.add(plain)
    assert changed == set(before)  # every base tensor was compared
    trained = {k for k, v in peft_model.named_parameters() if v.requires_grad}
    assert trained and all("lora_" in k or ".modules_to_save." in k for k in trained)
    head_before = before["heads.brain_tumor.outputs.tumor.weight"]
    head_after = after["heads.brain_tumor.modules_to_save.default.outputs.tumor.weight"]
    lora_b = [v for k, v in after.items() if "lora_B" in k]
    assert not (head_after == head_before).all() and any(v.any() for v in lora_b)  # both did train


_REMOTE = textwrap.dedent("""
    import importlib.abc, json, sys
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] == "multimed_hf":
                raise ImportError("multimed_hf is blocked in this test")
    sys.meta_path.insert(0, Block())
    import torch
    from transformers import AutoModel
    from peft import PeftModel
    base_dir, adapter = sys.argv[1], sys.argv[2]
    base = AutoModel.from_pretrained(base_dir, trust_remote_code=True)
    assert type(base).__module__.startswith("transformers_modules.")
    info = json.load(open(adapter + "/multimed_adapter.json"))
    assert info["head_spec"] is not None  # a task the base has no head for
    base.add_head(info["task"], info["head_spec"], replace=True)
    model = PeftModel.from_pretrained(base, adapter).eval()
    io = torch.load(adapter + "/io.pt")
    with torch.no_grad():
        out = model(task=info["task"], inputs=io["inputs"], presence=io["presence"])
    assert not [m for m in sys.modules if m.startswith("multimed_hf")]
    assert all(torch.equal(out.logits[k], v) for k, v in io["logits"].items())
    print("remote adapter ok")
""")


def test_saved_adapter_for_a_new_task_reloads_identically_also_over_the_remote_code_base(tmp_path):
    base = tiny_model(["brain_tumor"], seed=0)
    base.save_pretrained(tmp_path / "base")
    rows = diabetic_retinopathy(12)
    peft_model, carried = _adapted(tmp_path, "diabetic_retinopathy", rows, model=base)
    assert carried is not None and carried["modalities"] == ["oct", "fundus"]
    expected = _logits(peft_model, "diabetic_retinopathy", rows[:6])
    folder = save_adapter(peft_model, tmp_path / "adapter", task="diabetic_retinopathy", k=3, seed=0,
                          head_spec=carried, base_id="org/multimed-base", support={"counts": {"CNV": 3}})
    info = json.loads((folder / ADAPTER_INFO).read_text())
    assert info["head_spec"]["outputs"][0]["name"] == "oct_finding" and info["k"] == 3
    card = (folder / "README.md").read_text()
    assert "base_model: org/multimed-base" in card and "k = 3, seed 0" in card and "diabetic_retinopathy" in card
    assert json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"] == "org/multimed-base"

    fresh = MultiMedModel.from_pretrained(tmp_path / "base")
    assert "diabetic_retinopathy" not in fresh.config.heads
    reloaded = load_adapter(fresh, folder)
    got = _logits(reloaded, "diabetic_retinopathy", rows[:6])
    assert all(torch.equal(expected[k], got[k]) for k in expected)

    # the card's loading code, run as written (before: it opened multimed_adapter.json of a folder only)
    code = card.split("```python\n")[1].split("```")[0]
    code = code.replace('"org/multimed-base"', repr(str(tmp_path / "base"))).replace('"ADAPTER"', repr(str(folder)))
    scope: dict = {}
    exec(code, scope)
    got = _logits(scope["model"], "diabetic_retinopathy", rows[:6])
    assert all(torch.allclose(expected[k], got[k], atol=1e-6) for k in expected)

    batch = tiny_processor()(rows[:6], "diabetic_retinopathy")
    torch.save({"inputs": batch["inputs"], "presence": batch["presence"], "logits": expected}, folder / "io.pt")
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    result = subprocess.run([sys.executable, "-c", _REMOTE, str(tmp_path / "base"), str(folder)], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "remote adapter ok" in result.stdout, result.stderr[-3000:]


def test_adapters_switch_and_disable_adapter_gives_the_base(tmp_path):
    base = tiny_model(["brain_tumor"], seed=0)
    rows = brain_tumor(16)
    base_logits = _logits(base, "brain_tumor", rows[:8])
    first, _ = _adapted(tmp_path, "brain_tumor", rows, seed=0, name="first", model=base)
    save_adapter(first, tmp_path / "first", task="brain_tumor", k=4, seed=0, adapter_name="first")
    second, _ = _adapted(tmp_path, "brain_tumor", rows.shuffle(seed=3), seed=1, name="second", model=first)
    assert second is first and set(first.peft_config) == {"first", "second"}
    out_b = _logits(first, "brain_tumor", rows[:8])["tumor"]
    first.set_adapter("first")
    out_a = _logits(first, "brain_tumor", rows[:8])["tumor"]
    assert not torch.allclose(out_a, out_b)
    with first.disable_adapter():
        out_base = _logits(first, "brain_tumor", rows[:8])["tumor"]
    assert torch.equal(out_base, base_logits["tumor"])
    # a third adapter loaded from its folder over the same PeftModel, then switched to by name
    loaded = load_adapter(first, tmp_path / "first", adapter_name="first_again")
    assert loaded.active_adapter == "first_again"
    assert torch.equal(_logits(loaded, "brain_tumor", rows[:8])["tumor"], out_a)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_fake_hub_push_names_the_base_hub_id_then_loads_back(tmp_path, fake_hub):
    base = tiny_model(["brain_tumor"], seed=0)
    rows = brain_tumor(8)
    peft_model, _ = _adapted(tmp_path, "brain_tumor", rows, model=base, steps=2)
    folder = save_adapter(peft_model, tmp_path / "adapter", task="brain_tumor", k=2, seed=1)
    with pytest.raises(AdapterError, match="Hub id"):
        push_adapter(folder, "org/bt-2shot", token=fake_hub.token)  # base_model_name_or_path is no Hub id
    push_adapter(folder, "org/bt-2shot", base_id="org/multimed-base", token=fake_hub.token)
    files = fake_hub.files("org/bt-2shot", repo_type="model")
    assert {"adapter_config.json", "adapter_model.safetensors", ADAPTER_INFO, "README.md"} <= set(files)
    assert json.loads(files["adapter_config.json"])["base_model_name_or_path"] == "org/multimed-base"
    assert "k = 2, seed 1" in files["README.md"].decode()
    again = load_adapter(tiny_model(["brain_tumor"], seed=0), "org/bt-2shot", token=fake_hub.token)
    expected = _logits(peft_model, "brain_tumor", rows)["tumor"]
    assert torch.equal(_logits(again, "brain_tumor", rows)["tumor"], expected)


def test_the_adapter_card_says_which_modalities_the_adapted_head_reads():
    # before (sweep C5): the card's loading code gave no word on inputs; where the head reads some of the task's
    # modalities, the base's processor for the task failed on the others ("no processor for text"); "1 examples"
    from multimed_hf.fewshot.adapters import adapter_card

    info = {"task": "disease", "k": 1, "seed": 0, "base_model": "org/base", "method": "lora", "rank": 4,
            "target_modules": ["fusion.proj"], "head_spec": {"modalities": ["mri", "oct"], "outputs": []},
            "metrics": {}}
    card = str(adapter_card(info))
    assert "at least 1 example or the split ran out" in card
    assert ("The adapted head reads mri, oct of the task's modalities" in card
            and "transform(\"disease\", modalities=['mri', 'oct'])" in card)
    whole = str(adapter_card({**info, "task": "brain_tumor", "k": 5, "head_spec": {"modalities": ["mri"]}}))
    assert "at least 5 examples" in whole and "The adapted head reads" not in whole  # every modality: nothing said
