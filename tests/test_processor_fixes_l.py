"""Processor overrides rebuild processors through their constructors (checked, derived state recomputed, fed as
saved); image and expression processors refuse or sum what they silently mangled (sweep G items 2, 5, 6)."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from multimed_hf import MultiMedProcessor
from multimed_hf.processors.base import ProcessorError
from multimed_hf.processors.dna import DnaProcessor
from multimed_hf.processors.eeg import EEGProcessor
from multimed_hf.processors.expression import ExpressionProcessor
from multimed_hf.processors.image import ImageProcessor, default_image_processor
from multimed_hf.training.assembly import AssemblyError, assemble

EEG_TASK, DNA_TASK, IMAGE_TASK = "motor_imagery", "expression_prediction", "bone_age"


@pytest.fixture(scope="module")
def eeg_data(build_sample):
    return build_sample(EEG_TASK, "bci_iv_2a").out


@pytest.fixture(scope="module")
def dna_data(build_sample):
    return build_sample(DNA_TASK, "tcga_promoters").out


@pytest.fixture(scope="module")
def eeg_plain(eeg_data):
    return assemble(eeg_data, [EEG_TASK], encoders="small", build_model=False)


def _row(assembly, task, i=0):
    return assembly.datasets[task]["train"][i]


def _reloaded(processor, tmp_path):
    processor.save_pretrained(tmp_path / "processor")
    return MultiMedProcessor.from_pretrained(tmp_path / "processor")


# ---------------------------------------------------------------------- overrides: DNA
def test_dna_k_the_tokenizer_lacks_is_refused_at_assembly_naming_the_flag(dna_data):
    # before: assembled and trained with every DNA token [UNK]; the saved run could not be reloaded
    with pytest.raises(AssemblyError, match=r"--processor_overrides \{'dna': \{'k': 4\}\}: the tokenizer's "
                                            r"vocabulary has no 'AAAA'.*read 6-mers: leave k out"):
        assemble(dna_data, [DNA_TASK], encoders="small", build_model=False, processor_overrides={"dna": {"k": 4}})


def test_dna_max_length_beyond_the_encoders_positions_is_refused(dna_data):
    # before: assembled, then the first forward failed on a 300-token row against 256 position embeddings
    with pytest.raises(AssemblyError, match=r"max_length=300 is more than the dna encoder of --encoders small reads "
                                            r"\(256 tokens\)"):
        assemble(dna_data, [DNA_TASK], encoders="small", build_model=False,
                 processor_overrides={"dna": {"max_length": 300}})


def test_dna_override_is_fed_as_saved(dna_data, tmp_path):
    a = assemble(dna_data, [DNA_TASK], encoders="small", build_model=False,
                 processor_overrides={"dna": {"max_length": 48, "truncation_side": "left"}})
    dna = a.processor.processor_for("dna")
    assert (dna.max_length, dna.truncation_side) == (48, "left")
    row = _row(a, DNA_TASK)
    ids = a.processor.preprocess(row, DNA_TASK)["inputs"]["dna"]["input_ids"]
    assert len(ids) == 48 and dna.tokenizer.unk_token_id not in ids[1:-1]
    assert ids[1:-1] == dna.tokenizer.convert_tokens_to_ids(dna.kmers(row["promoter"][-(45 + 6):]))
    assert _reloaded(a.processor, tmp_path).preprocess(row, DNA_TASK)["inputs"]["dna"]["input_ids"] == ids


def test_an_unknown_setting_is_refused_naming_the_known_ones(dna_data):
    with pytest.raises(AssemblyError, match=r"DnaProcessor has no setting 'kmer'; its settings are \['crop_center'"):
        assemble(dna_data, [DNA_TASK], encoders="small", build_model=False, processor_overrides={"dna": {"kmer": 4}})
    with pytest.raises(AssemblyError, match=r"\{'eeg': \.\.\.\}: the run reads no 'eeg' modality"):
        assemble(dna_data, [DNA_TASK], encoders="small", build_model=False, processor_overrides={"eeg": {"n_times": 8}})


# ---------------------------------------------------------------------- overrides: EEG
def test_eeg_channel_order_override_is_fed_as_saved(eeg_data, eeg_plain, tmp_path):
    # before: training read the original order (keys derived in __init__), the reloaded processor the saved one
    channels = eeg_plain.processor.processor_for("eeg").channels
    a = assemble(eeg_data, [EEG_TASK], encoders="small", build_model=False,
                 processor_overrides={"eeg": {"channels": channels[::-1]}})
    row = _row(a, EEG_TASK)
    original = eeg_plain.processor.preprocess(row, EEG_TASK)["inputs"]["eeg"]["values"]
    fed = a.processor.preprocess(row, EEG_TASK)["inputs"]["eeg"]["values"]
    np.testing.assert_array_equal(fed, original[::-1])
    np.testing.assert_array_equal(_reloaded(a.processor, tmp_path).preprocess(row, EEG_TASK)["inputs"]["eeg"]["values"],
                                  fed)


def test_eeg_channel_subset_sizes_the_encoder(eeg_data, eeg_plain):
    # before: a bare numpy IndexError at the first row (and an encoder sized for every channel)
    channels = eeg_plain.processor.processor_for("eeg").channels
    torch.manual_seed(0)
    a = assemble(eeg_data, [EEG_TASK], encoders="small", processor_overrides={"eeg": {"channels": channels[:3]}})
    assert a.facts.eeg_channels == 3 and a.config.encoders["eeg"]["config"]["num_channels"] == 3
    rows = [_row(a, EEG_TASK, i) for i in range(2)]
    batch = a.processor(rows, EEG_TASK)
    assert batch["inputs"]["eeg"]["values"].shape[1] == 3
    assert torch.isfinite(a.model(**batch).loss)
    whole = eeg_plain.processor(rows, EEG_TASK)["inputs"]["eeg"]["values"]
    torch.testing.assert_close(batch["inputs"]["eeg"]["values"], whole[:, :3])


@pytest.mark.parametrize("settings, message", [
    ({"missing_channels": "drop"}, r"missing_channels='drop': expected one of \('error', 'zero'\)"),
    ({"h_freq": 1000.0}, r"h_freq=1000.0 Hz: expected 0 < h_freq < 125.0 Hz \(the Nyquist frequency"),
    ({"n_times": -5}, r"n_times=-5: expected a positive number of samples"),
    ({"n_times": 0}, r"n_times=0: expected a positive number of samples"),
    ({"chanels": ["C3"]}, r"EEGProcessor has no setting 'chanels'"),
])
def test_invalid_eeg_overrides_are_refused_at_assembly(eeg_data, settings, message):
    # before: 'drop' silently behaved as 'zero'; h_freq and n_times failed only at the first row, in scipy / numpy
    with pytest.raises(AssemblyError, match=r"--processor_overrides \{'eeg': .*\}: " + message):
        assemble(eeg_data, [EEG_TASK], encoders="small", build_model=False,
                 processor_overrides={"eeg": settings})


def test_eeg_sfreq_override_derives_epoch_length_and_filter(eeg_data, eeg_plain):
    plain = eeg_plain.processor.processor_for("eeg")
    rate = plain.sfreq / 2
    a = assemble(eeg_data, [EEG_TASK], encoders="small", build_model=False,
                 processor_overrides={"eeg": {"sfreq": rate}})
    eeg = a.processor.processor_for("eeg")
    assert eeg.sfreq == rate and eeg.n_times == math.ceil(plain.n_times * rate / plain.sfreq)
    assert eeg.h_freq == min(40.0, 0.45 * rate)
    values = a.processor.preprocess(_row(a, EEG_TASK), EEG_TASK)["inputs"]["eeg"]["values"]
    assert values.shape == (len(plain.channels), eeg.n_times) and np.abs(values[:, -8:]).sum() > 0  # no zero tail


# ---------------------------------------------------------------------- overrides: expression, images
def test_scrna_override_is_applied_before_the_standardisation_is_fitted(dna_data):
    # before: the statistics were fitted on the values as stored, then log1p was switched on by setattr
    plain = assemble(dna_data, [DNA_TASK], encoders="small", build_model=False).processor.processor_for("scrna")
    assert plain.log1p is False  # the samples' profiles are log-scale already: the override changes the scaling
    a = assemble(dna_data, [DNA_TASK], encoders="small", build_model=False, standardize_expression=True,
                 processor_overrides={"scrna": {"log1p": True}})
    scrna = a.processor.processor_for("scrna")
    assert scrna.log1p is True and scrna.standardizes
    train = a.datasets[DNA_TASK]["train"]
    rows = [r for r in (train[i] for i in range(len(train))) if r["profile_values"]]
    dense = np.stack([scrna(r["profile_indices"], r["profile_values"], r["gene_panel"])["values"] for r in rows])
    measured = scrna._panel_map(str(rows[0]["gene_panel"]))[1]
    np.testing.assert_allclose(dense[:, measured].mean(0), 0.0, atol=1e-4)


def test_image_overrides_are_checked_and_one_modality_gets_its_own(build_sample, tmp_path):
    data = build_sample(IMAGE_TASK, "rsna_bone_age").out
    with pytest.raises(AssemblyError, match=r"high_bit_depth='bogus': expected one of"):
        assemble(data, [IMAGE_TASK], encoders="small", build_model=False,
                 processor_overrides={"image": {"high_bit_depth": "bogus"}})
    a = assemble(data, [IMAGE_TASK], encoders="small", build_model=False,
                 processor_overrides={"image": {"draft_size": 32}, "xray": {"high_bit_depth": "full_range"}})
    procs = a.processor.processors
    assert (procs["image"].draft_size, procs["image"].high_bit_depth) == (32, "min_max")
    assert (procs["xray"].draft_size, procs["xray"].high_bit_depth) == (32, "full_range")
    assert _reloaded(a.processor, tmp_path).processor_for("xray").to_dict() == procs["xray"].to_dict()


def test_with_settings_rebuilds_through_the_constructor():
    eeg = EEGProcessor(["C3", "Cz", "C4"], sfreq=100.0, l_freq=None, h_freq=None)
    flipped = eeg.with_settings(channels=["C4", "Cz", "C3"])
    signal = np.arange(30.0).reshape(3, 10)
    np.testing.assert_array_equal(flipped(signal, 100.0, ["C3", "Cz", "C4"])["values"],
                                  eeg(signal, 100.0, ["C3", "Cz", "C4"])["values"][::-1])
    assert eeg.channels == ["C3", "Cz", "C4"]  # the original is left as it was
    with pytest.raises(ProcessorError, match="not a 4-mer vocabulary"):
        DnaProcessor().with_settings(k=4)
    x = ExpressionProcessor(["a", "b"], panels={"p": ["a", "b"]}, gene_mean=[1.0, 2.0], gene_std=[1.0, 1.0])
    assert x.with_settings(log1p=False).standardizes  # artifacts carried over
    with pytest.raises(ProcessorError, match="has no setting 'size'"):
        ImageProcessor(default_image_processor(16)).with_settings(size=8)


# ---------------------------------------------------------------------- images: non-finite pixels
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("uint8", [False, True])
@pytest.mark.parametrize("scaling", ["min_max", "full_range"])
def test_non_finite_float_pixels_are_refused(bad, uint8, scaling):
    # before: one NaN made the whole image blank (-1 everywhere), one inf made the others 0 and itself NaN
    values = np.linspace(0, 1000, 16 * 16, dtype=np.float32).reshape(16, 16)
    processor = ImageProcessor(default_image_processor(16), high_bit_depth=scaling, output_uint8=uint8)
    assert np.isfinite(processor(Image.fromarray(values))["pixel_values"]).all()
    values[3, 4] = bad
    with pytest.raises(ProcessorError, match=r"the F image holds NaN or infinite pixel values \(1 of 256 pixels\)"):
        processor(Image.fromarray(values))


# ---------------------------------------------------------------------- expression rows
def test_a_repeated_gene_index_sums_its_values():
    # before: only the last value was kept ([2, 0]) while normalize_total counted both
    raw = ExpressionProcessor(["g1", "g2"], panels={"p": ["g1", "g2"]}, normalize_total=None, log1p=False)
    np.testing.assert_array_equal(raw([0, 0], [1.0, 2.0], "p")["values"], [3.0, 0.0])
    np.testing.assert_array_equal(raw([1, 0, 1], [1.0, 2.0, 4.0], "p")["values"], [2.0, 5.0])
    scaled = ExpressionProcessor(["g1", "g2"], panels={"p": ["g1", "g2"]}, normalize_total=10.0, log1p=True)
    np.testing.assert_allclose(scaled([1, 0, 1], [1.0, 2.0, 2.0], "p")["values"],
                               scaled([0, 1], [2.0, 3.0], "p")["values"])
    np.testing.assert_allclose(scaled([1, 0, 1], [1.0, 2.0, 2.0], "p")["values"], np.log1p([4.0, 6.0]), rtol=1e-6)


def test_the_log1p_error_quotes_the_stored_value():
    # before: "got a minimum of -5000" (the value after library-size scaling) for a stored -1
    x = ExpressionProcessor(["g1", "g2"], panels={"p": ["g1", "g2"]}, normalize_total=1e4, log1p=True)
    with pytest.raises(ProcessorError, match=r"got a minimum of -1; for data already transformed"):
        x([0, 1], [-1.0, 3.0], "p")
