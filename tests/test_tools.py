"""The developer tools in tools/: the localisation study runs end to end on the smoke profile."""

from __future__ import annotations

import argparse
import json
import re

import numpy as np
import pytest

from brainmri.config import TUMOUR_CLASSES


@pytest.mark.slow
def test_localisation_study_trains_and_scores_each_seed(capsys, load_script):
    study = load_script("tools/localisation_study.py")
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


def test_localisation_study_rejects_bad_settings(capsys, load_script):
    study = load_script("tools/localisation_study.py")
    with pytest.raises(SystemExit):
        study.main(["--set", "no_such_key=1"])
    assert "no_such_key" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        study.main(["--profile", "cpu"])
    assert "data_source must be 'phantom'" in capsys.readouterr().err


# Only the evaluation reads the test subset: these two stages may name it, nothing else may.
READS_TESTING = ("04_evaluate", "05_gradcam")
TESTING_ACCESS = re.compile(
    r"""((subset(_files)?|rows)\([^)]*["'](test|headline)["']|["']Testing/)"""
)


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


@pytest.mark.slow
def test_cam_layer_study_scores_the_default_and_finer_layers(trained_phantom, load_script):
    """Each candidate (brainmri.explain.layers, which the tool calls) is scored per tumour class
    on a trained model; the goals verdict follows from the scores; the tool tabulates them."""
    from brainmri import explain, inputs, phantom

    study = load_script("tools/cam_layer_study.py")
    model, root, size, _ = trained_phantom
    layers = explain.candidate_layers(model)
    assert layers[0] == explain.find_target_layer(model)
    grids = [model.get_layer(name).output.shape[1] for name in layers]
    assert grids == sorted(grids) and len(set(grids)) == len(grids) > 1  # finer and finer
    assert grids[-1] <= 4 * grids[0]

    files = [
        f for label in TUMOUR_CLASSES for f in sorted((root / "Testing" / label).iterdir())[:3]
    ]
    masks = np.stack([phantom.load_mask(f, root, size) for f in files])
    labels = [f.parent.name for f in files]
    results = explain.score_layers(
        model, inputs.load_batch(files, size), masks, labels, layers[:2], tolerance=4.0
    )
    assert [r["layer"] for r in results] == layers[:2]
    for r in results:
        for label in TUMOUR_CLASSES:
            s = r[label]
            assert s["n"] == 3
            assert 0.0 <= s["pointing_rate_strict"] <= s["pointing_rate"] <= 1.0
            assert 0.0 <= s["centre_pointing_rate"] <= 1.0 and s["energy_ratio"] >= 0.0
        met = all(
            r[c]["pointing_rate"] >= explain.MIN_POINTING
            and r[c]["energy_ratio"] >= explain.MIN_ENERGY_RATIO
            and r[c]["pointing_rate"] > r[c]["centre_pointing_rate"]
            for c in TUMOUR_CLASSES
        )
        assert r["meets_goals"] == met
    text = study.table(results)
    assert "centre prior" in text and layers[0] in text


def test_cam_layer_study_needs_a_trained_run(project_root, tmp_path, capsys, load_script):
    study = load_script("tools/cam_layer_study.py")
    (tmp_path / "params").mkdir()
    for name in ("default", "cpu"):
        (tmp_path / "params" / f"{name}.yaml").write_text(
            (project_root / "params" / f"{name}.yaml").read_text()
        )
    with pytest.raises(SystemExit):
        study.main(["--profile", "cpu", "--root", str(tmp_path)])
    assert "run the 01_download stage first (make all PROFILE=cpu)" in capsys.readouterr().err


