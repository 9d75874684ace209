"""Does the model use the lesion? Erase it, and an equal area of brain elsewhere, and compare.

A heatmap that misses the tumour can mean two things: the explanation is wrong, or the model
really decides from something else (a shortcut: borders, skull shape, scanner marks). This test
asks the model directly, without any explanation method. Each image is shown three times: as it
is, with the lesion erased (inpainted from its surroundings, so no black hole becomes a new
cue), and with a control region of the same shape and area erased elsewhere in the brain. A model
that uses the lesion loses much more confidence in its class when the lesion is erased than when
the control is; a model that does not, loses about the same either way.

The control is the lesion mirrored to the other hemisphere (the same shape at an anatomically
matching place), or, where that leaves the brain or touches the lesion, the same shape moved to
a seeded random place inside the brain. Occlusion tests of this kind follow Zeiler & Fergus
(2014); inpainting instead of a constant fill follows the remove-and-retrain argument of
Hooker et al. (2019) that a fill value is itself a signal.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import keras
import numpy as np
import pandas as pd

from brainmri.config import CLASS_NAMES
from brainmri.explain._plumbing import _as_batch, _probabilities

INPAINT_RADIUS = 5
"""Pixels of surrounding context cv2.inpaint (Telea's method) draws each erased pixel from."""


def brain_region(image: np.ndarray, *, threshold: float = 20.0) -> np.ndarray:
    """The head's silhouette: the largest bright connected region, holes filled.

    Args:
        image: one (H, W, 3) or (H, W) image, 0..255.
        threshold: grey level above which a pixel is tissue (MRI background is near black).

    Returns:
        A boolean (H, W) mask (all False for a blank image).
    """
    grey = np.asarray(image, dtype=np.float32)
    if grey.ndim == 3:
        grey = grey.mean(axis=-1)
    binary = (cv2.GaussianBlur(grey, (5, 5), 0) > threshold).astype(np.uint8)
    contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    region = np.zeros(grey.shape, np.uint8)
    if contours:
        cv2.drawContours(region, [max(contours, key=cv2.contourArea)], -1, 1, thickness=-1)
    return region.astype(bool)


def control_region(
    lesion: np.ndarray,
    brain: np.ndarray,
    *,
    margin: int = 3,
    min_inside: float = 0.9,
    tries: int = 200,
    seed: int = 0,
) -> np.ndarray | None:
    """A region of the lesion's shape and area inside the brain, away from the lesion.

    Args:
        lesion: boolean (H, W) lesion mask.
        brain: boolean (H, W) brain mask (:func:`brain_region`).
        margin: pixels the control must keep from the lesion.
        min_inside: the share of the control that must lie inside the brain.
        tries: random placements tried when the mirror image does not fit.
        seed: the random placements' seed.

    Returns:
        A boolean (H, W) mask with as many pixels as ``lesion``, or None when none fits.
    """
    lesion, brain = np.asarray(lesion, bool), np.asarray(brain, bool)
    area = int(lesion.sum())
    if area == 0:
        return None
    near = cv2.dilate(lesion.astype(np.uint8), np.ones((2 * margin + 1,) * 2, np.uint8)) > 0
    height, width = lesion.shape
    rows, cols = np.nonzero(lesion)

    def fits(dy: int, dx: int, mirror: bool) -> np.ndarray | None:
        c = (width - 1 - cols if mirror else cols) + dx
        r = rows + dy
        if r.min() < 0 or c.min() < 0 or r.max() >= height or c.max() >= width:
            return None
        region = np.zeros_like(lesion)
        region[r, c] = True
        if (region & near).any() or brain[region].mean() < min_inside:
            return None
        return region

    mirrored = fits(0, 0, mirror=True)  # the other hemisphere first
    if mirrored is not None:
        return mirrored
    rng = np.random.default_rng(seed)
    for _ in range(tries):
        dy = int(rng.integers(-rows.min(), height - rows.max()))
        dx = int(rng.integers(-cols.min(), width - cols.max()))
        placed = fits(dy, dx, mirror=False)
        if placed is not None:
            return placed
    return None


def erase(image: np.ndarray, region: np.ndarray, *, grow: int = 2) -> np.ndarray:
    """The image with a region inpainted from its surroundings (Telea), grown by ``grow`` px.

    Args:
        image: one (H, W, 3) image, 0..255.
        region: boolean (H, W) mask of what to erase.
        grow: pixels added around the region, so no rim of the erased object is left.

    Returns:
        A float32 (H, W, 3) image, 0..255.
    """
    mask = np.asarray(region, np.uint8)
    if grow > 0:
        mask = cv2.dilate(mask, np.ones((2 * grow + 1,) * 2, np.uint8))
    pixels = np.clip(np.asarray(image, np.float32), 0, 255).astype(np.uint8)
    return cv2.inpaint(pixels, mask, INPAINT_RADIUS, cv2.INPAINT_TELEA).astype(np.float32)


def erasure_test(
    model: keras.Model,
    images: np.ndarray,
    masks: Sequence[np.ndarray],
    labels: Sequence[int],
    *,
    seed: int = 0,
    batch_size: int = 32,
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Erase each image's lesion, then a control region of the same area; record the model's answer.

    Args:
        model: the classifier (float images 0..255 in, class probabilities out).
        images: (N, H, W, 3) images with a tumour.
        masks: their boolean (H, W) lesion masks.
        labels: their true class indices.
        seed: the control placements' seed.
        batch_size: images per forward pass.

    Returns:
        One row per image (``image``, ``label`` name, ``p_original``, ``p_lesion_erased``,
        ``p_control_erased``: the probability of the true class; ``pred_*``: the predicted class
        index; ``control``: whether a control region fitted; ``area``: the lesion's share of the
        image), and the erased batches {"lesion": ..., "control": ...} for figures (images
        without a control keep their original in the control batch).
    """
    x = _as_batch(images, model)
    if not len(x) == len(masks) == len(labels):
        raise ValueError(
            f"images, masks and labels differ in length: {len(x)}, {len(masks)}, {len(labels)}"
        )
    lesion_erased, control_erased, has_control = [], [], []
    for i, (image, mask) in enumerate(zip(x, masks, strict=True)):
        mask = np.asarray(mask, bool)
        lesion_erased.append(erase(image, mask))
        control = control_region(mask, brain_region(image) & ~mask, seed=seed + i)
        has_control.append(control is not None)
        control_erased.append(erase(image, control) if control is not None else image)
    batches = {"lesion": np.stack(lesion_erased), "control": np.stack(control_erased)}
    probs = {
        "original": _probabilities(model, x, batch_size),
        **{k: _probabilities(model, v, batch_size) for k, v in batches.items()},
    }
    labels = np.asarray(labels, int)
    rows = np.arange(len(x))
    table = pd.DataFrame(
        {
            "image": rows,
            "label": [CLASS_NAMES[k] for k in labels],
            "area": [float(np.asarray(m, bool).mean()) for m in masks],
            "control": has_control,
            "p_original": probs["original"][rows, labels],
            "p_lesion_erased": probs["lesion"][rows, labels],
            "p_control_erased": probs["control"][rows, labels],
            "pred_original": probs["original"].argmax(axis=1),
            "pred_lesion_erased": probs["lesion"].argmax(axis=1),
            "pred_control_erased": probs["control"].argmax(axis=1),
        }
    )
    return table, batches


def summarise_erasure(table: pd.DataFrame) -> dict[str, dict[str, float | int | None]]:
    """Per class, over the images that have a control: how much each erasure costs the model.

    Returns:
        {class: {"n", "drop_lesion", "drop_control" (mean fall of the true class's probability),
        "changed_lesion", "changed_control" (share of predictions that change), "lesion_costs_more"
        (share of images where erasing the lesion lowers the true class more than the control),
        "no_control" (images skipped: no control region fitted)}}.
    """
    out: dict[str, dict[str, float | int | None]] = {}
    for name, group in table.groupby("label", sort=False):
        usable = group[group["control"]]
        n = len(usable)
        drop_lesion = usable["p_original"] - usable["p_lesion_erased"]
        drop_control = usable["p_original"] - usable["p_control_erased"]
        means = {
            "drop_lesion": drop_lesion.mean(),
            "drop_control": drop_control.mean(),
            "changed_lesion": (usable["pred_lesion_erased"] != usable["pred_original"]).mean(),
            "changed_control": (usable["pred_control_erased"] != usable["pred_original"]).mean(),
            "lesion_costs_more": (drop_lesion > drop_control).mean(),
        }
        # no image with a control: every mean is undefined (null in metrics.json)
        out[str(name)] = {
            "n": n,
            **{key: float(value) if n else None for key, value in means.items()},
            "no_control": int((~group["control"]).sum()),
        }
    return out


def context_test(
    model: keras.Model, images: np.ndarray, labels: Sequence[int], *, batch_size: int = 32
) -> pd.DataFrame:
    """What does the model make of the brain alone, and of everything but the brain?

    Shortcuts in this data set would sit outside the tissue: the black margins, the head's
    silhouette and size (the classes come from different image collections), text and scanner
    marks. Each image is shown three ways: as it is; **brain only**, everything outside the
    head's silhouette set to black (MRI background); **outside only**, the silhouette filled
    with its own mean grey, so only the outline and the surroundings remain. A model that reads
    the tissue keeps its accuracy on the brain-only view and falls to chance (0.25) on the
    outside-only one; accuracy well above chance there shows cues outside the brain that the
    model uses.

    Args:
        model: the classifier.
        images: (N, H, W, 3) images, 0..255.
        labels: their true class indices.
        batch_size: images per forward pass.

    Returns:
        One row per image: ``label`` (name), ``brain_share`` (the silhouette's share of the
        image) and ``pred_original``, ``pred_brain_only``, ``pred_outside_only``.
    """
    x = _as_batch(images, model)
    if len(x) != len(labels):
        raise ValueError(f"images and labels differ in length: {len(x)}, {len(labels)}")
    brain_only, outside_only, shares = [], [], []
    for image in x:
        brain = brain_region(image)
        shares.append(float(brain.mean()))
        brain_only.append(np.where(brain[..., None], image, 0.0))
        fill = image[brain].mean(axis=0) if brain.any() else image.mean(axis=(0, 1))
        outside_only.append(np.where(brain[..., None], fill, image))
    preds = {
        name: _probabilities(model, batch, batch_size).argmax(axis=1)
        for name, batch in (
            ("original", x),
            ("brain_only", np.stack(brain_only).astype(np.float32)),
            ("outside_only", np.stack(outside_only).astype(np.float32)),
        )
    }
    return pd.DataFrame(
        {
            "label": [CLASS_NAMES[k] for k in np.asarray(labels, int)],
            "label_index": np.asarray(labels, int),
            "brain_share": shares,
            **{f"pred_{name}": p for name, p in preds.items()},
        }
    )


def summarise_context(table: pd.DataFrame) -> dict[str, dict[str, float | int]]:
    """Accuracy per class (and over all images) on each view of :func:`context_test`."""
    out: dict[str, dict[str, float | int]] = {}
    groups = [*table.groupby("label", sort=False), ("all", table)]
    for name, group in groups:
        out[str(name)] = {"n": len(group)} | {
            f"accuracy_{view}": float((group[f"pred_{view}"] == group["label_index"]).mean())
            for view in ("original", "brain_only", "outside_only")
        }
    return out
