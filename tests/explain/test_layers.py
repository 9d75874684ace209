"""brainmri.explain.layers: the candidate layers, their localisation per tumour class, the goals."""

from __future__ import annotations

from pathlib import Path

import keras
import pytest
from keras import layers

from brainmri import explain as ex


def _three_grids(head) -> keras.Model:
    """Plain convolutions at 64, 32 and 16 px (no residual sums), Grad-CAM's map at 16."""
    inp = keras.Input((64, 64, 3), name="image")
    x = layers.Rescaling(1 / 255.0)(inp)
    x = layers.Conv2D(4, 3, padding="same", activation="relu", name="conv64")(x)
    x = layers.MaxPooling2D(2, name="pool64")(x)
    x = layers.Conv2D(4, 3, padding="same", activation="relu", name="conv32")(x)
    x = layers.MaxPooling2D(2, name="pool32")(x)
    x = layers.Conv2D(4, 3, padding="same", name="conv16")(x)
    return keras.Model(inp, head(layers.Activation("relu", name="top_activation")(x)))


def _residual(head) -> keras.Model:
    """Two residual blocks at 32 px, each followed by a layer that is no block's output."""
    inp = keras.Input((32, 32, 3), name="image")
    x = layers.Conv2D(4, 3, padding="same", name="stem")(layers.Rescaling(1 / 255.0)(inp))
    for block in (1, 2):
        y = layers.Conv2D(4, 3, padding="same", name=f"block{block}_conv")(x)
        x = layers.Add(name=f"block{block}_add")([x, y])
        x = layers.Conv2D(4, 1, name=f"block{block + 1}_expand")(x)
    x = layers.MaxPooling2D(2, name="pool")(x)
    return keras.Model(inp, head(layers.Activation("relu", name="top_activation")(x)))


def test_candidates_are_the_default_layer_then_each_finer_grid_coarse_to_fine(cnn, head):
    assert ex.candidate_layers(cnn) == ["top_activation", "conv1"]  # 16 px, then 32 px
    model = _three_grids(head)
    # the last 4-D layer of each grid (a pooling's output already lies on the next grid)
    assert ex.candidate_layers(model) == ["top_activation", "conv32", "conv64"]
    assert ex.candidate_layers(model, finest=2) == ["top_activation", "conv32"]
    assert ex.candidate_layers(model, finest=1) == ["top_activation"]


def test_in_a_residual_model_the_candidates_are_block_outputs(head):
    """A grid's last residual sum, not the expansion after it that only the next block reads."""
    assert ex.candidate_layers(_residual(head)) == ["top_activation", "block2_add"]


def test_scores_per_tumour_class_at_each_layer_match_the_localisation_report(cnn, square_data):
    x, _, masks = square_data(6, 32, seed=3)
    labels = ["glioma", "meningioma", "pituitary"] * 2
    layer_names = ex.candidate_layers(cnn)
    results = ex.score_layers(cnn, x, masks, labels, layer_names, tolerance=3.0)
    assert [(r["layer"], r["grid"]) for r in results] == [("top_activation", 16), ("conv1", 32)]
    for r in results:
        summary = ex.summarise_localisation(
            ex.localisation_report(
                cnn,
                x,
                masks,
                labels,
                methods=["gradcam"],
                steps=None,
                layer_name=r["layer"],
                tolerance=3.0,
            )
        )
        for label in ("glioma", "meningioma", "pituitary"):
            block = summary["classes"][label]["methods"]
            s = r[label]
            assert s["n"] == 2
            assert s["pointing_rate"] == block["gradcam"]["pointing_rate"]
            assert s["pointing_rate_strict"] == block["gradcam"]["pointing_rate_strict"]
            assert s["energy_ratio"] == pytest.approx(block["gradcam"]["energy_ratio"])
            assert s["centre_pointing_rate"] == block["centre"]["pointing_rate"]
            assert 0.0 <= s["pointing_rate_strict"] <= s["pointing_rate"] <= 1.0
        classes = ("glioma", "meningioma", "pituitary")
        assert r["meets_goals"] == all(ex.meets_goals(r[c]) for c in classes)
    # a class without images has no entry, and the verdict is over the classes present
    (only,) = ex.score_layers(cnn, x[:1], masks[:1], labels[:1], ["conv1"], tolerance=3.0)
    assert "meningioma" not in only and "pituitary" not in only and only["glioma"]["n"] == 1
    assert only["meets_goals"] == ex.meets_goals(only["glioma"])


def test_the_goals_need_pointing_energy_and_a_lead_over_the_centre_prior():
    met = {"pointing_rate": 0.80, "energy_ratio": 3.0, "centre_pointing_rate": 0.5}
    assert (ex.MIN_POINTING, ex.MIN_ENERGY_RATIO) == (0.80, 3.0)  # issue 18
    assert ex.meets_goals(met)  # the thresholds themselves count
    assert not ex.meets_goals(met | {"pointing_rate": 0.79})
    assert not ex.meets_goals(met | {"energy_ratio": 2.99})
    assert not ex.meets_goals(met | {"centre_pointing_rate": 0.80})  # no better than the centre
    assert not ex.meets_goals(met | {"energy_ratio": None})  # no mean: not met
    assert not ex.meets_goals({"pointing_rate": 1.0})


def test_the_study_parser_names_a_run_its_masks_and_how_many_lesions():
    from brainmri.explain.layers import study_parser

    parser = study_parser("a study", root=Path("/project"))
    args = parser.parse_args([])
    assert (args.profile, args.root, args.mask_dir) == ("cpu", Path("/project"), None)
    assert args.per_class >= 100_000  # every lesion with a mask
    given = ["--profile", "smoke", "--root", "/x", "--mask-dir", "m", "--per-class", "60"]
    args = parser.parse_args(given)
    assert (args.profile, args.root, args.mask_dir, args.per_class) == (
        "smoke",
        Path("/x"),
        "m",
        60,
    )
