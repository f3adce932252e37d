"""The Ray Data engine (``engine="ray"``) on a local Ray instance of 2 CPUs builds byte for byte what the local
engine builds: shards, manifest, build_info and card."""

import os
from pathlib import Path

import pytest

from dataset_scripts.sample_sources import sample_generators
from multimed_hf.api import build_dataset
from multimed_hf.data.build import CACHE_DIR
from multimed_hf.data.engines import RayEngine, make_engine

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

GENERATORS = sample_generators()


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and CACHE_DIR not in p.parts}


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.mark.parametrize("folder, task", [("OCT2017", "diabetic_retinopathy"),
                                          ("eeg-motor-movementimagery-dataset-1.0.0", "motor_imagery")])
def test_ray_engine_builds_the_same_bytes_as_the_local_build(local_ray, tmp_path, folder, task):
    source = GENERATORS[folder](tmp_path / folder)
    local = build_dataset(task, [source], tmp_path / "local", progress=False)
    distributed = build_dataset(task, [source], tmp_path / "ray", progress=False, engine="ray")
    assert local.entries == distributed.entries
    assert [s.fingerprint for s in local.sources] == [s.fingerprint for s in distributed.sources]
    local_files, ray_files = _files(tmp_path / "local"), _files(tmp_path / "ray")
    assert sorted(local_files) == sorted(ray_files)
    assert any(name.endswith(".parquet") for name in local_files)
    for name, data in local_files.items():
        assert ray_files[name] == data, f"{name} differs between the local and the Ray build"


def _reader():
    """A reader in the engines' protocol: parts (lists) in order, a last ``str`` part for a bad file; file "m"
    gives five parts (a file of many records crosses the engine part by part). Made in a function, so that Ray
    ships it by value to workers that cannot import this test module."""

    def parts(builder, relpath):
        for n in range(5 if relpath == "m" else 1):
            yield [relpath.upper(), n, os.getpid()]
        if relpath == "b":
            yield "bad file"

    return parts


def test_ray_engine_reads_in_ray_workers_and_returns_file_order(local_ray):
    files = list("qwertyuiopasdfghjklzxcvbnm")
    outcomes = [list(parts) for parts in RayEngine(batch_size=3).map(_reader(), None, files)]
    assert [[p if isinstance(p, str) else p[:2] for p in parts] for parts in outcomes] == [
        [[f.upper(), n] for n in range(5 if f == "m" else 1)] + (["bad file"] if f == "b" else []) for f in files
    ]
    assert os.getpid() not in {p[2] for parts in outcomes for p in parts if not isinstance(p, str)}, \
        "files were read in the driver"


def test_ray_engine_skips_what_the_caller_left_of_a_file(local_ray):
    files = list("kmz")
    seen = []
    for parts in RayEngine(batch_size=2).map(_reader(), None, files):
        seen.append(next(iter(parts))[:2])  # only the first part of each file
    assert seen == [["K", 0], ["M", 0], ["Z", 0]]


def test_engine_names_are_checked():
    with pytest.raises(ValueError, match=r"engine='spark'; expected one of \('local', 'ray'\)"):
        make_engine("spark")
    with pytest.raises(ValueError, match="ray_address='ray://head:10001' given with engine='local'"):
        make_engine("local", ray_address="ray://head:10001")
