"""The builder's fast paths give what the slow ones gave: Pillow's resampling bit for bit, the same rejections, the
same cache answers (written in batches), a changed file caught by its stamp as by its hash."""

import io
import json
import os
import time

import numpy as np
import pytest
from PIL import Image

import multimed_hf.data.cache as cache_module
from multimed_hf.data.cache import ValidationCache
from multimed_hf.data.errors import BadSourceFile
from multimed_hf.data.images import _lanczos, read_image_file
from multimed_hf.data.sample import Sample, SourceFileRef, sample_from_json, sample_to_json
from multimed_hf.data.shards import _embed
from multimed_hf.data.source_builder import ImageFolderBuilder

LANCZOS = Image.Resampling.LANCZOS


def test_lanczos_is_pillows_two_passes_bit_for_bit():
    """Random sizes, boxes and contents, against Pillow run one pass at a time (horizontal, then vertical)."""
    rng = np.random.default_rng(7)
    for trial in range(300):
        h, w = (int(v) for v in rng.integers(8, 160, 2))
        pixels = rng.integers(0, 256, (h, w), dtype=np.uint8)
        if trial % 2:
            pixels = np.clip(np.cumsum(rng.normal(0, 25, (h, w)), axis=1), 0, 255).astype(np.uint8)
        out_w, out_h = (int(v) for v in rng.integers(1, 130, 2))
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        box = (x0, y0, int(rng.integers(x0 + 1, w + 1)), int(rng.integers(y0 + 1, h + 1)))
        across = Image.fromarray(pixels).resize((out_w, h), LANCZOS, box=(box[0], 0, box[2], h))
        expected = np.asarray(across.resize((out_w, out_h), LANCZOS, box=(0, box[1], out_w, box[3])))
        assert np.array_equal(_lanczos(pixels, (out_w, out_h), box), expected), (h, w, out_w, out_h, box)
    square = rng.integers(0, 256, (64, 64), dtype=np.uint8)  # the hash's 64 -> 32: Pillow's own order
    assert np.array_equal(_lanczos(square, (32, 32)), np.asarray(Image.fromarray(square).resize((32, 32), LANCZOS)))


