"""Thumbnail signatures of the copy audit: 64x64 grey-level ranks of each image, whole and cut
to the head, in four orientations (as it is, mirrored, upside down, turned 180 degrees), as they
are and with the background flattened; and their correlations, view by view.

:mod:`brainmri.data.audit` pairs and groups the images these compare.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from brainmri.data import alignment
from brainmri.data.images import brain_box, crop_square, read_rgb

SIGNATURE_SIZE = 64
"""Side of the grey-level thumbnails compared by :func:`pixel_signatures`, in pixels."""


ORIENTATIONS = ("", "_mirrored", "_flipped", "_rotated")
"""The four orientations a re-cut head is compared in: as it is, mirrored, upside down, 180°."""


def _rank_signature(grey: np.ndarray) -> np.ndarray:
    """Zero-mean, unit-norm ranks of a thumbnail: the dot product of two is their Spearman
    correlation (a flat image gets zeros and correlates with nothing)."""
    from scipy.stats import rankdata  # imported here: the input pipeline imports this package

    ranks = rankdata(grey.ravel()).astype(np.float32)
    ranks -= ranks.mean()
    norm = np.linalg.norm(ranks)
    return ranks / norm if norm > 0 else np.zeros_like(ranks)


def _flatten_background(grey: np.ndarray) -> np.ndarray:
    """Black out the background (below half the image's Otsu level, after a blur): copies whose
    margins differ in noise, JPEG ringing or a lifted floor then rank alike."""
    blurred = cv2.GaussianBlur(grey, (5, 5), 0)
    otsu, _ = cv2.threshold(blurred, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return np.where(blurred < otsu / 2, 0, grey).astype(np.uint8)


def _thumbnails(file: str | Path, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One decode of a file: its rank signatures whole and cut to the head, each as it is and
    with the background flattened, (4, size * size); and its head image to register."""
    rgb = read_rgb(Path(file))
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    box = brain_box(grey, threshold=None)  # one box whatever the contrast
    out = []
    for image in (grey, _flatten_background(grey)):
        whole = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
        head = cv2.resize(crop_square(image, box), (size, size), interpolation=cv2.INTER_AREA)
        out += [_rank_signature(whole), _rank_signature(head)]
    return np.stack(out), alignment.head_image(grey, box)


def _signature_views(
    files: Sequence[str | Path], size: int = SIGNATURE_SIZE
) -> tuple[np.ndarray, np.ndarray]:
    """Signatures of every file (two threads: OpenCV releases the GIL while it decodes and
    resizes): (4, len(files), size * size), in the order whole, head, flat whole, flat head;
    and the head images to register, (len(files), HEAD_SIZE, HEAD_SIZE)."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        rows = list(pool.map(lambda f: _thumbnails(f, size), files))
    if not rows:
        side = alignment.HEAD_SIZE
        return np.zeros((4, 0, size * size), np.float32), np.zeros((0, side, side), np.uint8)
    signatures = np.ascontiguousarray(np.stack([r[0] for r in rows], axis=1))
    return signatures, np.stack([r[1] for r in rows])


def pixel_signatures(
    files: Sequence[str | Path], *, size: int = SIGNATURE_SIZE, crop: bool = False
) -> np.ndarray:
    """Rank-normalised grey-level thumbnails: the dot product of two is their rank correlation.

    Args:
        files: image files (any format ``load_image`` reads).
        size: the side of the thumbnails.
        crop: cut each image to the square around the head (``brain_box``) first.

    Returns:
        An array (len(files), size * size) of float32 rows with zero mean and unit norm (zero
        for a flat image); the dot product of two rows is the Spearman correlation of the two
        thumbnails. :func:`mirror_signatures` gives those of the mirrored images.

    Raises:
        ValueError: a file cannot be read (the message names it).
    """
    return _signature_views(files, size)[0][1 if crop else 0]


def mirror_signatures(signatures: np.ndarray) -> np.ndarray:
    """The signatures of the images flipped left-right (a thumbnail's columns reversed).

    Args:
        signatures: rows from :func:`pixel_signatures` (square thumbnails).

    Returns:
        The mirrored rows, same shape.
    """
    n, cells = signatures.shape
    side = int(round(np.sqrt(cells)))
    return np.ascontiguousarray(signatures.reshape(n, side, side)[:, :, ::-1].reshape(n, cells))


def flip_signatures(signatures: np.ndarray) -> np.ndarray:
    """The signatures of the images turned upside down (a thumbnail's rows reversed).

    Args:
        signatures: rows from :func:`pixel_signatures` (square thumbnails).

    Returns:
        The flipped rows, same shape; mirrored too (:func:`mirror_signatures`), the images
        turned by 180 degrees.
    """
    n, cells = signatures.shape
    side = int(round(np.sqrt(cells)))
    return np.ascontiguousarray(signatures.reshape(n, side, side)[:, ::-1, :].reshape(n, cells))


def view_correlations(
    views: dict[str, np.ndarray], rows: np.ndarray, cols: np.ndarray, *, paired: bool = False
) -> dict[str, np.ndarray]:
    """The correlation of every (row, col) pair in each kind of view.

    Args:
        views: from :func:`all_views`.
        rows, cols: positions of the files to compare.
        paired: only the pairs (rows[k], cols[k]), one value each.

    Returns:
        For ``plain``, ``mirrored``, ``flipped`` and ``recropped``: (len(rows), len(cols))
        arrays (or len(rows) values, paired), the higher of the thumbnails as they are and with
        the background flattened.
    """

    def dot(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.einsum("ij,ij->i", x, y) if paired else x @ y.T

    out: dict[str, np.ndarray] = {}
    for prefix in ("", "flat_"):
        whole, head = views[f"{prefix}whole"][rows], views[f"{prefix}head"][rows]
        turned = [views[f"{prefix}whole_{t}"][cols] for t in ("flipped", "rotated")]
        heads = [views[f"{prefix}head{t}"][cols] for t in ORIENTATIONS]
        corr = {
            "plain": dot(whole, views[f"{prefix}whole"][cols]),
            "mirrored": dot(whole, views[f"{prefix}whole_mirrored"][cols]),
            "flipped": np.maximum(dot(whole, turned[0]), dot(whole, turned[1])),
            "recropped": np.max([dot(head, h) for h in heads], axis=0),
        }
        out = corr if not out else {k: np.maximum(out[k], v) for k, v in corr.items()}
    return out


def all_views(files: Sequence[str | Path]) -> dict[str, np.ndarray]:
    """Every view the audit compares, for each file.

    Args:
        files: the image files.

    Returns:
        ``heads`` (the head images to register) and, for each of ``whole``, ``head``,
        ``flat_whole`` and ``flat_head``, the signatures as they are and ``_mirrored``,
        ``_flipped`` and ``_rotated`` (by 180 degrees).
    """
    signatures, heads = _signature_views(files)
    views: dict[str, np.ndarray] = {"heads": heads}
    for k, name in enumerate(("whole", "head", "flat_whole", "flat_head")):
        views[name] = signatures[k]
        views[f"{name}_mirrored"] = mirror_signatures(signatures[k])
        views[f"{name}_flipped"] = flip_signatures(signatures[k])
        views[f"{name}_rotated"] = mirror_signatures(views[f"{name}_flipped"])
    return views
