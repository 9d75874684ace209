"""The developer tools in tools/: the localisation study runs end to end on the smoke profile."""

from __future__ import annotations

import importlib.util
import json
import re

import pytest

from brainmri.config import TUMOUR_CLASSES


def _load(project_root, name):
    spec = importlib.util.spec_from_file_location(name, project_root / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_localisation_study_trains_and_scores_each_seed(project_root, capsys):
    study = _load(project_root, "localisation_study")
    assert study.main(["--profile", "smoke", "--seeds", "0", "1", "--set", "cnn_convs=1"]) == 0
    lines = [
        json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")
    ]
    assert [r["seed"] for r in lines] == [0, 1]
    for r in lines:
        assert r["overrides"] == {"cnn_convs": 1}
        assert 0.0 <= r["val_accuracy_best"] <= 1.0
        assert len(r["val_accuracy_per_epoch"]) == r["epochs"]  # the validation curve
        assert "accuracy" not in r and "test_accuracy" not in r  # nothing scored on Testing
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


# Only the evaluation reads Testing: these two stages may name its subsets, nothing else may.
READS_TESTING = ("04_evaluate", "05_gradcam")
TESTING_ACCESS = re.compile(r"""(subset(_files)?\([^)]*["']test(_clean)?["']|["']Testing/)""")


def test_no_tool_study_or_earlier_stage_reads_testing(project_root):
    """Every choice is made on validation: only 04 and 05 may select the Testing subsets."""
    sources = sorted((project_root / "tools").glob("*.py"))
    sources += [
        p for p in sorted((project_root / "notebooks").glob("*.py")) if p.stem not in READS_TESTING
    ]
    offenders = [
        f"{path.relative_to(project_root)}:{n}: {line.strip()}"
        for path in sources
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if TESTING_ACCESS.search(line)
    ]
    assert not offenders, "Testing read outside the evaluation:\n" + "\n".join(offenders)
    # The pattern does find what it looks for (so the assertion above can fail).
    for stage in READS_TESTING:
        assert TESTING_ACCESS.search((project_root / "notebooks" / f"{stage}.py").read_text())
