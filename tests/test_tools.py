"""The developer tools in tools/: the localisation study runs end to end on the smoke profile."""

from __future__ import annotations

import importlib.util
import json

import pytest

from brainmri.config import TUMOUR_CLASSES


def _load(project_root, name):
    spec = importlib.util.spec_from_file_location(name, project_root / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_localisation_study_trains_and_scores_each_seed(project_root, capsys):
    study = _load(project_root, "localisation_study")
    assert study.main(["--profile", "smoke", "--seeds", "0", "1", "--set", "cnn_convs=1"]) == 0
    lines = [
        json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")
    ]
    assert [r["seed"] for r in lines] == [0, 1]
    for r in lines:
        assert r["overrides"] == {"cnn_convs": 1}
        assert 0.0 <= r["accuracy"] <= 1.0
        assert len(r["val_accuracy"]) == r["epochs"]  # the validation curve, one value per epoch
        for label in TUMOUR_CLASSES:
            scores = r[label]
            assert 0.0 <= scores["pointing_rate_strict"] <= scores["pointing_rate"] <= 1.0
            assert scores["energy_ratio"] >= 0.0


def test_localisation_study_rejects_bad_settings(project_root, capsys):
    study = _load(project_root, "localisation_study")
    with pytest.raises(SystemExit):
        study.main(["--set", "no_such_key=1"])
    assert "no_such_key" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        study.main(["--profile", "cpu"])
    assert "data_source must be 'phantom'" in capsys.readouterr().err
