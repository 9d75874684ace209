"""Localisation reports against masks and their JSON summary."""

from __future__ import annotations

import json

import numpy as np
import pytest
from matplotlib.figure import Figure

from brainmri import explain as ex
from brainmri.plotting import explain as pex


def test_localisation_report_and_summary(cnn, square_data):
    x, _, masks = square_data(4, 32, seed=1)
    labels = ["glioma", "meningioma", "glioma", "pituitary"]
    df = ex.localisation_report(cnn, x, masks, labels, methods=["gradcam"], seed=0, steps=4)
    assert len(df) == 4 * 3
    assert list(dict.fromkeys(df["method"])) == ["gradcam", "random", "centre"]
    real = df[df["method"] == "gradcam"]
    # Every map is scored for faithfulness, the baselines too: they are the reference point.
    assert df[["deletion_auc", "insertion_auc"]].notna().all().all()
    maps = ex.gradcam(cnn, x, class_index=np.array([0, 1, 0, 3]))
    assert list(real["energy"]) == pytest.approx(
        [ex.energy_pointing(maps[i], masks[i]) for i in range(4)]
    )
    summary = ex.summarise_localisation(df)
    json.dumps(summary, allow_nan=False)
    glioma = summary["classes"]["glioma"]
    assert glioma["n_images"] == 2
    assert glioma["mask_area_fraction"] == pytest.approx(masks[[0, 2]].mean())
    # Without slack both pointing games share a chance level; with slack the tolerant one's grows.
    assert glioma["tolerant_area_fraction"] == pytest.approx(glioma["mask_area_fraction"])
    slack = ex.localisation_report(
        cnn, x, masks, labels, methods=["gradcam"], steps=None, tolerance=3
    )
    grown = slack.drop_duplicates("image")["tolerant_area"].to_numpy()
    # a 10x10 square grown by 3 px: (10 + 6)^2 minus the four rounded corners, of 32x32
    assert np.all(grown > masks.mean(axis=(1, 2)) * 2) and np.all(grown < 256 / 1024)
    assert glioma["methods"]["gradcam"]["pointing_rate"] == pytest.approx(
        df[(df.label == "glioma") & (df.method == "gradcam")]["pointing"].mean()
    )
    assert summary["classes"]["meningioma"]["methods"]["random"]["deletion_auc"] is not None
    assert set(summary["overall"]["methods"]) == {"gradcam", "random", "centre"}
    fig = pex.plot_localisation_summary(summary)
    assert isinstance(fig, Figure) and len(fig.axes) == 3
    # one figure legend (methods and chance), no legend inside a panel
    (legend,) = fig.legends
    assert sorted(t.get_text() for t in legend.get_texts()) == [
        "centre",
        "chance",
        "gradcam",
        "random",
    ]
    assert all(ax.get_legend() is None for ax in fig.axes)


def test_faithfulness_can_be_limited_to_the_first_images_of_each_class(cnn, square_data):
    """The cheap metrics on every image, deletion/insertion on the first of each class only."""
    x, _, masks = square_data(4, 32, seed=1)
    labels = ["glioma", "meningioma", "glioma", "pituitary"]
    run = dict(methods=["gradcam"], seed=0, steps=4)
    full = ex.localisation_report(cnn, x, masks, labels, **run)
    first = ex.localisation_report(cnn, x, masks, labels, **run, faithfulness_images=1)
    aucs = ["deletion_auc", "insertion_auc"]
    cheap = [c for c in full.columns if c not in aucs]
    assert first[cheap].equals(full[cheap])
    scored = first["image"] != 2  # the second glioma
    assert first.loc[scored, aucs].equals(full.loc[scored, aucs])
    assert first.loc[~scored, aucs].isna().all().all() and len(first[~scored]) == 3
    glioma = ex.summarise_localisation(first)["classes"]["glioma"]
    assert (glioma["n_images"], glioma["n_faithfulness"]) == (2, 1)
    auc = full[(full["image"] == 0) & (full["method"] == "gradcam")]["deletion_auc"].item()
    assert glioma["methods"]["gradcam"]["deletion_auc"] == pytest.approx(auc)
    assert ex.summarise_localisation(full)["classes"]["glioma"]["n_faithfulness"] == 2
    with pytest.raises(ValueError, match="faithfulness_images: expected None or >= 1, got 0"):
        ex.localisation_report(cnn, x, masks, labels, **run, faithfulness_images=0)


def test_a_capped_scorecam_is_named_as_such(cnn, square_data):
    x, _, masks = square_data(2, 32, seed=2)
    labels = ["glioma", "pituitary"]
    capped = ex.localisation_report(
        cnn, x, masks, labels, methods=["scorecam"], steps=None, max_channels=3
    )
    assert list(dict.fromkeys(capped["method"])) == [
        "scorecam (top 3 channels)",
        "random",
        "centre",
    ]
    full = ex.localisation_report(cnn, x, masks, labels, methods=["scorecam"], steps=None)
    assert full["method"].iloc[0] == "scorecam"
    with pytest.raises(ValueError, match="empty mask"):
        ex.localisation_report(cnn, x, np.zeros_like(masks), labels, methods=["gradcam"])
    with pytest.raises(ValueError, match="labels"):
        ex.localisation_report(cnn, x, masks, ["tumour"] * 4, methods=["gradcam"])


def test_randomization_curve_marks_flat_steps():
    steps = [
        {"layer": "logits", "cascading": 0.4, "cascading_flat": 0, "independent": 0.4,
         "independent_flat": 0},
        {"layer": "block7a", "cascading": None, "cascading_flat": 8, "independent": 0.9,
         "independent_flat": 0},
    ]  # fmt: skip
    fig = pex.plot_randomization_curve({"steps": steps, "n_images": 8, "method": "gradcam"})
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["logits", "block7a"]
    assert len(ax.lines) == 3  # two curves and the threshold
    assert len(ax.collections) == 1  # one cross: the flat cascading step
    with pytest.raises(ValueError, match="no steps"):
        pex.plot_randomization_curve({"steps": []})
