"""Tumour masks in a masks tree parallel to the data set: where each image's mask is, and
reading it (cropped and resized as its image)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from brainmri.data.images import crop_like_image, read_grey

MASKS_DIR = "masks"
"""The masks tree of a data set, ``<data_root>/masks``, when no other is given."""


def mask_path(image_path: Path, data_root: Path, mask_root: Path | None = None) -> Path:
    """Return the path of the lesion mask of an image in a masks tree parallel to the data set.

    The tree is ``mask_root`` (``<data_root>/masks`` when None, the phantom set's) holding
    ``<split>/<class>/<image stem>.png``, as the phantom set and BRISC 2025's masks for the
    Kaggle images are laid out.
    """
    image_path, data_root = Path(image_path), Path(data_root)
    try:
        relative = image_path.relative_to(data_root)
    except ValueError:
        try:
            relative = image_path.resolve().relative_to(data_root.resolve())
        except ValueError:
            raise ValueError(
                f"{image_path}: not inside the data root {data_root}; expected "
                f"<data_root>/<split>/<class>/<image>"
            ) from None
    root = Path(mask_root) if mask_root is not None else data_root / MASKS_DIR
    return root / relative.with_suffix(".png")


def load_mask(
    image_path: Path,
    data_root: Path,
    size: int | None = None,
    *,
    mask_root: Path | None = None,
    crop: bool = False,
) -> np.ndarray | None:
    """Return the bool lesion mask of an image (optionally size x size), or None if it has none.

    Args:
        image_path: the image, inside data_root as ``<data_root>/<split>/<class>/<image>``;
            its mask is the PNG of the same stem under ``mask_root`` (see :func:`mask_path`).
        data_root: the root of the data set.
        size: the side the mask is resized to (nearest neighbour), a positive integer;
            None keeps the mask file's size.
        mask_root: the masks tree; None is ``<data_root>/masks``.
        crop: cut the mask to the square around the head of its image, as
            ``load_image(..., crop=True)`` cuts the image (``model.crop_to_brain``).

    Returns:
        The mask, True where the tumour is, of shape (size, size) or the file's; None when
        no mask file exists (the Kaggle data set has none).

    Raises:
        ValueError: image_path is not inside data_root, the mask file cannot be read, or
            size is not a positive integer.
    """
    path = mask_path(image_path, data_root, mask_root)
    if not path.is_file():
        return None
    mask = read_grey(path)  # the pixel limit holds for masks too
    if crop:
        mask = crop_like_image(mask, image_path)
    if size is not None:
        if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 1:
            raise ValueError(f"load_mask: size must be a positive integer or None, got {size!r}")
        mask = cv2.resize(mask, (int(size), int(size)), interpolation=cv2.INTER_NEAREST)
    return mask > 127
