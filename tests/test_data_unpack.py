"""A source folder of downloads as they came (the publisher's archives): unpacked into the build's cache and built
alike to the same files unpacked by hand."""

import os
import shutil
import tarfile
import zipfile
from pathlib import Path

import pytest

from dataset_scripts.sample_sources import breakhis, eyepacs, lhncbc_malaria
from multimed_hf.api import build_dataset
from multimed_hf.data.errors import LayoutNotRecognised
from multimed_hf.data.manifest import read_manifest
from multimed_hf.data.source_builder import PROVENANCE_FILE
from multimed_hf.data.unpack import UnpackError, archives_of, unpack_downloads


def _entries(out: Path, task: str) -> set:
    return {(e.source_path, e.status, e.reason, e.split, e.group) for e in read_manifest(out / task)}


def _zip_tree(archive: Path, base: Path, folder: str) -> None:
    """``base/folder`` zipped with its paths from ``base`` (``folder/...``), as the publisher's archive holds it."""
    with zipfile.ZipFile(archive, "w") as z:
        for path in sorted((base / folder).rglob("*")):
            z.write(path, path.relative_to(base).as_posix())


def _sample(module, tmp_path: Path) -> Path:
    """The sample unpacked by hand: ``<tmp>/by_hand/<FOLDER>/...`` with the provenance file beside the tree."""
    by_hand = tmp_path / "by_hand"
    module.make(by_hand / module.FOLDER)
    (by_hand / module.FOLDER / PROVENANCE_FILE).rename(by_hand / PROVENANCE_FILE)
    return by_hand


def test_a_zip_as_downloaded_builds_as_its_files_unpacked_by_hand(tmp_path):
    by_hand = _sample(lhncbc_malaria, tmp_path)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    _zip_tree(downloads / "cell_images.zip", by_hand, "cell_images")
    shutil.copy2(by_hand / PROVENANCE_FILE, downloads)
    reference = build_dataset("disease", [by_hand], tmp_path / "ref", progress=False)
    report = build_dataset("disease", [downloads], tmp_path / "out", progress=False)
    assert _entries(tmp_path / "out", "disease") == _entries(tmp_path / "ref", "disease")
    assert report.counts == reference.counts and report.splits == reference.splits
    (unpacked,) = (p for p in (tmp_path / "out" / ".build_cache" / "unpacked").iterdir() if p.is_dir())
    assert unpacked.name.startswith("disease-downloads-")
    assert Path(report.sources[0].root) == unpacked
    assert any(w.startswith("unpacked cell_images.zip (") and str(unpacked) in w for w in report.warnings)
    # the next build reuses the unpacked tree while the archive is unchanged, and unpacks again when it changes
    stamp = (unpacked / "cell_images" / "Parasitized").stat().st_mtime_ns
    build_dataset("disease", [downloads], tmp_path / "out", progress=False)
    assert (unpacked / "cell_images" / "Parasitized").stat().st_mtime_ns == stamp
    os.utime(downloads / "cell_images.zip", ns=(1, 1))
    build_dataset("disease", [downloads], tmp_path / "out", progress=False)
    assert (unpacked / "cell_images" / "Parasitized").stat().st_mtime_ns != stamp


def test_a_tarball_as_downloaded_builds_alike(tmp_path):
    by_hand = _sample(breakhis, tmp_path)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    with tarfile.open(downloads / "BreaKHis_v1.tar.gz", "w:gz") as archive:
        archive.add(by_hand / "BreaKHis_v1", arcname="BreaKHis_v1")
    shutil.copy2(by_hand / PROVENANCE_FILE, downloads)
    build_dataset("breast_cancer", [by_hand], tmp_path / "ref", progress=False)
    build_dataset("breast_cancer", [downloads], tmp_path / "out", progress=False)
    assert _entries(tmp_path / "out", "breast_cancer") == _entries(tmp_path / "ref", "breast_cancer")


