"""Builder versions made from other files' content survive files that cannot be read (each is rejected when read)."""

from pathlib import Path

from multimed_hf.builders._records import dependency_version


def test_a_dependency_that_cannot_be_read_changes_the_version_without_stopping_the_build(tmp_path):
    # before: opening it raised (PermissionError for a file of another user, IsADirectoryError for a folder named like
    # an index), and the version, taken before any file is read, stopped the whole build with a traceback
    index = tmp_path / "index.csv"
    index.write_text("a,b\n")
    readable = dependency_version("1", [index])
    index.unlink()
    index.mkdir()  # what some unzip tools leave: a folder of the index's name
    unreadable = dependency_version("1", [index])
    assert unreadable.startswith("1:") and unreadable != readable
    assert dependency_version("1", [Path(index)]) == unreadable  # stable: the cache keys on it
