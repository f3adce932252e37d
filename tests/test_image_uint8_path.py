"""The uint8 transport path: 8-bit images leave the processor resized but not normalised (a quarter of the bytes),
and `ImageProcessor.normalize` / `MultiMedTrainer` finish them into the same pixel values as the float32 path."""

import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import TrainingArguments, ViTImageProcessor
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from multimed_hf.processing_multimed import MultiMedProcessor
from multimed_hf.processors.base import ProcessorError
from multimed_hf.processors.image import ImageProcessor, default_image_processor
from multimed_hf.training.trainer import MultiMedTrainer, uint8_image_processor
from training_tiny import brain_tumor, tiny_model, tiny_processor, weights_digest


def _images():
    """8-bit images of several modes and odd sizes (down- and up-sampled to 29 x 29)."""
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (61, 47, 3), dtype=np.uint8))
    grey = Image.fromarray(rng.integers(0, 256, (13, 23), dtype=np.uint8))
    rgba = Image.fromarray(rng.integers(0, 256, (40, 33, 4), dtype=np.uint8), "RGBA")
    return [rgb, grey, rgba, rgb.convert("P")]


def _pair(image_processor):
    return ImageProcessor(image_processor), ImageProcessor(image_processor, output_uint8=True)


@pytest.mark.parametrize("mean, std", [([0.5] * 3, [0.5] * 3), (IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)])
def test_uint8_pixels_normalised_later_equal_the_float_path_bit_for_bit(mean, std):
    # transformers' torchvision backend resizes uint8 in uint8 and fuses rescale into mean/std: the same arithmetic
    full, fast = _pair(ViTImageProcessor(size={"height": 29, "width": 29}, image_mean=mean, image_std=std))
    for image in _images():
        expected = full(image)["pixel_values"]
        got = fast(image)["pixel_values"]
        assert got.dtype == np.uint8 and got.shape == expected.shape == (3, 29, 29)
        assert np.array_equal(fast.normalize(got).numpy(), expected)
    batch = fast.collate([fast(image) for image in _images()])["pixel_values"]
    assert batch.dtype == torch.uint8
    assert torch.equal(fast.normalize(batch), full.collate([full(image) for image in _images()])["pixel_values"])


@pytest.mark.parametrize("side", [5, 64, 301])  # up- and down-sampled, odd sides
def test_a_greyscale_image_is_resized_as_one_channel_with_its_rgb_copy_s_values(side):
    from transformers import CLIPImageProcessor

    grey = Image.fromarray(np.random.default_rng(side).integers(0, 256, (side, side + 7), dtype=np.uint8))
    for image_processor in (ViTImageProcessor(size={"height": 29, "width": 29}),  # bilinear
                            CLIPImageProcessor(size={"shortest_edge": 29}, crop_size={"height": 27, "width": 27})):
        full, fast = _pair(image_processor)
        seen = []
        wrapped = fast.image_processor
        fast.image_processor = lambda images, **kwargs: seen.append(images.shape) or wrapped(images=images, **kwargs)
        got = fast(grey)["pixel_values"]
        assert seen == [(1, side, side + 7)]  # one channel resized
        assert got.dtype == np.uint8 and np.array_equal(got[0], got[2])
        fast.image_processor = wrapped
        assert np.array_equal(fast.normalize(got).numpy(), full(grey)["pixel_values"])


def test_a_pil_backend_processor_differs_by_float_rounding_only():
    from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil

    # PIL resizes uint8 in uint8 too; it rescales, then normalises (two roundings, not one): values in [-1, 1]
    # differ by a few float32 ulps (2**-23 each), far below one 8-bit step (2/255 on this scale)
    full, fast = _pair(ViTImageProcessorPil(size={"height": 29, "width": 29}))
    for image in _images():
        got = fast(image)["pixel_values"]
        assert got.dtype == np.uint8
        np.testing.assert_allclose(fast.normalize(got).numpy(), full(image)["pixel_values"], rtol=0, atol=1e-6)


def test_rescale_or_normalise_alone_follow_the_image_processor():
    image = _images()[0]
    for kwargs in ({"do_normalize": False}, {"do_rescale": False}, {"do_rescale": False, "do_normalize": False}):
        full, fast = _pair(ViTImageProcessor(size={"height": 29, "width": 29}, **kwargs))
        assert np.array_equal(fast.normalize(fast(image)["pixel_values"]).numpy(), full(image)["pixel_values"])