def _split(archive: Path, parts: int) -> list[Path]:
    """``archive`` cut into ``parts`` numbered volumes (7-Zip's ``name.zip.001`` ...), the archive removed."""
    data = archive.read_bytes()
    size = -(-len(data) // parts)
    paths = []
    for n in range(parts):
        path = archive.with_name(f"{archive.name}.{n + 1:03d}")
        path.write_bytes(data[n * size:(n + 1) * size])
        paths.append(path)
    archive.unlink()
    return paths


def test_kaggles_competition_zip_with_split_parts_inside_builds_alike(tmp_path):
    """Kaggle's ``diabetic-retinopathy-detection.zip`` holds ``train.zip.001`` ... (one zip in volumes),
    ``trainLabels.csv.zip`` and the other archives: unpacked in turn, the build equals the hand-unpacked one."""
    by_hand = tmp_path / "by_hand"
    eyepacs.make(by_hand)
    (by_hand / "trainLabels.csv.zip").unlink()  # unpacked by hand: the leftover archive gone too
    inner = tmp_path / "inner"
    inner.mkdir()
    for folder in ("train", "test", "sample"):
        _zip_tree(inner / f"{folder}.zip", by_hand, folder)
    _split(inner / "train.zip", 3)
    for name in ("trainLabels.csv", "sampleSubmission.csv"):
        with zipfile.ZipFile(inner / f"{name}.zip", "w") as z:
            z.write(by_hand / name, name)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    with zipfile.ZipFile(downloads / "diabetic-retinopathy-detection.zip", "w") as z:
        for path in sorted(inner.iterdir()):
            z.write(path, path.name)
    for name in ("retinopathy_solution.csv", PROVENANCE_FILE):  # published apart from the competition zip
        shutil.copy2(by_hand / name, downloads)
    build_dataset("diabetic_retinopathy", [by_hand], tmp_path / "ref", progress=False)
    report = build_dataset("diabetic_retinopathy", [downloads], tmp_path / "out", progress=False)
    assert _entries(tmp_path / "out", "diabetic_retinopathy") == _entries(tmp_path / "ref", "diabetic_retinopathy")
    assert any(w.startswith("unpacked train.zip (") and "found inside" in w for w in report.warnings)


def test_without_unpacking_or_with_a_part_missing_the_error_says_so(tmp_path):
    by_hand = _sample(lhncbc_malaria, tmp_path)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    _zip_tree(downloads / "cell_images.zip", by_hand, "cell_images")
    with pytest.raises(LayoutNotRecognised, match=r"download archives: cell_images\.zip"):
        build_dataset("disease", [downloads], tmp_path / "out", progress=False, unpack=False)
    assert not (tmp_path / "out" / ".build_cache" / "unpacked").exists()
    parts = _split(downloads / "cell_images.zip", 3)
    parts[1].unlink()
    with pytest.raises(LayoutNotRecognised, match=r"lacks part\(s\) 002 of 003"):
        build_dataset("disease", [downloads], tmp_path / "out", progress=False)


def test_a_damaged_archive_and_one_needing_other_tools_are_named(tmp_path):
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    (downloads / "cell_images.zip").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(LayoutNotRecognised, match=r"could not be unpacked: .*cell_images\.zip: cannot unpack"):
        build_dataset("disease", [downloads], tmp_path / "out", progress=False)
    (downloads / "cell_images.zip").unlink()
    (downloads / "cell_images.7z").write_bytes(b"7z")
    assert archives_of(downloads) == ({}, ["cell_images.7z"], [])
    with pytest.raises(LayoutNotRecognised, match=r"download archives: cell_images\.7z"):
        build_dataset("disease", [downloads], tmp_path / "out", progress=False)


def test_members_stay_inside_the_unpacked_folder_and_folders_are_never_unpacked(tmp_path):
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    with zipfile.ZipFile(downloads / "evil.zip", "w") as z:
        z.writestr("../escaped.txt", "x")
        z.writestr("/abs.txt", "y")
    dest = tmp_path / "cache" / "unpacked"
    unpack_downloads(downloads, dest, progress=False)
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*")) == ["abs.txt", "escaped.txt"]
    assert not (tmp_path / "cache" / "escaped.txt").exists() and not Path("/abs.txt").exists()
    (downloads / "already_unpacked").mkdir()
    with pytest.raises(UnpackError, match="holds folders"):
        unpack_downloads(downloads, tmp_path / "other", progress=False)


def test_the_command_unpacks_unless_told_not_to(tmp_path, capsys):
    from multimed_hf.cli import main

    by_hand = _sample(lhncbc_malaria, tmp_path)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    _zip_tree(downloads / "cell_images.zip", by_hand, "cell_images")
    args = ["build", "disease", "--source", str(downloads), "--out", str(tmp_path / "out"), "--quiet"]
    assert main(args + ["--no-unpack"]) == 2
    assert "download archives: cell_images.zip" in capsys.readouterr().err
    assert main(args) == 0
    assert "warning: unpacked cell_images.zip (" in capsys.readouterr().out


def test_build_all_finds_a_sub_folder_of_downloads_once_unpacked(tmp_path):
    from multimed_hf.api import detect_sources

    by_hand = _sample(lhncbc_malaria, tmp_path)
    sources = tmp_path / "sources"
    (sources / "malaria").mkdir(parents=True)
    _zip_tree(sources / "malaria" / "cell_images.zip", by_hand, "cell_images")
    breakhis.make(sources / "breakhis")  # unpacked by hand
    # without a build folder the archives are not opened (BreakHis serves disease too)
    assert detect_sources(sources) == {"breast_cancer": [sources / "breakhis"], "disease": [sources / "breakhis"]}
    found = detect_sources(sources, unpack_into=tmp_path / "out")
    assert found["breast_cancer"] == [sources / "breakhis"]
    (unpacked,) = set(found["disease"]) - {sources / "breakhis"}
    assert unpacked.parent == tmp_path / "out" / ".build_cache" / "unpacked"
    assert (unpacked / "cell_images" / "Parasitized").is_dir()


def test_one_damaged_download_is_named_and_the_others_are_built(tmp_path):
    """CC-CCII's NCP-13.zip is reported broken: an archive that cannot be opened, or a member that cannot be read,
    is named in the report and the rest is unpacked and built."""
    by_hand = _sample(lhncbc_malaria, tmp_path)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    with zipfile.ZipFile(downloads / "Parasitized.zip", "w") as z:
        for path in sorted((by_hand / "cell_images" / "Parasitized").iterdir()):
            z.write(path, f"cell_images/Parasitized/{path.name}")
    with zipfile.ZipFile(downloads / "Uninfected.zip", "w", compression=zipfile.ZIP_DEFLATED) as z:
        for path in sorted((by_hand / "cell_images" / "Uninfected").iterdir()):
            z.write(path, f"cell_images/Uninfected/{path.name}")
    data = bytearray((downloads / "Uninfected.zip").read_bytes())
    with zipfile.ZipFile(downloads / "Uninfected.zip") as z:
        first = z.infolist()[0]
    data[first.header_offset + 30 + len(first.filename) + 5] ^= 0xFF  # one member's compressed bytes garbled
    (downloads / "Uninfected.zip").write_bytes(bytes(data))
    (downloads / "Broken.zip").write_bytes(b"PK\x03\x04 cut")
    report = build_dataset("disease", [downloads], tmp_path / "out", progress=False)
    assert any(w.startswith("could not unpack ") and "Broken.zip: cannot unpack: BadZipFile" in w
               for w in report.warnings), report.warnings
    (damaged,) = [w for w in report.warnings if w.startswith("unpacked Uninfected.zip")]
    assert f"1 member(s) could not be unpacked: cell_images/Uninfected/{first.filename.rsplit('/', 1)[1]}" in damaged
    kept = {e.source_path for e in report.entries if e.status == "kept"}
    assert any(p.startswith("cell_images/Parasitized/") for p in kept)
    assert any(p.startswith("cell_images/Uninfected/") for p in kept)


def test_the_archive_itself_given_as_the_source(tmp_path):
    """``--source cell_images.zip``: the archive given itself builds as the folder holding it does; a split zip is
    given by its first part."""
    by_hand = _sample(lhncbc_malaria, tmp_path)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    _zip_tree(downloads / "cell_images.zip", by_hand, "cell_images")
    build_dataset("disease", [downloads], tmp_path / "ref", progress=False)
    build_dataset("disease", [downloads / "cell_images.zip"], tmp_path / "out", progress=False)
    assert _entries(tmp_path / "out", "disease") == _entries(tmp_path / "ref", "disease")
    _split(downloads / "cell_images.zip", 2)
    build_dataset("disease", [downloads / "cell_images.zip.001"], tmp_path / "parts", progress=False)
    assert _entries(tmp_path / "parts", "disease") == _entries(tmp_path / "ref", "disease")
    (downloads / "notes.txt").write_text("x")
    with pytest.raises(LayoutNotRecognised, match="is not a folder"):
        build_dataset("disease", [downloads / "notes.txt"], tmp_path / "x", progress=False)


def test_a_split_zip_inside_lacking_a_part_is_named_and_the_rest_unpacked(tmp_path):
    by_hand = _sample(lhncbc_malaria, tmp_path)
    inner = tmp_path / "inner"
    inner.mkdir()
    _zip_tree(inner / "cell_images.zip", by_hand, "cell_images")
    _zip_tree(inner / "extra.zip", by_hand, "cell_images")
    parts = _split(inner / "extra.zip", 3)
    parts[1].unlink()
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    with zipfile.ZipFile(downloads / "kaggle.zip", "w") as z:
        for path in sorted(inner.iterdir()):
            z.write(path, path.name)
    dest = tmp_path / "unpacked"
    lines = unpack_downloads(downloads, dest, progress=False)
    missing = [line for line in lines if "lacks part(s) 002 of 003" in line]
    assert len(missing) == 1 and missing[0].startswith("could not unpack ") and "(found inside)" in missing[0]
    assert (dest / "cell_images" / "Parasitized").is_dir() and not (dest / "cell_images.zip").exists()


def test_a_macos_resource_fork_of_a_zip_is_no_archive(tmp_path):
    # before: ._cell_images.zip (a zip copied from a Mac) was tried as an archive: "could not unpack ... BadZipFile",
    # read as a damaged download
    (tmp_path / "cell_images.zip").write_bytes(b"")
    (tmp_path / "._cell_images.zip").write_bytes(b"\x00\x05\x16\x07" + b"\x00" * 60)
    archives, others, problems = archives_of(tmp_path)
    assert list(archives) == ["cell_images.zip"] and not others and not problems
