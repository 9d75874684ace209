"""The phantom data set on disk: every image and mask written in the Kaggle layout, seeded,
reused when it is complete and swapped in whole when it is not."""

from __future__ import annotations

import json
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from brainmri.config import CLASS_NAMES, SPLITS
from brainmri.phantom.masks import MASKS_DIR
from brainmri.phantom.render import FORMAT_VERSION, MIN_SIZE, render_slice

GENERATOR = "brainmri.phantom"
"""Recorded in phantom.json: a folder is a phantom set of this generator when it says so."""
MANIFEST_NAME = "phantom.json"
JPEG_QUALITY = 95


def _image_seed(seed: int, split: str, label: str, index: int) -> np.random.Generator:
    """Return the generator of one image, independent of how many other images there are."""
    key = [seed, SPLITS.index(split), CLASS_NAMES.index(label), index]
    return np.random.default_rng(np.random.SeedSequence(key))


def _file_stem(label: str, index: int) -> str:
    """Return the file stem of a phantom image."""
    return f"phantom_{label}_{index:05d}"


def _layout(root: Path, counts: dict[str, int]) -> Iterator[tuple[str, str, int, Path, Path]]:
    """Yield (split, class, index, image path, mask path) of every file of the data set."""
    for split in SPLITS:
        for label in CLASS_NAMES:
            for index in range(counts[split]):
                stem = _file_stem(label, index)
                image = root / split / label / f"{stem}.jpg"
                yield split, label, index, image, root / MASKS_DIR / split / label / f"{stem}.png"


def _read_manifest(out_dir: Path) -> dict | None:
    """Return the phantom manifest of a folder, or None when it holds none of ours."""
    path = out_dir / MANIFEST_NAME
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("generator") == GENERATOR else None


def _write_image(path: Path, image: np.ndarray, params: list[int]) -> None:
    """Write an image with OpenCV, raising when it fails."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), image, params):
        raise OSError(f"{path}: OpenCV could not write the image")


def _write_dataset(root: Path, counts: dict[str, int], size: int, seed: int) -> None:
    """Render and write every image and mask of the data set under root."""
    for split, label, index, image_path, mask_file in _layout(root, counts):
        image, mask = render_slice(label, _image_seed(seed, split, label, index), size)
        _write_image(image_path, image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        _write_image(mask_file, mask.astype(np.uint8) * 255, [])


def _check_count(name: str, value: object, low: int) -> int:
    """Return value as int, or raise naming the argument and the allowed range."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ValueError(
            f"generate_phantom_dataset: {name} must be an integer >= {low}, got {value!r}"
        )
    return int(value)


def generate_phantom_dataset(
    out_dir: Path, train_per_class: int, test_per_class: int, size: int, seed: int
) -> Path:
    """Write (or reuse) a seeded phantom data set in the Kaggle layout with lesion masks.

    Images go to ``<out_dir>/<split>/<class>/phantom_<class>_<index>.jpg`` and their masks
    (0/255 PNG, empty for "notumor") to the parallel ``<out_dir>/masks/`` tree, with the
    arguments recorded in phantom.json. A folder whose phantom.json records the same
    arguments and format version and that holds every file is reused as it is; otherwise
    the set is rendered into a temporary folder beside out_dir and swapped in whole. Each
    image depends only on (seed, split, class, index), not on the other counts.

    Args:
        out_dir: the folder of the data set; it must be new, empty or an earlier phantom set.
        train_per_class: Training images per class, at least 1.
        test_per_class: Testing images per class, at least 1.
        size: the side of the square images in pixels, at least ``MIN_SIZE`` (32).
        seed: the seed of the whole set, at least 0.

    Returns:
        out_dir.

    Raises:
        ValueError: a count, the size or the seed is not an integer in its range.
        FileExistsError: out_dir holds files but no phantom.json written by this generator.
    """
    out_dir = Path(out_dir)
    args = {
        "generator": GENERATOR,
        "version": FORMAT_VERSION,
        "train_per_class": _check_count("train_per_class", train_per_class, 1),
        "test_per_class": _check_count("test_per_class", test_per_class, 1),
        "size": _check_count("size", size, MIN_SIZE),
        "seed": _check_count("seed", seed, 0),
    }
    counts = dict(zip(SPLITS, (args["train_per_class"], args["test_per_class"]), strict=True))
    existing = _read_manifest(out_dir)
    if existing == args and all(
        img.is_file() and msk.is_file() for *_, img, msk in _layout(out_dir, counts)
    ):
        return out_dir
    if out_dir.exists() and existing is None and any(out_dir.iterdir()):
        raise FileExistsError(
            f"{out_dir}: exists and is not a phantom data set (no {MANIFEST_NAME} written by "
            f"{GENERATOR}); refusing to overwrite it - choose an empty or new folder"
        )

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        _write_dataset(tmp, counts, args["size"], args["seed"])
        (tmp / MANIFEST_NAME).write_text(json.dumps(args, indent=2, sort_keys=True) + "\n")
        _swap_in(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _swap_in(new: Path, target: Path) -> None:
    """Replace target by the complete folder new (two renames; target is never half-written)."""
    # POSIX rename cannot replace a non-empty directory, so the old set is moved aside first;
    # for a moment target is absent, but it never holds a partial data set.
    if not target.exists():
        new.rename(target)
        return
    old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
    target.rename(old)
    try:
        new.rename(target)
    except BaseException:
        old.rename(target)
        raise
    shutil.rmtree(old, ignore_errors=True)
