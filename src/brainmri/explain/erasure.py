"""Does the model use the lesion? Erase it, and an equal area of brain elsewhere, and compare.

A heatmap that misses the tumour can mean two things: the explanation is wrong, or the model
really decides from something else (a shortcut: borders, skull shape, scanner marks). This test
asks the model directly, without any explanation method. Each image is shown three times: as it
is, with the lesion erased (inpainted from its surroundings, so no black hole becomes a new
cue), and with a control region of the same shape and area erased elsewhere in the brain. A model
that uses the lesion loses much more confidence in its class when the lesion is erased than when
the control is; a model that does not, loses about the same either way.

The control must change the image as much as the lesion's erasure does. A tumour stands out from
its surroundings, so inpainting it changes its pixels a lot; inpainting an equal area of ordinary
brain changes little (2-3x less on the real data), and that alone would make "erasing the lesion
costs more" true of any model that reacts to the size of a change. So the control is chosen by
its pixel change (:func:`pixel_change`, the mean absolute change over the image): among
candidate placements of the lesion's shape (the lesion mirrored to the other hemisphere first,
an anatomically matching place, then seeded random places inside the brain, away from the lesion)
the first whose inpainting changes the image within ``MATCH_TOLERANCE`` of the lesion's is used.
When none does but some change it more, the one closest above is inpainted only partly (blended
with the original, ``strength`` < 1), which scales its change to the lesion's exactly; when every
candidate changes it less, the image has no control. Occlusion tests of this kind follow Zeiler &
Fergus (2014); inpainting instead of a constant fill follows the remove-and-retrain argument of
Hooker et al. (2019) that a fill value is itself a signal.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import islice
from typing import NamedTuple

import cv2
import keras
import numpy as np
import pandas as pd

from brainmri.config import CLASS_NAMES
from brainmri.explain._plumbing import _as_batch, _probabilities

INPAINT_RADIUS = 5
"""Pixels of surrounding context cv2.inpaint (Telea's method) draws each erased pixel from."""

MATCH_TOLERANCE = 0.1
"""How far (relative) a control's pixel change may be from the lesion's: within 10%, the two
erasures change the image by the same amount for the purpose of comparing the model's answers."""

MAX_CANDIDATES = 40
"""Control placements inpainted per image at most while looking for a pixel-change match (each
costs one cv2.inpaint, a few milliseconds at 224 px)."""


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


def _placements(
    lesion: np.ndarray, brain: np.ndarray, *, margin: int, min_inside: float, tries: int, seed: int
) -> Iterator[np.ndarray]:
    """Regions of the lesion's shape inside the brain, away from the lesion: the mirror image
    first (when it fits), then seeded random placements that fit, in the order drawn."""
    lesion, brain = np.asarray(lesion, bool), np.asarray(brain, bool)
    if not lesion.any():
        return
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
        yield mirrored
    rng = np.random.default_rng(seed)
    for _ in range(tries):
        dy = int(rng.integers(-rows.min(), height - rows.max()))
        dx = int(rng.integers(-cols.min(), width - cols.max()))
        placed = fits(dy, dx, mirror=False)
        if placed is not None:
            yield placed


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

    The first placement that fits: the mirror image, else a seeded random place. It ignores
    what erasing it would do to the image; :func:`erasure_test` uses :func:`matched_control`,
    which chooses among the same placements the one whose erasure changes the image as much as
    the lesion's.

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
    placements = _placements(
        lesion, brain, margin=margin, min_inside=min_inside, tries=tries, seed=seed
    )
    return next(placements, None)


class MatchedControl(NamedTuple):
    """A control region whose erasure changes the image as much as the lesion's."""

    region: np.ndarray
    """Boolean (H, W) mask of the control (the lesion's shape, moved)."""
    erased: np.ndarray
    """The image with the control erased, float32 (H, W, 3)."""
    change: float
    """Its :func:`pixel_change`."""
    strength: float
    """1 for a full inpainting; below 1 when the inpainting was blended down to match."""


def pixel_change(image: np.ndarray, erased: np.ndarray) -> float:
    """How much an erasure changed an image: the mean absolute difference over all its pixels
    and channels, in grey levels (0..255).

    The mean over the whole image, not over the erased region, is proportional to the total
    change; regions of equal area (the lesion and its control) compare either way.

    Args:
        image: the original (H, W, 3) image.
        erased: the same image after :func:`erase`.

    Returns:
        The mean absolute change.
    """
    a, b = np.asarray(image, np.float64), np.asarray(erased, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"image and erased differ in shape: {a.shape}, {b.shape}")
    return float(np.abs(b - a).mean())


def matched_control(
    image: np.ndarray,
    lesion: np.ndarray,
    brain: np.ndarray,
    *,
    target: float | None = None,
    tolerance: float = MATCH_TOLERANCE,
    max_candidates: int = MAX_CANDIDATES,
    grow: int = 2,
    margin: int = 3,
    min_inside: float = 0.9,
    tries: int = 200,
    seed: int = 0,
) -> MatchedControl | None:
    """A control region whose erasure changes the image as much as the lesion's erasure does.

    Candidates are the placements of :func:`control_region` (mirror first, then seeded random
    places), up to ``max_candidates`` of them, each erased with :func:`erase`. The first whose
    pixel change is within ``tolerance`` (relative) of the target is returned as it is. If none
    is, but some change the image more, the one closest above the target is blended with the
    original (``strength`` = target / its change), which makes its change equal the target:
    the change of a blend is linear in its strength. If every candidate changes the image less,
    there is no matched control.

    Args:
        image: one (H, W, 3) image, 0..255.
        lesion: boolean (H, W) lesion mask.
        brain: boolean (H, W) brain mask, the lesion left out.
        target: the pixel change to match; None computes the lesion's (``erase(image, lesion)``).
        tolerance: the relative difference from the target accepted without blending.
        max_candidates: placements erased at most.
        grow: passed to :func:`erase`, as for the lesion.
        margin: pixels the control must keep from the lesion.
        min_inside: the share of the control that must lie inside the brain.
        tries: random placements drawn.
        seed: the random placements' seed.

    Returns:
        The :class:`MatchedControl`, or None when no candidate fits or none changes the image
        enough.
    """
    if target is None:
        target = pixel_change(image, erase(image, lesion, grow=grow))
    placements = _placements(
        lesion, brain, margin=margin, min_inside=min_inside, tries=tries, seed=seed
    )
    above: tuple[float, np.ndarray] | None = None  # the smallest change above the target
    for region in islice(placements, max_candidates):
        erased = erase(image, region, grow=grow)
        change = pixel_change(image, erased)
        if abs(change - target) <= tolerance * target:
            return MatchedControl(region, erased, change, 1.0)
        if change > target and (above is None or change < above[0]):
            above = (change, region)
    if above is None:
        return None
    change, region = above
    strength = target / change
    erased = erase(image, region, grow=grow, strength=strength)
    return MatchedControl(region, erased, pixel_change(image, erased), strength)


def erase(
    image: np.ndarray, region: np.ndarray, *, grow: int = 2, strength: float = 1.0
) -> np.ndarray:
    """The image with a region inpainted from its surroundings (Telea), grown by ``grow`` px.

    Only the (grown) region changes: the other pixels keep their values exactly (they are not
    rounded to the 8-bit grid cv2.inpaint works on), so an erasure's pixel change is its own.

    Args:
        image: one (H, W, 3) image, 0..255.
        region: boolean (H, W) mask of what to erase.
        grow: pixels added around the region, so no rim of the erased object is left.
        strength: 1 replaces the region by the inpainting; a value in [0, 1) blends the two,
            ``original + strength * (inpainted - original)`` (used to match pixel changes).

    Returns:
        A float32 (H, W, 3) image, 0..255.
    """
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength={strength}: expected a value in [0, 1]")
    mask = np.asarray(region, np.uint8)
    if grow > 0:
        mask = cv2.dilate(mask, np.ones((2 * grow + 1,) * 2, np.uint8))
    original = np.asarray(image, np.float32)
    pixels = np.clip(original, 0, 255).astype(np.uint8)
    filled = cv2.inpaint(pixels, mask, INPAINT_RADIUS, cv2.INPAINT_TELEA).astype(np.float32)
    inside = mask.astype(bool)
    out = original.copy()
    if strength == 1.0:
        out[inside] = filled[inside]
    else:
        out[inside] = original[inside] + np.float32(strength) * (filled[inside] - original[inside])
    return out


def erasure_test(
    model: keras.Model,
    images: np.ndarray,
    masks: Sequence[np.ndarray],
    labels: Sequence[int],
    *,
    seed: int = 0,
    batch_size: int = 32,
    tolerance: float = MATCH_TOLERANCE,
    max_candidates: int = MAX_CANDIDATES,
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Erase each image's lesion, then a control region that changes the image as much; record
    the model's answer.

    Args:
        model: the classifier (float images 0..255 in, class probabilities out).
        images: (N, H, W, 3) images with a tumour.
        masks: their boolean (H, W) lesion masks.
        labels: their true class indices.
        seed: the control placements' seed (image i uses seed + i).
        batch_size: images per forward pass.
        tolerance: how far (relative) the control's pixel change may be from the lesion's
            before it is blended down to match (:func:`matched_control`).
        max_candidates: control placements erased per image at most.

    Returns:
        One row per image (``image``, ``label`` name, ``p_original``, ``p_lesion_erased``,
        ``p_control_erased``: the probability of the true class; ``pred_*``: the predicted class
        index; ``control``: whether a matched control region was found; ``area``: the lesion's
        share of the image; ``pixel_change_lesion``, ``pixel_change_control``: each erasure's
        :func:`pixel_change`, the control's NaN without a control; ``control_strength``: 1, or
        the blend below 1 that matched the control's change, NaN without a control), and the
        erased batches {"lesion": ..., "control": ...} for figures (images without a control
        keep their original in the control batch).
    """
    x = _as_batch(images, model)
    if not len(x) == len(masks) == len(labels):
        raise ValueError(
            f"images, masks and labels differ in length: {len(x)}, {len(masks)}, {len(labels)}"
        )
    lesion_erased, control_erased, has_control = [], [], []
    change_lesion, change_control, strengths = [], [], []
    for i, (image, mask) in enumerate(zip(x, masks, strict=True)):
        mask = np.asarray(mask, bool)
        erased = erase(image, mask)
        lesion_erased.append(erased)
        change_lesion.append(pixel_change(image, erased))
        control = matched_control(
            image,
            mask,
            brain_region(image) & ~mask,
            target=change_lesion[-1],
            tolerance=tolerance,
            max_candidates=max_candidates,
            seed=seed + i,
        )
        has_control.append(control is not None)
        control_erased.append(control.erased if control is not None else image)
        change_control.append(control.change if control is not None else np.nan)
        strengths.append(control.strength if control is not None else np.nan)
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
            "pixel_change_lesion": change_lesion,
            "pixel_change_control": change_control,
            "control_strength": strengths,
        }
    )
    return table, batches


def _bootstrap_mean(
    values: np.ndarray, *, n_resamples: int, seed: int, level: float
) -> tuple[float, float]:
    """Percentile-bootstrap interval of a mean, resampling the values (images) with replacement."""
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(n_resamples, len(values)))].mean(axis=1)
    low, high = np.percentile(means, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return float(low), float(high)


def summarise_erasure(
    table: pd.DataFrame, *, n_resamples: int = 2000, seed: int = 0, level: float = 0.95
) -> dict[str, dict[str, float | int | None]]:
    """Per class, over the images that have a control: how much each erasure costs the model.

    The comparison is paired: each image's lesion-minus-control fall of the true class's
    probability, with a percentile-bootstrap interval over the images (seeded), so a class
    with few images does not read as a clear difference.

    Args:
        table: the per-image table of :func:`erasure_test`.
        n_resamples: bootstrap resamples of the paired interval.
        seed: the bootstrap's seed.
        level: the interval's coverage.

    Returns:
        {class: {"n", "drop_lesion", "drop_control" (mean fall of the true class's probability),
        "lesion_minus_control" (their paired difference, the mean of drop_lesion - drop_control)
        with "lesion_minus_control_low" / "_high" (its bootstrap interval), "changed_lesion",
        "changed_control" (share of predictions that change), "lesion_costs_more" (share of
        images where erasing the lesion lowers the true class more than the control),
        "pixel_change_lesion", "pixel_change_control" (mean :func:`pixel_change` of each
        erasure), "control_scaled" (share of controls blended down to match), "no_control"
        (images skipped: no matched control region)}}; the means are None when n is 0.
    """
    if not 0 < level < 1 or n_resamples < 1:
        raise ValueError(f"level={level}, n_resamples={n_resamples}: expected 0 < level < 1, >= 1")
    out: dict[str, dict[str, float | int | None]] = {}
    for name, group in table.groupby("label", sort=False):
        usable = group[group["control"]]
        n = len(usable)
        drop_lesion = usable["p_original"] - usable["p_lesion_erased"]
        drop_control = usable["p_original"] - usable["p_control_erased"]
        paired = (drop_lesion - drop_control).to_numpy(float)
        low, high = (
            _bootstrap_mean(paired, n_resamples=n_resamples, seed=seed, level=level)
            if n
            else (None, None)
        )
        means = {
            "drop_lesion": drop_lesion.mean(),
            "drop_control": drop_control.mean(),
            "lesion_minus_control": paired.mean() if n else None,
            "lesion_minus_control_low": low,
            "lesion_minus_control_high": high,
            "changed_lesion": (usable["pred_lesion_erased"] != usable["pred_original"]).mean(),
            "changed_control": (usable["pred_control_erased"] != usable["pred_original"]).mean(),
            "lesion_costs_more": (drop_lesion > drop_control).mean(),
            "pixel_change_lesion": usable["pixel_change_lesion"].mean(),
            "pixel_change_control": usable["pixel_change_control"].mean(),
            "control_scaled": (usable["control_strength"] < 1).mean(),
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
