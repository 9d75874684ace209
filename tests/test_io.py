"""Atomic writes: whole files or none, and as readable as any file the user creates."""

from __future__ import annotations

import os
import stat

import pandas as pd
import pytest

from brainmri import io


def test_written_files_follow_the_umask_not_mkstemps_private_mode(tmp_path):
    previous = os.umask(0o022)
    try:
        path = io.write_json(tmp_path / "a" / "metrics.json", {"x": 1})
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert io.read_json(path) == {"x": 1}


def test_a_failed_write_keeps_the_earlier_file_and_leaves_no_temporary(tmp_path):
    path = io.write_csv(tmp_path / "m.csv", pd.DataFrame({"a": [1]}))
    with pytest.raises(TypeError):
        io.atomic_write(path, 123)  # neither bytes nor text
    assert path.read_text() == "a\n1\n"
    assert [p.name for p in tmp_path.iterdir()] == ["m.csv"]


def test_read_json_names_the_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json: not valid JSON"):
        io.read_json(bad)
    with pytest.raises(FileNotFoundError, match="missing.json: no such file"):
        io.read_json(tmp_path / "missing.json")
