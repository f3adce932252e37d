"""The whole flow of DESIGN.md on the bundled samples: build -> load_dataset -> processor -> model -> learning."""

import pytest
import torch
from datasets import load_dataset
from torch.utils.data import DataLoader
from transformers import AutoConfig, ViTImageProcessor

from dataset_scripts.sample_sources import sample_generators
from multimed_hf.api import build_dataset
from multimed_hf.configuration_multimed import MultiMedConfig
from multimed_hf.modeling_multimed import MultiMedModel
from multimed_hf.processing_multimed import MultiMedProcessor
from multimed_hf.processors.image import ImageProcessor

SIDE = 32
STEPS = 60


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    generators = sample_generators()
    out = tmp / "multimed"
    build_dataset("brain_tumor", [generators["Brain-Tumor-MRI-Dataset"](tmp / "bt")], out, progress=False)
    build_dataset("diabetic_retinopathy", [generators["OCT2017"](tmp / "oct")], out, progress=False)
    return out


def _model_and_processor(tasks):
    vit = AutoConfig.for_model("vit", hidden_size=24, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=32, image_size=SIDE, patch_size=4)
    torch.manual_seed(0)
    model = MultiMedModel(MultiMedConfig.from_tasks(tasks, encoders={"mri": vit, "oct": vit, "fundus": vit}, hidden_size=16))
    image = ViTImageProcessor(size={"height": SIDE, "width": SIDE}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    return model, MultiMedProcessor(processors={"image": ImageProcessor(image)})


def test_built_configs_train_a_multitask_model(dataset_dir, tmp_path):
    tasks = ["brain_tumor", "diabetic_retinopathy"]
    model, processor = _model_and_processor(tasks)
    loaders = {}
    for task in tasks:
        train = load_dataset(str(dataset_dir), task, split="train").with_transform(processor.transform(task))
        loaders[task] = DataLoader(train, batch_size=64, collate_fn=processor.collate)
    batches = {task: next(iter(loader)) for task, loader in loaders.items()}
    assert batches["brain_tumor"]["inputs"]["mri"]["pixel_values"].shape[1:] == (3, SIDE, SIDE)
    assert batches["diabetic_retinopathy"]["presence"]["oct"].all()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = {task: None for task in tasks}
    for _ in range(STEPS):  # multitask: alternate the tasks' batches, as the task sampler will
        for task, batch in batches.items():
            loss = model(**batch).loss
            first[task] = first[task] if first[task] is not None else loss.item()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        last = {task: model(**batch).loss.item() for task, batch in batches.items()}
    for task in tasks:
        assert last[task] < 0.4 * first[task], (task, first[task], last[task])

    model.save_pretrained(tmp_path / "ckpt")
    processor.save_pretrained(tmp_path / "ckpt")
    reloaded = MultiMedModel.from_pretrained(tmp_path / "ckpt").eval()
    reprocessed = MultiMedProcessor.from_pretrained(tmp_path / "ckpt")
    rows = list(load_dataset(str(dataset_dir), "brain_tumor", split="test"))[:4]
    with torch.no_grad():
        expected = model(**processor(rows, "brain_tumor")).logits["tumor"]
        got = reloaded(**reprocessed(rows, "brain_tumor")).logits["tumor"]
    assert torch.equal(expected, got)
