"""Aligned comparison: copies re-scaled, turned a little or re-contrasted, confirmed by
registering one head onto the other.

Thumbnail correlation (:mod:`brainmri.data.audit`) compares two images on a fixed grid, so a copy
scaled by a few percent, turned by 10-15 degrees or given a non-linear contrast curve can fall
under its threshold (0.97) while still being one picture. A review of the first grouped split
with keypoint matching and phase correlation found about 80 such copies of training images among
the held-out images, at thumbnail correlations from 0.80 to 0.97. Lowering the thumbnail threshold
would not catch them without merging neighbouring slices and other patients wholesale.

So the pairs that come closest without confirming are registered instead. Both heads are cut to
their box (``brain_box``) at 128 px and histogram-equalised (a rank transform: any monotone
contrast change vanishes); the second is put in the orientation (as it is, mirrored, upside down,
180 degrees) that correlates best; then an affine transform is fitted by maximising the enhanced
correlation coefficient (ECC: Evangelidis & Psarakis, IEEE TPAMI 2008; OpenCV's
``findTransformECC``), which returns the correlation of the aligned images. A pair is a copy of
kind ``aligned`` when that reaches :data:`ALIGNED_MIN_CORRELATION`.

Which pairs: for each copy group (the connected components of the thumbnail copies), the
:data:`NEIGHBOUR_GROUPS` other groups whose closest image pair correlates best in any thumbnail
view, down to :data:`CANDIDATE_FLOOR`; the closest image pair of each stands for the two groups.
On the Kaggle set that is about 5,600 pairs, and it finds 65 of the 72 copies the review
confirmed beyond the thumbnails (the other 7 are turned by 13 degrees and beyond the floor).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np

from brainmri.data.images import crop_square

HEAD_SIZE = 128
"""Side of the equalised head images that are registered, in pixels."""

ALIGNED_MIN_CORRELATION = 0.95
"""The registered correlation that confirms a copy. Calibrated on the Kaggle set's 5,664
candidate pairs: the review's confirmed copies score 0.96-1.00 (re-contrasted ones 0.96-0.98);
of the 668 candidates whose labels differ (different pictures by construction) one reaches 0.95
and none lies between 0.93 and 0.96. Between 0.93 and 0.97 same-label pairs are a continuum of
re-contrasted copies and neighbouring slices of one series; they are merged (conservative: a
neighbouring slice of the same patient is not an independent test image either)."""

CANDIDATE_FLOOR = 0.80
"""The smallest thumbnail correlation (any view) at which two groups are candidates."""

NEIGHBOUR_GROUPS = 3
"""How many nearest other groups each group is registered against."""

_ORIENTATIONS = (
    lambda x: x,
    lambda x: x[:, ::-1],  # mirrored
    lambda x: x[::-1, :],  # upside down
    lambda x: x[::-1, ::-1],  # turned 180 degrees
)


def head_image(grey: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The head cut to its square box, resized and histogram-equalised, ready to register.

    Args:
        grey: a 2-D uint8 image.
        box: its head box ``(top, left, bottom, right)`` from ``brain_box``.

    Returns:
        A ``(HEAD_SIZE, HEAD_SIZE)`` uint8 image whose grey levels are ranks (equalised).
    """
    head = cv2.resize(crop_square(grey, box), (HEAD_SIZE, HEAD_SIZE), interpolation=cv2.INTER_AREA)
    return cv2.equalizeHist(head)


def _prepare(head: np.ndarray) -> np.ndarray:
    # a light blur: ECC converges from further away, and JPEG noise weighs less
    return cv2.GaussianBlur(head.astype(np.float32), (0, 0), 1.0)


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    denominator = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum()) / denominator if denominator > 0 else 0.0


def aligned_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """The correlation of two heads after registering the second onto the first.

    Args:
        a, b: head images from :func:`head_image`.

    Returns:
        The enhanced correlation coefficient after an affine registration of ``b`` (in its best
        orientation) onto ``a``, in [-1, 1]; the unregistered correlation where ECC does not
        converge (a flat image, say).
    """
    target = _prepare(a)
    turned = [np.ascontiguousarray(turn(_prepare(b))) for turn in _ORIENTATIONS]
    start = [_correlation(target, t) for t in turned]
    best = int(np.argmax(start))
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 60, 1e-5)
    try:
        value, _ = cv2.findTransformECC(
            target,
            turned[best],
            np.eye(2, 3, dtype=np.float32),
            cv2.MOTION_AFFINE,
            criteria,
            None,
            1,
        )
    except cv2.error:  # no convergence: the images are not one picture, or are flat
        return start[best]
    return max(float(value), start[best])


def aligned_correlations(heads: np.ndarray, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """:func:`aligned_correlation` of many pairs, on two threads (OpenCV releases the GIL).

    Args:
        heads: ``(n, HEAD_SIZE, HEAD_SIZE)`` head images.
        first, second: positions in ``heads`` of each pair's two images.

    Returns:
        One correlation per pair (float32).
    """
    pairs = list(zip(np.asarray(first).tolist(), np.asarray(second).tolist(), strict=True))
    with ThreadPoolExecutor(max_workers=2) as pool:
        values = list(pool.map(lambda p: aligned_correlation(heads[p[0]], heads[p[1]]), pairs))
    return np.asarray(values, dtype=np.float32)


def candidate_pairs(
    first: np.ndarray, second: np.ndarray, correlation: np.ndarray, groups: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The image pairs to register: each group's nearest other groups, by their closest pair.

    Args:
        first, second: positions of image pairs whose best thumbnail correlation is at least
            :data:`CANDIDATE_FLOOR`.
        correlation: that correlation, one per pair.
        groups: the copy group of every image (from ``copy_groups``).

    Returns:
        ``(first, second)`` with ``first < second``: for every group, the closest image pair to
        each of its :data:`NEIGHBOUR_GROUPS` nearest other groups, each pair once.
    """
    first, second = np.asarray(first), np.asarray(second)
    correlation = np.asarray(correlation)
    across = groups[first] != groups[second]
    i, j, c = first[across], second[across], correlation[across]
    # both directions, so every group ranks its neighbours; then the closest pair per group pair
    a, b = np.concatenate([i, j]), np.concatenate([j, i])
    c = np.concatenate([c, c])
    order = np.lexsort((-c, groups[b], groups[a]))  # by group, neighbour group, best first
    a, b, ga, gb = a[order], b[order], groups[a[order]], groups[b[order]]
    closest = np.ones(len(a), dtype=bool)
    closest[1:] = (ga[1:] != ga[:-1]) | (gb[1:] != gb[:-1])
    a, b, ga, c = a[closest], b[closest], ga[closest], c[order][closest]
    order = np.lexsort((-c, ga))  # per group, its neighbour groups from the closest
    a, b, ga = a[order], b[order], ga[order]
    starts = np.r_[0, np.flatnonzero(ga[1:] != ga[:-1]) + 1]
    rank = np.arange(len(ga)) - np.repeat(starts, np.diff(np.r_[starts, len(ga)]))
    keep = rank < NEIGHBOUR_GROUPS
    low, high = np.minimum(a[keep], b[keep]), np.maximum(a[keep], b[keep])
    unique = np.unique(np.stack([low, high], axis=1), axis=0) if len(low) else np.zeros((0, 2))
    return unique[:, 0].astype(np.int64), unique[:, 1].astype(np.int64)
