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
    assert real[["deletion_auc", "insertion_auc"]].notna().all().all()
    assert df[df["method"] != "gradcam"][["deletion_auc", "insertion_auc"]].isna().all().all()
    maps = ex.gradcam(cnn, x, class_index=np.array([0, 1, 0, 3]))
    assert list(real["energy"]) == pytest.approx(
        [ex.energy_pointing(maps[i], masks[i]) for i in range(4)]
    )
    summary = ex.summarise_localisation(df)
    json.dumps(summary, allow_nan=False)
    glioma = summary["classes"]["glioma"]
    assert glioma["n_images"] == 2
    assert glioma["mask_area_fraction"] == pytest.approx(masks[[0, 2]].mean())
    assert glioma["methods"]["gradcam"]["pointing_rate"] == pytest.approx(
        df[(df.label == "glioma") & (df.method == "gradcam")]["pointing"].mean()
    )
    assert summary["classes"]["meningioma"]["methods"]["random"]["deletion_auc"] is None
    assert set(summary["overall"]["methods"]) == {"gradcam", "random", "centre"}
    fig = pex.plot_localisation_summary(summary)
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    with pytest.raises(ValueError, match="empty mask"):
        ex.localisation_report(cnn, x, np.zeros_like(masks), labels, methods=["gradcam"])
    with pytest.raises(ValueError, match="labels"):
        ex.localisation_report(cnn, x, masks, ["tumour"] * 4, methods=["gradcam"])
