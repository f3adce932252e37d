"""A per-source record of files already validated, so an interrupted build resumes where it stopped.

Large arrays (EEG epochs, expression profiles) go to ``.npy`` side files named by their content hash and come back
memory-mapped, so neither the JSON nor the build's memory holds a whole source's arrays."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from multimed_hf.data.sample import Sample, array_digest, sample_from_json, sample_to_json

__all__ = ["ValidationCache"]


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
        if entry["error"] is not None:
            return None, entry["error"]
        try:
            return [sample_from_json(s, self._load_array) for s in entry["samples"]], None
        except (OSError, ValueError):  # a side file lost or cut: validate the file again
            return None

    def _save_array(self, array: np.ndarray) -> dict:
        digest = array_digest(array)["__array__"]
        name = f"{digest['sha256'][:32]}.npy"
        target = self.arrays_dir / name
        if not target.is_file():
            self.arrays_dir.mkdir(parents=True, exist_ok=True)
            tmp = target.with_suffix(".tmp.npy")
            np.save(tmp, np.ascontiguousarray(array))
            tmp.replace(target)
        return {"__array__": name}

    def _load_array(self, name: str) -> np.ndarray:
        return np.load(self.arrays_dir / name, mmap_mode="r")

    def put(self, relpath: str, file: Path, samples: list[Sample] | None, error: str | None) -> list[Sample] | None:
        """Record a file's outcome; return its samples with large arrays swapped for memory-mapped copies."""
        entry = {
            "path": relpath, "stamp": list(self._stamp(file)), "error": error,
            "samples": None if samples is None else [sample_to_json(s, self._save_array) for s in samples],
        }
        self._entries[relpath] = entry
        self._handle.write(json.dumps(entry) + "\n")
        self._handle.flush()
        return None if samples is None else [sample_from_json(s, self._load_array) for s in entry["samples"]]

    def close(self) -> None:
        self._handle.close()
