"""The draft-decode fast path in training (``multimed train --draft_images``): image columns are read undecoded so
that the image processor decodes each JPEG at its reduced scale, as ``datasets.Image`` would decode it otherwise."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
from datasets import ClassLabel, Dataset, Features, Image, Value
from PIL import Image as PILImage

import balancing_tiny as bt
from multimed_hf.processing_multimed import MultiMedProcessor
from multimed_hf.processors.image import ImageProcessor, default_image_processor, output_side
from multimed_hf.tasks import get_task
from multimed_hf.training.data import MultiTaskDataset, draft_decode, undecoded_images
from multimed_hf.training.run import train_main


def _jpeg(side: int, seed: int, orientation: int | None = None) -> bytes:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (side // 16, side // 16 + 3, 3), dtype=np.uint8)
    image = PILImage.fromarray(np.kron(base, np.ones((16, 16, 1), dtype=np.uint8)))  # wider than high
    buffer = io.BytesIO()
    exif = PILImage.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    image.save(buffer, "JPEG", quality=90, exif=exif.tobytes())
    return buffer.getvalue()


def _rows(n: int, side: int) -> Dataset:
    names = list(get_task("brain_tumor").label("tumor").names)
    features = Features({"sample_id": Value("string"), "image": Image(), "modality": Value("string"),
                         "tumor": ClassLabel(names=names)})
    return Dataset.from_dict({"sample_id": [f"j{i}" for i in range(n)],
                              "image": [{"bytes": _jpeg(side, i, 6 if i % 2 else None), "path": None}
                                        for i in range(n)],
                              "modality": ["mri"] * n, "tumor": [i % len(names) for i in range(n)]},
                             features=features)


def _processor(draft: int | None) -> MultiMedProcessor:
    return MultiMedProcessor(processors={"image": ImageProcessor(default_image_processor(32), draft_size=draft)})


def test_an_undecoded_image_is_decoded_as_datasets_decodes_it_exif_orientation_included():
    proc = ImageProcessor(default_image_processor(32))
    for orientation in (None, 6, 3):
        cell = {"bytes": _jpeg(96, 0, orientation), "path": None}
        decoded = Image().decode_example(cell)
        if orientation == 6:
            assert decoded.size == (96, 96 + 48)  # turned upright by datasets: a portrait
        assert np.array_equal(proc.to_array(cell), np.asarray(decoded))
        assert np.array_equal(proc(cell)["pixel_values"], proc(decoded)["pixel_values"])


def test_rows_are_read_undecoded_only_where_an_image_processor_decodes_at_a_draft_scale():
    rows = _rows(4, 256)
    assert undecoded_images(rows, _processor(None)) is rows  # nothing to gain: datasets decodes, as before
    assert isinstance(rows[0]["image"], PILImage.Image)
    raw = undecoded_images(rows, _processor(32))
    assert raw.features["image"] == Image(decode=False) and raw[0]["image"]["bytes"] == rows.with_format(
        "arrow")[0]["image"][0].as_py()["bytes"]
    full, fast = MultiTaskDataset({"brain_tumor": rows}, _processor(None)), MultiTaskDataset(
        {"brain_tumor": rows}, _processor(32))
    for index in range(4):
        a = full[index]["inputs"]["mri"]["pixel_values"]
        b = fast[index]["inputs"]["mri"]["pixel_values"]
        cell = {"bytes": _jpeg(256, index, 6 if index % 2 else None), "path": None}
        expected = _processor(32).processors["image"](cell)["pixel_values"]
        assert np.array_equal(b, expected)  # decoded at 1/4 (64 px >= 32) by the processor, upright
        assert a.shape == b.shape and not np.array_equal(a, b)  # the full decode differs a little
        assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.95  # the same picture


def test_draft_decode_sets_each_image_processor_to_its_output_size():
    from transformers import ViTImageProcessor

    processor = MultiMedProcessor(processors={"image": ImageProcessor(default_image_processor(48)),
                                              "xray": ImageProcessor(ViTImageProcessor(size={"shortest_edge": 40}))})
    assert draft_decode(processor) == {"image": 48, "xray": 40}
    assert processor.processors["image"].draft_size == 48 and output_side(object()) is None


def test_train_with_draft_images_saves_the_draft_size_with_the_processor(tmp_path):
    data = bt.write_built_folder(tmp_path / "multimed", {"brain_tumor": {
        "train": _rows(16, 256), "validation": _rows(4, 256), "test": _rows(4, 256)}})
    out = tmp_path / "run"
    train_main(["--data", data, "--tasks", "brain_tumor", "--family", "unimodal", "--output_dir", str(out),
                "--encoders", "small", "--hidden_size", "32", "--max_steps", "2", "--per_device_train_batch_size",
                "4", "--eval_strategy", "no", "--save_strategy", "no", "--disable_tqdm", "true",
                "--bootstrap_samples", "0", "--report_to", "none", "--draft_images", "true"])
    image = MultiMedProcessor.from_pretrained(out).processors["image"]
    assert image.draft_size == output_side(image.image_processor) == 64  # the small encoder's input size
    assert len(pd.read_parquet(out / "predictions" / "brain_tumor-test.parquet")) == 4
