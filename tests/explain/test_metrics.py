"""Localisation metrics on hand-made maps, faithfulness, and where Grad-CAM points after training."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import layers

from brainmri import config
from brainmri import explain as ex

K = len(config.CLASS_NAMES)


# --- localisation metrics ---------------------------------------------------------------------


def test_pointing_game():
    mask = np.zeros((8, 8), bool)
    mask[2:5, 2:5] = True
    assert not ex.pointing_game(np.full((8, 8), 0.7), mask)  # flat map: a miss
    assert not ex.pointing_game(np.zeros((8, 8)), mask)
    hit = np.zeros((8, 8))
    hit[3, 3] = 1.0
    assert ex.pointing_game(hit, mask)
    miss = np.zeros((8, 8))
    miss[7, 0] = 1.0
    assert not ex.pointing_game(miss, mask)
    with pytest.raises(ValueError, match="mask"):
        ex.pointing_game(hit, mask[:4])


def test_pointing_tolerance_counts_near_misses():
    mask = np.zeros((32, 32), bool)
    mask[10:14, 10:14] = True
    cam = np.zeros((32, 32), np.float32)
    cam[10, 17] = 1.0  # 4 px right of the mask's edge
    assert not ex.pointing_game(cam, mask)
    assert not ex.pointing_game(cam, mask, tolerance=3.0)
    assert ex.pointing_game(cam, mask, tolerance=4.0)


def test_energy_and_iou_on_hand_made_maps():
    mask = np.zeros((8, 8), bool)
    mask[:4, :4] = True  # 16 of 64 pixels
    cam = np.full((8, 8), 0.5)
    cam[:4, :4] = 1.0
    assert np.isclose(ex.energy_pointing(cam, mask), 16 / (16 + 48 * 0.5))
    assert np.isclose(ex.energy_ratio(cam, mask), (16 / 40) / (16 / 64))
    assert ex.energy_pointing(np.zeros((8, 8)), mask) == 0.0
    assert np.isclose(ex.energy_ratio(np.ones((8, 8)), mask), 1.0)  # uniform = chance
    block = np.zeros((8, 8))
    block[2:6, :4] = 0.9  # overlaps rows 2-3 of the mask: 8 shared, 24 in the union
    assert np.isclose(ex.otsu_iou(block, mask), 8 / 24)
    assert np.isclose(ex.otsu_iou(cam, mask), 1.0)
    with pytest.raises(ValueError, match="at least one True"):
        ex.energy_ratio(cam, np.zeros((8, 8), bool))
    with pytest.raises(ValueError, match="finite"):
        ex.energy_pointing(-cam, mask)


@pytest.mark.slow
def test_gradcam_points_at_the_lesion_of_a_model_trained_on_phantoms(trained_phantom):
    """Grad-CAM's maximum lies inside the lesion for 90% or more of the tumour test images, and
    within the standard tolerance (15 px at 224 px) for 90% or more of each tumour class."""
    from brainmri import inputs as inp
    from brainmri.config import TUMOUR_CLASSES, load_profile
    from brainmri.phantom import load_mask

    model, root, size, _ = trained_phantom
    tolerance = load_profile("default")["gradcam"]["pointing_tolerance"] * size
    strict_hits = []
    for label in TUMOUR_CLASSES:
        files = sorted((root / "Testing" / label).glob("*.jpg"))
        images = inp.load_batch(files, size)
        masks = [load_mask(f, root, size) for f in files]
        maps = ex.gradcam(model, images, class_index=config.CLASS_NAMES.index(label))
        hits = [ex.pointing_game(m, k, tolerance) for m, k in zip(maps, masks, strict=True)]
        assert np.mean(hits) >= 0.9, label
        strict_hits += [ex.pointing_game(m, k) for m, k in zip(maps, masks, strict=True)]
        # A random map of the same images points far less often.
        random_hits = [
            ex.pointing_game(m, k, tolerance)
            for m, k in zip(ex.random_map(images, 0), masks, strict=True)
        ]
        assert np.mean(random_hits) < np.mean(hits) - 0.3, label
    assert np.mean(strict_hits) >= 0.9


# --- faithfulness -----------------------------------------------------------------------------


def _region_model(size: int = 32) -> keras.Model:
    """Class 0's logit grows with the mean brightness of rows/cols 12..19 only."""
    inp = keras.Input((size, size, 3))
    gray = layers.Conv2D(1, 1, use_bias=False, name="gray")(layers.Rescaling(1 / 255.0)(inp))
    region = layers.Cropping2D(((12, size - 20), (12, size - 20)))(gray)
    pooled = layers.GlobalAveragePooling2D()(region)
    logits = layers.Dense(K, name=config.LOGITS_LAYER)(pooled)
    model = keras.Model(inp, layers.Activation("softmax", name="probs")(logits))
    model.get_layer("gray").set_weights([np.full((1, 1, 3, 1), 1 / 3, np.float32)])
    slope = np.zeros((1, K), np.float32)
    slope[0, 0] = 20.0
    bias = np.zeros(K, np.float32)
    bias[0] = -15.0  # p(class 0) high only when the region is bright
    model.get_layer(config.LOGITS_LAYER).set_weights([slope, bias])
    return model


def test_deletion_auc_below_insertion_auc_for_a_cam_on_the_evidence():
    model = _region_model()
    image = np.zeros((32, 32, 3), np.float32)
    image[12:20, 12:20] = 255.0
    cam = np.zeros((32, 32), np.float32)
    cam[12:20, 12:20] = 1.0
    good = ex.deletion_insertion(model, image, cam, class_index=0, steps=16)
    assert good["deletion_auc"] < 0.2 < 0.8 < good["insertion_auc"]
    assert len(good["deletion_curve"]) == 17
    assert good["deletion_curve"][0] == pytest.approx(good["insertion_curve"][-1], abs=1e-6)
    bad = ex.deletion_insertion(model, image, 1.0 - cam, class_index=0, steps=16)
    assert bad["deletion_auc"] > good["deletion_auc"]
    assert bad["insertion_auc"] < good["insertion_auc"]
