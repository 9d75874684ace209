"""Tumour masks: where an image's mask is, and reading it resized or cut to the head."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from brainmri.config import CLASS_NAMES, SPLITS, TUMOUR_CLASSES
from brainmri.phantom import load_mask, mask_path

NOTUMOR = next(c for c in CLASS_NAMES if c not in TUMOUR_CLASSES)
GLIOMA = TUMOUR_CLASSES[0]


def test_load_mask(small_set: Path, tmp_path: Path) -> None:
    image_path = small_set / SPLITS[0] / GLIOMA / "phantom_glioma_00001.jpg"
    full = load_mask(image_path, small_set)
    assert full is not None and full.dtype == bool and full.shape == (64, 64) and full.any()
    half = load_mask(image_path, small_set, size=32)
    assert half is not None and half.shape == (32, 32)
    assert np.array_equal(half, full[::2, ::2])  # nearest neighbour, no smoothing
    # cropped to the head, the mask is cut by the square its image is cut by
    from brainmri.data import brain_box, load_image

    x0, y0, side = brain_box(load_image(image_path, 64))
    cut = load_mask(image_path, small_set, crop=True)
    assert (
        cut is not None and side < 64 and np.array_equal(cut, full[y0 : y0 + side, x0 : x0 + side])
    )
    empty = load_mask(small_set / SPLITS[1] / NOTUMOR / "phantom_notumor_00000.jpg", small_set)
    assert empty is not None and not empty.any()
    # an image of a data set without masks (e.g. the Kaggle one) has none
    assert load_mask(tmp_path / SPLITS[0] / GLIOMA / "x.jpg", tmp_path) is None
    with pytest.raises(ValueError, match="not inside the data root"):
        mask_path(tmp_path / "elsewhere.jpg", small_set)
