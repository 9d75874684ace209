"""One phantom slice: types and masks, lesion anatomy, and no class cue outside the lesion."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from brainmri.config import CLASS_NAMES, TUMOUR_CLASSES
from brainmri.phantom import render_slice

NOTUMOR = next(c for c in CLASS_NAMES if c not in TUMOUR_CLASSES)
GLIOMA, MENINGIOMA, PITUITARY = TUMOUR_CLASSES


def _head_mask(image: np.ndarray) -> np.ndarray:
    """Return the filled outer outline of the head found in the image itself (uint8 0/255)."""
    smooth = cv2.medianBlur(image, 5)
    _, bright = cv2.threshold(smooth, 50, 255, cv2.THRESH_BINARY)
    contours, _ = cv2.findContours(bright, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    head = np.zeros_like(image)
    cv2.drawContours(head, [max(contours, key=cv2.contourArea)], -1, 255, thickness=-1)
    return head


@pytest.mark.parametrize("label", CLASS_NAMES)
def test_render_slice_types_and_masks(label: str) -> None:
    for seed in range(3):
        image, mask = render_slice(label, np.random.default_rng(seed), 64)
        assert image.dtype == np.uint8 and image.shape == (64, 64)
        assert mask.dtype == bool and mask.shape == (64, 64)
        assert image.std() > 10, "the slice should show a head, not a flat image"
        assert mask.any() == (label in TUMOUR_CLASSES)


def test_render_slice_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="astrocytoma"):
        render_slice("astrocytoma", np.random.default_rng(0), 64)
    with pytest.raises(ValueError, match="size"):
        render_slice(GLIOMA, np.random.default_rng(0), 8)
    with pytest.raises(ValueError, match="size"):
        render_slice(GLIOMA, np.random.default_rng(0), 64.0)  # type: ignore[arg-type]


@pytest.mark.parametrize("label", TUMOUR_CLASSES)
def test_same_generator_state_differs_only_around_the_lesion(label: str) -> None:
    """Nothing outside the lesion (and its halo) reveals the class: the head is class-free."""
    for seed in range(5):
        base, _ = render_slice(NOTUMOR, np.random.default_rng(seed), 96)
        image, mask = render_slice(label, np.random.default_rng(seed), 96)
        changed = base != image
        assert np.abs(image.astype(int) - base)[mask].mean() > 20, "lesion should be visible"
        radius = np.sqrt(mask.sum() / np.pi)
        reach = int(np.ceil(1.2 * radius)) + 3  # oedema halo plus the partial-volume blur
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * reach + 1, 2 * reach + 1))
        near = cv2.dilate(mask.astype(np.uint8), kernel).astype(bool)
        assert not (changed & ~near).any(), f"{label} seed {seed} changed pixels far from lesion"


def test_lesion_anatomy() -> None:
    """Masks lie inside the skull; meningioma hugs it, glioma is away, pituitary at the sella."""
    size = 128
    min_dist: dict[str, list[float]] = {c: [] for c in TUMOUR_CLASSES}
    areas: dict[str, list[int]] = {c: [] for c in TUMOUR_CLASSES}
    for label in TUMOUR_CLASSES:
        for seed in range(20):
            image, mask = render_slice(label, np.random.default_rng(seed), size)
            head = _head_mask(image)
            # distance of every head pixel to the outside of the head (the skull's outer edge)
            dist = cv2.distanceTransform(head, cv2.DIST_L2, 5)
            min_dist[label].append(float(dist[mask].min()))
            areas[label].append(int(mask.sum()))
            if label == PITUITARY:
                ys, xs = np.nonzero(head)
                my, mx = np.nonzero(mask)
                width, height = xs.max() - xs.min(), ys.max() - ys.min()
                assert abs(mx.mean() - xs.mean()) < 0.1 * width, f"seed {seed}: off the midline"
                down = (my.mean() - ys.min()) / height
                assert 0.55 < down < 0.85, f"seed {seed}: pituitary {down:.2f} down the head"
    everything = [d for ds in min_dist.values() for d in ds]
    assert min(everything) >= 3, "a mask reaches into the skull ring"
    assert max(min_dist[MENINGIOMA]) <= 8, "meningioma should touch the inner skull"
    assert min(min_dist[GLIOMA]) >= 10, "glioma should be intra-axial, away from the skull"
    assert max(min_dist[MENINGIOMA]) < min(min_dist[GLIOMA])
    assert np.median(areas[PITUITARY]) < 0.5 * np.median(areas[GLIOMA])
    assert np.median(areas[PITUITARY]) < 0.5 * np.median(areas[MENINGIOMA])


def test_no_global_intensity_cue() -> None:
    """The mean intensity outside the lesion is about the same in every class."""
    means = {}
    for k, label in enumerate(CLASS_NAMES):
        values = []
        for i in range(40):
            image, mask = render_slice(label, np.random.default_rng(1000 * k + i), 64)
            values.append(image[~mask].mean())
        means[label] = float(np.mean(values))
    spread = max(means.values()) - min(means.values())
    assert spread < 3.0, f"outside-lesion mean differs by class: {means}"