def test_deeper_images_keep_the_float_path_and_a_mixed_batch_is_normalised_in_collate():
    full, fast = _pair(default_image_processor(29))
    deep = Image.fromarray(np.random.default_rng(1).integers(0, 60000, (31, 37), dtype=np.uint16))
    assert deep.mode in ("I;16", "I")
    assert fast(deep)["pixel_values"].dtype == np.float32
    assert np.array_equal(fast(deep)["pixel_values"], full(deep)["pixel_values"])
    images = [_images()[0], deep, _images()[1]]
    batch = fast.collate([fast(image) for image in images])["pixel_values"]
    assert batch.dtype == torch.float32
    assert torch.equal(batch, full.collate([full(image) for image in images])["pixel_values"])


def test_normalize_leaves_its_input_alone_and_keeps_the_device():
    fast = ImageProcessor(default_image_processor(29), output_uint8=True)
    values = torch.full((2, 3, 4, 4), 255.0)
    out = fast.normalize(values)
    assert torch.equal(values, torch.full((2, 3, 4, 4), 255.0)) and torch.equal(out, torch.ones(2, 3, 4, 4))
    assert out.device == values.device and out.dtype == torch.float32


def test_output_uint8_is_saved_loaded_checked_and_not_pickled_with_device_tensors(tmp_path):
    fast = ImageProcessor(default_image_processor(29), output_uint8=True)
    fast.normalize(torch.zeros(3, 2, 2))
    assert fast._constants and fast.to_dict()["output_uint8"] is True
    assert pickle.loads(pickle.dumps(fast))._constants == {}  # DataLoader workers get no device tensors
    processor = MultiMedProcessor(processors={"image": fast})
    processor.save_pretrained(tmp_path)
    loaded = MultiMedProcessor.from_pretrained(tmp_path).processors["image"]
    assert loaded.output_uint8 is True
    fast._save_artifacts(tmp_path / "old")
    old = ImageProcessor._from_settings({"high_bit_depth": "min_max", "draft_size": None}, tmp_path / "old")
    assert old.output_uint8 is False  # processors saved before the option read as before
    with pytest.raises(ProcessorError, match="output_uint8='yes': expected True or False"):
        ImageProcessor(default_image_processor(29), output_uint8="yes")


def test_the_trainer_copy_gives_uint8_and_leaves_the_processor_as_it_was():
    processor = tiny_processor()
    transport = uint8_image_processor(processor)
    assert transport.processors["image"].output_uint8 and not processor.processors["image"].output_uint8
    row = brain_tumor(1)[0]
    assert transport.preprocess(row, "brain_tumor")["inputs"]["mri"]["pixel_values"].dtype == np.uint8
    assert processor.preprocess(row, "brain_tumor")["inputs"]["mri"]["pixel_values"].dtype == np.float32
    assert uint8_image_processor(MultiMedProcessor()).processors == {}  # nothing to change: itself


def _trained(tmp_path, uint8_images):
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=3, per_device_train_batch_size=4, learning_rate=3e-3,
                             report_to=[], use_cpu=True, save_strategy="no", disable_tqdm=True, log_level="error")
    seen = []

    class Recording(MultiMedTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            seen.append(inputs["inputs"]["mri"]["pixel_values"].dtype)
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    trainer = Recording(model=tiny_model(["brain_tumor"]), args=args, train_datasets={"brain_tumor": brain_tumor(12)},
                        processor=tiny_processor(), uint8_images=uint8_images)
    batch = trainer.data_collator(trainer.train_dataset.__getitems__([0, 1, 2]))
    trainer.train()
    return trainer, batch, seen


def test_training_on_uint8_batches_ends_in_the_same_weights(tmp_path):
    plain, plain_batch, plain_seen = _trained(tmp_path / "float", None)  # default on the CPU: the float path
    fast, fast_batch, fast_seen = _trained(tmp_path / "uint8", True)
    assert plain.uint8_images is False and fast.uint8_images is True
    assert plain_batch["inputs"]["mri"]["pixel_values"].dtype == torch.float32
    assert fast_batch["inputs"]["mri"]["pixel_values"].dtype == torch.uint8  # what the workers send
    assert set(plain_seen) == set(fast_seen) == {torch.float32}  # what the model reads
    prepared = fast._prepare_inputs(fast_batch)["inputs"]["mri"]["pixel_values"]
    assert torch.equal(prepared, plain_batch["inputs"]["mri"]["pixel_values"])
    expected, got = weights_digest(plain.model), weights_digest(fast.model)
    assert all(np.array_equal(expected[k], got[k]) for k in expected)
    assert not fast.processor.processors["image"].output_uint8  # the processor saved with the model: float32
