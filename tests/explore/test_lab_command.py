"""brainmri.explore.lab (make lab): JupyterLab on the explorer when a run has finished, else on the
notebooks with the command that makes a run."""

from __future__ import annotations

import sys

from brainmri.explore.lab import lab_command
from brainmri.io import write_json


def test_make_lab_opens_the_explorer_of_the_latest_run(tmp_path):
    for name in ("demo", "cpu"):
        folder = tmp_path / "reports" / name
        folder.mkdir(parents=True)
        (folder / "model.keras").write_bytes(b"")
        write_json(folder / "metrics.json", {"evaluate": {}})
    argv, line = lab_command(tmp_path)
    assert argv[:3] == [sys.executable, "-m", "jupyterlab"]
    assert f"--ServerApp.root_dir={tmp_path / 'notebooks'}" in argv
    assert "--LabApp.default_url=/lab/tree/explore.ipynb" in argv
    assert "notebooks/explore.ipynb opens the latest finished run" in line


def test_make_lab_without_a_run_says_how_to_make_one(tmp_path):
    argv, line = lab_command(tmp_path)
    assert not any(a.startswith("--LabApp.default_url") for a in argv)
    assert "no finished run" in line and "make all PROFILE=demo" in line
