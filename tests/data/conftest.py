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
    return data.audit_duplicates(
        data.scan_dataset(root), root, near_distance=4, min_correlation=0.97
    )


@pytest.fixture(scope="module")
def real_manifest(real_data) -> pd.DataFrame:
    """The real dataset scanned once for this module."""
    return data.scan_dataset(data.find_dataset_root(real_data))
