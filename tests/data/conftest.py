"""Shared by the tests of brainmri.data: builders of small image files and dataset trees.

The builders are plain functions, which the module-scoped fixtures below call, and reach the
tests as fixtures: in pytest's importlib mode a test file cannot import this conftest.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from brainmri import data
from brainmri.config import CLASS_NAMES, SPLITS

TRAIN, TEST = SPLITS


def _picture(seed: int, size: int = 64, colour: bool = False) -> np.ndarray:
    """A smooth random picture (random 8x8 grid upsampled), distinct for each seed."""
    rng = np.random.default_rng(seed)
    grid = rng.integers(0, 256, (8, 8, 3) if colour else (8, 8)).astype(np.float32)
    image = cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)
    return np.clip(image, 0, 255).astype(np.uint8)


def _jpeg(image: np.ndarray, quality: int = 95) -> bytes:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return buf.tobytes()


def _write(path: Path, payload: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(payload)
    return path


def _dataset(root: Path, per_class: int = 2, seed: int = 0, names=None) -> Path:
    """A valid tree of small JPEGs; names maps a split or (split, class) to its folder name."""
    names = names or {}
    n = seed * 1000
    for split in SPLITS:
        for label in CLASS_NAMES:
            split_name = names.get(split, split)
            class_name = names.get((split, label), label)
            for i in range(per_class):
                n += 1
                _write(root / split_name / class_name / f"img{i}.jpg", _jpeg(_picture(n)))
    return root


@pytest.fixture
def picture():
    """The builder of a smooth random picture, distinct for each seed."""
    return _picture


@pytest.fixture
def jpeg():
    """The builder of JPEG bytes from an image array (OpenCV channel order)."""
    return _jpeg


@pytest.fixture
def write_file():
    """The writer of bytes to a file, creating its folders; returns the path."""
    return _write


@pytest.fixture
def dataset_tree():
    """The builder of a valid <split>/<class>/ tree of small JPEGs; returns its root."""
    return _dataset


def _head(seed: int, size: int = 96) -> np.ndarray:
    """A grey 'head': a textured ellipse of its own size and place on black, distinct per seed."""
    rng = np.random.default_rng(seed)
    texture = cv2.resize(
        rng.integers(80, 256, (12, 12)).astype(np.float32), (size, size), cv2.INTER_CUBIC
    )
    mask = np.zeros((size, size), np.uint8)
    centre = (int(size * rng.uniform(0.42, 0.58)), int(size * rng.uniform(0.42, 0.58)))
    axes = (int(size * rng.uniform(0.26, 0.36)), int(size * rng.uniform(0.3, 0.4)))
    cv2.ellipse(mask, centre, axes, float(rng.uniform(0, 30)), 0, 360, 255, -1)
    return np.where(mask > 0, np.clip(texture, 60, 255), 0).astype(np.uint8)


def _recut(image: np.ndarray, margin: float) -> np.ndarray:
    """The image cut closer to (margin < 0) or further from (> 0) its head, then resized back."""
    size = image.shape[0]
    ys, xs = np.nonzero(image > 30)
    x0, x1, y0, y1 = xs.min(), xs.max(), ys.min(), ys.max()
    side = max(x1 - x0, y1 - y0) * (1 + margin)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    box = (int(cx - side / 2), int(cy - side / 2), int(side))
    return cv2.resize(data.crop_square(image, box), (size, size), interpolation=cv2.INTER_AREA)


# The copies planted by the `copies` fixture: (kind of copy, class, Training original, Testing copy).
PLANTED = (
    ("exact", "glioma", 0),
    ("contrast", "glioma", 1),
    ("mirrored", "meningioma", 0),
    ("recut", "meningioma", 1),
    ("rescaled", "notumor", 0),
    ("mirrored_recut", "pituitary", 0),
    ("upside_down", "notumor", 1),
    ("turned", "pituitary", 1),
    ("tilted", "glioma", 2),
)


@pytest.fixture(scope="module")
def copies(tmp_path_factory) -> tuple[Path, list[set[str]], dict[str, tuple[str, str]]]:
    """A data set of grey heads with a copy of each kind planted across Training and Testing.

    Per class, 8 distinct Training heads and 4 distinct Testing heads; then one Testing copy per
    PLANTED row (byte copy, other contrast and JPEG quality, mirrored, cut closer to the head,
    96 -> 150 px PNG, mirrored and cut wider, upside down, turned 180 degrees, tilted by 12 degrees
    and re-contrasted), and a chain: a Training head, its mirror image in
    Training, and a re-cut of the mirror in Testing.

    Returns:
        ``(root, truth, planted)``: the data root; the planted groups, sets of manifest paths
        that are one picture (what an audit must find, known by construction); and each
        PLANTED kind's (Training original, Testing copy).
    """
    root = tmp_path_factory.mktemp("copies")
    truth: list[set[str]] = []
    planted: dict[str, tuple[str, str]] = {}
    seed = 100
    for label in CLASS_NAMES:
        for split, count in ((TRAIN, 8), (TEST, 4)):
            for i in range(count):
                seed += 1
                _write(root / split / label / f"h{i}.jpg", _jpeg(_head(seed)))
    for kind, label, i in PLANTED:
        original = f"{TRAIN}/{label}/h{i}.jpg"
        pixels = cv2.imread(str(root / original), cv2.IMREAD_GRAYSCALE)
        name = f"{TEST}/{label}/copy_{kind}.{'png' if kind == 'rescaled' else 'jpg'}"
        if kind == "exact":
            payload = (root / original).read_bytes()
        elif kind == "contrast":
            payload = _jpeg(np.clip(pixels * 0.8 + 20, 0, 255).astype(np.uint8), quality=80)
        elif kind == "mirrored":
            payload = _jpeg(cv2.flip(pixels, 1))
        elif kind == "recut":
            payload = _jpeg(_recut(pixels, 0.12))
        elif kind == "upside_down":
            payload = _jpeg(cv2.flip(pixels, 0))
        elif kind == "turned":
            payload = _jpeg(cv2.rotate(pixels, cv2.ROTATE_180))
        elif kind == "tilted":  # turned 12 degrees, 6% larger, another contrast curve
            turn = cv2.getRotationMatrix2D((48.0, 48.0), 12.0, 1.06)
            tilted = cv2.warpAffine(pixels, turn, pixels.shape[::-1], flags=cv2.INTER_CUBIC)
            payload = _jpeg((255 * (tilted / 255.0) ** 0.6).astype(np.uint8))
        elif kind == "rescaled":
            big = cv2.resize(pixels, (150, 150), interpolation=cv2.INTER_CUBIC)
            payload = cv2.imencode(".png", big)[1].tobytes()
        else:
            payload = _jpeg(_recut(cv2.flip(pixels, 1), 0.2))
        _write(root / name, payload)
        truth.append({original, name})
        planted[kind] = (original, name)
    chain = [f"{TRAIN}/glioma/h5.jpg", f"{TRAIN}/glioma/chain_mirror.jpg"]
    chain.append(f"{TEST}/glioma/chain_recut.jpg")
    head = cv2.imread(str(root / chain[0]), cv2.IMREAD_GRAYSCALE)
    _write(root / chain[1], _jpeg(cv2.flip(head, 1)))
    _write(root / chain[2], _jpeg(_recut(cv2.flip(head, 1), 0.12)))
    truth.append(set(chain))
    return root, truth, planted


@pytest.fixture(scope="module")
def clustered(tmp_path_factory) -> pd.DataFrame:
    """An audited manifest: 40 Training images per class, ten of them in triplets of copies."""
    root = tmp_path_factory.mktemp("clustered")
    n = 5000
    for label in CLASS_NAMES:
        folder = root / TRAIN / label
        for i in range(30):
            n += 1
            _write(folder / f"u{i:02d}.jpg", _jpeg(_picture(n, size=32)))
        for c in range(5):  # clusters of three: the original and two byte copies
            n += 1
            payload = _jpeg(_picture(n, size=32))
            for k in range(3):
                _write(folder / f"c{c}_{k}.jpg", payload)
        for i in range(4):
            n += 1
            _write(root / TEST / label / f"t{i}.jpg", _jpeg(_picture(n, size=32)))
        _write(root / TEST / label / "leak.jpg", (folder / "u00.jpg").read_bytes())
        near = cv2.imread(str(folder / "u01.jpg"), cv2.IMREAD_UNCHANGED)
        _write(root / TEST / label / "near.jpg", _jpeg(np.clip(near.astype(int) + 2, 0, 255)))
    _write(root / TRAIN / "glioma" / "zz_broken.jpg", b"not an image")
    audited, _ = data.audit_duplicates(data.scan_dataset(root), root, min_correlation=0.97)
    return audited


@pytest.fixture(scope="module")
def real_manifest(real_data) -> pd.DataFrame:
    """The real dataset scanned once for this module."""
    return data.scan_dataset(data.find_dataset_root(real_data))