def test_guidance_study_rejects_bad_variants(project_root, tmp_path, capsys, load_script):
    """Only the guided phase's own parameters, each a number; guidance on (the end-to-end run
    of the tool is in test_pipeline.py, on the smoke run)."""
    study = load_script("tools/guidance_study.py")
    assert study.parse_variant("lesion_guidance=1,guidance_margin=0.067") == {
        "lesion_guidance": 1,
        "guidance_margin": 0.067,
    }
    # exponents without a dot, which YAML 1.1 reads as strings
    assert study.parse_variant("guidance_learning_rate=2e-5") == {"guidance_learning_rate": 2e-5}
    for bad in ("learning_rate=1e-3", "lesion_guidance"):
        with pytest.raises(argparse.ArgumentTypeError, match="KEY one of lesion_guidance"):
            study.parse_variant(bad)
    with pytest.raises(
        argparse.ArgumentTypeError, match="seed = '1;seed=2': expected a finite number"
    ):
        study.parse_variant("seed=1;seed=2")
    for bad in ("nan", ".inf", "[1", "true"):
        with pytest.raises(argparse.ArgumentTypeError, match="expected a finite number"):
            study.parse_variant(f"lesion_guidance={bad}")
    (tmp_path / "params").mkdir()
    for name in ("default", "smoke"):
        (tmp_path / "params" / f"{name}.yaml").write_text(
            (project_root / "params" / f"{name}.yaml").read_text()
        )
    with pytest.raises(SystemExit):
        study.main(["--profile", "smoke", "--root", str(tmp_path), "--variant", "seed=1"])
    assert "lesion_guidance and guidance_epochs must be > 0" in capsys.readouterr().err
    guided = "lesion_guidance=1,guidance_epochs=1"
    with pytest.raises(SystemExit):
        study.main(["--profile", "smoke", "--root", str(tmp_path), "--variant", guided])
    assert "run the 01_download stage first (make all PROFILE=smoke)" in capsys.readouterr().err
    for mix in ("0", "1", "1.5"):  # 0 is the start and 1 the kept epoch: both scored anyway
        with pytest.raises(SystemExit):
            study.main(["--root", str(tmp_path), "--variant", "seed=1", "--mix", "0.5", mix])
        assert "each fraction must lie strictly between 0 and 1" in capsys.readouterr().err


def test_guidance_study_interpolates_weights_between_start_and_kept_epoch(load_script):
    study = load_script("tools/guidance_study.py")
    start = [np.array([[0.0, 2.0]], np.float32), np.array([1.0]), np.array([3], np.int64)]
    end = [np.array([[4.0, -2.0]], np.float32), np.array([5.0]), np.array([7], np.int64)]
    quarter = study.interpolate(start, end, 0.25)
    np.testing.assert_allclose(quarter[0], [[1.0, 1.0]])
    np.testing.assert_allclose(quarter[1], [2.0])
    assert quarter[0].dtype == np.float32
    assert quarter[2].tolist() == [7]  # a counter (an integer variable) is not averaged
    for mix, expected in ((0.0, [*start[:2], end[2]]), (1.0, end)):
        for got, want in zip(study.interpolate(start, end, mix), expected, strict=True):
            np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="not of the same model"):
        study.interpolate(start, end[:2], 0.5)
    with pytest.raises(ValueError, match="not of the same model"):
        study.interpolate(start, [np.zeros((2, 1)), *end[1:]], 0.5)


def test_guidance_study_picks_the_most_accurate_variant_that_localises(load_script):
    study = load_script("tools/guidance_study.py")
    rows = [
        {"variant": {"lesion_guidance": 3}, "epoch": 1, "val_accuracy": 0.96, "meets_goals": True},
        {"variant": {"lesion_guidance": 3}, "epoch": 2, "val_accuracy": 0.97, "meets_goals": True},
        {"variant": {"lesion_guidance": 1}, "epoch": 1, "val_accuracy": 0.98, "meets_goals": False},
        {"variant": {"lesion_guidance": 1}, "epoch": 2, "val_accuracy": 0.97, "meets_goals": True},
    ]
    assert study.kept(rows[:2])["epoch"] == 2  # the best validation accuracy, as the pipeline
    assert study.kept([rows[0], {**rows[1], "val_accuracy": 0.96}])["epoch"] == 1  # earliest
    best = [study.kept(rows[:2]), study.kept(rows[2:])]
    assert best[1]["epoch"] == 1 and not best[1]["meets_goals"]
    assert study.choose(best) is best[0]  # the only kept epoch that localises
    assert study.choose([rows[1], rows[3]]) is rows[3]  # equal accuracy: the lower weight
    assert study.choose([rows[2]]) is None
