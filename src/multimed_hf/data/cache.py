"""A per-source record of files already validated, so an interrupted build resumes where it stopped.

Large arrays (EEG epochs, expression profiles) go to one binary side file per validated file (all of its samples'
arrays, concatenated) and come back as memory-mapped views, so neither the JSON nor the build's memory holds a
whole source's arrays, and a file of 200,000 cells makes one side file, not 400,000."""

from __future__ import annotations

import hashlib
import json
import mmap
import sys
from pathlib import Path

import numpy as np

from multimed_hf.data.sample import Sample, sample_from_json, sample_to_json

__all__ = ["ValidationCache"]

#: Marks an entry written in this session, whose samples are on disk only.
_WRITTEN = "\0written"


class ValidationCache:
    """Append-only JSON lines: one per validated file, keyed by path, size and mtime."""

    def __init__(self, path: Path, version: str):
        self.path = path
        self.version = version
        self._entries: dict[str, dict] = {}
        if path.is_file():
            lines = path.read_text().splitlines()
            if lines and json.loads(lines[0]).get("version") == version:
                for line in lines[1:]:
                    try:
                        entry = json.loads(line)
                    except json.JSONDecodeError:  # the last line of an interrupted write
                        continue
                    self._entries[entry["path"]] = entry
        path.parent.mkdir(parents=True, exist_ok=True)
        self.arrays_dir = path.with_suffix(".arrays")
        self._maps: dict[str, mmap.mmap] = {}
        self._handle = path.open("w")
        self._handle.write(json.dumps({"version": version}) + "\n")
        for entry in self._entries.values():
            self._handle.write(json.dumps(entry) + "\n")
        self._handle.flush()

    @staticmethod
    def _stamp(file: Path) -> tuple[int, int]:
        stat = file.stat()
        return stat.st_size, stat.st_mtime_ns

    def get(self, relpath: str, file: Path) -> tuple[list[Sample] | None, str | None] | None:
        """``(samples, None)`` or ``(None, reason)`` for a file validated before and unchanged since; else None."""
        entry = self._entries.get(relpath)
        if entry is None or tuple(entry["stamp"]) != self._stamp(file):
            return None
        if entry["error"] == _WRITTEN:  # written in this session (not kept in memory): read it again
            return None
        if entry["error"] is not None:
            return None, entry["error"]
        try:
            return self._samples(entry["samples"]), None
        except (OSError, ValueError):  # a side file lost or cut: validate the file again
            return None

    def _load_array(self, ref) -> np.ndarray:
        """A memory-mapped view: ``ref`` is ``{"file", "offset", "dtype", "shape"}`` into a side file."""
        if isinstance(ref, str):  # a single-array .npy side file (caches written before side files were packed)
            return np.load(self.arrays_dir / ref, mmap_mode="r")
        mapped = self._maps.get(ref["file"])
        if mapped is None:
            with (self.arrays_dir / ref["file"]).open("rb") as handle:
                mapped = self._maps[ref["file"]] = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        dtype = np.dtype(ref["dtype"])
        count = int(np.prod(ref["shape"], dtype=np.int64))
        if ref["offset"] + count * dtype.itemsize > len(mapped):
            raise ValueError(f"side file {ref['file']} is shorter than its index says")
        # a plain read-only ndarray over the mapping (lighter than an np.memmap view: one per array, many arrays)
        return np.frombuffer(mapped, dtype=dtype, count=count, offset=ref["offset"]).reshape(ref["shape"])

    def _samples(self, encoded: list[dict]) -> list[Sample]:
        """Samples from their JSON, short strings interned: a file's cells share their panel, tissue, donor..."""
        samples = [sample_from_json(s, self._load_array) for s in encoded]
        for sample in samples:
            if isinstance(sample, Sample):
                sample.source_path = sys.intern(sample.source_path)
                for key, value in sample.fields.items():
                    if isinstance(value, str) and len(value) <= 256:
                        sample.fields[key] = sys.intern(value)
        return samples

    def put(self, relpath: str, file: Path, samples: list[Sample] | None, error: str | None) -> list[Sample] | None:
        """Record a file's outcome; return its samples with large arrays swapped for memory-mapped views of the
        file's one side file. The samples are not kept in memory after they are written."""
        stamp = list(self._stamp(file))
        name = hashlib.sha256(json.dumps([relpath, stamp]).encode()).hexdigest()[:32] + ".bin"
        target = self.arrays_dir / name
        tmp = target.with_suffix(".tmp")
        handle = None
        offset = 0

        def save(array: np.ndarray) -> dict:
            nonlocal handle, offset
            if handle is None:
                self.arrays_dir.mkdir(parents=True, exist_ok=True)
                handle = tmp.open("wb")
            data = np.ascontiguousarray(array)
            pad = -offset % 16  # aligned views for every dtype
            handle.write(b"\0" * pad)
            offset += pad
            ref = {"file": name, "offset": offset, "dtype": data.dtype.str, "shape": list(data.shape)}
            handle.write(data.tobytes())
            offset += data.nbytes
            return {"__array__": ref}

        try:
            encoded = None if samples is None else [sample_to_json(s, save) for s in samples]
        finally:
            if handle is not None:
                handle.close()
        if handle is not None:
            self._maps.pop(name, None)
            tmp.replace(target)
        entry = {"path": relpath, "stamp": stamp, "error": error, "samples": encoded}
        self._handle.write(json.dumps(entry) + "\n")
        self._handle.flush()
        self._entries[relpath] = {**entry, "samples": None, "error": error or _WRITTEN}
        return None if encoded is None else self._samples(encoded)

    def close(self) -> None:
        self._handle.close()
