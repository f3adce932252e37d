"""A per-source record of files already validated, so an interrupted build resumes where it stopped."""

from __future__ import annotations

import json
from pathlib import Path

from multimed_hf.data.sample import Sample, sample_from_json, sample_to_json

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
        return [sample_from_json(s) for s in entry["samples"]], None

    def put(self, relpath: str, file: Path, samples: list[Sample] | None, error: str | None) -> None:
        entry = {
            "path": relpath, "stamp": list(self._stamp(file)), "error": error,
            "samples": None if samples is None else [sample_to_json(s) for s in samples],
        }
        self._entries[relpath] = entry
        self._handle.write(json.dumps(entry) + "\n")
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()