def _jpeg(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def test_read_image_file_rejects_flat_truncated_and_corrupt_images(tmp_path):
    rng = np.random.default_rng(0)
    good = _jpeg(rng.integers(0, 256, (96, 96), dtype=np.uint8))
    cases = {
        "flat.jpg": (_jpeg(np.full((96, 96), 77, dtype=np.uint8)), "image is one flat value (L 96x96)"),
        "flat_rgb.png": (None, "image is one flat value (RGB 200x150)"),
        "half.jpg": (good[: len(good) // 2], "cannot decode image"),
        "tiny.png": (None, "smaller than 8 px a side"),
        "empty.jpg": (b"", "empty file"),
    }
    png = io.BytesIO()
    Image.new("RGB", (200, 150), (10, 200, 30)).save(png, "PNG")
    cases["flat_rgb.png"] = (png.getvalue(), cases["flat_rgb.png"][1])
    png = io.BytesIO()
    Image.new("L", (5, 40), 3).save(png, "PNG")
    cases["tiny.png"] = (png.getvalue(), cases["tiny.png"][1])
    for name, (data, reason) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(BadSourceFile, match=reason.replace("(", r"\(").replace(")", r"\)")):
            read_image_file(tmp_path / name, name)
    # one pixel off a flat field: its reduced copy may look flat, the full image is not, so it is kept
    almost = np.full((512, 512), 40, dtype=np.uint8)
    almost[100, 100] = 41
    png = io.BytesIO()
    Image.fromarray(almost).save(png, "PNG")
    (tmp_path / "almost.png").write_bytes(png.getvalue())
    ref, _ = read_image_file(str(tmp_path / "almost.png"), "almost.png")
    assert ref.size == len(png.getvalue())


def _decodes_fully(data: bytes) -> bool:
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
        return True
    except (OSError, SyntaxError, ValueError):
        return False


def test_a_jpeg_read_at_reduced_scale_is_rejected_exactly_where_a_full_decode_fails(tmp_path):
    """``read_image_file`` decodes a JPEG at a reduced DCT scale: on damaged files (cut, bytes overwritten, cut
    out, inserted; baseline, progressive, 4:4:4, restart markers) it rejects the same files a full decode does."""
    rng = np.random.default_rng(11)
    yy, xx = np.mgrid[0:320, 0:320]
    pixels = np.stack([np.sin(xx / 37) * np.cos(yy / 23), np.sin((xx + yy) / 51), np.cos(xx / 17)], -1) * 100 + 128
    pixels = (pixels + rng.normal(0, 12, pixels.shape)).clip(0, 255).astype(np.uint8)
    outcomes = []
    for options in ({"quality": 90}, {"quality": 75, "progressive": True}, {"quality": 95, "subsampling": 0},
                    {"quality": 85, "progressive": True, "restart_marker_blocks": 4}):
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "JPEG", **options)
        good = buffer.getvalue()
        for trial in range(60):
            data, at = bytearray(good), int(rng.integers(2, len(good) - 1))
            if trial % 4 == 0:
                del data[at:]
            elif trial % 4 == 1:
                for where in rng.integers(0, len(data), int(rng.integers(1, 20))):
                    data[where] = int(rng.integers(0, 256))
            elif trial % 4 == 2:
                del data[at:at + int(rng.integers(1, 200))]
            else:
                data[at:at] = rng.integers(0, 256, int(rng.integers(1, 50)), dtype=np.uint8).tobytes()
            (tmp_path / "damaged.jpg").write_bytes(bytes(data))
            try:
                read_image_file(tmp_path / "damaged.jpg", "damaged.jpg")
                kept = True
            except BadSourceFile:
                kept = False
            outcomes.append((_decodes_fully(bytes(data)), kept))
    assert all(full == kept for full, kept in outcomes), [i for i, (f, k) in enumerate(outcomes) if f != k]
    assert 40 <= sum(not full for full, _ in outcomes) <= 200  # both kinds are tried


def _sample(i: int) -> Sample:
    path = f"a/{i:03d}.jpg"
    return Sample(sample_id=path, source_path=path, fields={"image": SourceFileRef(path, "0" * 64, 10)})


def test_cache_lists_validated_paths_in_python_order_and_reads_records_in_bulk(tmp_path):
    cache = ValidationCache(tmp_path / "c.sqlite", "1")
    names = ["b/x.jpg", "a/é.jpg", "a/z.jpg", "A/y.jpg", "a/x.jpg"]
    for i, name in enumerate(names):
        (tmp_path / f"{i}").write_bytes(b"x")
        cache.put(name, tmp_path / f"{i}", [_sample(i), _sample(i + 100)])
    assert list(cache.validated()) == sorted(names)
    keys = [("a/z.jpg", 1), ("b/x.jpg", 0), ("a/z.jpg", 0)]
    assert [s.sample_id for s in cache.records_at(keys)] == [cache.record(p, i).sample_id for p, i in keys]
    with pytest.raises(KeyError, match="no record 2 of 'b/x.jpg'"):
        cache.records_at([("a/z.jpg", 0), ("b/x.jpg", 2)])
    cache.close()


def _age(path, seconds: float = 60.0) -> None:
    """Set a file's mtime in the past: an old file, as a real source's are (a fresh one gets no stamp)."""
    then = time.time_ns() - int(seconds * 1e9)
    os.utime(path, ns=(then, then))


class _Folder(ImageFolderBuilder):
    task, source = "brain_tumor", "brain_tumor_mri"


class _Rendered(_Folder):
    def read_ref(self, ref):  # a builder whose references stand for rendered bytes: never read as the file
        return (self.root / ref.path).read_bytes()


def test_shards_check_a_files_stamp_and_catch_a_file_changed_since_validation(tmp_path):
    rng = np.random.default_rng(3)
    first, second = (_jpeg(rng.integers(0, 256, (64, 64), dtype=np.uint8)) for _ in range(2))
    second = second[:len(first)].ljust(len(first), b"\0")  # same size: only the content differs
    path = tmp_path / "a.jpg"
    path.write_bytes(first)
    fresh, _ = read_image_file(path, "a.jpg")
    assert fresh.mtime_ns is None  # written moments ago: its bytes will be hashed again
    _age(path)
    ref, _ = read_image_file(path, "a.jpg")
    assert ref.mtime_ns == os.stat(path).st_mtime_ns and ref == fresh  # the stamp is no part of what it names
    assert _embed(ref, _Folder(tmp_path)) == {"bytes": first, "path": "a.jpg"}
    stamped = sample_to_json(Sample("a", "a.jpg", {"image": ref}))
    assert sample_from_json(stamped).fields["image"].mtime_ns == ref.mtime_ns  # kept by the validation cache
    assert "mtime_ns" not in json.dumps(sample_to_json(Sample("a", "a.jpg", {"image": ref}), stamps=False))

    path.write_bytes(second)  # rewritten after validation, same size: its mtime moved
    for builder in (_Folder(tmp_path), _Rendered(tmp_path)):
        for checked in (ref, fresh):  # by stamp, and by sha256 (no stamp, or rendered bytes)
            with pytest.raises(BadSourceFile, match="a.jpg: file changed since it was validated"):
                _embed(checked, builder)
    _age(path, 30.0)  # even with an old mtime of its own: another stamp than the validated one
    with pytest.raises(BadSourceFile, match="file changed since it was validated"):
        _embed(ref, _Folder(tmp_path))
    os.utime(path, ns=(ref.mtime_ns, ref.mtime_ns))  # the stamp forged back: only the hash of rendered refs sees it
    with pytest.raises(BadSourceFile, match="file changed since it was validated"):
        _embed(ref, _Rendered(tmp_path))


@pytest.mark.parametrize("num_proc", [1, 2])  # 2: the shards' row groups are encoded in worker processes
def test_a_build_whose_source_file_changes_before_its_shards_are_written_fails(tmp_path, monkeypatch, num_proc):
    from dataset_scripts.sample_sources.brain_tumor_mri import make_brain_tumor_mri
    from multimed_hf.api import build_dataset
    import multimed_hf.data.build as build

    root = make_brain_tumor_mri(tmp_path / "src", train_per_class=20, test_per_class=5, size=32, bad_files=False)
    for file in root.rglob("*.jpg"):
        _age(file)
    victim = sorted(root.rglob("*.jpg"))[0]
    original = build._write_source

    def changing(*args, **kwargs):  # validated, then changed (same size), then written
        data = bytearray(victim.read_bytes())
        data[len(data) // 2] ^= 0xFF
        victim.write_bytes(bytes(data))
        return original(*args, **kwargs)

    monkeypatch.setattr(build, "_write_source", changing)
    with pytest.raises(BadSourceFile, match=f"{victim.relative_to(root).as_posix()}: file changed since"):
        build_dataset("brain_tumor", [root], tmp_path / "out", progress=False, num_proc=num_proc)


def test_cache_writes_puts_in_batches_and_stores_each_file_whole_or_not_at_all(tmp_path, monkeypatch):
    monkeypatch.setattr(cache_module, "PUT_RECORDS", 3)  # a file of many records flushed part-way
    monkeypatch.setattr(cache_module, "PUT_FILES", 2)
    (tmp_path / "f").write_bytes(b"x")
    cache = ValidationCache(tmp_path / "c.sqlite", "1")
    cache.put("big.h5ad", tmp_path / "f", [_sample(i) for i in range(7)])
    cache.put("small.jpg", tmp_path / "f", [_sample(50)])
    cache.put("big.h5ad", tmp_path / "f", [_sample(i) for i in range(100, 105)])  # read again, fewer records
    assert [s.sample_id for s in cache.records("big.h5ad")] == [f"a/{i}.jpg" for i in range(100, 105)]

    def failing():
        yield from (_sample(i) for i in range(200, 205))  # some of it written before the failure
        raise OSError("truncated")

    with pytest.raises(OSError, match="truncated"):
        cache.put("big.h5ad", tmp_path / "f", failing())  # read again: its old outcome and the new part go
    assert cache.lookup("big.h5ad", tmp_path / "f") is None
    assert cache._db.execute("SELECT COUNT(*) FROM records WHERE path = 'big.h5ad'").fetchone()[0] == 0
    cache.put("big.h5ad", tmp_path / "f", [_sample(300), _sample(301)])  # fewer records than before
    cache.put("held.jpg", tmp_path / "f", [_sample(60)])  # held, not yet written
    assert [s.sample_id for s in cache.records("big.h5ad")] == ["a/300.jpg", "a/301.jpg"]
    cache.put("late.jpg", tmp_path / "f", [_sample(70)])
    cache.close()  # an interrupted build closes its cache: every finished put is kept
    reopened = ValidationCache(tmp_path / "c.sqlite", "1")
    assert list(reopened.validated()) == ["big.h5ad", "held.jpg", "late.jpg", "small.jpg"]
    assert reopened.lookup("big.h5ad", tmp_path / "f") == (2, None)
    assert reopened.record("late.jpg", 0).sample_id == "a/070.jpg"
    reopened.close()
