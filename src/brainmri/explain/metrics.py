"""How well a map localises a lesion mask (pointing game, energy, Otsu IoU) and how faithful it
is to the model (deletion and insertion AUCs). Maps are (H, W) in [0, 1]; masks boolean (H, W).
"""

from __future__ import annotations

from typing import Any

import cv2
import keras
import numpy as np
from numpy.typing import ArrayLike

from brainmri.explain._plumbing import _as_batch, _check_map, _probabilities

__all__ = ["deletion_insertion", "energy_pointing", "energy_ratio", "otsu_iou", "pointing_game"]


# --- localisation metrics ---------------------------------------------------------------------


def _check_pair(cam: ArrayLike, mask: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """A validated (map, boolean mask) pair of equal shape."""
    m = _check_map(cam)
    b = np.asarray(mask)
    if b.shape != m.shape:
        raise ValueError(f"mask: expected the map's shape {m.shape}, got {b.shape}")
    return m, b.astype(bool)


def pointing_game(cam: ArrayLike, mask: ArrayLike, tolerance: float = 0.0) -> bool:
    """Whether the map's maximum lies within `tolerance` pixels of the mask (constant map: miss).

    Zhang et al. (2016), who defined the pointing game, count a hit within 15 pixels of the
    object at 224 px; tolerance 0 is the strict variant.
    """
    m, b = _check_pair(cam, mask)
    if m.max() == m.min():
        return False
    y, x = np.unravel_index(int(np.argmax(m)), m.shape)
    if b[y, x]:
        return True
    if tolerance <= 0 or not b.any():
        return False
    # Distance from every pixel to the nearest mask pixel (OpenCV's exact Euclidean transform).
    distance = cv2.distanceTransform((~b).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return bool(distance[y, x] <= tolerance)


def energy_pointing(cam: ArrayLike, mask: ArrayLike) -> float:
    """Share of the map's mass inside the mask (0 for an all-zero map)."""
    m, b = _check_pair(cam, mask)
    total = float(m.sum())
    return float(m[b].sum()) / total if total > 0 else 0.0


def energy_ratio(cam: ArrayLike, mask: ArrayLike) -> float:
    """Energy inside the mask divided by the mask's area fraction (1 = chance)."""
    m, b = _check_pair(cam, mask)
    area = b.mean()
    if area == 0:
        raise ValueError("mask: expected at least one True pixel to compute the energy ratio")
    return energy_pointing(m, b) / float(area)


def otsu_iou(cam: ArrayLike, mask: ArrayLike) -> float:
    """IoU between the mask and the map thresholded by Otsu (0 when both are empty)."""
    m, b = _check_pair(cam, mask)
    u8 = np.round(np.clip(m, 0, 1) * 255).astype(np.uint8)
    _, binary = cv2.threshold(u8, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    pred = binary > 0
    union = np.logical_or(pred, b).sum()
    return float(np.logical_and(pred, b).sum() / union) if union else 0.0


# --- faithfulness -----------------------------------------------------------------------------


def _baseline_image(image: np.ndarray, baseline: str) -> np.ndarray:
    """The image that removed pixels are replaced with."""
    if baseline == "blur":
        sigma = max(image.shape[:2]) / 16.0  # coarse enough to erase texture and edges
        return cv2.GaussianBlur(image, (0, 0), sigma).reshape(image.shape)
    if baseline == "black":
        return np.zeros_like(image)
    raise ValueError(f"baseline={baseline!r}: expected 'blur' or 'black'")


def deletion_insertion(
    model: keras.Model,
    image: ArrayLike,
    cam: ArrayLike,
    *,
    class_index: int,
    steps: int = 20,
    baseline: str = "blur",
) -> dict[str, Any]:
    """Deletion and insertion AUCs of a class's probability as pixels go in order of the map.

    Args:
        model: a classifier following the model contract (see `brainmri.explain`).
        image: one float image (H, W, 3) of 0..255 pixels.
        cam: its map (H, W) in [0, 1]; pixels are removed (deletion) or restored (insertion)
            from the highest value down.
        class_index: the class whose probability is followed.
        steps: how many equal steps take the image from none to all of its pixels.
        baseline: what removed pixels become: "blur" (a heavy Gaussian blur) or "black".

    Returns:
        "deletion_auc", "insertion_auc", "fractions" (steps + 1 of them, 0 to 1) and the two
        probability curves "deletion_curve" and "insertion_curve".
    """
    if int(steps) < 1:
        raise ValueError(f"steps: expected a positive integer, got {steps!r}")
    img = _as_batch(np.asarray(image)[None], model)[0]
    m = _check_map(cam)
    height, width = img.shape[:2]
    if m.shape != (height, width):
        raise ValueError(f"cam: expected the image's shape {(height, width)}, got {m.shape}")
    base = _baseline_image(img, baseline)
    rank = np.empty(m.size, np.int64)
    rank[np.argsort(-m.ravel(), kind="stable")] = np.arange(m.size)
    counts = np.round(np.linspace(0, m.size, steps + 1)).astype(np.int64)
    chosen = (rank[None, :] < counts[:, None]).reshape(steps + 1, height, width, 1)
    batch = np.concatenate([np.where(chosen, base, img), np.where(chosen, img, base)])
    probs = _probabilities(model, batch.astype(np.float32), len(batch))
    k = probs.shape[1]
    if not 0 <= int(class_index) < k:
        raise ValueError(f"class_index: expected a value in [0, {k}), got {class_index!r}")
    curve = probs[:, int(class_index)]
    fractions = np.linspace(0.0, 1.0, steps + 1)
    deletion, insertion = curve[: steps + 1], curve[steps + 1 :]
    return {
        "deletion_auc": float(np.trapezoid(deletion, fractions)),
        "insertion_auc": float(np.trapezoid(insertion, fractions)),
        "fractions": fractions.tolist(),
        "deletion_curve": deletion.tolist(),
        "insertion_curve": insertion.tolist(),
    }
